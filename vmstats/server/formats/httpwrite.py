"""The InfluxDB HTTP write API on vmstats' HTTP port, so Telegraf and client libraries work as-is.

* ``POST /write?db=..&precision=..`` (InfluxDB 1.x; Telegraf's ``outputs.influxdb``), with
  ``/query`` answering Telegraf's ``CREATE DATABASE`` and ``/ping`` its health checks;
* ``POST /api/v2/write?org=..&bucket=..&precision=..`` (InfluxDB 2.x; ``outputs.influxdb_v2``
  and the ``influxdb-client`` libraries), token in ``Authorization: Token ...``.

Bodies may be gzip-compressed (``Content-Encoding: gzip``).  The answer is
204 when every line was usable (ignored metrics are usable: they are simply
not stored), and 400 with the numbers and reasons of the first bad lines
otherwise -- the good lines around them are still taken, as InfluxDB does
with a partial write.  Either answer comes only once what was taken is in
the journal (written, and synced under ``--fsync batch``), as a TCP ``#!ack``
does: a SIGKILL after a 204 loses none of it (journaling.py).  While journal
writes fail the answer is 503 (clients retry) and nothing is taken; only a
body whose own write fails was taken before the 503, so its retry can count
some samples twice in a minute's means.  A body naming new VMs that
``--max-vms`` has no room for is a 503 too, before any of it is taken
(vmroom.py): answered 204, its minutes would be dropped as they complete.
"""

import json
import logging
import zlib

from twisted.internet import defer
from twisted.web import resource, server

from vmstats.server.formats import R_AUTH, R_VM_CAP, Tally
from vmstats.server.formats.edge import NoRoom
from vmstats.server.formats.lineprotocol import PRECISIONS
from vmstats.server.formats.vmroom import RETRY_AFTER
from vmstats.server.http import count_refused, secret_matches

log = logging.getLogger(__name__)

#: Largest body taken (after decompression); InfluxDB's default limit is 25 MB as well.
MAX_BODY = 25 << 20
V1_PRECISIONS = ("n", "ns", "u", "us", "ms", "s", "m", "h")
#: The one Content-Encoding a body may have (InfluxDB's), besides none; any other is 415 at the
#: headers (``body_coding``).
GZIP = b"gzip"
V2_PRECISIONS = ("ns", "us", "ms", "s")


#: Compressed bytes handed to zlib at a time.  At the end of a gzip member zlib copies what it
#: was given past that end: given the rest of the body each time, a body of many tiny members
#: (20 bytes each, a million of them in 25 MiB) cost a copy of the rest per member, minutes of
#: the reactor.
GUNZIP_STEP = 16 << 10


def gunzip(data: bytes, limit: int) -> bytes:
    """Every gzip member of ``data`` (as gzip readers and InfluxDB read them), up to ``limit`` + 1
    bytes; zlib.error for a cut stream or bytes after the last member that are not one, whose
    lines would otherwise be taken short or not at all behind a 204."""
    out: list[bytes] = []
    size = at = 0
    view = memoryview(data)
    while at < len(data):
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while not inflate.eof and at < len(data):
            chunk = view[at:at + GUNZIP_STEP]
            part = inflate.decompress(chunk, limit + 1 - size)
            out.append(part)
            size += len(part)
            if size > limit:  # the caller refuses it as too large
                return b"".join(out)
            at += len(chunk) - len(inflate.unused_data)
        if not inflate.eof:
            raise zlib.error("the stream is cut short")
    return b"".join(out)


def body_coding(request) -> bytes | None:
    """The body's coding, ``GZIP`` or ``b""`` (plain), or None for one that cannot be read.

    Content-Encoding is a list (RFC 9110, 8.4): its header lines and their comma-separated
    members are one list, in order.  Read last-wins (Twisted's ``getHeader``), ``gzip`` then
    ``identity`` on two lines had a gzipped body read as plain text (a 400 of garbage lines),
    and ``br`` then ``gzip`` a brotli body gunzipped.  ``identity`` (no coding) and empty members
    are dropped; what is left must be nothing or one ``gzip``: a body gzipped twice, or in a
    coding besides gzip, would be read as garbage."""
    named = [coding for line in request.requestHeaders.getRawHeaders(b"content-encoding", ())
             for coding in (member.strip().lower() for member in line.split(b","))
             if coding and coding != b"identity"]
    if not named:
        return b""
    return GZIP if named == [GZIP] else None


class BodyBudget:
    """The bytes of write bodies held at once, against ``--http-body-memory``.

    A body is read whole (and unzipped) before it is fed, and fed over many reactor turns, so
    bodies arriving together are held together: 30 connections' 25 MiB bodies held 850 MB.
    A body counts from its headers on, not from when it is whole: Twisted stores a body while
    it arrives (in memory, then in a temporary file past 100 KB), so slow senders' bodies
    held memory and disk that no limit saw.  One body is always taken when no other is held,
    so a limit below a body's size slows writers rather than shutting them out."""

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0

    def hold(self) -> "BodyHold":
        """A new body's share, holding nothing yet."""
        return BodyHold(self)


class BodyHold:
    """One body's bytes in a ``BodyBudget``: its declared Content-Length from its headers (a
    chunked body's bytes, framing included, as they arrive), then its read and unzipped bytes
    until it is fed.  Whoever has it last (the request while the body arrives, then the page)
    releases it."""

    __slots__ = ("budget", "size")

    def __init__(self, budget: BodyBudget):
        self.budget = budget
        self.size = 0

    def grow(self, size: int) -> bool:
        """Hold ``size`` more bytes, if the limit allows (always, when no other body holds any)."""
        budget = self.budget
        if budget.held > self.size and budget.held + size > budget.limit:
            return False
        budget.held += size
        self.size += size
        return True

    def resize(self, size: int) -> bool:
        """Hold ``size`` bytes in all, if the limit allows: more, or give back the excess."""
        if size > self.size:
            return self.grow(size - self.size)
        self.budget.held -= self.size - size
        self.size = size
        return True

    def release(self) -> None:
        """Give back all it holds."""
        self.budget.held -= self.size
        self.size = 0


class WritePage(resource.Resource):
    """One of the write endpoints (``version`` 1 or 2) feeding the influx decoder."""

    isLeaf = True
    #: The HTTP channel refuses a longer body before storing it (http.py).
    max_body = MAX_BODY

    def __init__(self, edge, decoder, version: int, token: str | None, signed: bool = False,
                 budget: BodyBudget | None = None):
        super().__init__()
        self.edge = edge
        self.decoder = decoder
        self.version = version
        self.budget = budget or BodyBudget(MAX_BODY)
        self.token = token.encode("utf-8") if token else None
        #: The server requires signed records (--auth-keys): a write API open to anyone would
        #: let any sender write any VM's records past the keys, so without a token it is shut.
        self.shut = signed and self.token is None

    def refuse_early(self, request, method: bytes, args: dict) -> tuple[int, bytes] | None:
        """At the headers (http.py): a write without the token is answered 401 (403 when the
        API is shut) and counted before its body is read, so no one without it makes the
        server store a body."""
        if method != b"POST":
            return None
        refusal = self._refusal(request, args)
        if refusal is not None:
            return refusal[0], self._error_body(*refusal[1:])
        if body_coding(request) is None:  # read as plain text, its every line would be garbage
            named = b", ".join(request.requestHeaders.getRawHeaders(b"content-encoding"))
            count_refused(request, "unsupported_encoding")
            return 415, self._error_body("invalid", "Content-Encoding %r is not supported: "
                                         "send gzip (once) or none" % named.decode("latin-1")[:40])
        return None

    def admit_body(self, request, size: int) -> tuple[int, bytes] | None:
        """Hold ``size`` more bytes of ``request``'s body against --http-body-memory before they
        are stored (http.py calls it with the declared Content-Length at the headers, and with
        each read of a chunked body as it arrives); None, or the 503 (busy) refusing the body
        there, before the rest of it is sent or stored."""
        hold = getattr(request, "body_hold", None)
        if hold is None:
            hold = request.body_hold = self.budget.hold()
        if hold.grow(size):
            return None
        count_refused(request, "busy")
        return 503, self._error_body("unavailable", self._busy_message())

    def render_POST(self, request) -> bytes:
        refusal = self._refusal(request, request.args)
        if refusal is not None:
            return self._error(request, *refusal)
        args = request.args
        precision = args.get(b"precision", [b"ns"])[0].decode("ascii", "replace")
        allowed = V2_PRECISIONS if self.version == 2 else V1_PRECISIONS
        if precision not in allowed:
            count_refused(request, "bad_query")
            return self._error(request, 400, "invalid", "precision %r is not one of %s"
                               % (precision, ", ".join(allowed)))
        if self.version == 2 and not args.get(b"bucket", [b""])[0]:
            count_refused(request, "bad_query")
            return self._error(request, 400, "invalid", "bucket is required")
        body = request.content.read(MAX_BODY + 1)
        self.edge.metrics.bytes += len(body)
        # The body was held as it arrived (admit_body, a chunked one with its framing); the page
        # holds it from here until it is fed, whatever becomes of the request.
        hold = getattr(request, "body_hold", None) or self.budget.hold()
        request.body_hold = None
        if not hold.resize(len(body)):
            hold.release()
            return self._busy(request)
        try:
            taken = self._take(request, body, precision, hold)
        except BaseException:
            hold.release()
            raise
        if isinstance(taken, bytes):  # refused: nothing of it is held any more
            hold.release()
            return taken
        taken.addBoth(self._fed, hold)
        return server.NOT_DONE_YET

    def _take(self, request, body: bytes, precision: str,
              hold: BodyHold) -> bytes | defer.Deferred:
        """An error answer, or the Deferred of feeding ``body``; ``hold`` holds what the budget
        counts for it (its unzipped size once unzipped)."""
        if body_coding(request) == GZIP:  # any other but none was refused at the headers
            try:
                body = gunzip(body, MAX_BODY)
            except zlib.error as exc:
                count_refused(request, "bad_gzip")
                return self._error(request, 400, "invalid", "body is not gzip: %s" % exc)
            hold.release()  # given back before the unzipped size is held: one body always fits
            if not hold.grow(len(body)):
                return self._busy(request)
        if len(body) > MAX_BODY:  # unzipped: the HTTP port bounded only what was sent
            count_refused(request, "too_large")
            return self._error(request, 413, "request too large", "body over %d bytes" % MAX_BODY)
        if self.edge.journal_failing():  # take nothing that could not be kept: the client retries
            count_refused(request, "journal")
            request.setHeader(b"retry-after", b"1")
            return self._error(request, 503, "unavailable", "the journal cannot be written: "
                               "retry later")
        return self._feed(request, body, precision)

    def _fed(self, result, hold: BodyHold):
        """The body is in (or failed): its bytes are no longer held."""
        hold.release()
        return result

    def _busy(self, request) -> bytes:
        """503 for a body past --http-body-memory: the client retries once others are in."""
        count_refused(request, "busy")
        request.setHeader(b"retry-after", b"1")
        return self._error(request, 503, "unavailable", self._busy_message())

    def _busy_message(self) -> str:
        return ("the server holds %d bytes of write bodies (--http-body-memory): retry later"
                % self.budget.held)

    def _feed(self, request, body: bytes, precision: str):
        """Feed ``body`` to the edge and answer once it is durable; the Deferred of its
        feeding, which fires once the body is no longer needed."""
        errors: list = []
        gone: list = []
        request.notifyFinish().addErrback(gone.append)  # the client left: nothing to answer

        def answer(journaled: "bool | NoRoom") -> None:
            if gone:
                return
            if isinstance(journaled, NoRoom):  # refused whole at its intake: nothing taken
                request.setHeader(b"retry-after", b"%d" % RETRY_AFTER)
                body = self._error(request, 503, "unavailable", journaled.reason)
            elif not journaled:
                count_refused(request, "journal")
                request.setHeader(b"retry-after", b"1")
                body = self._error(request, 503, "unavailable",
                                   "the journal write failed: retry later")
            elif errors:
                message = "; ".join("line %d: %s" % error for error in errors)
                body = self._error(request, 400, "invalid", "partial write: " + message)
            else:
                request.setResponseCode(204)
                body = b""
            if body:
                request.write(body)
            request.finish()

        def failed(failure) -> None:  # a bug: say so, and have the client retry
            log.error("feeding a written body failed: %s", failure.getTraceback())
            answer(False)

        channel = getattr(request, "channel", None)
        table = getattr(channel, "table", None)  # the writer is not idle while its body is fed
        fed = self.edge.write_body(self.decoder, body, errors,
                                   (lambda: table.touch(channel)) if table else (lambda: None),
                                   divisor=PRECISIONS[precision])
        done = defer.Deferred()  # fires once the body is fed: it need not be held after

        def fed_all(result):
            done.callback(None)
            return result

        def durable(result) -> None:
            if isinstance(result, NoRoom):  # counted whether or not the client waits for it
                count_refused(request, R_VM_CAP)
                tally = Tally()
                tally.reject(R_VM_CAP, result.reason)
                self.edge.count(self.decoder.name, tally)
                answer(result)
            else:
                self.edge.when_durable(result, answer)

        fed.addBoth(fed_all).addCallback(durable).addErrback(failed)
        return done

    def _refusal(self, request, args: dict) -> tuple[int, str, str] | None:
        """``(status, kind, message)`` for a write that may not be taken (counted as auth), or
        None."""
        if self.shut:
            refusal = (403, "forbidden", "the write API is off: this server requires signed "
                       "records (--auth-keys) and no --write-token is set")
        elif self.token is not None and not self._authorized(request, args):
            refusal = (401, "unauthorized", "unauthorized access")
        else:
            return None
        tally = Tally()
        tally.reject(R_AUTH, "write without a valid token")
        self.edge.count(self.decoder.name, tally)
        return refusal

    def _authorized(self, request, args: dict) -> bool:
        header = request.getHeader(b"authorization") or b""
        scheme, _sep, credential = header.partition(b" ")
        if scheme.lower() in (b"token", b"bearer") and secret_matches(credential.strip(),
                                                                       self.token):
            return True
        if self.version == 1:
            if secret_matches(args.get(b"p", [b""])[0], self.token):
                return True
            if scheme.lower() == b"basic" and secret_matches(request.getPassword(), self.token):
                return True
        return False

    def _error(self, request, code: int, kind: str, message: str) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        return self._error_body(kind, message)

    def _error_body(self, kind: str, message: str) -> bytes:
        body = {"code": kind, "message": message} if self.version == 2 else {"error": message}
        return json.dumps(body).encode("utf-8")


class Ping(resource.Resource):
    """``/ping``: what InfluxDB 1.x clients ask before writing."""

    isLeaf = True

    def render_GET(self, request) -> bytes:
        request.setResponseCode(204)
        request.setHeader(b"x-influxdb-version", b"vmstats")
        return b""

    render_HEAD = render_GET


class Query(resource.Resource):
    """``/query``: Telegraf's ``CREATE DATABASE`` gets the empty success InfluxDB gives."""

    isLeaf = True

    def render_POST(self, request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return b'{"results":[{"statement_id":0}]}'

    render_GET = render_POST


def routes(edge, decoder, token: str | None, signed: bool = False,
           budget: BodyBudget | None = None) -> dict[bytes, resource.Resource]:
    """The write API's pages by path, for the HTTP service; ``signed``: the server requires
    signed records (--auth-keys), so the write API needs its token or is shut; ``budget``: the
    bytes of bodies both versions may hold at once."""
    budget = budget or BodyBudget(MAX_BODY)
    return {b"/write": WritePage(edge, decoder, 1, token, signed, budget),
            b"/api/v2/write": WritePage(edge, decoder, 2, token, signed, budget),
            b"/ping": Ping(), b"/query": Query()}
