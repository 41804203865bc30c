"""Webhook receivers that answer oddly, on loopback, against the real server.

A receiver speaking HTTP/1.0 (an answer that ends when the connection closes, as
Python's ``http.server`` answers by default), one answering megabytes, one that
redirects, refuses, closes mid-answer or never answers: what each delivery
comes to, what the action log says of it in words, and that a stop while a
send hangs leaves it pending without an error.
"""

import json
import os
import random
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from rulesutil import HOT, SECRET, WebhookReceiver, line, log_entries, rules_file, serve
from serverproc import ServerProcess

FAST = '[settings]\nretry_min = "0.2s"\nretry_max = "0.5s"\n'


class RawReceiver:
    """An HTTP receiver written on sockets, so it can answer what no library would."""

    def __init__(self, answer: bytes | None, body_bytes: int = 0):
        #: The head sent after the request is read (None: never answer), then ``body_bytes``
        #: bytes of body, then the connection is closed.
        self.answer = answer
        self.body_bytes = body_bytes
        self.posts = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d/hook" % self.listener.getsockname()[1]
        self.stopping = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                while len(body) < length:
                    body += conn.recv(65536)
                with self.lock:
                    self.posts += 1
                if self.answer is None:
                    self.stopping.wait(30)
                    return
                conn.sendall(self.answer)
                chunk = b"x" * (1 << 20)
                for _ in range(self.body_bytes >> 20):
                    conn.sendall(chunk)
            except OSError:
                return

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()


@pytest.fixture
def receiver(request):
    made = []

    def make(*args, **kwargs) -> RawReceiver:
        made.append(RawReceiver(*args, **kwargs))
        return made[-1]

    yield make
    for one in made:
        one.close()


def _high_water_mb(pid: int) -> float:
    """The process's peak resident memory (VmHWM), MiB."""
    text = Path("/proc/%d/status" % pid).read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024


def _fire(server) -> None:
    server.send_udp(line("10.0.0.1", int(time.time()), 99.0))


DELIVERED = 'vmstats_rule_deliveries_total{action="hook",result="delivered"}'
FAILED = 'vmstats_rule_deliveries_total{action="hook",result="failed"}'


def test_an_http10_answer_that_ends_at_the_close_is_taken_once(tmp_path, receiver):
    hook = receiver(b"HTTP/1.0 200 OK\r\nServer: plain\r\n\r\n")
    with serve(tmp_path, rules_file(tmp_path, hook.url, HOT % "" + FAST)) as server:
        _fire(server)
        metrics = server.wait_metrics(lambda m: m.get(DELIVERED) == 1)
    assert metrics.get(FAILED, 0) == 0 and hook.posts == 1


def test_a_receiver_answering_megabytes_costs_the_server_no_memory(tmp_path, receiver):
    hook = receiver(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (256 << 20), 256 << 20)
    with serve(tmp_path, rules_file(tmp_path, hook.url, HOT % "" + FAST)) as server:
        server.wait_metrics(lambda m: "vmstats_rule_deliveries_pending" in m)
        before = _high_water_mb(server.pid)
        _fire(server)
        server.wait_metrics(lambda m: m.get(DELIVERED) == 1, timeout=30)
        grew = _high_water_mb(server.pid) - before
    assert grew < 64, "the server's peak memory grew %.0f MiB reading a 256 MiB answer" % grew


@pytest.mark.parametrize("answer, said", [
    (b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://elsewhere/hook\r\n"
     b"Content-Length: 0\r\n\r\n",
     "HTTP 307 (a redirect to http://elsewhere/hook, not followed: point url at it)"),
    (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 24\r\n\r\nno such\n  receiver  here",
     "HTTP 400: no such receiver here"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",
     "the connection closed in the middle of the answer"),
], ids=["redirect", "refused", "cut"])
def test_a_failed_delivery_says_why_in_words_and_is_retried(tmp_path, receiver, answer, said):
    hook = receiver(answer)
    with serve(tmp_path, rules_file(tmp_path, hook.url, HOT % "" + FAST)) as server:
        _fire(server)
        server.wait_metrics(lambda m: m.get(FAILED, 0) >= 2)
        errors = {e["error"] for e in log_entries(server) if e["type"] == "result" and not e["ok"]}
    assert errors == {said}


def test_a_stop_while_a_send_hangs_leaves_it_pending_without_an_error(tmp_path, receiver):
    hook = receiver(None)
    rules = rules_file(tmp_path, hook.url, HOT % "" + FAST)
    server = serve(tmp_path, rules).start()
    try:
        _fire(server)
        server.wait_metrics(lambda m: m.get(FAILED, 0) >= 1, timeout=20)
        server.wait_for(lambda _server: hook.posts >= 2, timeout=20)  # the retry hangs too
        assert server.stop() == 0
    finally:
        server.kill()
    errors = {e["error"] for e in log_entries(server) if e["type"] == "result" and not e["ok"]}
    assert errors == {"no answer within 2s"}
    assert "ERROR" not in server.output and "Traceback" not in server.output, server.output
    assert "1 pending (sent at the next start)" in server.output


class _Unanswered:
    """A name server on loopback that takes every query and never answers: a host name whose
    resolution hangs (the resolver's own timeout, 30 s), as behind a dead DNS server."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(20):  # port 53 is the resolver's; the address is this test's own
            self.address = "127.%d.%d.%d" % tuple(random.randrange(1, 255) for _ in range(3))
            try:
                self.sock.bind((self.address, 53))
                break
            except OSError:
                continue
        else:
            raise AssertionError("no loopback address free for port 53")

    def close(self) -> None:
        self.sock.close()


class _ResolvedThrough(ServerProcess):
    """The server with its own mount of /etc/resolv.conf (naming ``_Unanswered``): the
    machine's file is left as it is."""

    def __init__(self, resolv_conf: Path, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.resolv_conf = resolv_conf

    def command(self) -> list:
        return ["unshare", "-m", "--propagation", "private", "sh", "-c",
                'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"', "sh",
                str(self.resolv_conf), *super().command()]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare to give the server a resolv.conf of its own")
def test_a_webhook_whose_name_never_resolves_delays_only_its_own_deliveries(tmp_path):
    """Thirty alerts to a webhook whose host name the DNS never answers: every send of it
    fails at its ``timeout`` (the lookup included), and another rule's webhook is delivered
    at once.  Before, the lookups ran on the reactor's shared pool of 10 threads: sixteen of
    them hanging held it, and every other webhook's lookup (even of 127.0.0.1) waited
    behind them past its own timeout, as did the server's stop."""
    dns = _Unanswered()
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver %s\noptions timeout:30 attempts:1\n" % dns.address)
    slow = ('[action.slow]\nkind = "webhook"\nurl = "http://alerts.vmstats-test.example:9/hook"\n'
            'timeout = "1s"\n')
    body = ('[[rule]]\nname = "hot"\nmetric = "cpu"\nenter = 50\nperiod = 1\nactions = ["slow"]\n'
            '[[rule]]\nname = "memhi"\nmetric = "mem"\nenter = 50\nperiod = 1\nactions = ["hook"]\n')
    try:
        with WebhookReceiver(SECRET.encode()) as hook:
            rules = rules_file(tmp_path, hook.url, body + FAST, slow)
            server = _ResolvedThrough(conf, tmp_path, "--rules", rules, "--parsers", "0",
                                      "--workers", "1", "--flush-interval", "1s").start()
            try:
                now = int(time.time())
                server.send_udp(*[line("10.0.1.%d" % i, now, 99.0, mem=10.0) for i in range(30)])
                time.sleep(0.5)  # the slow webhook's lookups are hanging
                server.send_udp(line("10.0.2.1", now, 10.0, mem=99.0))
                assert hook.wait(1, timeout=2)[0]["labels"]["alertname"] == "memhi"
                server.wait_metrics(lambda m: m.get(
                    'vmstats_rule_deliveries_total{action="slow",result="failed"}', 0) >= 16, 3)
                assert server.stop() == 0, server.output
            finally:
                if server.returncode is None:
                    server.kill()
        assert "no answer within 1s" in server.output
        assert json.loads(hook.received[0]["body"]["alerts"][0]["annotations"]["value"]) == 99.0
    finally:
        dns.close()
