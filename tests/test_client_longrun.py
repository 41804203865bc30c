"""The agent over a long unattended life, against the real aggregator on loopback: an
aggregator that moves, an operator's SIGHUP, a VM given a new address, a full disk.

The agent runs as its own process (on the oldest Python here, as VM images do) where it can;
a name whose answer changes cannot be set up without the machine's resolver, so that test
drives the sender in-process with the lookup answered from a table it edits.
"""

import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from serverproc import ServerProcess
from test_client_push import ENV, ROOT, agent_command, assert_each_once, oldest_python, raw_rows, wait_rows

from vmstats.client import agent as agent_module
from vmstats.client import config, laststamp, transport
from vmstats.client import spool as spool_module

FUTURE = 'vmstats_rejected_total{reason="future_timestamp"}'


#: What a reboot gives: another boot id than the one the first run kept beside its stamp.
ANOTHER_BOOT = "00000000-0000-4000-8000-000000000000"


def kept_stamp(spool):
    """The stamp the agent kept in ``spool``, and the boot id beside it (None: none)."""
    words = (spool / laststamp.NAME).read_text().split()
    return int(words[0]), (words[1] if len(words) > 1 else None)


def rebooted(spool):
    """The kept stamp as a reboot leaves it: kept in another boot than this one."""
    stamp, boot = kept_stamp(spool)
    assert boot == laststamp.boot_id()
    (spool / laststamp.NAME).write_text("%d %s\n" % (stamp, ANOTHER_BOOT))
    return stamp


def stepped(env, offset, synced="0"):
    """``env`` with the agent's wall clock ``offset`` seconds off (tests/stepclock; none: the
    oldest Python runs it), and time sync saying it has set the clock or not (``synced``),
    whatever this machine's does."""
    told = dict(env, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests" / "stepclock")]),
                VMSTATS_TEST_SYNCED=synced)
    return dict(told, VMSTATS_TEST_STEP="1", VMSTATS_TEST_OFFSET=str(offset)) if offset else told


def record(vm, seq):
    return b"vmstats,vm=%s cpu=1,mem=2,seq=%di %d" % (vm.encode(), seq, int(time.time()) - 60 + seq)


@pytest.fixture()
def two_servers(tmp_path):
    with ServerProcess(tmp_path / "old", "--flush-interval", "0.5") as old, \
            ServerProcess(tmp_path / "new", "--flush-interval", "0.5") as new:
        yield old, new


def test_tcp_follows_a_moved_aggregator_while_the_old_one_still_answers(two_servers, tmp_path,
                                                                        monkeypatch):
    """The name moved to a new aggregator and the old one was left running (for its reports):
    the open connection lived as long as the old one answered, so every record went on to it
    and the new one never heard of the VM.  Now the name is looked up again every
    RESOLVE_EVERY seconds and a connection to an address it no longer has is closed."""
    old, new = two_servers
    answers = {"agg.example": old.tcp_port}
    real = transport.addresses
    monkeypatch.setattr(transport, "addresses",
                        lambda host, port, kind: real("127.0.0.1", answers[host], kind))
    now = [1000.0]
    store = spool_module.Spool(str(tmp_path / "spool"), 10)
    sender = transport.TcpSender("agg.example", 1, store, timeout=5, clock=lambda: now[0])
    try:
        sender.send([record("moving-vm", 0)])
        answers["agg.example"] = new.tcp_port
        now[0] += transport.RESOLVE_EVERY - 1
        sender.send([record("moving-vm", 1)])          # not looked up again yet: the old one
        now[0] += 2
        sender.send([record("moving-vm", 2)])
        sender.send([record("moving-vm", 3)])
        assert len(store) == 0 and sender.acked == 4
    finally:
        sender.close()
    assert [r["seq"] for r in wait_rows(old.data_dir, "moving-vm", 2)] == ["0", "1"]
    assert [r["seq"] for r in wait_rows(new.data_dir, "moving-vm", 2)] == ["2", "3"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("server"), "--flush-interval", "0.5") as running:
        yield running


@pytest.mark.parametrize("python", [sys.executable, oldest_python()], ids=["current", "oldest"])
def test_sighup_does_not_end_the_agent(server, tmp_path, python):
    """A habitual ``kill -HUP`` (a "reload") ended the agent by SIGHUP's default action, which
    systemd counts as a clean exit: Restart=on-failure left it stopped and the VM reported
    nothing more.  Now it looks the server up again, delivers, and goes on to its count."""
    if python is None:
        pytest.skip("no Python 3.6/3.7 here")
    vm = "hup-vm-%s" % os.path.basename(python)
    agent = subprocess.Popen(
        agent_command("--server", "127.0.0.1:%d" % server.tcp_port, "--transport", "tcp",
                      "--count", "3", "--vm-id", vm, "--spool-dir", str(tmp_path / "spool"),
                      python=python),
        env=ENV, stderr=subprocess.PIPE, text=True)
    try:
        assert len(wait_rows(server.data_dir, vm, 1)) >= 1
        agent.send_signal(signal.SIGHUP)
        _out, err = agent.communicate(timeout=30)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert agent.returncode == 0, err
    assert "SIGHUP: looking up server 127.0.0.1:%d again, delivering the spool now" \
        % server.tcp_port in err
    assert_each_once(wait_rows(server.data_dir, vm, 3), 3)


def test_a_default_vm_id_follows_the_vms_address_after_it_changed(server, monkeypatch):
    """The default id (the VM's address towards the server) was taken once at start: a VM given
    a new address went on sending as its old one, which the network may give another VM, and
    two VMs' records were stored as one's.  The address is taken again every RESOLVE_EVERY
    seconds and at a SIGHUP.  The kernel's choice of address cannot be changed here without
    changing the machine's, so it is answered from a table the test edits; the sender, the
    signal and the server are real."""
    route = {"address": "10.9.0.1"}
    monkeypatch.setattr(transport, "local_address", lambda host, port: route["address"])
    options = config.load(
        ["--server", "127.0.0.1:%d" % server.udp_port, "--interval", "0.5", "--sub-interval", "0.25",
         "--jitter", "0", "--count", "4"], environ={})
    vm, host = agent_module.vm_identity(options)
    sender = transport.UdpSender("127.0.0.1", server.udp_port)
    runner = agent_module.Agent(options, sender, vm, host)

    def move():
        while runner.seq < 1:                          # the first record made (as 10.9.0.1)
            time.sleep(0.01)
        route["address"] = "10.9.0.2"
        os.kill(os.getpid(), signal.SIGHUP)

    mover = threading.Thread(target=move)
    mover.start()
    try:
        assert runner.run() == 4
    finally:
        mover.join()
        runner.sleeper.close()
        runner.sampler.close()
        sender.close()
    deadline = time.monotonic() + 15
    while True:
        old, new = ([int(r["seq"]) for r in raw_rows(server.data_dir, vm)]
                    for vm in ("10.9.0.1", "10.9.0.2"))
        if len(old) + len(new) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert old and new and old + new == [0, 1, 2, 3], (old, new)


@pytest.mark.parametrize("transport_name", ["tcp", "udp"])
def test_a_clock_behind_at_the_next_start_stamps_after_what_was_sent(server, tmp_path, transport_name):
    """A guest rebooted with its clock an hour behind (a hardware clock kept in local time, no
    time sync): the agent's memory of the stamps it used did not outlive the restart, so its
    records went an hour back, between records already sent (and onto their very seconds,
    which the server drops as resends).  The last stamp is kept in the agent's state folder;
    records go on from it until the clock catches up.  The second run's clock is
    set back by tests/stepclock, and the boot id kept beside the stamp replaced as a reboot
    does; the agents, their folder and the server are real."""
    vm = "reboot-%s-vm" % transport_name
    port = server.tcp_port if transport_name == "tcp" else server.udp_port
    state = tmp_path / "state"                    # as the unit's StateDirectory= gives it
    args = ("--server", "127.0.0.1:%d" % port, "--transport", transport_name, "--vm-id", vm,
            "--interval", "0.5", "--sub-interval", "0.25")  # stamps: a second apart at least
    env = dict(ENV, STATE_DIRECTORY=str(state))
    first = subprocess.run(agent_command(*args, "--count", "1"), env=env, capture_output=True,
                           text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    kept = rebooted(state / "spool")
    second = subprocess.run(agent_command(*args, "--count", "2"), env=stepped(env, -3600),
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    stamps = sorted(int(r["ts"]) for r in wait_rows(server.data_dir, vm, 3))
    assert stamps == [kept, kept + 1, kept + 2], stamps   # a second apart at least
    assert "less than one interval after the last stamp sent before this start (%d)" % kept \
        in second.stderr
    # Were it the clock before that was ahead, these would be refused: said, with what follows.
    assert ("unheard over UDP: start time sync, and the clock is followed at the next start"
            if transport_name == "udp" else "the server's acknowledgement will say so, and the "
            "clock is followed then") in second.stderr


def test_a_clock_set_back_while_stopped_is_followed_once_the_server_refuses_stamps_ahead(server, tmp_path):
    """A guest whose clock ran an hour ahead, set right while the agent was stopped: its spool
    and its last stamp were an hour ahead, and the agent stamped on from that stamp (as for a
    clock behind at boot), so the server refused every record as from the future for the hour,
    and again after each restart.  After a reboot, with a clock that time sync has not set, the
    agent cannot tell this from a clock behind at boot; the refusal is heard: the records
    stamped ahead are dropped, counted and named, and the next records go by the clock.  The
    first run's clock is set ahead by tests/stepclock, and the boot id kept beside the stamp
    replaced as a reboot does; the agents, their folder and the server are real."""
    vm = "ahead-vm"
    state = tmp_path / "state"                    # as the unit's StateDirectory= gives it
    spool = state / "spool"
    args = ("--transport", "tcp", "--vm-id", vm, "--interval", "0.5", "--sub-interval", "0.25",
            "--backoff-max", "0.5", "--timeout", "2")
    env = dict(ENV, STATE_DIRECTORY=str(state))
    with socket.socket() as away:                 # bound, not listening: the records stay spooled
        away.bind(("127.0.0.1", 0))
        first = subprocess.run(agent_command("--server", "127.0.0.1:%d" % away.getsockname()[1],
                                             *args, "--count", "2"),
                               env=stepped(env, 3600), capture_output=True, text=True, timeout=60)
    assert first.returncode == agent_module.LEFT_IN_SPOOL, first.stderr
    assert rebooted(spool) > time.time() + 3000
    started = time.time()
    second = subprocess.run(agent_command("--server", "127.0.0.1:%d" % server.tcp_port, *args,
                                          "--count", "3", python=oldest_python() or sys.executable),
                            env=stepped(env, 0), capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    # The records after the first go by the clock, and land.
    stamps = [int(r["ts"]) for r in wait_rows(server.data_dir, vm, 2, timeout=5)]
    assert len(stamps) == 2 and all(started - 1 <= ts <= time.time() + 1 for ts in stamps), stamps
    # The two spooled records and the first stamped on from the kept stamp: refused, said so.
    assert "server rejected 3 of 3 records (not resent, not stamped again): 3 stamped up to " \
        in second.stderr
    assert "s ahead of this VM's clock, from the future to the server" in second.stderr
    assert "as from the future: the clock was ahead before this start and is right now; " \
        "records are stamped by it again" in second.stderr
    assert second.stderr.splitlines()[-1].endswith(
        "3 records made, 3 acknowledged, and 2 records spooled before this run acknowledged now, "
        "3 rejected by the server (3 future_timestamp; 3 stamped ahead of this VM's clock), 0 left "
        "in the spool at %s" % spool)
    assert kept_stamp(spool)[0] <= time.time() + 1
    assert not [n for n in os.listdir(str(spool)) if n.endswith(spool_module.SUFFIX)]


def full_disk():
    """In the agent's process before it starts: every write to a file is refused (EFBIG), as a
    full disk refuses it (ENOSPC cannot be staged without filling one); pipes still work."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))


def run_on_a_full_disk(server_address, vm, spool):
    return subprocess.run(
        agent_command("--server", server_address, "--transport", "tcp", "--count", "3",
                      "--vm-id", vm, "--spool-dir", spool, python=oldest_python() or sys.executable),
        env=ENV, capture_output=True, text=True, timeout=60, preexec_fn=full_disk)


def test_a_tcp_agent_on_a_full_disk_still_delivers_to_a_server_that_is_up(server, tmp_path):
    """Every record the disk refused to spool was lost, the server up or not: a VM whose disk
    filled up (the one an operator most wants to see) reported nothing, and ``--count`` passed
    with "0 left in the spool".  Now such records are held in memory until acknowledged."""
    result = run_on_a_full_disk("127.0.0.1:%d" % server.tcp_port, "full-disk-vm",
                                str(tmp_path / "spool"))
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("cannot spool a record (File too large): held in memory") == 1
    assert "3 records made, 3 acknowledged, 0 left in the spool" in result.stderr
    assert_each_once(wait_rows(server.data_dir, "full-disk-vm", 3), 3)
    assert os.listdir(str(tmp_path / "spool")) == ["lock"]        # nothing else could be written


def test_a_count_run_on_a_full_disk_with_the_server_away_fails(tmp_path):
    """The same with no server: the records held in memory are lost at the stop, and the smoke
    check says so and fails, where it said "0 left in the spool" and passed."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        away = "127.0.0.1:%d" % probe.getsockname()[1]   # bound, not listening: refused
        result = run_on_a_full_disk(away, "full-away-vm", str(tmp_path / "spool"))
    assert result.returncode == agent_module.LEFT_IN_SPOOL, result.stderr
    assert "3 records made, 0 acknowledged, 0 left in the spool at %s, 3 lost (the disk " \
        "refused to spool them)" % (tmp_path / "spool") in result.stderr



@pytest.mark.parametrize("transport_name", ["udp", "tcp"])
def test_a_clock_set_back_in_this_boot_while_stopped_is_followed_at_the_next_start(server, tmp_path,
                                                                                   transport_name):
    """A guest whose clock ran an hour ahead (every record refused as from the future), set
    right while the agent was stopped: the agent stamped on from its kept stamp, an hour ahead,
    so the server refused every record after the restart too; a UDP agent heard nothing and the
    VM went silent until an operator deleted ``last-stamp`` (a TCP agent lost one record, then
    heard the refusal).  The clock went back in the boot that kept the stamp, so it was set
    back, not read behind at boot: it is followed from the first record, said once, as a
    running agent follows such a step.  Time sync is said not to have set it: the boot id
    alone tells.  The first run's clock is set ahead by tests/stepclock; the agents, their
    folder and the server are real."""
    vm = "set-back-%s-vm" % transport_name
    state = tmp_path / "state"                    # as the unit's StateDirectory= gives it
    port = server.udp_port if transport_name == "udp" else server.tcp_port
    args = ("--server", "127.0.0.1:%d" % port, "--transport", transport_name, "--vm-id", vm,
            "--interval", "0.5", "--sub-interval", "0.25")
    env = dict(ENV, STATE_DIRECTORY=str(state))
    refused = server.metrics().get(FUTURE, 0.0)
    first = subprocess.run(agent_command(*args, "--count", "2"), env=stepped(env, 3600),
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    kept, boot = kept_stamp(state / "spool")
    assert kept > time.time() + 3000 and boot == laststamp.boot_id()
    server.wait_metrics(lambda m: m.get(FUTURE, 0.0) >= refused + 2)   # both from the future
    started = time.time()
    second = subprocess.run(agent_command(*args, "--count", "3", python=oldest_python() or sys.executable),
                            env=stepped(env, 0), capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    rows = wait_rows(server.data_dir, vm, 3, timeout=5)
    assert [int(r["seq"]) for r in rows] == [0, 1, 2], (rows, second.stderr)
    assert all(started - 1 <= int(r["ts"]) <= time.time() + 2 for r in rows), rows
    assert server.metrics().get(FUTURE, 0.0) == refused + 2
    said = second.stderr
    assert said.count("the last stamp kept in %s (%d) is " % (state / "spool" / laststamp.NAME, kept)) == 1
    assert "s ahead of the clock, which was set back in this boot while the agent was stopped: the " \
        "clock that gave it was ahead, and the server refuses records stamped on from it as from " \
        "the future (past its --max-future, 300s); records are stamped by the clock" in said
    assert "catches up" not in said and "rejected" not in said
    stamp, boot = kept_stamp(state / "spool")
    assert stamp == int(rows[-1]["ts"]) and boot == laststamp.boot_id()


def test_a_clock_set_by_time_sync_after_a_reboot_is_followed_over_a_stamp_kept_ahead(server, tmp_path):
    """The same over a reboot, whose clock time sync has set: a clock behind at boot comes with
    a reboot, so the boot id cannot tell; a clock that time sync has set is right, and a kept
    stamp past the server's --max-future ahead of it came from a clock that was ahead.  What
    time sync says is told the agent by tests/stepclock, and the boot id kept beside the stamp
    replaced as a reboot does."""
    vm = "synced-vm"
    spool = tmp_path / "state" / "spool"
    args = ("--server", "127.0.0.1:%d" % server.udp_port, "--transport", "udp", "--vm-id", vm,
            "--interval", "0.5", "--sub-interval", "0.25")
    env = dict(ENV, STATE_DIRECTORY=str(spool.parent))
    first = subprocess.run(agent_command(*args, "--count", "1"), env=stepped(env, 3600),
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    kept = rebooted(spool)
    started = time.time()
    second = subprocess.run(agent_command(*args, "--count", "2", python=oldest_python() or sys.executable),
                            env=stepped(env, 0, synced="1"), capture_output=True, text=True,
                            timeout=60)
    assert second.returncode == 0, second.stderr
    rows = wait_rows(server.data_dir, vm, 2, timeout=5)
    assert [int(r["seq"]) for r in rows] == [0, 1], (rows, second.stderr)
    assert all(started - 1 <= int(r["ts"]) <= time.time() + 2 for r in rows), rows
    assert "(%d) is " % kept in second.stderr
    assert "s ahead of the clock, which has been set by time sync: the clock that gave it was " \
        "ahead" in second.stderr
    assert kept_stamp(spool) == (int(rows[-1]["ts"]), laststamp.boot_id())


def test_a_clock_set_back_a_little_in_this_boot_makes_no_record_until_it_passes_the_kept_stamp(
        server, tmp_path):
    """A clock set back within the server's --max-future while the agent was stopped: the
    records stamped ahead before were taken, and stamped on from the kept stamp the records
    stayed ahead of the clock by as much for good, after every restart.  As a running agent
    meets such a step, none is made until the clock passes the kept stamp (no ``seq`` spent on
    those intervals, so the server counts no loss), then records go by the clock, none among
    those sent."""
    vm = "little-vm"
    spool = tmp_path / "state" / "spool"
    args = ("--server", "127.0.0.1:%d" % server.udp_port, "--transport", "udp", "--vm-id", vm,
            "--interval", "0.5", "--sub-interval", "0.25")
    env = dict(ENV, STATE_DIRECTORY=str(spool.parent))
    first = subprocess.run(agent_command(*args, "--count", "2"), env=stepped(env, 4),
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    kept = kept_stamp(spool)[0]
    before = wait_rows(server.data_dir, vm, 2, timeout=5)
    assert [int(r["ts"]) for r in before][-1] == kept
    second = subprocess.run(agent_command(*args, "--count", "14", python=oldest_python() or sys.executable),
                            env=stepped(env, 0), capture_output=True, text=True, timeout=60)
    assert second.returncode == 1, second.stderr                  # intervals not made: said
    said = second.stderr
    assert "behind the last stamp sent before this start (%d) in this boot: it was set back while " \
        "the agent was stopped, and the server took the records stamped ahead before (within its " \
        "--max-future), so none is made until the clock passes that stamp" % kept in said
    assert said.count("records are made again") == 1, said
    made = int(said.splitlines()[-1].split("WARNING: ")[1].split(" record")[0])
    assert 0 < made < 14, said
    rows = wait_rows(server.data_dir, vm, 2 + made, timeout=5)[2:]
    assert [int(r["seq"]) for r in rows] == list(range(made)), rows
    assert all(int(r["ts"]) > kept for r in rows), (kept, rows)
