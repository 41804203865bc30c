"""A tick's cheap reading and skipped evaluations decide exactly what full ones would.

Under a flood a tick reads only the cells its rules use and moves a settled ok
window on without evaluating it when the new value does not breach.  These
tests hold that to the decisions: against an engine that evaluates every such
window (the same engine with the shortcut off), against figures computed from
the whole record, and on the cases a skipped evaluation could get wrong (a VM
without a new record, M of N across missing periods, holds, silence).
"""

import random
import time
import weakref

import pytest
from rulesutil import Clock, engine, feed, row, warmed
from twisted.internet import defer, task

from vmstats import logstore
from vmstats.protocol import Record
from vmstats.rules import evaluator
from vmstats.rules.config import parse_rules
from vmstats.rules.delivery import Dispatcher
from vmstats.rules.metric import NAMES, compile_metric
from vmstats.rules.notifiers import DeliveryError, Notifier
from vmstats.rules.service import BUDGET, FLOOD, MAX_GAP, TICK, RulesService

MIXED_RULES = [
    {"name": "keep-2of3", "metric": "cpu", "enter": 80, "exit": 60, "datapoints": 2, "periods": 3,
     "silent_after": "10m"},
    {"name": "ok-1of1-hold", "metric": "cpu", "enter": 80, "exit": 60, "missing": "ok",
     "hold": "2m"},
    {"name": "keep-3of5-hold", "metric": "cpu", "enter": 75, "exit": 70, "datapoints": 3,
     "periods": 5, "hold": "5m", "remind": "3m"},
    {"name": "ok-2of4", "metric": "cpu", "enter": 85, "exit": 50, "datapoints": 2, "periods": 4,
     "missing": "ok"},
    {"name": "below", "metric": "mem", "direction": "below", "enter": 20, "exit": 30,
     "periods": 3, "silent_after": "7m"},
    {"name": "any-of-3", "metric": "cpu", "enter": 90, "exit": 40, "periods": 3},
    {"name": "breaching", "metric": "cpu", "enter": 80, "datapoints": 2, "periods": 3,
     "missing": "breaching"},
    {"name": "insufficient", "metric": "cpu", "enter": 80, "datapoints": 2, "periods": 3,
     "missing": "insufficient"},
    {"name": "expr", "metric": "max(cpu, mem) + net_per_vcpu / 1e6", "enter": 85, "exit": 80,
     "datapoints": 1, "periods": 2},
]


def without_keys(events: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "key"} for e in events]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_skipped_evaluations_decide_as_full_ones(seed):
    """A random fleet over hours: gaps, late and repeated records, regimes that cross thresholds."""
    rng = random.Random(seed)
    clock = Clock()
    cheap = engine(MIXED_RULES, clock)
    full = engine(MIXED_RULES, clock)
    for rs in full.rules.values():
        rs.gaps_are_quiet = False  # every window that moved on by more than a period is evaluated
    vms = ["10.0.0.%d" % i for i in range(1, 13)]
    regime = {vm: "calm" for vm in vms}
    events = []
    for _step in range(600):
        clock.now += rng.choice([5, 20, 60, 60, 60, 90, 130, 200, 400])
        for vm in vms:
            if rng.random() < 0.05:
                regime[vm] = rng.choice(["calm", "calm", "hot", "edge", "quiet", "starved"])
            if regime[vm] == "quiet" or rng.random() < 0.25:
                continue  # no record from this VM before the next tick
            for _ in range(rng.choice([1, 1, 1, 2, 4])):  # a flood brings several; the latest counts
                cpu = {"calm": rng.uniform(5, 74), "hot": rng.uniform(86, 99),
                       "edge": rng.uniform(55, 95), "starved": rng.uniform(5, 50)}[regime[vm]]
                mem = rng.uniform(5, 25) if regime[vm] == "starved" else rng.uniform(30, 70)
                ts = int(clock.now) - rng.choice([0, 0, 0, 0, 3, 45, 70, 150])  # some come late
                for eng in (cheap, full):
                    eng.observe([vm], [ts], [row(cpu, mem=mem, net_rx=1000, net_tx=500, vcpus=2)])
        cheap.process()
        full.process()
        if rng.random() < 0.6:
            cheap.sweep()
            full.sweep()
        got = cheap.take()
        assert without_keys(got) == without_keys(full.take())
        events += got
    assert cheap.states() == full.states()
    assert cheap.evaluations < full.evaluations  # the shortcut was taken...
    moves = {(e["from"], e["to"]) for e in events if e["kind"] == "transition"}
    # ... and the stream did reach every state, both ways.
    assert {("ok", "alarm"), ("alarm", "ok"), ("ok", "silent"), ("silent", "ok"),
            ("ok", "insufficient-data"), ("insufficient-data", "ok")} <= moves
    assert any(e["kind"] == "reminder" for e in events)


def test_a_flood_of_calm_records_is_not_evaluated_again_and_again():
    """Each tick brings every VM a record periods later: settled windows move on unevaluated."""
    clock = Clock()
    rules = [{"name": "hot", "metric": "cpu", "enter": 90, "silent_after": "30s", "period": 10},
             {"name": "mem", "metric": "mem", "enter": 99.5, "exit": 90, "datapoints": 2,
              "periods": 3, "period": 10}]
    eng = engine(rules, clock)
    vms = ["10.0.%d.%d" % (i // 200, i % 200) for i in range(1000)]
    eng.observe(vms, [int(clock.now)] * len(vms), [row(20)] * len(vms))
    eng.process()
    first = eng.evaluations
    for _ in range(5):
        clock.now += 25  # two and a half periods a tick, as a flood's stamps run ahead
        eng.observe(vms, [int(clock.now)] * len(vms), [row(30 + i % 50) for i in range(len(vms))])
        eng.process()
    assert eng.evaluations == first and eng.take() == []
    # A flood replaying stamps a minute back (a spool, an agent's catch-up) neither.
    eng.observe(vms, [int(clock.now) - 60] * len(vms), [row(40)] * len(vms))
    eng.process()
    assert eng.evaluations == first and eng.take() == []
    # A breach is still evaluated at once, and decided.
    clock.now += 25
    eng.observe(vms[:1], [int(clock.now)], [row(95)])
    eng.process()
    assert [(e["rule"], e["scope"], e["to"]) for e in eng.take()] == [("hot", vms[0], "alarm")]


def test_a_vm_without_a_new_record_neither_fires_nor_clears_and_then_goes_silent():
    clock = Clock()
    eng = engine([{"name": "r", "metric": "cpu", "enter": 90, "exit": 70, "datapoints": 2,
                   "periods": 3, "period": 60, "silent_after": "10m"}], clock)
    assert feed(eng, clock, "10.0.0.1", 95) == []
    clock.now += 60
    assert [e["to"] for e in feed(eng, clock, "10.0.0.1", 95)] == ["alarm"]
    feed(eng, clock, "10.0.0.2", 20)
    seen = []
    for _ in range(8):  # only .2 reports, a flood of records a tick; .1 has nothing new
        clock.now += 60
        for back in (30, 20, 10, 0):
            eng.observe(["10.0.0.2"], [int(clock.now) - back], [row(20 + back)])
        eng.process()
        eng.sweep()
        seen += [(e["scope"], e["to"]) for e in eng.take()]
    assert seen == []  # the alarm stays: missing periods keep the state; .2 stays ok
    assert {s["scope"]: s["state"] for s in eng.states()} == {"10.0.0.1": "alarm",
                                                              "10.0.0.2": "ok"}
    clock.now += 120
    eng.sweep()
    assert [(e["scope"], e["from"], e["to"]) for e in eng.take()] == [
        ("10.0.0.1", "alarm", "silent")]


def test_m_of_n_and_the_hold_count_right_across_missing_periods():
    clock = Clock()
    start = 60 * (int(clock.now) // 60) + 1
    eng = engine([{"name": "r", "metric": "cpu", "enter": 90, "exit": 70, "datapoints": 2,
                   "periods": 3, "period": 60, "hold": "5m"}], clock)

    def at(minute, cpu):  # a record for the given minute, arriving in it
        clock.now = start + 60 * minute
        eng.observe(["vm"], [int(clock.now)], [row(cpu)])
        eng.process()
        return [(e["from"], e["to"]) for e in eng.take()]

    assert at(0, 95) == []
    assert at(2, 50) == []  # a calm value after a missing minute: 1 breach in [0, 1, 2]
    assert at(3, 95) == []  # 1 in [1, 2, 3]: the one at 0 has left the window
    assert at(4, 95) == []  # 2 in [2, 3, 4], but the hold (5 min since first seen) is not over
    assert at(5, 50) == [("ok", "alarm")]  # still 2 in [3, 4, 5], and the hold is over
    assert at(7, 50) == []  # 2 of [5, 6, 7] below exit, but in alarm for 2 min only
    assert at(9, 60) == []  # 2 of [7, 8, 9], 4 min
    assert at(10, 95) == []  # 1 of [8, 9, 10]: the alarm stays
    assert at(13, 60) == []  # 1 of [11, 12, 13] (two missing minutes count as nothing)
    assert at(14, 60) == [("alarm", "ok")]  # 2 of [12, 13, 14], 9 min in alarm
    assert at(17, 95) == []  # 1 breach in [15, 16, 17]
    assert at(21, 50) == []  # none in [19, 20, 21]: the breach at 17 has left the window
    assert at(22, 95) == []
    assert at(23, 95) == [("ok", "alarm")]


#: Each metric from the whole record, written out here (not taken from the code under test).
FIGURES = {
    "disk": lambda r: r.disk_r + r.disk_w, "net": lambda r: r.net_rx + r.net_tx,
    "cpu_cores": lambda r: r.cpu * r.vcpus / 100, "mem_used_mb": lambda r: r.mem * r.mem_mb / 100,
    "disk_per_vcpu": lambda r: (r.disk_r + r.disk_w) / r.vcpus,
    "net_per_vcpu": lambda r: (r.net_rx + r.net_tx) / r.vcpus,
}


def expected_figure(name: str, record: Record):
    if name in FIGURES:
        try:
            return FIGURES[name](record)
        except (TypeError, ZeroDivisionError):  # an input not sent, or no vCPUs
            return None
    value = getattr(record, name)
    return None if value is None else float(value)


@pytest.mark.parametrize("name", NAMES)
def test_a_metric_read_from_its_cells_is_the_whole_records_figure(name):
    complete = Record(vm="x", ts=0, cpu=37.5, mem=61.0, disk_r=1.5e6, disk_w=2.5e5, net_rx=9e5,
                      net_tx=3e5, vcpus=4, mem_mb=8192, cpu_max=88.0, host="h1",
                      tags=(("project", "web"),))
    sparse = Record(vm="x", ts=0, cpu=12.0, mem=40.0)  # the optional fields unknown
    no_vcpus = Record(vm="x", ts=0, cpu=12.0, mem=40.0, disk_r=5.0, disk_w=1.0, net_rx=2.0,
                      net_tx=3.0, vcpus=0, mem_mb=0)
    for record in (complete, sparse, no_vcpus):
        assert compile_metric(name).read(_cells(record)) == pytest.approx(
            expected_figure(name, record))


def _cells(record: Record) -> list:
    return logstore.format_tail(record).split(b",")


def test_an_expression_reads_only_its_inputs_and_unknown_inputs_give_none():
    expression = compile_metric("max(cpu, mem) / 2 + net_per_vcpu")
    record = Record(vm="x", ts=0, cpu=30.0, mem=80.0, net_rx=3000, net_tx=1000, vcpus=2)
    assert expression.read(_cells(record)) == 80 / 2 + 4000 / 2
    assert compile_metric("disk").read(_cells(record)) is None  # no disk figures sent
    # A divisor that is 0 at this record (a constant 0 is refused when the rules are read).
    assert compile_metric("net_per_vcpu / (cpu - 30) + cpu").read(_cells(record)) is None


def test_a_scale_out_is_placed_by_the_hosts_measured_headroom():
    clock = Clock()
    eng = engine([{"name": "pool", "scope": "group", "metric": "cpu", "period": 60,
                   "scale": {"target": 50, "max": 10}},
                  {"name": "watch", "scope": "group", "metric": "cpu", "aggregate": "max",
                   "enter": 99.5}], clock)
    scaled = [e for e in warmed(eng, clock, ["a", "b", "c"],
                                [row(95, host="h1"), row(90, host="h1"), row(60, host="h2")])
              if e["kind"] == "scale"]
    # mean 81.7 % against 50 %: 5 wanted; h1's two members are at 95 and 90, h2's one at 60.
    assert [(e["desired"], e["placement"]) for e in scaled] == [(5, "h2")]


@pytest.mark.parametrize("share, taken, gap", [
    (1.0, FLOOD, 0.03 / BUDGET),  # a host of its own: after 1 s of the ingest's work
    (0.1, FLOOD, MAX_GAP),  # a starved server: its CPU would take 10 s; the clock caps the wait
    (1.0, FLOOD - 1, TICK),  # no flood: every tick
])
def test_under_a_flood_ticks_wait_for_the_servers_own_work(tmp_path, share, taken, gap):
    """The rules take BUDGET of the server's own CPU under a flood, whatever the host's load."""
    reactor = task.Clock()
    used = [0.0]  # the server's CPU seconds
    service = RulesService(reactor, "rules.toml", parse_rules({"rule": [
        {"name": "r", "metric": "cpu", "enter": 90}]}), str(tmp_path), cpu=lambda: used[0])
    ticks = []

    def process():  # a tick over a whole fleet: 30 ms of CPU
        used[0] += 0.03
        ticks.append(reactor.seconds())
        return taken

    service.engine.process = process
    service.running = True
    service.tick()
    for _ in range(100):  # 10 s, the ingest getting ``share`` of a core
        used[0] += share * TICK
        reactor.advance(TICK)
    gaps = [round(b - a, 6) for a, b in zip(ticks, ticks[1:], strict=False)]
    assert gaps and all(g == pytest.approx(gap, abs=TICK + 1e-6) for g in gaps), gaps
    service.running = False


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_tick_reads_each_vms_last_record_however_the_handed_over_payloads_were_folded(
        seed, monkeypatch):
    """The hand-off keeps references and folds them at a tick or past a bound: each VM's
    newest-stamped record (the last of equals, however late an older one came), in the order
    VMs first arrived, as updating two dicts per payload kept them; and the rules decide the
    same whatever the bound made of the folds."""
    rng = random.Random(seed)
    clock = Clock()
    small = engine(MIXED_RULES, clock)  # folds every few records
    large = engine(MIXED_RULES, clock)  # folds only at its ticks
    monkeypatch.setattr(evaluator, "PENDING_MAX", 7)
    vms = ["10.0.1.%d" % i for i in range(1, 20)]
    for _step in range(150):
        clock.now += rng.choice([5, 20, 60, 90, 200])
        expected_tss: dict[str, int] = {}
        expected_rows: dict[str, bytes] = {}
        for _payload in range(rng.randint(0, 6)):
            names = [rng.choice(vms) for _ in range(rng.randint(1, 9))]
            tss = [int(clock.now) - rng.choice([0, 0, 3, 70]) for _ in names]
            rows = [row(rng.uniform(5, 99), mem=rng.uniform(5, 70)) for _ in names]
            for vm, ts, cells in zip(names, tss, rows, strict=True):
                if ts >= expected_tss.get(vm, ts):
                    expected_tss[vm], expected_rows[vm] = ts, cells
            small.observe(names, tss, rows)
            monkeypatch.setattr(evaluator, "PENDING_MAX", 1 << 30)
            large.observe(names, tss, rows)
            monkeypatch.setattr(evaluator, "PENDING_MAX", 7)
            assert small._pending_records < 7
        for eng in (small, large):
            eng._fold()
            assert list(eng._tss.items()) == list(expected_tss.items())
            assert list(eng._rows.items()) == list(expected_rows.items())
        small.process()
        large.process()
        if rng.random() < 0.5:
            small.sweep()
            large.sweep()
        assert without_keys(small.take()) == without_keys(large.take())
    assert small.states() == large.states()


def test_what_waits_for_a_tick_is_bounded_by_the_fleet_not_the_flood(monkeypatch):
    """A flood between two ticks: past PENDING_MAX records the hand-off folds (or, its
    payloads holding few records, counts again from those), so the rules hold a bounded
    backlog of references plus one record per VM; the tick still counts every record that
    arrived (what spaces ticks out under a flood)."""
    monkeypatch.setattr(evaluator, "PENDING_MAX", 100)
    clock = Clock()
    eng = engine([{"name": "hot", "metric": "cpu", "enter": 90}], clock)
    vms = ["10.0.2.%d" % i for i in range(1, 6)]
    for i in range(1000):
        eng.observe(vms * 2, [int(clock.now) - 20 + i % 20] * 10, [row(20)] * 10)
        assert eng._pending_records < 100
        held = {id(p): len(p[0]) for p in eng._pending.values()}
        assert sum(held.values()) <= eng._pending_records
        assert len(eng._rows) <= len(vms)
    assert eng.process() == 10_000
    assert not eng._pending and not eng._rows


def test_past_the_bound_the_hand_off_folds_only_when_its_payloads_hold_many_records(monkeypatch):
    """A fleet coming round again lets each payload go as its VMs come again: past
    PENDING_MAX the payloads still pointed at hold about a fleet's records, and the fold
    waits for the tick.  Payloads each kept by a VM that does not come again hold every
    record: those are folded.  Either way the references keep no more records than counted,
    and the tick reads each VM's last record, in the order VMs first arrived, as updating
    two dicts record by record would."""
    monkeypatch.setattr(evaluator, "PENDING_MAX", 400)
    clock = Clock()
    eng = engine([{"name": "hot", "metric": "cpu", "enter": 90}], clock)
    fleet = ["10.0.4.%d" % i for i in range(1, 41)]
    expected_tss: dict[str, int] = {}
    expected_rows: dict[str, bytes] = {}

    def hand_over(names: list[str], i: int) -> None:
        tss = [int(clock.now) - 100 + i] * len(names)
        rows = [row(20 + (i + k) % 50) for k in range(len(names))]
        expected_tss.update(zip(names, tss, strict=True))
        expected_rows.update(zip(names, rows, strict=True))
        eng.observe(names, tss, rows)
        held = {id(p): len(p[0]) for p in eng._pending.values()}
        assert sum(held.values()) <= eng._pending_records < 400

    for i in range(100):  # 1,000 records, the fleet of 40 ten at a time, round and round
        hand_over(fleet[i % 4 * 10:i % 4 * 10 + 10], i)
    assert not eng._rows  # never folded: the payloads held only the fleet's last 40
    for i in range(100):  # each payload kept by a VM of its own
        hand_over(["10.0.5.%d" % (i + 1)] + fleet[i % 4 * 9:i % 4 * 9 + 9], i)
    assert eng._rows  # folded past the bound
    eng._fold()
    assert list(eng._tss.items()) == list(expected_tss.items())
    assert list(eng._rows.items()) == list(expected_rows.items())
    assert eng.process() == 2000


class Column(list):
    """A payload's column that a weak reference can watch."""


def test_a_payload_whose_vms_all_came_again_is_let_go_before_the_fold():
    """Under a flood each VM's next record comes a few payloads on: the payload it replaces
    is freed then, while recent, not held until the tick (past EXACT records: below, the
    hand-off keeps every payload, so that the tick takes each VM's newest stamp)."""
    clock = Clock()
    eng = engine([{"name": "hot", "metric": "cpu", "enter": 90}], clock)
    flood = ["10.9.%d.%d" % (i // 250, i % 250) for i in range(evaluator.EXACT)]
    eng.observe(flood, [int(clock.now)] * len(flood), [row(20)] * len(flood))
    vms = ["10.0.3.%d" % i for i in range(1, 5)]
    stamp = int(clock.now)
    first = Column(vms)
    eng.observe(first, [stamp] * 4, [row(20)] * 4)
    watch = weakref.ref(first)
    del first
    eng.observe(Column(vms[:2]), [stamp + 1] * 2, [row(30)] * 2)
    assert watch() is not None  # the first payload still holds the last records of two VMs
    eng.observe(Column(vms[2:]), [stamp + 1] * 2, [row(40)] * 2)
    assert watch() is None
    eng._fold()
    assert {vm: eng._tss[vm] for vm in vms} == dict.fromkeys(vms, stamp + 1)
    assert [eng._rows[vm] for vm in vms] == [row(30)] * 2 + [row(40)] * 2


def test_columns_of_different_lengths_are_refused_at_the_hand_off():
    eng = engine([{"name": "hot", "metric": "cpu", "enter": 90}], Clock())
    with pytest.raises(ValueError):
        eng.observe(["10.0.0.1", "10.0.0.2"], [1, 2], [row(20)])
    assert eng.process() == 0


class _Log:
    """The action log's interface, every append on disk at once."""

    def append(self, entries):
        return defer.succeed(None)


class _Held(Notifier):
    """An action whose sends wait for the test to answer them."""

    def __init__(self):
        super().__init__("held")
        self.sends: list[defer.Deferred] = []

    def send(self, reactor, event, key):
        self.sends.append(defer.Deferred())
        return self.sends[-1]


def test_a_scaling_decision_waits_for_the_last_one_to_be_delivered_at_any_backlog():
    """A group evaluation asks whether its rule's last scaling action is still pending; that
    was a pass over every pending delivery: 1.6 ms a call at 20,000 (a fleet gone silent while
    the receiver is down), paid by every scaling rule at every tick."""
    clock = task.Clock()
    action = _Held()
    dispatcher = Dispatcher(clock, _Log(), {"held": action}, retry_for=3600)
    dispatcher.submit([{"kind": "transition", "key": "t%d" % i, "rule": "quiet",
                        "scope": "10.0.%d.%d" % divmod(i, 256), "at": 0.0, "actions": ["held"]}
                       for i in range(50_000)])
    scale = {"kind": "scale", "key": "s", "rule": "pool", "scope": "pool", "at": 0.0,
             "actions": ["held"]}
    dispatcher.submit([scale])
    started = time.process_time()
    for _ in range(1000):
        assert dispatcher.holds_scale("pool") and not dispatcher.holds_scale("quiet")
    assert time.process_time() - started < 0.2  # a pass over the backlog: 4 s
    action.sends[-1].errback(DeliveryError("HTTP 500"))
    assert dispatcher.holds_scale("pool")  # failed, retried later: still pending
    clock.advance(1.5)
    action.sends[-1].callback(None)
    assert not dispatcher.holds_scale("pool")
    dispatcher.submit([dict(scale, key="s2")])
    assert dispatcher.holds_scale("pool")
    clock.advance(3601)  # retried until given up: no longer holds the next decision
    while dispatcher.holds_scale("pool"):
        action.sends[-1].errback(DeliveryError("HTTP 500"))
        clock.advance(400)
    assert dispatcher.counts[("held", "gave_up")] == 1


def test_a_vms_tags_are_read_again_only_when_its_record_carries_other_ones():
    """While a mute names tags every VM's are kept: read from each record at every tick, a
    fleet's tick cost three times its work.  A record with the same tag cells keeps the tags
    read before (the same dict: what was judged of them holds); one with others is read."""
    clock = Clock()
    eng = engine([{"name": "hot", "metric": "cpu", "enter": 90, "exit": 70},
                  {"name": "racked", "metric": "cpu", "enter": 90, "match": {"tags": {"rack": "r1"}}}],
                 clock)
    eng.keeping_tags(True)
    feed(eng, clock, "10.0.0.1", 20.0, host="kvm1")
    first = eng.vm_tags("10.0.0.1")
    assert first == {"host": "kvm1"}
    clock.now += 60
    feed(eng, clock, "10.0.0.1", 30.0, host="kvm1")
    assert eng.vm_tags("10.0.0.1") is first
    clock.now += 60
    feed(eng, clock, "10.0.0.1", 30.0, host="kvm9")
    assert eng.vm_tags("10.0.0.1") == {"host": "kvm9"}
    # A rule matching tags follows the record's (its route is read from the same tags): the
    # VM moved off rack r1 no longer reaches it, and its alarm there is resolved.
    for tags, moves in (((("rack", "r1"),), [("ok", "alarm")]), ((("rack", "r2"),), [("alarm", "ok")])):
        clock.now += 60
        eng.observe(["10.0.0.2"], [int(clock.now)], [row(95.0, host="kvm1", tags=tags)])
        eng.process()
        eng.sweep()
        assert eng.vm_tags("10.0.0.2") == {"host": "kvm1", "rack": tags[0][1]}
        assert [(e["from"], e["to"]) for e in eng.take() if e["rule"] == "racked"] == moves


def test_the_newest_stamp_decides_under_a_flood_and_for_a_group():
    """Past EXACT records a tick the fold reads the payloads the VMs point at: a payload that
    holds a VM twice (a spool, a relay's batch) gives its newest-stamped record, not its last.
    A group member's figure is its newest too: a late record does not move it back."""
    clock = Clock()
    eng = engine([{"name": "hot", "metric": "cpu", "enter": 90, "period": 3600},
                  {"name": "pool", "scope": "group", "metric": "cpu", "aggregate": "max",
                   "enter": 90, "exit": 50, "period": 60}], clock)
    now = int(clock.now) - int(clock.now) % 3600 + 1800
    clock.now = now
    fleet = ["10.1.%d.%d" % (i // 250, i % 250) for i in range(evaluator.EXACT + 1)]
    eng.observe(fleet, [now] * len(fleet), [row(20.0)] * len(fleet))
    eng.observe(["10.0.0.1", "10.0.0.1"], [now, now - 1], [row(95.0), row(10.0)])
    eng.process()
    assert [(e["rule"], e["scope"], e["to"]) for e in eng.take()] == [("hot", "10.0.0.1", "alarm")]
    clock.now += 60  # the group decides from the period after its first member came
    eng.observe(["10.0.0.1"], [now + 60], [row(95.0)])
    eng.process()
    assert [(e["rule"], e["scope"], e["to"]) for e in eng.take()] == [("pool", "group", "alarm")]
    clock.now += 10
    eng.observe(["10.0.0.1"], [now + 30], [row(10.0)])  # late: older than the last one taken
    eng.process()
    eng.sweep()
    assert eng.take() == [] and eng.rules["pool"].members["10.0.0.1"][0] == 95.0
    assert eng.rules["hot"].series["10.0.0.1"].value == 95.0
