"""Headroom's outputs: headroom.csv (COLUMNS), headroom.json (everything), the terminal table."""

import json
import os

from vmstats import csvcells
from vmstats.capacity import unplaced
from vmstats.capacity.admission import MOST_NAMES, days_line, days_named, few, unheard_line
from vmstats.capacity.headroom import COLUMNS
from vmstats.outputfile import Outputs, replacing
from vmstats.words import counted, number, part_of

OUTPUTS = ("headroom.csv", "headroom.json")


def write(result: dict, out_dir: str, files: Outputs) -> None:
    """headroom.csv and headroom.json in ``out_dir`` (made if missing), staged in ``files``."""
    os.makedirs(out_dir, exist_ok=True)
    with replacing(files.stage(os.path.join(out_dir, "headroom.csv")), "w", newline="",
                   encoding="utf-8") as handle:
        writer = csvcells.writer(handle)
        writer.writerow(COLUMNS)
        for row in result["hosts"]:
            writer.writerow([row.get(c) for c in COLUMNS])
    with replacing(files.stage(os.path.join(out_dir, "headroom.json")), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1, sort_keys=True)
        handle.write("\n")


def _count(value) -> str:
    return "?" if value is None else number(value)


def _pair(used, limit) -> str:
    return "?" if used is None else "%.1f/%.0f" % (used, limit)


def _some(names: list[str], most: int = 5) -> str:
    if not names:
        return ""
    return " (%s%s)" % (", ".join(names[:most]), ", ..." if len(names) > most else "")


def terminal(result: dict, top: int = 20, written: bool = True) -> str:
    """The profile, the basis, the hosts with the most room first (unknown last), the fleet.

    ``written``: headroom.csv was written (-o), so the hosts past ``top`` are found there;
    without it the line says how to get them instead of naming a file that is not there.
    """
    p, b, f = result["profile"], result["basis"], result["fleet"]
    after = result["after"] is not None
    where = "in headroom.csv" if written else "(-o OUT/ lists every host in headroom.csv)"
    lines = [
        "headroom for %s (%.2f cores, %.2f GB expected each): %s of %s over %s, coverage gate %g%%"
        % (
            p["name"],
            p["cpu_demand"],
            p["mem_demand"],
            b["percentile"],
            b["peaks"],
            days_line(b["window"], b.get("days_asked")),
            b["coverage_min"] * 100,
        ),
        "%-16s %-7s %5s %12s %12s %5s %-9s %6s %8s %8s"
        % (
            "host",
            "status",
            "cov",
            "cpu dem/use",
            "mem dem/use",
            "fit",
            "binds",
            "after",
            "nova",
            "nova aft",
        ),
    ]
    ordered = sorted(result["hosts"], key=lambda r: (r["fit_now"] is None, -(r["fit_now"] or 0), r["host"]))
    for row in ordered[:top]:
        lines.append(
            "%-16s %-7s %4.0f%% %12s %12s %5s %-9s %6s %8s %8s"
            % (
                row["host"][:16],
                row["status"],
                row["coverage"] * 100,
                _pair(row["cpu_demand"], row["cpu_usable"]),
                _pair(row["mem_demand"], row["mem_usable"]),
                _count(row["fit_now"]),
                row["binding_now"],
                _count(row["fit_after"]) if after else "-",
                _count(row["alloc_fit_now"]),
                _count(row["alloc_fit_after"]) if after else "-",
            )
        )
    if len(ordered) > top:
        rest = len(ordered) - top
        lines.append("... %s %s" % (counted(rest, "more host", grouped=True), where))
    lines.append(
        "fleet: %s more fit now%s (allocation at Nova's ratios: %s%s); %s known"
        % (
            number(f["fit_now"]),
            ", %s after the report's reclaim and downsize advice" % number(f["fit_after"]) if after else "",
            number(f["alloc_fit_now"]),
            ", %s after" % number(f["alloc_fit_after"]) if after else "",
            part_of(f["hosts_known"], f["hosts"], "host", grouped=True),
        )
    )
    if f["hosts_unknown"]:
        unknown = f["hosts_unknown"]
        lines.append(
            "unknown (below the coverage gate, a VM of unknown size, no VM reporting, or most VMs "
            "stopped; counted as no room): %s%s"
            % (few(unknown), " " + where if len(unknown) > MOST_NAMES else "")
        )
    if f["vms_unknown"]:
        lines.append(unheard_line(f["vms_unknown"]))
    if f["unplaced_vms"]:
        lines.append(
            "%s; e.g. %s"
            % (unplaced.line(len(f["unplaced_vms"]), f["unplaced_use"], f["withheld_for_unplaced"],
                             instances=f["instances_withheld_for_unplaced"]),
               ", ".join(f["unplaced_vms"][:5]))
        )
    if after:
        a = result["after"]
        lines.append(
            "after: the report's advice on %s (%s): reclaim %s%s, downsize %s%s"
            % (
                days_named(a["window"]),
                a["source"],
                counted(len(a["reclaimed"]), "VM", grouped=True),
                _some(a["reclaimed"]),
                number(len(a["downsized"])),
                _some(a["downsized"]),
            )
        )
    return "\n".join(lines)
