"""Device names longer than ``--edge-max-name-bytes``, through a real server over loopback.

The bound on names held (``--edge-max-names``) counts names, not bytes, and a name could be as
long as the line that carried it (64 KiB): a million of them 64 GB.  Now a sample naming a
longer device is refused as ``too_long`` before a minute or a counter holds it, counted once
per line (collectd: per value list), and the rest of its datagram is taken as ever.
"""

import time

from serverproc import serve
from test_formats_rejects import collectd_list, outcomes, telegraf_minute
from test_formats_server import NS
from test_server_udp import logged

from vmstats.server.formats import collectd as cd

#: The bound the test's server holds.
MOST = 64


def test_device_names_past_their_bytes_are_refused_and_the_rest_of_the_datagram_kept(tmp_path):
    now = int(time.time())
    t0 = (now - 3600) // 60 * 60
    at = (t0 + 30) * NS
    with serve(tmp_path, "--flush-interval", "0.3", "--influx-port", "0", "--collectd-port", "0",
               "--edge-max-name-bytes", str(MOST)) as server:
        # Telegraf: a minute of good lines, an interface named by exactly the bound (taken: its
        # 50 B/s counts in net_rx), one of 60,000 bytes and a disk of one byte past it.
        lines = telegraf_minute("lp", t0) + [
            b"net,host=lp,interface=%s bytes_recv=%di,bytes_sent=0i %d" % (b"i" * MOST, 500 * k,
                                                                         (t0 + 10 * k) * NS)
            for k in (1, 2)]
        lines += [b"net,host=lp,interface=%s bytes_recv=5i,bytes_sent=0i %d" % (b"x" * 60_000, at),
                  b"diskio,host=lp,name=%s read_bytes=1i,write_bytes=2i %d" % (b"d" * 65, at)]
        server.send_udp_to(server.status["influx_port"], b"\n".join(lines))
        # collectd: cpu and memory, an interface's counters, and among them an interface of 1,000
        # bytes and a CPU whose cpu:state is one byte past the bound.
        ts = t0 + 30
        packet = (collectd_list("cd", ts, "cpu", "", "percent", "active", [(cd.GAUGE, 30.0)])
                  + collectd_list("cd", ts, "interface", "y" * 1000, "if_octets", "",
                                  [(cd.DERIVE, 10), (cd.DERIVE, 20)])
                  + collectd_list("cd", ts, "memory", "", "percent", "used", [(cd.GAUGE, 60.0)])
                  + collectd_list("cd", ts, "cpu", "c" * (MOST - 4), "percent", "user",
                                  [(cd.GAUGE, 5.0)])
                  + collectd_list("cd", ts, "interface", "eth0", "if_octets", "",
                                  [(cd.DERIVE, 10), (cd.DERIVE, 20)]))
        server.send_udp_to(server.status["collectd_port"], packet)
        metrics = server.wait_metrics(lambda m: sum(outcomes(m, "influx").values()) >= len(lines)
                                      and sum(outcomes(m, "collectd").values()) >= 5)
        assert outcomes(metrics, "influx") == {"used": len(lines) - 2, "too_long": 2}
        assert outcomes(metrics, "collectd") == {"used": 3, "too_long": 2}
        # Counters held: Telegraf's eth0 and the interface at the bound (received and sent
        # each), collectd's eth0 (rx, tx); none of a name refused.
        assert metrics["vmstats_edge_counters"] == 6
    assert server.returncode == 0, server.output
    assert "lp's net_rx_total device name of 60000 bytes is over %d: %r... refused" % (
        MOST, "x" * 32) in server.output
    assert "cd's cpu_state device name of 65 bytes is over %d" % MOST in server.output
    row = logged(tmp_path / "data", "lp").iloc[0]
    assert (row["cpu"], row["mem"], row["net_rx"]) == (13.5, 25.0, 150.0)
    row = logged(tmp_path / "data", "cd").iloc[0]
    assert (row["cpu"], row["mem"]) == (30.0, 60.0)
