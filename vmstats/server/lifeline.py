"""A pool worker's tie to the aggregator: the worker ends when the aggregator does, by any means.

An executor's worker (the writers', the other formats' decoders') waits for its next task on a
queue whose write end it holds itself (a ``multiprocessing.Queue`` takes both ends into every
process), so the aggregator's death never shows it an end of file.  Killed by SIGKILL, the OOM
killer or a crash in C, the aggregator left its workers blocked for good, and with them the
multiprocessing resource tracker, which waits for the end of a pipe they hold.  Each crash and
restart leaked more of them, wherever no supervisor kills the whole process group.  (The
writers' forkserver ends by itself: it watches a pipe only the aggregator holds; so do the parser
processes, whose input only the aggregator writes.)  The scheduled compaction pass, a
process of its own, watches the same way (``vmstats compact --end-with``).

A parent-death signal (``PR_SET_PDEATHSIG``) does not fit: a writer's parent is the forkserver,
and the signal follows the thread that started the process, which an executor does not promise
to be the reactor's.  So a thread of the worker watches the aggregator's pid.
Standard library only: the forkserver preloads this (through ``writer``).
"""

import os
import select
import threading
import time
from contextlib import AbstractContextManager, nullcontext


def end_with(aggregator: int, held: AbstractContextManager | None = None) -> None:
    """End this process (exit status 0) once process ``aggregator`` has ended, after ``held``
    is free (a task that must not be cut short holds it); returns at once."""
    threading.Thread(target=_watch, args=(aggregator, held), name="end with the aggregator",
                     daemon=True).start()


def _watch(aggregator: int, held: AbstractContextManager | None) -> None:
    """A pidfd tells the exit at once; where there is none (Linux before 5.3), the process is
    looked for every second.  An aggregator already gone has no pidfd either: ended at once."""
    try:
        watch = os.pidfd_open(aggregator)
    except (AttributeError, OSError):
        while _running(aggregator):
            time.sleep(1.0)
    else:
        select.select([watch], [], [])
    with held or nullcontext():
        os._exit(0)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a process of another user: not expected of the aggregator, so let it be
    return True
