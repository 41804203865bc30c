"""Writing a report's files: the page rendered in a forked child beside the CSV and JSON, the
same bytes as rendered in the process, and a failure of the child raised in the parent."""

import errno
import io
import os
import re
import types

import numpy as np
import pytest
import reportdata

from vmstats.outputfile import PARTIAL, together
from vmstats.report import command
from vmstats.report.histogram import SparseHistograms
from vmstats.report.outputs import terminal_summary, write_csv, write_json
from vmstats.report.render import render
from vmstats.report.settings import ReportError


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """A report of enough VMs that its page is rendered in a child."""
    report = reportdata.grown(reportdata.small_fleet(tmp_path_factory.mktemp("writing")), 300)
    assert len(report.rows) >= command._FORK_ROWS
    return report


def test_a_large_reports_files_are_those_written_in_one_process(large, tmp_path):
    with together() as outputs:
        command.write_report(large, str(tmp_path / "forked"), outputs)
    here = tmp_path / "here"
    here.mkdir()
    render(large, str(here / "report.html"))
    write_csv(large, str(here / "report.csv"))
    write_json(large, str(here / "report.json"))
    for name in ("report.html", "report.csv", "report.json", "statement.csv"):
        assert (tmp_path / "forked" / name).exists(), name
    for name in ("report.html", "report.csv", "report.json"):
        assert (tmp_path / "forked" / name).read_bytes() == (here / name).read_bytes(), name


def test_the_childs_failure_to_write_the_page_is_raised_with_its_errno(large, tmp_path):
    (tmp_path / "report.csv").write_text("an earlier run's\n")
    # In the way of the page's staged name: the child cannot put it there.
    (tmp_path / ("report.html.%d%s" % (os.getpid(), PARTIAL))).mkdir()
    with pytest.raises(OSError) as caught:
        with together() as outputs:
            command.write_report(large, str(tmp_path), outputs)
    assert caught.value.errno == errno.EISDIR
    # The parent's files were written, and removed with the run: none of the set is in place.
    assert (tmp_path / "report.csv").read_text() == "an earlier run's\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["report.csv"]


def _fails(result, path):
    raise ValueError("no template for %d rows" % len(result.rows))


def _writes(result, path):
    with open(path, "w") as handle:
        handle.write("rows: %d\n" % len(result.rows))


def test_beside_runs_in_a_child_and_raises_its_other_errors_as_one_line(tmp_path):
    many = types.SimpleNamespace(rows=[{}] * command._FORK_ROWS)
    parent = []
    with command.beside(_writes, many, str(tmp_path / "page.html")):
        parent.append("ran meanwhile")
    assert parent == ["ran meanwhile"]
    assert (tmp_path / "page.html").read_text() == "rows: %d\n" % command._FORK_ROWS
    with pytest.raises(ReportError, match=r"^page\.html not written: ValueError: no template for 200 rows$"):
        with command.beside(_fails, many, str(tmp_path / "page.html")):
            pass
    few = types.SimpleNamespace(rows=[{}])  # rendered here, before the block
    with pytest.raises(ValueError):
        with command.beside(_fails, few, str(tmp_path / "page.html")):
            pytest.fail("a small report's page is rendered before the block runs")


def test_histogram_sums_too_large_for_32_bits_are_exact():
    """Counts whose total passes 2**32 are summed in 64 bits (one file, and across files)."""
    big = np.array([3_000_000_000], np.uint32)
    hist = SparseHistograms(3, 4)
    for row in range(3):  # one chunk per file, each holding one row
        hist.add_cells(np.array([row]), np.array([0, 1]), np.array([2], np.uint16), big)
    sums = hist.group_sum(np.array([0, 0, 1]), 2)
    np.testing.assert_array_equal(sums[:, 2], [6_000_000_000, 3_000_000_000])
    one = SparseHistograms(2, 4)  # one file holding two rows of one group
    one.add_cells(np.array([0, 1]), np.array([0, 1, 2]), np.array([2, 2], np.uint16), np.r_[big, big])
    np.testing.assert_array_equal(one.group_sum(np.array([0, 0]), 1), [[0, 0, 6_000_000_000, 0]])


def test_counts_of_one_read_in_the_singular(tmp_path):
    """A one-VM report says "1 VM", "1 candidate", "1 group" on the terminal and the page."""
    one = reportdata.grown(reportdata.small_fleet(tmp_path), 1)
    assert one.meta["totals"]["candidates"] == 1 and len(one.meta["statement"]["groups"]) == 1
    stream = io.StringIO()
    terminal_summary(one, str(tmp_path), stream)
    text = stream.getvalue()
    assert text.startswith("vmstats report: 1 VM, window ")
    assert "from 1 candidate\n" in text and "statement by project: 1 group (USD a month)\n" in text
    assert re.search(r"^  total +1 VM  +provisioned", text, re.M), text
    render(one, str(tmp_path / "report.html"))
    page = (tmp_path / "report.html").read_text()
    assert '"label">VM in the fleet<' in page and '"label">reclamation candidate<' in page
    assert re.search(r": 1 VM</title>", page)
    assert not re.search(r"\b1 (VMs|candidates|groups)\b", text + page)
    assert re.findall(r"\b(VMs?) in the fleet", page) == ["VM"]
