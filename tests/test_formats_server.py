"""The other formats through a real server: HTTP write API, Graphite and line protocol ports."""

import gzip
import json
import logging
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from serverproc import LOOPBACK, ROOT, cpu_seconds, serve
from test_server_udp import logged

from vmstats import logstore, protocol
from vmstats.client.spool import Spool
from vmstats.client.transport import TcpSender

#: Nanoseconds a second: the line-protocol port's precision.
NS = 10**9


def minute_lines(host: str, t0: int, step: int = 10) -> list[bytes]:
    """Telegraf-shaped lines for one minute ending at t0 + 60 (seconds precision)."""
    out = []
    for k in range(7):
        ts = t0 + step * k
        if k:
            out.append(b"cpu,cpu=cpu-total,host=%s usage_idle=%d,usage_iowait=0 %d"
                       % (host.encode(), 90 - k, ts))
            out.append(b"mem,host=%s available_percent=75,total=2147483648i %d" % (host.encode(), ts))
        out.append(b"net,host=%s,interface=eth0 bytes_recv=%di,bytes_sent=0i %d"
                   % (host.encode(), 1000 * k, ts))
    return out


def post(server, path: str, body: bytes, headers: dict | None = None,
         timeout: float = 10) -> tuple[int, str]:
    request = urllib.request.Request("http://127.0.0.1:%d%s" % (server.http_port, path), data=body,
                                     headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def edge(metrics: dict, fmt: str, outcome: str) -> float:
    return metrics.get('vmstats_edge_lines_total{format="%s",outcome="%s"}' % (fmt, outcome), 0)


def test_http_write_v1_gzip_v2_token_and_line_numbered_errors(tmp_path):
    t0 = (int(time.time()) - 3600) // 60 * 60
    with serve(tmp_path, "--flush-interval", "0.3", "--write-token", "tok") as server:
        body = b"\n".join(minute_lines("v1-vm", t0))
        status, text = post(server, "/write?db=telegraf&precision=s&p=tok", gzip.compress(body),
                            {"Content-Encoding": "gzip"})
        assert (status, text) == (204, "")
        status, _text = post(server, "/api/v2/write?org=o&bucket=b&precision=s", body)
        assert status == 401  # no token
        ms = b"\n".join(minute_lines("v2-vm", t0 * 1000, 10_000))
        bad = ms + b"\nnot line protocol\ncpu,host=v2-vm,cpu=cpu-total usage_idle=\"x\" 1\n"
        status, text = post(server, "/api/v2/write?org=o&bucket=b&precision=ms", bad,
                            {"Authorization": "Token tok"})
        assert status == 400
        error = json.loads(text)
        assert error["code"] == "invalid"
        assert "line 20: syntax" in error["message"] and "line 21: field_type" in error["message"]
        status, text = post(server, "/api/v2/write?org=o&bucket=b&precision=xs", ms,
                            {"Authorization": "Token tok"})
        assert status == 400 and "precision" in text
        assert post(server, "/query?q=CREATE+DATABASE+telegraf", b"")[0] == 200
        metrics = server.metrics()
        assert edge(metrics, "influx", "auth") == 1 and edge(metrics, "influx", "syntax") == 1
    assert server.returncode == 0, server.output
    for vm in ("v1-vm", "v2-vm"):  # the good lines of the partly bad write are kept
        rows = logged(tmp_path / "data", vm)
        assert list(rows["ts"]) == [t0 + 60]
        assert rows.iloc[0]["cpu"] == 13.5 and rows.iloc[0]["cpu_max"] == 16.0
        assert rows.iloc[0]["mem"] == 25.0 and rows.iloc[0]["net_rx"] == 100.0
        assert rows.iloc[0]["mem_mb"] == 2048 and str(rows.iloc[0]["disk_r"]) in ("nan", "<NA>")


def test_a_large_written_body_is_fed_in_pieces_numbered_in_the_body_stalling_nothing(tmp_path):
    """A write body is decoded in the reactor: 4 MB of lines the decoder refuses one by one
    (no token is needed by default) held every port ~4 s in one piece.  Fed a piece per
    reactor turn, /metrics still answers meanwhile, and the errors are numbered in the body.
    In one piece, an answer would wait about as long as the whole post; a loaded host stretches
    both, so the bound is a share of the post's own time."""
    t0 = (int(time.time()) - 3600) // 60 * 60
    with serve(tmp_path, "--flush-interval", "0.3") as server:
        lines = [line for i in range(300) for line in minute_lines("big-%d" % i, t0)]
        lines[1999:1999] = [b"not line protocol"]
        lines[4999:4999] = [b"cpu,host=big-1,cpu=cpu-total usage_idle=\"x\" 1"]
        status, text = post(server, "/write?precision=s", b"\n".join(lines) + b"\n")
        message = json.loads(text)["error"]
        assert status == 400 and message.count("line ") == 2, text
        assert "line 2000: syntax" in message and "line 5000: field_type" in message
        latencies: list = []
        done = threading.Event()

        def probe() -> None:
            while not done.is_set():
                started = time.monotonic()
                server.metrics(timeout=60)
                latencies.append(time.monotonic() - started)
                time.sleep(0.05)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            time.sleep(0.2)
            started = time.monotonic()
            status, text = post(server, "/write?precision=s", b"x\n" * 2_000_000, timeout=120)
            posting = time.monotonic() - started
        finally:
            done.set()
            prober.join()
        assert status == 400 and json.loads(text)["error"].count("line ") == 10
        metrics = server.metrics()
        assert edge(metrics, "influx", "syntax") == 2_000_001
        assert edge(metrics, "influx", "used") == len(lines) - 2
    assert server.returncode == 0, server.output
    assert len(latencies) > 5 and max(latencies) < max(1.5, posting / 3), (posting, latencies)
    for vm in ("big-0", "big-299"):
        assert list(logged(tmp_path / "data", vm)["ts"]) == [t0 + 60]


def test_graphite_over_tcp_and_udp_and_line_protocol_over_udp(tmp_path):
    t0 = (int(time.time()) - 3600) // 60 * 60
    with serve(tmp_path, "--flush-interval", "0.3", "--graphite-port", "0", "--influx-port", "0",
               "--graphite-template", "servers.{vm}.cpu.percent cpu",
               "--graphite-template", "servers.{vm}.mem.percent mem",
               "--graphite-template", "servers.{vm}.net.{device}.tx net_tx:counter") as server:
        port = server.status["graphite_port"]
        lines = []
        for k in range(1, 7):
            lines.append(b"servers.gr-tcp.cpu.percent %d %d" % (10 * k, t0 + 10 * k))
            lines.append(b"servers.gr-tcp.mem.percent 50 %d" % (t0 + 10 * k))
        lines += [b"servers.gr-tcp.net.eth0.tx %d %d" % (600 * k, t0 + 10 * k) for k in range(7)]
        lines.append(b"servers.gr-tcp.load 1 %d" % t0)
        with server.tcp_to(port) as sock:
            sock.sendall(b"\n".join(lines) + b"\n")
        server.send_udp_to(port, b"servers.gr-udp.cpu.percent 5 %d\nservers.gr-udp.mem.percent 6 %d"
                           % (t0 + 30, t0 + 30))
        # The line-protocol port reads nanoseconds, as Telegraf's socket_writer sends them.
        server.send_udp_to(server.status["influx_port"],
                           b"\n".join(minute_lines("lp-udp", t0 * NS, 10 * NS)))
        server.wait_metrics(lambda m: edge(m, "graphite", "used") == 21
                            and edge(m, "influx", "used") == 19)
        assert edge(server.metrics(), "graphite", "ignored") == 1
    assert server.returncode == 0, server.output
    # The journal keeps the counters' state for the next start, and says it holds no records.
    assert "state the next start resumes from (every record is in the logs)" in server.output
    rows = logged(tmp_path / "data", "gr-tcp")
    assert list(rows["ts"]) == [t0 + 60]
    assert (rows.iloc[0]["cpu"], rows.iloc[0]["cpu_max"], rows.iloc[0]["net_tx"]) == (35.0, 60.0, 60.0)
    assert logged(tmp_path / "data", "gr-udp").iloc[0]["cpu"] == 5.0
    rows = logged(tmp_path / "data", "lp-udp")
    assert list(rows["ts"]) == [t0 + 60] and rows.iloc[0]["cpu"] == 13.5
    assert sorted(logstore.iter_vms(str(tmp_path / "data"))) == ["gr-tcp", "gr-udp", "lp-udp"]


def test_line_protocol_read_in_c_and_in_the_workers_is_filed_in_arrival_order(tmp_path):
    """Plain payloads are read in the reactor (C), others in the decoding processes: a VM's
    counters alternating between the two still meet the rate state in the order sent."""
    t0 = (int(time.time()) - 3600) // 60 * 60
    with serve(tmp_path, "--flush-interval", "0.3", "--influx-port", "0") as server:
        lines = minute_lines("lp-mixed", t0 * NS, 10 * NS)
        # A string field: the C leaves the payload to the Python, in a worker.
        note = b'note,host=lp-mixed text="a b" %d\n' % (t0 * NS)
        server.send_udp_to(server.status["influx_port"],  # at once: the workers' answers lag
                           *(note + line if k % 2 else line for k, line in enumerate(lines)))
        server.wait_metrics(lambda m: edge(m, "influx", "used") == 19)
        metrics = server.metrics()
        assert edge(metrics, "influx", "ignored") == 9
        events = {event: metrics['vmstats_edge_events_total{event="%s"}' % event]
                  for event in ("primed", "out_of_order")}
        assert events == {"primed": 2, "out_of_order": 0}  # net_rx and net_tx
    assert server.returncode == 0, server.output
    rows = logged(tmp_path / "data", "lp-mixed")
    assert list(rows["ts"]) == [t0 + 60]
    assert (rows.iloc[0]["cpu"], rows.iloc[0]["net_rx"]) == (13.5, 100.0)



def test_a_last_line_cut_by_a_reset_or_the_servers_own_close_is_counted_truncated(tmp_path):
    """A line-protocol or Graphite TCP stream's last line without its newline is filed when
    the sender ends the stream itself (``printf ... | nc``), not when the stream was cut: by a
    reset, or by the server closing a connection it evicted for a newcomer or found idle. Such
    a line may end inside a value (``usage_idle=5`` of 55: a CPU 95 % busy) or a timestamp (read
    a thousand times too early); it is counted as ``truncated``.  Before, each was filed."""
    t0 = (int(time.time()) - 3600) // 60 * 60
    at = (t0 + 30) * NS
    with serve(tmp_path, "--flush-interval", "0.3", "--influx-port", "0", "--graphite-port", "0",
               "--graphite-template", "servers.{vm}.cpu.percent cpu", "--max-per-source", "2",
               "--idle-timeout", "0.5s") as server:
        influx, graphite = server.status["influx_port"], server.status["graphite_port"]
        whole = b"mem,host=%s available_percent=75 %d\n"
        reset = server.tcp_to(influx)  # a reset: the sender's host went away mid-line
        reset.sendall(whole % (b"lp-reset", at) + b"cpu,cpu=cpu-total,host=lp-reset usage_idle=5")
        time.sleep(0.2)
        reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        reset.close()
        server.wait_metrics(lambda m: edge(m, "influx", "truncated") == 1)
        with server.tcp_to(graphite) as cut:  # evicted for newcomers (two a source)
            cut.sendall(b"servers.gr-cut.cpu.percent 5")
            time.sleep(0.2)
            with server.tcp_to(graphite), server.tcp_to(graphite):
                server.wait_metrics(lambda m: edge(m, "graphite", "truncated") == 1)
        with server.tcp_to(influx) as idle:  # closed by the server once silent for half a second
            stamped = b"cpu,cpu=cpu-total,host=lp-idle usage_idle=55 %d" % at
            idle.sendall(whole % (b"lp-idle", at) + stamped[:-3])
            server.wait_metrics(lambda m: edge(m, "influx", "truncated") == 2)
        with server.tcp_to(influx) as done:  # the sender's own end: its last line counts
            done.sendall(whole % (b"lp-done", at) + b"cpu,cpu=cpu-total,host=lp-done usage_idle=45 %d"
                         % at)
            done.shutdown(socket.SHUT_WR)
            metrics = server.wait_metrics(lambda m: edge(m, "influx", "used") == 4)
        assert edge(metrics, "influx", "truncated") == 2 and edge(metrics, "graphite", "used") == 0
    assert server.returncode == 0, server.output  # the stop writes the minutes open
    assert sorted(logstore.iter_vms(str(tmp_path / "data"))) == ["lp-done"]
    assert logged(tmp_path / "data", "lp-done").iloc[0]["cpu"] == 55.0


def test_a_line_giving_a_tag_or_field_twice_is_a_counted_syntax_reject(tmp_path):
    """``host=a,host=b`` or a field twice, on the line-protocol port (read in C, which leaves
    such a payload to the Python: its plain reader, and with a comment line its line-by-line
    reader) and on the HTTP write API (a 400 naming the line): the line is refused as
    ``syntax``, counted once, and the payload's other lines are filed.  Before, each was filed
    under one of its values: a row for the second VM, another mem mean."""
    t0 = (int(time.time()) - 3600) // 60 * 60
    at = (t0 + 30) * NS

    def twice(host: bytes) -> list[bytes]:
        return [b"cpu,cpu=cpu-total,host=%s,host=lp-other usage_idle=1,usage_iowait=0 %d"
                % (host, at),
                b"mem,host=%s available_percent=10,available_percent=75 %d" % (host, at)]

    with serve(tmp_path, "--flush-interval", "0.3", "--influx-port", "0") as server:
        port = server.status["influx_port"]
        server.send_udp_to(port, b"\n".join(minute_lines("lp-plain", t0 * NS, 10 * NS)
                                            + twice(b"lp-plain")))
        server.send_udp_to(port, b"\n".join(minute_lines("lp-lines", t0 * NS, 10 * NS)
                                            + [b"# a comment"] + twice(b"lp-lines")))
        status, text = post(server, "/api/v2/write?org=o&bucket=b&precision=ns",
                            b"\n".join(minute_lines("http-lines", t0 * NS, 10 * NS)
                                       + twice(b"http-lines")))
        assert status == 400
        message = json.loads(text)["message"]
        assert ("line 20: syntax: tag 'host' given twice" in message
                and "line 21: syntax: field 'available_percent' given twice" in message), message
        metrics = server.wait_metrics(lambda m: edge(m, "influx", "used") == 3 * 19)
        assert edge(metrics, "influx", "syntax") == 6
    assert server.returncode == 0, server.output
    assert not (tmp_path / "data" / "vms" / "lp-other").exists()
    for vm in ("lp-plain", "lp-lines", "http-lines"):
        rows = logged(tmp_path / "data", vm)
        assert list(rows["ts"]) == [t0 + 60]
        assert (rows.iloc[0]["cpu"], rows.iloc[0]["cpu_max"], rows.iloc[0]["mem"]) == (
            13.5, 16.0, 25.0), vm

def test_bad_format_options_are_one_readable_line(tmp_path):
    for args, message in ((["--collectd-port", "0", "--collectd-security", "sign"],
                           "--collectd-security sign needs --collectd-auth-file"),
                          (["--graphite-template", "x.y cpu"], "has no {vm}"),
                          (["--virtual-interfaces", "veth*,docker 0"],
                           "--virtual-interfaces: 'docker 0' can match no interface name")):
        result = subprocess.run([sys.executable, "-m", "vmstats", "serve", "--data-dir",
                                 str(tmp_path), "--duration", "1s", *args], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        assert result.stderr.strip().splitlines() == ["Error: " + result.stderr.split("Error: ")[1]
                                                      .strip()]
        assert message in result.stderr


def test_gzip_bodies_are_read_whole_or_refused(tmp_path):
    t0 = (int(time.time()) - 3600) // 60 * 60
    gz = {"Content-Encoding": "gzip"}
    with serve(tmp_path, "--flush-interval", "0.3") as server:
        lines = minute_lines("gz-two", t0)
        half = len(lines) // 2
        two = gzip.compress(b"\n".join(lines[:half]) + b"\n") + gzip.compress(
            b"\n".join(lines[half:]))
        assert post(server, "/write?precision=s", two, gz) == (204, "")
        # 400,000 empty members (8 MB) between the halves: each member once cost the reactor a
        # copy of the rest of the body, some 20 s of its CPU in all (CPU, not the clock: a
        # loaded host stretches the post, not the work).
        many = gzip.compress(b"\n".join(minute_lines("gz-many", t0)[:half]) + b"\n") \
            + gzip.compress(b"") * 400_000 \
            + gzip.compress(b"\n".join(minute_lines("gz-many", t0)[half:]))
        spent = cpu_seconds([server.pid])
        assert post(server, "/write?precision=s", many, gz, timeout=60) == (204, "")
        assert cpu_seconds([server.pid]) - spent < 5
        whole = gzip.compress(b"\n".join(minute_lines("gz-cut", t0)))
        for vm, body in (("gz-cut", whole[:len(whole) // 2]), ("gz-cut", whole[:-4]),
                         ("gz-junk", gzip.compress(b"\n".join(minute_lines("gz-junk", t0)))
                          + b"junk"), ("gz-cut", many[:-4])):
            status, text = post(server, "/write?precision=s", body, gz)
            assert status == 400 and "body is not gzip" in json.loads(text)["error"], (vm, text)
        used = edge(server.metrics(), "influx", "used")
        assert used == 2 * len(lines)
    for vm in ("gz-two", "gz-many"):  # both members, the whole minute
        rows = logged(tmp_path / "data", vm)
        assert list(rows["ts"]) == [t0 + 60] and rows.iloc[0]["net_rx"] == 100.0
        assert rows.iloc[0]["cpu"] == 13.5 and rows.iloc[0]["cpu_max"] == 16.0
    assert not (tmp_path / "data" / "vms" / "gz-cut").exists()
    assert not (tmp_path / "data" / "vms" / "gz-junk").exists()


def test_samples_the_minutes_refuse_are_a_400_naming_the_line_and_counted_once(tmp_path):
    now = int(time.time())
    t0 = (now - 3600) // 60 * 60
    with serve(tmp_path, "--flush-interval", "0.3") as server:
        body = b"\n".join(minute_lines("kept", t0) + [
            b"cpu,cpu=cpu-total,host=ahead usage_idle=5 %d" % (now + 100000),
            b"mem,host=big available_percent=50,total=" + b"9" * 30 + b"i %d" % (t0 + 30)])
        status, text = post(server, "/write?precision=s", body)
        error = json.loads(text)["error"]
        assert status == 400 and "partial write" in error, text
        assert "line 20: future_timestamp" in error and "line 21: out_of_range" in error, error
        metrics = server.metrics()
        assert edge(metrics, "influx", "future_timestamp") == 1
        assert edge(metrics, "influx", "out_of_range") == 1
        assert edge(metrics, "influx", "used") == 19  # each line once
    rows = logged(tmp_path / "data", "kept")  # the good lines around the refused ones are kept
    assert list(rows["ts"]) == [t0 + 60] and rows.iloc[0]["cpu"] == 13.5
    assert not (tmp_path / "data" / "vms" / "ahead").exists()


def test_a_first_sample_from_before_max_past_is_named_as_refused_for_the_window(tmp_path, caplog):
    """A VM's first sample two days old against --max-past 1h, from Telegraf over HTTP and from
    the agent's spool over TCP: each sender, the log and the counters say it was refused for
    the window (``past_timestamp``, past --max-past), never ``late`` (which is a minute already
    written).  Before, the HTTP answer and the log said only ``sample 172800s old``, and the
    agent asked whether the VM's clock was off, though its records had only waited."""
    old = int(time.time()) - 2 * 86400
    with serve(tmp_path, "--flush-interval", "0.3", "--max-past", "1h") as server:
        status, text = post(server, "/write?precision=s", b"\n".join(minute_lines("old-vm", old)))
        assert status == 400
        error = json.loads(text)["error"]
        assert ("line 1: past_timestamp: stamped 1728" in error
                and "s before this server's clock, past --max-past 3600s (timestamp " in error), error
        spool = Spool(str(tmp_path / "spool"), 100)
        sender = TcpSender(LOOPBACK, server.tcp_port, spool)
        with caplog.at_level(logging.WARNING, logger="vmstats.client.transport"):
            sender.send([protocol.encode_record(protocol.Record(vm="old-agent", ts=old, cpu=1.0,
                                                                mem=2.0)).encode()])
        sender.close()
        assert (sender.acked, sender.rejected) == (0, 1)
        assert "older than its --max-past (spooled longer than that)" in caplog.text, caplog.text
        metrics = server.metrics()
        assert edge(metrics, "influx", "past_timestamp") == 19
        assert metrics['vmstats_rejected_total{reason="past_timestamp"}'] == 1
        assert metrics.get('vmstats_edge_events_total{event="late"}', 0) == 0
        # The native records' refusals say the same, with the same values: by the regexes, by
        # the decoder (a spelling the regexes leave to it), and ahead of the clock.
        server.send_udp(b"vmstats,vm=old-udp cpu=1,mem=2 %d" % old,
                        b"vmstats,vm=odd-udp cpu=1e0,mem=2 %d" % old,
                        b"vmstats,vm=ahead-udp cpu=1,mem=2 %d" % (time.time() + 900))
        server.wait_for(lambda s: s.metrics()['vmstats_rejected_total{reason="past_timestamp"}'] == 3)
    assert server.returncode == 0, server.output
    assert "influx: past_timestamp: line 1: stamped " in server.output, server.output
    for vm in ("old-agent", "old-udp", "odd-udp"):
        assert re.search(r"past_timestamp: vm %s stamped 1728\d\ds before this server's clock, past "
                         r"--max-past 3600s \(timestamp %d, server time " % (vm, old), server.output), vm
    assert re.search(r"future_timestamp: vm ahead-udp stamped (899|90\d)s ahead of this server's "
                     r"clock, past --max-future 300s \(timestamp ", server.output), server.output

