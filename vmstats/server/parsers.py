"""Parser processes: the regex work of the receive path on the other cores.

On CPython one core parses about 250,000 canonical records a second at
best, and the reactor also has the sockets, the journal and the buffer to
look after.  So payloads are handed to a few long-lived parser processes
(``parseworker.py``) over their stdin, framed, and the ``Parsed`` columns come
back over stdout as ``marshal`` data; Twisted's process transport does all of
the I/O, so the reactor never blocks and no thread is involved.

A parser that dies, or answers with something other than a frame, fails its
outstanding payloads (the reactor parses those itself: nothing is lost) and
is started again.  So is one that answers nothing for ``--parser-timeout``
seconds while it holds payloads (stopped, swapped out, looping): killed, its
payloads are parsed here like a dead one's.  An idle parser is sent an empty
payload now and then, so one stuck while it reads the UDP socket (no payloads
of ours) is found the same way.  While every parser already has ``MAX_IN_FLIGHT`` bytes to
parse the reactor parses the next payload itself, so a saturated pool slows the
reactor's reads (and TCP senders) instead of growing a queue without bound.

The parsers also read the UDP socket themselves once the listener shares it
(``share_udp``): the reactor then only files what they send.  It stops
reading the socket when the first parser says it reads it, and starts again
when the last one ends, so datagrams are read while any process can.
"""

import fcntl
import logging
import marshal
import os
import sys
from collections.abc import Callable

from twisted.application import service
from twisted.internet import defer, error, main, protocol

from vmstats.server.every import Every
from vmstats.server.metrics import Metrics, RateLimitedLog
from vmstats.server.parse import Parsed
from vmstats.server.parseworker import READY, REPLY, REQUEST, SENDERS, STOP_UDP
from vmstats.words import counted

log = logging.getLogger(__name__)

#: Payload bytes waiting in one parser before the reactor parses the next payload itself:
#: about 7,000 canonical records, some 25 ms of a parser's work.
MAX_IN_FLIGHT = 1 << 20
#: Bytes each pipe to and from a parser holds (Linux's default limit for unprivileged users).
PIPE_BYTES = 1 << 20
#: Seconds before a parser that died is started again (a crash loop costs little).
RESTART_DELAY = 1.0
#: Seconds a parser gets to exit after its stdin closes at shutdown, and to hand over what the
#: UDP socket holds when the listener stops.
STOP_GRACE = 5.0
#: Seconds between the watchdog's looks at the parsers (``--parser-timeout`` is what it enforces).
WATCH_INTERVAL = 1.0


class ParserDied(RuntimeError):
    """The parser process ended with payloads outstanding; the reactor parses them."""


class _Parser(protocol.ProcessProtocol):
    """One parser process: requests out on stdin, replies in on stdout, in order."""

    def __init__(self, pool: "ParserService"):
        self.pool = pool
        self.waiting: dict[int, tuple[defer.Deferred, int]] = {}
        self.in_flight_bytes = 0
        self.next_seq = 0
        self.buf = bytearray()
        self.ended: defer.Deferred = defer.Deferred()
        self.pid = None
        #: The reactor's time of this parser's last answer, or of the request that found it
        #: with none outstanding: the watchdog's measure of how long it has kept us waiting.
        self.heard = pool.reactor.seconds()
        self.killed = False

    def connectionMade(self) -> None:
        self.pid = self.transport.pid
        # A payload (up to ~700 KB of UDP datagrams, 64 KiB from TCP) goes through a 64 KiB pipe
        # in pieces, a reactor turn each; 1 MiB pipes take it whole and halve the copying cost.
        for pipe in self.transport.pipes.values():
            try:
                fcntl.fcntl(pipe.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
            except (OSError, ValueError):
                pass  # not Linux, or past fs.pipe-max-size: the default pipe works, slower
        reader = self.transport.pipes.get(1)
        if reader is not None:
            reader.doRead = lambda: self.pull(reader)
        if self.pool.auth_config is not None:  # before any request: the keys (--auth)
            self.transport.write(REQUEST.pack(0, 0.0, len(self.pool.auth_config)))
            self.transport.write(self.pool.auth_config)
        if self.pool.senders:
            self.read_senders(True)

    def pull(self, reader=None):
        """Read every answer waiting in the pipe; what ``FileDescriptor.doRead`` returns.

        Twisted's process reader takes 8 KiB a reactor turn, 30 turns for the
        answer to a 256 KiB TCP read; this takes what the pipe holds at once.
        """
        reader = reader or self.transport.pipes.get(1)
        if reader is None:
            return None
        try:
            data = os.read(reader.fileno(), PIPE_BYTES)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return main.CONNECTION_LOST
        if not data:
            return main.CONNECTION_DONE
        reader.dataReceived(data)
        return None

    def stop_udp(self) -> defer.Deferred:
        """Ask the process to stop reading the UDP socket; fires after what it read is in."""
        return self.send(None, 0.0)

    def read_senders(self, on: bool) -> None:
        """Ask the process to read each datagram's address (or no more): parseworker.SENDERS.
        Nothing waits for its answer (a process that died before it is gone, and its
        successor is told at its start)."""
        self.send(None, 1.0 if on else 0.0, SENDERS).addErrback(lambda _failure: None)

    def send(self, data: bytes | None, now: float, word: int = STOP_UDP) -> defer.Deferred:
        """A request: a payload to parse, or (None) a word with no payload, ``word``: to stop
        reading the UDP socket, or ``SENDERS``."""
        seq = self.next_seq
        self.next_seq += 1
        waiting: defer.Deferred = defer.Deferred()
        size = 0 if data is None else len(data)
        if not self.waiting:
            self.heard = self.pool.reactor.seconds()
        self.waiting[seq] = (waiting, size)
        self.in_flight_bytes += size
        if data is None:
            self.transport.write(REQUEST.pack(seq, now, word))
        else:
            self.transport.writeSequence([REQUEST.pack(seq, now, size), data])
        return waiting

    def outReceived(self, data: bytes) -> None:
        self.heard = self.pool.reactor.seconds()
        buf = self.buf
        buf += data
        pos, size = 0, len(buf)
        header = REPLY.size
        while size - pos >= header:
            seq, length = REPLY.unpack_from(buf, pos)
            if size - pos - header < length:
                break
            start = pos + header
            pos = start + length
            if seq >= READY:  # READY or UDP_BATCH: no request waits for these
                if not self._unrequested(seq, buf[start:pos]):
                    return
                continue
            entry = self.waiting.pop(seq, None)
            if entry is None:
                self._broken("a reply to payload %d that was not sent" % seq)
                return
            self.in_flight_bytes -= entry[1]
            try:
                parsed = marshal.loads(buf[start:pos]) if length else None
            except (ValueError, EOFError, TypeError) as exc:
                self._broken("an unreadable reply (%s)" % exc)
                entry[0].callback(None)
                return
            entry[0].callback(parsed)
        del buf[:pos]

    def _unrequested(self, seq: int, body: bytearray) -> bool:
        """Datagrams the parser read (UDP_BATCH), or its word that it reads them (READY).

        False if the datagrams are unreadable (the parser is then stopped).
        """
        if seq == READY:
            self.pool.reading_udp(self)
            return True
        try:
            parsed, payload, datagrams, size, frames, checked, senders = marshal.loads(body)
        except (ValueError, EOFError, TypeError) as exc:
            self._broken("unreadable datagrams (%s)" % exc)
            return False
        try:
            self.pool.deliver(parsed, payload, datagrams, size, frames, checked, senders)
        except Exception:  # a bug in filing: say so, and keep reading this parser's replies
            log.exception("filing datagrams from parser %s", self.pid)
        return True

    def errReceived(self, data: bytes) -> None:
        self.pool.stderr.emit("parser %s: %s", self.pid, data.decode("utf-8", "replace").rstrip())

    def _broken(self, what: str) -> None:
        log.error("parser %s sent %s: stopping it", self.pid, what)
        self.kill()

    def kill(self) -> None:
        self.killed = True
        try:
            self.transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass

    def processEnded(self, reason) -> None:
        waiting, self.waiting = self.waiting, {}
        self.in_flight_bytes = 0
        for entry, _size in waiting.values():
            entry.errback(ParserDied("parser %s ended" % self.pid))
        self.pool.ended(self, reason)
        self.ended.callback(None)


class ParserService(service.Service):
    """A fixed number of parser processes, kept running while the service runs."""

    name = "parsers"

    def __init__(self, reactor, count: int, max_future: int, max_past: int, metrics: Metrics,
                 timeout: float = 10.0):
        self.reactor = reactor
        self.count = count
        #: Seconds a parser may hold payloads without a word before it is killed (--parser-timeout).
        self.timeout = timeout
        self._watchdog = Every(reactor, WATCH_INTERVAL, self._watch, "the parsers' watchdog")
        self.args = [sys.executable, "-m", "vmstats.server.parseworker", str(max_future),
                     str(max_past)]
        self.metrics = metrics
        #: With --auth-keys, the keys each parser is given on its stdin (signing.keys_config).
        self.auth_config: bytes | None = None
        self.parsers: list[_Parser] = []
        self.stderr = RateLimitedLog(log, "parser message")
        #: The UDP port the parsers read while it listens, what files their datagrams, and the
        #: parsers that said they read it.
        self.udp = None
        self.deliver: Callable[[Parsed | None, bytes, int, int, list[bytes], tuple | None,
                                tuple | None], None] | None = None
        self.udp_readers: set[_Parser] = set()
        #: Whether the parsers read each datagram's address (``read_senders``; senders.py).
        self.senders = False

    def share_udp(self, port, deliver: Callable) -> None:
        """Let parsers started from now on read ``port``'s socket and ``deliver`` what they read."""
        self.udp, self.deliver = port, deliver

    def read_senders(self, on: bool) -> None:
        """Have every parser read each datagram's address from now on, or no more (those
        started later are told at their start)."""
        if on == self.senders:
            return
        self.senders = on
        for parser in self.parsers:
            if parser.transport is not None:
                parser.read_senders(on)

    def reading_udp(self, parser: _Parser) -> None:
        if self.udp is None or parser not in self.parsers:
            return
        if not self.udp_readers:
            self.udp.stopReading()
        self.udp_readers.add(parser)

    def stop_udp(self) -> defer.Deferred:
        """Stop the parsers reading the socket; fires once they sent what it held.

        A parser that does not answer within ``STOP_GRACE`` is left to the
        parsers' own stop (its datagrams are lost with it: it was stuck).
        """
        self.udp = None
        self.udp_readers.clear()
        asked = [parser.stop_udp() for parser in self.parsers if parser.transport is not None]
        done = defer.DeferredList(asked, consumeErrors=True)
        return done.addTimeout(STOP_GRACE, self.reactor).addErrback(self._stuck)

    def _stuck(self, failure) -> None:
        failure.trap(defer.TimeoutError)
        log.error("a parser did not hand over its UDP datagrams within %.0fs", STOP_GRACE)

    def startService(self) -> None:
        service.Service.startService(self)
        for _ in range(self.count):
            self._spawn()
        self._watchdog.start()

    def _watch(self) -> None:
        """Kill a parser that has kept payloads for ``timeout`` seconds without a word; probe
        one that has said nothing for half that with nothing outstanding."""
        now = self.reactor.seconds()
        for parser in list(self.parsers):
            if parser.transport is None or parser.killed:
                continue
            quiet = now - parser.heard
            if parser.waiting:
                if quiet > self.timeout:
                    self.metrics.parser_stalls += 1
                    log.error("parser %s answered nothing for %.0fs with %s waiting: "
                              "stopping it (the reactor parses them)", parser.pid, quiet,
                              counted(len(parser.waiting), "payload"))
                    parser.kill()
            elif quiet > self.timeout / 2:
                parser.send(b"", now).addErrback(lambda _failure: None)

    def _spawn(self) -> None:
        if not self.running:
            return
        env = dict(os.environ)
        # The parser imports this very package, installed or not.
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        parser = _Parser(self)
        args = self.args + (["--auth"] if self.auth_config is not None else [])
        if self.udp is None:
            self.reactor.spawnProcess(parser, args[0], args, env=env)
        else:
            udp_fd = self.udp.fileno()
            self.reactor.spawnProcess(parser, args[0], args + ["--udp-fd", "3"], env=env,
                                      childFDs={0: "w", 1: "r", 2: "r", 3: udp_fd})
        self.parsers.append(parser)

    def pids(self) -> list[int]:
        return [p.pid for p in self.parsers if p.pid is not None]

    def has_room(self) -> bool:
        """Is some parser below its share?  (Otherwise the caller parses the payload itself.)

        Answers that already wait in the pipes are read first: the reactor may
        have been busy, and parsing here while a parser sits idle with its
        answer unread would waste the other core.
        """
        if self._room():
            return True
        for parser in list(self.parsers):
            if parser.waiting and parser.transport is not None:
                parser.pull()  # nothing there: no harm; an end of file is seen again by the reactor
        return self._room()

    def _room(self) -> bool:
        for parser in self.parsers:
            if parser.in_flight_bytes < MAX_IN_FLIGHT:
                return True
        return False

    def parse(self, data: bytes, now: float) -> defer.Deferred:
        """``Parsed`` columns of ``data`` from the least busy parser.

        The Deferred fires with None if the parser failed on the payload, and
        fails with ParserDied if the process ended first: the caller parses it.
        """
        parser = min(self.parsers, key=lambda p: p.in_flight_bytes)
        return parser.send(data, now)

    def ended(self, parser: _Parser, reason) -> None:
        if parser in self.parsers:
            self.parsers.remove(parser)
        if parser in self.udp_readers:
            self.udp_readers.discard(parser)
            if not self.udp_readers and self.udp is not None:
                self.udp.startReading()  # no parser reads it now: the reactor does
        if not self.running:
            return
        self.metrics.parser_deaths += 1
        log.error("parser %s ended (%s); starting another in %.0fs", parser.pid,
                  reason.value, RESTART_DELAY)
        self.reactor.callLater(RESTART_DELAY, self._spawn)

    def stopService(self) -> defer.Deferred:
        """Close the parsers' stdin (they exit at end of input); kill any that linger."""
        service.Service.stopService(self)
        self._watchdog.stop()
        ends = []
        for parser in list(self.parsers):
            ends.append(parser.ended)
            parser.transport.closeStdin()
            self.reactor.callLater(STOP_GRACE, _kill, parser)
        return defer.gatherResults(ends, consumeErrors=True)


def _kill(parser: _Parser) -> None:
    if not parser.ended.called:
        try:
            parser.transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass
