"""The agent's clock against the real aggregator on loopback: a clock not set yet (a VM booted
without a hardware clock, before time sync), and one stepped back while the agent runs.

The agents are real processes whose wall clock tests/stepclock moves (SIGUSR2 steps it, as NTP
would; the monotonic clock is left alone); the server, its logs and its counters are real.
"""

import os
import signal
import socket
import subprocess
import time

import pytest
from serverproc import WAIT, ServerProcess
from test_client_push import ENV, ROOT, agent_command, raw_rows, wait_rows

from vmstats import protocol
from vmstats.client import agent as agent_module
from vmstats.client import laststamp

PAST = 'vmstats_rejected_total{reason="past_timestamp"}'
FUTURE = 'vmstats_rejected_total{reason="future_timestamp"}'


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("server"), "--flush-interval", "0.5") as running:
        yield running


def stepped(offset: float, step: float, **extra: str) -> dict:
    """The agent's environment with its wall clock ``offset`` seconds off, each SIGUSR2 moving
    it by ``step``."""
    return dict(ENV, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests" / "stepclock")]),
                VMSTATS_TEST_OFFSET=str(offset), VMSTATS_TEST_STEP=str(step), **extra)


def wait_said(log, text: str, times: int = 1) -> str:
    """The agent's log once it holds ``text`` ``times`` times (or the test fails)."""
    deadline = time.monotonic() + WAIT
    while True:
        said = log.read_text()
        if said.count(text) >= times:
            return said
        assert time.monotonic() < deadline, said
        time.sleep(0.05)


def rejected(server, name: str) -> float:
    return server.metrics().get(name, 0.0)


@pytest.mark.parametrize("transport_name", ["udp", "tcp"])
def test_a_clock_not_set_makes_no_record_until_it_is(server, tmp_path, transport_name):
    """A VM booted without a hardware clock counts from 1970 until NTP sets it: the agent sent
    (or spooled) a record stamped 1970 each interval, every one refused by the server as
    ``past_timestamp`` and the minutes lost, and spent a ``seq`` on each.  Now no record is
    made while the clock reads before 2000, it is said once, and records are made from the
    moment it is set, numbered from 0 as if the agent had started then."""
    vm = "unset-%s-vm" % transport_name
    port = server.udp_port if transport_name == "udp" else server.tcp_port
    spool = tmp_path / "spool"
    since_epoch = time.time() - 300                       # the clock reads 300 s after 1970
    refused_before = rejected(server, PAST)
    log = tmp_path / "agent.log"
    with open(str(log), "w") as err:
        agent = subprocess.Popen(
            agent_command("--server", "127.0.0.1:%d" % port, "--transport", transport_name,
                          "--vm-id", vm, "--interval", "0.5", "--sub-interval", "0.25",
                          "--spool-dir", str(spool)),
            env=stepped(-since_epoch, since_epoch), stderr=err)
    try:
        wait_said(log, "no record for this interval: the clock is not set", 3)
        if transport_name == "tcp":
            assert not [n for n in os.listdir(str(spool)) if n.endswith(".rec")]
        set_at = time.time()
        agent.send_signal(signal.SIGUSR2)                 # time sync sets the clock
        rows = wait_rows(server.data_dir, vm, 3)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(WAIT)
    said = log.read_text()
    assert agent.returncode == 0, said
    assert said.count("before 946684800 (2000-01-01): it is not set yet") == 1, said
    assert said.count("the clock is set now") == 1, said
    rows = raw_rows(server.data_dir, vm)
    assert [int(r["seq"]) for r in rows] == list(range(len(rows))), rows
    # Half-second intervals, stamps a second apart at least: each record may lead by a second.
    assert all(set_at - 1 <= int(r["ts"]) <= time.time() + len(rows) for r in rows), rows
    assert rejected(server, PAST) == refused_before
    if transport_name == "tcp":
        assert int((spool / laststamp.NAME).read_text().split()[0]) >= protocol.FIRST_STAMP


def test_records_spooled_before_the_clock_went_back_to_1970_are_delivered_and_kept(server, tmp_path):
    """A TCP agent's records spooled while the server was away, then a reboot without a hardware
    clock: the spooled records, stamped by a clock that was set, are delivered; the agent made
    records stamped 1970 beside them (refused) and kept the last of those stamps as its own,
    so the stamp it had kept was lost.  Now it makes none, keeps its stamp, and ``--count``
    says what it delivered of an earlier run's apart from what it made (nothing), failing (1):
    a smoke check that made no record did not pass."""
    vm = "spooled-jump-vm"
    state = tmp_path / "state"                            # as the unit's StateDirectory= gives it
    spool = state / "spool"
    args = ("--transport", "tcp", "--vm-id", vm, "--interval", "0.5", "--sub-interval", "0.25",
            "--backoff-max", "0.5", "--timeout", "2", "--count", "2")
    env = dict(ENV, STATE_DIRECTORY=str(state))
    with socket.socket() as away:                         # bound, not listening: refused
        away.bind(("127.0.0.1", 0))
        first = subprocess.run(agent_command("--server", "127.0.0.1:%d" % away.getsockname()[1],
                                             *args), env=env, capture_output=True, text=True,
                               timeout=60)
    assert first.returncode == agent_module.LEFT_IN_SPOOL, first.stderr
    kept = (spool / laststamp.NAME).read_text()
    since_epoch = time.time() - 300
    refused_before = rejected(server, PAST)
    second = subprocess.run(agent_command("--server", "127.0.0.1:%d" % server.tcp_port, *args),
                            env=stepped(-since_epoch, since_epoch, STATE_DIRECTORY=str(state)),
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1, second.stderr
    assert second.stderr.splitlines()[-1] == (
        "vmstats-agent WARNING: 0 records made, 2 records not made (the clock not set, or "
        "stepped back behind the stamps sent), 0 acknowledged, and 2 records spooled before "
        "this run acknowledged now, 0 left in the spool at %s" % spool)
    assert [int(r["seq"]) for r in wait_rows(server.data_dir, vm, 2)] == [0, 1]
    assert (spool / laststamp.NAME).read_text() == kept
    assert rejected(server, PAST) == refused_before
    assert "ahead of the clock: ignored" not in second.stderr   # an unset clock judges no stamp


def test_a_udp_clock_stepped_back_inside_the_servers_window_stamps_nothing_among_what_it_sent(
        server, tmp_path):
    """A UDP agent whose clock ran 8 s fast (the server took its records: inside --max-future)
    is set back by NTP: the next records were stamped by the new time, among those already sent
    (out of order, two in one interval's time; a step of whole intervals gave them the very
    stamps of records sent, which the server took for resends).  Now no record is made until
    the clock passes the last stamp sent: in the logs every stamp follows the one before, as
    ``seq`` does, and no number is skipped."""
    vm = "udp-stepped-vm"
    log = tmp_path / "agent.log"
    with open(str(log), "w") as err:
        agent = subprocess.Popen(
            agent_command("--server", "127.0.0.1:%d" % server.udp_port, "--vm-id", vm,
                          "--interval", "1", "--sub-interval", "0.5"),
            env=stepped(8, -8), stderr=err)
    try:
        wait_rows(server.data_dir, vm, 2)
        agent.send_signal(signal.SIGUSR2)
        wait_said(log, "no record for this interval: the clock is", 2)
        wait_said(log, "records are made again")
        count = len(raw_rows(server.data_dir, vm))
        wait_rows(server.data_dir, vm, count + 2)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(WAIT)
    said = log.read_text()
    assert agent.returncode == 0, said
    assert said.count("behind the last stamp sent: the records stamped ahead") == 1, said
    rows = sorted(raw_rows(server.data_dir, vm), key=lambda r: int(r["seq"]))
    assert [int(r["seq"]) for r in rows] == list(range(len(rows))), rows
    stamps = [int(r["ts"]) for r in rows]
    assert stamps == sorted(set(stamps)), stamps
    assert rejected(server, FUTURE) == 0
