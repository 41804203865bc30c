"""The signed path's pieces: header reading, the HMAC from padded keys, the checks over a batch,
and the replay memory kept per signed second."""

import gc
import hmac
import time

import pytest

from vmstats import protocol
from vmstats.server import signing
from vmstats.server.auth import Verifier
from vmstats.server.parse import Parser
from vmstats.server.signing import FrameCheck, Key, check_frames, datagram_frames, read_frame, split_frames

NOW = 1_800_000_000
RECORD = b"vmstats,vm=10.0.0.1 cpu=1,mem=2 %d" % (NOW - 60)


@pytest.fixture(params=["c", "python"])
def fast_path(request, monkeypatch):
    """A batch's frames read and HMACs computed by the C part, then by signing.py's Python."""
    if request.param == "python":
        monkeypatch.setattr(signing, "_native", None)
    else:
        assert signing._native is not None, "vmstats.server._framecheck was not built"
    return request.param


def frame(key="k1", secret="s3cret", payload=RECORD, now=NOW, nonce=None) -> bytes:
    return protocol.sign_payload(key, secret, payload, now=now, nonce=nonce)


@pytest.mark.parametrize("secret", [b"", b"s3cret", b"x" * 64, b"y" * 65, bytes(range(200))])
def test_the_hmac_from_padded_keys_is_hmac_sha256(secret, fast_path):
    key = Key(secret)
    for payload in (b"", b"a", RECORD * 20):
        assert key.mac(b"k 1 n", payload) == hmac.new(
            secret, b"sig1 k 1 n\n" + payload, "sha256").hexdigest().encode()


def test_headers_are_read_as_split_signed_reads_them():
    good = frame(nonce=b"abc")
    mac = good.split(b"\n")[0].split(b" ")[5]
    cases = [good, good + b"tail", good[:-3],
             b"#!sig1  1 n 3 " + mac + b"\nabc",           # empty key id
             b"#!sig1 k 1 n 3 " + mac + b" \nabc",         # a seventh part
             b"#!sig1 k x1 n 3 " + mac + b"\nabc",         # a time that is no number
             b"#!sig1 k 1 n 3 " + mac[:-1] + b"\nabc",     # a short HMAC
             b"#!sig1 k 1 n 99999 " + mac + b"\nabc",      # longer than a datagram
             b"#!sig1 k 1 n 3 " + mac, b"vmstats,vm=a cpu=1,mem=1 1\n"]
    for data in cases:
        try:
            expected = protocol.split_signed(data)
        except protocol.SignatureError as exc:
            with pytest.raises(protocol.SignatureError, match=exc.reason):
                read_frame(data)
            continue
        read = read_frame(data)
        if not expected:
            assert read == expected, data
            continue
        (key_id, ts, identity, mac_read, payload), end = read
        assert (key_id, ts, mac_read, payload) == (expected[0], expected[1], expected[3],
                                                   expected[4])
        assert identity == b"%s %s %s" % expected[:3]
        assert data[end:] == expected[5]


def test_frames_laid_end_to_end_are_split_whole():
    frames = [frame(payload=RECORD + b"\n%d" % i, nonce=b"n%d" % i) for i in range(3)]
    key_ids, tss, identities, macs, payloads = split_frames(b"".join(frames))
    assert payloads == [RECORD + b"\n%d" % i for i in range(3)]
    assert identities == [b"k1 %d n%d" % (NOW, i) for i in range(3)]


def test_a_batch_is_checked_whole_or_frame_by_frame_with_the_same_verdicts(fast_path):
    keys = {b"k1": Key(b"s3cret"), b"k2": Key(b"other", None)}
    checker = FrameCheck(keys, 300)
    parser = Parser(max_future=300, max_past=0)
    good = [frame(nonce=b"g%d" % i, payload=b"vmstats,vm=10.0.0.%d cpu=1,mem=2 %d"
                  % (i, NOW - 60)) for i in range(1, 4)]
    columns, refused = datagram_frames(good)
    parsed, payloads, accepted, failed = check_frames(checker, parser, columns, NOW)
    assert refused == [] and failed == [] and len(parsed[0]) == 3
    assert accepted[:4] == ([b"k1"] * 3, [NOW] * 3,
                            [b"k1 %d g%d" % (NOW, i) for i in range(1, 4)], [0, 0, 0])
    assert payloads == b"\n".join(map(read_payload, good))
    assert accepted[4] == list(map(len, map(read_payload, good)))
    bad = [frame(key="k9"), frame(secret="wrong"), frame(now=NOW - 3600),
           frame()[:-2], b"vmstats,vm=a cpu=1,mem=1 1\nno\n"]
    columns, refused = datagram_frames(good[:1] + bad + good[1:])
    parsed, payloads, accepted, failed = check_frames(checker, parser, columns, NOW)
    assert [reason for reason, _detail, _count in refused + failed] == [
        protocol.S_MALFORMED, protocol.S_UNSIGNED, protocol.S_UNKNOWN_KEY, protocol.S_BAD,
        protocol.S_STALE]
    assert refused[1][2] == 2  # each unsigned line is a reject
    assert accepted[2] == [b"k1 %d g%d" % (NOW, i) for i in range(1, 4)]
    assert len(parsed[0]) == 3 and payloads == b"\n".join(map(read_payload, good))


def test_a_batch_read_at_once_keeps_exactly_the_datagrams_that_are_whole_frames(fast_path):
    good = [frame(nonce=b"g%d" % i) for i in range(3)]
    whole = frame(nonce=b"w")
    tricky = [frame(payload=RECORD + b"\0x", nonce=b"nul"),  # a NUL: read one by one, still whole
              whole[:-1], whole + b"x",                      # shorter or longer than it says
              whole[:30], whole[30:],                        # a frame cut in two datagrams
              b"\0" + whole, whole.replace(b" ", b"\0", 1)]
    for bad in tricky:
        batch = good[:1] + [bad] + good[1:]
        expected = []
        for data in batch:
            try:
                read = read_frame(data)
            except protocol.SignatureError:
                continue
            if read and read[1] == len(data):
                expected.append(read[0])
        columns, _refused = datagram_frames(batch)
        assert list(zip(*columns, strict=True)) == expected, bad


def read_payload(data: bytes) -> bytes:
    return protocol.split_signed(data)[4]


def test_the_replay_memory_is_kept_per_signed_second_and_forgets_stale_seconds():
    clock = [float(NOW)]
    verifier = Verifier(300, lambda: clock[0])
    ids = [b"k1 %d n%d" % (NOW - i % 3, i) for i in range(30)]
    stamps = [NOW - i % 3 for i in range(30)]
    assert verifier.admit_all([b"k1"] * 30, stamps, ids, clock[0]) is None
    # Each one again, alone or among new ones: refused as a replay, the new ones admitted.
    again = verifier.admit_all([b"k1"] * 3, [NOW, NOW, NOW - 1], [ids[0], b"k1 %d new" % NOW,
                                                               ids[1]], clock[0])
    assert [None if error is None else error.reason for error in again] == [
        protocol.S_REPLAY, None, protocol.S_REPLAY]
    # The same identity twice in one answer: the second is the replay.
    twice = verifier.admit_all([b"k1"] * 2, [NOW] * 2, [b"k1 %d dup" % NOW] * 2, clock[0])
    assert [error is None for error in twice] == [True, False]
    # A frame with another time is another message its key signed, not a replay.
    assert verifier.admit_all([b"k1"], [NOW - 5], [b"k1 %d n0" % (NOW - 5)], clock[0]) is None
    assert verifier.remembered() == 30 + 1 + 1 + 1
    # Once frames signed then are stale, their seconds go with the next new second.
    clock[0] = NOW + 299.5
    assert verifier.admit_all([b"k1"], [NOW + 299], [b"k1 %d late" % (NOW + 299)],
                              clock[0]) is None
    # Frames signed before NOW - 0.5 are stale now: those seconds went, NOW's stays.
    assert verifier.remembered() == 10 + 2 + 1
    clock[0] = NOW + 303
    assert verifier.admit_all([b"k1"], [NOW + 303], [b"k1 %d later" % (NOW + 303)],
                              clock[0]) is None
    assert verifier.remembered() == 2
    stale = verifier.admit_all([b"k1"], [NOW], [ids[0]], clock[0])
    assert stale[0].reason == protocol.S_STALE


def test_frames_after_a_restart_must_be_signed_after_their_keys_floor():
    verifier = Verifier(300, time.time)
    verifier.floors = {b"k1": NOW}
    verdicts = verifier.admit_all([b"k1", b"k2", b"k1"], [NOW, NOW, NOW + 1],
                                  [b"k1 %d a" % NOW, b"k2 %d a" % NOW, b"k1 %d b" % (NOW + 1)],
                                  NOW)
    assert [None if error is None else error.reason for error in verdicts] == [
        protocol.S_REPLAY, None, None]


def test_the_replay_memory_is_no_work_for_the_garbage_collector():
    # A full collection walks every element of every set it tracks: with the window's millions
    # of identities in sets, each one stalled the reactor for a tenth of a second or more.
    verifier = Verifier(300, time.time)
    now = int(time.time())
    verifier.remember(now - 2, b"k1 %d r" % (now - 2), now)
    verifier.admit(b"k1", now - 1, b"k1 %d a" % (now - 1), now)
    assert verifier.admit_all([b"k1"] * 3, [now, now, now - 1],
                              [b"k1 %d b%d" % (now, i) for i in range(3)], now) is None
    assert verifier.remembered() == 5
    gc.collect()
    assert not any(map(gc.is_tracked, verifier._seen.values()))  # (the seconds' map: ~300)
