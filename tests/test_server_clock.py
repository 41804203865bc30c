"""Steps of the server's wall clock (NTP correcting it, ``date -s``) while it runs.

The real server runs with its wall clock under the test's hand (tests/stepclock: SIGUSR2
steps ``time.time()`` and APScheduler's ``datetime.now()``, never the monotonic clock, as a
real step does), and again after a SIGKILL with the clock as stepped: the rules' deliveries
and the other formats' open minutes, which outlive a restart.
"""

import calendar
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rulesutil import HOT, SECRET, WebhookReceiver, row, rules_file
from rulesutil import line as rule_line
from serverproc import LOOPBACK, ROOT, serve
from test_formats_durable import VMS, expected, write_step
from test_server_udp import line, logged, now

from vmstats.protocol import Record
from vmstats.rules.config import parse_rules
from vmstats.rules.service import RulesService
from vmstats.server.clock import WallClock
from vmstats.server.formats import Sample, Tally
from vmstats.server.formats.minutes import MinuteAssembler

STEPCLOCK = str(Path(__file__).resolve().parent / "stepclock")
HOUR = 3600
#: A timer held up by a step waits it out (an hour); a bound a thirtieth of that catches it
#: however slow a loaded host is.
STEP_BOUND = HOUR / 30


def stepped_server(tmp_path, step: float, *args: str, offset: float = 0.0):
    """A server (``with``) whose wall clock SIGUSR2 moves by ``step`` seconds, ``offset`` off
    from the start (as a clock stepped while the server was down)."""
    return serve(tmp_path, *args, env={"PYTHONPATH": STEPCLOCK, "VMSTATS_TEST_STEP": str(step),
                                       "VMSTATS_TEST_OFFSET": str(offset)})


def rows(tmp_path, vm: str) -> int:
    """Rows of ``vm`` in the logs (0 before its first flush)."""
    if not (tmp_path / "data" / "vms" / vm).exists():
        return 0
    return len(logged(tmp_path / "data", vm))


def test_a_step_back_holds_neither_the_run_duration_nor_the_flushes(tmp_path):
    """An hour back: the run still ends after --duration, records still reach the logs each
    flush, and /metrics tells the step; before, every timed call waited the hour out."""
    with stepped_server(tmp_path, -HOUR, "--duration", "8s", "--flush-interval", "1") as server:
        started = time.monotonic()
        os.kill(server.pid, signal.SIGUSR2)
        stamp = now() - HOUR  # the server's new time
        server.send_udp(line(Record(vm="10.7.0.1", ts=stamp, cpu=1.0, mem=2.0)))
        # A flush is counted once its writer's answer is back, after the rows are in the log:
        # a writer waiting for the CPU (a loaded host) left the count at 0 when read as soon
        # as the rows were seen.  Within 5 s, well before --duration ends it in a final flush.
        metrics = server.wait_metrics(lambda m: m["vmstats_flushes_total"] >= 1, timeout=5)
        assert rows(tmp_path, "10.7.0.1") == 1
        assert metrics["vmstats_clock_steps_total"] == 1
        assert metrics["vmstats_clock_last_step_seconds"] < -HOUR + 5
        code = server.wait(STEP_BOUND)
    assert code == 0, server.output
    assert time.monotonic() - started < STEP_BOUND  # --duration 8s, not 8 s and the hour
    assert "wall clock stepped back by 3600" in server.output


def test_a_step_forward_fires_nothing_early(tmp_path):
    """An hour forward: the run does not end at once, and flushes go on at their interval."""
    with stepped_server(tmp_path, HOUR, "--duration", "6s", "--flush-interval", "1") as server:
        started = time.monotonic()
        os.kill(server.pid, signal.SIGUSR2)
        time.sleep(1.5)
        assert server.proc.poll() is None  # not ended by the step
        server.send_udp(line(Record(vm="10.7.0.2", ts=now(), cpu=1.0, mem=2.0)))
        server.wait_for(lambda s: rows(tmp_path, "10.7.0.2") == 1, timeout=5)
        code = server.wait(STEP_BOUND)
    assert code == 0, server.output
    assert time.monotonic() - started >= 5  # the step ended nothing early (--duration 6s)
    assert "wall clock stepped forward by 3600" in server.output
    assert "was missed by" not in server.output


class Clocks:
    """A wall and a monotonic clock for WallClock, moved by the test."""

    def __init__(self):
        self.wall_now = 1_800_000_000.0
        self.mono_now = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall_now += seconds
        self.mono_now += seconds

    def wall(self) -> float:
        return self.wall_now

    def mono(self) -> float:
        return self.mono_now


def test_a_step_forward_neither_silences_every_vm_nor_ends_a_hold(tmp_path):
    """Rules measure holds and silences by the wall clock they stamp with: a step forward of an
    hour made every VM silent at once (then ok again at its next record: two notifications
    each) and ended every hold.  They move with the step now."""
    clocks = Clocks()
    wall = WallClock(clocks.wall, clocks.mono)

    class Reactor:  # the rules' timed calls are not exercised here
        seconds = staticmethod(clocks.mono)

    ruleset = parse_rules({"rule": [{"name": "s", "metric": "cpu", "enter": 90, "exit": 50,
                                     "period": 60, "silent_after": "5m", "hold": "10m",
                                     "actions": ["say"]}],
                           "action": {"say": {"kind": "log"}}})
    rules = RulesService(Reactor(), "rules.toml", ruleset, str(tmp_path), wall=wall)
    engine = rules.engine
    vms = ["10.0.0.%d" % i for i in range(1, 6)]

    def minute(cpu: float) -> list[tuple[str, str]]:
        clocks.advance(60)
        stamp = int(clocks.wall_now)
        engine.observe(vms, [stamp] * len(vms), [row(cpu)] * len(vms))
        engine.process()
        engine.sweep()
        return [(e["scope"], e["to"]) for e in engine.take() if e["kind"] == "transition"]

    for _ in range(11):  # ok for longer than the hold
        minute(10.0)
    assert set(minute(95.0) + minute(95.0) + minute(95.0)) == {(vm, "alarm") for vm in vms}
    clocks.wall_now += HOUR  # the step, between two records
    engine.sweep()
    assert [e for e in engine.take() if e["kind"] == "transition"] == []  # nobody silent
    # Back to normal at once: the 10-minute hold holds them in alarm, an hour's step or not.
    assert minute(10.0) + minute(10.0) + minute(10.0) == []
    assert wall.steps == 1


def test_a_step_forward_leaves_no_missing_periods_in_a_groups_window(tmp_path):
    """A group's periods are filed by the clock: a step forward of an hour left its window
    empty but for the newest period, which missing = breaching read as an alarm."""
    clocks = Clocks()
    wall = WallClock(clocks.wall, clocks.mono)

    class Reactor:
        seconds = staticmethod(clocks.mono)

    ruleset = parse_rules({"rule": [{"name": "g", "scope": "group", "metric": "cpu",
                                     "aggregate": "mean", "enter": 90, "period": 60,
                                     "datapoints": 3, "periods": 5, "missing": "breaching",
                                     "actions": ["say"]}],
                           "action": {"say": {"kind": "log"}}})
    engine = RulesService(Reactor(), "rules.toml", ruleset, str(tmp_path), wall=wall).engine
    vms = ["10.0.1.%d" % i for i in range(1, 4)]

    def minute() -> list[str]:
        clocks.advance(60)
        engine.observe(vms, [int(clocks.wall_now)] * len(vms), [row(20.0)] * len(vms))
        engine.process()
        engine.sweep()
        return [e["to"] for e in engine.take() if e["kind"] == "transition"]

    assert [minute() for _ in range(6)] == [[]] * 6
    clocks.wall_now += HOUR
    assert [minute() for _ in range(3)] == [[]] * 3


def test_a_step_forward_completes_no_open_minute_early():
    """The edge's minutes wait --minute-grace after their last sample, not after the step."""
    clocks = Clocks()
    wall = WallClock(clocks.wall, clocks.mono)
    assembler = MinuteAssembler(grace=30.0)
    wall.on_step.append(assembler.clock_stepped)

    end = (int(clocks.wall_now) // 60 + 1) * 60
    tally = Tally()
    assembler.add([Sample("vm1", end - 20, "cpu", "", 10.0),
                   Sample("vm1", end - 20, "mem", "", 20.0)], wall(), tally, [])
    clocks.wall_now += HOUR
    assert assembler.tick(wall()) == []
    clocks.advance(31)
    assert assembler.tick(wall()) == [("vm1", end)]


def test_the_server_logs_times_in_utc_and_says_so_whatever_the_machines_zone(tmp_path):
    """A server in Tokyo logged its local time, unmarked, nine hours off the UTC of the day
    files, /status and the report."""
    with serve(tmp_path, "--duration", "1s", env={"TZ": "Asia/Tokyo"}) as server:
        code = server.wait(20)
    assert code == 0, server.output
    found = re.search(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.\d{3}Z INFO vmstats\.server\.service: "
                      r"stopping", server.output, re.M)
    assert found, server.output
    logged_at = calendar.timegm(time.strptime(found.group(1), "%Y-%m-%dT%H:%M:%S"))
    assert abs(logged_at - time.time()) < 60


def test_a_vm_whose_clock_is_ten_minutes_ahead_is_named_with_its_lead(tmp_path):
    """Its records are refused and counted (past --max-future, 300 s) and the log names the VM
    and by how much it leads, not two epoch numbers to subtract; a VM a minute ahead is in."""
    with serve(tmp_path, "--flush-interval", "0.3") as server:
        server.send_udp(line(Record(vm="10.7.1.1", ts=now() + 600, cpu=1.0, mem=2.0)),
                        line(Record(vm="10.7.1.2", ts=now() + 60, cpu=1.0, mem=2.0)))
        server.wait_for(lambda s: s.metrics()[
            'vmstats_rejected_total{reason="future_timestamp"}'] == 1)
        server.wait_for(lambda s: rows(tmp_path, "10.7.1.2") == 1)
    assert re.search(r"future_timestamp: vm 10\.7\.1\.1 stamped (599|60\d)s ahead of this "
                     r"server's clock", server.output), server.output


def test_a_pause_between_the_two_clock_reads_is_no_step():
    """A thread held up for seconds between reading the monotonic clock and the wall clock
    (another thread holding the GIL) is not a step: nothing shifts, nothing is counted."""
    clocks = Clocks()
    walls = iter([clocks.wall_now, clocks.wall_now + 5.0])
    # At the start; then before the wall clock's read, and after it: 5 s stood still between.
    monos = iter([clocks.mono_now, clocks.mono_now, clocks.mono_now + 5.0])
    wall = WallClock(lambda: next(walls), lambda: next(monos))
    told = []
    wall.on_step.append(told.append)
    wall()
    assert (wall.steps, told) == (0, [])


def test_an_agent_whose_clock_is_ten_minutes_ahead_is_told_to_look_at_it(tmp_path):
    """Over TCP its records are refused (final: never resent) and counted on the server; the
    agent's own log said only 'invalid', which its well-formed records are not."""
    with serve(tmp_path / "server") as server:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), STEPCLOCK]),
                   VMSTATS_TEST_STEP="1", VMSTATS_TEST_OFFSET="600")
        done = subprocess.run(
            [sys.executable, "-m", "vmstats.client", "--server", "%s:%d" % (LOOPBACK,
             server.tcp_port), "--transport", "tcp", "--interval", "1", "--sub-interval", "0.5",
             "--jitter", "0", "--count", "2", "--vm-id", "ahead-vm", "--spool-dir",
             str(tmp_path / "spool")], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert server.metrics()['vmstats_rejected_total{reason="future_timestamp"}'] == 2
    assert "as future_timestamp (not resent): stamped further ahead of the server's clock than " \
        "its --max-future: this VM's clock was ahead (run NTP)" in done.stderr, done.stderr
    assert "ahead-vm stamped" in server.output


def rules_server(tmp_path, hook, step: float, offset: float = 0.0, retry_for: str = "1h"):
    """A server with rules delivering to ``hook``, its clock steppable (and ``offset`` off)."""
    body = HOT % "" + ('[settings]\nretry_for = "%s"\nretry_min = "0.2s"\nretry_max = "0.5s"\n'
                       % retry_for)
    return stepped_server(tmp_path, step, "--rules", rules_file(tmp_path, hook.url, body),
                          "--parsers", "0", "--flush-interval", "0.3", offset=offset)


def deliveries(metrics: dict, result: str) -> float:
    return metrics.get('vmstats_rule_deliveries_total{action="hook",result="%s"}' % result, 0)


def test_a_step_forward_past_retry_for_gives_up_no_delivery(tmp_path):
    """A receiver down, retries for an hour: the clock stepped two hours on must not end them
    (their budget is time spent, not the clock's figure); once the receiver is back it gets
    the alarm.  Before, every pending delivery was given up at its next attempt."""
    with WebhookReceiver(SECRET.encode()) as hook:
        hook.down = True
        with rules_server(tmp_path, hook, 2 * HOUR) as server:
            server.send_udp(rule_line("10.7.2.1", now(), 99.0))
            server.wait_metrics(lambda m: deliveries(m, "failed") >= 2)
            os.kill(server.pid, signal.SIGUSR2)
            server.wait_metrics(lambda m: m["vmstats_clock_steps_total"] == 1)
            failed = deliveries(server.metrics(), "failed")
            server.wait_metrics(lambda m: deliveries(m, "failed") >= failed + 3)
            metrics = server.metrics()
            assert deliveries(metrics, "gave_up") == 0, server.output
            assert metrics["vmstats_rule_deliveries_pending"] == 1
            hook.down = False
            hook.wait(1)
            server.wait_metrics(lambda m: deliveries(m, "delivered") == 1)


def test_a_step_back_does_not_stretch_the_retries(tmp_path):
    """Retried for 4 s, the clock an hour back: given up after 4 s of retrying, not 3604."""
    with WebhookReceiver(SECRET.encode()) as hook:
        hook.down = True
        with rules_server(tmp_path, hook, -HOUR, retry_for="4s") as server:
            server.send_udp(rule_line("10.7.2.2", now(), 99.0))
            server.wait_metrics(lambda m: deliveries(m, "failed") >= 1)
            started = time.monotonic()
            os.kill(server.pid, signal.SIGUSR2)
            server.wait_metrics(lambda m: deliveries(m, "gave_up") == 1, timeout=STEP_BOUND)
            assert time.monotonic() - started < STEP_BOUND


def test_a_pending_delivery_keeps_its_spent_budget_across_a_restart_and_a_step_back(tmp_path):
    """Stopped after ~2 s of its 4 s of retries, started again with the clock an hour back:
    the last 2 s are retried, then it is given up (before, the budget began again an hour
    on).  What the log shows an operator is the server's time of day."""
    with WebhookReceiver(SECRET.encode()) as hook:
        hook.down = True
        with rules_server(tmp_path, hook, 1, retry_for="4s") as server:
            server.send_udp(rule_line("10.7.2.3", now(), 99.0))
            server.wait_metrics(lambda m: deliveries(m, "failed") >= 4)
        with rules_server(tmp_path, hook, 1, offset=-HOUR, retry_for="4s") as server:
            started = time.monotonic()
            server.wait_metrics(lambda m: deliveries(m, "gave_up") == 1, timeout=STEP_BOUND)
            assert time.monotonic() - started < STEP_BOUND
    entries = [json.loads(text) for text in
               (tmp_path / "data" / "rules" / "actions.log").read_text().splitlines()]
    gave_up = [e for e in entries if e["type"] == "gave_up"]
    assert len(gave_up) == 1
    assert abs(gave_up[0]["at"] - (time.time() - HOUR)) < 60
    ages = [e["age"] for e in entries if e["type"] == "attempt"]
    assert ages == sorted(ages) and 1 < ages[-1] <= 4


def edge_server(tmp_path, step: float, offset: float = 0.0, grace: str = "30"):
    """``stepped_server`` taking other agents' minutes, with ``grace``."""
    return stepped_server(tmp_path, step, "--flush-interval", "0.3", "--minute-grace", grace,
                          offset=offset)


def killed_after_a_step(tmp_path, step: float | None, t0: int, grace: str) -> None:
    """Half of minute 1 (steps 1-3, at t0 + 10 ... + 30) into a server, its clock stepped by
    ``step`` (None: not), then a SIGKILL: the open minutes come back from the journal at the
    next start."""
    server = edge_server(tmp_path, step or 1, grace=grace).start()
    try:
        for n in (1, 2, 3):
            write_step(server, n, t0)
        # Flushes: the journal checkpoints the minutes, and the next checkpoint is not due for
        # 30 s, so the step reaches the journal as a line after it, as most steps do.
        time.sleep(1.0)
        if step is not None:
            os.kill(server.pid, signal.SIGUSR2)
            server.wait_metrics(lambda m: m["vmstats_clock_steps_total"] == 1)
        server.kill_outright()
    finally:
        server.kill()


def test_a_step_forward_completes_no_open_minute_of_the_edge_before_its_grace(tmp_path):
    """History of an hour ago, then the clock an hour forward: the minutes stay open and take
    the rest of their samples.  Before, the edge's tick read the clock itself and, when it
    came between the step and the watch noticing it (most of a second in three runs of
    four), completed every open minute at once; the rest was refused as late."""
    t0 = (now() - HOUR) // 60 * 60
    with edge_server(tmp_path, HOUR) as server:
        for n in (1, 2, 3):
            write_step(server, n, t0)
        for _ in range(3):  # three steps: three chances for a tick to come first
            os.kill(server.pid, signal.SIGUSR2)
            time.sleep(1.2)  # a tick and the watch, in whichever order they come
            assert server.metrics()["vmstats_edge_open_minutes"] == VMS
        for n in (4, 5, 6):
            write_step(server, n, t0)  # raised (400, late) before
    assert rows(tmp_path, "tg-00") == 1


def test_a_restart_after_a_step_forward_keeps_each_open_minutes_grace(tmp_path):
    """History of an hour ago (a Telegraf catching up), the clock an hour forward, a crash:
    the restored minutes wait their grace from their last sample, as they did before the
    crash, and the rest of minute 1 is taken.  Before, the replay used the arrival times
    the journal held, an hour before the new clock: the first tick wrote every minute with
    half its samples and the other half (steps 4-6) was refused as late."""
    t0 = (now() - HOUR) // 60 * 60
    killed_after_a_step(tmp_path, HOUR, t0, "30")
    with edge_server(tmp_path, 1, offset=HOUR) as server:
        time.sleep(1.5)  # the edge's tick, once a second, has looked at the restored minutes
        for n in (4, 5, 6, 7):
            write_step(server, n, t0)  # raised (400, late) before
        assert server.metrics().get('vmstats_edge_events_total{event="late"}', 0) == 0
    for i in range(VMS):
        row = logged(tmp_path / "data", "tg-%02d" % i).iloc[0]
        want = expected(i, 1)
        assert {key: row[key] for key in want} == want


@pytest.mark.parametrize("step", [-HOUR, None], ids=["stepped-running", "stepped-while-down"])
def test_a_restart_after_a_step_back_holds_no_open_minute_for_the_step(tmp_path, step):
    """The same, the clock an hour back, and the sender gone: the minutes are written their
    grace (2 s) after their last sample.  Before, they waited for the clock to reach the
    arrival times the journal held: an hour.  A step while the server was down (no line in
    the journal says it) is seen as arrivals later than the clock, and they are taken as
    now: a clock still wrong at the start and stepped forward later held them for good."""
    t0 = (now() - 2 * HOUR) // 60 * 60  # an hour before the clock as stepped
    killed_after_a_step(tmp_path, step, t0, "2")
    with edge_server(tmp_path, 1, offset=-HOUR, grace="2") as server:
        server.wait_for(lambda s: rows(tmp_path, "tg-00") == 1, timeout=10)
        assert server.metrics()["vmstats_edge_open_minutes"] == 0


@pytest.mark.parametrize("later", [("--max-future", "5m"), ("--max-future", "30s")],
                         ids=["clock-back-an-hour", "max-future-lowered"])
def test_a_restart_writes_every_minute_acknowledged_whatever_the_clock_or_limits(tmp_path,
                                                                                   later):
    """Minute 1 of 12 VMs completed by minute 2's first samples (and handed to ingest), minute
    2 open, a SIGKILL before any flush, then a start with the clock an hour back or
    --max-future lowered below the minutes' ends: both minutes are written and nothing is
    refused.  Before, the start filed the minutes the edge completed again against the new
    clock and limit, and refused them (``future_timestamp``) though their samples had been
    acknowledged: minute 2, in the journal as samples only, was lost."""
    ahead = later[1] == "30s"
    # Ahead: both minutes end up to 3 minutes past the clock (inside the first run's 300 s).
    t0 = (now() // 60 + 1) * 60 if ahead else (now() - 180) // 60 * 60
    first = stepped_server(tmp_path, 1, "--flush-interval", "60", "--minute-grace", "2").start()
    try:
        for n in range(1, 9):  # steps 7 and 8 (minute 2) complete minute 1
            write_step(first, n, t0)
        first.wait_metrics(lambda m: m['vmstats_edge_events_total{event="records"}'] >= VMS)
        first.kill_outright()
    finally:
        first.kill()
    with stepped_server(tmp_path, 1, "--flush-interval", "0.3", "--minute-grace", "2", *later,
                        offset=0 if ahead else -HOUR) as server:
        refused = {key: value for key, value in server.metrics().items()
                   if key.startswith("vmstats_rejected_total") and value}
        assert refused == {}
    assert server.returncode == 0, server.output  # the stop completes minute 2 as it stands
    for i in range(VMS):
        got = logged(tmp_path / "data", "tg-%02d" % i)
        assert list(got["ts"]) == [t0 + 60, t0 + 120]
        want = expected(i, 1)
        assert {key: got.iloc[0][key] for key in want} == want
