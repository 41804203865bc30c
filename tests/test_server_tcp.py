"""TCP: plain line protocol, the #!sync acknowledgement contract, signatures and limits."""

import inspect
import socket
import subprocess
import sys

import pytest
from serverproc import serve
from test_server_udp import line, logged, now

from vmstats import protocol
from vmstats.client.transport import TCP_BATCH_RECORDS
from vmstats.protocol import Record
from vmstats.server.config import MIN_PER_VM
from vmstats.simulator.sender import TcpSender


def read_reply(sock) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def records(vm, count, start):
    return [Record(vm=vm, ts=start + 60 * i, cpu=float(i % 100), mem=50.5, seq=i) for i in range(count)]


def test_plain_lines_without_sync_land_and_get_no_reply(tmp_path):
    sent = records("10.3.0.1", 300, now() - 86400)
    with serve(tmp_path, "--flush-interval", "0.3") as server:
        with server.tcp() as sock:
            payload = b"\n".join(line(r) for r in sent) + b"\n"
            for i in range(0, len(payload), 777):  # lines split across segments
                sock.sendall(payload[i:i + 777])
            server.wait_received(300)
            sock.settimeout(0.2)
            try:
                assert sock.recv(100) == b""
            except TimeoutError:
                pass
    frame = logged(tmp_path / "data", "10.3.0.1")
    assert list(frame["ts"]) == [r.ts for r in sent]
    assert list(frame["cpu"]) == [r.cpu for r in sent]


@pytest.mark.parametrize("parsers", ["0", "2"])
def test_sync_is_acknowledged_with_exact_counts(tmp_path, parsers):
    """The same counts whether the reactor parses or parser processes do."""
    sent = records("10.3.0.2", 50, now() - 3600)
    with serve(tmp_path, "--flush-interval", "0.3", "--parsers", parsers) as server:
        with server.tcp() as sock:
            batch = b"\n".join(line(r) for r in sent[:40]) + b"\nnot a record\n"
            sock.sendall(batch + b"#!sync batch-1\n")
            assert read_reply(sock) == b"#!ack batch-1 40 1\n"
            sock.sendall(b"\n".join(line(r) for r in sent[35:]) + b"\n#!sync b2\n")
            assert read_reply(sock) == b"#!ack b2 15 0\n"  # resends are accepted (replaced)
            sock.sendall(b"#!sync empty.3\n")
            assert read_reply(sock) == b"#!ack empty.3 0 0\n"
        assert server.metrics()["vmstats_acks_total"] == 3
    frame = logged(tmp_path / "data", "10.3.0.2")
    assert list(frame["ts"]) == [r.ts for r in sent]  # nothing duplicated


@pytest.mark.parametrize("parsers", ["0", "2"])
def test_resends_are_counted_so_received_adds_up_to_written(tmp_path, parsers):
    """A resend is accepted (and acknowledged) but written once: /metrics counts it apart, so
    records received = written + repeated, whether it met the row in the buffer or in the log."""
    sent = records("10.3.0.9", 20, now() - 3600)
    batch = b"\n".join(line(r) for r in sent) + b"\n"
    with serve(tmp_path, "--flush-interval", "0.3", "--parsers", parsers) as server:
        with server.tcp() as sock:
            sock.sendall(batch + b"#!sync first\n")
            assert read_reply(sock) == b"#!ack first 20 0\n"
            sock.sendall(batch[: batch.index(line(sent[5]))] + b"#!sync again\n")  # held still
            assert read_reply(sock) == b"#!ack again 5 0\n"
            server.wait_metrics(lambda m: m["vmstats_flushed_records_total"] == 20)
            sock.sendall(batch + b"#!sync after-the-flush\n")  # every row is in the log now
            assert read_reply(sock) == b"#!ack after-the-flush 20 0\n"
            metrics = server.wait_metrics(lambda m: m["vmstats_repeated_records_total"] == 25
                                          and m["vmstats_buffered_records"] == 0)
        assert metrics["vmstats_records_received_total"] == 45
        assert metrics["vmstats_flushed_records_total"] == 20
        assert server.status_json()["repeated_records"] == 25
    assert server.returncode == 0
    assert "  repeats           25 (a (VM, time) already held or logged: kept once)" in server.output
    frame = logged(tmp_path / "data", "10.3.0.9")
    assert list(frame["ts"]) == [r.ts for r in sent]  # written once


def test_nak_busy_when_records_were_dropped_and_ack_once_there_is_room(tmp_path):
    sent = records("10.3.0.3", MIN_PER_VM + 3, now() - 86400 * 3)
    with serve(tmp_path, "--flush-interval", "30", "--max-per-vm", str(MIN_PER_VM)) as server:
        with server.tcp() as sock:
            sock.sendall(b"\n".join(line(r) for r in sent) + b"\n#!sync t1\n")
            assert read_reply(sock) == b"#!nak t1 busy\n"
            sock.sendall(b"#!sync t2\n")
            assert read_reply(sock) == b"#!ack t2 0 0\n"  # the nak covered only its batch
        assert server.metrics()['vmstats_dropped_total{cause="per_vm_cap"}'] == 3
    assert len(logged(tmp_path / "data", "10.3.0.3")) == MIN_PER_VM


def test_every_sender_batch_fits_the_least_per_vm_cap(tmp_path):
    """A batch of one VM larger than --max-per-vm is answered busy every time: the server refuses
    a cap below the largest batch our senders make."""
    assert TCP_BATCH_RECORDS <= MIN_PER_VM
    assert inspect.signature(TcpSender).parameters["batch"].default <= MIN_PER_VM
    result = subprocess.run([sys.executable, "-m", "vmstats", "serve", "--max-per-vm",
                             str(MIN_PER_VM - 1), "--data-dir", str(tmp_path / "d")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "--max-per-vm" in result.stderr


def test_signed_batches_over_tcp_and_nak_auth(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# rotation: both keys valid\nold s3cret-old\nnew s3cret-new\n")
    sent = records("10.3.0.4", 6, now() - 3600)
    with serve(tmp_path, "--flush-interval", "0.3", "--auth-keys", str(keys)) as server:
        with server.tcp() as sock:
            first = b"\n".join(line(r) for r in sent[:3])
            second = b"\n".join(line(r) for r in sent[3:])
            sock.sendall(protocol.sign_payload("old", "s3cret-old", first)
                         + protocol.sign_payload("new", "s3cret-new", second) + b"#!sync s1\n")
            assert read_reply(sock) == b"#!ack s1 6 0\n"
            forged = protocol.sign_payload("new", "wrong-secret", first)
            sock.sendall(forged + b"\n#!sync s2\n")
            assert read_reply(sock) == b"#!nak s2 auth\n"
            sock.sendall(first + b"\n#!sync s3\n")  # unsigned
            assert read_reply(sock) == b"#!nak s3 auth\n"
        metrics = server.metrics()
    assert metrics['vmstats_rejected_total{reason="sig_bad"}'] == 1
    assert metrics['vmstats_rejected_total{reason="sig_missing"}'] == 3
    assert list(logged(tmp_path / "data", "10.3.0.4")["ts"]) == [r.ts for r in sent]


def test_line_limit_connection_limit_and_idle_timeout(tmp_path):
    t = now() - 60
    args = ("--max-line", "200", "--max-connections", "2", "--idle-timeout", "1s")
    with serve(tmp_path, "--flush-interval", "0.3", *args) as server:
        with server.tcp() as sock:
            long_line = b"vmstats,vm=10.3.0.5 cpu=1,mem=1" + b"0" * 300 + b" %d\n" % t
            sock.sendall(long_line + line(Record(vm="10.3.0.5", ts=t, cpu=1.0, mem=2.0))
                         + b"\n#!sync x\n")
            assert read_reply(sock) == b"#!ack x 1 1\n"
            sock.sendall(b"y" * 5000)  # an endless line is cut off, the connection survives
            sock.sendall(b"\n" + line(Record(vm="10.3.0.5", ts=t + 1, cpu=1.0, mem=2.0))
                         + b"\n#!sync y\n")
            assert read_reply(sock) == b"#!ack y 1 1\n"
        metrics = server.metrics()
        assert metrics['vmstats_rejected_total{reason="too_long"}'] == 2
        first, second = server.tcp(), server.tcp()
        server.wait_for(lambda s: s.metrics()['vmstats_connections_open{port="tcp"}'] == 2)
        third = server.tcp()  # at the cap: the longest silent one (first) makes room for it
        first.settimeout(5)
        with pytest.raises(ConnectionResetError):
            first.recv(10)
        server.wait_for(lambda s: s.metrics()[
            'vmstats_connections_evicted_total{port="tcp",cause="per_source"}'] == 1)
        third.sendall(line(Record(vm="10.3.0.5", ts=t + 2, cpu=1.0, mem=2.0)) + b"\n#!sync z\n")
        assert read_reply(third) == b"#!ack z 1 0\n"
        second.settimeout(60)  # far short of the default idle timeout (300 s)
        assert second.recv(10) == b""  # idle for 1 s: closed by the server
        for sock in (first, second, third):
            sock.close()
        server.wait_for(lambda s: s.metrics()[
            'vmstats_connections_idle_closed_total{port="tcp"}'] >= 1)


def test_a_sender_that_half_closes_after_its_sync_still_gets_the_reply(tmp_path):
    """``printf ... | nc -N``: the sender shuts its side after the last sync and reads on.

    The ack comes once the journal holds the batch; closing the read side must not
    drop it, and the server closes its side once every sync is answered.  A last
    line cut off by the close was not a complete record: it is counted, not filed.
    """
    sent = records("10.3.0.9", 20, now() - 3600)
    with serve(tmp_path, "--flush-interval", "0.3") as server:
        with server.tcp() as sock:
            sock.sendall(b"\n".join(line(r) for r in sent) + b"\n#!sync last\n" + line(sent[0])[:9])
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(10)
            assert read_reply(sock) == b"#!ack last 20 0\n"
            assert sock.recv(100) == b""  # and then the server closes
        with server.tcp() as sock:  # nothing to answer: closed at once
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(10)
            assert sock.recv(100) == b""
        assert server.metrics()['vmstats_rejected_total{reason="truncated"}'] == 1
    assert list(logged(tmp_path / "data", "10.3.0.9")["ts"]) == [r.ts for r in sent]


@pytest.mark.parametrize("parsers", ["0", "2"])
def test_a_key_given_twice_is_refused_and_a_crlf_blank_line_is_no_reject(tmp_path, parsers):
    """A line naming two VMs (``vm=a,vm=b``), two hosts or a field twice was filed, silently,
    under the last one, where a tag of the extra kind given twice was refused: the sender could
    not tell which record it made.  And the blank line of a CRLF sender (``\\r\\n``), which
    the protocol tolerates like any trailing ``\\r``, was counted and acknowledged as a
    ``syntax`` reject.  Sent after the VMs are known, so every parse path sees them."""
    t = now() - 60
    known = b"".join(line(Record(vm=vm, ts=t - 60, cpu=1.0, mem=1.0)) + b"\n"
                     for vm in ("d-1", "d-2", "d-3"))
    twice = [b"vmstats,vm=d-1,vm=d-2 cpu=5,mem=5 %d" % t,
             b"vmstats,vm=d-3,host=h1,host=h2 cpu=5,mem=5 %d" % t,
             b"vmstats,vm=d-3 cpu=5,mem=5,cpu=6 %d" % t]
    good = line(Record(vm="d-1", ts=t + 1, cpu=7.0, mem=7.0))
    with serve(tmp_path, "--flush-interval", "0.3", "--parsers", parsers) as server:
        assert server.send_synced(known) == ["#!ack", "all", "3", "0"]
        with server.tcp() as sock:
            sock.sendall(b"\r\n".join(twice) + b"\r\n\r\n" + good + b"\r\n\r\n#!sync a\r\n")
            assert read_reply(sock) == b"#!ack a 1 3\n"
        server.send_udp(b"\n".join(twice))
        server.send_udp(good + b"\r\n\r\n")
        metrics = server.wait_received(3 + 2 + 3 + 3)  # known, good twice, rejects
        assert {key: value for key, value in metrics.items()
                if key.startswith("vmstats_rejected_total") and value} == {
            'vmstats_rejected_total{reason="syntax"}': 6}
    assert server.returncode == 0
    assert list(logged(tmp_path / "data", "d-1")["cpu"]) == [1.0, 7.0]
    assert list(logged(tmp_path / "data", "d-2")["cpu"]) == [1.0]
    assert list(logged(tmp_path / "data", "d-3")["cpu"]) == [1.0]


def test_a_sync_without_a_usable_token_is_counted_and_the_next_one_answered(tmp_path):
    """``#!sync`` with a token of other characters was counted as ``syntax``; one with no
    token at all was passed over as another reader's control line, uncounted, and its sender
    waited for a reply that could never come.  Both are counted; the batch goes on to the
    next good sync."""
    t = now() - 60
    with serve(tmp_path, "--flush-interval", "0.3") as server:
        with server.tcp() as sock:
            sock.sendall(line(Record(vm="s-1", ts=t, cpu=1.0, mem=1.0)) + b"\n#!sync\n"
                         + b"#!sync a/b\n#!sync ok\n")
            assert read_reply(sock) == b"#!ack ok 1 0\n"
        metrics = server.metrics()
    assert metrics['vmstats_rejected_total{reason="syntax"}'] == 2
    assert list(logged(tmp_path / "data", "s-1")["cpu"]) == [1.0]
