"""Loaded by a test's server or agent through PYTHONPATH: SIGUSR2 steps its wall clock, as NTP
would.

With ``VMSTATS_TEST_STEP`` set (seconds, negative: back), each SIGUSR2 moves ``time.time()``
and the ``datetime.now()`` of the APScheduler modules that read it by that much;
``time.monotonic()`` is left alone, as a real step leaves it; ``VMSTATS_TEST_OFFSET`` starts
it that many seconds off.  Without ``VMSTATS_TEST_STEP`` nothing is changed.

``VMSTATS_TEST_SYNCED`` (``1`` or ``0``) is what the agent hears when it asks the kernel whether
time sync has set the clock (vmstats/client/clocksync.py): the machine's own answer would make
a test pass or fail by whether the machine runs time sync.
"""

import datetime
import os
import signal
import time

if os.environ.get("VMSTATS_TEST_STEP"):
    _real = time.time
    _offset = [float(os.environ.get("VMSTATS_TEST_OFFSET", "0"))]

    def _stepped() -> float:
        return _real() + _offset[0]

    class _SteppedDatetime(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.datetime.fromtimestamp(_stepped(), tz)

    def _step(_number, _frame) -> None:
        _offset[0] += float(os.environ["VMSTATS_TEST_STEP"])

    time.time = _stepped
    import apscheduler.executors.base
    import apscheduler.schedulers.base
    import apscheduler.triggers.interval

    for _module in (apscheduler.schedulers.base, apscheduler.executors.base,
                    apscheduler.triggers.interval):
        _module.datetime = _SteppedDatetime
    signal.signal(signal.SIGUSR2, _step)

if os.environ.get("VMSTATS_TEST_SYNCED"):
    from vmstats.client import clocksync

    _synced = os.environ["VMSTATS_TEST_SYNCED"] == "1"
    clocksync.synchronized = lambda: _synced
