"""Readers for recorded VM utilisation traces, yielding protocol Records.

Real traces are messy, and a replay that crashes or silently "fixes" them
would teach nothing about the product.  Every reader here turns its format
into per-minute ``vmstats.protocol.Record`` values and counts each quirk it
met (see QUIRKS) instead of failing on it.

Formats (docs/SIMULATOR.md has the details):

- ``bitbrains``: the GWA-T-12 per-VM files (``;\\t`` separated, optionally
  gzipped).  The ``Timestamp [ms]`` column holds Unix *seconds*.  Columns are
  found by their headers, so GWA-T-13 (Materna) files, with two more columns
  and dates for timestamps, read the same.
- ``planetlab``: CoMon CPU files: no header, no timestamps, one integer CPU %
  per 5-minute slot of one day, starting at ``start``.
- ``csv``: a generic CSV with a header naming at least ``vm``, ``timestamp``,
  ``cpu`` and ``mem``; optional ``cpu_max``, ``disk_r``, ``disk_w``,
  ``net_rx``, ``net_tx``, ``vcpus``, ``mem_mb``.  Stamps in digits before
  2000-01-01 (``0``, ``60``, ...) are seconds from ``start``, a relative trace's.

Coarse data is *held*: a row of an ``interval``-second trace (300 s for
bitbrains and planetlab) becomes ``interval // 60`` one-minute records with
the row's values, stamped ``t, t+60, ...``, and never past the next row's
timestamp.  Holding keeps the values exactly as recorded and the clock real,
where compressing the clock would invent a faster fleet.
"""

from __future__ import annotations

import csv
import datetime
import gzip
import hashlib
import io
import math
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator

from vmstats import inputfile, stamps
from vmstats.protocol import (
    FIELD_NAMES,
    FIELDS,
    FIRST_STAMP,
    MAX_VM_ID_LENGTH,
    DecodeError,
    Record,
    normalize_timestamp,
    normalize_vm_id,
)
from vmstats.words import plural

FORMATS = ("bitbrains", "planetlab", "csv")
#: Native row interval (seconds) of each format; csv is per-minute unless told.
DEFAULT_INTERVAL = {"bitbrains": 300, "planetlab": 300, "csv": 60}
#: PlanetLab files carry no timestamps; this sample's day is the default start.
PLANETLAB_START = datetime.datetime(2011, 3, 6, tzinfo=datetime.timezone.utc)
#: A trace with less data than this is counted as short (it may not be judged).
SHORT_TRACE_SECONDS = 86400

#: Quirk name -> what it means.  One place, so the summary and docs agree.
QUIRKS = {
    "rows": "data rows read",
    "vm_off": "rows with zero cores or capacity (VM off): nothing sent, missing is not idle",
    "duplicate_timestamp": "rows repeating an earlier timestamp of the same VM: the last one kept",
    "out_of_order": "rows older than the row before them: sorted back into time order",
    "other_interval": "VMs whose rows come at another interval than the format's (their median "
                      "spacing): each row held for that spacing",
    "short_hold": "rows held for less than the interval because the next row came early",
    "gap": "intervals longer than 1.5 rows with no data: nothing sent for the hole",
    "gap_minutes": "minutes inside those holes",
    "cpu_clamped": "rows with CPU % above 100: clamped to 100",
    "mem_clamped": "rows with memory usage above capacity: clamped to 100 %",
    "mem_capacity_change": "rows whose memory capacity differs from the row before",
    "bad_row": "rows that do not parse (wrong cells, non-numeric, negative): skipped",
    "short_trace": "VMs with less than a day of data",
    "renamed_vm": "source names that are not valid VM ids: mapped to a safe, stable id",
    "unreadable_rest": "files that broke part way (truncated gzip): the rows before the break kept",
}

_CSV_FIELDS = tuple(f[0] for f in FIELDS if f[0] != "seq")
#: Every field unknown: a trace's row fills in what it knows.
_UNKNOWN = dict.fromkeys(FIELD_NAMES)
_CSV_INT = {f[0] for f in FIELDS if f[1]}
_CSV_PLACES = {f[0] for f in FIELDS if f[5] is not None}
_SAFE_RE = re.compile(r"[^A-Za-z0-9._-]+")


class TraceError(ValueError):
    """A trace that cannot be read at all (missing file, unknown format, bad header)."""


def _open_text(path: str):
    """The file as text; "utf-8-sig" drops the byte-order mark a spreadsheet's "CSV UTF-8"
    export puts first, which would otherwise stick to the header's first name (``\ufeffvm``)."""
    if path.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors="replace",
                                newline="")
    return open(path, encoding="utf-8-sig", errors="replace", newline="")


def _lines(path: str, quirks: Counter) -> Iterator[str]:
    """The lines of a trace file, plain or gzipped.

    A file that cannot be read at all is a TraceError; one that breaks part
    way (a truncated download) keeps the lines read so far and counts
    ``unreadable_rest``, like any other quirk.
    """
    started = False
    try:
        with _open_text(path) as handle:
            for line in handle:
                started = True
                yield line
    except (OSError, EOFError, zlib.error) as exc:
        if not started:
            raise TraceError("cannot read %s: %s" % (path, getattr(exc, "strerror", None) or exc)) from None
        quirks["unreadable_rest"] += 1


def source_name(path: str) -> str:
    """The name a trace file is known by: its base name without ``.gz``/``.csv``/``.txt``."""
    name = os.path.basename(path)
    for suffix in (".gz", ".csv", ".txt"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def safe_vm_id(name: str, quirks: Counter | None = None) -> str:
    """A valid, stable VM id for a source name.

    Names that are not valid ids (too long, odd characters) keep a readable
    prefix plus a hash of the whole name, so two sources never merge.
    """
    try:
        return normalize_vm_id(name)
    except DecodeError:
        pass
    cleaned = _SAFE_RE.sub("-", name).strip("-.") or "vm"
    cleaned = re.sub(r"\.{2,}", ".", cleaned)
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    cleaned = cleaned[: MAX_VM_ID_LENGTH - 9] + "-" + digest
    if not cleaned[0].isalpha():
        cleaned = "v" + cleaned[1:]
    if quirks is not None:
        quirks["renamed_vm"] += 1
    return normalize_vm_id(cleaned)


def default_vm_id(fmt: str, name: str, quirks: Counter | None = None) -> str:
    """The id a source gets unless mapped: ``bitbrains-401``, ``planetlab-<file>``, csv as is."""
    if fmt == "csv":
        return safe_vm_id(name, quirks)
    return safe_vm_id("%s-%s" % (fmt, name), quirks)


def load_vm_map(path: str) -> dict[str, str]:
    """Read a ``source,vm`` CSV (header optional) mapping source names to VM ids."""
    try:
        text = inputfile.read_text(path)
    except inputfile.FileProblem as exc:
        raise TraceError("VM map %s" % exc) from None
    mapping = {}
    rows = csv.reader(io.StringIO(text, newline=""))
    try:
        for number, row in enumerate(rows, 1):
            if not row or row[0].startswith("#") or (number == 1 and row[:2] == ["source", "vm"]):
                continue
            if len(row) != 2:
                raise TraceError("VM map %s:%d: expected 'source,vm'" % (path, number))
            try:
                mapping[row[0].strip()] = normalize_vm_id(row[1].strip())
            except DecodeError as exc:
                raise TraceError("VM map %s:%d: %s" % (path, number, exc.detail)) from None
    except csv.Error as exc:  # a field past csv's size limit (a file that is no VM map)
        raise TraceError("VM map %s:%d: %s" % (path, rows.line_num, exc)) from None
    return mapping


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(text)
    return value


def hold(rows: list[tuple[int, dict]], interval: int, quirks: Counter) -> Iterator[tuple[int, dict]]:
    """Expand time-sorted ``(ts, values)`` rows of one VM into per-minute ``(ts, values)``.

    Duplicates keep the last row (the server's rule for retransmits too);
    each row is repeated every 60 s for ``interval`` seconds or until the
    next row, whichever comes first.
    """
    steps = max(1, interval // 60)
    kept = []
    for ts, values in rows:
        if kept and kept[-1][0] == ts:
            quirks["duplicate_timestamp"] += 1
            kept[-1] = (ts, values)
        else:
            kept.append((ts, values))
    for index, (ts, values) in enumerate(kept):
        nxt = kept[index + 1][0] if index + 1 < len(kept) else None
        count = steps
        if nxt is not None:
            room = -(-(nxt - ts) // 60)  # minutes until the next row, rounded up
            if room < steps:
                quirks["short_hold"] += 1
                count = room
            elif nxt - ts >= interval * 1.5:
                quirks["gap"] += 1
                quirks["gap_minutes"] += (nxt - ts - steps * 60) // 60
        for k in range(count):
            yield ts + 60 * k, values


def _sorted_rows(rows: list[tuple[int, dict]], quirks: Counter) -> list[tuple[int, dict]]:
    disorder = sum(1 for a, b in zip(rows, rows[1:], strict=False) if b[0] < a[0])
    if disorder:
        quirks["out_of_order"] += disorder
        rows = sorted(rows, key=lambda row: row[0])  # stable: equal stamps keep file order
    if rows and rows[-1][0] - rows[0][0] < SHORT_TRACE_SECONDS:
        quirks["short_trace"] += 1
    return rows


def _records(vm: str, rows: list[tuple[int, dict]], interval: int, quirks: Counter) -> Iterator[Record]:
    last = tail = None
    for ts, values in hold(_sorted_rows(rows, quirks), interval, quirks):
        if values is not last:  # a held row repeats its fields: build them once
            last = values
            tail = tuple(Record(vm=vm, ts=ts, **dict(_UNKNOWN, **values)))[2:]
        yield tuple.__new__(Record, (vm, ts) + tail)


#: The GWA-T-12/13 columns a replay reads, by the words their headers start with.  Columns are
#: found by name, not place: the Materna trace (GWA-T-13) has the same ones with two more
#: (``Memory usage [%]``, ``Disk size [GB]``) among them and dates for timestamps.
_BITBRAINS_COLUMNS = {
    "ts": "Timestamp", "cores": "CPU cores", "cpu_capacity": "CPU capacity provisioned",
    "cpu": "CPU usage [%]", "mem_capacity": "Memory capacity provisioned",
    "mem_used": "Memory usage [KB]", "disk_r": "Disk read throughput",
    "disk_w": "Disk write throughput", "net_rx": "Network received throughput",
    "net_tx": "Network transmitted throughput",
}


def _bitbrains_header(path: str, header: str) -> tuple[int, dict[str, int]]:
    """The header's number of cells and the place of each column a replay reads."""
    names = [" ".join(cell.split()).lower() for cell in header.split(";")]  # "CPU Usage  [%]" too
    places = {}
    for key, start in _BITBRAINS_COLUMNS.items():
        found = [i for i, name in enumerate(names) if name.startswith(start.lower())]
        if found:
            places[key] = found[0]
    missing = [start for key, start in _BITBRAINS_COLUMNS.items() if key not in places]
    if "ts" not in places or "cpu" not in places:
        raise TraceError("%s: not a bitbrains file (no 'Timestamp ... CPU' header)" % path)
    if missing:
        raise TraceError("%s: bitbrains header without %s" % (path, ", ".join(repr(m) for m in missing)))
    return len(names), places


def _bitbrains_stamp(text: str) -> int:
    """Unix seconds (GWA-T-12: the ``Timestamp [ms]`` column holds seconds; s/ms/us/ns by
    magnitude) or a date, ``dd.mm.yyyy HH:MM:SS`` (GWA-T-13) or ISO 8601, read as UTC."""
    try:
        return normalize_timestamp(int(_finite(text)))
    except ValueError:
        pass
    try:
        moment = datetime.datetime.strptime(text, "%d.%m.%Y %H:%M:%S")
    except ValueError:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return int(moment.timestamp())


def _decimal_point(text: str) -> str:
    """A number as a spreadsheet of a German (or French...) locale exports it, ``138,5``, read
    as ``138.5``: the cells are separated by semicolons, so a lone comma can only be the
    decimal one.  A cell with both marks (``1.234,5``) is left to fail as a bad row."""
    return text.replace(",", ".") if "," in text and "." not in text and text.count(",") == 1 else text


def _bitbrains_rows(path: str, quirks: Counter) -> list[tuple[int, dict]]:
    rows = []
    last_capacity = None
    lines = _lines(path, quirks)
    width, at = _bitbrains_header(path, next(lines, ""))
    for line in lines:
        line = line.strip()
        if not line:
            continue
        quirks["rows"] += 1
        cells = [c.strip() for c in line.split(";")]
        try:
            if len(cells) != width:
                raise ValueError(line)
            stamp = _bitbrains_stamp(cells[at["ts"]])
            cores, cpu_capacity, cpu, mem_capacity, mem_used, disk_r, disk_w, net_rx, net_tx = (
                _finite(_decimal_point(cells[at[key]])) for key in (
                    "cores", "cpu_capacity", "cpu", "mem_capacity", "mem_used", "disk_r", "disk_w",
                    "net_rx", "net_tx"))
        except ValueError:
            quirks["bad_row"] += 1
            continue
        if cores == 0 or cpu_capacity == 0 or mem_capacity == 0:
            quirks["vm_off"] += 1
            continue
        if last_capacity is not None and mem_capacity != last_capacity:
            quirks["mem_capacity_change"] += 1
        last_capacity = mem_capacity
        if cpu > 100:
            quirks["cpu_clamped"] += 1
            cpu = 100.0
        mem = mem_used / mem_capacity * 100.0
        if mem > 100:
            quirks["mem_clamped"] += 1
            mem = 100.0
        rows.append((stamp, {
            "cpu": cpu, "mem": mem,
            # KB/s in the trace, bytes/s on the wire.
            "disk_r": disk_r * 1024, "disk_w": disk_w * 1024,
            "net_rx": net_rx * 1024, "net_tx": net_tx * 1024,
            "vcpus": int(cores), "mem_mb": max(1, int(round(mem_capacity / 1024))),
        }))
    return rows


def _planetlab_rows(path: str, start: int, interval: int, quirks: Counter,
                    fill: dict) -> list[tuple[int, dict]]:
    rows = []
    for slot, line in enumerate(_lines(path, quirks)):
        line = line.strip()
        if not line:
            continue
        quirks["rows"] += 1
        try:
            cpu = _finite(line)
        except ValueError:
            quirks["bad_row"] += 1
            continue
        if cpu > 100:
            quirks["cpu_clamped"] += 1
            cpu = 100.0
        rows.append((start + slot * interval, dict(fill, cpu=cpu)))
    return rows


def _csv_header(path: str, cells: list[str]) -> list[str]:
    """The header's column names (lower case); TraceError when it lacks one or has a stranger."""
    header = [h.strip().lower() for h in cells]
    missing = [c for c in ("vm", "timestamp", "cpu") if c not in header]
    if missing:
        raise TraceError("%s: csv header lacks %s (needs vm,timestamp,cpu and usually mem)"
                         % (path, ",".join(missing)))
    unknown = [h for h in header if h not in _CSV_FIELDS + ("vm", "timestamp")]
    if unknown:
        raise TraceError("%s: unknown csv %s %s" % (path, plural(len(unknown), "column"), ",".join(unknown)))
    return header


def _csv_rows(path: str, quirks: Counter, start: int | None) -> dict[str, list[tuple[int, dict]]]:
    by_vm: dict[str, list[tuple[int, dict]]] = {}
    reader = csv.reader(_lines(path, quirks))
    header = _csv_header(path, next(reader, []))
    columns = [(i, h) for i, h in enumerate(header) if h in _CSV_FIELDS]
    vm_col = header.index("vm")
    ts_col = header.index("timestamp")
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error:  # a NUL byte, an unterminated quote: this line only
            quirks["rows"] += 1
            quirks["bad_row"] += 1
            continue
        if not row or not "".join(row).strip():
            continue
        quirks["rows"] += 1
        try:
            if len(row) != len(header):
                raise ValueError(row)
            stamp = _timestamp(row[ts_col].strip(), path, start)
            values = {}
            for i, name in columns:
                text = row[i].strip()
                if text:
                    value = _finite(text)
                    if name in _CSV_INT:
                        value = int(value)
                    elif name in _CSV_PLACES:  # a size: whole as an int (sent 2i), else as sent
                        value = int(value) if value.is_integer() else value
                    values[name] = value
            if "cpu" not in values:
                raise ValueError(row)
        except TraceError:
            raise
        except ValueError:
            quirks["bad_row"] += 1
            continue
        if values["cpu"] > 100:
            quirks["cpu_clamped"] += 1
            values["cpu"] = 100.0
        if values.get("cpu_max", 0) > 100:
            values["cpu_max"] = 100.0
        if values.get("mem", 0) > 100:
            quirks["mem_clamped"] += 1
            values["mem"] = 100.0
        by_vm.setdefault(row[vm_col].strip(), []).append((stamp, values))
    return by_vm


def _timestamp(text: str, path: str, start: int | None) -> int:
    """Unix seconds (s/ms/us/ns by magnitude) or ISO 8601 (UTC unless it says otherwise).

    Digits before FIRST_STAMP (2000-01-01) are a relative trace's seconds (``0``, ``60``, ...),
    counted from ``start`` (``--start``): sent as they were, the server refuses every one of
    them (no clock that was set reads 1970).  Without ``start`` such a trace is a TraceError
    naming ``--start`` (not a ValueError, which would skip the row as a bad one)."""
    if text.isdigit():
        stamp = normalize_timestamp(int(text))
        if stamp >= FIRST_STAMP:
            return stamp
        if start is None:
            raise TraceError("%s: timestamp %s is before %s, the first moment the server takes a "
                             "stamp from: a trace of times from its start? pass --start TIME, the "
                             "moment its 0 stands for" % (path, text, stamps.moment(FIRST_STAMP)))
        return start + stamp
    moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return int(moment.timestamp())


class Trace:
    """One trace file as an iterator of Records (one pass), counting quirks as it goes.

    ``quirks`` (a Counter, see QUIRKS) is complete once iteration ends; pass
    one Counter to several traces to total them.
    """

    def __init__(self, path: str, fmt: str, vm: str | None = None, vm_map: dict | None = None,
                 start: int | None = None, interval: int | None = None,
                 fill: dict | None = None, quirks: Counter | None = None):
        if fmt not in FORMATS:
            raise TraceError("unknown trace format %r (choose from %s)" % (fmt, ", ".join(FORMATS)))
        if not os.path.isfile(path):
            raise TraceError("no such trace file: %s" % path)
        self.path = path
        self.fmt = fmt
        self.vm = vm
        self.vm_map = vm_map or {}
        self.start = int(PLANETLAB_START.timestamp()) if start is None else int(start)
        #: The moment a csv trace's relative stamps count from (``--start``), or None.
        self.zero = None if start is None else int(start)
        #: Without --interval, a VM's rows are held for their own spacing (_spacing), planetlab's
        #: (which has no stamps) for this.
        self.told_interval = bool(interval)
        self.interval = interval or DEFAULT_INTERVAL[fmt]
        if self.interval < 60 or self.interval % 60:
            raise TraceError("interval must be a whole number of minutes, got %ss" % self.interval)
        self.fill = dict(fill or {})
        self.quirks = Counter() if quirks is None else quirks
        self._records: Iterator[Record] | None = None
        self._check_header()

    def _check_header(self) -> None:
        """Read the file's first line now, though its records are read later: a file that
        cannot be read at all, or whose header lacks a column, is then refused before any
        record is sent (exit 2), not after other files' records went (exit 1); so is a csv
        whose first row is stamped in relative time without ``--start``."""
        lines = _lines(self.path, Counter())  # its quirks are counted when the rows are read
        try:
            first = next(lines, "")
            second = next(lines, "")
        finally:
            lines.close()
        if self.fmt == "csv":
            header = _csv_header(self.path, next(csv.reader([first]), []))
            row = next(csv.reader([second]), [])
            try:
                if len(row) == len(header):
                    _timestamp(row[header.index("timestamp")].strip(), self.path, self.zero)
            except TraceError:
                raise
            except ValueError:  # a bad row, counted as one when the rows are read
                pass
        elif self.fmt == "bitbrains":
            _bitbrains_header(self.path, first)

    def _vm_for(self, name: str) -> str:
        if self.vm is not None:
            return normalize_vm_id(self.vm)
        if name in self.vm_map:
            return self.vm_map[name]
        return default_vm_id(self.fmt, name, self.quirks)

    def __iter__(self) -> Iterator[Record]:
        return self

    def __next__(self) -> Record:
        if self._records is None:  # the file is read on the first record asked for
            self._records = self._read()
        return next(self._records)

    def _read(self) -> Iterator[Record]:
        if self.fmt == "csv":
            for name, rows in _csv_rows(self.path, self.quirks, self.zero).items():
                if self.fill:
                    rows = [(ts, dict(self.fill, **values)) for ts, values in rows]
                yield from _records(self._vm_for(name), rows, self._interval_of(rows), self.quirks)
            return
        name = source_name(self.path)
        vm = self._vm_for(name)
        if self.fmt == "bitbrains":
            rows = _bitbrains_rows(self.path, self.quirks)
            yield from _records(vm, rows, self._interval_of(rows), self.quirks)
        else:
            rows = _planetlab_rows(self.path, self.start, self.interval, self.quirks, self.fill)
            yield from _records(vm, rows, self.interval, self.quirks)

    def _interval_of(self, rows: list[tuple[int, dict]]) -> int:
        """How long each of a VM's rows is held: ``--interval`` when given, else the median
        spacing of its rows in whole minutes.  A trace of 15-minute or 1-minute rows replayed
        as 5-minute data sent a third of each interval and called the rest a gap (or held a
        row past the next one); the format's interval stays for a VM of two rows or fewer."""
        if self.told_interval:
            return self.interval
        stamps = sorted({ts for ts, _values in rows})
        if len(stamps) < 3:
            return self.interval
        spacing = sorted(b - a for a, b in zip(stamps[:-1], stamps[1:], strict=True))[(len(stamps) - 1) // 2]
        interval = max(60, round(spacing / 60) * 60)
        if interval != self.interval:
            self.quirks["other_interval"] += 1
        return interval


def read_trace(path: str, fmt: str, **options) -> Trace:
    """Records of one trace file; ``.quirks`` on the result counts what was met.

    Options: ``vm`` (force one id), ``vm_map`` (source name -> id),
    ``start`` (Unix seconds of a planetlab file's first slot, and what a csv's relative
    stamps count from), ``interval``
    (seconds per row; default 300 for bitbrains/planetlab, 60 for csv),
    ``fill`` (values for fields the trace lacks, e.g. ``{"mem": 50.0}``:
    planetlab has CPU only), ``quirks`` (a Counter to add to).
    """
    return Trace(path, fmt, **options)


#: Names (lower case) of the files beside a trace's data that are not data.
_NOT_TRACES = ("readme", "manifest", "license")


def find_trace_files(paths: Iterable[str]) -> list[str]:
    """Expand folders (recursively, sorted) into trace files.

    Hidden files and the papers that travel with a published trace (README,
    MANIFEST, LICENSE) are skipped, so a trace folder can be replayed as it
    was downloaded; a file named on the command line is always read.
    """
    found = []
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if name.startswith(".") or name.lower().startswith(_NOT_TRACES):
                        continue
                    found.append(os.path.join(root, name))
        elif os.path.isfile(path):
            found.append(path)
        else:
            raise TraceError("no such trace file or folder: %s" % path)
    return found


def read_traces(paths: Iterable[str], fmt: str, quirks: Counter | None = None, **options) -> Iterator[Trace]:
    """One Trace per file under ``paths``, all counting into one ``quirks`` Counter."""
    quirks = Counter() if quirks is None else quirks
    for path in find_trace_files(paths):
        yield Trace(path, fmt, quirks=quirks, **options)
