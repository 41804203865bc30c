"""A journal replayed after a format's port was turned off files what that port took.

Graphite lines over TCP, collectd packets and line-protocol lines over UDP are taken (counted
as used: journaled first) while their minute is open; the server is killed and started again
with none of those ports (nor the Graphite templates).  The replay needs no port to decode a
payload again: it reads each by the settings it was taken under, so every VM's minute is
written.  Before, the Graphite and collectd payloads were skipped ("an edge line could not be
replayed (skipped): 'graphite'") and their samples, taken and counted, were lost.  The log
says the Graphite payloads were read by the templates they were taken under although the port
is off now; it used to call that "other settings (1 other set of --graphite-template)", as if
the operator had changed the templates rather than turned the port off.
"""

import re
import time

from serverproc import serve
from test_formats_rejects import collectd_list, outcomes
from test_server_udp import logged

from vmstats.server.formats import collectd as cd

PORTS = ("--graphite-port", "0", "--collectd-port", "0", "--influx-port", "0",
         "--graphite-template", "servers.{vm}.cpu.percent cpu",
         "--graphite-template", "servers.{vm}.mem.percent mem")
#: No checkpoint before the kill, and the minutes stay open until the stop completes them.
KEEP_OPEN = ("--flush-interval", "60", "--minute-grace", "3600s")


def test_payloads_of_a_port_turned_off_at_the_restart_are_replayed_and_written(tmp_path):
    t0 = (int(time.time()) - 3600) // 60 * 60
    times = [t0 + 10 * k + 1 for k in range(6)]
    server = serve(tmp_path, *KEEP_OPEN, *PORTS).start()
    try:
        status = server.status
        with server.tcp_to(status["graphite_port"]) as sock:
            sock.sendall(b"".join(b"servers.graphed.cpu.percent 10 %d\n"
                                  b"servers.graphed.mem.percent 40 %d\n" % (ts, ts)
                                  for ts in times))
        server.send_udp_to(status["collectd_port"], *(
            collectd_list("collected", ts, "cpu", "", "percent", "active", [(cd.GAUGE, 20.0)])
            + collectd_list("collected", ts, "memory", "", "percent", "used", [(cd.GAUGE, 50.0)])
            for ts in times))
        server.send_udp_to(status["influx_port"], b"\n".join(
            b"cpu,cpu=cpu-total,host=lined usage_idle=70 %d\n"
            b"mem,host=lined available_percent=70 %d" % (ts * 10**9, ts * 10**9) for ts in times))
        server.wait_metrics(lambda m: all(outcomes(m, fmt).get("used") == 12
                                          for fmt in ("graphite", "collectd", "influx")))
        server.kill_outright()
        server = serve(tmp_path, *KEEP_OPEN).start()  # every other format's port off
        assert server.stop() == 0, server.output
    finally:
        server.kill()
    assert "could not be replayed" not in server.output
    assert re.search(r"edge: \d+ journaled Graphite payloads? replayed by the --graphite-template "
                     r"they were taken under, although the Graphite port is off now",
                     server.output), server.output
    assert "other settings" not in server.output
    data = tmp_path / "data"
    for vm, cpu, mem in (("graphed", 10.0, 40.0), ("collected", 20.0, 50.0), ("lined", 30.0, 30.0)):
        row = logged(data, vm).iloc[0]
        assert (row["cpu"], row["mem"]) == (cpu, mem), vm
