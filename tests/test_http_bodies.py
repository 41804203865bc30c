"""Request bodies on the HTTP port: bounded before they are stored, refusals answered in JSON."""

import json
import os
import select
import socket

from serverproc import LOOPBACK, STATUS_TOKEN, serve

from vmstats.server.formats.httpwrite import MAX_BODY

CHUNK = b"x" * (64 << 10)


def temp_bytes(pid: int) -> int:
    """Bytes in the server's open regular files outside its data directory (Twisted's body files)."""
    total = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            if target.startswith("/") and ("(deleted)" in target or "/tmp" in target):
                total += os.stat("/proc/%d/fd/%s" % (pid, fd)).st_size
        except OSError:
            pass
    return total


def read_answer(sock: socket.socket, timeout: float) -> bytes:
    """What the server says until it closes, or until ``timeout`` seconds pass."""
    sock.settimeout(timeout)
    answer = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    except OSError:
        pass
    return answer


def stream(port: int, head: bytes, chunk: bytes, most: int) -> tuple[int, bytes]:
    """Send ``head`` then up to ``most`` bytes of ``chunk``s until the server answers; (sent, answer)."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        sock.sendall(head)
        sent = 0
        try:
            while sent < most and not select.select([sock], [], [], 0)[0]:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # the server closed after answering
            pass
        return sent, read_answer(sock, 10)


def status_and_json(answer: bytes) -> tuple[int, dict, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)


def test_a_body_past_the_limit_is_refused_before_it_is_stored(tmp_path):
    with serve(tmp_path, "--write-token", "tok") as server:
        port, pid = server.http_port, server.proc.pid
        # Declared too long: refused at the headers, whatever follows is dropped.
        sent, answer = stream(port, b"POST /write?p=tok HTTP/1.1\r\nHost: x\r\n"
                              b"Content-Length: %d\r\n\r\n" % (600 << 20), CHUNK, 300 << 20)
        code, headers, body = status_and_json(answer)
        assert code == 413 and "body larger than %d bytes" % MAX_BODY in body["error"], answer
        assert sent < 64 << 20 and headers["connection"] == "close"
        # Chunked: refused once the streamed bytes pass the limit, never with all of them stored.
        chunk = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK)
        sent, answer = stream(port, b"POST /api/v2/write?bucket=b HTTP/1.1\r\nHost: x\r\n"
                              b"Authorization: Token tok\r\nTransfer-Encoding: chunked\r\n\r\n",
                              chunk, 300 << 20)
        assert status_and_json(answer)[0] == 413 and sent < MAX_BODY + (64 << 20)
        # A body to a path not served: 404 before any of it is read.
        sent, answer = stream(port, b"POST /nonexistent HTTP/1.1\r\nHost: x\r\n"
                              b"Content-Length: %d\r\n\r\n" % (600 << 20), CHUNK, 300 << 20)
        assert status_and_json(answer)[:3:2] == (404, {"error": "not found"})
        assert sent < 64 << 20
        # A write without its token: 401 at the headers, counted as the page counts it.
        sent, answer = stream(port, b"POST /api/v2/write?bucket=b HTTP/1.1\r\nHost: x\r\n"
                              b"Content-Length: %d\r\n\r\n" % (MAX_BODY - 1), CHUNK, 300 << 20)
        code, _headers, body = status_and_json(answer)
        assert (code, body) == (401, {"code": "unauthorized", "message": "unauthorized access"})
        assert sent < MAX_BODY - 1
        # HTTP/1.0 without a length: the body cannot be delimited, so it is not silently dropped.
        sent, answer = stream(port, b"POST /write?p=tok HTTP/1.0\r\n\r\ncpu usage_idle=1 1\n",
                              b"", 0)
        assert status_and_json(answer)[0] == 411
        assert temp_bytes(pid) < MAX_BODY
        metrics = server.metrics()
        refused = 'vmstats_http_requests_refused_total{reason="%s"}'
        assert metrics[refused % "too_large"] == 2 and metrics[refused % "not_found"] == 1
        assert metrics[refused % "length_required"] == 1
        assert metrics['vmstats_edge_lines_total{format="influx",outcome="auth"}'] == 1
        # The port still serves after all that.
        assert "vmstats_records_received_total" in server.http("/metrics")


def test_unserved_methods_on_the_apis_are_405_in_json_with_allow(tmp_path):
    with serve(tmp_path, "--write-token", "tok") as server:
        for method, path, allow in (("PUT", "/write", "POST"), ("GET", "/write", "POST"),
                                    ("DELETE", "/api/v2/write", "POST"),
                                    ("POST", "/metrics", "GET, HEAD")):
            sent, answer = stream(server.http_port, b"%s %s HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                                  % (method.encode(), path.encode()), b"", 0)
            code, headers, body = status_and_json(answer)
            assert (code, headers["allow"]) == (405, allow), answer
            assert headers["content-type"] == "application/json" and allow in body["error"]


def test_a_request_line_or_head_past_16k_is_answered_414_or_431_and_counted(tmp_path):
    """Twisted closed a connection whose request line or one header passed 16 KiB without a
    word (a client saw only a reset), and a head past 16 KiB in all got a bare 400, uncounted."""
    head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
    with serve(tmp_path) as server:
        port = server.http_port
        cases = [
            # A long URL (a query string a script built), sent in one piece and then streamed on.
            (b"GET /metrics?" + b"a" * (20 << 10), b"a" * 4096, 414, "request line longer than"),
            (head + b"X-Big: " + b"a" * (20 << 10) + b"\r\n\r\n", b"", 431, "headers longer than"),
            (head + b"".join(b"X-H%d: %s\r\n" % (i, b"a" * 1000) for i in range(20)) + b"\r\n", b"",
             431, "headers longer than"),
        ]
        for request, more, status, said in cases:
            _sent, answer = stream(port, request, more, 1 << 20)
            code, headers, body = status_and_json(answer)
            assert (code, headers["connection"]) == (status, "close"), answer[:200]
            assert said in body["error"] and "16384 bytes" in body["error"], body
        # At the limit it is still a request like any other.
        closing = head + b"Connection: close\r\n"  # the line lengths: 21 + 7 + 17 + 16339 bytes
        fits = closing + b"X-Fits: " + b"a" * (16384 - 21 - 7 - 17 - 8) + b"\r\n\r\n"
        _sent, answer = stream(port, fits, b"", 0)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        metrics = server.metrics()
        refused = 'vmstats_http_requests_refused_total{reason="%s"}'
        assert (metrics[refused % "uri_too_long"], metrics[refused % "headers_too_large"]) == (1, 2)
        assert "vmstats_records_received_total" in server.http("/metrics")


def test_a_request_that_cannot_be_read_is_a_400_in_json_and_counted(tmp_path):
    """Twisted answered these with a bare 400 that no counter saw: an operator could not tell
    a client sending broken requests from one sending none.  Each is now counted, the answer
    says why, and the next well-formed request is served."""
    line = b"cpu,cpu=cpu-total,host=h1 usage_idle=50,usage_iowait=0 1\n"
    write = b"POST /write?db=x HTTP/1.1\r\nHost: x\r\n"
    cases = [
        write + b"Content-Length: abc\r\n\r\n" + line,
        write + b"Content-Length: -5\r\n\r\n" + line,
        write + b"Content-Length: 5\r\nContent-Length: %d\r\n\r\n" % len(line) + line,
        write + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n" + line,
        b"GET /metrics HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"GET /met\x00rics HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n" + b"X: y\r\n" * 600 + b"\r\n",
    ]
    with serve(tmp_path, "--influx-port", "0") as server:
        for request in cases:
            _sent, answer = stream(server.http_port, request, b"", 0)
            code, headers, body = status_and_json(answer)
            assert (code, headers["connection"]) == (400, "close"), (request[:60], answer[:200])
            assert body["error"].startswith("malformed request"), body
        metrics = server.metrics()
        assert metrics['vmstats_http_requests_refused_total{reason="bad_request"}'] == len(cases)
        # None of the write bodies was taken.
        assert not any(key.startswith("vmstats_edge_lines_total") and value
                       for key, value in metrics.items())


def test_a_head_whose_lines_end_in_a_bare_lf_is_a_prompt_400_and_bodies_keep_theirs(tmp_path):
    """``printf 'GET /metrics HTTP/1.1\\nHost: x\\n\\n' | nc`` got no answer until the idle
    timeout: Twisted splits a head at CRLF only and waited for one.  It is refused at once,
    said and counted; an LF inside a body (the write API's lines) is the body's, and the
    request after it on the same connection is served."""
    line = b"cpu,cpu=cpu-total,host=h1 usage_idle=50,usage_iowait=0 1\n"
    with serve(tmp_path, "--http-idle-timeout", "60s") as server:
        for request in (b"GET /metrics HTTP/1.1\nHost: x\n\n", b"GET /metrics HTTP/1.1\r\nHost: x\n"):
            with socket.create_connection((LOOPBACK, server.http_port), timeout=10) as sock:
                sock.sendall(request)  # and nothing more: the connection stays open
                answer = b""
                while not answer.endswith(b"}\n"):
                    data = sock.recv(65536)
                    assert data, answer
                    answer += data
            code, headers, body = status_and_json(answer)
            assert (code, headers["connection"]) == (400, "close"), answer
            assert body["error"] == ("malformed request: the lines of its head end in a bare LF, "
                                     "not CRLF (\\r\\n)"), body
        pipelined = (b"POST /write?db=x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                     b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                     % (2 * len(line), line * 2))
        _sent, answer = stream(server.http_port, pipelined, b"", 0)
        assert answer.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 200 OK" in answer, answer[:300]
        metrics = server.metrics()
        assert metrics['vmstats_http_requests_refused_total{reason="bad_request"}'] == 2


def test_a_write_body_in_an_encoding_the_api_cannot_read_is_a_415_at_its_headers(tmp_path):
    """A body in any Content-Encoding but gzip was read as plain text: a deflate or brotli body
    became a 400 of garbage "lines", or, were it text, was taken as if no encoding had been
    named.  It is refused at its headers, said and counted; ``identity`` is plain text."""
    import time

    line = b"cpu,cpu=cpu-total,host=enc1 usage_idle=50,usage_iowait=0 %d\n" % (
        (int(time.time()) - 120) * 10**9)
    with serve(tmp_path, "--influx-port", "0") as server:
        for encoding, status in ((b"br", 415), (b"deflate", 415), (b"identity", 204)):
            request = (b"POST /write?db=x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                       b"Content-Encoding: %s\r\nContent-Length: %d\r\n\r\n%s"
                       % (encoding, len(line), line))
            _sent, answer = stream(server.http_port, request, b"", 0)
            assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
            if status == 415:
                assert "not supported" in status_and_json(answer)[2]["error"]
        metrics = server.metrics()
        refused = 'vmstats_http_requests_refused_total{reason="unsupported_encoding"}'
        assert metrics[refused] == 2
        assert metrics['vmstats_edge_lines_total{format="influx",outcome="used"}'] == 1


def test_write_bodies_held_at_once_are_bounded_and_a_body_past_the_bound_is_retried(tmp_path):
    """A write body is read whole, unzipped and fed over many reactor turns, so bodies that
    arrive together are held together: 30 connections' 25 MiB bodies held 850 MB, and the
    HTTP port's 256 connections could hold ten times that.  With ``--http-body-memory`` at its
    least, one body is held at a time: the others are answered 503 with Retry-After, take
    nothing, and are taken whole when sent again."""
    import gzip
    import threading
    import time

    stamp = (int(time.time()) - 120) * 10**9
    lines = b"".join(b"cpu,cpu=cpu-total,host=hb%d usage_idle=50,usage_iowait=0 %d\n"
                     % (i % 50, stamp) for i in range(1000))
    plain = lines * (8 * 1024 * 1024 // len(lines))
    body = gzip.compress(plain, 1)
    per_body = plain.count(b"\n")
    request = (b"POST /write?db=x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
               b"Content-Encoding: gzip\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body) + body)
    writers = 4
    with serve(tmp_path, "--influx-port", "0", "--http-body-memory", str(1 << 20),
               "--http-idle-timeout", "120") as server:
        answers: list = []

        def write() -> None:
            answers.append(stream(server.http_port, request, b"", 0)[1])

        threads = [threading.Thread(target=write) for _ in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        codes = [int(answer.split(b" ", 2)[1]) for answer in answers]
        assert len(codes) == writers and set(codes) <= {204, 503}, answers
        busy = [status_and_json(answer) for answer in answers if b" 503 " in answer[:13]]
        assert busy, "every body was held at once: %s" % codes
        for _code, headers, error in busy:
            assert headers["retry-after"] == "1" and "--http-body-memory" in error["error"]
        for _ in busy:  # what a client does with a 503: send it again, here one at a time
            assert stream(server.http_port, request, b"", 0)[1].startswith(b"HTTP/1.1 204 ")
        metrics = server.wait_metrics(lambda m: m['vmstats_edge_lines_total{format="influx",'
                                                  'outcome="used"}'] >= writers * per_body)
        assert metrics['vmstats_edge_lines_total{format="influx",outcome="used"}'] \
            == writers * per_body
        assert metrics['vmstats_http_requests_refused_total{reason="busy"}'] == len(busy)
        assert metrics["vmstats_http_body_bytes_held"] == 0


def test_every_request_refused_whole_is_counted_by_its_reason(tmp_path):
    """A write refused for its query or its gzip, one that unzips past the limit, a path not
    served and a method a path does not serve were answered but counted nowhere: a Telegraf
    sending the wrong precision or a broken gzip showed nothing in /metrics."""
    import gzip

    bomb = gzip.compress(b"cpu,host=a usage_idle=1\n" * (MAX_BODY // 24 + 1))
    requests = [  # (request, answer's status, reason counted)
        (b"POST /write?precision=xx HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 400, "bad_query"),
        (b"POST /api/v2/write HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 400, "bad_query"),
        (b"POST /write HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc", 400,
         "bad_gzip"),
        (b"POST /write HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
         % (len(bomb), bomb), 413, "too_large"),
        (b"GET /nonexistent HTTP/1.1\r\n\r\n", 404, "not_found"),
        (b"DELETE /metrics HTTP/1.1\r\n\r\n", 405, "method_not_allowed"),
    ]
    with serve(tmp_path) as server:
        for request, status, _reason in requests:
            _sent, answer = stream(server.http_port, request.replace(
                b"\r\n", b"\r\nHost: x\r\nConnection: close\r\n", 1), b"", 0)
            code, headers, _body = status_and_json(answer)  # JSON, the 404 too
            assert code == status and headers["content-type"].startswith("application/json"), answer
        metrics = server.metrics()
        counted = {name[len('vmstats_http_requests_refused_total{reason="'):-2]: value
                   for name, value in metrics.items()
                   if name.startswith("vmstats_http_requests_refused_total")}
        expected: dict = {}
        for _request, _status, reason in requests:
            expected[reason] = expected.get(reason, 0) + 1
        assert counted == expected
        assert not any(k.startswith("vmstats_edge_lines_total") and v for k, v in metrics.items())


def test_a_post_labelled_as_a_form_is_read_by_its_page_not_parsed_as_one(tmp_path):
    """Twisted parsed each POST body labelled multipart/form-data or x-www-form-urlencoded into
    the request's arguments, on the reactor, before any page saw it: 90 times the CPU of the
    same bytes unlabelled on the open /query (a 20 MB write held the reactor 8 s), a 400 for a
    body that is no form whatever the page, and a urlencoded body's text replaced the URL's
    arguments (curl --data-binary labels a write so)."""
    import time

    line = b"cpu,cpu=cpu-total,host=form1 usage_idle=50,usage_iowait=0 %d\n" % (
        int(time.time()) - 120)
    with serve(tmp_path, "--influx-port", "0") as server:
        for kind, body in ((b"multipart/form-data; boundary=x", line),
                           (b"multipart/form-data", line),
                           (b"application/x-www-form-urlencoded", b"# cron&precision=h\n" + line)):
            request = (b"POST /write?db=x&precision=s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                       b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (kind, len(body), body))
            _sent, answer = stream(server.http_port, request, b"", 0)
            assert answer.startswith(b"HTTP/1.1 204 "), (kind, answer[:300])
        request = (b"POST /query HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: "
                   b"multipart/form-data\r\nContent-Length: 3\r\n\r\nq=x")
        _sent, answer = stream(server.http_port, request, b"", 0)
        assert answer.startswith(b"HTTP/1.1 200 ") and b"statement_id" in answer, answer[:300]
        metrics = server.metrics()
        assert metrics.get('vmstats_http_requests_refused_total{reason="bad_request"}', 0) == 0
        assert metrics['vmstats_edge_lines_total{format="influx",outcome="used"}'] == 3


def test_a_body_of_a_method_that_carries_none_is_bounded_by_64k_whatever_its_path(tmp_path):
    """/admission takes a manifest of up to 1 MiB by POST, and a GET's body (which means
    nothing: the page never reads it) was held to the same 1 MiB and stored before the page
    answered 401.  A GET, HEAD or DELETE body is bounded by 64 KiB: past it, declared, 413 at
    the headers with none of it read; streamed, 413 once its bytes pass it.  A small one is
    still answered by the page, and a POST keeps its path's limit."""
    inventory = tmp_path / "hosts.toml"
    inventory.write_text('[[host]]\nname = "h"\nvcpus = 8\nmem_gb = 32\n')
    with serve(tmp_path, "--inventory", str(inventory)) as server:
        port = server.http_port
        for method in (b"GET", b"HEAD", b"GET"):  # the head alone: answered before any body
            answer = stream(port, b"%s /admission HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: %d\r\n\r\n" % (method, 1 << 20), b"", 0)[1]
            assert answer.startswith(b"HTTP/1.1 413 "), (method, answer)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert json.loads(body)["error"] == "body larger than 65536 bytes"
        chunk = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK)
        answer = stream(port, b"GET /admission HTTP/1.1\r\nHost: x\r\n"  # 128 KiB, unended
                        b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 2, b"", 0)[1]
        assert status_and_json(answer)[0] == 413, answer
        small = b"x" * 1024
        answer = stream(port, b"GET /admission HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(small), small), b"", 0)[1]
        assert status_and_json(answer)[0] == 401  # the page's own answer: no token
        manifest = b" " * (512 << 10) + b"{"
        answer = stream(port, b"POST /admission HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                        b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s"
                        % (STATUS_TOKEN.encode(), len(manifest), manifest), b"", 0)[1]
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]  # read, found not JSON: no 413
        metrics = server.metrics()
        assert metrics['vmstats_http_requests_refused_total{reason="too_large"}'] == 4
        assert b"connection: close" in head.lower()
