"""The server's repeated calls outlive their own failures (a LoopingCall alone stops at the first)."""

import logging
import subprocess
import sys
import textwrap

from serverproc import ROOT
from twisted.internet.task import Clock

from vmstats.server.every import Every


def run_for(seconds: int, function, what: str, caplog) -> tuple[Every, Clock]:
    """``function`` repeated every second on a simulated clock for ``seconds``, logs captured."""
    clock = Clock()
    every = Every(clock, 1.0, lambda: function(clock), what)
    every.start()
    with caplog.at_level(logging.ERROR, logger="vmstats.server.every"):
        for _ in range(seconds):
            clock.advance(1.0)
    return every, clock


def test_a_failing_call_is_logged_and_runs_again_at_its_next_interval(caplog):
    calls = []

    def tick(clock: Clock) -> None:
        calls.append(clock.seconds())
        if len(calls) == 2:
            raise ValueError("a minute that cannot be built")

    every, clock = run_for(5, tick, "completing minutes", caplog)
    assert calls == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert every.failures == 1 and every.running
    assert "completing minutes failed" in caplog.text and "ValueError" in caplog.text
    every.stop()
    every.stop()  # stopping twice (a service stopped after a failed start) is no error
    clock.advance(5.0)
    assert len(calls) == 5 and not every.running


def test_a_call_that_fails_every_time_logs_a_few_tracebacks_a_minute(caplog):
    def broken(_clock: Clock) -> None:
        raise RuntimeError("always")

    every, _clock = run_for(30, broken, "the watchdog", caplog)
    assert every.failures == 30 and every.running
    # The first three failures of the minute are logged whole, the other 27 only counted.
    assert caplog.text.count("Traceback") == 3 and caplog.text.count("RuntimeError: always") == 3


def test_a_scheduled_job_late_by_more_than_a_second_runs_late_instead_of_being_skipped():
    """APScheduler skips a run later than its grace (1 s) as missed: a flush due while the
    reactor was busy for 1.5 s waited a whole interval more.  It runs late now."""
    script = textwrap.dedent("""
        import time
        from twisted.internet import reactor
        from vmstats.server.clock import install
        from vmstats.server.every import IntervalJob
        install(reactor)
        runs = []
        job = IntervalJob(reactor, 2.0, lambda: runs.append(time.monotonic()), "job")
        job.start()
        reactor.callLater(1.9, time.sleep, 1.5)  # busy across the job's first run
        reactor.callLater(3.8, reactor.stop)
        reactor.run()
        print(len(runs))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=str(ROOT))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1", done.stderr
    assert "was missed by" not in done.stderr
