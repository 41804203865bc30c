"""``--edge-max-open`` and ``--edge-max-counters`` through a real server over loopback: the
bounds on the other formats' open minutes and counters are the operator's to set, as the
bound on names is (a server with less memory lowers them; docs/OPERATIONS.md, "Memory")."""

import time

from serverproc import serve
from test_formats_rejects import outcomes
from test_formats_server import NS

VMS = 300


def test_the_bounds_on_open_minutes_and_counters_are_set_on_the_command_line(tmp_path):
    """300 VMs' CPU and an interface (two counters) each: past 100 open minutes the oldest
    are written early (forced), past 50 counters the least recently updated forgotten."""
    ts = (int(time.time()) - 30) * NS
    lines = [b"cpu,cpu=cpu-total,host=v%d usage_idle=50 %d" % (vm, ts) for vm in range(VMS)]
    lines += [b"net,host=v%d,interface=eth0 bytes_recv=%di,bytes_sent=0i %d" % (vm, vm, ts)
              for vm in range(VMS)]
    with serve(tmp_path, "--parsers", "0", "--influx-port", "0", "--edge-max-open", "100",
               "--edge-max-counters", "50") as server:
        with server.tcp_to(server.status["influx_port"]) as sock:
            sock.sendall(b"\n".join(lines) + b"\n")
        metrics = server.wait_metrics(lambda m: sum(outcomes(m, "influx").values()) >= 2 * VMS)
        assert outcomes(metrics, "influx") == {"used": 2 * VMS}
        assert metrics["vmstats_edge_open_minutes"] <= 100
        assert metrics["vmstats_edge_counters"] <= 50
        assert metrics['vmstats_edge_events_total{event="forced"}'] >= VMS - 100
        assert metrics['vmstats_edge_events_total{event="forgotten"}'] >= 2 * VMS - 50
    assert server.returncode == 0, server.output
