"""The rules engine on a driven clock: M of N, hysteresis, hold, missing data, silence, scaling.

These run the real Engine and config parser in-process with a clock the test
moves, so hours of rule time take milliseconds; the server-level tests
(test_rules_server.py) prove the same engine is fed by the real receive path.
"""

import pytest
from rulesutil import Clock, engine, feed, row, warmed

from vmstats.rules.config import RulesError, parse_rules
from vmstats.rules.evaluator import Engine, aggregate
from vmstats.rules.metric import NAMES
from vmstats.rules.scaling import desired_count, placement


def test_m_of_n_with_separate_enter_and_exit_thresholds():
    clock = Clock()
    eng = engine([{"name": "hot", "metric": "cpu", "enter": 90, "exit": 70, "datapoints": 2,
                   "periods": 3, "period": 60, "actions": ["say"]}], clock)
    seen = []
    for cpu in (95, 50, 95, 85, 80, 60, 65):
        seen += feed(eng, clock, "10.0.0.1", cpu)
        clock.now += 60
    # alarm at the second breach (2 of 3), held through 85 and 80 (above exit 70), ok at the
    # second value below 70.
    assert [(e["from"], e["to"], e["value"]) for e in seen] == [("ok", "alarm", 95.0),
                                                                  ("alarm", "ok", 65.0)]
    assert seen[0]["threshold"] == 90 and seen[1]["threshold"] == 70
    assert seen[0]["actions"] == ["say"] and seen[0]["key"] != seen[1]["key"]


def test_flapping_around_the_threshold_notifies_at_most_once_per_hold():
    clock = Clock()
    hold = 300
    eng = engine([{"name": "flap", "metric": "cpu", "enter": 50, "period": 10, "hold": hold}], clock)
    seen = []
    for step in range(360):  # an hour, a record each 10 s oscillating +-5% around 50
        seen += feed(eng, clock, "10.0.0.1", 52.5 if step % 2 else 47.5)
        clock.now += 10
    times = [e["at"] for e in seen]
    assert len(seen) >= 2  # it does move: the hold limits it, it does not freeze it
    assert all(b - a >= hold for a, b in zip(times, times[1:], strict=False))
    assert len(seen) <= 3600 // hold + 1


@pytest.mark.parametrize("policy, expected", [
    ("keep", []),
    ("breaching", [("ok", "alarm")]),
    ("insufficient", [("ok", "insufficient-data")]),
])
def test_missing_data_policies(policy, expected):
    clock = Clock()
    eng = engine([{"name": "m", "metric": "cpu", "enter": 90, "datapoints": 2, "periods": 3,
                   "period": 60, "missing": policy}], clock)
    feed(eng, clock, "10.0.0.1", 10)
    seen = []
    for _ in range(6):  # six minutes without a record
        clock.now += 60
        eng.sweep()
        seen += [e for e in eng.take() if e["kind"] == "transition"]
    assert [(e["from"], e["to"]) for e in seen] == expected


def test_missing_as_ok_clears_an_alarm():
    clock = Clock()
    eng = engine([{"name": "m", "metric": "cpu", "enter": 90, "period": 60, "missing": "ok"}], clock)
    assert [e["to"] for e in feed(eng, clock, "10.0.0.1", 99)] == ["alarm"]
    clock.now += 180
    eng.sweep()
    assert [e["to"] for e in eng.take()] == ["ok"]


def test_silent_vm_is_its_own_state_and_data_ends_it():
    clock = Clock()
    eng = engine([{"name": "s", "metric": "cpu", "enter": 90, "period": 60, "silent_after": "5m",
                   "missing": "keep"}], clock)
    feed(eng, clock, "10.0.0.1", 10)
    feed(eng, clock, "10.0.0.2", 10)
    seen = []
    for _ in range(6):
        clock.now += 60
        seen += feed(eng, clock, "10.0.0.2", 10)  # .2 keeps reporting, .1 stopped
    assert [(e["scope"], e["to"]) for e in seen] == [("10.0.0.1", "silent")]
    clock.now += 60
    assert [(e["scope"], e["from"], e["to"]) for e in feed(eng, clock, "10.0.0.1", 20)] == [
        ("10.0.0.1", "silent", "ok")]


def test_a_record_handed_off_before_the_sweep_keeps_its_vm_from_going_silent():
    """A record that had arrived but waited for the next tick when a sweep came past
    ``silent_after`` (or ``stale_after``): the sweep said the VM silent (or without data) and
    the tick ok again, two notifications for a VM that reported in time.  It is judged after
    the tick now; one whose silence is real still goes silent."""
    clock = Clock()
    eng = engine([{"name": "s", "metric": "cpu", "period": 1, "silent_after": "2s"},
                  {"name": "t", "metric": "cpu", "enter": 90, "period": 1, "stale_after": "2s"}],
                 clock)
    for vm in ("10.0.0.1", "10.0.0.2"):
        feed(eng, clock, vm, 95)
    eng.take()
    clock.now += 2.5
    eng.observe(["10.0.0.1"], [int(clock.now)], [row(95)])  # arrived; the tick comes after
    eng.sweep()
    eng.process()
    assert [(e["rule"], e["scope"], e["to"]) for e in eng.take() if e["kind"] == "transition"] == [
        ("s", "10.0.0.2", "silent"), ("t", "10.0.0.2", "insufficient-data")]


def test_reminders_repeat_while_in_alarm_only():
    clock = Clock()
    eng = engine([{"name": "r", "metric": "cpu", "enter": 90, "period": 60, "remind": "10m"}], clock)
    feed(eng, clock, "10.0.0.1", 99)
    kinds = []
    for _ in range(25):
        clock.now += 60
        eng.observe(["10.0.0.1"], [int(clock.now)], [row(99)])
        eng.process()
        eng.sweep()
        kinds += [e["kind"] for e in eng.take()]
    assert kinds.count("reminder") == 2 and "transition" not in kinds


def test_group_scopes_and_aggregates():
    clock = Clock()
    eng = engine([{"name": "web", "scope": "group", "metric": "cpu", "aggregate": "count_above",
                   "level": 80, "enter": 1, "match": {"id": "web-*", "tags": {"host": "r1-*"}}},
                  {"name": "net", "scope": "group", "metric": "cpu", "aggregate": "max",
                   "enter": 90, "match": {"cidr": "10.1.0.0/16"}}], clock)
    events = {e["rule"]: e for e in warmed(
        eng, clock, ["web-1", "web-2", "web-3", "db-1", "10.1.2.3", "10.2.0.1"],
        [row(90, host="r1-a"), row(95, host="r1-b"), row(99, host="r2-a"), row(99, host="r1-a"),
         row(50), row(99)])}
    assert events["web"]["to"] == "alarm" and events["web"]["value"] == 2.0
    assert events["web"]["members"] == 2
    assert "net" not in events  # 10.2.0.1 is outside the network; the one member is at 50
    assert aggregate("p50", [1.0, 2.0, 3.0, 4.0], None) == 2.5
    assert aggregate("mean", [], None) is None


def test_extra_tags_choose_a_group():
    clock = Clock()
    eng = engine([{"name": "web", "scope": "group", "metric": "cpu", "aggregate": "max",
                   "enter": 90, "match": {"tags": {"project": "web*", "host": "r1"}}}], clock)
    events = warmed(eng, clock, ["a", "b", "c"],
                    [row(95, host="r1", tags=(("owner", "ops"), ("project", "web-shop"))),
                     row(99, host="r2", tags=(("project", "web"),)), row(99, host="r1")])
    assert [(e["to"], e["value"], e["members"]) for e in events] == [("alarm", 95.0, 1)]


def test_target_tracking_formula_tolerance_and_clamp():
    rules = parse_rules({"rule": [{"name": "p", "scope": "group", "metric": "cpu",
                                   "scale": {"target": 60, "min": 2, "max": 8}}]})
    scale = rules.rules[0].scale
    assert desired_count(4, 90, scale) == 6  # ceil(4 x 90 / 60)
    assert desired_count(4, 64, scale) == 4  # within 10 %
    assert desired_count(4, 20, scale) == 2  # ceil(4/3) = 2, at the minimum
    assert desired_count(6, 200, scale) == 8  # clamped
    assert placement({"h1": [90.0, 80.0], "h2": [20.0]}, (), 0) == "h2"
    assert [placement({}, ("a", "b"), turn) for turn in range(3)] == ["a", "b", "a"]


def test_cooldown_defers_a_scale_action_and_decides_again_at_its_end():
    clock = Clock()
    eng = engine([{"name": "pool", "scope": "group", "metric": "cpu", "period": 60,
                   "scale": {"target": 50, "min": 1, "max": 10, "out_cooldown": "3m",
                             "in_cooldown": "10m", "hosts": ["h1", "h2"]}}], clock)
    members = ["10.0.0.%d" % i for i in range(1, 5)]

    def load(cpu):
        eng.observe(members, [int(clock.now)] * 4, [row(cpu)] * 4)
        eng.process()
        eng.sweep()
        return eng.take()

    assert load(100) == []  # the group's first period: its members are still arriving
    clock.now += 60
    first = load(100)  # 4 members at 100 % against 50: 8 wanted
    assert [(e["kind"], e["current"], e["desired"], e["delta"], e["placement"]) for e in first] == [
        ("scale", 4, 8, 4, "h1")]
    clock.now += 60
    held = load(75)  # still short (6 wanted), inside the 3 min scale-out cooldown
    assert [(e["kind"], e["reason"], e["direction"]) for e in held] == [("held", "cooldown", "out")]
    assert held[0]["until"] == first[0]["at"] + 180
    clock.now += 60
    assert load(75) == []  # held is recorded once, not on every evaluation
    clock.now += 61  # the cooldown has ended: decided again on the figures of now
    again = eng.take() + load(80)
    assert [(e["kind"], e["desired"], e["placement"]) for e in again] == [("scale", 7, "h2")]
    # A scale-in right after is held by the scale-in cooldown, measured from the last action...
    clock.now += 30
    assert [(e["kind"], e["direction"]) for e in load(10)] == [("held", "in")]
    # ... but that never blocks a needed scale-out once the scale-out cooldown has passed.
    clock.now += 200
    assert [(e["kind"], e["direction"]) for e in load(100)] == [("scale", "out")]


def test_a_group_decides_nothing_until_its_members_have_had_a_period_to_report():
    """A pool of ten at 20 % (four wanted) whose records come 6 s apart: at the first record a
    group of one at 20 % asked for "2" (a scale-out, current 1), and its cooldown then held the
    real scale-in for ten minutes. Likewise after every member went quiet."""
    clock = Clock()
    eng = engine([{"name": "pool", "scope": "group", "metric": "cpu", "period": 60,
                   "actions": ["say"], "scale": {"target": 60, "min": 2, "max": 20,
                                                 "in_cooldown": "10m"}}], clock)
    seen = []
    start = clock.now
    for t in range(0, 120, 6):
        clock.now = start + t
        eng.observe(["10.0.0.%d" % (t // 6 % 10 + 1)], [int(clock.now)], [row(20.0)])
        eng.process()
        eng.sweep()
        seen += [(t, e["kind"], e["direction"], e["current"], e["desired"]) for e in eng.take()]
    assert seen[0] == (60, "scale", "in", 10, 4)
    assert [s[1] for s in seen[1:]] == ["held"]
    clock.now += 600  # every member quiet for ten minutes: the group empties
    eng.sweep()
    eng.take()
    assert eng.rules["pool"].members == {}
    eng.observe(["10.0.0.1"], [int(clock.now)], [row(20.0)])
    eng.process()
    eng.sweep()
    assert eng.take() == []


def test_a_scale_out_whose_vms_boot_past_its_cooldown_is_asked_for_again_with_the_same_desired():
    """docs/RULES.md's example, why an action sizes the pool to ``desired`` and never adds
    ``delta``: 400 % of demand against a target of 50, new VMs reporting 4 minutes after."""
    clock = Clock()
    eng = engine([{"name": "pool", "scope": "group", "metric": "cpu", "period": 60,
                   "scale": {"target": 50, "max": 20, "out_cooldown": "3m"}}], clock)
    start, pool, booting, decisions = clock.now, ["10.0.0.%d" % i for i in range(1, 5)], [], []
    for t in range(0, 540, 10):
        clock.now = start + t
        pool += [vm for ready, vm in booting if ready == clock.now]
        if t % 60 == 0:
            eng.observe(pool, [int(clock.now)] * len(pool), [row(400.0 / len(pool))] * len(pool))
        eng.process()
        eng.sweep()
        for e in eng.take():
            if e["kind"] == "scale":
                decisions.append((e["current"], e["desired"], e["delta"]))
                booting += [(clock.now + 240, "10.0.1.%d" % (len(booting) + i)) for i in range(e["delta"])]
    assert decisions == [(4, 8, 4), (4, 8, 4)]
    assert len(pool) == 12  # the deltas added up; sized to ``desired`` it is 8


def test_state_is_bounded_and_refusals_counted():
    clock = Clock()
    eng = engine([{"name": "b", "metric": "cpu", "enter": 90}], clock, max_series=3)
    eng.observe(["10.0.0.%d" % i for i in range(10)], [int(clock.now)] * 10, [row(5)] * 10)
    eng.process()
    assert eng.size == 3 and eng.refused == 7


def test_history_is_not_live_data():
    clock = Clock()
    eng = engine([{"name": "h", "metric": "cpu", "enter": 90}], clock)
    assert feed(eng, clock, "10.0.0.1", 99, ts=clock.now - 3600) == []
    assert eng.history_skipped == 1


def test_a_reload_keeps_states_and_the_rules_in_force_decide_their_next_change():
    """An unchanged rule keeps its state as it was; an edited one keeps its scopes' states and
    its new definition decides their next change (an alarm it no longer sees is resolved, one it
    still sees is not fired again); a removed rule's alarms are resolved, saying why."""
    clock = Clock()
    rules = [{"name": "a", "metric": "cpu", "enter": 90}, {"name": "b", "metric": "cpu", "enter": 90},
             {"name": "c", "metric": "cpu", "enter": 90}]
    eng = engine(rules, clock)
    feed(eng, clock, "10.0.0.1", 95)
    feed(eng, clock, "10.0.0.2", 99)
    assert {(s["rule"], s["state"]) for s in eng.states()} == {("a", "alarm"), ("b", "alarm"),
                                                                ("c", "alarm")}
    # b: its threshold moved (and it got an action); c: removed.
    kept = eng.load(parse_rules({"rule": [rules[0], dict(rules[1], enter=97, actions=["say"])],
                                 "action": {"say": {"kind": "log"}}}))
    assert kept == ["a"]
    removed = eng.take()
    assert sorted((e["rule"], e["scope"], e["from"], e["to"], e["seq"], e["reason"])
                  for e in removed) == [("c", "10.0.0.1", "alarm", "ok", 2, "the rule was removed"),
                                        ("c", "10.0.0.2", "alarm", "ok", 2, "the rule was removed")]
    assert {(s["rule"], s["scope"], s["state"]) for s in eng.states()} == {
        ("a", "10.0.0.1", "alarm"), ("a", "10.0.0.2", "alarm"), ("b", "10.0.0.1", "alarm"),
        ("b", "10.0.0.2", "alarm")}
    clock.now += 60
    seen = feed(eng, clock, "10.0.0.1", 95) + feed(eng, clock, "10.0.0.2", 99)
    assert [(e["rule"], e["scope"], e["from"], e["to"], e["seq"]) for e in seen] == [
        ("b", "10.0.0.1", "alarm", "ok", 2)]


def test_a_rule_that_no_longer_alarms_resolves_an_alarm_carried_over_at_its_next_record():
    clock = Clock()
    eng = engine([{"name": "a", "metric": "cpu", "enter": 90},
                  {"name": "g", "scope": "group", "metric": "cpu", "enter": 90}], clock)
    feed(eng, clock, "10.0.0.1", 95)
    clock.now += 60
    feed(eng, clock, "10.0.0.1", 95)
    assert {(s["rule"], s["state"]) for s in eng.states()} == {("a", "alarm"), ("g", "alarm")}
    eng.take()
    # Both now silence or scaling only: nothing else can end the alarm but their next data.
    eng.load(parse_rules({"rule": [{"name": "a", "metric": "cpu", "silent_after": "5m"},
                                   {"name": "g", "scope": "group", "metric": "cpu",
                                    "scale": {"target": 200}}]}))
    assert eng.take() == []
    clock.now += 60
    seen = feed(eng, clock, "10.0.0.1", 95)
    clock.now += 60  # the group, new, waits a period for its members
    seen += feed(eng, clock, "10.0.0.1", 95)
    assert sorted((e["rule"], e["from"], e["to"]) for e in seen) == [("a", "alarm", "ok"),
                                                                     ("g", "alarm", "ok")]


def test_expressions_and_normalised_metrics():
    clock = Clock()
    eng = engine([{"name": "e", "metric": "max(cpu, mem) / 2 + net_per_vcpu", "enter": 1000}], clock)
    eng.observe(["10.0.0.1"], [int(clock.now)], [row(30, mem=80, net_rx=3000, net_tx=1000, vcpus=2)])
    eng.process()
    assert eng.states()[0]["value"] == 80 / 2 + 4000 / 2


def test_every_problem_is_reported_once():
    with pytest.raises(RulesError) as caught:
        parse_rules({"action": {"h": {"kind": "webhook", "url": "ftp://x"}},
                     "rule": [{"name": "a", "metric": "cpu", "enter": "x", "datapoints": 3,
                               "periods": 2, "actions": ["h", "missing"]},
                              {"name": "a", "metric": "gpu", "enter": 1},
                              {"name": "c", "metric": "__import__('os')", "enter": 1}]})
    problems = caught.value.problems
    assert problems == [
        "action h: url: 'ftp://x' is not an http:// or https:// URL",
        "rule a: enter: expected a number, got 'x'",
        "rule a: datapoints: 3 of 2 periods cannot happen: datapoints must be at most periods",
        "rule a: actions: no [action.missing] in this file",
        "rule a: metric: 'gpu': unknown metric 'gpu' (known: %s)" % ", ".join(NAMES),
        "rule c: metric: \"__import__('os')\": the only functions are max(), min() and abs()",
    ]


NO_ARGV = "argv: missing (the program and its arguments, as a list)"
NOT_HTTP = "url: %r is not an http:// or https:// URL"


@pytest.mark.parametrize("action, problem", [
    ({"kind": "command", "argv": []}, NO_ARGV),
    ({"kind": "command", "argv": [""]}, NO_ARGV),
    ({"kind": "webhook", "url": "http://[::1/x"}, NOT_HTTP % "http://[::1/x"),
    ({"kind": "webhook", "url": "http://h:99999/x"}, NOT_HTTP % "http://h:99999/x"),
])
def test_an_action_that_could_never_deliver_is_one_problem(action, problem):
    """An empty argv made no action and no problem ("0 actions: OK"), so every delivery of a
    rule naming it was given up at run time; a URL urllib cannot split was a traceback."""
    with pytest.raises(RulesError) as caught:
        parse_rules({"action": {"a": action}, "rule": [{"name": "r", "metric": "cpu", "enter": 1,
                                                        "actions": ["a"]}]})
    assert caught.value.problems == ["action a: " + problem]


@pytest.mark.parametrize("metric, problem", [
    ("-" * 500 + "cpu", "nests deeper than an expression can be compiled"),
    ("-" * 100_000 + "cpu", "is 100003 characters, more than the 1000 a metric may have"),
])
def test_a_metric_nested_past_reason_is_one_problem(metric, problem):
    with pytest.raises(RulesError) as caught:
        parse_rules({"rule": [{"name": "r", "metric": metric, "enter": 1}]})
    [only] = caught.value.problems
    assert only.startswith("rule r: metric: ") and only.endswith(problem)


def test_a_restored_state_carries_on_from_the_first_record_after_a_restart():
    clock = Clock()
    eng = engine([{"name": "a", "metric": "cpu", "enter": 90, "exit": 70, "datapoints": 2,
                   "periods": 3, "missing": "breaching"}], clock)
    logged = {"rule": "a", "fingerprint": "another-definition", "scope": "10.0.0.1",
              "to": "alarm", "at": clock.now - 600, "seq": 7, "actions": []}
    eng.restore(logged)  # whatever the definition then was: this one decides what comes next
    eng.restore(dict(logged, scope="group", seq=3))  # not a scope of a per-VM rule: resolved
    eng.restore(dict(logged, rule="gone", scope="10.0.0.3", seq=4, actions=["say"]))  # resolved
    assert [(s["scope"], s["state"]) for s in eng.states()] == [("10.0.0.1", "alarm")]
    assert [(e["rule"], e["scope"], e["from"], e["to"], e["seq"], e["actions"], e["reason"])
            for e in eng.take()] == [
        ("a", "group", "alarm", "ok", 4, [], "the rule's scope changed"),
        ("gone", "10.0.0.3", "alarm", "ok", 5, ["say"], "the rule was removed")]
    clock.now += 600
    eng.sweep()  # periods before the restart are not missing (they would breach)
    assert eng.take() == []
    # The VM's records are stamped two minutes behind our clock (a lagging clock, a spool).
    feed(eng, clock, "10.0.0.1", 10, ts=clock.now - 120)
    clock.now += 60
    seen = feed(eng, clock, "10.0.0.1", 10, ts=clock.now - 120)
    assert [(e["from"], e["to"], e["seq"]) for e in seen] == [("alarm", "ok", 8)]


def test_an_evaluation_costs_the_data_held_not_the_window_configured():
    """N is bounded in the file; past that, an evaluation reads the periods a scope holds, so a
    window far larger than its data (here set behind the parser's back) stays as cheap."""
    import time
    clock = Clock()
    eng = engine([{"name": "wide", "metric": "cpu", "enter": 50, "datapoints": 1, "period": 1}],
                 clock)
    eng.rules["wide"].rule.periods = 10 ** 8
    started = time.process_time()
    seen = []
    for _ in range(3):
        seen += feed(eng, clock, "10.0.0.1", 99)
        clock.now += 1
    assert time.process_time() - started < 0.5
    assert [(e["from"], e["to"]) for e in seen] == [("ok", "alarm")]


@pytest.mark.parametrize("extra, problem", [
    ({"periods": 1000000000, "period": "1s"}, "periods: 1000000000 is more than the 1440 a window "
                                              "may span"),
    ({"periods": 1440, "period": "5m"}, "periods: 1440 periods of 300s span 432000s, more than "
                                        "the 86400s a window may span"),
    ({"periods": 200, "period": "1h"}, "periods: 200 periods of 3600s span 720000s, more than "
                                       "the 604800s a window may span"),
])
def test_a_window_no_operator_could_mean_is_one_problem(extra, problem):
    with pytest.raises(RulesError) as refused:
        parse_rules({"rule": [dict({"name": "w", "metric": "cpu", "enter": 50}, **extra)]})
    assert refused.value.problems == ["rule w: " + problem]
    # The bounds themselves are fine: a day of minutes, a week of hours.
    for fine in ({"periods": 1440, "period": "1m"}, {"periods": 168, "period": "1h"}):
        parse_rules({"rule": [dict({"name": "w", "metric": "cpu", "enter": 50}, **fine)]})


def test_a_rule_that_fails_never_skips_the_rules_after_it():
    """A scaling figure that is no count (a target near the float's end, set behind the
    parser's back) or a group mean that overflows: the rule decides nothing, the rules after
    it in the tick still do, and a rule that raises is counted, not the end of the tick."""
    clock = Clock()
    eng = engine([{"name": "pool", "scope": "group", "metric": "cpu", "period": 60,
                   "scale": {"target": 60, "min": 1, "max": 20}},
                  {"name": "hot", "metric": "cpu", "enter": 90}], clock)
    eng.rules["pool"].rule.scale.target = 1e-320
    assert [(e["rule"], e["to"]) for e in feed(eng, clock, "10.0.0.1", 95)] == [("hot", "alarm")]
    assert aggregate("mean", [1e308, 1e308], None) is None
    class Broken:  # a metric that raises, whatever the cause: the rule fails, not the tick
        index = None

        def read(self, cells):
            raise RuntimeError("broken")

    eng.rules["pool"].rule.value_of = Broken()
    clock.now += 60
    assert [(e["rule"], e["to"]) for e in feed(eng, clock, "10.0.0.2", 95)] == [("hot", "alarm")]
    assert eng.errors == 1


@pytest.mark.parametrize("target", [1e-320, 1e-7, 0])
def test_a_scaling_target_that_makes_no_count_is_one_problem(target):
    with pytest.raises(RulesError) as refused:
        parse_rules({"rule": [{"name": "p", "scope": "group", "metric": "cpu",
                               "scale": {"target": target}}]})
    assert refused.value.problems == [
        "rule p: scale: target: must be at least 1e-06 (members x value / target must stay a "
        "count), got %r" % target]


def test_a_retry_delay_of_nothing_is_one_problem():
    """A delay of 0 doubles to 0: a failing receiver would be retried as fast as the log syncs."""
    with pytest.raises(RulesError) as refused:
        parse_rules({"settings": {"retry_min": "0s", "retry_max": "0s"}})
    assert refused.value.problems == [
        "settings: retry_min: must be at least 0.1s (each attempt is written and synced to the "
        "action log), got 0s"]
    with pytest.raises(RulesError) as refused:
        parse_rules({"settings": {"retry_min": "2s", "retry_max": "1s"}})
    assert refused.value.problems == ["settings: retry_max: must be at least retry_min (2s), got 1s"]
    assert parse_rules({"settings": {"retry_min": "0.1s", "retry_max": "0.1s"}}).settings.retry_min == 0.1


@pytest.mark.parametrize("metric, divisor", [
    ("cpu / 0", "0"),
    ("net / (2 - 2.0)", "2 - 2.0"),
    ("mem / min(0, 5)", "min(0, 5)"),
    ("disk / (1 / 0)", "1 / 0"),
])
def test_a_metric_divided_by_a_constant_zero_is_one_problem(metric, divisor):
    """``cpu / 0`` passed the check ("OK"), and the rule then sat in insufficient-data for good."""
    with pytest.raises(RulesError) as caught:
        parse_rules({"rule": [{"name": "r", "metric": metric, "enter": 1}]})
    assert caught.value.problems == [
        "rule r: metric: %r divides by %s, which is 0: the metric would never have a value"
        % (metric, divisor)]


def test_a_metric_divided_by_a_figure_or_a_nonzero_constant_is_fine():
    for metric in ("cpu / 2", "net / vcpus", "mem / (1 - 0.5)", "cpu / max(vcpus, 0)"):
        parse_rules({"rule": [{"name": "r", "metric": metric, "enter": 1}]})


def test_an_alarm_without_data_for_stale_after_is_insufficient_data_vm_group_and_restored():
    """A VM deleted (or a pool drained) while in alarm kept the alarm for ever under
    missing = "keep"; a restart that restored it, too.  After ``stale_after`` (by default the
    window, at least 5 minutes) without a value it is insufficient-data, once, with why."""
    clock = Clock()
    rules = [{"name": "hot", "metric": "cpu", "enter": 90, "period": 60, "remind": "10m"},
             {"name": "pool", "scope": "group", "metric": "cpu", "enter": 90, "period": 60}]
    eng = engine(rules, clock)
    assert [rs.rule.stale_after for rs in eng.rules.values()] == [300.0, 300.0]
    fired = []
    for _ in range(2):  # a group decides from the period after its first member came
        eng.observe(["10.0.0.1", "10.0.0.2"], [int(clock.now)] * 2, [row(95.0), row(95.0)])
        eng.process()
        fired += [(e["rule"], e["scope"], e["to"]) for e in eng.take()]
        clock.now += 60
    assert sorted(fired) == [("hot", "10.0.0.1", "alarm"), ("hot", "10.0.0.2", "alarm"),
                             ("pool", "group", "alarm")]
    seen = []
    for _ in range(12):  # an hour without a record
        clock.now += 300
        eng.sweep()
        seen += eng.take()
    assert sorted((e["rule"], e["scope"], e["kind"], e["to"]) for e in seen) == [
        ("hot", "10.0.0.1", "transition", "insufficient-data"),
        ("hot", "10.0.0.2", "transition", "insufficient-data"),
        ("pool", "group", "transition", "insufficient-data")]
    assert {e["reason"] for e in seen} == {"no data for 300s (stale_after)"}
    assert [e["to"] for e in feed(eng, clock, "10.0.0.1", 20.0)] == ["ok"]
    # Restored in alarm at a start, never heard from again: the same, timed from the start.
    again = engine(rules, clock)
    again.restore({"rule": "hot", "scope": "10.0.0.9", "to": "alarm", "at": clock.now - 9999,
                   "seq": 3, "fingerprint": "f", "actions": []})  # the rule's (none)
    clock.now += 299
    again.sweep()
    assert again.take() == []
    clock.now += 1
    again.sweep()
    assert [(e["scope"], e["to"]) for e in again.take()] == [("10.0.0.9", "insufficient-data")]


@pytest.mark.parametrize("extra, problem", [
    ({"stale_after": "0s"}, "stale_after: must be more than 0"),
    ({"stale_after": "1h", "missing": "breaching"}, "stale_after: missing = 'breaching' already"),
    ({"stale_after": "1h", "silent_after": "5m"}, "stale_after: a VM that stops reporting goes silent"),
])
def test_stale_after_where_it_could_not_apply_is_a_problem(extra, problem):
    with pytest.raises(RulesError, match=problem):
        parse_rules({"rule": [dict({"name": "w", "metric": "cpu", "enter": 50}, **extra)]})
    quiet = parse_rules({"rule": [{"name": "w", "metric": "cpu", "enter": 50, "silent_after": "5m"},
                                  {"name": "b", "metric": "cpu", "enter": 50, "missing": "ok"},
                                  {"name": "d", "metric": "cpu", "enter": 50, "period": "1h",
                                   "periods": 3, "datapoints": 2}]})
    assert [r.stale_after for r in quiet.rules] == [None, None, 10800.0]


def test_a_silence_whose_rule_no_longer_watches_silence_goes_stale():
    """An edit that drops silent_after left a silent VM silent (firing) for ever: only a record
    of it ended the state, and the VM was gone.  It goes stale as an alarm does."""
    clock = Clock()
    rule = {"name": "r", "metric": "cpu", "enter": 90, "period": 60}
    eng = engine([dict(rule, silent_after="2m")], clock)
    feed(eng, clock, "10.0.0.1", 20.0)
    clock.now += 120
    eng.sweep()
    assert [e["to"] for e in eng.take()] == ["silent"]
    eng.load(parse_rules({"rule": [rule]}))
    clock.now += 299
    eng.sweep()
    assert eng.take() == []
    clock.now += 1
    eng.sweep()
    assert [(e["from"], e["to"]) for e in eng.take()] == [("silent", "insufficient-data")]


def test_a_step_of_the_servers_clock_does_not_make_an_alarm_stale():
    """``stale_after`` is timed from the last value's arrival, which moves with a step of the
    wall clock as silences do: an hour's step forward makes no alarm insufficient-data."""
    clock = Clock()
    eng = engine([{"name": "hot", "metric": "cpu", "enter": 90, "period": 60}], clock)
    assert [e["to"] for e in feed(eng, clock, "10.0.0.1", 95.0)] == ["alarm"]
    clock.now += 3600
    eng.clock_stepped(3600)
    eng.sweep()
    assert eng.take() == []
    clock.now += 300
    eng.sweep()
    assert [e["to"] for e in eng.take()] == ["insufficient-data"]


def test_the_scopes_of_vms_long_gone_are_forgotten_so_new_vms_are_not_refused():
    """A pool's or CI's VMs come and go: the scopes of the deleted ones were kept for ever, and
    once they filled max_series every new VM was refused, its alarms never raised.  A scope
    ok (or insufficient-data) and quiet for a day is forgotten; one that fires is kept."""
    clock = Clock()
    eng = engine([{"name": "hot", "metric": "cpu", "enter": 90, "period": 60}], clock,
                 max_series=2)
    feed(eng, clock, "10.0.0.1", 20.0)
    feed(eng, clock, "10.0.0.2", 95.0)  # deleted in alarm: stale, then forgotten too
    seen = []
    for _ in range(48):
        clock.now += 1800
        eng.sweep()
        seen += [(e["scope"], e["to"]) for e in eng.take() if e["kind"] == "transition"]
    assert seen == [("10.0.0.2", "insufficient-data")] and eng.size == 0
    assert "10.0.0.1" not in eng._newest and "10.0.0.1" not in eng._routes
    assert [(e["scope"], e["to"]) for e in feed(eng, clock, "10.0.1.1", 95.0)] == [
        ("10.0.1.1", "alarm")]
    assert feed(eng, clock, "10.0.0.1", 20.0) == [] and eng.refused == 0  # back: ok, no word
    # A heartbeat rule (missing = breaching) keeps firing for its VM: not forgotten.
    beat = engine([{"name": "beat", "metric": "cpu", "enter": 90, "period": 60,
                    "missing": "breaching"}], clock)
    feed(beat, clock, "10.0.0.3", 20.0)
    for _ in range(96):
        clock.now += 1800
        beat.sweep()
    assert [(e["scope"], e["to"]) for e in beat.take()] == [("10.0.0.3", "alarm")]
    assert beat.states()[0]["state"] == "alarm"


def test_an_edit_that_no_longer_takes_a_firing_vm_resolves_it_saying_why():
    """A rule's match narrowed (by SIGHUP, or while the server was down) past a VM in alarm:
    no record of it reached the rule again, and its alarm fired for ever.  Resolved at the
    edit, with the reason; the VMs the rule still takes keep their states."""
    clock = Clock()
    rule = {"name": "hot", "metric": "cpu", "enter": 90, "period": 60, "actions": ["say"]}
    eng = engine([dict(rule, match={"id": "web-*"})], clock)
    for vm in ("web-1", "web-db-2"):
        assert [e["to"] for e in feed(eng, clock, vm, 95.0)] == ["alarm"]
    edited = {"rule": [dict(rule, match={"id": "web-db-*"})], "action": {"say": {"kind": "log"}}}
    eng.load(parse_rules(edited))
    assert [(e["scope"], e["from"], e["to"], e["reason"]) for e in eng.take()] == [
        ("web-1", "alarm", "ok", "the rule no longer takes the VM")]
    assert {s["scope"]: s["state"] for s in eng.states()} == {"web-1": "ok", "web-db-2": "alarm"}
    # The same edit made while the server was down: at the start, from the action log.
    again = Engine(parse_rules(edited), clock)
    again.restore({"rule": "hot", "scope": "web-1", "to": "alarm", "at": clock.now - 60,
                   "seq": 1, "fingerprint": "f", "actions": ["say"]})
    assert [(e["scope"], e["to"]) for e in again.take()] == [("web-1", "ok")]


def test_a_vm_whose_tags_no_longer_match_a_firing_rule_is_resolved_saying_why():
    """A VM that moved to another host kept the alarm of a rule matching its old host for ever:
    no record of it reached that rule again.  Resolved at its first record with other tags."""
    clock = Clock()
    eng = engine([{"name": "rack1", "metric": "cpu", "enter": 90, "period": 60,
                   "match": {"tags": {"host": "kvm1"}}}], clock)
    assert [e["to"] for e in feed(eng, clock, "10.0.0.1", 95.0, host="kvm1")] == ["alarm"]
    clock.now += 60
    assert feed(eng, clock, "10.0.0.1", 95.0, host="kvm1") == []
    clock.now += 60
    moved = feed(eng, clock, "10.0.0.1", 95.0, host="kvm2")
    assert [(e["from"], e["to"], e["reason"]) for e in moved] == [
        ("alarm", "ok", "the rule no longer takes the VM")]
    clock.now += 60
    assert feed(eng, clock, "10.0.0.1", 95.0, host="kvm2") == []


def test_the_states_page_puts_what_is_not_ok_first_then_the_most_recent_and_stops_at_its_limit():
    """The page is chosen from every rule's series without building them all: the order is the
    one an operator reads (not ok first, most recent first), across rules, cut at the limit."""
    clock = Clock()
    eng = engine([{"name": "a", "metric": "cpu", "enter": 90},
                  {"name": "b", "metric": "cpu", "enter": 50}], clock)
    for i in range(40):  # a VM a minute; every 7th hot for both rules, every 5th for b only
        clock.now += 60
        feed(eng, clock, f"vm-{i:02d}", 95 if i % 7 == 0 else 60 if i % 5 == 0 else 10)
    everything = eng.states()
    assert len(everything) == 80
    expected = sorted(everything, key=lambda r: (r["state"] == "ok", -r["since"]))
    assert everything == expected
    page = eng.states(12)
    assert page == expected[:12]
    assert [r["state"] != "ok" for r in page] == [True] * 12  # 14 are not ok: a cut among them
    assert eng.states(3) == expected[:3]
    assert eng.states(20)[-6:] == expected[14:20]  # the most recent ok ones after them
