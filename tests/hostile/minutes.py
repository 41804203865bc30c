"""Odd sequences of samples for _minutes.c: wrong types, wraps, values out of range, late.

MinuteAssembler._file is the reference, through test_formats_minutes_c's ``same``: both
assemblers must end alike after every batch, errors included.
"""

import math
import random

import test_formats_minutes_c as reference
from test_formats_minutes_c import NOW, same

from vmstats.server.formats import CPU_STATE, MEM_PART, TOTAL, Sample, Tally

KINDS = ["cpu", "mem", "mem_mb", "vcpus", "disk_r", "net_tx", "disk_r" + TOTAL, "net_rx" + TOTAL,
         CPU_STATE, CPU_STATE + TOTAL, MEM_PART, "other", ""]
#: Values a decoder could hand on from a hostile sender, and some no decoder makes.
VALUES = [0, 0.0, -0.0, 1, 1.5, 99.9, 100, 100.5, 150.0, -1, -0.5, 2**31, 2**32 - 1, 2**32,
          2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**64 + 5, 2**200, -(2**63), -(2**200), 1e15, 1e300,
          1.7976931348623157e308, 5e-324, math.nan, math.inf, -math.inf, True, False]
ODD_VALUES = ["1", None, b"1", (1,), 1j]
TIMES = [NOW, NOW - 1, NOW - 59.999, NOW - 60, NOW - 60.000001, NOW + 299, NOW + 300, NOW + 301,
         NOW - 10**6, int(NOW), int(NOW) - 61, 0, -1, 0.0, -0.0, 1e300, -1e300, 10**30,
         math.nan, math.inf, -math.inf, True]
VMS = ["a", "b", "", "a" * 1000, "\udcff", 7, ("a",), None]
#: Device names about the bound on their bytes (``max_name_bytes`` 16 below): of ASCII, of
#: characters of two, three and four bytes, a lone surrogate, 64 KiB, and what is no str.
LONG_NAMES = ["e" * 16, "e" * 17, "\u00e9" * 8, "\u00e9" * 9, "\u20ac" * 6, "\U0001f600" * 4,
              "\U0001f600" * 5, "\udcff" * 6, "x" * 65536, b"e" * 17, b"\xff" * 8, None, 7,
              ("e",) * 17]


def odd_values() -> int:
    """Each kind with each value, alone in a batch so an error stops nothing else."""
    count = 0
    for kind in KINDS:
        for value in VALUES + ODD_VALUES:
            for device in ("", "eth0"):
                batch = [Sample("a", NOW - 5, kind, device, value)]
                same([(batch, NOW)])
                same([([Sample("a", NOW - 15, kind, device, 10)] + batch, NOW)])
                count += 2
    for device in LONG_NAMES:
        for kind in ("disk_r", "net_rx" + TOTAL, CPU_STATE, MEM_PART, "cpu"):
            # (A name that is no str and is taken would be filed, and no checkpoint holds it.)
            for most in (16, 0, -1, -5) + ((2**70,) if isinstance(device, str) else ()):
                same([([Sample("a", NOW - 5, kind, device, 5),
                        Sample("a", NOW - 5, kind, "e", 5)], NOW)], max_name_bytes=most)
                count += 1
    for ts in TIMES + ["x", None]:
        for vm in VMS:
            same([([Sample(vm, ts, "cpu", "", 1.0), Sample(vm, ts, "net_rx" + TOTAL, "e", 5)],
                   NOW)])
            count += 1
    return count


def counters(rng: random.Random) -> int:
    """A counter's samples in any order and size: wraps at 32 and 64 bits, restarts, types
    switching between int and float, gaps longer than max_gap, too fast, unhashable."""
    count = 0
    kind = "net_rx" + TOTAL
    for options in ({}, {"max_gap": 0}, {"max_gap": -1}, {"max_gap": 2**53 + 1},
                    {"max_gap": 10**30}, {"max_gap": math.nan}, {"max_gap": math.inf},
                    {"max_gap": 1.5}, {"max_counters": 1}):
        for _ in range(30):
            ts = NOW - 900
            samples = []
            for _ in range(40):
                ts += rng.choice((0, 1, 5, 10, 59.5, 60, 601, -5, 1e-9))
                value = rng.choice(VALUES[:-2] + [rng.randrange(2**65), rng.random() * 2**70])
                samples.append(Sample(rng.choice("ab"), ts, kind, rng.choice(("e0", "e1")), value))
            same([(samples, NOW)], rates=options)
            count += 1
    return count


def random_batches(rng: random.Random) -> int:
    """Random samples of every kind over several minutes, some late, minutes forced out."""
    count = 0
    for _ in range(1500):
        batches = []
        for _ in range(rng.randrange(1, 5)):
            now = NOW + rng.uniform(-200, 200)
            samples = [Sample(rng.choice(VMS[:4]), rng.choice(TIMES[:11] + [now - rng.uniform(0, 700)]),
                              rng.choice(KINDS), rng.choice(("", "sda", "eth0", "0:idle", "used",
                                                             *LONG_NAMES[:9])),
                              rng.choice(VALUES)) for _ in range(rng.randrange(60))]
            batches.append((samples, now))
        same(batches, by_line=rng.random() < 0.5, max_past=rng.choice((0, 120)),
             max_open=rng.choice((1, 2, 1000)), max_devices=rng.choice((1, 2, 4096)),
             max_names=rng.choice((1, 3, 10**6)), max_name_bytes=rng.choice((16, 256)))
        count += 1
    return count


def malformed() -> int:
    """Samples that are not five items: both raise the same type of error (their messages
    differ by design: the C names the sample's size), and no more."""
    count = 0
    for odd in ((), ("a", NOW, "cpu", ""), ("a", NOW, "cpu", "", 1.0, 2), 7, None, "abcde",
                "abc", b"abcde", {"a": 1}, iter([]), [Sample("a", NOW, "cpu", "", 1.0)]):
        errors = []
        for assembler in reference.assemblers():
            try:
                assembler.add([Sample("a", NOW - 5, "cpu", "", 1.0), odd], NOW, Tally())
                errors.append(None)
            except Exception as exc:  # each must fail, and alike
                errors.append(type(exc))
        assert errors[0] == errors[1], (odd, errors)
        count += 1
    for samples in (None, 7, iter([Sample("a", NOW, "cpu", "", 1.0)]), "abcde"):
        errors = []
        for assembler in reference.assemblers():
            try:
                assembler.add(samples, NOW, Tally())
                errors.append(None)
            except Exception as exc:  # each must fail, and alike
                errors.append(type(exc))
        assert errors[0] == errors[1], (samples, errors)
        count += 1
    return count


def run() -> int:
    rng = random.Random(4)
    reference.test_telegrafs_stream_makes_the_same_records_in_the_same_order()
    reference.test_plain_tuples_lists_and_a_tally_instead_of_refusals()
    reference.test_times_outside_the_window_and_of_every_type()
    reference.test_values_outside_their_bounds_clamped_or_refused()
    reference.test_counters_primed_dropped_restarted_stale_out_of_order_and_too_fast()
    reference.test_late_samples_forced_minutes_and_every_kind_of_collectd()
    reference.test_devices_past_a_minutes_bound_are_refused_alike()
    reference.test_names_past_all_open_minutes_bound_are_refused_alike()
    reference.test_device_names_past_their_bytes_are_refused_alike()
    return odd_values() + counters(rng) + random_batches(rng) + malformed()
