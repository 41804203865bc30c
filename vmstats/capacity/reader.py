"""VM use per minute from the logs, read the report's way (report/discover.py, logstore).

The window is the report's: ``days`` whole UTC days ending with the latest
day that has logs (or ``until``), clipped to the fleet's first record when
the history is shorter.  VMs are read a batch at a time, so a fleet's
minute series never sit in memory all at once.
"""

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from vmstats import logstore
from vmstats.capacity.demand import MINUTE, Gone, VmUse, Window
from vmstats.report.build import parse_day
from vmstats.report.discover import discover
from vmstats.report.issues import file_issues, named_files
from vmstats.report.settings import ReportError

#: VMs parsed per logstore call: amortises pandas' per-call cost, bounds memory.
BATCH_VMS = 64
_COLUMNS = ["cpu", "mem", "vcpus", "mem_mb"]


@dataclass
class Logs:
    """What reading found: the window, each VM's files in it, and the files not read whole
    (``issues``, as the report names them: issues.issue, complete once read_vms is done)."""

    window: Window
    files: dict[str, list[str]]
    earlier: set[str]
    issues: list[dict] = field(default_factory=list)
    first_day: int = 0
    last_day: int = 0
    #: Each VM with logs before the window: its newest day's files there (read_gone).
    before: dict[str, list[str]] = field(default_factory=dict)
    #: The first and the last day the data dirs hold logs of, in or out of the window.
    held: tuple[int, int] = (0, 0)
    #: The VMs with logs before the window and no readable record in it: no file in it
    #: (find_logs), or none read there (read_vms adds those, so read_gone is iterated after it).
    unheard: set[str] = field(default_factory=set)
    #: read_vms has read every VM of the window: ``unheard`` and ``issues`` are complete.
    vms_read: bool = False

    def named(self) -> dict[str, list[dict]]:
        """The files not read whole as every command names them (issues.named_files), for a
        headroom result and for the summary admission answers rest on alike."""
        return named_files(self.issues)


def find_logs(data_dirs: Sequence[str], days: int, until: str | None = None) -> Logs:
    """The window and the day files of each VM inside it; ReportError for unusable data dirs."""
    issues: list[dict] = []
    # Minute-by-minute demand needs the records themselves: CSV and columnar tiers, not rollups.
    units = discover(data_dirs, issues, raw_only=True)
    until_day = parse_day(until, "--until")
    last_day = until_day if until_day is not None else max(day for _vm, day in units)
    first_day = last_day - int(days) + 1
    files: dict[str, list[str]] = {}
    earlier = set()
    newest_before: dict[str, list[str]] = {}
    for (vm, day), paths in sorted(units.items()):
        if first_day <= day <= last_day:
            files.setdefault(vm, []).extend(paths)
        elif day < first_day:
            earlier.add(vm)
            newest_before[vm] = list(paths)  # sorted by day: the newest comes last
    held = (min(day for _vm, day in units), max(day for _vm, day in units))
    if not files:  # an --until past the logs' days: say which days they hold, so it can be moved
        raise ReportError("no logs between %s and %s (the logs hold %s to %s)" % tuple(
            map(logstore.day_name, (first_day, last_day) + held)))
    window = _window(files, bool(earlier), first_day, last_day)
    unheard = {vm for vm in newest_before if vm not in files}
    return Logs(window, files, earlier & set(files), issues, first_day, last_day, newest_before, held,
                unheard)


def _window(files: dict[str, list[str]], older: bool, first_day: int, last_day: int) -> Window:
    """From the window's first day (or the fleet's first record) to its last record's minute.

    ``older``: some VM has logs before the window, so the history is not shorter than asked
    and the window starts on its first day, as the report's does (report.build), whether that
    VM is heard from in the window or not.  It started at the first record in the window when
    the only VMs with older logs had stopped before it: a fleet with a week before the window
    and a quiet first day was planned on fewer days than asked, and said so, and the report's
    capacity section rested on other minutes than the report beside it.

    Only the newest day's files are read for the last record (their last rows),
    and only the oldest day's for the first, when no VM has older logs.
    """
    by_day: dict[str, list[str]] = {}
    for paths in files.values():
        for path in paths:
            by_day.setdefault(_day_of_path(path), []).append(path)
    last_ts = 0
    for day in sorted(by_day, reverse=True):  # a newest file may hold no valid row
        stamps = [found[0] for found in map(logstore.last_labels, by_day[day]) if found]
        if stamps:
            last_ts = max(stamps)
            break
    if not last_ts:
        last_ts = (last_day + 1) * 86400 - MINUTE
    start = first_day * 86400
    if not older:
        first_ts = _first_stamp(by_day[min(by_day)])
        if first_ts is not None and first_ts > start:
            start = first_ts - first_ts % MINUTE
    end = last_ts - last_ts % MINUTE
    return Window(start, max(1, (end - start) // MINUTE + 1))


def _day_of_path(source) -> str:
    """The day a source (a CSV path or a columnar Part) holds, as ``YYYY-MM-DD``."""
    return logstore.source_path(source).rsplit("/", 1)[-1][:10]


def _first_stamp(paths: list[str]) -> int | None:
    """The earliest timestamp among the first rows of ``paths`` (the oldest day files)."""
    best = None
    for path in paths:
        if isinstance(path, logstore.Part):  # a compacted day: its rows are sorted by time
            try:
                first = logstore.read_tier(path.path, {path.vm}, ["ts"]).column("ts").to_pylist()[:1]
            except (OSError, ValueError):
                continue
            best = first[0] if first and (best is None or first[0] < best) else best
            continue
        try:
            with logstore.open_day_file(path) as handle:  # a FIFO here must not block
                handle.readline()
                line = handle.readline()
        except OSError:
            continue
        head = line.split(b",", 1)[0]
        if head.isdigit():
            best = int(head) if best is None else min(best, int(head))
    return best


def read_vms(logs: Logs, vms: Sequence[str] | None = None) -> Iterator[VmUse]:
    """Each VM's use per minute of the window, a batch of VMs per read.

    The host tag is a label of the VM, not a measurement: as the report does,
    it is taken from the VM's latest record (_host_tag).  A VM with no readable record in the
    window is not yielded, its files named as skipped: as a VM with no file there, it is one not
    heard from in the window when it has logs before it (``logs.unheard``, read_gone), and with
    none nothing says it is a VM.
    """
    names = sorted(logs.files) if vms is None else list(vms)
    for start in range(0, len(names), BATCH_VMS):
        batch = names[start : start + BATCH_VMS]
        paths = [p for vm in batch for p in logs.files[vm]]
        owner = np.repeat(np.arange(len(batch)), [len(logs.files[vm]) for vm in batch])
        errors: dict[int, str] = {}
        frame, bad = logstore.read_columns(paths, _COLUMNS, as_float=True, errors=errors)
        for found in file_issues(paths, owner, frame, bad, errors).values():
            logs.issues += found
        vm_of_row = owner[frame["file"].to_numpy()] if len(frame) else np.zeros(0, np.int64)
        order = np.argsort(vm_of_row, kind="stable")
        columns = {name: frame[name].to_numpy()[order] for name in ["ts"] + _COLUMNS}
        bounds = np.searchsorted(vm_of_row[order], np.arange(len(batch) + 1))
        for i, vm in enumerate(batch):
            rows = {name: values[bounds[i] : bounds[i + 1]] for name, values in columns.items()}
            if not len(rows["ts"]):
                # No readable record in the window (its files junk, named in logs.issues): read as
                # a VM with no file there.  Yielded, it was an unplaced VM adding no use, its
                # host's room offered.  With logs before the window it is not heard from in it;
                # with none, nothing says it is a VM (the report leaves out a VM with no record).
                if vm in logs.earlier:
                    logs.unheard.add(vm)
                continue
            latest = int(rows["ts"].max())
            yield _vm_use(vm, rows, _host_tag(logs.files[vm], latest), logs.window, vm in logs.earlier)
    logs.vms_read = logs.vms_read or vms is None


def read_gone(logs: Logs) -> Iterator[Gone]:
    """The VMs heard from before the window and not in it, each as its last record left it.

    Such a VM is not measured in the window, but it is not known to be gone either (shut down,
    its agent stopped, cut off): its host and size are those of its newest day before the
    window, so its host can name it and keep its room (demand.demand_views).  A VM none of
    whose rows can be read there is left out, as the report leaves out a VM with no record.

    Lazy, and iterated once read_vms is done (demand_views takes ``gone`` after the VMs): a VM
    whose files in the window hold no readable record is one of these, and only reading them
    finds it.  Iterated before, it was left out, and counted as an unplaced VM of no use.
    """
    if not logs.vms_read:
        raise RuntimeError("read_gone before read_vms has read the window: its VMs of junk alone are missed")
    names = sorted(logs.unheard)
    for start in range(0, len(names), BATCH_VMS):
        batch = names[start : start + BATCH_VMS]
        paths = [p for vm in batch for p in logs.before[vm]]
        owner = np.repeat(np.arange(len(batch)), [len(logs.before[vm]) for vm in batch])
        frame, _bad = logstore.read_columns(paths, ["vcpus", "mem_mb"], as_float=True, errors={})
        vm_of_row = owner[frame["file"].to_numpy()] if len(frame) else np.zeros(0, np.int64)
        ts = frame["ts"].to_numpy()
        for i, vm in enumerate(batch):
            mine = np.flatnonzero(vm_of_row == i)
            if not len(mine):
                continue
            rows = mine[np.argsort(ts[mine], kind="stable")]
            vcpus = _last(frame["vcpus"].to_numpy()[rows])
            mem_mb = _last(frame["mem_mb"].to_numpy()[rows])
            latest = int(ts[rows[-1]])
            yield Gone(vm, _host_tag(logs.before[vm], latest), latest, vcpus, mem_mb / 1024.0)


def _host_tag(paths: list[str], latest: int | None) -> str | None:
    """The host tag of the VM's latest record, or None: its newest day's, of a day kept in
    several data dirs (agents behind a balancer) the latest row, and of a file whose rows came
    out of order (a backlog from before a migration) the latest-stamped one
    (logstore.newest_labels; ``latest`` is the VM's newest stamp read).  A day with no readable
    row leaves the answer to the day before."""
    by_day: dict[str, list] = {}
    for path in paths:
        by_day.setdefault(_day_of_path(path), []).append(path)
    for n, day in enumerate(sorted(by_day, reverse=True)):
        sources = by_day[day]
        tails = logstore.last_labels_many(sources)
        found = logstore.newest_labels(sources, tails, latest if n == 0 else None)
        if found:
            return found[1] or None
    return None


def _vm_use(vm: str, rows: dict, host: str | None, window: Window, since_start: bool) -> VmUse:
    """One VM's rows as per-minute arrays of the window (the last record of a minute wins)."""
    seen = np.zeros(window.minutes, bool)
    cpu = np.full(window.minutes, np.nan)
    mem = np.full(window.minutes, np.nan)
    ts = rows["ts"]
    slot = (ts - window.start_ts) // MINUTE
    inside = (slot >= 0) & (slot < window.minutes)
    if not inside.any():
        return VmUse(vm, host, math.nan, math.nan, seen, cpu, mem, since_start)
    order = np.argsort(ts[inside], kind="stable")
    slot = slot[inside][order]
    pick = {name: rows[name][inside][order] for name in _COLUMNS}
    vcpus_row = _known_or(pick["vcpus"], _last(pick["vcpus"]))
    mem_gb_row = _known_or(pick["mem_mb"], _last(pick["mem_mb"])) / 1024.0
    seen[slot] = True
    cpu[slot] = pick["cpu"] / 100.0 * vcpus_row
    mem[slot] = pick["mem"] / 100.0 * mem_gb_row
    return VmUse(vm, host, _last(pick["vcpus"]), _last(pick["mem_mb"]) / 1024.0, seen, cpu, mem, since_start,
                 _sizes(slot, vcpus_row, mem_gb_row))


def _sizes(slot: np.ndarray, vcpus: np.ndarray, mem_gb: np.ndarray) -> tuple[tuple[int, float, float], ...]:
    """The runs of minutes converted at one size (VmUse.sizes), or () when the size never changed."""
    vcpus, mem_gb = np.nan_to_num(vcpus, nan=-1.0), np.nan_to_num(mem_gb, nan=-1.0)  # never reported: one run
    changed = (vcpus[1:] != vcpus[:-1]) | (mem_gb[1:] != mem_gb[:-1])
    if not changed.any():
        return ()
    starts = np.concatenate(([0], np.flatnonzero(changed) + 1))
    return tuple((int(slot[i]), float(vcpus[i]), float(mem_gb[i])) for i in starts)


def _last(values: np.ndarray) -> float:
    known = values[~np.isnan(values)]
    return float(known[-1]) if len(known) else math.nan


def _known_or(values: np.ndarray, default: float) -> np.ndarray:
    return np.where(np.isnan(values), default, values)
