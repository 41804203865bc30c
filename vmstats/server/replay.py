"""Start-up replay: journal segments left by a crash are written to the logs before listening.

A segment's units are checked first (journal.check_units): one whose bytes
fail their CRC-32 is refused whole (none of its records written, none of its
control lines trusted), named with its segment and offset, and counted
(``vmstats_journal_damaged_total``, once: a segment kept for the next start
notes it), and the units after it are replayed.  Segments of the version
before checksums are replayed as they are.  This is the one pass at start that
reads and checks the segments: the other readers of their lines (the edge's,
formats/journaling.py, and the signatures seen, auth.py) take each piece as it
goes by, and settle before any segment is retired (a retirement first saves
what they hold elsewhere).

Each segment is parsed by the receive path's own Ingest (so the rows are the
ones that were buffered) without its time window (a record was in the window
when it was accepted; it may be old now), but for a payload that had lines
refused for their time (too far ahead or behind the clock then): it follows
an ``ingest.WINDOW_PREFIX`` line, and is parsed within the stamps it names,
which refuses those lines again and no other.  One bounded chunk at a time, and
written in this process with the pool writer's function (which skips rows
already logged: replay is idempotent).  Lines the parser rejects (a damaged
segment) are counted in the live reject counters (``/metrics``'
``vmstats_rejected_total``) and named, one log line a segment, once: a line
refused when it came (its payload journaled for the lines accepted with it)
was counted then, and the segment says so (journal.REJECTED_PREFIX), as it
does for what a replay counted when the segment stays for the next start.
A segment is deleted once all its rows are written; rows that cannot be
written now (disk still full) go into the live buffer instead and their
segment stays until a flush retires it.
"""

import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from vmstats.server.buffer import Buffer
from vmstats.server.ingest import WINDOW_PREFIX, Ingest
from vmstats.server.journal import (
    Journal,
    Units,
    check_units,
    counted_rejects,
    frame,
    has_units,
    records_of,
    rejected_line,
    unit_chunks,
)
from vmstats.server.metrics import Metrics
from vmstats.server.parse import NO_LIMIT
from vmstats.server.writer import write_share
from vmstats.words import counted

log = logging.getLogger(__name__)

#: The key of a ``#!rejected`` note (journal.REJECTED_PREFIX) counting a segment's damaged
#: units, which a replay refused and counted (``vmstats_journal_damaged_total``).
DAMAGED = "damaged_units"
#: Bytes of a segment parsed and written at once: bounds replay's memory (~3x this); larger
#: chunks mean fewer appends per VM file, which is most of replay's cost.
CHUNK_BYTES = 16 << 20


class Reader(Protocol):
    """Another reader of the leftover segments (the edge's lines, the signatures seen), fed
    by the replay's one pass: each segment is read and its units checked once at start, not
    once per reader."""

    def take(self, data: bytes) -> object:
        """Whole lines of a segment, of its units whose checksum matched, in order."""

    def settle(self) -> object:
        """Every segment was read: called before the replay retires any (what they hold for
        this reader must be in memory before a retirement saves it elsewhere)."""


class _Outcome(NamedTuple):
    """What the replay of one segment leaves to do once every segment is read."""

    number: int
    path: str
    complete: bool
    #: Where a note of what was counted goes, and the note (None: nothing to note).
    note: tuple[int, int, bytes] | None


def chunks(data: bytes, size: int = CHUNK_BYTES):
    """Whole-line pieces of ``data`` of about ``size`` bytes; a torn last line is left out."""
    end = data.rfind(b"\n") + 1
    start = 0
    while start < end:
        cut = data.rfind(b"\n", start, min(start + size, end)) + 1
        if cut <= start:  # one line longer than size
            cut = data.find(b"\n", start + size) + 1
        yield data[start:cut]
        start = cut


def windowed(chunk: bytes, window: tuple[int, int] | None
             ) -> tuple[list[tuple[bytes, tuple[int, int] | None]], tuple[int, int] | None]:
    """``chunk`` (whole lines of a segment) cut into ``(text, window)`` pieces: the lines after
    a WINDOW_PREFIX line up to the next control line (its payload) with the ``(lo, hi)`` stamps
    it names, the others with None; ``window`` is the one a payload cut by the chunk's end was
    under (None: none), given for the next chunk and returned for the one after.

    A window line that cannot be read (damage) leaves its payload without a window, as
    before windows were journaled.
    """
    if window is None and WINDOW_PREFIX not in chunk:
        return [(chunk, None)], None
    pieces: list[tuple[bytes, tuple[int, int] | None]] = []
    start, end = 0, len(chunk)
    while start < end:
        if window is not None:  # a payload under a window: up to the next control line
            if chunk.startswith(b"#!", start):
                stop = start
            else:
                found = chunk.find(b"\n#!", start)
                stop = end if found < 0 else found + 1
            if stop > start:
                pieces.append((chunk[start:stop], window))
            if stop == end:
                return pieces, window
            start, window = stop, None
        if chunk.startswith(WINDOW_PREFIX, start):
            found = start
        else:
            found = chunk.find(b"\n" + WINDOW_PREFIX, start)
            if found < 0:
                pieces.append((chunk[start:], None))
                return pieces, None
            found += 1
            pieces.append((chunk[start:found], None))
        line_end = chunk.find(b"\n", found)
        line_end = end if line_end < 0 else line_end
        window = _bounds(chunk[found + len(WINDOW_PREFIX):line_end])
        start = line_end + 1
    return pieces, window


def _bounds(text: bytes) -> tuple[int, int] | None:
    """The ``(lo, hi)`` of a WINDOW_PREFIX line's text, or None if it is damaged."""
    parts = text.split()
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        return None
    lo, hi = int(parts[0]), int(parts[1])
    return (lo, hi) if lo <= hi else None


def replay(journal: Journal, data_dir: str, live: Buffer, metrics: Metrics, observe=None,
           readers: Sequence[Reader] = ()) -> int:
    """Write every leftover segment's records to the logs; returns the records replayed.

    ``observe`` (the live rules' intake) sees them too: a record acknowledged
    just before a crash still gets the transition it would have caused.  ``readers``
    take each piece of checked bytes as it is replayed, and settle once all are read;
    only then is any segment retired.
    """
    if not journal.leftover:
        for reader in readers:
            reader.settle()
        return 0
    started = time.monotonic()
    scratch = Buffer(Metrics(), NO_LIMIT, NO_LIMIT)
    ingest = Ingest(scratch, scratch.metrics, NO_LIMIT, 0)
    ingest.observe = observe
    replayed = appended = 0
    kept = []
    outcomes: list[_Outcome] = []
    rejects = scratch.metrics.rejects
    for number, path in journal.leftover:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            log.error("cannot read journal segment %s: %s; left in place for the next start, "
                      "never retired by this run (make it readable, then restart)", path, exc)
            journal.unread(number)
            kept.append(number)
            continue
        units = check_units(data) if has_units(path) else None
        # What the segment says was counted, from its units that are whole only.
        before = counted_rejects(data if units is None or not units.damaged
                                 else b"".join(unit_chunks(data, units.good, len(data))))
        damaged = _refuse_damage(path, units, before, metrics)
        complete = True
        window = None
        for chunk in chunks(data) if units is None else unit_chunks(data, units.good, CHUNK_BYTES):
            for reader in readers:
                reader.take(chunk)
            pieces, window = windowed(chunk, window)
            for text, bounds in pieces:
                if bounds is None:
                    ingest.payload(records_of(text))
                else:
                    ingest.file(text, ingest.parser.parse_within(text, *bounds))
            table = scratch.swap()
            replayed += sum(len(rows) for rows in table.values())
            for vm, count, error, retry in write_share(data_dir, list(table.items())):
                appended += count
                if error is None:
                    continue
                if retry:
                    complete = False
                    live.restore(vm, table[vm])
                    log.error("replay: %s of vm %s kept in memory: %s",
                              counted(len(table[vm]), "record"), vm, error)
                else:
                    metrics.drop("unwritable", len(table[vm]))
                    log.error("replay: dropping %s of vm %s: %s", counted(len(table[vm]), "record"), vm,
                              error)
        new = _count_rejects(path, rejects, before, metrics)
        if damaged:
            new[DAMAGED] = damaged
        outcomes.append(_Outcome(number, path, complete,
                                 _counted_note(data, new, units) if new else None))
        if not complete:
            kept.append(number)
    for reader in readers:
        reader.settle()
    for number, path, complete, note in outcomes:
        if complete:
            journal.retire(number, only=True)
        if note is not None and os.path.exists(path):  # replayed again at the next start
            _note_counted(path, *note)
    metrics.replayed_records += replayed
    log.info("replayed %s from %s in %.2fs: %d appended, %d already in the logs%s",
             counted(replayed, "record"), counted(len(journal.leftover), "journal segment"),
             time.monotonic() - started, appended, replayed - appended,
             "; %s kept until their records are written" % counted(len(kept), "segment") if kept else "")
    journal.leftover = []
    return replayed


def _count_rejects(path: str, rejects: Counter[str], before: Counter[str],
                   metrics: Metrics) -> dict[str, int]:
    """The lines of one segment its replay rejected and no earlier count took (``before``,
    the segment's REJECTED_PREFIX lines): into the live counters, and one log line (the
    rejected records themselves were named, rate-limited, by the ingest).  Returns what it
    counted.

    By reason, never below none: a line refused when it came for its time (too old, too far
    ahead) is taken by a replay, which has no time window, so its reason finds fewer rejects.
    """
    found = {reason: count - before[reason] for reason, count in rejects.items()
             if count > before[reason]}
    rejects.clear()
    if not found:
        return found
    for reason, count in found.items():
        metrics.reject(reason, count)
    log.warning("replay: %s of journal segment %s rejected (%s); counted in the rejected totals",
                counted(sum(found.values()), "line"), path,
                ", ".join("%s %d" % item for item in sorted(found.items())))
    return found


def _refuse_damage(path: str, units: Units | None, before: Counter[str],
                   metrics: Metrics) -> int:
    """Name every stretch of a segment whose checksum did not match (refused: none of its
    records is written) and a torn last unit; returns the damaged units counted now, those
    beyond the ones the segment says were counted (a kept segment is replayed again)."""
    if units is None:
        return 0
    for offset, length in units.damaged:
        log.error("replay: journal segment %s: %d bytes at offset %d fail their checksum "
                  "(changed on the disk or in a copy): refused, the rest replayed",
                  path, length, offset)
    if units.torn is not None:
        log.warning("replay: journal segment %s ends in a write cut short at offset %d (the "
                    "process or the machine stopped during it): not replayed", path, units.torn)
    new = max(0, len(units.damaged) - before[DAMAGED])
    metrics.journal_damaged["unit"] += new
    return new


def _counted_note(data: bytes, new: dict[str, int], units: Units | None
                  ) -> tuple[int, int, bytes]:
    """``(size, end, note)``: the note that a segment's ``new`` rejects are counted, so the
    next start's replay does not count them again, and where it goes.  A torn last line or
    unit, which no replay reads (chunks), is cut off first (``end``, before the segment's
    ``size``), so that the note is a line (or a unit) of its own."""
    if units is None:
        return len(data), data.rfind(b"\n") + 1, rejected_line(new.items())
    # a unit of its own, after a line end (damage may have taken the last one)
    end = len(data) if units.torn is None else units.torn
    return len(data), end, (b"\n" if data[end - 1:end] not in (b"", b"\n") else b"") + frame(
        rejected_line(new.items()))


def _note_counted(path: str, size: int, end: int, note: bytes) -> None:
    """Append ``note`` (``_counted_note``) to a segment the replay keeps, at ``end``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            if end < size:
                os.ftruncate(fd, end)
            os.pwrite(fd, note, end)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("replay: cannot note in journal segment %s that its rejected lines are "
                    "counted (%s): the next start counts them again", path, exc)
