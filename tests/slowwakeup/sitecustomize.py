"""Loaded by a test's server through PYTHONPATH: makes a race of Python 3.11's exit certain.

At exit, ``concurrent.futures`` wakes the manager thread of every process pool still running
through its pipe, without the lock the thread takes to close that pipe (CPython gh-125451).  A
thread closing it just then, as one still reaping its processes on a loaded host does, made the
server print ``OSError: [Errno 9] Bad file descriptor`` and a traceback; the window is a few
instructions wide.  With ``VMSTATS_TEST_SLOW_WAKEUP`` set (seconds), a pool's thread spends that
long reaping before it closes the pipe, and each of the exit's wake-ups waits twice as long
between its check that the pipe is open and its write: a thread not joined before the exit
closes the pipe under the wake-up every time.  Without the variable nothing is changed.
"""

import os

if os.environ.get("VMSTATS_TEST_SLOW_WAKEUP"):
    import time
    from concurrent.futures import process

    _pause = float(os.environ["VMSTATS_TEST_SLOW_WAKEUP"])
    _reap = process._ExecutorManagerThread.join_executor_internals

    def _slow_reap(self) -> None:
        time.sleep(_pause)
        _reap(self)

    def _slow_wakeup(self) -> None:
        if not self._closed:
            if process._global_shutdown:  # the exit's wake-ups only, not each task's
                time.sleep(2 * _pause)
            self._writer.send_bytes(b"")

    process._ExecutorManagerThread.join_executor_internals = _slow_reap
    process._ThreadWakeup.wakeup = _slow_wakeup
