"""``vmstats headroom`` and ``vmstats admit`` end to end: real logs, the real report's advice."""

import csv
import datetime
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from capacitydata import damaged_copy, fits, write_fleet
from test_report_stats import T0

ROOT = Path(__file__).resolve().parent.parent


def vmstats(*args, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "vmstats", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    base = tmp_path_factory.mktemp("capacity")
    expected = write_fleet(base / "data", base / "hosts.toml")
    return base, expected


@pytest.fixture(scope="module")
def headroom(fleet):
    base, expected = fleet
    out = base / "out"
    result = vmstats(
        "headroom",
        base / "data",
        "--inventory",
        base / "hosts.toml",
        "--profile",
        "2x8@50%",
        "--horizon-days",
        "0",
        "-o",
        out,
        "--cache-dir",
        base / "cache",
    )
    assert result.returncode == 0, result.stderr
    return result, json.loads((out / "headroom.json").read_text()), out, expected


def test_headroom_counts_per_host_now_and_after_the_reports_advice(headroom):
    result, data, out, expected = headroom
    rows = {r["host"]: r for r in data["hosts"]}
    one = rows["kvm01"]
    cpu, mem = expected["now"]
    assert one["cpu_demand"] == pytest.approx(cpu, abs=1e-3) and one["mem_demand"] == pytest.approx(
        mem, abs=1e-3
    )
    # stray's use counts on no host: kvm01, the only host known, gives all of it, as admission takes it.
    stray_cpu, stray_mem = expected["unplaced"]
    assert (one["cpu_withheld"], one["mem_withheld"]) == (pytest.approx(stray_cpu, abs=1e-3),
                                                          pytest.approx(stray_mem, abs=1e-3))
    withheld = {"kvm01": {"cpu_cores": one["cpu_withheld"], "mem_gb": one["mem_withheld"]}}
    assert data["fleet"]["withheld_for_unplaced"] == data["fleet"]["withheld_for_unplaced_after"] == withheld
    cpu, mem = cpu + stray_cpu, mem + stray_mem
    assert one["fit_now"] == fits(16 - cpu, 64 - mem, 1.0, 4.0)
    assert one["binding_now"] == ("cpu" if (16 - cpu) / 1.0 < (64 - mem) / 4.0 else "memory")
    # After: the idle VM reclaimed (its demand gone), the oversized one downsized (allocation only).
    assert data["after"]["reclaimed"] == ["idle"] and data["after"]["downsized"] == ["oversized"]
    cpu_after, mem_after = expected["after_reclaim"]
    cpu_after, mem_after = cpu_after + stray_cpu, mem_after + stray_mem
    assert one["fit_after"] == fits(16 - cpu_after, 64 - mem_after, 1.0, 4.0) > one["fit_now"]
    # Nova's view: 20 vCPUs and 80 GB allocated against 64 vCPUs (ratio 4) and 64 GB (ratio 1).
    assert (one["allocated_vcpus"], one["allocated_mem_gb"]) == (20, 80)
    assert one["alloc_fit_now"] == 0 and one["alloc_binding_now"] == "memory"
    assert one["alloc_fit_after"] > 0
    # kvm02's only VM was seen in half its minutes: unknown, no room counted; stray is unplaced.
    two = rows["kvm02"]
    assert two["status"] == "unknown" and two["coverage"] == pytest.approx(0.5, abs=0.01)
    assert two["fit_now"] is None and two["cpu_headroom"] is None
    fleet_totals = data["fleet"]
    assert fleet_totals["fit_now"] == one["fit_now"] and fleet_totals["hosts_unknown"] == ["kvm02"]
    assert fleet_totals["unplaced_vms"] == ["stray"]
    assert (data["basis"]["percentile"], data["basis"]["peaks"]) == ("p99.9", "hourly peaks")
    assert data["basis"]["window"]["minutes"] == 7 * 1440
    # The terminal says the same.
    text = result.stdout
    assert "headroom for 2x8@50%" in text
    unknown = "unknown (below the coverage gate, a VM of unknown size, no VM reporting, or most VMs stopped;"
    assert unknown in text
    assert "fleet: %d more fit now, %d after" % (one["fit_now"], one["fit_after"]) in text
    # The CSV holds the same rows.
    with open(out / "headroom.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["host"] for r in table] == ["kvm01", "kvm02"]
    assert int(table[0]["fit_now"]) == one["fit_now"] and table[1]["fit_now"] == ""


def test_headroom_counts_its_hosts_in_words_that_agree_with_the_count(fleet, tmp_path):
    """One host left past --top is "1 more host", not "1 more hosts"."""
    base, _expected = fleet
    result = vmstats("headroom", base / "data", "--inventory", base / "hosts.toml", "--profile", "2x8@50%",
                     "--top", "1", "-o", tmp_path / "out", "--cache-dir", base / "cache")  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "... 1 more host in headroom.csv" in lines, result.stdout
    assert "1 of 2 hosts known" in result.stdout and "reclaim 1 VM (idle)" in result.stdout
    # Without -o no headroom.csv is written: the line does not send the operator to it.
    bare = vmstats("headroom", base / "data", "--inventory", base / "hosts.toml", "--profile", "2x8@50%",
                   "--top", "1", "--cache-dir", base / "cache")  # fmt: skip
    assert bare.returncode == 0, bare.stderr
    assert "... 1 more host (-o OUT/ lists every host in headroom.csv)" in bare.stdout.splitlines()
    manifest = tmp_path / "one.toml"
    manifest.write_text('name = "one"\n[[vms]]\nprofile = "2x8"\n')
    admit = vmstats("admit", manifest, base / "data", "--inventory", base / "hosts.toml")
    assert admit.stdout.startswith("one: ACCEPT, 1 of 1 VM placed ("), admit.stdout + admit.stderr


def test_an_output_folder_that_is_a_file_is_refused_before_any_work(fleet, tmp_path):
    """-o naming a file is one line that says so, in the same words in every command (not "File exists")."""
    base, _expected = fleet
    (tmp_path / "taken").write_text("")
    for args in (["headroom", base / "data", "--inventory", base / "hosts.toml", "--profile", "2x8"],
                 ["report", base / "data"], ["backtest", base / "data"]):
        done = vmstats(*args, "-o", tmp_path / "taken")
        assert done.returncode != 0 and done.stderr.splitlines() == [
            "Error: Invalid value for '-o' / '--out': %s is a file, not a folder" % (tmp_path / "taken")
        ], done.stderr


def test_a_fleet_with_no_host_known_has_no_room_now_or_after(fleet, tmp_path):
    """Every host below the coverage gate: no room anywhere, said as much, not a traceback."""
    base, _expected = fleet
    data = tmp_path / "data"
    shutil.copytree(base / "data", data)
    for folder in (data / "vms").iterdir():
        days = sorted(folder.glob("*.csv"))
        if len(days) > 2:
            days[len(days) // 2].unlink()  # a day missing from every VM: none is fully covered
    result = vmstats("headroom", data, "--inventory", base / "hosts.toml", "--profile", "2x8@50%",
                     "--coverage-min", "1", "-o", tmp_path / "out")  # fmt: skip
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "fleet: 0 more fit now, 0 after the report's reclaim and downsize advice" in result.stdout
    document = json.loads((tmp_path / "out" / "headroom.json").read_text())
    assert all(row["status"] == "unknown" for row in document["hosts"])
    assert document["fleet"]["fit_after"] == 0 and document["fleet"]["hosts_known"] == 0
    # Admission says why: not that no host has room, which sent the operator to buy hosts.
    manifest = tmp_path / "one.toml"
    manifest.write_text('[[vms]]\nprofile = "1x1"\n')
    answer = vmstats("admit", manifest, data, "--inventory", base / "hosts.toml", "--coverage-min", "1",
                     "--json")  # fmt: skip
    assert answer.returncode == 4, answer.stderr
    assert json.loads(answer.stdout)["rejected"] == {
        "1x1-1": "no host is known: every host of the inventory is unknown, and its room is never offered"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--profile", "4xl"], "profile '4xl': expected VCPUSxGB"),
        (["--profile", "2x8", "--percentile", "p0"], "percentile 'p0'"),
        (["--profile", "2x8", "--inventory", "missing.toml"], "inventory missing.toml: does not exist"),
        (["--profile", "2x8", "--until", "0001-01-01"], "--until 0001-01-01 is outside 1970-01-01"),
        (["--profile", "2x8", "--horizon-days", "nan"], "'nan' is not a finite number"),
        # int() and float() would read these as 4 and 99: other scripts' digits, separators.
        (["--profile", "\uff14x16"], "profile '\uff14x16': expected VCPUSxGB"),
        (["--profile", "2x8", "--percentile", "p9_9"], "percentile 'p9_9': expected p99"),
        # Read as 0.5%: a hundred times the VMs of half their size would fit.
        (["--profile", "2x8@0.5"], "profile '2x8@0.5': expected use is a per cent with its % sign"),
        (["--profile", "2x8@50%/0.5"], "profile '2x8@50%/0.5': expected use is a per cent with its % sign"),
        # 4,360,000 of these fitted on kvm01 (16 vCPUs): no running VM peaks at almost nothing.
        (["--profile", "2x8@0.0001%"], "profile '2x8@0.0001%': expected use of 0.0001% is below 1%"),
        (["--profile", "1x0.00001@1%"], "a VM has at least 1 vCPU and 0.0625 GB (64 MB)"),
    ],
)
def test_headroom_errors_are_one_line(fleet, args, message):
    base, _expected = fleet
    full = ["headroom", base / "data", "--inventory", base / "hosts.toml", "--no-after"] + args
    result = vmstats(*full)
    assert result.returncode != 0 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "host, message",
    [
        # (total - reserved) x ratio overflowed to infinity: headroom ended in a traceback (the
        # server's summary, of the same inventory, was unreadable).
        ("vcpus = 1e300\ncpu_ratio = 1e10\nmem_gb = 64", "vcpus: must be at most 1e+12, not 1e+300"),
        # Nothing usable left: the host was shown "empty", -1 vCPU usable, never offered.
        ("vcpus = 4\nreserve_vcpus = 3\nbuffer = 0.5\nmem_gb = 64",
         "buffer: 0.5 of 4 vCPUs on top of reserve_vcpus = 3 holds back the whole host"),
        # A cap of no VM is a host never offered; half a VM is no count.
        ("vcpus = 4\nmem_gb = 64\nmax_instances = 0", "max_instances: must be a whole number of VMs, at "
         "least 1, not 0"),
        ("vcpus = 4\nmem_gb = 64\nmax_instances = 2.5", "max_instances: must be a whole number of VMs, at "
         "least 1, not 2.5"),
    ],
)
def test_an_inventory_host_of_impossible_numbers_is_one_line(fleet, tmp_path, host, message):
    base, _expected = fleet
    hosts = tmp_path / "hosts.toml"
    hosts.write_text('[[host]]\nname = "kvm01"\n%s\n' % host)
    result = vmstats("headroom", base / "data", "--inventory", hosts, "--profile", "2x8", "--no-after")
    assert result.returncode == 2, result.stderr
    assert result.stderr == "Error: inventory %s: host[0] (kvm01).%s\n" % (hosts, message)


def test_a_host_named_as_no_host_tag_is_one_line_unless_the_inventory_lists_its_vms(fleet, tmp_path):
    """kvm01's VMs send host=kvm01; listed as "kvm 01" (no record carries such a tag), the host was
    shown empty and offered whole: 1 of 1 placed there, beside the use of its unplaced VMs."""
    base, _expected = fleet
    text = (base / "hosts.toml").read_text()
    manifest = tmp_path / "manifest.toml"
    manifest.write_text('name = "one"\n[[vms]]\nprofile = "2x8@50%"\n')
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(text.replace('name = "kvm01"', 'name = "kvm 01"'))
    result = vmstats("admit", manifest, base / "data", "--inventory", hosts)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == (
        "Error: inventory %s: host[0].name: 'kvm 01' is no host tag (at most 255 letters, digits, '.', "
        "'_' or '-', the first a letter or digit), so no VM is on it: give the tag its VMs send (the VM "
        "agent sends 'kvm-01' for it), or name its VMs under vms\n" % hosts
    )
    # Text that is not printable would split every line naming the host, selectors or not.
    hosts.write_text(text.replace('name = "kvm02"', 'name = "kvm\\n02"'))
    result = vmstats("admit", manifest, base / "data", "--inventory", hosts)
    assert result.returncode == 2
    assert result.stderr == (
        "Error: inventory %s: host[1].name: 'kvm\\n02' is not printable text, which no host tag is\n" % hosts
    )
    # A host whose VMs the inventory names (kvm02: patchy-*) needs no tag: its name is free text.
    hosts.write_text(text.replace('name = "kvm02"', 'name = "kvm 02"'))
    result = vmstats("headroom", base / "data", "--inventory", hosts, "--profile", "2x8", "--no-after")
    assert result.returncode == 0, result.stderr
    assert "\nkvm 02 " in result.stdout


def test_headroom_refuses_an_empty_output_folder(fleet):
    base, _expected = fleet
    inventory = base / "hosts.toml"
    result = vmstats("headroom", base / "data", "--inventory", inventory, "--profile", "2x8", "-o", "")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "Error: Invalid value for '-o' / '--out': an empty folder name (use . for the current folder)"
    ]


def _kept(rows: int) -> str:
    return (" (1 row kept)" if rows == 1 else " (%d rows kept)" % rows) if rows else ""


def _named(entries: list[dict]) -> list[str]:
    """The lines the report's terminal summary gives these files."""
    return [
        "  %s: %s%s" % (e["path"], e["problem"], _kept(e["rows"]))
        for e in entries
    ]


def test_headroom_and_admit_name_the_damaged_logs_as_the_report_does(fleet, tmp_path):
    base, _expected = fleet
    data, torn, junk = damaged_copy(base, tmp_path, junk=21)
    out = tmp_path / "out"
    result = vmstats(
        "headroom", data, "--inventory", base / "hosts.toml", "--profile", "2x8", "--no-after", "-o", out
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    basis = json.loads((out / "headroom.json").read_text())["basis"]
    skipped, damaged = basis["skipped_files"], basis["damaged_files"]
    assert [entry["path"] for entry in skipped] == junk
    assert [(e["path"], e["vm"], e["bad_lines"]) for e in damaged] == [(str(torn), "stray", 1)]
    assert damaged[0]["rows"] > 1000
    # The report on the same logs names the same files the same way.
    report = vmstats("report", data, "-o", tmp_path / "report", "--no-cache")
    assert report.returncode == 0, report.stderr
    meta = json.loads((tmp_path / "report" / "report.json").read_text())["meta"]
    assert (skipped, damaged) == (meta["skipped_files"], meta["damaged_files"])
    # On stderr, in the report's words: the first 20 named, the rest counted and pointed at.
    assert result.stderr.splitlines() == [
        "log files skipped: 21",
        *_named(skipped[:20]),
        "  ... and 1 more, all named in headroom.json (basis.skipped_files)",
        "log files read in part: 1",
        *_named(damaged),
    ]
    assert str(torn) not in result.stdout  # the terminal table stays a table
    # admit names the same files, in its answer and on stderr.
    manifest = tmp_path / "app.toml"
    manifest.write_text('[[vms]]\nprofile = "2x8@50%"\n')
    answer = vmstats("admit", manifest, data, "--inventory", base / "hosts.toml", "--json")
    assert answer.returncode == 0, answer.stderr
    document = json.loads(answer.stdout)
    assert (document["basis"]["skipped_files"], document["basis"]["damaged_files"]) == (skipped, damaged)
    assert "  ... and 1 more, all named in the answer's basis.skipped_files (--json)" in answer.stderr
    assert _named(damaged)[0] in answer.stderr.splitlines()


def test_admit_from_a_summary_names_the_damaged_logs_as_from_the_logs(fleet, tmp_path):
    """An answer from a summary rests on the logs the summary was made from: it names the files
    that summary could not read whole, in the answer and on stderr, as an answer from the logs
    does, whichever run (headroom or the report) left the summary."""
    base, _expected = fleet
    data, _torn, _junk = damaged_copy(base, tmp_path, junk=21)
    manifest = tmp_path / "app.toml"
    manifest.write_text('[[vms]]\nprofile = "2x8@50%"\n')
    from_logs = vmstats("admit", manifest, data, "--inventory", base / "hosts.toml", "--json")
    assert from_logs.returncode == 0, from_logs.stderr
    basis = json.loads(from_logs.stdout)["basis"]
    assert len(basis["skipped_files"]) == 21 and len(basis["damaged_files"]) == 1
    headroom = vmstats("headroom", data, "--inventory", base / "hosts.toml", "--profile", "2x8",
                       "--no-after", "-o", tmp_path / "headroom")  # fmt: skip
    report = vmstats("report", data, "--inventory", base / "hosts.toml", "--no-cache",
                     "-o", tmp_path / "report")  # fmt: skip
    assert headroom.returncode == report.returncode == 0, headroom.stderr + report.stderr
    for out in ("headroom", "report"):
        summary = tmp_path / out / "capacity-summary.json"
        answer = vmstats("admit", manifest, "--summary", summary, "--json")
        assert answer.returncode == 0, answer.stderr
        named = json.loads(answer.stdout)["basis"]
        assert (named["skipped_files"], named["damaged_files"]) == (
            basis["skipped_files"],
            basis["damaged_files"],
        ), out
        assert answer.stderr == from_logs.stderr, out
        terse = vmstats("admit", manifest, "--summary", summary)
        assert terse.stderr == from_logs.stderr and terse.stdout.startswith("request: ACCEPT"), out


def test_the_reports_capacity_section_leaves_the_damaged_files_to_the_report(fleet, tmp_path):
    """report.json names each damaged file once, in meta, where its terminal summary and its
    page take them from: the capacity section read the same logs and points there."""
    base, _expected = fleet
    data, torn, junk = damaged_copy(base, tmp_path, junk=3)
    out = tmp_path / "report"
    result = vmstats("report", data, "--inventory", base / "hosts.toml", "--no-cache", "-o", out)
    assert result.returncode == 0, result.stderr
    meta = json.loads((out / "report.json").read_text())["meta"]
    assert [e["path"] for e in meta["skipped_files"]] == junk
    assert [e["path"] for e in meta["damaged_files"]] == [str(torn)]
    basis = meta["capacity"]["basis"]
    assert "skipped_files" not in basis and "damaged_files" not in basis
    assert basis["damaged_logs"] == "meta.skipped_files, meta.damaged_files"
    text = json.dumps(meta)
    for path in [*junk, str(torn)]:
        assert text.count(json.dumps(path)) == 1, path
        assert result.stdout.count(path) == 1, path


def test_headroom_without_an_output_folder_still_names_the_damaged_logs(fleet, tmp_path):
    base, _expected = fleet
    data, torn, junk = damaged_copy(base, tmp_path, junk=1)
    result = vmstats("headroom", data, "--inventory", base / "hosts.toml", "--profile", "2x8", "--no-after")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "log files skipped: 1" and lines[1].startswith("  %s: no readable row" % junk[0])
    assert lines[2] == "log files read in part: 1"
    assert lines[3].startswith("  %s: 1 malformed line skipped" % torn)
    assert len(lines) == 4


def test_admit_from_the_logs_places_with_anti_affinity_and_says_what_it_rests_on(fleet, tmp_path):
    base, expected = fleet
    manifest = tmp_path / "app.toml"
    manifest.write_text(
        'name = "shop"\n[profiles]\nweb = "2x8@50%"\n'
        '[[vms]]\nprofile = "web"\ncount = 2\nanti_affinity = true\n'
        '[[vms]]\nname = "cache"\nprofile = "1x2"\ncount = 1\n'
    )
    result = vmstats(
        "admit", manifest, base / "data", "--inventory", base / "hosts.toml", "--json", "--horizon-days", "0"
    )
    answer = json.loads(result.stdout)
    # One host is known: the second web VM cannot go on it with the first.
    assert answer["status"] == "partial" and result.returncode == 3
    assert answer["offer"] == {"web-1": "kvm01", "cache-1": "kvm01"} or answer["offer"] == {
        "web-2": "kvm01",
        "cache-1": "kvm01",
    }
    assert "anti-affinity" in next(iter(answer["rejected"].values()))
    cpu, mem = expected["now"]
    stray_cpu, stray_mem = expected["unplaced"]  # on no host: withheld from kvm01, the only one known
    assert answer["withheld_for_unplaced"] == {"kvm01": {"cpu_cores": pytest.approx(stray_cpu, abs=1e-3),
                                                         "mem_gb": pytest.approx(stray_mem, abs=1e-3)}}
    left = answer["headroom_left"]["kvm01"]
    assert left["cpu_cores"] == pytest.approx(16 - cpu - stray_cpu - 1.0 - 1.0, abs=1e-3)
    assert left["mem_gb"] == pytest.approx(64 - mem - stray_mem - 4.0 - 2.0, abs=1e-3)
    basis = answer["basis"]
    assert basis["hosts_unknown"] == ["kvm02"] and basis["window"]["minutes"] == 7 * 1440
    # Nova's view: kvm01's memory is over-allocated already, and kvm02 (unknown to us, not to
    # allocation) takes one web VM and the cache.
    assert answer["allocation_basis"]["placed"] == 2
    text = vmstats("admit", manifest, base / "data", "--inventory", base / "hosts.toml")
    assert text.returncode == 3 and text.stdout.startswith("shop: PARTIAL, 2 of 3 VMs placed")
    # stray sends no host tag and no selector names it: its use is on no host, as headroom says.
    assert text.stdout.splitlines()[-1] == (
        "unplaced VMs (no host in the inventory claims them, so their use counts on none): 1, "
        "%.1f cores and %.1f GB (allocated 2 vCPUs, 4.0 GB): no host tag nor selector: 1 VM, %.1f cores, "
        "%.1f GB; withheld from the "
        "known hosts' room, each giving its share (kvm01 %.1f cores, %.1f GB)"
        % (stray_cpu, stray_mem, stray_cpu, stray_mem, stray_cpu, stray_mem))


@pytest.mark.parametrize(
    "text, message",
    [
        ('[[vms]]\nprofile = "huge"\n', "vms[0].profile: unknown profile 'huge'"),
        ('[[vms]]\nprofile = "2x4"\ncount = 0\n', "vms[0].count: must be a whole number"),
        ('[[vms]]\nprofile = "2x4"\nreplicas = 2\n', "vms[0].replicas: unknown key"),
        ('partial = "yes"\n[[vms]]\nprofile = "2x4"\n', "partial: must be true or false"),
        ("name = 'x'\n", "vms: a list of at least one entry"),
        ("[[vms]\n", ": not valid TOML"),
        # A profile of the wrong type is there, not missing.
        ("[[vms]]\nprofile = 5\n", "vms[0].profile: must be a profile's name or VCPUSxGB[@USE%] text, not 5"),
        ('[[vms]]\nprofile = "2x8@0.5"\n',
         "vms[0].profile: profile '2x8@0.5': expected use is a per cent with its % sign, e.g. 4x16@30%"),
        ("[[vms]]\ncount = 2\n", "vms[0].profile: missing"),
        # A newline in a name would forge a line of the answer.
        (
            '[[vms]]\nprofile = "2x4"\nname = "web\\nkvm09: ACCEPT"\n',
            "vms[0].name: must be a non-empty string of printable",
        ),
        ('name = "shop\\u001b[2J"\n[[vms]]\nprofile = "2x4"\n', "name: must be a string of printable"),
        ('[[vms]]\nprofile = "2x4"\ngroup = "a\\tb"\n', "vms[0].group: must be a non-empty string of print"),
        # Two entries of one profile and no name: "vms[1].name" named a key that is not there.
        ('[[vms]]\nprofile = "2x4"\n[[vms]]\nprofile = "2x4"\nanti_affinity = true\n',
         "vms[1]: its VMs are named after its profile '2x4', as an entry's before it: give it a name"),
    ],
)
def test_admit_manifest_errors_are_one_line(fleet, tmp_path, text, message):
    base, _expected = fleet
    manifest = tmp_path / "bad.toml"
    manifest.write_text(text)
    result = vmstats("admit", manifest, base / "data", "--inventory", base / "hosts.toml")
    assert result.returncode == 2 and message in result.stderr and str(manifest) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_report_with_an_inventory_has_the_same_capacity_section(headroom, fleet, tmp_path):
    _result, data, _out, _expected = headroom
    base, _ = fleet
    out = tmp_path / "report"
    # The same settings as the headroom run above but the trend horizon (the report uses the default).
    result = vmstats(
        "report",
        base / "data",
        "-o",
        out,
        "--inventory",
        base / "hosts.toml",
        "--profile",
        "2x8@50%",
        "--no-cache",
    )
    assert result.returncode == 0, result.stderr
    section = json.loads((out / "report.json").read_text())["meta"]["capacity"]
    assert section["after"]["reclaimed"] == ["idle"] and section["after"]["source"] == "this report"
    assert section["fleet"]["hosts_unknown"] == ["kvm02"]
    one = section["hosts"][0]
    assert one["fit_after"] >= one["fit_now"] and one["alloc_fit_now"] == data["hosts"][0]["alloc_fit_now"]
    page = (out / "report.html").read_text()
    assert "Capacity: room for 2x8@50% per host" in page
    assert (
        "<b>%d</b> more fit now, <b>%d</b> after the advice"
        % (section["fleet"]["fit_now"], section["fleet"]["fit_after"])
        in page
    )
    # The unplaced VM's use, and who gives room for it, as headroom's terminal says them.
    use, given = section["fleet"]["unplaced_use"], section["fleet"]["withheld_for_unplaced"]
    assert use["cpu_cores"] > 0 and given, section["fleet"]
    shares = ", ".join("%s %.1f cores, %.1f GB" % (h, w["cpu_cores"], w["mem_gb"]) for h, w in given.items())
    said = "%.1f cores and %.1f GB, withheld from the known hosts' room: %s" % (
        use["cpu_cores"], use["mem_gb"], shares)
    assert '<span id="capacity-unplaced">%s</span>' % said in " ".join(page.split())
    # The summary the same pass left says the shares the page shows, for a script to read.
    summary = json.loads((out / "capacity-summary.json").read_text())
    assert summary["withheld_for_unplaced"] == given
    assert summary["alloc_withheld_for_unplaced"] == section["fleet"]["alloc_withheld_for_unplaced"] != {}
    bad = vmstats("report", base / "data", "-o", tmp_path / "never", "--inventory", base / "nope.toml")
    assert bad.returncode == 2 and "inventory %s: does not exist" % (base / "nope.toml") in bad.stderr
    assert not (tmp_path / "never").exists()
    # The same pass left its per-host summary: an admission answered from it without reading the
    # logs again is the answer from the logs (the report plans with the defaults, as admit does).
    manifest = tmp_path / "app.toml"
    manifest.write_text('name = "shop"\n[[vms]]\nprofile = "2x8@50%"\ncount = 3\n')
    from_logs = vmstats("admit", manifest, base / "data", "--inventory", base / "hosts.toml", "--json")
    from_summary = vmstats("admit", manifest, "--summary", out / "capacity-summary.json", "--json")
    assert from_summary.returncode == from_logs.returncode == 0, from_summary.stderr
    answer, expected_answer = json.loads(from_summary.stdout), json.loads(from_logs.stdout)
    for key in ("status", "offer", "headroom_left", "allocation_basis"):
        assert answer[key] == expected_answer[key]
    for key in ("window", "percentile", "peaks", "hosts_unknown", "horizon_days"):
        assert answer["basis"][key] == expected_answer["basis"][key]
    assert answer["basis"]["summary_age_s"] >= 0
    (tmp_path / "junk.json").write_text('{"hosts": 3}')
    (tmp_path / "list.json").write_text("[]")
    # A damaged or foreign file of the right keys: a wrong type is named, not a traceback.
    shaped = json.loads((out / "capacity-summary.json").read_text())
    shaped["hosts"][0]["cpu_demand"] = "x"
    (tmp_path / "shaped.json").write_text(json.dumps(shaped))
    for summary, message in (
        (tmp_path / "none.json", "cannot be read"),
        (tmp_path / "junk.json", "is not a"),
        (tmp_path / "list.json", "is not a capacity summary: expected a JSON object"),
        (tmp_path / "shaped.json", 'is not a capacity summary: hosts[0].cpu_demand has the wrong type: "x"'),
    ):
        wrong = vmstats("admit", manifest, "--summary", summary)
        assert wrong.returncode == 2 and "summary %s %s" % (summary, message) in wrong.stderr
        assert len(wrong.stderr.strip().splitlines()) == 1
    extra = vmstats("admit", manifest, base / "data", "--summary", out / "capacity-summary.json")
    assert extra.returncode == 2 and "the manifest is the only argument" in extra.stderr


def test_a_summary_from_a_newer_vmstats_with_fields_this_one_lacks_is_answered_from(headroom, tmp_path):
    """A servers' upgrade runs two versions at once: a summary of this VERSION written by a newer
    vmstats, with fields added where this one has none (at the top, in a host, in its unheard
    VMs, in the unplaced VMs' use and shares), was refused as "unknown field".  It is answered from
    as the summary without them is, those fields left out of the answer; a missing required field
    or one of the wrong type is still refused in one line."""
    _result, _data, out, _expected = headroom
    summary = json.loads((out / "capacity-summary.json").read_text())
    assert all(summary[k] for k in ("unplaced_use", "withheld_for_unplaced", "alloc_withheld_for_unplaced"))
    summary["hosts"][0]["unheard"] = [{"vm": "gone-1", "last_seen": "2026-01-01T00:10:00Z"}]
    (tmp_path / "known.json").write_text(json.dumps(summary))
    newer = json.loads(json.dumps(summary))
    newer["gpu_percentile"] = 99.0
    newer["hosts"][0]["gpus"] = 4
    newer["hosts"][0]["unheard"][0]["stopped_by"] = "nova"
    newer["unplaced_use"]["gpus"] = 0
    newer["unplaced_use"]["by_host_tag"][0]["gpus"] = 0
    for shares in ("withheld_for_unplaced", "alloc_withheld_for_unplaced"):
        for share in newer[shares].values():
            share["gpus"] = 0
    (tmp_path / "newer.json").write_text(json.dumps(newer))
    manifest = tmp_path / "app.toml"
    manifest.write_text('name = "shop"\n[[vms]]\nprofile = "2x8@50%"\ncount = 3\n')
    answers = []
    for name in ("known.json", "newer.json"):
        done = vmstats("admit", manifest, "--summary", tmp_path / name, "--json")
        assert done.returncode == 0 and done.stderr == "", (name, done.stderr)
        answer = json.loads(done.stdout)
        del answer["basis"]["summary_age_s"]
        answers.append(answer)
    assert answers[1] == answers[0]
    assert answers[1]["basis"]["vms_unknown"] == [
        {"vm": "gone-1", "last_seen": "2026-01-01T00:10:00Z", "host": "kvm01"}]
    assert "gpus" not in json.dumps(answers[1])
    terse = vmstats("admit", manifest, "--summary", tmp_path / "newer.json")
    assert terse.returncode == 0 and terse.stdout.startswith("shop: ACCEPT"), terse.stderr
    for change, message in (
        (lambda s: s["hosts"][0].pop("cpu_demand"), "missing field hosts[0].cpu_demand"),
        (lambda s: s.pop("percentile"), "missing field percentile"),
        (lambda s: s.update(percentile="high"), 'percentile has the wrong type: "high"'),
        (lambda s: s["hosts"][0]["unheard"][0].pop("last_seen"),
         "hosts[0].unheard holds an entry that is not a VM and when it was last seen"),
        (lambda s: s["unplaced_use"].pop("mem_gb"),
         "unplaced_use is not the unplaced VMs' cores and GB by host tag"),
        (lambda s: s["withheld_for_unplaced"]["kvm01"].update(cpu_cores="x"),
         "withheld_for_unplaced is not each host's cpu_cores and mem_gb"),
    ):
        shaped = json.loads(json.dumps(newer))
        change(shaped)
        (tmp_path / "shaped.json").write_text(json.dumps(shaped))
        wrong = vmstats("admit", manifest, "--summary", tmp_path / "shaped.json")
        assert wrong.returncode == 2, (message, wrong.stderr)
        assert wrong.stderr == "Error: summary %s is not a capacity summary: %s\n" % (
            tmp_path / "shaped.json", message)


def test_an_until_past_the_logs_says_which_days_they_hold(fleet, tmp_path):
    """The logs hold 2026-01-01 to 2026-01-07.  A backtest planned up to their last day said "no
    logs between 2026-01-08 and 2026-01-10", days the operator never gave; an admission asked of a
    day before them named the days asked, not the ones to ask."""
    base, _expected = fleet
    hosts = base / "hosts.toml"
    late = vmstats("admit", "--backtest", base / "data", "--inventory", hosts, "--days", "3",
                   "--until", "2026-01-07", "--arrival-profile", "1x2@50%")
    assert late.returncode == 1, late.stderr
    assert late.stderr == ("Error: the logs hold no day after the plan window 2026-01-05 .. 2026-01-07 to "
                           "judge it on (their last is 2026-01-07): give an --until before it, or fewer "
                           "--days\n")
    manifest = tmp_path / "app.toml"
    manifest.write_text('[[vms]]\nprofile = "2x8@50%"\n')
    early = vmstats("admit", manifest, base / "data", "--inventory", hosts, "--until", "2025-12-20")
    assert early.returncode == 1, early.stderr
    assert early.stderr == ("Error: no logs between 2025-12-07 and 2025-12-20 (the logs hold 2026-01-01 to "
                            "2026-01-07)\n")


def test_admit_backtest_runs_from_the_same_command(fleet):
    base, _expected = fleet
    result = vmstats(
        "admit",
        "--backtest",
        base / "data",
        "--inventory",
        base / "hosts.toml",
        "--days",
        "3",
        "--until",
        "2026-01-03",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["plan"]["start"].startswith("2026-01-01") and doc["judge"]["start"].startswith("2026-01-04")
    assert set(doc["outcomes"]) == {"demand", "allocation 1.0", "allocation nova"}
    assert (doc["plan"]["days"], doc["judge"]["days"], doc["fewer_days"], result.stderr) == (3, 3, [], "")
    lonely = vmstats("admit", base / "data", "--inventory", base / "hosts.toml")
    assert lonely.returncode == 2 and lonely.stderr.strip() == (
        "Error: expected MANIFEST DATA_DIR... (or --backtest DATA_DIR...)"
    )


_NEEDS_DATA = "--backtest needs DATA_DIR... (the logs to plan and judge on)"


@pytest.mark.parametrize("args, says", [
    # click's own "Missing argument 'MANIFEST DATA_DIR...'" asked the backtest for a manifest
    (("--backtest", "--inventory", "hosts.toml"), _NEEDS_DATA),
    (("--backtest",), _NEEDS_DATA),
    (("--inventory", "hosts.toml"), "expected MANIFEST DATA_DIR... (or --backtest DATA_DIR...)"),
])
def test_admit_without_a_data_dir_says_what_it_needs_in_one_line(args, says):
    done = vmstats("admit", *args)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", "Error: %s\n" % says)


def test_every_entry_point_plans_with_the_same_defaults():
    """The commands, the server's admission API and the library judge demand alike unless told."""
    from vmstats.capacity.command import admit, headroom
    from vmstats.capacity.demand import Settings, parse_percentile
    from vmstats.server.command import serve
    from vmstats.server.config import ServerConfig

    settings = Settings()
    assert (settings.percentile, settings.peak_minutes, settings.reserve_stopped) == (99.9, 60, True)
    for command, prefix in ((headroom, ""), (admit, ""), (serve, "capacity_")):
        options = {p.name: p.default for p in command.params}
        assert parse_percentile(options[prefix + "percentile"]) == settings.percentile
        assert options[prefix + "peak_minutes"] == settings.peak_minutes
        assert options[prefix + "reserve_stopped"] is settings.reserve_stopped
        assert options[prefix + "stopped_share_max"] == settings.stopped_share_max * 100
        assert options[prefix + "horizon_days"] == settings.horizon_days
    config = ServerConfig()
    assert config.capacity_horizon_days == settings.horizon_days
    assert config.capacity_stopped_share_max == settings.stopped_share_max * 100
    assert parse_percentile(config.capacity_percentile) == settings.percentile
    assert config.capacity_peak_minutes == settings.peak_minutes
    assert config.capacity_reserve_stopped is settings.reserve_stopped


def test_a_cache_that_cannot_be_written_is_warned_in_the_running_commands_words(fleet, tmp_path):
    """headroom reads through the report's loader: its warning names no other command.  (A
    file given as --cache-dir is refused before the run: the cache's own file in the way is
    what the run finds only when it writes.)"""
    from vmstats.report.cache import CACHE_NAME

    base, _expected = fleet
    taken = tmp_path / "cache"
    (taken / CACHE_NAME).mkdir(parents=True)
    done = vmstats("headroom", base / "data", "--inventory", base / "hosts.toml", "--profile", "2x8",
                   "--cache-dir", taken)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "warning: statistics cache not written to %s: Is a directory" % taken in done.stderr.splitlines()
    assert "vmstats report" not in done.stderr


def test_the_reports_capacity_section_is_of_the_reports_own_window(fleet, tmp_path):
    """A report of some days (--since/--until, or --days) reads headroom on those days, not
    on the default look-back ending there: one page, one window."""
    base, _expected = fleet
    first = datetime.datetime.fromtimestamp(T0, datetime.UTC).date()
    since, until = (first + datetime.timedelta(days=n) for n in (2, 4))
    windows = {"since": ["--since", since.isoformat()],
               "since and until": ["--since", since.isoformat(), "--until", until.isoformat()],
               "days": ["--days", "2", "--until", until.isoformat()]}  # fmt: skip
    for name, args in windows.items():
        out = tmp_path / name.replace(" ", "-")
        result = vmstats("report", base / "data", "--inventory", base / "hosts.toml", "--no-cache",
                         "-o", out, *args)  # fmt: skip
        assert result.returncode == 0, result.stderr
        meta = json.loads((out / "report.json").read_text())["meta"]
        section = meta["capacity"]["basis"]["window"]
        assert section["minutes"] == round(meta["window"]["expected_minutes"]), (name, section)
        assert section["start"][:10] == meta["window"]["start"][:10], name


def test_a_vm_tagged_with_a_host_the_inventory_lacks_is_said_and_its_use_withheld(fleet, tmp_path):
    """heavy runs on kvm01 but tags it kvm01.lab, a name the inventory does not list: its 7.2 cores
    and 28.8 GB counted on no host, so kvm01 was offered room for 8 more 2x8@50% VMs it did not
    have, and the terminal said only "unplaced VMs: 2".  Each output now names the tag, the VMs
    and their use, and admission takes that use out of the known hosts' room (here kvm01's);
    headroom takes it out the same way, so both say how many more fit alike."""
    import numpy as np
    from capacitydata import MINUTES, TS
    from test_report_stats import series, write_records

    base, expected = fleet
    data = tmp_path / "data"
    shutil.copytree(base / "data", data)
    busy = np.full(MINUTES, 90.0)
    write_records(data, [r._replace(host="kvm01.lab") for r in series(
        "heavy", TS, busy, busy, busy * 1e4, busy * 1e4, vcpus=8, mem_mb=32768)])
    manifest = tmp_path / "fill.toml"
    manifest.write_text('name = "fill"\n[[vms]]\nprofile = "2x8@50%"\ncount = 20\n')
    stray_cpu, stray_mem = expected["unplaced"]
    tags = [{"host_tag": "kvm01.lab", "vms": 1, "cpu_cores": 7.2, "mem_gb": 28.8, "allocated_vcpus": 8.0,
             "allocated_mem_gb": 32.0},
            {"host_tag": None, "vms": 1, "cpu_cores": round(stray_cpu, 3), "mem_gb": round(stray_mem, 3),
             "allocated_vcpus": 2.0, "allocated_mem_gb": 4.0}]
    use = {"cpu_cores": round(7.2 + stray_cpu, 3), "mem_gb": round(28.8 + stray_mem, 3),
           "allocated_vcpus": 10.0, "allocated_mem_gb": 36.0, "by_host_tag": tags}
    said = ("unplaced VMs (no host in the inventory claims them, so their use counts on none): 2, "
            "%.1f cores and %.1f GB (allocated 10 vCPUs, 36.0 GB): "
            "host tag kvm01.lab (not in the inventory): 1 VM, 7.2 cores, 28.8 GB; "
            "no host tag nor selector: 1 VM, %.1f cores, %.1f GB; " % (7.2 + stray_cpu, 28.8 + stray_mem,
                                                                       stray_cpu, stray_mem))
    cpu, mem = expected["now"]
    room = fits(16 - cpu - use["cpu_cores"], 64 - mem - use["mem_gb"], 1.0, 4.0)
    assert room < fits(16 - cpu, 64 - mem, 1.0, 4.0) == 8
    args = ("admit", manifest, data, "--inventory", base / "hosts.toml", "--horizon-days", "0")
    answer, text = vmstats(*args, "--json"), vmstats(*args)
    assert answer.returncode == text.returncode == 3, answer.stderr
    answer = json.loads(answer.stdout)
    assert answer["basis"]["unplaced_vms"] == 2 and answer["basis"]["unplaced_use"] == use
    withheld = {"cpu_cores": use["cpu_cores"], "mem_gb": use["mem_gb"]}
    assert answer["withheld_for_unplaced"] == {"kvm01": withheld}
    assert answer["placed"] == room, answer
    # headroom counts what admission places: the same use withheld from kvm01's room, per host and
    # for the fleet (it said 8 where admission placed 1), and its terminal and JSON say so.
    out = tmp_path / "out"
    done = vmstats("headroom", data, "--inventory", base / "hosts.toml", "--profile", "2x8@50%", "--no-after",
                   "--horizon-days", "0", "-o", out)  # fmt: skip
    assert done.returncode == 0, done.stderr
    counted = json.loads((out / "headroom.json").read_text())
    one = counted["hosts"][0]
    assert one["host"] == "kvm01" and one["fit_now"] == counted["fleet"]["fit_now"] == room, one
    assert "fleet: %d more fit now" % room in done.stdout
    assert {"cpu_cores": one["cpu_withheld"], "mem_gb": one["mem_withheld"]} == withheld
    assert counted["fleet"]["withheld_for_unplaced"] == answer["withheld_for_unplaced"]
    assert counted["fleet"]["unplaced_use"] == use
    said += "withheld from the known hosts' room, each giving its share (kvm01 %.1f cores, %.1f GB)" % (
        use["cpu_cores"], use["mem_gb"])
    assert said in text.stdout.splitlines(), text.stdout
    assert said + "; e.g. heavy, stray" in done.stdout.splitlines(), done.stdout
    again = vmstats("admit", manifest, "--summary", out / "capacity-summary.json", "--json")
    assert again.returncode == 3 and json.loads(again.stdout)["placed"] == room, again.stderr


def test_novas_count_withholds_the_unplaced_vms_sizes_as_demand_withholds_their_use(fleet, tmp_path):
    """big (16 vCPUs, 192 GB) runs on kvm02 but tags it kvm02.lab: Nova has its size allocated
    there, yet the allocation view beside every answer counted it on no host and offered kvm02's
    252 GB of allocation room whole, 31 more 2x8 VMs where 7 fit.  The unplaced VMs' sizes are
    now taken from every host's allocation room by the rule their use is taken by, in admit's
    answer (from the logs and from the summary), in headroom's counts, its CSV and its JSON."""
    import numpy as np
    from capacitydata import MINUTES, TS
    from test_report_stats import series, write_records

    base, _expected = fleet
    data = tmp_path / "data"
    shutil.copytree(base / "data", data)
    quiet = np.full(MINUTES, 5.0)
    write_records(data, [r._replace(host="kvm02.lab") for r in series(
        "big", TS, quiet, quiet * 2, quiet * 1e4, quiet * 1e4, vcpus=16, mem_mb=192 * 1024)])
    # Nova's room: kvm01 44 vCPUs (64 less 20 allocated), none of its memory (80 GB of 64 allocated);
    # kvm02 254 vCPUs, 252 GB.  The unplaced sizes (big and stray: 18 vCPUs, 196 GB) are shared in
    # proportion to that room: 196 GB all from kvm02, the vCPUs 44:254.
    sized = {"kvm01": {"vcpus": round(18 * 44 / 298, 3), "mem_gb": 0.0},
             "kvm02": {"vcpus": round(18 * 254 / 298, 3), "mem_gb": 196.0}}
    nova = fits(254 - 18 * 254 / 298, 252 - 196, 2, 8)
    assert nova == 7 < fits(254, 252, 2, 8) == 31
    manifest = tmp_path / "fill.toml"
    manifest.write_text('name = "fill"\n[[vms]]\nprofile = "2x8@50%"\ncount = 20\n')
    answer = vmstats("admit", manifest, data, "--inventory", base / "hosts.toml", "--json")
    assert answer.returncode in (0, 3), answer.stderr
    answer = json.loads(answer.stdout)
    assert answer["basis"]["unplaced_use"]["allocated_vcpus"] == 18.0
    assert answer["basis"]["unplaced_use"]["allocated_mem_gb"] == 196.0
    assert answer["allocation_basis"]["withheld_for_unplaced"] == sized
    assert answer["allocation_basis"]["placed"] == nova, answer["allocation_basis"]
    out = tmp_path / "out"
    done = vmstats("headroom", data, "--inventory", base / "hosts.toml", "--profile", "2x8@50%", "--no-after",
                   "-o", out)  # fmt: skip
    assert done.returncode == 0, done.stderr
    counted = json.loads((out / "headroom.json").read_text())
    rows = {r["host"]: r for r in counted["hosts"]}
    assert rows["kvm02"]["alloc_fit_now"] == nova and rows["kvm01"]["alloc_fit_now"] == 0
    assert counted["fleet"]["alloc_fit_now"] == nova
    assert counted["fleet"]["alloc_withheld_for_unplaced"] == sized
    with open(out / "headroom.csv", newline="") as handle:
        table = {r["host"]: r for r in csv.DictReader(handle)}
    assert float(table["kvm02"]["alloc_mem_withheld"]) == 196.0
    assert table["kvm02"]["alloc_fit_now"] == str(nova)
    # The summary headroom left carries the sizes and the shares: an answer from it says the same.
    summary = json.loads((out / "capacity-summary.json").read_text())
    assert summary["alloc_withheld_for_unplaced"] == sized
    assert summary["withheld_for_unplaced"] == counted["fleet"]["withheld_for_unplaced"] != {}
    again = vmstats("admit", manifest, "--summary", out / "capacity-summary.json", "--json")
    assert again.returncode in (0, 3), again.stderr
    assert json.loads(again.stdout)["allocation_basis"] == answer["allocation_basis"]


def test_a_host_at_its_instance_cap_is_not_offered_however_much_room_it_has(fleet, tmp_path):
    """kvm01 holds 3 VMs and the inventory caps it at 5 (Nova's max_instances_per_host, its
    NumInstancesFilter), less stray, which no host claims and kvm01, the only capped host, counts
    as its own: with room for 8 more 1x2@10% by CPU and memory, it was offered 8, and Nova would
    refuse all but one.  Headroom counts 1, binding "instances" (2 after the advice reclaims
    idle), and admit places 1, saying the cap refused the rest."""
    base, _expected = fleet
    hosts = tmp_path / "hosts.toml"
    hosts.write_text((base / "hosts.toml").read_text().replace(
        'name = "kvm01"\n', 'name = "kvm01"\nmax_instances = 5\n'))
    out = tmp_path / "out"
    done = vmstats("headroom", base / "data", "--inventory", hosts, "--profile", "1x2@10%", "-o", out)
    assert done.returncode == 0, done.stderr
    one = json.loads((out / "headroom.json").read_text())["hosts"][0]
    assert one["host"] == "kvm01" and (one["fit_now"], one["binding_now"]) == (1, "instances"), one
    assert (one["fit_after"], one["binding_after"]) == (2, "instances"), one
    manifest = tmp_path / "m.toml"
    manifest.write_text('name = "small"\n[[vms]]\nprofile = "1x2@10%"\ncount = 3\n')
    answer = vmstats("admit", manifest, base / "data", "--inventory", hosts, "--json")
    assert answer.returncode == 3, answer.stderr
    answer = json.loads(answer.stdout)
    assert list(answer["offer"].values()) == ["kvm01"], answer
    assert set(answer["rejected"].values()) == {"every host with room for 0.10 cores and 0.20 GB of demand "
                                                "is at its instance cap (max_instances): kvm01 (1 "
                                                "instance of it withheld for unplaced VMs)"}
    summary = json.loads((out / "capacity-summary.json").read_text())
    assert (summary["hosts"][0]["instances"], summary["hosts"][0]["max_instances"]) == (3, 5)
    assert summary["instances_withheld_for_unplaced"] == {"kvm01": 1}
    # Uncapped, the same logs offer kvm01 all three (the room is there).
    free = vmstats("admit", manifest, base / "data", "--inventory", base / "hosts.toml", "--json")
    assert free.returncode == 0 and len(json.loads(free.stdout)["offer"]) == 3, free.stdout


def test_headroom_names_the_days_it_planned_on_and_plans_on_the_days_of_its_advice(headroom, fleet, tmp_path):
    """The logs hold 2026-01-01 to 2026-01-07.  headroom said only the window's first and last
    minute, so 7 days of the 14 asked went unsaid, and not which days the report's advice (the
    "after" figures) was made on.  With a newest day file of junk (2026-01-08) and --days 3 the
    two differed: the advice was of 01-05 to 01-07, the figures now of 01-06 and 01-07 only.
    Each output now names the days, and the figures rest on the days of the advice."""
    result, data, _out, _expected = headroom
    first = datetime.datetime.fromtimestamp(T0, datetime.UTC).date()
    day = [(first + datetime.timedelta(days=n)).isoformat() for n in range(8)]
    assert {k: data["basis"]["window"][k] for k in ("first_day", "last_day", "days")} == {
        "first_day": day[0], "last_day": day[6], "days": 7}
    assert data["basis"]["days_asked"] == 14
    assert data["after"]["window"] == {"first_day": day[0], "last_day": day[6], "days": 7}
    assert "over %s .. %s, 7 days of the 14 asked (%sT00:00:00Z to %sT23:59:00Z)" % (
        day[0], day[6], day[0], day[6]) in result.stdout.splitlines()[0]
    assert "after: the report's advice on %s .. %s, 7 days (" % (day[0], day[6]) in result.stdout

    base, _expected = fleet
    data_dir, _torn, junk = damaged_copy(base, tmp_path, 1)
    later = Path(junk[0]).with_name(day[7] + ".csv")
    Path(junk[0]).rename(later)  # a day after the logs' last, holding no record
    out = tmp_path / "out"
    short = vmstats("headroom", data_dir, "--inventory", base / "hosts.toml", "--profile", "2x8@50%",
                    "--days", "3", "-o", out)  # fmt: skip
    assert short.returncode == 0, short.stderr
    shown = json.loads((out / "headroom.json").read_text())
    days = {"first_day": day[4], "last_day": day[6], "days": 3}
    assert shown["after"]["window"] == days
    window = shown["basis"]["window"]
    assert {k: window[k] for k in days} == days and window["minutes"] == 4320
    assert "over %s .. %s, 3 days (" % (day[4], day[6]) in short.stdout.splitlines()[0]
    assert "after: the report's advice on %s .. %s, 3 days (" % (day[4], day[6]) in short.stdout
    # The file of junk the report's window ends before is still named, on stderr and in the JSON.
    assert str(later) in short.stderr and [f["path"] for f in shown["basis"]["skipped_files"]] == [str(later)]
    # The report's capacity section names the report's days alike.
    report = vmstats("report", data_dir, "--inventory", base / "hosts.toml", "--profile", "2x8@50%",
                     "--days", "3", "--no-cache", "-o", tmp_path / "report")  # fmt: skip
    assert report.returncode == 0, report.stderr
    section = json.loads((tmp_path / "report" / "report.json").read_text())["meta"]["capacity"]
    assert section["after"]["window"] == days and section["basis"]["window"]["days"] == 3


def test_a_backtest_on_fewer_days_than_asked_says_so(fleet):
    """The logs hold 2026-01-01 to 2026-01-07; --days 5 judges 01-03 to 01-07 and plans on the five
    days before, of which the logs hold two.  The plan on two days was given as one on five, said
    only by the header's first and last minute.  A warning says it now, and the JSON's
    fewer_days, as each window's days and the days asked."""
    base, _expected = fleet
    args = ("admit", "--backtest", base / "data", "--inventory", base / "hosts.toml", "--days", "5",
            "--arrival-profile", "1x2@50%")
    said = ("the plan rests on 2 days of logs (2026-01-01 .. 2026-01-02), not the 5 of --days: the logs "
            "hold no day before 2026-01-01")
    done = vmstats(*args, "--json")
    assert done.returncode == 0 and done.stderr == "warning: %s\n" % said, done.stderr
    doc = json.loads(done.stdout)
    plan = doc["plan"]
    assert (plan["first_day"], plan["last_day"], plan["days"]) == ("2026-01-01", "2026-01-02", 2)
    assert (doc["judge"]["days"], doc["days_asked"], doc["fewer_days"]) == (5, 5, [said])
    text = vmstats(*args)
    assert text.returncode == 0 and text.stderr == done.stderr, text.stderr
    assert text.stdout.startswith(
        "admission backtest: plan 2026-01-01T00:00 .. 2026-01-02T23:59 (2 days of the 5 asked), judged "
        "2026-01-03T00:00 .. 2026-01-07T23:59 (5 days)\n"), text.stdout


def test_admit_names_the_days_it_rests_on_as_headroom_does(headroom, fleet, tmp_path):
    """The logs hold 2026-01-01 to 2026-01-07 and --days 14 is the default.  admit's basis line
    said only the window's first and last minute, so 7 days of the 14 asked went unsaid, though
    headroom's first line says it.  Read from the logs or from a summary headroom left, it now
    says the days in headroom's words, and the answer's basis the days asked."""
    _result, _data, out, _expected = headroom
    base, _expected = fleet
    manifest = tmp_path / "app.toml"
    manifest.write_text('[[vms]]\nprofile = "2x8@50%"\n')
    said = ("based on p99.9 of hourly peaks over 2026-01-01 .. 2026-01-07, 7 days of the 14 asked "
            "(2026-01-01T00:00:00Z to 2026-01-07T23:59:00Z), 1 of 2 hosts known (gate 80%); unknown: kvm02")
    from_logs = vmstats("admit", manifest, base / "data", "--inventory", base / "hosts.toml")
    from_summary = vmstats("admit", manifest, "--summary", out / "capacity-summary.json")
    for answer in (from_logs, from_summary):
        assert answer.returncode == 0, answer.stderr
        assert said in answer.stdout.splitlines(), answer.stdout
    basis = json.loads(vmstats("admit", manifest, base / "data", "--inventory", base / "hosts.toml",
                               "--json").stdout)["basis"]  # fmt: skip
    assert basis["days_asked"] == 14
    assert (basis["window"]["first_day"], basis["window"]["days"]) == ("2026-01-01", 7)
    # A summary written before its window named its days, or kept the days asked, is said alike.
    older = json.loads((out / "capacity-summary.json").read_text())
    for key in ("first_day", "last_day", "days"):
        del older["window"][key]
    del older["days_asked"]
    (tmp_path / "older.json").write_text(json.dumps(older))
    answer = vmstats("admit", manifest, "--summary", tmp_path / "older.json")
    assert answer.returncode == 0, answer.stderr
    assert said.replace(" of the 14 asked", "") in answer.stdout.splitlines(), answer.stdout
    older["window"]["start"] = "yesterday"
    (tmp_path / "older.json").write_text(json.dumps(older))
    answer = vmstats("admit", manifest, "--summary", tmp_path / "older.json")
    assert answer.returncode == 2 and answer.stderr.count("\n") == 1, answer.stderr
    assert "window's start and end are not ISO times" in answer.stderr


def test_a_vm_of_junk_alone_is_not_an_unplaced_vm(fleet, tmp_path):
    """ghost-00's only day file is random bytes: no record says it is a VM, nor where it runs.
    It was counted among the unplaced VMs (2, and named as one) beside stray, adding no use;
    now stray alone is, and the junk file is still named as skipped."""
    base, _expected = fleet
    data, _torn, junk = damaged_copy(base, tmp_path, junk=1)
    out = tmp_path / "out"
    shown = vmstats("headroom", data, "--inventory", base / "hosts.toml", "--profile", "2x8", "--no-after",
                    "-o", out)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    doc = json.loads((out / "headroom.json").read_text())
    assert doc["fleet"]["unplaced_vms"] == ["stray"]
    assert [t["vms"] for t in doc["fleet"]["unplaced_use"]["by_host_tag"]] == [1]
    assert [f["path"] for f in doc["basis"]["skipped_files"]] == junk
    line = next(s for s in shown.stdout.splitlines() if s.startswith("unplaced VMs"))
    assert line.startswith("unplaced VMs (no host in the inventory claims them, so their use counts on "
                           "none): 1, ") and line.endswith("; e.g. stray"), line
    manifest = tmp_path / "app.toml"
    manifest.write_text('[[vms]]\nprofile = "2x8@50%"\n')
    answer = vmstats("admit", manifest, data, "--inventory", base / "hosts.toml", "--json")
    basis = json.loads(answer.stdout)["basis"]
    assert basis["unplaced_vms"] == 1 and basis["unplaced_use"]["by_host_tag"][0]["vms"] == 1
    assert junk[0] in answer.stderr
