"""The VMs no host of the inventory claims, counted where the allocation view and the caps count.

Small fleets of two hours' records are written as real logs and asked about through ``vmstats
headroom`` and ``vmstats admit``; every expected figure is worked out here by hand (docstrings),
importing nothing from vmstats.capacity but the pure rule the shares follow.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from test_report_stats import T0, series, write_records

from vmstats.capacity import unplaced

ROOT = Path(__file__).resolve().parent.parent
MINUTES = 120

#: Four hosts capped at 10 instances each; no reserve, no buffer, so room is exact.
CAPPED = """\
[defaults]
reserve_mem_gb = 0
buffer = 0
max_instances = 10
""" + "".join('\n[[host]]\nname = "cap%d"\nvcpus = 32\nmem_gb = 128\n' % k for k in range(1, 5))

#: Why the fifth 1x2@10% VM on each capped host is refused, once each host's share is withheld.
AT_CAP = ("every host with room for 0.10 cores and 0.20 GB of demand is at its instance cap (max_instances): "
          + ", ".join("cap%d (3 instances of it withheld for unplaced VMs)" % k for k in range(1, 5)))


def vmstats(*args):
    return subprocess.run([sys.executable, "-m", "vmstats", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def write(data, vm, host, vcpus, mem_gb, cpu_pct, mem_pct):
    """One VM's records, a minute apart from T0 for MINUTES, with its host tag."""
    ts = T0 + 60 * np.arange(MINUTES)
    cpu, mem = np.full(MINUTES, float(cpu_pct)), np.full(MINUTES, float(mem_pct))
    records = series(vm, ts, cpu, mem, vcpus=vcpus, mem_mb=int(mem_gb * 1024))
    write_records(data, [r._replace(host=host) for r in records])


def write_capped(data):
    """4 VMs of 1x2 on each of cap1..cap4, and 10 more that tag their hosts by other names
    (cap1.example.com ...): unplaced, so no host's max_instances counted them."""
    for k in range(1, 5):
        for j in range(4):
            write(data, "vm-%d-%d" % (k, j), "cap%d" % k, 1, 2, 10, 25)
    for j in range(10):
        write(data, "lost-%d" % j, "cap%d.example.com" % (j % 4 + 1), 1, 2, 10, 25)


def test_unplaced_vms_count_against_the_capped_hosts_max_instances(tmp_path):
    """Each capped host holds 4 of its 10 and was offered 6 more 1x2@10%, 24 in all, though 10
    VMs the inventory does not place run on these hosts and count against their caps.  Their
    number is now shared as their sizes are, in proportion to each host's instances left
    (6 of 24: 2.5 each) and counted whole (3), so each host is offered 3, 12 in all, by headroom
    and admission (from the logs and from the summary) alike, on both bases; the refusal names
    the share withheld, as do the JSON and the terminal."""
    write_capped(tmp_path / "data")
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(CAPPED)
    shares = {"cap%d" % k: 3 for k in range(1, 5)}
    out = tmp_path / "out"
    done = vmstats("headroom", tmp_path / "data", "--inventory", hosts, "--profile", "1x2@10%", "--no-after",
                   "-o", out)  # fmt: skip
    assert done.returncode == 0, done.stderr
    counted = json.loads((out / "headroom.json").read_text())
    for row in counted["hosts"]:
        assert (row["fit_now"], row["binding_now"], row["alloc_fit_now"]) == (3, "instances", 3), row
        assert row["instances_withheld"] == 3, row
    fleet = counted["fleet"]
    assert (fleet["fit_now"], fleet["alloc_fit_now"]) == (12, 12)
    assert fleet["instances_withheld_for_unplaced"] == shares
    said = "; and from the capped hosts' max_instances (cap1 3, cap2 3, cap3 3, cap4 3)"
    assert said in done.stdout, done.stdout
    summary = json.loads((out / "capacity-summary.json").read_text())
    assert summary["version"] == 7 and summary["instances_withheld_for_unplaced"] == shares
    manifest = tmp_path / "m.toml"
    manifest.write_text('name = "fill"\n[[vms]]\nprofile = "1x2@10%"\ncount = 20\n')
    for source in ((tmp_path / "data", "--inventory", hosts), ("--summary", out / "capacity-summary.json")):
        answer = vmstats("admit", manifest, *source, "--json")
        assert answer.returncode == 3, answer.stderr
        answer = json.loads(answer.stdout)
        assert sorted(answer["offer"].values()) == sorted(["cap1", "cap2", "cap3", "cap4"] * 3), answer
        assert set(answer["rejected"].values()) == {AT_CAP} and len(answer["rejected"]) == 8
        assert answer["allocation_basis"]["placed"] == 12
        assert answer["instances_withheld_for_unplaced"] == shares
    text = vmstats("admit", manifest, tmp_path / "data", "--inventory", hosts)
    assert text.returncode == 3 and said in text.stdout and AT_CAP in text.stdout, text.stdout
    # The report's page says the same shares as headroom's terminal.
    report = vmstats("report", tmp_path / "data", "-o", tmp_path / "report", "--inventory", hosts,
                     "--profile", "1x2@10%", "--no-cache")  # fmt: skip
    assert report.returncode == 0, report.stderr
    page = " ".join((tmp_path / "report" / "report.html").read_text().split())
    assert ('<span id="capacity-unplaced-instances">counted against the capped hosts\' max_instances: '
            'cap1 3, cap2 3, cap3 3, cap4 3</span>') in page, page


def test_an_uncapped_host_takes_none_of_the_unplaced_vms_and_a_share_counts_whole():
    """The rule the shares follow: in proportion to the instances each capped host may still take,
    a part of a VM counted as a whole one, no more than a host's room; a host without a cap takes
    none (its unlimited room would take them all and leave the capped hosts theirs whole)."""
    rooms = {"a": 6.0, "b": 6.0, "c": 6.0, "d": 6.0, "open": float("inf")}
    assert unplaced.instance_shares(rooms, 10) == {"a": 3, "b": 3, "c": 3, "d": 3}
    assert unplaced.instance_shares(rooms, 40) == {"a": 6, "b": 6, "c": 6, "d": 6}
    assert unplaced.instance_shares({"a": 1.0, "full": 0.0}, 1) == {"a": 1}
    assert unplaced.instance_shares({"open": float("inf")}, 5) == unplaced.instance_shares(rooms, 0) == {}


def test_an_offer_past_the_ratios_counts_the_unplaced_vms_share_of_the_allocation(tmp_path):
    """solo (16 vCPUs, 64 GB, ratios 1.0) holds r1 (8x16) and, by another name, u1 (8x16): Nova's
    room is 16 - 8 - 8 = 0 vCPUs, as the allocation basis beside the answer says (it places none).
    The demand offer puts 2x4@10% there, 18 of 16 vCPUs allocated, yet past_allocation_ratios
    counted r1 and the offer only (10 of 16) and named no host: Nova would refuse the VM the
    answer accepted without a word.  It now reads the allocation basis's own figures."""
    data = tmp_path / "data"
    write(data, "r1", "solo", 8, 16, 10, 10)
    write(data, "u1", "solo.lab", 8, 16, 10, 10)
    hosts = tmp_path / "hosts.toml"
    hosts.write_text('[defaults]\nreserve_mem_gb = 0\nbuffer = 0\ncpu_ratio = 1.0\nram_ratio = 1.0\n\n'
                     '[[host]]\nname = "solo"\nvcpus = 16\nmem_gb = 64\n')
    manifest = tmp_path / "m.toml"
    manifest.write_text('[[vms]]\nprofile = "2x4@10%"\n')
    answer = vmstats("admit", manifest, data, "--inventory", hosts, "--json")
    assert answer.returncode == 0, answer.stderr
    answer = json.loads(answer.stdout)
    assert answer["offer"] == {"2x4@10%-1": "solo"}
    assert answer["allocation_basis"]["placed"] == 0
    assert answer["allocation_basis"]["withheld_for_unplaced"] == {"solo": {"vcpus": 8.0, "mem_gb": 16.0}}
    assert answer["past_allocation_ratios"] == {"solo": {"vcpus": [18.0, 16.0], "mem_gb": [36.0, 64.0]}}
    text = vmstats("admit", manifest, data, "--inventory", hosts)
    said = "solo: allocation past the inventory's ratios (18 of 16 vCPUs, 36 of 64 GB)"
    assert said in text.stdout, text.stdout
