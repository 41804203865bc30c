"""A journal replayed after an edge bound was lowered writes what the bound let in before.

Samples naming a device of 200 bytes, and memory lines of 1,500 bytes, are taken under the
default ``--edge-max-name-bytes`` (256) and ``--max-line`` (64 KiB) and acknowledged (HTTP
204) once journaled.  The server is killed while their minute is open, and started again with
``--edge-max-name-bytes 64 --max-line 1024``: the replay repeats the payload by the bounds it
was taken under, so the minute is written whole, says what it kept past the new bounds, and new
input naming such a device is refused.
"""

import time
import urllib.request

from serverproc import serve
from test_formats_rejects import outcomes
from test_server_udp import logged

#: A device name longer than the lowered bound and within the default.
LONG = "i" * 200
LOWERED = ("--edge-max-name-bytes", "64", "--max-line", "1024")
#: A tag (ignored) that makes a line longer than the lowered --max-line.
PAD = "x" * 1500


def lines(host: str, t0: int, interface: str, pad: str = "") -> bytes:
    """Six 10 s steps of one VM's cpu, mem and one interface's counter (seconds precision):
    cpu 10, mem 40, and 100 B/s received on ``interface``; ``pad`` a tag of the mem lines."""
    out = []
    for k in range(6):
        ts = t0 + 10 * k
        out.append("cpu,cpu=cpu-total,host=%s usage_idle=90,usage_iowait=0 %d" % (host, ts + 1))
        out.append("mem,host=%s%s used_percent=40,total=2147483648i %d"
                   % (host, ",pad=" + pad if pad else "", ts + 1))
        out.append("net,host=%s,interface=%s bytes_recv=%di,bytes_sent=0i %d"
                   % (host, interface, 1000 * k, ts + 1))
    return "\n".join(out).encode()


def write(server, body: bytes) -> int:
    request = urllib.request.Request("http://127.0.0.1:%d/write?precision=s" % server.http_port,
                                     data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_samples_journaled_under_higher_edge_bounds_are_written_after_they_are_lowered(tmp_path):
    t0 = (int(time.time()) - 3600) // 60 * 60
    # No flush (and so no checkpoint) before the kill: the payload is replayed from its line.
    args = ("--flush-interval", "60", "--minute-grace", "3600s")
    server = serve(tmp_path, *args).start()
    try:
        assert write(server, lines("long", t0, LONG, PAD)) == 204  # acknowledged: journaled
        server.kill_outright()
        server = serve(tmp_path, *args, *LOWERED).start()
        # New input is judged by the new bound: refused and counted.
        assert write(server, lines("new", t0, LONG)) == 400
        metrics = server.metrics()
        assert outcomes(metrics, "influx").get("too_long") == 6
        assert server.stop() == 0, server.output
    finally:
        server.kill()
    row = logged(tmp_path / "data", "long").iloc[0]
    assert (row["cpu"], row["mem"], row["net_rx"]) == (10.0, 40.0, 100.0)
    assert ("edge: 1 journaled payload taken under other settings (--edge-max-name-bytes 256 "
            "(now 64), --max-line 65536 (now 1024)) replayed by those, as they were "
            "acknowledged; kept past this run's: 12 samples naming a device longer than "
            "--edge-max-name-bytes (64) and 6 lines longer than --max-line (1024); new input is "
            "taken by this run's") in server.output
