"""Backtest: decide on one window of the logs, then judge the decisions on the next.

The deciding run is the report itself (build.build over the deciding
window), so what is judged is exactly what an operator would have been told.
Judging reads the per-minute records of both windows straight from the logs
(through logstore and the report's own discovery of data dirs) and asks of
each decision what happened next:

- reclaim:  was the VM needed later, i.e. busy in the judging window?
- downsize: how often did its use exceed the recommended size?
- schedule: was it busy inside the off-hours it was to be switched off?
- any VM quiet in both windows that was not reclaimed is a missed saving.

What "busy" and "quiet" mean is defined once, in JudgingRules, and
documented in docs/REPORT.md ("Backtest").  Report rows are read by column
name and unknown categories are listed but not judged, so new columns or
categories of the policy do not break the backtest.
"""

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vmstats import logstore
from vmstats.report.build import Report, build, parse_day
from vmstats.report.discover import discover
from vmstats.report.issues import damage_words, rows_per_file
from vmstats.report.money import Money
from vmstats.report.policy import QUARTERS
from vmstats.report.prices import PriceBook
from vmstats.report.settings import InputError, Policy, ReportError
from vmstats.stamps import iso

DAY = 86400
#: VMs whose records are parsed at once (bounds memory on large fleets).
_CHUNK_VMS = 32
_COLUMNS = ("ts", "cpu", "mem", "disk_r", "disk_w", "net_rx", "net_tx", "vcpus", "mem_mb")


@dataclass(frozen=True)
class JudgingRules:
    """What counts as work, busy and quiet when decisions are judged.

    A minute is *work* when CPU is at least ``work_cpu`` % of the VM's vCPUs
    (Trusted Advisor's daily idle limit, held minute by minute), or disk read
    + write at least ``work_disk`` bytes/s (a backup or a batch), or network
    received + sent at least ``work_net`` bytes/s (far above the few kB/s of
    monitoring agents and heartbeats).  Memory alone is never work: page
    cache moves while nothing runs.  A *stretch of work* is a run of work
    minutes, none more than ``max_step_minutes`` after the one before, lasting
    at least ``stretch_minutes``: a VM with one is *busy* in that window.  A
    VM is *quiet* in a window when it has records for at least
    ``min_coverage`` of its minutes, no stretch of work, at most
    ``quiet_max_work_share`` of work minutes, and rests like an idle machine:
    median CPU below ``quiet_cpu`` % and median network below ``quiet_net``
    bytes/s (a VM moving tens of kB/s all the time serves something).  With
    less data than that and no stretch it is *unknown*; otherwise *neither*.
    A downsized VM *overran* when more than ``overrun_share`` of its judged
    minutes used more vCPUs or memory than the recommended size.
    """

    work_cpu: float = 10.0
    work_disk: float = 1e6
    work_net: float = 1e5
    stretch_minutes: int = 30
    max_step_minutes: int = 2
    min_coverage: float = 0.5
    quiet_max_work_share: float = 0.01
    quiet_cpu: float = 5.0
    quiet_net: float = 1e4
    overrun_share: float = 0.01


RULES = JudgingRules()


@dataclass
class Windows:
    """Whole UTC days (day numbers) of the deciding and judging windows."""

    decide_first: int
    decide_last: int
    judge_first: int
    judge_last: int

    def as_dict(self) -> dict[str, Any]:
        name = logstore.day_name
        return {
            "decide": {
                "first_day": name(self.decide_first),
                "last_day": name(self.decide_last),
                "days": self.decide_last - self.decide_first + 1,
            },
            "judge": {
                "first_day": name(self.judge_first),
                "last_day": name(self.judge_last),
                "days": self.judge_last - self.judge_first + 1,
            },
        }


@dataclass
class Activity:
    """What one VM did in one window, by JudgingRules."""

    state: str  # busy, quiet, neither, unknown
    coverage: float
    work_minutes: int
    longest_stretch: int  # minutes
    first_stretch: str  # ISO start of the first stretch, "" if none


@dataclass
class Backtest:
    windows: Windows
    rules: JudgingRules
    decision: Report
    rows: list[dict[str, Any]]
    summary: dict[str, Any] = field(default_factory=dict)
    #: Day files that could not be read while judging, each once as ``{"path", "why", "vms"}``
    #: (``vms``: how many VMs lost rows with it; a columnar file holds a day of every VM).
    skipped_files: list[dict[str, Any]] = field(default_factory=list)


def choose_windows(
    units: Sequence[tuple[str, int]], decide_until: str | None, decide_days: int, judge_days: int
) -> Windows:
    """The deciding window ends at ``decide_until`` (default: leave ``judge_days`` after it)."""
    if decide_days < 1 or judge_days < 1:
        raise InputError("the deciding and judging windows need at least one day each")
    days = sorted({day for _vm, day in units})
    last_data = days[-1]
    if decide_until is None:
        decide_last = last_data - judge_days
    else:
        decide_last = parse_day(decide_until, "--decide-until")
    if decide_last >= last_data:
        raise ReportError(
            "no logs after the deciding window (it ends %s, the last log is of %s): nothing to judge on"
            % (logstore.day_name(decide_last), logstore.day_name(last_data))
        )
    if decide_last < days[0]:
        raise ReportError(
            "the deciding window ends %s, before the first log (%s)"
            % (logstore.day_name(decide_last), logstore.day_name(days[0]))
        )
    judge_last = min(decide_last + judge_days, last_data)
    if not any(decide_last < day <= judge_last for day in days):  # a gap in the logs
        raise ReportError(
            "no logs in the judging window (%s .. %s, the days after the deciding window): nothing "
            "to judge on" % (logstore.day_name(decide_last + 1), logstore.day_name(judge_last))
        )
    return Windows(decide_last - decide_days + 1, decide_last, decide_last + 1, judge_last)


def run(
    data_dirs: Sequence[str],
    policy: Policy,
    prices: PriceBook,
    exclusions_path: str | None = None,
    decide_until: str | None = None,
    decide_days: int = 14,
    judge_days: int = 14,
    cache_dir: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 2,
    rules: JudgingRules = RULES,
) -> Backtest:
    listed: list[dict] = []
    parse_day(decide_until, "--decide-until")  # refused whatever the logs hold
    units = discover(data_dirs, listed, raw_only=True)  # judging needs the records themselves
    windows = choose_windows(list(units), decide_until, decide_days, judge_days)
    decision = build(
        data_dirs,
        policy,
        prices,
        exclusions_path,
        since=logstore.day_name(windows.decide_first),
        until=logstore.day_name(windows.decide_last),
        cache_dir=cache_dir,
        progress=progress,
        workers=workers,
    )
    vms = [row["vm"] for row in decision.rows]
    skipped: dict[str, tuple[str, set[str]]] = {}
    for entry in listed:
        # A tier file too damaged to list (truncated, garbage) never became a unit: its days
        # are missing from both windows, so it is named as a file that could not be read.
        if _in_windows(entry["day"], windows):
            skipped.setdefault(entry["path"], (entry["problem"], set()))
    activity = _activity(units, vms, windows, decision, rules, skipped)
    rows = [_judge(row, *activity[row["vm"]], rules) for row in decision.rows]
    named = [{"path": path, "why": why, "vms": len(hit)} for path, (why, hit) in sorted(skipped.items())]
    result = Backtest(windows, rules, decision, rows, skipped_files=named)
    result.summary = summarise(rows, Money.of(decision.meta["prices"]))
    return result


def _in_windows(day: str, windows: Windows) -> bool:
    """Whether a named file's day is judged or decided on; a file of no known day may be."""
    try:
        number = logstore.day_number(day)
    except ValueError:
        return True
    return windows.decide_first <= number <= windows.judge_last


# -- reading and measuring ------------------------------------------------------------------------


def _activity(units, vms, windows: Windows, decision: Report, rules: JudgingRules,
              skipped: dict[str, tuple[str, set[str]]]) -> dict[str, tuple]:
    """Per VM: (deciding Activity, judging Activity, overrun share, off-hours finding).

    A day file that cannot be read (a folder or FIFO in its place, gone, no
    permission) adds no records and goes in ``skipped`` (path: why, and the
    VMs whose rows it held), so a damaged judging window is named rather than
    ending the backtest; a columnar file is read once per VM it holds, but is
    one file to repair.
    """
    by_vm: dict[str, list[tuple[int, list[str]]]] = {}
    for (vm, day), paths in units.items():
        if windows.decide_first <= day <= windows.judge_last:
            by_vm.setdefault(vm, []).append((day, paths))
    rows = {row["vm"]: row for row in decision.rows}
    out = {}
    for first in range(0, len(vms), _CHUNK_VMS):
        chunk = vms[first : first + _CHUNK_VMS]
        paths, owner = [], []
        for k, vm in enumerate(chunk):
            for _day, day_paths in sorted(by_vm.get(vm, [])):
                paths += day_paths
                owner += [k] * len(day_paths)
        errors: dict[int, str] = {}
        series_of = _read_series(paths, owner, len(chunk), errors)
        for i, why in sorted(errors.items()):
            skipped.setdefault(logstore.source_path(paths[i]), (why, set()))[1].add(chunk[owner[i]])
        for vm, series in zip(chunk, series_of, strict=True):
            row = rows[vm]
            decide = measure(series, windows.decide_first, windows.decide_last, rules)
            judge = measure(series, windows.judge_first, windows.judge_last, rules)
            overrun = None
            off_hours = None
            if row.get("category") == "downsize":
                overrun = overrun_share(series, windows, row)
            elif row.get("category") == "schedule":
                off_hours = busy_off_hours(series, windows, row, rules)
            out[vm] = (decide, judge, overrun, off_hours)
    return out


def _read_series(paths: list[str], owner: list[int], vms: int, errors: dict[int, str]) -> list["Series"]:
    """The records of ``vms`` VMs from their files (``owner``: the VM of each path).

    A file read in part (malformed lines: NUL bytes, bytes that are not UTF-8)
    goes in ``errors`` too, so the backtest names it as the report would.
    """
    frame, bad = logstore.read_columns(paths, _COLUMNS, as_float=True, errors=errors)
    kept = rows_per_file(frame, len(paths))
    for i, count in enumerate(bad):
        if count and i not in errors:
            errors[i] = damage_words(int(kept[i]), count)
    if not len(frame):
        empty = np.zeros(0)
        return [Series(np.zeros(0, np.int64), {name: empty for name in _COLUMNS[1:]}) for _ in range(vms)]
    vm_of = np.asarray(owner, dtype=np.int64)[frame["file"].to_numpy()]
    ts = frame["ts"].to_numpy()
    # Sorted by VM then time; a timestamp written twice keeps its last copy (the log's rule).
    order = np.lexsort((np.arange(len(ts)), ts, vm_of))
    vm_of, ts = vm_of[order], ts[order]
    last = np.r_[(vm_of[1:] != vm_of[:-1]) | (ts[1:] != ts[:-1]), True]
    cols = {name: frame[name].to_numpy()[order][last] for name in _COLUMNS[1:]}
    vm_of, ts = vm_of[last], ts[last]
    bounds = np.searchsorted(vm_of, np.arange(vms + 1))
    return [
        Series(ts[lo:hi], {name: values[lo:hi] for name, values in cols.items()})
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
    ]


@dataclass
class Series:
    """One VM's records (sorted by time, one per timestamp): ``ts`` and the columns by name."""

    ts: np.ndarray
    col: dict[str, np.ndarray]

    def between(self, first_day: int, last_day: int) -> "Series":
        lo, hi = np.searchsorted(self.ts, [first_day * DAY, (last_day + 1) * DAY])
        return Series(self.ts[lo:hi], {k: v[lo:hi] for k, v in self.col.items()})

    def sum_of(self, a: str, b: str) -> np.ndarray:
        """a + b where either is known, NaN where both are unknown."""
        x, y = self.col.get(a), self.col.get(b)
        if x is None or y is None:
            return np.full(len(self.ts), np.nan)
        total = np.nan_to_num(x) + np.nan_to_num(y)
        total[np.isnan(x) & np.isnan(y)] = np.nan
        return total


def work_minutes(s: Series, rules: JudgingRules) -> np.ndarray:
    """The one test of a working minute (see JudgingRules); unknown values are not work."""
    with np.errstate(invalid="ignore"):
        return (
            (s.col["cpu"] >= rules.work_cpu)
            | (s.sum_of("disk_r", "disk_w") >= rules.work_disk)
            | (s.sum_of("net_rx", "net_tx") >= rules.work_net)
        )


def stretches(ts: np.ndarray, work: np.ndarray, rules: JudgingRules) -> list[tuple[int, int]]:
    """``(start ts, minutes)`` of each stretch of work lasting at least ``stretch_minutes``."""
    idx = np.flatnonzero(work)
    if not len(idx):
        return []
    minute = ts[idx] // 60
    new = np.r_[True, (np.diff(idx) != 1) | (np.diff(minute) > rules.max_step_minutes)]
    starts, ends = np.flatnonzero(new), np.r_[np.flatnonzero(new)[1:], len(idx)] - 1
    length = minute[ends] - minute[starts] + 1
    keep = length >= rules.stretch_minutes
    return list(zip(ts[idx[starts[keep]]].tolist(), length[keep].tolist(), strict=True))


def measure(series: Series, first_day: int, last_day: int, rules: JudgingRules) -> Activity:
    s = series.between(first_day, last_day)
    expected = (last_day - first_day + 1) * 1440
    coverage = len(np.unique(s.ts // 60)) / expected if len(s.ts) else 0.0
    if not len(s.ts):
        return Activity("unknown", 0.0, 0, 0, "")
    work = work_minutes(s, rules)
    found = stretches(s.ts, work, rules)
    longest = max((m for _t, m in found), default=0)
    first = iso(found[0][0]) if found else ""
    if found:
        state = "busy"
    elif coverage < rules.min_coverage:
        state = "unknown"
    else:
        with np.errstate(invalid="ignore"):
            cpu = np.nanmedian(s.col["cpu"]) if np.isfinite(s.col["cpu"]).any() else math.nan
            net_values = s.sum_of("net_rx", "net_tx")
            net = np.nanmedian(net_values) if np.isfinite(net_values).any() else math.nan
        quiet = work.mean() <= rules.quiet_max_work_share and cpu < rules.quiet_cpu and net < rules.quiet_net
        state = "quiet" if quiet else "neither"
    return Activity(state, round(coverage, 4), int(work.sum()), int(longest), first)


def overrun_share(series: Series, windows: Windows, row: dict[str, Any]) -> float | None:
    """Share of judged minutes whose use exceeds the recommended vCPUs or memory."""
    s = series.between(windows.judge_first, windows.judge_last)
    new_vcpus, new_gb = row.get("recommended_vcpus"), row.get("recommended_mem_gb")
    if not len(s.ts) or new_vcpus is None or new_gb is None:
        return None
    vcpus = _sizes(s.col["vcpus"], row.get("vcpus"))
    mem_gb = _sizes(s.col["mem_mb"] / 1024.0, row.get("mem_gb"))
    with np.errstate(invalid="ignore"):
        cpu_over = s.col["cpu"] / 100.0 * vcpus > new_vcpus + 1e-9
        mem_over = s.col["mem"] / 100.0 * mem_gb > new_gb + 1e-9
    known = np.isfinite(s.col["cpu"]) | np.isfinite(s.col["mem"])
    if not known.any():
        return None
    return round(float((cpu_over | mem_over)[known].mean()), 5)


def _sizes(per_minute: np.ndarray, fallback: Any) -> np.ndarray:
    """The VM's size at each minute: as recorded, else the size the report used."""
    default = math.nan if fallback is None else float(fallback)
    return np.where(np.isfinite(per_minute), per_minute, default)


_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_RANGE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$", re.ASCII)  # ASCII: no other script's digits
#: Parts of an hour the off-hours are read in: a half- or quarter-hour zone's stops start there.
_PARTS = QUARTERS


def off_hours_mask(text: str) -> np.ndarray | None:
    """The week in quarter hours (168 x 4, Monday 00:00 UTC first) from a schedule's UTC
    off-hours text, None if unreadable.

    The text is the report's ``off_utc`` evidence: ``off Mon 00:00-17:00;
    Tue-Fri 02:00-17:00; Sun all day (UTC)`` or ``off daily 20:00-24:00 (UTC)``
    (in UTC the ranges never run past midnight); a half-hour zone's stops start and end on
    half hours (``Mon-Fri 12:30-24:00; Tue-Sat 00:00-03:30``).
    """
    text = text.strip()
    if not text.startswith("off ") or not text.endswith("(UTC)"):
        return None
    day = 24 * _PARTS
    mask = np.zeros(7 * day, bool)
    for part in text[4:-5].strip().split(";"):
        label, _, ranges = part.strip().partition(" ")
        if label == "daily":
            days = list(range(7))
        elif "-" in label:
            a, _, b = label.partition("-")
            if a not in _WEEKDAYS or b not in _WEEKDAYS:
                return None
            days = list(range(_WEEKDAYS.index(a), _WEEKDAYS.index(b) + 1))
        elif label in _WEEKDAYS:
            days = [_WEEKDAYS.index(label)]
        else:
            return None
        units = np.zeros(day, bool)
        if ranges.strip() == "all day":
            units[:] = True
        else:
            for item in ranges.split(","):
                found = _RANGE.match(item.strip())
                if not found:
                    return None
                h1, m1, h2, m2 = map(int, found.groups())
                if m1 % (60 // _PARTS) or m2 % (60 // _PARTS) or m1 >= 60 or m2 >= 60:
                    return None
                start, end = (h * _PARTS + m * _PARTS // 60 for h, m in ((h1, m1), (h2, m2)))
                if start >= end or end > day:
                    return None
                units[start:end] = True
        for d in days:
            mask[d * day : d * day + day] |= units
    return mask


def quarter_of_week(ts: np.ndarray) -> np.ndarray:
    """Quarter hour of the week of each timestamp, Monday 00:00 UTC = 0 (1970-01-01 was a Thursday)."""
    return ((ts // DAY + 3) % 7) * (24 * _PARTS) + (ts // (3600 // _PARTS)) % (24 * _PARTS)


def busy_off_hours(series: Series, windows: Windows, row: dict[str, Any], rules: JudgingRules) -> dict:
    """Work found inside a schedule's off-hours in the judging window."""
    evidence = row.get("evidence") or {}
    mask = off_hours_mask(str(evidence.get("off_utc", "")))
    if mask is None:
        return {"readable": False}
    s = series.between(windows.judge_first, windows.judge_last)
    inside = mask[quarter_of_week(s.ts)]
    off = Series(s.ts[inside], {k: v[inside] for k, v in s.col.items()})
    work = work_minutes(off, rules)
    found = stretches(off.ts, work, rules)
    every = 60 * np.arange(windows.judge_first * 1440, (windows.judge_last + 1) * 1440, dtype=np.int64)
    return {
        "readable": True,
        "minutes": len(np.unique(off.ts // 60)),
        "expected": int(mask[quarter_of_week(every)].sum()),
        "work_minutes": int(work.sum()),
        "longest_stretch": max((m for _t, m in found), default=0),
        "first_stretch": iso(found[0][0]) if found else "",
    }


# -- judging ------------------------------------------------------------------------------------

#: Outcome of each judged VM; one per VM, the first that applies.
OUTCOMES = {
    "needed-later": "reclaimed, but busy in the judging window",
    "overrun": "downsized, and its use exceeded the new size too often",
    "busy-off-hours": "scheduled, and busy inside its off-hours",
    "missed-saving": "quiet in both windows, not reclaimed",
    "held": "the decision held in the judging window",
    "no-data": "too little data in the judging window to judge",
    "not-judged": "a category the backtest does not judge",
}
#: Categories kept as they are: their only possible fault here is a missed saving.  A category
#: not named here or judged above (one the policy adds later) is listed as not judged.
OTHER_CATEGORIES = ("keep", "stopped", "insufficient-data", "excluded")


def _judge(row: dict[str, Any], decide: Activity, judge: Activity, overrun, off_hours, rules) -> dict:
    category = row.get("category", "")
    out = {
        "vm": row["vm"],
        "category": category,
        "confidence": row.get("confidence"),
        "monthly_cost": row.get("monthly_cost"),
        "monthly_saving": row.get("monthly_saving"),
        "recommendation": row.get("recommendation", ""),
        "blocked_by": row.get("blocked_by", ""),
        "decide_state": decide.state,
        "decide_coverage": decide.coverage,
        "decide_longest_stretch": decide.longest_stretch,
        "decide_first_stretch": decide.first_stretch,
        "judge_state": judge.state,
        "judge_coverage": judge.coverage,
        "judge_work_minutes": judge.work_minutes,
        "judge_longest_stretch": judge.longest_stretch,
        "judge_first_stretch": judge.first_stretch,
        "recommended_vcpus": row.get("recommended_vcpus"),
        "recommended_mem_gb": row.get("recommended_mem_gb"),
        "overrun_share": overrun,
        "off_hours_work_minutes": None,
        "off_hours_longest_stretch": None,
        "outcome": "",
        "detail": "",
    }
    quiet_both = decide.state == "quiet" and judge.state == "quiet"
    out["quiet_in_both"] = quiet_both
    if quiet_both and category not in ("reclaim", "excluded"):  # an exclusion is the operator's call
        out["outcome"] = "missed-saving"
        out["detail"] = "quiet in both windows; %s instead of reclaim" % (category or "no category")
    elif category == "reclaim":
        if judge.state == "busy":
            out["outcome"] = "needed-later"
            out["detail"] = "%d-minute stretch of work from %s" % (judge.longest_stretch, judge.first_stretch)
        else:
            out["outcome"] = "no-data" if judge.state == "unknown" else "held"
    elif category == "downsize":
        # An overrun is seen in whatever minutes there are; a size that held is only known to
        # have held over as much of the window as a reclaim needs to be judged (min_coverage).
        if overrun is None:
            out["outcome"] = "no-data"
        elif overrun > rules.overrun_share:
            out["outcome"] = "overrun"
            out["detail"] = "%.1f%% of judged minutes above %s" % (100 * overrun, _size_text(row))
        elif judge.coverage < rules.min_coverage:
            out["outcome"] = "no-data"
            out["detail"] = "records for %.1f%% of the judging window's minutes" % (100 * judge.coverage)
        else:
            out["outcome"] = "held"
            out["detail"] = "%.2f%% of judged minutes above the new size" % (100 * overrun)
    elif category == "schedule":
        _judge_schedule(out, off_hours, rules)
    elif category in OTHER_CATEGORIES:
        out["outcome"] = "no-data" if judge.state == "unknown" else "held"
    else:
        out["outcome"] = "not-judged"
    return out


def _judge_schedule(out: dict[str, Any], off_hours: dict | None, rules: JudgingRules) -> None:
    if not off_hours or not off_hours.get("readable"):
        out["outcome"] = "not-judged"
        out["detail"] = "off-hours not readable from the report"
        return
    out["off_hours_work_minutes"] = off_hours["work_minutes"]
    out["off_hours_longest_stretch"] = off_hours["longest_stretch"]
    if off_hours["longest_stretch"]:
        out["outcome"] = "busy-off-hours"
        out["detail"] = "%d-minute stretch of work in its off-hours from %s" % (
            off_hours["longest_stretch"],
            off_hours["first_stretch"],
        )
    elif off_hours["minutes"] < rules.min_coverage * off_hours["expected"]:
        out["outcome"] = "no-data"
        out["detail"] = "records for %.1f%% of its off-hours minutes in the judging window" % (
            100 * off_hours["minutes"] / off_hours["expected"])
    else:
        out["outcome"] = "held"


def _size_text(row: dict[str, Any]) -> str:
    name = row.get("recommended_size") or ""
    size = "%g vCPU / %g GB" % (row.get("recommended_vcpus") or 0, row.get("recommended_mem_gb") or 0)
    return "%s (%s)" % (name, size) if name else size


def summarise(rows: list[dict[str, Any]], money: Money) -> dict[str, Any]:
    def count(category: str, outcome: str | None = None) -> int:
        return sum(1 for r in rows if r["category"] == category and outcome in (None, r["outcome"]))

    quiet = [r for r in rows if r["quiet_in_both"]]
    missed = [r for r in rows if r["outcome"] == "missed-saving"]
    return {
        "vms": len(rows),
        "currency": money.currency,
        "minor_unit": money.minor_unit,
        "reclaim": {
            "vms": count("reclaim"),
            "needed_later": count("reclaim", "needed-later"),
            # Reclaimed although the deciding window itself held a stretch of work.
            "worked_while_deciding": sum(
                1 for r in rows if r["category"] == "reclaim" and r["decide_state"] == "busy"
            ),
        },
        "downsize": {"vms": count("downsize"), "overrun": count("downsize", "overrun")},
        "schedule": {"vms": count("schedule"), "busy_off_hours": count("schedule", "busy-off-hours")},
        "quiet_in_both": {
            "vms": len(quiet),
            "reclaimed": sum(1 for r in quiet if r["category"] == "reclaim"),
            "missed": len(missed),
            "missed_monthly_cost": money.total(r["monthly_cost"] or 0.0 for r in missed),
        },
        "outcomes": {name: sum(1 for r in rows if r["outcome"] == name) for name in OUTCOMES},
        "judge_states": {
            state: sum(1 for r in rows if r["judge_state"] == state)
            for state in ("busy", "quiet", "neither", "unknown")
        },
    }
