"""The edge: other formats' ports, their decoders, and the hand-off to the native ingest path.

Each format listens on a port of its own (``--influx-port``, ``--collectd-port``,
``--graphite-port``; off unless asked for), so the native ports and their
tuned fast path never look at anything else.  Every payload is decoded into
samples, counter samples become rates, the minute assembler gathers them,
and each completed one-minute record is encoded in the native format and
submitted to ``Ingest`` like any payload the native listeners receive: the
same parsing, journal, buffer, flusher and per-VM logs.  Minutes still open
are in memory and in the journal (journaling.py): each payload is journaled
as its samples go in, and a restart rebuilds the open minutes and counters.
"""

import bisect
import logging
from collections.abc import Callable
from operator import attrgetter
from typing import NamedTuple

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet import protocol as tx_protocol
from twisted.internet.error import CannotListenError, ConnectionDone
from twisted.python.failure import Failure

from vmstats import protocol
from vmstats.server.connections import ConnectionTable, listen_error, listen_tcp
from vmstats.server.every import Every
from vmstats.server.formats import (
    R_HTTP,
    R_TOO_LONG,
    R_TRUNCATED,
    USED,
    Decoder,
    Tally,
    Words,
    misdirected,
)
from vmstats.server.formats.interfaces import VirtualInterfaces
from vmstats.server.formats.journaling import EdgeJournal
from vmstats.server.formats.minutes import MinuteAssembler
from vmstats.server.formats.pool import DecodePool
from vmstats.server.formats.rates import CounterRates
from vmstats.server.formats.vmroom import VmRoom
from vmstats.server.idle import IdleWaiters
from vmstats.server.metrics import Metrics, RateLimitedLog

log = logging.getLogger(__name__)

#: Seconds between checks for minutes nothing more is coming for.
TICK_SECONDS = 1.0
#: Bytes of a written body (the HTTP write API) decoded per reactor turn: a body of 25 MiB of
#: lines the decoder refuses one by one costs it ~25 s, which must not be one stall of every
#: port.  A piece of bad lines costs ~15 ms, and a request needs a few turns to be answered.
BODY_PIECE = 16 << 10
#: A sample's VM.
_VM_OF = attrgetter("vm")


class Edge:
    """Decodes payloads of any format and files the records they complete."""

    def __init__(self, ingest, metrics: Metrics, assembler: MinuteAssembler, clock: Callable,
                 decoders: dict[str, Decoder] | None = None, reading: set[str] | None = None):
        self.ingest = ingest
        self.metrics = metrics
        self.assembler = assembler
        #: The time of day of arrivals and ticks: in the server its WallClock, which notices a
        #: step before the time is used (service.py).
        self.clock = clock
        #: The decoders by format name (a replay decodes journaled payloads again).
        self.decoders: dict[str, Decoder] = decoders if decoders is not None else {}
        #: The formats that take new input in this run, by a port or the HTTP write API (a
        #: replay says which payloads' settings no longer read anything).  None: every one of
        #: ``decoders``, as for an Edge made directly with its decoders.
        self.reading = reading
        #: The journal's edge lines (journaling.py); None without a journal.
        self.journal: EdgeJournal | None = None
        #: Completed minutes' payloads handed to ingest and not yet filed there (so not yet in
        #: the journal as records): a checkpoint keeps them.
        self.unfiled: dict[int, bytes] = {}
        self._handed = 0
        self._bad_log = RateLimitedLog(log, "unusable input")
        #: Bodies being fed a piece per reactor turn (``feed_body``), and who waits for them.
        self._feeding = 0
        self._fed = IdleWaiters()
        #: The room ``--max-vms`` leaves for the write API's new VMs (None: not judged, as for
        #: an Edge made directly).
        self.vm_room: VmRoom | None = None

    def reads(self, name: str) -> bool:
        """Does format ``name`` take new input in this run?"""
        return name in self.decoders if self.reading is None else name in self.reading

    def feed(self, decoder: Decoder, data: bytes, **options) -> int | None:
        """Decode ``data`` and file what it completes; returns the journal write holding it
        (None: nothing of it was journaled), for ``when_durable``."""
        tally = Tally()
        now = self.clock()
        lines: list = []
        samples = decoder.decode(data, now, tally, lines=lines, **options)
        return self.file(decoder.name, samples, tally, now, lines, data, options)

    def feed_lines(self, decoder: Decoder, data: bytes, errors: list, **options) -> int | None:
        """``feed`` for a writer answered line by line (the HTTP write API): ``errors`` gets
        ``(line number, message)`` of the first ten lines not used, the decoder's and those
        whose samples the minutes refuse (too far ahead, late, out of range) alike."""
        tally = Tally()
        now = self.clock()
        lines: list = []
        samples = decoder.decode(data, now, tally, errors=errors, lines=lines, **options)
        return self.file(decoder.name, samples, tally, now, lines, data,
                         dict(options, errors=errors), errors)

    def write_body(self, decoder: Decoder, data: bytes, errors: list,
                   progress: Callable[[], None] = lambda: None, **options) -> defer.Deferred:
        """``feed_body`` for the HTTP write API, judged for ``--max-vms`` first (vmroom.py):
        fires with a ``NoRoom`` (nothing of the body taken) or as ``feed_body`` does."""
        room = self.vm_room
        if room is None:
            return self.feed_body(decoder, data, errors, progress, **options)
        lines = data.count(b"\n") + 1
        if lines <= room.room():  # it cannot name more VMs than it has lines: fed at once
            room.promised += lines

            def kept(result):
                room.promised -= lines
                return result

            return self.feed_body(decoder, data, errors, progress, **options).addBoth(kept)
        named: set[str] = set()
        now = self.clock()

        def names():
            for piece, _last in _pieces(data):
                named.update(map(_VM_OF, decoder.decode(piece, now, Tally(), **options)))
                progress()
                yield None

        def judged(_):
            new = room.new(named)
            left = room.room()
            if len(new) > left:
                return NoRoom(room.refusal(len(new), left))
            # Kept for them before any other body's turn; those whose samples are taken become
            # known as they are (``file``), the others give it back.
            room.promised += len(new)

            def kept(result):
                room.promised -= len(new)
                return result

            return self.feed_body(decoder, data, errors, progress, **options).addBoth(kept)

        self._feeding += 1  # a stop waits for it as for a body being fed
        judging = task.cooperate(names()).whenDone().addCallback(judged)
        return judging.addBoth(self._judged)

    def _judged(self, result):
        self._feeding -= 1
        if not self._feeding:
            self._fed.fire()
        return result

    def feed_body(self, decoder: Decoder, data: bytes, errors: list,
                  progress: Callable[[], None] = lambda: None, **options) -> defer.Deferred:
        """``feed_lines`` for a body of any size: a piece of whole lines (``BODY_PIECE``) per
        reactor turn, each journaled as a payload of its own.  Fires with the last journal
        write holding any of it (None: none) once every piece is in; ``errors`` gets the first
        ten lines not used, numbered in the body.  ``progress`` is called after each piece (the
        writer's connection is not idle meanwhile).  ``bodies_fed`` waits for those under way."""
        latest: list = [None, False]  # the last journal write, and whether all is in

        def pieces():
            lines_before = 0
            for piece, last in _pieces(data):
                found: list = []
                since = self.feed_lines(decoder, piece, found, **options)
                latest[0] = latest[0] if since is None else since
                errors.extend((lines_before + number, text) for number, text in found)
                del errors[10:]
                lines_before += piece.count(b"\n")
                progress()
                if last:
                    break
                yield None
            latest[1] = True

        steps = pieces()
        next(steps, None)  # the first piece at once: most bodies are one
        if latest[1]:
            return defer.succeed(latest[0])
        self._feeding += 1
        return task.cooperate(steps).whenDone().addBoth(self._body_fed, latest)

    def _body_fed(self, result, latest: list):
        self._feeding -= 1
        if not self._feeding:
            self._fed.fire()
        return latest[0] if not isinstance(result, Failure) else result

    def bodies_fed(self) -> defer.Deferred:
        """Fires once the bodies being fed (``feed_body``) are in."""
        return self._fed.wait(bool(self._feeding))

    def file(self, name: str, samples: list, tally: Tally, now: float, lines: list,
             data: bytes = b"", options: dict | None = None,
             errors: list | None = None) -> int | None:
        """Samples decoded from ``data`` (here or in a worker) into the minutes; journaled first
        (in the order they go in, which a replay repeats).  Returns the journal write or None.

        ``lines`` maps samples to the lines they came from (``Decoder.decode``): a line whose
        samples the minutes refuse is counted once, under the first reason, instead of as used
        -- not once as used by the decoder and again per sample refused.  Its other samples
        are kept (a line's value out of range drops only that value)."""
        since = None
        if samples:
            if self.journal is not None:
                since = self.journal.payload(name, now, options, data, samples)
            refused: list = []
            self.assembler.add(samples, now, tally, refused)
            if errors is not None and self.vm_room is not None:  # the write API's, before its answer
                self.vm_room.know_taken(samples, refused)
            if refused:
                unit = self.decoders[name].unit if name in self.decoders else "line"
                _refused_lines(tally, refused, lines, unit, errors)
        self.count(name, tally)
        self.release()
        return since

    def count(self, name: str, tally: Tally) -> None:
        edge = self.metrics.edge
        for outcome, count in tally.counts.items():
            if count:
                edge[(name, outcome)] += count
        for detail in tally.details:
            self._bad_log.emit("%s: %s", name, detail)

    def release(self) -> None:
        """Hand every completed minute to the native ingest path, as one payload."""
        records = self.assembler.take()
        if records:
            payload = b"\n".join(protocol.encode_records(records))
            # Its samples were judged for their time when they came (MinuteAssembler.add): the
            # minute is filed a grace later, or at a restart after a step back, and was acknowledged.
            if self.journal is None:
                self.ingest.submit(payload, timed=False)
                return
            self._handed += 1
            handed = self._handed
            self.unfiled[handed] = payload
            self.ingest.submit(payload, lambda *_result: self.unfiled.pop(handed, None),
                               timed=False)

    def clock_stepped(self, step: float) -> None:
        """The wall clock was stepped: the open minutes move with it, and the journal says so
        where a replay will meet it."""
        self.assembler.clock_stepped(step)
        if self.journal is not None:
            self.journal.stepped(step)

    def tick(self) -> None:
        self.completed(self.assembler.tick(self.clock()))

    def complete_all(self) -> None:
        """Every open minute into ingest (shutdown)."""
        self.completed(self.assembler.complete_all())

    def completed(self, keys: list[tuple[str, int]]) -> None:
        """Minutes the clock completed: journaled (a replay cannot know the clock), released."""
        if self.journal is not None:
            self.journal.completed(keys)
        self.release()

    def journal_failing(self) -> bool:
        """Are journal writes failing now (so what is taken could not be kept)?"""
        return self.journal is not None and self.journal.journal.failing

    def when_durable(self, since: int | None, callback: Callable[[bool], None]) -> None:
        """``callback(ok)`` once journal write ``since`` is on disk under the fsync policy
        (at once without a journal)."""
        if self.journal is None:
            callback(True)
        else:
            self.journal.journal.when_durable(callback, since)


def _pieces(data: bytes):
    """``data`` in pieces of whole lines of up to ``BODY_PIECE`` bytes (a longer line whole),
    each with whether it is the last."""
    start = 0
    while start < len(data):
        end = len(data)
        if end - start > BODY_PIECE:  # up to the last whole line that fits
            end = data.rfind(b"\n", start, start + BODY_PIECE) + 1
            if end <= start:  # one line longer than a piece: it goes whole
                end = data.find(b"\n", start + BODY_PIECE) + 1 or len(data)
        yield data[start:end], end >= len(data)
        start = end


class NoRoom(NamedTuple):
    """A body refused at its intake: it names more new VMs than ``--max-vms`` leaves room for."""

    reason: str


def _refused_lines(tally: Tally, refused: list, lines: list, unit: str,
                   errors: list | None) -> None:
    """Move the lines the minutes refused samples of from ``used`` to the first reason.

    Only what can be read is worded: the tally's first ten details (``Words``, worded if the
    rate-limited log prints them) and the ten least line numbers ``errors`` can keep.  A
    flood of refused lines is counted per reason, not worded line by line."""
    starts, numbers = lines[0::2], lines[1::2]
    by_line: dict[int, tuple[str, str]] = {}
    for index, reason, detail in refused:
        at = bisect.bisect_right(starts, index) - 1
        if at < 0:  # a decoder that does not say which line a sample is from: count the sample
            tally.reject(reason, detail)
            continue
        by_line.setdefault(numbers[at], (reason, detail))
    tally.counts[USED] -= len(by_line)
    ordered = sorted(by_line.items())
    room = 10 - len(tally.details)
    for number, (reason, detail) in ordered[:max(room, 0)]:
        tally.reject(reason, Words("%s %d: %s", unit, number, detail))
    for _number, (reason, _detail) in ordered[max(room, 0):]:
        tally.counts[reason] += 1
    if errors is not None:
        errors.extend((number, "%s: %s" % (reason, detail))
                      for number, (reason, detail) in ordered[:10])
        errors.sort()
        del errors[10:]


class DatagramReceiver(tx_protocol.DatagramProtocol):
    """One datagram, one payload of its format."""

    def __init__(self, edge: Edge, pool: DecodePool, decoder: Decoder, table: ConnectionTable):
        self.edge = edge
        self.pool = pool
        self.decoder = decoder
        self.allow = table.allow or None  # --allow, as on the native ports

    def datagramReceived(self, data: bytes, addr) -> None:
        metrics = self.edge.metrics
        if self.allow is not None and not self.allow.allows(addr[0]):
            metrics.datagrams_not_allowed += 1
            return
        metrics.datagrams += 1
        metrics.bytes += len(data)
        # An HTTP request, at the datagram's start or after lines: its headers would be quoted
        # by the decoder's refusals, and journaled.  The lines before it are decoded as ever.
        data, what = misdirected.cut(data)
        if what is not None:
            tally = Tally()
            tally.reject(R_HTTP, misdirected.words(self.decoder.name, what, "UDP"))
            self.edge.count(self.decoder.name, tally)
            if not data:
                return
        self.pool.submit(self.decoder, data)


class LineReceiver(tx_protocol.Protocol):
    """A newline-delimited stream (line protocol, Graphite plaintext); no replies."""

    def __init__(self, factory: "LineFactory"):
        self.factory = factory
        self.rest = b""
        self.skipping = False
        self.peer = self.source = ""
        self.last_active = 0.0

    def connectionMade(self) -> None:
        self.factory.table.add(self, self.peer)

    def connectionLost(self, reason=None) -> None:
        # False: the server closed it itself (evicted for a newcomer, idle, at the stop).
        held = self.factory.table.remove(self)
        self.factory.protocols.discard(self)
        rest, self.rest = self.rest, b""
        if not rest.strip() or self.skipping:
            return
        if held and (reason is None or reason.check(ConnectionDone)):
            # The sender ended its stream after a last line without its newline: it counts.
            self.factory.pool.submit(self.factory.decoder, rest)
            return
        # Cut by a reset or by our own close, the line may end inside a value or a timestamp
        # (usage_idle=5 of 55.5, a stamp read a thousand times too small): never filed.
        tally = Tally()
        tally.reject(R_TRUNCATED, Words("TCP stream cut inside a line (%d bytes)", len(rest)))
        self.factory.edge.count(self.factory.decoder.name, tally)

    def dataReceived(self, data: bytes) -> None:
        self.factory.table.touch(self)
        self.factory.edge.metrics.bytes += len(data)
        if self.skipping:
            end = data.find(b"\n")
            if end < 0:
                return
            self.skipping = False
            data = data[end + 1:]
        data = self.rest + data if self.rest else data
        end = data.rfind(b"\n") + 1
        block, self.rest = data[:end], data[end:]
        # Any line may be an HTTP client's request line, the first or one after lines (``cat
        # lines request | nc``): one memchr a block for "/" (misdirected.py).
        request = misdirected.request_line_in(block)
        if request is not None:
            if request[0]:
                self.factory.pool.submit(self.factory.decoder, block[:request[0]])
            self._http_client(request[1])
            return
        if len(self.rest) > self.factory.max_line:
            self.rest = b""
            self.skipping = True
            tally = Tally()
            tally.reject(R_TOO_LONG, "line over %d bytes" % self.factory.max_line)
            self.factory.edge.count(self.factory.decoder.name, tally)
        if block:
            self.factory.pool.submit(self.factory.decoder, block)

    def _http_client(self, what: str) -> None:
        """An HTTP client on this line port: counted and logged once, with its method and path
        only (its headers may carry a token), answered 400, and closed with nothing of it read.
        Lines before it were decoded as ever; before, a request after lines went to the decoder,
        its headers refused and quoted one by one, and the payload journaled, token and all."""
        name = self.factory.decoder.name
        self.rest = b""
        tally = Tally()
        tally.reject(R_HTTP, misdirected.words(name, what))
        self.factory.edge.count(name, tally)
        self.transport.write(misdirected.answer(name))
        self.transport.loseConnection()


class LineFactory(tx_protocol.Factory):
    """Line receivers of one format, admitted by the push ports' connection table (the caps,
    --allow, idle timeout and eviction of the native TCP port, counted with it)."""

    def __init__(self, edge: Edge, pool: DecodePool, decoder: Decoder, max_line: int,
                 table: ConnectionTable):
        self.edge = edge
        self.pool = pool
        self.decoder = decoder
        self.max_line = max_line
        self.table = table
        self.protocols: set = set()

    def buildProtocol(self, addr):
        if not self.table.admit(addr.host):
            return None
        receiver = LineReceiver(self)
        receiver.peer = addr.host
        self.protocols.add(receiver)
        return receiver


class EdgeService(service.Service):
    """The other formats' ports and the minute clock; stopping it writes every open minute."""

    name = "edge"

    def __init__(self, reactor, bind: str, edge: Edge, udp: dict[str, tuple[int, Decoder]],
                 tcp: dict[str, tuple[int, Decoder]], max_line: int, table: ConnectionTable,
                 workers: int = 0, timeout: float = 10.0):
        self.reactor = reactor
        self.bind = bind
        self.edge = edge
        self.udp = udp
        self.tcp = tcp
        self.max_line = max_line
        self.table = table
        self.ports: dict[str, int] = {}
        self._listening: list = []
        self._factories: list[LineFactory] = []
        decoders = {decoder.name: decoder for _port, decoder in [*udp.values(), *tcp.values()]}
        self.pool = DecodePool(reactor, edge, decoders, workers, timeout)
        self._clock = Every(reactor, TICK_SECONDS, edge.tick, "completing the other formats' minutes")

    def startService(self) -> None:
        service.Service.startService(self)
        self.pool.start()
        for name in dict.fromkeys([*self.udp, *self.tcp]):
            self.ports[name] = self._listen(name)
        self._clock.start()

    def _listen(self, name: str) -> int:
        """Listen for format ``name`` (UDP, TCP or both on one number, as carbon does)."""
        udp, tcp = self.udp.get(name), self.tcp.get(name)
        port = (udp or tcp)[0]
        for _attempt in range(20):
            opened = []
            try:
                if tcp is not None:
                    factory = LineFactory(self.edge, self.pool, tcp[1], self.max_line, self.table)
                    opened.append(listen_tcp(self.reactor, port, factory, self.bind))
                    port = opened[-1].getHost().port
                if udp is not None:
                    opened.append(self.reactor.listenUDP(
                        port, DatagramReceiver(self.edge, self.pool, udp[1], self.table),
                        interface=self.bind,
                        maxPacketSize=protocol.MAX_DATAGRAM_SIZE))
                    port = opened[-1].getHost().port
            except CannotListenError as exc:
                for one in opened:
                    one.stopListening()
                if (udp or tcp)[0] != 0 or not opened:
                    kind = "UDP" if tcp is None or len(opened) == 1 else "TCP"
                    raise listen_error(exc, kind, self.bind, port, "--%s-port" % name) from None
                port = 0  # an ephemeral TCP number taken for UDP elsewhere: another number
                continue
            self._listening += opened
            if tcp is not None:
                self._factories.append(factory)
            return port
        raise CannotListenError(self.bind, 0, "no ephemeral port free for both UDP and TCP")

    def stopService(self):
        """Close the ports, then hand over every open minute (before the final flush)."""
        service.Service.stopService(self)
        self._clock.stop()
        listening, self._listening = self._listening, []
        for factory in self._factories:
            for receiver in list(factory.protocols):
                if receiver.transport is not None:
                    receiver.transport.loseConnection()

        def written(_):
            self.pool.stop()
            self.edge.complete_all()
            if self.edge.journal is not None:
                self.edge.journal.closing = True  # the final flush retires the journal

        waits = [defer.maybeDeferred(port.stopListening) for port in listening]
        closed = defer.gatherResults(waits, consumeErrors=True)
        closed.addBoth(lambda _: self.edge.bodies_fed())
        return closed.addBoth(lambda _: self.pool.idle()).addBoth(written)


def decoders(config) -> dict[str, Decoder]:
    """Every format's decoder as ``config`` sets it, its port on or off: the journal may hold
    payloads a port took before a restart that turned it off, acknowledged and so to be
    replayed (journaling.py).  The one place the server's settings reach a decoder: a replay
    decodes by what ``Decoder.settings`` says of each, which tests/test_formats_replay_settings.py
    holds to what is made here from every setting."""
    from vmstats.server.formats.collectd import CollectdDecoder
    from vmstats.server.formats.graphite import GraphiteDecoder, parse_templates
    from vmstats.server.formats.influx import InfluxDecoder

    return {"influx": InfluxDecoder(config.influx_vm_tag, max_line=config.max_line),
            "collectd": CollectdDecoder(config.collectd_auth, config.collectd_security),
            "graphite": GraphiteDecoder(parse_templates(config.graphite_templates), config.max_line)}


def minute_assembler(config) -> MinuteAssembler:
    """The minute assembler as ``config`` sets it: the one place the server's settings reach
    it.  A replay repeats each journaled payload by what the journal says the assembler took
    it under (journaling.taken_under: the limits, the bounds, the grace); the one setting it
    reads that is not journaled with each payload, --virtual-interfaces, is applied to a
    minute as it is written, and journaled once after each checkpoint (a replay writes the
    minutes the run completed by it).  tests/test_formats_replay_settings.py holds both to
    every setting."""
    return MinuteAssembler(config.minute_grace, config.edge_max_open, config.max_future,
                           config.max_past, CounterRates(config.edge_max_counters),
                           VirtualInterfaces(config.virtual_interfaces),
                           config.edge_max_devices, config.edge_max_names,
                           config.edge_max_name_bytes, config.edge_max_written)


def build(reactor, config, ingest, metrics: Metrics, clock: Callable,
          table: ConnectionTable) -> tuple[Edge, EdgeService]:
    """The edge as ``config`` asks for it (ports of -1 are off)."""
    assembler = minute_assembler(config)
    rates = assembler.rates
    made = decoders(config)
    udp: dict[str, tuple[int, Decoder]] = {}
    tcp: dict[str, tuple[int, Decoder]] = {}
    if config.influx_port >= 0:
        udp["influx"] = tcp["influx"] = (config.influx_port, made["influx"])
    if config.collectd_port >= 0:
        udp["collectd"] = (config.collectd_port, made["collectd"])
    if config.graphite_port >= 0:
        udp["graphite"] = tcp["graphite"] = (config.graphite_port, made["graphite"])
    # The line protocol comes on the HTTP port too (/write, /api/v2/write: http.py).
    reading = {*udp, *tcp, *(("influx",) if config.http_port >= 0 else ())}
    edge = Edge(ingest, metrics, assembler, clock, made, reading)
    edge.influx = made["influx"]
    edge.vm_room = VmRoom(ingest.buffer)
    metrics.gauges["edge_counters"] = (
        "Cumulative counters of other agents tracked for rates (bounded).", lambda: len(rates))
    metrics.gauges["edge_open_minutes"] = (
        "Minutes of other agents' VMs being assembled (bounded).", lambda: assembler.open_count)
    metrics.gauges["edge_device_names"] = (
        "Device names the open minutes hold (bounded by --edge-max-names).",
        lambda: assembler.names)
    metrics.edge_events = lambda: {**rates.events, **assembler.events}
    # The native parsers' number serves here too: processes that take decoding off the reactor.
    return edge, EdgeService(reactor, config.bind, edge, udp, tcp, config.max_line, table,
                             config.parsers, config.parser_timeout)
