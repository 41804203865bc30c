"""Reading rows of day files into frames: read_columns (text files and compacted Parts alike,
many per pandas call) and read_rows (one VM's rows, the last written of a timestamp kept).

No content makes these fail: a line that does not parse, or a value out of the
protocol's ranges, is dropped and counted against its file.
"""

import os
from typing import Dict, Iterable, List, Optional, Tuple

from vmstats.logstore.files import describe_error, read_body
from vmstats.logstore.layout import DAY_SECONDS, SUFFIX, day_number
from vmstats.logstore.rows import COLUMNS, DTYPES, TEXT_COLUMNS
from vmstats.logstore.text import clean_body, good_lines, parse_lines
from vmstats.logstore.tiers import COLUMNAR_DIR, TIER_SUFFIX, Part, read_tier, tier_info
from vmstats.protocol import FIELDS, holds_places

#: Files parsed per pandas call by read_columns: large enough to amortise the
#: per-call overhead, small enough to bound memory.
_BATCH_BYTES = 64 << 20
#: (column, minimum, maximum, places) of the fields whose values the protocol bounds.
_BOUNDS = tuple((name, lo, hi, places) for name, _is_int, lo, hi, _req, places in FIELDS)


def _in_range(frame, columns: List[str]):
    """Rows whose known values are all within the protocol's ranges and places.

    The server never logs a value out of range, nor one of more places than its
    field holds (``vcpus=1.23456``), so such a row (``1e300``, ``inf``, a
    negative size) is damage or a foreign hand that happened to parse: it counts
    as a malformed line rather than skew every statistic built on it.
    """
    import numpy as np

    ok = np.ones(len(frame), bool)
    for name, lo, hi, places in _BOUNDS:
        if name in columns and len(frame):
            column = frame[name]
            values = column.to_numpy() if column.dtype == np.float64 else column.to_numpy(
                dtype=np.float64, na_value=np.nan)
            if places is not None:
                ok &= _holds_places(values, places)
            # Two reductions that skip NaN settle the usual column (all in range, or all
            # unknown: NaN) without a mask.
            low, high = np.fmin.reduce(values), np.fmax.reduce(values)
            if low != low or (lo <= low and high <= hi):
                continue
            with np.errstate(invalid="ignore"):
                ok &= ~((values < lo) | (values > hi))
    return ok


def _holds_places(values, places: int):
    """Which of ``values`` (NaN: unknown, kept) protocol.holds_places admits.

    The rule is asked of each distinct value, not each row: a column of sizes
    holds a few values over millions of rows, and a hash of them costs about
    what a single pass of rounding would.
    """
    import numpy as np
    import pandas as pd

    refused = [value for value in pd.unique(values).tolist()
               if value == value and not holds_places(value, places)]
    if not refused:
        return np.ones(len(values), bool)
    return ~np.isin(values, refused)


def read_columns(paths: List[str], columns: Optional[Iterable[str]] = None, as_float: bool = False,
                 errors: Optional[Dict[int, str]] = None):
    """Parse several log files in as few pandas calls as possible.

    Returns ``(frame, bad_per_file)``: ``frame`` holds the requested columns
    (all by default) plus ``file``, the index in ``paths`` of each row's file,
    rows in file order then line order, NOT de-duplicated (callers decide which
    files belong to one VM).  ``ts`` is int64, integer fields nullable Int64,
    real fields float64 with NaN for unknown (``as_float``: every field
    float64, which parses faster and suits statistics).  Lines that do not
    parse are dropped and counted per file, as read_rows does; no content
    makes this fail.  A file that cannot be read (gone, no permission, a
    folder or FIFO in its place: NotALogFile) raises OSError, unless
    ``errors`` is given: then it is skipped and ``errors[index]`` says why
    (describe_error), and the other files are read.
    """
    import numpy as np
    import pandas as pd

    wanted = list(COLUMNS) if columns is None else [c for c in COLUMNS if c in set(columns) | {"ts"}]
    final = {name: ("float64" if as_float and name != "ts" and name not in TEXT_COLUMNS else DTYPES[name])
             for name in wanted}
    parsed = {name: ("Int64" if final[name] in ("int64", "Int64") else final[name]) for name in wanted}
    bad = [0] * len(paths)
    frames = []
    batch: List[bytes] = []
    batch_files: List[int] = []
    batch_lines: List[int] = []
    size = 0

    days = _file_days(paths)

    def flush() -> None:
        nonlocal size
        if not batch:
            return
        lines = np.repeat(np.array(batch_files, dtype=np.int32), batch_lines)
        frame, owners, valid = parse_lines(b"".join(batch), lines, wanted, parsed)
        frame["file"] = owners
        ok = frame["ts"].notna().to_numpy() & _in_range(frame, wanted) & _in_day(frame, days)
        if valid is not None:
            ok &= valid
        if len(owners) != len(lines) or not ok.all():
            _count_dropped(bad, lines, owners[ok])
            frame = frame[ok]
        frames.append(frame)
        batch.clear()
        batch_files.clear()
        batch_lines.clear()
        size = 0

    columnar: List[Tuple[int, Part]] = []
    for index, path in enumerate(paths):
        if isinstance(path, Part):
            columnar.append((index, path))
            continue
        try:
            raw = read_body(path)
        except OSError as exc:
            if errors is None:
                raise
            errors[index] = describe_error(path, exc)
            continue
        body, lines = clean_body(raw)
        if body is None:
            good, dropped = good_lines(raw)
            bad[index] += dropped
            body = b"".join(line + b"\n" for line in good)
            lines = len(good)
        if not lines:
            continue
        batch.append(body)
        batch_files.append(index)
        batch_lines.append(lines)
        size += len(body)
        if size >= _BATCH_BYTES:
            flush()
    flush()
    if columnar:
        _read_parts(columnar, wanted, final, frames, bad, errors, days)
    if not frames:
        empty = pd.DataFrame({c: pd.Series(dtype=final[c]) for c in wanted})
        empty["file"] = pd.Series(dtype="int32")
        return empty, bad
    out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    if columnar and len(frames) > 1:  # back to file order: a later file's row wins a timestamp
        out = out.iloc[np.argsort(out["file"].to_numpy(), kind="stable")].reset_index(drop=True)
    for name in wanted:
        if out[name].dtype != final[name]:
            out[name] = out[name].astype(final[name])
    return out, bad


def _read_parts(parts: List[Tuple[int, "Part"]], wanted: List[str], final: Dict[str, str], frames: list,
                bad: List[int], errors: Optional[Dict[int, str]], days) -> None:
    """read_columns' share of columnar Parts: their rows into ``frames``, their counts into
    ``bad``; a file that cannot be read fails, or with ``errors`` is named there."""
    by_path: Dict[str, List[Tuple[int, Part]]] = {}
    for index, part in parts:
        if part.tier != COLUMNAR_DIR:
            raise ValueError("%s holds rollups, not rows" % part.path)
        by_path.setdefault(part.path, []).append((index, part))
    for path, mine in by_path.items():
        try:
            frame, found = _columnar_frame(mine, wanted, final)
        except (OSError, ValueError) as exc:
            if errors is None:
                raise OSError("unreadable columnar file %s: %s" % (path, exc)) from None
            for index, _part in mine:
                errors[index] = "unreadable: %s" % str(exc).split("\n", 1)[0]  # Arrow's may add a schema
            continue
        for index, count in found.items():
            bad[index] += count
        if frame is not None and len(frame):
            frames.append(_held_rows(frame, wanted, bad, days))


def _held_rows(frame, wanted: List[str], bad: List[int], days):
    """``frame`` (rows of columnar files) less the rows the CSV reader would refuse by the
    protocol's ranges and places (``_in_range``, the one rule both readers hold): compaction
    writes only rows it read, but a file written by another hand or version is read here too,
    and a ``vcpus=1.23456`` in it would be sized and billed at that size.  Each row dropped is
    counted as a malformed line of its VM's day (``bad``), as in the CSV.  So is a row stamped
    outside the file's day (``days``: _in_day)."""
    ok = _in_range(frame, wanted) & _in_day(frame, days)
    if ok.all():
        return frame
    files = frame["file"].to_numpy()
    _count_dropped(bad, files, files[ok])
    return frame[ok]


#: _file_days' mark of a file whose name gives no day (read_rows of any path): no row refused.
_ANY_DAY = -(1 << 62)


def _file_days(paths) -> "object":
    """The UTC day number each of ``paths`` (CSV paths or Parts) holds, by its name
    (``<YYYY-MM-DD>.csv``, ``<YYYY-MM-DD>.parquet``), or _ANY_DAY for a name that gives none."""
    import numpy as np

    days = np.full(len(paths), _ANY_DAY, np.int64)
    known: Dict[str, int] = {}  # a report's files share a few day names: each parsed once
    for index, path in enumerate(paths):
        name = (path.path if type(path) is Part else path).rpartition(os.sep)[2]
        day = known.get(name)
        if day is None:
            stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name[: -len(TIER_SUFFIX)] \
                if name.endswith(TIER_SUFFIX) else ""
            try:
                day = day_number(stem) if len(stem) == 10 else _ANY_DAY
            except ValueError:
                day = _ANY_DAY
            known[name] = day
        days[index] = day
    return days


def _in_day(frame, days):
    """Rows stamped within their file's UTC day (``days``: _file_days, by the ``file`` column).

    The writer files each row under the day of its stamp, so a row of another day in a file
    (a file copied or renamed by hand, damage) was counted twice, in this day and in its own,
    and a stamp decades away made the report size its daily tables by it (a traceback: petabytes
    asked of numpy).  It is a malformed line of its file instead.
    """
    import numpy as np

    owners = frame["file"].to_numpy()
    expected = days[owners]
    ts = frame["ts"].to_numpy(dtype=np.int64, na_value=0) if frame["ts"].hasnans else frame["ts"].to_numpy()
    return (expected == _ANY_DAY) | (ts // DAY_SECONDS == expected)


def _count_dropped(bad: List[int], read, kept) -> None:
    """Add to ``bad`` (per file) the rows read but not kept: ``read`` and ``kept`` hold the
    file index of each row read and of each row kept.  The one count of refused rows for CSV
    batches and columnar files alike, so a row refused either way is a malformed line of its
    file once."""
    import numpy as np

    counts = np.bincount(read, minlength=len(bad)) - np.bincount(kept, minlength=len(bad))
    for index in np.flatnonzero(counts):
        bad[index] += int(counts[index])


def _columnar_frame(parts: List[Tuple[int, "Part"]], wanted: List[str], final: Dict[str, str]):
    """``(frame, bad)`` of columnar Parts (``(index, part)``): rows with ``file`` = index.

    ``bad`` maps each index to the malformed lines its VM's CSV had when it
    was compacted, so the report counts them the same from either tier, and
    to the rows the footer says the file holds of that VM and it does not (a
    file cut down or rewritten by another hand): otherwise that VM-day lost
    them unsaid.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    frames = []
    bad: Dict[int, int] = {}
    by_path: Dict[str, List[Tuple[int, Part]]] = {}
    for index, part in parts:
        by_path.setdefault(part.path, []).append((index, part))
    for path, mine in sorted(by_path.items()):
        info = tier_info(path)
        lines = dict(zip(info["vms"], info.get("bad", [0] * len(info["vms"])), strict=True))
        index_of = {part.vm: index for index, part in mine}
        for vm, index in index_of.items():
            bad[index] = int(lines.get(vm, 0))
        table = read_tier(path, index_of, wanted)
        # Nullable integers and text as the CSV reader gives them (a seq near 2**63 stays exact).
        frame = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype(), pa.string(): pd.StringDtype()}.get)
        frame["file"] = frame.pop("vm").map(index_of).astype(np.int32)
        if "rows" in info:
            held = np.bincount(frame["file"].to_numpy(), minlength=max(index_of.values()) + 1)
            promised = dict(zip(info["vms"], info["rows"], strict=True))
            for vm, index in index_of.items():
                bad[index] += max(0, promised.get(vm, 0) - int(held[index]))
        frames.append(frame)
    if not frames:
        return None, bad
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    for name in wanted:
        if str(frame[name].dtype) != final[name]:
            frame[name] = frame[name].astype(final[name])
    return frame, bad


def read_rows(paths: Iterable[str]):
    """Load log files into one pandas DataFrame with the layout's columns.

    Returns ``(frame, bad_lines)``: rows that do not parse (wrong number of
    cells, non-numeric values, a torn last line after a crash) are dropped and
    counted, never fatal.  Duplicate timestamps keep the last row written, the
    same rule the aggregator applies to retransmits.
    """
    frame, bad = read_columns(list(paths))
    frame = frame.drop(columns="file")
    frame = frame.drop_duplicates("ts", keep="last").sort_values("ts", kind="stable")
    return frame.reset_index(drop=True), sum(bad)
