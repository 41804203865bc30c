"""UDP and TCP listeners: frames in, Ingest calls out, acknowledgements back.

The listeners know the framing (signed frames, ``#!sync`` control lines, line
limits); the records themselves are Ingest's business.  Signature rejects are
counted per frame (a UDP datagram or a signed TCP batch) and, for unsigned
data when signatures are required, per line.
"""

import errno
import logging
import re
import select
import socket
import sys

from twisted.application import service
from twisted.internet import defer, udp
from twisted.internet import protocol as tx_protocol
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.python import log as twisted_log
from zope.interface import implementer

from vmstats import protocol
from vmstats.server.auth import Authenticator
from vmstats.server.connections import ConnectionTable, SourceFilter, listen_tcp, listening
from vmstats.server.formats import misdirected
from vmstats.server.ingest import Ingest
from vmstats.server.metrics import Metrics
from vmstats.server.parse import frame_start, has_frame
from vmstats.server.parseworker import COALESCE_BYTES, COALESCE_SECONDS
from vmstats.server.senders import Senders
from vmstats.server.signing import unsigned_refused
from vmstats.words import counted

log = logging.getLogger(__name__)

_TOKEN = re.compile(rb"[A-Za-z0-9._-]{1,64}\Z")
#: ``#!sync`` without its token: a sync that can never be answered, refused and counted rather
#: than passed over as another reader's control line (its sender would wait for a reply).
_BARE_SYNC = protocol.SYNC_PREFIX.rstrip()
#: Bytes read from a TCP connection at once (Twisted's default is 64 KiB).
TCP_READ_BYTES = 256 << 10


class UDPReceiver(tx_protocol.DatagramProtocol):
    """Plain datagrams are gathered into payloads; a signed datagram is one frame.

    Each payload has a fixed cost (a hand-off to a parser, one filing, one
    journal entry), so datagrams that arrive a few at a time are held for up
    to ``COALESCE_SECONDS`` until ``COALESCE_BYTES`` have gathered: at 100,000
    one-record datagrams a second that is ~200 records a payload instead of
    the ~25 one socket read finds.  UDP has no acknowledgement to delay.
    """

    def __init__(self, ingest: Ingest, auth: Authenticator, metrics: Metrics, reactor=None):
        self.ingest = ingest
        self.auth = auth
        self.metrics = metrics
        self.reactor = reactor
        # Looked up once: this runs once per datagram, up to ~100,000 times a second.
        self._submit = ingest.submit
        self._plain = not auth.required
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._timer = None
        #: The held datagrams' lengths and senders' addresses, while these are read
        #: (senders.py); ``_named`` is False once a held datagram came without one.
        self._lengths: list[int] = []
        self._addresses: list[str] = []
        self._named = True

    def datagramReceived(self, data: bytes, addr) -> None:
        self.datagramsReceived([data])

    def datagramsReceived(self, batch: list[bytes], addresses: list[str] | None = None) -> None:
        """Ingest datagrams read in one go.

        Plain datagrams are joined with newlines and go through the parser as
        one payload: one regex pass and one call for many datagrams instead of
        one each, which is most of the per-datagram cost.  Lines never span
        datagrams, so the result is the same.  Frames (``#!``) and everything
        under --auth-keys are handled one datagram at a time.  ``addresses``: each datagram's
        sender's, where read (senders.py).
        """
        metrics = self.metrics
        metrics.datagrams += len(batch)
        joined = b"\n".join(batch)
        metrics.bytes += len(joined) - len(batch) + 1
        # An HTTP request's line holds " HTTP/"; no part of a valid record may hold "/": one
        # memchr a batch, as for "#" (has_frame), and the longer search only where one is found.
        # (Under --auth-keys each unsigned datagram is looked at: _signed.)
        if self._plain and b"/" in joined and b" HTTP/" in joined:
            batch = self._without_requests(batch)
            if not batch:
                return
            joined = b"\n".join(batch)
            addresses = None
        if self._plain and not has_frame(joined):
            self._held.append(joined)
            self._held_bytes += len(joined)
            if addresses is None:
                self._named = False
            elif self._named:
                self._lengths += map(len, batch)
                self._addresses += addresses
            if self._held_bytes >= COALESCE_BYTES or self.reactor is None:
                self.release()
            elif self._timer is None:
                self._timer = self.reactor.callLater(COALESCE_SECONDS, self.release)
            return
        self.release()  # what came before these frames is filed before them
        if self.auth.required:
            self._signed(batch)
            return
        for index, data in enumerate(batch):
            if data[:2] == b"#!":
                data = self._unwrap(data)
                if data is None:
                    continue
            elif not self.auth.unsigned(data):
                continue
            self._submit(data, source="" if addresses is None else addresses[index])

    def _without_requests(self, batch: list[bytes]) -> list[bytes]:
        """The datagrams of ``batch``, each up to the HTTP request it holds (curl, or a client
        given this port for the HTTP port's), at its start or after records: each request
        counted once as ``http_request`` and named by its method and path, never read as
        lines: its headers (``Authorization:Token ...``) were refused line by line, quoted in
        the log, and journaled.  The records before it are kept.  (A parser process reading
        the socket looks for them only among the datagrams of a payload whose lines were
        refused: parseworker.py.)"""
        kept, requests = misdirected.among(batch)
        for what in requests:
            self.ingest.reject(protocol.R_HTTP, misdirected.words("native", what, "UDP"))
        return kept

    def _signed(self, batch: list[bytes]) -> None:
        """Datagrams under --auth-keys: whole frames go to be checked and parsed as one
        submission (``Ingest.submit_signed``); anything else is refused and counted here."""
        frames = []
        unsigned = 0
        for data in batch:
            if data[:2] != b"#!" or not data.startswith(protocol.SIG_PREFIX):
                lines, request = unsigned_refused(data)
                unsigned += lines
                if request is not None:
                    self.ingest.reject(*request)
                continue
            try:
                parts = protocol.split_signed(data)
            except protocol.SignatureError as exc:
                self.ingest.reject(exc.reason, exc.detail)
                continue
            if parts is False or parts[5]:
                self.ingest.reject(protocol.S_MALFORMED, "datagram length does not match its frame")
                continue
            frames.append(data)
        if unsigned:
            self.ingest.reject(protocol.S_UNSIGNED, counted(unsigned, "unsigned line"), unsigned)
        if frames:
            self.ingest.submit_signed(b"".join(frames))

    def parsed_elsewhere(self, parsed, payload: bytes, datagrams: int, size: int,
                         frames: list[bytes], checked=None, senders=None) -> None:
        """Datagrams a parser process read from the socket itself (parsers.py).

        Plain ones come joined and parsed; under --auth-keys, checked and
        parsed (``checked``: ``signing.Checked``), to be admitted here; frames
        (``#!``) the parser left come as they are and are handled here like
        any frame.  ``senders``: the datagrams' lengths and addresses, where read (senders.py).
        """
        if datagrams:
            self.metrics.datagrams += datagrams
            self.metrics.bytes += size
            if checked is not None:
                self.ingest.checked_elsewhere(checked)
            else:
                self.ingest.parsed_elsewhere(payload, parsed,
                                             Senders(payload, *senders) if senders else None)
        if frames:
            self.datagramsReceived(frames)

    def release(self) -> None:
        """Submit the datagrams held so far as one payload."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if not self._held:
            return
        data = b"\n".join(self._held) if len(self._held) > 1 else self._held[0]
        senders = Senders(data, self._lengths, self._addresses) if self._named else ""
        self._held = []
        self._held_bytes = 0
        self._lengths, self._addresses, self._named = [], [], True
        self._submit(data, source=senders or "")

    def _unwrap(self, data: bytes) -> bytes | None:
        try:
            parts = protocol.split_signed(data)
        except protocol.SignatureError as exc:
            self.ingest.reject(exc.reason, exc.detail)
            return None
        if parts is None:  # another control or comment line: the lines after it still count
            return data if self.auth.unsigned(data) else None
        if parts is False or parts[5]:
            self.ingest.reject(protocol.S_MALFORMED, "datagram length does not match its frame")
            return None
        # A payload holding an HTTP request (a sender that signs what it joins) is cut there,
        # as an unsigned datagram is (_without_requests) and a checked frame's (signing.py).
        payload, what = misdirected.cut(self.auth.frame(*parts[:5])[0])
        if what is not None:
            self.ingest.reject(protocol.R_HTTP, misdirected.words("native", what, "UDP"))
        return payload or None


class BatchingUDPPort(udp.Port):
    """Twisted's UDP port, reading every waiting datagram before handing them over as a batch.

    The stock ``doRead`` calls ``recvfrom`` and ``datagramReceived`` per
    datagram; building the address tuple and the call per datagram cost more
    than parsing a one-record datagram.  The receiver never uses the source
    address (the VM id comes from the payload), so this reads with ``recv``.
    """

    batch_size = 512
    #: --allow: when set, each datagram's source is checked (recvfrom instead of recv).
    allow: SourceFilter | None = None
    #: Whether each datagram's address is read and handed on (while a VM is watched over UDP:
    #: senders.py); recvfrom instead of recv, as for --allow.
    senders = False

    def doRead(self) -> None:
        self._read(self.maxThroughput)

    def _read(self, limit: int) -> None:
        """Read and deliver up to ``limit`` bytes of datagrams, or until the socket is empty."""
        if self.allow is not None or self.senders:
            self._read_allowed(limit)
            return
        recv = self.socket.recv
        size = self.maxPacketSize
        batch: list[bytes] = []
        read = 0
        try:
            while read < limit:
                data = recv(size)
                read += len(data)
                batch.append(data)
                if len(batch) >= self.batch_size:
                    self._deliver(batch)
                    batch = []
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ECONNREFUSED):
                raise
        finally:
            if batch:
                self._deliver(batch)

    def _read_allowed(self, limit: int) -> None:
        """``_read`` for --allow (datagrams from other sources are dropped and counted) or while
        the senders' addresses are read (``senders``: handed on with the datagrams)."""
        recvfrom = self.socket.recvfrom
        allows = self.allow.allows if self.allow is not None else None
        named: list[str] | None = [] if self.senders else None
        size = self.maxPacketSize
        batch: list[bytes] = []
        refused = read = 0
        try:
            while read < limit:
                data, addr = recvfrom(size)
                read += len(data)
                if allows is None or allows(addr[0]):
                    batch.append(data)
                    if named is not None:
                        named.append(addr[0])
                    if len(batch) >= self.batch_size:
                        self._deliver(batch, named)
                        batch = []
                        named = None if named is None else []
                else:
                    refused += 1
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ECONNREFUSED):
                raise
        finally:
            if refused:
                self.protocol.metrics.datagrams_not_allowed += refused
            if batch:
                self._deliver(batch, named)

    def stopListening(self):
        """Read what the socket already holds, then close it.

        Datagrams the kernel queued before the stop were received by this
        host; closing the socket with them unread would lose them silently,
        up to a whole receive buffer when the stop comes while the reactor is
        behind.  The read is bounded by what the buffer can hold (each
        datagram takes more of it than its payload), so senders that keep
        sending cannot hold the stop up.
        """
        if self.connected:
            try:
                self._read(self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
            except OSError as exc:
                log.error("reading the UDP socket before closing it: %s", exc)
        return super().stopListening()

    def _deliver(self, batch: list[bytes], addresses: list[str] | None = None) -> None:
        try:
            if addresses is None:
                self.protocol.datagramsReceived(batch)
            else:
                self.protocol.datagramsReceived(batch, addresses)
        except BaseException:
            twisted_log.err()  # as Twisted does: a bug in one batch must not stop the port


@implementer(IHalfCloseableProtocol)
class TCPReceiver(tx_protocol.Protocol):
    """A newline-delimited stream with optional signed frames and ``#!sync`` acknowledgements.

    Accepted/rejected counts and trouble flags accumulate from one sync to the
    next; the reply to a sync covers exactly that batch.  Payloads may be
    parsed elsewhere and are counted when Ingest files them, so everything
    that counts toward a batch (and the sync itself) goes through Ingest's
    arrival order: ``submit`` for payloads, ``after`` for the rest.

    A sender may shut its side once it has sent its last sync (``nc -N``,
    ``shutdown(SHUT_WR)``) and still read the replies: the connection stays
    open until every sync is answered.
    """

    def __init__(self, factory: "TCPFactory"):
        self.factory = factory
        self.ingest = factory.ingest
        self.auth = factory.auth
        self.metrics = factory.metrics
        self.buffer = b""
        self.skipping = False  # discarding the rest of an over-long line
        #: The payload of a frame whose header is broken, refused with it (``_broken_frame``):
        #: bytes of it still to come (its header's length), or its lines up to the next
        #: control line (no length to go by).
        self.discard_bytes = 0
        self.discard_lines = False
        self.accepted = self.rejected = 0
        #: This batch's rejected records by reason, for a sender that asked for them.
        self.reasons: dict[str, int] = {}
        #: Whether the sender asked its acks to name the reasons (protocol.REASONS_REQUEST).
        self.wants_reasons = False
        self.busy = self.auth_failed = False
        self.first_write: int | None = None  # the journal write holding this batch's first records
        self.table = factory.table
        self.peer = ""  # the source address, set by the factory
        self.source = ""  # set by the table
        self.last_active = 0.0  # set by the table
        self.unanswered = 0  # syncs whose reply is not written yet
        #: False once the sender ended its stream, or an HTTP request line did (_http_client).
        self.reading = True
        #: An HTTP client's request was read: it is answered 400 once the syncs before it are.
        self.answer_http = False

    def connectionMade(self) -> None:
        self.table.add(self, self.peer)
        # Each read becomes one payload with a fixed cost (a hand-off to a parser, a filing);
        # Twisted's 64 KiB reads make ~500-record payloads, these ~2,000 when a sender is fast.
        self.transport.bufferSize = TCP_READ_BYTES
        # A client that sends syncs but never reads the replies would make us buffer replies
        # without end: once ~64 KiB of replies wait, stop reading from it until they drain.
        self.transport.registerProducer(self.transport, True)

    def connectionLost(self, reason=None) -> None:
        self.table.remove(self)
        self._end_of_stream()

    def readConnectionLost(self) -> None:
        """The sender has sent everything; close once its syncs are answered."""
        self.reading = False
        self._end_of_stream()
        self._close_when_answered()

    def writeConnectionLost(self) -> None:
        """Only our own ``loseWriteConnection`` would end writing, and nothing calls it."""

    def _end_of_stream(self) -> None:
        """Count a last line the close cut off: it may be cut inside a value, so it is not filed."""
        if self.buffer and not self.skipping and not self.discard_lines:
            self.ingest.reject(protocol.R_TRUNCATED, "TCP stream ended inside a line (%d bytes)"
                               % len(self.buffer))
        self.buffer = b""

    def _close_when_answered(self) -> None:
        if not self.reading and not self.unanswered and self.transport is not None:
            if self.answer_http:
                self.answer_http = False
                self.transport.write(misdirected.answer("native"))
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self.table.touch(self)
        self.metrics.bytes += len(data)
        if not self.reading:  # after an HTTP client's request: nothing more of it is read
            return
        if self.skipping:
            end = data.find(b"\n")
            if end < 0:
                return
            self.skipping = False
            data = data[end + 1:]
        data = self.buffer + data if self.buffer else data
        self.buffer = self._consume(data)

    def _http_client(self, what: str) -> None:
        """An HTTP client on the native port (``curl``, a browser, Telegraf given the wrong
        port): counted once as ``http_request`` and logged with its method and path only (its
        headers may carry a token), answered 400, and closed with nothing of it read as records.
        Before, its request line and headers were refused line by line and it waited for an
        answer until --idle-timeout.

        A request after records (``cat records request | nc``) ends the stream alike: what
        came before it is filed, and the syncs before it are answered before the 400 and
        the close; nothing after it is read, a sync included."""
        self.buffer = b""
        self.reading = False
        self.answer_http = True
        self.ingest.reject(protocol.R_HTTP, misdirected.words("native", what))
        self._close_when_answered()

    def _consume(self, buf: bytes) -> bytes:
        """Handle every complete line or frame in ``buf``; return the incomplete rest.

        Under --auth-keys, consecutive whole frames go to be checked and parsed
        as one submission (``Ingest.submit_signed``), handed over before
        whatever follows them.
        """
        frames: list[bytes] = []
        try:
            return self._consume_into(buf, frames)
        finally:
            if frames:
                self._submit_signed(frames)

    def _consume_into(self, buf: bytes, frames: list[bytes]) -> bytes:
        max_line = self.factory.max_line
        signed = self.auth.required
        while buf:
            if self.discard_bytes or self.discard_lines:
                buf = self._discarded(buf)
                if self.discard_bytes or self.discard_lines:
                    return buf  # all of it the broken frame's so far
                continue
            if buf[:2] == b"#!":
                if buf.startswith(protocol.SIG_PREFIX):
                    try:
                        parts = protocol.split_signed(buf)
                    except protocol.SignatureError as exc:
                        self._submit_signed(frames)
                        self._auth_trouble(exc.reason, exc.detail)
                        buf = self._broken_frame(buf, exc.length)
                        continue
                    if parts is False:
                        return buf  # wait for the rest of the frame
                    if signed:
                        frames.append(buf[:len(buf) - len(parts[5])])
                        buf = parts[5]
                        continue
                    payload, unbound = self.auth.frame(*parts[:5])
                    if payload is None:
                        self.ingest.after(self._auth_failed)
                    else:
                        if unbound:
                            self._rejected(unbound)
                        self._unwrapped(payload)
                    buf = parts[5]
                    continue
                end = buf.find(b"\n")
                if end < 0:
                    return self._incomplete(buf, max_line)
                line, buf = buf[:end].rstrip(b"\r"), buf[end + 1:]
                if line.startswith(protocol.SYNC_PREFIX) or line == _BARE_SYNC:
                    self._submit_signed(frames)
                    self._sync(line[len(protocol.SYNC_PREFIX):])  # a bare one: no token, counted
                elif line == protocol.REASONS_REQUEST:
                    self.wants_reasons = True
                continue  # other control lines are for other readers
            # Plain lines up to the next control line (or the last complete line).
            cut = frame_start(buf)
            end = cut + 1 if cut >= 0 else buf.rfind(b"\n") + 1
            if end <= 0:
                return self._incomplete(buf, max_line)
            self._submit_signed(frames)
            block, buf = buf[:end], buf[end:]
            # An HTTP request line holds " HTTP/"; no part of a valid record may hold "/": one
            # memchr a block, as for "#" (frame_start), and the longer search only where it is.
            request = misdirected.request_line_in(block)
            if request is not None:
                if request[0]:
                    self._lines(block[:request[0]], max_line)
                self._http_client(request[1])
                return b""
            self._lines(block, max_line)
        return buf

    def _lines(self, block: bytes, max_line: int) -> None:
        """Plain lines (whole ones, no control line among them): filed, or refused unsigned."""
        if max_line < protocol.MAX_DATAGRAM_SIZE and len(block) > max_line:
            block = self._drop_long_lines(block, max_line)
        if self.auth.unsigned(block):
            self._ingest(block)
        else:
            self.ingest.after(self._auth_failed)

    def _unwrapped(self, payload: bytes) -> None:
        """A signed frame's payload, unwrapped without --auth-keys: up to the HTTP request it
        holds, if any (a sender that signs what it joins), as under --auth-keys
        (signing.check_frames) and over UDP (``UDPReceiver._unwrap``).  The request is counted
        once as ``http_request``, named by its method and path; its headers (a token) are
        neither refused line by line, quoted in the log, nor journaled.  The frame stays
        accepted and the stream goes on, as with keys: the records before the request are
        filed."""
        payload, what = misdirected.cut(payload)
        if what is not None:
            self.ingest.reject(protocol.R_HTTP, misdirected.words("native", what, "signed frame"))
        if payload:
            self._ingest(payload)

    def _ingest(self, payload: bytes) -> None:
        self.ingest.submit(payload, self._filed, source=self.peer)

    def _submit_signed(self, frames: list[bytes]) -> None:
        """Hand the frames gathered so far over (and empty the list)."""
        if frames:
            self.ingest.submit_signed(b"".join(frames), self._filed, self._verdict, self.peer)
            del frames[:]

    def _verdict(self, refused: bool, unbound: int) -> None:
        """Signed frames admitted or not, in arrival order: the batch's nak, its rejects."""
        if refused:
            self.auth_failed = True
        if unbound:
            self._filed(0, unbound, 0, ((protocol.S_UNBOUND, unbound),))

    def _filed(self, accepted: int, rejected: int, dropped: int, rejects=()) -> None:
        """A payload of the batch filed: its counts, and its rejects' ``(reason, count)``."""
        if accepted and self.first_write is None and self.ingest.journal is not None:
            self.first_write = self.ingest.journal.next_write()  # where this batch starts
        self.accepted += accepted
        self.rejected += rejected
        for reason, count in rejects:
            self.reasons[reason] = self.reasons.get(reason, 0) + count
        if dropped:
            self.busy = True

    def _auth_trouble(self, reason: str, detail: str) -> None:
        self.ingest.reject(reason, detail)
        self.ingest.after(self._auth_failed)

    def _auth_failed(self) -> None:
        self.auth_failed = True

    def _rejected(self, count: int) -> None:
        """Count rejects the listener itself made, in arrival order with the payloads."""
        self.ingest.after(lambda: self._filed(0, count, 0, ((protocol.R_TOO_LONG, count),)))

    def _broken_frame(self, buf: bytes, length: int | None) -> bytes:
        """After a frame's header found broken (counted once, under its reason): the frame
        is refused whole, as a datagram holding it is, its payload with it -- not read on as
        lines that would count again (``sig_missing``) or, signatures optional, be taken.
        Its payload is the ``length`` its header gives (``SignatureError.length``), if it gives
        one that can be; else the lines after it up to the next control line."""
        end = buf.find(b"\n")
        if length is not None:
            self.discard_bytes = length
        else:
            self.discard_lines = True
        if end < 0:  # a header too long to be one: its end is skipped as it comes
            self.skipping = True
            return b""
        return buf[end + 1:]

    def _discarded(self, buf: bytes) -> bytes:
        """``buf`` less what of it is the broken frame's payload (``_broken_frame``)."""
        if self.discard_bytes:
            taken = min(self.discard_bytes, len(buf))
            self.discard_bytes -= taken
            return buf[taken:]
        if buf[:2] == b"#!":
            self.discard_lines = False
            return buf
        cut = frame_start(buf)
        if cut >= 0:
            self.discard_lines = False
            return buf[cut + 1:]
        rest = buf[buf.rfind(b"\n") + 1:]
        if len(rest) >= 2:  # a line of it not yet whole (not a control line): skipped as it comes
            self.skipping = True
            return b""
        return rest  # one byte: a control line may begin there

    def _incomplete(self, buf: bytes, max_line: int) -> bytes:
        if len(buf) > max_line:
            self.ingest.reject(protocol.R_TOO_LONG, "TCP line over %d bytes" % max_line)
            self._rejected(1)
            self.skipping = True
            return b""
        return buf

    def _drop_long_lines(self, block: bytes, max_line: int) -> bytes:
        lines = block.split(b"\n")
        kept = [line for line in lines if len(line) <= max_line]
        if len(kept) != len(lines):
            count = len(lines) - len(kept)
            self.ingest.reject(protocol.R_TOO_LONG,
                               "%s over %d bytes" % (counted(count, "TCP line"), max_line), count)
            self._rejected(count)
        return b"\n".join(kept)

    def _sync(self, token: bytes) -> None:
        token = token.strip()
        if not _TOKEN.match(token):
            self.ingest.reject(protocol.R_SYNTAX, "bad sync token %r" % token[:70])
            return
        self.unanswered += 1
        self.ingest.after(lambda: self._end_batch(token))

    def _end_batch(self, token: bytes) -> None:
        """Everything before the sync is filed and nothing after it: the batch is complete."""
        batch = (token, self.accepted, self.rejected, self.busy, self.auth_failed,
                 self.reasons if self.wants_reasons else None)
        first_write, self.first_write = self.first_write, None
        self.accepted = self.rejected = 0
        self.reasons = {}
        self.busy = self.auth_failed = False
        journal = self.ingest.journal
        if journal is None:
            self._reply(batch, True)
        else:  # the ack promises the batch is on disk: reply once the journal write is done
            journal.when_durable(lambda journaled: self._reply(batch, journaled), first_write)

    def _reply(self, batch: tuple, journaled: bool) -> None:
        token, accepted, rejected, busy, auth_failed, reasons = batch
        if auth_failed or busy or not journaled:
            reason = protocol.NAK_AUTH if auth_failed else protocol.NAK_BUSY
            reply = protocol.format_reply(token, refused=reason)
            self.metrics.naks += 1
        else:
            reply = protocol.format_reply(token, accepted, rejected, reasons=reasons)
            self.metrics.acks += 1
        self.unanswered -= 1
        if self.transport is not None:  # writing to a closed connection is a no-op
            self.transport.write(reply)
            self._close_when_answered()


class TCPFactory(tx_protocol.Factory):
    """Builds receivers for the connections the table admits (caps, --allow, eviction)."""

    def __init__(self, ingest: Ingest, auth: Authenticator, metrics: Metrics, max_line: int,
                 table: ConnectionTable):
        self.ingest = ingest
        self.auth = auth
        self.metrics = metrics
        self.max_line = max_line
        self.table = table

    def buildProtocol(self, addr):
        if not self.table.admit(addr.host):
            return None
        receiver = TCPReceiver(self)
        receiver.peer = addr.host
        return receiver


#: Linux's SO_RCVBUFFORCE (the socket module does not name it): like SO_RCVBUF, but past
#: net.core.rmem_max for a process with CAP_NET_ADMIN.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def set_rcvbuf(sock: socket.socket, size: int) -> int:
    """Ask for a ``size``-byte receive buffer; returns the usable size granted.

    The buffer is what absorbs a burst while the reactor is busy (a flush, a
    collection), and distributions cap SO_RCVBUF at a few hundred KiB to 4 MiB
    (net.core.rmem_max).  A privileged server gets what it asks for; any
    other gets the cap and a warning.
    """
    if sys.platform.startswith("linux"):
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except OSError:  # EPERM without CAP_NET_ADMIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    # Linux reports twice the usable size it granted.
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2


class ListenerService(service.Service):
    """The UDP and TCP ports; stopping it means nothing more is received."""

    name = "listeners"

    def __init__(self, reactor, bind: str, udp_port: int, tcp_port: int, ingest: Ingest,
                 auth: Authenticator, metrics: Metrics, rcvbuf: int, max_line: int,
                 table: ConnectionTable):
        self.reactor = reactor
        self.bind = bind
        self.udp_port = udp_port
        self.tcp_port = tcp_port
        self.udp = UDPReceiver(ingest, auth, metrics, reactor)
        self.factory = TCPFactory(ingest, auth, metrics, max_line, table)
        self.table = table
        self.rcvbuf = rcvbuf
        self.udp_listening: BatchingUDPPort | None = None
        self.tcp_listening = None
        self.rcvbuf_granted = 0
        #: The parser processes that read the UDP socket too, if they do (parsers.py).
        self.shared_with = None

    def startService(self) -> None:
        service.Service.startService(self)
        udp_port = BatchingUDPPort(self.udp_port, self.udp, self.bind, protocol.MAX_DATAGRAM_SIZE,
                                   self.reactor)
        udp_port.allow = self.table.allow or None  # None: the plain recv loop, as fast as before
        listening(udp_port.startListening, "UDP", self.bind, self.udp_port, "--udp-port")
        self.udp_listening = udp_port
        self.udp_port = udp_port.getHost().port
        self._set_rcvbuf(udp_port.socket)
        tcp = listening(lambda: listen_tcp(self.reactor, self.tcp_port, self.factory, self.bind),
                        "TCP", self.bind, self.tcp_port, "--tcp-port")
        self.tcp_listening = tcp
        self.tcp_port = tcp.getHost().port
        self.table.start()
        parsers = self.udp.ingest.parsers
        # With --allow each datagram's source must be checked: parsers would only pass them on,
        # so the reactor reads them itself.  With --auth-keys the parsers check the signatures
        # of what they read (signing.py), and the reactor admits the frames that passed (no
        # replay) as it files them.  EPOLLEXCLUSIVE is Linux's.
        if (parsers is not None and not self.table.allow
                and hasattr(select, "EPOLLEXCLUSIVE")):
            parsers.share_udp(udp_port, self.udp.parsed_elsewhere)
            self.shared_with = parsers
        buffer = self.udp.ingest.buffer
        buffer.on_senders = self._read_senders
        if buffer.wants_senders:  # a VM watched over UDP since the replay
            self._read_senders(True)

    def _read_senders(self, on: bool) -> None:
        """Whoever reads the UDP port reads each datagram's address from now on, or no more."""
        if self.udp_listening is not None:
            self.udp_listening.senders = on
        if self.shared_with is not None:
            self.shared_with.read_senders(on)

    def _set_rcvbuf(self, sock: socket.socket) -> None:
        self.rcvbuf_granted = set_rcvbuf(sock, self.rcvbuf)
        if self.rcvbuf_granted < self.rcvbuf:
            log.warning("UDP receive buffer capped at %d bytes (asked %d): raise "
                        "net.core.rmem_max to absorb bursts", self.rcvbuf_granted, self.rcvbuf)

    def stopService(self):
        """Stop both ports and end open TCP connections (their unacknowledged batches get resent).

        The parsers that read the UDP socket hand over what they read and what
        it still holds first; then the port reads whatever is left and closes.
        """
        service.Service.stopService(self)
        udp_port, self.udp_listening = self.udp_listening, None
        tcp_port, self.tcp_listening = self.tcp_listening, None
        shared, self.shared_with = self.shared_with, None

        def close_udp(_=None):
            closed = defer.maybeDeferred(udp_port.stopListening)
            self.udp.release()
            return closed

        waits = []
        if tcp_port is not None:
            waits.append(defer.maybeDeferred(tcp_port.stopListening))
        if udp_port is not None:
            waits.append(shared.stop_udp().addCallback(close_udp) if shared else close_udp())
        self.table.stop()
        self.table.close_all()
        return defer.gatherResults(waits, consumeErrors=True)

