"""One VM id sent by two machines, found again in a VM-day's rows: two ``seq`` counters taking turns.

A cloned image with a baked ``--vm-id`` or a snapshot running beside its
original files two machines' records as one VM's; a report over it would size
one from the other's peaks, or call an idle VM busy.  The server finds such
ids as the records arrive (vmstats/server/sharedids.py, whose docs give the
rule); the logs keep every record's ``seq``, so the report finds them again
in the window it judges, whether the server was running that rule then or
not, and flags the VM's data (policy.quality_flags).

The rule is the server's, with its constants imported from there (a module of
plain Python: no listener or reactor comes with it): a record continues the
nearest counter below it within ``GAP``, anything else starts a counter (an
agent restart's 0, or another machine's), and a counter that advances after
another one advanced since its own previous record takes a turn; ``SWITCHES``
turns, each within ``WATCH_FOR`` of the one before, make the id shared.  The
rows are read in time order, one record per stamp (aggregate.py), so a resend
or a replayed spool (the same records again) adds nothing, and an agent's
restart leaves the old counter behind for good: neither takes a turn.

Time order is not the order the server saw (and compacted rows keep no other),
so one thing looks different here: an agent whose clock was set back while it
ran sends stamps that fall between those it sent before, and its one counter,
in time order, takes turns with itself.  Its ``seq`` values, sorted, are still
one counter (none repeats, none jumps by more than ``GAP``); two machines'
are not (a snapshot's repeat its original's, a clone's start far from them),
so such a day is not called shared.
"""

import numpy as np

from vmstats.server.sharedids import GAP, MAX_HEADS, SWITCHES, WATCH_FOR


def stepped_back(unit: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """The units (of rows in unit then time order) whose ``seq`` steps back, or repeats, other
    than to 0 (an agent's restart): the only ones two counters can share, as the server only
    watches those.  One pass of comparisons: every other unit is not looked at again."""
    later = seq[1:]
    back = (unit[1:] == unit[:-1]) & (later <= seq[:-1]) & (later != 0)
    return np.unique(unit[1:][back])


def shared(seqs: np.ndarray, stamps: np.ndarray) -> bool:
    """Whether one VM's records (``seq`` and stamp, in time order) hold two counters that took
    ``SWITCHES`` turns, as sharedids.SharedIds.see counts them."""
    known = seqs[seqs == seqs]
    steps = np.diff(np.sort(known))
    if np.all((steps >= 1) & (steps <= GAP)):
        return False  # one counter: one machine whose clock was set back, not two
    heads: list[list[int]] = []  # per counter: [seq, stamp, index last moved, index last advanced]
    turns = 0
    last_turn = None
    for index, (seq, ts) in enumerate(zip(seqs.tolist(), stamps.tolist(), strict=True), 1):
        if seq != seq:  # unknown: no counter to follow
            continue
        seq, ts = int(seq), int(ts)
        best = None
        for head in heads:  # the nearest counter below, the latest moved on a tie
            if head[0] < seq <= head[0] + GAP and (best is None or (head[0], head[2]) > (best[0], best[2])):
                best = head
        if (best is None or seq > best[0] + 1) and any(h[0] >= seq and h[1] >= ts for h in heads):
            continue  # older than a counter at or above it: late, not new
        if best is None:
            if len(heads) >= MAX_HEADS:
                heads.remove(min(heads, key=lambda h: h[2]))
            heads.append([seq, ts, index, -1])  # a new counter: a restart, or another machine
            continue
        if any(other[3] > best[2] for other in heads if other is not best):
            if last_turn is not None and ts - last_turn >= WATCH_FOR:
                turns = 0  # the server would have let the VM go meanwhile
            turns, last_turn = turns + 1, ts
            if turns >= SWITCHES:
                return True
        best[0], best[1], best[2], best[3] = seq, ts, index, index
    return False
