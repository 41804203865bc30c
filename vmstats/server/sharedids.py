"""VM ids sent by more than one machine: two agents' ``seq`` counters interleaved under one id.

A cloned image with a baked ``--vm-id``, two VMs whose id follows an address
the network gave both, a restored snapshot running beside its original: their
records are filed as one VM's, and the report and capacity judge a chimera.
Nothing in a record says which machine sent it, but every agent numbers its
records (``seq``, +1 a record, from 0 at its start), and one agent's counter
and its stamps rise together.  Two live agents under one id show as two
counters that *both* keep advancing, each taking its turn; this is what is
looked for, and nothing else:

- an agent restart starts a new counter (at 0) and the old one never
  advances again (its spool, over TCP, is delivered before anything the new
  process sends);
- a resend or a replayed spool repeats records whose ``seq`` and stamp are
  at or below a counter's head: late, not new;
- UDP reordering delivers a record after a later one of the same counter:
  also late, and it never makes a counter advance after another one did.

Only a VM whose counter stepped back (or repeated; not to 0, an agent's
restart, so that restarting a fleet starts no watches) is watched: the filing
fast path (ingest.py, every VM's ``seq`` its last plus one) is not touched.
A watched VM's ``Buffer.last_seq`` holds ``WATCHED``, which no ``seq`` follows,
so its records take the careful path, which calls ``see`` with each one's
``seq`` and stamp.  A VM whose counters stop alternating for ``WATCH_FOR`` is
let go back to the fast path.  Detection only: every record is filed as
before, whatever is found here.

The ids found are kept across a restart (sharedkept.py): one found before is
listed at once, and its first record after the start begins a watch, so its
two counters are followed from there (their first step apart is no loss, and
no step back has to come first).
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from vmstats.server.metrics import Metrics
from vmstats.stamps import moment
from vmstats.words import counted

log = logging.getLogger(__name__)

#: In ``Buffer.last_seq``: this VM is watched; no ``seq`` (0..2^63-1) is this plus one.
WATCHED = -(1 << 64)
#: A counter continues when it moves forward by at most this (losses between); a step back by
#: more is also what ``Buffer.sequence`` takes for an agent restart.
GAP = 1000
#: Turns taken by two counters (a counter advancing after another one advanced since its
#: previous record) before the id is called shared: two agents a minute apart reach it within
#: about three minutes; a restart, a resend, a replayed spool or reordering take none, and a
#: restart's straggler from the old process at most two.
SWITCHES = 4
#: Seconds a VM stays watched after it started to be, or its counters last took turns.
WATCH_FOR = 900.0
#: The same id is logged again at most this often while it stays shared.
LOG_EVERY = 3600.0
#: VMs watched at once (each is a few hundred bytes and its records take the careful path); a
#: fleet restarted at once fills it for WATCH_FOR, and an id shared meanwhile is found later.
MAX_WATCHED = 4096
#: Counters remembered per watched VM: an agent restarting in a loop leaves one a start.
MAX_HEADS = 3
#: Shared ids listed on /status, the most recently seen ones.
MAX_LISTED = 100
#: Sender addresses remembered per watched VM (TCP peers; UDP reads none).
MAX_SOURCES = 8


@dataclass
class Head:
    """One counter's latest record: its ``seq``, stamp (None: not seen, from before the watch),
    and the index of the VM's record that last moved it (``moved``) or last advanced it."""

    seq: int
    ts: int | None
    moved: int
    advanced: int = -1


@dataclass
class Watch:
    """What is known of one watched VM's counters."""

    #: The ``Buffer.last_seq`` the VM had, kept here and moved as it would have been.
    last: int
    since: float
    heads: list[Head]
    turns: int = 0
    records: int = 0
    shared: bool = False
    sources: dict[str, None] = field(default_factory=dict)


@dataclass
class Found:
    """A shared id as /status lists it: monotonic times first and last found, the senders
    known, how many times it was found (a new watch each), and whether it was last found
    before this start (kept across the restart, not found again since)."""

    first: float
    last: float
    logged: float
    sources: dict[str, None]
    times: int = 1
    before: bool = False


class SharedIds:
    """Watches VMs whose counter stepped back; finds those two agents send under one id."""

    def __init__(self, metrics: Metrics, clock: Callable[[], float]):
        self.metrics = metrics
        self.clock = clock
        self.watched: dict[str, Watch] = {}
        #: Ids found shared, oldest first (bounded: MAX_LISTED); those found before the start
        #: are put here first (sharedkept.py).
        self.found: dict[str, Found] = {}
        #: Changes to ``found`` worth saving at once (an id found, found again, a sender), and
        #: any change (also a finding's ``last`` moved): sharedkept.py saves by them.
        self.news = self.changes = 0

    def watch(self, vm: str, last: int, seq: int, ts: int, source: str = "") -> bool:
        """Begin watching ``vm``, whose counter was at ``last`` when ``seq`` (not above it) came;
        False when MAX_WATCHED are watched already."""
        if len(self.watched) >= MAX_WATCHED:
            return False
        watch = self.watched[vm] = Watch(last, self.clock(), [Head(last, None, 0)])
        self.see(vm, watch, seq, ts, source)
        return True

    def watch_first(self, vm: str, seq: int, ts: int, source: str = "") -> bool:
        """Begin watching ``vm`` at its first record (an id found shared before): its counter
        is the first head; False when MAX_WATCHED are watched already."""
        if len(self.watched) >= MAX_WATCHED:
            return False
        watch = self.watched[vm] = Watch(seq, self.clock(), [Head(seq, ts, 1)], records=1)
        if source:
            watch.sources[source] = None
        return True

    def see(self, vm: str, watch: Watch, seq: int, ts: int, source: str = "") -> int:
        """Take one record of a watched VM; returns what its own counter skipped (the loss
        estimate's share: one ``last`` would count the steps between two counters)."""
        watch.records += 1
        index = watch.records
        if source and source not in watch.sources and len(watch.sources) < MAX_SOURCES:
            watch.sources[source] = None
        heads = watch.heads
        best = None
        for head in heads:  # the nearest counter below, the latest moved on a tie
            if head.seq < seq <= head.seq + GAP and (
                    best is None or (head.seq, head.moved) > (best.seq, best.moved)):
                best = head
        if best is None or seq > best.seq + 1:
            for head in heads:  # older than a counter at or above it: a resend, a replay, reordering
                if head.seq >= seq and head.ts is not None and head.ts >= ts:
                    return 0
        if best is None:
            if len(heads) >= MAX_HEADS:
                heads.remove(min(heads, key=lambda h: h.moved))
            heads.append(Head(seq, ts, index))  # a new counter: a restart, or another agent
            return 0
        if any(other.advanced > best.moved for other in heads if other is not best):
            self._turn(vm, watch)
        skipped = seq - best.seq - 1
        best.seq, best.ts, best.moved, best.advanced = seq, ts, index, index
        return skipped

    def _turn(self, vm: str, watch: Watch) -> None:
        """Two counters took turns once more: after SWITCHES the id is shared."""
        watch.turns += 1
        watch.since = now = self.clock()
        if watch.turns < SWITCHES:
            return
        found = self.found.get(vm)
        self.changes += 1
        if not watch.shared:
            watch.shared = True
            self.metrics.shared_ids += 1
            self.news += 1
            if found is None:
                if len(self.found) >= MAX_LISTED:
                    del self.found[next(iter(self.found))]
                found = self.found[vm] = Found(now, now, float("-inf"), {})
            else:
                found.times += 1
                found.before = False
        found.last = now
        for source in watch.sources:
            if len(found.sources) < MAX_SOURCES and source not in found.sources:
                found.sources[source] = None
                self.news += 1
        if now - found.logged >= LOG_EVERY:
            found.logged = now
            known = ", ".join(found.sources) if found.sources else "not known (UDP)"
            log.warning("VM id %s is sent by more than one machine: two seq counters take turns "
                        "(%s so far); their records are filed as one VM's. Senders: %s. "
                        "docs/OPERATIONS.md, One VM id, two machines", vm,
                        counted(watch.turns, "turn"), known)

    def release(self, vm: str, watch: Watch, now: float) -> bool:
        """True when ``vm`` has been watched WATCH_FOR since its counters last took turns: it
        is let go (the caller puts its ``last`` back for the fast path)."""
        if now - watch.since < WATCH_FOR:
            return False
        del self.watched[vm]
        return True

    def drop_older(self, horizon: float) -> int:
        """Forget the ids last found before ``horizon`` (a ``clock()`` reading): a finding is
        kept for sharedkept.KEEP_FOR, not for ever; returns how many went."""
        old = [vm for vm, found in self.found.items() if found.last < horizon]
        for vm in old:
            del self.found[vm]
        if old:
            self.news += 1
        return len(old)

    def shared_now(self) -> int:
        """Ids found shared and still watched: their counters took turns within WATCH_FOR."""
        return sum(1 for watch in self.watched.values() if watch.shared)

    def forget(self, kept: dict) -> None:
        """Stop watching the VMs not in ``kept`` (the buffer forgot them)."""
        self.watched = {vm: w for vm, w in self.watched.items() if vm in kept}

    def listing(self, wall: float) -> dict[str, dict]:
        """The ids found shared, most recent first, for /status: when first and last found
        (times of day; ``wall`` is now), how many times, the senders known, whether their
        counters still take turns (``now``) and whether it was last found before this start
        (``before_start``)."""
        offset = wall - self.clock()
        ordered = sorted(self.found.items(), key=lambda item: -item[1].last)
        return {vm: {"first": moment(f.first + offset), "last": moment(f.last + offset),
                     "times": f.times, "senders": list(f.sources),
                     "now": vm in self.watched and self.watched[vm].shared,
                     "before_start": f.before}
                for vm, f in ordered}
