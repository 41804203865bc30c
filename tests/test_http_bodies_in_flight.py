"""Write bodies while they arrive: held against --http-body-memory, and cut at --http-body-timeout.

Twisted stores a request's body as it arrives (in memory, past 100 KB in a temporary file) before
any page sees it, so bodies still arriving held memory and disk that the body budget never
counted, and a sender of one byte a second, never idle, kept its connection for as long as it
liked.
"""

import socket
import threading
import time

from serverproc import LOOPBACK, serve
from test_http_bodies import read_answer, status_and_json

HELD = "vmstats_http_body_bytes_held"
REFUSED = 'vmstats_http_requests_refused_total{reason="%s"}'
USED = 'vmstats_edge_lines_total{format="influx",outcome="used"}'


def lines(count: int, host: str) -> bytes:
    stamp = (int(time.time()) - 120) * 10**9
    return b"".join(b"cpu,cpu=cpu-total,host=%s%d usage_idle=50,usage_iowait=0 %d\n"
                    % (host.encode(), i % 20, stamp) for i in range(count))


def write_head(length: int | None) -> bytes:
    framing = (b"Content-Length: %d" % length if length is not None
               else b"Transfer-Encoding: chunked")
    return b"POST /write?db=x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n\r\n" % framing


def test_bodies_in_flight_are_held_in_the_budget_and_one_past_it_is_refused_early(tmp_path):
    """A body counts from its headers (its declared length) or, chunked, as it arrives; one
    that would pass the budget is answered 503 with Retry-After at once, the one in budget
    lands whole."""
    body = lines(6000, "fl")  # ~430 KiB: two fit in 1 MiB, not three
    assert 400 << 10 < len(body) < 512 << 10
    with serve(tmp_path, "--influx-port", "0", "--http-body-memory", str(1 << 20)) as server:
        port = server.http_port
        first = socket.create_connection((LOOPBACK, port), timeout=5)
        second = socket.create_connection((LOOPBACK, port), timeout=5)
        chunked = socket.create_connection((LOOPBACK, port), timeout=5)
        try:
            first.sendall(write_head(len(body)) + body[:1000])
            server.wait_metrics(lambda m: m[HELD] == len(body), timeout=3)
            second.sendall(write_head(len(body)) + body[:1000])
            server.wait_metrics(lambda m: m[HELD] == 2 * len(body), timeout=3)
            # A third declared body does not fit: refused before any of it is sent (not told
            # to go on with a 100 Continue).
            late = socket.create_connection((LOOPBACK, port), timeout=5)
            late.sendall(write_head(len(body)).replace(b"\r\n\r\n",
                                                       b"\r\nExpect: 100-continue\r\n\r\n"))
            code, headers, error = status_and_json(read_answer(late, 2))
            late.close()
            assert (code, headers["retry-after"]) == (503, "1"), (code, headers)
            assert "--http-body-memory" in error["error"]
            # A chunked one is held as its chunks arrive, and refused once they pass the budget.
            chunked.sendall(write_head(None))
            chunk = b"%x\r\n%s\r\n" % (50 << 10, b"x" * (50 << 10))
            answer = b""
            for _ in range(10):  # 4 pass the budget
                chunked.sendall(chunk)
                chunked.settimeout(0.1)
                try:
                    answer = chunked.recv(65536)
                    break
                except OSError:
                    continue
            answer = answer or read_answer(chunked, 3)
            assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
            assert server.metrics()[HELD] == 2 * len(body)  # the chunked one's room given back
            # The two in budget land whole.
            for sock in (first, second):
                sock.sendall(body[1000:])
            for sock in (first, second):
                assert read_answer(sock, 5).startswith(b"HTTP/1.1 204 ")
        finally:
            for sock in (first, second, chunked):
                sock.close()
        metrics = server.wait_metrics(lambda m: m[USED] >= 12000, timeout=5)
        assert (metrics[USED], metrics[HELD], metrics[REFUSED % "busy"]) == (12000, 0, 2)


def test_a_slow_body_is_cut_at_the_body_timeout_and_a_good_write_still_lands(tmp_path):
    """A sender of one byte a period, with a Content-Length or chunked, is answered 408 and its
    connection closed at --http-body-timeout; the room its body held is given back, and a
    well-behaved write meanwhile is taken whole."""
    good = lines(500, "ok")
    with serve(tmp_path, "--influx-port", "0", "--http-body-timeout", "1s") as server:
        port = server.http_port
        answers: dict = {}

        def trickle(name: str, head: bytes, piece: bytes) -> None:
            with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
                sock.sendall(head)
                started = time.monotonic()
                try:
                    while time.monotonic() - started < 6:
                        sock.sendall(piece)
                        sock.settimeout(0.1)
                        try:
                            data = sock.recv(65536)
                        except socket.timeout:
                            continue
                        answers[name] = (time.monotonic() - started, data + read_answer(sock, 2))
                        return
                except OSError as exc:
                    answers[name] = (time.monotonic() - started, repr(exc).encode())

        senders = [threading.Thread(target=trickle, args=(
            "length", write_head(1 << 20), b"c")), threading.Thread(target=trickle, args=(
                "chunked", write_head(None), b"1\r\nc\r\n"))]
        for sender in senders:
            sender.start()
        time.sleep(0.3)
        assert server.metrics()[HELD] >= 1 << 20  # the declared body holds its room meanwhile
        with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
            sock.sendall(write_head(len(good)) + good)
            assert read_answer(sock, 3).startswith(b"HTTP/1.1 204 ")
        for sender in senders:
            sender.join(8)
        for name in ("length", "chunked"):
            took, answer = answers[name]
            code, headers, error = status_and_json(answer)
            assert (code, headers["connection"]) == (408, "close"), answer
            assert "--http-body-timeout" in error["error"] and 0.9 < took < 4, (took, error)
        metrics = server.wait_metrics(lambda m: m['vmstats_connections_open{port="http"}'] <= 1,
                                      timeout=3)
        assert (metrics[REFUSED % "body_timeout"], metrics[HELD], metrics[USED]) == (2, 0, 500)


def test_a_body_sent_by_a_method_its_path_does_not_serve_holds_nothing(tmp_path):
    """The write token is asked of a POST at its headers; a body sent to the write API by any
    other method (answered 405 in the end) was held against --http-body-memory and stored
    while it arrived: a client without the token holding the budget with a few such bodies,
    trickled within --http-body-timeout, had every writer with the token answered 503.  Such a
    body is now refused 405 at its headers, holding and storing nothing, and counted once."""
    good = lines(6000, "tk")  # ~430 KiB: with 900 KiB held by another, past 1 MiB
    with serve(tmp_path, "--influx-port", "0", "--write-token", "tok",
               "--http-body-memory", str(1 << 20)) as server:
        port = server.http_port
        held = []
        try:
            for method, path, allow in ((b"PUT", b"/write", "POST"),
                                        (b"GET", b"/api/v2/write?bucket=b", "POST"),
                                        (b"DELETE", b"/write", "POST"),
                                        (b"PATCH", b"/metrics", "GET, HEAD")):
                sock = socket.create_connection((LOOPBACK, port), timeout=5)
                held.append(sock)
                sock.sendall(b"%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                             % (method, path, 900 << 10) + b"x" * 1000)
                code, headers, error = status_and_json(read_answer(sock, 2))
                assert (code, headers["allow"], headers["connection"]) == (405, allow, "close")
                assert allow in error["error"]
            assert server.metrics()[HELD] == 0
            with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
                sock.sendall(write_head(len(good)).replace(b"?db=x", b"?db=x&p=tok") + good)
                assert read_answer(sock, 5).startswith(b"HTTP/1.1 204 ")
        finally:
            for sock in held:
                sock.close()
        metrics = server.wait_metrics(lambda m: m[USED] >= 6000, timeout=5)
        assert (metrics[REFUSED % "method_not_allowed"], metrics.get(REFUSED % "busy", 0),
                metrics[HELD]) == (4, 0, 0)
