"""The server's repeated calls outlive their own failures (a LoopingCall alone stops at the first)."""

import logging

from twisted.internet.task import Clock

from vmstats.server.every import Every


def test_a_failing_call_is_logged_and_runs_again_at_its_next_interval(caplog):
    clock = Clock()
    calls = []

    def tick() -> None:
        calls.append(clock.seconds())
        if len(calls) == 2:
            raise ValueError("a minute that cannot be built")

    every = Every(clock, 1.0, tick, "completing minutes")
    every.start()
    with caplog.at_level(logging.ERROR, logger="vmstats.server.every"):
        for _ in range(5):
            clock.advance(1.0)
    assert calls == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert every.failures == 1 and every.running
    assert "completing minutes failed" in caplog.text and "ValueError" in caplog.text
    every.stop()
    every.stop()  # stopping twice (a service stopped after a failed start) is no error
    clock.advance(5.0)
    assert len(calls) == 5 and not every.running


def test_a_call_that_fails_every_time_logs_a_few_tracebacks_a_minute(caplog):
    clock = Clock()

    def broken() -> None:
        raise RuntimeError("always")

    every = Every(clock, 1.0, broken, "the watchdog")
    every.start()
    with caplog.at_level(logging.ERROR, logger="vmstats.server.every"):
        for _ in range(30):
            clock.advance(1.0)
    assert every.failures == 30 and every.running
    assert caplog.text.count("Traceback") <= 3
