"""One VM naming ever new devices in one minute, through a real server over loopback: past the
bound on a minute's devices each new one is refused and counted, the VM's devices within it and
every other VM are written, and the server's memory stays where it was."""

import time

from serverproc import ServerProcess
from test_reliability_doors import rss_mb
from test_server_udp import logged

from vmstats.server.config import ServerConfig

#: The most devices of one kind a VM's minute holds.
MOST = ServerConfig.edge_max_devices
#: Devices named past the bound in each of the two floods.
PAST = 30_000
TEMPLATES = ("--graphite-template", "servers.{vm}.{device}.rx net_rx",
             "--graphite-template", "servers.{vm}.{field}")


def counted(server) -> dict:
    """The Graphite port's lines by outcome, as /metrics counts them."""
    prefix = 'vmstats_edge_lines_total{format="graphite",outcome="'
    return {name[len(prefix):-2]: value for name, value in server.metrics().items()
            if name.startswith(prefix)}


def send(server, port: int, lines: list[bytes]) -> None:
    """``lines`` on the Graphite TCP port; back once the server has counted every one."""
    before = sum(counted(server).values())
    with server.tcp_to(port) as sock:
        sock.sendall(b"".join(one + b"\n" for one in lines))
    server.wait_for(lambda s: sum(counted(s).values()) >= before + len(lines), timeout=20)


def test_devices_past_a_minutes_bound_are_refused_and_cost_no_memory(tmp_path):
    """600,000 interfaces of one VM in one minute took the server to 278 MiB: each was held in
    the minute.  Now the first ``MOST`` are, and each one more is refused as ``device_cap``."""
    ts = int(time.time())  # one minute, whatever the test's own time
    with ServerProcess(tmp_path, "--parsers", "0", "--graphite-port", "0", *TEMPLATES) as server:
        port = server.status["graphite_port"]
        whole = [b"servers.%s.cpu 25 %d" % (vm, ts) for vm in (b"flood", b"calm")]
        whole += [b"servers.%s.mem 50 %d" % (vm, ts) for vm in (b"flood", b"calm")]
        whole += [b"servers.calm.eth%d.rx 7 %d" % (i, ts) for i in range(2)]
        within = [b"servers.flood.e%d.rx 1000 %d" % (i, ts) for i in range(MOST)]
        send(server, port, whole + within)
        send(server, port, [b"servers.flood.x%d.rx 1 %d" % (i, ts) for i in range(PAST)])
        before = rss_mb(server.pid)
        # More new names, a device within the bound again (its mean is of both samples) and
        # another VM: only the new names are refused.
        send(server, port, [b"servers.flood.y%d.rx 1 %d" % (i, ts) for i in range(PAST)]
             + [b"servers.flood.e0.rx 3000 %d" % ts, b"servers.calm.eth2.rx 7 %d" % ts])
        grown = rss_mb(server.pid) - before
        # Each was held in the minute: 30,000 of them were 4.5-5.5 MB more.
        assert grown < 2, grown
        outcomes = counted(server)
        assert outcomes == {"used": len(whole) + MOST + 2, "device_cap": 2 * PAST}, outcomes
    assert server.returncode == 0, server.output
    # Logged as every reject is: at most 10 a 10 s (not 60,000 lines).
    assert 0 < server.output.count("device_cap") <= 20, server.output[-3000:]
    assert "flood's minute already holds %d devices of net_rx: 'x0' refused" % MOST in server.output
    rows = logged(tmp_path / "data", "flood")
    assert list(rows["net_rx"]) == [(MOST - 1) * 1000 + 2000]
    assert list(logged(tmp_path / "data", "calm")["net_rx"]) == [21]
