"""The reclamation policy: exactly one category per VM, with evidence and confidence.

Rules are tried in this order and the first that fires decides (so savings
are never counted twice):

1. ``stopped``            no record for ``stopped_after_hours`` before the window's end
2. ``insufficient-data``  coverage below ``coverage_min`` or fewer than ``min_days`` observed
                          (missing data is not idle; one day cannot show a weekly job)
3. ``reclaim``            CPU, disk and network at their own background floor: no
                          ``idle_percentile`` and no 30-minute stretch above the work level
                          drawn from the floor (on one metric or moving between them), and no
                          floor above a service's (memory moving on its own is not work)
4. ``schedule``           steadily idle in recurring hour slots of its own local time, busy in
                          others, over at least ``schedule_min_days``
5. ``upsize``             CPU or memory p95 at ``upsize_at`` of the size or above
6. ``downsize``           a smaller shape holds its peak use plus headroom, use not rising
7. ``keep``

Every VM not reclaimed names the check that kept it from reclaim (``blocked_by``)
and a VM whose data looks wrong (frozen, stuck at zero, resized, impossible)
carries a ``data_quality`` flag and no confident verdict.

Exclusions are applied last: an excluded VM shows what it would have been.
Thresholds come from settings.py; docs/POLICY.md explains each rule.
"""

import datetime
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vmstats.report import runs
from vmstats.report.prices import PriceBook
from vmstats.report.settings import SHAPE_TOLERANCE
from vmstats.words import counted

CATEGORIES = ("stopped", "insufficient-data", "reclaim", "schedule", "downsize", "upsize", "keep", "excluded")
CANDIDATES = ("reclaim", "schedule", "downsize")
DAYS = ("Mon-Fri", "Sat-Sun")
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass
class Decision:
    category: str
    reason: str
    confidence: float
    monthly_saving: float = 0.0
    recommendation: str = ""
    recommended_vcpus: float = math.nan
    recommended_mem_gb: float = math.nan
    recommended_size: str = ""
    off_hours_per_week: float = 0.0
    evidence: dict[str, Any] = field(default_factory=dict)
    blocked_by: str = ""
    data_quality: str = ""


def _clip(value: float, low: float = 0.0, high: float = 1.0) -> float:
    if value != value:
        return low
    return min(high, max(low, value))


def _known(value: float) -> bool:
    return value == value


def confidence_label(value: float) -> str:
    return "high" if value >= 0.7 else "medium" if value >= 0.4 else "low"


def decide(vm: dict[str, Any], s: dict[str, Any], window_end: int, prices: PriceBook) -> Decision:
    """The category of one VM from its statistics ``vm`` and its settings ``s``.

    The rule decides; then every VM not reclaimed is told what kept it from
    reclaim, and a VM with doubtful data gets its flags and a capped confidence.
    """
    checks = activity_checks(vm, s)
    decision = _rule(vm, s, window_end, prices, checks)
    flags = quality_flags(vm, s)
    if flags:
        decision.data_quality = "; ".join(flags)
        decision.evidence["data_quality"] = flags
        decision.confidence = round(min(decision.confidence, s["quality_confidence"]), 2)
    if decision.blocked_by and "blocked_by" not in decision.evidence:
        decision.evidence["blocked_by"] = {"gate": decision.blocked_by}
    if decision.category != "reclaim" and not decision.blocked_by:
        blocker = _blocker(checks)
        if blocker is not None:
            decision.blocked_by = blocker.text()
            decision.evidence["blocked_by"] = blocker.as_dict()
            decision.reason += "; not idle: " + blocker.text()
    return decision


def _rule(
    vm: dict[str, Any], s: dict[str, Any], window_end: int, prices: PriceBook, checks: list["Check"]
) -> Decision:
    if vm["last_seen"] <= 0:
        return Decision(
            "stopped",
            "no valid record in its logs",
            1.0,
            recommendation="check the VM's agent and logs",
            evidence={"bad_lines": int(vm["bad_lines"])},
            blocked_by="stopped: no valid record",
        )
    gap_hours = (window_end - vm["last_seen"]) / 3600.0
    if gap_hours > s["stopped_after_hours"]:
        return Decision(
            "stopped",
            "no record for %.1f h before the window's end (limit %g h)"
            % (gap_hours, s["stopped_after_hours"]),
            round(_clip(0.5 + 0.5 * gap_hours / (4 * s["stopped_after_hours"])), 2),
            recommendation="check whether the VM still exists and still costs",
            evidence={"hours_since_last_record": round(gap_hours, 1)},
            blocked_by="stopped: no record for %.1f h" % gap_hours,
        )
    span = vm["span_days"]
    if span < s["min_days"]:
        return _too_short(span, s["min_days"], "a verdict")
    coverage = vm["coverage"]
    if coverage < s["coverage_min"]:
        return Decision(
            "insufficient-data",
            "coverage %.0f%% below the %.0f%% gate" % (100 * coverage, 100 * s["coverage_min"]),
            1.0,
            recommendation="collect more data before deciding",
            evidence={"coverage": round(coverage, 3)},
            blocked_by="coverage %.0f%% < %.0f%%" % (100 * coverage, 100 * s["coverage_min"]),
        )
    coverage_f = 0.5 + 0.5 * _clip((coverage - s["coverage_min"]) / max(1e-9, 1 - s["coverage_min"]))
    stability_f = 1.0 - _clip(vm["cpu_p95_daily_std"] / max(vm["cpu_p95_daily_mean"], 5.0), 0, 0.5)
    cost = vm["monthly_cost"]

    if _blocker(checks) is None:
        margin = min(c.margin for c in checks)
        conf = coverage_f * (0.5 + 0.5 * margin) * stability_f
        q = s["idle_percentile"]
        by_metric = _by_metric(checks)
        return Decision(
            "reclaim",
            "idle at its own floor: %s; %s; memory p5-p95 %.1f-%.1f%% (memory alone is not work)"
            % (
                ", ".join(_idle_text(c, q) for m, c in by_metric.items() if m != "mix"),
                _mix_text(by_metric["mix"]["run"]),
                vm["mem_p05"],
                vm["mem_p95"],
            ),
            round(conf, 2),
            monthly_saving=prices.money.amount(prices.money.saving(cost), unknown=0.0),
            recommendation="stop and remove (snapshot first)",
            recommended_vcpus=0,
            recommended_mem_gb=0,
            evidence={
                "margins": {c.key: round(c.margin, 3) for c in checks},
                "work_levels": {c.metric: _round(c.limit, 1) for c in checks if c.check == "p"},
                "idle_days": int(vm["idle_days"]),
            },
        )

    plan = _schedule(vm, s)
    if plan is not None and span < s["schedule_min_days"]:
        return _too_short(span, s["schedule_min_days"], "a schedule (it looks like one)")
    if plan is not None:
        # Day-to-day swings are the point of a schedule: no stability factor here.
        share = 1 - plan.irregular / max(s["schedule_max_irregular"], 1e-9)
        conf = coverage_f * (0.5 + 0.5 * share)
        local = "off %s (%s)" % (_local_text(plan.idle), zone(plan.offset))
        utc = _utc_text(plan.utc_idle)
        if plan.offset:
            text = "%s = in UTC: off %s" % (local, utc)
        else:
            text = local
        found = "found from its busy hours" if plan.inferred else "set by policy"
        return Decision(
            "schedule",
            "idle %.0f of 168 hours a week in recurring stops of %s or more; local time %s (%s)"
            % (plan.off, counted(s["schedule_min_off_run"], "hour"), zone(plan.offset), found),
            round(_clip(conf), 2),
            monthly_saving=prices.money.amount(prices.money.saving(cost, share=plan.off / 168), unknown=0.0),
            recommendation=text,
            off_hours_per_week=plan.off,
            evidence={
                "off_hours_per_week": plan.off,
                "irregular_share": round(plan.irregular, 3),
                "utc_offset_hours": plan.offset,
                "utc_offset_source": "inferred" if plan.inferred else "policy",
                "off_local": local,
                "off_utc": "off %s (UTC)" % utc,
            },
        )

    grow = _upsize(vm, s, prices, coverage_f, stability_f)
    if grow is not None:
        return grow
    return _downsize(vm, s, prices, coverage_f, stability_f)


def _too_short(span: float, need: float, what: str) -> Decision:
    return Decision(
        "insufficient-data",
        "observed %.1f days, %s needs %g" % (span, what, need),
        1.0,
        recommendation="collect more data before deciding",
        evidence={"span_days": round(span, 2), "min_days": need},
        blocked_by="span %.1f of %g days" % (span, need),
    )


@dataclass
class Check:
    """One test of idleness: ``value`` of ``metric`` must stay at or below ``limit``."""

    metric: str
    check: str  # "floor", "p" (the idle percentile) or "run" (30-minute stretch)
    value: float
    limit: float
    label: str
    unit: str  # "%" or "rate"

    @property
    def name(self) -> str:
        return _NAMES[self.metric]

    @property
    def key(self) -> str:
        return "%s_%s" % (self.metric, self.check)

    @property
    def over(self) -> float:
        """How far past the limit: value / limit (inf for an unreported metric)."""
        if not _known(self.value):
            return math.inf
        return self.value / self.limit if self.limit > 0 else (math.inf if self.value > 0 else 0.0)

    @property
    def margin(self) -> float:
        return _clip(1.0 - self.over)

    def show(self, value: float) -> str:
        if self.unit == "x":
            return "%.2fx" % value if _known(value) else "n/a"
        if self.unit == "%":
            return "%.1f%%" % value if _known(value) else "n/a"
        return rate(value)

    def text(self) -> str:
        if not _known(self.value):
            return "%s not reported (unknown is not idle)" % self.name
        if self.unit == "x":
            return "%s %s at %s the idle limits, above %s (%.1fx)" % (
                self.name, self.label, self.show(self.value), self.show(self.limit), self.over
            )
        return "%s %s %s above %s (%.1fx)" % (
            self.name,
            self.label,
            self.show(self.value),
            self.show(self.limit),
            self.over,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "check": self.check,
            "value": _round(self.value, 3),
            "limit": _round(self.limit, 3),
            "over": None if math.isinf(self.over) else round(self.over, 2),
        }


_NAMES = {"cpu": "CPU", "disk": "disk", "net": "net", "mix": "work across CPU, disk and net"}
#: metric -> (floor stat, percentile stat, 30-minute stat, never-work setting, floor-ceiling setting, unit)
_METRICS = {
    "cpu": ("cpu_p50", "cpu_idle_pct", "run_cpu", "cpu_idle", "cpu_floor_max", "%"),
    "disk": ("disk_p50", "disk_idle_pct", "run_disk", "disk_idle", "disk_floor_max", "rate"),
    "net": ("net_p50", "net_idle_pct", "run_net", "net_idle", "net_floor_max", "rate"),
}


def activity_checks(vm: dict[str, Any], s: dict[str, Any]) -> list[Check]:
    """The reclaim tests of each work metric, against the VM's own floor.

    The floor is the metric's median: where it sits when nothing happens
    (agents, NTP, ARP, log writes).  Work is a rise to ``work_ratio`` times
    the floor, and never below the fixed idle limit; the busiest minutes at
    the idle percentile and every 30-minute stretch must stay under it, also a
    stretch whose work moves between metrics.  A floor above ``*_floor_max``
    is a service running all the time.
    """
    checks = []
    mix_level = 0.0
    q = s["idle_percentile"]
    for metric, (floor_key, high_key, run_key, idle_key, ceiling_key, unit) in _METRICS.items():
        floor = vm[floor_key]
        work = max(s[idle_key], floor * s["work_ratio"]) if _known(floor) else s[idle_key]
        checks.append(Check(metric, "floor", floor, s[ceiling_key], "floor (p50)", unit))
        checks.append(Check(metric, "p", vm[high_key], work, "p%g" % q, unit))
        run = vm[run_key] if _known(floor) else math.nan
        checks.append(Check(metric, "run", run, work, "held 30 min", unit))
        mix_level = max(mix_level, work / runs.MIX_SCALES[metric])
    # Work moving between metrics (computing, then sending, then computing): every minute of
    # a stretch with some metric at its work level.  In the units of runs.mix_score, the
    # never-work limits: at mix_level every metric is at or above its own work level.
    checks.append(Check("mix", "run", vm["run_mix"], mix_level, "held 30 min", "x"))
    return checks


def _mix_text(c: Check) -> str:
    """``work across CPU, disk and net held 30 min 0.40x < 1.00x of the idle limits``."""
    return "%s held 30 min %s < %s of the idle limits" % (c.name, c.show(c.value), c.show(c.limit))


def _by_metric(checks: list[Check]) -> dict[str, dict[str, Check]]:
    out: dict[str, dict[str, Check]] = {}
    for c in checks:
        out.setdefault(c.metric, {})[c.check] = c
    return out


def _idle_text(c: dict[str, "Check"], q: float) -> str:
    """``CPU p99 1.5%, 30-min 0.8% < 5.0% (floor 1.0%)``: one metric's idle figures."""
    p = c["p"]
    return "%s p%g %s, 30-min %s < %s (floor %s)" % (
        p.name,
        q,
        p.show(p.value),
        p.show(c["run"].value),
        p.show(p.limit),
        p.show(c["floor"].value),
    )


def _blocker(checks: list[Check]) -> Check | None:
    """The check furthest past its limit, or None when every check holds.  A metric's own
    check is named before the mixed stretch: one metric's stretch is a mixed one too, and the
    metric says more."""
    failing = [c for c in checks if c.over > 1.0 or not _known(c.value)]
    if not failing:
        return None
    return max(failing, key=lambda c: (c.metric != "mix", c.over))


def quality_flags(vm: dict[str, Any], s: dict[str, Any]) -> list[str]:
    """What makes this VM's data doubtful, in words (empty when nothing does)."""
    flags = []
    if vm["shared_days"]:
        flags.append("shared-id: two machines send under this id (seq counters take turns) on %s"
                     % ", ".join(_day(day) for day in vm["shared_days"]))
    if vm["frozen_minutes"] >= s["frozen_hours"] * 60:
        flags.append("frozen: identical readings for %.0f h" % (vm["frozen_minutes"] / 60.0))
    for metric, label in (("mem", "memory"), ("cpu", "CPU")):
        share = vm[metric + "_zero_share"]
        if _known(share) and share >= s["zero_share"] and (metric == "mem" or _moving(vm, s)):
            flags.append("%s stuck at 0 in %.0f%% of minutes" % (label, 100 * share))
    if vm["resized"]:
        flags.append("resized in the window: judged since %s" % _day(vm["judged_from"]))
    elif vm["resized_on"]:
        flags.append("memory resized on %s: idle before and after, judged on the whole window"
                     % _day(vm["resized_on"]))
    elif vm["size_changes"]:
        changes = counted(vm["size_changes"], "day")
        flags.append("size changed on %s (floating): judged at its last size" % changes)
    for metric, label in (("disk", "disk"), ("net", "network")):
        if _known(vm[metric + "_max"]) and vm[metric + "_max"] > s["max_rate"]:
            flags.append("impossible %s rate %s" % (label, rate(vm[metric + "_max"])))
    if _known(vm["cpu_peak"]) and _known(vm["cpu_max"]) and vm["cpu_peak"] < vm["cpu_max"] - 0.05:
        flags.append("impossible: CPU peak %.1f%% below CPU %.1f%%" % (vm["cpu_peak"], vm["cpu_max"]))
    return flags


def _moving(vm: dict[str, Any], s: dict[str, Any]) -> bool:
    """Disk or network above their never-work limits most of the time: the VM runs."""
    return (_known(vm["disk_p50"]) and vm["disk_p50"] >= s["disk_idle"]) or (
        _known(vm["net_p50"]) and vm["net_p50"] >= s["net_idle"]
    )


def _day(ts: float) -> str:
    return datetime.datetime.fromtimestamp(int(ts), datetime.UTC).strftime("%Y-%m-%d")


def rate(value: float) -> str:
    """A byte rate for people."""
    if not _known(value):
        return "n/a"
    for unit, size in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if value >= size:
            return "%.1f %s" % (value / size, unit)
    return "%.0f B/s" % value


#: Offsets from UTC a VM's users may live at, for ``auto``: whole hours.  A half- or quarter-hour
#: zone (India's 5.5, Nepal's 5.75) is taken when the policy sets it (``_fraction_folds``).
OFFSETS = np.arange(-12, 15)
#: Parts of an hour a schedule's UTC text is written in: quarter hours, the finest zone offset.
QUARTERS = 4
#: The middle of a 9-to-18 working day, local time: where a schedule's busy hours are centred.
WORKDAY_CENTRE = 13.5
#: Hours a week each local slot (weekday hour 0-23, weekend hour 0-23) stands for.
_SLOT_WEIGHT = np.array([5.0] * 24 + [2.0] * 24)


def _folds() -> np.ndarray:
    """For each offset, the local slot (0-47) of each UTC hour of the week (Monday 00:00 UTC first)."""
    local = (np.arange(168)[None, :] + OFFSETS[:, None]) % 168
    folds = (local // 24 >= 5) * 24 + local % 24
    folds.setflags(write=False)
    return folds


_FOLDS = _folds()


def _fraction_folds(offset: float) -> np.ndarray:
    """For an offset that is not a whole hour, the two local slots each UTC hour of the week
    overlaps (2 x 168): at UTC+5:30 the UTC hour 03:00-04:00 is 08:30-09:30 local, half of
    local hour 8 and half of 9.

    The records are kept per UTC hour, so a local hour is judged on both UTC hours it touches:
    idle only when both were, which makes the stop start and end on hours that were idle all
    through, never on a half hour the data did not see.
    """
    first = np.floor(np.arange(168) + offset).astype(np.int64)
    local = np.stack([first, first + 1]) % 168
    return (local // 24 >= 5) * 24 + local % 24


@dataclass
class _Plan:
    offset: float
    inferred: bool
    off: float
    irregular: float
    idle: np.ndarray  # 48 local slots
    utc_idle: np.ndarray  # the UTC week in parts of an hour (168 x parts, Monday 00:00 first)


def _schedule(vm: dict[str, Any], s: dict[str, Any]) -> _Plan | None:
    """The VM's recurring off-hours, in the local time that best explains its busy hours.

    Each candidate offset folds the 168 UTC hours of the week into 48 local
    slots (weekday or weekend x hour); a slot is idle when none of its hours
    was busy, busy when at least ``schedule_busy_share`` of them were.  Of the
    offsets under which every safeguard holds, the one that puts the busy
    hours' centre nearest the middle of a working day is the VM's local time
    (unless ``utc_offset_hours`` fixes it).
    """
    hours = np.asarray(vm["how_hours"], dtype=np.float64)
    busy = np.asarray(vm["how_busy"], dtype=np.float64)
    # Whatever the offset, an idle slot is made of hours of the week never busy (observed or
    # not: the slot's weight counts them all) and an on slot holds at least one busy hour (a
    # slot is 5 hours of the week or 2): too few of either and no offset fits.  Most VMs end
    # here, before 27 foldings.
    quiet = np.count_nonzero(busy == 0)
    if quiet < s["schedule_min_off_hours"] or 5 * np.count_nonzero(busy) < s["schedule_min_on_hours"]:
        return None
    return _folded_schedule(hours, busy, s)


def _folded_schedule(hours: np.ndarray, busy: np.ndarray, s: dict[str, Any]) -> _Plan | None:
    """``_schedule`` without its first, offset-free test: every offset folded and tested."""
    fixed = s["utc_offset_hours"]
    fraction = fixed is not None and not float(fixed).is_integer()
    if fixed is None:
        rows = np.arange(len(OFFSETS))
        offsets = OFFSETS.astype(np.float64)
    else:
        rows = np.array([0])
        offsets = np.array([float(fixed)])
    if fraction:
        # One offset, each UTC hour counted in both local slots it overlaps: a slot's figures
        # are those of the two UTC hours it touches.
        folds = _fraction_folds(float(fixed))
        key = folds.ravel()
        weights = [np.tile(hours, 2), np.tile(busy, 2)]
    else:
        folds = _FOLDS[np.flatnonzero(np.isin(OFFSETS, offsets))]
        key = (np.arange(len(rows))[:, None] * 48 + folds).ravel()
        weights = [np.tile(hours, len(rows)), np.tile(busy, len(rows))]
    occ, hot = (np.bincount(key, weights=w, minlength=48 * len(rows)).reshape(-1, 48) for w in weights)
    seen = occ > 0
    idle = seen & (hot == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        on_slot = seen & (hot / occ >= s["schedule_busy_share"])
    on = on_slot @ _SLOT_WEIGHT
    irregular = (168.0 - idle @ _SLOT_WEIGHT - on) / 168.0
    # Hours in a day the VM is used: a VM busy an hour or two a day runs a job on a clock the
    # report cannot see (it may be started from inside the VM), so it keeps running; a working
    # day or a shift is what a schedule is for.  Without this, some offset always turns a
    # nightly job into a short "working day".
    used_days = 5.0 * on_slot[:, :24].any(axis=1) + 2.0 * on_slot[:, 24:].any(axis=1)
    day_hours = on / np.maximum(used_days, 1.0)
    # Off-hours are nights or weekends, in the VM's local time.
    night = [h % 24 for h in range(int(s["schedule_night_start"]), int(s["schedule_night_end"]))]

    def enough_off(idle: np.ndarray) -> np.ndarray:
        nights_off = idle[:, night].all(axis=1) | idle[:, 24:].all(axis=1)
        return (idle @ _SLOT_WEIGHT >= s["schedule_min_off_hours"]) & nights_off

    fits = (
        (on >= s["schedule_min_on_hours"])
        & (irregular <= s["schedule_max_irregular"])
        & (day_hours >= s["schedule_min_day_hours"])
        & enough_off(idle)
    )
    if not fits.any():  # most VMs: idle, busy or irregular whatever the offset
        return None
    # Steadily idle hours count against irregularity whatever their length; only stops long
    # enough to be worth one are offered, saved, and make the off-hours (fewer than the idle
    # hours: the test above is only a quicker first pass).
    idle = _long_runs(idle, int(s["schedule_min_off_run"]))
    off = idle @ _SLOT_WEIGHT
    fits &= enough_off(idle)
    if not fits.any():
        return None
    centre = _busy_centre(hours, busy)
    distance = np.abs((centre + offsets - WORKDAY_CENTRE + 12.0) % 24.0 - 12.0)
    best = min(
        np.flatnonzero(fits),
        key=lambda i: (round(float(distance[i]), 2), float(irregular[i]), abs(float(offsets[i]))),
    )
    offset = float(offsets[best])
    return _Plan(
        offset=int(offset) if offset.is_integer() else offset,
        inferred=fixed is None,
        off=float(off[best]),
        irregular=float(irregular[best]),
        idle=idle[best],
        utc_idle=_utc_week(idle[best], offset) if fraction else idle[best][folds[best]],
    )


def _utc_week(idle: np.ndarray, offset: float) -> np.ndarray:
    """The 48 local slots' stops as the UTC week in quarter hours (168 x QUARTERS, Monday 00:00
    UTC first): local hour ``h`` of the week is UTC ``h - offset``, which at UTC+5:30 starts
    on a half hour."""
    local = np.arange(168)
    slot_idle = idle[(local // 24 >= 5) * 24 + local % 24]
    parts = np.repeat(slot_idle, QUARTERS)  # local quarter hours of the week
    return np.roll(parts, -round(offset * QUARTERS))


def _long_runs(idle: np.ndarray, length: int) -> np.ndarray:
    """The idle slots (rows x 48: weekday hours, weekend hours) inside a run of at least
    ``length`` hours, each day's 24 slots circular as its text is (an evening joins the next
    morning).

    A stop of an hour or two between busy hours saves little and costs a shutdown, a boot and a
    cold cache, with users finding the VM down if they come early; schedulers start and stop a VM
    once or twice a day (Azure's auto-shutdown once), not every other hour.
    """
    if length <= 1:
        return idle
    days = idle.reshape(len(idle), 2, 24)
    starts = days.copy()  # a run of ``length`` idle hours starts here
    for k in range(1, length):
        starts &= np.roll(days, -k, axis=2)
    kept = starts.copy()
    for k in range(1, length):
        kept |= np.roll(starts, k, axis=2)
    return kept.reshape(len(idle), 48)


def _busy_centre(hours: np.ndarray, busy: np.ndarray) -> float:
    """UTC hour of the day (0-24) around which the VM is busy: a circular mean of its busy share."""
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(hours > 0, busy / np.maximum(hours, 1.0), 0.0)
    per_hour = share.reshape(7, 24).sum(axis=0)
    angle = 2 * np.pi * (np.arange(24) + 0.5) / 24
    x, y = float(per_hour @ np.cos(angle)), float(per_hour @ np.sin(angle))
    if x == 0 and y == 0:
        return 0.0
    return (math.atan2(y, x) * 24 / (2 * math.pi)) % 24


def zone(offset: float) -> str:
    """``UTC``, ``UTC-8``, ``UTC+5:30``: a zone as people write it (5.5 hours is not "UTC+5.5")."""
    if not offset:
        return "UTC"
    minutes = round(abs(offset) * 60)
    sign = "+" if offset > 0 else "-"
    if minutes % 60:
        return "UTC%s%d:%02d" % (sign, minutes // 60, minutes % 60)
    return "UTC%s%d" % (sign, minutes // 60)


def _local_text(idle: np.ndarray) -> str:
    """``Mon-Fri 18:00-09:00; Sat-Sun all day`` (ranges wrap past midnight)."""
    parts = [_hour_ranges(list(idle[24 * d : 24 * d + 24]), wrap=True) for d in range(2)]
    if parts[0] == parts[1]:
        return "daily " + parts[0]
    return "; ".join("%s %s" % (label, text) for label, text in zip(DAYS, parts, strict=True) if text)


def _utc_text(idle: np.ndarray) -> str:
    """UTC off-hours day by day (``Mon 00:00-17:00; Tue-Fri 02:00-17:00; ...``), for a UTC scheduler.

    ``idle`` is the week in whole hours (168) or in parts of an hour (a half-hour zone's stops
    start on half hours in UTC: ``Mon-Fri 12:30-03:30``).
    """
    day = len(idle) // 7
    days = [_hour_ranges(list(idle[day * d : day * d + day]), wrap=False) for d in range(7)]
    if len(set(days)) == 1:
        return "daily " + days[0]
    parts = []
    d = 0
    while d < 7:
        e = d
        while e + 1 < 7 and days[e + 1] == days[d]:
            e += 1
        if days[d]:
            label = WEEKDAYS[d] if e == d else "%s-%s" % (WEEKDAYS[d], WEEKDAYS[e])
            parts.append("%s %s" % (label, days[d]))
        d = e + 1
    return "; ".join(parts)


def _hour_ranges(idle: list[bool], wrap: bool) -> str:
    """``18:00-08:00`` style ranges of the idle hours (or parts of hours) in a day.

    With ``wrap`` a range may run past midnight (a daily pattern); without it
    the day ends at 24:00 (one weekday of a weekly pattern).
    """
    if all(idle):
        return "all day"
    if not any(idle):
        return ""
    count = len(idle)  # 24 hours, or 24 x QUARTERS quarter hours
    if wrap:
        first_busy = idle.index(False)  # scan from there, so a run over midnight stays whole
        units = [(first_busy + k) % count for k in range(1, count + 1)]
    else:
        units = list(range(count + 1))  # the day's end is a busy unit that closes it
    ranges = []
    run = None
    for u in units:
        if u < count and idle[u]:
            if run is None:
                run = u
        elif run is not None:
            ranges.append("%s-%s" % (_clock(run, count), _clock(u, count)))
            run = None
    return ", ".join(ranges)


def _clock(unit: int, per_day: int) -> str:
    """``HH:MM`` of the ``unit``-th part of a day cut in ``per_day`` parts (24:00 its end)."""
    minutes = unit * 1440 // per_day
    return "%02d:%02d" % divmod(minutes, 60)


def _upsize(vm, s, prices: PriceBook, coverage_f: float, stability_f: float) -> Decision | None:
    """A VM using nearly all of its CPU or memory at p95 needs a bigger size (extra cost, not a saving).

    The new size holds p95 plus headroom, and is at least one step up in the
    dimension that is short (a VM pinned at 100% may need more than it shows).
    """
    vcpus, mem_gb, cost = vm["vcpus"], vm["mem_gb"], vm["monthly_cost"]
    if not (_known(vcpus) and _known(mem_gb) and _known(cost)):
        return None
    limit = s["upsize_at"]
    cpu_hot = _known(vm["cpu_p95"]) and vm["cpu_p95"] >= limit
    mem_hot = _known(vm["mem_p95"]) and vm["mem_p95"] >= limit
    if not (cpu_hot or mem_hot):
        return None
    step = 1.0 + 2 * SHAPE_TOLERANCE
    need_vcpus = max(vcpus * vm["cpu_p95"] / 100.0 * (1 + s["headroom"]), vcpus * step) if cpu_hot else vcpus
    need_gb = max(mem_gb * vm["mem_p95"] / 100.0 * (1 + s["headroom"]), mem_gb * step) if mem_hot else mem_gb
    name, new_vcpus, new_gb, new_cost = prices.smaller(
        need_vcpus, need_gb, s["vcpu_ladder"], s["memory_ladder_gb"], s["max_gb_per_vcpu"],
        _vcpu_step(vcpus, s),
    )
    # The extra cost in the text, the evidence and the saving is one figure, to the minor unit:
    # the new size's month less this one's, as printed (Money.saving read the other way).
    extra = prices.money.saving(new_cost, cost) if _known(new_cost) else math.nan
    hot = []
    if cpu_hot:
        hot.append("CPU p95 %.1f%% of %g vCPU" % (vm["cpu_p95"], vcpus))
    if mem_hot:
        hot.append("memory p95 %.1f%% of %s GB" % (vm["mem_p95"], _gb(mem_gb)))
    target = "%g vCPU / %s GB" % (new_vcpus, _gb(new_gb)) + (" (%s)" % name if name else "")
    return Decision(
        "upsize",
        "%s: at or above %g%% of its size" % (" and ".join(hot), limit),
        round(coverage_f * stability_f, 2),
        monthly_saving=-extra if _known(extra) and extra > 0 else prices.money.round(0.0),
        recommendation="resize up to %s (%s more a month)" % (target, prices.money.figure(max(extra, 0.0))),
        recommended_vcpus=new_vcpus,
        recommended_mem_gb=new_gb,
        recommended_size=name,
        evidence={
            "need_vcpus": round(need_vcpus, 2),
            "need_mem_gb": round(need_gb, 2),
            "extra_monthly_cost": extra if _known(extra) else None,
            "upsize_at": limit,
        },
    )


def _downsize(vm, s, prices: PriceBook, coverage_f: float, stability_f: float) -> Decision:
    vcpus, mem_gb, cost = vm["vcpus"], vm["mem_gb"], vm["monthly_cost"]
    if not (_known(vcpus) and _known(mem_gb) and _known(cost)):
        return Decision("keep", "size not reported: cannot size down", round(coverage_f * 0.5, 2))
    # The busiest minute keeps headroom, CPU's as memory's: one window's peak is not the next
    # one's (docs/POLICY.md, rule 6).  The 30-minute level and p95 stand in where no minute's
    # peak is known; any of them is at most the peak.
    run = vm["run_cpu"] if _known(vm["run_cpu"]) else 0.0
    peak = vm["cpu_max"] if _known(vm["cpu_max"]) else 0.0
    cpu_use = max(vm["cpu_p95"], peak, run) * (1 + s["headroom"])
    mem_use = max(vm["mem_p95"], vm["mem_max"]) * (1 + s["headroom"])
    need_vcpus = vcpus * cpu_use / 100.0
    need_gb = mem_gb * mem_use / 100.0
    if _known(vm["mem_zero_share"]) and vm["mem_zero_share"] >= s["zero_share"]:
        need_gb = mem_gb  # memory stuck at 0 says nothing of the memory it needs: keep it
    name, new_vcpus, new_gb, new_cost = prices.smaller(
        need_vcpus, need_gb, s["vcpu_ladder"], s["memory_ladder_gb"], s["max_gb_per_vcpu"],
        _vcpu_step(vcpus, s),
    )
    saving = cost - new_cost
    evidence = {
        "need_vcpus": round(need_vcpus, 2),
        "need_mem_gb": round(need_gb, 2),
        "cpu_trend": _round(vm["cpu_trend"]),
        "mem_trend": _round(vm["mem_trend"]),
    }
    fits = new_vcpus <= vcpus * (1 + SHAPE_TOLERANCE) and new_gb <= mem_gb * (1 + SHAPE_TOLERANCE)
    if not (saving > cost * s["downsize_min_saving"] and fits):
        return Decision(
            "keep",
            "in use: needs %.2f vCPU and %s GB of %g vCPU / %s GB"
            % (need_vcpus, _gb(need_gb), vcpus, _gb(mem_gb)),
            round(coverage_f * stability_f, 2),
            evidence=evidence,
        )
    if _known(vm["net_p95"]) and vm["net_p95"] > s["downsize_max_net"]:
        return Decision(
            "keep",
            "network p95 %s above %s: bandwidth grows with size"
            % (rate(vm["net_p95"]), rate(s["downsize_max_net"])),
            round(coverage_f * stability_f, 2),
            evidence=evidence,
        )
    rising = max(
        vm["cpu_trend"] if _known(vm["cpu_trend"]) else 0.0,
        vm["mem_trend"] if _known(vm["mem_trend"]) else 0.0,
    )
    if rising >= s["trend_rising"]:
        return Decision(
            "keep",
            "oversized but use is rising %.1f points/week (limit %g)" % (rising, s["trend_rising"]),
            round(coverage_f * stability_f, 2),
            evidence=evidence,
        )
    room = min(1.0 - need_vcpus / new_vcpus, 1.0 - need_gb / new_gb)
    trend_f = 1.0 - 0.5 * _clip(rising / max(s["trend_rising"], 1e-9))
    conf = coverage_f * (0.5 + 0.5 * _clip(room)) * stability_f * trend_f
    target = "%g vCPU / %s GB" % (new_vcpus, _gb(new_gb)) + (" (%s)" % name if name else "")
    return Decision(
        "downsize",
        "CPU p95 %.1f%% p99 %.1f%%, memory p95 %.1f%% max %.1f%% of %g vCPU / %s GB"
        % (vm["cpu_p95"], vm["cpu_p99"], vm["mem_p95"], vm["mem_max"], vcpus, _gb(mem_gb)),
        round(_clip(conf), 2),
        monthly_saving=prices.money.amount(prices.money.saving(cost, new_cost), unknown=0.0),
        recommendation="resize to " + target,
        recommended_vcpus=new_vcpus,
        recommended_mem_gb=new_gb,
        recommended_size=name,
        evidence=evidence,
    )


def _vcpu_step(vcpus: float, s) -> float | None:
    """The step a resize of this size moves in: None for whole vCPUs (a VM: the price book's
    sizes and the ladder), ``fractional_vcpu_step`` for a size already fractional (a
    container's limit, 1.5 vCPU, which may be told 0.5).  docs/POLICY.md, "Fractional sizes"."""
    return None if float(vcpus).is_integer() else s["fractional_vcpu_step"]


def _gb(value: float) -> str:
    """Memory for people, precise enough to tell sizes apart (7.87305 -> 7.87, 1.99 -> 1.99, 2.0 -> 2)."""
    return "%g" % round(value, 2 if value < 100 else 0)


def _round(value: float, digits: int = 2) -> float | None:
    """An evidence figure to ``digits`` places; a small negative one is 0.0, never -0.0 in report.json."""
    return round(value, digits) + 0.0 if _known(value) else None
