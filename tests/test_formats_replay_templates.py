"""A journal replayed after ``--graphite-template`` was changed files samples under the VMs and
fields they were taken for.

Graphite lines over TCP are taken by one set of templates (and one of them, longer than the
``--max-line`` of the restart, by the default): their samples are in the journal once counted
as used.  The server is killed while their minute is open and started again with other
templates and ``--max-line 1024``: the replay reads the payload by the templates and the bound
it was taken under, so the minute is written for its VM (not for the segment the new templates
take for one), says so in one line, and new input is read by the new templates and a line of
it past the new bound is refused (before, a whole one was taken: Graphite's decoder kept 64 KiB
whatever ``--max-line`` said).
"""

import os
import time

from serverproc import serve
from test_server_udp import logged

from vmstats.logstore.layout import vm_dir

BEFORE = ("--graphite-template", "servers.{vm}.cpu.percent cpu",
          "--graphite-template", "servers.{vm}.mem.percent mem")
#: The same paths read with the VM's name where the old templates had ``percent``.
AFTER = ("--graphite-template", "servers.*.{field}.{vm}", "--max-line", "1024")
#: A Graphite 1.1 tag (dropped before matching) that makes a line longer than 1024 bytes.
PAD = ";pad=" + "x" * 1500
USED = 'vmstats_edge_lines_total{format="graphite",outcome="used"}'
TOO_LONG = 'vmstats_edge_lines_total{format="graphite",outcome="too_long"}'


def test_graphite_lines_journaled_under_other_templates_are_written_for_their_vm(tmp_path):
    t0 = (int(time.time()) - 3600) // 60 * 60
    args = ("--flush-interval", "60", "--minute-grace", "3600s",  # no checkpoint before the kill
            "--graphite-port", "0")
    server = serve(tmp_path, *args, *BEFORE).start()
    try:
        with server.tcp_to(server.status["graphite_port"]) as sock:
            sock.sendall(b"".join(b"servers.graphed.cpu.percent 10 %d\n"
                                  b"servers.graphed.mem.percent%s 40 %d\n"
                                  % (t0 + 10 * k + 1, PAD.encode() if k == 0 else b"",
                                     t0 + 10 * k + 1) for k in range(6)))
        server.wait_metrics(lambda m: m.get(USED, 0) == 12)  # counted after it is journaled
        server.kill_outright()
        server = serve(tmp_path, *args, *AFTER).start()
        with server.tcp_to(server.status["graphite_port"]) as sock:
            sock.sendall(b"servers.x.cpu.fresh%s 30 %d\n" % (PAD.encode(), t0 + 1)
                         + b"servers.x.cpu.fresh 20 %d\nservers.x.mem.fresh 50 %d\n"
                         % (t0 + 1, t0 + 1))
        metrics = server.wait_metrics(lambda m: m.get(USED, 0) + m.get(TOO_LONG, 0) == 3)
        # Before, Graphite lines were bounded by --max-line only when cut across reads.
        assert metrics.get(TOO_LONG) == 1
        assert server.stop() == 0, server.output
    finally:
        server.kill()
    row = logged(tmp_path / "data", "graphed").iloc[0]
    assert (row["cpu"], row["mem"]) == (10.0, 40.0)
    row = logged(tmp_path / "data", "fresh").iloc[0]
    assert (row["cpu"], row["mem"]) == (20.0, 50.0)
    assert not os.path.exists(vm_dir(str(tmp_path / "data"), "percent"))
    assert ("edge: 1 journaled payload taken under other settings (--max-line 65536 (now 1024), "
            "1 other set of --graphite-template) replayed by those, as they were acknowledged; "
            "kept past this run's: 1 line longer than --max-line (1024); new input is taken by "
            "this run's") in server.output
