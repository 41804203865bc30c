"""Rules reliability: SIGKILLs during delivery, a receiver outage, and a group under both.

    .venv/bin/python bench/rules_reliability.py                 # 20 kills, a 10-minute outage
    .venv/bin/python bench/rules_reliability.py --outage 60     # a shorter outage
    .venv/bin/python bench/rules_reliability.py --kills 0 --outage 0 --group-kills -1  # grouped only

Kills: ``--kills`` times the server is SIGKILLed while a slow receiver (0.3 s
a request, honouring the idempotency key) has deliveries under way; each
round's six acknowledged records each flip a VM's state
(``tests/rulesutil.sigkill_rounds``, the same scenario the test suite runs
three times).  Lost: logged transitions whose key never reached the
receiver; duplicated: a transition decided twice or a POST the log never
held; repeats caught by key: deliveries resent after a kill that the
receiver recognised.

Outage: the receiver answers 503 for ``--outage`` seconds while 20 VMs go
into alarm, then recovers; with the default retry settings (backoff to 5
minutes, for 24 h) every transition must arrive exactly once.

Group: a pool of 10 VMs under one group rule (mean CPU, 2 of 2 periods of
1 s, and target tracking with hour-long cooldowns) reports over UDP with
``--group-loss`` of its datagrams dropped at random (the agents' side of
loss: members missing from some periods), hot then calm, ``--group-kills``
times; each time the server is SIGKILLed as soon as the calm phase's
transition is logged, while the slow receiver still has it.  Every phase
must make exactly one transition of the group (no flap from a missing
member, none lost to the warm-up each start begins with), each received
once by key, and the whole run exactly one scaling action: hot phases ask
for a scale-out, calm ones a scale-in, and the cooldowns, restored from the
action log at each start, hold every decision after the first.

Grouped: 200 VMs behind one webhook with ``group_by = ["alertname"]`` and
``max_alerts = 50`` (1 s group timers), all hot then all calm, ``--grouped-kills``
times; each time the server is SIGKILLed as soon as the phase's second
notification is logged, while the slow receiver holds it and the other 100
alerts wait their turn.  Every notification must carry at most 50 alerts (the
rest counted in ``truncatedAlerts``), and every transition must reach the
receiver, or be superseded there by a later one of its VM (what a group
sends is each alert's latest event): lost are those neither; at the end the
receiver's latest status of each alert must be the log's.
"""

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from rulesutil import (  # noqa: E402
    HOT,
    SECRET,
    WebhookReceiver,
    killed_servers,
    line,
    log_entries,
    rules_file,
    serve,
    sigkill_rounds,
    wait_until,
)

from vmstats.words import counted  # noqa: E402

#: The group run's rule: a pool's mean CPU, 2 of 2 periods of 1 s, and target tracking whose
#: hour-long cooldowns allow one scaling action in the whole run.
POOL = """
[[rule]]
name = "pool"
scope = "group"
match = { id = "10.0.2.*" }
metric = "cpu"
aggregate = "mean"
enter = 80
exit = 50
period = 1
datapoints = 2
periods = 2
actions = ["hook"]
[rule.scale]
target = 50
min = 1
max = 40
out_cooldown = "1h"
in_cooldown = "1h"

[settings]
retry_min = "0.2s"
retry_max = "0.5s"
"""


def group(folder: Path, hook: WebhookReceiver, kills: int, loss: float, members: int = 10) -> dict:
    """A pool through ``kills`` SIGKILLs (and a last clean run), ``loss`` of its datagrams
    dropped; what the action log decided and the receiver got (see the module's doc)."""
    folder.mkdir(parents=True, exist_ok=True)
    rules = rules_file(folder, hook.url, POOL)
    chance = random.Random(7)
    vms = ["10.0.2.%d" % i for i in range(1, members + 1)]
    counts = {"sent": 0, "dropped": 0}

    def transitions(server) -> int:
        return sum(1 for e in log_entries(server) if e["type"] == "event"
                   and e["event"]["kind"] == "transition")

    def report(server, cpu: float) -> None:
        now = int(time.time())
        kept = [vm for vm in vms if chance.random() >= loss]
        counts["sent"] += len(kept)
        counts["dropped"] += members - len(kept)
        server.send_udp(*[line(vm, now, cpu) for vm in kept])
        time.sleep(0.25)

    for server in killed_servers(folder, rules, kills, 60):
        for cpu in (95.0, 20.0):  # hot until the group's alarm is logged, calm until its ok
            want = transitions(server) + 1
            wait_until(lambda run=server, cpu=cpu, want=want:
                       report(run, cpu) or transitions(run) >= want, 60)
    with hook.lock:
        keys = list(hook.keys)
    events = [e["event"] for e in log_entries(server) if e["type"] == "event"]
    changes = sorted((e for e in events if e["kind"] == "transition"), key=lambda e: e["seq"])
    states = [e["to"] for e in changes]
    delivered = {e["key"] + ".hook" for e in events if e["actions"]}
    return {"rounds": kills, "records": counts["sent"], "datagrams_dropped": counts["dropped"],
            "phases": 2 * (kills + 1), "transitions": len(changes),
            "lost": sorted(delivered - set(keys)),
            # A step of the chain decided twice, or a POST the log never held.
            "duplicated": len(changes) - len({e["seq"] for e in changes}) + len(set(keys) - delivered),
            "chain_broken": int([e["seq"] for e in changes] != list(range(1, len(changes) + 1))
                                or any(a == b for a, b in zip(states, states[1:], strict=False))),
            "scale_actions": sum(1 for e in events if e["kind"] == "scale"),
            "held_by_cooldown": sum(1 for e in events if e["kind"] == "held" and e["reason"] == "cooldown"),
            "posts": len(keys), "repeats_caught_by_key": len(keys) - len(set(keys))}


#: The grouped run's actions (the rule is HOT): a webhook grouping every alert of the rule, 50
#: a notification.
GROUPED = """
[action.hook]
kind = "webhook"
url = "%s"
secret = "%s"
timeout = "5s"
group_by = ["alertname"]
group_wait = "1s"
group_interval = "1s"
repeat_interval = 0
max_alerts = 50

[action.say]
kind = "log"

[settings]
retry_min = "0.2s"
retry_max = "0.5s"
"""


def grouped(folder: Path, hook: WebhookReceiver, kills: int, vms: int = 200,
            max_alerts: int = 50) -> dict:
    """``vms`` VMs hot, then calm, through ``kills`` SIGKILLs (and a last clean run), each
    phase's alerts in notifications of at most ``max_alerts``; see the module's doc."""
    folder.mkdir(parents=True, exist_ok=True)
    rules = folder / "rules.toml"
    rules.write_text(GROUPED % (hook.url, SECRET) + HOT % "")
    names = ["10.0.3.%d" % i if i < 250 else "10.0.4.%d" % (i - 250) for i in range(vms)]

    def logged(server, kind: str) -> list[dict]:
        return [e for e in log_entries(server) if e["type"] == kind]

    def notifications(server) -> int:  # the group's attempts (the log action's are not)
        return sum(1 for e in logged(server, "attempt") if "covers" in e)

    began = time.time()
    phases = 0
    for server in killed_servers(folder, str(rules), kills, 120):
        cpu = 95.0 if phases % 2 == 0 else 20.0
        want = (phases + 1) * vms
        attempts = notifications(server)

        def moved(run=server, cpu=cpu, want=want) -> bool:
            now = int(time.time())
            run.send_udp(*[line(vm, now, cpu) for vm in names])
            time.sleep(0.25)
            return sum(1 for e in logged(run, "event") if e["event"]["kind"] == "transition") >= want

        wait_until(moved, 60)
        # The phase's second notification logged (under way at the slow receiver, the first
        # taken, 100 alerts waiting their turn): kill.
        wait_until(lambda run=server, attempts=attempts: notifications(run) > attempts + 1, 30)
        phases += 1
    seconds = time.time() - began
    events = {e["event"]["key"] + ".hook": e["event"] for e in logged(server, "event")}
    with hook.lock:
        bodies = [r["body"] for r in hook.received]
        keys = list(hook.keys)
    received = {}  # delivery key -> the alert as received
    latest = {}  # VM -> (seq, status) of the latest event of it the receiver got
    for body in bodies:
        for alert in body["alerts"]:
            key = alert["annotations"]["idempotency_key"]
            received[key] = alert
            event = events.get(key)
            if event is not None and event["seq"] >= latest.get(event["scope"], (0, ""))[0]:
                latest[event["scope"]] = (event["seq"], alert["status"])
    lost = [key for key, event in events.items() if key not in received
            and latest.get(event["scope"], (0, ""))[0] <= event["seq"]]
    final = {}
    for event in events.values():
        if event["seq"] >= final.get(event["scope"], (0, ""))[0]:
            final[event["scope"]] = (event["seq"], "resolved" if event["to"] == "ok" else "firing")
    return {"vms": vms, "rounds": kills, "phases": phases, "transitions": len(events),
            "notifications": len(bodies), "posts": len(keys),
            "repeats_caught_by_key": len(keys) - len(set(keys)),
            "most_alerts_in_one": max((len(b["alerts"]) for b in bodies), default=0),
            "max_alerts": max_alerts,
            "truncated_said": sum(1 for b in bodies if b["truncatedAlerts"]),
            "superseded": sum(1 for key in events if key not in received) - len(lost),
            "lost": lost,
            "disagree_at_end": sum(1 for vm, (_seq, status) in final.items()
                                   if latest.get(vm, (0, ""))[1] != status),
            "seconds": round(seconds)}


def outage(folder: Path, seconds: float, vms: int = 20) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    with WebhookReceiver(SECRET.encode()) as hook:
        hook.down = True
        with serve(folder, rules_file(folder, hook.url, HOT % "")) as server:
            now = int(time.time())
            server.send_udp(*[line("10.0.1.%d" % i, now, 99.0) for i in range(1, vms + 1)])
            time.sleep(seconds)
            hook.down = False
            up = time.time()
            metrics = server.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 0,
                                          timeout=600)
            delivered_after = time.time() - up
            failed = metrics.get('vmstats_rule_deliveries_total{action="hook",result="failed"}', 0)
        keys = list(hook.keys)
    return {"outage_s": seconds, "transitions": vms, "received": len(keys),
            "distinct": len(set(keys)), "failed_attempts": int(failed),
            "all_delivered_s_after_recovery": round(delivered_after, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--outage", type=float, default=600.0, help="seconds (0: skip)")
    parser.add_argument("--group-kills", type=int, default=5,
                        help="SIGKILLs of the group run (-1: skip it)")
    parser.add_argument("--group-loss", type=float, default=0.2, help="its datagrams dropped, 0-1")
    parser.add_argument("--grouped-kills", type=int, default=5,
                        help="SIGKILLs of the grouped (max_alerts) run (-1: skip it)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vmstats-bench-rules-rel-"))
    results = {}
    try:
        began = time.time()
        with WebhookReceiver(SECRET.encode(), delay=0.3) as hook:
            (work / "kills").mkdir()
            results["sigkill"] = sigkill_rounds(work / "kills", hook, args.kills)
        results["sigkill"]["seconds"] = round(time.time() - began)
        print(json.dumps(results["sigkill"]), flush=True)
        if args.outage:
            results["outage"] = outage(work / "outage", args.outage)
            print(json.dumps(results["outage"]), flush=True)
        if args.group_kills >= 0:
            began = time.time()
            with WebhookReceiver(SECRET.encode(), delay=0.3) as hook:
                results["group"] = group(work / "group", hook, args.group_kills, args.group_loss)
            results["group"]["seconds"] = round(time.time() - began)
            print(json.dumps(results["group"]), flush=True)
        if args.grouped_kills >= 0:
            with WebhookReceiver(SECRET.encode(), delay=0.3) as hook:
                results["grouped"] = grouped(work / "grouped", hook, args.grouped_kills)
            print(json.dumps(results["grouped"]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    kills = results["sigkill"]
    ok = not kills["lost"] and not kills["duplicated"] and not kills["chain_broken"]
    ok = ok and kills["transitions"] == kills["records"]
    print("\n%s during delivery: %d acknowledged records, %d transitions, %d lost, "
          "%d duplicated, %d resends caught by the key [target 0 lost, 0 duplicated: %s]"
          % (counted(kills["rounds"], "SIGKILL"), kills["records"], kills["transitions"], len(kills["lost"]),
             kills["duplicated"],
             kills["repeats_caught_by_key"], "met" if ok else "MISSED"))
    if "outage" in results:
        o = results["outage"]
        once = o["received"] == o["distinct"] == o["transitions"]
        ok = ok and once
        print("receiver down %gs: %d transitions, %d received (%d distinct) %.1fs after recovery "
              "[target all, once: %s]" % (o["outage_s"], o["transitions"], o["received"], o["distinct"],
                                          o["all_delivered_s_after_recovery"], "met" if once else "MISSED"))
    if "group" in results:
        g = results["group"]
        whole = (not g["lost"] and not g["duplicated"] and not g["chain_broken"]
                 and g["transitions"] == g["phases"] and g["scale_actions"] == 1)
        ok = ok and whole
        print("group of 10, %d%% of its datagrams dropped, %s: %d phases, %d transitions, "
              "%d lost, %d duplicated, %s, %d held by a cooldown [target a transition a phase, 0 "
              "lost, 0 duplicated, 1 scaling action: %s]"
              % (round(100 * args.group_loss), counted(g["rounds"], "SIGKILL"), g["phases"], g["transitions"],
                 len(g["lost"]), g["duplicated"], counted(g["scale_actions"], "scaling action"),
                 g["held_by_cooldown"], "met" if whole else "MISSED"))
    if "grouped" in results:
        g = results["grouped"]
        whole = (not g["lost"] and not g["disagree_at_end"] and g["most_alerts_in_one"] <= g["max_alerts"]
                 and g["transitions"] == g["phases"] * g["vms"])
        ok = ok and whole
        print("%d VMs grouped, max_alerts %d, %s: %d transitions in %d notifications (at most %d "
              "alerts each, %d saying how many they left out), %d lost, %d superseded by a later "
              "event of their VM, %d alerts whose last status at the receiver is not the log's "
              "[target 0 lost, at most %d alerts a notification, all agree: %s]"
              % (g["vms"], g["max_alerts"], counted(g["rounds"], "SIGKILL"), g["transitions"],
                 g["notifications"], g["most_alerts_in_one"], g["truncated_said"], len(g["lost"]),
                 g["superseded"], g["disagree_at_end"], g["max_alerts"], "met" if whole else "MISSED"))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
