"""Telegraf's lines and the InfluxDB client give the rows the vmstats agent gives, same numbers.

One VM's counters are written as /proc snapshots 10 s apart for a minute.
The agent's own sampling code turns them into its record; the same counters
become the lines Telegraf's cpu, mem, diskio, net and system inputs emit
(their documented formulas), sent to a real server over the line-protocol
TCP port and, through the real ``influxdb-client`` library, over
``/api/v2/write``.  All three VMs' logged rows must be equal.
"""

import os
from itertools import pairwise

import influxdb_client
from influxdb_client.client.write_api import SYNCHRONOUS
from serverproc import serve
from test_server_udp import line, logged, now

from vmstats import protocol
from vmstats.client import procfs, sampler

STEP = 10
#: (user nice system idle iowait irq softirq steal) jiffies added per 10 s on 2 vCPUs (2000 each).
CPU_STEPS = [(300, 0, 100, 1500, 40, 20, 20, 20), (100, 0, 60, 1800, 20, 10, 10, 0),
             (900, 20, 200, 800, 40, 10, 20, 10), (200, 0, 100, 1640, 40, 10, 10, 0),
             (60, 0, 40, 1880, 10, 5, 5, 0), (500, 0, 150, 1300, 30, 10, 10, 0)]
MEM_TOTAL_KB = 4194304
MEM_AVAILABLE_KB = 2936012


def write_snapshot(root, k: int) -> None:
    """The k-th moment's /proc files (k = 0 .. 6)."""
    os.makedirs(os.path.join(root, "net"), exist_ok=True)
    cpu = [10000, 0, 4000, 90000, 500, 100, 200, 300]
    for step in CPU_STEPS[:k]:
        cpu = [a + b for a, b in zip(cpu, step, strict=True)]
    half = [value // 2 for value in cpu]
    with open(os.path.join(root, "stat"), "w") as out:
        out.write("cpu  %s 0 0\n" % " ".join(map(str, cpu)))
        for n in range(2):
            out.write("cpu%d %s 0 0\n" % (n, " ".join(map(str, half))))
    with open(os.path.join(root, "meminfo"), "w") as out:
        out.write("MemTotal: %d kB\nMemFree: 100000 kB\nMemAvailable: %d kB\n"
                  % (MEM_TOTAL_KB, MEM_AVAILABLE_KB))
    read = [20000 + 4000 * k, 500 + 300 * k * k]   # sectors: sda, sda1 (a partition)
    written = [9000 + 700 * k, 1000 + 10 * k]
    with open(os.path.join(root, "diskstats"), "w") as out:
        out.write("   8       0 sda 1 0 %d 0 1 0 %d 0 0 0 0 0 0 0 0 0 0\n" % (read[0], written[0]))
        out.write("   8       1 sda1 1 0 %d 0 1 0 %d 0 0 0 0 0 0 0 0 0 0\n" % (read[1], written[1]))
        out.write("   7       0 loop0 1 0 %d 0 1 0 0 0 0 0 0 0 0 0 0 0 0\n" % (99 * k))
    # eth0's rx wraps its 32-bit counter in the middle of the minute (a 32-bit kernel's).
    rx = (4294960000 + 123456 * k) % (1 << 32)
    with open(os.path.join(root, "net", "dev"), "w") as out:
        out.write("Inter-| header\n face | header\n")
        out.write("    lo: %d 1 0 0 0 0 0 0 %d 1 0 0 0 0 0 0\n" % (5000 * k, 5000 * k))
        out.write("  eth0: %d 1 0 0 0 0 0 0 %d 1 0 0 0 0 0 0\n" % (rx, 100000 + 2345 * k))
        out.write("  eth1: %d 1 0 0 0 0 0 0 %d 1 0 0 0 0 0 0\n" % (500000 + 77 * k, 0))


def agent_record(roots, vm: str, ts: int) -> protocol.Record:
    """What the agent sends for the minute: its sampler over the seven snapshots."""
    snaps = [sampler.Snapshot.read(root) for root in roots]
    slices = [sampler.cpu_busy_total(a.cpu, b.cpu) for a, b in pairwise(snaps)]
    metrics = sampler.measure(snaps[0], snaps[-1], slices, procfs.read_meminfo(roots[-1]),
                              STEP * (len(roots) - 1), bits=32)
    return protocol.Record(vm=vm, ts=ts, **metrics._asdict())


def telegraf_lines(roots, host: str, t0: int, with_cpu_from: int = 1) -> list[str]:
    """The lines Telegraf's inputs emit at each snapshot (ns timestamps, its default)."""
    out = []
    for k, root in enumerate(roots):
        ns = (t0 + STEP * k) * 10**9
        cpu, vcpus = procfs.read_stat(root)
        if k >= with_cpu_from:
            before, _ = procfs.read_stat(roots[k - 1])
            d = [b - a for a, b in zip(before[:8], cpu[:8], strict=True)]
            total = sum(d)  # Telegraf's total: guest is inside user already
            names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
            usage = ",".join("usage_%s=%r" % (name, 100.0 * v / total)
                             for name, v in zip(names, d, strict=True))
            out.append("cpu,cpu=cpu-total,host=%s %s,usage_guest=0,usage_guest_nice=0 %d"
                       % (host, usage, ns))
            out.append("cpu,cpu=cpu0,host=%s usage_idle=50 %d" % (host, ns))  # per-CPU: ignored
        mem = procfs.read_meminfo(root)
        total, available = mem["MemTotal"] * 1024, mem["MemAvailable"] * 1024
        out.append("mem,host=%s active=1i,available=%di,available_percent=%r,total=%di,used=%di,"
                   "used_percent=%r %d" % (host, available, 100.0 * available / total, total,
                                           total - available - 5, 100.0 * (total - available - 5)
                                           / total, ns))
        with open(os.path.join(root, "diskstats")) as disks:
            for row in disks:
                parts = row.split()
                out.append("diskio,host=%s,name=%s reads=1i,read_bytes=%di,writes=1i,"
                           "write_bytes=%di,io_time=0i %d" % (host, parts[2], int(parts[5]) * 512,
                                                              int(parts[9]) * 512, ns))
        with open(os.path.join(root, "net", "dev")) as nics:
            for row in list(nics)[2:]:
                name, _sep, rest = row.partition(":")
                cells = rest.split()
                out.append("net,host=%s,interface=%s bytes_recv=%di,bytes_sent=%di,"
                           "packets_recv=1i,packets_sent=1i,err_in=0i %d"
                           % (host, name.strip(), int(cells[0]), int(cells[8]), ns))
        out.append("net,host=%s,interface=all icmp_inerrors=0i,tcp_activeopens=4i %d" % (host, ns))
        out.append("system,host=%s load1=0.5,load5=0.25,load15=0.1,n_users=1i,n_cpus=%di %d"
                   % (host, vcpus, ns))
        out.append('system,host=%s uptime_format="3 days,  2:07" %d' % (host, ns))
    return out


ROW = ["cpu", "cpu_max", "mem", "disk_r", "disk_w", "net_rx", "net_tx", "vcpus", "mem_mb"]


def test_telegraf_lines_and_influxdb_client_give_the_agents_rows(tmp_path):
    roots = [str(tmp_path / ("proc%d" % k)) for k in range(7)]
    for k, root in enumerate(roots):
        write_snapshot(root, k)
    t0 = (now() - 7200) // 60 * 60
    end = t0 + 60
    agent = agent_record(roots, "agent-vm", end)
    tcp_lines = telegraf_lines(roots, "tg-tcp", t0)
    http_lines = telegraf_lines(roots, "tg-http", t0)
    with serve(tmp_path / "srv", "--flush-interval", "0.3", "--influx-port", "0") as server:
        server.send_udp(line(agent))
        with server.tcp_to(server.status["influx_port"]) as sock:
            sock.sendall("\n".join(tcp_lines).encode() + b"\n")
        url = "http://127.0.0.1:%d" % server.http_port
        with influxdb_client.InfluxDBClient(url=url, token="any", org="fleet") as client:
            client.write_api(write_options=SYNCHRONOUS).write(bucket="vms", record=http_lines)
        server.wait_metrics(lambda m: m.get('vmstats_edge_lines_total{format="influx",'
                                            'outcome="used"}', 0) >= 2 * 6 * 7 - 2 * 5)
    assert server.returncode == 0, server.output
    data = tmp_path / "srv" / "data"
    want = logged(data, "agent-vm")
    assert list(want["ts"]) == [end]
    for vm in ("tg-tcp", "tg-http"):
        got = logged(data, vm)
        assert list(got["ts"]) == [end], vm  # the snapshot at t0 only primes the counters
        assert got[ROW].to_dict("records") == want[ROW].to_dict("records"), vm
    # The numbers are the ones worked out by hand: sda only (sda1 is its partition, loop0
    # virtual), eth0 across its wrap plus eth1, lo left out.  The server cannot know a sender's
    # kernel and takes no rate of the interval with the drop; eth0's steady rate is the
    # minute's mean of the others.
    row = want.iloc[0]
    assert row["disk_r"] == round(4000 * 6 * 512 / 60, 1)
    assert row["net_rx"] == round((123456 + 77) * 6 / 60, 1)
    assert row["vcpus"] == 2 and row["mem_mb"] == 4096


def test_a_vm_rebooted_with_gigabytes_on_its_counters_shows_no_traffic_it_never_moved(tmp_path):
    # Before: a drop from the upper half of the 32-bit range was read as a wrap, so a VM
    # rebooted with 3 GB on eth0's counter logged a minute of ~21.6 MB/s it never moved.
    t0 = (now() - 7200) // 60 * 60
    received = [3_000_000_000 + 1000 * k for k in range(3)]  # before the reboot, 100 B/s
    received += [50_000 + 1000 * k for k in range(4)]  # counting from zero again, 100 B/s
    lines = ["net,host=rebooted,interface=eth0 bytes_recv=%di,bytes_sent=0i %d"
             % (value, (t0 + STEP * k) * 10**9) for k, value in enumerate(received)]
    lines += ["cpu,cpu=cpu-total,host=rebooted usage_idle=98 %d" % ((t0 + STEP * k) * 10**9)
              for k in range(1, 7)]
    lines += ["mem,host=rebooted used_percent=20 %d" % ((t0 + STEP * k) * 10**9) for k in range(1, 7)]
    with serve(tmp_path, "--flush-interval", "0.3", "--influx-port", "0") as server:
        with server.tcp_to(server.status["influx_port"]) as sock:
            sock.sendall("\n".join(lines).encode() + b"\n")
        metrics = server.wait_metrics(lambda m: m.get('vmstats_edge_lines_total{format="influx",'
                                                      'outcome="used"}', 0) == len(lines))
    assert server.returncode == 0, server.output
    row = logged(tmp_path / "data", "rebooted").iloc[0]
    assert (row["ts"], row["net_rx"]) == (t0 + 60, 100.0)
    assert metrics['vmstats_edge_events_total{event="restarted"}'] == 1
