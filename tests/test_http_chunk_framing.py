"""A chunked write body's framing, read by the server's own decoder (vmstats/server/chunked.py).

Twisted's decoder answered every bad framing with the same 400 that did not say what was wrong,
waited for a CRLF that a size line in bare LF never sends, took trailers up to 64 KiB, and the
body limit counted a chunked body's data alone, so chunk extensions carried ~17 times the limit
past it.  Each refusal here is on the real server, answered in JSON, counted, and the port serves
on; a body with extensions and trailers within bounds is taken whole.
"""

import socket
import time

from serverproc import LOOPBACK, serve
from test_http_bodies import read_answer, status_and_json
from test_http_bodies_in_flight import REFUSED, USED, lines, write_head

from vmstats.server.formats.httpwrite import MAX_BODY


def ask(port: int, request: bytes, timeout: float = 3) -> tuple[float, bytes]:
    """Seconds to the server's answer to ``request`` (to its close), and the answer."""
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(request)
        answer = read_answer(sock, timeout)
        return time.monotonic() - started, answer


def test_bad_framing_is_a_prompt_400_that_says_what_is_wrong_and_is_counted(tmp_path):
    line = b"cpu,cpu=cpu-total,host=h1 usage_idle=50,usage_iowait=0 1\n"
    head = write_head(None)
    cases = [
        # A size that int(x, 16) would take, and a proxy would not.
        (head + b"0x%x\r\n%s\r\n0\r\n\r\n" % (len(line), line), "chunk size '0x"),
        (head + b"+%x\r\n%s\r\n0\r\n\r\n" % (len(line), line), "chunk size '+"),
        (head + b"%x_0\r\n%s\r\n0\r\n\r\n" % (len(line), line), "not hexadecimal"),
        # A size line (extensions included) past 1 KiB.
        (head + b"%x;%s\r\n%s\r\n0\r\n\r\n" % (len(line), b"e" * 1100, line),
         "size line is longer than 1024 bytes"),
        # Data not followed by CRLF (one byte more than its size says).
        (head + b"%x\r\n%sX\r\n0\r\n\r\n" % (len(line) - 1, line), "not followed by CRLF"),
        # A size line in a bare LF: Twisted waited for a CRLF until the body timeout.
        (head + b"%x\n%s\n0\n\n" % (len(line), line), "ends in a bare LF or CR"),
        # A trailer section past 16 KiB (Twisted took up to 64 KiB of it).
        (head + b"%x\r\n%s\r\n0\r\nX-Pad: %s\r\n\r\n" % (len(line), line, b"p" * (20 << 10)),
         "trailer section is longer than 16384 bytes"),
    ]
    with serve(tmp_path, "--influx-port", "0") as server:
        for request, said in cases:
            took, answer = ask(server.http_port, request)
            code, headers, error = status_and_json(answer)
            assert (code, headers["connection"]) == (400, "close"), (request[-80:], answer)
            assert error["error"].startswith("malformed request: chunked body: "), error
            assert said in error["error"] and took < 2, (said, error, took)
        # Extensions and trailers within bounds are taken, and the request after them served.
        body = lines(50, "ex")
        framed = b"".join(b"%x;name=\"quoted value\";flag\r\n%s\r\n" % (len(piece), piece)
                          for piece in body.splitlines(keepends=True))
        with socket.create_connection((LOOPBACK, server.http_port), timeout=5) as sock:
            sock.sendall(write_head(None).replace(b"Connection: close\r\n", b"")
                         + framed + b"0\r\nX-Checksum: 1234\r\n\r\n"
                         + b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = read_answer(sock, 3)
        assert answer.startswith(b"HTTP/1.1 204 ") and b"HTTP/1.1 200 " in answer, answer[:300]
        metrics = server.wait_metrics(lambda m: m.get(USED, 0) >= 50, timeout=3)
        assert (metrics[REFUSED % "bad_request"], metrics[USED]) == (len(cases), 50)


def test_a_chunked_body_is_bounded_on_the_wire_framing_included(tmp_path):
    """A chunk size past the limit is 413 at once, before its data is sent; and the limit
    counts the framing too: 64-byte chunks with 1,000 bytes of extensions each carried ~17
    times the limit's bytes through the decoder while the data stayed under it."""
    line = b"cpu,cpu=cpu-total,host=h1 usage_idle=50,usage_iowait=0 1\n"
    with serve(tmp_path, "--influx-port", "0") as server:
        took, answer = ask(server.http_port, write_head(None) + b"%x\r\n%s" % (MAX_BODY + 1, line))
        code, headers, error = status_and_json(answer)
        assert (code, error["error"]) == (413, "body larger than %d bytes" % MAX_BODY), answer
        assert took < 2 and headers["connection"] == "close"
        # ~2.7 MiB of lines, two a chunk, framed with 1,000-byte extensions: 26 MiB on the wire.
        chunk = b"%x;%s\r\n%s\r\n" % (2 * len(line), b"e" * 1000, 2 * line)
        count = MAX_BODY // len(chunk) + 1000
        with socket.create_connection((LOOPBACK, server.http_port), timeout=10) as sock:
            sock.sendall(write_head(None))
            try:
                sock.sendall(chunk * count + b"0\r\n\r\n")
            except OSError:  # refused, and closed before the rest was sent
                pass
            code, _headers, error = status_and_json(read_answer(sock, 5))
        assert (code, error["error"]) == (413, "body larger than %d bytes" % MAX_BODY), error
        metrics = server.metrics()
        assert (metrics[REFUSED % "too_large"], metrics.get(USED, 0)) == (2, 0)


def test_spaces_or_tabs_before_a_chunk_extension_are_taken_and_nowhere_else(tmp_path):
    """RFC 9112 (7.1.1) lets BWS stand before an extension's ``;`` (``1a ;x=y``, ``1a<TAB>;x``);
    they were refused as a size that is not hexadecimal digits, 400.  Taken now; a space with no
    extension after it, one before the size, and a size line of spaces past 1 KiB still are not."""
    line = b"cpu,cpu=cpu-total,host=h1 usage_idle=50,usage_iowait=0 1\n"
    head = write_head(None)
    refused = [
        (head + b"%x \r\n%s\r\n0\r\n\r\n" % (len(line), line), "not hexadecimal"),
        (head + b" %x;x\r\n%s\r\n0\r\n\r\n" % (len(line), line), "not hexadecimal"),
        (head + b"%x%s;x\r\n%s\r\n0\r\n\r\n" % (len(line), b" " * 1100, line),
         "size line is longer than 1024 bytes"),
        (head + b"%x ;x\n%s\r\n0\r\n\r\n" % (len(line), line), "holds a control character"),
    ]
    body = lines(40, "bws")
    spaced = (b" ;x=y", b"\t;x", b" \t ; name = \"v\" ; flag", b"  ;x")
    framed = b"".join(b"%x%s\r\n%s\r\n" % (len(piece), spaced[i % len(spaced)], piece)
                      for i, piece in enumerate(body.splitlines(keepends=True)))
    with serve(tmp_path, "--influx-port", "0") as server:
        _took, answer = ask(server.http_port, head + framed + b"0 ;last\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 204 "), answer[:300]
        for request, said in refused:
            _took, answer = ask(server.http_port, request)
            code, _headers, error = status_and_json(answer)
            assert code == 400 and said in error["error"], (request[-90:], error)
        metrics = server.wait_metrics(lambda m: m.get(USED, 0) >= 40, timeout=3)
        assert (metrics[USED], metrics[REFUSED % "bad_request"]) == (40, len(refused))
