"""Per-VM statistics over the report window, computed for all VMs at once.

Everything here works on the per-VM-day aggregates (aggregate.py) with numpy
group sums (no Python loop per VM or per record), which is what keeps a
1,000-VM fortnight fast on a slow interpreter.  Missing data is not idle:
coverage is a statistic of its own and averages are over present minutes.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from vmstats import protocol
from vmstats.report import runs
from vmstats.report.histogram import PCT_VALUES, RATE_VALUES, SparseHistograms, percentiles_of, share_below
from vmstats.report.load import DayTable
from vmstats.report.settings import SHAPE_TOLERANCE

#: The digits after the point a size holds (protocol.FIELDS).
VCPU_PLACES = protocol.field_places("vcpus")

DAY = 86400
#: Days are counted in trends and idle days only when this share of their minutes is present.
DAY_MIN_COVERAGE = 0.25
#: The metrics with value histograms.
HIST_METRICS = ("cpu", "mem", "disk", "net")
#: Points of a sparkline at most (keeps a 1,000-VM HTML page light).
SPARK_POINTS = 84
#: Days with a size change up to which a VM counts as resized (judged since); more: a floating size.
MAX_RESIZES = 2
#: A memory size that moves by less than this factor in one step drifts (a balloon driver or
#: dynamic memory adjusting the guest), it is not resized: instance families step memory by
#: 1.33x (6 -> 8, 12 -> 16 GB) to 2x.  On the Bitbrains month, 21 of the 33 VMs whose memory
#: size moves only ever move it in smaller steps (median 8%); each such step taken as a resize
#: restarted the VM's span, and a quiet VM came out insufficient-data.
MEMORY_RESIZE = 1.2
#: A VM-day's aggregates that hold a last or highest known value: sizes and maxima.
KNOWN_VALUES = ("vcpus", "mem_mb", "vcpus_first", "mem_mb_first",
                "cpu_max", "cpu_peak", "mem_max", "disk_max", "net_max")


@dataclass
class Window:
    """The effective window: whole UTC days, clipped to the fleet's first and last records."""

    first_day: int
    last_day: int
    start_ts: int
    end_ts: int

    @property
    def expected_minutes(self) -> int:
        return max(1, (self.end_ts - self.start_ts) // 60 + 1)


def _group_sum(values: np.ndarray, group: np.ndarray, groups: int) -> np.ndarray:
    if values.ndim == 1:
        return np.bincount(group, weights=values, minlength=groups)
    out = np.zeros((groups,) + values.shape[1:], dtype=np.float64 if values.dtype.kind == "f" else np.int64)
    np.add.at(out, group, values)
    return out


def _group_max(values: np.ndarray, group: np.ndarray, groups: int) -> np.ndarray:
    out = np.full(groups, np.nan)
    np.fmax.at(out, group, values.astype(np.float64))
    return out


#: Cells (VMs x days x bins) up to which histograms are summed through a dense array.
_DENSE_CELLS = 64 << 20


def _hist_sum(hist: np.ndarray, group: np.ndarray, offset: np.ndarray, groups: int) -> np.ndarray:
    """Sum of histogram rows per VM (rows sorted by VM; ``offset``: day within the window).

    Scattering rows into a dense VMs x days x bins array and summing the
    middle axis is ~20 times faster than ``reduceat`` along rows.  Windows too
    long for that (a 90-day report of 1,000 VMs) add one day's rows at a time
    (a VM has one row a day, so no index repeats within a day): as fast, in
    memory for the sums only.
    """
    if isinstance(hist, SparseHistograms):  # a long window from rollups: their cells, per VM
        return hist.group_sum(group, groups)
    out = np.zeros((groups, hist.shape[1]), np.int64)
    if not len(group):
        return out
    span = int(offset.max()) + 1
    if groups * span * hist.shape[1] <= _DENSE_CELLS:
        dense = np.zeros((groups, span, hist.shape[1]), hist.dtype)
        dense[group, offset] = hist
        return dense.sum(axis=1, dtype=np.int64)
    order = np.argsort(offset, kind="stable")
    bounds = np.searchsorted(offset[order], np.arange(span + 1))
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        rows = order[lo:hi]
        out[group[rows]] += hist[rows]
    return out


def compute(table: DayTable, window: Window, settings: dict[str, np.ndarray],
            across_resize: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Statistics of every VM of ``table`` over ``window``, as arrays indexed like table.vms.

    ``settings`` holds per-VM arrays of the thresholds the statistics depend
    on (idle_percentile, cpu_idle, disk_idle, net_idle, idle_day_cpu,
    idle_day_net_mb).  ``across_resize``, a mask of VMs, asks for those VMs
    only, each over the whole window whatever its resizes (``resized_on``
    keeps the day it would have been judged from): whether a VM worked does
    not depend on its memory size, so the days before a memory resize still
    show whether it is idle.
    """
    vms = len(table.vms)
    d = _unknown_when_empty(table.data)
    inside = (table.day >= window.first_day) & (table.day <= window.last_day)
    # A VM resized inside the window is judged on the days after its last resize only.
    judged_from, size_changes, cpu_resized = _judged_from(table, d, inside, vms)
    resized_on = np.where(judged_from > window.first_day, np.maximum(judged_from * DAY, window.start_ts), 0)
    if across_resize is not None:
        inside &= across_resize[table.vm_index]
        judged_from = np.where(across_resize, np.iinfo(np.int32).min, judged_from)
    inside &= table.day >= judged_from[table.vm_index]
    group = table.vm_index[inside]
    # Usually every loaded day is inside (only stopped VMs bring one from before): then the
    # arrays are used as they are, sparing a copy of ~100 MB of histograms on a large fleet.
    rows = d if inside.all() else {name: values[inside] for name, values in d.items()}
    days = table.day[inside]
    s: dict[str, np.ndarray] = {}

    # Seen-ever: last day of data may predate the window (stopped VMs).
    s["first_seen"] = np.full(vms, np.iinfo(np.int64).max)
    np.minimum.at(
        s["first_seen"], table.vm_index, np.where(d["n"] > 0, d["first_ts"], np.iinfo(np.int64).max)
    )
    s["last_seen"] = np.zeros(vms, np.int64)
    np.maximum.at(s["last_seen"], table.vm_index, np.where(d["n"] > 0, d["last_ts"], 0))
    s["bad_lines"] = _group_sum(d["bad"].astype(np.float64), table.vm_index, vms).astype(np.int64)
    s["shared_days"] = _shared_days(d["shared_id"], table, window, vms)

    n = _group_sum(rows["n"].astype(np.float64), group, vms)
    s["records"] = n.astype(np.int64)
    s["minutes"] = _group_sum(rows["minutes"].astype(np.float64), group, vms).astype(np.int64)
    resized = judged_from > window.first_day
    s["resized"] = resized
    s["size_changes"] = size_changes
    s["cpu_resized"] = cpu_resized
    s["resized_on"] = resized_on
    s["judged_from"] = np.where(resized, np.maximum(judged_from * DAY, window.start_ts), 0)
    expected = np.where(
        resized, np.maximum(1, (window.end_ts - s["judged_from"]) // 60 + 1), window.expected_minutes
    )
    s["coverage"] = np.minimum(1.0, s["minutes"] / expected)
    with np.errstate(invalid="ignore", divide="ignore"):
        s["cpu_avg"] = _group_sum(rows["cpu_sum"], group, vms) / n
        s["mem_avg"] = _group_sum(rows["mem_sum"], group, vms) / n
        s["disk_avg"] = _group_sum(rows["disk_sum"], group, vms) / _group_sum(rows["disk_n"], group, vms)
        s["net_avg"] = _group_sum(rows["net_sum"], group, vms) / _group_sum(rows["net_n"], group, vms)
    for name in ("cpu_max", "cpu_peak", "mem_max", "disk_max", "net_max"):
        s[name] = _group_max(rows[name], group, vms)

    offset = days - window.first_day
    # The histograms' sums and percentiles (the most work here, in numpy calls that release the
    # GIL) run in a thread while the statistics that do not need them are computed.
    with ThreadPoolExecutor(1) as thread:
        summing = thread.submit(_from_histograms, rows, group, offset, vms, settings)
        later = _without_histograms(rows, d, table.vm_index, days, group, vms, window, settings)
        hist, figures = summing.result()
    s.update(figures)
    s.update(later.pop("runs"))
    s.update(_quality(rows, hist, group, vms))
    s.update(later)
    return s


def _from_histograms(rows, group, offset, vms: int, settings: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """Each VM's histograms summed over its judged days, and the percentiles and idle share read
    from them; the running sums of each metric's bins computed once for all its percentiles."""
    hist = {name: _hist_sum(rows["hist_" + name], group, offset, vms) for name in HIST_METRICS}
    q = settings["idle_percentile"]
    cpu = percentiles_of(hist["cpu"], [50, 95, 99, q], PCT_VALUES)
    mem = percentiles_of(hist["mem"], [5, 95], PCT_VALUES)
    disk = percentiles_of(hist["disk"], [95, 50, q], RATE_VALUES)
    net = percentiles_of(hist["net"], [95, 50, q], RATE_VALUES)
    figures = {
        "cpu_p50": cpu[0],
        "cpu_p95": cpu[1],
        "cpu_p99": cpu[2],
        "cpu_idle_pct": cpu[3],
        "mem_p05": mem[0],
        "mem_p95": mem[1],
        "disk_p95": disk[0],
        "net_p95": net[0],
        # Each metric's floor: the level it sits at most of the time (background, not work).
        "disk_p50": disk[1],
        "net_p50": net[1],
        "disk_idle_pct": disk[2],
        "net_idle_pct": net[2],
        "idle_share": share_below(hist["cpu"], settings["cpu_idle"], PCT_VALUES),
    }
    return hist, figures


def _without_histograms(rows, d, vm_index, days, group, vms: int, window: Window,
                        settings: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The statistics that do not read the histograms: sustained levels (as ``runs``), daily
    figures, size, hour-of-week profiles, sparklines and schedule slots."""
    out: dict[str, np.ndarray] = {"runs": _runs(rows, days, group, vms)}

    # Daily figures: idle days (Trusted Advisor's count) and the trend of daily p95.
    day_cpu_p95 = rows["cpu_p95"].astype(np.float64)
    day_mem_p95 = rows["mem_p95"].astype(np.float64)
    counted = rows["minutes"] >= DAY_MIN_COVERAGE * 1440
    day_net_mb = rows["net_sum"] * 60.0 / 1e6 * (1440.0 / np.maximum(rows["minutes"], 1))
    vm_q = settings["idle_day_cpu"][group]
    idle_day = (
        counted
        & (day_cpu_p95 <= vm_q)
        & (rows["net_n"] > 0)
        & (day_net_mb <= settings["idle_day_net_mb"][group])
    )
    out["days_with_data"] = _group_sum(counted.astype(np.float64), group, vms).astype(np.int64)
    out["idle_days"] = _group_sum(idle_day.astype(np.float64), group, vms).astype(np.int64)
    out["cpu_trend"] = _slope(days[counted], day_cpu_p95[counted], group[counted], vms) * 7
    out["mem_trend"] = _slope(days[counted], day_mem_p95[counted], group[counted], vms) * 7
    mean = _group_sum(np.where(counted, day_cpu_p95, 0.0), group, vms) / np.maximum(out["days_with_data"], 1)
    square = _group_sum(np.where(counted, day_cpu_p95**2, 0.0), group, vms) / np.maximum(
        out["days_with_data"], 1
    )
    out["cpu_p95_daily_std"] = np.sqrt(np.maximum(square - mean**2, 0.0))
    out["cpu_p95_daily_mean"] = mean

    # Size: the last known of the window (or of the last day seen).
    # The daily table holds sizes as float32: rounded back to the field's places, 0.1 vCPU is 0.1
    # again (not 0.100000001), so prices, ladders and named sizes meet the size that was sent.
    out["vcpus"] = np.round(_last_per_vm(d["vcpus"], vm_index, vms).astype(np.float64), VCPU_PLACES)
    out["mem_mb"] = _last_per_vm(d["mem_mb"], vm_index, vms)

    # Hour-of-week profile (Monday 00:00 UTC first) and sparklines.
    # The hourly cells' records and their (VM, hour of the week), shared by the profiles, the
    # sparklines and the schedule slots (each a pass over every VM-day's 24 cells).
    weekday = (days + 3) % 7
    slot = (weekday[:, None] * 24 + np.arange(24)[None, :]).ravel()
    key = np.repeat(group, 24) * 168 + slot
    h_n = rows["h_n"].astype(np.float64)
    count = np.bincount(key, weights=h_n.ravel(), minlength=vms * 168).reshape(vms, 168)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.bincount(key, weights=rows["h_cpu_sum"].ravel(), minlength=vms * 168)
        out["how_cpu"] = total.reshape(vms, 168) / count
        total = np.bincount(key, weights=rows["h_mem_sum"].ravel(), minlength=vms * 168)
        out["how_mem"] = total.reshape(vms, 168) / count
    out.update(_sparklines(rows, h_n, days, group, vms, window))
    out.update(_daily(rows, days, group, vms, window))
    out.update(_schedule_slots(rows, h_n, key, group, vms, settings))
    return out


def _unknown_when_empty(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The VM-days' aggregates, with their sizes and maxima unknown (NaN) on a day without a
    record.

    Such a day (its only file unreadable, or no row of it readable) holds zeros, and 0 is a
    value: its size would read as a resize to nothing (the VM judged from that day on, its
    days before dropped; a VM whose newest day is so damaged left without a size), its CPU
    peak of 0 as impossible data.  Cached and rolled-up aggregates pass through here alike.
    """
    empty = data["n"] == 0
    if not empty.any():  # the usual case: the arrays as they are, no copies
        return data
    return {**data, **{name: np.where(empty, np.nan, data[name]) for name in KNOWN_VALUES}}


def _judged_from(table: DayTable, d: dict[str, np.ndarray], inside: np.ndarray,
                 vms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per VM, the first day to judge it on (a day number), how many days its size changed,
    and whether its vCPUs were resized.

    A resize is a day whose first and last known sizes differ, or whose first
    differs from the day before's last.  A VM resized once or twice is judged
    from its last resize: days at the old size say nothing of the new one.
    A size that changes on more days than that is not a resize but a size
    that floats (dynamic memory, ballooning): the VM is judged on the whole
    window at its last size, and flagged; so is a memory size that only
    drifts, by steps smaller than ``MEMORY_RESIZE``.  Sizes within
    ``SHAPE_TOLERANCE`` are the same shape (agents report memory in MB that
    wobbles).  The second array counts the days with any size change.
    """
    index, day = table.vm_index[inside], table.day[inside].astype(np.int64)
    out = np.full(vms, np.iinfo(np.int32).min, np.int64)
    if not len(index):
        return out, np.zeros(vms, np.int64), np.zeros(vms, bool)
    def apart(a: np.ndarray, b: np.ndarray, factor: float) -> np.ndarray:
        """The larger size more than ``factor`` times the smaller (an unknown size: never)."""
        with np.errstate(invalid="ignore"):
            return np.maximum(a, b) > factor * np.minimum(a, b)

    same_vm = np.r_[False, index[1:] == index[:-1]]
    within, across, moved = (np.zeros(len(index), bool) for _ in range(3))
    step = 1.0 + SHAPE_TOLERANCE
    for name, resize in (("vcpus", step), ("mem_mb", MEMORY_RESIZE)):
        first = d[name + "_first"][inside].astype(np.float64)
        last = d[name][inside].astype(np.float64)
        # The day before's last known size (rows are sorted by VM, then day).
        before = np.where(same_vm, np.r_[np.nan, last[:-1]], np.nan)
        moved |= apart(first, last, step) | apart(first, before, step)
        within |= apart(first, last, resize)
        across |= apart(first, before, resize)
        if name == "vcpus":
            cpu_days = within | across
    changed = within | across
    count = np.bincount(index[changed], minlength=vms)
    # Changed inside the day: judged from the next; at midnight: from that day.
    start = np.where(within, day + 1, day)
    np.maximum.at(out, index[changed], start[changed])
    out[count > MAX_RESIZES] = np.iinfo(np.int32).min
    return out, np.bincount(index[moved], minlength=vms), np.bincount(index[cpu_days], minlength=vms) > 0


def _runs(rows, days, group, vms) -> dict[str, np.ndarray]:
    """Per VM and work metric (and their mix), the highest level held for 30 minutes anywhere
    in the window.

    Stretches inside a day come from each day's ``run_*``; a stretch across a
    midnight from a day's tail and the next day's head (runs.crossing_level),
    when both days are in the window and consecutive.
    """
    out = {}
    follows = np.zeros(len(group), bool)
    follows[1:] = (group[1:] == group[:-1]) & (days[1:] == days[:-1] + 1)
    later = np.flatnonzero(follows)
    for m in runs.RUN_SERIES:
        level = np.zeros(vms)
        np.maximum.at(level, group, rows["run_" + m].astype(np.float64))
        if len(later):
            # Every row's tail against the next row's head (views, no copy of the rows), kept
            # where the two are consecutive days of one VM.
            tail, head = rows["tail_" + m], rows["head_" + m]
            crossing = runs.crossing_level(tail[:-1], head[1:])[later - 1]
            np.maximum.at(level, group[later], crossing.astype(np.float64))
        out["run_" + m] = level
    return out


def _shared_days(shared: np.ndarray, table: DayTable, window: Window, vms: int) -> np.ndarray:
    """Per VM, the window's days (each its first second, oldest first) whose records show two machines
    under its id (aggregate ``shared_id``), or None: whatever part of the window it is judged
    on, every reading of the window may be the other machine's."""
    out = np.full(vms, None, object)
    found = np.flatnonzero((shared > 0) & (table.day >= window.first_day) & (table.day <= window.last_day))
    for k in found[np.argsort(table.day[found], kind="stable")].tolist():
        i = int(table.vm_index[k])
        out[i] = (out[i] or ()) + (int(table.day[k]) * DAY,)
    return out


def _quality(rows, hist, group, vms) -> dict[str, np.ndarray]:
    """What the data-quality checks of the policy read: frozen minutes and readings stuck at zero."""
    out = {"frozen_minutes": _group_sum(rows["frozen_minutes"].astype(np.float64), group, vms)}
    for name in ("cpu", "mem", "disk", "net"):
        total = hist[name].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name + "_zero_share"] = np.where(total > 0, hist[name][:, 0] / np.maximum(total, 1), np.nan)
    return out


def _schedule_slots(rows, h_n, key, group, vms, settings) -> dict[str, np.ndarray]:
    """Per VM and UTC hour of the week (Monday 00:00 first): hours observed and hours busy.

    Kept in UTC, not folded into one time zone: the policy finds each VM's
    own local time from where its busy hours fall (policy._schedule).  An
    hour is busy when its mean CPU, disk or network reaches the idle limit;
    an hour with too few records is neither (missing is not idle).  ``h_n``:
    the cells' records (float), ``key``: each cell's VM x 168 + UTC hour of the week.
    """
    g = group[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        busy = (
            (rows["h_cpu_sum"] / h_n >= settings["cpu_idle"][g])
            | (rows["h_disk_sum"] / h_n >= settings["disk_idle"][g])
            | (rows["h_net_sum"] / h_n >= settings["net_idle"][g])
        )
    observed = h_n >= settings["schedule_hour_min_minutes"][g]
    occ = np.bincount(key, weights=observed.ravel(), minlength=vms * 168).reshape(vms, 168)
    hot = np.bincount(key, weights=(observed & busy).ravel(), minlength=vms * 168).reshape(vms, 168)
    return {"how_hours": occ, "how_busy": hot}


def _slope(x: np.ndarray, y: np.ndarray, group: np.ndarray, groups: int) -> np.ndarray:
    """Least-squares slope of y over x per group (NaN with fewer than 3 points)."""
    count = np.bincount(group, minlength=groups).astype(float)
    sx = np.bincount(group, weights=x, minlength=groups)
    sy = np.bincount(group, weights=y, minlength=groups)
    sxx = np.bincount(group, weights=x * x.astype(float), minlength=groups)
    sxy = np.bincount(group, weights=x * y, minlength=groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (count * sxy - sx * sy) / (count * sxx - sx * sx)
    slope[count < 3] = np.nan
    return slope


def _last_per_vm(values: np.ndarray, vm_index: np.ndarray, vms: int) -> np.ndarray:
    out = np.full(vms, np.nan)
    known = ~np.isnan(values)
    out[vm_index[known]] = values[known]  # rows are sorted by day: the last wins
    return out


def _sparklines(rows, h_n, days, group, vms, window) -> dict[str, np.ndarray]:
    """Mean CPU and memory per step of hours over the analysed window (start_ts to end_ts).

    Not over the whole days asked for: a window clipped to the fleet's first
    record would otherwise draw a blank stretch beside "coverage 100%".
    ``h_n``: the hourly cells' records (float).
    """
    first_hour, last_hour = window.start_ts // 3600, window.end_ts // 3600
    hours = max(1, last_hour - first_hour + 1)
    step = max(1, -(-hours // SPARK_POINTS))
    points = -(-hours // step)
    hour_index = ((days * 24 - first_hour)[:, None] + np.arange(24)[None, :]).ravel()
    inside = (hour_index >= 0) & (hour_index < hours)
    key = np.repeat(group, 24) * points + hour_index // step
    every = bool(inside.all())  # the usual case: every cell in the window, no copies

    def cells(values: np.ndarray) -> np.ndarray:
        return values.ravel() if every else values.ravel()[inside]

    key = cells(key)
    count = np.bincount(key, weights=cells(h_n), minlength=vms * points)
    out = {"spark_step_hours": np.array(step)}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name in ("cpu", "mem"):
            total = np.bincount(key, weights=cells(rows["h_%s_sum" % name]), minlength=vms * points)
            out["spark_" + name] = (total / count).reshape(vms, points)
    return out


def _daily(rows, days, group, vms, window) -> dict[str, np.ndarray]:
    """Each VM's CPU and memory p95 per UTC day of the analysed window (NaN: no record that day)."""
    first = window.start_ts // DAY
    span = max(1, window.end_ts // DAY - first + 1)
    offset = days - first
    inside = (offset >= 0) & (offset < span) & (rows["n"] > 0)
    out = {}
    for name in ("cpu", "mem"):
        daily = np.full((vms, span), np.nan)
        daily[group[inside], offset[inside]] = rows[name + "_p95"][inside]
        out["daily_%s_p95" % name] = daily
    return out
