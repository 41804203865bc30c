"""Text that looks like a number stays that text in report.csv and statement.csv.

VM ids, hosts and tags such as a project ``0012``, an owner ``1E5`` or ``NA`` are written to
the logs through the real layout (test_report_stats.write_records) and reported by the real
``vmstats report --by project``.  The CSV files are read back with Python's csv module and
with the pandas call docs/REPORT.md gives ("Reading the CSV files"), run as printed there:
every text comes back exactly, and every other column as numbers.
"""

import csv
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from test_report_stats import T0, series, write_records

DOCS = Path(__file__).resolve().parent.parent / "docs" / "REPORT.md"
#: What a spreadsheet or a type-guessing reader turns into a number, a date, a truth value or
#: a missing value; each is a valid VM id, host and tag value (docs/PROTOCOL.md).
VALUES = ("0012", "1E5", "3-4", "00123456789012345678", "TRUE", "NA", "null", "nan", "inf",
          "1.50", "1e-3", "2026-01-02", "0x1F", "1_000")


def documented_reader() -> str:
    """The pandas code of docs/REPORT.md's section on reading the CSV files."""
    section = DOCS.read_text().split("### Reading the CSV files", 1)[1].split("\n## ", 1)[0]
    return textwrap.dedent(re.search(r"```python\n(.*?)```", section, re.S).group(1))


def test_number_like_text_is_written_and_read_back_exactly(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    ts = list(range(T0, T0 + 86400, 600))
    flat = np.ones(len(ts))
    for value in VALUES:
        records = series(value, ts, 30 * flat, 50 * flat, 1e3 * flat, 1e3 * flat)
        write_records(data, [r._replace(host=value, tags=(("owner", value), ("project", value)))
                             for r in records])
    done = subprocess.run([sys.executable, "-m", "vmstats", "report", str(data), "-o", str(out), "--by",
                           "project", "--no-cache"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # Python's csv module: each cell is the text written.
    with open(out / "report.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with open(out / "statement.csv", newline="", encoding="utf-8") as handle:
        lines = list(csv.DictReader(handle))
    assert sorted(r["vm"] for r in rows) == sorted(r["host"] for r in rows) == sorted(VALUES)
    tags = {v: "owner=%s;project=%s" % (v, v) for v in VALUES}
    assert {r["vm"]: r["tags"] for r in rows} == tags
    assert sorted(line["value"] for line in lines) == sorted(VALUES)

    # The documented pandas call, as printed, on this report's files.
    code = documented_reader()
    scope: dict = {}
    exec(code.replace('"OUT/', '"%s/' % out), scope)  # the docs' own example, as printed
    report, statement = scope["report"], scope["statement"]
    assert sorted(report["vm"]) == sorted(report["host"]) == sorted(statement["value"]) == sorted(VALUES)
    assert dict(zip(report["vm"], report["tags"], strict=True)) == tags
    # Its list of text columns is every column that holds text, and only those: the others are
    # numbers (report.json says which is which), read as numbers.
    document = json.loads((out / "report.json").read_text())
    kinds: dict[str, set] = {}
    for vm in document["vms"]:
        for column in document["columns"]:
            value = vm[column]
            if value is not None:
                kinds.setdefault(column, set()).add("text" if isinstance(value, (str, dict)) else "number")
    text = set(scope["TEXT"])
    assert {c for c, k in kinds.items() if k == {"text"}} <= text
    assert not {c for c, k in kinds.items() if "number" in k} & text
    for column, kind in kinds.items():
        if kind == {"number"}:
            assert report[column].dtype.kind in "if", column
    assert {"tag", "value", "currency"} <= text
    assert statement["monthly_cost"].dtype.kind == "f" and statement["vms"].dtype.kind == "i"
    # Why it is needed: pandas' default guesses make NA, null and nan missing values.
    assert pd.read_csv(out / "statement.csv")["value"].isna().sum() == 3
