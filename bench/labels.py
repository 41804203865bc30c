"""What each VM of a raw Bitbrains trace really did: busy, quiet, or neither, per window.

This is the ground truth the accuracy benchmark scores decisions against.
It reads the trace files as published (gzipped GWA-T-12 CSV, ``;`` plus a tab
between fields, the ``Timestamp [ms]`` column in Unix seconds) with numpy
alone and imports nothing of vmstats: a policy graded by its own idea of
"busy" would always pass.

Definitions (values as recorded; rows of 5 minutes in the published trace, and each
trace's own step, the median spacing of its rows, in another):

- a row is **off** when its CPU cores, CPU capacity or memory capacity is 0:
  the VM was off or not reporting, which is neither work nor idleness; off
  rows are dropped.  Duplicate timestamps keep the last row.
- a row is **work** when CPU usage is at least ``WORK_CPU`` % of the
  provisioned capacity (Trusted Advisor's daily idle limit, here held for
  every 5 minutes), or disk read + write at least ``WORK_DISK`` KB/s (1 MiB/s:
  a backup or a batch, not a log file being appended), or network received
  + sent at least ``WORK_NET`` KB/s (100 KiB/s, about 0.8 Mbit/s, far above
  the few KB/s of monitoring agents, NTP and heartbeats).  CPU above 100 %
  (a recording quirk of this trace) is work like any other high value.
  Memory is never work on its own: page cache moves while nothing runs.
- a **stretch of work** is a run of work rows, each within ``MAX_STEPS`` steps
  of the one before (a missing row breaks nothing, a gap does),
  lasting at least ``STRETCH`` seconds from its first row's start to its
  last row's end (a row lasts the trace's step): 30 minutes is 6 5-minute rows.
- a VM is **busy** in a window when it has at least one stretch of work
  inside it.
- a VM is **quiet** in a window when it has data for at least
  ``MIN_PRESENT`` of the window, no stretch of work, work in at most
  ``QUIET_MAX_WORK_SHARE`` of its rows (a few isolated spikes), and a
  resting level of an idle machine: median CPU below ``QUIET_CPU`` % and
  median network below ``QUIET_NET`` KB/s (a VM moving tens of KB/s all the
  time is serving something, even without a burst).
- a VM with too little data in a window is **unknown** there; any other VM
  is **neither** (some activity, no stretch of work).

A downsized VM **overruns** its new size in a row when the vCPUs it used
(CPU % x cores / 100) exceed the new vCPUs or the memory it used (Memory
usage [KB]) exceeds the new memory.  Its workload **changed** when the
judging window's median CPU % or memory used is above the deciding window's
95th percentile: half the time it now does more than it did on all but its
busiest 5% of rows before, which no sizing from the past could foresee.
"""

import datetime
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROW_SECONDS = 300  # the published trace's step; a trace of two rows or fewer is taken to have it
WORK_CPU = 10.0  # % of provisioned CPU
WORK_DISK = 1024.0  # KB/s, read + write
WORK_NET = 100.0  # KB/s, received + sent
STRETCH = 30 * 60  # seconds
MAX_STEPS = 2  # steps between two rows of one stretch
MIN_PRESENT = 0.5  # share of the window's rows
QUIET_MAX_WORK_SHARE = 0.01
QUIET_CPU = 5.0  # %, median
QUIET_NET = 10.0  # KB/s, median

# The columns read, by the words their headers start with, in the order of ``read``'s array:
# GWA-T-12 as published, and GWA-T-13 (Materna), which has two more columns among them.
_COLUMNS = ("Timestamp", "CPU cores", "CPU capacity provisioned", "CPU usage [%]",
            "Memory capacity provisioned", "Memory usage [KB]", "Disk read throughput",
            "Disk write throughput", "Network received throughput", "Network transmitted throughput")
_TS, _CORES, _CAPACITY, _CPU_PCT, _MEM_CAP, _MEM_USED, _DISK_R, _DISK_W, _NET_RX, _NET_TX = range(10)


@dataclass
class Trace:
    """One VM's rows that were on, sorted by time, duplicates resolved (last row wins)."""

    name: str
    ts: np.ndarray  # Unix seconds
    cpu: np.ndarray  # % of provisioned capacity
    cores: np.ndarray
    mem_kb: np.ndarray  # used
    mem_cap_kb: np.ndarray
    disk: np.ndarray  # KB/s read + write
    net: np.ndarray  # KB/s received + sent
    net_tx: np.ndarray  # KB/s sent
    step: int = ROW_SECONDS  # seconds a row stands for: the median spacing of the rows

    def window(self, start: int, end: int) -> "Trace":
        inside = (self.ts >= start) & (self.ts < end)
        return Trace(self.name, *(getattr(self, f)[inside] for f in _ARRAYS), step=self.step)


_ARRAYS = ("ts", "cpu", "cores", "mem_kb", "mem_cap_kb", "disk", "net", "net_tx")


def read(path: Path) -> Trace:
    """One trace file (``251.csv.gz`` or ``251.csv``); rows that do not parse are skipped."""
    rows = []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        names = [" ".join(name.split()).lower() for name in next(handle, "").split(";")]
        places = [next((i for i, name in enumerate(names) if name.startswith(column.lower())), None)
                  for column in _COLUMNS]
        if None in places:
            raise ValueError("%s: no %r column" % (path, _COLUMNS[places.index(None)]))
        for line in handle:
            cells = line.split(";")
            if len(cells) != len(names):
                continue
            try:
                rows.append([_stamp(cells[places[0]].strip())]
                            + [_number(cells[i]) for i in places[1:]])
            except ValueError:
                continue
    data = np.array(rows, dtype=np.float64).reshape(-1, len(_COLUMNS))
    data = data[np.isfinite(data).all(axis=1)]
    on = (data[:, _CORES] > 0) & (data[:, _CAPACITY] > 0) & (data[:, _MEM_CAP] > 0)
    data = data[on]
    # Stable sort by time, then keep the last row of each timestamp.
    data = data[np.argsort(data[:, _TS], kind="stable")]
    last = np.r_[data[1:, _TS] != data[:-1, _TS], True]
    data = data[last]
    name = path.name.removesuffix(".gz").removesuffix(".csv")  # as the replay names its VM
    ts = data[:, _TS].astype(np.int64)
    step = ROW_SECONDS
    if len(ts) > 2:
        step = max(60, int(round(float(np.median(np.diff(ts))) / 60)) * 60)
    return Trace(
        name,
        data[:, _TS].astype(np.int64),
        data[:, _CPU_PCT],
        data[:, _CORES],
        data[:, _MEM_USED],
        data[:, _MEM_CAP],
        data[:, _DISK_R] + data[:, _DISK_W],
        data[:, _NET_RX] + data[:, _NET_TX],
        data[:, _NET_TX],
        step=step,
    )


def _number(text: str) -> float:
    """A cell's number; ``138,5`` (a decimal comma, as a German-locale export writes it) too."""
    text = text.strip()
    if text.count(",") == 1 and "." not in text:
        text = text.replace(",", ".")
    return float(text)


def _stamp(text: str) -> float:
    """Unix seconds as GWA-T-12 writes them (its ``[ms]`` header notwithstanding; real
    milliseconds, or finer, are told by their size), or GWA-T-13's ``dd.mm.yyyy HH:MM:SS`` (UTC)."""
    try:
        value = float(text)
        while value >= 1e11:  # past the year 5138 in seconds: ms, us or ns
            value = float(int(value) // 1000)
        return value
    except ValueError:
        moment = datetime.datetime.strptime(text, "%d.%m.%Y %H:%M:%S")
        return moment.replace(tzinfo=datetime.timezone.utc).timestamp()


def trace_files(folder: Path) -> list[Path]:
    """A folder's trace files: ``N.csv.gz`` as kept here, or ``N.csv`` as the archive publishes them."""
    return sorted([*folder.glob("*.csv.gz"), *folder.glob("*.csv")])


def read_all(folder: Path) -> dict[str, Trace]:
    """Every trace file of a folder, by file name without its suffixes."""
    traces = {}
    for path in trace_files(folder):
        trace = read(path)
        traces[trace.name] = trace
    return traces


def work_rows(t: Trace) -> np.ndarray:
    return (t.cpu >= WORK_CPU) | (t.disk >= WORK_DISK) | (t.net >= WORK_NET)


def stretches(ts: np.ndarray, work: np.ndarray, step: int = ROW_SECONDS) -> list[tuple[int, int]]:
    """``(start, end)`` seconds of each stretch of work lasting at least STRETCH (rows of ``step`` s)."""
    found = []
    run_start = previous = None
    for stamp, busy in zip(ts.tolist(), work.tolist(), strict=True):
        if busy and run_start is not None and stamp - previous <= MAX_STEPS * step:
            previous = stamp
            continue
        if run_start is not None and previous + step - run_start >= STRETCH:
            found.append((run_start, previous + step))
        run_start = previous = stamp if busy else None
    if run_start is not None and previous + step - run_start >= STRETCH:
        found.append((run_start, previous + step))
    return found


def label(t: Trace, start: int, end: int) -> str:
    """``busy``, ``quiet``, ``neither`` or ``unknown`` for the window [start, end)."""
    w = t.window(start, end)
    if stretches(w.ts, work_rows(w), t.step):
        return "busy"
    if len(w.ts) < MIN_PRESENT * (end - start) / t.step:
        return "unknown"
    work_share = float(work_rows(w).mean())
    if work_share <= QUIET_MAX_WORK_SHARE and np.median(w.cpu) < QUIET_CPU and np.median(w.net) < QUIET_NET:
        return "quiet"
    return "neither"


def overrun_share(t: Trace, start: int, end: int, vcpus: float, mem_gb: float) -> float | None:
    """Share of the window's rows using more than ``vcpus`` or ``mem_gb`` (None: no rows)."""
    w = t.window(start, end)
    if not len(w.ts):
        return None
    used_vcpus = w.cpu * w.cores / 100.0
    used_gb = w.mem_kb / 1024.0 / 1024.0
    return float(((used_vcpus > vcpus) | (used_gb > mem_gb)).mean())


def workload_changed(t: Trace, decide: tuple[int, int], judge: tuple[int, int]) -> bool:
    before, after = t.window(*decide), t.window(*judge)
    if not len(before.ts) or not len(after.ts):
        return False
    return bool(
        np.median(after.cpu) > np.percentile(before.cpu, 95)
        or np.median(after.mem_kb) > np.percentile(before.mem_kb, 95)
    )
