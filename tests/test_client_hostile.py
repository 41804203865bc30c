"""The agent on odd hosts and with odd settings, against the real aggregator on loopback.

Each test runs the agent as its own process (on the oldest Python here, as VM images do)
and asserts on what the server wrote and what the agent said.
"""

import os
import shutil
import subprocess

import pytest
from serverproc import ServerProcess
from test_client_push import ENV, ROOT, agent_command, oldest_python, wait_rows

FIXTURE = ROOT / "tests" / "data" / "proc" / "c"
PYTHON = oldest_python()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("server"), "--flush-interval", "0.5") as running:
        yield running


def agent(*args, timeout=60):
    command = agent_command(*args, python=PYTHON) if PYTHON else agent_command(*args)
    return subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=timeout)


def proc_without(tmp_path, *missing):
    """A copy of a fixture /proc without some of its files."""
    proc = tmp_path / "proc"
    shutil.copytree(str(FIXTURE), str(proc))
    for name in missing:
        os.unlink(str(proc / name))
    return str(proc)


def test_a_proc_without_diskstats_or_net_dev_still_sends_cpu_and_memory(server, tmp_path):
    """An OpenVZ container has no /proc/diskstats: the agent stopped at start (exit 1, restarted
    for ever by its unit) and the VM sent nothing.  Now those fields go unsent, said once."""
    proc = proc_without(tmp_path, "diskstats", os.path.join("net", "dev"))
    result = agent("--server", "127.0.0.1:%d" % server.udp_port, "--count", "2",
                   "--vm-id", "openvz-vm", "--proc-root", proc)
    assert result.returncode == 0, result.stderr
    rows = wait_rows(server.data_dir, "openvz-vm", 2)
    assert [(r["cpu"], r["mem"], r["disk_r"], r["disk_w"], r["net_rx"], r["net_tx"]) for r in rows] \
        == [("0", "25", "", "", "", "")] * 2
    assert result.stderr.count("diskstats: No such file or directory; records carry no "
                               "disk_r/disk_w until it can be read") == 1
    assert result.stderr.count("records carry no net_rx/net_tx") == 1


def test_without_proc_stat_the_agent_stops_at_start_in_one_line(tmp_path):
    result = agent("--server", "127.0.0.1:9", "--count", "1", "--proc-root",
                   proc_without(tmp_path, "stat"))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "vmstats-agent ERROR: cannot read %s/stat: No such file or directory" % (tmp_path / "proc")]
