"""Start-up replay: journal segments left by a crash are written to the logs before listening.

Each segment is parsed by the receive path's own Ingest (so the rows are the
ones that were buffered) without its time window (a record was in the window
when it was accepted; it may be old now), one bounded chunk at a time, and
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

from vmstats.server.buffer import Buffer
from vmstats.server.ingest import Ingest
from vmstats.server.journal import Journal, counted_rejects, records_of, rejected_line
from vmstats.server.metrics import Metrics
from vmstats.server.writer import write_share
from vmstats.words import counted

log = logging.getLogger(__name__)

#: Bytes of a segment parsed and written at once: bounds replay's memory (~3x this); larger
#: chunks mean fewer appends per VM file, which is most of replay's cost.
CHUNK_BYTES = 16 << 20
_NO_LIMIT = 1 << 40


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


def replay(journal: Journal, data_dir: str, live: Buffer, metrics: Metrics, observe=None) -> int:
    """Write every leftover segment's records to the logs; returns the records replayed.

    ``observe`` (the live rules' intake) sees them too: a record acknowledged
    just before a crash still gets the transition it would have caused.
    """
    if not journal.leftover:
        return 0
    started = time.monotonic()
    scratch = Buffer(Metrics(), _NO_LIMIT, _NO_LIMIT)
    ingest = Ingest(scratch, scratch.metrics, _NO_LIMIT, 0)
    ingest.observe = observe
    replayed = appended = 0
    kept = []
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
        complete = True
        for chunk in chunks(data):
            ingest.payload(records_of(chunk))
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
        new = _count_rejects(path, rejects, counted_rejects(data), metrics)
        if complete:
            journal.retire(number, only=True)
        else:
            kept.append(number)
        if new and os.path.exists(path):  # replayed again at the next start: say what counted
            _note_counted(path, data, new)
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


def _note_counted(path: str, data: bytes, new: dict[str, int]) -> None:
    """Append to a segment the replay keeps that its ``new`` rejects are counted, so the next
    start's replay does not count them again.  A torn last line, which no replay reads
    (chunks), is cut off first, so that the note is a line of its own."""
    end = data.rfind(b"\n") + 1
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            if end < len(data):
                os.ftruncate(fd, end)
            os.pwrite(fd, rejected_line(new.items()), end)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("replay: cannot note in journal segment %s that its rejected lines are "
                    "counted (%s): the next start counts them again", path, exc)
