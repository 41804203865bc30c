"""The C loop that files samples into minutes (vmstats/server/_minutes.c) against minutes.py.

``MinuteAssembler._file`` is the reference: fed the same samples with the same clock, an
assembler filing in C must end in exactly the state one filing in Python does -- the records
it completes (in the same order), the refusals with their indexes and details, the events,
the counters' state and order, and the checkpoint -- and must raise where it raises.  The C
does only the common cases itself and hands the rest to the same Python, so the samples here
reach every branch: Telegraf's stream over many minutes, then each odd case, then random ones.
bin/test builds the C, so these tests fail rather than skip where it is missing.
"""

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmstats.server.formats import CPU_STATE, MEM_PART, TOTAL, Sample, Tally, minutes
from vmstats.server.formats.minutes import MinuteAssembler
from vmstats.server.formats.rates import CounterRates

NOW = 1732262400.0
native = minutes._native


def assemblers(**options) -> tuple[MinuteAssembler, MinuteAssembler]:
    """(filing in C, filing in Python), alike otherwise."""
    rate_options = options.pop("rates", {})
    in_c = MinuteAssembler(rates=CounterRates(**rate_options), **options)
    in_python = MinuteAssembler(rates=CounterRates(**rate_options), **options)
    in_python.native = None
    return in_c, in_python


def outcome(assembler: MinuteAssembler, samples: list, now: float, by_line: bool) -> dict:
    """What one ``add`` did: everything it can change, or the error it raised."""
    tally, refused = Tally(), []
    try:
        assembler.add(samples, now, tally, refused if by_line else None)
        error = None
    except Exception as exc:  # both must fail alike: the error is part of the outcome
        error = (type(exc), str(exc))
    return {"error": error, "refused": refused, "counts": dict(tally.counts),
            "details": tally.details, "records": assembler.take(),
            "events": dict(assembler.events), "rates": dict(assembler.rates.events),
            "open_count": assembler.open_count,
            "state": json.dumps(assembler.state(), default=repr)}


def same(batches: list[tuple[list, float]], by_line: bool = True, **options) -> list[dict]:
    """Feed both assemblers ``batches`` of (samples, now), ticking between; they must agree."""
    assert native is not None, "vmstats.server._minutes is not built (setup.py)"
    in_c, in_python = assemblers(**options)
    seen = []
    for samples, now in batches:
        got, want = outcome(in_c, samples, now, by_line), outcome(in_python, samples, now, by_line)
        assert got == want
        assert in_c.tick(now) == in_python.tick(now)
        assert in_c.take() == in_python.take()
        seen.append(got)
    assert in_c.complete_all() == in_python.complete_all()
    assert in_c.take() == in_python.take()
    return seen


def telegraf(vms: int, moments: int, start: float = NOW - 600) -> list[tuple[list, float]]:
    """Telegraf's samples as the C reader makes them: every 10 s, cpu, mem, disks, net, n_cpus."""
    batches = []
    for k in range(moments):
        ts = start + 10 * k
        samples = []
        for vm in range(vms):
            name = "vm%d" % vm
            samples += [Sample(name, ts, "cpu", "", 12.5 + vm % 7 + k % 3),
                        Sample(name, ts, "mem", "", 40.25 + k % 5),
                        Sample(name, ts, "mem_mb", "", 4096.0),
                        Sample(name, ts, "disk_r" + TOTAL, "vda", 40960 * k + vm),
                        Sample(name, ts, "disk_w" + TOTAL, "vda", 8192 * k),
                        Sample(name, ts, "disk_r" + TOTAL, "vda1", 4096 * k),
                        Sample(name, ts, "net_rx" + TOTAL, "eth0", 12345 * k),
                        Sample(name, ts, "net_tx" + TOTAL, "eth0", 2345.5 * k),
                        Sample(name, ts, "vcpus", "", 2)]
        batches.append((samples, ts + 1))
    return batches


def test_the_c_loop_is_built():
    assert native is not None, "vmstats.server._minutes is not built (setup.py)"


def test_telegrafs_stream_makes_the_same_records_in_the_same_order():
    seen = same(telegraf(vms=40, moments=30))
    assert sum(len(one["records"]) for one in seen) > 100


def test_plain_tuples_lists_and_a_tally_instead_of_refusals():
    batches = [([tuple(sample) for sample in samples], now)
               for samples, now in telegraf(vms=5, moments=8)]
    same(batches, by_line=False)
    same([([list(sample) for sample in samples], now) for samples, now in batches[:3]])


def test_times_outside_the_window_and_of_every_type():
    samples = [Sample("a", NOW + 400, "cpu", "", 1.0), Sample("a", NOW - 400, "cpu", "", 1.0),
               Sample("a", NOW - 5, "cpu", "", 1.0), Sample("a", int(NOW) - 5, "mem", "", 2.0),
               Sample("a", NOW - 5, "mem", "", 3), Sample("b", NOW + 299.5, "cpu", "", 4.0),
               Sample("b", -1e300, "cpu", "", 1.0)]
    same([(samples, NOW)])
    same([(samples, NOW)], max_past=60)
    same([(samples, int(NOW))], max_past=60)
    same([([Sample("a", math.nan, "cpu", "", 1.0)], NOW)])
    same([([Sample("a", math.inf, "cpu", "", 1.0)], NOW)])


def test_values_outside_their_bounds_clamped_or_refused():
    samples = [Sample("a", NOW - 5, kind, "", value)
               for kind in ("cpu", "mem", "vcpus", "mem_mb", CPU_STATE)
               for value in (-50.0, -0.5, 100.5, 150.0, math.nan, math.inf, -math.inf, 0, 0.0,
                             100, 7, 2**70, -(2**70), 1e308, True)]
    same([(samples, NOW)])


def test_counters_primed_dropped_restarted_stale_out_of_order_and_too_fast():
    base = NOW - 900
    kind = "net_rx" + TOTAL
    values = [(base, 100), (base + 10, 200), (base + 10, 300), (base + 5, 400),
              (base + 20, 2**32 - 10), (base + 30, 20), (base + 40, 10), (base + 50, 50.5),
              (base + 60, 60), (base + 700, 70), (base + 710, -1), (base + 720, math.nan),
              (base + 730, 2**63 + 5), (base + 740, 2**64 + 5), (base + 750, 2**80),
              (base + 760, 2**80 + 2**70), (base + 770, 1e300), (base + 780, 1.5e300),
              (int(base) + 790, 10**6), (base + 800, 10**6 + 1), (base + 810, 10**15),
              (base + 820, 2**63 - 1), (base + 830, -(2**63)), (base + 840, 7.0)]
    samples = [Sample("a", ts, kind, "eth0", value) for ts, value in values]
    samples += [Sample("a", base + 845, "cpu", "", 1.0), Sample("a", base + 845, "mem", "", 1.0)]
    same([(samples, NOW)])
    same([(samples, NOW)], rates={"max_gap": 100})
    same([(samples, NOW)], rates={"max_gap": 10**20})
    same([(samples, NOW)], rates={"max_counters": 1})


def test_a_counter_that_is_no_number_raises_as_the_python_does():
    """Not >= 0 as the reference compares it (with the int 0): the same error, message too."""
    for value in (None, "1", b"1", (1,), 1j):
        for kind in ("net_rx" + TOTAL, CPU_STATE + TOTAL):
            seen = same([([Sample("a", NOW - 5, kind, "eth0", value)], NOW)])
            assert seen[0]["error"][0] is TypeError, value


def test_late_samples_forced_minutes_and_every_kind_of_collectd():
    first = [Sample("vm%d" % vm, NOW - 300 + 10 * k, kind, device, value)
             for k in range(12) for vm in range(4)
             for kind, device, value in (("cpu", "", 5.0), ("mem", "", 6.0),
                                         (CPU_STATE, "0:idle", 90.0), (CPU_STATE, "0:user", 10),
                                         (CPU_STATE, "1:wait", 5.0),
                                         (CPU_STATE + TOTAL, "0:idle", 1000.0 * k),
                                         (MEM_PART, "used", 1024.0), (MEM_PART, "free", 3072),
                                         ("disk_r", "sda", 1.5), ("disk_r", "sda", 2),
                                         ("net_tx", "eth0", 3), ("mem_mb", "", 2048),
                                         ("vcpus", "", 4.0), ("unknown", "", 1.0))]
    late = [Sample("vm1", NOW - 290, "cpu", "", 1.0), Sample("vm9", NOW - 290, "cpu", "", 1.0),
            Sample("vm1", NOW - 250, "mem", "", 1.0), Sample("vm1", NOW - 1000, "mem", "", 1.0)]
    same([(first, NOW - 150), (late, NOW - 100), (late, NOW)])
    same([(first, NOW - 150), (late, NOW)], max_open=3)
    same([(first, NOW - 150), (late, NOW)], max_open=1)


def test_devices_past_a_minutes_bound_are_refused_alike():
    """Past ``max_devices`` in one table of a minute (a rate's devices, a second's CPUs or
    memory kinds) each new name is refused as device_cap; those within keep being filed."""
    samples = []
    for k in range(6):
        ts = NOW - 300 + 10 * k
        for vm in ("a", "b"):
            samples += [Sample(vm, ts, "cpu", "", 5.0), Sample(vm, ts, "mem", "", 6.0)]
            samples += [Sample(vm, ts, kind, "d%d" % i, 1.5 * i + k)
                        for kind in ("disk_r", "net_tx") for i in range(5)]
            samples += [Sample(vm, ts, "net_rx" + TOTAL, "e%d" % i, 1000 * k * i) for i in range(5)]
            samples += [Sample(vm, ts, CPU_STATE, "%d:%s" % (cpu, state), 10.0 + cpu)
                        for cpu in range(5) for state in ("idle", "user")]
            samples += [Sample(vm, ts, MEM_PART, part, 1024.0 * (k + 1))
                        for part in ("used", "free", "cached", "buffers", "slab")]
    refused = {}
    for most in (1, 3, 5):
        for by_line in (True, False):
            [seen] = same([(samples, NOW)], by_line=by_line, max_devices=most)
            reasons = ([reason for _index, reason, _detail in seen["refused"]] if by_line
                       else [reason for reason, n in seen["counts"].items() for _ in range(n)])
            assert set(reasons) <= {"device_cap"}
            refused[most, by_line] = len(reasons)
    # Each moment of each VM: 2 disk_r, 2 net_tx, 2 net_rx (its rates from the second on),
    # 2 CPUs of two states each and 2 memory kinds past 3.
    assert refused[3, True] == refused[3, False] == 2 * (6 * (2 + 2 + 4 + 2) + 5 * 2)
    assert refused[1, True] > refused[3, True] and refused[5, True] == 0


SAMPLES = st.lists(st.builds(
    Sample,
    st.sampled_from(["a", "b", "c"]),
    st.one_of(st.floats(NOW - 700, NOW + 400), st.integers(int(NOW) - 700, int(NOW) + 400)),
    st.sampled_from(["cpu", "mem", "mem_mb", "vcpus", "disk_r", "net_tx", "disk_r" + TOTAL,
                     "net_rx" + TOTAL, CPU_STATE, CPU_STATE + TOTAL, MEM_PART, "other"]),
    st.sampled_from(["", "sda", "sda1", "eth0", "0:idle", "1:user", "used", "free"]),
    st.one_of(st.floats(allow_nan=False), st.integers(-(2**66), 2**66),
              st.floats(-10, 110), st.integers(0, 10**12))), max_size=60)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(SAMPLES, st.floats(NOW - 200, NOW + 200)), min_size=1, max_size=4),
       st.sampled_from([0, 120]), st.sampled_from([2, 1000]), st.sampled_from([1, 2, 4096]),
       st.booleans())
def test_random_samples_end_alike(batches, max_past, max_open, max_devices, by_line):
    same(batches, by_line=by_line, max_past=max_past, max_open=max_open, max_devices=max_devices)

