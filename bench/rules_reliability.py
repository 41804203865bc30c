"""Rules reliability: SIGKILLs during delivery, and a receiver outage.

    .venv/bin/python bench/rules_reliability.py                 # 20 kills, a 10-minute outage
    .venv/bin/python bench/rules_reliability.py --outage 60     # a shorter outage

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
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from rulesutil import HOT, SECRET, WebhookReceiver, line, rules_file, serve, sigkill_rounds  # noqa: E402


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
    finally:
        shutil.rmtree(work, ignore_errors=True)
    kills = results["sigkill"]
    ok = not kills["lost"] and not kills["duplicated"] and not kills["chain_broken"]
    ok = ok and kills["transitions"] == kills["records"]
    print("\n%d SIGKILLs during delivery: %d acknowledged records, %d transitions, %d lost, "
          "%d duplicated, %d resends caught by the key [target 0 lost, 0 duplicated: %s]"
          % (kills["rounds"], kills["records"], kills["transitions"], len(kills["lost"]),
             kills["duplicated"],
             kills["repeats_caught_by_key"], "met" if ok else "MISSED"))
    if "outage" in results:
        o = results["outage"]
        once = o["received"] == o["distinct"] == o["transitions"]
        ok = ok and once
        print("receiver down %gs: %d transitions, %d received (%d distinct) %.1fs after recovery "
              "[target all, once: %s]" % (o["outage_s"], o["transitions"], o["received"], o["distinct"],
                                          o["all_delivered_s_after_recovery"], "met" if once else "MISSED"))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
