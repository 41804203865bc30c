"""Alert grouping (``group_by`` on an action): the file's syntax, the groups' timers on a test
clock, what each notification carries, and what the action log replays of them.

The server end to end (real datagrams from 200 VMs, a real webhook receiver and a real SMTP
server) is in test_rules_server.py.
"""

import json
import subprocess
import sys

import pytest
from rulesutil import Clock, feed, row
from twisted.internet import defer, task

from vmstats.rules import actionlog
from vmstats.rules.config import RulesError, parse_rules
from vmstats.rules.delivery import Dispatcher
from vmstats.rules.evaluator import Engine
from vmstats.rules.grouping import Batch, Grouping
from vmstats.rules.notifiers import DeliveryError, Notifier, group_summary
from vmstats.rules.notifiers.webhook import alertmanager_body, alertmanager_group_body


def _rules(action: dict, **rule) -> dict:
    return {"action": {"a": action},
            "rule": [dict({"name": "hot", "metric": "cpu", "enter": 90, "actions": ["a"]}, **rule)]}


HOOK = {"kind": "webhook", "url": "http://127.0.0.1:1/hook"}


def test_without_group_by_an_action_sends_each_event_at_once_as_before():
    ruleset = parse_rules(_rules(HOOK))
    assert ruleset.actions["a"].grouping is None and ruleset.rules[0].labels == ()


def test_rules_check_says_how_an_action_groups(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text('[action.a]\nkind = "webhook"\nurl = "http://127.0.0.1:1/"\n'
                    'group_by = ["rule", "host"]\nrepeat_interval = 0\n\n'
                    '[[rule]]\nname = "hot"\nmetric = "cpu"\nenter = 90\nactions = ["a"]\n')
    done = subprocess.run([sys.executable, "-m", "vmstats", "rules", "check", str(path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert ("action a: webhook; one notification per group of alertname, host, first after 30s, "
            "changes at most every 300s, never repeated") in done.stdout


def test_group_by_takes_alertmanagers_defaults_and_names_the_tags_rules_carry():
    ruleset = parse_rules(_rules(dict(HOOK, group_by=["rule", "host", "owner"])))
    grouping = ruleset.actions["a"].grouping
    assert grouping == Grouping(by=("alertname", "host", "owner"), wait=30.0, interval=300.0,
                                repeat=14400.0)
    assert ruleset.rules[0].labels == ("host", "owner")  # the VMs' tags its alerts carry
    every = parse_rules(_rules(dict(HOOK, group_by=[], group_wait="5s", group_interval="1m",
                                    repeat_interval=0))).actions["a"].grouping
    assert (every.by, every.wait, every.interval, every.repeat) == ((), 5.0, 60.0, None)


@pytest.mark.parametrize("action, problem", [
    ({"kind": "command", "argv": ["x"], "group_by": ["alertname"]},
     "group_by: a command action takes one event at a time: only apprise and webhook actions "
     "group alerts"),
    ({"kind": "log", "group_wait": "1s"},
     "group_wait: a log action takes one event at a time: only apprise and webhook actions "
     "group alerts"),
    (dict(HOOK, group_wait="10s"),
     "group_wait: only with group_by (without it each event is sent on its own, at once)"),
    (dict(HOOK, group_by="host"),
     "group_by: expected a list of label names, e.g. [\"alertname\", \"host\"] ([] puts every "
     "alert in one group), got 'host'"),
    (dict(HOOK, group_by=["host"], group_interval=0),
     "group_interval: must be more than 0 (the least time between two notifications of a group)"),
    (dict(HOOK, group_by=["host"], group_interval="5m", repeat_interval="1m"),
     "repeat_interval: must be at least group_interval (300s), got 60s"),
    (dict(HOOK, group_by=["host"], max_alerts=-1), "max_alerts: must be at least 0, got -1"),
    (dict(HOOK, max_alerts=10),
     "max_alerts: only with group_by (without it each event is sent on its own, at once)"),
    (dict(HOOK, group_by=["host"], group_wait="soon"),
     "group_wait: 'soon' is not a duration like 90s, 5m or 1h"),
])
def test_grouping_that_cannot_work_is_one_problem(action, problem):
    with pytest.raises(RulesError) as caught:
        parse_rules(_rules(action))
    assert caught.value.problems == ["action a: " + problem]


def test_alerts_carry_the_tags_grouped_by_even_when_the_sweep_decides():
    clock = Clock()
    eng = Engine(parse_rules(_rules(dict(HOOK, group_by=["host"]), silent_after="2m")), clock)
    [fired] = [e for e in _tick(eng, clock, "10.0.0.1", row(95.0, host="kvm1", tags=[("team", "a")]))
               if e["kind"] == "transition"]
    assert fired["labels"] == {"host": "kvm1"}  # only what the grouping names
    clock.now += 180
    eng.sweep()
    [silent] = eng.take()
    assert (silent["to"], silent["labels"]) == ("silent", {"host": "kvm1"})
    plain = Engine(parse_rules(_rules(HOOK)), clock)
    assert "labels" not in feed(plain, clock, "10.0.0.1", 95.0, host="kvm1")[0]


def _tick(eng: Engine, clock: Clock, vm: str, held: bytes) -> list[dict]:
    eng.observe([vm], [int(clock.now)], [held])
    eng.process()
    return eng.take()


class _Log:
    """The action log's interface: every append on disk at once, and kept."""

    def __init__(self):
        self.entries: list[dict] = []

    def append(self, entries):
        self.entries.extend(json.loads(json.dumps(e)) for e in entries)
        return defer.succeed(None)


class _Receiver(Notifier):
    """A grouping action whose sends wait for the test to answer them."""

    kind = "webhook"
    groups = True

    def __init__(self, grouping: Grouping):
        super().__init__("hook")
        self.grouping = grouping
        self.sends: list[tuple] = []

    def send_group(self, reactor, batch, key):
        self.sends.append((json.loads(alertmanager_group_body(batch, "hook")), key, defer.Deferred()))
        return self.sends[-1][2]


def _event(vm: str, to: str, at: float, seq: int, host: str = "kvm1", kind="transition") -> dict:
    return {"kind": kind, "key": "%s-%d" % (vm, seq), "rule": "hot", "scope": vm, "at": at,
            "from": "ok" if to != "ok" else "alarm", "to": to, "seq": seq, "since": at,
            "began": at - 60, "value": 95.0, "threshold": 90.0, "fingerprint": "f",
            "actions": ["hook"], "labels": {"host": host}}


def _answer(receiver: _Receiver, ok: bool = True) -> dict:
    body, _key, d = receiver.sends[-1]
    if ok:
        d.callback(None)
    else:
        d.errback(DeliveryError("HTTP 503"))
    return body


def _dispatcher(grouping: Grouping, **kwargs):
    clock, log = task.Clock(), _Log()
    receiver = _Receiver(grouping)
    return clock, log, receiver, Dispatcher(clock, log, {"hook": receiver}, retry_for=3600,
                                            retry_min=1.0, retry_max=8.0, **kwargs)


def test_a_fleet_firing_at_once_is_one_notification_per_group_after_group_wait():
    clock, log, receiver, dispatcher = _dispatcher(Grouping(by=("alertname", "host"), wait=30,
                                                            interval=300, repeat=3600))
    dispatcher.submit([_event("10.0.0.%d" % i, "alarm", 0.0, 1, "kvm%d" % (i % 2))
                       for i in range(200)])
    clock.advance(29)
    assert receiver.sends == []  # group_wait collects the first batch
    clock.advance(1)
    assert len(receiver.sends) == 2
    for host in ("kvm0", "kvm1"):
        body = next(b for b, _k, _d in receiver.sends if b["groupLabels"]["host"] == host)
        assert body["groupLabels"] == {"alertname": "hot", "host": host}
        assert body["groupKey"] == '{}:{alertname="hot", host="%s"}' % host
        assert body["status"] == "firing" and len(body["alerts"]) == 100
        assert body["commonLabels"] == {"alertname": "hot", "host": host, "source": "vmstats"}
        assert {a["status"] for a in body["alerts"]} == {"firing"}
    for i in range(2):
        _answer(receiver) if i else receiver.sends[0][2].callback(None)
    assert dispatcher.counts[("hook", "delivered")] == 200 and not dispatcher.pending
    assert dispatcher.counts[("hook", "notifications")] == 2
    # Logged as Alertmanager-free entries a replay reads: each attempt covers its 100.
    attempts = [e for e in log.entries if e["type"] == "attempt"]
    assert [len(e["covers"]) for e in attempts] == [100, 100]
    assert actionlog.replay(log.entries).pending == {}


def test_each_alert_of_a_group_resolves_or_goes_silent_on_its_own_then_leaves_it():
    clock, _log, receiver, dispatcher = _dispatcher(Grouping(by=("alertname",), wait=10,
                                                             interval=60, repeat=600))
    dispatcher.submit([_event("vm%d" % i, "alarm", 0.0, 1) for i in range(5)])
    clock.advance(10)
    first = _answer(receiver)
    assert [a["status"] for a in first["alerts"]] == ["firing"] * 5
    clock.advance(5)
    dispatcher.submit([_event("vm0", "ok", 15.0, 2), _event("vm1", "silent", 15.0, 2),
                       _event("vm9", "alarm", 15.0, 1)])
    clock.advance(54)
    assert len(receiver.sends) == 1  # group_interval after the last notification
    clock.advance(1)
    second = _answer(receiver)
    states = {a["labels"]["scope"]: (a["status"], a["annotations"]["state"])
              for a in second["alerts"]}
    assert states == {"vm0": ("resolved", "ok"), "vm1": ("firing", "silent"),
                      "vm2": ("firing", "alarm"), "vm3": ("firing", "alarm"),
                      "vm4": ("firing", "alarm"), "vm9": ("firing", "alarm")}
    resolved = next(a for a in second["alerts"] if a["labels"]["scope"] == "vm0")
    before = next(a for a in first["alerts"] if a["labels"]["scope"] == "vm0")
    assert resolved["fingerprint"] == before["fingerprint"] and second["status"] == "firing"
    # Nothing new: repeat_interval later the group again, without the resolved alert.
    clock.advance(599)
    assert len(receiver.sends) == 2
    clock.advance(1)
    third = _answer(receiver)
    assert sorted(a["labels"]["scope"] for a in third["alerts"]) == ["vm1", "vm2", "vm3", "vm4", "vm9"]
    # Every alert resolved: one last notification, all resolved, and the group is let go.
    dispatcher.submit([_event(vm, "ok", 700.0, 3) for vm in ("vm1", "vm2", "vm3", "vm4", "vm9")])
    clock.advance(60)
    last = _answer(receiver)
    assert last["status"] == "resolved" and len(last["alerts"]) == 5
    assert dispatcher.groups["hook"] == {} and dispatcher._placed["hook"] == {}
    clock.advance(10_000)
    assert len(receiver.sends) == 4


def test_max_alerts_bounds_a_notification_news_first_and_what_it_cuts_waits_for_the_next():
    clock, log, receiver, dispatcher = _dispatcher(Grouping(by=("alertname",), wait=10,
                                                            interval=60, repeat=600, max_alerts=50))
    dispatcher.submit([_event("vm%03d" % i, "alarm", float(i) / 100, 1) for i in range(120)])
    clock.advance(10)
    first = _answer(receiver)
    assert (len(first["alerts"]), first["truncatedAlerts"]) == (50, 70)
    assert [a["labels"]["scope"] for a in first["alerts"]] == ["vm%03d" % i for i in range(50)]
    assert dispatcher.counts[("hook", "delivered")] == 50 and len(dispatcher.pending) == 70
    # What was cut is not done: the attempt covers the 50 it carried, a replay keeps the rest.
    assert len([e for e in log.entries if e["type"] == "attempt"][0]["covers"]) == 50
    assert len(actionlog.replay(log.entries).pending) == 70
    # Three resolve meanwhile: news, as the 70 cut are; the oldest news go first.
    dispatcher.submit([_event(vm, "ok", 20.0, 2) for vm in ("vm000", "vm001", "vm119")])
    clock.advance(60)
    second = _answer(receiver)
    assert [a["labels"]["scope"] for a in second["alerts"]] == ["vm%03d" % i for i in range(50, 100)]
    assert second["truncatedAlerts"] == 70
    clock.advance(60)
    third = _answer(receiver)  # the last 22 news, then 28 of the alerts carried again
    shown = {a["labels"]["scope"]: a["status"] for a in third["alerts"]}
    assert len(shown) == 50 and third["truncatedAlerts"] == 70
    assert {vm for vm, status in shown.items() if status == "resolved"} == {"vm000", "vm001", "vm119"}
    assert {"vm%03d" % i for i in range(100, 119)} <= set(shown)
    assert not dispatcher.pending and dispatcher.counts[("hook", "delivered")] == 123
    assert dispatcher.counts[("hook", "notifications")] == 3
    # Nothing new: the repeat carries the first 50 of the 117 still firing, and says so.
    clock.advance(600)
    repeat = _answer(receiver)
    assert (len(repeat["alerts"]), repeat["truncatedAlerts"]) == (50, 67)
    # A mail or chat message says so under its title.
    title, text = group_summary(Batch("k", {"alertname": "hot"}, [(_event("vm0", "alarm", 0.0, 1), "k1")],
                                      [], 67))
    assert text.splitlines()[:2] == [title + " (1 alert)",
                                     "and 67 more of the group, not listed (max_alerts)"]


def test_an_alert_that_fires_and_resolves_within_group_wait_is_sent_once_resolved():
    clock, _log, receiver, dispatcher = _dispatcher(Grouping(by=(), wait=30, interval=60,
                                                             repeat=None))
    dispatcher.submit([_event("vm0", "alarm", 0.0, 1), _event("vm1", "alarm", 0.0, 1)])
    clock.advance(5)
    dispatcher.submit([_event("vm0", "ok", 5.0, 2)])
    clock.advance(25)
    body = _answer(receiver)
    assert [(a["labels"]["scope"], a["status"]) for a in body["alerts"]] == [("vm1", "firing"),
                                                                             ("vm0", "resolved")]
    assert body["groupLabels"] == {} and body["groupKey"] == "{}:{}"
    assert dispatcher.counts[("hook", "delivered")] == 3 and not dispatcher.pending


def test_a_failed_notification_is_retried_with_backoff_and_what_the_group_then_holds():
    clock, log, receiver, dispatcher = _dispatcher(Grouping(by=("alertname",), wait=1,
                                                            interval=60, repeat=None))
    dispatcher.submit([_event("vm0", "alarm", 0.0, 1)])
    clock.advance(1)
    _answer(receiver, ok=False)
    dispatcher.submit([_event("vm1", "alarm", 1.5, 1)])
    clock.advance(0.9)
    assert len(receiver.sends) == 1  # retry_min after the failure, not at once
    clock.advance(0.1)
    body = _answer(receiver, ok=False)
    assert sorted(a["labels"]["scope"] for a in body["alerts"]) == ["vm0", "vm1"]
    clock.advance(1.9)
    assert len(receiver.sends) == 2  # doubled
    clock.advance(0.1)
    _answer(receiver)
    assert dispatcher.counts[("hook", "failed")] == 2 and dispatcher.counts[("hook", "delivered")] == 2
    keys = [k for _b, k, _d in receiver.sends]
    assert len(set(keys)) == 3  # each notification its own key
    replayed = actionlog.replay(log.entries)
    assert replayed.pending == {} and replayed.outcomes[("hook", "delivered")] == 2


def test_a_crash_before_the_answer_gathers_the_deliveries_again_with_the_alerts_still_firing():
    grouping = Grouping(by=("alertname",), wait=5, interval=60, repeat=None)
    clock, log, receiver, dispatcher = _dispatcher(grouping)
    dispatcher.submit([_event("vm0", "alarm", 0.0, 1)])
    clock.advance(5)
    _answer(receiver)
    dispatcher.submit([_event("vm1", "alarm", 10.0, 1)])
    clock.advance(60)
    assert len(receiver.sends) == 2  # sent, never answered: the server is killed here
    replayed = actionlog.replay(log.entries)
    assert list(replayed.pending) == ["vm1-1.hook"] and replayed.pending["vm1-1.hook"].attempts == 1
    states = [e["event"] for e in log.entries if e["type"] == "event"]
    clock, log, receiver, dispatcher = _dispatcher(grouping)
    dispatcher.resume(list(replayed.pending.values()), states)
    clock.advance(5)
    body = _answer(receiver)
    assert sorted(a["labels"]["scope"] for a in body["alerts"]) == ["vm0", "vm1"]
    assert not dispatcher.pending


def test_past_max_pending_a_groups_oldest_deliveries_are_dropped_and_its_alerts_kept():
    clock, log, receiver, dispatcher = _dispatcher(Grouping(by=("alertname",), wait=5,
                                                            interval=60, repeat=None),
                                                   max_pending=50)
    dispatcher.submit([_event("vm%d" % i, "alarm", 0.0, 1) for i in range(80)])
    assert len(dispatcher.pending) == 50 and dispatcher.counts[("hook", "dropped")] == 30
    [group] = dispatcher.groups["hook"].values()
    assert len(group.waiting) == 50 and len(group.alerts) == 80
    clock.advance(5)
    body = _answer(receiver)
    assert len(body["alerts"]) == 80 and dispatcher.counts[("hook", "delivered")] == 50
    assert actionlog.replay(log.entries).outcomes[("hook", "dropped")] == 30


def test_one_alert_alone_is_the_body_it_always_was():
    event = _event("vm0", "alarm", 0.0, 1)
    del event["labels"]
    body = json.loads(alertmanager_body(event, "hook", "k"))
    assert body["groupLabels"] == {"alertname": "hot", "scope": "vm0"}
    assert body["groupKey"] == '{}:{alertname="hot", scope="vm0"}'
    assert body["commonLabels"] == {"alertname": "hot", "scope": "vm0", "source": "vmstats"}
    assert body["commonAnnotations"] == body["alerts"][0]["annotations"]


class _Single(Notifier):
    """An action without grouping that takes every event at once."""

    kind = "webhook"

    def __init__(self):
        super().__init__("hook")
        self.keys: list[str] = []

    def send(self, reactor, event, key):
        self.keys.append(key)
        return defer.succeed(None)


def test_a_reload_that_ends_an_actions_grouping_sends_what_its_groups_held_one_by_one():
    clock, _log, receiver, dispatcher = _dispatcher(Grouping(by=("alertname",), wait=30,
                                                             interval=60, repeat=None))
    dispatcher.submit([_event("vm0", "alarm", 0.0, 1), _event("vm1", "alarm", 0.0, 1)])
    single = _Single()
    dispatcher.actions = {"hook": single}
    dispatcher.regroup()
    assert sorted(single.keys) == ["vm0-1.hook", "vm1-1.hook"] and not dispatcher.pending
    assert dispatcher.groups == {}
    clock.advance(100)
    assert receiver.sends == []  # the old group's timer is gone with it
    # Grouped again, by host now: what the old groups held goes to the new groups.
    regrouped = _Receiver(Grouping(by=("host",), wait=5, interval=60, repeat=None))
    dispatcher.actions = {"hook": regrouped}
    dispatcher.submit([_event("vm2", "alarm", 100.0, 1, "kvm2")])
    dispatcher.actions = {"hook": _Receiver(Grouping(by=("alertname",), wait=5, interval=60,
                                                     repeat=None))}
    dispatcher.regroup()
    [group] = dispatcher.groups["hook"].values()
    assert group.labels == {"alertname": "hot"} and list(group.waiting) == ["vm2-1.hook"]


def test_a_mute_made_while_alerts_fire_keeps_them_out_of_the_groups_repeats():
    """Alertmanager leaves silenced alerts out of a group's notifications: a mute made for
    maintenance while vm0 and vm1 fire must not page them every repeat_interval."""
    muting: set[str] = set()

    class _Mute:
        id = "m1"

    def muted(event: dict):
        return _Mute() if event["scope"] in muting else None

    clock, _log, receiver, dispatcher = _dispatcher(
        Grouping(by=("alertname",), wait=10, interval=60, repeat=600), muted=muted)
    dispatcher.submit([_event("vm%d" % i, "alarm", 0.0, 1) for i in range(3)])
    clock.advance(10)
    assert len(_answer(receiver)["alerts"]) == 3
    muting.update(("vm0", "vm1"))
    clock.advance(600)  # the repeat: vm2 alone
    assert [a["labels"]["scope"] for a in _answer(receiver)["alerts"]] == ["vm2"]
    # News of vm2 within the mute: sent with vm2 only, the muted ones still left out.
    dispatcher.submit([_event("vm2", "ok", 700.0, 2)])
    clock.advance(60)
    body = _answer(receiver)
    assert [(a["labels"]["scope"], a["status"]) for a in body["alerts"]] == [("vm2", "resolved")]
    # Every alert the group holds is muted: the repeats send nothing, and are not retried.
    for _ in range(3):
        clock.advance(600)
    assert len(receiver.sends) == 3
    # The mute ends with vm0 and vm1 still firing: the next repeat carries them again.
    muting.clear()
    clock.advance(600)
    assert sorted(a["labels"]["scope"] for a in _answer(receiver)["alerts"]) == ["vm0", "vm1"]


def test_insufficient_data_is_told_as_such_in_a_group_and_does_not_repeat():
    """Counted among the firing, "insufficient-data" paged someone as an alarm and kept its
    group repeating for an alarm no one measured.  A mail lists it under its own heading; the
    Alertmanager JSON resolves it (its annotations say the state), and it leaves the group."""
    clock, _log, receiver, dispatcher = _dispatcher(Grouping(by=(), wait=1, interval=60,
                                                             repeat=600))
    dispatcher.submit([_event("vm0", "alarm", 0.0, 1), _event("vm1", "alarm", 0.0, 1)])
    clock.advance(1)
    _answer(receiver)
    dispatcher.submit([_event("vm1", "insufficient-data", 5.0, 2), _event("vm2", "ok", 5.0, 2)])
    clock.advance(60)
    body = _answer(receiver)
    assert [(a["labels"]["scope"], a["status"], a["annotations"]["state"]) for a in body["alerts"]] == [
        ("vm0", "firing", "alarm"), ("vm1", "resolved", "insufficient-data"),
        ("vm2", "resolved", "ok")]
    clock.advance(600)
    repeat = _answer(receiver)
    assert [a["labels"]["scope"] for a in repeat["alerts"]] == ["vm0"]
    title, text = group_summary(Batch("k", {"alertname": "hot"}, [
        (_event("vm0", "alarm", 0.0, 1), "k0"), (_event("vm1", "insufficient-data", 0.0, 2), "k1"),
        (_event("vm2", "ok", 0.0, 2), "k2")]))
    assert title == "[FIRING:1 INSUFFICIENT-DATA:1 RESOLVED:1] alertname=hot"
    lines = text.splitlines()
    assert lines[lines.index("insufficient-data:") + 1].startswith("- hot vm1: ok -> insufficient-data")


def test_after_a_restart_a_group_lists_what_fires_not_what_is_insufficient_data():
    """At start the groups hold the alerts the log says are not ok, to list them in their next
    notification: an insufficient-data alert, told once and gone from its group, came back
    in every group's next notification after each restart."""
    clock, _log, receiver, dispatcher = _dispatcher(Grouping(by=(), wait=1, interval=60,
                                                             repeat=600))
    dispatcher.resume([], [_event("vm0", "alarm", 0.0, 1), _event("vm1", "insufficient-data", 0.0, 2)])
    dispatcher.submit([_event("vm2", "alarm", 1.0, 1)])
    clock.advance(60)  # the group was told of them before: its next notification, an interval on
    assert [a["labels"]["scope"] for a in _answer(receiver)["alerts"]] == ["vm0", "vm2"]


def test_a_grouped_action_removed_by_a_reload_sends_its_groups_resolutions_then_is_let_go():
    clock, _log, receiver, dispatcher = _dispatcher(Grouping(by=("alertname",), wait=5,
                                                             interval=60, repeat=None))
    dispatcher.submit([_event("vm0", "alarm", 0.0, 1), _event("vm1", "alarm", 0.0, 1)])
    clock.advance(5)
    _answer(receiver)
    # The rule and its action removed in one reload: the rule's resolutions still go out.
    replaced, dispatcher.actions = dispatcher.actions, {}
    dispatcher.retire(replaced)
    dispatcher.submit([_event("vm0", "ok", 10.0, 2), _event("vm1", "ok", 10.0, 2)])
    clock.advance(0)
    assert "hook" in dispatcher.retired
    clock.advance(60)
    body = _answer(receiver)
    assert sorted((a["labels"]["scope"], a["status"]) for a in body["alerts"]) == [
        ("vm0", "resolved"), ("vm1", "resolved")]
    clock.advance(0)
    assert dispatcher.retired == {} and dispatcher.groups == {} and not dispatcher.pending
    assert dispatcher.counts[("hook", "gave_up")] == 0
