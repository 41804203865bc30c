"""Debian's real collectd sends to a real ``vmstats serve``: logs and a report for its VM."""

import json
import subprocess
import sys

import pytest
from collectdproc import config, run_collectd
from serverproc import ROOT, serve
from test_server_udp import logged

from vmstats import logstore


@pytest.mark.parametrize("security", ["None", "Sign", "Encrypt"])
def test_collectd_network_plugin_gives_logs_and_a_report(tmp_path, security):
    args = ["--flush-interval", "0.5", "--collectd-port", "0"]
    if security != "None":
        (tmp_path / "auth").write_text("fleet: s3cret\n")
        args += ["--collectd-auth-file", str(tmp_path / "auth"), "--collectd-security",
                 security.lower()]
    vm = "collectd-vm-%s" % security.lower()
    with serve(tmp_path / "srv", *args) as server:
        conf = config(tmp_path, vm, server.status["collectd_port"], security, "fleet", "s3cret")
        output = run_collectd(tmp_path, conf, 6.0)
        metrics = server.wait_metrics(
            lambda m: m.get('vmstats_edge_lines_total{format="collectd",outcome="used"}', 0) > 20)
    assert server.returncode == 0, server.output
    assert not any(k.startswith('vmstats_edge_lines_total{format="collectd"') and
                   'outcome="used"' not in k and 'outcome="ignored"' not in k and v
                   for k, v in metrics.items()), (metrics, output)
    rows = logged(tmp_path / "srv" / "data", vm)
    assert len(rows) >= 1, output
    last = rows.iloc[-1]
    assert 0 <= last["cpu"] <= 100 and 0 < last["mem"] <= 100
    assert last["vcpus"] >= 1 and last["mem_mb"] > 0
    out = tmp_path / "report"
    result = subprocess.run([sys.executable, "-m", "vmstats", "report", str(tmp_path / "srv" / "data"),
                             "-o", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert vm in json.dumps(report)
    assert vm in (out / "report.csv").read_text()


def test_collectd_signed_with_a_wrong_password_is_counted_and_not_stored(tmp_path):
    (tmp_path / "auth").write_text("fleet: s3cret\n")
    with serve(tmp_path / "srv", "--flush-interval", "0.5", "--collectd-port", "0",
               "--collectd-auth-file", str(tmp_path / "auth"), "--collectd-security",
               "sign") as server:
        conf = config(tmp_path, "intruder", server.status["collectd_port"], "Sign", "fleet", "guess")
        run_collectd(tmp_path, conf, 3.0)
        metrics = server.wait_metrics(
            lambda m: m.get('vmstats_edge_lines_total{format="collectd",outcome="signature"}', 0) > 0)
        assert metrics.get('vmstats_edge_lines_total{format="collectd",outcome="used"}', 0) == 0
    assert list(logstore.iter_vms(str(tmp_path / "srv" / "data"))) == []
