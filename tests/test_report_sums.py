"""The report's money adds up: what an operator sums from its parts is the total it prints.

Logs are written through the real layout (test_report_stats.write_records), the real
``vmstats report`` is run on them, and its report.json, report.csv, statement.csv, page and
terminal are read back and summed in decimal, as an operator checking the bill would.
"""

import csv
import json
import subprocess
import sys
import tomllib
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
from test_report_policy import build_fleet
from test_report_stats import T0, series, write_records

from vmstats.report.policy import CANDIDATES

ROOT = Path(__file__).resolve().parent.parent


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


#: A size whose month (308,708,033.53 x 730 = 225,356,864,476.90) is within the amounts reckoned
#: exactly (USD: under 10^13), and 36 of it too: a float sum() of the 36 is ...168.41.
BIG = """\
currency = "USD"
hours_per_month = 730
vcpu_hour = 0.05
gb_ram_hour = 0.005
disk_gb = 0.02
network_gb = 0.01
[[sizes]]
name = "big"
vcpus = 2
memory_gb = 4
hourly = 308708033.53
"""


def test_a_total_is_the_sum_of_the_lines_printed_to_the_cent(tmp_path):
    data, out, book = tmp_path / "data", tmp_path / "out", tmp_path / "prices.toml"
    book.write_text(BIG)
    ts = list(range(T0, T0 + 86400, 600))
    flat = np.ones(len(ts))
    for i in range(36):
        records = series("vm-%02d" % i, ts, 30 * flat, 50 * flat, 1e3 * flat, 1e3 * flat)
        write_records(data, [r._replace(tags=(("project", "p%d" % (i % 2)),)) for r in records])
    done = run_report(str(data), "-o", str(out), "--prices", str(book), "--by", "project")
    meta = json.loads((out / "report.json").read_text())["meta"]
    with open(out / "report.csv", newline="", encoding="utf-8") as handle:
        cells = [Decimal(row["monthly_cost"]) for row in csv.DictReader(handle)]
    with open(out / "statement.csv", newline="", encoding="utf-8") as handle:
        lines = [Decimal(line["monthly_cost"]) for line in csv.DictReader(handle)]
    assert cells == [Decimal("225356864476.90")] * 36
    exact = sum(cells)
    assert exact == sum(lines) == Decimal("8112847121168.40")
    assert Decimal(str(meta["totals"]["monthly_cost"])) == exact
    assert Decimal(str(meta["statement"]["total"]["monthly_cost"])) == exact
    # The terminal's statement: its two lines and its total, as printed, add up.
    assert "monthly cost USD 8,112,847,121,168.40;" in done.stdout
    printed = [line.split("provisioned")[1].split()[0] for line in done.stdout.splitlines()
               if "provisioned" in line]
    assert printed == ["4,056,423,560,584.20", "4,056,423,560,584.20", "8,112,847,121,168.40"]


def _cents(value: Decimal) -> Decimal:
    """``value`` to the cent, half a cent up: as a person rounds a bill on paper."""
    return value.quantize(Decimal("0.01"), ROUND_HALF_UP)


def test_each_saving_is_what_its_printed_cells_give_and_the_total_their_sum(tmp_path):
    """An operator checks the savings in a spreadsheet from the cells printed: a schedule saves
    its monthly_cost x off_hours_per_week / 168, a downsize its monthly_cost less the new size's
    month from the price book.  Reckoned from the costs before rounding, the shipped example
    book's schedule of 112.71 a month x 128/168 was 85.88 (the cells give 85.87) and its downsize
    of 185.71 to a large at 56.36 was 129.36 (the cells give 129.35): the header's total was two
    cents above the sum an operator makes."""
    data, out = tmp_path / "data", tmp_path / "out"
    build_fleet(data)
    done = run_report(str(data), "-o", str(out))
    book = tomllib.loads((ROOT / "vmstats" / "report" / "examples" / "pricebook.toml").read_text())
    hours = Decimal(str(book["hours_per_month"]))
    sizes = {size["name"]: Decimal(str(size["hourly"])) for size in book["sizes"]}
    with open(out / "report.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    reckoned = {}
    for row in rows:
        cost = Decimal(row["monthly_cost"])
        if row["category"] == "reclaim":
            reckoned[row["vm"]] = cost
        elif row["category"] == "schedule":
            reckoned[row["vm"]] = _cents(cost * Decimal(row["off_hours_per_week"]) / 168)
        elif row["category"] == "downsize":
            hourly = sizes.get(row["recommended_size"]) or (
                Decimal(row["recommended_vcpus"]) * Decimal(str(book["vcpu_hour"]))
                + Decimal(row["recommended_mem_gb"]) * Decimal(str(book["gb_ram_hour"])))
            reckoned[row["vm"]] = cost - _cents(hourly * hours)
    assert {r["category"] for r in rows} >= {"schedule", "downsize"}
    assert {r["vm"]: Decimal(r["monthly_saving"]) for r in rows if r["vm"] in reckoned} == reckoned
    total = sum(reckoned.values())
    meta = json.loads((out / "report.json").read_text())["meta"]
    assert Decimal(str(meta["totals"]["monthly_saving"])) == total
    category = {r["vm"]: r["category"] for r in rows}
    for name in ("schedule", "downsize"):
        assert Decimal(str(meta["categories"][name]["monthly_saving"])) == sum(
            saving for vm, saving in reckoned.items() if category[vm] == name)
    assert "saving USD {:,.2f} from".format(total) in done.stdout
    assert "USD {:,.2f}</div>".format(total) in (out / "report.html").read_text()
