"""The latest labels (host and extra tags) of a VM's logs, read from the end of its day files.

A VM's host and tags are labels of the VM, not measurements: the report groups
by the latest ones and reads only what it needs to find them.
"""

import os
from typing import Dict, List, Optional, Tuple

from vmstats.logstore.files import open_day_file
from vmstats.logstore.rows import COLUMNS, TAGS_SEPARATOR, well_formed
from vmstats.logstore.tiers import COLUMNAR_DIR, Part, read_tier_part
from vmstats.protocol import FIELD_NAMES, parse_tags

#: Bytes read from the end of a day file to find its last row's labels.
_LABELS_TAIL = 8192


def last_labels(path: str) -> Optional[Tuple[int, str, Optional[Tuple[Tuple[str, str], ...]]]]:
    """``(ts, host, tags)`` of the last well-formed row of a day file, or None.

    A VM's host and extra tags are labels of the VM, not measurements: the
    report groups by the latest ones and needs no column of every row for
    that, so it reads only the file's last few KiB.  ``host`` is "" when the
    row has none; a torn or malformed last line is passed over.  A compacted
    day's Part is read from its file (last_labels_many does many at once).
    The last row written is the latest one unless records came out of order
    (an agent's backlog after its live records): latest_labels reads the
    whole file for those.
    """
    if isinstance(path, Part):
        return last_labels_many([path])[0]
    try:
        with open_day_file(path) as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            start = max(0, size - _LABELS_TAIL)
            handle.seek(start)
            data = handle.read()
    except OSError:
        return None
    lines = data.split(b"\n")
    if start:
        lines = lines[1:]  # the first piece may be the end of a longer line
    for line in reversed(lines):
        found = _labels_of(line)
        if found is not None:
            return found
    return None


def latest_labels(path: str) -> Optional[Tuple[int, str, Optional[Tuple[Tuple[str, str], ...]]]]:
    """last_labels of the latest-stamped well-formed row of a CSV day file (the last written of
    equal stamps, as read_rows keeps), read whole: for a file whose rows are out of order."""
    try:
        with open_day_file(path) as handle:
            data = handle.read()
    except OSError:
        return None
    best = None
    for line in data.split(b"\n"):
        found = _labels_of(line)
        if found is not None and (best is None or found[0] >= best[0]):
            best = found
    return best


def newest_labels(sources: List, tails: List, newest: Optional[int]):
    """The labels of a VM-day's latest record, from its ``sources`` (one per data dir) and their
    last_labels ``tails``: the latest tail, unless one of them is older than ``newest`` (the
    day's latest stamp, when known) -- rows written out of order, an agent's backlog after its
    live records, may name a previous owner or host -- when the CSV sources are read whole
    (latest_labels; a compacted day's file is in time order).  None when none has a readable row.
    """
    best = None
    for found in tails:
        if found is not None and (best is None or found[0] >= best[0]):
            best = found
    if best is not None and newest is not None and best[0] < newest:
        for source in sources:
            found = None if isinstance(source, Part) else latest_labels(source)
            if found is not None and found[0] >= best[0]:
                best = found
    return best


def _labels_of(line: bytes) -> Optional[Tuple[int, str, Optional[Tuple[Tuple[str, str], ...]]]]:
    """``(ts, host, tags)`` of one log line; None for a line the readers skip as malformed."""
    if not well_formed(line):
        return None
    cells = line.decode("utf-8", "replace").split(",")
    if not cells[0].isdigit():
        return None
    host = cells[len(FIELD_NAMES) + 1]
    tags = None
    if len(cells) == len(COLUMNS):
        try:
            tags = parse_tags(cells[-1], TAGS_SEPARATOR)
        except ValueError:
            return None
    return int(cells[0]), host, tags


def last_labels_many(sources: List) -> List[Optional[Tuple[int, str, Optional[Tuple[Tuple[str, str], ...]]]]]:
    """last_labels of each source: CSV paths read their tail, Parts their file once per file."""
    out: List = [None] * len(sources)
    by_path: Dict[str, List[Tuple[int, Part]]] = {}
    for i, source in enumerate(sources):
        if isinstance(source, Part):
            by_path.setdefault(source.path, []).append((i, source))
        else:
            out[i] = last_labels(source)
    for path, mine in by_path.items():
        tier = mine[0][1].tier
        columns = ["ts", "host", "tags"] if tier == COLUMNAR_DIR else ["label_ts", "host", "tags"]
        try:
            _info, table = read_tier_part(path, {part.vm for _i, part in mine}, columns)
        except (OSError, ValueError):
            continue
        last = {}
        for vm, ts, host, tags in zip(*(table.column(c).to_pylist() for c in ["vm"] + columns), strict=True):
            last[vm] = (ts, host, tags)  # sorted by time within a VM: the last row wins
        for i, part in mine:
            found = last.get(part.vm)
            if found is None or found[0] is None:
                continue
            parsed = None
            if found[2]:
                try:
                    parsed = parse_tags(found[2], TAGS_SEPARATOR)
                except ValueError:
                    parsed = None
            out[i] = (int(found[0]), found[1] or "", parsed)
    return out
