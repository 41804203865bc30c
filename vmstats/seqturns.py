"""One VM id, two machines, told from the agents' ``seq`` counters taking turns: the rule, once.

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
restart, so that restarting a fleet starts no watches) is watched, for
``WATCH_FOR`` after it began or its counters last took turns; ``SWITCHES``
turns while watched make the id shared.

The same code serves both places that apply the rule, so they cannot drift
apart: the server feeds ``Watches.step`` each record as it comes, with its
monotonic clock (server/buffer.py, server/sharedids.py, which keeps and lists
what is found), and the report feeds it a VM-day's rows from the logs in time
order, their stamps for the clock (report/sharedseq.py).  Plain Python of the
standard library, no state but what it is given.

It also keeps the loss estimate to each counter's own gaps: a jump up is
counted as lost records at the VM's next record, which tells it apart from the
step from one counter up to another.  A next record inside the jump's hole but
stamped after the record that jumped continues a counter below it (one
counter's stamps rise with it: a record late into the hole is stamped before),
and only what that counter skipped counts.

A jump is loss only as far as one agent could have numbered the records in
between: each takes a stamp second of its own (the agent stamps a record at
least a second after the one before, however short its interval), so a counter
gains at most one a second of the time between two of its records, beyond
``GAP``.  A jump further up (a forged or damaged record, a second sender far
ahead, a counter set anew) is counted as a jump, not as records lost: one
datagram made the fleet's loss estimate 9.2e18.  A jump whose VM sends nothing
more is counted whole once the caller settles it (``Watches.settle``: the
server at a flush ``WAIT_FOR`` later, or at its stop), not never.
"""

from dataclasses import dataclass, field

#: A counter continues when it moves forward by at most this (losses between); a step back by
#: more is taken for an agent restart, as is one to 0.
GAP = 1000
#: Turns taken by two counters (a counter advancing after another one advanced since its
#: previous record) before the id is called shared: two agents a minute apart reach it within
#: about three minutes; a restart, a resend, a replayed spool or reordering take none, and a
#: restart's straggler from the old process at most two.
SWITCHES = 4
#: Seconds a VM stays watched after it started to be, or its counters last took turns; a watch
#: idle this long is let go at the VM's next record, which is then taken as an unwatched one's.
WATCH_FOR = 900.0
#: Counters remembered per watched VM: an agent restarting in a loop leaves one a start.
MAX_HEADS = 3
#: Sender addresses remembered per watched VM (where the caller knows them).
MAX_SOURCES = 8
#: A VM's last seq while it is watched: no ``seq`` (0..2^63-1) is this plus one, so the filing
#: fast path (every VM's ``seq`` its last plus one) sends its records here.
WATCHED = -(1 << 64)
#: A VM's last seq while its latest record's jump up waits for the next record to be counted.
JUMPED = WATCHED - 2
#: Records one agent numbers at most per second between two of its records: each takes a stamp
#: second of its own.  A jump by more than GAP beyond this is no loss (``plausible``).
PER_SECOND = 1.0
#: Seconds a jump up waits for its VM's next record before ``settle`` counts it whole: ten of the
#: agent's default intervals, when a silent VM may be forgotten (server/buffer.py FORGET_AFTER).
WAIT_FOR = 600.0


def steps_back(last, seq):
    """Whether ``seq`` after ``last`` begins a watch: a step back or a repeat, not to 0.  Ints or
    numpy arrays alike (the report's first pass looks at every row with it)."""
    return (seq <= last) & (seq != 0)


def plausible(skipped: int, elapsed: float | None) -> bool:
    """Whether one agent can have numbered ``skipped`` records in ``elapsed`` seconds (the
    caller's clock between the records around them; None: not known) that never arrived: GAP,
    and one more a second.  An agent whose interval is under a second stamps ahead of its clock
    (a second a record) and has its records refused past the server's --max-future (300 s, under
    GAP), so its counter cannot run further ahead of the time either."""
    return skipped <= GAP + PER_SECOND * max(0.0, elapsed or 0.0)


def kept(last: int, seq: int) -> int:
    """The last seq an unwatched VM keeps after ``seq``: the higher, unless ``seq`` is an agent's
    restart (0, or a step back by more than GAP)."""
    return seq if seq > last or seq == 0 or seq + GAP < last else last


@dataclass(slots=True)
class Head:
    """One counter's latest record: its ``seq``, stamp (None: not seen, from before the watch),
    and the index of the VM's record that last moved it (``moved``) or last advanced it."""

    seq: int
    ts: int | None
    moved: int
    advanced: int = -1


@dataclass(slots=True)
class Counters:
    """One watched VM's counters and the turns they took."""

    #: The last seq the VM would have had unwatched, moved as it would have been (``kept``).
    last: int
    #: When the watch began, or the counters last took turns (the caller's clock).
    since: float
    heads: list[Head]
    turns: int = 0
    records: int = 0
    #: SWITCHES turns taken in this watch.
    shared: bool = False
    sources: dict[str, None] = field(default_factory=dict)

    def see(self, seq: int, ts: int, now: float, source: str = "") -> tuple[int, bool]:
        """Take one record; returns what its own counter skipped (the loss estimate's share: one
        ``last`` would count the steps between two counters) and whether it took a turn."""
        self.last = kept(self.last, seq)
        self.records += 1
        index = self.records
        if source and source not in self.sources and len(self.sources) < MAX_SOURCES:
            self.sources[source] = None
        heads = self.heads
        best = None
        for head in heads:  # the nearest counter below, the latest moved on a tie
            if head.seq < seq <= head.seq + GAP and (
                    best is None or (head.seq, head.moved) > (best.seq, best.moved)):
                best = head
        if best is None or seq > best.seq + 1:
            for head in heads:  # older than a counter at or above it: a resend, a replay, reordering
                if head.seq >= seq and head.ts is not None and head.ts >= ts:
                    return 0, False
        if best is None:
            if len(heads) >= MAX_HEADS:
                heads.remove(min(heads, key=lambda h: h.moved))
            heads.append(Head(seq, ts, index))  # a new counter: a restart, or another agent
            return 0, False
        turned = any(other.advanced > best.moved for other in heads if other is not best)
        if turned:
            self.turns += 1
            self.since = now
            self.shared = self.turns >= SWITCHES
        skipped = seq - best.seq - 1
        best.seq, best.ts, best.moved, best.advanced = seq, ts, index, index
        return skipped, turned


class Watches:
    """The careful path of every VM's ``seq``: the watches (at most ``max_watched``) and the jumps
    waiting for their next record.  The caller keeps each VM's last seq (an int, WATCHED or
    JUMPED; None before its first record) and passes it to ``step``, which returns the next."""

    def __init__(self, max_watched: int):
        self.max_watched = max_watched
        self.watched: dict[str, Counters] = {}
        #: vm -> (the last seq before its jump up, the seq jumped to, that record's stamp, and the
        #: caller's clock at the record before the jump (None: not known) and at the jump).
        self.jumped: dict[str, tuple[int, int, int, float | None, float]] = {}

    def known(self, vm: str) -> bool:
        """Whether ``vm`` is watched from its first record (an id found shared before)."""
        return False

    def turned(self, vm: str, counters: Counters, now: float) -> None:
        """Called when ``vm``'s counters took a turn (``counters.shared`` once SWITCHES)."""

    def too_far(self, vm: str, before: int, seq: int, elapsed: float | None) -> None:
        """Called when ``vm``'s counter jumped from ``before`` up to ``seq`` further than one agent
        numbers in ``elapsed`` seconds (``plausible``): counted as no records lost."""

    def judged(self, vm: str, before: int, seq: int, elapsed: float | None) -> int:
        """The records lost in a jump from ``before`` up to ``seq``: those skipped, or none (and
        ``too_far`` told) when one agent could not have numbered them in ``elapsed``."""
        skipped = seq - before - 1
        if plausible(skipped, elapsed):
            return skipped
        self.too_far(vm, before, seq, elapsed)
        return 0

    def step(self, vm: str, last: int | None, seq: int, ts: int, now: float,
             source: str = "", since: float | None = None) -> tuple[int, int]:
        """Take ``vm``'s record ``seq`` (stamped ``ts``, at ``now``, from ``source`` where known)
        after its last seq ``last``, whose record came at ``since`` (the caller's clock; None: not
        known); returns its next last seq and the records it counts lost."""
        if last is None:  # a VM's first record
            if self.known(vm) and len(self.watched) < self.max_watched:
                counters = self.watched[vm] = Counters(seq, now, [Head(seq, ts, 1)], records=1)
                if source:
                    counters.sources[source] = None
                return WATCHED, 0
            return seq, 0
        lost = 0
        if last == WATCHED:
            counters = self.watched.get(vm)
            if counters is None:  # cannot be (both are kept and forgotten together); start over
                return seq, 0
            if now - counters.since < WATCH_FOR:
                skipped, turned = counters.see(seq, ts, now, source)
                if turned:
                    self.turned(vm, counters, now)
                return WATCHED, skipped
            del self.watched[vm]  # let go: this record is an unwatched VM's
            last = counters.last
        elif last == JUMPED:
            jump = self.jumped.pop(vm, None)
            if jump is None:  # cannot be (both are kept and forgotten together); start over
                return seq, 0
            before, last, jumped_ts, before_at, since = jump
            # Inside the hole but stamped after the record that jumped: not one counter (whose
            # stamps rise with it; a record late into the hole is stamped before), but the next
            # of a counter below, whose step to the other was no loss; what that one skipped is.
            if before < seq < last and ts > jumped_ts:
                lost = self.judged(vm, before, seq, _between(before_at, now))
            else:
                lost = self.judged(vm, before, last, _between(before_at, since))
        if seq == last + 1:
            return seq, lost
        if seq > last:
            self.jumped[vm] = (last, seq, ts, since, now)
            return JUMPED, lost
        if steps_back(last, seq) and len(self.watched) < self.max_watched:
            counters = self.watched[vm] = Counters(last, now, [Head(last, None, 0)])
            return WATCHED, lost + counters.see(seq, ts, now, source)[0]
        return kept(last, seq), lost

    def settle(self, horizon: float) -> tuple[dict[str, int], int]:
        """Count whole the jumps up whose record came at or before ``horizon`` (the caller's
        clock), their VM silent since: the loss estimate of a VM that lost records, sent one
        more and stopped was never counted.  Returns those VMs' next last seqs (the seqs they
        jumped to) and the records counted lost."""
        settled: dict[str, int] = {}
        lost = 0
        for vm in [vm for vm, jump in self.jumped.items() if jump[4] <= horizon]:
            before, seq, _ts, before_at, at = self.jumped.pop(vm)
            lost += self.judged(vm, before, seq, _between(before_at, at))
            settled[vm] = seq
        return settled, lost

    def forget(self, kept_vms) -> None:
        """Forget the watches and jumps of the VMs not in ``kept_vms`` (the caller forgot them)."""
        self.watched = {vm: c for vm, c in self.watched.items() if vm in kept_vms}
        self.jumped = {vm: j for vm, j in self.jumped.items() if vm in kept_vms}


def _between(start: float | None, end: float) -> float | None:
    """Seconds from ``start`` (None: not known) to ``end``."""
    return None if start is None else end - start
