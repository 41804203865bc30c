"""Device names held by every open minute together, through a real server over loopback.

Past ``--edge-max-names`` each new name is refused as ``name_budget`` and counted, the names
held and the VMs' other samples are written, and memory stays where it was however many VMs a
sender spreads names over; names go back with their minutes, so normal traffic never meets it.
And a VM's minute holds its CPUs of all seconds together to its own bound, not each second's.
"""

import struct
import time

from serverproc import ServerProcess
from test_formats_device_cap import TEMPLATES, counted, send
from test_reliability_doors import rss_mb
from test_server_udp import logged

from vmstats.server.config import ServerConfig
from vmstats.server.formats import collectd as cd

#: The budget the tests' servers hold, and the flood's VMs and names per VM.
BUDGET = 20_000
VMS, NAMES = 50, 1000


def test_names_past_the_servers_budget_are_refused_and_cost_no_memory(tmp_path):
    """A sender naming 1,000 interfaces in each of 50 VMs' minutes, then 600 in each of 100
    more: within each minute's own bound (8,192), each name was held, 110,000 of them and as
    many more as it named.  Now the first ``BUDGET`` are, and each one more is refused."""
    ts = int(time.time())  # one minute, whatever the test's own time
    with ServerProcess(tmp_path, "--parsers", "0", "--graphite-port", "0",
                       "--edge-max-names", str(BUDGET), *TEMPLATES) as server:
        port = server.status["graphite_port"]
        vms = [b"calm"] + [b"f%d" % vm for vm in range(VMS)]
        whole = [b"servers.%s.%s %d %d" % (vm, field, value, ts) for vm in vms
                 for field, value in ((b"cpu", 25), (b"mem", 50))]
        whole += [b"servers.calm.eth%d.rx 7 %d" % (i, ts) for i in range(2)]
        flood = [b"servers.f%d.x%d.rx 1 %d" % (vm, i, ts) for vm in range(VMS) for i in range(NAMES)]
        send(server, port, whole + flood)
        taken = BUDGET - 2  # calm's two interfaces first
        assert server.metrics()["vmstats_edge_device_names"] == BUDGET
        before = rss_mb(server.pid)
        # A hundred VMs more, their names all refused; calm's interface held takes its sample,
        # a new one of its is refused as well.
        more = [b"servers.g%d.y%d.rx 1 %d" % (vm, i, ts) for vm in range(100) for i in range(600)]
        send(server, port, more + [b"servers.calm.eth0.rx 21 %d" % ts,
                                   b"servers.calm.eth2.rx 7 %d" % ts])
        grown = rss_mb(server.pid) - before
        # Each was held in its minute: 60,000 of them were ~8 MB more.
        assert grown < 3, grown
        outcomes = counted(server)
        refused = len(flood) - taken + len(more) + 1
        assert outcomes == {"used": len(whole) + taken + 1, "name_budget": refused}, outcomes
        assert server.metrics()["vmstats_edge_device_names"] == BUDGET
    assert server.returncode == 0, server.output
    # Logged as every reject is: at most 10 a 10 s (not 90,000 lines).
    assert 0 < server.output.count("name_budget") <= 20, server.output[-3000:]
    assert ("open minutes already hold %d device names: f%d's net_rx 'x%d' refused"
            % (BUDGET, taken // NAMES, taken % NAMES)) in server.output
    data = tmp_path / "data"
    assert list(logged(data, "calm")["net_rx"]) == [(7 + 21) / 2 + 7]
    assert list(logged(data, "f0")["net_rx"]) == [NAMES]
    assert list(logged(data, "f%d" % (taken // NAMES))["net_rx"]) == [taken % NAMES]
    # The VMs past the budget: their cpu and mem written, their rates unknown.
    last = logged(data, "f%d" % (VMS - 1))
    assert list(last["cpu"]) == [25] and last["net_rx"].isna().all()


def test_names_go_back_with_their_minutes_so_normal_traffic_never_meets_the_budget(tmp_path):
    """Two hours of 30 VMs' minutes, each naming four interfaces: 24,000 names, eight times a
    budget of 3,000 that a minute's samples of them all never come near.  Had a minute written
    kept its names counted, the run would meet the budget a quarter of the way in."""
    minutes, vms = 200, 30
    start = (int(time.time()) // 60 - minutes - 2) * 60
    with ServerProcess(tmp_path, "--parsers", "0", "--graphite-port", "0",
                       "--edge-max-names", "3000", "--minute-grace", "1s", *TEMPLATES) as server:
        port = server.status["graphite_port"]
        lines = []
        for minute in range(minutes):
            ts = start + 60 * minute + 30
            for vm in range(vms):
                lines += [b"servers.v%d.cpu 25 %d" % (vm, ts), b"servers.v%d.mem 50 %d" % (vm, ts)]
                lines += [b"servers.v%d.eth%d.rx 10 %d" % (vm, i, ts) for i in range(4)]
        send(server, port, lines)
        assert counted(server) == {"used": len(lines)}
        # Each minute but the last written at once, the last a grace after: none holds a name.
        server.wait_for(lambda s: s.metrics()["vmstats_edge_open_minutes"] == 0, timeout=20)
        assert server.metrics()["vmstats_edge_device_names"] == 0
    assert server.returncode == 0, server.output
    assert list(logged(tmp_path / "data", "v7")["net_rx"]) == [40] * minutes


def test_a_vms_cpus_are_bounded_over_its_minutes_seconds_together(tmp_path):
    """collectd's CPUs were bounded per second: 1,000 CPUs named in each of 20 seconds of one
    minute were 20,000 names held, and 61 seconds of 8,192 each 50 MB for one VM's minute.
    Now the minute holds 8,192 (second, CPU) names in all, the rest refused as device_cap."""
    most = ServerConfig.edge_max_devices
    now = int(time.time())
    first = now // 60 * 60 - 60  # the minute before this one, whole
    cpus, seconds = 1000, 20
    packets = []
    for second in range(seconds):
        for group in range(0, cpus, 25):  # 25 value lists a datagram, ~1.2 KB
            packet = cd.part_string(cd.HOST, "big") + struct.pack(
                "!HHQ", cd.TIME_HR, 12, (first + 1 + second) << 30)
            packet += b"".join(
                cd.part_string(cd.PLUGIN, "cpu") + cd.part_string(cd.PLUGIN_INSTANCE, str(cpu))
                + cd.part_string(cd.TYPE, "percent") + cd.part_string(cd.TYPE_INSTANCE, "idle")
                + cd.part_values([(cd.GAUGE, 90.0)]) for cpu in range(group, group + 25))
            packets.append(packet)
        packets.append(cd.part_string(cd.HOST, "big")
                       + struct.pack("!HHQ", cd.TIME_HR, 12, (first + 1 + second) << 30)
                       + cd.part_string(cd.PLUGIN, "memory") + cd.part_string(cd.TYPE, "percent")
                       + cd.part_string(cd.TYPE_INSTANCE, "used") + cd.part_values([(cd.GAUGE, 40.0)]))
    with ServerProcess(tmp_path, "--parsers", "0", "--collectd-port", "0") as server:
        port = server.status["collectd_port"]

        def outcomes(s) -> dict:
            prefix = 'vmstats_edge_lines_total{format="collectd",outcome="'
            return {name[len(prefix):-2]: value for name, value in s.metrics().items()
                    if name.startswith(prefix)}

        for second in range(seconds):  # a second at a time: loopback UDP drops what overflows
            server.send_udp_to(port, *packets[second * 41:(second + 1) * 41])
            server.wait_for(lambda s, n=(second + 1) * (cpus + 1): sum(outcomes(s).values()) == n,
                            timeout=20)
        assert outcomes(server) == {"used": seconds + most, "device_cap": seconds * cpus - most}
    assert server.returncode == 0, server.output
    assert "big's minute already holds %d devices of cpu_state: '192:idle' refused" % most \
        in server.output
    row = logged(tmp_path / "data", "big")
    assert list(row["vcpus"]) == [cpus] and list(row["mem"]) == [40]
