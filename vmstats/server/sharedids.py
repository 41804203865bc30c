"""The VM ids found sent by more than one machine: kept, counted, listed and logged.

The rule that finds them (two ``seq`` counters taking turns under one id) is
vmstats/seqturns.py, which the report applies to the logs as well; here is
what the server does with it.  Only a VM whose counter stepped back is
watched: the filing fast path (ingest.py, every VM's ``seq`` its last plus
one) is not touched.  A watched VM's ``Buffer.last_seq`` holds
``seqturns.WATCHED``, which no ``seq`` follows, so its records take the
careful path, ``Buffer.sequence`` and ``step``.  Detection only: every record
is filed as before, whatever is found here.

The ids found are kept across a restart (sharedkept.py): one found before is
listed at once, and its first record after the start begins a watch, so its
two counters are followed from there (their first step apart is no loss, and
no step back has to come first).
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

from vmstats.seqturns import MAX_SOURCES, SWITCHES, Counters, Watches
from vmstats.server.metrics import Metrics
from vmstats.stamps import moment
from vmstats.words import counted

log = logging.getLogger(__name__)

#: The same id is logged again at most this often while it stays shared.
LOG_EVERY = 3600.0
#: VMs watched at once (each is a few hundred bytes and its records take the careful path); a
#: fleet restarted at once fills it for WATCH_FOR, and an id shared meanwhile is found later.
MAX_WATCHED = 4096
#: Shared ids listed on /status, the most recently seen ones.
MAX_LISTED = 100


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


class SharedIds(Watches):
    """Watches VMs whose counter stepped back (seqturns.Watches); keeps, counts, lists and logs
    the ids it finds two agents send under."""

    def __init__(self, metrics: Metrics, clock: Callable[[], float]):
        super().__init__(MAX_WATCHED)
        self.metrics = metrics
        self.clock = clock
        #: Ids found shared, oldest first (bounded: MAX_LISTED); those found before the start
        #: are put here first (sharedkept.py).
        self.found: dict[str, Found] = {}
        #: Changes to ``found`` worth saving at once (an id found, found again, a sender), and
        #: any change (also a finding's ``last`` moved): sharedkept.py saves by them.
        self.news = self.changes = 0
        #: When a jump too far up was last logged (``clock()``).
        self.too_far_logged = float("-inf")

    def known(self, vm: str) -> bool:
        """An id found shared before (kept across a restart) is watched from its first record."""
        return vm in self.found

    def turned(self, vm: str, counters: Counters, now: float) -> None:
        """Two counters took turns once more: from SWITCHES on the id is shared."""
        if counters.turns < SWITCHES:
            return
        found = self.found.get(vm)
        self.changes += 1
        if counters.turns == SWITCHES:  # found in this watch, now
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
        for source in counters.sources:
            if len(found.sources) < MAX_SOURCES and source not in found.sources:
                found.sources[source] = None
                self.news += 1
        if now - found.logged >= LOG_EVERY:
            found.logged = now
            known = ", ".join(found.sources) if found.sources else "not known"
            log.warning("VM id %s is sent by more than one machine: two seq counters take turns "
                        "(%s so far); their records are filed as one VM's. Senders: %s. "
                        "docs/OPERATIONS.md, One VM id, two machines", vm,
                        counted(counters.turns, "turn"), known)

    def too_far(self, vm: str, before: int, seq: int, elapsed: float | None) -> None:
        """A jump up no agent numbers so fast: counted apart from the loss estimate, and said at
        most once an hour (one forged datagram made that estimate 9.2e18 before)."""
        self.metrics.seq_too_far += 1
        now = self.clock()
        if now - self.too_far_logged < LOG_EVERY:
            return
        self.too_far_logged = now
        log.warning("VM %s's seq jumped from %d to %d%s: more than one agent numbers in that time, "
                    "so not counted as lost records (vmstats_seq_jumps_too_far_total; a forged or "
                    "damaged record, another sender under its id, a counter set anew). Said at "
                    "most once an hour", vm, before, seq,
                    "" if elapsed is None else " in %.0fs" % elapsed)

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
