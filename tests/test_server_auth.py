"""--auth-keys: signed UDP frames accepted; every kind of bad frame rejected and counted by cause."""

import time

import pytest
from serverproc import serve
from test_server_udp import line, logged, now

from vmstats import logstore, protocol
from vmstats.protocol import Record


def test_udp_signatures_accept_valid_and_reject_each_cause(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("k1 first-secret\nk2 second-secret\n")
    t = now() - 120
    good = [line(Record(vm="10.10.0.%d" % i, ts=t, cpu=float(i), mem=1.0)) for i in range(1, 4)]
    evil = line(Record(vm="10.10.0.66", ts=t, cpu=66.0, mem=66.0))
    replayed = protocol.sign_payload("k2", "second-secret", good[2])
    tampered = protocol.sign_payload("k1", "first-secret", evil).replace(b"cpu=66", b"cpu=67")
    frames = {
        "accepted": [protocol.sign_payload("k1", "first-secret", good[0]),
                     protocol.sign_payload("k2", "second-secret", good[1]), replayed],
        "sig_missing": [evil],
        "sig_unknown_key": [protocol.sign_payload("k9", "first-secret", evil)],
        "sig_bad": [protocol.sign_payload("k1", "second-secret", evil), tampered],
        "sig_stale": [protocol.sign_payload("k1", "first-secret", evil, now=time.time() - 3600)],
        "sig_replay": [replayed],
        "sig_malformed": [b"#!sig1 k1 notanumber n 5 " + b"0" * 64 + b"\nhello",
                          protocol.sign_payload("k1", "first-secret", evil)[:-4]],
    }
    with serve(tmp_path, "--flush-interval", "0.3", "--auth-keys", str(keys)) as server:
        for batch in frames.values():
            server.send_udp(*batch)
        server.wait_metrics(lambda m: m["vmstats_datagrams_received_total"] >= 11)
        # Signature rejects are counted as each frame is checked; the accepted records only once
        # a parser process has parsed them, later: wait for the records themselves.
        metrics = server.wait_metrics(lambda m: m["vmstats_records_received_total"] >= 3)
    assert metrics["vmstats_records_received_total"] == 3
    # The parser processes read the datagrams and check their signatures themselves.
    assert metrics["vmstats_parsers_running"] >= 1 and metrics["vmstats_parsers_reading_udp"] >= 1
    assert metrics['vmstats_parsed_payloads_total{where="remote"}'] >= 1
    for cause in ("sig_missing", "sig_unknown_key", "sig_bad", "sig_stale", "sig_replay",
                  "sig_malformed"):
        assert metrics['vmstats_rejected_total{reason="%s"}' % cause] == len(frames[cause]), cause
    data = tmp_path / "data"
    for i in range(1, 4):
        assert list(logged(data, "10.10.0.%d" % i)["cpu"]) == [float(i)]
    assert "10.10.0.66" not in list(logstore.iter_vms(str(data)))


def test_without_keys_signed_frames_are_unwrapped_and_unsigned_accepted(tmp_path):
    t = now() - 60
    record = line(Record(vm="10.11.0.1", ts=t, cpu=1.0, mem=2.0))
    with serve(tmp_path, "--flush-interval", "0.3") as server:
        server.send_udp(protocol.sign_payload("any", "secret", record),
                        line(Record(vm="10.11.0.1", ts=t + 60, cpu=1.0, mem=2.0)))
        server.wait_received(2)
    assert list(logged(tmp_path / "data", "10.11.0.1")["ts"]) == [t, t + 60]


def test_a_frame_sent_many_times_over_udp_and_tcp_is_accepted_once_whichever_parser_checks_it(
        tmp_path):
    """The parsers check signatures on every core; the one memory of nonces is the reactor's."""
    keys = tmp_path / "keys"
    keys.write_text("k1 s3cret\n")
    t = now() - 60
    frames = [protocol.sign_payload("k1", "s3cret", line(Record(vm="10.12.0.%d" % i, ts=t,
                                                                 cpu=1.0, mem=2.0)))
              for i in range(1, 4)]
    copies = 40
    with serve(tmp_path, "--flush-interval", "0.3", "--auth-keys", str(keys)) as server:
        server.wait_metrics(lambda m: m["vmstats_parsers_reading_udp"] >= 2)
        for _ in range(copies):
            server.send_udp(*frames)
        with server.tcp() as sock:
            sock.sendall(b"".join(frames * 5) + b"#!sync r\n")
            assert sock.makefile("rb").readline() == b"#!nak r auth\n"
        replays = 'vmstats_rejected_total{reason="sig_replay"}'
        metrics = server.wait_metrics(lambda m: m[replays] >= (copies + 5 - 1) * len(frames))
    assert metrics["vmstats_records_received_total"] == len(frames)
    assert metrics[replays] == (copies + 5 - 1) * len(frames)
    assert metrics['vmstats_parsed_payloads_total{where="remote"}'] >= 1
    for i in range(1, 4):
        assert list(logged(tmp_path / "data", "10.12.0.%d" % i)["cpu"]) == [1.0]


def test_blank_lines_and_comments_between_signed_frames_refuse_nothing(tmp_path):
    """A sender that ends each frame with a newline of its own, or notes a comment between its
    frames, had its batch answered ``#!nak auth`` -- to be resent for ever -- while no counter
    showed any reject: a blank line or a comment was taken for an unsigned record.  They are no
    records: the batch is acknowledged whole, and a real unsigned line still refuses it."""
    keys = tmp_path / "keys"
    keys.write_text("k1 s3cret\n")
    t = now() - 60
    frames = [protocol.sign_payload("k1", "s3cret", line(Record(vm="10.13.0.%d" % i, ts=t,
                                                                 cpu=float(i), mem=2.0)))
              for i in range(1, 4)]
    unsigned = line(Record(vm="10.13.0.9", ts=t, cpu=9.0, mem=2.0))
    with serve(tmp_path, "--flush-interval", "0.3", "--auth-keys", str(keys)) as server:
        with server.tcp() as sock:
            replies = sock.makefile("rb")
            sock.sendall(frames[0] + b"\n\r\n" + frames[1] + b"\n# a note\n\n" + frames[2]
                         + b"\n#!sync ok\n")
            assert replies.readline() == b"#!ack ok 3 0\n"
            sock.sendall(unsigned + b"\n#!sync no\n")
            assert replies.readline() == b"#!nak no auth\n"
        metrics = server.metrics()
        assert metrics["vmstats_records_received_total"] == 3
        assert {key: value for key, value in metrics.items()
                if key.startswith("vmstats_rejected_total") and value} == {
            'vmstats_rejected_total{reason="sig_missing"}': 1}
    for i in range(1, 4):
        assert list(logged(tmp_path / "data", "10.13.0.%d" % i)["cpu"]) == [float(i)]
    assert not (tmp_path / "data" / "vms" / "10.13.0.9").exists()


@pytest.mark.parametrize("required", [True, False], ids=["auth-keys", "signatures-optional"])
def test_a_frame_with_a_broken_header_over_tcp_is_one_reject_payload_and_all(tmp_path, required):
    """Two frames whose headers are broken, one giving its length (its payload not ended by a
    newline, a good frame straight after it) and one not (its payload up to the next control
    line), then a sync: each is one ``sig_malformed`` and nothing else, as a datagram holding
    it is, and the good frame is taken.  Before, each payload line was read on as a line of its
    own: counted again as ``sig_missing`` under --auth-keys, and taken as an unsigned record
    (of a frame refused) without."""
    keys = tmp_path / "keys"
    keys.write_text("k1 s3cret\n")
    t = now() - 120
    evil = b"\n".join(line(Record(vm="10.13.0.66", ts=t + 60 * i, cpu=66.0, mem=1.0))
                      for i in range(2))
    good = protocol.sign_payload("k1", "s3cret", line(Record(vm="10.13.0.1", ts=t, cpu=1.0,
                                                             mem=1.0)))
    sized = b"#!sig1 k1 notanumber n %d %s\n%s" % (len(evil), b"0" * 64, evil)
    unsized = b"#!sig1 k1 %d n\n%s\n" % (t, evil)
    args = ("--auth-keys", str(keys)) if required else ()
    with serve(tmp_path, "--flush-interval", "0.3", *args) as server:
        with server.tcp() as sock:
            sock.sendall(sized + good + b"\n" + unsized + b"#!sync r\n")
            assert sock.makefile("rb").readline() == b"#!nak r auth\n"
        server.wait_received(1)
        metrics = server.metrics()
    rejects = {key: value for key, value in metrics.items()
               if key.startswith("vmstats_rejected_total") and value}
    assert rejects == {'vmstats_rejected_total{reason="sig_malformed"}': 2}
    assert metrics["vmstats_records_received_total"] == 1
    assert list(logstore.iter_vms(str(tmp_path / "data"))) == ["10.13.0.1"]
