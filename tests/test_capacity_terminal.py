"""What ``vmstats admit`` and ``vmstats headroom`` print for a large request or fleet, read from the
real commands: the answer and the basis stay on the screen, the rest is counted, the JSON keeps all.

A manifest of 20,000 small VMs on the capacity tests' two-host fleet printed a line per rejected
VM (each with the same reason) and only then the ratios, the basis and the unplaced load: at
100,000 VMs 7 MB, the lines that matter scrolled away.
"""

import json
from collections import Counter

import numpy as np
from capacitydata import write_fleet
from test_capacity_commands import vmstats
from test_capacity_edges import HOSTS, MINUTES, write

#: Hosts (and reasons) the terminal lists a line each, and names a line gives: docs/CAPACITY.md.
MOST_LINES, MOST_NAMES = 20, 5
#: Names a sentence of the report page's capacity section gives of a list: docs/CAPACITY.md.
PAGE_NAMES = 20
HINT = "  (--json lists every VM: the host offered it, or why it was rejected)"


def grouped(count: int) -> str:
    """A count as every capacity output says it, its thousands grouped: 20,003."""
    return "{:,}".format(count)


def few(names):
    """The names as the terminal gives a list: the first five, then how many more."""
    more = ", ... and %s more" % grouped(len(names) - MOST_NAMES) if len(names) > MOST_NAMES else ""
    return ", ".join(names[:MOST_NAMES]) + more


def in_order(name):
    """web-2 before web-10: the order of the manifest's VMs of one entry (the JSON sorts them as text)."""
    entry, _dash, number = name.rpartition("-")
    return entry, int(number)


def by_reason(rejected: dict) -> list[tuple[str, list[str]]]:
    """The reasons, the most rejected first (ties by reason), each with its VMs in order."""
    out: dict[str, list[str]] = {}
    for vm, why in rejected.items():
        out.setdefault(why, []).append(vm)
    return sorted(((why, sorted(vms, key=in_order)) for why, vms in out.items()),
                  key=lambda group: (-len(group[1]), group[0]))


def test_a_large_request_prints_its_rejected_vms_grouped_by_why_and_its_basis_last(tmp_path):
    write_fleet(tmp_path / "data", tmp_path / "hosts.toml")
    (tmp_path / "big.toml").write_text(
        'name = "big"\n'
        '[[vms]]\nname = "vm"\nprofile = "1x1@1%"\ncount = 20000\n'
        '[[vms]]\nname = "huge"\nprofile = "128x1024"\ncount = 3\n'
    )
    args = ("admit", tmp_path / "big.toml", tmp_path / "data", "--inventory", tmp_path / "hosts.toml")
    text, answer = vmstats(*args), vmstats(*args, "--json")
    assert text.returncode == answer.returncode == 3, text.stderr + answer.stderr
    # The JSON is whole: every VM asked for is offered a host or rejected with its reason.
    doc = json.loads(answer.stdout)
    assert doc["asked"] == 20003 and len(doc["offer"]) + len(doc["rejected"]) == 20003
    assert doc["placed"] == len(doc["offer"]) and doc["rejected"]["huge-3"]
    groups = by_reason(doc["rejected"])
    assert len(groups) == 2 and len(groups[0][1]) > 18000, [why for why, _vms in groups]

    lines = text.stdout.splitlines()
    assert len(lines) <= 10 and len(text.stdout) < 4000, (len(lines), text.stdout[:2000])
    # Its counts with their thousands grouped: "20003 VMs" is misread by a power of ten.
    assert doc["placed"] >= 1000
    assert lines[0] == ("big: PARTIAL, %s of 20,003 VMs placed (allocation at Nova's ratios would place %d)"
                        % (grouped(doc["placed"]), doc["allocation_basis"]["placed"]))
    # One line per reason, the most rejected first, each with its count and the first names.
    said = [line for line in lines if " rejected: " in line]
    assert said == ["  %s rejected: %s (%s)" % (grouped(len(vms)), why, few(vms))
                    for why, vms in groups], said
    assert said[0].startswith("  18,") and ", ... and 18," in said[0]
    assert "  3 rejected: " in said[1] and said[1].endswith("(huge-1, huge-2, huge-3)")
    offered = sorted(doc["offer"], key=in_order)
    assert "  kvm01            %s VMs: %s  (left: " % (grouped(len(offered)), few(offered)) in text.stdout
    assert HINT in lines
    # The ratios, the basis and the unplaced load after them, where they are seen.
    assert lines[-3].startswith("  kvm01: allocation past the inventory's ratios (")
    assert lines[-2].startswith("based on p99.9 of hourly peaks over ")
    assert lines[-2].endswith("1 of 2 hosts known (gate 80%); unknown: kvm02")
    assert lines[-1].startswith("unplaced VMs (no host in the inventory claims them")


def test_a_fleet_of_many_hosts_lists_twenty_of_each_and_counts_the_rest(tmp_path):
    """24 hosts each take part of the offer and go past their memory ratio, 22 VMs too large for
    any host are rejected for as many reasons, and 7 hosts seen in half their minutes are unknown:
    each list stops at 20 lines (5 names) and counts the rest, as headroom counts its hosts past
    --top."""
    data = tmp_path / "data"
    names = ["h%02d" % i for i in range(24)]
    empty = ["e%d" % i for i in range(7)]
    inventory = HOSTS.split("[[host]]")[0] + "".join(
        '[[host]]\nname = "%s"\nvcpus = 16\nmem_gb = 64\n' % host for host in names + empty)
    (tmp_path / "hosts.toml").write_text(inventory)
    for host in names:  # the whole host's memory allocated, a quarter of it used
        write(data, "vm-" + host, host, 16, 64, 25.0, 25.0)
    for host in empty:  # below the coverage gate
        write(data, "vm-" + host, host, 2, 4, 25.0, 25.0, seen=np.arange(MINUTES) % 2 == 0)
    (tmp_path / "m.toml").write_text(
        '[[vms]]\nname = "web"\nprofile = "1x4@50%"\ncount = 600\n'
        + "".join('[[vms]]\nname = "big%d"\nprofile = "%dx8"\n' % (n, 100 + n) for n in range(22))
    )
    args = ("admit", tmp_path / "m.toml", data, "--inventory", tmp_path / "hosts.toml", "--horizon-days", "0")
    text, answer = vmstats(*args), vmstats(*args, "--json")
    doc = json.loads(answer.stdout)
    per_host = Counter(doc["offer"].values())
    assert sorted(per_host) == names and min(per_host.values()) > MOST_NAMES, per_host
    assert sorted(doc["past_allocation_ratios"]) == names
    groups = by_reason(doc["rejected"])
    assert len(groups) == 22 + (doc["placed"] < 600), [why for why, _vms in groups]
    assert doc["basis"]["hosts_unknown"] == empty

    lines = text.stdout.splitlines()
    assert text.returncode == 3 and len(lines) <= 3 * (MOST_LINES + 1) + 4, text.stdout
    offer_lines = [line for line in lines if "  (left: " in line]
    assert [line.split()[0] for line in offer_lines] == names[:MOST_LINES]
    assert "  ... and 4 more hosts in the offer" in lines
    assert sum("allocation past the inventory's ratios (" in line for line in lines) == MOST_LINES
    assert "  ... and 4 more hosts past the inventory's ratios (--json names every one)" in lines
    shown = [line for line in lines if " rejected: " in line]
    assert shown == ["  %d rejected: %s (%s)" % (len(vms), why, few(vms)) for why, vms in groups[:MOST_LINES]]
    rest = groups[MOST_LINES:]
    more = sum(len(vms) for _why, vms in rest)
    assert "  ... and %d more rejected for %d other reasons" % (more, len(rest)) in lines
    assert HINT in lines
    said = "; unknown: e0, e1, e2, e3, e4, ... and 2 more (--json names every one)"
    assert lines[-1].endswith(said), lines[-1]

    # headroom says its unknown hosts as briefly, and where every one is listed.
    room = vmstats("headroom", data, "--inventory", tmp_path / "hosts.toml", "--profile", "1x4@50%",
                   "--no-after", "--horizon-days", "0")
    assert room.returncode == 0, room.stderr
    assert ("stopped; counted as no room): e0, e1, e2, e3, e4, ... and 2 more (-o OUT/ lists every host in "
            "headroom.csv)") in room.stdout, room.stdout


def test_the_report_page_names_twenty_unknown_hosts_and_counts_the_rest(tmp_path):
    """The report page's capacity section joined every unknown host into one sentence: thousands
    of them made a line no one reads.  It names the first 20 and counts the rest, saying where
    report.json lists every one, as it does the VMs not heard from; so does the sentence of the
    hosts giving room for the unplaced VMs' use."""
    data = tmp_path / "data"
    known = ["h%02d" % i for i in range(24)]
    unknown = ["u%02d" % i for i in range(45)]
    inventory = HOSTS.split("[[host]]")[0] + "".join(
        '[[host]]\nname = "%s"\nvcpus = 16\nmem_gb = 64\n' % host for host in known + unknown)
    (tmp_path / "hosts.toml").write_text(inventory)
    for host in known:
        write(data, "vm-" + host, host, 4, 16, 25.0, 25.0)
    for host in unknown:  # below the coverage gate
        write(data, "vm-" + host, host, 2, 4, 25.0, 25.0, seen=np.arange(MINUTES) % 2 == 0)
    write(data, "stray", None, 2, 4, 50.0, 50.0)  # on no host: each known host gives room for it
    out = tmp_path / "out"
    done = vmstats("report", data, "-o", out, "--inventory", tmp_path / "hosts.toml", "--no-cache")
    assert done.returncode == 0, done.stderr
    fleet = json.loads((out / "report.json").read_text())["meta"]["capacity"]["fleet"]
    assert fleet["hosts_unknown"] == unknown
    withheld = fleet["withheld_for_unplaced"]
    assert len(withheld) > PAGE_NAMES, withheld
    page = " ".join((out / "report.html").read_text().split())
    said = ", ".join(unknown[:PAGE_NAMES]) + ", and 25 more (report.json, meta.capacity.fleet.hosts_unknown)"
    assert '(unknown: <span id="capacity-unknown">%s</span>)' % said in page
    shares = ["%s %.1f cores, %.1f GB" % (h, w["cpu_cores"], w["mem_gb"]) for h, w in withheld.items()]
    said = ": %s, and %d more (report.json, meta.capacity.fleet.withheld_for_unplaced)</span>" % (
        ", ".join(shares[:PAGE_NAMES]), len(shares) - PAGE_NAMES)
    assert "withheld from the known hosts' room" + said in page


def test_headroom_and_the_report_page_group_the_thousands_of_their_counts(tmp_path):
    """1x1@1% fits on the capacity tests' fleet by the thousand: headroom's fleet line and table,
    and the report page's capacity section, said "1090 more fit now"; they group the thousands,
    as admit does."""
    write_fleet(tmp_path / "data", tmp_path / "hosts.toml")
    args = ("--inventory", tmp_path / "hosts.toml", "--profile", "1x1@1%")
    room = vmstats("headroom", tmp_path / "data", *args, "--no-after", "-o", tmp_path / "room")
    assert room.returncode == 0, room.stderr
    fleet = json.loads((tmp_path / "room" / "headroom.json").read_text())["fleet"]
    fit, nova = fleet["fit_now"], fleet["alloc_fit_now"]
    assert fit >= 1000, fleet
    assert "fleet: %s more fit now (allocation at Nova's ratios: %s); 1 of 2 hosts known" % (
        grouped(fit), grouped(nova)) in room.stdout.splitlines()
    rows = [line.split() for line in room.stdout.splitlines() if line.startswith("kvm01 ")]
    assert [row[5] for row in rows] == [grouped(fit)], room.stdout
    out = tmp_path / "out"
    done = vmstats("report", tmp_path / "data", "-o", out, *args, "--no-cache")
    assert done.returncode == 0, done.stderr
    section = json.loads((out / "report.json").read_text())["meta"]["capacity"]["fleet"]
    assert section["fit_now"] >= 1000
    page = " ".join((out / "report.html").read_text().split())
    assert "<b>%s</b> more fit now, <b>%s</b> after the advice (Nova: %s, %s after)" % tuple(
        grouped(section[k]) for k in ("fit_now", "fit_after", "alloc_fit_now", "alloc_fit_after")) in page
