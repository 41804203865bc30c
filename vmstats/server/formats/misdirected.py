"""HTTP clients pointed at a line port: recognised by their request line, answered, never read.

A Telegraf ``outputs.influxdb`` (or any HTTP client) given the line-protocol
or Graphite TCP port by mistake sends ``POST /api/v2/write HTTP/1.1`` and its
headers, which the decoders would refuse line by line, quoting each: its
``Authorization: Token ...`` header landed in the server's log.  When a line of
the connection is an HTTP request line the connection is counted once, logged with
the method and path only (no query: InfluxDB 1.x clients put ``p=<token>``
there), answered with a 400 the client shows its operator, and closed unread.
The native TCP port (listeners.py) answers and closes such a connection the
same way, counting it among its rejects
(``vmstats_rejected_total{reason="http_request"}``).  On every TCP port a
request line after records or lines (``request_line_in``) ends the stream there
too: what came before it is kept (on the native port the connection is answered
once its syncs are), nothing after it is read.

A datagram on any UDP port is looked at the same way, each of its lines
(``cut``): what comes before a request line is read as ever, the request (its
line, headers and body, to the datagram's end) is counted and logged alike and
dropped unanswered (a datagram's source may be forged).  Before, only a
datagram's first line was looked at, and a request after records had its
headers refused line by line, quoted in the log and journaled.
"""

import re

from vmstats.protocol import SIG_PREFIX

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


def request_line_in(block: bytes) -> tuple[int, str] | None:
    """Where the first HTTP request line among the lines of ``block`` starts, and its
    ``METHOD /path``; None if none is one.  The one test of each block of a TCP stream's
    whole lines, the native port's (listeners.py) and the line ports' (edge.py), and of each
    datagram (``cut``), wherever in the stream or datagram the request comes.  A block
    without ``/`` or without ``H`` is let by at a memchr or two: no valid native record holds
    ``/``, nor do most Graphite lines, and Telegraf's lines, whose ``path=/`` tags stop the
    first at once, are lowercase but for tag values.
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


def cut(data: bytes) -> tuple[bytes, str | None]:
    """The datagram ``data`` up to its first HTTP request line, and that request's ``METHOD
    /path`` (``data`` whole and None when it holds none).  The test of each datagram on a UDP
    port, the native one's (``among``) and the line ports' (edge.py): a request may follow
    records in one datagram (a client that joins them, a request written after records to
    the wrong port), and nothing of it -- its headers carry tokens -- is read as lines."""
    found = request_line_in(data)
    if found is None:
        return data, None
    return data[:found[0]], found[1]


def among(batch: list[bytes]) -> tuple[list[bytes], list[str]]:
    """The datagrams of ``batch``, each up to its HTTP request if it holds one (``cut``; one
    that starts with a request is left out), and ``METHOD /path`` of each request.  A test per
    datagram: the native UDP port calls it only for a batch a request may be in (listeners.py,
    parseworker.py).  A signed frame is left whole for its checks: its payload is cut once
    they pass (``signing.check_frames``, listeners.py)."""
    kept: list[bytes] = []
    found: list[str] = []
    for data in batch:
        if data[:7] == SIG_PREFIX:
            kept.append(data)
            continue
        data, what = cut(data)
        if data:
            kept.append(data)
        if what is not None:
            found.append(what)
    return kept, found


def words(fmt: str, what: str, transport: str = "TCP") -> str:
    """The log line's words (after the format's name) for an HTTP client on its port (over
    UDP: a request sent in a datagram, dropped; never answered, as its source may be forged;
    in a signed frame's payload, over either: dropped, the frame's records kept)."""
    ended = "closed unread" if transport == "TCP" else "dropped unread"
    return ("an HTTP client (%s) wrote to the %s line port (%s), %s: %s"
            % (what, fmt, transport, ended,
               _INSTEAD.get(fmt, "write to the HTTP port (--http-port)")))


def answer(fmt: str) -> bytes:
    """The 400 the client is sent, so it reports an error instead of a lost connection."""
    body = ("400 Bad Request: this is vmstats' %s line port, not HTTP; %s\n"
            % (fmt, _INSTEAD.get(fmt, "write to the HTTP port (--http-port)"))).encode("ascii")
    return (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
