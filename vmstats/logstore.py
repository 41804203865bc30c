"""The per-VM log layout: where logs live, their columns, writing and reading.

One module for the layout so the flusher that writes the logs and the report
that reads them can never disagree.  docs/STORAGE.md describes it for people.

Layout::

    DATA_DIR/vms/<vm-id>/<YYYY-MM-DD>.csv      one file per VM per UTC day

Each file is CSV with a header line, one row per minute record, appended in
whole batches by the flusher.  An empty cell is an unknown value (the agent
did not send it), never zero.  Splitting by day keeps retention a matter of
deleting old files and lets the report cache statistics per file.
"""

import datetime
import os
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from vmstats.protocol import FIELD_NAMES, FIELDS, Record

LOG_VERSION = 1
VMS_DIR = "vms"
SUFFIX = ".csv"
COLUMNS = ("ts",) + FIELD_NAMES + ("host",)
HEADER = (",".join(COLUMNS) + "\n").encode("ascii")
#: pandas dtypes for reading; integers are nullable because fields are optional.
DTYPES = dict([("ts", "int64")] + [(name, "Int64" if is_int else "float64")
                                   for name, is_int, _lo, _hi, _req in FIELDS] + [("host", "string")])
_EPOCH = datetime.date(1970, 1, 1)


def day_of(ts: int) -> str:
    """The UTC day (``YYYY-MM-DD``) whose file holds a record stamped ``ts``."""
    return (_EPOCH + datetime.timedelta(days=ts // 86400)).isoformat()


def vm_dir(data_dir: str, vm: str) -> str:
    """The folder of one VM's logs.

    ``vm`` has been validated by the protocol (an IP or a safe token), but a
    file name built from network input is checked once more here: the result
    must stay inside the data dir whatever the caller passed.
    """
    if not vm or "/" in vm or "\x00" in vm or vm in (".", "..") or ".." in vm:
        raise ValueError("unsafe vm id %r" % vm[:80])
    return os.path.join(data_dir, VMS_DIR, vm)


def day_path(data_dir: str, vm: str, day: str) -> str:
    """The log file of ``vm`` for UTC ``day``."""
    return os.path.join(vm_dir(data_dir, vm), day + SUFFIX)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def format_row(record: Record) -> bytes:
    """One log row (no newline) for a Record, columns in COLUMNS order."""
    return ",".join([str(record.ts)] + [_cell(getattr(record, name)) for name in FIELD_NAMES]
                    + [record.host or ""]).encode("utf-8")


def append_rows(data_dir: str, vm: str, rows: Dict[int, bytes]) -> int:
    """Append one VM's buffered rows (``{ts: row}``) to its day files.

    Rows are sorted by time and written with one ``write`` per day file, so a
    reader never sees half a batch from a single flush; a new file gets the
    header in the same write.  Returns the number of rows written; raises
    OSError on any failure (the caller keeps the rows and retries).
    """
    by_day = {}  # type: Dict[str, List[bytes]]
    for ts in sorted(rows):
        by_day.setdefault(day_of(ts), []).append(rows[ts])
    folder = vm_dir(data_dir, vm)
    os.makedirs(folder, exist_ok=True)
    written = 0
    for day, lines in by_day.items():
        path = os.path.join(folder, day + SUFFIX)
        payload = b"\n".join(lines) + b"\n"
        with open(path, "ab") as handle:
            if handle.tell() == 0:
                payload = HEADER + payload
            handle.write(payload)
        written += len(lines)
    return written


def iter_vms(data_dir: str) -> Iterator[str]:
    """The VM ids that have logs under ``data_dir``, sorted."""
    root = os.path.join(data_dir, VMS_DIR)
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return
    for name in names:
        if os.path.isdir(os.path.join(root, name)):
            yield name


def day_files(data_dir: str, vm: str, first_day: Optional[str] = None,
              last_day: Optional[str] = None) -> List[Tuple[str, str]]:
    """``(day, path)`` of one VM's log files, oldest first, within the day range."""
    folder = vm_dir(data_dir, vm)
    found = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(SUFFIX):
            continue
        day = name[: -len(SUFFIX)]
        if (first_day and day < first_day) or (last_day and day > last_day):
            continue
        found.append((day, os.path.join(folder, name)))
    return found


def read_rows(paths: Iterable[str]):
    """Load log files into one pandas DataFrame with the layout's columns.

    Returns ``(frame, bad_lines)``: rows that do not parse (wrong number of
    cells, non-numeric values, a torn last line after a crash) are dropped and
    counted, never fatal.  Duplicate timestamps keep the last row written, the
    same rule the aggregator applies to retransmits.
    """
    import io

    import pandas as pd

    frames = []
    bad = 0
    for path in paths:
        with open(path, "rb") as handle:
            data = handle.read()
        lines = data.split(b"\n")
        if lines and lines[0] + b"\n" == HEADER:
            lines = lines[1:]
        good = []
        width = len(COLUMNS) - 1
        for line in lines:
            if not line:
                continue
            if line.count(b",") != width or line == HEADER.rstrip():
                bad += 1
                continue
            good.append(line)
        if not good:
            continue
        frame = pd.read_csv(io.BytesIO(b"\n".join(good)), names=list(COLUMNS), header=None,
                            dtype=str, keep_default_na=False, encoding="utf-8",
                            encoding_errors="replace")
        frames.append(frame)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in DTYPES.items()}), bad
    raw = pd.concat(frames, ignore_index=True)
    out = pd.DataFrame(index=raw.index)
    valid = pd.Series(True, index=raw.index)
    for name in COLUMNS[:-1]:
        column = raw[name].replace("", None)
        numeric = pd.to_numeric(column, errors="coerce")
        valid &= ~(numeric.isna() & column.notna())
        out[name] = numeric
    valid &= out["ts"].notna()
    out["host"] = raw["host"].astype("string")
    bad += int((~valid).sum())
    out = out[valid]
    for name, dtype in DTYPES.items():
        out[name] = out[name].astype(dtype)
    out = out.drop_duplicates("ts", keep="last").sort_values("ts", kind="stable")
    return out.reset_index(drop=True), bad
