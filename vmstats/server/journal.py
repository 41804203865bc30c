"""The write-ahead journal: what the server accepted, on disk before it is acknowledged.

Without it, everything buffered between two flushes dies with the process.
The journal holds the accepted payloads themselves (line protocol, as the
listeners handed them to Ingest after unwrapping signed frames), not the
parsed rows: appending the bytes already in hand is one list append per
payload on the receive path, and the parse on replay is the same
deterministic parse (the decoder never invents a timestamp), so replay
rebuilds exactly the rows that were buffered.

Writes are batched: ``append`` only queues, and one ``os.write`` per reactor
turn (``callLater(0)``) covers every payload of that turn.  A TCP reply waits
for that write (``when_durable``), and for its fsync when the policy is
``batch``.

Segments: ``DIR/<number>.v2.journal``.  Each write is one unit: a header line
``#!crc32 <length> <crc>`` and the ``length`` bytes it covers (``frame``),
which a replay checks before it trusts a byte of them (``check_units``): a
bit flipped on the disk or in a copy costs that unit, refused and counted,
and nothing else.  One CRC-32 a reactor turn is the cheapest unit that
catches it (C speed, ~0.03 us a record); a unit a payload would cost a
header each.  Segments of the version before (``<number>.journal``, told by
their name, which no damage to their bytes can change) have no units and
are replayed as they were, unchecked.  The flusher seals the open segment when
it swaps the buffer (every record in a sealed segment is then in that flush or
an earlier one) and retires sealed segments once a flush wrote everything it
took.  Segments found at start are leftovers of a crash or of a drain that
missed its deadline: ``replay`` writes them to the logs before the server
listens.  The per-VM writer skips rows already in the log (writer.py), so a
replay after any number of crashes adds no duplicate rows.
"""

import logging
import os
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from typing import NamedTuple

from vmstats.server.every import Every
from vmstats.server.metrics import Metrics, RateLimitedLog
from vmstats.server.ownfiles import check_file, usable_directory

log = logging.getLogger(__name__)

FSYNC_POLICIES = ("off", "interval", "batch")
SUFFIX = ".v2.journal"
#: The names it writes, and those of the version before checksums (``<number>.journal``).
_SEGMENT = re.compile(r"(\d{10})(\.v2)?\.journal\Z", re.ASCII)
#: A unit's header: the bytes after it that it covers, and their CRC-32 (zlib's), in hex.
UNIT_PREFIX = b"#!crc32 "
_UNIT = re.compile(rb"#!crc32 (\d{1,10}) ([0-9a-f]{8})\n")
_NEXT_UNIT = b"\n" + UNIT_PREFIX
#: A segment is sealed at each flush anyway; this only bounds one segment's size (and what
#: replay reads at once) when flushes are far apart or keep failing.
SEGMENT_BYTES = 64 << 20
#: Control lines (``#!seen``, auth.py; ``#!edge``, formats/journaling.py): notes for other
#: readers, not records; a payload's last line may lack its newline.
_CONTROL_LINE = re.compile(rb"^#![^\n]*(?:\n|\Z)", re.MULTILINE)
#: Segment files hold what senders sent (and the edge's HMAC key sits beside them): owner only.
SEGMENT_MODE = 0o600
#: A control line saying how many of the segment's lines were counted as rejected already, by
#: reason (``#!rejected non_numeric=1 syntax=2``): the lines a payload had refused, after the
#: payload (its accepted lines are journaled with them), or those a replay rejected, appended
#: by the replay to a segment it keeps.  A later replay counts only the rejects beyond them,
#: so a refused line counts once however often its segment is replayed.
REJECTED_PREFIX = b"#!rejected "


def segment_name(number: int) -> str:
    return "%010d%s" % (number, SUFFIX)


def has_units(path: str) -> bool:
    """Is the segment at ``path`` written in checksummed units (its name says so)?"""
    return path.endswith(SUFFIX)


def frame(data: bytes) -> bytes:
    """``data`` (whole lines) as one unit: its header, then itself."""
    return b"%s%d %08x\n" % (UNIT_PREFIX, len(data), zlib.crc32(data)) + data


class Units(NamedTuple):
    """What ``check_units`` found in a segment."""

    #: ``(start, end)`` of each unit's bytes whose checksum matched, in order.
    good: list[tuple[int, int]]
    #: ``(offset, length)`` of each stretch refused: a unit whose checksum did not match, or a
    #: header that cannot be read, up to the next header.
    damaged: list[tuple[int, int]]
    #: Offset of a last unit shorter than its header says (the process or the machine stopped
    #: during its write: no header follows it), or None.
    torn: int | None


def check_units(data: bytes) -> Units:
    """The units of a segment's ``data`` checked against their CRC-32.

    A damaged stretch ends at the next header: every ``#!`` line in a segment is the
    server's own (``Journal.append_records``), and none of them begins like a header, so a
    header found is a unit's, whatever the damage before it.  The same header tells a tear
    from damage: a unit that runs past the end of the segment is the last write cut short
    only if no header follows its start; one followed by a header had its length changed
    (as one whose length is short of its bytes fails its checksum), so it is damage, and
    the units after it are read, not left out with it.
    """
    good: list[tuple[int, int]] = []
    damaged: list[tuple[int, int]] = []
    view = memoryview(data)
    size = len(data)
    at = 0
    while at < size:
        header = _UNIT.match(data, at)
        if header is not None:
            start = header.end()
            end = start + int(header.group(1))
            if end <= size and zlib.crc32(view[start:end]) == int(header.group(2), 16):
                good.append((start, end))
                at = end
                continue
        found = data.find(_NEXT_UNIT, at)
        if found < 0 and (end > size if header is not None else data.find(b"\n", at) < 0):
            return Units(good, damaged, at)  # the last write, cut short (its header too)
        stop = size if found < 0 else found + 1
        damaged.append((at, stop - at))
        at = stop
    return Units(good, damaged, None)


def unit_chunks(data: bytes, good: list[tuple[int, int]], size: int):
    """The bytes of the ``good`` units of ``data``, without their headers, in pieces of whole
    units of about ``size`` bytes."""
    pieces: list[bytes] = []
    held = 0
    for start, end in good:
        pieces.append(data[start:end])
        held += end - start
        if held >= size:
            yield b"".join(pieces)
            pieces, held = [], 0
    if pieces:
        yield b"".join(pieces)


def records_of(data: bytes) -> bytes:
    """Text without its control lines: a segment's records, so the parser's column path takes
    them whole, or a payload's, as the journal keeps them (``Journal.append_records``)."""
    # A one-byte search is a memchr; a search for "#!" is ~150 times slower on a payload of
    # records, which hold no '#' at all.
    if b"#" in data and (data[:2] == b"#!" or data.find(b"\n#!") >= 0):
        return _CONTROL_LINE.sub(b"", data)
    return data


def rejected_line(counts: Iterable[tuple[str, int]]) -> bytes:
    """The REJECTED_PREFIX line for ``(reason, count)`` pairs (a reason may come twice)."""
    total: Counter[str] = Counter()
    for reason, count in counts:
        total[reason] += count
    return REJECTED_PREFIX + b" ".join(b"%s=%d" % (reason.encode("ascii"), count)
                                       for reason, count in sorted(total.items()) if count) + b"\n"


def counted_rejects(data: bytes) -> Counter[str]:
    """The rejects a segment's whole REJECTED_PREFIX lines say were counted, by reason (a torn
    or damaged one says nothing)."""
    counted: Counter[str] = Counter()
    if REJECTED_PREFIX not in data:
        return counted
    for found in re.finditer(rb"^" + re.escape(REJECTED_PREFIX) + rb"([^\n]*)\n", data, re.MULTILINE):
        for item in found.group(1).split():
            reason, _sep, count = item.partition(b"=")
            if count.isdigit() and reason:
                counted[reason.decode("ascii", "replace")] += int(count)
    return counted


def list_segments(directory: str) -> list[tuple[int, str]]:
    """``(number, path)`` of the segments in ``directory``, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = _SEGMENT.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(directory, name)))
    return sorted(found)


def read_segments(segments: list[tuple[int, str]], purpose: str):
    """``(number, bytes)`` of each segment that can be read, only its units whose checksum
    matched (the replay names and counts the others); the segments that cannot be read are
    logged and skipped (they stay for the replay, which reports them again)."""
    for number, path in segments:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            log.error("cannot read journal segment %s for %s: %s", path, purpose, exc)
            continue
        if has_units(path):
            data = b"".join(unit_chunks(data, check_units(data).good, len(data)))
        yield number, data


class Journal:
    """Append-only segments of accepted payloads, written once per reactor turn.

    Failure to write (disk full, permissions) never stops the receive path:
    the records stay in memory, the write error is counted and logged once
    per period, TCP batches that depended on it are refused with ``busy`` so
    their senders keep them, and the next write starts a fresh segment (so a
    torn write never runs into the next good one).
    """

    def __init__(self, reactor, directory: str, metrics: Metrics, fsync: str = "interval",
                 fsync_interval: float = 1.0, segment_bytes: int = SEGMENT_BYTES):
        if fsync not in FSYNC_POLICIES:
            raise ValueError("fsync policy must be one of %s" % ", ".join(FSYNC_POLICIES))
        self.reactor = reactor
        self.directory = directory
        self.metrics = metrics
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.segment_bytes = segment_bytes
        self.pending: list[bytes] = []
        self.waiters: list[Callable[[], None]] = []
        self.writes = 0  # write() calls that had something to write
        self.last_failed = 0  # the number of the last write that failed (or was not synced)
        self.scheduled = False
        self.fd: int | None = None
        self.number = 0  # the open (or next) segment
        self.size = 0
        self.unsynced = False
        self.sealed: list[tuple[int, str]] = []
        self.leftover: list[tuple[int, str]] = []
        #: Leftover segments replay could not read: their records are in no table, so no flush
        #: of this run may retire them.
        self.unreadable: list[tuple[int, str]] = []
        self.failing = False
        #: Called before segments are deleted: what must outlive them is saved first (auth.py's
        #: signature marks, the edge's open minutes).  A hook that returns False keeps them.
        self.before_retire: list[Callable[[], object]] = []
        #: Called when the directory was gone and is made again: what lived beside the segments
        #: (the edge's key, the signature marks, the newest checkpoint) went with it.
        self.after_remade: list[Callable[[], object]] = []
        self._syncer: Every | None = None
        self._trouble = RateLimitedLog(log, "journal error", burst=1, period=10.0)

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self) -> list[tuple[int, str]]:
        """Create the directory; returns the leftover segments (to replay), oldest first.

        A segment's name on something else than a file (a folder, a FIFO, a link to nothing)
        stops the start: what it should hold was acknowledged, so it can be neither skipped
        (it would be retired, a link deleted, at the first flush) nor opened (a FIFO waits).
        """
        usable_directory(self.directory, "journal directory")
        self.leftover = list_segments(self.directory)
        for _number, path in self.leftover:
            check_file(path, "journal segment")
        self.sealed = list(self.leftover)
        self.number = self.leftover[-1][0] + 1 if self.leftover else 1
        if self.fsync == "interval":
            self._syncer = Every(self.reactor, self.fsync_interval, self.sync,
                                 "the journal's periodic fsync")
            self._syncer.start()
        return self.leftover

    def close(self) -> None:
        """Write what is queued and close the open segment (it stays until a flush retires it)."""
        if self._syncer is not None:
            self._syncer.stop()
        self.write()
        if self.fsync != "off":
            self.sync()
        self._close_segment()

    # -- receive path ----------------------------------------------------------------------------
    def append_records(self, data: bytes) -> None:
        """Queue an accepted payload of records for this turn's write, without its control lines.

        A payload's ``#!`` lines are comments to the parser, but in a segment a
        ``#!seen`` line raises a key's replay floor after a restart: a key
        holder could sign one naming another key and a time far ahead, and
        lock that key out.  So every ``#!`` line in a segment is the server's
        own (auth.py, formats/journaling.py).
        """
        data = records_of(data)
        if data:
            self.append(data)

    def append(self, data: bytes) -> None:
        """Queue one accepted payload (or the server's own control lines) for this turn's write."""
        self.pending.append(data if data[-1:] == b"\n" else data + b"\n")
        if not self.scheduled:
            self.scheduled = True
            self.reactor.callLater(0, self.write)

    def next_write(self) -> int:
        """The number of the write that will hold what is appended now."""
        return self.writes + 1

    def when_durable(self, callback: Callable[[bool], None], since: int | None) -> None:
        """Call ``callback(ok)`` once everything appended so far is written (and synced if the
        policy is ``batch``).  ``ok`` is False if any write from number ``since`` on failed
        (``since`` None: nothing of the caller's was appended, so nothing could fail); a TCP
        batch spread over several reactor turns is in several writes.  Callbacks run in the
        order they were registered."""
        def fire() -> None:
            callback(since is None or self.last_failed < since)

        if self.pending or self.waiters:
            self.waiters.append(fire)
        else:
            fire()

    def write(self) -> None:
        """Write everything queued with one system call (the reactor turn's batch)."""
        self.scheduled = False
        if self.pending:
            data = frame(b"".join(self.pending))
            self.pending = []
            self.writes += 1
            if self._write(data) and self.fsync == "batch":
                self.sync()
        waiters, self.waiters = self.waiters, []
        for fire in waiters:
            fire()

    def write_through(self) -> bool:
        """Write what is queued now, synced unless the policy is ``off``; True once it is there.

        For what must be on disk before something else goes (a checkpoint before the segments
        it replaces are deleted), outside the once-per-turn rhythm.
        """
        since = self.next_write()
        self.write()
        if self.last_failed >= since:
            return False
        return self.fsync == "off" or self.sync()

    def _write(self, data: bytes) -> bool:
        written = 0
        try:
            if self.fd is None:
                self.fd = self._open_segment()
                self.size = 0
            view = memoryview(data)
            while written < len(data):
                written += os.write(self.fd, view[written:])
        except OSError as exc:
            self.size += written
            self._failed("writing the journal", exc)
            if written:
                self._close_segment()  # a torn write ends its segment: the next one starts clean
            return False
        self.size += written
        self.unsynced = True
        self.metrics.journal_bytes += len(data)
        if self.failing:
            self.failing = False
            log.warning("journal writes work again (%s)", self.directory)
        if self.size >= self.segment_bytes:
            self._close_segment()
        return True

    def _open_segment(self) -> int:
        """The next segment, opened for appending.  A journal directory removed under the
        running server (a clean-up taking it for scratch space) is made again, as at start:
        without it every TCP batch would be refused until someone noticed.  Only the last
        level: a data dir gone whole (a disk not mounted) is not made again on another disk."""
        path = os.path.join(self.directory, segment_name(self.number))
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, SEGMENT_MODE)
        except FileNotFoundError:
            os.mkdir(self.directory)
            log.warning("journal: the directory %s was gone: made again", self.directory)
            for hook in self.after_remade:
                hook()
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, SEGMENT_MODE)

    def sync(self) -> bool:
        """fsync the open segment if anything was written since the last one."""
        if self.fd is None or not self.unsynced:
            return not self.failing
        try:
            os.fsync(self.fd)
        except OSError as exc:
            self._failed("syncing the journal", exc)
            self._close_segment()
            return False
        self.unsynced = False
        self.metrics.journal_syncs += 1
        return True

    def _failed(self, what: str, exc: OSError) -> None:
        self.failing = True
        self.last_failed = self.writes
        self.metrics.journal_errors += 1
        self._trouble.emit("%s in %s failed (records kept in memory; TCP batches refused "
                           "until it works): %s", what, self.directory, exc)

    def _close_segment(self) -> None:
        if self.fd is None:
            return
        try:
            os.close(self.fd)
        except OSError as exc:
            log.warning("closing journal segment %d: %s", self.number, exc)
        self.fd = None
        self.sealed.append((self.number, os.path.join(self.directory, segment_name(self.number))))
        self.number += 1
        self.size = 0
        self.unsynced = False

    # -- flusher ---------------------------------------------------------------------------------
    def seal(self) -> int:
        """End the open segment; returns the newest sealed segment number.

        Called as the buffer is swapped: every record in a segment up to the
        returned number is in the swapped table or was written before.
        """
        self.write()
        if self.fsync != "off":
            self.sync()
        self._close_segment()
        return self.number - 1

    def retire(self, upto: int, only: bool = False) -> int:
        """Delete sealed segments up to ``upto`` (or ``only`` that one): their records are logged."""
        saved = [hook() for hook in self.before_retire]
        if any(result is False for result in saved):
            return 0  # what the segments hold could not be saved elsewhere: they stay
        keep, retired = [], 0
        for number, path in self.sealed:
            if number > upto or (only and number != upto):
                keep.append((number, path))
                continue
            try:
                os.unlink(path)
                retired += 1
            except FileNotFoundError:
                retired += 1
            except OSError as exc:
                keep.append((number, path))
                log.warning("cannot retire journal segment %s: %s", path, exc)
        self.sealed = keep
        self.metrics.journal_retired += retired
        return retired

    def unread(self, number: int) -> None:
        """Keep leftover segment ``number``, which replay could not read (permissions, EIO),
        out of every retirement of this run: a flush that wrote all it took says nothing of
        the records in it.  The next start tries it again."""
        self.unreadable += [entry for entry in self.sealed if entry[0] == number]
        self.sealed = [entry for entry in self.sealed if entry[0] != number]

    def segments(self) -> int:
        """Segments on disk (sealed, unreadable and the open one)."""
        return len(self.sealed) + len(self.unreadable) + (self.fd is not None)
