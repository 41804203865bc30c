"""A child's tie to the aggregator (vmstats/server/lifeline.py), where the kernel's parent-death
signal does not reach: a process whose parent is not the aggregator ends when it ends.

The watched "aggregator" here is a plain process the test kills, and the watcher's parent is the
test, so only ``end_with``'s own watch can end it: by a pidfd, or, on a kernel without pidfds
(Linux before 5.3), by looking for the process every second.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: A child that ties itself to the pid in argv[1], then would wait for a minute; argv[2] "nopidfd"
#: takes pidfds away, as a kernel without them does.
WATCHER = '''
import os, sys, time
if sys.argv[2] == "nopidfd":
    del os.pidfd_open
from vmstats.server import lifeline
lifeline.end_with(int(sys.argv[1]))
print("watching", flush=True)
time.sleep(60)
sys.exit(3)
'''


@pytest.mark.parametrize("kernel", ["pidfd", "nopidfd"])
def test_a_child_ends_once_the_aggregator_it_watches_has_ended(kernel):
    aggregator = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    watcher = subprocess.Popen([sys.executable, "-c", WATCHER, str(aggregator.pid), kernel],
                               env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout.readline() == "watching\n"
        time.sleep(0.3)
        assert watcher.poll() is None  # alive while the aggregator is
        aggregator.kill()
        aggregator.wait()  # reaped: a zombie still answers kill(pid, 0)
        # At once by a pidfd; within a second or two by the polling, never the minute.
        assert watcher.wait(timeout=20) == 0
    finally:
        for process in (aggregator, watcher):
            if process.poll() is None:
                process.kill()
                process.wait()
