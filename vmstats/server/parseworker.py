"""A parser process: framed payloads in on stdin, ``Parsed`` columns out on stdout.

Started and fed by ``parsers.ParserService``; this module holds the framing both sides use
and imports nothing heavier than the parser.  It ignores SIGINT and SIGTERM:
the aggregator still needs it while it drains after a signal, and it exits
when its stdin closes (the aggregator is done, or died); the kernel kills it
when the aggregator dies, even stopped then (lifeline.py).

Given the aggregator's UDP socket (``--udp-fd``), it also reads datagrams
itself, parses them and sends the columns with the payload (the journal
needs it) as unrequested replies.  Reading a datagram costs ~1 us of
``recv`` and handing it over a pipe to a parser nearly as much: with one
record per datagram the reactor spent about 30% of its time on those alone,
on the one core that also files every record.  Here the work is spread over
the parser processes, which the kernel wakes one at a time
(``EPOLLEXCLUSIVE``) as datagrams arrive.
"""

import marshal
import os
import select
import signal
import socket
import struct
import sys
import time

from vmstats import protocol
from vmstats.protocol import MAX_DATAGRAM_SIZE
from vmstats.server import lifeline
from vmstats.server.formats import misdirected
from vmstats.server.parse import MAX_DETAILS, Parsed, Parser, has_frame
from vmstats.server.signing import FrameCheck, check_frames, checker_from, datagram_frames, split_frames

#: Request: sequence number, the reactor's time (for the timestamp window), payload length.
REQUEST = struct.Struct("!QdI")
#: Reply: sequence number, length of the marshal data (0: the parser failed on this payload).
REPLY = struct.Struct("!QI")
#: A request with this length carries no payload: stop reading the UDP socket (the listener
#: is stopping).  Its reply comes once the datagrams already queued are sent.
STOP_UDP = 0xFFFFFFFF
#: A request with this length carries no payload either: read each datagram's address from now
#: on (the reactor's time field 1.0) or no more (0.0); the reactor asks while a VM is watched
#: over UDP (senders.py).  Its reply is empty.
SENDERS = 0xFFFFFFFE
#: Reply sequence numbers that answer no request.  UDP_BATCH: datagrams this process read,
#: marshalled as ``(Parsed or None, payload, datagrams, bytes, frames, checked, senders)``, where
#: ``checked`` is None but under --auth-keys (``signing.Checked``) and ``senders`` None but while
#: the addresses are read (``SENDERS``): the payload's datagrams' lengths and addresses; READY:
#: it reads the UDP socket from now on, so the reactor need not.
UDP_BATCH = (1 << 64) - 1
READY = (1 << 64) - 2
#: A batch of UDP datagrams becomes one payload once this much has gathered, or this long
#: after the first one, whichever process reads them (here, or the reactor: listeners.py).
COALESCE_BYTES = 64 << 10
COALESCE_SECONDS = 0.002


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    lifeline.killed_with_parent()  # stopped when the aggregator dies, it reads no end of file
    parser = Parser(max_future=int(argv[0]), max_past=int(argv[1]))
    checker = None
    if "--auth" in argv:  # the keys come first on stdin (signing.keys_config), never in argv
        header = _read_exactly(REQUEST.size)
        config = None if header is None else _read_exactly(REQUEST.unpack(header)[2])
        if config is None:
            return 0
        checker = checker_from(config)
    udp = None
    if "--udp-fd" in argv:
        udp = socket.socket(fileno=int(argv[argv.index("--udp-fd") + 1]))
    return Worker(parser, udp, checker).run()


class Worker:
    """Answers requests in order and, with a UDP socket, reads and parses datagrams between them.

    With a ``checker`` (--auth-keys) it also checks signed frames -- those
    it reads, and those the reactor hands it -- before parsing them.
    """

    def __init__(self, parser: Parser, udp: socket.socket | None = None,
                 checker: FrameCheck | None = None):
        self.parser = parser
        self.udp = udp
        self.checker = checker
        self.out = sys.stdout.buffer
        #: Whether each datagram's address is read (``SENDERS``).
        self.senders = False

    def run(self) -> int:
        if self.udp is None:
            while self.request():
                pass
            return 0
        self.udp.setblocking(False)
        poll = select.epoll()
        poll.register(0, select.EPOLLIN)
        poll.register(self.udp.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)
        self.reply(READY, b"")
        while True:
            for fd, _events in poll.poll():
                if fd != 0:
                    if self.udp is not None:
                        self.datagrams(COALESCE_BYTES, COALESCE_SECONDS)
                elif not self.request(poll):
                    return 0

    def request(self, poll=None) -> bool:
        """Answer one request from stdin; False at its end."""
        header = _read_exactly(REQUEST.size)
        if header is None:
            return False
        seq, now, length = REQUEST.unpack(header)
        if length == SENDERS:
            self.senders = bool(now)
            self.reply(seq, b"")
            return True
        if length == STOP_UDP:
            if self.udp is not None:
                # What the socket holds was received before the stop: send it, bounded by the
                # buffer's size so that senders that keep sending cannot hold the stop up.
                self.datagrams(self.udp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), 0)
                if poll is not None:
                    poll.unregister(self.udp.fileno())
                self.udp.close()
                self.udp = None
            self.reply(seq, b"")
            return True
        data = _read_exactly(length)
        if data is None:
            return False
        self.reply(seq, self.parse(seq, data, now))
        return True

    def parse(self, seq: int, data: bytes, now: float) -> bytes:
        try:
            if self.checker is not None and data.startswith(protocol.SIG_PREFIX):
                return marshal.dumps(check_frames(self.checker, self.parser, split_frames(data),
                                                  now))
            return marshal.dumps(self.parser.parse(data, now))
        except Exception as exc:  # a bug, not bad input (the parser rejects that): say, go on
            print("payload %d: %r" % (seq, exc), file=sys.stderr, flush=True)
            return b""

    def datagrams(self, limit: int, window: float) -> None:
        """Read datagrams up to ``limit`` bytes or until none came for ``window``; send them.

        One wait for the rest of the window when the socket runs dry, not one
        per datagram: a datagram that arrives meanwhile is the other parsers' to take.
        """
        if self.senders:
            self.datagrams_from(limit, window)
            return
        recv = self.udp.recv
        batch: list[bytes] = []
        size = 0
        waited = window <= 0
        started = time.monotonic()
        while size < limit:
            try:
                data = recv(MAX_DATAGRAM_SIZE)
            except (BlockingIOError, InterruptedError):
                left = window - (time.monotonic() - started)
                if waited or left <= 0:
                    break
                waited = True
                time.sleep(left)
                continue
            except ConnectionRefusedError:  # an ICMP error for an earlier send: not ours
                continue
            size += len(data)
            batch.append(data)
        if batch:
            self.send_datagrams(batch)

    def datagrams_from(self, limit: int, window: float) -> None:
        """``datagrams``, reading each one's address too (``recvfrom``: while asked, SENDERS)."""
        recvfrom = self.udp.recvfrom
        batch: list[bytes] = []
        addresses: list[str] = []
        size = 0
        waited = window <= 0
        started = time.monotonic()
        while size < limit:
            try:
                data, address = recvfrom(MAX_DATAGRAM_SIZE)
            except (BlockingIOError, InterruptedError):
                left = window - (time.monotonic() - started)
                if waited or left <= 0:
                    break
                waited = True
                time.sleep(left)
                continue
            except ConnectionRefusedError:
                continue
            size += len(data)
            batch.append(data)
            addresses.append(address[0])
        if batch:
            self.send_datagrams(batch, addresses)

    def send_datagrams(self, batch: list[bytes], addresses: list[str] | None = None) -> None:
        """Plain datagrams joined and parsed as one payload; frames (``#!``) as they are.
        ``addresses``: each datagram's sender, where read (sent on as the payload's senders)."""
        if self.checker is not None:
            self.send_signed(batch)
            return
        payload = b"\n".join(batch)
        frames: list[bytes] = []
        if has_frame(payload):  # one scan, not a test per datagram
            if addresses is not None:
                addresses = [address for data, address in zip(batch, addresses, strict=True)
                             if data[:2] != b"#!"]
            frames = [data for data in batch if data[:2] == b"#!"]
            batch = [data for data in batch if data[:2] != b"#!"]
            payload = b"\n".join(batch)
        parsed = None
        datagrams, size = len(batch), sum(map(len, batch))
        if batch:
            try:
                parsed = self.parser.parse(payload, time.time())
                if parsed[4]:  # lines were refused: an HTTP request sent here would be some
                    payload, parsed = self.without_requests(batch, payload, parsed)
            except Exception as exc:  # a bug: the reactor takes these datagrams as it reads its own
                print("datagrams: %r" % (exc,), file=sys.stderr, flush=True)
                # As they came, not joined: the reactor's receiver cuts the HTTP requests from
                # them, at a datagram's start or after records (listeners.py), before it parses
                # the rest.  Joined, they were parsed line by line, a request's headers refused
                # as records (and journaled with them).
                self.reply(UDP_BATCH, marshal.dumps((None, b"", 0, 0, batch + frames, None,
                                                     None)))
                return
        senders = None
        if addresses and len(payload) == size + datagrams - 1:  # (no HTTP request cut from it)
            senders = (list(map(len, batch)), addresses)
        self.reply(UDP_BATCH, marshal.dumps((parsed, payload, datagrams, size, frames, None,
                                             senders)))

    def without_requests(self, batch: list[bytes], payload: bytes,
                         parsed: Parsed) -> tuple[bytes, Parsed]:
        """``payload`` and its columns without the HTTP requests its datagrams hold (curl, or
        a client given this port for the HTTP port's), at a datagram's start or after its
        records (misdirected.among): each is counted once as ``http_request`` and named by its
        method and path, never read as lines, so its headers (``Authorization:Token ...``) are
        neither quoted in the log nor journaled; the records before it are kept.  Looked for
        only in a payload some of whose lines were refused, as a request line always is: a
        payload of records pays nothing for it."""
        kept, requests = misdirected.among(batch)
        if not requests:
            return payload, parsed
        payload = b"\n".join(kept)
        parsed = self.parser.parse(payload, time.time()) if kept else ([], [], [], [], [], [], [])
        parsed[4].append((protocol.R_HTTP, len(requests)))
        parsed[4].sort()
        room = max(MAX_DETAILS - len(parsed[5]), 0)
        parsed[5].extend("%s: %s" % (protocol.R_HTTP, misdirected.words("native", what, "UDP"))
                         for what in requests[:room])
        return payload, parsed

    def send_signed(self, batch: list[bytes]) -> None:
        """Datagrams under --auth-keys: each must be one whole signed frame.

        The frames that pass the checks are parsed as one payload; the
        refused ones and unsigned lines are counted in the answer
        (``signing.Checked``), and the reactor admits the rest (no replay).
        """
        try:
            frames, refused = datagram_frames(batch)
            parsed, payloads, accepted, failed = check_frames(self.checker, self.parser, frames,
                                                              time.time())
        except Exception as exc:  # a bug: the reactor checks these datagrams itself
            print("signed datagrams: %r" % (exc,), file=sys.stderr, flush=True)
            self.reply(UDP_BATCH, marshal.dumps((None, b"", 0, 0, batch, None, None)))
            return
        checked = (parsed, payloads, accepted, refused + failed)
        self.reply(UDP_BATCH, marshal.dumps((None, b"", len(batch), sum(map(len, batch)), [],
                                             checked, None)))

    def reply(self, seq: int, body: bytes) -> None:
        self.out.write(REPLY.pack(seq, len(body)))
        self.out.write(body)
        self.out.flush()


def _read_exactly(length: int) -> bytes | None:
    """``length`` bytes of stdin, or None at its end.

    Unbuffered: a buffered reader could take the next request into its buffer,
    where the poll on the descriptor would never see it.
    """
    parts = []
    while length:
        data = os.read(0, min(length, 1 << 20))
        if not data:
            return None
        parts.append(data)
        length -= len(data)
    return b"".join(parts)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
