"""Containers of fractional sizes, from the real server to the report's sizing and bill.

A day of records is sent to the server over TCP as the agent spells them
(``vcpus=1.5``, ``vcpus=0.25``, a whole VM's ``vcpus=4i``); the report reads its
logs.  A size already fractional is resized in steps of ``fractional_vcpu_step``
(0.25) at prorated unit prices; a whole VM is still told whole vCPUs
(docs/POLICY.md, "Fractional sizes").
"""

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from serverproc import serve

from vmstats import protocol
from vmstats.protocol import Record
from vmstats.report.settings import InputError, coerce

ROOT = Path(__file__).resolve().parent.parent
#: Unit prices only: a size costs vcpus x 0.04 + GB x 0.005 an hour, 730 hours a month.
PRICES = 'currency = "USD"\nhours_per_month = 730\nvcpu_hour = 0.04\ngb_ram_hour = 0.005\n'


def monthly(vcpus: float, gb: float) -> float:
    return (vcpus * 0.04 + gb * 0.005) * 730


def day_of_records(end: int) -> list:
    records = []
    for k, ts in enumerate(range(end - 1440 * 60, end, 60)):
        busy = 15.0 + (k % 5)  # at most 19 % of its size
        work = dict(disk_r=5e5, disk_w=5e5, net_rx=2e5, net_tx=2e5)
        records += [
            Record(vm="ct-big", ts=ts, cpu=busy, mem=30.0, vcpus=1.5, mem_mb=1024, **work),
            Record(vm="ct-quarter", ts=ts, cpu=95.0, mem=50.0, vcpus=0.25, mem_mb=1024, **work),
            Record(vm="vm-four", ts=ts, cpu=busy, mem=30.0, vcpus=4, mem_mb=4096, **work),
        ]
    return records


def test_fractional_sizes_are_sized_billed_and_shown_as_sent(tmp_path):
    end = int(time.time()) // 60 * 60 - 60
    records = day_of_records(end)
    payload = b"".join(protocol.encode_record(r).encode() + b"\n" for r in records)
    assert b"vcpus=1.5," in payload and b"vcpus=0.25," in payload and b"vcpus=4i," in payload
    with serve(tmp_path, "--flush-interval", "0.5") as server:
        assert server.send_synced(payload, "day", timeout=60) == ["#!ack", "day", str(len(records)), "0"]
    assert server.returncode == 0, server.output
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "vmstats", "report", str(tmp_path / "data"), "-o", str(out), "--days", "2",
         "--prices", str(prices), "--set", "min_days=0"],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    by_vm = {v["vm"]: v for v in json.loads((out / "report.json").read_text())["vms"]}

    big, quarter, four = by_vm["ct-big"], by_vm["ct-quarter"], by_vm["vm-four"]
    # Sizes as sent, in JSON a whole one still an integer.
    assert (big["vcpus"], quarter["vcpus"], four["vcpus"]) == (1.5, 0.25, 4)
    assert type(four["vcpus"]) is int
    # Billed prorated: a quarter of a vCPU costs a quarter of one.
    assert big["monthly_cost"] == pytest.approx(monthly(1.5, 1), abs=0.01)
    assert quarter["monthly_cost"] == pytest.approx(monthly(0.25, 1), abs=0.01)
    assert quarter["usage_cost"] == pytest.approx(0.95 * 0.25 * 0.04 * 730 + 0.5 * 1 * 0.005 * 730, abs=0.02)
    # 1.5 vCPU busy at most 19 %: needs 1.5 x 0.19 x 1.3 = 0.37 vCPU, told 0.5 (a step of 0.25),
    # and 0.39 GB of its 1 GB, told 0.5 GB.
    assert big["category"] == "downsize", big
    assert (big["recommended_vcpus"], big["recommended_mem_gb"]) == (0.5, 0.5)
    assert big["recommendation"] == "resize to 0.5 vCPU / 0.5 GB"
    assert big["monthly_saving"] == pytest.approx(monthly(1.5, 1) - monthly(0.5, 0.5), abs=0.01)
    # A quarter pinned at 95 %: told the next step up, 0.5 vCPU, not a whole one.
    assert quarter["category"] == "upsize", quarter
    assert (quarter["recommended_vcpus"], quarter["recommended_mem_gb"]) == (0.5, 1)
    assert quarter["recommendation"].startswith("resize up to 0.5 vCPU / 1 GB")
    assert "of 0.25 vCPU" in quarter["reason"]
    # A whole VM needing 4 x 0.19 x 1.3 = 0.99 vCPU is told a whole one, from the ladder.
    assert four["category"] == "downsize" and four["recommended_vcpus"] == 1, four
    assert four["recommendation"] == "resize to 1 vCPU / 2 GB"

    with open(out / "report.csv", newline="") as handle:
        rows = {row["vm"]: row for row in csv.DictReader(handle)}
    assert [rows[vm]["vcpus"] for vm in ("ct-big", "ct-quarter", "vm-four")] == ["1.5", "0.25", "4"]
    html = (out / "report.html").read_text()
    assert "0.25 vCPU" in html and "0 vCPU" not in html

    # Capacity: a minute's demand is cpu % x vcpus.  All three peak together every fifth minute:
    # 0.19 x 1.5 + 0.95 x 0.25 + 0.19 x 4 = 1.2825 cores (the sizes rounded up, 1.5 as 2 and
    # 0.25 as 1, would make it 2.09); memory 0.3 + 0.5 + 1.2 GB.
    hosts = tmp_path / "hosts.toml"
    hosts.write_text('[[host]]\nname = "h1"\nvcpus = 8\nmem_gb = 32\nvms = ["ct-*", "vm-*"]\n')
    room = tmp_path / "room"
    result = subprocess.run(
        [sys.executable, "-m", "vmstats", "headroom", str(tmp_path / "data"), "--inventory", str(hosts),
         "--profile", "1x1", "--percentile", "max", "--peak-minutes", "1", "--horizon-days", "0",
         "--days", "2", "--coverage-min", "0", "--no-after", "-o", str(room)],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    [host] = json.loads((room / "headroom.json").read_text())["hosts"]
    assert host["cpu_demand"] == pytest.approx(1.2825, abs=1e-3), host
    assert host["mem_demand"] == pytest.approx(2.0, abs=1e-3), host
    assert host["allocated_vcpus"] == pytest.approx(5.75), host


@pytest.mark.parametrize("value", ["0", "0.0005", "1.5", "-0.25"])
def test_a_fractional_step_outside_what_a_size_holds_is_refused(value):
    with pytest.raises(InputError, match="fractional_vcpu_step"):
        coerce("fractional_vcpu_step", value, "--set")
    assert coerce("fractional_vcpu_step", "0.1", "--set") == 0.1
