"""HTTP clients pointed at a line port: recognised by their request line, answered, never read.

A Telegraf ``outputs.influxdb`` (or any HTTP client) given the line-protocol
or Graphite TCP port by mistake sends ``POST /api/v2/write HTTP/1.1`` and its
headers, which the decoders would refuse line by line, quoting each: its
``Authorization: Token ...`` header landed in the server's log.  When a line of
the connection is an HTTP request line the connection is counted once, logged with
the method and path only (no query: InfluxDB 1.x clients put ``p=<token>``
there), answered with a 400 the client shows its operator, and closed unread.
A datagram on a line port's UDP twin that starts with a request line is counted
and logged alike, and dropped unanswered.  The native TCP port (listeners.py)
answers and closes such a connection the same way, counting it among its
rejects (``vmstats_rejected_total{reason="http_request"}``), and its UDP port
drops such a datagram (``among``) before its lines are read, counted alike.
On every TCP port a request line after records or lines (``request_line_in``)
ends the stream there too: what came before it is kept (on the native port the
connection is answered once its syncs are), nothing after it is read.
"""

import re

#: ``METHOD SP target SP HTTP/x.y`` (RFC 9112's request line), CR optional.  No line of
#: either format matches: a line-protocol field is ``key=value`` and a Graphite value is a
#: number, never ``HTTP/1.1``.
_REQUEST_LINE = re.compile(rb"([A-Z]{3,10}) (\S{1,8192}) HTTP/\d\.\d\r?").fullmatch
#: The start of a path that is quoted: origin-form only (a proxy's absolute URL may hold a
#: user and password), up to its query.
_PATH = re.compile(rb"/[!-~]{0,59}?(?=[?#]|\Z)|/[!-~]{60}")

#: Where each format's HTTP clients should write instead.
_INSTEAD = {
    "influx": "the InfluxDB write API is the HTTP port's /write and /api/v2/write (--http-port)",
    "graphite": "this port takes Graphite plaintext lines; the HTTP port (--http-port) takes "
                "the InfluxDB write API at /write and /api/v2/write",
    "native": "this port takes the vmstats agent's records; the HTTP port (--http-port) serves "
              "/metrics and /status, and the InfluxDB write API at /write and /api/v2/write",
}


def request(line: bytes) -> str | None:
    """``METHOD /path`` (the path may be left out) if ``line`` is an HTTP request line."""
    match = _REQUEST_LINE(line)
    if match is None:
        return None
    method, target = match.groups()
    path = _PATH.match(target)
    return method.decode("ascii") + (" " + path.group(0).decode("ascii") if path else "")


def request_in(data: bytes) -> str | None:
    """``METHOD /path`` if the datagram ``data`` is an HTTP request (its first line a request
    line); the test of each datagram on a UDP port, the native one's (``among``) and the line
    ports' (edge.py).  Most datagrams are let by at their first byte."""
    if not data[:1].isupper():  # a request line starts with its method, in capitals
        return None
    end = data.find(b"\n")
    return request(data if end < 0 else data[:end])


def request_line_in(block: bytes) -> tuple[int, str] | None:
    """Where the first HTTP request line among the whole lines of ``block`` starts, and its
    ``METHOD /path``; None if none is one.  The one test of each block of a TCP stream's
    lines, the native port's (listeners.py) and the line ports' (edge.py), wherever in the
    stream the request comes.  A block without ``/`` or without ``H`` is let by at a memchr
    or two: no valid native record holds ``/``, nor do most Graphite lines, and Telegraf's
    lines, whose ``path=/`` tags stop the first at once, are lowercase but for tag values.
    The search for ``" HTTP/"`` (~25 us a 64 KiB block, as long as decoding Telegraf's lines
    in C) comes only after both, and a line is looked at only where that is, at most once."""
    if b"/" not in block or b"H" not in block:
        return None
    at = block.find(b" HTTP/")
    while at >= 0:
        start = block.rfind(b"\n", 0, at) + 1
        end = block.find(b"\n", at)
        what = request(block[start:] if end < 0 else block[start:end])
        if what is not None:
            return start, what
        if end < 0:
            return None
        at = block.find(b" HTTP/", end)
    return None


def among(batch: list[bytes]) -> tuple[list[bytes], list[str]]:
    """The datagrams of ``batch`` that are not HTTP requests, and ``METHOD /path`` of each that
    is (``request_in``).  A test per datagram: the native UDP port calls it only
    for a batch a request may be in (listeners.py, parseworker.py)."""
    kept: list[bytes] = []
    found: list[str] = []
    for data in batch:
        what = request_in(data)
        if what is None:
            kept.append(data)
        else:
            found.append(what)
    return kept, found


def words(fmt: str, what: str, transport: str = "TCP") -> str:
    """The log line's words (after the format's name) for an HTTP client on its port (over
    UDP: a request sent as a datagram, dropped; never answered, as its source may be forged)."""
    ended = "dropped unread" if transport == "UDP" else "closed unread"
    return ("an HTTP client (%s) wrote to the %s line port (%s), %s: %s"
            % (what, fmt, transport, ended,
               _INSTEAD.get(fmt, "write to the HTTP port (--http-port)")))


def answer(fmt: str) -> bytes:
    """The 400 the client is sent, so it reports an error instead of a lost connection."""
    body = ("400 Bad Request: this is vmstats' %s line port, not HTTP; %s\n"
            % (fmt, _INSTEAD.get(fmt, "write to the HTTP port (--http-port)"))).encode("ascii")
    return (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
