"""The C part (vmstats/server/_framecheck.c) against signing.py's Python, its reference.

It reads untrusted datagrams, so it is held to the Python's answers on frames cut, padded
and corrupted at every place, not only on good ones; and bin/test builds it, so these
tests fail rather than skip where it is missing.
"""

import hmac
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmstats import protocol
from vmstats.server import signing
from vmstats.server.signing import Key

NOW = 1_800_000_000
native = signing._native


def test_the_c_part_is_built():
    assert native is not None, ("vmstats.server._framecheck was not built: bin/test installs a "
                                "C compiler and OpenSSL's and Python's headers when missing")


def python_frames(batch: list[bytes]):
    saved, signing._native = signing._native, None
    try:
        return signing._usual_frames(batch)
    finally:
        signing._native = saved


def good(i: int, key: str = "k1", payload: bytes = b"") -> bytes:
    return protocol.sign_payload(key, "s3cret", payload or b"vmstats,vm=10.0.0.%d cpu=%d,mem=2 %d"
                                 % (i % 250, i, NOW - 60), now=NOW + i % 3, nonce=b"n%d" % i)


def edits(data: bytes) -> list[bytes]:
    """The datagram cut, extended and with one byte changed or added at each place of its
    header (and the start of its payload)."""
    header = data.index(b"\n") + 3
    out = [data[:cut] for cut in range(header)] + [data + b"x", data + b"\n", b"", b"#!sig1"]
    for at in range(header):
        for byte in (b" ", b"\n", b"\0", b"0", b"a", b"\xff"):
            out.append(data[:at] + byte + data[at + 1:])
            out.append(data[:at] + byte + data[at:])
    return out


def test_every_edit_of_a_frame_is_read_as_the_python_reads_it():
    frames = [good(i) for i in range(3)]
    for bad in edits(good(7)):
        for batch in ([bad], frames[:1] + [bad] + frames[1:]):
            assert native.datagram_frames(batch, protocol.MAX_DATAGRAM_SIZE) == \
                python_frames(batch), bad
    assert native.datagram_frames(frames, protocol.MAX_DATAGRAM_SIZE) == python_frames(frames)
    assert native.datagram_frames([], protocol.MAX_DATAGRAM_SIZE) == ([], [], [], [], [])


def test_a_payload_longer_than_a_datagram_may_be_is_not_read():
    payload = b"x" * 40
    data = good(1, payload=payload)
    assert native.datagram_frames([data], 40) is not None
    assert native.datagram_frames([data], 39) is None
    assert native.datagram_frames([data.replace(b" 40 ", b" 000000000000000000000040 ")],
                                  40) is not None  # leading zeros, as int() reads them
    assert native.datagram_frames([data.replace(b" 40 ", b" 99999999999999999999999999 ")],
                                  40) is None


def test_a_length_past_the_largest_size_is_refused_whatever_the_limit():
    """Any limit a caller may pass, the largest too: a length field that only wraps around to
    the payload's size (2**64 + 5 for 5 bytes) once multiplied past PY_SSIZE_T_MAX is refused,
    as int() reads it, not accepted."""
    for length in (b"%d" % (2**64 + 5), b"%d" % (2**63 + 5), b"9" * 30):
        frame = b"#!sig1 k1 %d n1 %s %s\n12345" % (NOW, length, b"0" * 64)
        for limit in (sys.maxsize, sys.maxsize // 10 + 1, protocol.MAX_DATAGRAM_SIZE):
            assert native.datagram_frames([frame], limit) is None, (length, limit)
    frame = b"#!sig1 k1 %d n1 %s %s\n12345" % (NOW, b"0" * 40 + b"5", b"0" * 64)
    assert native.datagram_frames([frame], sys.maxsize) is not None  # leading zeros are no size


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2000), st.binary(max_size=300),
                          st.integers(0, 400), st.binary(min_size=1, max_size=3)),
                min_size=1, max_size=4))
def test_arbitrary_damage_to_a_batch_is_read_as_the_python_reads_it(damage):
    batch = []
    for i, payload, at, spliced in damage:
        data = good(i, payload=payload.replace(b"\0", b"") or b"p")
        at %= len(data) + 1
        batch.append(data if i % 3 == 0 else data[:at] + spliced + data[at:])
    assert native.datagram_frames(batch, protocol.MAX_DATAGRAM_SIZE) == python_frames(batch)


@pytest.mark.parametrize("secret", [b"", b"s3cret", b"x" * 64, b"y" * 65, bytes(range(200))])
def test_the_hmacs_are_hmac_sha256_of_the_signed_message(secret, monkeypatch):
    keys = [Key(secret), Key(b"other"), Key(secret)]
    identities = [b"k %d n%d" % (NOW, i) for i in range(7)]
    payloads = [b"", b"a", b"x" * 55, b"y" * 56, b"z" * 64, b"w" * 119, b"v" * 5000]
    batch_keys = [keys[i % 3] for i in range(7)]  # the pads object changes and returns
    expected = b"".join(hmac.new(key.secret, b"sig1 " + identity + b"\n" + payload,
                                 "sha256").hexdigest().encode()
                        for key, identity, payload in zip(batch_keys, identities, payloads, strict=True))
    assert native.hex_macs([key.pads for key in batch_keys], identities, payloads) == expected
    assert native.hex_macs([], [], []) == b""
    monkeypatch.setattr(signing, "_native", None)
    assert signing.hex_macs(batch_keys, identities, payloads) == expected


def test_the_hmacs_refuse_what_they_cannot_hash():
    key = Key(b"s")
    with pytest.raises(ValueError):
        native.hex_macs([key.pads], [b"a", b"b"], [b"p"])
    with pytest.raises(TypeError):
        native.hex_macs([key.pads[:-1]], [b"a"], [b"p"])
    with pytest.raises(TypeError):
        native.hex_macs([key.pads], ["a"], [b"p"])
