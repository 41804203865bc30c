"""A webhook's host name, looked up on a thread of its own action, never the reactor's pool.

Twisted resolves every name (``getaddrinfo``, even of ``127.0.0.1``) on the
reactor's shared pool of 10 threads.  A receiver whose DNS never answers
held one thread per send under way (16 at once) for the resolver's own
timeout, 30 s or more: the pool was full, and every other webhook's lookup
waited behind them, past its own ``timeout``, as did the server's stop,
which joins that pool.  Here each action looks its name up on daemon threads
of its own (``Workers``: never joined), one lookup of a name at a time,
shared by every send that needs it meanwhile; an address written as one
(``127.0.0.1``) is not looked up at all.  So a name that never resolves
holds one thread of its own action, not a thread per send, and its sends
fail at their ``timeout`` (which covers the lookup); the other actions go on.
"""

import socket

from twisted.internet import defer, interfaces
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.base import ReactorBase
from twisted.internet.interfaces import IHostnameResolver
from zope.interface import implementer

from vmstats.rules.workers import Workers

#: Threads looking names up for one action (one name each: the lookups of a name are shared).
THREADS = 2

_FAMILIES = {IPv4Address: socket.AF_INET, IPv6Address: socket.AF_INET6}


def _family(address_types) -> int:
    """The address family asked for (None, or both kinds: any)."""
    kinds = {_FAMILIES[kind] for kind in address_types or () if kind in _FAMILIES}
    return kinds.pop() if len(kinds) == 1 else socket.AF_UNSPEC


def _literal(host: str) -> int | None:
    """The family of a host written as an address, else None (a name to look up)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except (OSError, ValueError):
            continue
        return family
    return None


class _Resolution:
    """``IHostResolution``: what a lookup was for."""

    def __init__(self, name: str):
        self.name = name

    def cancel(self) -> None:
        """Nothing to stop: a lookup under way is shared, and runs to its end."""


@implementer(IHostnameResolver)
class Lookups:
    """An action's name lookups: on its own threads, one per name at a time, shared."""

    def __init__(self, reactor, name: str):
        self.reactor = reactor
        self.workers = Workers(reactor, name, THREADS)
        #: (host, port, family, socket type) -> the lookup under way, shared by those asking.
        self._under_way: dict[tuple, defer.Deferred] = {}

    def resolveHostName(self, receiver, hostName: str, portNumber: int = 0, addressTypes=None,
                        transportSemantics: str = "TCP"):
        resolution = _Resolution(hostName)
        receiver.resolutionBegan(resolution)
        kind = socket.SOCK_DGRAM if transportSemantics == "UDP" else socket.SOCK_STREAM
        literal = _literal(hostName)
        if literal is not None:  # nothing to look up
            answer = defer.succeed([(literal, kind, 0, "", (hostName, portNumber))])
        else:
            answer = self._lookup((hostName, portNumber, _family(addressTypes), kind))

        def answered(names) -> None:
            for family, socktype, _proto, _canonical, address in names:
                if family in (socket.AF_INET, socket.AF_INET6):
                    made = IPv4Address if family == socket.AF_INET else IPv6Address
                    receiver.addressResolved(made("UDP" if socktype == socket.SOCK_DGRAM else "TCP",
                                                  *address))
            receiver.resolutionComplete()

        # No address (a failure, or a lookup dropped past its time) is the endpoint's
        # "cannot find the host name", as with Twisted's own resolver.
        answer.addCallbacks(answered, lambda _failure: receiver.resolutionComplete())
        return resolution

    def _lookup(self, key: tuple) -> defer.Deferred:
        """The answer for ``key``: the lookup under way for it, else a new one."""
        shared = self._under_way.get(key)
        if shared is None:
            shared = self._under_way[key] = self.workers.run(socket.getaddrinfo, *key)
            shared.addBoth(self._ended, key, shared)
        answer: defer.Deferred = defer.Deferred()
        shared.addBoth(_pass_on, answer)
        return answer

    def _ended(self, result, key: tuple, shared: defer.Deferred):
        if self._under_way.get(key) is shared:
            del self._under_way[key]
        return result

    def close(self) -> None:
        """No new lookups; a thread stuck in one ends with it (never waited for)."""
        self.workers.close()


def _pass_on(result, answer: defer.Deferred):
    """Each asker gets the shared lookup's result, its failure handled there."""
    if isinstance(result, defer.Failure):
        answer.errback(result)
    else:
        answer.callback(result)
    return None


@implementer(interfaces.IReactorPluggableNameResolver, interfaces.IReactorTCP,
             interfaces.IReactorTime)
class ResolvingOwnNames:
    """The reactor as an HTTP agent sees it, its names looked up by ``lookups``."""

    def __init__(self, reactor: ReactorBase, lookups: Lookups):
        self._reactor = reactor
        self.nameResolver = lookups

    def __getattr__(self, name: str):
        return getattr(self._reactor, name)
