"""What a pool worker runs: append a share of the VMs' rows to their logs.

Kept free of Twisted and of the server's state so a worker process imports
only this and the log layout.  Failures are returned per VM, not raised, so
one bad VM directory never costs the others their write and the server can
retry exactly the VMs that failed.
"""

import os

from vmstats import logstore
from vmstats.server.rows import log_rows

#: Writers yield the CPU to the receiving process: a late write costs nothing, a late read of
#: the UDP socket loses datagrams.
WRITER_NICENESS = 10


def lower_priority() -> None:
    """Pool initializer: run the writer at a lower CPU priority than the reactor."""
    try:
        os.nice(WRITER_NICENESS)
    except OSError:
        pass  # not permitted here: writers simply run at normal priority


def unlogged(data_dir: str, vm: str, rows: dict[int, bytes]) -> dict[int, bytes]:
    """The rows not already in their day file, byte for byte (``logstore.missing_rows``).

    A record can reach the writer twice: a TCP batch resent because its ack
    was lost when the server died after logging it, or a journal segment
    replayed after a crash that came after its flush.  Appending only what
    the day file lacks makes both harmless.  A corrected record (same
    timestamp, other values) is still appended, and the last row for a
    timestamp still wins.

    It usually costs reading nothing but the file's last bytes: this writer
    process remembers the end of each day file it wrote or read, and new rows
    newer than everything logged cannot be there already.  A file it has not
    seen, or rows as old as some logged, cost one read of the whole day file
    (at most 1,440 rows, from the page cache), as this check always did.

    A day file that does not end with a newline was torn by a writer killed
    mid-write (the pool is terminated when a writer dies or the drain
    deadline passes): it gets its newline first, so the torn piece stays one
    bad line that readers skip instead of swallowing the next row appended.
    """
    return logstore.missing_rows(data_dir, vm, rows)


def write_share(data_dir: str, share: list[tuple[str, dict[int, bytes]]]
                ) -> list[tuple[str, int, str | None, bool]]:
    """``[(vm, rows written, error or None, worth retrying)]`` for each VM of the share.

    ``share`` holds each VM's rows in the held form (rows.py).

    An OSError (full disk, permissions, a file in the way) may go away and is
    retried; a ValueError means the layout refused the VM id, which no retry fixes.
    """
    results = []
    for vm, rows in share:
        try:
            fresh = unlogged(data_dir, vm, log_rows(rows))
            results.append((vm, logstore.append_rows(data_dir, vm, fresh) if fresh else 0,
                            None, False))
        except OSError as exc:
            results.append((vm, 0, "%s: %s" % (type(exc).__name__, exc), True))
        except ValueError as exc:
            results.append((vm, 0, "%s: %s" % (type(exc).__name__, exc), False))
    return results
