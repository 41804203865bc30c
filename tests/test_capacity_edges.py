"""Admission and headroom at the edges an operator places real VMs by, checked from outside.

Small fleets of known hosts and VMs of known per-minute use are written as
real logs and asked about through ``vmstats admit`` and ``vmstats headroom``;
every expected figure is worked out here with numpy from the same series
(hourly peaks summed per host, the p99.9 minute, capacity less reserve and
buffer), importing nothing from vmstats.capacity.
"""

import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_report_stats import T0, series, write_records

from vmstats import logstore

ROOT = Path(__file__).resolve().parent.parent
DAYS = 3
MINUTES = DAYS * 1440
MINUTE = np.arange(MINUTES)
HOUR_OF_DAY = (MINUTE % 1440) // 60

#: Two hosts of 16 vCPUs / 64 GB and one of 32 / 128; no reserve, no buffer, so room is exact.
HOSTS = """\
[defaults]
reserve_mem_gb = 0
buffer = 0

[[host]]
name = "small1"
vcpus = 16
mem_gb = 64

[[host]]
name = "small2"
vcpus = 16
mem_gb = 64

[[host]]
name = "big"
vcpus = 32
mem_gb = 128
"""


def vmstats(*args):
    return subprocess.run(
        [sys.executable, "-m", "vmstats", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )


def write(data, vm, host, vcpus, mem_gb, cpu_pct, mem_pct, seen=None):
    """One VM's records, a minute apart from T0, with its host tag (``seen``: minutes sent)."""
    keep = np.ones(MINUTES, bool) if seen is None else seen
    cpu = np.broadcast_to(np.asarray(cpu_pct, float), (MINUTES,))[keep]
    mem = np.broadcast_to(np.asarray(mem_pct, float), (MINUTES,))[keep]
    records = series(vm, T0 + 60 * MINUTE[keep], cpu, mem, vcpus=vcpus, mem_mb=int(mem_gb * 1024))
    write_records(data, [r._replace(host=host) for r in records])


def hourly_level(*cores):
    """The p99.9 minute of the per-minute sum of each VM's hourly peaks (the documented defaults)."""
    total = sum(np.repeat(np.asarray(c, float).reshape(-1, 60).max(axis=1), 60) for c in cores)
    return float(np.percentile(total, 99.9, method="higher"))


def admit(tmp_path, manifest, *args):
    (tmp_path / "m.toml").write_text(manifest)
    done = vmstats(
        "admit",
        tmp_path / "m.toml",
        tmp_path / "data",
        "--inventory",
        tmp_path / "hosts.toml",
        "--horizon-days",
        "0",
        "--json",
        *args,
    )
    return done.returncode, (json.loads(done.stdout) if done.stdout.strip() else None), done.stderr


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """small1 half busy, small2 nearly idle but fully allocated, big at a quarter."""
    base = tmp_path_factory.mktemp("edges")
    data = base / "data"
    write(data, "a", "small1", 8, 32, 100.0, 100.0)  # 8 cores, 32 GB, constant
    write(data, "b", "small2", 16, 64, 25.0, 25.0)  # 4 cores, 16 GB of a whole host's size
    write(data, "c", "big", 8, 32, 100.0, 100.0)  # 8 cores, 32 GB
    (base / "hosts.toml").write_text(HOSTS)
    return base


def test_a_host_filled_exactly_takes_the_vm_and_a_hair_more_is_refused(fleet):
    # Room per host: small1 8 cores / 32 GB, small2 12 / 48, big 24 / 96.
    code, out, _err = admit(fleet, '[[vms]]\nprofile = "24x96"\n')
    assert code == 0 and out["offer"] == {"24x96-1": "big"}
    assert out["headroom_left"]["big"] == {"cpu_cores": 0.0, "mem_gb": 0.0}
    for over in ("24.01x96", "24x96.01"):
        code, out, _err = admit(fleet, '[[vms]]\nprofile = "%s"\n' % over)
        assert code == 4 and out["status"] == "reject", out
        assert out["rejected"]["%s-1" % over].startswith("no host has room for")


def test_a_vm_larger_than_every_host_is_refused_however_little_it_will_use(fleet):
    """Expected use of 10% fits any host's measured room; the VM's size fits none (Nova's
    max_unit: one VM gets at most the host's own vCPUs and memory)."""
    for profile, why in (("33x4@10%", "33 vCPUs"), ("4x129@10%", "129 GB"), ("64x256@10%", "64 vCPUs")):
        code, out, err = admit(fleet, '[[vms]]\nprofile = "%s"\n' % profile)
        assert code == 4 and out["status"] == "reject" and out["offer"] == {}, (profile, out, err)
        reason = out["rejected"]["%s-1" % profile]
        assert reason.startswith("larger than every known host: ") and why in reason, reason
        assert "the most a host has is 32 vCPUs and 128 GB" in reason
        assert out["allocation_basis"]["placed"] == 0  # Nova refuses it too
    # Wider than the small hosts only: all three go to the big one, though spreading by demand
    # alone would have put the later ones on small2 (as much room left, as a share).
    code, out, _err = admit(fleet, '[[vms]]\nprofile = "17x8@10%"\ncount = 3\n')
    assert code == 0 and set(out["offer"].values()) == {"big"}, out
    room = fleet / "room"
    done = vmstats(
        "headroom",
        fleet / "data",
        "--inventory",
        fleet / "hosts.toml",
        "--profile",
        "17x8@10%",
        "--horizon-days",
        "0",
        "--no-after",
        "-o",
        room,
    )
    assert done.returncode == 0, done.stderr
    rows = {r["host"]: r for r in json.loads((room / "headroom.json").read_text())["hosts"]}
    assert [rows[h]["fit_now"] for h in ("small1", "small2", "big")] == [0, 0, 14]  # 24 / 1.7 cores
    assert [rows[h]["alloc_fit_now"] for h in ("small1", "small2", "big")] == [0, 0, 7]  # (32 x 4.0 - 8) / 17
    assert rows["small1"]["binding_now"] == rows["small1"]["alloc_binding_now"] == "cpu"


def test_a_host_whose_every_vm_went_silent_is_unknown_not_empty(tmp_path):
    """Both VMs of dark1 stop sending 30 hours before the end (a host cut off from the
    aggregator looks exactly so): they count as stopped, but the host is not thereby free."""
    data = tmp_path / "data"
    until = MINUTE < MINUTES - 30 * 60
    write(data, "d1", "small1", 8, 32, 90.0, 90.0, seen=until)
    write(data, "d2", "small1", 8, 32, 90.0, 90.0, seen=until)
    write(data, "live", "small2", 4, 16, 50.0, 50.0)
    write(data, "other", "big", 4, 16, 50.0, 50.0)
    (tmp_path / "hosts.toml").write_text(HOSTS)
    # Room: small2 14 cores / 56 GB (one 8x32), big 30 / 120 (three); small1 would take two more.
    code, out, _err = admit(tmp_path, '[[vms]]\nprofile = "8x32"\ncount = 5\n')
    assert code == 3 and sorted(out["offer"].values()) == ["big"] * 3 + ["small2"], out
    assert out["basis"]["hosts_unknown"] == ["small1"] and "small1" not in out["headroom_left"]
    done = vmstats(
        "headroom",
        data,
        "--inventory",
        tmp_path / "hosts.toml",
        "--profile",
        "2x8",
        "--no-after",
        "--horizon-days",
        "0",
    )
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("small1"))
    assert line.split()[1] == "unknown", done.stdout
    assert "no VM reporting" in done.stdout and "fleet: 22 more fit now" in done.stdout  # 56 / 8 + 30 / 2


def headroom_rows(base, data, profile="2x8"):
    """headroom.json's rows by host for ``data`` on ``base``'s hosts.toml (no advice, no trend)."""
    done = vmstats("headroom", data, "--inventory", base / "hosts.toml", "--profile", profile,
                   "--no-after", "--horizon-days", "0", "-o", base / "room")  # fmt: skip
    assert done.returncode == 0, done.stderr
    return {r["host"]: r for r in json.loads((base / "room" / "headroom.json").read_text())["hosts"]}


def test_a_host_most_of_whose_vms_went_silent_is_unknown_not_offered_on_the_rest(tmp_path):
    """Two of small1's three VMs stop sending 30 hours before the end: what is measured of the
    host is one small VM, the lesser part of it, and the host may as well be cut off from the
    aggregator.  It is unknown and never offered; small2, with one VM of two silent (half, not
    most), is still offered."""
    data = tmp_path / "data"
    until = MINUTE < MINUTES - 30 * 60
    write(data, "gone1", "small1", 4, 16, 50.0, 50.0, seen=until)
    write(data, "gone2", "small1", 4, 16, 50.0, 50.0, seen=until)
    write(data, "left", "small1", 2, 8, 25.0, 25.0)
    write(data, "off", "small2", 4, 16, 50.0, 50.0, seen=until)
    write(data, "on", "small2", 4, 16, 50.0, 50.0)
    write(data, "other", "big", 4, 16, 50.0, 50.0)
    (tmp_path / "hosts.toml").write_text(HOSTS)
    code, out, _err = admit(tmp_path, '[[vms]]\nprofile = "4x16"\ncount = 12\n')
    assert code == 3 and "small1" not in out["offer"].values(), out
    assert out["basis"]["hosts_unknown"] == ["small1"] and "small1" not in out["headroom_left"]
    assert "small2" in out["offer"].values()
    rows = headroom_rows(tmp_path, data)
    assert [rows[h]["status"] for h in ("small1", "small2", "big")] == ["unknown", "ok", "ok"]
    assert (rows["small1"]["vms"], rows["small1"]["stopped"], rows["small1"]["fit_now"]) == (1, 2, None)


def write_paused(data):
    """small1: one VM stopped 30 hours before the end (8 vCPUs, 32 GB, using half of both while it
    ran) and one running at half of 4 vCPUs and 16 GB; the other hosts are full."""
    write(data, "paused", "small1", 8, 32, 50.0, 50.0, seen=MINUTE < MINUTES - 30 * 60)
    write(data, "run", "small1", 4, 16, 50.0, 50.0)
    write(data, "full2", "small2", 16, 64, 100.0, 100.0)
    write(data, "full3", "big", 32, 128, 100.0, 100.0)


def test_a_full_host_has_no_room_left_not_minus_nothing(tmp_path):
    """small1 filled to its limit, small2 and big full: the room left on each is 0, in the answer's
    JSON, on the terminal and in headroom.csv.  A flat week's trend is a float's noise above 0
    (1e-15 cores a week), and the room left after it was written -0.0, which reads as a host
    already past its limit."""
    write_paused(tmp_path / "data")
    (tmp_path / "hosts.toml").write_text(HOSTS)
    (tmp_path / "m.toml").write_text('[[vms]]\nprofile = "10x40"\n')
    args = ("admit", tmp_path / "m.toml", tmp_path / "data", "--inventory", tmp_path / "hosts.toml")
    answer, text = vmstats(*args, "--json"), vmstats(*args)
    assert answer.returncode == text.returncode == 0, answer.stderr
    left = json.loads(answer.stdout)["headroom_left"]
    assert left == {host: {"cpu_cores": 0.0, "mem_gb": 0.0} for host in ("big", "small1", "small2")}
    assert "-0.0" not in answer.stdout and "(left: 0.0 cores, 0.0 GB)" in text.stdout, text.stdout
    done = vmstats("headroom", tmp_path / "data", "--inventory", tmp_path / "hosts.toml", "--profile", "1x1",
                   "--no-after", "-o", tmp_path / "out")  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((tmp_path / "out" / "headroom.csv").open()))
    assert [(r["host"], r["cpu_headroom"], r["mem_headroom"]) for r in rows] == [
        ("small1", "10.0", "40.0"), ("small2", "0.0", "0.0"), ("big", "0.0", "0.0")]


def test_a_stopped_vm_keeps_room_for_what_it_used_unless_told_not_to(tmp_path):
    """The paused VM takes its 4 cores and 16 GB back when it starts: small1 has 16 - 2 - 4 cores
    and 64 - 8 - 16 GB of room, not the 14 and 56 its running VM alone leaves.  Its size (8 and
    32) is Nova's figure, beside; --no-reserve-stopped gives the room back."""
    data = tmp_path / "data"
    write_paused(data)
    (tmp_path / "hosts.toml").write_text(HOSTS)
    code, out, _err = admit(tmp_path, '[[vms]]\nprofile = "10x40"\n')
    assert code == 0 and out["offer"] == {"10x40-1": "small1"}, out
    assert out["headroom_left"]["small1"] == {"cpu_cores": 0.0, "mem_gb": 0.0}
    assert out["basis"]["reserve_stopped"] is True
    for more in ("10.01x40", "10x40.01", "12x48"):
        code, out, _err = admit(tmp_path, '[[vms]]\nprofile = "%s"\n' % more)
        assert code == 4 and out["offer"] == {}, (more, out)
    code, out, _err = admit(tmp_path, '[[vms]]\nprofile = "14x56"\n', "--no-reserve-stopped")
    assert code == 0 and out["offer"] == {"14x56-1": "small1"} and out["basis"]["reserve_stopped"] is False
    rows = headroom_rows(tmp_path, data)
    one = rows["small1"]
    assert (one["status"], one["vms"], one["stopped"]) == ("ok", 1, 1)
    assert (one["cpu_demand"], one["mem_demand"]) == (6, 24)
    assert (one["allocated_vcpus"], one["allocated_mem_gb"]) == (12, 48)


def test_a_vm_made_larger_counts_at_its_new_size_at_once(tmp_path):
    """small1's VM ran at 4 vCPUs and 16 GB, all of its CPU and half its memory, until an hour
    ago, when it was given 8 and 32; it has used as much since (half and a quarter).  What it used
    at the old size was all that size allowed: its CPU and memory shares count at the new size
    (8 cores, 16 GB), for the room left as for Nova's figure."""
    data = tmp_path / "data"
    (tmp_path / "hosts.toml").write_text(HOSTS)
    before = MINUTE < MINUTES - 60
    write(data, "grown", "small1", 4, 16, 100.0, 50.0, seen=before)
    write(data, "grown", "small1", 8, 32, 50.0, 25.0, seen=~before)
    write(data, "full2", "small2", 16, 64, 100.0, 100.0)
    write(data, "full3", "big", 32, 128, 100.0, 100.0)
    code, out, _err = admit(tmp_path, '[[vms]]\nprofile = "8x48"\n')
    assert code == 0 and out["offer"] == {"8x48-1": "small1"}, out
    assert out["headroom_left"]["small1"] == {"cpu_cores": 0.0, "mem_gb": 0.0}
    for more in ("8.01x48", "8x48.01"):
        code, out, _err = admit(tmp_path, '[[vms]]\nprofile = "%s"\n' % more)
        assert code == 4 and out["offer"] == {}, (more, out)
    grown = headroom_rows(tmp_path, data)["small1"]
    assert (grown["cpu_demand"], grown["mem_demand"]) == (8, 16)
    assert (grown["allocated_vcpus"], grown["allocated_mem_gb"]) == (8, 32)


@pytest.mark.parametrize("hours_ago, demand", [(1, (8, 32)), (23, (8, 32)), (48, (2, 16))])
def test_a_vm_made_smaller_is_judged_on_its_use_since_once_seen_through_a_day(tmp_path, hours_ago, demand):
    """small2's VM ran at 16 vCPUs and 64 GB, three quarters of both (12 cores, 48 GB), until
    ``hours_ago``, when it was given 8 and 32, of which it has used a quarter and a half (2
    cores, 16 GB).  What it used in the larger size says nothing of the smaller one: until it
    has run a day at its new size it counts all of it (8 cores, 32 GB), the most it can use, and
    its host's figure says so (by_allocation); after, its use since.  Never the 12 and 48 it
    can no longer use, and never its use since before a day has shown it."""
    data = tmp_path / "data"
    (tmp_path / "hosts.toml").write_text(HOSTS)
    before = MINUTE < MINUTES - 60 * hours_ago
    write(data, "shrunk", "small2", 16, 64, 75.0, 75.0, seen=before)
    write(data, "shrunk", "small2", 8, 32, 25.0, 50.0, seen=~before)
    write(data, "full1", "small1", 16, 64, 100.0, 100.0)
    write(data, "full3", "big", 32, 128, 100.0, 100.0)
    rows = headroom_rows(tmp_path, data)
    shrunk = rows["small2"]
    assert (shrunk["status"], shrunk["cpu_demand"], shrunk["mem_demand"]) == ("ok", *demand)
    assert shrunk["by_allocation"] == (1 if demand == (8, 32) else 0)
    assert (shrunk["allocated_vcpus"], shrunk["allocated_mem_gb"]) == (8, 32)
    room = "%gx%g" % (16 - demand[0], 64 - demand[1])
    code, out, _err = admit(tmp_path, '[[vms]]\nprofile = "%s"\n' % room)
    assert code == 0 and out["offer"] == {room + "-1": "small2"}, out
    assert out["headroom_left"]["small2"] == {"cpu_cores": 0.0, "mem_gb": 0.0}
    for more in ("%gx%g" % (16.01 - demand[0], 64 - demand[1]),
                 "%gx%g" % (16 - demand[0], 64.01 - demand[1])):
        code, out, _err = admit(tmp_path, '[[vms]]\nprofile = "%s"\n' % more)
        assert code == 4 and out["offer"] == {}, (more, out)


def test_a_memory_size_that_only_drifts_is_no_resize(tmp_path):
    """A balloon driver moves small2's VM's memory from 64 to 60 GB an hour ago (less than the
    report's 1.2x step of a resize): it keeps what it measured (48 GB at three quarters of 64),
    judged on its whole window, not counted at its new size in full as a VM made smaller."""
    data = tmp_path / "data"
    (tmp_path / "hosts.toml").write_text(HOSTS)
    before = MINUTE < MINUTES - 60
    write(data, "drift", "small2", 8, 64, 50.0, 75.0, seen=before)
    write(data, "drift", "small2", 8, 60, 50.0, 40.0, seen=~before)
    row = headroom_rows(tmp_path, data)["small2"]
    assert (row["cpu_demand"], row["mem_demand"], row["by_allocation"]) == (4, 48, 0)


@pytest.mark.parametrize(
    "profile, message",
    [
        ("0x4", "vms[0].profile: profile '0x4': vCPUs and GB must be positive"),
        ("4x16@0%", "vms[0].profile: profile '4x16@0%': expected use is a share above 0%"),
        ("4x16@150%", "vms[0].profile: profile '4x16@150%': expected use is a share above 0%"),
        ("9" * 400 + "x4", "vCPUs and GB must be finite"),
        ("four", "vms[0].profile: unknown profile 'four'"),
        # Each VM counts its expected use against the room: almost none fitted millions on a host.
        ("2x8@0.0001%", "vms[0].profile: profile '2x8@0.0001%': expected use of 0.0001% is below 1%"),
        ("2x8@30%/0.5%", "profile '2x8@30%/0.5%': expected use of 0.5% is below 1%"),
        ("1x0.000001", "profile '1x0.000001': a VM has at least 1 vCPU and 0.0625 GB (64 MB)"),
        ("0.001x4@50%", "profile '0.001x4@50%': a VM has at least 1 vCPU"),
    ],
)
def test_a_profile_with_impossible_numbers_says_which_not_unknown(fleet, tmp_path, profile, message):
    (tmp_path / "m.toml").write_text('[[vms]]\nprofile = "%s"\n' % profile)
    done = vmstats("admit", tmp_path / "m.toml", fleet / "data", "--inventory", fleet / "hosts.toml")
    assert done.returncode == 2 and done.stdout == "" and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


TRACES = ROOT / "tests" / "data" / "traces" / "bitbrains"
PAIR = """\
[[host]]
name = "pair"
vcpus = 8
mem_gb = 16
vms = ["bitbrains-410", "bitbrains-429"]
"""


def trace_minutes(path):
    """A Bitbrains file as the documented replay sends it: (ts, cores, GB, vCPUs, size GB)
    one-minute records.

    Rows of a VM that was off (no cores or capacity) are dropped; CPU and memory
    above 100% are clamped; each row is held for five minutes or until the next row.
    """
    import gzip

    rows = {}
    with gzip.open(path, "rt") as handle:
        next(handle)
        for line in handle:
            cells = [c.strip() for c in line.split(";")]
            if len(cells) != 11:
                continue
            ts, cores, cpu_capacity, cpu = int(cells[0]), float(cells[1]), float(cells[2]), float(cells[4])
            mem_capacity, mem_used = float(cells[5]), float(cells[6])
            if cores == 0 or cpu_capacity == 0 or mem_capacity == 0:
                continue
            mem_mb = max(1, round(mem_capacity / 1024))
            share = min(mem_used / mem_capacity, 1.0)
            rows[ts] = (min(cpu, 100.0) / 100 * int(cores), share * mem_mb / 1024, int(cores), mem_mb / 1024)
    stamps = sorted(rows)
    out = []
    for ts, nxt in zip(stamps, stamps[1:] + [None], strict=True):
        held = 5 if nxt is None else min(5, -(-(nxt - ts) // 60))
        out += [(ts + 60 * k, *rows[ts]) for k in range(held)]
    return out


def expected_level(records_by_vm, days):
    """The p99.9 of the VMs' hourly peaks summed, over the last ``days`` UTC days (cores, GB):
    a minute measured at a smaller size than the VM's newest counts its share of the newest; a
    minute with no record inside an hour with one counts the hour's peak; an hour with none
    counts the VM's own p99.9 of the minutes it was seen."""
    last = max(record[0] for records in records_by_vm.values() for record in records)
    start = (last // 86400 - days + 1) * 86400
    minutes = (last - last % 60 - start) // 60 + 1
    hours = -(-minutes // 60)
    total = np.zeros((2, hours * 60))
    for records in records_by_vm.values():
        use = np.full((2, hours * 60), np.nan)
        inside = [r for r in records if start <= r[0] <= last]
        newest = inside[-1][3:]
        for ts, cores, gb, vcpus, size in inside:  # time order: the last record of a minute wins
            use[:, (ts - start) // 60] = (cores * max(1, newest[0] / vcpus), gb * max(1, newest[1] / size))
        seen = ~np.isnan(use[0])
        with np.errstate(all="ignore"):
            peaks = np.repeat(np.nanmax(use.reshape(2, hours, 60), axis=2), 60, axis=1)
        for k in range(2):
            own = np.percentile(peaks[k][seen], 99.9, method="higher")
            total[k] += np.where(np.isnan(peaks[k]), own, peaks[k])
    return tuple(float(np.percentile(t[:minutes], 99.9, method="higher")) for t in total)


def test_a_replayed_trace_has_the_demand_and_room_worked_out_from_the_trace_itself(tmp_path):
    """Two Bitbrains VMs (one with an hour-long gap and a memory size that changes) replayed
    through a real server onto one host; the demand, room and offer checked against the trace."""
    from serverproc import serve

    (tmp_path / "hosts.toml").write_text(PAIR)
    with serve(tmp_path, "--flush-interval", "0.5") as server:
        sent = vmstats(
            "replay",
            "--format",
            "bitbrains",
            TRACES,
            "--server",
            "127.0.0.1:%d" % server.tcp_port,
            "--inventory",
            tmp_path / "hosts.toml",
        )
        assert sent.returncode == 0, sent.stderr
    assert server.returncode == 0, server.output
    cpu, mem = expected_level({p.name: trace_minutes(p) for p in TRACES.glob("*.csv.gz")}, days=7)
    room = tmp_path / "room"
    done = vmstats(
        "headroom",
        tmp_path / "data",
        "--inventory",
        tmp_path / "hosts.toml",
        "--days",
        7,
        "--horizon-days",
        0,
        "--profile",
        "1x1@50%",
        "--no-after",
        "-o",
        room,
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads((room / "headroom.json").read_text())["hosts"]
    assert (row["status"], row["vms"]) == ("ok", 2)
    assert row["cpu_demand"] == pytest.approx(cpu, abs=0.01) and row["mem_demand"] == pytest.approx(
        mem, abs=0.01
    )
    usable_cpu, usable_mem = 8 * 0.9, 16 - 0.5 - 1.6  # the built-in reserve and buffer
    assert row["cpu_headroom"] == pytest.approx(usable_cpu - cpu, abs=0.01)
    assert row["fit_now"] == int(min((usable_cpu - cpu) / 0.5, (usable_mem - mem) / 0.5))
    # Asking for exactly the room left (as a share of a 1x1 VM, to the hundredth) is accepted;
    # a hundredth of a core more is not.
    fit = "%.2f" % (np.floor(min(usable_cpu - cpu, usable_mem - mem) * 100 - 1) / 100)
    for ask, code in ((fit, 0), ("%.2f" % (usable_cpu - cpu + 0.02), 4)):
        (tmp_path / "m.toml").write_text('[[vms]]\nprofile = "%sx%s"\n' % (ask, ask))
        answer = vmstats(
            "admit",
            tmp_path / "m.toml",
            tmp_path / "data",
            "--inventory",
            tmp_path / "hosts.toml",
            "--days",
            7,
            "--horizon-days",
            0,
            "--json",
        )
        assert answer.returncode == code, (ask, answer.stdout, answer.stderr)


def test_room_taken_by_a_vm_created_an_hour_ago_is_not_offered_again(tmp_path):
    """A 16-vCPU host whose resident peaks at 12 cores at 03:00 each day has room for one
    4-core VM.  Once that VM runs (its first 40 minutes, at 15:00, at its full 4 cores) and the
    admission's hold has lapsed, the host must still be full: at 03:00 it will hold both."""
    data = tmp_path / "data"
    (tmp_path / "hosts.toml").write_text(HOSTS)
    write(data, "resident", "small1", 16, 32, np.where(HOUR_OF_DAY == 3, 75.0, 12.5), 50.0)
    for host in ("small2", "big"):  # the other hosts are full
        write(data, "full-" + host, host, 16 if host == "small2" else 32, 8, 100.0, 10.0)
    manifest = '[[vms]]\nprofile = "4x16"\n'
    code, out, _err = admit(tmp_path, manifest)
    assert code == 0 and out["offer"] == {"4x16-1": "small1"}
    assert out["headroom_left"]["small1"]["cpu_cores"] == 0.0  # 16 - 12 - 4
    write(data, "created", "small1", 4, 16, 100.0, 100.0, seen=MINUTE >= MINUTES - 40)
    code, out, _err = admit(tmp_path, manifest)
    assert code == 4 and out["rejected"]["4x16-1"].startswith("no host has room"), out
    assert out["headroom_left"]["small1"] == {"cpu_cores": 0.0, "mem_gb": 32.0}  # 64 - 16 - 16


def test_an_offer_past_the_memory_ratio_says_so_beside_the_accept(tmp_path):
    """Memory is not overcommitted (ram_ratio 1.0): small2's 64 GB are all allocated to one VM
    that uses a quarter of them.  Measured room takes a 2x8@50% VM; the answer says that the
    host is then allocated past its ratio, which a cloud that enforces it refuses."""
    data = tmp_path / "data"
    (tmp_path / "hosts.toml").write_text(HOSTS)
    write(data, "quiet", "small2", 16, 64, 25.0, 25.0)
    write(data, "full1", "small1", 16, 64, 100.0, 100.0)
    write(data, "full2", "big", 32, 128, 100.0, 100.0)
    code, out, _err = admit(tmp_path, '[[vms]]\nprofile = "2x8@50%"\n')
    assert code == 0 and out["offer"] == {"2x8@50%-1": "small2"}
    assert out["allocation_basis"]["placed"] == 0
    assert out["past_allocation_ratios"] == {"small2": {"vcpus": [18.0, 64.0], "mem_gb": [72.0, 64.0]}}
    (tmp_path / "m.toml").write_text('[[vms]]\nprofile = "2x8@50%"\n')
    text = vmstats("admit", tmp_path / "m.toml", data, "--inventory", tmp_path / "hosts.toml")
    assert text.returncode == 0
    assert "small2: allocation past the inventory's ratios (18 of 64 vCPUs, 72 of 64 GB)" in text.stdout


#: HOSTS with small1 also claiming the VMs named web-* (they send no host tag).
HOSTS_GLOB = HOSTS.replace('name = "small1"\n', 'name = "small1"\nvms = ["web-*"]\n')
#: When the VMs of write_gone() last sent: the end of the first of the three days.
GONE_AT = "2026-01-01T23:59:00Z"


def write_gone(data):
    """web-1 (8x32, placed on small1 by the inventory's glob) and old (4x16, tagged small2) send
    only on the first day, so a window of the last two days holds nothing of them; web-2 (2x8
    at half) and live2 (4x16 at half) run on; big is full."""
    first_day = MINUTE < 1440
    write(data, "web-1", None, 8, 32, 50.0, 50.0, seen=first_day)
    write(data, "web-2", None, 2, 8, 50.0, 50.0)
    write(data, "old", "small2", 4, 16, 50.0, 50.0, seen=first_day)
    write(data, "live2", "small2", 4, 16, 50.0, 50.0)
    write(data, "full3", "big", 32, 128, 100.0, 100.0)


def test_vms_silent_since_before_the_window_are_named_and_keep_their_room(tmp_path):
    """A VM its host's glob or its host tag places there, silent for longer than the window, was
    left out of the answer as if it had never been: its host offered its whole size.  It is
    named, with when it was last seen, as unknown; its size is kept as its room (nothing of its
    use was measured in the window), and its allocation counts.  small1: web-2's 1 core and
    4 GB and web-1's 8 and 32 leave 7 cores and 28 GB; small2: 2 and 8 and old's 4 and 16
    leave 10 and 40.  --no-reserve-stopped gives the room back, as for any stopped VM; the VMs
    are still named."""
    data = tmp_path / "data"
    write_gone(data)
    (tmp_path / "hosts.toml").write_text(HOSTS_GLOB)
    unknown = [{"vm": "web-1", "host": "small1", "last_seen": GONE_AT},
               {"vm": "old", "host": "small2", "last_seen": GONE_AT}]  # fmt: skip
    done = vmstats("headroom", data, "--inventory", tmp_path / "hosts.toml", "--profile", "2x8", "--no-after",
                   "--horizon-days", "0", "--days", "2", "-o", tmp_path / "room")  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "room" / "headroom.json").read_text())
    rows = {r["host"]: r for r in result["hosts"]}
    assert result["fleet"]["vms_unknown"] == unknown
    assert [(rows[h]["status"], rows[h]["unheard"]) for h in ("small1", "small2")] == [("ok", 1), ("ok", 1)]
    assert (rows["small1"]["cpu_demand"], rows["small1"]["mem_demand"]) == (9, 36)
    assert (rows["small1"]["allocated_vcpus"], rows["small1"]["allocated_mem_gb"]) == (10, 40)
    assert (rows["small2"]["cpu_demand"], rows["small2"]["mem_demand"]) == (6, 24)
    assert ("not heard from in the window, unknown (their room is not offered): web-1 on small1 (last seen "
            "%s), old on small2 (last seen %s)" % (GONE_AT, GONE_AT)) in done.stdout.splitlines()
    assert "unheard" in (tmp_path / "room" / "headroom.csv").read_text().splitlines()[0].split(",")
    manifest = '[[vms]]\nprofile = "%s"\ncount = 2\nanti_affinity = true\n'
    code, out, _err = admit(tmp_path, manifest % "7x28", "--days", "2")
    assert code == 0 and sorted(out["offer"].values()) == ["small1", "small2"], out
    assert out["headroom_left"]["small1"] == {"cpu_cores": 0.0, "mem_gb": 0.0}
    assert out["basis"]["vms_unknown"] == unknown
    for more in ("7.01x28", "7x28.01"):
        code, out, _err = admit(tmp_path, manifest % more, "--days", "2")
        assert code == 3 and list(out["offer"].values()) == ["small2"], (more, out)
    code, out, _err = admit(tmp_path, manifest % "15x60", "--days", "2", "--no-reserve-stopped")
    assert code == 3 and list(out["offer"].values()) == ["small1"], out
    assert out["basis"]["vms_unknown"] == unknown
    done = vmstats("admit", tmp_path / "m.toml", data, "--inventory", tmp_path / "hosts.toml", "--days", "2")
    assert done.returncode == 4 and "web-1 on small1 (last seen %s)" % GONE_AT in done.stdout, done.stdout


def test_a_vm_whose_logs_in_the_window_are_junk_is_not_heard_from_there(tmp_path):
    """old (4x16, tagged small2) sent on the first day only, then left a day file of random bytes
    on each day of the window.  It was counted among the unplaced VMs, of no host and no use, so
    small2 was offered old's 4 cores and 16 GB (an 11x44 VM placed there, into 14 and 56 free).
    It is read as a VM with no file in the window is: not heard from there, on the host of its
    last record, keeping its size (10 and 40 free); its junk files are named as skipped."""
    data = tmp_path / "data"
    write_gone(data)
    junk = []
    for day in ("2026-01-02", "2026-01-03"):
        path = Path(logstore.day_path(str(data), "old", day))
        path.write_bytes(random.Random(day).randbytes(4096))
        junk.append(str(path))
    (tmp_path / "hosts.toml").write_text(HOSTS_GLOB)
    unknown = [{"vm": "web-1", "host": "small1", "last_seen": GONE_AT},
               {"vm": "old", "host": "small2", "last_seen": GONE_AT}]  # fmt: skip
    done = vmstats("headroom", data, "--inventory", tmp_path / "hosts.toml", "--profile", "2x8", "--no-after",
                   "--horizon-days", "0", "--days", "2", "-o", tmp_path / "room")  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "room" / "headroom.json").read_text())
    assert result["fleet"]["vms_unknown"] == unknown and result["fleet"]["unplaced_vms"] == []
    small2 = next(r for r in result["hosts"] if r["host"] == "small2")
    assert (small2["cpu_demand"], small2["mem_demand"], small2["unheard"]) == (6, 24, 1)
    assert [f["path"] for f in result["basis"]["skipped_files"]] == junk
    assert "old on small2 (last seen %s)" % GONE_AT in done.stdout and not any(
        line.startswith("unplaced VMs") for line in done.stdout.splitlines()), done.stdout
    code, out, err = admit(tmp_path, '[[vms]]\nprofile = "11x44"\n', "--days", "2")
    assert code == 4 and out["offer"] == {}, out
    assert out["basis"]["vms_unknown"] == unknown and out["basis"]["unplaced_vms"] == 0
    assert all(path in err for path in junk), err


def test_the_stopped_share_past_which_a_host_is_unknown_is_a_setting(tmp_path):
    """Half of small1's and small2's VMs are silent: at the default 50% both are still offered,
    at --stopped-share-max 40 neither is (more than 40% of their VMs silent).  A share outside
    0-100 is one refused line."""
    data = tmp_path / "data"
    write_gone(data)
    (tmp_path / "hosts.toml").write_text(HOSTS_GLOB)
    manifest = '[[vms]]\nprofile = "1x4"\n'
    code, out, _err = admit(tmp_path, manifest, "--days", "2")
    assert code == 0 and out["basis"]["hosts_unknown"] == [] and out["basis"]["stopped_share_max"] == 0.5
    code, out, _err = admit(tmp_path, manifest, "--days", "2", "--stopped-share-max", "40")
    assert code == 4 and out["basis"]["hosts_unknown"] == ["small1", "small2"], out
    assert out["basis"]["stopped_share_max"] == 0.4
    done = vmstats("headroom", data, "--inventory", tmp_path / "hosts.toml", "--profile", "2x8", "--no-after",
                   "--days", "2", "--stopped-share-max", "40", "-o", tmp_path / "room")  # fmt: skip
    rows = {r["host"]: r for r in json.loads((tmp_path / "room" / "headroom.json").read_text())["hosts"]}
    assert [rows[h]["status"] for h in ("small1", "small2", "big")] == ["unknown", "unknown", "ok"]
    for bad in ("101", "-1", "half", "nan"):
        for command in (["headroom", data, "--profile", "2x8"], ["admit", tmp_path / "m.toml", data]):
            done = vmstats(*command, "--inventory", tmp_path / "hosts.toml", "--stopped-share-max", bad)
            assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, (bad, done.stderr)
            assert done.stderr.startswith("Error: Invalid value for '--stopped-share-max'"), done.stderr


def test_a_window_with_older_logs_starts_on_its_first_day_though_their_vms_have_stopped(tmp_path):
    """old sent on the first day only; late starts at noon of the second.  Asked for the last two
    days, the logs hold a day before them, so the window is those two days, as the report's is.
    It started at late's first record, since no VM heard from in the window had older logs:
    admit and headroom planned on 36 hours and said "1 day of the 2 asked", and the report's
    capacity section rested on other minutes than the report beside it."""
    data = tmp_path / "data"
    write(data, "old", "small1", 4, 16, 50.0, 50.0, seen=MINUTE < 1440)
    write(data, "late", "small2", 4, 16, 50.0, 50.0, seen=MINUTE >= 1440 + 720)
    (tmp_path / "hosts.toml").write_text(HOSTS)
    window = {"start": "2026-01-02T00:00:00Z", "end": "2026-01-03T23:59:00Z", "minutes": 2880,
              "first_day": "2026-01-02", "last_day": "2026-01-03", "days": 2}
    code, out, err = admit(tmp_path, '[[vms]]\nprofile = "1x4"\n', "--days", "2")
    assert code == 0 and out["basis"]["window"] == window and out["basis"]["days_asked"] == 2, err
    assert out["basis"]["vms_unknown"] == [{"vm": "old", "host": "small1", "last_seen": GONE_AT}]
    room = vmstats("headroom", data, "--inventory", tmp_path / "hosts.toml", "--profile", "1x4", "--no-after",
                   "--days", "2")  # fmt: skip
    assert room.returncode == 0, room.stderr
    said = "over 2026-01-02 .. 2026-01-03, 2 days (2026-01-02T00:00:00Z to 2026-01-03T23:59:00Z)"
    assert room.stdout.splitlines()[0].endswith(said + ", coverage gate 80%"), room.stdout
    out = tmp_path / "report"
    done = vmstats("report", data, "-o", out, "--inventory", tmp_path / "hosts.toml", "--profile", "1x4",
                   "--days", "2", "--no-cache")  # fmt: skip
    assert done.returncode == 0, done.stderr
    meta = json.loads((out / "report.json").read_text())["meta"]
    assert meta["window"]["start"] == window["start"] and not meta["window"]["clipped"]
    assert meta["capacity"]["basis"]["window"] == window


def test_the_report_and_its_summary_name_the_vms_not_heard_from(tmp_path):
    """The report's capacity section names the VMs silent since before its window on the page and
    in report.json; the summary it leaves carries them, so ``admit --summary`` names them too.  A
    summary from before they were kept (version 3) is refused rather than read as naming none."""
    data = tmp_path / "data"
    write_gone(data)
    (tmp_path / "hosts.toml").write_text(HOSTS_GLOB)
    out = tmp_path / "report"
    done = vmstats("report", data, "-o", out, "--inventory", tmp_path / "hosts.toml", "--profile", "2x8",
                   "--days", "2", "--no-cache")  # fmt: skip
    assert done.returncode == 0, done.stderr
    unknown = [{"vm": "web-1", "host": "small1", "last_seen": GONE_AT},
               {"vm": "old", "host": "small2", "last_seen": GONE_AT}]  # fmt: skip
    section = json.loads((out / "report.json").read_text())["meta"]["capacity"]
    assert section["fleet"]["vms_unknown"] == unknown
    assert ("web-1 on small1 (last seen %s), old on small2 (last seen %s)." % (GONE_AT, GONE_AT)
            in (out / "report.html").read_text())
    (tmp_path / "m.toml").write_text('[[vms]]\nprofile = "1x4"\n')
    done = vmstats("admit", tmp_path / "m.toml", "--summary", out / "capacity-summary.json", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["basis"]["vms_unknown"] == unknown, done.stderr
    summary = json.loads((out / "capacity-summary.json").read_text())
    for version, change, message in (
        (6, {}, "capacity summary of version 6, expected 7"),
        (7, {"unheard": ["web-1"]},
         "hosts[0].unheard holds an entry that is not a VM and when it was last seen"),
    ):
        hosts = [dict(summary["hosts"][0], **change), *summary["hosts"][1:]]
        shaped = dict(summary, version=version, hosts=hosts)
        (tmp_path / "old.json").write_text(json.dumps(shaped))
        done = vmstats("admit", tmp_path / "m.toml", "--summary", tmp_path / "old.json")
        assert done.returncode == 2 and done.stderr.strip().endswith(message), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_a_vm_silent_since_before_the_window_on_a_host_the_inventory_lacks_is_unplaced(tmp_path):
    """lost (4x16) last sent on the first day, tagged small9, which the inventory does not list: a
    VM so silent on a listed host keeps its size as its room, and this one was named nowhere, its
    room counted on no host and withheld from none.  It is unplaced, its size its use, as long as
    stopped VMs keep their room."""
    data = tmp_path / "data"
    write_gone(data)
    write(data, "lost", "small9", 4, 16, 50.0, 50.0, seen=MINUTE < 1440)
    (tmp_path / "hosts.toml").write_text(HOSTS_GLOB)
    sized = {"allocated_vcpus": 4.0, "allocated_mem_gb": 16.0}  # allocated, stopped or not, as Nova counts it
    use = {"cpu_cores": 4.0, "mem_gb": 16.0, **sized,
           "by_host_tag": [{"host_tag": "small9", "vms": 1, "cpu_cores": 4.0, "mem_gb": 16.0, **sized}]}
    code, out, _err = admit(tmp_path, '[[vms]]\nprofile = "1x4"\n', "--days", "2")
    assert code == 0 and out["basis"]["unplaced_vms"] == 1 and out["basis"]["unplaced_use"] == use, out
    withheld = out["withheld_for_unplaced"].values()
    assert sum(w["cpu_cores"] for w in withheld) == pytest.approx(4.0, abs=0.01)
    assert sum(w["mem_gb"] for w in withheld) == pytest.approx(16.0, abs=0.01)
    code, out, _err = admit(tmp_path, '[[vms]]\nprofile = "1x4"\n', "--days", "2", "--no-reserve-stopped")
    tag = out["basis"]["unplaced_use"]["by_host_tag"][0]
    assert code == 0 and tag == dict(use["by_host_tag"][0], cpu_cores=0.0, mem_gb=0.0), out
    assert out["withheld_for_unplaced"] == {}
    done = vmstats("headroom", data, "--inventory", tmp_path / "hosts.toml", "--profile", "1x4", "--no-after",
                   "--days", "2")  # fmt: skip
    assert done.returncode == 0 and "host tag small9 (not in the inventory): 1 VM, 4.0 cores, 16.0 GB" in \
        done.stdout and "e.g. lost" in done.stdout, done.stdout + done.stderr
