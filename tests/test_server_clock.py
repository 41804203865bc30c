"""Steps of the server's wall clock (NTP correcting it, ``date -s``) while it runs.

The real server runs with its wall clock under the test's hand (tests/stepclock: SIGUSR2
steps ``time.time()`` and APScheduler's ``datetime.now()``, never the monotonic clock, as a
real step does).
"""

import os
import signal
import time
from pathlib import Path

from serverproc import serve
from test_server_udp import line, logged, now

from vmstats.protocol import Record

STEPCLOCK = str(Path(__file__).resolve().parent / "stepclock")
HOUR = 3600


def stepped_server(tmp_path, step: float, *args: str):
    """A started server whose wall clock SIGUSR2 moves by ``step`` seconds."""
    return serve(tmp_path, *args, env={"PYTHONPATH": STEPCLOCK,
                                       "VMSTATS_TEST_STEP": str(step)}).start()


def rows(tmp_path, vm: str) -> int:
    """Rows of ``vm`` in the logs (0 before its first flush)."""
    if not (tmp_path / "data" / "vms" / vm).exists():
        return 0
    return len(logged(tmp_path / "data", vm))


def test_a_step_back_holds_neither_the_run_duration_nor_the_flushes(tmp_path):
    """An hour back: the run still ends after --duration, records still reach the logs each
    flush, and /metrics tells the step; before, every timed call waited the hour out."""
    server = stepped_server(tmp_path, -HOUR, "--duration", "8s", "--flush-interval", "1")
    started = time.monotonic()
    os.kill(server.pid, signal.SIGUSR2)
    stamp = now() - HOUR  # the server's new time
    server.send_udp(line(Record(vm="10.7.0.1", ts=stamp, cpu=1.0, mem=2.0)))
    server.wait_for(lambda s: rows(tmp_path, "10.7.0.1") == 1, timeout=5)
    metrics = server.metrics()
    assert metrics["vmstats_clock_steps_total"] == 1
    assert metrics["vmstats_clock_last_step_seconds"] < -HOUR + 5
    assert metrics["vmstats_flushes_total"] >= 1
    code = server.wait(20)
    assert code == 0, server.output
    assert time.monotonic() - started < 14
    assert "wall clock stepped back by 3600" in server.output


def test_a_step_forward_fires_nothing_early(tmp_path):
    """An hour forward: the run does not end at once, and flushes go on at their interval."""
    server = stepped_server(tmp_path, HOUR, "--duration", "6s", "--flush-interval", "1")
    started = time.monotonic()
    os.kill(server.pid, signal.SIGUSR2)
    time.sleep(1.5)
    assert server.proc.poll() is None, server.output  # not ended by the step
    server.send_udp(line(Record(vm="10.7.0.2", ts=now(), cpu=1.0, mem=2.0)))
    server.wait_for(lambda s: rows(tmp_path, "10.7.0.2") == 1, timeout=5)
    assert server.wait(20) == 0, server.output
    assert 5 <= time.monotonic() - started < 12
    assert "wall clock stepped forward by 3600" in server.output
    assert "was missed by" not in server.output
