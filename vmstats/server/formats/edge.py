"""The edge: other formats' ports, their decoders, and the hand-off to the native ingest path.

Each format listens on a port of its own (``--influx-port``, ``--collectd-port``,
``--graphite-port``; off unless asked for), so the native ports and their
tuned fast path never look at anything else.  Every payload is decoded into
samples, counter samples become rates, the minute assembler gathers them,
and each completed one-minute record is encoded in the native format and
submitted to ``Ingest`` like any payload the native listeners receive: the
same parsing, journal, buffer, flusher and per-VM logs.  Minutes still open
live only in memory: a crash loses at most the open minute of each VM.
"""

import logging
from collections.abc import Callable

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet import protocol as tx_protocol
from twisted.internet.error import CannotListenError

from vmstats import protocol
from vmstats.server.connections import ConnectionTable, listen_error, listen_tcp
from vmstats.server.formats import R_TOO_LONG, Decoder, Tally
from vmstats.server.formats.minutes import MinuteAssembler
from vmstats.server.formats.pool import DecodePool
from vmstats.server.formats.rates import CounterRates
from vmstats.server.metrics import Metrics, RateLimitedLog

log = logging.getLogger(__name__)

#: Seconds between checks for minutes nothing more is coming for.
TICK_SECONDS = 1.0


class Edge:
    """Decodes payloads of any format and files the records they complete."""

    def __init__(self, ingest, metrics: Metrics, assembler: MinuteAssembler, clock: Callable):
        self.ingest = ingest
        self.metrics = metrics
        self.assembler = assembler
        self.clock = clock
        self._bad_log = RateLimitedLog(log, "unusable input")

    def feed(self, decoder: Decoder, data: bytes, **options) -> Tally:
        """Decode ``data`` and file what it completes; returns what was made of it."""
        tally = Tally()
        now = self.clock()
        self.file(decoder.name, decoder.decode(data, now, tally, **options), tally, now)
        return tally

    def file(self, name: str, samples: list, tally: Tally, now: float) -> None:
        """Samples decoded from one payload (here or in a worker) into the minutes."""
        if samples:
            self.assembler.add(samples, now, tally)
        self.count(name, tally)
        self.release()

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
            self.ingest.submit(b"\n".join(protocol.encode_records(records)))

    def tick(self) -> None:
        self.assembler.tick(self.clock())
        self.release()


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
        self.factory.table.remove(self)
        self.factory.protocols.discard(self)
        if self.rest and not self.skipping:  # a last line without its newline still counts
            rest, self.rest = self.rest, b""
            self.factory.pool.submit(self.factory.decoder, rest)

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
        if len(self.rest) > self.factory.max_line:
            self.rest = b""
            self.skipping = True
            tally = Tally()
            tally.reject(R_TOO_LONG, "line over %d bytes" % self.factory.max_line)
            self.factory.edge.count(self.factory.decoder.name, tally)
        if block:
            self.factory.pool.submit(self.factory.decoder, block)


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
                 workers: int = 0):
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
        self.pool = DecodePool(reactor, edge, decoders, workers)
        self._clock = task.LoopingCall(edge.tick)
        self._clock.clock = reactor

    def startService(self) -> None:
        service.Service.startService(self)
        self.pool.start()
        for name in dict.fromkeys([*self.udp, *self.tcp]):
            self.ports[name] = self._listen(name)
        self._clock.start(TICK_SECONDS, now=False)

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
        if self._clock.running:
            self._clock.stop()
        listening, self._listening = self._listening, []
        for factory in self._factories:
            for receiver in list(factory.protocols):
                if receiver.transport is not None:
                    receiver.transport.loseConnection()

        def written(_):
            self.pool.stop()
            self.edge.assembler.complete_all()
            self.edge.release()

        waits = [defer.maybeDeferred(port.stopListening) for port in listening]
        closed = defer.gatherResults(waits, consumeErrors=True)
        return closed.addBoth(lambda _: self.pool.idle()).addBoth(written)


def build(reactor, config, ingest, metrics: Metrics, clock: Callable,
          table: ConnectionTable) -> tuple[Edge, EdgeService]:
    """The edge as ``config`` asks for it (ports of -1 are off)."""
    from vmstats.server.formats.collectd import CollectdDecoder
    from vmstats.server.formats.graphite import GraphiteDecoder, parse_templates
    from vmstats.server.formats.influx import InfluxDecoder

    rates = CounterRates(config.edge_max_counters)
    assembler = MinuteAssembler(config.minute_grace, config.edge_max_open, config.max_future,
                                config.max_past, rates)
    edge = Edge(ingest, metrics, assembler, clock)
    udp: dict[str, tuple[int, Decoder]] = {}
    tcp: dict[str, tuple[int, Decoder]] = {}
    edge.influx = InfluxDecoder(config.influx_vm_tag, max_line=config.max_line)
    if config.influx_port >= 0:
        udp["influx"] = tcp["influx"] = (config.influx_port, edge.influx)
    if config.collectd_port >= 0:
        udp["collectd"] = (config.collectd_port,
                           CollectdDecoder(config.collectd_auth, config.collectd_security))
    if config.graphite_port >= 0:
        graphite = GraphiteDecoder(parse_templates(config.graphite_templates))
        udp["graphite"] = tcp["graphite"] = (config.graphite_port, graphite)
    metrics.gauges["edge_counters"] = (
        "Cumulative counters of other agents tracked for rates (bounded).", lambda: len(rates))
    metrics.gauges["edge_open_minutes"] = (
        "Minutes of other agents' VMs being assembled (bounded).", lambda: assembler.open_count)
    metrics.edge_events = lambda: {**rates.events, **assembler.events}
    # The native parsers' number serves here too: processes that take decoding off the reactor.
    return edge, EdgeService(reactor, config.bind, edge, udp, tcp, config.max_line, table,
                             config.parsers)
