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

import bisect
import contextlib
import datetime
import errno
import functools
import json
import os
import re
import stat
from typing import BinaryIO, Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Tuple

from vmstats import inputfile
from vmstats.protocol import (
    FIELD_NAMES,
    FIELDS,
    DecodeError,
    Record,
    format_float,
    format_tags,
    holds_places,
    normalize_vm_id,
    parse_tags,
)

LOG_VERSION = 2
VMS_DIR = "vms"
SUFFIX = ".csv"
#: ``tags`` (version 2) is the record's extra tags as ``key=value;key=value``; a row without
#: extra tags ends after ``host``, so it is byte for byte a version-1 row, and version-1
#: files (whose header lacks ``tags``) read as rows without tags.
COLUMNS = ("ts",) + FIELD_NAMES + ("host", "tags")
HEADER = (",".join(COLUMNS) + "\n").encode("ascii")
#: The header of version-1 files, still read.
HEADER_V1 = (",".join(COLUMNS[:-1]) + "\n").encode("ascii")
#: Columns that hold text, not numbers.
TEXT_COLUMNS = ("host", "tags")
#: Separator of the ``tags`` cell's pairs (never in a key or value: protocol.check_tags).
TAGS_SEPARATOR = ";"
#: Commas in a row without tags, and in one with tags: the two shapes of a whole row.
_UNTAGGED_COMMAS = len(COLUMNS) - 2
_TAGGED_COMMAS = len(COLUMNS) - 1
ROW_COMMAS = (_UNTAGGED_COMMAS, _TAGGED_COMMAS)
#: pandas dtypes for reading; integers are nullable because fields are optional.
DTYPES = dict([("ts", "int64")] + [(name, "Int64" if is_int else "float64")
                                   for name, is_int, _lo, _hi, _req, _places in FIELDS]
              + [(name, "string") for name in TEXT_COLUMNS])
_EPOCH = datetime.date(1970, 1, 1)
DAY_SECONDS = 86400


@functools.lru_cache(maxsize=1024)
def day_name(day: int) -> str:
    """``YYYY-MM-DD`` of day number ``day`` (UTC days since 1970-01-01): its files' name.

    Cached: a flush names the same one or two days for every VM it writes,
    and the date arithmetic costs several times the cache lookup.
    """
    return (_EPOCH + datetime.timedelta(days=day)).isoformat()


def day_of(ts: int) -> str:
    """The UTC day (``YYYY-MM-DD``) whose file holds a record stamped ``ts``."""
    return day_name(ts // DAY_SECONDS)


def split_days(stamps: Iterable[int]) -> List[Tuple[int, List[int]]]:
    """``[(day number, its timestamps sorted)]`` for ``stamps``, oldest day first.

    A flush almost always holds one day per VM: comparing the first and last
    timestamp settles that without any per-row Python work; only a batch
    spanning midnight is cut, by bisection, once per day boundary.
    """
    ordered = sorted(stamps)
    if not ordered:
        return []
    first = ordered[0] // DAY_SECONDS
    if ordered[-1] // DAY_SECONDS == first:
        return [(first, ordered)]
    groups = []
    start = 0
    while start < len(ordered):
        day = ordered[start] // DAY_SECONDS
        end = bisect.bisect_left(ordered, (day + 1) * DAY_SECONDS, start)
        groups.append((day, ordered[start:end]))
        start = end
    return groups


def vm_dir(data_dir: str, vm: str) -> str:
    """The folder of one VM's logs.

    ``vm`` has been validated by the protocol (an IP or a safe token), but a
    file name built from network input is checked once more here: the result
    must stay inside the data dir whatever the caller passed.
    """
    if not vm or "/" in vm or "\x00" in vm or vm in (".", "..") or ".." in vm:
        raise ValueError("unsafe vm id %r" % vm[:80])
    # os.path.join(data_dir, VMS_DIR, vm), the same string without its cost (several us
    # a call, paid per VM per flush): the root ends in VMS_DIR and vm holds no separator.
    return _vms_root(data_dir) + os.sep + vm


@functools.lru_cache(maxsize=16)
def _vms_root(data_dir: str) -> str:
    return os.path.join(data_dir, VMS_DIR)


def _day_file(folder: str, day: str) -> str:
    """The file of UTC ``day`` in a VM's folder: ``os.path.join(folder, day + SUFFIX)``."""
    return folder + os.sep + day + SUFFIX


def day_path(data_dir: str, vm: str, day: str) -> str:
    """The log file of ``vm`` for UTC ``day``."""
    return _day_file(vm_dir(data_dir, vm), day)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return format_float(value)
    return str(value)


def format_tail(record: Record) -> bytes:
    """A Record's log row without its leading ``ts,``: what append_missing is given.

    The server holds records in this form under their timestamp (so it is not
    stored twice), and the row is completed only as it is written.
    """
    cells = [_cell(getattr(record, name)) for name in FIELD_NAMES] + [record.host or ""]
    if record.tags:
        cells.append(format_tags(record.tags, TAGS_SEPARATOR))
    return ",".join(cells).encode("utf-8")


def format_row(record: Record) -> bytes:
    """One log row (no newline) for a Record, columns in COLUMNS order."""
    return b"%d,%s" % (record.ts, format_tail(record))


#: A row as written: its timestamp, then its tail (format_tail), then the newline.
_ROW = b"%d,%s\n"
#: Flags of the one open that both checks a day file for rows already logged and appends to
#: it.  O_NONBLOCK so that a FIFO in the way does not block the open (it is then seen not to
#: be a regular file, see _append_blind); a regular file's reads and writes ignore it.
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC
#: Flags of an append to a day file that is not a regular file, as ``open(path, "ab")`` uses
#: them.  No O_NONBLOCK: a FIFO in the way blocks the writer, which the server detects (drain
#: deadline, dead writer) and reports.
_BLIND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
#: Bytes of a day file's end remembered (see DayFileEnds): enough to notice a rewritten end.
_TAIL = 32
#: Day files whose end a process remembers (about 400 bytes each, so at most ~13 MiB);
#: past it the least recently used are forgotten, which costs them one whole read at
#: their next check, nothing else.
KNOWN_ENDS = 1 << 15

End = Tuple[int, int, int, int, bytes]


class DayFileEnds:
    """What one process last saw at the end of each day file it checked or appended to.

    ``path -> (st_dev, st_ino, size, last, tail)``, where ``size`` is just
    after a newline, ``last`` the largest timestamp of the rows in the first
    ``size`` bytes (-1: none) and ``tail`` the bytes just before ``size``.  It
    lets append_missing read only what was appended since instead of the
    whole file; the tail is checked against the file, so a file truncated,
    replaced or rewritten since is read whole again.  A writer process keeps
    one for its life; without one every append reads the whole day file.
    """

    def __init__(self, capacity: int = KNOWN_ENDS):
        self.capacity = capacity
        self._ends: Dict[str, End] = {}

    def __len__(self) -> int:
        return len(self._ends)

    def get(self, path: str) -> Optional[End]:
        return self._ends.get(path)

    def forget(self, path: str) -> Optional[End]:
        """Forget a file's end; returns what was remembered."""
        return self._ends.pop(path, None)

    def remember(self, path: str, end: End) -> None:
        """Remember a day file's end, the least recently used forgotten past ``capacity``."""
        ends = self._ends
        ends.pop(path, None)
        if len(ends) >= self.capacity:
            del ends[next(iter(ends))]
        ends[path] = end


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``: one ``write`` unless the kernel takes less (a nearly full disk,
    a signal); the error that stops it is raised, never swallowed."""
    done = os.write(fd, data)
    if done == len(data):
        return
    view = memoryview(data)[done:]
    while view:
        done = os.write(fd, view)
        if done <= 0:
            raise OSError(errno.EIO, "write wrote nothing")
        view = view[done:]


def _append_or_undo(fd: int, data: bytes, end: int) -> None:
    """Append ``data`` to the day file open as ``fd``, whose size is ``end``, or none of it.

    A write can stop midway (a full disk takes the rows up to its last free
    block, then refuses the rest; EIO): the file is cut back to ``end`` before
    the error goes on, so no partial row stays for readers and the retry
    appends whole rows.  If even the cut fails, the next append's check ends
    the torn line (_logged_since).
    """
    try:
        _write_all(fd, data)
    except OSError:
        try:
            os.ftruncate(fd, end)
        except OSError:
            pass  # the write's error is the one to report
        raise


def append_missing(data_dir: str, vm: str, rows: Mapping[int, bytes],
                   ends: Optional[DayFileEnds] = None) -> int:
    """Append one VM's rows (``{ts: tail}``, format_tail) that its day files lack.

    Rows are sorted by time and written with one ``write`` per day file, so a
    reader never sees half a batch from a single flush; a new file gets the
    header in the same write.  Returns the number of rows written; raises
    OSError on any failure (the caller keeps the rows and retries).

    A record can reach the writer twice: a TCP batch resent because its ack
    was lost when the server died after logging it, or a journal segment
    replayed after a crash that came after its flush.  Appending only the
    rows their day file does not already hold, byte for byte, makes both
    harmless.  A corrected record (same timestamp, other values) is still
    appended, and the last row for a timestamp still wins.

    The check and the append share one open of each day file (_append_day).
    With the ``ends`` a process remembers (DayFileEnds), the check usually
    reads nothing but the file's last bytes: rows newer than everything
    logged cannot be there already.  A file not remembered, or rows as old as
    some logged, cost one read of the whole day file (at most 1,440 rows).
    """
    folder = vm_dir(data_dir, vm)
    if not rows:
        os.makedirs(folder, exist_ok=True)
        return 0
    ends = ends if ends is not None else DayFileEnds()
    written = 0
    for day, stamps in split_days(rows):
        written += _append_day(folder, _day_file(folder, day_name(day)), day, stamps, rows, ends)
    return written


def _append_day(folder: str, path: str, day: int, stamps: List[int], rows: Mapping[int, bytes],
                ends: DayFileEnds) -> int:
    """Append the rows at ``stamps`` (sorted, all of UTC day ``day``) that ``path`` lacks.

    The directory is made only when the open says it is missing (a new VM, or
    its folder deleted since, e.g. by retention): an open that succeeds proves
    it exists, which costs nothing, where ``os.makedirs`` costs three system
    calls.  Five system calls in all for the usual flush (open, fstat, a read
    of the remembered tail, write, close).
    """
    try:
        fd = os.open(path, _OPEN_FLAGS, 0o666)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(path, _OPEN_FLAGS, 0o666)
    try:
        st = os.fstat(fd)
        regular = stat.S_ISREG(st.st_mode)
        if regular:
            size, lines, last, tail = _logged_since(fd, st, path, day, stamps[0], ends)
            if stamps[0] <= last:
                stamps = _not_logged(stamps, rows, lines, last)
            payload = _rows_bytes(stamps, rows)
            if stamps:
                if size == 0:
                    payload = HEADER + payload
                _append_or_undo(fd, payload, size)
    finally:
        os.close(fd)
    if not regular:
        ends.forget(path)
        return _append_blind(path, stamps, rows)
    ends.remember(path, (st.st_dev, st.st_ino, size + len(payload),
                         max(last, stamps[-1]) if stamps else last, (tail + payload)[-_TAIL:]))
    return len(stamps)


def _logged_since(fd: int, st: os.stat_result, path: str, day: int, first: int,
                  ends: DayFileEnds) -> Tuple[int, List[bytes], int, bytes]:
    """``(size, lines, last, tail)`` of the open day file ``fd``: its size once read, the
    lines a row stamped ``first`` or later may equal, the largest timestamp of day ``day``
    that any line starts with (-1: none) and the file's last bytes.

    A row newer than ``last`` cannot be in the file, which settles the usual
    flush without comparing rows.  Usually this process remembers the file's
    end (``ends``) and ``first`` is newer than every row before it: only the
    bytes appended since (by another writer process; usually none) are read,
    with the remembered tail of the file before them to prove it unchanged.
    Otherwise (a file this process has not seen, rewritten since, or a row as
    old as one logged) the whole file is read.  A file that does not end with
    a newline was torn by a writer killed mid-write: it gets its newline
    first, so the torn piece stays one bad line that readers skip instead of
    swallowing the next row appended.
    """
    known = ends.get(path)
    data = None
    if (known is not None and known[0] == st.st_dev and known[1] == st.st_ino
            and known[2] <= st.st_size and first > known[3]):
        start = known[2] - len(known[4])
        data = os.pread(fd, st.st_size - start, start)
        if data.startswith(known[4]):
            new = data[len(known[4]):]
            last = known[3]
        else:
            data = None
    if data is None:
        start = 0
        data = os.pread(fd, st.st_size, 0) if st.st_size else b""
        new = _strip_header(data)
        last = -1
    if new and not new.endswith(b"\n"):
        _write_all(fd, b"\n")
        new += b"\n"
        data += b"\n"
    if new:
        lines = new.split(b"\n")
        last = max(last, _last_stamp(lines, day))
    else:
        lines = []
    return start + len(data), lines, last, data[-_TAIL:]


def _rows_bytes(stamps: List[int], rows: Mapping[int, bytes]) -> bytes:
    """The rows at ``stamps`` as written, one ``%`` each mapped in C: no Python loop per row."""
    return b"".join(map(_ROW.__mod__, zip(stamps, map(rows.__getitem__, stamps), strict=True)))


def _not_logged(stamps: List[int], rows: Mapping[int, bytes], lines: List[bytes],
                last: int) -> List[int]:
    """The ``stamps`` whose row (``rows``: tails) is not one of ``lines``, byte for byte.

    Only rows at or before ``last`` can be there; a row is assumed to start
    with its own timestamp, as every row written does.
    """
    present = set(lines) if len(lines) > 8 else lines
    return [ts for ts in stamps if ts > last or b"%d,%s" % (ts, rows[ts]) not in present]


def _append_blind(path: str, stamps: List[int], rows: Mapping[int, bytes]) -> int:
    """Append to a day file that is not a regular file (a FIFO, a device: it cannot be
    checked) as ``open(path, "ab")`` would, so a FIFO without a reader blocks the writer."""
    fd = os.open(path, _BLIND_FLAGS)
    try:
        _write_all(fd, _rows_bytes(stamps, rows))
    finally:
        os.close(fd)
    return len(stamps)


def _last_stamp(lines: List[bytes], day: int) -> int:
    """The largest timestamp of day ``day`` that starts one of ``lines``; -1 if none.

    Only lines that could equal a row of that day count: a decimal timestamp of
    the day, then a comma.  When all the day's timestamps have the same number
    of digits (every day but the few in which they reach a power of ten, such
    as 2001-09-09), the largest such line is also the largest in byte order, so
    ``max`` (C speed) finds it; otherwise, or when the byte-order maximum is
    not such a line (a header repeated, a torn line), every line is parsed.
    """
    low = day * DAY_SECONDS
    high = low + DAY_SECONDS - 1
    digits = len(str(low))
    if low > 0 and len(str(high)) == digits:
        head, comma, _ = max(lines).partition(b",")
        if comma and len(head) == digits and head.isdigit() and int(head) <= high:
            return int(head)
    best = -1
    for line in lines:
        head, comma, _ = line.partition(b",")
        if comma and head.isdigit() and low <= int(head) <= high:
            best = max(best, int(head))
    return best


def printable(text: str) -> str:
    """``text`` with the bytes of a file name that is not UTF-8 shown as ``\\xff``.

    os.listdir gives such bytes as lone surrogates, which no UTF-8 output (the
    terminal, report.json, the page) can hold: one folder copied in from another
    system would otherwise stop the whole report when it names it.
    """
    if text.isascii():
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that was not a byte of a name
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def one_line(name: str) -> str:
    """``printable(name)`` with its control characters (a newline, a tab) escaped as ``\\n``,
    ``\\t``: a folder named by other means stays one line wherever it is named."""
    text = printable(name)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def is_utf8(name: str) -> bool:
    """Whether a name from os.listdir was UTF-8 on disk (no VM id or path we write is not)."""
    return printable(name) == name


def is_vm_id(name: str) -> bool:
    """Whether a folder name under ``vms/`` is a VM id the server could have written there
    (docs/PROTOCOL.md, "VM ids").  A folder copied in by other means may be named anything:
    ``=HYPERLINK(...)``, ``<b>``, a newline, which a spreadsheet, a page or a terminal would take
    for something else; such a folder holds no VM's logs."""
    try:
        normalize_vm_id(name)
    except DecodeError:
        return False
    return True


def iter_vms(data_dir: str, not_folders: Optional[List[str]] = None) -> Iterator[str]:
    """The VM ids that have logs under ``data_dir``, sorted.

    Other entries (a file or a dangling link where a VM's folder should be; hidden names
    aside) are added to ``not_folders`` if given, for a reader that names what it skips.
    """
    root = os.path.join(data_dir, VMS_DIR)
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return
    for name in names:
        if os.path.isdir(os.path.join(root, name)):
            yield name
        elif not_folders is not None and not name.startswith("."):
            not_folders.append(name)


def day_files(data_dir: str, vm: str, first_day: Optional[str] = None,
              last_day: Optional[str] = None) -> List[Tuple[str, str]]:
    """``(day, path)`` of one VM's log files, oldest first, within the day range."""
    folder = vm_dir(data_dir, vm)
    prefix = folder + os.sep  # os.path.join's result without its cost, paid per file
    found = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(SUFFIX):
            continue
        day = name[: -len(SUFFIX)]
        if (first_day and day < first_day) or (last_day and day > last_day):
            continue
        found.append((day, prefix + name))
    return found


#: Files parsed per pandas call by read_columns: large enough to amortise the
#: per-call overhead, small enough to bound memory.
_BATCH_BYTES = 64 << 20
#: Bytes that no row the flusher writes holds (VM ids and host names are safe tokens), and
#: that pandas would read differently from the lines: a quote makes it read on to the next
#: quote, across lines ("EOF inside string"; the parsers here are told to take quotes as
#: plain cells), and a carriage return ends a line for it.  A line holding one is malformed.
_FOREIGN = (b'"', b"\r")
#: Integer cells must fit int64 exactly once read as floats (the lenient parser's route).
_INT_LIMIT = float(1 << 62)
#: Strict parses one batch may take while halving it around damaged files (_parse_lines): one
#: damaged file among n costs about 2 log2(n) tries, so a batch of a thousand day files with
#: three damaged ones is still read strictly but for them; damage spread wider is read line by line.
_STRICT_TRIES = 64
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


class NotALogFile(OSError):
    """A day file's name on something that is not a regular file (a folder, a FIFO...)."""


def not_regular(mode: int) -> str:
    """What a day file's name is on, when it is not a regular file, in a few words."""
    for test, name in _KINDS:
        if test(mode):
            return "not a regular file: %s" % name
    return "not a regular file"


def describe_error(path: str, exc: OSError) -> str:
    """An OSError met reading a day file, as the report names it."""
    if isinstance(exc, NotALogFile):
        return str(exc)
    return "unreadable: %s" % _os_problem(path, exc)


def _os_problem(path: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError) and os.path.islink(path):
        return "a symbolic link to a missing file"
    return exc.strerror or str(exc)


def _open_day_file(path: str) -> int:
    """A day file's descriptor, for reading.  O_NONBLOCK and a check before any read: a FIFO
    or a folder in a day file's place raises NotALogFile instead of blocking or reading."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotALogFile(not_regular(mode))
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_day_file(path: str) -> BinaryIO:
    """A day file opened for reading: NotALogFile (an OSError) for a FIFO, a folder or a
    device in its place.  A plain ``open`` of a FIFO waits for a writer for ever, so a reader
    that opens day files by name opens them here."""
    return os.fdopen(_open_day_file(path), "rb")


def _read_body(path: str) -> bytes:
    """A day file's bytes after its header (never waiting on a FIFO: _open_day_file)."""
    fd = _open_day_file(path)
    try:
        parts = []
        while True:  # one read of the whole file, and one more that finds its end
            part = os.read(fd, 1 << 20)
            if not part:
                break
            parts.append(part)
    finally:
        os.close(fd)
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    return _strip_header(data)


def _strip_header(data: bytes) -> bytes:
    if data.startswith(HEADER):
        return data[len(HEADER):]
    return data[len(HEADER_V1):] if data.startswith(HEADER_V1) else data


def _clean_body(body: bytes) -> Tuple[Optional[bytes], int]:
    """``(body, lines)`` when every line of a file may be well-formed, else ``(None, lines)``.

    Counting and finding bytes is C-speed, so the common case (a file the
    flusher wrote whole) costs no Python loop per line; only a file with a
    suspicious line goes through the line-by-line check of _good_lines.
    """
    if not body:
        return body, 0
    lines = body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
    # Lines of too few and too many cells that balance out make pandas fail (wrong number
    # of cells); a repeated header line is not a number, which pandas rejects too; an empty
    # line, which pandas skips, leaves it one row short, which _parse_lines checks: each
    # sends the batch to the line-by-line reading.  A carriage return (a line break to
    # pandas, one more row) could offset an empty line unseen, and a quote in the host or
    # tags cell is text to pandas: both are searched for, so two byte counts and two byte
    # searches are the whole fast check.  Rows
    # have one of two widths (with or without tags): a file of rows without tags has no
    # "=", and in a file of tagged rows a short line can only be offset by one with more
    # cells than any row, which pandas rejects; a file mixing both is read line by line.
    commas = body.count(b",")
    uniform = (commas == lines * _UNTAGGED_COMMAS and b"=" not in body) or commas == lines * _TAGGED_COMMAS
    if uniform and not body.startswith(b"\n") and not any(byte in body for byte in _FOREIGN):
        return (body if body.endswith(b"\n") else body + b"\n"), lines
    return None, lines


def _well_formed(line: bytes) -> bool:
    """A line with a row's shape: the right number of cells, no byte a row never holds."""
    return (line.count(b",") in ROW_COMMAS and line not in (HEADER[:-1], HEADER_V1[:-1])
            and not any(byte in line for byte in _FOREIGN))


def _good_lines(body: bytes) -> Tuple[List[bytes], int]:
    """The lines of a suspicious file that have a row's shape, and the count of the others."""
    good = []
    bad = 0
    for line in body.split(b"\n"):
        if not line:
            continue
        if _well_formed(line):
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


def _parse_lines(data: bytes, owners, columns: List[str], dtypes: Dict[str, str],
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
            return _join_parts([_parse_lines(data[:at], owners[:cut], columns, dtypes, budget),
                                _parse_lines(data[at:], owners[cut:], columns, dtypes, budget)])
    lines = data.split(b"\n")[:-1]
    shaped = np.fromiter(map(_well_formed, lines), bool, len(lines))
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
            parts.append(_parse_lines(text, owners[mine], columns, dtypes, [0]))
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

    def flush() -> None:
        nonlocal size
        if not batch:
            return
        lines = np.repeat(np.array(batch_files, dtype=np.int32), batch_lines)
        frame, owners, valid = _parse_lines(b"".join(batch), lines, wanted, parsed)
        frame["file"] = owners
        ok = frame["ts"].notna().to_numpy() & _in_range(frame, wanted)
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
            raw = _read_body(path)
        except OSError as exc:
            if errors is None:
                raise
            errors[index] = describe_error(path, exc)
            continue
        body, lines = _clean_body(raw)
        if body is None:
            good, dropped = _good_lines(raw)
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
        _read_parts(columnar, wanted, final, frames, bad, errors)
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
                bad: List[int], errors: Optional[Dict[int, str]]) -> None:
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
            frames.append(_held_rows(frame, wanted, bad))


def _held_rows(frame, wanted: List[str], bad: List[int]):
    """``frame`` (rows of columnar files) less the rows the CSV reader would refuse by the
    protocol's ranges and places (``_in_range``, the one rule both readers hold): compaction
    writes only rows it read, but a file written by another hand or version is read here too,
    and a ``vcpus=1.23456`` in it would be sized and billed at that size.  Each row dropped is
    counted as a malformed line of its VM's day (``bad``), as in the CSV."""
    ok = _in_range(frame, wanted)
    if ok.all():
        return frame
    files = frame["file"].to_numpy()
    _count_dropped(bad, files, files[ok])
    return frame[ok]


def _count_dropped(bad: List[int], read, kept) -> None:
    """Add to ``bad`` (per file) the rows read but not kept: ``read`` and ``kept`` hold the
    file index of each row read and of each row kept.  The one count of refused rows for CSV
    batches and columnar files alike, so a row refused either way is a malformed line of its
    file once."""
    import numpy as np

    counts = np.bincount(read, minlength=len(bad)) - np.bincount(kept, minlength=len(bad))
    for index in np.flatnonzero(counts):
        bad[index] += int(counts[index])


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
    if not _well_formed(line):
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


# -- The compacted tiers ---------------------------------------------------------------------------
#
# Past ``--compact-after`` a closed day's CSV files are rewritten as one columnar file for the
# whole fleet, and next to it the report's aggregate of each VM-day (its rollup) is kept:
#
#     DATA_DIR/columnar/<YYYY-MM-DD>.parquet    every VM's rows of the day, sorted by VM then time
#     DATA_DIR/rollups/<YYYY-MM-DD>.parquet     one row per VM: the report's VM-day aggregate
#
# Both are Parquet (columnar files zstd, rollups LZ4_RAW: see _ROLLUP_OPTIONS) written under a
# temporary name and renamed into place, so a reader sees the old file or the new one, never
# half of one.  A file's key-value metadata names the VMs it holds (and, for the columnar tier,
# each VM's rows and the malformed lines its CSV had), so finding what a file holds reads its
# footer, not its data.

COLUMNAR_DIR = "columnar"
ROLLUPS_DIR = "rollups"
TIER_SUFFIX = ".parquet"
#: Temporary files of a write in progress end so; a crash leaves them, the next compaction
#: removes them, and no reader lists them.
PARTIAL_SUFFIX = ".partial"
COLUMNAR_VERSION = 1
#: zstd level of the columnar tier: level 9 took the real trace from 4.7 to 4.2 bytes a record
#: (bench/storage.py) for about 10% more compaction time.
ZSTD_LEVEL = 9
#: How a tier file is compressed unless its writer says otherwise (the columnar tier's codec).
#: The codec is recorded per column chunk, so readers take files of either codec alike.
_ZSTD = {"compression": "zstd", "compression_level": ZSTD_LEVEL}
#: The metadata key holding a tier file's description (JSON).
_META_KEY = b"vmstats"


class Part(NamedTuple):
    """One VM's share of a fleet-day file of a compacted tier (``tier``: COLUMNAR_DIR or
    ROLLUPS_DIR).  The report's units and read_columns take it wherever they take a CSV path."""

    path: str
    vm: str
    tier: str


def source_path(source) -> str:
    """The file a source (a CSV path or a Part) lives in."""
    return source.path if isinstance(source, Part) else source


def tier_path(data_dir: str, tier: str, day: str) -> str:
    """The fleet-day file of ``tier`` for UTC ``day``."""
    return os.path.join(data_dir, tier, day + TIER_SUFFIX)


def tier_days(data_dir: str, tier: str) -> List[Tuple[str, str]]:
    """``(day, path)`` of a tier's fleet-day files, oldest first (none if the tier is empty)."""
    folder = os.path.join(data_dir, tier)
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    return [(name[: -len(TIER_SUFFIX)], os.path.join(folder, name))
            for name in names if name.endswith(TIER_SUFFIX)]


class DamagedTier(ValueError):
    """A file in a tier's folder that cannot be read as vmstats writes them: not a regular
    file, not Parquet, or a description of the wrong shape.  Readers name it and go on."""


def tier_info(path: str) -> dict:
    """A tier file's description: ``{"vms": [...], ...}`` (its footer only is read).

    Columnar files also hold ``rows`` and ``bad`` (per VM, in ``vms`` order);
    rollup files ``version``, the aggregate's version they were written with.
    Raises OSError (or DamagedTier for a file that is not one of ours).
    """
    import pyarrow
    import pyarrow.parquet as pq

    check_tier_file(path)
    try:
        meta = pq.read_metadata(path).metadata or {}
    except pyarrow.ArrowInvalid as exc:
        raise DamagedTier("not a Parquet file: %s" % exc) from None
    return _description(meta)


def check_tier_file(path: str) -> None:
    """DamagedTier unless ``path`` is a regular file: Arrow would wait on a FIFO for ever, and
    a folder, a device or a link to nothing is no file of ours either.  FileNotFoundError
    only when the file itself is gone (retention, since it was listed)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if type(exc) is FileNotFoundError and not os.path.islink(path):
            raise
        raise DamagedTier(_os_problem(path, exc)) from None
    if not stat.S_ISREG(mode):
        raise DamagedTier(not_regular(mode))


def _description(meta: Mapping[bytes, bytes]) -> dict:
    """The footer's description, checked for the shape every reader relies on (a file from
    elsewhere, or damaged, must be named as such, not break a reader with a TypeError)."""
    if _META_KEY not in meta:
        raise DamagedTier("a Parquet file without vmstats' description")
    try:
        info = inputfile.json_loads(meta[_META_KEY])
    except ValueError:
        raise DamagedTier("its vmstats description is not JSON") from None
    vms = info.get("vms") if isinstance(info, dict) else None
    if not isinstance(vms, list) or not all(type(vm) is str for vm in vms):
        raise DamagedTier("its vmstats description does not list VM names")
    for key in ("rows", "bad"):  # columnar files': counts per VM
        counts = info.get(key, [])
        if key in info and (not isinstance(counts, list) or len(counts) != len(vms)
                            or not all(type(n) is int and n >= 0 for n in counts)):
            raise DamagedTier("its vmstats description's %s do not match its VMs" % key)
    if type(info.get("version", 0)) is not int:
        raise DamagedTier("its vmstats description's version is not a number")
    return info


def columnar_schema():
    """The columnar tier's columns: ``vm``, then the CSV's columns with their types."""
    import pyarrow as pa

    kinds = {"int64": pa.int64(), "Int64": pa.int64(), "float64": pa.float64(), "string": pa.string()}
    return pa.schema([("vm", pa.string())] + [(name, kinds[DTYPES[name]]) for name in COLUMNS])


#: How Arrow's file errors give the system's error number: in their text only ("Error writing
#: bytes to file. Detail: [errno 28] No space left on device"), with no file named.
_ARROW_ERRNO = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)


@contextlib.contextmanager
def naming(path: str) -> Iterator[None]:
    """An OSError raised writing ``path`` names the file (``filename``): Arrow's say only "No
    space left on device" (in their text), and an operator of a full disk could not tell which
    file, on which disk, the compaction was writing."""
    try:
        yield
    except OSError as exc:
        if exc.filename:
            raise
        code = exc.errno
        if code is None:
            found = _ARROW_ERRNO.search(str(exc))
            code = int(found.group(1)) if found else None
        text = os.strerror(code) if code is not None else str(exc) or type(exc).__name__
        raise OSError(code or 0, text, path) from exc


class TierWriter:
    """Writes one fleet-day file in row groups, then puts it in place atomically.

    ``add`` takes pyarrow tables (one row group each, groups of VMs in VM
    order); ``close(info)`` ends the file under its temporary name with the
    description in its footer, where it can be read back and checked;
    ``commit`` fsyncs it and renames it into place (then fsyncs the folder):
    until then the old file, if any, is what readers see.  ``abort`` removes
    the temporary file.
    """

    def __init__(self, path: str, schema=None, options: Optional[Dict] = None):
        self.path = path
        self.partial = path + PARTIAL_SUFFIX
        self._schema = schema
        self._options = dict(_ZSTD, **(options or {}))
        self._writer = None
        os.makedirs(os.path.dirname(path), exist_ok=True)

    def _open(self, schema):
        import pyarrow.parquet as pq

        self._writer = pq.ParquetWriter(self.partial, schema, **self._options)

    def add(self, table) -> None:
        with naming(self.partial):
            if self._writer is None:
                self._open(self._schema or table.schema)
            self._writer.write_table(table, row_group_size=max(1, table.num_rows))

    def close(self, info: dict) -> None:
        if self._writer is None and self._schema is None:
            raise ValueError("nothing to write to %s" % self.path)
        with naming(self.partial):
            if self._writer is None:
                self._open(self._schema)
            self._writer.add_key_value_metadata({_META_KEY: json.dumps(info)})
            self._writer.close()

    def commit(self) -> None:
        with naming(self.partial):
            fd = os.open(self.partial, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(self.partial, self.path)
        sync_dir(os.path.dirname(self.path))

    def abort(self) -> None:
        try:
            if self._writer is not None and self._writer.is_open:
                self._writer.close()
        finally:
            remove_quietly(self.partial)


#: VMs per row group of a rollup file (a fleet of up to this many: one group).  Per-column and
#: per-group costs dominate the reading of a file of many small groups: 90 files of 1,000 VMs
#: in groups of 64 took 3.2 s of CPU to read, in one group 0.7 s (bench/storage.py's data).
ROLLUP_GROUP_VMS = 4096
#: Rollup files without dictionary encoding (each VM's cells are unique: a dictionary only
#: costs decoding) and with statistics on ``vm`` only, the one column filtered on: 0.54 s
#: instead of 0.67 s for the same 90 files, 775 instead of 913 bytes a VM-day.
#: Rollups are LZ4_RAW (pyarrow's "lz4"), not zstd: a year-long report decodes a file a day, and
#: the 90 files of 1,000 VMs took 0.51 s of CPU to decode with zstd, 0.32 s with LZ4, for 1.3 KB
#: instead of 0.8 KB a VM-day, still under 2 KB (bench/storage.py --ninety-only).  Rollups
#: written with zstd before read as they are: Parquet records the codec per column chunk.
_ROLLUP_OPTIONS = {"use_dictionary": False, "write_statistics": ["vm"],
                   "compression": "lz4", "compression_level": None}


def rollup_writer(path: str) -> TierWriter:
    """The writer of a rollup file: add tables of up to ROLLUP_GROUP_VMS VMs each."""
    return TierWriter(path, options=_ROLLUP_OPTIONS)


def sync_dir(folder: str) -> None:
    """fsync a folder, so a rename or unlink in it outlives a crash of the machine."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def read_tier(path: str, vms: Optional[Iterable[str]] = None, columns: Optional[List[str]] = None):
    """A tier file's rows (of ``vms`` only, if given) as a pyarrow Table, in file order.

    The files are sorted by VM with one row group per group of VMs, so a
    filter on a few VMs skips the other groups by their statistics.
    """
    import pyarrow.parquet as pq

    wanted = None if columns is None else list(dict.fromkeys(["vm"] + list(columns)))
    if vms is None:  # the whole file: one open, without the dataset layer a filter needs (~4 ms a file)
        with pq.ParquetFile(path) as handle:
            return handle.read(columns=wanted)
    return pq.read_table(path, columns=wanted, filters=[("vm", "in", sorted(set(vms)))])


def read_tier_part(path: str, vms: Iterable[str], columns: Optional[List[str]] = None,
                   threads: bool = True) -> Tuple[dict, "object"]:
    """``(tier_info, rows)`` of a tier file for the VMs ``vms``: the whole file when they are at
    least half of its VMs (cheaper than filtering; the caller picks its rows), else read_tier's
    filtered rows.  One open of the footer either way.

    ``threads=False`` decodes a whole file's columns one after the other, for a caller that
    reads several files at once in threads of its own: Arrow's pool beside them cost ~15%
    more CPU for the same 90 rollup files."""
    import pyarrow
    import pyarrow.parquet as pq

    vms = set(vms)
    check_tier_file(path)
    try:
        with pq.ParquetFile(path) as handle:
            info = _description(handle.metadata.metadata or {})
            if 2 * len(vms) >= len(info["vms"]):
                wanted = None if columns is None else list(dict.fromkeys(["vm"] + list(columns)))
                return info, handle.read(columns=wanted, use_threads=threads)
    except pyarrow.ArrowInvalid as exc:
        raise DamagedTier("not a Parquet file: %s" % exc) from None
    return info, read_tier(path, vms, columns)


def _columnar_frame(parts: List[Tuple[int, "Part"]], wanted: List[str], final: Dict[str, str]):
    """``(frame, bad)`` of columnar Parts (``(index, part)``): rows with ``file`` = index.

    ``bad`` maps each index to the malformed lines its VM's CSV had when it
    was compacted, so the report counts them the same from either tier.
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
        frames.append(frame)
    if not frames:
        return None, bad
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    for name in wanted:
        if str(frame[name].dtype) != final[name]:
            frame[name] = frame[name].astype(final[name])
    return frame, bad


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


#: A sparse column of a rollup file (a value histogram, mostly empty bins) is kept as two binary
#: columns, ``<name>.bins`` (each row's non-empty bin indices, little-endian uint16, ascending) and
#: ``<name>.counts`` (their counts, little-endian uint32): about 8 times fewer values to decode
#: than the dense bins, which is what a long window's report spends its time on.  The dense
#: width is in the field's metadata.
SPARSE_BINS = ".bins"
SPARSE_COUNTS = ".counts"
_SPARSE_WIDTH = b"bins"
_BIN_DTYPE = "<u2"
_COUNT_DTYPE = "<u4"
#: The other 2-d aggregates (per hour, per edge minute) are kept one fixed-size binary cell per
#: row, the row's values as bytes, dtype and width in the field's metadata: read as one buffer,
#: a fifth less CPU for a long window's report than the fixed-size lists older files hold (read
#: all the same), whose nested levels Parquet decodes value by value.
_DENSE_DTYPE = b"dtype"


class SparseRows(NamedTuple):
    """The non-empty cells of a 2-d array (``offsets``: ``len(offsets) - 1`` rows of ``width``), row
    by row: row r's are ``values[r, col[k]] = value[k]`` for k in ``offsets[r]:offsets[r + 1]``."""

    offsets: "object"
    col: "object"
    value: "object"
    width: int


def rollup_table(vms: List[str], labels: List[Tuple[int, str, str]], data: Mapping[str, "object"],
                 sparse: Iterable[str] = ()):
    """A rollup file's table: ``vm``, the last record's labels, one column per aggregate.

    ``data`` holds numpy arrays, one row per VM: 1-d ones become plain
    columns, 2-d ones (per hour, per bin) one fixed-size binary cell per row
    (DENSE_ROWS), so each keeps its own dtype and the file needs no schema
    of its own.  Those named in ``sparse`` (counts, mostly zero) are kept as
    their non-empty cells (SPARSE_BINS, SPARSE_COUNTS).
    """
    import numpy as np
    import pyarrow as pa

    sparse = set(sparse)
    columns = {
        "vm": pa.array(vms, pa.string()),
        "label_ts": pa.array([label[0] for label in labels], pa.int64()),
        "host": pa.array([label[1] for label in labels], pa.string()),
        "tags": pa.array([label[2] for label in labels], pa.string()),
    }
    fields = []
    for name, values in data.items():
        values = np.ascontiguousarray(values)
        if name in sparse:
            fields.extend(_sparse_columns(name, values))
        elif values.ndim == 1:
            columns[name] = pa.array(values)
        else:
            fields.append(_dense_rows(name, values))
    table = pa.table(columns)
    for field, column in fields:
        table = table.append_column(field, column)
    return table


def _dense_rows(name: str, values):
    """The fixed-size binary column (with its field) of a 2-d array: one cell of a row's bytes."""
    import pyarrow as pa

    width = values.shape[1] * values.dtype.itemsize
    meta = {_DENSE_DTYPE: values.dtype.str.encode(), _SPARSE_WIDTH: str(values.shape[1]).encode()}
    column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(values), [None, pa.py_buffer(values)])
    return pa.field(name, pa.binary(width), metadata=meta), column


def _sparse_columns(name: str, values):
    """The two binary columns (with their fields) of a 2-d count array kept sparse."""
    import numpy as np
    import pyarrow as pa

    if values.ndim != 2 or values.shape[1] > np.iinfo(_BIN_DTYPE).max + 1 or values.min(initial=0) < 0:
        raise ValueError("%s cannot be kept sparse" % name)
    row, col = np.nonzero(values)  # row-major: each row's bins ascending
    offsets = np.zeros(len(values) + 1, np.int64)
    np.cumsum(np.bincount(row, minlength=len(values)), out=offsets[1:])
    meta = {_SPARSE_WIDTH: str(values.shape[1]).encode()}
    out = []
    for suffix, cells, dtype in ((SPARSE_BINS, col, _BIN_DTYPE),
                                 (SPARSE_COUNTS, values[row, col], _COUNT_DTYPE)):
        data = np.ascontiguousarray(cells, dtype)
        size = np.dtype(dtype).itemsize
        array = pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(values), [
            None, pa.py_buffer(offsets * size), pa.py_buffer(data.view(np.uint8))])
        out.append((pa.field(name + suffix, pa.large_binary(), metadata=meta), array))
    return out


def rollup_arrays(table) -> Tuple[List[str], Dict[str, "object"]]:
    """``(vms, {aggregate: numpy array or SparseRows})`` of a rollup table (rollup_table's
    inverse): sparse columns come back as their cells, for the reader to place or sum."""
    import numpy as np
    import pyarrow as pa

    vms = table.column("vm").to_pylist()
    out = {}
    for name in table.column_names:
        if name in ("vm", "label_ts", "host", "tags") or name.endswith(SPARSE_COUNTS):
            continue
        if name.endswith(SPARSE_BINS):
            base = name[: -len(SPARSE_BINS)]
            width = int((table.schema.field(name).metadata or {}).get(_SPARSE_WIDTH, -1))
            if width < 1:
                raise ValueError("%s: its bin count is not given" % base)
            offsets, col = _binary_cells(table.column(name), _BIN_DTYPE)
            counts_offsets, value = _binary_cells(table.column(base + SPARSE_COUNTS), _COUNT_DTYPE)
            if not np.array_equal(offsets, counts_offsets) or (len(col) and int(col.max()) >= width):
                raise ValueError("%s: its bins and counts do not match" % base)
            out[base] = SparseRows(offsets, col, value, width)
            continue
        column = _one_array(table.column(name))
        meta = table.schema.field(name).metadata or {}
        if pa.types.is_fixed_size_binary(column.type) and _DENSE_DTYPE in meta:
            out[name] = _dense_cells(column, meta[_DENSE_DTYPE].decode(), int(meta[_SPARSE_WIDTH]))
        elif pa.types.is_fixed_size_list(column.type):
            width = column.type.list_size
            out[name] = _numbers(column.flatten()).reshape(len(column), width)
        else:
            out[name] = _numbers(column)
        if out[name].dtype.kind not in "biuf":
            raise ValueError("%s is not a column of numbers (%s)" % (name, column.type))
    return vms, out


def _one_array(column):
    """A ChunkedArray as one Array: its only chunk as it is (``combine_chunks`` would copy it,
    ~270 MB for a 90-day report's rollups), or the chunks joined."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _numbers(array):
    """A numeric Arrow array as numpy (read-only): a view through DLPack when it has no nulls
    (aggregates never do; NaN is a value), which spares the import of pandas (~0.5 s) that
    pyarrow's ``to_numpy`` makes even for a view."""
    import numpy as np

    if array.null_count == 0:
        try:
            return np.from_dlpack(array)
        except (TypeError, ValueError, BufferError):  # a type DLPack does not carry (bool)
            pass
    return np.asarray(array.to_numpy(zero_copy_only=False))


def _dense_cells(column, dtype: str, width: int):
    """The 2-d array of a fixed-size binary column written by _dense_rows (a view of its buffer)."""
    import numpy as np

    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise ValueError("a column of unknown values (%s)" % dtype) from None
    if column.null_count or column.type.byte_width != width * dtype.itemsize:
        raise ValueError("a %d-byte column of %d %s values" % (column.type.byte_width, width, dtype))
    data = column.buffers()[1]
    return np.frombuffer(data, dtype, len(column) * width, column.offset * column.type.byte_width).reshape(
        len(column), width)


def _binary_cells(column, dtype: str):
    """``(offsets, cells)`` of a binary column of fixed-size cells: row r holds
    ``cells[offsets[r]:offsets[r + 1]]`` (numpy views of the column's buffers, no per-row work)."""
    import numpy as np
    import pyarrow as pa

    column = _one_array(column) if isinstance(column, pa.ChunkedArray) else column
    if column.type != pa.large_binary():
        column = column.cast(pa.large_binary())
    if column.null_count:
        raise ValueError("a sparse column with empty rows")
    size = np.dtype(dtype).itemsize
    _validity, offsets_buffer, data_buffer = column.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int64, len(column) + 1, column.offset * 8)
    first, last = int(offsets[0]), int(offsets[-1])
    if (offsets % size).any():
        raise ValueError("a sparse column of cells not %d bytes long" % size)
    cells = np.frombuffer(data_buffer, np.dtype(dtype), (last - first) // size, first) if last > first \
        else np.zeros(0, dtype)
    return (offsets - first) // size, cells


def day_number(day: str) -> int:
    """The day number (UTC days since 1970-01-01) of a ``YYYY-MM-DD`` name; ValueError otherwise."""
    return (datetime.date.fromisoformat(day) - _EPOCH).days
