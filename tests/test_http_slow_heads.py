"""A request's head (request line and headers) must be whole within --http-head-timeout of its
first byte.

Every byte read reset --http-idle-timeout, so a head trickled a byte a second (up to the 16 KiB
head limit) kept its connection for hours; the deadline runs from a request's first byte, so a
keep-alive connection waiting between requests is still the idle timeout's alone.
"""

import socket
import threading
import time

from serverproc import LOOPBACK, serve
from test_http_bodies import read_answer, status_and_json
from test_http_bodies_in_flight import REFUSED, USED, lines, write_head

OPEN = 'vmstats_connections_open{port="http"}'


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One response's head and body (by its Content-Length), leaving the connection open."""
    sock.settimeout(3)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536) or b"<closed>"
        assert not data.endswith(b"<closed>"), data
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next((line.split(b":", 1)[1] for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), b"0"))  # 204: none
    while len(body) < length:
        more = sock.recv(65536)
        assert more, (head, body)
        body += more
    return head, body


def test_a_head_trickled_past_the_head_timeout_is_cut_and_a_write_still_lands(tmp_path):
    """A head sent a byte every 50 ms, never idle for --http-idle-timeout, is answered 408 at
    --http-head-timeout, counted as head_timeout and closed; a write meanwhile lands whole."""
    good = lines(300, "hd")
    with serve(tmp_path, "--influx-port", "0", "--http-head-timeout", "0.5s") as server:
        port = server.http_port
        result: dict = {}

        def trickle() -> None:
            head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 200
            with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
                started = time.monotonic()
                sock.settimeout(0.05)
                try:
                    for byte in head:
                        sock.sendall(bytes([byte]))
                        try:
                            data = sock.recv(65536)
                        except socket.timeout:
                            continue
                        result["answer"] = data + read_answer(sock, 2)
                        break
                except OSError as exc:
                    result["answer"] = repr(exc).encode()
                result["took"] = time.monotonic() - started

        sender = threading.Thread(target=trickle)
        sender.start()
        with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
            sock.sendall(write_head(len(good)) + good)
            assert read_answer(sock, 3).startswith(b"HTTP/1.1 204 ")
        sender.join(5)
        code, headers, error = status_and_json(result["answer"])
        assert (code, headers["connection"]) == (408, "close"), result
        assert "--http-head-timeout" in error["error"] and 0.4 < result["took"] < 2, result
        metrics = server.wait_metrics(lambda m: m[OPEN] <= 1 and m[USED] >= 300, timeout=3)
        assert (metrics[REFUSED % "head_timeout"], metrics[USED]) == (1, 300)


def test_a_keep_alive_connection_idle_past_the_head_timeout_is_answered(tmp_path):
    """The head deadline runs from a request's first byte: a connection that waits longer than
    it (but less than --http-idle-timeout) between two requests is kept, and answered twice."""
    with serve(tmp_path, "--http-head-timeout", "0.3s", "--http-idle-timeout", "10s") as server:
        with socket.create_connection((LOOPBACK, server.http_port), timeout=5) as sock:
            request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
            sock.sendall(request)
            head, _ = read_response(sock)
            assert head.startswith(b"HTTP/1.1 200 "), head
            time.sleep(1.0)  # three head deadlines
            sock.sendall(request[:10])  # a head that pauses inside its deadline is fine too
            time.sleep(0.1)
            sock.sendall(request[10:])
            head, body = read_response(sock)
            assert head.startswith(b"HTTP/1.1 200 "), head
            assert REFUSED % "head_timeout" not in body.decode()
        assert server.metrics().get(REFUSED % "head_timeout", 0) == 0


def test_a_pipelined_head_left_unfinished_is_cut_at_the_head_timeout(tmp_path):
    """A whole write and the start of the next request's head in one send, then nothing: the
    write is answered and lands, and the unfinished head (read with the write, already the
    server's) is answered 408 at --http-head-timeout, not left to the idle timeout."""
    good = lines(50, "pl")
    head = write_head(len(good)).replace(b"Connection: close\r\n", b"")
    with serve(tmp_path, "--influx-port", "0", "--http-head-timeout", "0.5s",
               "--http-idle-timeout", "30s") as server:
        with socket.create_connection((LOOPBACK, server.http_port), timeout=5) as sock:
            started = time.monotonic()
            sock.sendall(head + good + b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            first, _ = read_response(sock)
            assert first.startswith(b"HTTP/1.1 204 "), first
            answer = read_answer(sock, 3)
            took = time.monotonic() - started
        code, headers, error = status_and_json(answer)
        assert (code, headers["connection"]) == (408, "close"), answer
        assert "--http-head-timeout" in error["error"] and 0.4 < took < 2, took
        metrics = server.wait_metrics(lambda m: m[USED] >= 50, timeout=3)
        assert (metrics[REFUSED % "head_timeout"], metrics[USED]) == (1, 50)


def test_a_head_begun_while_the_answer_before_it_is_made_is_cut_from_its_first_byte(tmp_path):
    """The start of a head sent behind a write whose answer takes seconds (a megabyte of
    malformed lines, each worded) waited unread until that answer was done, and only then had
    its --http-head-timeout: a client held the connection for the answer's time and the
    deadline on top.  Its deadline runs from when it was read, so the 408 follows the answer
    at once when the deadline passed meanwhile."""
    slow = b"m\n" * 600_000
    head = write_head(len(slow)).replace(b"Connection: close\r\n", b"")
    with serve(tmp_path, "--influx-port", "0", "--http-head-timeout", "0.5s",
               "--http-idle-timeout", "30s") as server:
        with socket.create_connection((LOOPBACK, server.http_port), timeout=10) as sock:
            sock.sendall(head + slow + b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            sent = time.monotonic()
            said = sock.recv(65536)  # the write's answer, and maybe the 408 right behind it
            answered = time.monotonic() - sent
            said += read_answer(sock, 5)
            took = time.monotonic() - sent
        first, late, answer = said.partition(b"HTTP/1.1 408 ")
        assert first.startswith(b"HTTP/1.1 400 ") and b"partial write" in first, said[:300]
        code, headers, error = status_and_json(late + answer)
        assert (code, headers["connection"]) == (408, "close"), answer
        assert "--http-head-timeout" in error["error"]
        # From the head's first byte (read with the write's last), not from the answer's end.
        assert took < max(answered, 0.5) + 0.25, (answered, took)
        assert answered > 0.3, answered  # else the two cannot be told apart
        assert server.metrics()[REFUSED % "head_timeout"] == 1
