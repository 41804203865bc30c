"""The senders of a UDP payload's datagrams, so that a shared-id finding names them over UDP too.

Two machines under one VM id are found from their ``seq`` counters
(seqturns.py), and what an operator needs next is where to go: the senders'
addresses.  A TCP connection has one peer, but the UDP port's datagrams are
joined into payloads of many senders (a parser process, or the reactor's
port, reads them in batches), and reading each datagram's address costs
``recvfrom`` over ``recv`` (what --allow costs: docs/OPERATIONS.md).  So the addresses
are read only while a VM is watched over UDP (its records came with none):
the buffer says so (``Buffer.wants_senders``), and the readers
(parseworker.py, listeners.py) switch.  A payload read meanwhile carries a
``Senders``: each datagram's length and address, in the payload's order.

Which datagram a record came in is found only where it is needed: for a
record on the careful path of the seq (a watched VM's, a jump's), by its VM
id and ``seq`` in the payload's bytes; every other record pays nothing.
A record found in no datagram, or in datagrams of two senders, is left
unnamed ("").
"""

from bisect import bisect_right
from itertools import accumulate


class Senders:
    """A UDP payload's datagrams' lengths and addresses (``payload`` is them joined with
    newlines), and the address of one record's datagram on demand (``of``)."""

    __slots__ = ("payload", "lengths", "addresses", "_starts")

    def __init__(self, payload: bytes, lengths: list[int], addresses: list[str]):
        self.payload = payload
        self.lengths = lengths
        self.addresses = addresses
        self._starts: list[int] | None = None

    def __bool__(self) -> bool:
        return bool(self.addresses)

    def of(self, vm: str, seq: int) -> str:
        """The address of the datagram that held ``vm``'s record ``seq`` ("" if not one)."""
        addresses = self.addresses
        if len(set(addresses)) == 1:
            return addresses[0]
        if self._starts is None:  # where each datagram begins in the payload
            self._starts = [0, *accumulate(length + 1 for length in self.lengths)]
        payload = self.payload
        tag = b"vm=" + vm.encode()
        mark = b"seq=%d" % seq
        found = set()
        at = payload.find(tag)
        while at >= 0:
            start = payload.rfind(b"\n", 0, at) + 1
            end = payload.find(b"\n", at)
            end = len(payload) if end < 0 else end
            if _tagged(payload, at, len(tag), start) and _holds(payload, mark, at, end):
                index = bisect_right(self._starts, start) - 1
                if index < len(addresses):
                    found.add(addresses[index])
            at = payload.find(tag, end)
        return found.pop() if len(found) == 1 else ""


def _tagged(payload: bytes, at: int, length: int, start: int) -> bool:
    """Whether ``vm=`` at ``at`` is a whole tag of the line from ``start``: after a comma of
    its tags, before a comma or the space before its fields."""
    return at > start and payload[at - 1:at] == b"," and payload[at + length:at + length + 1] in (
        b",", b" ")


def _holds(payload: bytes, mark: bytes, start: int, end: int) -> bool:
    """Whether a field ``seq=<n>`` (``mark``) stands between ``start`` and ``end``, whole."""
    at = payload.find(mark, start, end)
    while at >= 0:
        after = payload[at + len(mark):at + len(mark) + 1]
        if payload[at - 1:at] in (b" ", b",") and not after.isdigit():
            return True
        at = payload.find(mark, at + 1, end)
    return False
