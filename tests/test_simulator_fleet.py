"""Simulated fleets: reproducible, proportioned as asked, and each profile unambiguous by construction."""

import numpy as np
import pytest

from vmstats.protocol import FIELD_NAMES
from vmstats.simulator import fleet as fleets
from vmstats.simulator.profiles import EXPECTED, PROFILES

END = 1_732_262_400  # a Friday, 08:00 UTC


def series(vm, seed, start, stop):
    fleet_records = [r for _t, batch in fleets.generate([vm], seed, start, stop) for r in batch]
    names = ("ts", "cpu", "mem", "net_rx")
    return {name: np.array([getattr(r, name) for r in fleet_records]) for name in names}


def test_same_seed_same_fleet_and_series_other_seed_differs():
    start, stop = fleets.period(END, 1)
    one = fleets.make_fleet(30, 5, None, start, stop)
    two = fleets.make_fleet(30, 5, None, start, stop)
    assert fleets.truth_csv(one) == fleets.truth_csv(two)
    batches = [b for _t, b in fleets.generate(one, 5, start, stop)]
    assert batches == [b for _t, b in fleets.generate(two, 5, start, stop)]
    other = fleets.make_fleet(30, 6, None, start, stop)
    assert fleets.truth_csv(other) != fleets.truth_csv(one)


def test_the_demo_and_simulate_help_say_what_the_seed_fixes_and_what_the_end_minute_does():
    """bin/demo passes no --end: the seed fixes sizes and profiles, while the records move with the
    minute the demo starts; its --help, and simulate's, said "the same seed gives the same fleet",
    read as the records."""
    import subprocess
    import sys
    from pathlib import Path

    demo = Path(__file__).resolve().parent.parent / "bin" / "demo"
    usage = subprocess.run([str(demo), "--help"], capture_output=True, text=True, timeout=30).stdout
    seed_help = " ".join(usage.split("--seed S", 1)[1].split("--duration", 1)[0].split())
    assert "same VM sizes and profiles" in seed_help and "the minute the demo starts" in seed_help, seed_help
    usage = subprocess.run([sys.executable, "-m", "vmstats", "simulate", "--help"], capture_output=True,
                           text=True, timeout=30).stdout
    seed_help = " ".join(usage.split("--seed", 1)[1].split("--mix", 1)[0].split())
    assert "same VM sizes and profiles" in seed_help and "same --end" in seed_help, seed_help
    start, stop = fleets.period(END, 0.1)
    later_start, later_stop = fleets.period(END + 60, 0.1)  # the demo started a minute later
    now, later = fleets.make_fleet(20, 1, None, start, stop), fleets.make_fleet(20, 1, None, later_start,
                                                                                later_stop)
    assert fleets.truth_csv(now) == fleets.truth_csv(later)
    assert [b for _t, b in fleets.generate(now, 1, start, stop)] != \
        [b for _t, b in fleets.generate(later, 1, later_start, later_stop)]


def test_a_vms_series_does_not_depend_on_fleet_size():
    start, stop = fleets.period(END, 0.5)
    small = fleets.make_fleet(3, 9, {"idle": 1}, start, stop)
    large = fleets.make_fleet(40, 9, {"idle": 1}, start, stop)
    cpu = series(small[2], 9, start, stop)["cpu"].tolist()
    assert cpu == series(large[2], 9, start, stop)["cpu"].tolist()


def test_mix_is_split_exactly_and_parsed_strictly():
    counts = fleets.profile_counts(200, fleets.DEFAULT_MIX)
    assert sum(counts.values()) == 200 and counts["idle"] == 28 and counts["oversized"] == 30
    assert fleets.profile_counts(7, {"idle": 1, "steady_busy": 1}) in ({"idle": 4, "steady_busy": 3},
                                                                       {"idle": 3, "steady_busy": 4})
    assert fleets.parse_mix("idle=3, steady-busy=1") == {"idle": 3.0, "steady_busy": 1.0}
    for bad in ("gpu=1", "idle=x", "idle=0", "idle=-1"):
        with pytest.raises(fleets.MixError):
            fleets.parse_mix(bad)


def test_period_ends_at_the_current_minute_with_one_minute_steps():
    start, stop = fleets.period(END + 59, 2)
    assert (start, stop) == (END - 2 * 86400, END)
    vm = fleets.make_fleet(1, 1, {"steady_busy": 1}, start, stop)[0]
    ts = series(vm, 1, start, stop)["ts"]
    assert len(ts) == 2 * 1440 and set(np.diff(ts).tolist()) == {60}
    assert ts[0] == start + vm.offset and ts[-1] == stop - 60 + vm.offset < stop


def test_truth_names_each_vm_with_its_size_and_expected_category():
    start, stop = fleets.period(END, 1)
    fleet = fleets.make_fleet(50, 3, None, start, stop)
    lines = fleets.truth_csv(fleet).splitlines()
    assert lines[0] == "vm,vcpus,mem_mb,profile,expected"
    assert len(lines) == 51 and len({line.split(",")[0] for line in lines[1:]}) == 50
    for line, vm in zip(lines[1:], fleet, strict=True):
        name, vcpus, mem_mb, profile, expected = line.split(",")
        assert (name, int(vcpus), int(mem_mb), profile) == (vm.vm, vm.vcpus, vm.mem_mb, vm.profile)
        assert expected == PROFILES[profile].expected and expected in EXPECTED
        assert (int(vcpus), int(mem_mb) // 1024) in PROFILES[profile].sizes


def _stats(profile, days=7, count=6, seed=11):
    """(vm, series) of a few VMs of one profile, the series with p95 of cpu and mem added."""
    start, stop = fleets.period(END, days)
    out = []
    for vm in fleets.make_fleet(count, seed, {profile: 1}, start, stop):
        s = series(vm, seed, start, stop)
        s["cpu95"], s["mem95"] = np.percentile(s["cpu"], 95), np.percentile(s["mem"], 95)
        s["cpu50"], s["net50"] = np.median(s["cpu"]), np.median(s["net_rx"])
        out.append((vm, s))
    return out


def test_profiles_have_the_shape_their_verdict_needs():
    for _vm, s in _stats("idle"):
        assert s["cpu95"] < 3 and s["cpu"].max() < 12 and s["mem95"] < 20 and s["net50"] < 8 * 1024
    for vm, s in _stats("oversized"):
        assert vm.vcpus >= 8 and 8 < s["cpu50"] < 20 and s["cpu95"] < 30 and s["mem95"] < 30
    for vm, s in _stats("low_steady"):
        assert vm.vcpus == 1 and s["cpu50"] > 10 and s["mem95"] > 40
    for _vm, s in _stats("nightly_batch"):
        assert 0.06 < (s["cpu"] > 60).mean() < 0.11 and s["cpu95"] > 70 and s["cpu50"] < 3
    for _vm, s in _stats("bursty_web"):
        assert s["cpu95"] > 60 and s["cpu50"] < 20
    for _vm, s in _stats("memory_heavy"):
        assert s["cpu95"] < 10 and s["mem95"] > 70
    for _vm, s in _stats("network_heavy"):
        assert s["cpu95"] < 15 and s["net50"] > 10 * 1024 * 1024
    for _vm, s in _stats("growing"):
        day = len(s["cpu"]) // 7
        assert s["cpu"][-day:].mean() > s["cpu"][:day].mean() + 25


def test_business_hours_are_busy_on_local_weekdays_only():
    for vm, s in _stats("business_hours"):
        local = s["ts"] + int(vm.params["tz"] * 3600)
        hour = (local % 86400) / 3600
        weekday = (local // 86400 + 3) % 7
        working = (hour >= 10) & (hour < 17) & (weekday < 5)
        off = (hour < 8) | (hour >= 19) | (weekday >= 5)
        assert s["cpu"][working].mean() > 25 and np.percentile(s["cpu"][off], 95) < 4
        assert off.mean() > 0.6


def test_stopped_vms_go_silent_for_good_part_way_through():
    start, stop = fleets.period(END, 4)
    for vm, s in _stats("stopped", days=4):
        assert vm.stop_at is not None
        assert start + 0.5 * (stop - start) <= vm.stop_at <= start + 0.85 * (stop - start)
        assert s["ts"].max() < vm.stop_at and s["ts"].max() >= vm.stop_at - 60


def test_records_carry_each_series_in_its_own_field():
    start, stop = fleets.period(END, 0.1)
    vm = fleets.make_fleet(1, 2, {"network_heavy": 1}, start, stop)[0]
    arrays = fleets.vm_day(vm, 2, start, 0, 144)
    records = fleets.vm_records(vm, arrays)
    assert fleets.SERIES_FIELDS + ("vcpus", "mem_mb", "seq") == FIELD_NAMES
    for name in fleets.SERIES_FIELDS:
        assert [getattr(r, name) for r in records] == arrays[name].tolist()
    constant = {(r.vm, r.vcpus, r.mem_mb, r.seq, r.host) for r in records}
    assert constant == {(vm.vm, vm.vcpus, vm.mem_mb, None, None)}
    assert [r.ts for r in records] == arrays["ts"].tolist()
