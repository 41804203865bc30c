"""Keys bound to VMs, and replay protection that survives a restart (SIGTERM and SIGKILL)."""

import shutil
import signal
import time

import pytest
from serverproc import serve
from test_reliability_faults import report
from test_reliability_journal import raw_rows
from test_server_tcp import read_reply
from test_server_udp import line, now

from vmstats import protocol
from vmstats.protocol import Record
from vmstats.server.auth import SignatureMemory, Verifier, seen_in
from vmstats.server.signing import VmPatterns, bound_lines, load_keys

UNBOUND = 'vmstats_rejected_total{reason="sig_vm_not_bound"}'
REPLAY = 'vmstats_rejected_total{reason="sig_replay"}'


def records(*vms: str, ts: int) -> bytes:
    return b"\n".join(line(Record(vm=vm, ts=ts, cpu=1.0, mem=2.0)) for vm in vms) + b"\n"


def send_tcp(server, frame: bytes, token: str) -> bytes:
    with server.tcp() as sock:
        sock.sendall(frame + b"#!sync " + token.encode() + b"\n")
        return read_reply(sock)


# -- the binding itself --------------------------------------------------------------------------
def test_patterns_match_canonical_ids_globs_and_networks():
    vms = VmPatterns(["10.20.0.0/24", "web-*", "db-1", "fd00::/64", "::ffff:1.2.3.4"])
    assert vms.allows_raw(b"10.20.0.200") and not vms.allows_raw(b"10.20.1.1")
    assert vms.allows_raw(b"web-7") and not vms.allows_raw(b"WEB-7")
    assert vms.allows_raw(b"db-1") and not vms.allows_raw(b"db-10")
    assert vms.allows_raw(b"FD00::1")  # compared in canonical form
    assert vms.allows_raw(b"::ffff:102:304")  # the same VM as ::ffff:1.2.3.4
    assert not vms.allows_raw(b"../etc") and not vms.allows_raw(b"\xff")
    payload = records("10.20.0.1", "db-2", "web-a", ts=1_700_000_000) + b"# comment\nno tags\n"
    kept, removed = bound_lines(vms, payload)
    assert removed == 1 and b"db-2" not in kept and kept.count(b"vmstats,") == 2
    assert b"# comment" in kept and b"no tags" in kept  # left for the parser to judge
    # Several vm tags in one line: all must be allowed.
    assert bound_lines(vms, b"vmstats,vm=web-1,vm=db-9 cpu=1,mem=1 1700000000")[1] == 1


def test_key_file_errors_name_the_line(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# comment\nk1 s1\nk2 s2 10.0.0.0/33\n")
    with pytest.raises(ValueError, match=r"keys:3: bad VM pattern"):
        load_keys(str(keys))
    keys.write_bytes(b"k1 s\x001\n")  # as the agent's key file: no VM could share that secret
    with pytest.raises(ValueError, match=r"keys:1: the secret holds control characters"):
        load_keys(str(keys))
    keys.write_text("k1 s1 web-* 10.0.0.0/8\n")
    loaded = load_keys(str(keys))
    assert loaded[b"k1"].secret == b"s1" and loaded[b"k1"].vms.text == ["web-*", "10.0.0.0/8"]


def test_a_key_writes_only_the_vms_it_is_bound_to(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("fleet-a a-secret 10.20.0.0/24 web-*\nvm-db db-secret db-1\nany any-secret\n")
    t = now() - 60
    with serve(tmp_path, "--flush-interval", "0.3", "--auth-keys", str(keys)) as server:
        # TCP: the bound records are acked, the others rejected (final: not worth a resend).
        mixed = protocol.sign_payload("fleet-a", "a-secret",
                                      records("10.20.0.5", "web-3", "10.21.0.1", "db-1", ts=t))
        assert send_tcp(server, mixed, "m") == b"#!ack m 2 2\n"
        assert send_tcp(server, protocol.sign_payload("any", "any-secret", records("db-2", ts=t)),
                        "a") == b"#!ack a 1 0\n"
        # UDP: the db key cannot write a fleet-a VM.
        server.send_udp(protocol.sign_payload("vm-db", "db-secret", records("10.20.0.6", ts=t)),
                        protocol.sign_payload("vm-db", "db-secret", records("db-1", ts=t + 60)))
        metrics = server.wait_metrics(lambda m: m[UNBOUND] >= 3
                                      and m["vmstats_records_received_total"] >= 4)
        server.wait_metrics(lambda m: m["vmstats_buffered_records"] == 0
                            and m["vmstats_flushed_records_total"] >= 4)
    assert metrics[UNBOUND] == 3
    assert raw_rows(tmp_path / "data") == {("10.20.0.5", t): 1, ("web-3", t): 1, ("db-2", t): 1,
                                           ("db-1", t + 60): 1}


# -- replay after a restart ----------------------------------------------------------------------
@pytest.mark.parametrize("how", ["sigkill_before_flush", "sigkill_after_flush", "sigterm",
                                 "sigterm_no_journal"])
def test_a_signed_payload_replayed_after_a_restart_is_rejected(tmp_path, how):
    keys = tmp_path / "keys"
    keys.write_text("k1 s3cret\n")
    t = now() - 120
    signed_at = int(time.time()) - 5
    tcp_frame = protocol.sign_payload("k1", "s3cret", records("10.30.0.1", ts=t), now=signed_at)
    udp_frame = protocol.sign_payload("k1", "s3cret", records("10.30.0.2", ts=t), now=signed_at)
    # Before a kill the records must not be flushed yet (only the journal has them); otherwise
    # a short interval lets the flush retire the journal and the marks file carry the memory.
    interval = "1h" if how == "sigkill_before_flush" else "0.3"
    args = ("--flush-interval", interval, "--auth-keys", str(keys))
    if how == "sigterm_no_journal":  # the marks file alone, saved each second and at the stop
        args += ("--no-journal",)
    first = serve(tmp_path, *args).start()
    try:
        assert send_tcp(first, tcp_frame, "t1") == b"#!ack t1 1 0\n"
        first.send_udp(udp_frame)
        first.wait_metrics(lambda m: m["vmstats_records_received_total"] >= 2)
        if how == "sigkill_after_flush":
            first.wait_metrics(lambda m: m["vmstats_flushed_records_total"] >= 2
                               and m["vmstats_journal_segments"] == 0)
        first.stop(signal.SIGTERM if how.startswith("sigterm") else signal.SIGKILL)
    finally:
        first.kill()
    assert (tmp_path / "data" / "journal" / "signatures").exists() or how == "sigkill_before_flush"

    with serve(tmp_path, *args) as again:
        assert send_tcp(again, tcp_frame, "t2") == b"#!nak t2 auth\n"
        again.send_udp(udp_frame)
        metrics = again.wait_metrics(lambda m: m[REPLAY] >= 2)
        # A fresh frame of the same key is welcome.
        fresh = protocol.sign_payload("k1", "s3cret", records("10.30.0.1", ts=t + 60))
        assert send_tcp(again, fresh, "t3") == b"#!ack t3 1 0\n"
    assert again.returncode == 0, again.output  # the stop wrote everything held
    report("replay_after_" + how, replayed=2, rejected_sig_replay=int(metrics[REPLAY]))
    assert metrics[REPLAY] == 2
    assert raw_rows(tmp_path / "data") == {("10.30.0.1", t): 1, ("10.30.0.2", t): 1,
                                           ("10.30.0.1", t + 60): 1}


def test_a_journal_directory_removed_under_the_server_gets_its_marks_back(tmp_path):
    # Before: the marks file went with the directory and was written again only once a mark
    # moved: with none moving, the restart had no floor and took a replay of a frame from
    # before the removal.
    keys = tmp_path / "keys"
    keys.write_text("k1 s3cret\n")
    t = now() - 120
    frame = protocol.sign_payload("k1", "s3cret", records("10.32.0.1", ts=t),
                                  now=int(time.time()) - 5)
    args = ("--flush-interval", "0.3", "--auth-keys", str(keys))
    journal = tmp_path / "data" / "journal"
    with serve(tmp_path, *args) as first:
        assert send_tcp(first, frame, "f1") == b"#!ack f1 1 0\n"
        first.wait_metrics(lambda m: m["vmstats_flushed_records_total"] >= 1
                           and m["vmstats_journal_segments"] == 0)
        shutil.rmtree(str(journal))
    assert (journal / "signatures").exists()
    with serve(tmp_path, *args) as again:
        assert send_tcp(again, frame, "f2") == b"#!nak f2 auth\n"
        assert again.metrics()[REPLAY] == 1
    assert raw_rows(tmp_path / "data") == {("10.32.0.1", t): 1}


def test_seen_lines_are_read_back_from_a_segment_and_a_torn_one_is_ignored():
    data = (b"#!seen k1 100 n1\nvmstats,vm=a cpu=1,mem=1 100\n#!seen k2 101 n2\n"
            b"#!sync x\n#!seen k3 10")
    assert list(seen_in(data)) == [(b"k1", 100, b"k1 100 n1"), (b"k2", 101, b"k2 101 n2")]
    assert list(seen_in(b"vmstats,vm=a cpu=1,mem=1 100\n")) == []


def test_a_key_holder_cannot_forge_another_keys_replay_floor_through_the_journal(tmp_path):
    """``#!seen`` lines in the journal become keys' floors across restarts; one signed inside a
    payload by another key must not reach a segment, whatever the transport."""
    keys = tmp_path / "keys"
    keys.write_text("mallory m-secret\nvictim v-secret\n")
    t = now() - 180
    forged = b"#!seen victim 4102444800 forged"  # 2100-01-01: the victim locked out for good
    udp = protocol.sign_payload("mallory", "m-secret", records("10.31.0.1", ts=t) + forged)
    tcp = protocol.sign_payload("mallory", "m-secret",
                                forged + b"\n" + records("10.31.0.2", ts=t) + forged + b"\n")
    args = ("--flush-interval", "1h", "--auth-keys", str(keys))
    journal = tmp_path / "data" / "journal"
    first = serve(tmp_path, *args).start()
    try:
        first.send_udp(udp)
        assert send_tcp(first, tcp, "m1") == b"#!ack m1 1 0\n"
        first.wait_metrics(lambda m: m["vmstats_records_received_total"] >= 2)
        first.wait_for(lambda _server: b"10.31.0.1" in b"".join(
            path.read_bytes() for path in journal.glob("*.journal")))
        segments = list(journal.glob("*.journal"))
        # What senders sent is the operator's to keep: no one else on the host reads it.
        assert segments and {path.stat().st_mode & 0o777 for path in segments} == {0o600}
        assert all(b"forged" not in path.read_bytes() for path in segments)
        first.stop(signal.SIGKILL)
    finally:
        first.kill()
    # The restart replays the segments and saves the marks; the one after reads them as floors.
    for restart, token in ((1, b"v1"), (2, b"v2")):
        with serve(tmp_path, *args) as again:
            # Signed a second on per restart: the victim's own mark from the restart before is
            # its floor, and two restarts can fall inside one second.
            victim = protocol.sign_payload("victim", "v-secret",
                                           records("10.31.0.3", ts=t + 60 * restart),
                                           now=time.time() + restart)
            assert send_tcp(again, victim, token.decode()) == b"#!ack %s 1 0\n" % token
            assert again.metrics().get(REPLAY, 0) == 0
        assert "4102444800" not in (journal / "signatures").read_text()
    assert raw_rows(tmp_path / "data") == {("10.31.0.1", t): 1, ("10.31.0.2", t): 1,
                                           ("10.31.0.3", t + 60): 1, ("10.31.0.3", t + 120): 1}


def test_damaged_lines_of_the_marks_file_are_skipped_and_told_once(tmp_path, caplog):
    # A flipped digit or a stray block of a disk must cost only that key's floor, never the
    # start ('Exceeds the limit ... for integer string conversion' stopped it).
    (tmp_path / "signatures").write_bytes(
        b"good 1699999000\nhuge " + b"9" * 5000 + b"\n\0\xff\xfe junk\nahead 9999999999\n"
        b"also-good 1699999100\n\n")
    verifier = Verifier(300, lambda: 1_700_000_000.0)
    memory = SignatureMemory(str(tmp_path), None, verifier)
    with caplog.at_level("WARNING", logger="vmstats.server.auth"):
        assert memory.restore([]) == 0
    assert verifier.floors == {b"good": 1699999000, b"also-good": 1699999100}
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "3 damaged lines skipped (first: line 2" in warnings[0]
    # The same damage to a #!seen line of a leftover segment: skipped, never a floor.
    segment = tmp_path / "0000000001.journal"
    segment.write_bytes(b"#!seen good 1699999500 n1\n#!seen good " + b"9" * 5000 + b" n2\n"
                        b"#!seen good 9999999999 n3\n")
    memory = SignatureMemory(str(tmp_path), None, Verifier(300, lambda: 1_700_000_000.0))
    assert memory.restore([(1, str(segment))]) == 1
    assert memory.marks[b"good"] == 1699999500  # the next save's floor: not in 2286


def test_a_key_file_other_users_can_read_is_named_once_at_start(tmp_path):
    """A world-readable key file lets any local user sign records for its VMs: the server
    started without a word about it."""
    from test_server_lifecycle import run_cli

    keys = tmp_path / "keys"
    keys.write_text("k1 %s\n" % ("a" * 64))
    common = ("--bind", "127.0.0.1", "--udp-port", "0", "--tcp-port", "0", "--no-http",
              "--parsers", "0", "--workers", "1", "--data-dir", str(tmp_path / "d"),
              "--duration", "1s", "--auth-keys", str(keys))
    keys.chmod(0o644)
    result = run_cli(*common)
    assert result.returncode == 0, result.stderr
    warned = [text for text in result.stderr.splitlines() if "open to other users" in text]
    assert len(warned) == 1 and str(keys) in warned[0] and "mode 0644" in warned[0]
    assert "a" * 64 not in result.stderr
    keys.chmod(0o600)
    result = run_cli(*common)
    assert result.returncode == 0 and "open to other users" not in result.stderr


def test_a_key_file_saved_with_a_byte_order_mark_signs_as_the_agents_does(tmp_path):
    """An editor's byte order mark before the first key: the agent's copy of the same file
    signs (vmstats.protocol.load_keys skips the mark), so the server's must read it too.  It
    refused to start ("expected 'key_id secret'" on a line that is one)."""
    keys = tmp_path / "keys"
    keys.write_bytes(b"\xef\xbb\xbffleet a-secret\n")
    t = now() - 60
    with serve(tmp_path, "--flush-interval", "0.3", "--auth-keys", str(keys)) as server:
        [(key_id, secret)] = protocol.load_keys(str(keys)).items()  # the agent's reading
        signed = protocol.sign_payload(key_id, secret, records("web-1", ts=t))
        assert send_tcp(server, signed, "b") == b"#!ack b 1 0\n"  # 1 taken, 0 refused
        server.wait_metrics(lambda m: m["vmstats_flushed_records_total"] >= 1)
    assert raw_rows(tmp_path / "data") == {("web-1", t): 1}
