"""The closing summary of ``bin/demo``, from the files the demo's steps wrote in its folder.

``python -m vmstats.simulator.demo OUT SECONDS``.  A module rather than a script inside the
shell script, so the lines it prints are tested (tests/test_simulator_demo.py).
"""

import json
import os
import sys

from vmstats.report.money import Money
from vmstats.words import counted, part_of, plural


def _load(out: str, *path: str) -> dict:
    with open(os.path.join(out, *path), encoding="utf-8") as handle:
        return json.load(handle)


def score_lines(score: dict, money: Money, min_days: float, days: float) -> list[str]:
    """How the report fared against the truth (``vmstats score --json``).

    A VM the report left insufficient-data was not judged: a demo of fewer days than the
    report's minimum span (``min_days``) read "0 of 1 VM right", as if the report had failed,
    when it did what it is meant to; the line says so and what would grade it.
    """
    lines = []
    unjudged = len(score["insufficient_data"])
    if unjudged:
        lines.append("%s had too little data for the report to judge, as it should: a verdict needs "
                     "%g days of a VM's records, this run simulated %g (run the demo with more "
                     "--days to grade them)." % (counted(unjudged, "VM"), min_days, days))
    share = " (%.1f %%)" % (100 * score["accuracy"]) if score["total"] else ""
    lines.append("Against the simulator's truth the report is right about %s%s; "
                 "%s of the monthly saving rests on correct verdicts." % (
                     part_of(score["correct"], score["total"], "judged VM" if unjudged else "VM"),
                     share, money.text(money.round(score["saving_correct"]))))
    return lines


def summary(out: str, took: str) -> list[str]:
    """The summary's lines: what was sent, what the report found and how it scored, the live
    rules, the headroom and the admission."""
    sim = _load(out, "simulate.json")
    # The report's own totals: an upsize's extra cost is kept out of the saving there.
    meta = _load(out, "report", "report.json")["meta"]
    totals, money = meta["totals"], Money.of(meta["prices"])
    lines = ["%s sent %s over %s (%.0f records/s); the report found %s that could save %s a month."
             % (counted(sim["vms"], "simulated VM"), counted(sim["records"], "record"), sim["transport"],
                sim["records"] / sim["elapsed"] if sim["elapsed"] else 0,
                counted(totals["candidates"], "candidate"), money.text(totals["monthly_saving"]))]
    lines += score_lines(_load(out, "score.json"), money, meta["policy"]["settings"]["min_days"],
                         sim["days"])
    events = [e["event"] for e in _load(out, "rules", "alerts.json")["recent"] if e["type"] == "event"]
    outs = [e for e in events if e["kind"] == "scale" and e["delta"] > 0]
    ins = [e for e in events if e["kind"] == "scale" and e["delta"] < 0]
    silent = [e for e in events if e["kind"] == "transition" and e["to"] == "silent"]
    held = [e for e in events if e["kind"] == "held"]
    if outs:
        lines.append("Live rules: the pool scaled out %s, first from %d to %s (placed on %s); scaled in %s; "
                     "%s held by a cooldown or a pending action, then made."
                     % (counted(len(outs), "time"), outs[0]["current"], counted(outs[0]["desired"], "member"),
                        outs[0]["placement"], counted(len(ins), "time"), counted(len(held), "decision")))
    else:
        lines.append("Live rules: NO scale-out (see %s)" % os.path.join(out, "rules", "server.log"))
    lines.append("Silent-VM alerts: %s." % (", ".join(sorted({e["scope"] for e in silent})) or "NONE"))
    capacity = meta.get("capacity")
    if capacity:
        fleet = capacity["fleet"]
        after = "-" if fleet["fit_after"] is None else fleet["fit_after"]
        lines.append("Headroom on %s: %d more %s %s by measured use now, %s after the report's "
                     "reclaim and downsize advice; allocation at Nova's ratios allows %d." % (
                         counted(fleet["hosts"], "simulated host"), fleet["fit_now"],
                         capacity["profile"]["name"], plural(fleet["fit_now"], "VM fits", "VMs fit"), after,
                         fleet["alloc_fit_now"]))
    admit = _load(out, "capacity", "admit.json")
    lines.append("Admission of %r (%s): %s, %d placed on %s (allocation at Nova's ratios would place %d)."
                 % (admit["request"], counted(admit["asked"], "VM"), admit["status"].upper(), admit["placed"],
                    counted(len(set(admit["offer"].values())), "host"), admit["allocation_basis"]["placed"]))
    lines.append("HTML: %s" % os.path.join(out, "report", "report.html"))
    lines.append("CSV:  %s" % os.path.join(out, "report", "report.csv"))
    lines.append("Whole demo: %s s" % took)
    return lines


if __name__ == "__main__":
    print("\n".join(summary(sys.argv[1], sys.argv[2])))
