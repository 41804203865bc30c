"""What a pool worker runs: append a share of the VMs' rows to their logs.

Kept free of Twisted and of the server's state so a worker process imports
only this and the log layout.  Failures are returned per VM, not raised, so
one bad VM directory never costs the others their write and the server can
retry exactly the VMs that failed.
"""

import marshal
import multiprocessing.context
import os
import signal
import threading

from vmstats import logstore
from vmstats.server import lifeline

#: What this writer process has seen of the day files' ends (logstore.DayFileEnds): a pool
#: worker lives as long as the server, and remembering saves re-reading a whole day file to
#: check for rows already logged.  One per process, never shared: each process is its own copy.
DAY_FILE_ENDS = logstore.DayFileEnds()

#: Writers yield the CPU to the receiving process: a late write costs nothing, a late read of
#: the UDP socket loses datagrams.
WRITER_NICENESS = 10

#: Held while this writer writes a share: a writer whose aggregator died finishes its task
#: before it ends (lifeline.end_with).  One per process, as DAY_FILE_ENDS.
WRITING = threading.Lock()


def init_writer(aggregator: int | None = None) -> None:
    """Pool initializer: the writer runs below the reactor's CPU priority, only the
    aggregator stops it, and it ends when the aggregator (process id ``aggregator``) is gone.

    systemd (KillMode=control-group), ``timeout`` and Ctrl-C signal every process of the
    service at once; a writer that died of it took the final flush's records with it, and
    the pool's queue lock, so the aggregator then hung at exit.  Ignored here, the stop
    signals reach the aggregator alone, which drains through its writers and then ends them.
    """
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)
    try:
        os.nice(WRITER_NICENESS)
    except OSError:
        pass  # not permitted here: writers simply run at normal priority
    if aggregator is not None:
        # Killed with its parent, the forkserver, itself killed with the aggregator; else (the
        # moment before, or no parent-death signal) it finishes the share it writes first.
        lifeline.end_with(aggregator, WRITING)


#: How write_share's error for a VM refused for a symbolic link begins (logstore.LinkRefused).
LINK_REFUSED = "LinkRefused: "


class WriterProcess(multiprocessing.context.ForkServerProcess):
    """A writer's process: it ignores SIGTERM (init_writer), so ending one is SIGKILL.

    The executor ends its workers with ``terminate`` when one of them died; with SIGTERM that
    would wait for ever.  Defined here, not
    beside the pool, because the forkserver unpickles it and should import only this.
    """

    def terminate(self) -> None:
        self.kill()


class WriterContext(multiprocessing.context.ForkServerContext):
    """The forkserver start method, making WriterProcess processes (the writers' executor
    takes its processes from its context)."""

    Process = WriterProcess


class MarshalledShare:
    """A share on its way to a pool worker, pickled as one ``marshal`` blob.

    The pool pickles each task in a thread of the aggregator's process,
    holding the GIL for the whole call, so the reactor waits that long
    between two reads of the parsers' answers: pickling 20,000 held rows
    takes ~6 ms, marshalling them ~1.5 ms (a share is only strings, ints and
    bytes), and the pickle of the blob is a copy.  The worker gets the plain
    list back (``marshal.loads``), ``write_share``'s argument.
    """

    __slots__ = ("share",)

    def __init__(self, share: list[tuple[str, dict[int, bytes]]]):
        self.share = share

    def __reduce__(self):
        return marshal.loads, (marshal.dumps(self.share),)


def write_share(data_dir: str, share: list[tuple[str, dict[int, bytes]]]
                ) -> list[tuple[str, int, str | None, bool]]:
    """``[(vm, rows written, error or None, worth retrying)]`` for each VM of the share.

    ``share`` holds each VM's rows in the held form (buffer.py), which is what
    ``logstore.append_missing`` takes.  Only the rows their day file lacks are
    appended, so a record resent or replayed after a crash is logged once.

    An OSError (full disk, permissions, a file in the way) may go away and is
    retried; a ValueError means the layout refused the VM id, which no retry fixes.
    """
    results = []
    with WRITING:
        for vm, rows in share:
            try:
                written = logstore.append_missing(data_dir, vm, rows, DAY_FILE_ENDS)
                results.append((vm, written, None, False))
            except OSError as exc:
                results.append((vm, 0, "%s: %s" % (type(exc).__name__, exc), True))
            except ValueError as exc:
                results.append((vm, 0, "%s: %s" % (type(exc).__name__, exc), False))
    return results
