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

Work does not stay on one metric: a job that computes for ten minutes, sends
for ten and computes again is thirty minutes of work that no metric held
alone.  So the same three aggregates are kept of a fourth series, ``mix``:
each minute's largest of CPU, disk and network, each over its ``MIX_SCALES``
(the default never-work limits).  Its level held for 30 minutes is at least
T exactly when every minute of some stretch has a metric at T times its
scale or more; the policy asks for T = the largest of each metric's work
level over its scale, so a mixed level at T is a stretch in which every
minute has some metric at or above its own work level: work, never a false
alarm, and exactly "some metric above its work level every minute" wherever
the work levels are the scales (a VM at its never-work limits).

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
#: The units of the mixed series: each metric over its scale, the settings' default
#: never-work limits (cpu_idle %, disk_idle and net_idle bytes/s), so that at those
#: limits the mixed test is exact.  Kept here, not read from the settings: cached and
#: rolled-up levels were computed in these units whatever a policy file says.
MIX_SCALES = {"cpu": 5.0, "disk": 524288.0, "net": 49152.0}
#: Every series whose stretches are kept: the work metrics and their mix.
RUN_SERIES = RUN_METRICS + ("mix",)
EDGE = RUN_MINUTES - 1


def fields() -> dict[str, tuple[int, type]]:
    """Name -> (columns, dtype) of the aggregates this module adds (columns 0: a scalar)."""
    out: dict[str, tuple[int, type]] = {"frozen_minutes": (0, np.int32)}
    for m in RUN_SERIES:
        out["run_" + m] = (0, np.float32)
        out["head_" + m] = (EDGE, np.float32)
        out["tail_" + m] = (EDGE, np.float32)
    return out


def _rolling_min(x: np.ndarray, width: int) -> np.ndarray:
    """Minimum of every ``width`` consecutive values: minima of 2, 4, 8 ... values by doubling,
    then two overlapping windows of the largest power of two (a handful of vectorised passes).
    """
    n = len(x) - width + 1
    if n <= 0:
        return np.empty(0, x.dtype)
    low, span = x, 1
    while span * 2 <= width:
        low = np.minimum(low[:-span], low[span:])
        span *= 2
    return np.minimum(low[:n], low[width - span : width - span + n])


def aggregate(
    out: dict[str, np.ndarray], unit: np.ndarray, ts: np.ndarray, values: dict[str, np.ndarray], rows: int
) -> None:
    """Fill this module's fields of ``out`` from records sorted by (unit, ts), de-duplicated.

    ``values`` holds cpu, mem, disk and net per record (NaN where unknown).
    """
    values = dict(values, mix=mix_score(values))
    minute = ts // 60
    first = np.r_[True, (unit[1:] != unit[:-1]) | (minute[1:] != minute[:-1])]
    every = bool(first.all())  # one record a minute, the usual case: no copies
    u, mi = (unit, minute) if every else (unit[first], minute[first])
    # Stretches: windows of RUN_MINUTES records of one unit and consecutive minutes.
    count = max(0, len(u) - EDGE)
    whole = (u[EDGE:] == u[:count]) & (mi[EDGE:] - mi[:count] == EDGE)
    owner = u[:count]
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]]) if count else owner
    # The day's first and last EDGE minutes, for stretches across midnight.
    of_day = mi % 1440
    at_head = np.flatnonzero(of_day < EDGE)
    at_tail = np.flatnonzero(of_day >= 1440 - EDGE)
    for m in RUN_SERIES:
        v = values[m].astype(np.float32) if every else values[m][first].astype(np.float32)
        v[np.isnan(v)] = 0.0
        run = np.zeros(rows, np.float32)
        if count:
            low = np.where(whole, _rolling_min(v, RUN_MINUTES), np.float32(0.0))
            run[owner[starts]] = np.maximum.reduceat(low, starts)
        out["run_" + m][:] = run
        head = np.zeros((rows, EDGE), np.float32)
        tail = np.zeros((rows, EDGE), np.float32)
        head[u[at_head], of_day[at_head]] = v[at_head]
        tail[u[at_tail], 1439 - of_day[at_tail]] = v[at_tail]
        out["head_" + m][:] = np.minimum.accumulate(head, axis=1)
        out["tail_" + m][:] = np.minimum.accumulate(tail, axis=1)
    # Frozen: consecutive readings (at most 10 minutes apart) identical in every metric.  Bit
    # patterns are compared, so two unknown (NaN) readings are identical too.
    same = (unit[1:] == unit[:-1]) & (ts[1:] - ts[:-1] <= 600)
    for name in ("cpu", "mem", "disk", "net"):
        bits = np.ascontiguousarray(values[name], dtype=np.float64).view(np.int64)
        same &= bits[1:] == bits[:-1]
    starts = np.flatnonzero(np.r_[True, ~same])
    ends = np.r_[starts[1:], len(ts)] - 1
    length = (ts[ends] - ts[starts]) // 60 + 1
    long = length >= FROZEN_MIN_MINUTES
    out["frozen_minutes"][:] = np.bincount(unit[starts[long]], weights=length[long], minlength=rows)


def mix_score(values: dict[str, np.ndarray]) -> np.ndarray:
    """Elementwise, the largest of CPU, disk and network over its scale (unknown counts as 0):
    of each record, or of each metric's levels held for 30 minutes."""
    score = np.zeros(np.shape(values["cpu"]), np.float32)
    for m in RUN_METRICS:
        np.fmax(score, np.asarray(values[m]) / MIX_SCALES[m], out=score, casting="unsafe")
    return score


def mix_from_metrics(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The mixed aggregates as well as an aggregate without them can tell (a rollup written
    before they were kept): the mix of each metric's own levels.  A stretch held by one
    metric is a mixed stretch too, so this is a lower bound, and exact for any VM-day whose
    work never moved between metrics; nothing is invented."""
    return {
        field + "mix": mix_score({m: data[field + m] for m in RUN_METRICS})
        for field in ("run_", "head_", "tail_")
    }


def crossing_level(tail: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Highest level held for RUN_MINUTES across a midnight: a day's tail, the next day's head.

    ``tail[:, k]``: minimum of the day's last k+1 minutes; ``head[:, k]``:
    minimum of the next day's first k+1 minutes.  A stretch with a minutes
    before midnight and RUN_MINUTES - a after holds min(tail[a-1], head[RUN_MINUTES-a-1]).
    """
    # a = 1 .. RUN_MINUTES - 1: tail's columns 0 .. EDGE - 1 against head's EDGE - 1 .. 0, as
    # views (no copy of the columns).
    return np.minimum(tail[:, : EDGE], head[:, EDGE - 1 :: -1]).max(axis=1)
