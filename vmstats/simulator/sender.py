"""Pushing encoded records to a real server: UDP datagrams, or TCP with acknowledgements.

UDP has no flow control: a sender faster than the server overruns the
server's socket buffer and the kernel drops datagrams where nobody counts
them, so the UDP sender paces itself (``rate``).  TCP follows the shared
acknowledgement contract (docs/PROTOCOL.md): each batch ends with
``#!sync <token>``; the server answers ``#!ack`` (held: forget the batch) or
``#!nak`` (not held: resend it); a lost connection resends every batch not
yet acknowledged.  Several batches are kept in flight so a round trip does
not idle the link, and the window bounds what a slow server can make us
hold.  The server keeps one record per (VM, timestamp), so a resend is
harmless.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from vmstats.client.transport import parse_server
from vmstats.protocol import SAFE_DATAGRAM_SIZE, SYNC_PREFIX, pack_lines, parse_reply
from vmstats.words import counted

TRANSPORTS = ("udp", "tcp")


class SendError(RuntimeError):
    """The server could not be reached, or did not take the records in time."""


@dataclass
class SendStats:
    """What a sender did; ``accepted``/``rejected`` come from TCP acks (UDP cannot know)."""

    transport: str
    records: int = 0
    payloads: int = 0
    bytes: int = 0
    accepted: int = 0
    rejected: int = 0
    resent_batches: int = 0
    reconnects: int = 0
    naks: dict = field(default_factory=dict)
    unacknowledged: int = 0
    elapsed: float = 0.0

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class Pacer:
    """Keeps a sender at or below ``rate`` records per second (0 or None: no limit)."""

    def __init__(self, rate: float | None):
        self.rate = rate or 0
        self.start = time.monotonic()
        self.sent = 0

    def wait(self, records: int) -> None:
        self.sent += records
        if self.rate:
            ahead = self.sent / self.rate - (time.monotonic() - self.start)
            if ahead > 0:
                time.sleep(ahead)


class UdpSender:
    """Packs lines into datagrams of at most SAFE_DATAGRAM_SIZE bytes and sends them."""

    def __init__(self, host: str, port: int, rate: float | None = None, limit: int = SAFE_DATAGRAM_SIZE):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.address = (host, port)
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sock.connect(self.address)
        self.limit = limit
        self.pacer = Pacer(rate)
        self.stats = SendStats("udp")
        self._started = time.monotonic()

    def send(self, lines: list[bytes]) -> None:
        for payload in pack_lines(lines, self.limit):
            self.send_payload(payload, payload.count(b"\n") + 1)

    def send_payload(self, payload: bytes, records: int) -> None:
        """One datagram already packed (at most the safe size) holding ``records`` lines."""
        self.pacer.wait(records)
        while True:
            try:
                self.sock.send(payload)
                break
            except OSError as exc:
                if exc.errno in (errno.ENOBUFS, errno.EAGAIN):
                    time.sleep(0.001)
                    continue
                if exc.errno == errno.ECONNREFUSED:  # an earlier datagram met a closed port
                    raise SendError("UDP %s:%d: connection refused (no server listening)"
                                    % self.address) from None
                raise SendError("UDP %s:%d: %s" % (self.address + (exc.strerror,))) from None
        self.stats.records += records
        self.stats.payloads += 1
        self.stats.bytes += len(payload)

    def close(self, timeout: float = 0.0) -> SendStats:
        self.sock.close()
        self.stats.elapsed = time.monotonic() - self._started
        return self.stats


class TcpSender:
    """The acknowledged TCP sender: batches with ``#!sync``, a window in flight, resends."""

    def __init__(self, host: str, port: int, batch: int = 1000, window: int = 8, rate: float | None = None,
                 timeout: float = 60.0, connect_timeout: float = 5.0):
        self.address = (host, port)
        self.batch = batch
        self.window = window
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.pacer = Pacer(rate)
        self.stats = SendStats("tcp")
        self._started = time.monotonic()
        self._serial = 0
        self._queue: deque = deque()  # batches to send: (serial, payload, records)
        self._flight: OrderedDict = OrderedDict()  # token -> (serial, payload, records), sent, unacked
        self._out = bytearray()
        self._in = b""
        self._sock: socket.socket | None = None
        self._selector = selectors.DefaultSelector()
        self._resume_at = 0.0  # after a busy nak, give the server a moment
        self._backoff = 0.05
        self._progress = time.monotonic()
        self._connect(first=True)

    # -- public -----------------------------------------------------------------------------------
    def send(self, lines: list[bytes]) -> None:
        for start in range(0, len(lines), self.batch):
            chunk = lines[start:start + self.batch]
            self.send_payload(b"\n".join(chunk) + b"\n", len(chunk))

    def send_payload(self, payload: bytes, records: int) -> None:
        """One batch already joined (newline-terminated lines) holding ``records`` records."""
        self._serial += 1
        self._queue.append((self._serial, payload, records))
        self.stats.records += records
        self.pacer.wait(records)
        self._pump(0.0)
        while len(self._queue) + len(self._flight) >= self.window:
            self._pump(0.5)

    def close(self, timeout: float | None = None) -> SendStats:
        """Wait until every batch is acknowledged (or ``timeout``), then disconnect."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            while (self._queue or self._flight) and time.monotonic() < deadline:
                self._pump(min(0.5, max(0.0, deadline - time.monotonic())), deadline)
        finally:
            self.stats.unacknowledged = self._pending()
            self._disconnect()
            self._selector.close()
            self.stats.elapsed = time.monotonic() - self._started
        return self.stats

    # -- the loop ---------------------------------------------------------------------------------
    def _pending(self) -> int:
        return sum(b[2] for b in self._queue) + sum(b[2] for b in self._flight.values())

    def _pump(self, wait: float, deadline: float | None = None) -> None:
        """One round of I/O: move queued batches out, read replies; reconnect if the link broke."""
        now = time.monotonic()
        if deadline is None and now - self._progress > self.timeout:
            raise SendError("TCP %s:%d: no acknowledgement for %.0fs (%s unacknowledged)"
                            % (self.address + (self.timeout, counted(self._pending(), "record"))))
        if self._sock is None:
            self._connect()
            return
        while self._queue and now >= self._resume_at and len(self._out) < (1 << 18):
            entry = self._queue.popleft()
            token = b"s%d.%d" % (entry[0], self.stats.resent_batches)
            self._flight[token] = entry
            self._out += entry[1] + SYNC_PREFIX + token + b"\n"
        self._selector.modify(self._sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if self._out else 0))
        if self._queue and not self._out and now < self._resume_at:
            wait = min(wait, self._resume_at - now) if wait else 0.0
        for _key, mask in self._selector.select(wait):
            try:
                if mask & selectors.EVENT_WRITE and self._out:
                    sent = self._sock.send(self._out)
                    del self._out[:sent]
                    self.stats.bytes += sent
                if mask & selectors.EVENT_READ:
                    data = self._sock.recv(65536)
                    if not data:
                        raise ConnectionResetError("server closed the connection")
                    self._replies(data)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._lost()

    def _replies(self, data: bytes) -> None:
        self._in += data
        *lines, self._in = self._in.split(b"\n")
        for line in lines:
            reply = parse_reply(line)
            if reply is None:
                continue
            token, accepted, rejected, refused = reply
            entry = self._flight.pop(token, None)
            if entry is None:
                continue
            if refused is None:
                self.stats.accepted += accepted
                self.stats.rejected += rejected
                self.stats.payloads += 1
                self._progress = time.monotonic()
                self._backoff = 0.05
            else:
                self.stats.naks[refused] = self.stats.naks.get(refused, 0) + 1
                self._requeue([entry])
                self._resume_at = time.monotonic() + self._backoff
                self._backoff = min(2.0, self._backoff * 2)

    def _requeue(self, entries: Iterable[tuple]) -> None:
        """Put batches back in front of the queue, oldest first, to be sent again."""
        entries = sorted(entries)
        self.stats.resent_batches += len(entries)
        self._queue.extendleft(reversed(entries))

    def _lost(self) -> None:
        self._disconnect()
        self._requeue(self._flight.values())
        self._flight.clear()
        self._out.clear()
        self._in = b""
        self.stats.reconnects += 1
        time.sleep(min(2.0, self._backoff))
        self._backoff = min(2.0, self._backoff * 2)

    def _connect(self, first: bool = False) -> None:
        try:
            sock = socket.create_connection(self.address, timeout=self.connect_timeout)
        except OSError as exc:
            if first or time.monotonic() - self._progress > self.timeout:
                raise SendError("TCP %s:%d: %s" % (self.address + (exc.strerror or exc,))) from None
            time.sleep(min(2.0, self._backoff))
            self._backoff = min(2.0, self._backoff * 2)
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._selector.register(sock, selectors.EVENT_READ)

    def _disconnect(self) -> None:
        if self._sock is not None:
            try:
                self._selector.unregister(self._sock)
            except (KeyError, ValueError):
                pass
            self._sock.close()
            self._sock = None


def cut_payloads(lines: list[bytes], transport: str, batch: int = 1000) -> list[tuple[bytes, int]]:
    """``(payload, records)`` of encoded lines: packed datagrams (UDP) or ``batch``-line batches (TCP)."""
    if transport == "udp":
        return [(payload, payload.count(b"\n") + 1) for payload in pack_lines(lines)]
    return [(b"\n".join(lines[i:i + batch]) + b"\n", min(batch, len(lines) - i))
            for i in range(0, len(lines), batch)]


def open_sender(transport: str, server: str, rate: float | None = None, **options):
    """A UdpSender or TcpSender for ``HOST:PORT``; raises ValueError/SendError readably."""
    host, port = parse_server(server)
    if transport == "udp":
        return UdpSender(host, port, rate=rate)
    if transport == "tcp":
        return TcpSender(host, port, rate=rate, **options)
    raise ValueError("transport must be udp or tcp, got %r" % transport)
