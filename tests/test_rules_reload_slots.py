"""A reload keeps an action's concurrency: the new notifier waits for the replaced one's runs.

A real server on loopback, a real rules file reloaded by SIGHUP, real programs recording their
start and end.  Before, every reload built the action's notifier anew with slots of its own,
and the replaced one kept running what it had: a ``command`` action ran 8 programs of the old
notifier and 8 of the new at once, 16, past the limit an operator relies on to spare what the
program talks to; a webhook held 32 requests at once, an apprise action sent on 8 threads.
"""

import json
import signal
import time
from pathlib import Path

from rulesutil import line, rules_file, serve, wait_until
from test_rules_turns import gated, nothing_left, reloaded, runs  # noqa: F401 (a fixture)

from vmstats.rules.notifiers.command import CONCURRENCY


def most_at_once(folder: Path) -> int:
    """The most runs recorded started and not yet ended at one time."""
    running = most = 0
    for run in runs(folder):
        running += 1 if run[0] == "start" else -1
        most = max(most, running)
    return most


def marker(folder: Path) -> Path:
    """A program of another action that only leaves a file: run after the alerts raised before
    it have been handed to their action, it tells the test they have been."""
    script = folder / "mark.sh"
    script.write_text("#!/bin/sh\ntouch %s\n" % (folder / "marked"))
    script.chmod(0o755)
    return script


def rules(folder: Path, script: Path) -> str:
    body = ('[action.run]\nkind = "command"\nargv = ["%s"]\n\n[action.mark]\nkind = "command"\n'
            'argv = ["%s"]\n\n[[rule]]\nname = "hot"\nmetric = "cpu"\nenter = 90\nexit = 70\n'
            'period = 1\nactions = ["run"]\n\n[[rule]]\nname = "full"\nmetric = "mem"\n'
            'enter = 90\nexit = 70\nperiod = 1\nactions = ["mark"]\n'
            % (script, marker(folder)))
    return rules_file(folder, "http://127.0.0.1:9/", body)


def test_a_reloaded_command_action_runs_no_more_programs_at_once_than_its_limit(tmp_path,
                                                                                 monkeypatch):
    """Eight runs of the old program hang when the reload replaces the action; eight alerts
    raised after it wait for their slots (an alert of another action, raised after them, has
    run meanwhile) and run the new program as the old runs end: never more than 8 at once,
    each delivered once."""
    import test_rules_turns

    monkeypatch.setattr(test_rules_turns, "rules", rules)  # what ``reloaded`` writes
    old, new = gated(tmp_path, "old-act.sh"), gated(tmp_path, "new-act.sh")
    vms = ["10.0.0.%d" % i for i in range(1, 2 * CONCURRENCY + 1)]
    with serve(tmp_path, rules(tmp_path, old)) as server:
        now = int(time.time())
        server.send_udp(*[line(vm, now, 95.0) for vm in vms[:CONCURRENCY]])
        wait_until(lambda: len(runs(tmp_path)) == CONCURRENCY)
        reloaded(server, tmp_path, new)
        server.send_udp(*[line(vm, now, 95.0) for vm in vms[CONCURRENCY:]])
        server.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 2 * CONCURRENCY)
        server.send_udp(line("10.0.0.99", now, 10.0, mem=95.0))
        wait_until(lambda: (tmp_path / "marked").exists())
        assert len(runs(tmp_path)) == CONCURRENCY and most_at_once(tmp_path) == CONCURRENCY
        (tmp_path / "gate").touch()
        server.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 0)
    ended = {run[1]: Path(run[6]).name for run in runs(tmp_path) if run[0] == "end"}
    assert len(runs(tmp_path)) == 4 * CONCURRENCY and sorted(ended) == sorted(vms)  # each once
    assert ended == dict({vm: "old-act.sh" for vm in vms[:CONCURRENCY]},
                         **{vm: "new-act.sh" for vm in vms[CONCURRENCY:]})
    assert most_at_once(tmp_path) == CONCURRENCY


def test_an_apprise_action_a_reload_built_anew_sends_on_the_replaced_ones_threads(monkeypatch):
    """An apprise action's threads are its slots: the replaced one's sends still queued and the
    new one's go through the same 4 threads, not 4 more (the replaced one's are not closed)."""
    import threading

    from twisted.internet import task

    from vmstats.rules.notifiers.apprise_url import THREADS, AppriseURL

    reactor = task.Clock()  # the sends' timeouts; their results are not looked at
    reactor.callFromThread = lambda *args: None
    gate = threading.Event()
    monkeypatch.setattr(AppriseURL, "_notify", lambda self, title, body: gate.wait(10))
    urls = ("json://127.0.0.1:9/",)
    replaced, current = AppriseURL("mail", urls), AppriseURL("mail", urls)
    try:
        for n in range(THREADS + 1):
            replaced._send(reactor, "t", str(n))
        current.take_over(replaced)
        replaced.close()
        for n in range(THREADS + 1):
            current._send(reactor, "t", str(n))
        threads = [t for t in threading.enumerate() if t.name.startswith("vmstats-apprise-mail")]
        assert len(threads) == THREADS
    finally:
        gate.set()
        current.close()


class HeldReceiver:
    """A webhook receiver on loopback that holds every request until ``gate`` is set, counting
    the requests it holds at once (the most, too) and the alerts' keys it was sent."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler

        from rulesutil import _Server

        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.held = self.most = 0
        self.keys: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.held += 1
                    receiver.most = max(receiver.most, receiver.held)
                    receiver.keys += [a["annotations"]["idempotency_key"]
                                      for a in json.loads(body)["alerts"]]
                receiver.gate.wait(30)
                with receiver.lock:
                    receiver.held -= 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


def test_a_reloaded_webhook_action_makes_no_more_requests_at_once_than_its_limit(tmp_path):
    """As for a command: 16 requests held by the receiver when the reload replaces the action,
    16 alerts raised after it wait for the replaced one's to be answered: never more than 16
    at once, each alert sent once."""
    from vmstats.rules.notifiers.webhook import CONCURRENCY as REQUESTS

    receiver = HeldReceiver()
    body = ('[action.mark]\nkind = "command"\nargv = ["%s"]\n\n[[rule]]\nname = "hot"\n'
            'metric = "cpu"\nenter = 90\nexit = 70\nperiod = 1\nactions = ["hook"]\n\n[[rule]]\n'
            'name = "full"\nmetric = "mem"\nenter = 90\nexit = 70\nperiod = 1\nactions = ["mark"]\n'
            % marker(tmp_path))
    path = rules_file(tmp_path, receiver.url, body)
    vms = ["10.0.%d.%d" % divmod(i, 200) for i in range(2 * REQUESTS)]
    try:
        with serve(tmp_path, path) as server:
            now = int(time.time())
            server.send_udp(*[line(vm, now, 95.0) for vm in vms[:REQUESTS]])
            wait_until(lambda: receiver.held == REQUESTS)
            reloads = server.metrics().get('vmstats_rule_reloads_total{result="ok"}', 0)
            server.proc.send_signal(signal.SIGHUP)
            server.wait_metrics(lambda m: m.get('vmstats_rule_reloads_total{result="ok"}') == reloads + 1)
            server.send_udp(*[line(vm, now, 95.0) for vm in vms[REQUESTS:]])
            server.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 2 * REQUESTS)
            server.send_udp(line("10.1.0.99", now, 10.0, mem=95.0))
            wait_until(lambda: (tmp_path / "marked").exists())
            wait_until(lambda: receiver.held >= REQUESTS)
            assert receiver.most == REQUESTS  # the new ones wait (before: 32 held at once)
            receiver.gate.set()
            server.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 0)
    finally:
        receiver.close()
    assert receiver.most == REQUESTS
    assert len(receiver.keys) == len(set(receiver.keys)) == 2 * REQUESTS  # each once
