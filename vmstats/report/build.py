"""From data dirs to a ranked report: window, statistics, policy, money, exclusions.

The ranking (docs/REPORT.md): candidates (reclaim, schedule, downsize) first,
by expected saving (monthly saving x confidence), then saving, then VM id;
then the VMs to look at (stopped, insufficient-data), then keep, then
excluded, each by provisioned monthly cost, highest first.
"""

import datetime
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vmstats import logstore, protocol
from vmstats.report import exclusions as exclusions_mod
from vmstats.report import load as load_mod
from vmstats.report import statement as statement_mod
from vmstats.report import stats as stats_mod
from vmstats.report.discover import discover
from vmstats.report.issues import named_files
from vmstats.report.money import Money
from vmstats.report.policy import CANDIDATES, Decision, confidence_label, decide
from vmstats.report.prices import PriceBook
from vmstats.report.settings import MAX_DAYS, InputError, Policy, ReportError
from vmstats.stamps import iso
from vmstats.words import counted

#: Settings that statistics need as one value per VM (groups may differ).
_PER_VM = (
    "idle_percentile",
    "cpu_idle",
    "disk_idle",
    "net_idle",
    "idle_day_cpu",
    "idle_day_net_mb",
    "schedule_hour_min_minutes",
)
#: Statistics that are a series per VM (2-d), which rows carry as lists (_profiles).
_SERIES = ("how_cpu", "how_mem", "spark_cpu", "spark_mem", "daily_cpu_p95", "daily_mem_p95")
_ORDER_AFTER = {"upsize": 1, "stopped": 2, "insufficient-data": 3, "keep": 4, "excluded": 5}


@dataclass
class Report:
    rows: list[dict[str, Any]]
    window: stats_mod.Window
    meta: dict[str, Any]
    fleet: dict[str, Any] = field(default_factory=dict)


#: Days an option may name: no log is older than 1970 (records carry Unix times), and a
#: window of up to MAX_DAYS before or after the day must still have dates to name.
FIRST_DAY = 0
LAST_DAY = (datetime.date.max - datetime.date(1970, 1, 1)).days - MAX_DAYS
#: Times, at most, the logs are listed and read again when files listed were gone by the time
#: they were read: a compaction pass moved their rows meanwhile (it removes a day's CSV files
#: once the day's columnar file and rollups are in place, so a new listing finds the rows
#: there).  A pass moves a day at a time and a listing again parses only the VM-days whose
#: files changed (the cache), so this outlasts a pass over weeks of days.
_RELISTS = 30


def parse_day(value: str | None, option: str) -> int | None:
    """A ``YYYY-MM-DD`` option as a day number, or ReportError naming the option."""
    if value is None:
        return None
    try:
        day = logstore.day_number(value)
    except ValueError:
        raise InputError("%s %r is not a YYYY-MM-DD date" % (option, value)) from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise InputError("%s %s is outside %s to %s, the days a log can have" % (
            option, value, logstore.day_name(FIRST_DAY), logstore.day_name(LAST_DAY)))
    return day


def _vanished(issues: list[dict]) -> bool:
    """Whether a file the report could not read is gone (not merely damaged or shut)."""
    return any(not entry["rows"] and not os.path.lexists(entry["path"]) for entry in issues)


def build(
    data_dirs: Sequence[str],
    policy: Policy,
    prices: PriceBook,
    exclusions_path: str | None = None,
    since: str | None = None,
    until: str | None = None,
    cache_dir: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 2,
    by: str | None = None,
    pool: load_mod.Pool | None = None,
    placement: Callable[[str, str | None], str | None] | None = None,
) -> Report:
    """The report of ``data_dirs``.

    ``placement`` (an inventory's ``host_of``, with ``--inventory``) gives each VM's
    host from its id and its ``host`` tag: a VM the inventory places by its ``vms``
    selectors is on that host in every output, statement included, as in the
    capacity section; a VM it does not place keeps its tag.
    """
    if by is not None:
        statement_mod.check_key(by)
    exclusions = exclusions_mod.load(exclusions_path)
    # The command line's dates before the logs: a wrong one is refused whatever the logs hold.
    since_day, until_day = parse_day(since, "--since"), parse_day(until, "--until")
    if since_day is not None and until_day is not None and since_day > until_day:
        raise InputError("--since %s is after --until %s" % (since, until))
    relisting = None  # with --no-cache, a cache of this run's own once it lists again
    try:
        for listed in range(1 + _RELISTS):
            listing: list[dict] = []
            units = discover(data_dirs, listing)
            latest_day = max(day for _vm, day in units)
            last_day = until_day if until_day is not None else latest_day
            first_day = since_day if since_day is not None else last_day - int(policy.base["days"]) + 1
            table = load_mod.load(units, cache_dir or relisting, first_day, last_day, progress=progress,
                                  workers=workers, pool=pool)
            if listed == _RELISTS or not _vanished(table.issues):
                break
            if cache_dir is None and relisting is None:  # the next listings parse only what moved
                relisting = tempfile.mkdtemp(prefix="vmstats-report-")
    finally:
        if relisting is not None:
            shutil.rmtree(relisting, ignore_errors=True)
    if until_day is None:
        # The newest day file may hold no valid record (torn, junk, not a file): the window
        # ends with the last day that has data, as the contract says, not with a file name.
        with_data = table.day[table.data["n"] > 0]
        if len(with_data) and int(with_data.max()) < last_day:
            last_day = int(with_data.max())
            if since_day is None:
                first_day = last_day - int(policy.base["days"]) + 1
            listing += table.issues  # the newest files, damaged, fall out of the window: still named
            table = load_mod.load(
                units, cache_dir, first_day, last_day, progress=progress, workers=workers, pool=pool
            )
    d = table.data
    inside = (table.day >= first_day) & (table.day <= last_day) & (d["n"] > 0)
    if not inside.any() and first_day > last_day:
        # --since after the newest day with logs: the window would read backwards.
        raise ReportError(
            "no records on or after --since %s: the newest logs are of %s"
            % (logstore.day_name(first_day), logstore.day_name(last_day))
        )
    if not inside.any():
        raise ReportError(
            "no records between %s and %s" % (logstore.day_name(first_day), logstore.day_name(last_day))
        )
    end_ts = int(d["last_ts"][inside].max())
    earlier = any(day < first_day for _vm, day in units)
    start_ts = first_day * 86400 if earlier else int(d["first_ts"][inside].min())
    window = stats_mod.Window(first_day, last_day, start_ts, end_ts)
    # At the window's end, not on the day of the run: a report of last month's logs keeps the
    # exclusions that held then (docs/POLICY.md, excluded).
    active, expired = exclusions_mod.split(exclusions, end_ts)

    named = named_files(listing + table.issues)
    # By each read's VM: a file that failed several VMs is named once, for all of them.
    by_path = {entry["path"]: entry for entry in named["skipped_files"] + named["damaged_files"]}
    paths_by_vm: dict[str, dict[str, None]] = {}
    for entry in listing + table.issues:
        paths_by_vm.setdefault(entry["vm"], {})[entry["path"]] = None
    damaged_by_vm = {vm: [by_path[path] for path in sorted(paths)] for vm, paths in paths_by_vm.items()}
    vm_settings = [policy.for_vm(vm) for vm in table.vms]
    per_vm = {name: np.array([s[name] for _g, s in vm_settings], dtype=float) for name in _PER_VM}
    st = stats_mod.compute(table, window, per_vm)
    # Each VM-day's latest record: the labels are that record's, whatever order it was written in.
    kept = np.flatnonzero(d["n"] > 0)
    vm_of, day_of, ts_of = (column[kept].tolist() for column in (table.vm_index, table.day, d["last_ts"]))
    newest = {(table.vms[i], day): ts for i, day, ts in zip(vm_of, day_of, ts_of, strict=True)}
    labels = statement_mod.vm_labels(units, table.vms, last_day, newest)
    if placement is not None:
        labels = [
            (placement(vm, host) or host, tags) for vm, (host, tags) in zip(table.vms, labels, strict=True)
        ]
    st["span_days"] = _span_days(units, table, window, st)
    # A VM resized in memory only is judged since its resize; when that is too short for a
    # verdict, whether it worked is judged on the whole window too (its memory is not work).
    across = st["resized"] & ~st["cpu_resized"]
    whole = stats_mod.compute(table, window, per_vm, across) if across.any() else None
    if whole is not None:
        whole["span_days"] = _span_days(units, table, window, whole)

    # Each VM's series as its row carries them (rounded, gaps None): one numpy pass per statistic.
    series = {name: _profiles(st[name]) for name in _SERIES}
    whole_series = {name: _profiles(whole[name]) for name in _SERIES} if whole is not None else {}
    rows = []
    applied: dict[int, None] = {}  # id() of each active exclusion that applied to a VM
    for i, vm in enumerate(table.vms):
        group, settings = vm_settings[i]
        values, usage = _values(i, st, series, prices)
        decision = decide(values, settings, end_ts, prices)
        if whole is not None and across[i] and decision.category == "insufficient-data":
            whole_values, whole_usage = _values(i, whole, whole_series, prices)
            on_whole = decide(whole_values, settings, end_ts, prices)
            if on_whole.category == "reclaim":
                values, usage, decision = whole_values, whole_usage, on_whole
        if values["last_seen"] <= 0 and vm in damaged_by_vm:
            decision = _all_damaged(damaged_by_vm[vm])
        excluded = exclusions_mod.find(active, vm)
        if excluded is not None:
            applied[id(excluded)] = None
            decision = Decision(
                "excluded",
                "excluded: %s%s; would be %s: %s"
                % (
                    excluded.reason,
                    exclusions_mod.until_note(excluded.expires.isoformat()) if excluded.expires else "",
                    decision.category,
                    decision.reason,
                ),
                1.0,
                recommendation="none (excluded)",
                blocked_by="excluded: %s" % excluded.reason,
                data_quality=decision.data_quality,
                evidence={
                    "would_be": decision.category,
                    "would_save": decision.monthly_saving,
                    "exclusion": excluded.selector,
                    "expires": excluded.expires.isoformat() if excluded.expires else None,
                    "blocked_by": {"gate": "excluded"},
                },
            )
        rows.append(
            dict(
                _row(vm, group, values, decision, excluded, prices.money),
                **_drill(labels[i], usage, values, settings),
                currency=prices.currency,
                minor_unit=prices.money.minor_unit,
            )
        )

    rows.sort(key=_rank_key)
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    meta = _meta(
        _window_meta(window, int(policy.base["days"]), since, until, earlier),
        data_dirs,
        policy,
        prices,
        rows,
        table,
        active,
        expired,
        [item for item in active if id(item) not in applied],
        exclusions_path,
        int(st["spark_step_hours"]),
    )
    meta.update(named)
    meta["sparkline_start"] = iso(window.start_ts // 3600 * 3600)
    meta["daily_start"] = logstore.day_name(window.start_ts // 86400)
    if by is not None:
        meta["statement"] = statement_mod.statement(rows, by, prices.money)
        meta["statement_unmatched"] = statement_mod.unmatched(meta["statement"], rows)
    fleet = _fleet(rows)
    with np.errstate(invalid="ignore"):
        # Fleet-wide mean CPU per hour of the week: when the fleet works, at a glance.
        how = st["how_cpu"]
        counts = np.sum(~np.isnan(how), axis=0)
        fleet["hour_of_week_cpu"] = _profile(
            np.where(counts > 0, np.nansum(how, axis=0) / np.maximum(counts, 1), np.nan)
        )
    return Report(rows, window, meta, fleet)


def _values(i: int, st: dict[str, np.ndarray], series: dict[str, list], prices: PriceBook
            ) -> tuple[dict[str, Any], dict[str, float] | None]:
    """VM ``i``'s statistics as its row and the policy read them, with its costs; and its usage
    cost's parts."""
    values = {
        name: (series[name][i] if name in series else array[i])
        for name, array in st.items()
        if name != "spark_step_hours"
    }
    vcpus, mem_mb = values["vcpus"], values["mem_mb"]
    mem_gb = mem_mb / 1024.0 if mem_mb == mem_mb else math.nan
    values["mem_gb"] = mem_gb
    values["monthly_cost"] = prices.monthly(vcpus, mem_gb)
    usage = prices.usage_parts(
        vcpus, mem_gb, values["cpu_avg"], values["mem_avg"], values["disk_avg"], values["net_avg"]
    )
    values["usage_cost"] = math.nan if usage is None else prices.money.total(usage.values())
    return values, usage


def _all_damaged(files: list[dict]) -> Decision:
    """A VM with log files but no readable record: missing data is not a stopped VM."""
    first = files[0]
    return Decision(
        "insufficient-data",
        "no readable record: %s damaged or unreadable (%s: %s%s)"
        % (
            counted(len(files), "log file"),
            first["path"],
            first["problem"],
            "; ..." if len(files) > 1 else "",
        ),
        1.0,
        recommendation="repair or remove the damaged logs; check the VM's agent",
        evidence={
            "damaged_files": [{"path": f["path"], "problem": f["problem"]} for f in files],
            "blocked_by": {"gate": "no readable record"},
        },
        blocked_by="no readable record",
    )


def _span_days(units, table, window, st) -> np.ndarray:
    """Days each VM has been observed, from its first log ever (not the window's start) to its last
    record; a resized VM counts from its resize.  A window clipped to a young fleet's first record
    cannot make one day look like fourteen.
    """
    first_file: dict[str, int] = {}
    for vm, day in units:
        known = first_file.get(vm)
        if known is None or day < known:
            first_file[vm] = day
    first_day = np.array([first_file[vm] for vm in table.vms], dtype=np.int64)
    start = np.where(first_day < window.first_day, first_day * 86400, st["first_seen"])
    start = np.maximum(start, st["judged_from"])
    return np.maximum(0, st["last_seen"] - start + 60) / 86400.0


def _row(
    vm: str, group: str, v: dict[str, Any], decision: Decision, excluded, money: Money
) -> dict[str, Any]:
    return {
        "rank": 0,
        "vm": vm,
        "category": decision.category,
        "monthly_saving": money.round(decision.monthly_saving),
        "confidence": decision.confidence,
        "confidence_label": confidence_label(decision.confidence),
        "reason": decision.reason,
        "recommendation": decision.recommendation,
        "group": group,
        "excluded_reason": excluded.reason if excluded else "",
        "monthly_cost": money.amount(v["monthly_cost"]),
        "usage_cost": money.amount(v["usage_cost"]),
        "vcpus": _size(v["vcpus"]),
        "mem_gb": _r(v["mem_gb"], 3),
        "recommended_vcpus": _size(decision.recommended_vcpus),
        "recommended_mem_gb": _r(decision.recommended_mem_gb, 3),
        "recommended_size": decision.recommended_size,
        "off_hours_per_week": decision.off_hours_per_week,
        "coverage": _r(v["coverage"], 4),
        "first_seen": iso(v["first_seen"]),
        "last_seen": iso(v["last_seen"]),
        "records": int(v["records"]),
        "cpu_avg": _r(v["cpu_avg"], 2),
        "cpu_p50": _r(v["cpu_p50"], 1),
        "cpu_p95": _r(v["cpu_p95"], 1),
        "cpu_p99": _r(v["cpu_p99"], 1),
        "cpu_max": _r(v["cpu_max"], 1),
        "cpu_peak": _r(v["cpu_peak"], 1),
        "mem_avg": _r(v["mem_avg"], 2),
        "mem_p95": _r(v["mem_p95"], 1),
        "mem_max": _r(v["mem_max"], 1),
        "disk_avg": _r(v["disk_avg"], 1),
        "disk_p95": _r(v["disk_p95"], 1),
        "net_avg": _r(v["net_avg"], 1),
        "net_p95": _r(v["net_p95"], 1),
        "idle_share": _r(v["idle_share"], 4),
        "idle_days": int(v["idle_days"]),
        "days_with_data": int(v["days_with_data"]),
        "cpu_trend": _r(v["cpu_trend"], 2),
        "mem_trend": _r(v["mem_trend"], 2),
        "bad_lines": int(v["bad_lines"]),
        "blocked_by": decision.blocked_by,
        "data_quality": decision.data_quality,
        "span_days": _r(v["span_days"], 2),
        # Not CSV columns: for JSON and HTML.
        "evidence": decision.evidence,
        "hour_of_week_cpu": v["how_cpu"],
        "hour_of_week_mem": v["how_mem"],
        "spark_cpu": v["spark_cpu"],
        "spark_mem": v["spark_mem"],
    }


def _drill(
    labels, usage: dict[str, float] | None, v: dict[str, Any], settings: dict[str, Any]
) -> dict[str, Any]:
    """A row's labels (host, tags), cost by use per resource, and what its drill-down draws.

    ``thresholds`` (HTML only) are the VM's own policy lines for the daily p95
    chart: the idle CPU limit, the idle-day limit, and the p95 at which the
    VM would fit half its size with the policy's headroom.
    """
    host, tags = labels
    return {
        "host": host,
        "tags": dict(tags or ()),
        "usage": usage,
        "daily_cpu_p95": v["daily_cpu_p95"],
        "daily_mem_p95": v["daily_mem_p95"],
        "thresholds": {
            "cpu_idle": settings["cpu_idle"],
            "idle_day_cpu": settings["idle_day_cpu"],
            "half_fit": round(50.0 / (1.0 + settings["headroom"]), 1),
        },
    }


def _profile(values: np.ndarray) -> list[float | None]:
    """A series rounded to 0.1, unknown points as None (one numpy pass, not a call per point)."""
    return [None if x != x else x for x in np.round(values, 1).tolist()]


def _profiles(values: np.ndarray) -> list[list[float | None]]:
    """_profile of each row of a 2-d array, rounded in one numpy pass for every row."""
    return [[None if x != x else x for x in row] for row in np.round(values, 1).tolist()]


def _size(value: float) -> int | float | None:
    """A size for the outputs as the record holds it: whole vCPUs an int (``2``, as always), a
    container's fraction to its places (``0.25``, never rounded to 0)."""
    if value is None or value != value:
        return None
    return protocol.stepped(float(value), stats_mod.VCPU_PLACES)


def _r(value: float, digits: int) -> float | None:
    """``value`` rounded for the outputs; a small negative one is 0.0, never "-0.0" in a CSV cell."""
    if value is None or value != value:
        return None
    value = float(value)
    return int(round(value)) if digits == 0 else round(value, digits) + 0.0


def _rank_key(row: dict[str, Any]):
    cost = row["monthly_cost"] or 0.0
    if row["category"] in CANDIDATES:
        return (0, -row["monthly_saving"] * row["confidence"], -row["monthly_saving"], row["vm"])
    return (_ORDER_AFTER[row["category"]], -cost, 0.0, row["vm"])


def _window_meta(window, days: int, since: str | None, until: str | None, earlier: bool) -> dict[str, Any]:
    """The window analysed, what was asked for, and in plain words why they differ."""
    length = (window.end_ts - window.start_ts + 60) / 86400.0
    first, last = logstore.day_name(window.first_day), logstore.day_name(window.last_day)
    if since is not None or until is not None:
        asked = "%s to %s" % (first, last)
        because = "the UTC days asked for (%s)" % asked
    else:
        asked = "--days %d" % days
        because = "the last %d UTC days (%s) up to the latest record" % (days, asked)
    clipped = not earlier and window.start_ts > window.first_day * 86400
    # --until past the latest record: the days asked for are not all analysed, and a bill read
    # for them must say so (the default window ends at the latest record by definition).
    ends_early = until is not None and window.end_ts < (window.last_day + 1) * 86400 - 60
    cuts = []
    if clipped:
        cuts.append("start at the fleet's first record: there is no older data")
    if ends_early:
        end = iso(window.end_ts)
        cuts.append("end at the latest record (%s %s UTC): there is no newer data" % (end[:10], end[11:16]))
    why = because + (", shortened to " + ", and to ".join(cuts) if cuts else "")
    return {
        "first_day": first,
        "last_day": last,
        "start": iso(window.start_ts),
        "end": iso(window.end_ts),
        "expected_minutes": window.expected_minutes,
        "days": round(length, 1),
        "asked": asked,
        "clipped": clipped,
        "ends_early": ends_early,
        "why": why,
    }


def _meta(window_meta, data_dirs, policy, prices, rows, table, active, expired, unapplied, exclusions_path,
          spark_step):
    money = prices.money
    return {
        "data_dirs": [logstore.printable(d) for d in data_dirs],
        "window": window_meta,
        "policy": {
            "source": policy.source,
            "settings": policy.base,
            "groups": [{"name": g.name, "overrides": g.overrides} for g in policy.groups],
        },
        "prices": {
            "source": prices.source,
            "is_example": prices.is_example,
            "currency": prices.currency,
            "minor_unit": prices.minor_unit,
            "hours_per_month": prices.hours_per_month,
        },
        "exclusions": {
            "source": exclusions_path,
            "active": len(active),
            "expired": [
                {"vm": e.selector, "reason": e.reason, "expires": e.expires.isoformat()} for e in expired
            ],
            # In force but naming no VM of the window (a typo, VMs gone, one an earlier entry
            # covers): said, or a mistyped promise would go unnoticed until its VM is reclaimed.
            "unapplied": [
                {"vm": e.selector, "reason": e.reason,
                 "expires": e.expires.isoformat() if e.expires else None}
                for e in unapplied
            ],
        },
        "totals": {
            "vms": len(rows),
            **statement_mod.totals(rows, money),
            "data_quality_vms": sum(1 for r in rows if r["data_quality"]),
            "bad_lines": sum(r["bad_lines"] for r in rows),
            "unpriced_vms": sum(1 for r in rows if r["monthly_cost"] is None),
        },
        "categories": statement_mod.categories(rows, money),
        "too_young": _too_young(rows, policy.base),
        "cache": {"parsed_vm_days": table.parsed_units, "cached_vm_days": table.cached_units},
        "sparkline_step_hours": spark_step,
    }


def _too_young(rows: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """A sentence when no VM of the fleet has been observed long enough for a verdict, else ''."""
    spans = [r["span_days"] for r in rows if r["span_days"] is not None]
    longest = max(spans, default=0.0)
    if longest >= settings["min_days"]:
        return ""
    return (
        "the fleet is too young to judge: its longest-observed VM has %.1f days of data, verdicts need %g"
        % (
            longest,
            settings["min_days"],
        )
    )


def _fleet(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Utilisation distribution: VMs per 10-point band of CPU p95 and memory p95."""
    out = {}
    for metric in ("cpu_p95", "mem_p95"):
        counts = [0] * 10
        for row in rows:
            value = row[metric]
            if value is not None and row["category"] not in ("stopped", "insufficient-data"):
                counts[min(9, int(value // 10))] += 1
        out[metric] = counts
    return out
