"""Two aggregators behind Debian's real nginx (packaging/nginx-stream.conf), agents pushing through it.

One aggregator is stopped mid-run: the agents' TCP spools resend what it had
not acknowledged through the balancer to the other, and the report over both
data dirs counts every acknowledged record exactly once.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from nginxproc import LOOPBACK, Nginx
from serverproc import ServerProcess
from test_client_push import ENV, STATE, agent_command, raw_rows

ROOT = Path(__file__).resolve().parent.parent
AGENTS = 4
COUNT = 12
FAST = ["--interval", "0.5", "--sub-interval", "0.25", "--backoff-max", "0.5", "--timeout", "5"]


def free_port() -> int:
    """A loopback port free for both TCP and UDP (the balancer listens on both)."""
    while True:
        with socket.socket() as tcp:
            tcp.bind((LOOPBACK, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port


def test_agents_through_nginx_survive_an_aggregator_stop_and_are_reported_once(tmp_path):
    first = ServerProcess(tmp_path / "a", "--flush-interval", "0.3").start()
    second = ServerProcess(tmp_path / "b", "--flush-interval", "0.3").start()
    dirs = [first.data_dir, second.data_dir]
    port = free_port()
    upstreams = {
        "vmstats_tcp": [first.tcp_port, second.tcp_port],
        "vmstats_udp": [first.udp_port, second.udp_port],
    }
    agents = []
    try:
        with Nginx(tmp_path / "nginx", port, upstreams):
            vms = ["lb-vm-%d" % i for i in range(AGENTS)]
            for vm in vms:
                command = agent_command(
                    "--server",
                    "%s:%d" % (LOOPBACK, port),
                    "--transport",
                    "tcp",
                    "--count",
                    str(COUNT),
                    "--vm-id",
                    vm,
                    "--spool-dir",
                    str(tmp_path / "spool" / vm),
                    *FAST,
                )
                agents.append(subprocess.Popen(command, env=ENV, stderr=subprocess.PIPE, text=True))
            # UDP goes through the same listen port to one aggregator.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.sendto(b"vmstats,vm=lb-udp cpu=1.5,mem=20 1767225600\n", (LOOPBACK, port))

            # Both aggregators take agents (least_conn) and log a few records of theirs before
            # one of them goes away mid-run.
            deadline = time.monotonic() + 15
            while not all(any(len(raw_rows(d, vm)) >= 3 for vm in vms) for d in dirs):
                assert time.monotonic() < deadline, "the balancer did not spread the agents"
                time.sleep(0.1)
            assert first.stop() == 0, first.output

            for agent in agents:
                _out, err = agent.communicate(timeout=60)
                assert agent.returncode == 0, err
            assert second.stop() == 0, second.output
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
        first.kill()
        second.kill()

    moved = 0
    for vm in vms:
        # Every record acknowledged: nothing left in the agent's spool.
        assert sorted(os.listdir(str(tmp_path / "spool" / vm))) == STATE
        in_a, in_b = (raw_rows(d, vm) for d in dirs)
        moved += bool(in_a) and bool(in_b)
        # Each record reached an aggregator; a batch written but not acknowledged before the
        # stop was resent to the other one, so a record may be in both dirs, never missing.
        assert sorted({int(r["seq"]) for r in in_a + in_b}) == list(range(COUNT))
    assert moved  # the agents of the stopped aggregator went on through the other
    assert sum(bool(rows) for d in dirs for rows in [raw_rows(d, "lb-udp")]) == 1

    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "vmstats", "report", *map(str, dirs), "-o", str(out), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    reported = {row["vm"]: row for row in json.loads((out / "report.json").read_text())["vms"]}
    assert sorted(reported) == sorted(vms + ["lb-udp"])
    for vm in vms:
        assert reported[vm]["records"] == COUNT, vm
