"""Ending a process pool (``ProcessPoolExecutor``) that must not be waited for.

The writers' and the decoders' pools are both executors: a worker that dies breaks its
executor, which fails every task it held, and the server starts a new one.  A broken or stuck
executor is ended here, from the reactor, without waiting on it.

An executor ended so still has its manager thread, which reaps the processes and then closes
its wake-up pipe.  Python 3.11's exit wakes every such thread still running through that pipe
without the lock its closing takes (CPython gh-125451, fixed in 3.12.8 and 3.13.1 only): a
thread closing just then made the server print ``OSError: [Errno 9] Bad file descriptor`` and a
traceback as it stopped.  So each ending hands back the thread, and the owner joins them all
(:func:`join`) once the reactor has stopped, before the interpreter's exit.
"""

import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Iterable, Optional

#: Seconds the threads of ended executors get, together, to finish at the server's stop.  A
#: thread reaps processes already told to go (or killed): far less than this on any host.
JOIN_TIMEOUT = 30.0


def end(executor: ProcessPoolExecutor, cancel: bool = False) -> Optional[threading.Thread]:
    """Shut ``executor`` down without waiting; returns its manager thread (None if it never
    started one), for :func:`join`."""
    thread = getattr(executor, "_executor_manager_thread", None)
    executor.shutdown(wait=False, cancel_futures=cancel)
    return thread


def kill(executor: ProcessPoolExecutor) -> Optional[threading.Thread]:
    """:func:`end` ``executor`` and kill its processes (SIGKILL: a stopped process ignores
    SIGTERM until it runs again, and the writers ignore it for good)."""
    processes = list((getattr(executor, "_processes", None) or {}).values())
    thread = end(executor, cancel=True)
    for process in processes:
        if process.is_alive():
            process.kill()
    return thread


def join(threads: Iterable[Optional[threading.Thread]], timeout: float = JOIN_TIMEOUT) -> None:
    """Wait for the manager threads of ended executors (from :func:`end` and :func:`kill`),
    within ``timeout`` seconds in all; call it only once the reactor has stopped."""
    last = time.monotonic() + timeout
    for thread in threads:
        if thread is not None:
            thread.join(max(0.0, last - time.monotonic()))
