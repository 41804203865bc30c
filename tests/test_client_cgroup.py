"""The agent in a container: CPU and memory from the cgroup that limits it.

Each test builds a /proc and a /sys/fs/cgroup beside it in tmp_path, as the
kernel shows them inside an LXD, Docker or Kubernetes container, and runs
the agent's own sampler over them with a stepped clock.  The /proc files are
the 2-vCPU, 4096 MiB host of tests/data/proc/a (memory 28.47 % used:
(4194304 - 3000000) / 4194304) and do not move, so a CPU % other than 0
can only come from the cgroup.  Expected figures are worked out in the comments.
"""

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from serverproc import LOOPBACK, ServerProcess

from vmstats import logstore, protocol
from vmstats.client import cgroup, procfs, sampler

ROOT = Path(__file__).resolve().parent.parent
HOST = ROOT / "tests" / "data" / "proc" / "a"
MIB = 1 << 20
V2 = "30 25 0:26 %s /sys/fs/cgroup rw,nosuid,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
LXCFS = ("150 140 0:50 /proc/%s /proc/%s rw,nosuid,relatime - fuse.lxcfs lxcfs "
         "rw,user_id=0,group_id=0,allow_other\n")


def put(path, text):
    """Write ``text`` in place, as the kernel rewrites a file the agent keeps open."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path), "r+" if path.exists() else "w") as handle:
        handle.write(text)
        handle.truncate()


def tree(tmp_path, memberships, mountinfo):
    """The host's /proc with ``/proc/self/cgroup`` and ``/proc/self/mountinfo`` added."""
    proc = tmp_path / "proc"
    shutil.copytree(str(HOST), str(proc))
    put(proc / "self" / "cgroup", memberships)
    put(proc / "self" / "mountinfo", mountinfo)
    return proc


def sample(proc, steps, measure="auto"):
    """One 10 s interval with a sub-sample at 5 s; ``steps`` write the files at 0, 5 and 10 s."""
    now = [100.0]
    probe = sampler.IntervalSampler(str(proc), clock=lambda: now[0], measure=measure)
    try:
        steps[0]()
        probe.begin()
        now[0] += 5.0
        steps[1]()
        probe.sub_sample()
        now[0] += 5.0
        steps[2]()
        return probe.finish()
    finally:
        probe.close()


def v2_container(tmp_path, cpu_max="150000 100000", memory_max=str(512 * MIB), extra="",
                 usage_usec=(1000000, 5500000, 7000000)):
    """An LXD-style container on cgroup v2: its own cgroup namespace, systemd inside.

    The agent sits in its service's cgroup, capped as the shipped unit caps it
    (MemoryMax=64M) and with a CPU quota of its own: neither is the machine's.
    The steps write its CPU time at 0, 5 and 10 s (by default 4.5 s of CPU in
    the first 5 s, 1.5 s in the next 5 s).
    """
    proc = tree(tmp_path, "0::/system.slice/vmstats-agent.service\n", V2 % "/" + extra)
    top = tmp_path / "sys" / "fs" / "cgroup"
    put(top / "cpu.max", cpu_max + "\n")
    put(top / "cpuset.cpus.effective", "0-1\n")
    put(top / "memory.max", memory_max + "\n")
    own = top / "system.slice" / "vmstats-agent.service"
    put(own / "memory.max", "%d\n" % (64 * MIB))
    put(own / "cpu.max", "10000 100000\n")
    put(own / "memory.current", "%d\n" % (20 * MIB))
    put(own / "cpu.stat", "usage_usec 999\n")
    put(top / "io.stat", "8:0 rbytes=0 wbytes=0 rios=0 wios=0 dbytes=0 dios=0\n")

    def at(usage_usec):
        def write():
            put(top / "cpu.stat", "usage_usec %d\nuser_usec 1\nsystem_usec 1\n" % usage_usec)
            # 300 MiB charged, 44 MiB of it inactive page cache: a 256 MiB working set.
            put(top / "memory.current", "%d\n" % (300 * MIB))
            put(top / "memory.stat", "anon 1\nfile 2\nactive_file 3\ninactive_file %d\n" % (44 * MIB))
        return write

    return proc, [at(used) for used in usage_usec]


def test_v2_container_is_sized_and_billed_by_its_limits_not_the_host(tmp_path):
    proc, steps = v2_container(tmp_path)
    # A 1.5-CPU limit: 4.5 s of 7.5 s (60 %), then 1.5 of 7.5 (20 %): 6 of 15 s overall.
    # The size sent is the limit, 1.5 vCPUs.  Memory: 256 of 512 MiB.
    assert sample(proc, steps) == sampler.Metrics(cpu=40.0, cpu_max=60.0, mem=50.0, disk_r=0.0,
                                                  disk_w=0.0, net_rx=0.0, net_tx=0.0, vcpus=1.5,
                                                  mem_mb=512)


def test_a_quarter_cpu_quota_is_sized_0_25_and_its_cpu_is_of_that_quarter(tmp_path):
    proc, steps = v2_container(tmp_path, cpu_max="25000 100000",
                               usage_usec=(1000000, 2000000, 2250000))
    # A quarter of a CPU has 1.25 s in 5 s: 1.0 s used (80 %), then 0.25 s (20 %): 1.25 of
    # 2.5 s overall (50 %), so cpu x vcpus is the 0.125 CPUs the container used.
    metrics = sample(proc, steps)
    assert (metrics.cpu, metrics.cpu_max, metrics.vcpus, metrics.mem_mb) == (50.0, 80.0, 0.25, 512)
    assert metrics.cpu / 100 * metrics.vcpus == pytest.approx(1.25 / 10)


def test_a_quota_of_a_third_is_sized_to_three_places_and_cpu_is_of_that_size(tmp_path):
    proc, steps = v2_container(tmp_path, cpu_max="33333 100000",
                               usage_usec=(1000000, 1832500, 2665000))
    # Sent as 0.333 vCPU, and the CPU % is of those 0.333 (3.33 s in 10 s), not of 0.33333:
    # 1.665 s used is 50 %, so the report's cpu x vcpus is the CPU time used.
    metrics = sample(proc, steps)
    assert (metrics.cpu, metrics.cpu_max, metrics.vcpus) == (50.0, 50.0, 0.333)


def test_v1_quarter_cpu_quota_is_sized_0_25(tmp_path):
    here = "/docker/q"
    proc = tree(tmp_path, "4:cpu,cpuacct:%s\n12:memory:%s\n" % (here, here),
                "".join("%d 31 0:%d %s /sys/fs/cgroup/%s rw - cgroup cgroup rw,%s\n"
                        % (40 + n, 30 + n, here, name, name)
                        for n, name in enumerate(("cpu,cpuacct", "memory"))))
    cpu = tmp_path / "sys" / "fs" / "cgroup" / "cpu,cpuacct"
    put(cpu / "cpu.cfs_quota_us", "25000\n")
    put(cpu / "cpu.cfs_period_us", "100000\n")
    put(tmp_path / "sys" / "fs" / "cgroup" / "memory" / "memory.limit_in_bytes", "max\n")

    def at(usage_ns):
        return lambda: put(cpu / "cpuacct.usage", "%d\n" % usage_ns)

    # 1.25 s, then 0.625 s of the 1.25 s a quarter CPU has in 5 s: 100 % then 50 %.
    metrics = sample(proc, [at(10 ** 9), at(2250 * 10 ** 6), at(2875 * 10 ** 6)])
    assert (metrics.cpu, metrics.cpu_max, metrics.vcpus) == (75.0, 100.0, 0.25)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_agent_in_a_quarter_cpu_container_sends_0_25_to_the_real_server(tmp_path, transport):
    proc, steps = v2_container(tmp_path, cpu_max="25000 100000")
    steps[0]()
    with ServerProcess(tmp_path / "server", "--flush-interval", "0.3") as server:
        port = server.udp_port if transport == "udp" else server.tcp_port
        result = agent("--server", "%s:%d" % (LOOPBACK, port), "--transport", transport,
                       "--vm-id", "ct-quarter", "--proc-root", str(proc), "--count", "2",
                       "--interval", "0.5", "--sub-interval", "0.25", "--jitter", "0",
                       "--spool-dir", str(tmp_path / "spool"))
        assert result.returncode == 0, result.stderr
        assert "CPU from the cgroup (0.25 CPUs, sent as 0.25 vCPUs)" in result.stderr
        rows = written_rows(server.data_dir, "ct-quarter", 2)
    assert list(rows.vcpus) == [0.25, 0.25] and list(rows.mem_mb) == [512, 512], rows


def test_measure_host_reads_proc_as_on_a_vm(tmp_path):
    proc, steps = v2_container(tmp_path)
    metrics = sample(proc, steps, measure="host")
    assert (metrics.cpu, metrics.mem, metrics.vcpus, metrics.mem_mb) == (0.0, 28.47, 2, 4096)


def test_cpuset_alone_is_a_cpu_limit(tmp_path):
    """LXD's limits.cpu=1 pins the container to one CPU with no quota."""
    proc, steps = v2_container(tmp_path, cpu_max="max 100000")
    put(tmp_path / "sys" / "fs" / "cgroup" / "cpuset.cpus.effective", "1\n")
    metrics = sample(proc, steps)
    # 6 s of CPU over 10 s of one CPU; the first 5 s ran 4.5 s.
    assert (metrics.cpu, metrics.cpu_max, metrics.vcpus) == (60.0, 90.0, 1)


def test_v1_docker_container_with_a_nested_path(tmp_path):
    """Docker on cgroup v1 without a cgroup namespace: /proc/self/cgroup names the host's path,
    and the runtime bind-mounts that cgroup onto /sys/fs/cgroup/<controller>."""
    here = "/docker/abc/system.slice/vmstats-agent.service"
    proc = tree(tmp_path, "12:memory:%s\n4:cpu,cpuacct:%s\n3:cpuset:%s\n1:name=systemd:%s\n0::/\n"
                % (here, here, here, here),
                "".join("%d 31 0:%d /docker/abc /sys/fs/cgroup/%s rw,relatime - cgroup cgroup rw,%s\n"
                        % (40 + n, 30 + n, name, name)
                        for n, name in enumerate(("cpu,cpuacct", "memory", "cpuset")))
                # A hybrid host's empty v2 hierarchy: cpu and memory are v1's, so it is not read.
                + "50 31 0:40 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n")
    cgroups = tmp_path / "sys" / "fs" / "cgroup"
    cpu, memory = cgroups / "cpu,cpuacct", cgroups / "memory"
    put(cpu / "cpu.cfs_quota_us", "50000\n")
    put(cpu / "cpu.cfs_period_us", "100000\n")
    put(cgroups / "cpuset" / "cpuset.effective_cpus", "0-1\n")
    put(memory / "memory.limit_in_bytes", "%d\n" % (1024 * MIB))

    def at(usage_ns):
        def write():
            put(cpu / "cpuacct.usage", "%d\n" % usage_ns)
            # 600 MiB charged, 88 MiB inactive page cache in the whole tree: 512 MiB working set.
            put(memory / "memory.usage_in_bytes", "%d\n" % (600 * MIB))
            put(memory / "memory.stat", "cache 5\ninactive_file 0\ntotal_cache 9\n"
                                        "total_inactive_file %d\n" % (88 * MIB))
        return write

    # Half a CPU: 2.5 s in the first 5 s is all of it (100 %), then 0.5 s (20 %): 3 of 5 s.
    metrics = sample(proc, [at(10 * 10 ** 9), at(12500 * 10 ** 6), at(13 * 10 ** 9)])
    assert (metrics.cpu, metrics.cpu_max, metrics.mem, metrics.vcpus, metrics.mem_mb) == (
        60.0, 100.0, 50.0, 0.5, 1024)


@pytest.mark.parametrize("cpu_max, memory_max", [
    ("max 100000", "max"),                       # no limit set
    ("400000 100000", str(8192 * MIB)),          # limits the 2-CPU, 4 GiB host can never reach
])
def test_without_a_limit_the_host_figures_are_sent(tmp_path, cpu_max, memory_max):
    proc, steps = v2_container(tmp_path, cpu_max=cpu_max, memory_max=memory_max)
    put(tmp_path / "sys" / "fs" / "cgroup" / "cpuset.cpus.effective", "0-1\n")
    metrics = sample(proc, steps)
    assert (metrics.cpu, metrics.mem, metrics.vcpus, metrics.mem_mb) == (0.0, 28.47, 2, 4096)
    # --measure cgroup: the container's own use, of the host's size: 6 s of 20 CPU-seconds,
    # 256 of 4096 MiB.
    forced = sample(proc, steps, measure="cgroup")
    assert (forced.cpu, forced.cpu_max, forced.mem, forced.vcpus, forced.mem_mb) == (
        30.0, 45.0, 6.25, 2, 4096)


def test_v1_unlimited_is_a_huge_number_and_means_no_limit(tmp_path):
    proc = tree(tmp_path, "4:memory:/\n3:cpu,cpuacct:/\n",
                "40 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
                "41 31 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
    cpu, memory = (tmp_path / "sys" / "fs" / "cgroup" / name for name in ("cpu,cpuacct", "memory"))
    put(cpu / "cpu.cfs_quota_us", "-1\n")
    put(cpu / "cpu.cfs_period_us", "100000\n")
    put(memory / "memory.limit_in_bytes", "9223372036854771712\n")
    put(memory / "memory.usage_in_bytes", "%d\n" % (900 * MIB))
    put(memory / "memory.stat", "total_inactive_file 0\n")
    steps = [lambda usage=usage: put(cpu / "cpuacct.usage", "%d\n" % usage)
             for usage in (0, 5 * 10 ** 9, 10 * 10 ** 9)]
    metrics = sample(proc, steps)
    assert (metrics.cpu, metrics.mem, metrics.vcpus, metrics.mem_mb) == (0.0, 28.47, 2, 4096)


def test_lxcfs_proc_files_are_the_containers_already_and_are_not_corrected_again(tmp_path):
    proc, steps = v2_container(tmp_path, extra=LXCFS % ("meminfo", "meminfo") + LXCFS % ("stat", "stat"))
    metrics = sample(proc, steps)
    assert (metrics.cpu, metrics.mem, metrics.vcpus, metrics.mem_mb) == (0.0, 28.47, 2, 4096)
    # --measure cgroup reads the cgroup whatever serves /proc.
    assert sample(proc, steps, measure="cgroup").mem_mb == 512


def test_lxcfs_meminfo_alone_leaves_cpu_to_the_cgroup(tmp_path):
    """docker run -v /var/lib/lxcfs/proc/meminfo:/proc/meminfo: only memory is corrected by LXCFS."""
    proc, steps = v2_container(tmp_path, extra=LXCFS % ("meminfo", "meminfo"))
    metrics = sample(proc, steps)
    assert (metrics.cpu, metrics.mem, metrics.vcpus, metrics.mem_mb) == (40.0, 28.47, 1.5, 4096)


def host_namespace_container(tmp_path, own, init):
    """``docker run --cgroupns=host`` on cgroup v2: the host's whole tree at /sys/fs/cgroup, the
    agent in ``own`` and the container's PID 1 in ``init``.  The host's root cgroup holds the host's
    CPU time and no limit; the container's scope a 1-CPU, 512 MiB limit and its own use."""
    scope = "system.slice/docker-abc.scope"
    proc = tree(tmp_path, "0::/%s\n" % own, V2 % "/")
    put(proc / "1" / "cgroup", "0::/%s\n" % init)
    top = tmp_path / "sys" / "fs" / "cgroup"
    put(top / "cpuset.cpus.effective", "0-1\n")
    ct = top / scope
    put(ct / "cpu.max", "100000 100000\n")
    put(ct / "cpuset.cpus.effective", "0-1\n")
    put(ct / "memory.max", "%d\n" % (512 * MIB))
    put(top / scope / "system.slice" / "vmstats-agent.service" / "memory.max", "%d\n" % (64 * MIB))

    def at(host_usec, usec):
        def write():
            put(top / "cpu.stat", "usage_usec %d\n" % host_usec)
            put(ct / "cpu.stat", "usage_usec %d\n" % usec)
            put(ct / "memory.current", "%d\n" % (300 * MIB))
            put(ct / "memory.stat", "inactive_file %d\n" % (44 * MIB))
        return write

    # The host's CPUs ran 9 s, the container 3 s then 1 s of its one CPU.
    return proc, [at(0, 0), at(9000000, 3000000), at(18000000, 4000000)]


@pytest.mark.parametrize("own, init", [
    ("system.slice/docker-abc.scope", "system.slice/docker-abc.scope"),
    # systemd inside: the agent in its service (64 MiB), PID 1 in init.scope.
    ("system.slice/docker-abc.scope/system.slice/vmstats-agent.service",
     "system.slice/docker-abc.scope/init.scope"),
])
def test_a_container_seeing_the_hosts_tree_reads_its_own_cgroup(tmp_path, own, init):
    proc, steps = host_namespace_container(tmp_path, own, init)
    # 4 of 10 CPU-seconds; 256 of 512 MiB.
    assert sample(proc, steps) == sampler.Metrics(cpu=40.0, cpu_max=60.0, mem=50.0, disk_r=0.0,
                                                  disk_w=0.0, net_rx=0.0, net_tx=0.0, vcpus=1,
                                                  mem_mb=512)


@pytest.mark.parametrize("init", ["0::/init.scope\n", "0::/../../init.scope\n", None])
def test_a_vms_or_namespaced_containers_machine_is_the_top_of_its_tree(tmp_path, init):
    """systemd's PID 1 in init.scope beside the agent's service, a PID 1 outside the agent's
    cgroup namespace (``/..``), or none readable: the top is the machine, never the service."""
    proc, steps = v2_container(tmp_path)
    if init is not None:
        put(proc / "1" / "cgroup", init)
    assert sample(proc, steps)[:3] == (40.0, 60.0, 50.0)


def test_the_machine_is_the_cgroup_the_agent_shares_with_pid_1():
    assert cgroup.machine_cgroup("/a/b/c", "/a/b/d", "/") == "/a/b"
    assert cgroup.machine_cgroup("/a/b", "/a/b", "/") == "/a/b"
    assert cgroup.machine_cgroup("/a/b", "/", "/") == "/"
    assert cgroup.machine_cgroup("/a/bc", "/a/b", "/") == "/a"
    # Above the mounted tree, unknown or outside the namespace: the mount's top.
    assert cgroup.machine_cgroup("/docker/x/s", "/init.scope", "/docker/x") == "/docker/x"
    assert cgroup.machine_cgroup("/s", None, "/") == "/"
    assert cgroup.machine_cgroup("/s", "/../x", "/") == "/"


def test_a_mount_that_does_not_hold_the_agents_cgroup_is_not_read(tmp_path):
    """In a cgroup namespace, a mount made outside it shows its root as /../..: where the
    container's cgroup sits in it is unknown, so /proc is read, and --measure cgroup says why."""
    proc, steps = v2_container(tmp_path)
    put(proc / "self" / "mountinfo", V2 % "/../..")
    metrics = sample(proc, steps)
    assert (metrics.cpu, metrics.vcpus, metrics.mem_mb) == (0.0, 2, 4096)
    with pytest.raises(procfs.ProcError, match="--measure cgroup: no cgroup mount holds"):
        sample(proc, steps, measure="cgroup")


def host_disks(proc, read_sectors, written_sectors):
    """The host's /proc/diskstats with sda (8:0) at these sector counts, dm-0 (253:0) above it."""
    put(proc / "diskstats", "".join(
        "%4d %7d %s 1 0 %d 0 1 0 %d 0 0 0 0\n" % (major, minor, name, read_sectors, written_sectors)
        for major, minor, name in ((8, 0, "sda"), (8, 1, "sda1"), (253, 0, "dm-0"))))


def with_disks(steps, *writes):
    """``steps`` each followed by its write of ``writes``."""
    return [lambda step=step, write=write: (step(), write())
            for step, write in zip(steps, writes, strict=True)]


def test_v2_container_disks_are_its_io_stat_not_the_hosts(tmp_path):
    """io.stat's bytes, the whole disk's (sda, not dm-0 above it, as /proc's rule), while the
    host's disks move at another rate."""
    proc, steps = v2_container(tmp_path)
    top = tmp_path / "sys" / "fs" / "cgroup"

    def at(mib_read, mib_written, host_sectors):
        def write():
            put(top / "io.stat", "".join(
                "%s rbytes=%d wbytes=%d rios=1 wios=1 dbytes=0 dios=0\n"
                % (device, mib_read * MIB, mib_written * MIB) for device in ("253:0", "8:0")))
            host_disks(proc, host_sectors, host_sectors)
        return write

    # 1 MiB read and 3 MiB written in 10 s: 104857.6 and 314572.8 B/s (the host: 51200 B/s).
    metrics = sample(proc, with_disks(steps, at(5, 10, 0), at(5, 12, 500), at(6, 13, 1000)))
    assert (metrics.disk_r, metrics.disk_w) == (104857.6, 314572.8)
    assert sample(proc, with_disks(steps, at(5, 10, 0), at(5, 12, 500), at(6, 13, 1000)),
                  measure="host")[3:5] == (51200.0, 51200.0)


def v1_blkio_container(tmp_path):
    """Docker on cgroup v1 with its cgroups bind-mounted, blkio among them: 1 CPU, 1 GiB."""
    here = "/docker/abc"
    proc = tree(tmp_path, "".join("%d:%s:%s\n" % (n, name, here) for n, name in
                                  enumerate(("cpu,cpuacct", "memory", "cpuset", "blkio"), 2)),
                "".join("%d 31 0:%d /docker/abc /sys/fs/cgroup/%s rw,relatime - cgroup cgroup rw,%s\n"
                        % (40 + n, 30 + n, name, name)
                        for n, name in enumerate(("cpu,cpuacct", "memory", "cpuset", "blkio"))))
    cgroups = tmp_path / "sys" / "fs" / "cgroup"
    put(cgroups / "cpu,cpuacct" / "cpu.cfs_quota_us", "100000\n")
    put(cgroups / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    put(cgroups / "cpu,cpuacct" / "cpuacct.usage", "0\n")
    put(cgroups / "memory" / "memory.limit_in_bytes", "%d\n" % (1024 * MIB))
    put(cgroups / "memory" / "memory.usage_in_bytes", "%d\n" % (100 * MIB))
    put(cgroups / "memory" / "memory.stat", "total_inactive_file 0\n")
    return proc, cgroups / "blkio"


def blkio(path, mib_read, mib_written):
    """A v1 blkio file as the kernel writes it, with sda's (8:0) figures."""
    def write():
        put(path, "8:0 Read %d\n8:0 Write %d\n8:0 Sync 0\n8:0 Async 0\n8:0 Discard 0\n"
                  "8:0 Total %d\nTotal %d\n" % (mib_read * MIB, mib_written * MIB,
                                                  (mib_read + mib_written) * MIB,
                                                  (mib_read + mib_written) * MIB))
    return write


def test_v1_container_disks_are_its_blkio_bytes(tmp_path):
    proc, directory = v1_blkio_container(tmp_path)
    recursive = directory / "blkio.throttle.io_service_bytes_recursive"
    put(directory / "blkio.throttle.io_service_bytes", "Total 0\n")   # the agent's own cgroup only
    metrics = sample(proc, [blkio(recursive, 2, 4), blkio(recursive, 2, 5), blkio(recursive, 4, 6)])
    assert (metrics.disk_r, metrics.disk_w, metrics.vcpus, metrics.mem_mb) == (
        209715.2, 209715.2, 1, 1024)
    # A kernel without the _recursive file: the plain one.
    os.unlink(str(recursive))
    plain = directory / "blkio.throttle.io_service_bytes"
    assert sample(proc, [blkio(plain, 0, 0), blkio(plain, 0, 0), blkio(plain, 0, 1)])[3:5] == (
        0.0, 104857.6)


def test_a_blkio_that_lists_no_device_leaves_disks_to_proc_and_says_so_once(tmp_path):
    """Recent kernels count a v1 cgroup's bytes only on devices with a throttle rule: "Total 0"
    cannot tell no I/O from none counted, so the host's figures are sent, said once in the log
    (at start, in the line saying what is measured) while it lasts; once a device is listed, the
    cgroup's again."""
    proc, directory = v1_blkio_container(tmp_path)
    path = directory / "blkio.throttle.io_service_bytes_recursive"
    put(path, "Total 0\n")
    logger = logging.getLogger("vmstats.agent")
    said = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    host_disks(proc, 0, 0)
    start = cgroup.Confinement(str(proc))
    assert start.describe(2, 4096 * MIB, procfs.read_block_devices(str(proc))) == (
        "CPU from the cgroup (1 CPUs, sent as 1 vCPUs); memory from the cgroup (1024 MiB); "
        "disk from /proc, the host's (%s lists no device)" % path)
    start.close()
    now = [100.0]
    probe = sampler.IntervalSampler(str(proc), clock=lambda: now[0])
    try:
        probe.begin()
        for step in range(1, 4):
            now[0] += 10.0
            host_disks(proc, 2000 * step, 4000 * step)   # 102400 and 204800 B/s
            metrics = probe.finish()
            assert (metrics.disk_r, metrics.disk_w) == (102400.0, 204800.0)
        assert said == []                                  # the start line said it
        blkio(path, 1, 1)()
        now[0] += 10.0
        probe.finish()                                     # still /proc's interval; the next is not
        assert said == ["disk from the cgroup again"]
        now[0] += 10.0
        host_disks(proc, 99999, 99999)
        blkio(path, 1, 2)()
        assert probe.finish()[3:5] == (0.0, 104857.6)
        # Readable at the interval's start, not at its end: the interval's disks are unknown,
        # and the host's are sent from the next on, said once.
        put(path, "Total 0\n")
        for expected in ((None, None), (0.0, 0.0), (0.0, 0.0)):
            now[0] += 10.0
            assert probe.finish()[3:5] == expected
        assert said == ["disk from the cgroup again",
                        "disk from /proc, the host's: %s lists no device" % path]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
        probe.close()


def test_lxcfs_diskstats_are_the_containers_already(tmp_path):
    proc, steps = v2_container(tmp_path, extra=LXCFS % ("diskstats", "diskstats"))
    top = tmp_path / "sys" / "fs" / "cgroup"
    moves = [lambda n=n: (put(top / "io.stat", "8:0 rbytes=%d wbytes=0\n" % (n * MIB)),
                          host_disks(proc, 1000 * n, 0)) for n in range(3)]
    # 2000 sectors in 10 s; the cgroup's 2 MiB only with --measure cgroup.
    assert sample(proc, with_disks(steps, *moves))[3] == 102400.0
    assert sample(proc, with_disks(steps, *moves), measure="cgroup")[3] == 209715.2


def test_a_proc_without_self_is_a_vm_unless_cgroup_is_asked_for():
    assert cgroup.Confinement(str(HOST), "auto").cpus(2) is None
    with pytest.raises(procfs.ProcError, match="cannot read .*self/cgroup"):
        cgroup.Confinement(str(HOST), "cgroup")


def test_parsers_read_the_kernels_formats():
    assert cgroup.cpu_count("0-3,8,10-11\n") == 7
    assert cgroup.cpu_count("\n") is cgroup.cpu_count("0-x") is None
    assert cgroup.parse_memberships("2:cpu,cpuacct:/a:b\n0::/x\n") == {
        "cpu": "/a:b", "cpuacct": "/a:b", "": "/x"}
    mount, = cgroup.parse_mountinfo(
        "36 35 98:0 /my\\040dir /sys/fs/cgroup/cpu rw master:1 shared:2 - cgroup cg rw,cpu\n")
    assert (mount.root, mount.point, mount.fstype, "cpu" in mount.options) == (
        "/my dir", "/sys/fs/cgroup/cpu", "cgroup", True)
    # vcpus holds 3 digits after the point: a limit is sent as it is, rounded, never as 0,
    # and a whole one as an int (its wire form is then 2i, what older servers read).
    assert protocol.field_places("vcpus") == 3
    sizes = [cgroup.vcpus_for(c) for c in (0.25, 1.0, 1.5, 2.0, 1 / 3, 0.0004, 0.0006, 1.9996)]
    assert sizes == [0.25, 1, 1.5, 2, 0.333, 0.001, 0.001, 2]
    assert [type(size) for size in sizes[1:4:2]] == [int, int]


def agent(*args, env=None):
    return subprocess.run([sys.executable, "-m", "vmstats.client", *args],
                          env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})),
                          capture_output=True, text=True, timeout=60)


def test_once_sends_the_limits_and_says_at_start_what_it_measures(tmp_path):
    proc, steps = v2_container(tmp_path)
    steps[0]()
    result = agent("--once", "--vm-id", "ct1", "--proc-root", str(proc))
    assert result.returncode == 0, result.stderr
    record = protocol.Decoder().decode_line(result.stdout.strip().encode())
    assert (record.vcpus, record.mem_mb, record.mem) == (1.5, 512, 50.0)
    assert ",vcpus=1.5," in result.stdout
    assert result.stderr.splitlines() == [
        "vmstats-agent INFO: CPU from the cgroup (1.5 CPUs, sent as 1.5 vCPUs); "
        "memory from the cgroup (512 MiB); disk from the cgroup"]
    host = agent("--once", "--vm-id", "ct1", "--proc-root", str(proc), env={"VMSTATS_MEASURE": "host"})
    assert host.stderr.splitlines() == ["vmstats-agent INFO: CPU and memory from /proc"]
    assert protocol.Decoder().decode_line(host.stdout.strip().encode()).mem_mb == 4096


BURNER = "data = b'x' * (96 << 20)\nwhile True:\n    pass\n"


def v1_hierarchies(wanted=("cpu", "cpuacct", "memory")):
    """``{controller: (mount point, mount root, this process's cgroup)}`` for ``wanted``."""
    memberships = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _number, names, path = line.split(":", 2)
        memberships.update((name, path) for name in names.split(","))
    found = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        dash = fields.index("-", 6)
        if fields[dash + 1] == "cgroup":
            for name in fields[dash + 3].split(","):
                if name in wanted:
                    found[name] = (fields[4], fields[3], memberships[name])
    return found


def remove_cgroups(directories):
    """rmdir each cgroup once the processes this test put in it are gone (an exit takes a moment)."""
    deadline = time.monotonic() + 10
    for directory in directories:
        while True:
            for pid in Path(directory, "cgroup.procs").read_text().split():
                os.kill(int(pid), signal.SIGKILL)   # only this test's shell, burner and agent
            try:
                os.rmdir(directory)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def v2_root():
    """The cgroup2 mount at /sys/fs/cgroup when cpu and memory are its controllers, else None."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        dash = fields.index("-", 6)
        if fields[4] == "/sys/fs/cgroup" and fields[dash + 1] == "cgroup2":
            controllers = Path("/sys/fs/cgroup/cgroup.controllers").read_text().split()
            return "/sys/fs/cgroup" if {"cpu", "memory"} <= set(controllers) else None
    return None


def run_in_cgroup(made, mounts, usage, memory, usage_ns):
    """The burner and the agent in the cgroups ``made``, seen through ``mounts`` as in a container:
    the cgroup's CPU counter around the agent's record, its charge and inactive cache, and the
    record the agent sends with ``--measure host``."""
    script = "\n".join(
        ["set -e"]
        + ["echo $$ > %s/cgroup.procs" % d for d in made]
        + ["mount --bind %s %s" % (child, point) for point, child in sorted(mounts.items())]
        + ['%s -c "$BURNER" & burner=$!' % sys.executable,
           "sleep 1",
           "echo $(%s) $(date +%%s.%%N)" % usage,
           "%s -m vmstats.client --once --vm-id 10.0.0.1" % sys.executable,
           "echo $(%s) $(date +%%s.%%N)" % usage,
           memory,
           "%s -m vmstats.client --once --vm-id 10.0.0.1 --measure host" % sys.executable,
           "kill $burner",
           "wait $burner || true"])
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          env=dict(os.environ, PYTHONPATH=str(ROOT), BURNER=BURNER),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    before, line, after, charge, host_line = done.stdout.splitlines()
    (used_0, t_0), (used_1, t_1) = [map(float, text.split()) for text in (before, after)]
    cgroup_cpu = 100.0 * (used_1 - used_0) * usage_ns / 1e9 / (0.5 * (t_1 - t_0))
    charged, _key, inactive = charge.split()
    return line, host_line, cgroup_cpu, 100.0 * (int(charged) - int(inactive)) / (256 * MIB)


def real_v1(name):
    """A child of this test's own cgroup in each v1 hierarchy, bind-mounted over it as Docker does."""
    found = v1_hierarchies()
    assert os.geteuid() == 0 and shutil.which("unshare") and set(found) == {"cpu", "cpuacct", "memory"}, (
        "this test needs root, unshare and cgroup v1 cpu, cpuacct and memory hierarchies "
        "or cgroup v2 with both controllers: %r" % found)
    children = {}
    for controller, (point, root, path) in found.items():
        children[controller] = os.path.join(point, os.path.relpath(path, root), name)
    mounts = dict((found[c][0], children[c]) for c in found)   # one per hierarchy (cpu,cpuacct)
    made = []
    try:
        for directory in sorted(set(children.values())):
            os.mkdir(directory)
            made.append(directory)
        Path(children["cpu"], "cpu.cfs_period_us").write_text("100000")
        Path(children["cpu"], "cpu.cfs_quota_us").write_text("50000")
        Path(children["memory"], "memory.limit_in_bytes").write_text(str(256 * MIB))
        memory = found["memory"][0]
        return run_in_cgroup(
            made, mounts, "cat %s" % os.path.join(found["cpuacct"][0], "cpuacct.usage"),
            "echo $(cat %s/memory.usage_in_bytes) $(grep '^total_inactive_file ' %s/memory.stat)"
            % (memory, memory), 1)
    finally:
        remove_cgroups(made)


def real_v2(root, name):
    """A child of the v2 root (the one cgroup exempt from the no-internal-processes rule, so the
    controllers can be handed down there), bind-mounted over /sys/fs/cgroup as a runtime does."""
    assert os.geteuid() == 0 and shutil.which("unshare"), "this test needs root and unshare"
    Path(root, "cgroup.subtree_control").write_text("+cpu +memory")
    child = os.path.join(root, name)
    made = []
    try:
        os.mkdir(child)
        made.append(child)
        Path(child, "cpu.max").write_text("50000 100000")
        Path(child, "memory.max").write_text(str(256 * MIB))
        return run_in_cgroup(
            made, {root: child}, "grep '^usage_usec ' %s/cpu.stat | cut -d' ' -f2" % root,
            "echo $(cat %s/memory.current) $(grep '^inactive_file ' %s/memory.stat)" % (root, root),
            1000)
    finally:
        remove_cgroups(made)


def test_real_cgroup_with_a_burner_is_read_as_the_container_sees_it(tmp_path):
    """A real cgroup limited to half a CPU and 256 MiB, with a CPU and memory burner in it.

    The agent runs as in a Docker container: in its own mount namespace, with
    the cgroup bind-mounted over the hierarchy it sees (cgroup v2 when cpu and
    memory are there, else each v1 hierarchy).  Needs root and unshare(1).
    """
    name = "vmstats-test-%d" % os.getpid()
    root = v2_root()
    line, host_line, cgroup_cpu, working_set = real_v2(root, name) if root else real_v1(name)
    record = protocol.Decoder().decode_line(line.encode())
    host = protocol.Decoder().decode_line(host_line.encode())
    # Half a CPU is sent as 0.5 vCPU; the size is the limit's, not the host's.
    assert (record.vcpus, record.mem_mb) == (0.5, 256), line
    assert (host.vcpus, host.mem_mb) == (os.cpu_count(), procfs.read_meminfo("/proc")["MemTotal"] // 1024)
    # The agent's second is inside the window the cgroup's own counter was read over, and the
    # burner's 96 MiB are most of the working set (the agent's own memory had left at the end).
    assert abs(record.cpu - min(100.0, cgroup_cpu)) <= 20, (record.cpu, cgroup_cpu)
    assert working_set >= 35 and abs(record.mem - working_set) <= 10, (record.mem, working_set)


def written_rows(data_dir, vm, count):
    """The server's rows for ``vm`` once ``count`` are written (a flush may lag the agent)."""
    deadline = time.monotonic() + 20
    while True:
        paths = sorted(Path(logstore.vm_dir(str(data_dir), vm)).glob("*" + logstore.SUFFIX))
        rows = logstore.read_rows(str(p) for p in paths)[0] if paths else []
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def whole_disk_of(path):
    """``MAJOR:MINOR`` of the whole disk holding ``path`` (a partition's parent)."""
    st_dev = os.stat(str(path)).st_dev
    device = "/sys/dev/block/%d:%d" % (os.major(st_dev), os.minor(st_dev))
    assert os.major(st_dev) and os.path.exists(device), "this test needs %s on a block device" % path
    if os.path.exists(os.path.join(device, "partition")):
        device = os.path.join(os.path.realpath(device), "..")
    return Path(device, "dev").read_text().strip()


def host_tree_cgroups(name, disk):
    """A child cgroup of this test's own limited to 1 CPU and 256 MiB, in every hierarchy the
    agent reads (v2 when cpu and memory are there, else v1's); ``[directory]`` to join, and
    the file of its disk bytes.  v1 gets a throttle rule on ``disk`` far above any speed:
    recent kernels count a v1 cgroup's bytes only on a device with a rule."""
    root = v2_root()
    if root:
        Path(root, "cgroup.subtree_control").write_text("+cpu +memory +io")
        child = os.path.join(root, name)
        os.mkdir(child)
        Path(child, "cpu.max").write_text("100000 100000")
        Path(child, "memory.max").write_text(str(256 * MIB))
        return [child], os.path.join(child, "io.stat")
    found = v1_hierarchies(("cpu", "cpuacct", "memory", "blkio"))
    assert set(found) == {"cpu", "cpuacct", "memory", "blkio"}, found
    made = []
    for controller in sorted(found):
        point, root, path = found[controller]
        directory = os.path.join(point, os.path.relpath(path, root), name)
        if directory not in made:
            os.mkdir(directory)
            made.append(directory)
        if controller == "cpu":
            Path(directory, "cpu.cfs_period_us").write_text("100000")
            Path(directory, "cpu.cfs_quota_us").write_text("100000")
        elif controller == "memory":
            Path(directory, "memory.limit_in_bytes").write_text(str(256 * MIB))
        elif controller == "blkio":
            Path(directory, "blkio.throttle.write_bps_device").write_text("%s %d" % (disk, 1 << 40))
            written = os.path.join(directory, "blkio.throttle.io_service_bytes_recursive")
    return made, written


def bytes_written(path):
    """The bytes a cgroup's io.stat (v2) or blkio file (v1) says it wrote, over all devices."""
    text = Path(path).read_text()
    if path.endswith("io.stat"):
        return sum(int(part[7:]) for part in text.split() if part.startswith("wbytes="))
    return sum(int(line.split()[2]) for line in text.splitlines() if line.split()[1:2] == ["Write"])


def test_real_agent_seeing_the_hosts_cgroup_tree_sends_its_containers_figures(tmp_path):
    """``docker run --cgroupns=host``: the agent sees the host's whole cgroup tree at
    /sys/fs/cgroup, runs as PID 1 of its own PID namespace, in a real cgroup of 1 CPU and
    256 MiB with a writer of direct I/O beside it, and sends to the real server on loopback.
    The written rows carry the cgroup's size, not the host's root (2 CPUs here, and the host's
    memory), and the cgroup's disk bytes.  Needs root and unshare(1)."""
    assert os.geteuid() == 0 and shutil.which("unshare") and os.cpu_count() > 1, (
        "this test needs root, unshare and more than one CPU")
    made, written = host_tree_cgroups("vmstats-hostns-%d" % os.getpid(), whole_disk_of(tmp_path))
    try:
        with ServerProcess(tmp_path / "server", "--flush-interval", "0.5") as server:
            script = "\n".join(
                ["set -e"] + ["echo $$ > %s/cgroup.procs" % d for d in made]
                + ["(while :; do dd if=/dev/zero of=%s bs=1M count=1 oflag=direct conv=notrunc "
                   "2>/dev/null; sleep 0.05; done) & writer=$!" % (tmp_path / "written"),
                   "status=0",
                   "unshare --pid --fork --mount-proc %s -m vmstats.client --server %s:%d "
                   "--vm-id ct-hostns --count 3 --interval 1 --sub-interval 0.25 --jitter 0 "
                   "|| status=$?" % (sys.executable, LOOPBACK, server.udp_port),
                   "kill $writer", "wait $writer || true", "exit $status"])
            done = subprocess.run(["sh", "-c", script], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                                  capture_output=True, text=True, timeout=60)
            total = bytes_written(written)
            assert done.returncode == 0, done.stderr
            assert "CPU from the cgroup (1 CPUs, sent as 1 vCPUs); memory from the cgroup " \
                "(256 MiB); disk from the cgroup" in done.stderr, done.stderr
            rows = written_rows(server.data_dir, "ct-hostns", 3)
    finally:
        remove_cgroups(made)
    assert [(row.vcpus, row.mem_mb) for row in rows.itertuples()] == [(1, 256)] * 3, rows
    # Each interval (about 1 s) saw some of the writer's bytes, and together no more than the
    # cgroup counted over the whole run.
    assert all(row.disk_w > 0 for row in rows.itertuples()), rows
    assert rows.disk_w.sum() <= 1.2 * total, (rows, total)
