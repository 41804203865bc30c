"""Billing by use: the fleet's cost grouped by a tag, for chargeback (``report --by TAG``).

A VM's group is the value of the tag on its latest record in the window
(``host`` or an extra tag, docs/PROTOCOL.md); VMs without it form one group
with an empty value.  Every figure of a group is a sum of the per-VM figures
of report.csv (idle share is a ratio of two such sums), so a statement always
adds up to the report it came from; docs/REPORT.md says how each is computed.
"""

import re
from collections.abc import Mapping, Sequence
from typing import Any

from vmstats import csvcells, logstore
from vmstats.outputfile import replacing
from vmstats.protocol import MAX_TAG_KEY_LENGTH
from vmstats.report.money import Money
from vmstats.report.policy import CANDIDATES, CATEGORIES
from vmstats.report.settings import InputError

STATEMENT_NAME = "statement.csv"
#: statement.csv's header, in this order (docs/REPORT.md documents each).
COLUMNS = (
    "tag",
    "value",
    "vms",
    "unpriced_vms",
    "monthly_cost",
    "usage_cost",
    "usage_cpu",
    "usage_ram",
    "usage_disk",
    "usage_network",
    "idle_cost",
    "idle_share",
    "monthly_saving",
    "candidates",
    "upsize_extra_cost",
    "currency",
    "minor_unit",
    # Last, so a reader of the columns above by position reads them as before.
    "stopped_vms",
    "stopped_cost",
)
_PARTS = ("cpu", "ram", "disk", "network")
_KEY_RE = re.compile(r"[a-z][a-z0-9_]{0,%d}\Z" % (MAX_TAG_KEY_LENGTH - 1))

Labels = tuple[str, tuple[tuple[str, str], ...] | None]


def check_key(key: str) -> None:
    """InputError unless ``key`` could be a tag: ``host`` or an extra tag's key."""
    if key != "host" and (key == "vm" or not _KEY_RE.match(key)):
        raise InputError(
            "--by %r is not a tag: use host or an extra tag's key ([a-z][a-z0-9_]*, e.g. project)" % key
        )


def vm_labels(
    units: Mapping[tuple[str, int], Sequence[str]],
    vms: Sequence[str],
    last_day: int,
    newest: Mapping[tuple[str, int], int] | None = None,
) -> list[Labels]:
    """``(host, tags)`` of each VM of ``vms``: those of its latest readable record up to ``last_day``.

    Only the last lines of each VM's latest day files are read (one small
    read per data dir), not a column of every row; a compacted day's labels
    come from its columnar file or its rollup, which keeps them.  ``newest``
    holds each loaded VM-day's latest timestamp: a day whose last lines are
    older was written out of order (an agent's backlog arriving after its live
    records, which may name a previous owner), and its CSV files are read
    whole for the latest record's labels.  When none of a day's files holds a
    readable row (a damaged or unreadable newest file), the day before
    answers: a VM is billed to the owner its records name, never moved to the
    untagged group by a file it could not read.
    """
    newest = newest or {}
    days: dict[str, list[int]] = {}
    for vm, day in units:
        if day <= last_day:
            days.setdefault(vm, []).append(day)
    for known in days.values():
        known.sort(reverse=True)
    best: list = [None] * len(vms)
    tried = 0
    waiting = [k for k, vm in enumerate(vms) if vm in days]
    while waiting:
        sources, spans = [], []
        for k in waiting:
            start = len(sources)
            sources.extend(units[(vms[k], days[vms[k]][tried])])
            spans.append((k, start, len(sources)))
        # Compacted tiers' files are read once for all their VMs (logstore.last_labels_many).
        tails = logstore.last_labels_many(sources)
        for k, start, end in spans:
            best[k] = logstore.newest_labels(sources[start:end], tails[start:end],
                                             newest.get((vms[k], days[vms[k]][tried])))
        tried += 1
        waiting = [k for k in waiting if best[k] is None and tried < len(days[vms[k]])]
    return [("", None) if found is None else (found[1], found[2]) for found in best]


def tag_value(row: Mapping[str, Any], key: str) -> str:
    """The VM's value of tag ``key`` ("" when it has none)."""
    if key == "host":
        return row["host"] or ""
    return row["tags"].get(key, "")


def statement(rows: Sequence[Mapping[str, Any]], key: str, money: Money) -> dict[str, Any]:
    """Per value of tag ``key``: VMs, cost as provisioned and by use, idle share, savings.

    Groups are ordered by provisioned cost, highest first (then by value);
    ``total`` holds the same figures over every VM.  Each line names the
    currency of ``money`` (the price book's): a billing system reading
    statement.csv alone needs it.
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tag_value(row, key), []).append(row)
    lines = [_line(key, value, members, money) for value, members in groups.items()]
    lines.sort(key=lambda line: (-line["monthly_cost"], line["value"]))
    return {"by": key, "groups": lines, "total": _line(key, "", rows, money)}


def unmatched(statement: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str | None:
    """Why the statement is one untagged line, when no VM carries its tag (``--by projct``): a
    typo, or a tag the agents do not send yet, which a bill of one empty group hides."""
    if not rows or any(line["value"] for line in statement["groups"]):
        return None
    seen = {key for r in rows for key in r["tags"]}
    seen.update("host" for r in rows[:1] if any(r["host"] for r in rows))
    return "no VM carries tag %r: the statement is one untagged group (tags the VMs carry: %s)" % (
        statement["by"], ", ".join(sorted(seen)) or "none")


def _line(key: str, value: str, rows: Sequence[Mapping[str, Any]], money: Money) -> dict[str, Any]:
    priced = [r for r in rows if r["monthly_cost"] is not None]
    line: dict[str, Any] = {
        "tag": key,
        "value": value,
        "vms": len(rows),
        "unpriced_vms": len(rows) - len(priced),
        **totals(rows, money),
        "usage_cost": money.total(r["usage_cost"] or 0.0 for r in rows),
    }
    for part in _PARTS:
        line["usage_" + part] = money.total(r["usage"][part] for r in priced if r["usage"])
    # Money spent while idle: each VM's provisioned cost times its share of idle minutes, rounded
    # per VM as every other figure here, so the groups add up to the total.
    known = [r for r in priced if r["idle_share"] is not None]
    idle = money.total(money.round(r["monthly_cost"] * r["idle_share"]) for r in known)
    line["idle_cost"] = idle
    # Of the cost of the VMs whose idle share is known: a stopped VM's month (no minutes, no
    # share) in the denominator made a group with one read less idle than its VMs are.
    judged = money.total(r["monthly_cost"] for r in known)
    line["idle_share"] = round(idle / judged, 4) if judged else None
    line["currency"] = money.currency
    line["minor_unit"] = money.minor_unit  # read alone, 12.5 would be cents or mills
    # A VM silent at the window's end (category stopped, also one whose last record predates the
    # window by months) is billed a month at its last size like any other: the statement cannot
    # tell a powered-off VM from a deleted one.  The part of the line it makes is said, so an
    # owner is not billed for a VM that is gone without the line showing it.
    stopped = [r for r in rows if r["category"] == "stopped"]
    line["stopped_vms"] = len(stopped)
    line["stopped_cost"] = money.total(r["monthly_cost"] or 0.0 for r in stopped)
    return line


def totals(rows: Sequence[Mapping[str, Any]], money: Money) -> dict[str, Any]:
    """Cost as provisioned, saving, candidates and upsizes' extra cost of ``rows``.

    The one definition of these totals, for the report's (``meta.totals``) and
    each statement line's: the saving is the candidates' only, and an upsize's
    extra cost is its own figure, never netted against it (docs/REPORT.md,
    "Ranking"), so a statement's saving adds up to the report's.
    """
    candidates = [r for r in rows if r["category"] in CANDIDATES]
    upsizes = [r for r in rows if r["category"] == "upsize"]
    return {
        "monthly_cost": money.total(r["monthly_cost"] or 0.0 for r in rows),
        "monthly_saving": money.total(r["monthly_saving"] or 0.0 for r in candidates),
        "candidates": len(candidates),
        # Whole units, negated: an empty sum is 0.0, not -0.0 (written "-0.0" in a CSV).
        "upsize_extra_cost": money.total(-(r["monthly_saving"] or 0.0) for r in upsizes),
    }


def categories(rows: Sequence[Mapping[str, Any]], money: Money) -> dict[str, dict[str, Any]]:
    """Per category of the policy: VMs, saving and extra cost (report.json's ``meta.categories``).

    A category's ``monthly_saving`` is its candidates' saving (0 outside CANDIDATES) and its
    ``extra_cost`` what its VMs would add (an upsize's, as a positive amount; 0 elsewhere):
    an upsize's negative saving in ``monthly_saving`` made the categories' savings add up
    to less than ``meta.totals.monthly_saving``, the figure the page's header prints.
    """
    found = {name: [] for name in CATEGORIES}
    for row in rows:
        found.setdefault(row["category"], []).append(row)
    return {
        name: {
            "vms": len(members),
            "monthly_saving": money.total(r["monthly_saving"] or 0.0 for r in members if name in CANDIDATES),
            "extra_cost": money.total(-(r["monthly_saving"] or 0.0) for r in members if name == "upsize"),
        }
        for name, members in found.items()
    }


def write_csv(document: Mapping[str, Any], path: str) -> None:
    """statement.csv (STATEMENT_NAME) at ``path``: one line per group, the header exactly COLUMNS."""
    with replacing(path, "w", newline="", encoding="utf-8") as handle:
        writer = csvcells.writer(handle)
        writer.writerow(COLUMNS)
        for line in document["groups"]:
            writer.writerow([line[c] for c in COLUMNS])
