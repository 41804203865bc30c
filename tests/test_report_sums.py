"""The report's money adds up: what an operator sums from its parts is the total it prints.

Logs are written through the real layout (test_report_stats.write_records), the real
``vmstats report`` is run on them, and its report.json, report.csv, statement.csv, page and
terminal are read back and summed in decimal, as an operator checking the bill would.
"""

import csv
import json
import subprocess
import sys
from decimal import Decimal

import numpy as np
from test_report_stats import T0, series, write_records

from vmstats.report.policy import CANDIDATES


def run_report(*args: str) -> subprocess.CompletedProcess:
    """``vmstats report ARGS`` as an operator runs it, once it succeeded."""
    done = subprocess.run([sys.executable, "-m", "vmstats", "report", *args, "--no-cache"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def test_the_categories_savings_add_up_to_the_total_and_an_upsize_s_cost_is_its_own(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    ts = list(range(T0, T0 + 7 * 86400, 60))
    flat = np.ones(len(ts))
    write_records(data, series("idle", ts, 0.5 * flat, 20 * flat, 500 * flat, 200 * flat, 4, 8192))
    write_records(data, series("hot", ts, 97 * flat, 50 * flat, 1e6 * flat, 1e6 * flat))
    write_records(data, series("busy", ts, 50 * flat, 50 * flat, 1e6 * flat, 1e6 * flat))
    done = run_report(str(data), "-o", str(out))
    meta = json.loads((out / "report.json").read_text())["meta"]
    categories, totals = meta["categories"], meta["totals"]
    assert categories["reclaim"]["vms"] == categories["upsize"]["vms"] == 1
    assert totals["upsize_extra_cost"] > 0
    # An operator adding the categories' savings gets the header's saving, to the cent.
    saved = sum(Decimal(str(entry["monthly_saving"])) for entry in categories.values())
    assert saved == Decimal(str(totals["monthly_saving"])) == Decimal("92.86")
    # The upsize's cost is its own figure, positive, and the categories' add up to the total's.
    extra = {name: entry["extra_cost"] for name, entry in categories.items() if entry["extra_cost"]}
    assert extra == {"upsize": totals["upsize_extra_cost"]}
    assert categories["upsize"]["monthly_saving"] == 0
    assert all(entry["monthly_saving"] == 0 for name, entry in categories.items() if name not in CANDIDATES)
    # The page's category table and the terminal say the same two figures.
    page = (out / "report.html").read_text()
    assert "USD %.2f / month" % totals["monthly_saving"] in page
    assert "USD %.2f more / month (not in the saving)" % totals["upsize_extra_cost"] in page
    assert "saving USD %.2f from 1 candidate" % totals["monthly_saving"] in done.stdout
    assert "upsize: USD %.2f more a month" % totals["upsize_extra_cost"] in done.stdout
    # report.csv: the candidates' cells add up to the saving; the upsize's cell is its cost, negative.
    with open(out / "report.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert sum(Decimal(r["monthly_saving"]) for r in rows if r["category"] in CANDIDATES) == saved
    assert [Decimal(r["monthly_saving"]) for r in rows if r["category"] == "upsize"] == [
        -Decimal(str(totals["upsize_extra_cost"]))]
