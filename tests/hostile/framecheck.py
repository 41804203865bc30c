"""Signed datagrams for _framecheck.c: frames cut, padded, damaged, oversized, mistyped.

signing.py's regex is the reference for datagram_frames and the hmac module for hex_macs.
"""

import hmac
import random
import sys

import test_server_framecheck as reference

from vmstats import protocol
from vmstats.server import signing
from vmstats.server.signing import Key

native = signing._native
LIMIT = protocol.MAX_DATAGRAM_SIZE


def same(batch: list) -> None:
    assert native.datagram_frames(batch, LIMIT) == reference.python_frames(batch), batch


def header(length: bytes, payload: bytes) -> bytes:
    """A frame with the usual header around ``payload`` whatever its length field says."""
    return b"#!sig1 k1 1800000000 n1 %s %s\n%s" % (length, b"0" * 64, payload)


def frames(rng: random.Random) -> int:
    count = 0
    good = [reference.good(i) for i in range(4)]
    big = reference.good(1, payload=b"x" * 5000)
    for data in good[:2] + [big]:  # every prefix, and the frame padded at its end
        for cut in range(len(data) + 1):
            same([data[:cut]])
            same([good[0], data[:cut]])
            count += 2
    for bad in reference.edits(good[3]):
        same([bad])
        count += 1
    for size in (LIMIT - 1, LIMIT, LIMIT + 1, 10**6):  # oversized payloads, lengths told true
        payload = b"p" * size
        same([header(b"%d" % size, payload)])
        count += 1
    for digits in range(1, 40):  # length fields of every size, leading zeros, all nines
        for length in (b"9" * digits, b"0" * (digits - 1) + b"5", b"1" + b"0" * (digits - 1)):
            for max_payload in (-1, 0, 5, LIMIT, 2**31, sys.maxsize // 10, sys.maxsize):
                native.datagram_frames([header(length, b"12345")], max_payload)
                count += 1
            same([header(length, b"12345")])
            count += 1
    for _ in range(10000):  # random bytes, alone and behind a good frame; random splices
        noise = rng.randbytes(rng.randrange(0, 300))
        base = rng.choice(good)
        at = rng.randrange(len(base) + 1)
        spliced = base[:at] + noise[:rng.randrange(1, 4)] + base[at + rng.randrange(0, 3):]
        same([noise])
        same([base, spliced])
        same([b"#!sig1 " + noise])
        count += 3
    for odd in ("text", bytearray(good[0]), memoryview(good[0]), None, 7, [good[0]]):
        assert native.datagram_frames([good[0], odd], LIMIT) is None
        count += 1
    return count


def macs(rng: random.Random) -> int:
    count = 0
    keys = [Key(b""), Key(b"k" * 64), Key(b"k" * 65), Key(bytes(range(256)))]
    for n in (0, 1, 3, 17):
        chosen = [rng.choice(keys) for _ in range(n)]
        identities = [rng.randbytes(rng.randrange(0, 100)) for _ in range(n)]
        payloads = [rng.randbytes(rng.choice((0, 1, 55, 56, 63, 64, 65, 70000))) for _ in range(n)]
        expected = b"".join(hmac.new(key.secret, b"sig1 " + identity + b"\n" + payload,
                                     "sha256").hexdigest().encode()
                            for key, identity, payload in zip(chosen, identities, payloads,
                                                              strict=True))
        assert native.hex_macs([key.pads for key in chosen], identities, payloads) == expected
        count += 1
    pads = keys[0].pads
    for args in (([pads], [b"a", b"b"], [b"p"]), ([pads[:-1]], [b"a"], [b"p"]),
                 ([pads + b"x"], [b"a"], [b"p"]), ([pads], ["a"], [b"p"]),
                 ([pads], [b"a"], [None]), ([None], [b"a"], [b"p"]), ([pads], [], [])):
        try:
            native.hex_macs(*args)
        except (TypeError, ValueError):
            pass
        else:
            raise AssertionError(args)
        count += 1
    return count


def run() -> int:
    rng = random.Random(1)
    reference.test_every_edit_of_a_frame_is_read_as_the_python_reads_it()
    reference.test_a_payload_longer_than_a_datagram_may_be_is_not_read()
    reference.test_the_hmacs_refuse_what_they_cannot_hash()
    return frames(rng) + macs(rng)
