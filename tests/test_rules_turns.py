"""An alert's events reach a command action in the order raised, one run done before the next.

A real server on loopback, real programs (shell scripts appending what they were told, with the
time, to a file): a firing run still going when its alert resolves, one that hangs past its
timeout and is retried, runs under way when the server stops or is SIGKILLed.  Before, the
action ran up to 8 programs at once and each delivery was retried on its own, so the resolved
run of an alert could start, and end, before its firing run: a script opening a ticket on firing
and closing it on resolved closed it first and left it open for good.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rulesutil import line, log_entries, rules_file, serve, wait_until
from serverproc import ROOT
from test_reliability_faults import writers_of

#: The runs a script recorded: "start|end SCOPE STATUS KEY PID TIME SCRIPT", one a line.
RECORD = 'echo "%s $VMSTATS_SCOPE $VMSTATS_STATUS $VMSTATS_KEY $$ $(date +%%s.%%N) $0" >> "$RUNS"\n'


def program(folder: Path, middle: str, name: str = "act.sh") -> Path:
    """A script recording its start, doing ``middle``, recording its end."""
    script = folder / name
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


def test_at_a_stop_runs_under_way_are_killed_and_queued_ones_not_started_then_all_run_in_order(
        tmp_path):
    """Nine alerts fire at once and their runs hang: eight run (the action's concurrency), the
    ninth waits for a slot, and a resolution waits for its alert's firing run.  The stop ends
    at once: the eight are killed with what they started, nothing queued is started, and every
    delivery is pending in the log.  The next start runs them again under the same keys, the
    resolution after its firing, which is slower (1 s) than the resolution's run."""
    hang, children, slow = tmp_path / "hang", tmp_path / "children", tmp_path / "slow"
    hang.touch()
    script = program(tmp_path, 'if [ "$VMSTATS_STATUS" != firing ]; then :\n'
                               'elif [ -e %s ]; then\n  sleep 300 &\n  echo $! >> %s\n  wait\n'
                               'elif [ "$VMSTATS_SCOPE" = "$(cat %s)" ]; then\n  sleep 1\nfi\n'
                     % (hang, children, slow))
    path = rules(tmp_path, script)
    vms = ["10.0.0.%d" % i for i in range(1, 10)]
    with serve(tmp_path, path) as server:
        now = int(time.time())
        server.send_udp(*[line(vm, now, 95.0) for vm in vms])
        wait_until(lambda: len(runs(tmp_path)) == 8)
        server.send_udp(line(runs(tmp_path)[0][1], now + 1, 50.0))
        server.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 10)
        programs = [int(run[4]) for run in runs(tmp_path)]
        wait_until(lambda: len(pids(children)) == 8)
        began = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - began < 10  # not the programs' 60 s timeout
    wait_until(lambda: not any(alive(pid) for pid in programs + pids(children)), 5)
    first = runs(tmp_path)
    assert len(first) == 8 and {run[0] for run in first} == {"start"}  # the ninth never began
    resolved = first[0][1]
    slow.write_text(resolved)
    hang.unlink()
    with serve(tmp_path, path) as again:
        again.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 0)
    after = runs(tmp_path)[8:]
    assert sorted(run[1] for run in after if run[0] == "end" and run[2] == "firing") == sorted(vms)
    keys = {run[1]: run[3] for run in first}
    assert all(run[3] == keys[run[1]] for run in after if run[2] == "firing" and run[1] in keys)
    assert said(tmp_path, resolved)[1:] == ["start firing", "end firing", "start resolved",
                                            "end resolved"]


def gated(folder: Path, name: str) -> Path:
    """A script that runs until the test makes the file ``gate`` (its start and end recorded)."""
    return program(folder, "while [ ! -e %s ]; do sleep 0.02; done\n" % (folder / "gate"), name)


def reloaded(server, folder: Path, script: Path) -> None:
    """The rules file now runs ``script``; SIGHUP, and wait for the reload to be taken."""
    reloads = server.metrics().get('vmstats_rule_reloads_total{result="ok"}', 0)
    rules(folder, script)
    server.proc.send_signal(signal.SIGHUP)
    server.wait_metrics(lambda m: m.get('vmstats_rule_reloads_total{result="ok"}') == reloads + 1)


def test_a_reload_lets_the_replaced_actions_runs_end_and_runs_its_queued_ones_once(tmp_path):
    """A reload replaces the command action while eight of its runs hang and a ninth waits for
    a slot: the eight go on (they were sent to the old program), the ninth runs once a slot
    frees, with the program it was sent to, and each delivery is done once, none given up;
    an alert raised after the reload runs the new program, once a slot frees too (the
    action's 8 hold across the reload: test_rules_reload_slots.py)."""
    old, new = gated(tmp_path, "old-act.sh"), gated(tmp_path, "new-act.sh")
    vms = ["10.0.0.%d" % i for i in range(1, 11)]
    with serve(tmp_path, rules(tmp_path, old)) as server:
        now = int(time.time())
        server.send_udp(*[line(vm, now, 95.0) for vm in vms[:9]])
        wait_until(lambda: len(runs(tmp_path)) == 8)
        reloaded(server, tmp_path, new)
        server.send_udp(line(vms[9], now, 95.0))
        server.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 10)
        (tmp_path / "gate").touch()
        server.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 0)
        entries = log_entries(server)
    ended = {run[1]: run[6] for run in runs(tmp_path) if run[0] == "end"}
    assert len(runs(tmp_path)) == 20 and sorted(ended) == sorted(vms)  # each once
    assert {vm: Path(script).name for vm, script in ended.items()} == dict(
        {vm: "old-act.sh" for vm in vms[:9]}, **{vms[9]: "new-act.sh"})
    results = [e for e in entries if e["type"] in ("result", "gave_up")]
    assert len(results) == 10 and all(e.get("ok") for e in results)


def test_at_a_stop_the_runs_of_an_action_a_reload_replaced_are_killed_and_run_again_once(
        tmp_path):
    """A reload replaces the command action while eight of its runs hang and a ninth waits for
    a slot; a tenth alert then waits for a slot too.  The stop halts all of them, not only the
    current action's: before, the replaced action's eight ran on past the stop (the writer
    here held frozen keeps the server in its final flush, after the rules stopped), and once
    they ended the ninth was started, with the action log closed: their results unlogged,
    each ran again at the next start.  Now all ten are pending, and the next start runs each
    once, with the program the file names."""
    old, new = gated(tmp_path, "old-act.sh"), gated(tmp_path, "new-act.sh")
    vms = ["10.0.0.%d" % i for i in range(1, 11)]
    server = serve(tmp_path, rules(tmp_path, old), "--flush-interval", "1h").start()
    frozen: list[int] = []
    try:
        now = int(time.time())
        server.send_udp(*[line(vm, now, 95.0) for vm in vms[:9]])
        wait_until(lambda: len(runs(tmp_path)) == 8)
        reloaded(server, tmp_path, new)
        server.send_udp(line(vms[9], now, 95.0))
        server.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 10)
        programs = [int(run[4]) for run in runs(tmp_path)]
        frozen = wait_until(lambda: writers_of(server.pid)[1])
        for writer in frozen:
            os.kill(writer, signal.SIGSTOP)
        server.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: not any(alive(pid) for pid in programs), 10)
        assert server.proc.poll() is None  # ended by the stop, not with the server's process
        (tmp_path / "gate").touch()
    finally:
        for writer in frozen:
            os.kill(writer, signal.SIGCONT)
        server.stop()
    first = runs(tmp_path)
    assert len(first) == 8 and {run[0] for run in first} == {"start"}  # none ended, nor began
    assert "10 pending (sent at the next start)" in server.output
    with serve(tmp_path, rules(tmp_path, new)) as again:
        again.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 0)
    after = runs(tmp_path)[8:]
    assert sorted(run[1] for run in after if run[0] == "end") == sorted(vms)
    assert {Path(run[6]).name for run in after} == {"new-act.sh"}
    keys = {run[1]: run[3] for run in first}
    assert all(run[3] == keys[run[1]] for run in after if run[1] in keys)


def test_a_sigkilled_server_leaves_no_action_program_behind(tmp_path):
    """SIGKILL of the server (the OOM killer, ``kill -9``) while a command hangs: the program
    and the process it started end with the server (its keeper's parent-death signal), rather
    than hanging on for good and being run again beside itself by the next start."""
    children = tmp_path / "children"
    script = program(tmp_path, 'sleep 300 &\necho $! >> %s\nwait\n' % children)
    with serve(tmp_path, rules(tmp_path, script)) as server:
        server.send_udp(line("10.0.0.1", int(time.time()), 95.0))
        wait_until(lambda: runs(tmp_path) and pids(children))
        family = [int(runs(tmp_path)[0][4]), *pids(children)]
        assert all(alive(pid) for pid in family)
        left = server.killed_leaving(family)
    assert left == []


#: A reactor with one command action (its program: record its pid, then hang): one run more
#: than the action's concurrency is sent, and the action halted (a stop) once the first eight
#: run.  Prints how each run's Deferred ended.
HALTED = '''
import sys
from twisted.internet import defer, reactor, task
from vmstats.rules.notifiers.command import CONCURRENCY, Command

pids = sys.argv[1]
action = Command("run", ("/bin/sh", "-c", "echo $$ >> %s; exec sleep 300" % pids), 60.0)
event = {"rule": "hot", "scope": "10.0.0.1", "kind": "transition", "from": "ok", "to": "alarm",
         "at": 0.0, "value": 95.0}
ends = []
runs = [action.send(reactor, event, "k%d" % i).addErrback(lambda f: f.type.__name__)
        for i in range(CONCURRENCY + 1)]
for run in runs:
    run.addCallback(ends.append)

def running():
    with open(pids) as started:
        return len(started.read().split()) == CONCURRENCY

def halt(_):
    action.halt()
    return defer.DeferredList(runs)

watch = task.LoopingCall(lambda: running() and watch.stop())
watch.start(0.02).addCallback(halt).addCallback(lambda _: print(ends)).addBoth(
    lambda _: reactor.stop())
reactor.callLater(20, reactor.stop)
reactor.run()
'''


def test_a_halted_command_action_ends_its_runs_and_starts_none_of_those_waiting(tmp_path):
    """A stop halts each command action: the runs under way are killed (their deliveries stay
    pending for the next start) and the one waiting for a slot is not started when the killed
    ones free theirs; none of their Deferreds is left waiting.  Before, a stop let the queue
    go on starting programs while the reactor still ran."""
    started = tmp_path / "pids"
    started.touch()
    done = subprocess.run([sys.executable, "-c", HALTED, str(started)], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert done.stdout.strip() == str(["CancelledError"] * 9), done.stderr
    wait_until(lambda: not any(alive(pid) for pid in pids(started)), 5)
    assert len(pids(started)) == 8  # the ninth never started
