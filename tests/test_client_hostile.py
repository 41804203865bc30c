"""The agent on odd hosts and with odd settings, against the real aggregator on loopback.

Each test runs the agent as its own process (on the oldest Python here, as VM images do)
and asserts on what the server wrote and what the agent said.
"""

import os
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from serverproc import ServerProcess
from test_client_push import ENV, ROOT, STATE, agent_command, oldest_python, raw_rows, wait_rows

from vmstats.client import agent as agent_module
from vmstats.client import config, transport
from vmstats.client import spool as spool_module

FIXTURE = ROOT / "tests" / "data" / "proc" / "c"
PYTHON = oldest_python()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("server"), "--flush-interval", "0.5") as running:
        yield running


def command(*args):
    return agent_command(*args, python=PYTHON) if PYTHON else agent_command(*args)


def agent(*args, timeout=60):
    return subprocess.run(command(*args), env=ENV, capture_output=True, text=True, timeout=timeout)


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


def test_quoted_values_and_comments_in_the_config_mean_what_they_say(server, tmp_path):
    """``host = "kvm07"`` (as agent.env is written) sent the host ``kvm07-``, and a quoted
    spool_dir made a folder named ``"`` in the working directory, without a word."""
    spool = tmp_path / "spool"
    conf = tmp_path / "agent.conf"
    conf.write_text('host = "kvm07"   # rack 3\r\nspool_dir = \'%s\'\r\ntransport = tcp # acked\r\n'
                    'tags = "project=billing, owner=ops"\r\n' % spool)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    result = subprocess.run(command("--config", str(conf), "--server", "127.0.0.1:%d" % server.tcp_port,
                                    "--count", "1", "--proc-root", str(FIXTURE)),
                            env=dict(ENV, VMSTATS_VM_ID='"quoted-vm"'), cwd=str(workdir),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "1 record made, 1 acknowledged, 0 left in the spool at %s\n" % spool in result.stderr
    rows = wait_rows(server.data_dir, "quoted-vm", 1)
    assert [(r["host"], r["tags"]) for r in rows] == [("kvm07", "owner=ops;project=billing")]
    assert os.listdir(str(workdir)) == [] and sorted(os.listdir(str(spool))) == STATE


def test_a_spool_folder_removed_under_a_running_agent_is_made_again(server, tmp_path):
    """Each later record was 'lost' (cannot spool it: No such file or directory) until a
    restart; the folder, and its lock, are made again at the next record."""
    spool = tmp_path / "state" / "spool"
    running = subprocess.Popen(command("--server", "127.0.0.1:%d" % server.tcp_port, "--transport", "tcp",
                                       "--count", "6", "--vm-id", "cleaned-vm", "--spool-dir", str(spool),
                                       "--proc-root", str(FIXTURE)),
                               env=ENV, stderr=subprocess.PIPE, text=True)
    try:
        assert len(wait_rows(server.data_dir, "cleaned-vm", 1)) >= 1
        while spool.parent.exists():             # as an image's clean-up would, records and lock
            shutil.rmtree(str(spool.parent), ignore_errors=True)
        _out, err = running.communicate(timeout=60)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    assert running.returncode == 0, err
    assert "spool directory %s was removed; made again" % spool in err
    assert "cannot spool" not in err
    # A record between its spooling and its sending when the folder went is lost, and said.
    lost = 1 if "made again (1 record it held lost)" in err else 0
    seqs = [int(r["seq"]) for r in wait_rows(server.data_dir, "cleaned-vm", 6 - lost)]
    assert len(seqs) == len(set(seqs)) == 6 - lost and seqs[-1] == 5, err
    assert sorted(os.listdir(str(spool))) == STATE


def dual_stack(monkeypatch, port: int, kind: int) -> None:
    """``stats.dual.test`` resolves to ::1 then 127.0.0.1 (a name with an AAAA and an A record,
    IPv6 first): a name with two addresses cannot be set up here without the machine's
    resolver, so this one answer is stood in for; the sockets and the server are real."""
    real = socket.getaddrinfo

    def answer(host, *args, **kwargs):
        if host != "stats.dual.test":
            return real(host, *args, **kwargs)
        return [(family, kind, 0, "", address)
                for family, address in ((socket.AF_INET6, ("::1", port, 0, 0)),
                                        (socket.AF_INET, ("127.0.0.1", port)))]

    monkeypatch.setattr(socket, "getaddrinfo", answer)


def test_tcp_goes_to_the_servers_next_address_when_its_first_refuses(server, tmp_path, monkeypatch):
    """A name with an IPv6 and an IPv4 address (IPv6 first where the VM routes it) of a server
    listening on IPv4 only: every connection was refused on IPv6 and nothing delivered."""
    port = server.tcp_port
    dual_stack(monkeypatch, port, socket.SOCK_STREAM)
    store = spool_module.Spool(str(tmp_path / "spool"), 10)
    sender = transport.TcpSender("stats.dual.test", port, store, timeout=5)
    try:
        sender.send([b"vmstats,vm=dual-vm cpu=1,mem=2,seq=0i %d" % int(time.time())])
        assert len(store) == 0 and sender.acked == 1
        assert sender.sock.getpeername()[:2] == ("127.0.0.1", port)
    finally:
        sender.close()
    assert len(wait_rows(server.data_dir, "dual-vm", 1)) == 1


#: A mount namespace of its own is how a test gives the agent files of the machine's (its
#: /etc/hosts, its /etc/machine-id) without touching the machine's.
NEEDS_UNSHARE = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                   reason="needs root and unshare to give the agent files of its own")


def namespaced(binds, argv):
    """``argv`` run in a mount namespace where each file ``binds`` maps to a machine path
    shows that file instead."""
    mounts = " && ".join("mount --bind %s %s" % (shlex.quote(str(source)), shlex.quote(target))
                         for source, target in binds.items())
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", mounts + ' && exec "$@"',
            "sh"] + list(argv)


class BlackHole(object):
    """A TCP address that takes no connection and refuses none, as a firewall that drops
    packets: a listener never accepting, its one-place queue filled, so the kernel drops
    every further SYN and a connect waits out its timeout."""

    def __init__(self, host, port):
        self.listener = socket.socket()
        self.listener.bind((host, port))
        port = self.listener.getsockname()[1]  # the kernel's, when asked for 0
        self.listener.listen(0)
        self.fillers = []
        for _ in range(2):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex((host, port))
            self.fillers.append(filler)

    def close(self):
        for sock in self.fillers + [self.listener]:
            sock.close()


@NEEDS_UNSHARE
def test_a_server_name_with_a_black_holed_address_delivers_without_waiting_for_it(tmp_path):
    """A name with two addresses, the first one's packets dropped (an AAAA whose network
    drops IPv6, a firewall), the second the live server: each connection waited the whole
    --timeout on the first (10 s by default, N times that for N such addresses) before the
    second was tried, the agent's sampling stalled meanwhile, and at a reconnect again.  The
    agent runs with an /etc/hosts of its own (a mount namespace); resolver, sockets and
    server are real."""
    hosts = tmp_path / "hosts"
    # The black hole first, on a port the kernel gives: the live server then takes that port on
    # 127.0.0.2.  The other way round, the server's port could be in use on 127.0.0.1 by another
    # test's process ("Address already in use").
    hole = BlackHole("127.0.0.1", 0)
    port = hole.listener.getsockname()[1]
    try:
        with ServerProcess(tmp_path / "server", "--flush-interval", "0.5", "--bind", "127.0.0.2",
                           "--tcp-port", str(port)) as live:
            assert live.tcp_port == port
            # 127.0.0.1 first: the resolver sorts the address matching the source address first.
            hosts.write_text("127.0.0.2 stats.multi.test\n127.0.0.1 stats.multi.test\n")
            order = subprocess.run(namespaced({hosts: "/etc/hosts"}, [
                sys.executable, "-c", "import socket, sys; from vmstats.client.transport import addresses; "
                "print(addresses(sys.argv[1], 1, socket.SOCK_STREAM)[0][1][0])", "stats.multi.test"]),
                env=ENV, capture_output=True, text=True, timeout=30)
            # Were the live address first, the agent would never meet the black hole.
            assert order.stdout.split() == ["127.0.0.1"], order.stdout + order.stderr
            started = time.monotonic()
            result = subprocess.run(namespaced(
                {hosts: "/etc/hosts"},
                command("--server", "stats.multi.test:%d" % port, "--transport", "tcp",
                        "--count", "2", "--vm-id", "multi-vm", "--timeout", "5",
                        "--spool-dir", str(tmp_path / "spool"), "--proc-root", str(FIXTURE))),
                env=ENV, capture_output=True, text=True, timeout=60)
            spent = time.monotonic() - started
            assert result.returncode == 0, result.stderr
            assert sorted(int(r["seq"]) for r in wait_rows(live.data_dir, "multi-vm", 2)) == [0, 1]
    finally:
        hole.close()
    assert "fell behind" not in result.stderr
    assert spent < 5, "%.1fs: the live address waited for the black hole's --timeout" % spent


def test_a_damaged_spool_file_too_big_for_a_record_is_discarded_unread(server, tmp_path):
    """A record file of hundreds of MiB (damage) was read whole: a MemoryError under the
    agent's memory cap at every start, so that nothing was delivered ever again."""
    spool = tmp_path / "spool"
    spool.mkdir()
    with open(str(spool / "0000000000000000.rec"), "wb") as damaged:
        damaged.truncate(1 << 30)                # sparse: no disk, 1 GiB to read
    (spool / "0000000000000001.rec").write_text("vmstats,vm=capped-vm cpu=1,mem=2,seq=7i %d"
                                                % (time.time() - 60))

    def cap_memory():                            # as the unit's MemoryMax=64M caps it, roughly
        resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))

    result = subprocess.run(command("--server", "127.0.0.1:%d" % server.tcp_port, "--transport", "tcp",
                                    "--count", "1", "--vm-id", "capped-vm", "--spool-dir", str(spool),
                                    "--proc-root", str(FIXTURE)),
                            env=ENV, capture_output=True, text=True, timeout=60, preexec_fn=cap_memory)
    assert result.returncode == 0, result.stderr
    assert "spool: discarded 1 unreadable record file (gone, empty, not a regular file, larger " \
        "than any record" in result.stderr
    assert sorted(int(r["seq"]) for r in wait_rows(server.data_dir, "capped-vm", 2)) == [0, 7]
    assert sorted(os.listdir(str(spool))) == STATE


@pytest.mark.parametrize("damage", [b"\x00\x17\xfe\n#!sync junk-1\nvmstats,vm=torn-vm cpu",
                                    b"#!sig1 k1 1700000000 abc 50000 " + b"a" * 64 + b"\n"],
                         ids=["a sync marker among garbage", "a signature header"])
def test_a_damaged_spool_file_is_skipped_and_the_count_stays_right(server, tmp_path, damage):
    """A record file holding garbage around a control line: it went to the server as it was.
    A ``#!sync`` in it took the record before it out of the batch's acknowledgement (1 made,
    '3 acknowledged, 1 rejected' of 4 records delivered and one damaged file); a ``#!sig1``
    header swallowed the batch's own sync, so the batch was never acknowledged and the spool
    never delivered again.  The damaged lines are skipped and counted; the others arrive once."""
    vm = "torn-%d-vm" % len(damage)
    spool = tmp_path / "spool"
    spool.mkdir()
    now = int(time.time())
    for number, seq in ((0, 100), (2, 102)):
        (spool / ("%016d.rec" % number)).write_bytes(
            b"vmstats,vm=%s cpu=1,mem=2,seq=%di %d" % (vm.encode(), seq, now - 600 + seq))
    (spool / "0000000000000001.rec").write_bytes(damage)
    result = agent("--server", "127.0.0.1:%d" % server.tcp_port, "--transport", "tcp", "--count", "1",
                   "--vm-id", vm, "--spool-dir", str(spool), "--timeout", "2", "--backoff-max", "0.5",
                   "--proc-root", str(FIXTURE))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "vmstats-agent INFO: 1 record made, 1 acknowledged, and 2 records spooled before this "
        "run acknowledged now, 0 left in the spool at %s" % spool)
    skipped = damage.count(b"\n") + (not damage.endswith(b"\n"))
    assert ("spool: skipped %d line%s of 1 record file that" % (skipped, "s" if skipped > 1 else "")) \
        in result.stderr
    assert "rejected" not in result.stderr
    assert sorted(int(r["seq"]) for r in wait_rows(server.data_dir, vm, 3)) == [0, 100, 102]
    assert sorted(os.listdir(str(spool))) == STATE


def test_a_spool_an_image_brought_from_another_machine_is_set_aside_not_sent(server, tmp_path):
    """An image made from a VM whose agent had records not yet acknowledged: every clone sent
    them at its first start, as the original VM's.  The spool names the machine it was written
    on (systemd's machine id, made anew for each clone of a prepared image); a clone sets
    another machine's records aside, says so in one line, and sends only its own.  Each run
    reads a machine id file of the test's own (--machine-id-file): the host's is not needed."""
    spool = tmp_path / "spool"
    image, clone = tmp_path / "image-id", tmp_path / "clone-id"
    image.write_text("0123456789abcdef0123456789abcdef\n")
    clone.write_text("fedcba9876543210fedcba9876543210\n")
    with socket.socket() as away:                 # bound, not listening: the image's VM sent nothing
        away.bind(("127.0.0.1", 0))
        made = agent("--server", "127.0.0.1:%d" % away.getsockname()[1], "--transport", "tcp",
                     "--count", "1", "--vm-id", "image-vm", "--spool-dir", str(spool),
                     "--backoff-max", "0.5", "--proc-root", str(FIXTURE),
                     "--machine-id-file", str(image))
    assert made.returncode == agent_module.LEFT_IN_SPOOL, made.stderr
    result = agent("--server", "127.0.0.1:%d" % server.tcp_port, "--transport", "tcp", "--count", "1",
                   "--vm-id", "clone-vm", "--spool-dir", str(spool), "--proc-root", str(FIXTURE),
                   "--machine-id-file", str(clone))
    assert result.returncode == 0, result.stderr
    aside = spool / "from-0123456789abcdef0123456789abcdef"
    assert "1 record made, 1 acknowledged, 0 left in the spool" in result.stderr
    assert len(wait_rows(server.data_dir, "clone-vm", 1)) == 1
    assert raw_rows(server.data_dir, "image-vm") == []
    said = [line for line in result.stderr.splitlines() if "another machine" in line]
    assert said == ["vmstats-agent WARNING: spool %s was written on another machine (machine id "
                    "0123456789abcdef0123456789abcdef, this one's is fedcba9876543210fedcba9876543210: "
                    "an image made from a VM with records not yet sent?): its 1 record set aside "
                    "in %s, not sent" % (spool, aside)]
    assert [n for n in os.listdir(str(aside))] == ["0000000000000000.rec"]
    assert (spool / spool_module.MARK).read_text() == "fedcba9876543210fedcba9876543210\n"


def test_a_machine_without_an_id_delivers_its_spool_unchecked_and_says_so(server, tmp_path):
    """No machine id where it is read (a container, an image whose id was emptied and never
    made again): the spool is not marked nor checked, said once at start, and records go."""
    spool, missing = tmp_path / "spool", tmp_path / "no-machine-id"
    result = agent("--server", "127.0.0.1:%d" % server.tcp_port, "--transport", "tcp", "--count", "1",
                   "--vm-id", "no-id-vm", "--spool-dir", str(spool), "--proc-root", str(FIXTURE),
                   "--machine-id-file", str(missing))
    assert result.returncode == 0, result.stderr
    assert "vmstats-agent INFO: no machine id in %s: spool %s is not checked for records an image " \
        "brought from another machine" % (missing, spool) in result.stderr.splitlines()
    assert len(wait_rows(server.data_dir, "no-id-vm", 1)) == 1
    assert sorted(os.listdir(str(spool))) == ["last-stamp", "lock"]


def test_tcp_to_the_aggregators_http_port_says_what_answered(server, tmp_path):
    """The HTTP port given for the TCP one: its '400 Bad Request' was swallowed, and the log
    said only 'connection closed by the server', which points at a server in trouble."""
    result = agent("--server", "127.0.0.1:%d" % server.http_port, "--transport", "tcp", "--count", "1",
                   "--vm-id", "wrong-port", "--spool-dir", str(tmp_path / "spool"), "--timeout", "5",
                   "--backoff-max", "0.5", "--proc-root", str(FIXTURE))
    assert result.returncode == 3, result.stderr
    assert ("failed (connection closed by the server, after answering 'HTTP/1.1 400 Bad Request': "
            "is port %d the aggregator's TCP port?)" % server.http_port) in result.stderr


def test_a_stop_during_a_delivery_the_server_never_answers_waits_once_not_twice(tmp_path):
    """A server that takes connections and never answers (here: stopped with SIGSTOP, its
    kernel still accepting): a SIGTERM during the wait for its acknowledgement was followed by
    a second, forced attempt, so the stop took --timeout twice.  The records stay spooled."""
    spool = tmp_path / "spool"
    with ServerProcess(tmp_path / "server") as hung:
        hung.proc.send_signal(signal.SIGSTOP)
        try:
            running = subprocess.Popen(
                command("--server", "127.0.0.1:%d" % hung.tcp_port, "--transport", "tcp",
                        "--vm-id", "stopped-vm", "--spool-dir", str(spool), "--timeout", "4",
                        "--proc-root", str(FIXTURE)),
                env=ENV, stderr=subprocess.PIPE, text=True)
            try:
                deadline = time.monotonic() + 30     # its first record spooled: now it waits
                while not spooled(spool):
                    assert time.monotonic() < deadline and running.poll() is None
                    time.sleep(0.05)
                running.send_signal(signal.SIGTERM)
                _out, err = running.communicate(timeout=60)
            finally:
                if running.poll() is None:
                    running.kill()
                    running.wait()
        finally:
            hung.proc.send_signal(signal.SIGCONT)
    assert running.returncode == 0, err
    assert err.count("failed (no acknowledgement within 4.0s)") == 1, err
    assert "1 record left in the spool for the next start" in err
    assert spooled(spool) == 1


def spooled(folder):
    """How many records the spool at ``folder`` holds."""
    return len([n for n in os.listdir(str(folder)) if n.endswith(".rec")]) if folder.exists() else 0


def test_a_clock_stepped_back_by_whole_intervals_loses_no_record_as_a_resend(server, tmp_path):
    """NTP takes a clock that ran two minutes fast back by exactly 120 s: the next records got
    the very stamps of two records already sent, and the server kept one record per (VM,
    second), taking each for a resend; spread off them by a second, they fell among the
    records sent, out of order, two in one minute.  The records stamped ahead were inside the
    server's --max-future and taken, so the agent makes none until its clock passes the last
    stamp sent: every stamp follows the one before, seq and stamps rise together, and the two
    intervals not made are counted.  The agent's loop runs on a stood-in clock (minutes pass at
    once); the records, the sender, the spool and the server are real."""
    now, mono = int(time.time()) - 600, [0.0]

    class Sleeper(object):
        stopped = False

        def until(self, deadline):
            mono[0] = deadline
            return True

    def wall():
        return now + mono[0] - (120.0 if mono[0] > 250 else 0.0)   # back 120 s after 4 records

    settings = config.load(["--server", "127.0.0.1:%d" % server.tcp_port, "--proc-root", str(FIXTURE),
                            "--jitter", "0", "--interval", "60", "--count", "8",
                            "--vm-id", "stepped-vm"], environ={})
    store = spool_module.Spool(str(tmp_path / "spool"), 100)
    sender = transport.TcpSender("127.0.0.1", server.tcp_port, store, timeout=10)
    runner = agent_module.Agent(settings, sender, "stepped-vm", None, sleeper=Sleeper(),
                                clock=lambda: mono[0], wall=wall)
    try:
        assert runner.run() == 6
    finally:
        runner.sampler.close()
        sender.close()
    assert runner.withheld == 2
    assert sender.acked == 6 and len(store) == 0
    rows = sorted(wait_rows(server.data_dir, "stepped-vm", 6), key=lambda r: int(r["seq"]))
    assert [int(r["seq"]) for r in rows] == list(range(6))
    assert [int(r["ts"]) - now for r in rows] == [60, 120, 180, 240, 300, 360]


def test_udp_goes_to_the_servers_next_address_when_its_first_refuses(server, monkeypatch, caplog):
    """The same name over UDP: every datagram went to IPv6, where nothing listens, and was lost
    without a word.  The kernel's "port unreachable" (to a connected socket only) now moves the
    agent to the next address: the first datagram is lost, not the ones after it."""
    port = server.udp_port
    dual_stack(monkeypatch, port, socket.SOCK_DGRAM)
    sender = transport.UdpSender("stats.dual.test", port)
    now = int(time.time())
    try:
        with caplog.at_level("INFO", logger="vmstats.agent"):
            for seq in range(5):
                sender.send([b"vmstats,vm=udp-dual-vm cpu=1,mem=2,seq=%di %d" % (seq, now - 300 + 60 * seq)])
                time.sleep(0.1)  # a minute, as far as the refusal's way back is concerned
        assert sender.address[0] == "127.0.0.1"
    finally:
        sender.close()
    seqs = sorted(int(row["seq"]) for row in wait_rows(server.data_dir, "udp-dual-vm", 4))
    assert seqs == [1, 2, 3, 4]
    assert "sending to 127.0.0.1, the server's next address" in caplog.text
