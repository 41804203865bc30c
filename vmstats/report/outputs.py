"""report.csv, report.json and the terminal summary.

CSV_COLUMNS is the one list of CSV columns; docs/REPORT.md documents each,
in this order, and a test holds the two together.  JSON rows carry the same
columns with the same values (null where the CSV cell is empty), plus the
evidence, hour-of-week profiles and sparklines the CSV cannot hold.
"""

import os
import time
from typing import Any, TextIO

import orjson

from vmstats import csvcells, logstore
from vmstats.outputfile import replacing
from vmstats.protocol import format_tags
from vmstats.report import exclusions as exclusions_mod
from vmstats.report.build import Report
from vmstats.report.money import Money
from vmstats.report.policy import CANDIDATES
from vmstats.words import counted, plural

CSV_COLUMNS = (
    "rank",
    "vm",
    "category",
    "monthly_saving",
    "confidence",
    "confidence_label",
    "reason",
    "recommendation",
    "group",
    "excluded_reason",
    "monthly_cost",
    "usage_cost",
    "vcpus",
    "mem_gb",
    "recommended_vcpus",
    "recommended_mem_gb",
    "recommended_size",
    "off_hours_per_week",
    "coverage",
    "first_seen",
    "last_seen",
    "records",
    "cpu_avg",
    "cpu_p50",
    "cpu_p95",
    "cpu_p99",
    "cpu_max",
    "cpu_peak",
    "mem_avg",
    "mem_p95",
    "mem_max",
    "disk_avg",
    "disk_p95",
    "net_avg",
    "net_p95",
    "idle_share",
    "idle_days",
    "days_with_data",
    "cpu_trend",
    "mem_trend",
    "bad_lines",
    "host",
    "tags",
    "blocked_by",
    "data_quality",
    "span_days",
    # Money is in the price book's currency: a bill read from the CSV alone names it on every row,
    # and its minor unit, which a book may set for an ISO code too (the CSV's cells cannot say it:
    # 12.5 is written so to cents and to mills alike).
    "currency",
    "minor_unit",
)
JSON_EXTRA = (
    "evidence",
    "hour_of_week_cpu",
    "hour_of_week_mem",
    "spark_cpu",
    "spark_mem",
    "daily_cpu_p95",
    "daily_mem_p95",
    "usage",
)
#: The files a report writes into its output folder.
OUTPUTS = ("report.html", "report.csv", "report.json")


def write_csv(report: Report, path: str) -> None:
    tags = CSV_COLUMNS.index("tags")
    with replacing(path, "w", newline="", encoding="utf-8") as handle:
        writer = csvcells.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for row in report.rows:
            cells = [row[c] for c in CSV_COLUMNS]
            # The extra tags as in the logs (key=value;key=value, sorted), a dict in JSON.
            cells[tags] = format_tags(sorted(row["tags"].items()), logstore.TAGS_SEPARATOR)
            writer.writerow(cells)


def to_json(value: Any) -> bytes:
    """``value`` as compact JSON, by orjson: for the report's values the same bytes as
    ``json.dumps(separators=(",", ":"))``, ten times faster (report.json of 1,000 VMs, 4 MB:
    ~0.01 s instead of ~0.11 s).  NaN, a gap, is null (JSON has no NaN); numpy's scalars
    are numbers; keys that are not strings are written as json writes them."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


def write_json(report: Report, path: str) -> None:
    document = {
        "meta": report.meta,
        "fleet": report.fleet,
        "columns": list(CSV_COLUMNS),
        "vms": [
            dict({c: row[c] for c in CSV_COLUMNS + JSON_EXTRA}, evidence=row["evidence"])
            for row in report.rows
        ],
    }
    with replacing(path, "wb") as handle:
        handle.write(to_json(document) + b"\n")


#: Damaged log files named one per line on the terminal; the rest are counted (JSON and HTML name all).
NAMED_FILES = 20


def damaged_files_summary(
    named: dict[str, Any], stream: TextIO, rest: str = "all named in report.json (meta.%s) and report.html"
) -> None:
    """The log files skipped or read in part (issues.named_files), named: damage is never silent.

    ``rest`` says where a command names the files past the first NAMED_FILES
    (``%s``: the key, ``skipped_files`` or ``damaged_files``).
    """
    for key, what in (("skipped_files", "log files skipped"), ("damaged_files", "log files read in part")):
        files = named[key]
        if not files:
            continue
        print("%s: %d" % (what, len(files)), file=stream)
        for entry in files[:NAMED_FILES]:
            kept = " (%s kept)" % counted(entry["rows"], "row") if entry["rows"] else ""
            print("  %s: %s%s" % (entry["path"], entry["problem"], kept), file=stream)
        if len(files) > NAMED_FILES:
            print("  ... and %d more, %s" % (len(files) - NAMED_FILES, rest % key), file=stream)


def terminal_summary(report: Report, out_dir: str, stream: TextIO, top: int = 10) -> None:
    meta = report.meta
    window = meta["window"]
    money = Money.of(meta["prices"])
    totals = meta["totals"]
    print(
        "vmstats report: %s, window %s .. %s (%.1f days, %s%s%s)"
        % (
            counted(totals["vms"], "VM"),
            window["start"],
            window["end"],
            window["days"],
            counted(window["expected_minutes"], "expected minute"),
            "; starts at the fleet's first record, no older data" if window["clipped"] else "",
            "; ends at the latest record, before the days asked for (%s) end" % window["asked"]
            if window["ends_early"] else "",
        ),
        file=stream,
    )
    if meta["prices"]["is_example"]:
        print("prices: the shipped EXAMPLE price book (pass --prices FILE for your own)", file=stream)
    else:
        print("prices: %s" % meta["prices"]["source"], file=stream)
    parts = []
    for name, entry in meta["categories"].items():
        if entry["vms"]:
            parts.append("%s %d" % (name, entry["vms"]))
    print("categories: " + ", ".join(parts), file=stream)
    print(
        "monthly cost %s; saving %s from %d %s"
        % (
            money.text(totals["monthly_cost"]),
            money.text(totals["monthly_saving"]),
            totals["candidates"],
            plural(totals["candidates"], "candidate"),
        ),
        file=stream,
    )
    if totals["unpriced_vms"]:
        # The page's words for these two facts: "not priced", "size not reported".
        unpriced = totals["unpriced_vms"]
        print(
            "%s not priced (size not reported): no cost or saving for %s"
            % (counted(unpriced, "VM"), "it" if unpriced == 1 else "them"),
            file=stream,
        )
    if meta["too_young"]:
        print(meta["too_young"], file=stream)
    expired = meta["exclusions"]["expired"]
    if expired:
        # As on the page: a lapsed promise must not turn silently into a reclaim advice.
        print(
            "exclusions expired at the window's end, no longer applied: %s"
            % "; ".join("%s (%s, expired %s)" % (e["vm"], e["reason"], e["expires"]) for e in expired),
            file=stream,
        )
    unapplied = meta["exclusions"]["unapplied"]
    if unapplied:
        print(
            "exclusions in force that applied to no VM of the window (a typo?): %s"
            % "; ".join("%s (%s)" % (e["vm"], e["reason"]) for e in unapplied),
            file=stream,
        )
    lapsed = exclusions_mod.since_expired(report.rows, time.time())
    if lapsed:
        # Still applied (at the window's end), but the next report will not apply them.
        print(
            "exclusions applied at the window's end but expired since (renew or drop them): %s"
            % "; ".join("%s (%s, expired %s)" % (e["vm"], e["reason"], e["expires"]) for e in lapsed),
            file=stream,
        )
    upsizes = meta["categories"]["upsize"]["vms"]
    if totals["upsize_extra_cost"]:
        print(
            "upsize: %s more a month for %s near %s size (not in the saving)"
            % (money.text(totals["upsize_extra_cost"]), counted(upsizes, "VM"),
               "its" if upsizes == 1 else "their"),
            file=stream,
        )
    if totals["data_quality_vms"]:
        doubtful = totals["data_quality_vms"]
        print("%d %s with doubtful data (see data_quality)" % (doubtful, plural(doubtful, "VM")), file=stream)
    if totals["bad_lines"]:
        print("malformed log lines skipped: %d" % totals["bad_lines"], file=stream)
    damaged_files_summary(meta, stream)
    candidates = [r for r in report.rows if r["category"] in CANDIDATES][:top]
    if candidates:
        print("", file=stream)
        # As wide as the longest id listed: ids of up to 64 characters that differ only at their
        # end (web-frontend-prod-eu-01, -02) must not print alike.
        width = max(22, *(len(row["vm"]) for row in candidates))
        print(
            "%4s  %-*s %-9s %12s %5s  %s"
            % ("rank", width, "vm", "category", "saving/mo", "conf", "recommendation"),
            file=stream,
        )
        for row in candidates:
            print(
                "%4d  %-*s %-9s %12s %5.2f  %s"
                % (
                    row["rank"],
                    width,
                    row["vm"],
                    row["category"],
                    money.figure(row["monthly_saving"]),
                    row["confidence"],
                    # Whole, however long: it is what to do, and a schedule cut at 60 characters
                    # ("... = in UTC: off Mon-Fri 00:00-07:00, 1") was a wrong schedule. Last on
                    # its line, it wraps without moving the columns before it.
                    row["recommendation"],
                ),
                file=stream,
            )
    names = list(OUTPUTS)
    statement = meta.get("statement")
    if statement:
        from vmstats.report.statement import STATEMENT_NAME

        names.append(STATEMENT_NAME)
        print("", file=stream)
        groups = statement["groups"]
        count = len(groups)
        # Its lines are bills: they name their unit and period, as the money line above does.
        print("statement by %s: %d %s (%s a month)" % (statement["by"], count, plural(count, "group"),
                                                      money.currency), file=stream)
        shown = [(line["value"] or "(no %s)" % statement["by"], line) for line in groups[:top]]
        if len(groups) > top:
            shown.append(("... %d more %s" % (len(groups) - top, plural(len(groups) - top, "group")), None))
        # The total closes the list, so the lines shown are read against the report's figures.
        shown.append(("total", statement["total"]))
        # As wide as the longest value shown: values of up to 64 characters that differ only at
        # their end (team-platform-eu, -us) must not print as one owner twice.
        width = max(24, *(len(label) for label, line in shown if line is not None))
        # An owner's upsizes would add to its bill: shown apart from its saving, as the page's
        # "upsize extra" column is, on every line once any VM of the fleet is an upsize.
        upsizing = bool(statement["total"]["upsize_extra_cost"])
        for label, line in shown:
            if line is None:
                print("  %s (statement.csv)" % label, file=stream)
                continue
            extra = "  upsize extra %12s" % money.figure(line["upsize_extra_cost"]) if upsizing else ""
            print(
                "  %-*s %4d %-3s  provisioned %12s  by use %12s  saving %12s%s"
                % (
                    width,
                    label,
                    line["vms"],
                    plural(line["vms"], "VM"),
                    money.figure(line["monthly_cost"]),
                    money.figure(line["usage_cost"]),
                    money.figure(line["monthly_saving"]),
                    extra,
                ),
                file=stream,
            )
        stopped = statement["total"]["stopped_vms"]
        if stopped:
            print(
                "  of which stopped (silent at the window's end, billed at their last size): %s, %s"
                % (counted(stopped, "VM"), money.text(statement["total"]["stopped_cost"])),
                file=stream,
            )
    print("", file=stream)
    print("written: %s" % ", ".join(os.path.join(out_dir, n) for n in names), file=stream)
