"""backtest.csv, backtest.json, backtest.html and the terminal summary of a backtest.

BACKTEST_COLUMNS is the one list of CSV columns; docs/REPORT.md ("Backtest")
documents each, in this order.  JSON rows carry the same columns plus the
windows, the judging rules and the summary.
"""

import json
import os
from dataclasses import asdict
from typing import Any, TextIO

import jinja2

from vmstats import csvcells
from vmstats.outputfile import replacing, write_text
from vmstats.report.backtest import OUTCOMES, Backtest
from vmstats.report.money import Money
from vmstats.report.render import TEMPLATES
from vmstats.words import counted, plural

BACKTEST_COLUMNS = (
    "vm",
    "category",
    "outcome",
    "detail",
    "confidence",
    "monthly_cost",
    "monthly_saving",
    "recommendation",
    "blocked_by",
    "quiet_in_both",
    "decide_state",
    "decide_coverage",
    "decide_longest_stretch",
    "decide_first_stretch",
    "judge_state",
    "judge_coverage",
    "judge_work_minutes",
    "judge_longest_stretch",
    "judge_first_stretch",
    "recommended_vcpus",
    "recommended_mem_gb",
    "overrun_share",
    "off_hours_work_minutes",
    "off_hours_longest_stretch",
)
FILES = ("backtest.html", "backtest.csv", "backtest.json")
#: Outcomes that are faults of the decision, listed first and on the terminal.
FAULTS = ("needed-later", "overrun", "busy-off-hours", "missed-saving")


def ordered(result: Backtest) -> list[dict[str, Any]]:
    """Faults first (in FAULTS order, costliest first), then the rest by category and VM."""

    def key(row):
        fault = FAULTS.index(row["outcome"]) if row["outcome"] in FAULTS else len(FAULTS)
        return (fault, -(row["monthly_cost"] or 0.0), row["category"], row["vm"])

    return sorted(result.rows, key=key)


def _cell(value: Any) -> Any:
    """A yes/no column as words; everything else as csvcells writes it."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


def write_csv(result: Backtest, path: str) -> None:
    with replacing(path, "w", newline="", encoding="utf-8") as handle:
        writer = csvcells.writer(handle)
        writer.writerow(BACKTEST_COLUMNS)
        for row in ordered(result):
            writer.writerow([_cell(row.get(c)) for c in BACKTEST_COLUMNS])


def document(result: Backtest) -> dict[str, Any]:
    meta = result.decision.meta
    return {
        "windows": result.windows.as_dict(),
        "rules": asdict(result.rules),
        "summary": result.summary,
        "decision": {
            "window": meta["window"],
            "policy": meta["policy"],
            "prices": meta["prices"],
            "totals": meta["totals"],
            "too_young": meta["too_young"],
            "note": decision_note(result),
        },
        "skipped_files": result.skipped_files,
        "outcomes": OUTCOMES,
        "columns": list(BACKTEST_COLUMNS),
        "vms": [{c: row.get(c) for c in BACKTEST_COLUMNS} for row in ordered(result)],
    }


def decision_note(result: Backtest) -> str:
    """Why the deciding window judged less than it was asked to ("" when it had it all).

    The default deciding window leaves --judge-days of logs after it, so on a
    short history it lies mostly before the first log: its report is then too
    young for any verdict, every VM is insufficient-data, and each outcome
    reads 0 with nothing on the page saying why.
    """
    meta = result.decision.meta
    window, asked = meta["window"], result.windows.as_dict()["decide"]["days"]
    if not meta["too_young"] and window["days"] >= asked:
        return ""
    text = "the deciding window holds %g of its %s (from %s: %s)" % (
        window["days"], counted(asked, "day"), window["start"], window["why"].split(": ", 1)[-1]
    )
    if meta["too_young"]:
        text += "; %s: no advice to judge. Leave it more days of logs (a shorter --judge-days, " \
            "or a later --decide-until)" % meta["too_young"]
    return text


def write_json(result: Backtest, path: str) -> None:
    with replacing(path, "w", encoding="utf-8") as handle:
        json.dump(document(result), handle, allow_nan=False, separators=(",", ":"))
        handle.write("\n")


def render(result: Backtest, path: str) -> None:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    env.filters["num"] = lambda v, fmt="%.1f": "" if v is None else fmt % v
    env.filters["plural"] = plural
    money = Money.of(result.decision.meta["prices"])
    env.filters["money"] = lambda v: "" if v is None else money.figure(v)
    text = env.get_template("backtest.html.j2").render(
        doc=document(result),
        rows=ordered(result),
        faults=FAULTS,
        rules_text=rules_text(result),
        currency=result.summary["currency"],
    )
    write_text(path, text)


def rules_text(result: Backtest) -> str:
    r = result.rules
    return (
        "busy = a stretch of at least %s in which every minute has CPU >= %g%% of the vCPUs, "
        "disk >= %s or network >= %s (gaps up to %s); quiet = no such stretch, at most %g%% "
        "work minutes, median CPU < %g%% and network < %s, records for >= %g%% of the window"
        % (
            counted(r.stretch_minutes, "minute"),
            r.work_cpu,
            _rate(r.work_disk),
            _rate(r.work_net),
            counted(r.max_step_minutes, "minute"),
            100 * r.quiet_max_work_share,
            r.quiet_cpu,
            _rate(r.quiet_net),
            100 * r.min_coverage,
        )
    )


def _rate(value: float) -> str:
    for unit, size in (("MB/s", 1e6), ("kB/s", 1e3)):
        if value >= size:
            return "%g %s" % (value / size, unit)
    return "%g B/s" % value


def terminal_summary(result: Backtest, out_dir: str, stream: TextIO, top: int = 10) -> None:
    s = result.summary
    w = result.windows.as_dict()
    money = Money.of(result.decision.meta["prices"])
    print(
        "vmstats backtest: %s; decided on %s .. %s (%s), judged on %s .. %s (%s)"
        % (
            counted(s["vms"], "VM"),
            w["decide"]["first_day"],
            w["decide"]["last_day"],
            counted(w["decide"]["days"], "day"),
            w["judge"]["first_day"],
            w["judge"]["last_day"],
            counted(w["judge"]["days"], "day"),
        ),
        file=stream,
    )
    note = decision_note(result)
    if note:
        print("note: " + note, file=stream)
    print(rules_text(result), file=stream)
    q = s["quiet_in_both"]

    def vms(count: int) -> str:
        return "%d %s" % (count, plural(count, "VM"))

    lines = (
        ("reclaim", "%s: %d busy in the judging window (needed later), %d with a stretch of work "
         "in the deciding window" % (vms(s["reclaim"]["vms"]), s["reclaim"]["needed_later"],
                                      s["reclaim"]["worked_while_deciding"])),
        ("downsize", "%s: %d overran their new size in more than %g%% of judged minutes"
         % (vms(s["downsize"]["vms"]), s["downsize"]["overrun"], 100 * result.rules.overrun_share)),
        ("schedule", "%s: %d busy inside their off-hours"
         % (vms(s["schedule"]["vms"]), s["schedule"]["busy_off_hours"])),
        ("quiet", "%s quiet in both windows: %d reclaimed, %d not (missed saving %s a month)"
         % (vms(q["vms"]), q["reclaimed"], q["missed"], money.text(q["missed_monthly_cost"]))),
    )  # fmt: skip
    unjudged = s["outcomes"]["no-data"]
    if unjudged:  # else the zeros above read as decisions that held
        lines += (("no-data", "%s: %s" % (vms(unjudged), OUTCOMES["no-data"])),)
    for name, text in lines:
        print("%-9s %s" % (name, text), file=stream)
    faults = [r for r in ordered(result) if r["outcome"] in FAULTS][:top]
    if faults:
        print("", file=stream)
        print("%-22s %-9s %-15s %s" % ("vm", "category", "outcome", "detail"), file=stream)
        for row in faults:
            print(
                "%-22s %-9s %-15s %s"
                % (row["vm"][:22], row["category"][:9], row["outcome"], row["detail"][:70]),
                file=stream,
            )
    if result.skipped_files:
        print("", file=stream)
        skipped = counted(len(result.skipped_files), "day file")
        print("%s not read whole while judging:" % skipped, file=stream)
        for item in result.skipped_files[:top]:
            held = " (rows of %s)" % counted(item["vms"], "VM") if item["vms"] > 1 else ""
            print("  %s: %s%s" % (item["path"], item["why"], held), file=stream)
        if len(result.skipped_files) > top:
            print("  ... and %d more (backtest.json)" % (len(result.skipped_files) - top), file=stream)
    print("", file=stream)
    print("written: %s" % ", ".join(os.path.join(out_dir, n) for n in FILES), file=stream)
