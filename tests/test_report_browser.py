"""report.html in a real browser: headless Chromium driven by selenium.

The page's table, filters, search and drill-down are drawn by its script, so
only a browser can show they work: no console error, sorting, filtering,
search, the drill-down panel, no horizontal overflow at 1,000 pixels, and a
10,000-VM page drawn within seconds.  Chromium and its driver are Debian's,
installed by .ci/debian-packages when missing (a failure there fails these
tests; they never skip).  One browser serves the whole module to keep it fast.
"""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import reportdata
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.wait import WebDriverWait
from test_report_policy import build_fleet
from test_report_stats import T0, series, write_records

from vmstats.report.render import OTHER_COLOUR, render

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 1000
#: Chromium as root in a container: no sandbox, no GPU, nothing fetched, a fresh profile.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=%d,900" % WIDTH,
)


def _browser_binaries() -> tuple[str, str]:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        done = subprocess.run(
            [str(ROOT / ".ci" / "debian-packages")], capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, "cannot install chromium: " + done.stderr
    return shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, chromedriver = _browser_binaries()
    options = webdriver.ChromeOptions()
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument("--user-data-dir=%s" % tmp_path_factory.mktemp("chromium-profile"))
    options.binary_location = chromium
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """A 300-VM page with tags, a statement, an unknown category and extra fields, and a 10,000-VM page."""
    base_dir = tmp_path_factory.mktemp("browser")
    base = reportdata.small_fleet(base_dir)
    small = reportdata.grown(base, 300)
    # What a newer policy may add: a category and fields this page does not know.
    small.meta["categories"][small.rows[-1]["category"]]["vms"] -= 1
    small.rows[-1]["category"] = "upsize"
    small.meta["categories"]["upsize"] = {"vms": 1, "monthly_saving": 0.0, "extra_cost": 0.0}
    for row in small.rows[:3]:
        row["data_quality"] = ["clock skew 40 s", "gap of 6 h on 2026-01-05"]
        row["blocked_by"] = "trend"
    render(small, str(base_dir / "small.html"))
    large = reportdata.grown(base, 10000)
    render(large, str(base_dir / "large.html"))
    return {"small": (base_dir / "small.html", small), "large": (base_dir / "large.html", large)}


def _open(browser, path: Path) -> None:
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(path.as_uri())  # returns after the load event, i.e. after the page's script ran
    browser.find_element(By.CSS_SELECTOR, "#vms tbody tr[data-index]")


def _errors(browser) -> list:
    return [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]


def _column(browser, index: int) -> list[str]:
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#vms tbody tr[data-index]'),"
        " tr => tr.cells[%d].textContent.trim())" % index
    )


def _until(browser, test) -> None:
    """Wait for the page to show what ``test`` checks: the search box applies what was typed
    once typing pauses, on a timer a loaded host may run late (a fixed sleep raced it)."""
    WebDriverWait(browser, 15, poll_frequency=0.05).until(lambda _driver: test())


def _vms(browser) -> list[str]:
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('#vms tbody .vmlink'), b => b.textContent)"
    )


def _shown(browser) -> str:
    """The pager's count, read in one script: each draw writes the pager anew, so an element
    found before a draw the search's timer ran was stale when its text was asked for."""
    return browser.execute_script("return document.getElementById('shown').innerText")


def _money(text: str) -> float:
    return float(text.replace(",", "") or 0)


def test_page_loads_without_errors_and_fits_1000_pixels(browser, pages, tmp_path):
    path, report = pages["small"]
    _open(browser, path)
    assert _errors(browser) == []
    sizes = browser.execute_script(
        "var d = document.documentElement, box = document.querySelector('.tablebox');"
        "return [d.scrollWidth, d.clientWidth, box.scrollWidth, box.clientWidth, window.innerWidth]"
    )
    assert sizes[4] == WIDTH
    assert sizes[0] <= sizes[1], "the page scrolls sideways at %d px" % WIDTH
    assert sizes[2] <= sizes[3], "the VM table is wider than its box"
    assert len(_column(browser, 0)) == 100 and _shown(browser).startswith("1-100 of 300 VMs")
    assert browser.title == "VM reclamation report 2026-01-01 to 2026-01-14"
    # Host and tags reach the table; the unknown category is drawn with its own chip.
    first = report.rows[0]
    cell = browser.find_element(By.CSS_SELECTOR, "#vms tbody tr[data-index] td:nth-child(2)").text
    assert (
        first["vm"] in cell
        and "host=%s" % first["host"] in cell
        and "project=%s" % first["tags"]["project"] in cell
    )
    assert browser.find_element(By.CSS_SELECTOR, '.chip[data-category="upsize"]').text.split() == [
        "upsize",
        "1",
    ]
    browser.execute_script("document.getElementById('statement-title').scrollIntoView()")
    browser.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 10000


#: Each word of each header of the VM table that the browser drew on more than one line.
_BROKEN_HEADER_WORDS = """
var broken = [], range = document.createRange();
document.querySelectorAll('#vms th').forEach(function (th) {
  var walker = document.createTreeWalker(th, NodeFilter.SHOW_TEXT), word;
  while (walker.nextNode()) {
    var node = walker.currentNode, words = /\\S+/g;
    while ((word = words.exec(node.data))) {
      range.setStart(node, word.index);
      range.setEnd(node, word.index + word[0].length);
      var tops = new Set(Array.from(range.getClientRects(), function (r) { return Math.round(r.top); }));
      if (tops.size > 1) broken.push(word[0]);
    }
  }
});
return broken;
"""


def test_no_header_of_the_vm_table_is_cut_inside_a_word(browser, pages):
    """At 1000 pixels "mem p95 %" was drawn "me / m / p95 / %": its 46-pixel column left the
    word no room.  A header may wrap between words, or where it offers to (a soft hyphen)."""
    path, _report = pages["small"]
    _open(browser, path)
    broken = browser.execute_script(_BROKEN_HEADER_WORDS)
    assert [word for word in broken if "\u00ad" not in word] == []
    assert "confi\u00addence" in broken  # the check sees a word that wraps, where it may


def test_sorting_by_a_column_and_back(browser, pages):
    path, report = pages["small"]
    _open(browser, path)
    assert [int(x) for x in _column(browser, 0)] == list(range(1, 101))
    saving = browser.find_element(By.CSS_SELECTOR, '#vms th[data-key="monthly_saving"]')
    saving.click()
    values = [_money(x) for x in _column(browser, 3)]
    assert values == sorted(values, reverse=True) and values[0] == max(
        r["monthly_saving"] for r in report.rows
    )
    assert "sorted-desc" in saving.get_attribute("class")
    saving.click()
    values = [_money(x) for x in _column(browser, 3)]
    assert values == sorted(values) and "sorted-asc" in saving.get_attribute("class")
    browser.find_element(By.CSS_SELECTOR, '#vms th[data-key="vm"]').click()
    assert _vms(browser) == sorted(r["vm"] for r in report.rows)[:100]


def test_vm_ids_sort_with_their_numbers_by_value(browser, tmp_path):
    """Sorted by VM, a fleet of addresses reads 10.0.0.2, 10.0.0.10, 10.0.0.100, as an operator
    looks for them, not 10.0.0.10, 10.0.0.100, 10.0.0.2."""
    ids = ["10.0.0.100", "10.0.0.2", "web-10", "10.0.0.10", "Web-9", "10.0.1.1"]
    ts = T0 + 60 * np.arange(1440)
    for vm in ids:
        write_records(tmp_path / "data", series(vm, ts, np.full(len(ts), 1.0), np.full(len(ts), 30.0)))
    done = subprocess.run([sys.executable, "-m", "vmstats", "report", str(tmp_path / "data"), "-o",
                           str(tmp_path / "out"), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    _open(browser, tmp_path / "out" / "report.html")
    header = browser.find_element(By.CSS_SELECTOR, '#vms th[data-key="vm"]')
    header.click()
    natural = ["10.0.0.2", "10.0.0.10", "10.0.0.100", "10.0.1.1", "Web-9", "web-10"]
    assert _vms(browser) == natural
    header.click()
    assert _vms(browser) == natural[::-1]
    assert _errors(browser) == []


def test_category_chips_and_search_filter_every_row(browser, pages):
    path, report = pages["small"]
    _open(browser, path)
    count = {c: sum(1 for r in report.rows if r["category"] == c) for c in ("reclaim", "downsize")}
    browser.find_element(By.CSS_SELECTOR, '.chip[data-category="reclaim"]').click()
    assert set(_column(browser, 2)) == {"reclaim"} and _shown(browser).startswith(
        "1-%d of %d VMs" % ((count["reclaim"],) * 2)
    )
    browser.find_element(By.CSS_SELECTOR, '.chip[data-category="downsize"]').click()
    total = count["reclaim"] + count["downsize"]
    assert set(_column(browser, 2)) == {
        "reclaim",
        "downsize",
    } and " of %d VMs (filtered from 300)" % total in _shown(browser)
    browser.find_element(By.CSS_SELECTOR, '.chip[data-category=""]').click()
    assert _shown(browser) == "1-100 of 300 VMs"

    search = browser.find_element(By.ID, "search")
    search.send_keys("project=billing")
    billing = [r for r in report.rows if r["tags"]["project"] == "billing"]
    _until(browser, lambda: _shown(browser) == "1-%d of %d VMs (filtered from 300)"
           % (min(100, len(billing)), len(billing)))
    assert all("project=billing" in text for text in _column(browser, 1))
    # Words combine with chips and with each other: a VM outside the chip's category is not
    # shown until the chip is let go.
    browser.find_element(By.CSS_SELECTOR, '.chip[data-category="keep"]').click()
    assert set(_column(browser, 2)) == {"keep"}
    vm = next(r["vm"] for r in report.rows[40:] if r["category"] != "keep")
    search.clear()
    search.send_keys(vm)
    # Applying the search shrinks the table and scrolls the page, moving the chips: a click
    # sent while the search is still pending was located before that move and landed beside
    # the chip, which then stayed unpressed (a 15 s wait for this VM).  So the chip is clicked
    # only once the page shows the search; whatever it still has pending draws the same table.
    _until(browser, lambda: "No VM matches" in browser.find_element(By.CSS_SELECTOR, "#vms tbody").text)
    browser.find_element(By.CSS_SELECTOR, '.chip[data-category=""]').click()
    _until(browser, lambda: _vms(browser) == [vm])
    search.clear()
    search.send_keys("no-such-vm-anywhere")
    _until(browser, lambda: "No VM matches" in browser.find_element(By.CSS_SELECTOR, "#vms tbody").text)
    # A statement line lists its group's VMs.
    browser.find_element(By.CSS_SELECTOR, '#statement button[data-filter="project=ml"]').click()
    assert browser.find_element(By.ID, "search").get_attribute("value") == "project=ml"
    assert all("project=ml" in text for text in _column(browser, 1))
    assert _errors(browser) == []


def test_drill_down_evidence_is_words_and_report_json_keeps_the_figures(browser, tmp_path):
    """No evidence is shown as JSON ({"cpu": 5.0, ...}): each line is what an operator reads."""
    expected = build_fleet(tmp_path / "data")
    done = subprocess.run([sys.executable, "-m", "vmstats", "report", str(tmp_path / "data"), "-o",
                           str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    vms = {v["vm"]: v for v in json.loads((tmp_path / "out" / "report.json").read_text())["vms"]}
    idle = vms["idle"]["evidence"]
    assert idle["work_levels"] == {"cpu": 5.0, "disk": 524288.0, "net": 49152.0}  # figures, for scripts
    assert "evidence_text" not in vms["idle"]
    _open(browser, tmp_path / "out" / "report.html")
    shown = {}
    for index, vm in enumerate(_vms(browser)):
        browser.find_elements(By.CSS_SELECTOR, "#vms tbody .vmlink")[index].click()
        cells = browser.find_elements(By.CSS_SELECTOR, "#drill-evidence td")
        shown[vm] = dict(zip([c.text for c in cells[::2]], [c.text for c in cells[1::2]], strict=True))
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    assert sorted(shown) == sorted(expected) and _errors(browser) == []
    for vm, lines in shown.items():
        assert len(lines) == len(vms[vm]["evidence"]), vm
        assert not any(c in text for text in lines.values() for c in "{}[]\""), (vm, lines)
    assert shown["idle"]["work levels (above them: work)"] == "CPU 5.0%, disk 524.3 kB/s, network 49.2 kB/s"
    assert shown["idle"]["room below each idle limit"].startswith("CPU floor (p50) ")
    kept = [lines for vm, lines in shown.items() if vms[vm]["blocked_by"] and "kept from reclaim by" in lines]
    assert kept and all(lines["kept from reclaim by"] for lines in kept)


def test_drill_down_shows_the_vms_charts_evidence_and_flags(browser, pages):
    path, report = pages["small"]
    _open(browser, path)
    row = report.rows[0]
    browser.find_element(By.CSS_SELECTOR, "#vms tbody tr[data-index] .vmlink").click()
    drill = browser.find_element(By.ID, "drill")
    assert drill.is_displayed() and browser.find_element(By.ID, "drill-title").text == row["vm"]
    text = drill.text
    assert (
        row["recommendation"] in text
        and "host=%s" % row["host"] in text
        and "env=%s" % row["tags"]["env"] in text
    )
    # Daily p95 over the analysed days, with axes and the VM's thresholds.
    days = len([v for v in row["daily_cpu_p95"] if v is not None])
    chart = browser.find_element(By.ID, "daily-chart")
    assert len(chart.find_elements(By.CSS_SELECTOR, "circle")) == days + len(
        [v for v in row["daily_mem_p95"] if v is not None]
    )
    assert len(chart.find_elements(By.CSS_SELECTOR, "line.threshold")) == 3
    labels = chart.text
    # The days are counted as UTC days, not as the header's analysed span (13.1 days of a fleet
    # whose window starts at midnight and ends at 02:00 of its 14th day).
    assert "0%" in labels and "100%" in labels and "01-01" in labels
    assert "(14 UTC days of the window, the first and last may be partial)" in labels
    assert "days analysed" not in labels
    assert len(browser.find_elements(By.CSS_SELECTOR, "#vm-heatmap rect")) == 168
    evidence = browser.find_elements(By.CSS_SELECTOR, "#drill-evidence tr")
    assert len(evidence) == len(row["evidence"])
    # Fields a newer policy adds are shown, not dropped.
    assert [li.text for li in drill.find_elements(By.CSS_SELECTOR, ".flags li")] == row["data_quality"]
    assert "blocked_by" in browser.find_element(By.ID, "drill-figures").text
    assert browser.execute_script("return document.documentElement.scrollWidth") <= WIDTH
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    assert not drill.is_displayed()
    # The VM of the unknown category opens too, with the fallback colour.
    browser.find_element(By.CSS_SELECTOR, '.chip[data-category="upsize"]').click()
    browser.find_element(By.CSS_SELECTOR, "#vms tbody tr[data-index]").click()
    pill = browser.find_element(By.CSS_SELECTOR, "#drill .pill")
    assert pill.text == "upsize" and "rgb(140, 86, 75)" in pill.get_attribute("style")
    assert OTHER_COLOUR == "#8c564b"
    assert _errors(browser) == []


def test_drill_down_shows_what_blocked_reclaim_as_text(browser, pages):
    """The evidence's blocked_by reads as the row's text (metric and by how much), not JSON."""
    path, report = pages["small"]
    row = next(
        r for r in report.rows[3:] if isinstance(r["evidence"].get("blocked_by"), dict) and "metric" in
        r["evidence"]["blocked_by"]
    )
    _open(browser, path)
    browser.find_element(By.ID, "search").send_keys(row["vm"])
    _until(browser, lambda: (lambda vms: vms and all(row["vm"] in vm for vm in vms))(_vms(browser)))
    browser.find_element(By.CSS_SELECTOR, "#vms tbody .vmlink").click()
    cells = browser.execute_script(
        "return Array.from(document.querySelectorAll('#drill-evidence tr'),"
        " tr => [tr.cells[0].textContent, tr.cells[1].textContent])"
    )
    assert dict(cells)["kept from reclaim by"] == row["blocked_by"] and "above" in row["blocked_by"]
    assert _errors(browser) == []


def _rows_built(browser) -> int:
    return browser.execute_script("return document.querySelectorAll('#vms tbody tr').length")


def test_ten_thousand_vms_build_one_page_of_rows_and_sort_them_all(browser, pages):
    """What keeps a 10,000-VM page quick to open and sort: the table builds the rows of the page
    shown, never all of them, while a sort orders every VM."""
    path, report = pages["large"]
    _open(browser, path)
    assert _errors(browser) == []
    assert _shown(browser) == "1-100 of 10,000 VMs"
    assert len(_column(browser, 0)) == 100 and _rows_built(browser) == 100
    browser.find_element(By.CSS_SELECTOR, '#vms th[data-key="cpu_p95"]').click()
    values = [float(x or -1) for x in _column(browser, 8)]
    assert _rows_built(browser) == 100
    top = max(r["cpu_p95"] for r in report.rows if r["cpu_p95"] is not None)
    assert values == sorted(values, reverse=True) and values[0] == top
    browser.find_element(By.CSS_SELECTOR, '#pager button[data-page="next"]').click()
    assert _shown(browser).startswith("101-200 of 10,000")
    assert browser.execute_script("return document.documentElement.scrollWidth") <= WIDTH


def _report_of(tmp_path, vms: dict, *options: str) -> Path:
    """The real command's report.html over one day of records of ``vms`` (id -> host, tags)."""
    ts = T0 + 60 * np.arange(1440)
    for vm, (host, tags) in vms.items():
        records = series(vm, ts, np.full(len(ts), 1.0), np.full(len(ts), 30.0))
        write_records(tmp_path / "data", [r._replace(host=host, tags=tags) for r in records])
    done = subprocess.run([sys.executable, "-m", "vmstats", "report", str(tmp_path / "data"), "-o",
                           str(tmp_path / "out"), "--no-cache", *options], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return tmp_path / "out" / "report.html"


def test_a_statement_line_lists_its_own_vms_not_those_of_values_it_begins(browser, tmp_path):
    """Host kvm1's line lists kvm1's VMs: its VM count, not kvm10's and kvm11's VMs as well (the
    search matched host=kvm1 inside host=kvm10). A word KEY=VALUE is the tag's whole value."""
    vms = {"a": ("kvm1", (("owner", "bob"),)), "b": ("kvm1", (("owner", "bobby"),)),
           "c": ("kvm10", (("owner", "bobby"),)), "d": ("kvm11", (("owner", "Bob"),))}
    page = _report_of(tmp_path, vms, "--by", "host")
    statement = json.loads((tmp_path / "out" / "report.json").read_text())["meta"]["statement"]
    lines = {g["value"]: g["vms"] for g in statement["groups"]}
    assert lines == {"kvm1": 2, "kvm10": 1, "kvm11": 1}
    _open(browser, page)
    for host, count in lines.items():
        browser.find_element(By.CSS_SELECTOR, '#statement button[data-filter="host=%s"]' % host).click()
        listed = sorted(vm for vm, (on, _tags) in vms.items() if on == host)
        _until(browser, lambda listed=listed: sorted(_vms(browser)) == listed)
        noun = "VM" if count == 1 else "VMs"
        assert _shown(browser) == "1-%d of %d %s (filtered from 4)" % (count, count, noun)
    # Typed, the same: a tag's whole value, as written; a word without "=" is still any text.
    search = browser.find_element(By.ID, "search")
    for words, listed in (("owner=bob", ["a"]), ("owner=Bob", ["d"]), ("owner=bobby kvm1", ["b", "c"]),
                          ("bob", ["a", "b", "c", "d"])):
        search.clear()
        search.send_keys(words)
        _until(browser, lambda listed=listed: sorted(_vms(browser)) == listed)
    assert _errors(browser) == []


def test_a_narrow_window_scrolls_only_the_tables_never_the_page(browser, tmp_path):
    """In a window narrower than 1,000 pixels every column of the VM table keeps its room (at 800
    pixels the recommendation had 6 pixels, a letter a line) and the table scrolls inside its
    box; at a phone's 360 the fleet's charts and a VM's heat map shrink to the window (the
    charts, 520 pixels wide, made the whole page scroll sideways below 560). A long file name
    in the page's notes (the price book's, as given) wraps too: one with nothing to break it at
    made the page scroll sideways at 360 pixels."""
    prices = tmp_path / ("pricebooks_of_the_datacentre_" * 2) / "pricebook.toml"
    prices.parent.mkdir()
    shutil.copy(ROOT / "vmstats" / "report" / "examples" / "pricebook.toml", prices)
    page = _report_of(tmp_path, {"a": ("kvm1", None), "b": ("kvm2", (("owner", "bob"),))}, "--by", "host",
                      "--prices", str(prices))
    script = (
        "var out = [], w = document.documentElement.clientWidth;"
        "document.querySelectorAll('body *').forEach(function (e) {"
        "  if (e.closest('.tablebox, .statementbox')) return;"
        "  if (e.getBoundingClientRect().right > w + 0.5) out.push(e.tagName + ' ' + e.className);"
        "}); return out;"
    )
    try:
        for size in (800, 360):
            browser.set_window_size(size, 900)
            _open(browser, page)
            width = browser.execute_script("return document.documentElement.clientWidth")
            assert width <= size and browser.execute_script(script) == []
            assert browser.execute_script("return document.documentElement.scrollWidth") <= width
            columns = browser.execute_script(
                "return Array.from(document.querySelectorAll('#vms thead th'), th => th.offsetWidth)"
            )
            assert min(columns) >= 38 and columns[1] >= 120 and columns[5] >= 150, (size, columns)
        bar = browser.find_element(By.CSS_SELECTOR, 'svg[aria-label="VMs by category"]')
        assert bar.size["height"] == 18 and bar.size["width"] < 360
        browser.find_element(By.CSS_SELECTOR, "#vms tbody .vmlink").click()
        drill = browser.find_element(By.ID, "drill")
        assert drill.is_displayed()
        assert browser.execute_script("var d = document.getElementById('drill');"
                                      "return d.scrollWidth <= d.clientWidth")
        heat = browser.find_element(By.ID, "vm-heatmap")
        assert heat.size["width"] < 360 and len(heat.find_elements(By.CSS_SELECTOR, "rect")) == 168
        assert _errors(browser) == []
    finally:
        browser.set_window_size(WIDTH, 900)


def test_coverage_with_a_gap_never_reads_as_the_whole_window(browser, tmp_path):
    """A VM missing a minute of a day (coverage 0.9993) read 100% in the table, like one that
    missed none: the gap showed only in report.csv."""
    ts = T0 + 60 * np.arange(1440)
    for vm, kept in (("whole", ts), ("gap", np.delete(ts, 700))):
        write_records(tmp_path / "data", series(vm, kept, np.full(len(kept), 1.0), np.full(len(kept), 30.0)))
    done = subprocess.run([sys.executable, "-m", "vmstats", "report", str(tmp_path / "data"), "-o",
                           str(tmp_path / "out"), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    rows = {v["vm"]: v for v in json.loads((tmp_path / "out" / "report.json").read_text())["vms"]}
    assert rows["whole"]["coverage"] == 1.0 and 0.999 < rows["gap"]["coverage"] < 1.0
    _open(browser, tmp_path / "out" / "report.html")
    shown = dict(zip(_vms(browser), _column(browser, 7), strict=True))
    assert shown == {"whole": "100%", "gap": "99%"}
    assert _errors(browser) == []


def test_a_vms_heat_map_and_daily_chart_give_each_figure_to_the_tenth(browser, tmp_path):
    """The drill-down's heat map read "lightest 1% to darkest 12.5%" (and its cells "1%"), where
    the fleet's, above, reads "1.0%": a mean of 1.0 is written as a mean of 1.0."""
    ts = T0 + 60 * np.arange(1440)
    cpu = np.where((ts // 3600) % 24 == 3, 12.5, 1.0)  # busy from 03:00 to 04:00 UTC
    write_records(tmp_path / "data", series("night", ts, cpu, np.full(len(ts), 30.0)))
    done = subprocess.run([sys.executable, "-m", "vmstats", "report", str(tmp_path / "data"), "-o",
                           str(tmp_path / "out"), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    _open(browser, tmp_path / "out" / "report.html")
    assert "from its quietest hour (1.0%, lightest) to its busiest (12.5%, darkest)" in " ".join(
        browser.find_element(By.CSS_SELECTOR, ".caption").text.split())
    browser.find_element(By.CSS_SELECTOR, "#vms tbody .vmlink").click()
    drill = browser.find_element(By.ID, "drill")
    assert "Mean CPU per hour of the week (UTC), lightest 1.0% to darkest 12.5%." in drill.text
    titles = browser.execute_script(
        "return Array.from(document.querySelectorAll('#vm-heatmap rect title, #daily-chart circle title'),"
        " t => t.textContent)")
    assert "Thu 00:00 UTC: 1.0%" in titles and "Thu 03:00 UTC: 12.5%" in titles
    assert "2026-01-01 CPU p95 1.0%" in titles and "2026-01-01 memory p95 30.0%" in titles
    assert _errors(browser) == []


def test_the_tables_size_is_the_one_its_reason_names(browser, tmp_path):
    """A VM of 32,724 MB (the Bitbrains trace's "32 GB") is 31.957 GB in report.csv and 31.96 GB
    in a reason or recommendation; the table said 32.0 GB, a size it is not. A whole size reads
    whole, as a reason writes it."""
    ts = T0 + 60 * np.arange(1440)
    for vm, mem_mb in (("odd", 32724), ("even", 16384)):
        write_records(tmp_path / "data", series(vm, ts, np.full(len(ts), 1.0), np.full(len(ts), 30.0),
                                                vcpus=8, mem_mb=mem_mb))
    done = subprocess.run([sys.executable, "-m", "vmstats", "report", str(tmp_path / "data"), "-o",
                           str(tmp_path / "out"), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    _open(browser, tmp_path / "out" / "report.html")
    sizes = browser.execute_script(
        "return Array.from(document.querySelectorAll('#vms tbody tr[data-index]'),"
        " tr => [tr.cells[1].textContent, tr.cells[6].querySelector('.small').textContent])"
    )
    assert dict(sizes) == {"odd": "8 vCPU / 31.96 GB", "even": "8 vCPU / 16 GB"}
    assert _errors(browser) == []


def test_the_statements_line_of_vms_without_the_tag_lists_them(browser, tmp_path):
    """The VMs no owner is billed for are the ones to act on: their line ("no owner") lists them,
    as every other line lists its own; it was the one line that could not be clicked."""
    vms = {"a": ("kvm1", (("owner", "bob"),)), "b": ("kvm1", None), "c": ("kvm2", (("env", "dev"),))}
    page = _report_of(tmp_path, vms, "--by", "owner")
    groups = json.loads((tmp_path / "out" / "report.json").read_text())["meta"]["statement"]["groups"]
    assert {g["value"]: g["vms"] for g in groups} == {"bob": 1, "": 2}
    _open(browser, page)
    button = browser.find_element(By.CSS_SELECTOR, '#statement button[data-filter="owner="]')
    assert button.text == "no owner"
    button.click()
    _until(browser, lambda: sorted(_vms(browser)) == ["b", "c"])
    assert _shown(browser) == "1-2 of 2 VMs (filtered from 3)"
    assert browser.find_element(By.ID, "search").get_attribute("value") == "owner="
    browser.find_element(By.CSS_SELECTOR, '#statement button[data-filter="owner=bob"]').click()
    _until(browser, lambda: _vms(browser) == ["a"])
    assert _errors(browser) == []


#: An exclusion applied at the window's end (2026-01-07) that has run out before any run of
#: this suite, and one that runs on.
LAPSED_AND_KEPT = """\
[[exclude]]
vm = "pinned-dr"
reason = "DR standby"
expires = 2026-01-20
[[exclude]]
vm = "kept"
reason = "legal hold"
expires = 9999-12-31
"""


@pytest.fixture(scope="module")
def worded(tmp_path_factory):
    """The real command's report over a week of five VMs: ``pinned``, told to grow; ``pinned-dr``,
    as pinned but excluded until a day gone by; ``kept``, excluded until a day to come; ``nosize``,
    whose agent never sent its size; ``halfsize``, whose agent sent its vCPUs but not its memory.
    Returns (out folder, report.json's rows by VM, stdout)."""
    folder = tmp_path_factory.mktemp("worded")
    ts = T0 + 60 * np.arange(7 * 1440)
    noise = np.random.default_rng(2).random(len(ts))
    for vm in ("pinned", "pinned-dr"):
        write_records(folder / "data", series(vm, ts, 95 + 3 * noise, np.full(len(ts), 40.0),
                                              net=np.full(len(ts), 2e6), vcpus=2, mem_mb=8192))
    write_records(folder / "data", series("kept", ts, 1 + noise, np.full(len(ts), 30.0), vcpus=2,
                                          mem_mb=4096))
    write_records(folder / "data", series("nosize", ts, 1 + noise, np.full(len(ts), 30.0), vcpus=None,
                                          mem_mb=None))
    write_records(folder / "data", series("halfsize", ts, 1 + noise, np.full(len(ts), 30.0), vcpus=4,
                                          mem_mb=None))
    (folder / "exclusions.toml").write_text(LAPSED_AND_KEPT)
    done = subprocess.run([sys.executable, "-m", "vmstats", "report", str(folder / "data"), "-o",
                           str(folder / "out"), "--no-cache", "--exclusions", str(folder / "exclusions.toml"),
                           "--by", "host"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = {row["vm"]: row for row in json.loads((folder / "out" / "report.json").read_text())["vms"]}
    return folder / "out", rows, done.stdout


def _drill(browser, vm: str) -> str:
    """The drill-down panel's text for ``vm``, opened from its row of the table."""
    row = next(tr for tr in browser.find_elements(By.CSS_SELECTOR, "#vms tbody tr[data-index]")
               if tr.find_element(By.CSS_SELECTOR, ".vmlink").text == vm)
    row.find_element(By.CSS_SELECTOR, ".vmlink").click()
    text = browser.find_element(By.ID, "drill").text
    browser.find_element(By.CSS_SELECTOR, "#drill .close").click()
    return text


def _cell(browser, vm: str, index: int) -> str:
    """The text of ``vm``'s cell ``index`` in the VM table, its lines joined by " | "."""
    return browser.execute_script(
        "var b = Array.from(document.querySelectorAll('#vms tbody .vmlink'))"
        ".find(b => b.textContent === arguments[0]);"
        " return b.closest('tr').cells[arguments[1]].innerText.trim().split('\\n').join(' | ');", vm, index)


def test_an_upsizes_drill_down_says_what_it_would_add_not_a_negative_saving(browser, worded):
    """A VM pinned at its size is told to grow: its panel read "saving USD -56.36 / month".
    Its costs beside it name the currency the same way."""
    out, rows, _stdout = worded
    row = rows["pinned"]
    assert row["category"] == "upsize" and row["monthly_saving"] < 0
    _open(browser, out / "report.html")
    text = _drill(browser, "pinned")
    assert "extra cost USD %.2f / month (not in the saving)" % -row["monthly_saving"] in text
    assert "saving USD -" not in text
    # Its costs name their currency as the saving does (they read "cost as provisioned 112.71").
    assert "cost as provisioned USD %.2f / month, by use USD %.2f / month" % (
        row["monthly_cost"], row["usage_cost"]) in text
    assert _errors(browser) == []


def test_an_upsizes_extra_cost_reads_as_a_cost_in_the_table_too(browser, worded):
    """The table's saving cell read "-56.35" for the upsize its drill-down calls an extra cost, and
    an excluded upsize's evidence "would save a month USD -56.35".  Both read as what it would add;
    report.csv and report.json keep the figure, negative, as documented."""
    out, rows, _stdout = worded
    extra = -rows["pinned"]["monthly_saving"]
    _open(browser, out / "report.html")
    assert _cell(browser, "pinned", 3) == "+%.2f | extra cost" % extra
    # Sorted by saving, most first, an extra cost comes after every saving and every zero.
    browser.find_element(By.CSS_SELECTOR, '#vms th[data-key="monthly_saving"]').click()
    assert _vms(browser)[-1] == "pinned"
    evidence = _drill(browser, "pinned-dr")
    assert "would add a month (extra cost) USD %.2f" % extra in evidence
    assert "USD -" not in evidence and "would save" not in evidence
    assert rows["pinned-dr"]["evidence"]["would_save"] == -extra
    with (out / "report.csv").open(newline="") as handle:
        cells = {line["vm"]: line for line in csv.DictReader(handle)}
    assert float(cells["pinned"]["monthly_saving"]) == -extra
    assert _errors(browser) == []


def test_an_exclusion_expired_since_the_window_says_so_on_its_row(browser, worded):
    """An exclusion is judged at the window's end; one applied then whose day has passed since read
    "excluded: DR standby (until 2026-01-20)" on its row and "exclusion expires 2026-01-20" in its
    panel, while the page's note said it had expired.  Its row says so too; one still running keeps
    its "until"; report.csv and report.json keep the window's words, the same on any day."""
    out, rows, _stdout = worded
    _open(browser, out / "report.html")
    lapsed = "expired 2026-01-20, after the window's end: renew or drop it"
    reason = _cell(browser, "pinned-dr", 5)
    assert reason.startswith("none (excluded) | excluded: DR standby (%s); would be upsize: " % lapsed)
    assert "until 2026-01-20" not in browser.find_element(By.ID, "vms").text
    panel = _drill(browser, "pinned-dr")
    assert "exclusion %s" % lapsed in panel and "until 2026-01-20" not in panel
    assert "exclusion expires" not in panel
    assert "excluded: legal hold (until 9999-12-31); would be " in _cell(browser, "kept", 5)
    assert "exclusion expires 9999-12-31" in _drill(browser, "kept")
    # The files keep the words of the window's end.
    assert rows["pinned-dr"]["reason"].startswith(
        "excluded: DR standby (until 2026-01-20); would be upsize: ")
    assert rows["pinned-dr"]["evidence"]["expires"] == "2026-01-20"
    assert "excluded: DR standby (until 2026-01-20);" in (out / "report.csv").read_text()
    assert _errors(browser) == []


def test_a_vm_without_a_size_is_not_priced_in_one_wording(browser, worded):
    """A VM whose agent never sent its size has no price: the header said "not priced", its panel
    "cost as provisioned unknown, by use unknown", its row "? vCPU / ? GB", the statement
    "unpriced".  Each fact has one wording everywhere: "not priced", "size not reported"."""
    out, rows, stdout = worded
    assert rows["nosize"]["monthly_cost"] is None and rows["nosize"]["vcpus"] is None
    _open(browser, out / "report.html")
    cards = browser.find_element(By.CSS_SELECTOR, ".cards").text
    assert "2\nVMs not priced (size not reported)" in cards
    assert _cell(browser, "nosize", 6) == "not priced | size not reported"
    panel = _drill(browser, "nosize")
    assert "; not priced (size not reported)" in panel
    assert "unknown," not in panel and "by use unknown" not in panel
    # Half a size: its row and its panel name the part that was not reported, alike.  The
    # panel said "size not reported" beside a row showing its 4 vCPUs.
    assert rows["halfsize"]["monthly_cost"] is None and rows["halfsize"]["vcpus"] == 4
    assert _cell(browser, "halfsize", 6) == "not priced | 4 vCPU / memory not reported"
    assert "; not priced (4 vCPU / memory not reported)" in _drill(browser, "halfsize")
    statement = browser.find_element(By.ID, "statement").text
    assert "(2 not priced)" in statement and "unpriced" not in statement
    page = browser.find_element(By.TAG_NAME, "body").text
    assert "? vCPU" not in page and "without a reported size" not in page
    assert "2 VMs not priced (size not reported): no cost or saving for them" in stdout.splitlines()
    assert _errors(browser) == []
