"""Appending rows to the day files: whole batches, each row once, none of a failed write.

The flusher appends each VM's rows with append_missing; a process remembers
the end of each day file it wrote (DayFileEnds), so the check for rows
already logged usually reads only the file's last bytes.
"""

import errno
import os
import stat
from typing import Dict, List, Mapping, Optional, Tuple

from vmstats.logstore.layout import (
    DAY_SECONDS,
    day_file_in,
    day_name,
    refuse_link,
    split_days,
    vm_dir,
)
from vmstats.logstore.rows import HEADER, strip_header

#: A row as written: its timestamp, then its tail (format_tail), then the newline.
_ROW = b"%d,%s\n"
#: Flags of the one open that both checks a day file for rows already logged and appends to
#: it.  O_NONBLOCK so that a FIFO in the way does not block the open (it is then seen not to
#: be a regular file, see _append_blind); a regular file's reads and writes ignore it.
#: O_NOFOLLOW so that a day file that is a symbolic link is seen (ELOOP) and judged before it is
#: written through (_open_day), at no cost to the usual open.
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW
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
    # A VM folder that is a symbolic link out of the data dir (or to another VM's folder) is
    # not written through: LinkRefused, an OSError, so the VM's rows are kept and retried.  One
    # lstat per VM and flush; a day file that is a link is caught by its open (_open_day).
    refuse_link(data_dir, folder)
    if not rows:
        os.makedirs(folder, exist_ok=True)
        return 0
    ends = ends if ends is not None else DayFileEnds()
    written = 0
    for day, stamps in split_days(rows):
        written += _append_day(data_dir, folder, day_file_in(folder, day_name(day)), day, stamps,
                               rows, ends)
    return written


def _open_day(data_dir: str, folder: str, path: str) -> int:
    """The day file ``path`` opened to check and append, made (with its folder) if missing.

    The open follows no symbolic link in the file's own place: one is judged (link_problem)
    and opened through only when it leads elsewhere inside the data dir.
    """
    try:
        try:
            return os.open(path, _OPEN_FLAGS, 0o666)
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
            return os.open(path, _OPEN_FLAGS, 0o666)
    except OSError as exc:
        if exc.errno != errno.ELOOP or not os.path.islink(path):
            raise
    refuse_link(data_dir, path)
    return os.open(path, _OPEN_FLAGS & ~os.O_NOFOLLOW, 0o666)


def _append_day(data_dir: str, folder: str, path: str, day: int, stamps: List[int],
                rows: Mapping[int, bytes], ends: DayFileEnds) -> int:
    """Append the rows at ``stamps`` (sorted, all of UTC day ``day``) that ``path`` lacks.

    The directory is made only when the open says it is missing (a new VM, or
    its folder deleted since, e.g. by retention): an open that succeeds proves
    it exists, which costs nothing, where ``os.makedirs`` costs three system
    calls.  Five system calls in all for the usual flush (open, fstat, a read
    of the remembered tail, write, close), besides append_missing's lstat of the folder.
    """
    fd = _open_day(data_dir, folder, path)
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
        new = strip_header(data)
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
