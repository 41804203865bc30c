"""Money in currencies without cents (JPY) or with mills (KWD): every output, to the currency's unit.

The billing fleet of test_report_billing (sent to the real server) is reported and backtested
by the real commands with a price book in each currency, priced so that amounts land on half a
unit; report.csv, statement.csv, report.json, report.html, the terminal and the backtest's
files are read back and held to what an auditor reckons from the logs in that unit.
"""

import csv
import json
import math
import re
import subprocess
import sys
from decimal import Decimal

import numpy as np
import pytest
from test_report_billing import DAYS, PARTS, fleet, reckon  # noqa: F401 (fleet: the fixture)

from vmstats.report.money import MINOR_UNITS, Money

#: Prices x 730 hours end in half a yen (4.55 x 730 = 3,321.5) or half a fils (0.00945 x 730 = 6.8985).
BOOKS = {
    "JPY": (0, """\
currency = "JPY"
hours_per_month = 730
vcpu_hour = 4.55
gb_ram_hour = 0.65
disk_gb = 3.75
network_gb = 2.25
[[sizes]]
name = "medium"
vcpus = 2
memory_gb = 4
hourly = 10.05
"""),
    "KWD": (3, """\
currency = "KWD"
hours_per_month = 730
vcpu_hour = 0.00945
gb_ram_hour = 0.00135
disk_gb = 0.0077
network_gb = 0.0046
[[sizes]]
name = "medium"
vcpus = 2
memory_gb = 4
hourly = 0.02205
"""),
}
MONEY_COLUMNS = ("monthly_cost", "usage_cost", "monthly_saving")
STATEMENT_MONEY = ("monthly_cost", "usage_cost", "idle_cost", "monthly_saving", "upsize_extra_cost") + tuple(
    "usage_" + p for p in PARTS)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmstats", *args], capture_output=True, text=True,
                          timeout=180)


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def in_unit(cell: str, digits: int) -> Decimal:
    """A money cell as written: a number with no more digits after the point than the unit has."""
    value = Decimal(cell or "0")
    assert -value.as_tuple().exponent <= digits, cell
    if digits == 0:
        assert "." not in cell, cell  # 1235, never 1235.0
    return value


def graded(tmp_path, out, rows) -> list[tuple[subprocess.CompletedProcess, dict]]:
    """``vmstats score`` of the report in ``out`` (every VM of ``rows`` taken for idle), and of its
    report.csv copied alone: (the run, its --json) of each."""
    truth = tmp_path / "truth.csv"
    truth.write_text("vm,vcpus,mem_mb,profile,expected\n"
                     + "".join("%s,1,1024,idle,reclaim\n" % vm for vm in rows))
    alone = tmp_path / "alone.csv"
    alone.write_bytes((out / "report.csv").read_bytes())
    runs = []
    for report in (out, alone):
        graded = tmp_path / "score.json"
        done = run("score", "--truth", str(truth), "--report", str(report), "--json", str(graded))
        assert done.returncode == 0, done.stderr
        runs.append((done, json.loads(graded.read_text())))
    return runs


@pytest.mark.parametrize("code", sorted(BOOKS))
def test_every_output_is_in_the_currency_s_unit(fleet, tmp_path, code):  # noqa: F811
    data, _eur = fleet
    digits, book = BOOKS[code]
    money = Money(code, digits)
    prices = tmp_path / "prices.toml"
    prices.write_text(book)
    out = tmp_path / "out"
    done = run("report", str(data), "-o", str(out), "--prices", str(prices), "--by", "project",
               "--days", str(DAYS), "--set", "min_days=0", "--no-cache")
    assert done.returncode == 0, done.stderr
    bills = reckon(data, prices, digits)
    rows = {row["vm"]: row for row in read_csv(out / "report.csv")}
    lines = read_csv(out / "statement.csv")
    document = json.loads((out / "report.json").read_text())
    meta = document["meta"]
    assert meta["prices"]["currency"] == code and meta["prices"]["minor_unit"] == digits

    # report.csv: each VM's figures as the auditor reckons them, in the unit, nothing finer.
    for vm, bill in bills.items():
        row = rows[vm]
        assert row["currency"] == code
        for column in MONEY_COLUMNS:
            in_unit(row[column], digits)
        if bill["monthly_cost"] is None:
            assert row["monthly_cost"] == row["usage_cost"] == ""
            continue
        assert in_unit(row["monthly_cost"], digits) == bill["monthly_cost"], vm
        assert in_unit(row["usage_cost"], digits) == sum(bill["usage"].values()), vm
    assert rows["notag"]["category"] == "reclaim"
    assert rows["notag"]["monthly_saving"] == rows["notag"]["monthly_cost"]
    if code == "JPY":  # 2 vCPUs / 4 GB, the 10.05 size: 7,336.5 a month, billed 7,337
        assert rows["steady"]["monthly_cost"] == "7337"
    else:  # 0.02205 x 730 = 16.0965, billed 16.097
        assert rows["steady"]["monthly_cost"] == "16.097"

    # report.json: the same amounts; whole units are JSON integers.
    for vm in document["vms"]:
        for column in MONEY_COLUMNS:
            value = vm[column]
            assert value is None or str(value) == rows[vm["vm"]][column], (vm["vm"], column)
            if digits == 0 and value is not None:
                assert isinstance(value, int), (vm["vm"], column, value)
        if vm["usage"]:
            assert {k: Decimal(str(v)) for k, v in vm["usage"].items()} == bills[vm["vm"]]["usage"]

    # statement.csv: in the unit, and its lines add up to its total and to report.csv's columns.
    total = meta["statement"]["total"]
    for column in STATEMENT_MONEY:
        cells = [in_unit(line[column], digits) for line in lines]
        assert sum(cells) == Decimal(str(total[column])), column
    for column in ("monthly_cost", "usage_cost"):
        assert sum(in_unit(row[column], digits) for row in rows.values()) == Decimal(str(total[column]))
    assert sum(in_unit(line["idle_cost"], digits) for line in lines) == sum(
        b["idle_cost"] for b in bills.values() if b["idle_cost"] is not None)
    assert {(line["currency"], line["minor_unit"]) for line in lines} == {(code, str(digits))}
    totals = meta["totals"]
    assert totals["monthly_cost"] == total["monthly_cost"]
    assert totals["monthly_saving"] == total["monthly_saving"]

    # The terminal: totals and the statement's lines with the unit's digits.
    text = done.stdout
    assert "monthly cost %s; saving %s from" % (money.text(totals["monthly_cost"]),
                                                money.text(totals["monthly_saving"])) in text, text
    total_line = next(line for line in text.splitlines() if line.strip().startswith("total "))
    assert total_line.split()[-1] == money.figure(total["monthly_saving"]), total_line
    assert money.figure(total["monthly_cost"]) in total_line.split(), total_line

    # vmstats score of this report: its sums of savings in the unit, on the terminal and in JSON,
    # with report.json beside the CSV (the book's unit) or the CSV alone (ISO 4217's).
    claimed = sum(in_unit(row["monthly_saving"], digits) for row in rows.values()
                  if row["category"] != "upsize")  # an upsize's extra cost is no saving
    assert claimed
    for done_score, scored in graded(tmp_path, out, rows):
        assert "Savings claimed: %s per month;" % money.text(claimed) in done_score.stdout, done_score.stdout
        assert (scored["currency"], scored["minor_unit"]) == (code, digits)
        assert Decimal(str(scored["saving_total"])) == claimed
        assert isinstance(scored["saving_total"], int if digits == 0 else float)

    # report.html: the cards, the statement's cells and the table's script in the unit.
    page = (out / "report.html").read_text()
    assert "%s %s</div>" % (code, money.figure(totals["monthly_cost"])) in page
    assert '<td class="num">%s</td>' % money.figure(total["monthly_cost"]) in page
    assert "MINOR_UNIT = %d;" % digits in page
    shown = re.findall(r"%s (\d[\d,]*(?:\.\d+)?)" % code, page)
    assert shown and all(len(figure.partition(".")[2]) == digits for figure in shown), shown

    # The backtest of the same logs: its costs and its missed saving in the unit.
    judged = tmp_path / "backtest"
    done = run("backtest", str(data), "-o", str(judged), "--prices", str(prices), "--decide-days", "2",
               "--judge-days", "1", "--set", "min_days=0", "--no-cache")
    assert done.returncode == 0, done.stderr
    decided = {row["vm"]: row for row in read_csv(judged / "decision" / "report.csv")}
    for row in read_csv(judged / "backtest.csv"):
        for column in ("monthly_cost", "monthly_saving"):
            assert in_unit(row[column], digits) == in_unit(decided[row["vm"]][column], digits), row["vm"]
    summary = json.loads((judged / "backtest.json").read_text())["summary"]
    missed = summary["quiet_in_both"]["missed_monthly_cost"]
    assert (summary["currency"], summary["minor_unit"]) == (code, digits)
    assert isinstance(missed, int) if digits == 0 else isinstance(missed, float)
    assert "(missed saving %s a month)" % money.text(missed) in done.stdout, done.stdout
    html = (judged / "backtest.html").read_text()
    assert "%s %s a month" % (code, money.figure(missed)) in html
    cost = next(row for row in read_csv(judged / "backtest.csv") if row["monthly_cost"])["monthly_cost"]
    assert '<td class="num">%s</td>' % money.figure(Decimal(cost)) in html


@pytest.mark.parametrize(
    "money, amount, billed",
    [(Money("JPY", 0), 3321.5, 3322), (Money("JPY", 0), -3321.5, -3322), (Money("JPY", 0), 0.4, 0),
     (Money("KWD", 3), 6.8985, 6.899), (Money("KWD", 3), 0.00135 * 730, 0.986),
     (Money("KWD", 3), -0.0005, -0.001),
     (Money("XBT", 6), 0.0000005, 0.000001)],
)
def test_money_rounds_half_a_unit_away_from_zero(money, amount, billed):
    got = money.round(amount)
    assert got == billed and type(got) is (int if money.minor_unit == 0 else float)


def test_amounts_are_written_with_the_unit_s_digits():
    assert Money("JPY", 0).text(1234567) == "JPY 1,234,567"
    assert Money("KWD", 3).text(1234.5) == "KWD 1,234.500"
    assert Money("USD").text(0.5) == "USD 0.50"


def test_an_amount_is_rounded_when_known_and_stands_for_what_it_is_told_when_not():
    """One rounding of a figure serves the report's cells (unknown: empty) and the policy's
    savings (unknown: nothing saved), in the unit's type: a yen figure is an int."""
    yen, fils = Money("JPY", 0), Money("KWD", 3)
    assert yen.amount(3321.5) == 3322 and type(yen.amount(np.float64(3321.5))) is int
    assert fils.amount(np.float64(6.8985)) == 6.899
    for unknown in (None, math.nan, np.float64("nan")):
        assert yen.amount(unknown) is None and fils.amount(unknown) is None
        assert type(yen.amount(unknown, unknown=0.0)) is int and fils.amount(unknown, unknown=0.0) == 0.0


def test_the_table_knows_the_currencies_whose_unit_is_not_the_cent():
    assert [MINOR_UNITS[c] for c in ("USD", "EUR", "GBP", "JPY", "KRW", "BHD", "KWD", "OMR", "CLF")] == [
        2, 2, 2, 0, 0, 3, 3, 3, 4]


@pytest.mark.parametrize(
    "book, message",
    [
        ('currency = "CREDITS"\n',
         "currency CREDITS is not an ISO 4217 code with a minor unit: set minor_unit"),
        ('currency = "XAU"\n', "currency XAU is not an ISO 4217 code with a minor unit"),  # gold: no unit
        ('currency = "CREDITS"\nminor_unit = 7\n', "minor_unit must be a whole number of digits"),
        ('currency = "USD"\nminor_unit = -1\n', "minor_unit must be a whole number of digits"),
        ('currency = "USD"\nminor_unit = 1.5\n', "minor_unit must be a whole number of digits"),
        ('currency = "USD"\nminor_unit = "2"\n', "minor_unit must be a whole number of digits"),
        ('currency = "USD"\nminor_unit = true\n', "minor_unit must be a whole number of digits"),
    ],
)
def test_a_currency_without_a_known_unit_is_refused_in_one_line(fleet, tmp_path, book, message):  # noqa: F811
    data, _eur = fleet
    prices = tmp_path / "book.toml"
    prices.write_text(book + "vcpu_hour = 0.03\ngb_ram_hour = 0.004\n")
    done = run("report", str(data), "-o", str(tmp_path / "out"), "--prices", str(prices))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("Error: price book %s: %s" % (prices, message)), done.stderr
    assert not (tmp_path / "out").exists() or not (tmp_path / "out" / "report.csv").exists()


@pytest.mark.parametrize(
    "book, message",
    [
        ("vcpu_hour = 1e308\ngb_ram_hour = 0.004\n",  # a month of it is infinite
         "vcpu_hour makes a month of USD inf, past the USD 10,000,000,000,000.00 amounts are "
         "reckoned exactly to"),
        ('currency = "JPY"\nvcpu_hour = 3\ngb_ram_hour = 0.4\ndisk_gb = 1e15\n',
         "disk_gb makes a month of JPY 1e+15, past the JPY 1,000,000,000,000,000 amounts"),
        ('vcpu_hour = 0.03\ngb_ram_hour = 0.004\n[[sizes]]\nname = "huge"\nvcpus = 2\n'
         'memory_gb = 4\nhourly = 2e10\n', "size huge's hourly makes a month of USD 1.46e+13, past"),
    ],
)
def test_a_price_whose_month_is_past_exact_amounts_is_refused_in_one_line(fleet, tmp_path, book,  # noqa: F811
                                                                         message):
    """A price whose month alone is past the amounts reckoned to the unit: before, a report of
    "monthly cost USD inf" with numpy's warnings on the terminal."""
    data, _eur = fleet
    prices = tmp_path / "book.toml"
    prices.write_text(book)
    done = run("report", str(data), "-o", str(tmp_path / "out"), "--prices", str(prices))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("Error: price book %s: %s" % (prices, message)), done.stderr
    assert not (tmp_path / "out" / "report.csv").exists()


@pytest.mark.parametrize("code, digits, cost", [("CREDITS", 1, "28.8"), ("USD", 3, "28.835")])
def test_a_book_names_the_unit_of_its_currency_and_the_csv_alone_says_it(fleet, tmp_path, code,  # noqa: F811
                                                                        digits, cost):
    """Internal credits in tenths, or USD in mills: the book's minor_unit rounds and writes every
    amount.  report.csv names it beside its currency: copied without its report.json, a report
    in mills was scored to ISO's cents.  A minor_unit cell that is no unit is refused in one
    line, not guessed."""
    data, _eur = fleet
    prices = tmp_path / "book.toml"
    prices.write_text('currency = "%s"\nminor_unit = %d\nvcpu_hour = 0.0305\ngb_ram_hour = 0.0045\n'
                      % (code, digits))
    out = tmp_path / "out"
    done = run("report", str(data), "-o", str(out), "--prices", str(prices), "--days", str(DAYS),
               "--set", "min_days=0", "--no-cache")
    assert done.returncode == 0, done.stderr
    rows = {row["vm"]: row for row in read_csv(out / "report.csv")}
    # 1 vCPU / 2 GB: (0.0305 + 2 x 0.0045) x 730 = 28.835: in tenths 28.8, in mills 28.835.
    assert [rows["notag"][c] for c in ("monthly_cost", "currency", "minor_unit")] == [cost, code, str(digits)]
    assert json.loads((out / "report.json").read_text())["meta"]["prices"]["minor_unit"] == digits
    amount = r"%s [\d,]+\.\d{%d}" % (code, digits)
    assert "monthly cost %s " % code in done.stdout and re.search(amount + ";", done.stdout)
    # vmstats score: the book's unit with report.json beside the CSV, and from the CSV alone.
    for done_score, scored in graded(tmp_path, out, rows):
        assert re.search(r"Savings claimed: %s per month; %s on correct" % (amount, amount),
                         done_score.stdout), done_score.stdout
        assert (scored["currency"], scored["minor_unit"]) == (code, digits)
    broken = tmp_path / "broken.csv"
    broken.write_text((out / "report.csv").read_text().replace(",%s,%d\n" % (code, digits),
                                                               ",%s,three\n" % code, 1))
    done = run("score", "--truth", str(tmp_path / "truth.csv"), "--report", str(broken))
    assert done.returncode == 2 and done.stdout == "", done
    assert re.fullmatch(r"Error: report \S+broken.csv:2: minor_unit 'three' is not the digits "
                        r"of its money \(0 to 6, the same on every row\)\n", done.stderr), done.stderr
