"""Loading per-VM logs into per-VM-day aggregates, with a cache that survives re-runs.

Logs are read only through vmstats.logstore.  The unit of work and of caching
is one VM-day: all files of that VM and UTC day across every data dir given
(several aggregators behind a load balancer), merged with duplicates by
timestamp dropped (last written wins, as in logstore.read_rows).  Each unit
is reduced to a fixed-size aggregate: counts, sums and maxima, per-hour
figures and value histograms (see histogram.py for why histograms).

The cache is one file of those aggregates (plain arrays behind a JSON header,
no pickle, so a planted cache file cannot run code), keyed per unit by the
(path, size, mtime) of its files: a unit whose files did not change is never
parsed again; a unit whose file grew (today's, while the aggregator runs) is.
Re-running over unchanged data therefore reads one file and stats the logs.

A VM-day can be held by any of the three tiers of docs/STORAGE.md: its CSV day
file, its rows in a columnar fleet-day file, or its rollup -- this very
aggregate, kept by compaction once the rows are gone.  ``discover`` says which
source(s) answer each VM-day and ``aggregate_units`` reduces them, whatever
the tier, to the same row of aggregates.
"""

import collections
import datetime
import functools
import itertools
import json
import mmap
import operator
import os
import signal
import stat
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from vmstats import inputfile, logstore
from vmstats.protocol import FIELD_NAMES
from vmstats.report import runs
from vmstats.report.histogram import (
    PCT_BINS,
    PCT_VALUES,
    RATE_BINS,
    SparseHistograms,
    pct_bin,
    percentiles,
    rate_bin,
)
from vmstats.report.settings import InputError, ReportError
from vmstats.words import counted

CACHE_VERSION = 7
#: The aggregate's version, written into every rollup file: a rollup written by a version
#: whose fields differ is not used (raw data answers, or the VM-day is named as unreadable).
ROLLUP_VERSION = CACHE_VERSION
#: Older rollup versions still read, and what they lack filled from what they hold
#: (their rows are gone: refusing them would lose those days).  6: no mixed work stretches.
OLDER_ROLLUPS = {6: runs.mix_from_metrics}
CACHE_NAME = "report-cache-v%d.bin" % CACHE_VERSION
_EPOCH = datetime.date(1970, 1, 1)
#: Units parsed per worker task: big enough to amortise pandas calls.
TASK_UNITS = 64

#: Scalar aggregates per VM-day and their dtypes.  ``n`` counts records after
#: de-duplication, ``minutes`` distinct minutes; sums skip unknown values and
#: ``*_n`` counts the known ones; maxima are NaN when nothing was known.
SCALARS = {
    "n": np.int32,
    "minutes": np.int32,
    "first_ts": np.int64,
    "last_ts": np.int64,
    "cpu_sum": np.float64,
    "mem_sum": np.float64,
    "disk_sum": np.float64,
    "net_sum": np.float64,
    "disk_n": np.int32,
    "net_n": np.int32,
    "cpu_max": np.float32,
    "cpu_peak": np.float32,
    "mem_max": np.float32,
    "disk_max": np.float64,
    "net_max": np.float64,
    "vcpus": np.float32,
    "mem_mb": np.float64,
    "vcpus_first": np.float32,
    "mem_mb_first": np.float64,
    "bad": np.int32,
    "cpu_p95": np.float32,
    "mem_p95": np.float32,
}
#: Per-hour (24 columns) aggregates: records, sums and maxima, for schedules and sparklines.
HOURLY = {
    "h_n": np.int16,
    "h_cpu_sum": np.float32,
    "h_mem_sum": np.float32,
    "h_cpu_max": np.float32,
    "h_disk_sum": np.float32,
    "h_net_sum": np.float32,
}
#: Sustained levels and frozen stretches (runs.py): scalars and per-edge-minute columns.
RUNS = runs.fields()
HISTOGRAMS = {"hist_cpu": PCT_BINS, "hist_mem": PCT_BINS, "hist_disk": RATE_BINS, "hist_net": RATE_BINS}
#: Every field the statistics use: all of the wire format's but the agent's sequence counter.
_READ = [name for name in FIELD_NAMES if name != "seq"]


def day_number(day: str) -> int:
    return (datetime.date.fromisoformat(day) - _EPOCH).days


def day_name(number: int) -> str:
    return (_EPOCH + datetime.timedelta(days=int(number))).isoformat()


class Pool(Protocol):
    """What computes the units' aggregates besides local processes: ``map`` like an Executor's,
    answers in the order of the tasks."""

    def map(self, function: Callable, tasks: list) -> Iterable: ...

    def task_units(self, units: int) -> int:
        """Units per task when ``units`` are to be parsed (a task's cost beside its work differs)."""
        ...


def issue(path: str, problem: str, rows: int = 0, bad_lines: int = 0, vm: str | None = None,
          day: str | None = None) -> dict:
    """One log file the report could not read whole, as the report names it.

    ``rows`` is what it still read (0: the file was skipped); the VM and day
    come from the layout (``<vm>/<day>.csv``) so each place can group by them.
    """
    folder, name = os.path.split(path)
    if day is None:
        day = name[: -len(logstore.SUFFIX)] if name.endswith(logstore.SUFFIX) else ""
    return {
        "path": logstore.printable(path),
        "vm": logstore.printable(os.path.basename(folder) if vm is None else vm),
        "day": logstore.printable(day),
        "problem": problem,
        "rows": rows,
        "bad_lines": bad_lines,
    }


def named_files(issues: Iterable[dict]) -> dict[str, list[dict]]:
    """The damaged files as every command names them: ``skipped_files`` (no row read) and
    ``damaged_files`` (read in part), each file once (several reads may meet it), by path."""
    by_path = {entry["path"]: entry for entry in issues}
    ordered = [by_path[path] for path in sorted(by_path)]
    return {
        "skipped_files": [entry for entry in ordered if not entry["rows"]],
        "damaged_files": [entry for entry in ordered if entry["rows"]],
    }


Source = str | logstore.Part
#: ``{(vm, day): [source]}``: a VM-day's CSV paths and columnar Parts (rows, merged with the
#: last written winning), or one rollup Part (its aggregate, kept after the rows were retired).
Units = dict[tuple[str, int], list[Source]]


def discover(data_dirs: Sequence[str], issues: list[dict] | None = None, raw_only: bool = False) -> Units:
    """``{(vm, day): [sources]}`` over every data dir and tier; ReportError when a dir is unusable.

    In one data dir a VM-day is answered by its rollup when it has one and no
    CSV file (a CSV file beside a rollup holds rows that came after the
    compaction, so the rollup may lack them), else by its rows: CSV and
    columnar together.  ``raw_only`` leaves rollups out (for readers that need
    the records themselves, like the backtest).  A VM folder that cannot be
    listed, a ``.csv`` whose name is not a day or a tier file that cannot be
    read is left out and, with ``issues`` given, named there: one bad entry
    never hides the rest of the fleet.
    """
    units: Units = {}
    rolled: dict[tuple[str, int], str] = {}  # the data dir whose rollup answers a unit
    issues = [] if issues is None else issues
    for data_dir in data_dirs:
        # Absolute paths key the cache, so a re-run from another folder still finds it.
        data_dir = os.path.abspath(data_dir)
        if not os.path.isdir(data_dir):
            raise InputError("data dir %s does not exist or is not a directory" % data_dir)
        before = len(issues)
        mine, found = _discover_dir(data_dir, issues, raw_only)
        if not found and len(issues) > before:  # there were logs: none could be read
            first = issues[before]
            raise ReportError(
                "data dir %s holds no readable VM logs: %s could not be read (first: %s: %s)"
                % (data_dir, counted(len(issues) - before, "file"), first["path"], first["problem"])
            )
        if not found:
            raise ReportError(
                "data dir %s holds no VM logs (expected %s/<vm>/<day>%s)"
                % (data_dir, logstore.VMS_DIR, logstore.SUFFIX)
            )
        if not units:  # the first data dir: nothing to merge with
            units = mine
            continue
        for key, sources in mine.items():
            _merge_unit(units, rolled, key, sources, issues)
    return units


def _merge_unit(units: Units, rolled: dict, key, sources: list, issues: list[dict]) -> None:
    """Add one data dir's sources of a unit to ``units``.

    Rows of several data dirs merge exactly (a timestamp resent to two
    aggregators counts once); aggregates cannot, as the same record may be in
    both.  So a unit that some data dir holds only as a rollup is answered by
    the first such rollup, and the other dirs' sources are named as left out.
    """
    is_rollup = _is_rollup(sources)
    known = units.get(key)
    if known is None:
        units[key] = list(sources)
        return
    if not is_rollup and not _is_rollup(known):
        known.extend(sources)
        return
    if is_rollup and not _is_rollup(known):
        left_out, units[key] = known, list(sources)
    else:
        left_out = sources
    for source in left_out:
        why = ("left out: this VM-day is a rollup in another data dir, "
               "and rollups of several data dirs cannot be merged exactly")
        issues.append(issue(logstore.source_path(source), why, vm=key[0], day=day_name(key[1])))


def _is_rollup(sources: list) -> bool:
    first = sources[0] if len(sources) == 1 else None
    return type(first) is logstore.Part and first.tier == logstore.ROLLUPS_DIR


def _discover_dir(data_dir: str, issues: list[dict], raw_only: bool) -> tuple[Units, int]:
    """The units of one data dir (rollups where no CSV file is beside them, rows otherwise),
    and how many entries were found, readable or not."""
    csv, found = _discover_csv(data_dir, issues)
    tiers = [logstore.COLUMNAR_DIR] + ([] if raw_only else [logstore.ROLLUPS_DIR])
    # Columnar Parts by unit; rollups as the units they answer ([Part]), the first units found.
    parts: dict[str, dict] = {tier: {} for tier in tiers}
    for tier in tiers:
        held = parts[tier]
        for day, path in logstore.tier_days(data_dir, tier):
            try:
                number = day_number(day)
                info = logstore.tier_info(path)
                vms = info["vms"]
                version = info.get("version")
                readable = version == ROLLUP_VERSION or version in OLDER_ROLLUPS
                if tier == logstore.ROLLUPS_DIR and not readable:
                    raise ValueError("rollups of another aggregate version (%s)" % version)
            except (OSError, ValueError, KeyError) as exc:
                issues.append(issue(path, "unreadable %s file: %s" % (tier, exc), vm="", day=day))
                continue
            # A file holds up to thousands of VMs: its keys and Parts made without a Python
            # call per VM (~0.1 s of a 90-day report of 1,000 VMs otherwise).
            keys = zip(vms, itertools.repeat(number), strict=False)
            sources = map(_new_part, zip(itertools.repeat(path), vms, itertools.repeat(tier), strict=False))
            if tier == logstore.ROLLUPS_DIR:
                sources = map(list, zip(sources, strict=False))  # each unit's sources: [its Part]
            held.update(zip(keys, sources, strict=True))
    columnar = parts[logstore.COLUMNAR_DIR]
    units: Units = parts.get(logstore.ROLLUPS_DIR, {})
    for key in csv.keys() & units.keys():  # a CSV file beside a rollup: its rows answer
        del units[key]
    for key in (csv.keys() | columnar.keys()) - units.keys():
        # Columnar rows before the CSV's: a row logged after compaction wins its timestamp.
        units[key] = ([columnar[key]] if key in columnar else []) + csv.get(key, [])
    return _sorted_units(units), found + len(units)


#: ``logstore.Part`` from a ``(path, vm, tier)`` tuple, without the named tuple's Python ``__new__``.
_new_part = functools.partial(tuple.__new__, logstore.Part)


def _sorted_units(units: Units) -> Units:
    """``units`` by VM, then day: sorted by day, then (stably) by VM, each with a C key rather
    than comparing key tuples (~40% faster on a fleet-day file's 1,000 VMs a day)."""
    keys = sorted(units, key=operator.itemgetter(1))
    keys.sort(key=operator.itemgetter(0))
    return dict(zip(keys, map(units.__getitem__, keys), strict=True))


def _discover_csv(data_dir: str, issues: list[dict]) -> tuple[dict[tuple[str, int], list[str]], int]:
    """``({(vm, day): [path]}, entries found)`` of one data dir's CSV day files (an unlistable
    VM folder is an entry: the dir is not empty, only that VM unreadable)."""
    units: dict[tuple[str, int], list[str]] = {}
    numbers: dict[str, int] = {}
    found = 0
    not_folders: list[str] = []
    try:
        vms = list(logstore.iter_vms(data_dir, not_folders))
    except (OSError, ValueError) as exc:
        raise ReportError("cannot list logs in %s: %s" % (data_dir, exc)) from None
    for name in not_folders:
        path = os.path.join(data_dir, logstore.VMS_DIR, name)
        what = "a link to nothing" if not os.path.exists(path) else "not a folder"
        issues.append(issue(path, "%s where a VM's folder of logs should be" % what, vm=name))
        found += 1
    for vm in vms:
        if not logstore.is_utf8(vm):
            path = os.path.join(data_dir, logstore.VMS_DIR, vm)
            issues.append(issue(path, "VM folder name is not UTF-8: not a VM id of vmstats", vm=vm))
            found += 1
            continue
        if not logstore.is_vm_id(vm):
            # Never a VM of the report: its name would reach report.csv, where a spreadsheet
            # reads "=..." or "+..." as a formula, and it is named with its control characters
            # escaped, so it stays one line on the terminal.
            shown = logstore.one_line(vm)
            issues.append(issue(os.path.join(data_dir, logstore.VMS_DIR, shown),
                                "VM folder name is not a VM id of vmstats (docs/PROTOCOL.md)", vm=shown))
            found += 1
            continue
        try:
            files = logstore.day_files(data_dir, vm)
        except (OSError, ValueError) as exc:
            path = os.path.join(data_dir, logstore.VMS_DIR, vm)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            issues.append(issue(path, "VM folder not listed: %s" % reason, vm=vm))
            found += 1  # it is there: the data dir is not empty, only this VM unreadable
            continue
        for day, path in files:
            number = numbers.get(day)
            if number is None:  # each VM has the same few days: each name is parsed once
                try:
                    number = numbers[day] = day_number(day)
                except ValueError:
                    issues.append(issue(path, "not a day file: its name is not YYYY-MM-DD" + logstore.SUFFIX))
                    continue
            units.setdefault((vm, number), []).append(path)
            found += 1
    return units, found


def _signature(sources: list[Source], issues: list[dict],
               stats: dict[str, os.stat_result] | None = None) -> tuple[str, list[Source]]:
    """What identifies a unit's files (path, size and mtime of each, as one string), and
    which of them are regular files to read.  The others are named in ``issues``."""
    if len(sources) == 1 and type(sources[0]) is str:  # most units: one CSV file
        path = sources[0]
        try:
            info = os.stat(path)
        except OSError:
            return _signature_of_files(sources, issues, stats)
        if stat.S_ISREG(info.st_mode):
            return _file_signature(path, "", info), sources
    return _signature_of_files(sources, issues, stats)


def _file_signature(path: str, vm: str, info: os.stat_result) -> str:
    """One file of a unit in its signature (``vm``: "\\0" + the VM of a shared tier file)."""
    return "%s%s\0%d\0%d" % (path, vm, info.st_size, info.st_mtime_ns)


def _signature_of_files(sources: list[Source], issues: list[dict],
                        stats: dict[str, os.stat_result] | None) -> tuple[str, list[Source]]:
    out = []
    readable = []
    for source in sorted(sources, key=logstore.source_path):
        path = logstore.source_path(source)
        try:
            info = stats[path] if stats is not None and path in stats else os.stat(path)
            if stats is not None and isinstance(source, logstore.Part):
                stats[path] = info  # a fleet-day file serves many units: one stat
        except OSError as exc:
            # A file gone since it was listed was removed by retention: not a problem.
            if not isinstance(exc, FileNotFoundError) or os.path.islink(path):
                issues.append(issue(path, logstore.describe_error(path, exc)))
            continue
        if not stat.S_ISREG(info.st_mode):  # a folder or FIFO named like a log is not one
            issues.append(issue(path, logstore.not_regular(info.st_mode)))
            continue
        vm = "\0" + source.vm if isinstance(source, logstore.Part) else ""
        out.append(_file_signature(path, vm, info))
        readable.append(source)
    return "\n".join(out), readable


def empty_table(rows: int) -> dict[str, np.ndarray]:
    table: dict[str, np.ndarray] = {name: np.zeros(rows, dtype) for name, dtype in SCALARS.items()}
    for name, dtype in HOURLY.items():
        table[name] = np.zeros((rows, 24), dtype)
    for name, (columns, dtype) in RUNS.items():
        table[name] = np.zeros((rows, columns) if columns else rows, dtype)
    for name, bins in HISTOGRAMS.items():
        table[name] = np.zeros((rows, bins), np.uint16)
    return table


Aggregates = tuple[dict[str, np.ndarray], dict[int, list[dict]]]
#: The names of a VM-day's aggregates (empty_table's arrays).
AGGREGATES = frozenset(SCALARS) | set(HOURLY) | set(RUNS) | set(HISTOGRAMS)


def aggregate_units(paths_per_unit: list[list[Source]]) -> Aggregates:
    """Reduce each of several units (VM-days) to its aggregates, whatever tier holds it.

    ``paths_per_unit`` holds each unit's sources as ``discover`` gives them:
    CSV paths and columnar Parts (rows: parsed, merged and reduced here) or
    one rollup Part (the aggregate itself, read as it was kept).  Any mix of
    units and data dirs may be passed; each unit's result is the same
    whichever tier holds it.  Also returns, per unit (its index here), the
    files not read whole: one that cannot be opened, or has malformed lines,
    is named (issue) and the rows it still holds are used.
    """
    is_rollup = [_is_rollup(sources) for sources in paths_per_unit]
    rolled = [i for i, rollup in enumerate(is_rollup) if rollup]
    if not rolled:
        return _aggregate_rows(paths_per_unit)
    rows = [i for i, rollup in enumerate(is_rollup) if not rollup]
    if not rows:  # rollups only (a long window's report): their table as read, no copy
        return read_rollups([sources[0] for sources in paths_per_unit])
    out = empty_table(len(paths_per_unit))
    issues: dict[int, list[dict]] = {}
    for positions, (table, found) in (
        (rolled, read_rollups([paths_per_unit[i][0] for i in rolled])),
        (rows, _aggregate_rows([paths_per_unit[i] for i in rows]) if rows else (empty_table(0), {})),
    ):
        for name, values in table.items():
            if values.dtype != out[name].dtype:
                out[name] = out[name].astype(np.result_type(out[name], values))
            out[name][positions] = values
        issues.update((positions[k], entries) for k, entries in found.items())
    return out, issues


def read_rollups(parts: list[logstore.Part], sparse: bool = False) -> Aggregates:
    """The kept aggregates of rollup Parts, each file read once; a VM-day its file does not
    hold (or a file that cannot be read) is empty and named in the issues.

    ``sparse`` keeps the histograms as the files' cells (histogram.SparseHistograms: what a
    long window's report sums per VM without a dense VM-day table); otherwise they are dense
    arrays like every other tier's.
    """
    out = {name: values for name, values in empty_table(len(parts)).items() if name not in HISTOGRAMS}
    hists = {name: SparseHistograms(len(parts), bins) for name, bins in HISTOGRAMS.items()}
    issues: dict[int, list[dict]] = {}
    by_path: dict[str, list[int]] = {}
    for i, part in enumerate(parts):
        by_path.setdefault(part.path, []).append(i)
    files = list(by_path.items())
    asked = [[parts[i].vm for i in mine] for _path, mine in files]
    calls = [(path, set(vms)) for (path, _mine), vms in zip(files, asked, strict=True)]
    for (path, mine), wanted, read in zip(files, asked, _read_ahead(_rollup_file, calls), strict=True):
        try:
            vms, data = read()
        except (OSError, ValueError, KeyError) as exc:
            for i in mine:
                issues[i] = [issue(path, "unreadable rollup: %s" % exc, vm=parts[i].vm, day=_file_day(path))]
            continue
        whole = vms == wanted  # the file's every VM in its order: the usual case, no lookup per VM
        if whole:
            positions, rows = np.array(mine), np.arange(len(vms))
        else:
            row_of = {vm: k for k, vm in enumerate(vms)}
            found = [(i, row_of[parts[i].vm]) for i in mine if parts[i].vm in row_of]
            for i in mine:
                if parts[i].vm not in row_of:
                    issues[i] = [issue(path, "rollup missing from its file", vm=parts[i].vm,
                                       day=_file_day(path))]
            if not found:
                continue
            positions = np.array([i for i, _k in found])
            rows = np.array([k for _i, k in found])
            whole = len(rows) == len(vms) and bool(np.all(rows == np.arange(len(rows))))
        for name in out:
            values = data[name]
            if values.dtype != out[name].dtype:
                out[name] = out[name].astype(np.result_type(out[name], values))
            out[name][positions] = values if whole else values[rows]
        for name, hist in hists.items():
            _place_file_rows(hist, data[name], positions, rows, len(vms))
    for name, hist in hists.items():
        out[name] = hist if sparse else hist.dense()
    return out, issues


def _rollup_file(path: str, vms: set[str]) -> tuple[list[str], dict]:
    """``(vms, {aggregate: array or SparseRows})`` of one rollup file, checked against the
    report's aggregate; OSError or ValueError when it cannot answer."""
    info, table = logstore.read_tier_part(path, vms, threads=False)  # the files are read in threads
    vms, data = logstore.rollup_arrays(table)
    upgrade = OLDER_ROLLUPS.get(info.get("version"))
    if upgrade is not None:
        data.update(upgrade(data))
    missing = AGGREGATES - set(data)
    if missing:
        raise ValueError("no %s column" % sorted(missing)[0])
    for name, bins in HISTOGRAMS.items():
        values = data[name]
        width = values.width if isinstance(values, logstore.SparseRows) else np.shape(values)[-1]
        if width != bins:
            raise ValueError("%s has %d bins, not %d" % (name, width, bins))
    return vms, data


#: Files read ahead of the one being placed: decoding (which releases the GIL) overlaps the
#: placing, and at most this many decoded files wait in memory.
_READ_AHEAD = 2


def _read_ahead(function: Callable, calls: list[tuple]) -> Iterator[Callable]:
    """For each call of ``calls``, in order, something that returns its result or raises its
    error, the next few running meanwhile in threads."""
    if len(calls) < 2:
        for args in calls:
            yield functools.partial(function, *args)
        return
    with ThreadPoolExecutor(_READ_AHEAD) as threads:
        pending: collections.deque = collections.deque()
        for args in calls:
            pending.append(threads.submit(function, *args))
            if len(pending) > _READ_AHEAD:
                yield pending.popleft().result
        while pending:
            yield pending.popleft().result


def _place_file_rows(hist: SparseHistograms, values, positions: np.ndarray, rows: np.ndarray,
              file_rows: int) -> None:
    """Give a file's rows ``rows`` (sparse cells or dense rows) the table rows ``positions``."""
    remaining = np.arange(len(rows))
    while len(remaining):  # a file's row wanted twice (one Part given twice): one chunk per copy
        _rows, first = np.unique(rows[remaining], return_index=True)
        taken = remaining[first]
        where = np.full(file_rows, -1, np.int64)
        where[rows[taken]] = positions[taken]
        if isinstance(values, logstore.SparseRows):
            hist.add_cells(where, values.offsets, values.col, values.value)
        else:  # a file written with dense histograms
            hist.add_dense(where, values)
        remaining = np.delete(remaining, first)


def _first_file(sources: list[Source]) -> tuple[str, str]:
    """Where a unit's rows start: its columnar file and VM, or ("", "") for CSV only."""
    first = sources[0] if sources else ""
    return (first.path, first.vm) if isinstance(first, logstore.Part) else ("", "")


def _file_day(path: str) -> str:
    return os.path.basename(path)[: -len(logstore.TIER_SUFFIX)]


def _aggregate_rows(paths_per_unit: list[list[Source]]) -> Aggregates:
    """aggregate_units of units held as rows (CSV files, columnar Parts)."""
    paths = [p for group in paths_per_unit for p in group]
    owner = np.repeat(np.arange(len(paths_per_unit), dtype=np.int64), [len(g) for g in paths_per_unit])
    errors: dict[int, str] = {}
    frame, bad = logstore.read_columns(paths, _READ, as_float=True, errors=errors)
    out = empty_table(len(paths_per_unit))
    np.add.at(out["bad"], owner, np.asarray(bad, dtype=np.int32))
    issues = file_issues(paths, owner, frame, bad, errors)
    if not len(frame):
        return out, issues
    unit = owner[frame["file"].to_numpy()]
    ts = frame["ts"].to_numpy()
    same = unit[1:] == unit[:-1]
    if np.all(~same | (ts[1:] > ts[:-1])):
        # Already in (unit, time) order without duplicates: the usual case, no sort or copies.
        col = {name: frame[name].to_numpy() for name in _READ}
    else:
        order = np.lexsort((np.arange(len(ts)), ts, unit))
        unit, ts = unit[order], ts[order]
        last = np.ones(len(ts), bool)
        last[:-1] = (unit[1:] != unit[:-1]) | (ts[1:] != ts[:-1])
        keep = order[last]
        unit, ts = unit[last], ts[last]
        col = {name: frame[name].to_numpy()[keep] for name in _READ}
    disk = _sum_known(col["disk_r"], col["disk_w"])
    net = _sum_known(col["net_rx"], col["net_tx"])

    starts = np.flatnonzero(np.r_[True, unit[1:] != unit[:-1]])
    units = unit[starts]
    out["n"][units] = np.diff(np.r_[starts, len(unit)])
    minute = ts // 60
    new_minute = np.r_[True, (unit[1:] != unit[:-1]) | (minute[1:] != minute[:-1])]
    out["minutes"][units] = np.add.reduceat(new_minute.astype(np.int32), starts)
    out["first_ts"][units] = ts[starts]
    out["last_ts"][units] = ts[np.r_[starts[1:], len(ts)] - 1]
    cpu = np.nan_to_num(col["cpu"])
    mem = np.nan_to_num(col["mem"])
    out["cpu_sum"][units] = np.add.reduceat(cpu, starts)
    out["mem_sum"][units] = np.add.reduceat(mem, starts)
    out["disk_sum"][units] = np.add.reduceat(np.nan_to_num(disk), starts)
    out["net_sum"][units] = np.add.reduceat(np.nan_to_num(net), starts)
    out["disk_n"][units] = np.add.reduceat((~np.isnan(disk)).astype(np.int32), starts)
    out["net_n"][units] = np.add.reduceat((~np.isnan(net)).astype(np.int32), starts)
    out["cpu_max"][units] = np.fmax.reduceat(col["cpu"], starts)
    out["cpu_peak"][units] = np.fmax.reduceat(col["cpu_max"], starts)
    out["mem_max"][units] = np.fmax.reduceat(col["mem"], starts)
    out["disk_max"][units] = np.fmax.reduceat(disk, starts)
    out["net_max"][units] = np.fmax.reduceat(net, starts)
    for name in ("vcpus", "mem_mb"):
        out[name][units] = _last_known(col[name], unit, len(paths_per_unit))[units]
        # The day's first size too: a resize inside the window is seen between the two.
        out[name + "_first"][units] = _last_known(col[name][::-1], unit[::-1], len(paths_per_unit))[units]

    hour = (ts // 3600) % 24
    cell = unit * 24 + hour
    cells = len(paths_per_unit) * 24
    cell_starts = np.flatnonzero(np.r_[True, cell[1:] != cell[:-1]])
    where = cell[cell_starts]
    counts = np.diff(np.r_[cell_starts, len(cell)])
    out["h_n"].reshape(cells)[where] = np.minimum(counts, np.iinfo(np.int16).max)
    out["h_cpu_sum"].reshape(cells)[where] = np.add.reduceat(cpu, cell_starts)
    out["h_mem_sum"].reshape(cells)[where] = np.add.reduceat(mem, cell_starts)
    out["h_cpu_max"].reshape(cells)[where] = np.fmax.reduceat(col["cpu"], cell_starts)
    out["h_disk_sum"].reshape(cells)[where] = np.add.reduceat(np.nan_to_num(disk), cell_starts)
    out["h_net_sum"].reshape(cells)[where] = np.add.reduceat(np.nan_to_num(net), cell_starts)

    rows = len(paths_per_unit)
    runs.aggregate(out, unit, ts, {"cpu": col["cpu"], "mem": col["mem"], "disk": disk, "net": net}, rows)
    for name, values, binner, bins in (
        ("hist_cpu", col["cpu"], pct_bin, PCT_BINS),
        ("hist_mem", col["mem"], pct_bin, PCT_BINS),
        ("hist_disk", disk, rate_bin, RATE_BINS),
        ("hist_net", net, rate_bin, RATE_BINS),
    ):
        known = ~np.isnan(values)
        flat = np.bincount(unit[known] * bins + binner(values[known]), minlength=rows * bins)
        if flat.max(initial=0) > np.iinfo(np.uint16).max:
            out[name] = out[name].astype(np.uint32)
        out[name][:] = flat.reshape(rows, bins)
    # Daily p95s (for trends and idle days) do not depend on the policy: computed once here.
    out["cpu_p95"][:] = percentiles(out["hist_cpu"], 95, PCT_VALUES)
    out["mem_p95"][:] = percentiles(out["hist_mem"], 95, PCT_VALUES)
    return out, issues


def rows_per_file(frame, files: int) -> np.ndarray:
    """Rows read from each of ``files`` files (``frame["file"]`` is each row's file)."""
    if not len(frame):
        return np.zeros(files, dtype=np.int64)
    return np.bincount(frame["file"].to_numpy(), minlength=files)


def damage_words(kept: int, bad: int) -> str:
    """What a file read in part lost, worded once for the report, the backtest and admission.

    A file with no readable row says so: "N malformed lines skipped" alone reads as
    if the rest of the file had been used.
    """
    if kept:
        return "%s skipped" % counted(bad, "malformed line")
    return "no readable row (%s)" % counted(bad, "malformed line")


def file_issues(paths, owner, frame, bad: list[int], errors: dict[int, str]) -> dict[int, list[dict]]:
    """``{unit: [issue]}`` for the files that were unreadable or had malformed lines."""
    damaged = sorted(set(errors) | {i for i, count in enumerate(bad) if count})
    if not damaged:
        return {}
    rows = rows_per_file(frame, len(paths))
    found: dict[int, list[dict]] = {}
    for index in damaged:
        kept = int(rows[index])
        problem = errors[index] if index in errors else damage_words(kept, bad[index])
        source = paths[index]
        if isinstance(source, logstore.Part):
            entry = issue(source.path, problem, kept, bad[index], vm=source.vm, day=_file_day(source.path))
        else:
            entry = issue(source, problem, kept, bad[index])
        found.setdefault(int(owner[index]), []).append(entry)
    return found


def _sum_known(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a + b where either is known; NaN only when both are unknown."""
    both_missing = np.isnan(a) & np.isnan(b)
    total = np.nan_to_num(a) + np.nan_to_num(b)
    total[both_missing] = np.nan
    return total


def _last_known(values: np.ndarray, unit: np.ndarray, rows: int) -> np.ndarray:
    """The last non-NaN value of each unit (NaN if none): the VM's size that day."""
    out = np.full(rows, np.nan)
    known = ~np.isnan(values)
    out[unit[known]] = values[known]  # later rows overwrite earlier ones
    return out


def concat_tables(tables: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    out = {}
    for name in tables[0]:
        parts = [t[name] for t in tables]
        if any(isinstance(p, SparseHistograms) for p in parts):
            out[name] = SparseHistograms.concat(parts)
            continue
        dtype = np.result_type(*[p.dtype for p in parts])
        out[name] = np.concatenate([p.astype(dtype, copy=False) for p in parts])
    return out


@dataclass
class DayTable:
    """Aggregates of every loaded VM-day, sorted by VM then day."""

    vms: list[str]
    vm_index: np.ndarray
    day: np.ndarray
    data: dict[str, np.ndarray]
    parsed_units: int
    cached_units: int
    #: Log files not read whole (issue(): unreadable, not a file, malformed lines), by path.
    issues: list[dict] = field(default_factory=list)


def load(
    units: dict[tuple[str, int], list[str]],
    cache_dir: str | None,
    first_day: int,
    last_day: int,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 2,
    pool: Pool | None = None,
) -> DayTable:
    """Aggregates of the VM-days of ``units`` in ``[first_day, last_day]``.

    VMs whose logs all predate ``first_day`` contribute their last day, so the
    report can call them stopped with a real last-seen time.  ``pool``, when
    given, computes the units' aggregates instead of local processes (a Dask
    cluster: distributed.py); the tasks and their results are the same.
    """
    wanted = {}
    last_before: dict[str, int] = {}
    for key, paths in units.items():
        day = key[1]
        if day > last_day:
            continue
        if day < first_day:
            vm = key[0]
            last_before[vm] = max(day, last_before.get(vm, day))
            continue
        wanted[key] = paths
    if last_before:
        in_window = {vm for vm, _day in wanted}
        for vm, day in last_before.items():
            if vm not in in_window:
                wanted[(vm, day)] = units[(vm, day)]
    keys = sorted(wanted)
    listed: list[dict] = []  # what a stat finds: never cached, it costs nothing to find again
    rolled, raw = _split_rollups(keys, wanted, listed)
    raw_keys = [keys[i] for i in raw]
    data, found, parsed, cached = _load_rows(raw_keys, wanted, listed, cache_dir, progress, workers, pool)
    if rolled:
        # Rollups are this very aggregate: read from their files on every run, each fleet-day
        # file once, histograms kept sparse (cheaper than a cache of them would be to read).
        table, found_rolled = read_rollups([wanted[keys[i]][0] for i in rolled], sparse=True)
        found = {raw[i]: entries for i, entries in found.items()}
        found.update((rolled[k], entries) for k, entries in found_rolled.items())
        if raw:
            data = concat_tables([data, table])
            inverse = np.empty(len(keys), np.int64)
            inverse[np.array(raw + rolled)] = np.arange(len(keys))
            data = {name: values[inverse] for name, values in data.items()}
        else:
            data = table
        parsed += len(rolled)
    entries = [entry for i in sorted(found) for entry in found[i]]
    return _table(keys, data, parsed, cached, listed + entries)


def _split_rollups(keys: list, wanted: Units, listed: list[dict]) -> tuple[list[int], list[int]]:
    """Positions in ``keys`` of the units answered by a rollup, and of the others (rows).

    A rollup file is looked at once (not per VM-day); one gone since it was
    listed (retention) or not a regular file (named in ``listed``) leaves its
    units with nothing to read, as the rows of a vanished CSV file would.
    """
    rolled, raw = [], []
    usable: dict[str, bool] = {}
    part, rollups = logstore.Part, logstore.ROLLUPS_DIR
    for i, sources in enumerate(map(wanted.__getitem__, keys)):
        first = sources[0] if len(sources) == 1 else None
        if type(first) is part and first.tier == rollups:  # _is_rollup, inline: once per unit
            path = first.path
            if path not in usable:
                usable[path] = bool(_signature(sources, listed)[1])
            if usable[path]:
                rolled.append(i)
                continue
            wanted[keys[i]] = []
        raw.append(i)
    return rolled, raw


def _load_rows(keys, wanted: Units, listed: list[dict], cache_dir, progress, workers,
               pool) -> tuple[dict, dict[int, list[dict]], int, int]:
    """``(aggregates, issues by position, parsed, cached)`` of units held as rows (``keys``):
    from the cache where their files did not change, parsed otherwise, and the cache rewritten."""
    stats: dict[str, os.stat_result] = {}
    signed = [_signature(wanted[k], listed, stats) for k in keys]
    signatures = [sig for sig, _readable in signed]
    readable = {key: paths for key, (_sig, paths) in zip(keys, signed, strict=True)}

    cache = _read_cache(cache_dir)
    if cache and cache["sigs"] == signatures and cache["keys"] == keys:
        # Nothing changed since the cache was written: use its arrays as they are (no copies).
        return cache["data"], cache["issues"], 0, len(keys)
    position = {key: i for i, key in enumerate(cache["keys"])} if cache else {}
    reuse, stale = [], []
    for i, (key, sig) in enumerate(zip(keys, signatures, strict=True)):
        j = position.get(key)
        if j is not None and cache["sigs"][j] == sig:
            reuse.append((i, j))
        else:
            stale.append(i)

    parts = []
    order = []
    parsed_issues: dict[int, list[dict]] = {}  # by position in keys
    if reuse:
        rows = np.array([j for _i, j in reuse])
        parts.append({name: values[rows] for name, values in cache["data"].items()})
        order.extend(i for i, _j in reuse)
        for i, j in reuse:
            if j in cache["issues"]:
                parsed_issues[i] = cache["issues"][j]
    if stale:
        # Process pools only where rows are parsed: a report from rollups alone spares their import.
        from concurrent.futures.process import BrokenProcessPool

        try:
            # A task's units from one columnar file, VMs in its order: one read of a few row groups.
            stale = sorted(stale, key=lambda i: _first_file(readable[keys[i]]))
            tables, found = _parse(keys, readable, stale, progress, workers, pool)
        except BrokenProcessPool:
            raise ReportError("a log-parsing process died (out of memory?); retry with --workers 1") from None
        parts.extend(tables)
        parsed_issues.update(found)
        order.extend(stale)
    data = (parts[0] if len(parts) == 1 else concat_tables(parts)) if parts else empty_table(0)
    if parts and order != list(range(len(order))):  # already in key order (one part): no copy
        inverse = np.empty(len(order), np.int64)
        inverse[np.array(order)] = np.arange(len(order))
        data = {name: values[inverse] for name, values in data.items()}
    if cache_dir and (stale or (cache is None and keys) or (cache and len(cache["keys"]) != len(keys))):
        _write_cache(cache_dir, {"keys": keys, "sigs": signatures, "data": data, "issues": parsed_issues})
    return data, parsed_issues, len(stale), len(reuse)


def _table(keys, data, parsed: int, cached: int, issues: list[dict]) -> DayTable:
    names = [vm for vm, _day in keys]
    vms = sorted(set(names))
    index = {vm: i for i, vm in enumerate(vms)}
    return DayTable(
        vms,
        np.fromiter(map(index.__getitem__, names), np.int32, len(keys)),
        np.fromiter((day for _vm, day in keys), np.int32, len(keys)),
        data,
        parsed_units=parsed,
        cached_units=cached,
        issues=sorted(issues, key=lambda entry: entry["path"]),
    )


def _parse(
    keys, readable, stale, progress, workers, pool
) -> tuple[list[dict[str, np.ndarray]], dict[int, list]]:
    """Aggregates of the ``stale`` units (positions in ``keys``), and their files' issues by position."""
    size = pool.task_units(len(stale)) if pool is not None else TASK_UNITS
    starts = range(0, len(stale), size)
    tasks = [[readable[keys[i]] for i in stale[s : s + size]] for s in starts]
    if pool is not None:
        return _collect(pool.map(aggregate_units, tasks), starts, tasks, stale, progress)
    if workers > 1 and len(tasks) > 1 and "fork" in _start_methods():
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        import pandas  # noqa: F401  (imported once here, inherited by the forked workers)

        local = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                    initializer=_ignore_interrupts)
        try:
            return _collect(local.map(aggregate_units, tasks), starts, tasks, stale, progress)
        except BaseException:
            local.shutdown(cancel_futures=True)  # Ctrl-C: the tasks under way, not every one left
            raise
        finally:
            local.shutdown()
    return _collect(map(aggregate_units, tasks), starts, tasks, stale, progress)


def _ignore_interrupts() -> None:
    """A parsing process leaves Ctrl-C to the report, which then stops the pool.

    Ctrl-C at a terminal reaches every process of the group: each worker printed
    its own KeyboardInterrupt traceback, and one stopped while it wrote its answer
    to the pool's queue left the others, and the report waiting for them, hung
    for good.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _collect(answers, starts, tasks, stale, progress) -> tuple[list[dict[str, np.ndarray]], dict[int, list]]:
    """The tasks' answers (in task order) as tables, and their issues by position in keys."""
    results = []
    issues: dict[int, list] = {}
    done = 0
    for start, task, (result, found) in zip(starts, tasks, answers, strict=True):
        results.append(result)
        issues.update((stale[start + k], entries) for k, entries in found.items())
        done += len(task)
        if progress:
            progress(done, len(stale))
    return results, issues


def _start_methods() -> list[str]:
    import multiprocessing

    return multiprocessing.get_all_start_methods()


_MAGIC = b"vmstats report cache\n"


def _read_cache(cache_dir: str | None) -> dict | None:
    """The cache file: a magic line, a JSON header (keys, signatures, array layout), raw arrays.

    Plain bytes seen through numpy views: no pickle (a planted file cannot run
    code) and no zip checksums to compute on every run.  The file is mapped,
    not read: a re-run reads only what it uses and copies nothing (~0.06 s of a
    1,000-VM re-run's ~0.8 s).  It is safe to map because a cache is only ever
    replaced whole (``_write_cache``), never changed in place.
    """
    if not cache_dir:
        return None
    try:
        with open(os.path.join(cache_dir, CACHE_NAME), "rb") as handle:
            blob = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        if blob[: len(_MAGIC)] != _MAGIC:
            return None
        start = len(_MAGIC) + 8
        size = int.from_bytes(blob[len(_MAGIC) : start], "little")
        header = inputfile.json_loads(blob[start : start + size])
        if header.get("version") != CACHE_VERSION:
            return None
        base = start + size + (-(start + size) % 64)
        keys = list(zip(header["vm"], header["day"], strict=True))
        data = {}
        for name, dtype, shape, offset in header["arrays"]:
            count = int(np.prod(shape))
            data[name] = np.frombuffer(blob, np.dtype(dtype), count, base + offset).reshape(shape)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if set(data) != AGGREGATES or any(len(v) != len(keys) for v in data.values()):
        return None
    issues = {int(i): entries for i, entries in header.get("issues", {}).items()}
    return {"keys": keys, "sigs": header["sig"], "data": data, "issues": issues}


def _write_cache(cache_dir: str, cache: dict) -> None:
    """Write atomically; a cache that cannot be written only costs time next run."""
    path = os.path.join(cache_dir, CACHE_NAME)
    temporary = "%s.%d.tmp" % (path, os.getpid())
    keys = cache["keys"]
    arrays = [(name, np.ascontiguousarray(values)) for name, values in cache["data"].items()]
    layout, offset = [], 0
    for name, values in arrays:
        layout.append([name, values.dtype.str, list(values.shape), offset])  # from the data start
        offset += values.nbytes
    header = {
        "version": CACHE_VERSION,
        "vm": [k[0] for k in keys],
        "day": [int(k[1]) for k in keys],
        "sig": list(cache["sigs"]),
        # The damaged files of each unit, by its position: only units that have any.
        "issues": {str(i): entries for i, entries in cache["issues"].items()},
        "arrays": layout,
    }
    encoded = json.dumps(header).encode("utf-8")
    head = _MAGIC + len(encoded).to_bytes(8, "little") + encoded
    try:
        os.makedirs(cache_dir, exist_ok=True)
        with open(temporary, "wb") as handle:
            handle.write(head + b"\0" * (-len(head) % 64))  # arrays start 64-byte aligned
            for _name, values in arrays:
                handle.write(values.data)
        os.replace(temporary, path)
        for name in os.listdir(cache_dir):  # caches of older versions are dead weight
            if name.startswith("report-cache-v") and name != CACHE_NAME and not name.endswith(".tmp"):
                os.unlink(os.path.join(cache_dir, name))
    except OSError as exc:
        # headroom, admit and backtest read through here too: no command's name in the line.
        print("warning: statistics cache not written to %s: %s" % (cache_dir, exc.strerror or exc),
              file=sys.stderr)
        try:
            os.unlink(temporary)
        except OSError:
            pass
