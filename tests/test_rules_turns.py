"""An alert's events reach a command action in the order raised, one run done before the next.

A real server on loopback, real programs (shell scripts appending what they were told, with the
time, to a file): a firing run still going when its alert resolves, one that hangs past its
timeout and is retried.  Before, the
action ran up to 8 programs at once and each delivery was retried on its own, so the resolved
run of an alert could start, and end, before its firing run: a script opening a ticket on firing
and closing it on resolved closed it first and left it open for good.
"""

import os
import signal
import time
from pathlib import Path

import pytest
from rulesutil import line, log_entries, rules_file, serve, wait_until

#: The runs a script recorded: "start|end SCOPE STATUS KEY PID TIME", one a line.
RECORD = 'echo "%s $VMSTATS_SCOPE $VMSTATS_STATUS $VMSTATS_KEY $$ $(date +%%s.%%N)" >> "$RUNS"\n'


def program(folder: Path, middle: str) -> Path:
    """A script recording its start, doing ``middle``, recording its end."""
    script = folder / "act.sh"
    script.write_text("#!/bin/sh\nRUNS=%s\n%s%s%s" % (folder / "runs", RECORD % "start", middle,
                                                      RECORD % "end"))
    script.chmod(0o755)
    return script


def runs(folder: Path) -> list[list[str]]:
    path = folder / "runs"
    return [x.split() for x in path.read_text().splitlines()] if path.exists() else []


def said(folder: Path, scope: str) -> list[str]:
    """What the runs for ``scope`` recorded, in order: "start firing", "end firing", ..."""
    return ["%s %s" % (run[0], run[2]) for run in runs(folder) if run[1] == scope]


def rules(folder: Path, script: Path, timeout: str = "60s", settings: str = "") -> str:
    body = ('[action.run]\nkind = "command"\nargv = ["%s"]\ntimeout = "%s"\n\n[[rule]]\n'
            'name = "hot"\nmetric = "cpu"\nenter = 90\nexit = 70\nperiod = 1\nactions = ["run"]\n'
            '\n[settings]\nretry_min = "0.2s"\nretry_max = "0.5s"\n%s' % (script, timeout, settings))
    return rules_file(folder, "http://127.0.0.1:9/", body)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return "zombie" not in Path("/proc/%d/status" % pid).read_text().lower()
    except FileNotFoundError:
        return False


def pids(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


@pytest.fixture(autouse=True)
def nothing_left(tmp_path):
    """What the scripts recorded starting is killed after the test if it still runs (a test
    that failed, a defect back): none outlives it.  Only a process running one of them (its
    command line says so), not another that took a pid let go."""
    yield
    for pid in [int(run[4]) for run in runs(tmp_path)] + pids(tmp_path / "children"):
        try:
            command = Path("/proc/%d/cmdline" % pid).read_bytes()
        except OSError:
            continue
        if b"act.sh" in command or b"sleep\x00300" in command:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_an_alerts_resolved_run_waits_for_its_firing_run_while_other_alerts_run_beside(tmp_path):
    """The firing run of 10.0.0.1 holds until the test opens its gate; its resolution, raised
    meanwhile, waits (``vmstats_rule_deliveries_waiting``), while 10.0.0.2's firing runs and
    ends at once: the wait is per alert, not the action's."""
    gate = tmp_path / "gate"
    script = program(tmp_path, 'if [ "$VMSTATS_SCOPE $VMSTATS_STATUS" = "10.0.0.1 firing" ]; then\n'
                               '  while [ ! -e %s ]; do sleep 0.02; done\nfi\n' % gate)
    with serve(tmp_path, rules(tmp_path, script)) as server:
        now = int(time.time())
        server.send_udp(line("10.0.0.1", now, 95.0))
        wait_until(lambda: said(tmp_path, "10.0.0.1") == ["start firing"])
        server.send_udp(line("10.0.0.1", now + 1, 50.0), line("10.0.0.2", now + 1, 95.0))
        wait_until(lambda: "end firing" in said(tmp_path, "10.0.0.2"))
        # The resolution is raised: run already (the defect), or waiting for its turn.
        server.wait_metrics(lambda m: "start resolved" in said(tmp_path, "10.0.0.1")
                            or m.get("vmstats_rule_deliveries_waiting") == 1)
        gate.touch()
        metrics = server.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 0)
        assert metrics["vmstats_rule_deliveries_waiting"] == 0
    assert said(tmp_path, "10.0.0.1") == ["start firing", "end firing", "start resolved",
                                          "end resolved"]
    order = [(run[0], run[1]) for run in runs(tmp_path)]
    assert order.index(("end", "10.0.0.2")) < order.index(("end", "10.0.0.1"))  # side by side
    times = [float(run[5]) for run in runs(tmp_path) if run[1] == "10.0.0.1"]
    assert times == sorted(times)


def test_a_hung_firing_run_is_killed_and_retried_until_given_up_then_its_resolution_runs(tmp_path):
    """A firing run that hangs is killed at its timeout (and what it started), which frees the
    action for the other alerts, and is retried: its resolution waits through the retries,
    runs once the firing is given up (``retry_for``), and its wait spent none of its own
    budget (given up too, it would leave the alert firing wherever the firing got through)."""
    children = tmp_path / "children"
    script = program(tmp_path, 'if [ "$VMSTATS_STATUS" = firing ]; then\n'
                               '  sleep 300 &\n  echo $! >> %s\n  wait\nfi\n' % children)
    with serve(tmp_path, rules(tmp_path, script, "0.5s", 'retry_for = "2s"\n')) as server:
        now = int(time.time())
        server.send_udp(line("10.0.0.1", now, 95.0))
        wait_until(lambda: said(tmp_path, "10.0.0.1") == ["start firing"])
        server.send_udp(line("10.0.0.1", now + 1, 50.0))
        wait_until(lambda: "end resolved" in said(tmp_path, "10.0.0.1"))
        server.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 0)
        entries = log_entries(server)
    told = said(tmp_path, "10.0.0.1")
    assert told[-2:] == ["start resolved", "end resolved"]
    assert set(told[:-2]) == {"start firing"} and len(told) >= 4  # retried, never ended
    fired = next(e["event"]["key"] for e in entries
                 if e["type"] == "event" and e["event"]["to"] == "alarm")
    assert [e["reason"] for e in entries if e["type"] == "gave_up"] == ["undelivered after 2s"]
    assert {e["key"] for e in entries if e["type"] == "gave_up"} == {fired + ".run"}
    wait_until(lambda: not any(alive(pid) for pid in pids(children)), 5)
