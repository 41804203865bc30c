"""vmstats score: a small constructed report graded against a truth file."""

import json
import subprocess
import sys

from serverproc import ROOT

from vmstats.simulator import score as scoring

TRUTH = """vm,vcpus,mem_mb,profile,expected
10.0.0.1,2,4096,idle,reclaim
10.0.0.2,16,65536,oversized,downsize
10.0.0.3,4,8192,business_hours,schedule
10.0.0.4,2,8192,steady_busy,keep
10.0.0.5,1,1024,stopped,stopped
10.0.0.6,8,32768,idle,reclaim
"""
REPORT = """vm,category,monthly_saving,confidence
10.0.0.1,reclaim,40.5,high
10.0.0.2,reclaim,300,high
10.0.0.3,schedule,25.25,medium
10.0.0.4,keep,,high
10.0.0.5,insufficient-data,0,low
10.9.9.9,reclaim,10,high
"""


def write(tmp_path):
    (tmp_path / "truth.csv").write_text(TRUTH)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.csv").write_text(REPORT)


def vmstats(*args):
    return subprocess.run([sys.executable, "-m", "vmstats", *args], cwd=str(ROOT), capture_output=True,
                          text=True, timeout=60)


def test_score_counts_confusion_misses_and_savings(tmp_path):
    write(tmp_path)
    result = scoring.score(scoring.load_truth(str(tmp_path / "truth.csv")),
                           scoring.load_report(str(tmp_path / "out")))
    # The report's insufficient-data is no verdict: 10.0.0.5 is counted apart, not wrong; a
    # verdict that differs from the truth (10.0.0.2) and a VM left out (10.0.0.6) are wrong.
    assert (result.total, result.correct) == (5, 3)
    assert result.per_expected == {"reclaim": (2, 1), "schedule": (1, 1), "downsize": (1, 0), "keep": (1, 1),
                                   "stopped": (0, 0)}
    assert result.confusion["downsize"] == {"reclaim": 1}
    assert result.confusion["reclaim"] == {"reclaim": 1, "missing": 1}
    assert result.confusion["stopped"] == {"insufficient-data": 1}
    assert result.wrong == [("10.0.0.2", "oversized", "downsize", "reclaim"),
                            ("10.0.0.6", "idle", "reclaim", "missing")]
    assert result.unjudged == [("10.0.0.5", "stopped", "stopped")]
    assert result.extra == 1
    assert (result.saving_total, result.saving_correct, result.saving_wrong) == (375.75, 65.75, 300.0)


def test_score_command_prints_the_table_and_writes_json(tmp_path):
    write(tmp_path)
    out = vmstats("score", "--truth", str(tmp_path / "truth.csv"),
                  "--report", str(tmp_path / "out/report.csv"), "--json", str(tmp_path / "score.json"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == ("Score against the simulator's truth: 3 of 5 judged VMs right "
                                          "(60.0 %); 1 VM with too little data to judge (insufficient-data)")
    assert "Not judged, too little data (1; the report's reasons are in report.csv):" in out.stdout
    assert "10.0.0.2" in out.stdout and "expected downsize  got reclaim" in out.stdout
    header = next(line for line in out.stdout.splitlines() if "reclaim" in line and "downsize" in line
                  and "insuffici" in line)
    assert header.split()[:3] == ["reclaim", "schedule", "downsize"]
    saved = json.loads((tmp_path / "score.json").read_text())
    assert saved["accuracy"] == 0.6 and saved["per_expected"]["downsize"] == {"vms": 1, "correct": 0}
    assert saved["insufficient_data"] == [{"vm": "10.0.0.5", "profile": "stopped", "expected": "stopped"}]
    assert "Savings claimed: 375.75 per month; 65.75 on correct" in out.stdout  # no currency column


def test_score_names_the_reports_currency(tmp_path):
    """A CSV written before it had a minor_unit column is in its currency's ISO unit when the
    report.json beside it cannot tell: not there, or damaged (nested past the JSON parser's
    recursion, which ended the score in a RecursionError's traceback)."""
    write(tmp_path)
    lines = REPORT.splitlines()
    (tmp_path / "out" / "report.csv").write_text(
        "\n".join([lines[0] + ",currency"] + [line + ",EUR" for line in lines[1:]]) + "\n")
    for beside in (None, "[" * 100_000):
        if beside is not None:
            (tmp_path / "out" / "report.json").write_text(beside)
        out = vmstats("score", "--truth", str(tmp_path / "truth.csv"), "--report", str(tmp_path / "out"),
                      "--json", str(tmp_path / "score.json"))
        assert out.returncode == 0, out.stderr
        assert "Savings claimed: EUR 375.75 per month; EUR 65.75 on correct verdicts, EUR 300.00 on " \
            "wrong" in out.stdout
        assert json.loads((tmp_path / "score.json").read_text())["currency"] == "EUR"


def test_score_bad_inputs_are_one_readable_line(tmp_path):
    write(tmp_path)
    (tmp_path / "bad.csv").write_text("vm,category\n10.0.0.1,reclaim\n")
    (tmp_path / "badtruth.csv").write_text(TRUTH.replace("reclaim\n10.0.0.2", "gone\n10.0.0.2"))
    cases = [
        ("--truth", str(tmp_path / "truth.csv"), "--report", str(tmp_path / "bad.csv"), "monthly_saving"),
        ("--truth", str(tmp_path / "nope.csv"), "--report", str(tmp_path / "out"), "nope.csv: does not"),
        ("--truth", str(tmp_path / "badtruth.csv"), "--report", str(tmp_path / "out"), "'gone'"),
    ]
    for *args, needle in cases:
        out = vmstats("score", *args)
        assert out.returncode == 2 and "Traceback" not in out.stderr  # the files named
        assert len(out.stderr.strip().splitlines()) == 1 and needle in out.stderr, out.stderr


def test_a_truth_of_one_vm_is_counted_in_the_singular(tmp_path):
    """A one-VM demo (bin/demo --vms 1) printed "0 of 1 VMs right"."""
    (tmp_path / "truth.csv").write_text(TRUTH.splitlines()[0] + "\n" + TRUTH.splitlines()[1] + "\n")
    (tmp_path / "report.csv").write_text(REPORT.splitlines()[0] + "\n" + REPORT.splitlines()[1] + "\n")
    out = vmstats("score", "--truth", str(tmp_path / "truth.csv"), "--report", str(tmp_path / "report.csv"))
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    assert first == "Score against the simulator's truth: 1 of 1 VM right (100.0 %)", out.stdout
