"""bin/demo's grading of a fleet too young to judge: apart, not wrong.

``bin/demo --vms 1 --days 1`` said "0 of 1 VM right": one simulated day is below the report's
minimum span, so the report calls the VM insufficient-data by design, and the score counted
that as a miss.  The same steps as the demo's (serve, simulate, report, score), then the
demo's own summary lines.
"""

import json
import subprocess
import sys

from serverproc import ROOT, serve

from vmstats.report.money import Money
from vmstats.simulator.demo import score_lines


def vmstats(*args):
    result = subprocess.run([sys.executable, "-m", "vmstats", *map(str, args)], cwd=ROOT,
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_a_one_day_fleet_is_too_little_data_to_judge_not_a_failed_report(tmp_path):
    truth = tmp_path / "truth.csv"
    with serve(tmp_path, "--flush-interval", "1") as server:
        vmstats("simulate", "--vms", 1, "--days", 1, "--seed", 1, "--transport", "tcp", "--truth", truth,
                "--server", "127.0.0.1:%d" % server.tcp_port)
    assert server.returncode == 0, server.output
    out = tmp_path / "out"
    vmstats("report", tmp_path / "data", "-o", out)
    graded = vmstats("score", "--truth", truth, "--report", out, "--json", tmp_path / "score.json")
    vm = truth.read_text().splitlines()[1].split(",")
    assert graded.stdout.splitlines()[0] == ("Score against the simulator's truth: 0 of 0 judged VMs right; "
                                             "1 VM with too little data to judge (insufficient-data)")
    score = json.loads((tmp_path / "score.json").read_text())
    assert (score["total"], score["correct"], score["wrong"], score["accuracy"]) == (0, 0, [], None)
    assert score["insufficient_data"] == [{"vm": vm[0], "profile": vm[3], "expected": vm[4]}]
    min_days = json.loads((out / "report.json").read_text())["meta"]["policy"]["settings"]["min_days"]
    assert score_lines(score, Money("USD"), min_days, 1.0) == [
        "1 VM had too little data for the report to judge, as it should: a verdict needs 6 days of a "
        "VM's records, this run simulated 1 (run the demo with more --days to grade them).",
        "Against the simulator's truth the report is right about 0 of 0 judged VMs; USD 0.00 of the "
        "monthly saving rests on correct verdicts."]


def test_a_fleet_judged_whole_reads_as_before():
    """The default demo (two weeks, every VM judged) says nothing of unjudged VMs."""
    score = {"insufficient_data": [], "total": 200, "correct": 200, "accuracy": 1.0, "saving_correct": 12.5}
    assert score_lines(score, Money("EUR"), 6, 14) == [
        "Against the simulator's truth the report is right about 200 of 200 VMs (100.0 %); EUR 12.50 of "
        "the monthly saving rests on correct verdicts."]
