"""The `vmstats report` command end to end: files written, their agreement, exclusions, errors."""

import csv
import datetime
import json
import random
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from test_report_policy import TS, build_fleet
from test_report_stats import DAY, T0, series, write_records

from vmstats.report.command import policy_overrides
from vmstats.report.outputs import CSV_COLUMNS, to_json
from vmstats.report.render import _series, week_heatmap

ROOT = Path(__file__).resolve().parent.parent


def vmstats(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "vmstats", "report", *map(str, args)],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    base = tmp_path_factory.mktemp("outputs")
    data = base / "data"
    expected = build_fleet(data)
    today = datetime.date.today()
    exclusions = base / "exclusions.toml"
    exclusions.write_text(
        '[[exclude]]\nvm = "idle"\nreason = "DR standby, idle by design"\nexpires = %s\n\n'
        '[[exclude]]\nvm = "oversized*"\nreason = "old freeze"\nexpires = %s\n\n'
        '[[exclude]]\nvm = "idel"\nreason = "DR standby, mistyped"\n'
        % (today + datetime.timedelta(days=30), "2026-01-13")  # the day before the window's last
    )
    out = base / "out"
    result = vmstats(data, "-o", out, "--exclusions", exclusions)
    assert result.returncode == 0, result.stderr
    return data, expected, out, result


class _Table(HTMLParser):
    """Collects the text of every cell of the VM table and every external reference."""

    def __init__(self):
        super().__init__()
        self.in_table = False
        self.cells = []
        self.external = []
        self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id") == "vms":
            self.in_table = True
        if self.in_table and tag == "td":
            self._cell = []
        for name in ("src", "href"):
            if attrs.get(name, "").startswith(("http:", "https:", "//")):
                self.external.append(attrs[name])

    def handle_endtag(self, tag):
        if tag == "table":
            self.in_table = False
        if tag == "td" and self._cell is not None:
            self.cells.append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_html_is_self_contained_and_lists_every_vm(fleet):
    _data, expected, out, _result = fleet
    page = (out / "report.html").read_text()
    parser = _Table()
    parser.feed(page)
    parser.close()
    assert parser.external == [] and "<script src" not in page
    # The table is drawn by the page's script from the rows embedded as JSON (the browser
    # tests check the drawing): every VM is there, in rank order, with its series.
    embedded = re.search(r'<script type="application/json" id="report-rows">(.*?)</script>', page, re.S)
    rows = json.loads(embedded.group(1))
    assert [r["vm"] for r in rows] == [v["vm"] for v in json.loads((out / "report.json").read_text())["vms"]]
    assert sorted(r["vm"] for r in rows) == sorted(expected)
    assert all(len(r["hour_of_week_cpu"].split(",")) == 168 for r in rows)
    assert "example price book" in page


def test_page_fits_its_window_and_says_what_window_it_analysed(fleet):
    _data, _expected, out, _result = fleet
    page = (out / "report.html").read_text()
    # The wide table scrolls in its own box, not the page.
    assert re.search(r'<div class="tablebox">\s*<table id="vms">', page)
    assert ".tablebox { overflow: auto" in page
    # 14 days of data and a 14-day look-back: nothing to explain.
    assert "Analysed 14.0 days: 2026-01-01 00:00 UTC to 2026-01-14 23:59 UTC" in page
    assert "Window: the last 14 UTC days (--days 14) up to the latest record." in page
    assert "shortened" not in page
    # The heat map's scale is the fleet's own range, said in the caption.
    profile = json.loads((out / "report.json").read_text())["meta"]
    assert "quietest hour" in page and "not 0-100%" in page and profile["window"]["clipped"] is False


def test_the_tables_percentages_say_of_what(fleet):
    """The VM table's CPU and memory p95 were bare numbers ("1.9"): % of the VM's own size, the
    page has to say so, as report.csv's documentation does."""
    _data, _expected, out, _result = fleet
    page = (out / "report.html").read_text()
    assert '<th class="num" data-key="cpu_p95" data-type="num" title="% of its vCPUs">CPU p95 %</th>' in page
    assert '<th class="num" data-key="mem_p95" data-type="num" title="% of its memory">mem p95 %</th>' in page
    assert "CPU p95 and mem p95: % of the VM's vCPUs and of its memory" in page


def test_the_fleet_chart_says_what_its_bars_count(fleet):
    """The utilisation chart's y axis had numbers and no label: VMs, not per cent or days."""
    _data, expected, out, _result = fleet
    page = (out / "report.html").read_text()
    chart = re.search(r'<svg [^>]*aria-label="VMs by CPU and memory p95">.*?</svg>', page).group(0)
    title = re.search(r'<text x="([\d.]+)" y="[\d.]+" font-size="(\d+)" text-anchor="middle" '
                      r'transform="rotate\(-90 [\d.]+ [\d.]+\)">([^<]*)</text>', chart)
    assert title and title.group(3) == "VMs per band"
    # Left of the tick values: the widest, right-aligned, starts clear of the title's line.
    ticks = re.findall(r'<text x="(\d+)" y="[\d.]+" font-size="10" text-anchor="end">(\d+)</text>', chart)
    assert [value for _x, value in ticks][-1] == "0" and len(ticks) == 5
    widest = max(len(value) for _x, value in ticks)
    assert float(title.group(1)) + int(title.group(2)) / 2 < int(ticks[0][0]) - widest * 6
    # The counts on it are the fleet's: every VM with enough data, once per metric.
    fleet = json.loads((out / "report.json").read_text())["fleet"]
    assert sum(fleet["cpu_p95"]) == len(expected) - 2  # stopped and sparse are not drawn


def test_the_footer_gives_the_price_books_hours_as_the_statement_does(fleet):
    """The footer said "730.0 hours a month" of a book that says 730, as the statement does."""
    _data, _expected, out, _result = fleet
    page = " ".join((out / "report.html").read_text().split())
    assert "(USD, 730 hours a month)" in page and "730.0" not in page


def test_days_asked_for_past_the_latest_record_are_said_to_be_missing(fleet, tmp_path):
    """--until past the data: the window ends at the latest record, and a bill read for the days
    asked for says on every output that its last ones had no data."""
    data, _expected, _out, _result = fleet
    out = tmp_path / "out"
    result = vmstats(data, "-o", out, "--since", "2026-01-05", "--until", "2026-02-28", "--no-cache")
    assert result.returncode == 0, result.stderr
    window = json.loads((out / "report.json").read_text())["meta"]["window"]
    assert (window["first_day"], window["last_day"], window["end"]) == (
        "2026-01-05", "2026-02-28", "2026-01-14T23:59:00Z")
    assert window["ends_early"] is True and window["clipped"] is False and window["days"] == 10.0
    why = ("the UTC days asked for (2026-01-05 to 2026-02-28), shortened to end at the latest record "
           "(2026-01-14 23:59 UTC): there is no newer data")
    assert window["why"] == why
    assert "Window: %s." % why in (out / "report.html").read_text()
    assert ("; ends at the latest record, before the days asked for (2026-01-05 to 2026-02-28) end)"
            in result.stdout.splitlines()[0])
    # Days inside the data: nothing to explain.
    result = vmstats(data, "-o", out, "--since", "2026-01-05", "--until", "2026-01-14", "--no-cache")
    assert result.returncode == 0, result.stderr
    window = json.loads((out / "report.json").read_text())["meta"]["window"]
    assert window["ends_early"] is False and "shortened" not in window["why"]


def page_rows(page: Path) -> list[dict]:
    """The rows report.html carries for its script (its table and drill-downs are drawn from them)."""
    found = re.search(r'<script type="application/json" id="report-rows">(.*?)</script>', page.read_text())
    return json.loads(found.group(1))


def test_a_figure_that_rounds_to_zero_is_written_0_not_minus_0(tmp_path):
    """A CPU trend of -0.0015 points a week is 0.0 in report.csv: a spreadsheet or a diff of two
    nights' reports shows "-0.0" as a change of sign where nothing moved."""
    day = (TS - T0) // DAY
    cpu = np.where(day == 6, 20.1, 20.0)  # one day's p95 a tenth up, mid-window: slope -0.0015/week
    write_records(tmp_path / "data", series("flat", TS, cpu, np.full(len(TS), 40.0), vcpus=4, mem_mb=8192))
    result = vmstats(tmp_path / "data", "-o", tmp_path / "out", "--no-cache")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(open(tmp_path / "out" / "report.csv", newline="", encoding="utf-8")))
    assert rows[0]["cpu_trend"] == "0.0"
    assert not [(name, cell) for row in rows for name, cell in row.items() if cell.startswith("-0.0")]
    vm = json.loads((tmp_path / "out" / "report.json").read_text())["vms"][0]
    assert str(vm["cpu_trend"]) == "0.0"
    # The evidence too: report.json's figures, and the words of the page's drill-down.
    assert vm["evidence"]["cpu_trend"] == 0 and str(vm["evidence"]["cpu_trend"]) == "0.0"
    assert "-0.0" not in json.dumps(vm["evidence"])
    rows = page_rows(tmp_path / "out" / "report.html")
    words = dict(rows[0]["evidence_text"])
    assert words["CPU trend"] == "0.00 points a week"


def test_a_trend_in_the_drill_down_reads_as_its_csv_cell(tmp_path):
    """A memory trend of -0.03 points a week (report.csv's cell) read "-0.0 points a week" in the
    page's evidence, and +0.01 "+0.0": a sign on a zero, and a figure the CSV does not give."""
    cpu = 60 + 30 * np.random.default_rng(1).random(len(TS))
    mem = 75 + 0.2 * ((TS - T0) // DAY == 1)  # one early day a little fuller: a slope just below 0
    busy = np.full(len(TS), 5e5)
    records = series("busy", TS, np.round(cpu, 1), mem, busy, busy, vcpus=4, mem_mb=8192)
    write_records(tmp_path / "data", records)
    result = vmstats(tmp_path / "data", "-o", tmp_path / "out", "--no-cache")
    assert result.returncode == 0, result.stderr
    row = next(csv.DictReader(open(tmp_path / "out" / "report.csv", newline="", encoding="utf-8")))
    rows = page_rows(tmp_path / "out" / "report.html")
    words = dict(rows[0]["evidence_text"])
    assert float(row["mem_trend"]) < 0 and round(float(row["mem_trend"]), 1) == 0
    assert words["memory trend"] == "%s points a week" % row["mem_trend"]
    assert words["CPU trend"] == "%+.2f points a week" % float(row["cpu_trend"])


def test_the_category_table_is_every_vm_not_only_candidates(fleet):
    """Its lines add up to the fleet, stopped and keep among them: under a heading of
    "candidates" a reader would count 14 where the card beside it says how many are."""
    _data, _expected, out, _result = fleet
    page = (out / "report.html").read_text()
    meta = json.loads((out / "report.json").read_text())["meta"]
    assert "<h2>Every VM by category</h2>" in page and "Candidates by category" not in page
    assert "the candidates are reclaim, schedule, downsize." in page
    start = page.index('<table class="cats">')
    table = page[start : page.index("</table>", start)]
    counts = [int(n) for n in re.findall(r'<td class="num">(\d+) VMs?</td>', table)]
    assert sum(counts) == meta["totals"]["vms"] and meta["totals"]["candidates"] < meta["totals"]["vms"]


def test_the_terminal_names_each_candidate_whole(tmp_path):
    """Two ids that differ past their 22nd character are two lines a reader can tell apart."""
    ids = ["web-frontend-prod-eu-west-01", "web-frontend-prod-eu-west-02"]
    noise = np.random.default_rng(5).random(len(TS))
    for vm in ids:
        write_records(tmp_path / "data", series(vm, TS, np.round(0.5 + noise, 1), 30 + noise,
                                                500 + 500 * noise, 200 + 200 * noise))
    result = vmstats(tmp_path / "data", "-o", tmp_path / "out", "--no-cache")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("rank  vm"))
    listed = [line.split()[1] for line in lines[header + 1 : header + 3]]
    assert sorted(listed) == ids
    assert lines[header].index("category") == lines[header + 1].index("reclaim")


def test_the_terminal_gives_each_candidates_recommendation_whole(tmp_path):
    """An office VM's schedule in its local time and in UTC runs past 60 characters; cut there,
    the terminal told the operator to switch it off at hours of which part were missing."""
    hour, weekday = (TS // 3600) % 24, ((TS // DAY) + 3) % 7
    office = (weekday < 5) & (hour >= 7) & (hour < 15)  # 09:00-17:00 at UTC+2
    noise = np.random.default_rng(3).random(len(TS))
    write_records(tmp_path / "data", series("office", TS, np.where(office, 40 + 20 * noise, 1.0),
                                            np.where(office, 60.0, 35.0), np.where(office, 1e6, 500.0),
                                            np.where(office, 5e5, 200.0), vcpus=4, mem_mb=16384))
    result = vmstats(tmp_path / "data", "-o", tmp_path / "out", "--no-cache")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "out" / "report.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["category"] == "schedule" and len(row["recommendation"]) > 60
    assert "in UTC" in row["recommendation"]
    line = next(line for line in result.stdout.splitlines() if line.split()[1:2] == ["office"])
    assert line.endswith("  " + row["recommendation"])


def test_the_policy_named_on_the_page_includes_the_command_lines_changes(fleet, tmp_path):
    """A report run with --cpu-idle 4 said "Policy: built-in defaults": whoever reads the page
    or report.json to check a bill could not tell the thresholds were not the defaults."""
    data, _expected, out, _result = fleet
    assert "Policy: built-in defaults." in (out / "report.html").read_text()
    policy = tmp_path / "policy.toml"
    policy.write_text("cpu_idle = 3.0\nheadroom = 0.3\n")
    result = vmstats(data, "-o", tmp_path / "out", "--policy", policy, "--cpu-idle", "4",
                     "--set", "utc_offset_hours=5.5", "--set", "headroom=0.3", "--no-cache")
    assert result.returncode == 0, result.stderr
    meta = json.loads((tmp_path / "out" / "report.json").read_text())["meta"]["policy"]
    source = "%s, and from the command line: cpu_idle=4, utc_offset_hours=5.5" % policy
    assert meta["source"] == source
    assert meta["settings"]["cpu_idle"] == 4.0 and meta["settings"]["utc_offset_hours"] == 5.5
    assert "Policy: %s." % source in (tmp_path / "out" / "report.html").read_text()


def test_heatmap_colours_span_the_fleets_quietest_to_busiest_hour():
    profile = [10.0 + (h % 24) / 23.0 * 2.0 for h in range(168)]  # 10% at midnight .. 12% at 23:00
    profile[5] = None
    svg = week_heatmap(profile)
    fills = re.findall(r'fill="(rgb\(\d+,\d+,255\))"><title>(\w+) (\d\d):00 UTC: ([\d.]+)%', svg)
    assert len(fills) == 167
    by_value = {float(value): fill for fill, _day, _hour, value in fills}
    assert by_value[10.0] == "rgb(240,240,255)" and by_value[12.0] == "rgb(40,40,255)"
    assert "no data" in svg and "10.0%" in svg and "12.0%" in svg  # the scale's ends
    # A flat fleet gets one mid colour, not a division by zero.
    assert set(re.findall(r'fill="(rgb[^"]+)"><title>', week_heatmap([3.0] * 168))) == {"rgb(140,140,255)"}


def test_the_pages_series_text_is_each_point_rounded_and_gaps_empty():
    """The page's series are written from their JSON in one pass; this is what they must say,
    point by point: whole numbers half up, tenths without a trailing ".0", a gap empty."""
    rng = random.Random(7)
    for _ in range(300):
        values = [
            rng.choice([None, round(rng.uniform(-3, 400), 1), float(rng.randint(0, 100)) + 0.5, 0.0, -0.0])
            for _ in range(rng.randint(0, 40))
        ]
        whole = ",".join("" if v is None else str(int(v + 0.5)) for v in values)
        tenths = ",".join("" if v is None else ("%.1f" % v).removesuffix(".0") for v in values)
        assert (_series(values, 0), _series(values, 1)) == (whole, tenths), values
    assert _series([12.5, None, 13.0, 0.25], 1) == "12.5,,13,0.2"


def test_json_gaps_are_null_and_numpy_numbers_plain():
    text = to_json({"a": [float("nan"), np.float64(1.5), np.int64(3)], 2: np.float64("nan")})
    assert text == b'{"a":[null,1.5,3],"2":null}'


def test_first_seen_is_the_first_record_in_the_window_as_its_doc_says(fleet, tmp_path):
    """``first_seen`` was documented as the first record "in the loaded data": read as the VM's
    first record ever, a VM running since long before the window looked new."""
    data, _expected, _out, _result = fleet
    out = tmp_path / "out"
    result = vmstats(data, "-o", out, "--since", "2026-01-12", "--until", "2026-01-14", "--no-cache")
    assert result.returncode == 0, result.stderr
    rows = {r["vm"]: r for r in csv.DictReader(open(out / "report.csv", newline="", encoding="utf-8"))}
    # Logs since 2026-01-01: its first record in the window, and its span from its first log.
    assert rows["idle"]["first_seen"] == "2026-01-12T00:00:00Z" and rows["idle"]["span_days"] == "14.0"
    # Silent since 2026-01-10 23:59: none in the window, the first record of its last day of logs.
    assert rows["stopped"]["category"] == "stopped"
    assert (rows["stopped"]["first_seen"], rows["stopped"]["last_seen"]) == (
        "2026-01-10T00:00:00Z", "2026-01-10T23:59:00Z")
    doc = (ROOT / "docs/REPORT.md").read_text()
    documented = re.search(r"^\| `first_seen` \| (.*) \|$", doc, re.M).group(1)
    assert "first record of the VM in the window" in documented
    assert "`span_days`" in documented and "last day of logs" in documented


def test_csv_columns_are_exactly_the_documented_ones(fleet):
    _data, expected, out, _result = fleet
    documented = re.findall(r"^\| `([a-z_0-9]+)` \|", (ROOT / "docs/REPORT.md").read_text(), re.M)
    with open(out / "report.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == documented == list(CSV_COLUMNS)
    assert len(rows) == len(expected) + 1


def test_a_recommended_size_is_written_as_the_vms_own_size_is(fleet):
    """A row read "vcpus 8, recommended_vcpus 4.0": a whole size is whole in both columns (the
    documentation's "whole for a whole size"), 0 for a reclaim."""
    _data, _expected, out, _result = fleet
    rows = {r["vm"]: r for r in csv.DictReader(open(out / "report.csv", newline="", encoding="utf-8"))}
    sizes = {vm: (r["category"], r["vcpus"], r["recommended_vcpus"]) for vm, r in rows.items()
             if r["recommended_vcpus"]}
    assert sizes == {"oversized": ("downsize", "8", "4"), "network-only": ("downsize", "8", "2"),
                     "memory-only": ("reclaim", "8", "0")}
    vms = {v["vm"]: v for v in json.loads((out / "report.json").read_text())["vms"]}
    assert repr(vms["oversized"]["recommended_vcpus"]) == "4"


def test_json_holds_the_same_data_as_csv(fleet):
    _data, _expected, out, _result = fleet
    document = json.loads((out / "report.json").read_text())
    with open(out / "report.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["vm"] for r in rows] == [v["vm"] for v in document["vms"]]
    for row, item in zip(rows, document["vms"], strict=True):
        for column in CSV_COLUMNS:
            value = item[column]
            if column == "tags":  # key=value;key=value in CSV, an object in JSON
                assert row[column] == ";".join("%s=%s" % pair for pair in sorted(value.items()))
            elif value is None:
                assert row[column] == "", column
            elif isinstance(value, (int, float)):
                assert float(row[column]) == pytest.approx(value), column
            else:
                assert row[column] == value, column
        assert len(item["hour_of_week_cpu"]) == 168
    totals = document["meta"]["totals"]
    assert totals["monthly_saving"] == pytest.approx(sum(float(r["monthly_saving"]) for r in rows), abs=0.01)
    assert document["meta"]["prices"]["is_example"] is True


def test_exclusions_and_expiry(fleet):
    _data, _expected, out, result = fleet
    document = json.loads((out / "report.json").read_text())
    by_vm = {v["vm"]: v for v in document["vms"]}
    assert by_vm["idle"]["category"] == "excluded"
    assert by_vm["idle"]["excluded_reason"] == "DR standby, idle by design"
    assert by_vm["idle"]["evidence"]["would_be"] == "reclaim" and by_vm["idle"]["monthly_saving"] == 0
    # The expired exclusion does not apply, and the report says it expired.
    assert by_vm["oversized"]["category"] == "downsize"
    assert [e["vm"] for e in document["meta"]["exclusions"]["expired"]] == ["oversized*"]
    expired = document["meta"]["exclusions"]["expired"][0]["expires"]
    page = (out / "report.html").read_text()
    assert ("Exclusions expired at the window's end, no longer applied:\n  <b>oversized*</b> (old freeze, "
            "expired %s)</div>" % expired) in page
    # ... and so does the terminal (a nightly run's journal), naming it with its reason and date.
    line = "exclusions expired at the window's end, no longer applied: oversized* (old freeze, expired %s)"
    assert line % expired in result.stdout.splitlines()
    # The one still in force today gets no note that it expired since.
    assert "expired since" not in page and "expired since" not in result.stdout
    # One in force that names no VM (a typo) is said, or the VM it meant would be reclaimed
    # with nothing to show the promise was never applied.
    assert document["meta"]["exclusions"]["unapplied"] == [
        {"vm": "idel", "reason": "DR standby, mistyped", "expires": None}]
    assert ("Exclusions in force that applied to no VM of the window (a typo?):\n  <b>idel</b> "
            "(DR standby, mistyped)</div>") in page
    assert ("exclusions in force that applied to no VM of the window (a typo?): idel (DR standby, "
            "mistyped)") in result.stdout.splitlines()


#: Exclusions whose end falls about the window's end (2026-01-14 23:59 UTC), each given as a
#: date (a UTC day, inclusive) or as a time with its offset (that instant).
ABOUT_THE_END = """\
[[exclude]]
vm = "idle"
reason = "ran out after the window, before today"
expires = 2026-01-20
[[exclude]]
vm = "oversized"
reason = "runs to the window's last day"
expires = 2026-01-14
[[exclude]]
vm = "network-only"
reason = "ran out the day before the window's last"
expires = 2026-01-13
[[exclude]]
vm = "memory-only"
reason = "ran out at 08:00 in Tokyo on the 15th, 23:00 UTC on the 14th"
expires = 2026-01-15T08:00:00+09:00
[[exclude]]
vm = "business-hours"
reason = "runs to 19:30 in New York on the 14th, 00:30 UTC on the 15th"
expires = 2026-01-14T19:30:00-05:00
"""


def test_an_exclusion_is_judged_at_the_windows_end_not_on_the_day_of_the_run(fleet, tmp_path):
    """A report of January's logs run in December: an exclusion that ran out in between held all
    through the window, and the report of the window must not turn it into a reclaim (nor give
    another report of the same logs on another day).  A date is a UTC day, as --since and --until
    are; a time with an offset (the operator's zone) is that instant."""
    data, _expected, _out, _result = fleet
    exclusions = tmp_path / "exclusions.toml"
    exclusions.write_text(ABOUT_THE_END)
    result = vmstats(data, "-o", tmp_path / "out", "--exclusions", exclusions, "--no-cache")
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "out" / "report.json").read_text())
    category = {v["vm"]: v["category"] for v in document["vms"]}
    assert document["meta"]["window"]["end"] == "2026-01-14T23:59:00Z"
    assert [category[vm] for vm in ("idle", "oversized", "business-hours")] == ["excluded"] * 3
    assert [category[vm] for vm in ("network-only", "memory-only")] == ["downsize", "reclaim"]
    expired = document["meta"]["exclusions"]["expired"]
    assert [(e["vm"], e["expires"]) for e in expired] == [
        ("network-only", "2026-01-13"), ("memory-only", "2026-01-15T08:00:00+09:00")]
    assert document["meta"]["exclusions"]["active"] == 3
    # The three that held at the window's end have all run out before this run (in December):
    # the page and the terminal say so, earliest first, to be renewed or dropped before the next report.
    lapsed = ("oversized (runs to the window's last day, expired 2026-01-14); business-hours (runs to 19:30 "
              "in New York on the 14th, 00:30 UTC on the 15th, expired 2026-01-14T19:30:00-05:00); idle (ran "
              "out after the window, before today, expired 2026-01-20)")
    assert ("exclusions applied at the window's end but expired since (renew or drop them): " + lapsed
            in result.stdout.splitlines())
    html = (tmp_path / "out" / "report.html").read_text()
    page = re.search(r'id="exclusions-lapsed">([^<]*)(.*?)</div>', html, re.S)
    assert page[1] == "Exclusions applied at the window's end but expired since; renew or drop them:\n  "
    assert re.sub(r"</?b>", "", page[2]).replace("&#39;", "'") == lapsed
    # The report.json of the same logs stays the same whatever day it is run.
    assert "since" not in json.dumps(document["meta"]["exclusions"])
    # A report of an earlier window (the first week) finds every one of them in force.
    result = vmstats(data, "-o", tmp_path / "week", "--exclusions", exclusions, "--no-cache",
                     "--until", "2026-01-07")
    assert result.returncode == 0, result.stderr
    week = json.loads((tmp_path / "week" / "report.json").read_text())
    assert week["meta"]["exclusions"]["expired"] == []
    assert {v["vm"] for v in week["vms"] if v["category"] == "excluded"} == {
        "idle", "oversized", "network-only", "memory-only", "business-hours"}
    assert "expired at the window's end" not in result.stdout
    line = next(line for line in result.stdout.splitlines() if "but expired since" in line)
    assert re.findall(r"(?:: |; )([a-z-]+) \(", line) == [
        "network-only", "memory-only", "oversized", "business-hours", "idle"]


def test_terminal_summary(fleet):
    _data, expected, _out, result = fleet
    lines = result.stdout.splitlines()
    assert lines[0].startswith("vmstats report: %d VMs, window 2026-01-01T00:00:00Z" % len(expected))
    assert any("EXAMPLE price book" in line for line in lines)
    assert any(re.match(r"\s+1\s+\S+\s+(reclaim|schedule|downsize)\s", line) for line in lines)
    assert "Traceback" not in result.stderr


def test_rerun_uses_the_cache_and_gives_the_same_report(fleet, tmp_path):
    data, _expected, out, _result = fleet
    again = vmstats(data, "-o", out)
    assert again.returncode == 0, again.stderr
    first = json.loads((out / "report.json").read_text())
    assert first["meta"]["cache"]["parsed_vm_days"] == 0
    fresh = vmstats(data, "-o", tmp_path / "fresh", "--no-cache")
    assert fresh.returncode == 0
    second = json.loads((tmp_path / "fresh" / "report.json").read_text())
    assert first["vms"] == second["vms"]


def test_custom_prices_and_threshold_flags(fleet, tmp_path):
    data, _expected, _out, _result = fleet
    prices = tmp_path / "prices.toml"
    prices.write_text('currency = "EUR"\nhours_per_month = 700\nvcpu_hour = 0.01\ngb_ram_hour = 0.001\n')
    result = vmstats(
        data, "-o", tmp_path / "o", "--prices", prices, "--set", "cpu_floor_max=0.1", "--no-cache"
    )
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "o" / "report.json").read_text())
    by_vm = {v["vm"]: v for v in document["vms"]}
    assert by_vm["idle"]["monthly_cost"] == pytest.approx((2 * 0.01 + 4 * 0.001) * 700, abs=0.01)
    assert by_vm["idle"]["category"] != "reclaim"  # a 0.1% CPU floor is stricter than its ~1%
    assert document["meta"]["prices"]["is_example"] is False and "EUR" in result.stdout


def test_every_money_row_names_its_currency(fleet, tmp_path):
    """A bill read from report.csv or statement.csv alone says which money it is in."""
    data, _expected, _out, _result = fleet
    prices = tmp_path / "prices.toml"
    prices.write_text('currency = "EUR"\nvcpu_hour = 0.01\ngb_ram_hour = 0.001\n')
    out = tmp_path / "o"
    result = vmstats(data, "-o", out, "--prices", prices, "--by", "host", "--no-cache")
    assert result.returncode == 0, result.stderr
    for name in ("report.csv", "statement.csv"):
        with open(out / name, newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert rows and "currency" in rows[0], name
        assert {row["currency"] for row in rows} == {"EUR"}, name
    with open(out / "report.csv", newline="") as handle:
        assert {(row["currency"], row["minor_unit"]) for row in csv.DictReader(handle)} == {("EUR", "2")}
    document = json.loads((out / "report.json").read_text())
    assert {v["currency"] for v in document["vms"]} == {"EUR"}
    statement = document["meta"]["statement"]
    assert {line["currency"] for line in statement["groups"] + [statement["total"]]} == {"EUR"}


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda d, t: [t / "missing", "-o", t / "o"], "does not exist"),
        (lambda d, t: [t, "-o", t / "o"], "holds no VM logs"),
        (  # a data dir whose only log is damaged says so, not that it holds none
            lambda d, t: [_write(_folder(t / "bad" / "columnar") / "2026-01-01.parquet",
                                 "garbage").parent.parent, "-o", t / "o"],
            "holds no readable VM logs: 1 file could not be read (first: ",
        ),
        (lambda d, t: [d, "-o", t / "o", "--policy", t / "nope.toml"], "policy file"),
        (lambda d, t: [d, "-o", t / "o", "--policy", _write(t / "p.toml", "days = [")], "not valid TOML"),
        (
            lambda d, t: [d, "-o", t / "o", "--prices", _write(t / "pr.toml", "vcpu_hour = -1\n")],
            "non-negative",
        ),
        (
            lambda d, t: [d, "-o", t / "o", "--exclusions", _write(t / "e.toml", '[[exclude]]\nvm = "x"\n')],
            "needs a reason",
        ),
        (lambda d, t: [d, "-o", t / "o", "--since", "yesterday"], "not a YYYY-MM-DD date"),
        (lambda d, t: [d, "-o", t / "o", "--set", "cpu_idle"], "KEY=VALUE"),
        (lambda d, t: [d, "-o", t / "o", "--set", "nonsense=1"], "unknown setting"),
        (
            lambda d, t: [d, "-o", t / "o", "--set", "schedule_hour_min_minutes=inf"],
            "--set schedule_hour_min_minutes=inf: schedule_hour_min_minutes='inf' is not a finite",
        ),
        (lambda d, t: [d, "-o", t / "o", "--cpu-idle", "lots"], "not a valid float"),
        # One setting given two values on one command line: neither wins silently.
        (
            lambda d, t: [d, "-o", t / "o", "--set", "cpu_idle=4", "--cpu-idle", "5"],
            "Error: --set cpu_idle=4 and --cpu-idle 5 give cpu_idle two values: give one of them",
        ),
        (
            lambda d, t: [d, "-o", t / "o", "--days", "14", "--set", "days=7"],
            "Error: --set days=7 and --days 14 give days two values",
        ),
        (lambda d, t: [d], "Missing option"),
        # After the newest logs: the error names both days in the order they come.
        (
            lambda d, t: [d, "-o", t / "o", "--since", "2030-01-01"],
            "no records on or after --since 2030-01-01: the newest logs are of 20",
        ),
        # A look-back is held in memory whole: however it arrives, it is bounded.
        (
            lambda d, t: [d, "-o", t / "o", "--set", "days=1000000000"],
            "--set days=1000000000: days is a look-back in whole days, from 1 to 3660",
        ),
        (
            lambda d, t: [d, "-o", t / "o", "--policy", _write(t / "d.toml", "days = 99999\n")],
            "d.toml: days is a look-back in whole days, from 1 to 3660",
        ),
        (
            lambda d, t: [d, "-o", t / "o", "--set", "days=1.5"],
            "--set days=1.5: days='1.5' must be a whole number",
        ),
        (
            lambda d, t: [d, "-o", t / "o", "--policy", _write(t / "h.toml", "schedule_night_end = 6.5\n")],
            "h.toml: schedule_night_end=6.5 must be a whole number",
        ),
        (
            lambda d, t: [d, "-o", t / "o", "--set", "days=inf"],
            "--set days=inf: days='inf' is not a finite number",
        ),
        (
            lambda d, t: [d, "-o", t / "o", "--set", "headroom=inf"],
            "--set headroom=inf: headroom='inf' is not a finite",
        ),
        (
            lambda d, t: [d, "-o", t / "o", "--cpu-idle", "nan"],
            "option --cpu-idle: cpu_idle=nan is not a finite number",
        ),
        (
            lambda d, t: [d, "-o", t / "o", "--set", "vcpu_ladder=1,inf"],
            "--set vcpu_ladder=1,inf: vcpu_ladder must list positive finite",
        ),
        (
            lambda d, t: [d, "-o", t / "o", "--prices", _write(t / "inf.toml", "vcpu_hour = inf\n")],
            "vcpu_hour must be a non-negative number",
        ),
        (
            lambda d, t: [d, "-o", t / "o", "--prices", _write(t / "nan.toml", "vcpu_hour = 0.1\n"
                                                                "gb_ram_hour = nan\n")],
            "gb_ram_hour must be a non-negative number",
        ),
        (
            lambda d, t: [d, "-o", t / "o", "--prices", _write(t / "size.toml", _INFINITE_SIZE)],
            "size 1 needs a name, positive vcpus",
        ),
        # One setting given twice with two values: neither wins silently.
        (
            lambda d, t: [d, "-o", t / "o", "--set", "cpu_idle=3", "--set", "cpu_idle=4"],
            "--set cpu_idle=3 and --set cpu_idle=4 give cpu_idle two values: give one of them",
        ),
        # A window must have dates to name on both sides: no traceback at the calendar's ends.
        (lambda d, t: [d, "-o", t / "o", "--until", "0001-01-01"], "--until 0001-01-01 is outside 1970"),
        (lambda d, t: [d, "-o", t / "o", "--since", "9999-12-31"], "--since 9999-12-31 is outside"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(fleet, tmp_path, make_args, message):
    data, _expected, _out, _result = fleet
    result = vmstats(*make_args(data, tmp_path))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


_INFINITE_SIZE = (
    "vcpu_hour = 0.1\ngb_ram_hour = 0.1\n[[sizes]]\n"
    "name = 'x'\nvcpus = inf\nmemory_gb = 1\nhourly = 1\n"
)


def _write(path, text):
    path.write_text(text)
    return path


def _folder(path):
    path.mkdir(parents=True)
    return path


def test_report_asks_arrow_for_the_system_allocator_without_importing_it():
    """Set through Arrow's variable, not its API: a report from CSV or rollups never imports
    pyarrow, yet one that reads columnar files gets the C library's malloc (command.py)."""
    code = (
        "import os, sys\n"
        "os.environ.pop('ARROW_DEFAULT_MEMORY_POOL', None)\n"
        "from vmstats.report.command import use_system_allocator\n"
        "use_system_allocator()\n"
        "assert 'pyarrow' not in sys.modules\n"
        "import pyarrow\n"
        "print(pyarrow.default_memory_pool().backend_name)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "system"


def test_a_setting_given_twice_the_same_is_no_conflict():
    """A flag and a --set that agree are one setting, as given."""
    assert policy_overrides({"cpu_idle": 5.0, "days": None}, ("cpu_idle=5", "headroom=0.1")) == {
        "cpu_idle": "5",
        "headroom": "0.1",
    }
    assert policy_overrides({}, ("headroom=0.1", "headroom=0.10")) == {"headroom": "0.10"}


def test_a_set_given_twice_with_one_value_runs_the_report(fleet, tmp_path):
    """Two --set of one setting that agree (a script's default and the operator's) are no conflict."""
    data, _expected, _out, _result = fleet
    result = vmstats(data, "-o", tmp_path / "o", "--set", "cpu_idle=3", "--set", "cpu_idle=3.0")
    assert result.returncode == 0, result.stderr
    policy = json.loads((tmp_path / "o" / "report.json").read_text())["meta"]["policy"]
    assert policy["settings"]["cpu_idle"] == 3
