"""The in-memory table the receive path fills and the flusher empties.

``vm -> {ts: held row bytes}``: a retransmit of the same (vm, ts) replaces
the row.  A held row is the log row without its leading ``ts,``
(``logstore.format_tail``): the timestamp is the key, so it is not stored
twice (~11 bytes per record), and the writer completes each row as it
writes it.  That compact bytes row (~50-80 bytes) is what keeps a held
record under 200 bytes of memory.  The caps bound memory whatever senders do:
records held in all (``max_buffered``), per VM (``max_per_vm``), and VMs known
(``max_vms``): each VM costs its own table, bookkeeping and folder beside its
records, so senders inventing VM ids cannot grow the server without bound.

When each VM was last heard from (``last_seen``) is a monotonic reading, not a
time of day: it decides which VMs are forgotten at the cap, and a step of the
wall clock an hour forward made every known VM ten minutes silent at once (the
next invented ids took their places and the real VMs' records were dropped),
one back kept ids a sender made up once an hour longer.  /status shows it as a
time of day (``seen_at``).
"""

import time
from collections.abc import Callable

from vmstats.seqturns import WAIT_FOR, WATCHED
from vmstats.server.metrics import Metrics
from vmstats.server.senders import Senders
from vmstats.server.sharedids import SharedIds

Table = dict[str, dict[int, bytes]]

#: A VM silent this long is forgotten once the server knows ``max_vms`` VMs, which makes room
#: for new ones: ten of the agent's default intervals, so a VM that merely missed a few
#: records stays known, and ids a sender made up once leave within minutes.
FORGET_AFTER = 600.0


class Buffer:
    """Bounded, idempotent record table with per-VM sequence-gap accounting."""

    def __init__(self, metrics: Metrics, max_buffered: int, max_per_vm: int,
                 on_full: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 max_vms: int = 1 << 62):
        self.metrics = metrics
        self.max_buffered = max_buffered
        self.max_per_vm = max_per_vm
        #: VMs known at once (``last_seen``); records of other VMs are dropped beyond it.
        self.max_vms = max_vms
        self.on_full = on_full
        #: What ``last_seen`` is read by: a monotonic clock, which steps of the wall clock leave.
        self.clock = clock
        self.table: Table = {}
        self.count = 0
        self.last_seq: dict[str, int] = {}
        #: vm -> ``clock()`` when it was last heard from (the ingest stamps it).
        self.last_seen: dict[str, float] = {}
        #: VMs whose counter stepped back, watched for a second agent under their id, and the
        #: jumps up waiting for their VM's next record to be counted.
        self.shared = SharedIds(metrics, clock)
        #: The watched VMs a record came to with no sender's address (over UDP): while there
        #: are any, the UDP readers read each datagram's (senders.py), told by ``on_senders``.
        self.unnamed: set[str] = set()
        self.wants_senders = False
        self.on_senders: Callable[[bool], None] | None = None

    def put(self, vm: str, ts: int, row: bytes, seq: int | None = None,
            source: str | Senders = "") -> bool:
        """Hold one record; False (and counted) when a cap leaves no room (``source``: the
        sender's address, where known).

        The caller notes the VM in ``last_seen`` when this returns True: that
        is what makes it known, and counted against ``max_vms``.
        """
        rows = self.table.get(vm)
        if rows is None:
            if len(self.last_seen) >= self.max_vms and vm not in self.last_seen:
                self.metrics.drop("vm_cap")
                return False  # a VM not known: no counter of it is followed
            rows = self.table[vm] = {}
        if ts not in rows:
            if len(rows) >= self.max_per_vm:
                self.metrics.drop("per_vm_cap")
                return self._dropped(vm, seq, ts, source)
            if self.count >= self.max_buffered:
                self.metrics.drop("global_cap")
                return self._dropped(vm, seq, ts, source)
            self.count += 1
            if self.count == self.max_buffered and self.on_full is not None:
                self.on_full()
        else:
            self.metrics.repeated += 1  # a resend of a row held: it replaces it
        rows[ts] = row
        if seq is not None:
            self.sequence(vm, seq, ts, source)
        return True

    def _dropped(self, vm: str, seq: int | None, ts: int, source: str | Senders) -> bool:
        """A record dropped for a cap came all the same: its seq is stepped over; False."""
        if seq is not None:
            self.step_over(vm, seq, ts, source)
        return False

    def step_over(self, vm: str, seq: int, ts: int, source: str | Senders = "") -> None:
        """A record of ``vm`` that came and was refused (its stamp) or dropped (a cap): counted
        there, so no loss here.  Its seq moves the VM's counter as a record taken would, and
        the next record taken is no gap; a VM not known (no seq followed yet) stays unknown
        (only a record taken makes a VM known, and what the refused of unknown VMs would
        leave here would be unbounded)."""
        if vm in self.last_seq:
            self.sequence(vm, seq, ts, source)

    def sequence(self, vm: str, seq: int, ts: int, source: str | Senders = "") -> None:
        """Estimate lost UDP records from gaps in an agent's counter; watch a counter that
        steps back for a second agent under the same id (seqturns.py, whose ``step`` takes
        every record that is not its VM's next, nor the first of a VM not found shared before).

        A counter that goes backwards far is an agent restart (start over);
        a repeat or a small step back is a resend or reordering (no loss); a jump up further
        than the time since the VM was last heard from (``last_seen``, which the caller moves
        after this) allows is no loss either (seqturns.plausible).
        """
        last = self.last_seq.get(vm)
        if last is None:
            if vm not in self.shared.found:  # a VM's first seq (an id found shared before is
                self.last_seq[vm] = seq       # watched from its first record, below)
                return
        elif seq == last + 1:  # its next (no seq follows WATCHED or JUMPED)
            self.last_seq[vm] = seq
            return
        if source.__class__ is not str:  # a UDP payload's Senders: this record's, found now
            source = source.of(vm, seq)
        after, lost = self.shared.step(vm, last, seq, ts, self.clock(), source,
                                       self.last_seen.get(vm))
        self.last_seq[vm] = after
        if lost:
            self.metrics.seq_lost += lost
        if after == WATCHED:
            if not source and vm not in self.unnamed:
                self.unnamed.add(vm)
                self._senders()
        elif vm in self.unnamed:
            self.unnamed.discard(vm)
            self._senders()

    def _senders(self) -> None:
        """Tell the UDP readers whether to read the senders' addresses: while a VM is watched
        that records came to over UDP (``unnamed``)."""
        wants = bool(self.unnamed)
        if wants != self.wants_senders:
            self.wants_senders = wants
            if self.on_senders is not None:
                self.on_senders(wants)

    def settle(self, horizon: float) -> None:
        """Count the jumps up whose VM sent nothing since ``horizon`` (a ``clock()`` reading; the
        stop's is infinite), as the VM's next record would have (seqturns.Watches.settle)."""
        if self.shared.jumped:
            settled, lost = self.shared.settle(horizon)
            self.last_seq.update(settled)
            self.metrics.seq_lost += lost

    def swap(self) -> Table:
        """Take everything held, leaving an empty table (the flusher owns the result)."""
        table, self.table, self.count = self.table, {}, 0
        self.settle(self.clock() - WAIT_FOR)
        if len(self.last_seen) >= self.max_vms:
            self.forget(self.clock() - FORGET_AFTER)
        return {vm: rows for vm, rows in table.items() if rows}

    def forget(self, horizon: float) -> int:
        """Forget the VMs last heard from before ``horizon``: room for new VMs under ``max_vms``.

        Only when the cap is reached (a pass over every known VM), so a
        server below it keeps every VM's bookkeeping for /status.  Returns
        how many were forgotten.
        """
        self.settle(horizon)  # a VM forgotten with a jump waiting: counted, not dropped
        before = len(self.last_seen)
        self.last_seen = {vm: seen for vm, seen in self.last_seen.items() if seen >= horizon}
        self.last_seq = {vm: seq for vm, seq in self.last_seq.items() if vm in self.last_seen}
        self.shared.forget(self.last_seen)
        if self.unnamed:
            self.unnamed.intersection_update(self.shared.watched)
            self._senders()
        return before - len(self.last_seen)

    def seen_at(self, wall: float) -> dict[str, float]:
        """``last_seen`` as times of day, ``wall`` being the time of day now."""
        offset = wall - self.clock()
        return {vm: seen + offset for vm, seen in self.last_seen.items()}

    def restore(self, vm: str, rows: dict[int, bytes]) -> None:
        """Put back rows whose write failed; rows received since then win."""
        current = self.table.get(vm)
        merged = dict(rows)
        if current:
            merged.update(current)
            self.metrics.repeated += len(rows) + len(current) - len(merged)  # resent meanwhile
        self.count += len(merged) - len(current or ())
        self.table[vm] = merged
