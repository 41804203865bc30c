"""The HTTP endpoint: /metrics for Prometheus, /status for people and scripts.

Routing is by exact path (``Router``): ``/metrics/x``, ``/metrics/`` and ``/status/../metrics``
are 404, not a page that happens to answer.  A later route (another input format's write API)
is one ``add`` call.  Responses carry no ``Server`` header, connections go through a
``ConnectionTable`` (caps, idle timeout, eviction, --http-allow), and /status gives the data
directory and per-VM times only to a caller with the status token: the counts are on /metrics.

Each route has a largest body (``max_body``, declared by its page; at most ``DEFAULT_MAX_BODY``
for a method whose body means nothing, ``BODILESS_METHODS``); the channel refuses a body
past it -- declared (413 at the headers) or streamed (413 once the bytes pass it) -- before any
of it is stored, a body to an unknown path (404) or by a method its path does not serve (405)
before reading it, an HTTP/1.0 body without a Content-Length (411) that it cannot delimit, and
what a page's ``refuse_early`` refuses at the headers (a write without its token: 401).  A
request line past 16 KiB is 414, a head (request line and headers) past it 431, where Twisted
closed without a word or said a bare 400, and a request Twisted cannot read (a bad
Content-Length or header, or a head in bare-LF lines, which it waited on until the idle
timeout) 400 in JSON, as is a Transfer-Encoding other than chunked
(Twisted read ``identity`` as no body at all).  A header that is not a list given twice
(``Authorization``, ``Host``: ``SINGLE_HEADERS``) is 400 (``duplicate_header``), where Twisted's
``getHeader`` read the last one and a proxy in front may have judged the first; two
Content-Lengths, or one beside a Transfer-Encoding, were already Twisted's 400.  A chunked body
is decoded here (chunked.py), not by Twisted's private decoder: bad framing is 400 saying what
is wrong with it, chunks carrying too little data are 400 (``chunk_overhead``), and its limit
counts its bytes on the wire, framing included, so chunk extensions cannot carry 17 times the
limit past it.  Each refusal is counted on /metrics.

A page may hold a body's bytes against its budget from the headers on (``admit_body``: the write
API's --http-body-memory), so a body that does not fit is refused before it is stored, and
every body must arrive whole within ``body_timeout`` (--http-body-timeout) of its headers:
Twisted's only timeout is an idle one, which a sender of a byte a second never meets.  A slower
body is answered 408 (counted as ``body_timeout``) and its connection closed.  A request's head
(request line and headers, up to 16 KiB) must likewise be whole within ``head_timeout``
(--http-head-timeout) of its first byte, or 408 (``head_timeout``): a head trickled a byte a
second held its connection for hours.  Both are one reactor timer per connection, started only
while a head or body is under way, so a keep-alive connection idle between requests is left to
the idle timeout.

A request that changes something (any method but GET and HEAD) carrying ``Origin`` is refused
(403) at its headers: only a browser sends that header, and nothing here is meant for one, so a
web page a victim opens cannot use the victim's network position to write records or hold room
(a ``text/plain`` POST needs no CORS preflight, and the write API takes one without a token).
"""

import hmac
import io
import json
import logging
from collections.abc import Callable, Iterable

from twisted.application import service
from twisted.web import http, resource, server

from vmstats.server.chunked import ChunkedBody
from vmstats.server.connections import ConnectionTable, listen_tcp, listening
from vmstats.server.metrics import RateLimitedLog
from vmstats.stamps import moment

#: A route's handler: the request in, the body out (bytes, or server.NOT_DONE_YET).
Handler = Callable[[server.Request], bytes | int]

log = logging.getLogger(__name__)

#: Largest body of a route whose page declares none (a GET, /query's few words).
DEFAULT_MAX_BODY = 64 << 10
#: Bytes read and dropped after a refusal, so the client can read the answer before the close.
LINGER_BYTES = 4 << 20
#: Methods a browser's page may send across origins unrefused: they change nothing here.
SAFE_METHODS = (b"GET", b"HEAD")
#: Methods whose body means nothing (RFC 9110, 9.3: a GET's, HEAD's or DELETE's content has no
#: defined semantics; no page here reads one).  Their body is bounded by DEFAULT_MAX_BODY
#: whatever their path takes by POST: a GET to /admission was stored up to its manifests'
#: 1 MiB before the page answered 401 without reading it.
BODILESS_METHODS = (b"GET", b"HEAD", b"DELETE")
#: Headers a request may carry once (RFC 9110, 5.3: not lists): two are refused, 400, not read
#: last-wins as Twisted's ``getHeader`` reads them (Host: RFC 9112, 3.2 says so).  Two
#: Content-Lengths, or one beside a Transfer-Encoding, are Twisted's 400 ``bad_request`` before.
SINGLE_HEADERS = (b"authorization", b"host")
#: RFC 6585's answer to a header block past the limit; Twisted's table of reasons lacks it.
HEADERS_TOO_LARGE = 431
_REASONS = {**http.RESPONSES, http.REQUEST_URI_TOO_LONG: b"URI Too Long",
            HEADERS_TOO_LARGE: b"Request Header Fields Too Large"}


def secret_matches(given: bytes, secret: bytes) -> bool:
    """Is ``given`` the secret?  In constant time, so that response times tell nothing of how
    many leading bytes of a guess were right."""
    return hmac.compare_digest(given, secret)


class Router(resource.Resource):
    """Exact-path routes: ``{(method, path): handler}``; anything else is 404 (or 405)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.routes: dict[bytes, dict[bytes, Handler]] = {}
        self.max_bodies: dict[bytes, int] = {}
        #: path -> a page's check at the headers: ``(request, method, query args)`` to None (go
        #: on) or ``(status, JSON body)`` to answer before the body is read (a missing token).
        self.gates: dict[bytes, Callable] = {}
        #: path -> a page's admission of body bytes before they are stored: ``(request, size)``
        #: to None (held) or ``(status, JSON body)`` refusing the body (past a memory budget).
        self.admits: dict[bytes, Callable] = {}
        #: path -> why a page this server could serve is not served: its 404's ``error`` line
        #: (a client asking /alerts of a server without rules is told so, not "not found").
        self.absent: dict[bytes, str] = {}

    def add(self, path: bytes, handler: Handler, methods: Iterable[bytes] = (b"GET",),
            max_body: int = DEFAULT_MAX_BODY) -> None:
        """Serve ``path`` (exactly: no prefix, no trailing slash, no ``..``) with ``handler``."""
        for method in methods:
            self.routes.setdefault(path, {})[method] = handler
            if method == b"GET":
                self.routes[path].setdefault(b"HEAD", handler)
        self.max_bodies[path] = max_body

    def add_page(self, path: bytes, page: resource.Resource) -> None:
        """Serve ``path`` with a page's ``render_<METHOD>`` methods; its ``max_body`` if it has one.

        Other methods get the router's 405 (JSON, with Allow), not Twisted's HTML page.
        """
        methods = [name[len("render_"):].encode("ascii") for name in dir(page)
                   if name.startswith("render_") and name != "render_HEAD"]
        if b"GET" in methods:
            methods.append(b"HEAD")  # Resource.render_HEAD is render_GET
        self.add(path, page.render, methods, getattr(page, "max_body", DEFAULT_MAX_BODY))
        gate = getattr(page, "refuse_early", None)
        if gate is not None:
            self.gates[path] = gate
        admit = getattr(page, "admit_body", None)
        if admit is not None:
            self.admits[path] = admit

    def max_body(self, path: bytes) -> int | None:
        """The largest body a request to ``path`` may send; None for a path not served."""
        return self.max_bodies.get(path)

    def render(self, request: server.Request) -> bytes | int:
        request.setHeader(b"cache-control", b"no-store")
        methods = self.routes.get(request.path)
        if methods is None:  # a scanner's probes, a client's wrong URL: counted, as every refusal
            count_refused(request, "not_found")
            request.setResponseCode(http.NOT_FOUND)
            request.setHeader(b"content-type", b"application/json")
            return _json_error(self.absent.get(request.path, "not found"))
        handler = methods.get(request.method)
        if handler is None:
            count_refused(request, "method_not_allowed")
            allowed, message = self.not_allowed(request.path, request.method)
            request.setHeader(b"allow", allowed)
            request.setResponseCode(http.NOT_ALLOWED)
            request.setHeader(b"content-type", b"application/json")
            return _json_error(message)
        return handler(request)

    def not_allowed(self, path: bytes, method: bytes) -> tuple[bytes, str]:
        """The 405 of ``method`` on ``path`` (a path served): its ``Allow`` and its words."""
        allowed = b", ".join(sorted(self.routes[path]))
        return allowed, "method %s not allowed: use %s" % (method.decode("latin-1"),
                                                           allowed.decode("ascii"))


def count_refused(request: server.Request, reason: str) -> None:
    """Count a request refused for ``reason`` in ``vmstats_http_requests_refused_total``."""
    table = getattr(getattr(request, "channel", None), "table", None)
    if table is not None:
        table.counts.refused(reason)


def _too_large(limit: int) -> str:
    return "body larger than %d bytes" % limit


def _json_error(message: str) -> bytes:
    return (json.dumps({"error": message}) + "\n").encode("utf-8")


class _Request(server.Request):
    """A request whose response does not name the server or its version, and whose body's
    bytes a page may hold against its budget from the headers on (``body_hold``: anything
    with ``release()``), given back here if the request ends before the page takes them."""

    body_hold = None

    def release_body(self) -> None:
        """Give back what the body holds, unless the page took it (a refused or cut body, a
        lost connection, an answer given without reading the body)."""
        if self.body_hold is not None:
            self.body_hold.release()
            self.body_hold = None

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.release_body()

    def connectionLost(self, reason) -> None:
        super().connectionLost(reason)
        self.release_body()

    def write(self, data: bytes) -> None:
        if not self.startedWriting:
            self.responseHeaders.removeHeader(b"server")
        super().write(data)


class _Channel(http.HTTPChannel):
    """An HTTP/1.1 connection that its port's connection table keeps in line.

    Bodies are bounded here, before Twisted stores them (in a temporary file past 100 KB):
    a refused request is answered at once and its remaining bytes are dropped, not kept.  A
    page may hold a body's bytes against its budget as they arrive (``Router.admits``), and a
    body must arrive whole within ``body_timeout`` of its headers, and a head within
    ``head_timeout`` of its first byte: Twisted's own timeout is an idle one, which a sender of
    one byte a second never meets.
    """

    table: ConnectionTable
    router: Router
    peer = ""
    _refused = False
    _limit = 0
    _linger_left = 0
    #: The request line of the request being read was taken: a line past the limit is a header.
    _in_head = False
    #: Calls of dataReceived under way (Twisted calls it again from inside when a request ends).
    _depth = 0
    #: Seconds a body may take to arrive from its headers (--http-body-timeout; None: no limit).
    body_timeout: float | None = None
    #: Seconds a head may take from its first byte to its end (--http-head-timeout; None: none).
    head_timeout: float | None = None
    #: Where a head or body cut at its deadline is logged (rate-limited: a crowd is one line).
    late_log: RateLimitedLog | None = None
    #: The call that cuts the head or body under way (or a refused connection's lingering) short
    #: at its deadline, and the reason it is counted under: ``head_timeout`` or ``body_timeout``.
    _deadline = None
    _late_reason = ""
    #: The route's admission of a chunked body's reads as they arrive (None: not needed).
    _admit = None
    #: When the first bytes of a request were read while the answer before it was under way
    #: (None: none are): its head's deadline runs from then, not from that answer's end.
    _head_since: float | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.table.add(self, self.peer)

    def dataReceived(self, data: bytes) -> None:
        self.table.touch(self)
        if self._refused:
            self._linger(len(data))
            return
        self._depth += 1
        try:
            super().dataReceived(data)
        finally:
            self._depth -= 1
        # Read to its end (not a call made inside that reading, nor paused by a request under
        # way), a head's unfinished line is all the buffer holds: an LF in it ended a line.
        if (self.line_mode and not self._depth and not self.paused and not self._refused
                and b"\n" in self._buffer):
            self._bare_lf()
        # Bytes of the next request read while the answer before it is under way (Twisted holds
        # them, unread, until that answer is done): its head's time runs from this read.
        if self._head_since is None and self._dataBuffer:
            self._head_since = self.table.reactor.seconds()
        # A head begun and not yet whole: from here it has head_timeout to end.  A head read
        # whole in one go (as clients send it) starts no timer, and a connection waiting for
        # its next request (nothing buffered, no line taken) is the idle timeout's.
        if (self.head_timeout and self._deadline is None and self.line_mode and not self.paused
                and not self._refused and (self._buffer or self._in_head)):
            seconds = self.head_timeout
            if self._head_since is not None:  # read behind an answer: what is left of its time
                seconds -= self.table.reactor.seconds() - self._head_since
                self._head_since = None
            self._start_deadline(max(seconds, 0), "head_timeout")

    def _bare_lf(self) -> None:
        """A head whose lines end in a bare LF: Twisted splits lines at CRLF only, so it waited
        for one until the idle timeout, and the client (``printf ... | nc``) heard nothing.
        RFC 9112 lets a server take LF alone as a line's end, but a proxy in front that does not
        would frame the request differently (Twisted's issue 4893): it is refused at once."""
        self.clearLineBuffer()
        self._answer(http.BAD_REQUEST, "bad_request",
                     "malformed request: the lines of its head end in a bare LF, not CRLF (\\r\\n)")

    def rawDataReceived(self, data: bytes) -> None:
        if self._refused:
            self._linger(len(data))
            return
        if self._admit is not None:  # a chunked body: held as it arrives, a read at a time
            refused = self._admit(self.requests[-1], len(data))
            if refused is not None:  # counted by the page
                self._refuse(refused[0], None, "", refused[1])
                return
        super().rawDataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        """A line of a request's head; past the head's limit (Twisted's ``totalHeadersSize``,
        16 KiB with the request line) the request is refused with 414 or 431, not a bare 400."""
        if self._refused:  # more lines of the same read, after a refusal
            self._linger(len(line))
            return
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._refuse_head()
            return
        if line:
            self._in_head = True
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        """One line past ``MAX_LENGTH`` (16 KiB): Twisted closed the connection without a word."""
        self._refuse_head()
        self._linger(len(line))

    def _refuse_head(self) -> None:
        """A request line (414) or header block (431) past the limit: answered, counted, closed."""
        if self._in_head:
            self._answer(HEADERS_TOO_LARGE, "headers_too_large",
                         "request line and headers longer than %d bytes" % self.totalHeadersSize)
        else:
            self._answer(http.REQUEST_URI_TOO_LONG, "uri_too_long",
                         "request line longer than %d bytes" % self.MAX_LENGTH)

    def _respondToBadRequestAndDisconnect(self) -> None:
        """Twisted's answer to a request it cannot read (a request line or header that does not
        parse, a Content-Length that is no number or given twice, over 500 headers) was a bare
        400, counted nowhere: now it is counted as ``bad_request`` and says so in JSON, as every
        other refusal here.  (A bad chunk is the chunked body's decoder's, which says which.)"""
        if self._refused:
            return
        self._answer(http.BAD_REQUEST, "bad_request",
                     "malformed request: its request line, a header or its length cannot be read")

    def allHeadersReceived(self) -> None:
        self._in_head = False  # the next line is the next request's first
        self._stop_deadline()  # the head's: the head is whole
        self._head_since = None
        request = self.requests[-1]
        path = self._path.split(b"?", 1)[0]
        limit = self.router.max_body(path)
        if limit is not None and self._command in BODILESS_METHODS:
            limit = min(limit, DEFAULT_MAX_BODY)
        headers = request.requestHeaders
        delimited = headers.hasHeader(b"content-length") or headers.hasHeader(b"transfer-encoding")
        codings = headers.getRawHeaders(b"transfer-encoding")
        repeated = [name for name in SINGLE_HEADERS if len(headers.getRawHeaders(name, ())) > 1]
        if repeated:
            # Twisted's getHeader reads the last one, a proxy in front may have checked the
            # first: which credentials is this?  (The values are never logged or quoted.)
            self._refuse(http.BAD_REQUEST, "duplicate_header",
                         "malformed request: %s given more than once"
                         % repeated[0].decode("ascii").title())
        elif codings is not None and [c.strip().lower() for c in codings] != [b"chunked"]:
            # Twisted skips "identity" (RFC 2616's, gone since RFC 7230) as if there were no
            # body: a write sent so was answered 204 with none of its lines read, and the lines
            # were then read as the next request.  RFC 9112 (6.1): any coding but a final
            # chunked leaves the body's length unknown, and the answer is 400.
            self._refuse(http.BAD_REQUEST, "bad_request",
                         "Transfer-Encoding %r cannot be read: send Content-Length, or chunked"
                         % b", ".join(codings).decode("latin-1")[:60])
        elif self.length != 0 and limit is None:
            self._refuse(http.NOT_FOUND, "not_found", self.router.absent.get(path, "not found"))
        elif self.length != 0 and self._command not in self.router.routes[path]:
            # Answered 405 by the router in the end, but only once the body was in: held
            # against a page's budget and stored meanwhile, past the page's check of a token
            # (asked of the methods it serves), so a client without the write token could hold
            # the write API's budget with PUTs and shut out every writer with it.
            allowed, message = self.router.not_allowed(path, self._command)
            self._refuse(http.NOT_ALLOWED, "method_not_allowed", message, allow=allowed)
        elif (self._command in (b"POST", b"PUT", b"PATCH") and not delimited
              and self._version != b"HTTP/1.1"):
            self._refuse(http.LENGTH_REQUIRED, "length_required",
                         "a body needs a Content-Length header")
        elif self.length is not None and limit is not None and self.length > limit:
            self._refuse(http.REQUEST_ENTITY_TOO_LARGE, "too_large", _too_large(limit))
        elif self._command not in SAFE_METHODS and headers.hasHeader(b"origin"):
            self._refuse(http.FORBIDDEN, "cross_origin",
                         "a request from a browser's page (Origin header) may only read")
        elif path in self.router.gates:
            early = self.router.gates[path](request, self._command,
                                            http.parse_qs(self._path.partition(b"?")[2], 1))
            if early is not None:  # counted by the page, as it counts its own refusals
                self._refuse(early[0], None, "", early[1])
        admit = self.router.admits.get(path)
        if not self._refused and admit is not None and self.length:
            # A declared body is held whole from here, so a body taken is never cut for room
            # and one that does not fit is refused before any of it is sent.
            early = admit(request, self.length)
            if early is not None:
                self._refuse(early[0], None, "", early[1])
        if self._refused:
            self.length = None  # no request is run: the rest goes to rawDataReceived, dropped
            return
        self._limit = limit or 0
        # Chunked: held as its bytes arrive, framing and all (rawDataReceived), so that a body
        # of one-byte chunks holds the bytes it costs, not a sixth of them.
        self._admit = admit if self.length is None else None
        if codings is not None:  # chunked (any other coding was refused): no byte of it read yet
            self._transferDecoder = ChunkedBody(request.handleContentChunk, self._finishRequestBody,
                                                self._refuse_chunked, self._limit)
        if self.length != 0 and self.body_timeout:
            self._start_deadline(self.body_timeout, "body_timeout")
        super().allHeadersReceived()

    def _refuse_chunked(self, reason: str, message: str) -> None:
        """The chunked body's decoder refused it: past the route's limit (413), malformed or
        of chunks carrying too little (400)."""
        if reason == "too_large":
            self._refuse(http.REQUEST_ENTITY_TOO_LARGE, reason, _too_large(self._limit))
        else:
            self._refuse(http.BAD_REQUEST, reason, message)

    def allContentReceived(self) -> None:
        if not self._refused:  # a body refused mid-stream may still end in the same read
            self._stop_deadline()
            self._admit = None  # what is read now is the next request's, buffered
            super().allContentReceived()

    def _start_deadline(self, seconds: float, reason: str) -> None:
        self._deadline = self.table.reactor.callLater(seconds, self._late)
        self._late_reason = reason

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _late(self) -> None:
        """A head not whole ``head_timeout`` after its first byte, a body not whole
        ``body_timeout`` after its headers, or a refused request's sender still sending then:
        one byte a second, never idle, held its connection (and a body's room) for as long as it
        liked.  The request is answered 408 (counted under the reason) and the connection
        closed; a refused one only closed, its answer long sent."""
        if not self._refused:
            if self._late_reason == "head_timeout":
                what, seconds, option = ("request line and headers", self.head_timeout,
                                         "--http-head-timeout")
                since = "its first byte"
            else:
                what, seconds, option = "body", self.body_timeout, "--http-body-timeout"
                since = "the headers"
            message = "the %s did not arrive within %g s of %s (%s)" % (what, seconds, since,
                                                                       option)
            if self.late_log is not None:
                self.late_log.emit("closing the HTTP connection from %s: %s", self.peer, message)
            self._answer(http.REQUEST_TIMEOUT, self._late_reason, message)
        self._deadline = None
        self.table.close_gently(self)

    def _refuse(self, code: int, reason: str | None, message: str, body: bytes = b"",
                allow: bytes = b"") -> None:
        """Answer ``code`` now, count it (under ``reason``), and drop what the client still sends
        until the close.  The answer is ``{"error": message}``, or ``body`` if given; a 405
        names the methods served in ``allow``."""
        request = self.requests[-1]
        if request.content is not None:
            request.content.close()  # what was taken of the body goes now, not at the close
        request.content = io.BytesIO()
        request.release_body()  # and so does the room held for it
        self._answer(code, reason, message, body, allow)

    def _answer(self, code: int, reason: str | None, message: str, body: bytes = b"",
                allow: bytes = b"") -> None:
        """Answer ``code`` now, count it, and drop the rest (_refuse's end; a request whose
        head was refused has no body to drop)."""
        self._refused = True
        if reason is not None:
            self.table.counts.refused(reason)
        body = body or _json_error(message)
        more = b"retry-after: 1\r\n" if code == http.SERVICE_UNAVAILABLE else b""
        if allow:
            more += b"allow: %s\r\n" % allow
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\ncache-control: no-store\r\n%s"
                             b"connection: close\r\n\r\n%s"
                             % (code, _REASONS[code], len(body), more, body))
        self._linger_left = LINGER_BYTES
        self.transport.loseWriteConnection()  # the client sees the answer end, then closes
        if self._deadline is None and self.body_timeout:
            # The rest it sends is dropped, for that long at most.
            self._start_deadline(self.body_timeout, "body_timeout")

    def _linger(self, size: int) -> None:
        self._linger_left -= size
        if self._linger_left < 0:
            self.transport.abortConnection()

    def pauseProducing(self) -> None:
        """The client is not reading its answers (the transport's buffer is full): read and
        answer nothing more of its pipeline until it does.  Twisted pauses reading only when no
        request is under way, but the transport says so while a request writes its answer, and
        the rest of the pipeline already read was answered at once: a client sending ``GET
        /metrics`` over and over without reading grew the server by 60 MB a second."""
        super().pauseProducing()
        self.paused = True  # the line reader stops before the next request's head
        self._networkProducer.pauseProducing()

    def resumeProducing(self) -> None:
        """The client read its answers: the requests held meanwhile are answered."""
        super().resumeProducing()
        self.paused = False
        self.dataReceived(b"")

    def connectionLost(self, reason) -> None:
        self.table.remove(self)
        self._stop_deadline()
        super().connectionLost(reason)


class _Site(server.Site):
    protocol = _Channel
    requestFactory = _Request

    def __init__(self, root: resource.Resource, table: ConnectionTable,
                 body_timeout: float | None = None, head_timeout: float | None = None):
        # The table closes idle connections (counted); Twisted's own timer would be a second one.
        # No page reads a form: a POST's body is the page's own (JSON, line protocol), and its
        # arguments are the URL's.  Twisted parses every POST body labelled multipart/form-data
        # or x-www-form-urlencoded into request.args, on the reactor, before any page sees it: a
        # 63 KB multipart body to the open /query cost 16 ms (90 times a plain one), a 20 MB one
        # to /write held the reactor 8 s, one not parseable as a form was a 400 whatever the
        # page, and a urlencoded body's text replaced its URL's arguments (curl --data-binary
        # labels a write so: one whose comment line held "&precision=h" was refused, 400).
        # The switch is Twisted's since 25.5 (setup.cfg asks for no older one).
        super().__init__(root, timeout=None, parsePOSTFormSubmission=False)
        self.table = table
        self.body_timeout = body_timeout
        self.head_timeout = head_timeout
        self.late_log = RateLimitedLog(log, "HTTP timeout")
        self.noisy = False

    def buildProtocol(self, addr):
        if not self.table.admit(addr.host):
            return None
        channel = super().buildProtocol(addr)
        channel.table = self.table
        channel.router = self.resource
        channel.peer = addr.host
        channel.body_timeout = self.body_timeout
        channel.head_timeout = self.head_timeout
        channel.late_log = self.late_log
        return channel


class StatusToken:
    """The secret that unlocks /status details, compared in constant time."""

    def __init__(self, token: str | None):
        self.token = token.encode("utf-8") if token else None

    def admits(self, request: server.Request) -> bool:
        if self.token is None:
            return False
        given = request.getHeader(b"authorization") or b""
        scheme, _, value = given.partition(b" ")
        return scheme.lower() == b"bearer" and secret_matches(value.strip(), self.token)


#: The 404 of /alerts and /mutes on a server started without rules, as ``vmstats alerts
#: --url`` and ``vmstats rules mutes`` show it after the address.
RULES_OFF = "this server runs without --rules: start it with --rules FILE for /alerts and /mutes"


class HTTPService(service.Service):
    """Serves the server's own numbers; reads state, never changes it."""

    name = "http"

    def __init__(self, reactor, bind: str, port: int, metrics_text: Callable[[], str],
                 status_json: Callable[[bool], dict], table: ConnectionTable,
                 token: StatusToken | None = None,
                 routes: dict[bytes, resource.Resource] | None = None,
                 alerts_json: Callable[[bool], dict] | None = None,
                 body_timeout: float | None = None, head_timeout: float | None = None):
        self.reactor = reactor
        self.bind = bind
        self.port = port
        self.table = table
        self.token = token or StatusToken(None)
        self.router = Router()
        self.router.add(b"/metrics", lambda request: _body(
            request, metrics_text(), b"text/plain; version=0.0.4; charset=utf-8"))
        self.router.add(b"/status", lambda request: _body(
            request, json.dumps(status_json(self.token.admits(request)), indent=1,
                                sort_keys=True), b"application/json"))
        if alerts_json is not None:  # the live rules (docs/RULES.md); details as for /status
            self.router.add(b"/alerts", lambda request: _body(
                request, json.dumps(alerts_json(self.token.admits(request)), indent=1,
                                    sort_keys=True), b"application/json"))
        else:  # the rules' pages (/mutes beside /alerts) say why they are not here
            for path in (b"/alerts", b"/mutes"):
                self.router.absent[path] = RULES_OFF
        # Other services' pages by full path (b"/api/v2/write"), each with its methods and limit.
        for path, page in (routes or {}).items():
            self.router.add_page(path, page)
        self.site = _Site(self.router, table, body_timeout, head_timeout)
        self.listening = None

    def startService(self) -> None:
        service.Service.startService(self)
        self.listening = listening(lambda: listen_tcp(self.reactor, self.port, self.site, self.bind),
                                   "HTTP", self.bind, self.port, "--http-port")
        self.port = self.listening.getHost().port
        self.table.start()

    def stopService(self):
        service.Service.stopService(self)
        self.table.stop()
        if self.listening is not None:
            stopped = self.listening.stopListening()
            self.table.close_all()
            return stopped
        return None


def _body(request: server.Request, text: str, content_type: bytes) -> bytes:
    request.setHeader(b"content-type", content_type)
    return text.encode("utf-8")


def last_seen_table(last_seen: dict[str, float], limit: int = 10000) -> dict[str, str]:
    """VM -> ISO time last heard from, most recent first, bounded for a readable page."""
    ordered = sorted(last_seen.items(), key=lambda item: -item[1])[:limit]
    return {vm: moment(when) for vm, when in ordered}
