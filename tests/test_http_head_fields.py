"""Header fields the HTTP port reads, as a careful server reads them (RFC 9110, RFC 9112).

Whitespace around a field's value (SP or HTAB, either side) is not part of it; a field that is
not a list (``Authorization``) given twice is refused rather than read last-wins, since a proxy
in front may have judged the first; and a body framed two ways (``Content-Length`` beside
``Transfer-Encoding``) is refused before any of it is read, so what follows it is never served
as a request of its own; a list (``Content-Encoding``) is read whole, its lines together.
Each on the real server, over a raw socket.
"""

import gzip
import socket

from serverproc import LOOPBACK, STATUS_TOKEN, serve
from test_http_bodies import read_answer, status_and_json
from test_http_bodies_in_flight import REFUSED, USED, lines

TOKEN = b"s3cret-write"
#: A credential that must never reach the server's log or answers.
WRONG = b"w4ong-t0ken-42"
V2 = b"POST /api/v2/write?org=o&bucket=b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"


def ask(port: int, request: bytes) -> bytes:
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        sock.sendall(request)
        return read_answer(sock, 3)


def chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


def test_whitespace_around_a_value_is_not_part_of_it_spaces_or_tabs(tmp_path):
    """``Transfer-Encoding:<TAB>chunked`` and the like, as RFC 9110 (5.5: OWS is SP or HTAB)
    allows, are read as their values: written, 204."""
    bodies = [lines(3, "ows%d" % i) for i in range(4)]
    auth = b"Authorization:\tToken %s\t\r\n" % TOKEN
    cases = [
        V2 + auth + b"Transfer-Encoding:\tchunked\t\r\n\r\n" + chunked(bodies[0]),
        V2 + auth + b"Transfer-Encoding: \t chunked \r\n\r\n" + chunked(bodies[1]),
        V2 + auth + b"Content-Length:\t%d\t\r\n\r\n" % len(bodies[2]) + bodies[2],
        V2 + auth + b"Content-Encoding:\tgzip \r\nContent-Length: %d\r\n\r\n"
        % len(gzip.compress(bodies[3])) + gzip.compress(bodies[3]),
    ]
    with serve(tmp_path, "--influx-port", "0", "--write-token", TOKEN.decode()) as server:
        for request in cases:
            answer = ask(server.http_port, request)
            assert answer.startswith(b"HTTP/1.1 204 "), (request[:160], answer)
        # The status token after a tab, too.
        status = ask(server.http_port, b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Authorization:\tBearer %s\t\r\n\r\n" % STATUS_TOKEN.encode())
        assert b'"data_dir"' in status, status[:300]
        server.wait_metrics(lambda m: m.get(USED, 0) == 12, timeout=3)


def test_authorization_given_twice_is_refused_and_counted_never_read_last_wins(tmp_path):
    """Before, the last ``Authorization`` won: a wrong token then the right one wrote (204), where a
    proxy in front checking the first would have seen another.  Now 400 at the headers, counted
    as ``duplicate_header``, nothing of the body taken, and neither value logged or quoted; so is
    a second ``Host`` (RFC 9112, 3.2)."""
    body = lines(2, "dup")
    cl = b"Content-Length: %d\r\n\r\n" % len(body)
    cases = [
        V2 + b"Authorization: Token %s\r\nAuthorization: Token %s\r\n" % (WRONG, TOKEN) + cl + body,
        V2 + b"Authorization: Token %s\r\nAuthorization: Token %s\r\n" % (TOKEN, TOKEN) + cl + body,
        b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer %s\r\n"
        b"authorization: Bearer %s\r\n\r\n" % (WRONG, STATUS_TOKEN.encode()),
    ]
    host_twice = b"GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n"
    with serve(tmp_path, "--influx-port", "0", "--write-token", TOKEN.decode()) as server:
        for request in cases:
            code, headers, error = status_and_json(ask(server.http_port, request))
            assert (code, headers["connection"]) == (400, "close"), (request[:200], error)
            assert error == {"error": "malformed request: Authorization given more than once"}
        code, _headers, error = status_and_json(ask(server.http_port, host_twice))
        assert (code, error["error"]) == (400, "malformed request: Host given more than once")
        # One well-formed write still lands, and the refused ones did not.
        answer = ask(server.http_port, V2 + b"Authorization: Token %s\r\n" % TOKEN + cl + body)
        assert answer.startswith(b"HTTP/1.1 204 "), answer
        metrics = server.wait_metrics(lambda m: m.get(USED, 0) >= 2, timeout=3)
        assert (metrics[REFUSED % "duplicate_header"], metrics[USED]) == (4, 2)
    assert WRONG.decode() not in server.output, server.output


def test_a_body_framed_two_ways_is_refused_and_nothing_after_it_is_served(tmp_path):
    """``Content-Length`` beside ``Transfer-Encoding`` (either order), or two Content-Lengths: one
    reader of the stream would end the body where another starts the next request (request
    smuggling).  400 at the headers (``bad_request``), the connection closed, and the request
    hidden in the body never answered."""
    smuggled = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b"0\r\n\r\n" + smuggled
    heads = [
        b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
        b"Content-Length: 0\r\nContent-Length: %d\r\n" % len(body),
    ]
    write = b"POST /write?db=x HTTP/1.1\r\nHost: x\r\n"
    with serve(tmp_path, "--influx-port", "0") as server:
        for head in heads:
            answer = ask(server.http_port, write + head + b"\r\n" + body)
            assert answer.count(b"HTTP/1.1 ") == 1 and answer.startswith(b"HTTP/1.1 400 "), answer
            code, headers, _error = status_and_json(answer)
            assert headers["connection"] == "close"
        metrics = server.metrics()
        assert metrics[REFUSED % "bad_request"] == len(heads)


def test_content_encoding_is_read_as_a_list_not_last_wins(tmp_path):
    """``Content-Encoding: gzip`` then ``Content-Encoding: identity`` on two lines named a gzipped
    body read as plain text (400, garbage lines), and ``br`` then ``gzip`` a brotli body read as
    gzip.  Its lines and their members are one list (RFC 9110, 8.4): ``identity`` and empty
    members are dropped, one ``gzip`` is read, anything else is 415 at the headers."""
    plain = [lines(3, "ce%d" % i) for i in range(3)]
    auth = b"Authorization: Token %s\r\n" % TOKEN

    def write(codings: bytes, body: bytes) -> bytes:
        return V2 + auth + codings + b"Content-Length: %d\r\n\r\n" % len(body) + body

    taken = [
        write(b"Content-Encoding: gzip\r\nContent-Encoding: identity\r\n", gzip.compress(plain[0])),
        write(b"Content-Encoding: identity\r\ncontent-encoding: GZIP\r\n", gzip.compress(plain[1])),
        write(b"Content-Encoding: identity, , gzip\r\n", gzip.compress(plain[2])),
    ]
    refused = [
        write(b"Content-Encoding: br\r\nContent-Encoding: gzip\r\n", gzip.compress(plain[0])),
        write(b"Content-Encoding: gzip\r\nContent-Encoding: gzip\r\n",
              gzip.compress(gzip.compress(plain[0]))),
        write(b"Content-Encoding: gzip, deflate\r\n", gzip.compress(plain[0])),
    ]
    with serve(tmp_path, "--influx-port", "0", "--write-token", TOKEN.decode()) as server:
        for request in taken:
            answer = ask(server.http_port, request)
            assert answer.startswith(b"HTTP/1.1 204 "), (request[:200], answer)
        for request in refused:
            code, headers, error = status_and_json(ask(server.http_port, request))
            assert (code, headers["connection"]) == (415, "close"), (request[:200], error)
            assert "is not supported: send gzip (once) or none" in error["message"], error
        metrics = server.wait_metrics(lambda m: m.get(USED, 0) >= 9, timeout=3)
        assert (metrics[USED], metrics[REFUSED % "unsupported_encoding"]) == (9, 3)
