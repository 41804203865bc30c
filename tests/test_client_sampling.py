"""Agent sampling against fixture /proc snapshots, with hand-computed expectations.

tests/data/proc/{a,b,c,d} are four snapshots of one 2-vCPU VM: a, b and c are
5 s apart, d is 10 s after c.  Expected values below are worked out from the
files' counters in the comments, not taken from the code under test.
"""

import os
import shutil
import sys

import pytest

from vmstats import protocol
from vmstats.client import agent, config, procfs, sampler

DATA = os.path.join(os.path.dirname(__file__), "data", "proc")


def snap(name):
    return os.path.join(DATA, name)


def test_stat_reads_all_cpu_jiffies_and_counts_vcpus():
    cpu, vcpus = procfs.read_stat(snap("a"))
    assert vcpus == 2
    assert cpu == procfs.CpuTimes(10000, 200, 3000, 80000, 500, 100, 200, 300, 1000, 50)


def test_guest_is_not_counted_twice_and_steal_counts_as_busy():
    a, _ = procfs.read_stat(snap("a"))
    c, _ = procfs.read_stat(snap("c"))
    # a -> c: user +600 (of which guest +100), system +200, idle +1000,
    # iowait +100, irq +20, softirq +30, steal +50.
    # busy = 600 + 200 + 20 + 30 + 50 = 900; total = 900 + 1000 + 100 = 2000.
    assert sampler.cpu_busy_total(a, c) == (900, 2000)


def test_iowait_stepping_back_gives_no_negative_time():
    c, _ = procfs.read_stat(snap("c"))
    d, _ = procfs.read_stat(snap("d"))
    # c -> d: user +100, system +100, idle +1800, iowait -5 (counted as 0).
    assert sampler.cpu_busy_total(c, d) == (200, 2000)


def test_memory_used_is_total_minus_available():
    # c: MemTotal 4194304 kB, MemAvailable 3145728 kB -> 25 % used, 4096 MiB.
    assert sampler.memory(procfs.read_meminfo(snap("c"))) == (25.0, 4096)
    # Without MemAvailable (kernel < 3.14): free + buffers + cached + reclaimable.
    info = {"MemTotal": 1000, "MemFree": 100, "Buffers": 50, "Cached": 300, "SReclaimable": 50}
    assert sampler.memory(info) == (50.0, 1)


def test_diskstats_keeps_whole_disks_only():
    disks = procfs.read_diskstats(snap("a"))
    # loop0, ram0, sr0, md0, dm-0 are virtual; sda1, sda2, nvme0n1p1 are partitions.
    assert disks == {"sda": (20000, 40000), "nvme0n1": (7000, 9000)}


def test_partitions_follow_the_kernels_naming_so_a_tenth_disk_is_not_a_partition():
    names = ["nvme0n1", "nvme0n1p1", "nvme0n10", "nvme0n10p2", "nbd1", "nbd10", "sda", "sda1",
             "sdaa", "sdaa3", "mmcblk0", "mmcblk0p1", "xvda", "xvda1", "vdb10"]
    # nvme0n10 and nbd10 are disks of their own (a partition of nvme0n1 is nvme0n1p10).
    assert procfs.whole_disks(names) == ["nvme0n1", "nvme0n10", "nbd1", "nbd10", "sda", "sdaa",
                                         "mmcblk0", "xvda", "vdb10"]


def test_netdev_skips_loopback():
    assert procfs.read_netdev(snap("a")) == {"eth0": (4294910000, 100000), "eth1": (500000, 200000)}


NET_DEV_HEAD = ("Inter-|   Receive                                                |  Transmit\n"
                " face |bytes    packets errs drop fifo frame compressed multicast"
                "|bytes    packets errs drop fifo colls carrier compressed\n")


def netdev_tree(root, counters, virtual):
    """A /proc/net/dev with ``counters`` ({name: (rx, tx)}) and a sysfs beside it listing ``virtual``."""
    (root / "proc" / "net").mkdir(parents=True)
    (root / "proc" / "net" / "dev").write_text(NET_DEV_HEAD + "".join(
        "%6s: %d 1 0 0 0 0 0 0 %d 1 0 0 0 0 0 0\n" % (name, rx, tx)
        for name, (rx, tx) in counters.items()))
    for name in virtual:
        (root / "sys" / "devices" / "virtual" / "net" / name).mkdir(parents=True)
    return str(root / "proc")


def test_netdev_counts_the_vms_nics_not_its_bridges_veths_or_tunnels(tmp_path):
    # A VM running containers: 1000 bytes from a container to the outside cross
    # veth0a1b (host end rx), docker0 (rx) and eth0 (tx); 5000 bytes between
    # the VM and a container cross only the veth and the bridge; wg0 is a tunnel
    # whose packets go out through eth0 again.
    proc = netdev_tree(tmp_path, {"lo": (9, 9), "eth0": (0, 1000), "docker0": (6000, 0),
                                  "veth0a1b": (6000, 0), "wg0": (0, 300), "ifb0": (50, 50)},
                       ["lo", "docker0", "veth0a1b", "wg0", "ifb0"])
    assert procfs.read_netdev(proc) == {"eth0": (0, 1000)}


def test_netdev_counts_virtual_interfaces_when_they_are_the_only_way_out(tmp_path):
    # In a container, eth0 is one end of a veth pair: sysfs lists it as virtual.
    proc = netdev_tree(tmp_path, {"lo": (9, 9), "eth0": (700, 300)}, ["lo", "eth0"])
    assert procfs.read_netdev(proc) == {"eth0": (700, 300)}
    # With no sysfs beside /proc, nothing is known to be virtual.
    assert procfs.read_netdev(snap("a")) == {"eth0": (4294910000, 100000), "eth1": (500000, 200000)}


def test_agent_loop_bills_the_nic_and_not_the_bridge(tmp_path):
    """The agent's own loop over a /proc whose counters move between its reads."""
    proc = netdev_tree(tmp_path, {"eth0": (0, 0), "br0": (0, 0)}, ["br0"])
    for name in ("stat", "meminfo", "diskstats"):
        shutil.copy(os.path.join(snap("a"), name), os.path.join(proc, name))
    now = [0.0]

    class Sleeper(object):
        """Moves the clock to each deadline; the traffic happens during the first sleep."""
        stopped = False

        def until(self, deadline):
            if now[0] == 0.0:
                with open(os.path.join(proc, "net", "dev"), "r+") as dev:
                    dev.write(NET_DEV_HEAD + "  eth0: 50000 1 0 0 0 0 0 0 20000 1 0 0 0 0 0 0\n"
                                             "   br0: 90000 1 0 0 0 0 0 0 90000 1 0 0 0 0 0 0\n")
                    dev.truncate()
            now[0] = deadline
            return True

    settings = config.load(["--server", "127.0.0.1:9", "--proc-root", proc, "--jitter", "0",
                            "--interval", "10", "--count", "1"], environ={})
    sent = []

    class Sender(object):
        def send(self, lines):
            sent.extend(lines)

        def flush(self, force=False):
            return True

    runner = agent.Agent(settings, Sender(), "v1", None, sleeper=Sleeper(), clock=lambda: now[0])
    try:
        assert runner.run() == 1
    finally:
        runner.sampler.close()
    record = protocol.Decoder().decode_line(sent[0])
    assert (record.net_rx, record.net_tx) == (5000.0, 2000.0)   # eth0's bytes over 10 s


def test_interval_metrics_from_three_snapshots():
    start = sampler.Snapshot.read(snap("a"))
    middle = sampler.Snapshot.read(snap("b"))
    end = sampler.Snapshot.read(snap("c"))
    slices = [sampler.cpu_busy_total(start.cpu, middle.cpu), sampler.cpu_busy_total(middle.cpu, end.cpu)]
    # a -> b: busy 500+100+10+15+25 = 650 of 1000; b -> c: busy 250 of 1000.
    assert slices == [(650, 1000), (250, 1000)]
    metrics = sampler.measure(start, end, slices, procfs.read_meminfo(snap("c")), 10.0)
    assert metrics == sampler.Metrics(
        cpu=45.0,            # 900 / 2000
        cpu_max=65.0,        # the a -> b sub-sample
        mem=25.0,
        disk_r=153600.0,     # (sda +2000 + nvme0n1 +1000 sectors) * 512 B / 10 s
        disk_w=307200.0,     # (sda +4000 + nvme0n1 +2000 sectors) * 512 B / 10 s
        net_rx=8000.0,       # (eth0 +50000 + eth1 +30000) / 10 s; lo ignored
        net_tx=3000.0,       # (eth0 +20000 + eth1 +10000) / 10 s
        vcpus=2, mem_mb=4096)


def test_counter_wrap_reset_and_vanished_devices():
    start = sampler.Snapshot.read(snap("c"))
    end = sampler.Snapshot.read(snap("d"))
    metrics = sampler.measure(start, end, [sampler.cpu_busy_total(start.cpu, end.cpu)],
                              procfs.read_meminfo(snap("d")), 10.0, bits=32)
    # On a 32-bit kernel eth0 rx wraps at 2**32: 4294960000 -> 2704 is 10000
    # bytes; eth0 tx resets 120000 -> 5000, counted from zero: 5000 bytes; eth1
    # vanished and eth2 appeared: no baseline, left out.  Disks: sda +100 sectors read.
    assert metrics == sampler.Metrics(cpu=10.0, cpu_max=10.0, mem=12.5, disk_r=5120.0, disk_w=0.0,
                                      net_rx=1000.0, net_tx=500.0, vcpus=2, mem_mb=4096)


def test_a_64_bit_kernels_counter_that_drops_was_reset_not_wrapped():
    """An interface re-created after moving 2-4 GiB must not be billed a phantom GiB."""
    start = sampler.Snapshot.read(snap("c"))
    end = sampler.Snapshot.read(snap("d"))
    metrics = sampler.measure(start, end, [sampler.cpu_busy_total(start.cpu, end.cpu)],
                              procfs.read_meminfo(snap("d")), 10.0, bits=64)
    # eth0 rx 4294960000 -> 2704: counted from zero, 2704 bytes in 10 s.
    assert (metrics.net_rx, metrics.net_tx) == (270.4, 500.0)
    # A 64-bit agent runs on a 64-bit kernel, and that is its default: an
    # interface re-created after 2.5 GB (seen on a real veth) moved 61578 bytes, not 1.7 GB.
    if sys.maxsize > 2 ** 32:
        assert sampler.COUNTER_BITS == 64
        assert sampler.counter_delta(2558437560, 61578) == 61578
    probe = sampler.IntervalSampler(snap("c"))
    assert probe.bits == sampler.COUNTER_BITS      # the agent's sampler reads its own kernel's
    probe.close()


@pytest.mark.parametrize("previous, current, bits, expected", [
    (10, 25, 64, 15),
    (4294967000, 200, 32, 496),             # 32-bit wrap
    (4294967000, 200, 64, 200),             # a 64-bit counter does not wrap there: a reset
    (1000, 400, 32, 400),                   # reset: counted from zero
    (2 ** 40, 5, 64, 5),                    # 64-bit counter reset
    (3000000000, 2000000000, 32, 2000000000),  # big drop is a reset, not a wrap
])
def test_counter_delta_is_never_negative(previous, current, bits, expected):
    assert sampler.counter_delta(previous, current, bits) == expected


def test_interval_sampler_follows_changing_snapshots(tmp_path):
    """The stateful sampler over a /proc root whose files change between reads."""
    root = tmp_path / "proc"

    def show(name):
        # Rewritten in place, as the kernel does: the sampler keeps its files open.
        for relative in ("stat", "meminfo", "diskstats", os.path.join("net", "dev")):
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(os.path.join(snap(name), relative), "rb") as source:
                data = source.read()
            with open(target, "r+b" if target.exists() else "wb") as out:
                out.write(data)
                out.truncate()

    now = [100.0]
    show("a")
    probe = sampler.IntervalSampler(str(root), clock=lambda: now[0], bits=32)
    probe.begin()
    show("b")
    probe.sub_sample()
    show("c")
    now[0] += 10.0
    first = probe.finish()
    assert (first.cpu, first.cpu_max, first.disk_r, first.net_rx) == (45.0, 65.0, 153600.0, 8000.0)
    show("d")
    now[0] += 10.0
    second = probe.finish()
    assert (second.cpu, second.cpu_max, second.net_rx, second.net_tx) == (10.0, 10.0, 1000.0, 500.0)


def test_missing_proc_file_is_a_clear_error(tmp_path):
    with pytest.raises(procfs.ProcError, match="cannot read .*stat"):
        procfs.read_stat(str(tmp_path))


def test_real_proc_smoke():
    if not os.path.exists("/proc/stat"):
        pytest.skip("no /proc on this system")
    probe = sampler.IntervalSampler("/proc")
    probe.begin()
    probe.sub_sample()
    metrics = probe.finish()
    assert 0.0 <= metrics.cpu <= metrics.cpu_max <= 100.0
    assert 0.0 < metrics.mem < 100.0
    assert metrics.vcpus == os.cpu_count()
    assert metrics.mem_mb > 0
    assert min(metrics.disk_r, metrics.disk_w, metrics.net_rx, metrics.net_tx) >= 0.0


def test_sub_sample_reader_agrees_with_the_full_parser(tmp_path):
    files = procfs.ProcFiles(snap("b"))
    try:
        assert procfs.read_cpu(files) == procfs.read_stat(snap("b"))[0]
    finally:
        files.close()
    (tmp_path / "stat").write_text("intr 1 2 3\n")
    broken = procfs.ProcFiles(str(tmp_path))
    with pytest.raises(procfs.ProcError, match="no cpu line first"):
        procfs.read_cpu(broken)
    broken.close()
