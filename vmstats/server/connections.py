"""Who gets a connection: caps, idle timeouts, eviction, source filters, file descriptors.

Connections are a resource an outsider can take without sending a byte.  Each listening port
(the TCP push port, the HTTP port) has a ``ConnectionTable``: a global and a per-source cap, an
idle timeout, and, when a cap is reached, the eviction of the connection that has been silent
longest (of that source, or of all), so that a new agent always gets in and a crowd of idle
sockets only ever displaces itself.  Every descriptor the tables may hold is counted against the
process's file limit, less a reserve for the journal, the writers and the parsers
(``descriptor_budget``): the journal must always be able to open its next segment.
"""

import ipaddress
import logging
import resource
import socket
from collections import OrderedDict
from collections.abc import Iterable

from twisted.internet import tcp
from twisted.internet.error import CannotListenError

from vmstats.server.every import Every
from vmstats.server.metrics import ConnectionCounts, RateLimitedLog

log = logging.getLogger(__name__)

#: Connections one accept burst may take before the listener yields to the reactor: evicted
#: connections close at the next turn, so this bounds the descriptors in flight.
ACCEPT_BURST = 64
#: Connections the kernel may queue before they are accepted (Twisted's default is 50).
LISTEN_BACKLOG = 511
#: Descriptors never given to connections: stdio, listening and UDP sockets, the journal
#: segment and its directory, the signature marks, the status file, replay, log handlers,
#: the accept burst.
RESERVED_FDS = 128 + ACCEPT_BURST
#: Descriptors each writer or parser process costs the server (pipes, its sentinel).
FDS_PER_CHILD = 6
#: Seconds a connection closed for idleness may take to read its last replies before it is aborted.
ABORT_GRACE = 5.0


def resolve_bind(host: str) -> str:
    """The address to bind for ``--bind``: an IP as given, a host name resolved once.

    IPv4 first when a name has both (``localhost``): agents and examples use 127.0.0.1.
    Raises ValueError with a readable message when the name does not resolve.
    """
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ValueError("cannot resolve --bind %s: %s"
                         % (host, getattr(exc, "strerror", exc))) from None
    addresses = [info[4][0] for info in found if info[0] in (socket.AF_INET, socket.AF_INET6)]
    if not addresses:
        raise ValueError("cannot resolve --bind %s: no IPv4 or IPv6 address" % host)
    return next((a for a in addresses if ":" not in a), addresses[0])


def is_loopback(address: str) -> bool:
    """Is a bound address reachable only from this machine?"""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def raise_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one; returns the soft limit now in force.

    The usual soft default (1024) is what let a thousand idle sockets starve the journal; the
    hard limit is what the administrator allows, and a server has no reason to stay below it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft if soft != resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open file limit from %d to %d: %s", soft, hard, exc)
        return soft
    return hard


def descriptor_budget(limit: int, children: int) -> int:
    """Descriptors the connection tables may hold under the file limit ``limit``."""
    return max(0, limit - RESERVED_FDS - FDS_PER_CHILD * children)


def share_budget(budget: int, wanted: dict[str, int]) -> dict[str, int]:
    """Caps that fit ``budget``: as asked if they fit, else scaled down alike (each at least 1)."""
    total = sum(wanted.values())
    if total <= budget:
        return dict(wanted)
    return {name: max(1, budget * cap // total) for name, cap in wanted.items()}


def allow_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An ``--allow`` entry (an address or CIDR network) as the network it means; ValueError if
    it is neither.

    An IPv4-mapped IPv6 network (``::ffff:10.0.0.0/104``, ``::ffff:10.0.0.5``) is the IPv4
    network it maps (10.0.0.0/8, 10.0.0.5/32): an IPv4 peer is matched by its IPv4 address
    whichever socket it came in on (SourceFilter), so kept as IPv6 it matched nothing.
    """
    network = ipaddress.ip_network(text, strict=False)
    mapped = network.network_address.ipv4_mapped if network.version == 6 else None
    if mapped is not None and network.prefixlen >= 96:
        return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


class SourceFilter:
    """``--allow``: the networks a listener accepts packets and connections from (empty: all).

    A peer is matched by its IPv4 address when it has one: an IPv4 client of a dual-stack
    listener (``--bind ::``) arrives as ``::ffff:a.b.c.d`` and is matched as ``a.b.c.d``.
    """

    def __init__(self, networks: Iterable[str] = ()):
        self.networks = [allow_network(n) for n in networks]
        self._verdicts: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def allows(self, host: str) -> bool:
        verdict = self._verdicts.get(host)
        if verdict is None:
            if len(self._verdicts) >= 65536:
                self._verdicts.clear()
            verdict = self._verdicts[host] = self._allows(host)
        return verdict

    def _allows(self, host: str) -> bool:
        if not self.networks:
            return True
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
        return any(address in network for network in self.networks)


class ConnectionTable:
    """The open connections of one port, the longest silent first.

    A connection is any protocol with a ``transport``; the table sets its ``source`` and keeps
    it ordered by last activity (``touch`` on each read: two O(1) moves, no timer per
    connection).  A sweep every fraction of the idle timeout closes what has been silent too long.
    """

    def __init__(self, kind: str, counts: ConnectionCounts, max_total: int, max_per_source: int,
                 idle_timeout: float | None, reactor, allow: SourceFilter | None = None):
        self.kind = kind
        self.counts = counts
        self.max_total = max(1, max_total)
        self.max_per_source = max(1, min(max_per_source, self.max_total))
        self.idle_timeout = idle_timeout if idle_timeout and idle_timeout > 0 else None
        self.reactor = reactor
        self.allow = allow or SourceFilter()
        self.open: OrderedDict = OrderedDict()
        self.by_source: dict[str, OrderedDict] = {}
        self.now = reactor.seconds() if reactor is not None else 0.0
        self._sweeper: Every | None = None
        self._refusals = RateLimitedLog(log, "%s connection refusal" % kind)

    # -- admission ---------------------------------------------------------------------------
    def admit(self, host: str) -> bool:
        """May a connection from ``host`` be built?  Makes room for it if a cap is reached."""
        if self.allow and not self.allow.allows(host):
            self.counts.not_allowed += 1
            self._refusals.emit("refusing %s connection from %s: not in --allow", self.kind, host)
            return False
        mine = self.by_source.get(host)
        if mine is not None and len(mine) >= self.max_per_source:
            self._evict(next(iter(mine)), "per_source")
        elif len(self.open) >= self.max_total:
            self._evict(next(iter(self.open)), "full")
        return True

    def add(self, conn, host: str) -> None:
        conn.source = host
        conn.last_active = self.now
        self.open[conn] = None
        self.by_source.setdefault(host, OrderedDict())[conn] = None
        self.counts.accepted += 1

    def touch(self, conn) -> None:
        """The connection did something: it moves to the back of the eviction line."""
        conn.last_active = self.now
        try:
            self.open.move_to_end(conn)
            self.by_source[conn.source].move_to_end(conn)
        except KeyError:
            pass  # evicted or closed: its last reads do not bring it back

    def remove(self, conn) -> bool:
        """Forget ``conn``; False if it was not here (already evicted or closed)."""
        if conn not in self.open:
            return False
        del self.open[conn]
        mine = self.by_source.get(conn.source)
        if mine is not None:
            mine.pop(conn, None)
            if not mine:
                del self.by_source[conn.source]
        return True

    def _evict(self, conn, cause: str) -> None:
        self.remove(conn)
        if cause == "per_source":
            self.counts.evicted_per_source += 1
        else:
            self.counts.evicted_full += 1
        self._refusals.emit("%s connections %s: closing the one from %s silent for %.0fs",
                            self.kind, "at the per-source cap" if cause == "per_source"
                            else "at the cap", conn.source, self.now - conn.last_active)
        if conn.transport is not None:
            conn.transport.abortConnection()

    # -- idleness ----------------------------------------------------------------------------
    def start(self) -> None:
        interval = min(1.0, self.idle_timeout / 4) if self.idle_timeout else 1.0
        self._sweeper = Every(self.reactor, interval, self.sweep,
                              "closing idle %s connections" % self.kind)
        self._sweeper.start()

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.stop()

    def sweep(self) -> None:
        """Close the connections silent for the idle timeout (they are at the front)."""
        self.now = self.reactor.seconds()
        if self.idle_timeout is None:
            return
        horizon = self.now - self.idle_timeout
        while self.open:
            conn = next(iter(self.open))
            if conn.last_active > horizon:
                break
            self.remove(conn)
            self.counts.idle_closed += 1
            self.close_gently(conn)

    def close_gently(self, conn) -> None:
        """Close after the replies already queued; abort if the peer does not read them."""
        transport = conn.transport
        if transport is None:
            return
        transport.loseConnection()
        # A graceful close waits until the replies are read, which a client that stopped
        # reading never does: its descriptor would stay taken.  Abort it after a grace.
        self.reactor.callLater(ABORT_GRACE, transport.abortConnection)

    def close_all(self) -> None:
        for conn in list(self.open):
            self.remove(conn)
            if conn.transport is not None:
                conn.transport.loseConnection()


class BoundedPort(tcp.Port):
    """A TCP port that accepts at most ``ACCEPT_BURST`` connections per reactor turn.

    Twisted grows its accept batch by 20 each time a batch is used up; under a flood of
    connections that would let thousands of descriptors be taken before any evicted one closes.
    """

    def doRead(self) -> None:
        self.numberAccepts = min(self.numberAccepts, ACCEPT_BURST)
        super().doRead()


def listen_tcp(reactor, port: int, factory, interface: str) -> BoundedPort:
    """``reactor.listenTCP`` with the bounded accept burst."""
    bound = BoundedPort(port, factory, LISTEN_BACKLOG, interface, reactor)
    bound.startListening()
    return bound


def listening(start, kind: str, bind: str, port: int, option: str):
    """Run ``start`` (which binds a port); a failure becomes one line naming the listener."""
    try:
        return start()
    except CannotListenError as exc:
        raise listen_error(exc, kind, bind, port, option) from None


def listen_error(exc: CannotListenError, kind: str, bind: str, port: int,
                 option: str) -> "ListenError":
    """The one line that says which listener could not be bound, and why."""
    reason = exc.socketError
    text = getattr(reason, "strerror", None) or str(reason)
    return ListenError("cannot listen on %s %s port %d (%s): %s" % (kind, bind, port, option, text))


class ListenError(RuntimeError):
    """A port could not be bound; the message names which one and why."""
