"""Parsing the lines of text (CSV) day files into frames, strictly when they are whole,
line by line around damage.

read.py's read_columns batches many files' bodies into one call of parse_lines:
one pandas call serves the files the flusher wrote whole, and a damaged file
costs only itself the slower reading.
"""

from typing import Dict, List, Optional, Tuple

from vmstats.logstore.rows import (
    COLUMNS,
    DTYPES,
    FOREIGN,
    TAGGED_COMMAS,
    TEXT_COLUMNS,
    UNTAGGED_COMMAS,
    well_formed,
)

#: Integer cells must fit int64 exactly once read as floats (the lenient parser's route).
_INT_LIMIT = float(1 << 62)
#: Strict parses one batch may take while halving it around damaged files (parse_lines): one
#: damaged file among n costs about 2 log2(n) tries, so a batch of a thousand day files with
#: three damaged ones is still read strictly but for them; damage spread wider is read line by line.
_STRICT_TRIES = 64


def clean_body(body: bytes) -> Tuple[Optional[bytes], int]:
    """``(body, lines)`` when every line of a file may be well-formed, else ``(None, lines)``.

    Counting and finding bytes is C-speed, so the common case (a file the
    flusher wrote whole) costs no Python loop per line; only a file with a
    suspicious line goes through the line-by-line check of good_lines.
    """
    if not body:
        return body, 0
    lines = body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
    # Lines of too few and too many cells that balance out make pandas fail (wrong number
    # of cells); a repeated header line is not a number, which pandas rejects too; an empty
    # line, which pandas skips, leaves it one row short, which parse_lines checks: each
    # sends the batch to the line-by-line reading.  A carriage return (a line break to
    # pandas, one more row) could offset an empty line unseen, and a quote in the host or
    # tags cell is text to pandas: both are searched for, so two byte counts and two byte
    # searches are the whole fast check.  Rows
    # have one of two widths (with or without tags): a file of rows without tags has no
    # "=", and in a file of tagged rows a short line can only be offset by one with more
    # cells than any row, which pandas rejects; a file mixing both is read line by line.
    commas = body.count(b",")
    uniform = (commas == lines * UNTAGGED_COMMAS and b"=" not in body) or commas == lines * TAGGED_COMMAS
    if uniform and not body.startswith(b"\n") and not any(byte in body for byte in FOREIGN):
        return (body if body.endswith(b"\n") else body + b"\n"), lines
    return None, lines


def good_lines(body: bytes) -> Tuple[List[bytes], int]:
    """The lines of a suspicious file that have a row's shape, and the count of the others."""
    good = []
    bad = 0
    for line in body.split(b"\n"):
        if not line:
            continue
        if well_formed(line):
            good.append(line)
        else:
            bad += 1
    return good, bad


def _parse_strict(data: bytes, columns: List[str], dtypes: Dict[str, str]):
    """One pandas call over many well-formed lines; ValueError on any non-numeric cell.

    Lines without extra tags (no ``=`` anywhere: a tags cell always holds one) are read with
    the columns up to ``host``, and an empty ``tags`` if it is wanted: pandas refuses rows
    shorter than the names it is given, which sent every such batch (compaction's, which reads
    every column) to the line-by-line reading, five times slower.  A line with one cell more is
    still read right: its numbers come first.
    """
    import csv
    import io

    import pandas as pd

    untagged = b"=" not in data
    names = COLUMNS[:-1] if untagged else COLUMNS
    read = [c for c in columns if c != "tags"] if untagged else columns
    frame = pd.read_csv(io.BytesIO(data), names=list(names), header=None, usecols=read,
                        dtype={c: dtypes[c] for c in read}, keep_default_na=False,
                        na_values={c: [""] for c in read if c not in TEXT_COLUMNS},
                        quoting=csv.QUOTE_NONE, encoding="utf-8", encoding_errors="replace", engine="c")
    if len(read) < len(columns):  # rows without tags: the empty cell the line-by-line reading gives
        frame["tags"] = pd.Series("", index=frame.index, dtype=dtypes["tags"])
    return frame


def _parse_lenient(lines: List[bytes], columns: List[str]):
    """Parse lines of a row's shape cell by cell; returns (frame, validity mask)."""
    import csv
    import io

    import pandas as pd

    raw = pd.read_csv(io.BytesIO(b"\n".join(lines)), names=list(COLUMNS), header=None,
                      dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE,
                      encoding="utf-8", encoding_errors="replace", engine="c")
    out = pd.DataFrame(index=raw.index)
    valid = pd.Series(True, index=raw.index)
    for name in COLUMNS:
        if name in TEXT_COLUMNS:
            continue
        column = raw[name].replace("", None)
        numeric = pd.to_numeric(column, errors="coerce")
        valid &= ~(numeric.isna() & column.notna())
        if DTYPES[name] != "float64":
            whole = numeric.isna() | ((numeric == numeric.round()) & (numeric.abs() < _INT_LIMIT))
            valid &= whole
            numeric = numeric.where(whole)
        if name in columns:
            out[name] = numeric if DTYPES[name] == "float64" else numeric.astype("Int64")
    for name in TEXT_COLUMNS:
        if name in columns:
            out[name] = raw[name].astype("string")
    return out, valid


def parse_lines(data: bytes, owners, columns: List[str], dtypes: Dict[str, str],
                 budget: Optional[List[int]] = None):
    """``(frame, owners, valid)`` of ``data``, lines of many files (``owners``: one per line).

    The strict parse (one pandas call) serves files the flusher wrote whole.  A
    batch it rejects is split in two at a file's edge and each half tried
    strictly again, so one damaged file among thousands costs about two more
    strict passes over the batch, not the line-by-line reading of all of it
    (five times slower).  ``budget`` caps those strict tries: damage spread over
    many files is read line by line at once.  There, lines without a row's shape
    are dropped first (``valid`` False is then only for cells that are not
    numbers), so pandas' rows always match the lines.  That is checked too:
    should pandas still disagree, the files are parsed one by one and a file it
    cannot parse loses its rows rather than the report its life.
    """
    import numpy as np

    budget = [_STRICT_TRIES] if budget is None else budget
    try:
        budget[0] -= 1
        with np.errstate(invalid="ignore"):  # a cell past int64 warns as it fails the cast
            frame = _parse_strict(data, columns, dtypes)
        if len(frame) == len(owners):
            return frame, owners, None
    except (ValueError, TypeError, OverflowError):  # a cell not a number, a line of wrong shape
        pass
    edges = np.flatnonzero(owners[1:] != owners[:-1]) + 1  # the first line of each later file
    if len(edges) and budget[0] >= 2:
        cut = int(edges[np.abs(edges - len(owners) // 2).argmin()])
        ends = np.flatnonzero(np.frombuffer(data, np.uint8) == ord("\n"))
        if len(ends) == len(owners):  # one line per owner, as the batch was made
            at = int(ends[cut - 1]) + 1
            return _join_parts([parse_lines(data[:at], owners[:cut], columns, dtypes, budget),
                                parse_lines(data[at:], owners[cut:], columns, dtypes, budget)])
    lines = data.split(b"\n")[:-1]
    shaped = np.fromiter(map(well_formed, lines), bool, len(lines))
    kept = [line for line, ok in zip(lines, shaped, strict=True) if ok]
    owners = owners[shaped]
    if kept:
        try:
            frame, valid = _parse_lenient(kept, columns)
            if len(frame) == len(owners):
                return frame, owners, valid.to_numpy()
        except (ValueError, TypeError, OverflowError):
            pass
    if len(np.unique(owners)) > 1:
        parts = []
        for owner in np.unique(owners):
            mine = owners == owner
            text = b"".join(line + b"\n" for line, ok in zip(kept, mine, strict=True) if ok)
            parts.append(parse_lines(text, owners[mine], columns, dtypes, [0]))
        return _join_parts(parts)
    return _unknown_rows(len(owners), columns, dtypes), owners, np.zeros(len(owners), bool)


def _unknown_rows(count: int, columns: List[str], dtypes: Dict[str, str]):
    """A frame of ``count`` rows of unknown values: the place of lines that did not parse."""
    import pandas as pd

    return pd.DataFrame({c: pd.Series([None] * count, dtype=dtypes[c]) for c in columns})


def _join_parts(parts):
    """One (frame, owners, valid) of per-file parses."""
    import numpy as np
    import pandas as pd

    frame = pd.concat([p[0] for p in parts], ignore_index=True)
    owners = np.concatenate([p[1] for p in parts])
    valid = np.concatenate([np.ones(len(p[1]), bool) if p[2] is None else p[2] for p in parts])
    return frame, owners, valid
