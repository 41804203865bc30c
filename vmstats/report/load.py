"""Loading per-VM logs into per-VM-day aggregates, with a cache that survives re-runs.

Logs are read only through vmstats.logstore.  The unit of work and of caching
is one VM-day: all files of that VM and UTC day across every data dir given
(several aggregators behind a load balancer), merged with duplicates by
timestamp dropped (last written wins, as in logstore.read_rows).  ``load``
gives a window's VM-days as a DayTable of their aggregates (aggregate.py):
each unit from the cache (cache.py) when its files did not change, parsed in
worker processes (or a cluster's: distributed.py) otherwise, and rollups read
as they are.  Which sources answer each VM-day is discover.py's.
"""

import os
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from vmstats import logstore
from vmstats.report.aggregate import Source, aggregate_units, concat_tables, empty_table, read_rollups
from vmstats.report.cache import read_cache, signature, write_cache
from vmstats.report.discover import Units
from vmstats.report.settings import ReportError

#: Units parsed per worker task: big enough to amortise pandas calls.
TASK_UNITS = 64


class Pool(Protocol):
    """What computes the units' aggregates besides local processes: ``map`` like an Executor's,
    answers in the order of the tasks."""

    def map(self, function: Callable, tasks: list, signatures: list[list[str]] | None = None) -> Iterable:
        """``signatures``: each task's units' files as this machine listed them (cache.signature),
        so that a pool reading them elsewhere can tell when it sees other files."""
        ...

    def task_units(self, units: int) -> int:
        """Units per task when ``units`` are to be parsed (a task's cost beside its work differs)."""
        ...


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
        if type(first) is part and first.tier == rollups:  # is_rollup, inline: once per unit
            path = first.path
            if path not in usable:
                usable[path] = bool(signature(sources, listed)[1])
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
    signed = [signature(wanted[k], listed, stats) for k in keys]
    signatures = [sig for sig, _readable in signed]
    readable = {key: paths for key, (_sig, paths) in zip(keys, signed, strict=True)}

    cache = read_cache(cache_dir)
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
            tables, found = _parse(keys, readable, signatures, stale, progress, workers, pool)
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
        write_cache(cache_dir, {"keys": keys, "sigs": signatures, "data": data, "issues": parsed_issues})
    return data, parsed_issues, len(stale), len(reuse)


def _first_file(sources: list[Source]) -> tuple[str, str]:
    """Where a unit's rows start: its columnar file and VM, or ("", "") for CSV only."""
    first = sources[0] if sources else ""
    return (first.path, first.vm) if isinstance(first, logstore.Part) else ("", "")


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
    keys, readable, signatures, stale, progress, workers, pool
) -> tuple[list[dict[str, np.ndarray]], dict[int, list]]:
    """Aggregates of the ``stale`` units (positions in ``keys``), and their files' issues by position."""
    size = pool.task_units(len(stale)) if pool is not None else TASK_UNITS
    starts = range(0, len(stale), size)
    tasks = [[readable[keys[i]] for i in stale[s : s + size]] for s in starts]
    if pool is not None:
        listed = [[signatures[i] for i in stale[s : s + size]] for s in starts]
        return _collect(pool.map(aggregate_units, tasks, listed), starts, tasks, stale, progress)
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
