"""Hostile input at the server's newer doors (/mutes, the other formats' ports), on the real
server over loopback: each is refused and counted, and costs nothing else -- no hung answer,
no state that breaks the pages or the alerts after it, no reactor held for seconds."""

import json
import os
import socket
import time
import urllib.error
import urllib.request

import pytest
from rulesutil import HOT, SECRET, WebhookReceiver, line, rules_file, serve, wait_until
from serverproc import LOOPBACK, ServerProcess
from test_rules_mutes import post

from vmstats.server.config import ServerConfig


def test_a_mute_whose_times_are_no_time_of_day_or_never_end_is_refused(tmp_path):
    """``ends: 1e300`` was taken into force, then neither answered (the request hung), saved
    nor listed (GET /mutes and /alerts a 500 from then on); ``duration: null`` made a mute
    with no end, 201, after which every alert of its rule was lost in the tick (TypeError)."""
    with WebhookReceiver(SECRET.encode()) as hook:
        with serve(tmp_path, rules_file(tmp_path, hook.url, HOT % "")) as server:
            mute = {"rule": "hot", "author": "ana", "comment": "kernel updates"}
            for bad, said in [({"ends": 1e300}, "ends: 1e+300 is not between 1970 and the end of 9999"),
                              ({"ends": "999999999999"}, "not between 1970"),
                              ({"duration": 1e300}, "duration: 1e+300 from the start ends after 9999"),
                              ({"starts": -1e300, "duration": "1h"}, "starts: -1e+300 is not between"),
                              ({"ends": "0001-01-01T00:00:00+23:59"}, "ends: '0001-01-01T00:00:00+23:59'"),
                              ({"duration": None}, "no end: a mute needs ends")]:
                code, answer = post(server, json.dumps({**mute, **bad}).encode())
                assert code == 400 and said in answer["error"], (bad, code, answer)
            listing = json.loads(server.http("/mutes"))
            assert listing == {"mutes": []}
            metrics = server.metrics()
            assert metrics['vmstats_rule_mute_requests_total{result="error_400"}'] == 6
            assert metrics["vmstats_rule_mutes"] == 0
            # Nothing refused is in force, and the rules still page.
            server.send_udp(line("10.0.0.1", int(time.time()), 95.0))
            assert hook.wait(1)[0]["labels"]["scope"] == "10.0.0.1"
            [state] = json.loads(server.http("/alerts"))["states"]
            assert state["state"] == "alarm" and "muted" not in state


def write(server, lines: list[bytes]) -> float:
    """POST ``lines`` to the write API (precision s); the seconds until its 204 (a reactor held
    for minutes answers in more than 30)."""
    request = urllib.request.Request("http://%s:%d/write?db=x&precision=s"
                                     % (LOOPBACK, server.http_port), data=b"\n".join(lines))
    began = time.monotonic()
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 204
    return time.monotonic() - began


def test_a_sender_inventing_vms_past_the_open_minutes_bound_does_not_hold_the_reactor(tmp_path):
    """Past 200,000 open minutes each new one forced the oldest out after a pass over them all:
    30 ms a sample, so one 8 MB body naming 210,000 hosts held the reactor (every port, every
    page) for five minutes.  Now it is answered in a second or two, the bound kept and counted.

    The pass grows with the bound, so a bound of 20,000 (``--edge-max-open``) and as many hosts
    again past it shows the same fault, a minute of reactor (more than 30 s) without the fix,
    for a fifth of the lines."""
    bound = 20_000
    vms = 2 * bound
    with ServerProcess(tmp_path, "--parsers", "0", "--workers", "1",
                       "--edge-max-open", str(bound)) as server:
        assert write(server, [b"mem,host=vm%d available_percent=5" % i for i in range(vms)]) < 30
        metrics = server.metrics()
        assert metrics['vmstats_edge_lines_total{format="influx",outcome="used"}'] == vms
        assert metrics["vmstats_edge_open_minutes"] == bound
        # Memory only, no CPU: each minute forced out is counted, and as incomplete.
        forced = metrics['vmstats_edge_events_total{event="forced"}']
        assert forced == vms - bound
        assert metrics['vmstats_edge_events_total{event="incomplete"}'] == forced


def cpu_seconds(pid: int) -> float:
    """The CPU time process ``pid`` has used so far (user and system, s), from the kernel."""
    with open("/proc/%d/stat" % pid) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_hosts_remembered_that_report_again_do_not_make_each_new_host_a_pass_over_all(tmp_path):
    """The server remembers the last minute written of ``--edge-max-written`` hosts (a sample
    for a minute written is late).  Past that it forgot only among the first half, so with
    those reporting again (open: not to be forgotten) it forgot nothing, and made the same
    pass over them all again for every minute written, 5 ms each past the 200,000th.

    The pass grows with the bound, so the fault is checked at a bound of 20,000 by what it
    costs: the server's CPU time for as many new hosts again past the bound (and the half
    remembered reporting again), against that for the hosts written under it in the same run:
    3 s against 0.1 s without the fix, 0.15 s with it."""
    bound = 20_000
    with ServerProcess(tmp_path, "--parsers", "0", "--workers", "1",
                       "--minute-grace", "0.2s", "--edge-max-written", str(bound)) as server:
        pid = server.pid
        ended = int(time.time()) // 60 * 60 - 120  # written a grace after their samples

        def incomplete() -> float:  # memory only, no CPU: each minute written is incomplete
            return server.metrics()['vmstats_edge_events_total{event="incomplete"}']

        first = bound + 1  # one past: the half written first are forgotten
        began = cpu_seconds(pid)
        write(server, [b"mem,host=a%d available_percent=5 %d" % (i, ended) for i in range(first)])
        wait_until(lambda: incomplete() == first, timeout=30)
        under = cpu_seconds(pid) - began
        # The hosts remembered report again, for a minute still to come, while more new ones
        # arrive than can be remembered beside them, each written a grace later.
        again = [b"mem,host=a%d available_percent=5 %d" % (i, time.time() + 240)
                 for i in range(first // 2, first)]
        new = [b"mem,host=b%d available_percent=5 %d" % (i, ended) for i in range(first)]
        began = cpu_seconds(pid)
        write(server, again + new)
        wait_until(lambda: incomplete() == 2 * first, timeout=30)
        past = cpu_seconds(pid) - began
        assert past < 2 * under + 0.5, (under, past)
        assert server.metrics()["vmstats_edge_open_minutes"] == len(again)
        # The bound is the flag's: a0, among the half forgotten first, is taken again into a
        # new row; the last new host, remembered, is late.
        write(server, [b"mem,host=a0 available_percent=5 %d" % ended])
        with pytest.raises(urllib.error.HTTPError) as refused:
            write(server, [b"mem,host=b%d available_percent=5 %d" % (first - 1, ended)])
        assert refused.value.code == 400 and b"late" in refused.value.read()
        wait_until(lambda: incomplete() == 2 * first + 1, timeout=30)
        assert server.metrics()['vmstats_edge_events_total{event="late"}'] == 1


def test_new_counters_past_the_bound_cost_what_those_under_it_cost(tmp_path):
    """Past 200,000 counters each new one forgets the least recently updated: the first key of
    a dict whose front was emptied one key at a time, found past every empty slot there.  A
    body of 200,000 new counters took 0.3 s to fill the bound, and 5 s, then 13 s, past it."""
    counters = ServerConfig.edge_max_counters
    lines = counters // 2  # two counters a line: bytes_recv and bytes_sent

    def interfaces(first: int) -> list[bytes]:
        return [b"net,host=web1,interface=e%d bytes_recv=1i,bytes_sent=1i" % i
                for i in range(first, first + lines)]

    with ServerProcess(tmp_path, "--parsers", "0", "--workers", "1") as server:
        under = write(server, interfaces(0))
        past = max(write(server, interfaces(lines)), write(server, interfaces(2 * lines)))
        assert past < 3 * under + 3, (under, past)
        metrics = server.metrics()
        assert metrics["vmstats_edge_counters"] == counters
        assert metrics['vmstats_edge_events_total{event="forgotten"}'] == 2 * counters


def rss_mb(pid: int) -> float:
    """The resident memory of process ``pid`` (MB), from the kernel."""
    with open("/proc/%d/status" % pid) as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def test_a_client_pipelining_requests_without_reading_the_answers_is_not_read_further(tmp_path):
    """Twisted stops reading a client whose answers fill the transport only between requests,
    but hears of it while a request writes its answer, and answered the rest of the pipeline at
    once: ``GET /metrics`` sent over and over, never reading, grew the server 60 MB a second."""
    with ServerProcess(tmp_path, "--parsers", "0", "--workers", "1") as server:
        pid = server.pid
        before = rss_mb(pid)
        pipeline = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 1000
        with socket.create_connection((LOOPBACK, server.http_port)) as sock:
            sock.settimeout(1.0)  # a send blocked this long: the server reads no more
            began = time.monotonic()
            try:
                while time.monotonic() - began < 3:
                    sock.sendall(pipeline)
            except TimeoutError:
                pass
            grown = rss_mb(pid) - before
            assert grown < 50, "the server grew %.0f MB" % grown
            # Read, and the requests held are answered.
            answered, last = 0, b""
            while answered < 2000:
                data = sock.recv(1 << 20)
                assert data, "the server closed the connection"
                answered += (last + data).count(b"HTTP/1.1 200 ") - last.count(b"HTTP/1.1 200 ")
                last = data[-16:]


def ask_raw(port: int, request: bytes) -> bytes:
    """Send ``request`` on a new connection; every byte answered until the server closes."""
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        sock.sendall(request)
        answer = b""
        while data := sock.recv(65536):
            answer += data
    return answer


def test_a_write_whose_transfer_encoding_is_identity_is_refused_not_acknowledged_unread(tmp_path):
    """Twisted reads ``Transfer-Encoding: identity`` as no body: the write was answered 204
    with none of its lines taken, and the lines were then read as a second request."""
    now = int(time.time())
    body = b"mem,host=web1 available_percent=50 %d\ncpu,cpu=cpu-total,host=web1 usage_idle=50 %d\n" \
        % (now, now)
    head = b"POST /write?db=x&precision=s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    with ServerProcess(tmp_path, "--parsers", "0", "--workers", "1") as server:
        for coding in (b"identity", b"Identity", b"identity, chunked"):
            answer = ask_raw(server.http_port, head + b"Transfer-Encoding: %s\r\n\r\n%s"
                             % (coding, body))
            assert answer.startswith(b"HTTP/1.1 400 "), answer
            assert answer.count(b"HTTP/1.1") == 1 and b"cannot be read" in answer, answer
        metrics = server.metrics()
        assert metrics['vmstats_http_requests_refused_total{reason="bad_request"}'] == 3
        assert 'vmstats_edge_lines_total{format="influx",outcome="used"}' not in metrics
        # Chunked, in any case, is read.
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        answer = ask_raw(server.http_port, head + b"Transfer-Encoding: Chunked\r\n\r\n" + chunked)
        assert answer.startswith(b"HTTP/1.1 204 "), answer
        assert server.metrics()['vmstats_edge_lines_total{format="influx",outcome="used"}'] == 2
