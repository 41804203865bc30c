"""One VM id sent by two machines, found again in a VM-day's rows: two ``seq`` counters taking turns.

A cloned image with a baked ``--vm-id`` or a snapshot running beside its
original files two machines' records as one VM's; a report over it would size
one from the other's peaks, or call an idle VM busy.  The server finds such
ids as the records arrive (vmstats/server/sharedids.py; vmstats/seqturns.py
gives the rule); the logs keep every record's ``seq``, so the report finds
them again in the window it judges, whether the server was running that rule
then or not, and flags the VM's data (policy.quality_flags).

The rule is the server's, run by the same code (vmstats/seqturns.py, plain
Python of the standard library): each of the VM-day's records goes through
``Watches.step`` as the server's ``Buffer.sequence`` puts it there, the
record's stamp standing for the server's clock, so a watch begins at a step
back, is let go after ``WATCH_FOR`` without a turn, and ``SWITCHES`` turns
while watched make the id shared; a jump up is judged by the time since
the record before it, the previous stamp standing for when the server last
heard from the VM.  The rows are read in time order, one record per stamp
(aggregate.py), so a resend or a replayed spool (the same
records again) adds nothing, and an agent's restart leaves the old counter
behind for good: neither takes a turn.

Time order is not the order the server saw (and compacted rows keep no other),
so one thing looks different here: an agent whose clock was set back while it
ran sends stamps that fall between those it sent before, and its one counter,
in time order, takes turns with itself.  Its ``seq`` values, sorted, are still
one counter (none repeats, none jumps by more than ``GAP``); two machines'
are not (a snapshot's repeat its original's, a clone's start far from them),
so such a day is not called shared.
"""

import numpy as np

from vmstats.seqturns import GAP, Watches, steps_back


def stepped_back(unit: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """The units (of rows in unit then time order) whose ``seq`` steps back, or repeats, other
    than to 0 (an agent's restart): the only ones two counters can share, as only those begin a
    watch (seqturns.steps_back).  One pass of comparisons: every other unit is not looked at
    again."""
    back = (unit[1:] == unit[:-1]) & steps_back(seq[:-1], seq[1:])
    return np.unique(unit[1:][back])


def shared(seqs: np.ndarray, stamps: np.ndarray) -> bool:
    """Whether one VM's records (``seq`` and stamp, in time order) hold two counters that took
    ``SWITCHES`` turns while watched, as the server's watch counts them (seqturns.Watches)."""
    known = seqs[seqs == seqs]
    steps = np.diff(np.sort(known))
    if np.all((steps >= 1) & (steps <= GAP)):
        return False  # one counter: one machine whose clock was set back, not two
    watches = Watches(max_watched=1)
    step, watched = watches.step, watches.watched
    last = since = None
    for seq, ts in zip(seqs.tolist(), stamps.tolist(), strict=True):
        if seq != seq:  # unknown: no counter to follow (the server is given none)
            continue
        last, _lost = step("", last, int(seq), int(ts), ts, "", since)
        since = ts
        if watched and watched[""].shared:
            return True
    return False
