"""A simulated fleet pushed through the real server, reported, and graded against its truth.

The simulator knows what each VM really does (its profile); `vmstats score`
compares the report's categories with that. This is the report's accuracy on
workloads it was not written against, end to end through the real pipeline.
"""

import json
import subprocess
import sys
from pathlib import Path

from serverproc import serve

ROOT = Path(__file__).resolve().parent.parent


def vmstats(*args, timeout=240):
    result = subprocess.run(
        [sys.executable, "-m", "vmstats", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_simulated_fleet_is_classified_like_its_truth(tmp_path):
    # Two weeks: a schedule needs that many days observed (POLICY.md, schedule_min_days).
    truth = tmp_path / "truth.csv"
    with serve(tmp_path, "--flush-interval", "1") as server:
        vmstats(
            "simulate",
            "--vms",
            40,
            "--days",
            14,
            "--seed",
            11,
            "--transport",
            "tcp",
            "--truth",
            truth,
            "--server",
            "127.0.0.1:%d" % server.tcp_port,
        )
    assert server.returncode == 0, server.output
    out = tmp_path / "out"
    vmstats("report", tmp_path / "data", "-o", out, "--days", 15)
    vmstats("score", "--truth", truth, "--report", out, "--json", tmp_path / "score.json")
    score = json.loads((tmp_path / "score.json").read_text())
    # Every VM judged: two weeks is past the report's minimum span, so insufficient-data here
    # would be the report's failure, not a graded pass (score counts such VMs apart).
    assert score["total"] == 40 and score["insufficient_data"] == [], score["insufficient_data"]
    # At most two of forty wrong (the policy and the simulator may disagree on a borderline VM),
    # and no money claimed on a wrong verdict beyond a tenth of the total.
    assert len(score["wrong"]) <= 2, score["wrong"]
    assert score["saving_wrong"] <= 0.1 * score["saving_total"], score
