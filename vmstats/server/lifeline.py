"""A child's tie to the aggregator: the child ends when the aggregator does, by any means.

Killed by SIGKILL, the OOM killer or a crash in C, the aggregator leaves its children behind
unless something ends them.  An executor's worker (the writers', the other formats' decoders')
waits for its next task on a queue whose write end it holds itself (a ``multiprocessing.Queue``
takes both ends into every process), so the aggregator's death never shows it an end of file;
the scheduled compaction pass and the capacity summary read nothing from it at all.  Each crash
and restart leaked more of them, wherever no supervisor kills the whole process group.

Whatever a child does to notice the death itself (an end of file, a thread watching the
aggregator's pid) needs the child to run: one stopped at that moment (``kill -STOP``, a
debugger, a frozen cgroup) lingered for good, and a stopped process does not even act on
SIGTERM.  So each long-lived child asks the kernel for a parent-death signal
(``PR_SET_PDEATHSIG``, Linux) of SIGKILL, which ends even a stopped process
(:func:`killed_with_parent`; in a cgroup frozen by the v1 freezer it waits for the thaw, the v2
freezer lets it through).  Its pitfalls, and how they are met here:

- The signal comes when the *thread* that started the child ends, not the process.  Every child
  of the aggregator is started from the reactor's thread, the main one, which lives as long as
  the process (Twisted's ``spawnProcess``, and the executors' ``submit``, which starts their
  processes in the calling thread).
- A writer's parent is the writers' forkserver, not the aggregator: the forkserver is killed
  with the aggregator (forkserver.py) and each writer with the forkserver, so a writer is
  killed in the middle of the share it writes, if any (its records are still in the journal,
  and the next append ends a torn line: docs/STORAGE.md).
- The setting is not inherited by a forked child, and the exec of a set-user-ID program clears
  it; neither Twisted nor multiprocessing runs anything of ours between fork and exec, so each
  child makes the call itself, once it runs.  The aggregator may die before that: a child then
  ends as it did before the call was made (its end of file, or the thread below).

The thread that watches the aggregator's pid (:func:`end_with`) stays: it covers the moment
before the call, and systems without the call.  Multiprocessing's resource tracker is left to
end as it does, at the end of the pipe every process of the family holds: killed with the
aggregator it could not remove the named semaphores the killed processes leave in /dev/shm
(stopped then, it ends once continued).
Standard library only: the forkserver preloads this (through ``writer``).
"""

import ctypes
import os
import select
import signal
import sys
import threading
import time
from contextlib import AbstractContextManager, nullcontext

#: prctl(2)'s option that sets the signal this process gets when its parent (thread) ends.
PR_SET_PDEATHSIG = 1


def killed_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent ends, even while it is stopped.

    Nothing is done where the call does not exist (not Linux) or is refused (a seccomp
    filter): what the child does to notice the end itself remains."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def end_with(aggregator: int, held: AbstractContextManager | None = None) -> None:
    """End this process once process ``aggregator`` has ended, killed by the kernel at once
    (:func:`killed_with_parent`, the aggregator or the forkserver being its parent), else
    (exit status 0) after ``held`` is free (a task that must not be cut short holds it);
    returns at once."""
    killed_with_parent()
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
