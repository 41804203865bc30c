"""The agent's spool, TCP sender and settings, without a server where none is needed."""

import errno
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from vmstats import protocol
from vmstats.client import config, spool, transport

ROOT = Path(__file__).resolve().parent.parent


def lines(count, start=0):
    return [("vmstats,vm=10.0.0.1 cpu=1,mem=2,seq=%di %d" % (i, 1732262400 + i)).encode()
            for i in range(start, start + count)]


def test_spool_keeps_order_and_survives_a_restart(tmp_path):
    store = spool.Spool(str(tmp_path / "s"), 100)
    for line in lines(5):
        store.add(line)
    assert [line for _n, line in store.oldest(3, 10000)] == lines(3)
    store.close()
    again = spool.Spool(str(tmp_path / "s"), 100)
    assert len(again) == 5
    batch = again.oldest(10, 10000)
    assert [line for _n, line in batch] == lines(5)
    again.remove([name for name, _l in batch[:2]])
    again.add(lines(1, start=5)[0])
    assert [line for _n, line in again.oldest(10, 10000)] == lines(4, start=2)
    again.close()


def test_full_spool_drops_the_oldest_and_counts_them(tmp_path, caplog):
    store = spool.Spool(str(tmp_path), 3)
    for line in lines(5):
        store.add(line)
    assert store.dropped == 2
    assert [line for _n, line in store.oldest(10, 10000)] == lines(3, start=2)
    assert "dropped the 1 oldest, 2 dropped so far" in caplog.text
    assert sorted(os.listdir(str(tmp_path))) == sorted(["lock"] + [n for n, _l in store.oldest(10, 10000)])
    store.close()


def test_smaller_limit_at_restart_trims_the_backlog(tmp_path):
    store = spool.Spool(str(tmp_path), 10)
    for line in lines(6):
        store.add(line)
    store.close()
    smaller = spool.Spool(str(tmp_path), 4)
    assert smaller.dropped == 2
    assert [line for _n, line in smaller.oldest(10, 10000)] == lines(4, start=2)
    smaller.close()


def test_batches_respect_the_byte_limit_but_always_carry_one(tmp_path):
    store = spool.Spool(str(tmp_path), 10)
    for line in lines(4):
        store.add(line)
    one = len(lines(1)[0])
    assert len(store.oldest(10, 2 * (one + 1))) == 2
    assert len(store.oldest(10, 1)) == 1
    store.close()


def test_torn_record_files_are_discarded_not_sent(tmp_path):
    store = spool.Spool(str(tmp_path), 10)
    for line in lines(3):
        store.add(line)
    names = [n for n, _l in store.oldest(10, 10000)]
    open(str(tmp_path / names[1]), "wb").close()  # a crash between create and write
    (tmp_path / "0000000000000099.rec.tmp").write_bytes(b"half")
    assert [line for _n, line in store.oldest(10, 10000)] == [lines(3)[0], lines(3)[2]]
    assert len(store) == 2
    store.close()
    again = spool.Spool(str(tmp_path), 10)
    assert not (tmp_path / "0000000000000099.rec.tmp").exists()
    again.close()


def test_one_spool_one_agent(tmp_path):
    first = spool.Spool(str(tmp_path), 10)
    with pytest.raises(spool.SpoolError, match="in use by another agent"):
        spool.Spool(str(tmp_path), 10)
    first.close()
    spool.Spool(str(tmp_path), 10).close()


def test_unusable_spool_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(spool.SpoolError, match="not writable"):
        spool.Spool(str(blocker / "spool"), 10)


class FakeServer(object):
    """A loopback TCP peer that answers each sync with a scripted reply."""

    def __init__(self, replies):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.replies = list(replies)
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.listener.accept()
        conn.settimeout(5)
        buf = b""
        with conn:
            while self.replies:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                self.received += data
                while protocol.SYNC_PREFIX in buf and buf.endswith(b"\n"):
                    start = buf.index(protocol.SYNC_PREFIX)
                    end = buf.index(b"\n", start)
                    token = buf[start + len(protocol.SYNC_PREFIX):end]
                    buf = buf[end + 1:]
                    reply = self.replies.pop(0)
                    if reply is None:
                        return  # hang up without answering
                    conn.sendall(b"#!ack other 0 0\n" + reply.replace(b"TOKEN", token))

    def close(self):
        self.listener.close()
        self.thread.join(5)


def test_tcp_sender_removes_only_what_was_acknowledged(tmp_path):
    peer = FakeServer([b"#!nak TOKEN busy\n", b"#!ack TOKEN 2 1\n"])
    store = spool.Spool(str(tmp_path), 10)
    sender = transport.TcpSender("127.0.0.1", peer.port, store, timeout=5,
                                 backoff=transport.Backoff(initial=0.01, maximum=0.01))
    sender.send(lines(3))
    assert len(store) == 3                      # nak: kept
    assert sender.retry_at > 0
    assert sender.flush(force=True) is True     # the resend is acknowledged
    assert len(store) == 0
    assert (sender.acked, sender.rejected) == (2, 1)
    # Both attempts carried the same three lines, oldest first, each followed by a sync.
    assert peer.received.count(lines(1)[0]) == 2
    assert peer.received.index(lines(3)[0]) < peer.received.index(lines(3)[2])
    sender.close()
    peer.close()


def test_tcp_sender_keeps_the_batch_when_the_server_hangs_up(tmp_path):
    peer = FakeServer([None])
    store = spool.Spool(str(tmp_path), 10)
    sender = transport.TcpSender("127.0.0.1", peer.port, store, timeout=5)
    assert sender.send(lines(2)) is None and len(store) == 2
    assert sender.flush() is False              # inside the backoff delay: no attempt
    sender.close()
    peer.close()


def test_signed_tcp_batch_is_one_frame_then_the_sync(tmp_path):
    peer = FakeServer([b"#!ack TOKEN 2 0\n"])
    store = spool.Spool(str(tmp_path), 10)
    signer = transport.Signer("k1", "s3cret")
    sender = transport.TcpSender("127.0.0.1", peer.port, store, signer=signer, timeout=5)
    sender.send(lines(2))
    peer.close()
    # The connection opens asking for the reasons of rejections, a control line of its own.
    request = protocol.REASONS_REQUEST + b"\n"
    assert peer.received.startswith(request)
    parts = protocol.split_signed(peer.received[len(request):])
    assert parts and parts[4] == b"\n".join(lines(2)) + b"\n"
    assert parts[5].startswith(protocol.SYNC_PREFIX)
    verifier = protocol.SignatureVerifier({"k1": "s3cret"})
    assert verifier.verify(*parts[:5]) is None
    sender.close()


def test_backoff_doubles_with_jitter_up_to_the_cap():
    backoff = transport.Backoff(initial=1.0, maximum=8.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(6)]
    for delay, step in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert step / 2 <= delay <= step
    backoff.reset()
    assert backoff.next_delay() <= 1.0


@pytest.mark.parametrize("text, expected", [
    ("10.0.0.1:9000", ("10.0.0.1", 9000)),
    ("aggregator.example", ("aggregator.example", protocol.DEFAULT_PORT)),
    ("[::1]:9000", ("::1", 9000)),
    ("::1", ("::1", protocol.DEFAULT_PORT)),
    ("fe80::1%eth0", ("fe80::1%eth0", protocol.DEFAULT_PORT)),
    ("stats_1.internal", ("stats_1.internal", protocol.DEFAULT_PORT)),
])
def test_server_addresses(text, expected):
    assert transport.parse_server(text) == expected


@pytest.mark.parametrize("text", ["", "host:", "host:0", "host:70000", "host:abc", "[::1", ":80",
                                  "udp://10.0.0.1:8899", "stats:8899:1", "a b:8899", "[a/b]:1"])
def test_bad_server_addresses(text):
    with pytest.raises(transport.TransportError):
        transport.parse_server(text)


def test_local_address_is_the_route_to_the_server():
    assert transport.local_address("127.0.0.1", 9) == "127.0.0.1"


def test_settings_precedence_flag_env_file_default(tmp_path):
    conf = tmp_path / "agent.conf"
    conf.write_text("# comment\nserver = file:1\ninterval = 30\nspool-max = 7\ntransport=tcp\n")
    env = {"VMSTATS_CONFIG": str(conf), "VMSTATS_INTERVAL": "20", "VMSTATS_SERVER": "env:2"}
    settings = config.load(["--server", "flag:3"], environ=env)
    assert settings.server == "flag:3"            # flag beats environment
    assert settings.interval == 20.0              # environment beats file
    assert settings.spool_max == 7                # file beats default
    assert settings.transport == "tcp"
    assert settings.sub_interval == 5.0           # default
    assert settings.jitter == 20.0                # defaults to one interval


@pytest.mark.parametrize("argv, env, message", [
    (["--server", "h:1", "--interval", "-1"], {}, "--interval: '-1' must be > 0"),
    (["--server", "h:1"], {"VMSTATS_TRANSPORT": "sctp"}, "VMSTATS_TRANSPORT: 'sctp' is not one of"),
    (["--server", "h:1", "--count", "1.5"], {}, "not an integer"),
    ([], {}, "no server address"),
])
def test_bad_settings_name_their_source(argv, env, message):
    with pytest.raises(config.ConfigError, match=message.replace("(", r"\(")):
        config.load(argv, environ=env)


def test_bad_config_file_line_is_located(tmp_path):
    conf = tmp_path / "agent.conf"
    conf.write_text("server = h:1\nspeed = 3\n")
    with pytest.raises(config.ConfigError, match="agent.conf:2: expected"):
        config.load(["--config", str(conf)], environ={})


def test_a_record_the_spool_cannot_store_is_held_not_fatal(tmp_path, caplog, monkeypatch):
    """Held in memory (test_client_longrun has the agent deliver them), the oldest lost beyond
    HELD_MAX, and said once, not at every record."""
    monkeypatch.setattr(transport, "HELD_MAX", 3)
    store = spool.Spool(str(tmp_path / "spool"), 10)
    sender = transport.TcpSender("127.0.0.1", 9, store, timeout=1)
    shutil.rmtree(str(tmp_path / "spool"))    # as good as a full or failed disk (a folder
    (tmp_path / "spool").write_text("")        # removed alone is made again: test_client_hostile)
    sender.send(lines(2))
    sender.send(lines(2, start=2))
    assert list(sender.held) == lines(4)[1:] and sender.lost == 1 and len(store) == 0
    assert sender.waiting == 3 and not sender.flush(force=True)
    assert caplog.text.count("cannot spool a record") == 1
    sender.close()


def test_a_server_name_that_stops_resolving_is_retried_later(tmp_path, caplog):
    store = spool.Spool(str(tmp_path), 10)
    sender = transport.TcpSender("no-such-host.invalid", 8899, store, timeout=1)
    sender.send(lines(1))
    assert len(store) == 1 and sender.retry_at > 0
    assert "cannot resolve server" in caplog.text
    sender.close()


def test_udp_sender_follows_a_server_that_moved(monkeypatch):
    """DNS cannot be changed here, so resolve() answers from a table the test edits."""
    first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    second = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for sock in (first, second):
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
    answers = {"agg.example": first.getsockname()}
    real = transport.addresses

    def fake(host, port, kind):
        if host not in answers:
            raise transport.TransportError("cannot resolve server %s" % host)
        return real(answers[host][0], answers[host][1], kind)

    monkeypatch.setattr(transport, "addresses", fake)
    now = [0.0]
    sender = transport.UdpSender("agg.example", 1, clock=lambda: now[0])
    sender.send(lines(1))
    assert first.recv(2048) == lines(1)[0]
    answers["agg.example"] = second.getsockname()
    now[0] = transport.UdpSender.RESOLVE_EVERY - 1
    sender.send(lines(1, start=1))                    # not yet looked up again
    assert first.recv(2048) == lines(1, start=1)[0]
    now[0] = transport.UdpSender.RESOLVE_EVERY + 1
    sender.send(lines(1, start=2))
    assert second.recv(2048) == lines(1, start=2)[0]
    del answers["agg.example"]                        # lookups fail: keep the last address
    now[0] = 3 * transport.UdpSender.RESOLVE_EVERY
    sender.send(lines(1, start=3))
    assert second.recv(2048) == lines(1, start=3)[0]
    sender.close()
    first.close()
    second.close()


def test_a_record_the_disk_refuses_leaves_no_partial_file_behind(tmp_path):
    """A write the kernel refuses part way (here a file size limit, as a full disk would) loses
    that record and leaves nothing of it: before, each refused record left its partial ``.tmp``
    file until the next start, one more every interval while the disk stayed full."""
    script = "\n".join([
        "import os, resource, signal, sys",
        "from vmstats.client import spool",
        "store = spool.Spool(sys.argv[1], 10)",
        "store.add(b'x' * 8)",
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)",
        "resource.setrlimit(resource.RLIMIT_FSIZE, (16, resource.RLIM_INFINITY))",
        "for _ in range(3):",
        "    try:",
        "        store.add(b'y' * 64)",
        "    except OSError as exc:",
        "        print(exc.errno)",
        "print(len(store))"])
    folder = tmp_path / "spool"
    done = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(errno.EFBIG)] * 3 + ["1"]
    assert sorted(os.listdir(str(folder))) == ["0000000000000000.rec", "lock"]


def test_a_spooled_record_is_synced_before_its_name_and_its_name_before_add_returns(tmp_path,
                                                                                   monkeypatch):
    """A power cut cannot be staged here, so the order of the syncs is what is checked: the
    record's bytes reach the disk under the temporary name, then the folder holding the new
    name, all before ``add`` returns (after it the transport may send and forget)."""
    store = spool.Spool(str(tmp_path / "spool"), 10)
    synced = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        synced.append(os.readlink("/proc/self/fd/%d" % fd))
        real_fsync(fd)

    def rename(source, target):
        synced.append("rename " + os.path.basename(target))
        real_rename(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    store.add(lines(1)[0])
    folder = str(tmp_path / "spool")
    assert synced == [os.path.join(folder, "0000000000000000.rec.tmp"),
                      "rename 0000000000000000.rec", folder]
    assert store.oldest(10, 1000) == [("0000000000000000.rec", lines(1)[0])]


def test_the_machine_id_is_read_where_systemd_reads_it_and_is_none_where_none_is_there(tmp_path):
    """/etc/machine-id, else D-Bus's /var/lib/dbus/machine-id where it holds no id (missing,
    emptied for an image, systemd's first-boot ``uninitialized``, damaged), as systemd falls
    back; none in either: None, and the spool is not checked.  A damaged /etc/machine-id was
    taken as the id, and the D-Bus one never looked at.  Read in a root of the test's own."""
    etc, dbus = tmp_path / "etc" / "machine-id", tmp_path / "var" / "lib" / "dbus" / "machine-id"
    files = (str(etc), str(dbus))
    assert spool.machine_id(files) is None
    dbus.parent.mkdir(parents=True)
    dbus.write_text("00112233445566778899AABBCCDDEEFF\n")
    assert spool.machine_id(files) == "00112233445566778899aabbccddeeff"
    etc.parent.mkdir()
    for held in ("", "uninitialized\n", "not-a-machine-id\n", "0123456789abcdef\n"):
        etc.write_text(held)
        assert spool.machine_id(files) == "00112233445566778899aabbccddeeff", held
    etc.write_text("fedcba9876543210fedcba9876543210\n")
    assert spool.machine_id(files) == "fedcba9876543210fedcba9876543210"
    dbus.unlink()
    etc.write_text("")
    assert spool.machine_id(files) is None
