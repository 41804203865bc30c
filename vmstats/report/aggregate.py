"""The aggregate of a VM-day, and the reduction of each tier's sources to it.

Each unit (one VM-day) is reduced to a fixed-size aggregate: counts, sums and
maxima, per-hour figures and value histograms (see histogram.py for why
histograms).  A VM-day can be held by any of the three tiers of
docs/STORAGE.md: its CSV day file, its rows in a columnar fleet-day file, or
its rollup -- this very aggregate, kept by compaction once the rows are gone.
``aggregate_units`` reduces them, whatever the tier, to the same row of
aggregates.
"""

import collections
import functools
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from vmstats import logstore
from vmstats.protocol import FIELD_NAMES
from vmstats.report import runs, sharedseq
from vmstats.report.histogram import (
    PCT_BINS,
    PCT_VALUES,
    RATE_BINS,
    SparseHistograms,
    pct_bin,
    percentiles,
    rate_bin,
)
from vmstats.report.issues import file_day, file_issues, issue, rollup_lacks

#: The aggregate's version, written into every rollup file (and the report cache's, cache.py):
#: a rollup written by a version whose fields differ is not used (raw data answers, or the
#: VM-day is named as unreadable).
ROLLUP_VERSION = 8


def _not_shared(data: dict) -> dict:
    """A rollup written before ``shared_id`` was kept: its VM-days were not checked (no flag)."""
    return {"shared_id": np.zeros(len(data["n"]), np.int8)}


#: Older rollup versions still read, and what they lack filled from what they hold
#: (their rows are gone: refusing them would lose those days).  6: no mixed work stretches;
#: 7 (and 6): no ``shared_id``.
OLDER_ROLLUPS = {6: lambda data: {**runs.mix_from_metrics(data), **_not_shared(data)}, 7: _not_shared}


def readable_rollups(version) -> bool:
    """Whether rollups written with aggregate ``version`` (a file's footer) can answer a report:
    the report leaves others out, so compaction must not retire the rows they were made from."""
    return version == ROLLUP_VERSION or version in OLDER_ROLLUPS

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
    # 1 when two ``seq`` counters took turns in the day: one id, two machines (sharedseq.py).
    "shared_id": np.int8,
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
#: Every field the statistics use: all of the wire format's, the agent's sequence counter for
#: sharedseq.py.
_READ = list(FIELD_NAMES)
#: A VM-day's source: a CSV day file's path, or its VM's Part of a compacted tier's file.
Source = str | logstore.Part


def is_rollup(sources: list) -> bool:
    """Whether a unit's sources are one rollup Part: its aggregate as kept, not rows to reduce."""
    first = sources[0] if len(sources) == 1 else None
    return type(first) is logstore.Part and first.tier == logstore.ROLLUPS_DIR


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
    by_rollup = [is_rollup(sources) for sources in paths_per_unit]
    rolled = [i for i, rollup in enumerate(by_rollup) if rollup]
    if not rolled:
        return _aggregate_rows(paths_per_unit)
    rows = [i for i, rollup in enumerate(by_rollup) if not rollup]
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
    hold is read from its rows if its data dir still keeps them (_answer_from_rows), else it is
    empty, and named in the issues either way, as is a file that cannot be read.

    ``sparse`` keeps the histograms as the files' cells (histogram.SparseHistograms: what a
    long window's report sums per VM without a dense VM-day table); otherwise they are dense
    arrays like every other tier's.
    """
    out = {name: values for name, values in empty_table(len(parts)).items() if name not in HISTOGRAMS}
    hists = {name: SparseHistograms(len(parts), bins) for name, bins in HISTOGRAMS.items()}
    issues: dict[int, list[dict]] = {}
    fallback: list[tuple[int, list[Source]]] = []  # units their rollup file lacks: read from rows
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
                issues[i] = [issue(path, "unreadable rollup: %s" % exc, vm=parts[i].vm, day=file_day(path))]
            continue
        whole = vms == wanted  # the file's every VM in its order: the usual case, no lookup per VM
        if whole:
            positions, rows = np.array(mine), np.arange(len(vms))
        else:
            row_of = {vm: k for k, vm in enumerate(vms)}
            found = [(i, row_of[parts[i].vm]) for i in mine if parts[i].vm in row_of]
            lacking = [i for i in mine if parts[i].vm not in row_of]
            if lacking:
                _answer_from_rows(path, vms, [(i, parts[i].vm) for i in lacking], len(found),
                                  fallback, issues)
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
    if fallback:
        _place_rows(out, hists, fallback, issues)
    for name, hist in hists.items():
        out[name] = hist if sparse else hist.dense()
    return out, issues


def _answer_from_rows(path: str, held: list[str], lacking: list[tuple[int, str]], read: int,
                      fallback: list[tuple[int, list[Source]]], issues: dict[int, list[dict]]) -> None:
    """Name a rollup file whose table lacks the rollups of ``lacking`` (``[(unit, vm)]``), and add
    to ``fallback`` the units whose rows its data dir still keeps (``held``: the table's VMs,
    ``read``: how many of the units asked it answered).

    A footer that disagrees with its table is found when the report lists the tiers
    (tiers.tier_info), and the rows answer those VMs; but a table that holds one VM twice and
    lacks another has as many rows as its footer lists VMs, so only reading it tells.  The
    missing VM's rows are read here, in the same read, as discover would have given them (the
    day's columnar rows, then its CSV file), rather than leaving the VM-day empty until a
    compaction pass rolls the day up again.
    """
    day = file_day(path)
    data_dir = os.path.dirname(os.path.dirname(path))
    kept = logstore.kept_rows(data_dir, day, [vm for _i, vm in lacking])
    answered = {vm: "the day's kept rows instead" for _i, vm in lacking if vm in kept}
    rows = read + len(answered)
    for i, vm in lacking:
        issues[i] = [rollup_lacks(path, held, [vm for _i, vm in lacking], answered, rows, vm, day)]
        if vm in kept:
            fallback.append((i, kept[vm]))


def _place_rows(out: dict[str, np.ndarray], hists: dict[str, SparseHistograms],
                fallback: list[tuple[int, list[Source]]], issues: dict[int, list[dict]]) -> None:
    """Put the aggregates of ``fallback``'s units (``[(unit, its rows' sources)]``), reduced
    from their rows, at their units in read_rollups' table."""
    positions = np.array([i for i, _sources in fallback], np.int64)
    table, found = _aggregate_rows([sources for _i, sources in fallback])
    for name, values in table.items():
        if name in hists:
            hists[name].add_dense(positions, values)
            continue
        if values.dtype != out[name].dtype:
            out[name] = out[name].astype(np.result_type(out[name], values))
        out[name][positions] = values
    for k, entries in found.items():
        issues.setdefault(int(positions[k]), []).extend(entries)


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
    for u in sharedseq.stepped_back(unit, col["seq"]).tolist():
        lo, hi = np.searchsorted(unit, [u, u + 1])
        out["shared_id"][u] = sharedseq.shared(col["seq"][lo:hi], ts[lo:hi])
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
