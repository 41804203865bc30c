"""Sustained levels and frozen stretches: the per-VM-day aggregates that remember runs.

A percentile cannot see one 30-minute stretch of work in 14 days (30 of
20,160 minutes is 0.15%), and a run cannot be rebuilt from histograms.  So
each VM-day keeps, per work metric (CPU, disk, network):

* ``run_<m>``: the highest level the metric held for ``RUN_MINUTES``
  consecutive minutes inside the day (the maximum over every 30-minute
  stretch of the stretch's minimum).  "Any 30-minute stretch above level W"
  is then exactly "the window's maximum of run_<m> is above W", for any W
  the policy picks later from the VM's floor: the aggregate does not depend
  on the threshold, so it stays cached and mergeable (a maximum over days).
* ``head_<m>`` / ``tail_<m>``: the minimum of the first / last k+1 minutes
  of the day (k = 0..28), so a stretch that crosses midnight UTC is found
  when two consecutive days are merged (``crossing_level``).

A minute without a reading breaks a stretch: missing data is never work,
and never proves a stretch.  ``frozen_minutes`` counts the minutes of the
day that lie in stretches of at least ``FROZEN_MIN_MINUTES`` with every
reading identical (a stuck agent or a replayed constant); the policy flags
a VM whose frozen minutes add up to hours.
"""

import numpy as np

#: Minutes of sustained work that block reclaim however rare (one batch, one backup).
RUN_MINUTES = 30
#: Shortest stretch of identical readings counted as frozen: real readings move within an hour.
FROZEN_MIN_MINUTES = 60
#: Metrics whose stretches are kept (memory moving on its own is not work).
RUN_METRICS = ("cpu", "disk", "net")
EDGE = RUN_MINUTES - 1


def fields() -> dict[str, tuple[int, type]]:
    """Name -> (columns, dtype) of the aggregates this module adds (columns 0: a scalar)."""
    out: dict[str, tuple[int, type]] = {"frozen_minutes": (0, np.int32)}
    for m in RUN_METRICS:
        out["run_" + m] = (0, np.float32)
        out["head_" + m] = (EDGE, np.float32)
        out["tail_" + m] = (EDGE, np.float32)
    return out


def _rolling_min(x: np.ndarray, width: int) -> np.ndarray:
    """Minimum of every ``width`` consecutive values (van Herk / Gil-Werman: three passes, no loop)."""
    n = len(x)
    if n < width:
        return np.empty(0, x.dtype)
    pad = -n % width
    blocks = np.concatenate([x, np.full(pad, np.inf, x.dtype)]).reshape(-1, width)
    forward = np.minimum.accumulate(blocks, axis=1).ravel()
    backward = np.minimum.accumulate(blocks[:, ::-1], axis=1)[:, ::-1].ravel()
    return np.minimum(backward[: n - width + 1], forward[width - 1 : n])


def aggregate(
    out: dict[str, np.ndarray], unit: np.ndarray, ts: np.ndarray, values: dict[str, np.ndarray], rows: int
) -> None:
    """Fill this module's fields of ``out`` from records sorted by (unit, ts), de-duplicated.

    ``values`` holds cpu, mem, disk and net per record (NaN where unknown).
    """
    minute = ts // 60
    first = np.r_[True, (unit[1:] != unit[:-1]) | (minute[1:] != minute[:-1])]
    u, mi = unit[first], minute[first]
    of_day = mi % 1440
    for m in RUN_METRICS:
        v = np.nan_to_num(values[m][first].astype(np.float32), nan=0.0)
        run = np.zeros(rows, np.float32)
        if len(v) >= RUN_MINUTES:
            low = _rolling_min(v, RUN_MINUTES)
            whole = (u[EDGE:] == u[: len(u) - EDGE]) & (mi[EDGE:] - mi[: len(mi) - EDGE] == EDGE)
            owner = u[: len(low)]
            starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
            run[owner[starts]] = np.maximum.reduceat(np.where(whole, low, 0.0), starts)
        out["run_" + m][:] = run
        # Minutes 0..28 and 1411..1439 of each day, then running minima from each edge.
        head = np.zeros((rows, EDGE), np.float32)
        tail = np.zeros((rows, EDGE), np.float32)
        at_head = of_day < EDGE
        head[u[at_head], of_day[at_head]] = v[at_head]
        at_tail = of_day >= 1440 - EDGE
        tail[u[at_tail], 1439 - of_day[at_tail]] = v[at_tail]
        out["head_" + m][:] = np.minimum.accumulate(head, axis=1)
        out["tail_" + m][:] = np.minimum.accumulate(tail, axis=1)
    # Frozen: consecutive readings (at most 10 minutes apart) identical in every metric.
    same = unit[1:] == unit[:-1]
    same &= ts[1:] - ts[:-1] <= 600
    for name in ("cpu", "mem", "disk", "net"):
        a, b = values[name][1:], values[name][:-1]
        same &= (a == b) | (np.isnan(a) & np.isnan(b))
    starts = np.flatnonzero(np.r_[True, ~same])
    ends = np.r_[starts[1:], len(ts)] - 1
    length = (ts[ends] - ts[starts]) // 60 + 1
    long = length >= FROZEN_MIN_MINUTES
    out["frozen_minutes"][:] = np.bincount(unit[starts[long]], weights=length[long], minlength=rows)


def crossing_level(tail: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Highest level held for RUN_MINUTES across a midnight: a day's tail, the next day's head.

    ``tail[:, k]``: minimum of the day's last k+1 minutes; ``head[:, k]``:
    minimum of the next day's first k+1 minutes.  A stretch with a minutes
    before midnight and RUN_MINUTES - a after holds min(tail[a-1], head[RUN_MINUTES-a-1]).
    """
    a = np.arange(1, RUN_MINUTES)
    return np.minimum(tail[:, a - 1], head[:, RUN_MINUTES - a - 1]).max(axis=1)
