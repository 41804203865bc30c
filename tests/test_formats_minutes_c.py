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
            "open_count": assembler.open_count, "names": assembler.names,
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
    # Every name counted in was counted out with its minute: none left to fill the budget.
    assert in_c.names == in_python.names == 0
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


def named(start: float, vms: tuple[str, ...] = ("a", "b")) -> list[Sample]:
    """Two VMs' samples at six moments 10 s apart from ``start``, each naming five disks,
    interfaces, CPUs (two states each) and memory kinds."""
    samples = []
    for k in range(6):
        ts = start + 10 * k
        for vm in vms:
            samples += [Sample(vm, ts, "cpu", "", 5.0), Sample(vm, ts, "mem", "", 6.0)]
            samples += [Sample(vm, ts, kind, "d%d" % i, 1.5 * i + k)
                        for kind in ("disk_r", "net_tx") for i in range(5)]
            samples += [Sample(vm, ts, "net_rx" + TOTAL, "e%d" % i, 1000 * k * i) for i in range(5)]
            samples += [Sample(vm, ts, CPU_STATE, "%d:%s" % (cpu, state), 10.0 + cpu)
                        for cpu in range(5) for state in ("idle", "user")]
            samples += [Sample(vm, ts, MEM_PART, part, 1024.0 * (k + 1))
                        for part in ("used", "free", "cached", "buffers", "slab")]
    return samples


def reasons_of(seen: dict, by_line: bool) -> list[str]:
    """The reasons of one ``add``'s refusals, one per refused sample."""
    if by_line:
        return [reason for _index, reason, _detail in seen["refused"]]
    return [reason for reason, n in seen["counts"].items() for _ in range(n)]


def test_devices_past_a_minutes_bound_are_refused_alike():
    """Past ``max_devices`` of one kind in a minute (a rate's devices; CPUs, or memory kinds,
    of all its seconds together) each new name is refused as device_cap; those within keep
    being filed."""
    refused = {}
    for most in (1, 3, 25):
        for by_line in (True, False):
            [seen] = same([(named(NOW - 300), NOW)], by_line=by_line, max_devices=most)
            reasons = reasons_of(seen, by_line)
            assert set(reasons) <= {"device_cap"}
            refused[most, by_line] = len(reasons)
    # Two minutes of each VM, of one moment (NOW - 300) and of five.  Past 3: each moment's
    # 2 disk_r, 2 net_tx, 2 net_rx (its rates from the second moment on); and of each
    # minute's CPUs (two states each) and memory kinds, each second's five counted together:
    # 5 - 3 and 25 - 3.  Counted per second, the five moments' CPUs were 25 names in all but
    # never more than 5 at once, and none was refused past 5.
    per_vm = 6 * (2 + 2) + 5 * 2 + 2 * (5 - 3 + 25 - 3) + (5 - 3 + 25 - 3)
    assert refused[3, True] == refused[3, False] == 2 * per_vm
    assert refused[1, True] > refused[3, True] and refused[25, True] == 0


def test_names_past_all_open_minutes_bound_are_refused_alike():
    """Past ``max_names`` held by every open minute together each new name is refused as
    name_budget (a minute's own bound is judged first); the minutes written give theirs
    back, so the same samples of two other VMs later are refused no more than the first."""
    later = [(named(NOW - 300), NOW), ([], NOW + 400), (named(NOW + 300, ("c", "d")), NOW + 600)]
    for most, budget in ((8192, 1), (8192, 30), (3, 30), (25, 1000)):
        for by_line in (True, False):
            first, _empty, again = same(later, by_line=by_line, max_devices=most,
                                        max_names=budget)
            reasons = reasons_of(first, by_line)
            assert set(reasons) <= {"device_cap", "name_budget"}
            assert ("name_budget" in reasons) == (budget < 1000)
            assert reasons_of(again, by_line) == reasons
            # Held after it: the later minute of each VM (the first one written), within both.
            held = 2 * (3 * min(5, most) + 2 * min(25, most))
            assert first["names"] == held if budget == 1000 else first["names"] <= budget


def test_minutes_whose_every_name_was_refused_are_forced_out_past_the_open_bound():
    """A sender spreading names over ever new VMs once the budget is full opens minutes that
    hold nothing.  Past ``max_open`` those were never forced out (only the minute just opened
    may not be): with the oldest all such, none was, and each new minute was one more, and
    one more pass over them all."""
    samples = [Sample("v%03d" % vm, NOW - 30, "net_rx", "eth0", 5.0) for vm in range(200)]
    [seen] = same([(samples, NOW)], max_open=10, max_names=3)
    assert seen["open_count"] <= 10 and seen["events"]["forced"] == 190
    assert seen["refused"][0][1:] == ("name_budget", "open minutes already hold 3 device names:"
                                      " v003's net_rx 'eth0' refused")


def test_device_names_past_their_bytes_are_refused_alike():
    """A name longer than ``max_name_bytes`` in UTF-8 (ASCII: its length; other characters
    count two to four) is refused as too_long, of every kind, before a minute or a counter
    holds it; a name of the bound itself is taken.  Without the bound a name was held as long
    as the line that carried it (64 KiB), and the bound on names counted it as one."""
    names = ["e" * 16, "e" * 17, "\u00e9" * 8, "\u00e9" * 9, "\u20ac" * 5, "\u20ac" * 6,
             "\udcff" * 5, "\udcff" * 6, "x" * 70_000]
    kinds = ("disk_r", "net_rx" + TOTAL, CPU_STATE, CPU_STATE + TOTAL, MEM_PART, "cpu", "other")
    batches = [([Sample("a", NOW - 35 + k, kind, name, 10.0 * k) for k in (0, 10)
                 for kind in kinds for name in names]
                + [Sample("a", NOW - 25, "cpu", "", 5.0), Sample("a", NOW - 25, "mem", "", 6.0)],
                NOW)]
    for by_line in (True, False):
        [seen] = same(batches, by_line=by_line, max_name_bytes=16)
        refused = 2 * len(kinds) * 5  # e*17, é*9, €*6, \udcff*6 and x*70,000 at both moments
        assert reasons_of(seen, by_line) == ["too_long"] * refused
    [seen] = same(batches, max_name_bytes=16)
    assert {index for index, _reason, _detail in seen["refused"]} == {
        k * len(kinds) * len(names) + kind * len(names) + name
        for k in (0, 1) for kind in range(len(kinds)) for name in (1, 3, 5, 7, 8)}
    assert seen["refused"][0][2] == ("a's disk_r device name of 17 bytes is over 16: "
                                     "'eeeeeeeeeeeeeeeee'... refused")
    assert str(seen["refused"][4][2]).startswith("a's disk_r device name of 70000 bytes is over 16")
    # No counter was primed for a name refused: the counters hold the names taken alone.
    in_c, _in_python = assemblers(max_name_bytes=16)
    in_c.add(batches[0][0], NOW, Tally())
    assert sorted(len(device.encode("utf-8", "surrogatepass")) for _vm, _kind, device
                  in in_c.rates.last) == [15] * 4 + [16] * 4
    # The default holds any Linux device's name (NAME_MAX, 255) and collectd's cpu:state of two
    # instances of 127 bytes each.
    [seen] = same([([Sample("a", NOW - 5, CPU_STATE, "c" * 127 + ":" + "s" * 127, 1.0),
                     Sample("a", NOW - 5, "disk_r", "d" * 255, 1.0),
                     Sample("a", NOW - 5, "disk_r", "d" * 257, 1.0)], NOW)])
    assert [reason for _index, reason, _detail in seen["refused"]] == ["too_long"]


SAMPLES = st.lists(st.builds(
    Sample,
    st.sampled_from(["a", "b", "c"]),
    st.one_of(st.floats(NOW - 700, NOW + 400), st.integers(int(NOW) - 700, int(NOW) + 400)),
    st.sampled_from(["cpu", "mem", "mem_mb", "vcpus", "disk_r", "net_tx", "disk_r" + TOTAL,
                     "net_rx" + TOTAL, CPU_STATE, CPU_STATE + TOTAL, MEM_PART, "other"]),
    st.sampled_from(["", "sda", "sda1", "eth0", "0:idle", "1:user", "used", "free",
                     "eth0" * 70, "\u00e9" * 3, "0:" + "\u20ac" * 2]),
    st.one_of(st.floats(allow_nan=False), st.integers(-(2**66), 2**66),
              st.floats(-10, 110), st.integers(0, 10**12))), max_size=60)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(SAMPLES, st.floats(NOW - 200, NOW + 200)), min_size=1, max_size=4),
       st.sampled_from([0, 120]), st.sampled_from([2, 1000]), st.sampled_from([1, 2, 4096]),
       st.sampled_from([1, 7, 10**6]), st.sampled_from([5, 6, 256]), st.booleans())
def test_random_samples_end_alike(batches, max_past, max_open, max_devices, max_names,
                                  max_name_bytes, by_line):
    same(batches, by_line=by_line, max_past=max_past, max_open=max_open, max_devices=max_devices,
         max_names=max_names, max_name_bytes=max_name_bytes)

