"""Extra tags from the agent to the report, and the statement they group (``report --by TAG``).

The round trip runs the real agent (tags from the environment and from a
config file) against the real server on loopback, then the real report over
the logs the server wrote.  The statement's sums are checked against the
per-VM figures of report.csv, and the tags' limits at each door (agent
settings, decoder, logs written before tags existed).
"""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from serverproc import LOOPBACK, ServerProcess
from test_client_push import ENV, agent_command, wait_rows
from test_report_stats import DAY, T0, run, series, write_records

from vmstats import logstore, protocol
from vmstats.client import config as agent_config
from vmstats.report import statement as statement_mod
from vmstats.report.settings import ReportError


def report(*args):
    return subprocess.run(
        [sys.executable, "-m", "vmstats", "report", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_tags_travel_from_the_agent_through_the_server_to_the_report(tmp_path):
    conf = tmp_path / "agent.conf"
    conf.write_text("# a second team's VM\ntags = project=search, owner=web-team\nhost = hv-b\n")
    with ServerProcess(tmp_path / "server", "--flush-interval", "0.3") as server:
        address = "%s:%d" % (LOOPBACK, server.udp_port)
        # The three agents at once: each spends its two intervals waiting.
        agents = {
            "with_env": subprocess.Popen(
                agent_command("--server", address, "--count", "2", "--vm-id", "billing-db", "--host", "hv-a"),
                env=dict(ENV, VMSTATS_TAGS="project=billing,env=prod"),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ),
            "from_file": subprocess.Popen(
                agent_command("--server", address, "--count", "2", "--vm-id", "search-1",
                              "--config", str(conf)),
                env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ),
            "untagged": subprocess.Popen(
                agent_command("--server", address, "--count", "2", "--vm-id", "plain-vm"),
                env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ),
        }
        try:
            for name, agent in agents.items():
                _out, err = agent.communicate(timeout=60)
                assert agent.returncode == 0, (name, err)
        finally:
            for agent in agents.values():
                if agent.poll() is None:
                    agent.kill()
                    agent.wait()
        rows = {vm: wait_rows(server.data_dir, vm, 2) for vm in ("billing-db", "search-1", "plain-vm")}
    # The logs: the tags cell, sorted by key; an untagged row is a version-1 row.
    assert [r["tags"] for r in rows["billing-db"]] == ["env=prod;project=billing"] * 2
    assert [r["tags"] for r in rows["search-1"]] == ["owner=web-team;project=search"] * 2
    assert {r["host"] for r in rows["search-1"]} == {"hv-b"}
    assert [r["tags"] for r in rows["plain-vm"]] == ["", ""]

    out = tmp_path / "out"
    done = report(server.data_dir, "-o", out, "--by", "project")
    assert done.returncode == 0, done.stderr
    by_vm = {r["vm"]: r for r in read_csv(out / "report.csv")}
    assert by_vm["billing-db"]["host"] == "hv-a" and by_vm["billing-db"]["tags"] == "env=prod;project=billing"
    assert by_vm["search-1"]["host"] == "hv-b" and by_vm["plain-vm"]["tags"] == ""
    document = json.loads((out / "report.json").read_text())
    vms = {v["vm"]: v for v in document["vms"]}
    assert vms["search-1"]["tags"] == {"owner": "web-team", "project": "search"}
    statement = {r["value"]: r for r in read_csv(out / "statement.csv")}
    assert set(statement) == {"billing", "search", ""}
    assert [statement[k]["vms"] for k in ("billing", "search", "")] == ["1", "1", "1"]
    assert float(statement["billing"]["monthly_cost"]) == pytest.approx(
        float(by_vm["billing-db"]["monthly_cost"])
    )
    assert float(statement["search"]["usage_cost"]) == pytest.approx(float(by_vm["search-1"]["usage_cost"]))
    page = (out / "report.html").read_text()
    assert "Statement by project" in page and 'data-filter="project=billing"' in page
    assert "statement by project: 3 groups" in done.stdout and "statement.csv" in done.stdout
    by_host = report(server.data_dir, "-o", tmp_path / "hosts", "--by", "host")
    assert by_host.returncode == 0, by_host.stderr
    hosts = {r["value"]: r["vms"] for r in read_csv(tmp_path / "hosts" / "statement.csv")}
    assert hosts["hv-a"] == "1" and hosts["hv-b"] == "1"


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    """A week of ten VMs in three projects (one VM without), then the report by project."""
    data = tmp_path_factory.mktemp("tagged") / "data"
    ts = T0 + 60 * np.arange(7 * 1440)
    rng = np.random.default_rng(5)
    projects = ["billing", "billing", "search", "search", "search", "ml", "ml", "ml", "ml", None]
    for k, project in enumerate(projects):
        cpu = np.round(np.clip(rng.normal(5 + 9 * k, 3, len(ts)), 0, 100), 1)
        mem = np.round(np.clip(rng.normal(20 + 6 * k, 2, len(ts)), 0, 100), 1)
        records = series(
            "vm%d" % k,
            ts,
            cpu,
            mem,
            disk=np.full(len(ts), 1e4 * k),
            net=np.full(len(ts), 5e4 * k),
            vcpus=1 + k % 4,
            mem_mb=2048 * (1 + k % 3),
        )
        tags = protocol.check_tags([("project", project), ("env", "prod")] if project else [("env", "dev")])
        write_records(data, [r._replace(tags=tags, host="hv%d" % (k % 2)) for r in records])
    out = tmp_path_factory.mktemp("tagged-out")
    done = report(data, "-o", out, "--by", "project")
    assert done.returncode == 0, done.stderr
    return data, out


def cents(value) -> int:
    """A money cell in whole cents (an empty cell is 0)."""
    return round(float(value or 0) * 100)


def test_statement_sums_equal_the_per_vm_figures(tagged):
    _data, out = tagged
    vms = read_csv(out / "report.csv")
    document = json.loads((out / "report.json").read_text())
    usage = {v["vm"]: v["usage"] for v in document["vms"]}
    lines = read_csv(out / "statement.csv")
    assert list(lines[0]) == list(statement_mod.COLUMNS)
    assert [line["value"] for line in lines] == ["ml", "search", "billing", ""]  # by provisioned cost
    # Each VM's cost by use is its four parts, to the cent.
    for v in vms:
        assert cents(v["usage_cost"]) == sum(cents(x) for x in usage[v["vm"]].values()), v["vm"]
    for line in lines:
        members = [
            v
            for v in vms
            if dict(p.split("=") for p in v["tags"].split(";")).get("project", "") == line["value"]
        ]
        assert int(line["vms"]) == len(members) > 0 and line["tag"] == "project"
        for column in ("monthly_cost", "usage_cost"):
            assert cents(line[column]) == sum(cents(v[column]) for v in members)
        # The saving is the candidates' only; an upsize's extra cost is apart, never netted.
        candidates = [v for v in members if v["category"] in ("reclaim", "schedule", "downsize")]
        assert cents(line["monthly_saving"]) == sum(cents(v["monthly_saving"]) for v in candidates)
        assert int(line["candidates"]) == len(candidates)
        upsizes = [v for v in members if v["category"] == "upsize"]
        assert cents(line["upsize_extra_cost"]) == -sum(cents(v["monthly_saving"]) for v in upsizes)
        parts = [cents(line["usage_" + p]) for p in ("cpu", "ram", "disk", "network")]
        assert sum(parts) == cents(line["usage_cost"])
        for part, value in zip(("cpu", "ram", "disk", "network"), parts, strict=True):
            assert value == sum(cents(usage[v["vm"]][part]) for v in members)
        idle = sum(cents(float(v["monthly_cost"]) * float(v["idle_share"])) for v in members)
        assert cents(line["idle_cost"]) == idle
        assert float(line["idle_share"]) == pytest.approx(idle / cents(line["monthly_cost"]), abs=1e-4)
    assert any(line["upsize_extra_cost"] != "0.0" for line in lines)  # the fleet has an upsize
    # The total in report.json is the sum of the groups, to the cent, and the report's own totals.
    total = document["meta"]["statement"]["total"]
    for column in statement_mod.COLUMNS[4:]:
        if column not in ("idle_share", "candidates", "currency", "minor_unit"):
            assert cents(total[column]) == sum(cents(line[column]) for line in lines), column
    totals = document["meta"]["totals"]
    for column in ("monthly_cost", "monthly_saving", "upsize_extra_cost", "candidates"):
        assert total[column] == totals[column], column
    assert total["vms"] == len(vms) == 10
    # The page's statement total shows the saving of its headline, and the upsizes' cost apart.
    page = (out / "report.html").read_text()
    start = page.index('<table id="statement">')
    statement_html = page[start : page.index("</table>", start)]
    total_row = statement_html[statement_html.index('<tr class="total">') :]
    assert "{:,.2f}".format(totals["monthly_saving"]) in total_row
    assert "{:,.2f}".format(totals["upsize_extra_cost"]) in total_row and "upsize extra" in statement_html
    # ... and the summary's upsize line says what they would add, as the terminal does.
    cats = page[page.index('<table class="cats">') :]
    upsize_row = cats[cats.index(">upsize<") : cats.index("</tr>", cats.index(">upsize<"))]
    extra = "{:,.2f}".format(totals["upsize_extra_cost"])
    assert "USD %s more / month (not in the saving)" % extra in upsize_row


def test_the_terminal_statement_ends_with_its_total_and_names_the_groups_it_leaves_out(tagged, tmp_path):
    data, out = tagged
    done = report(data, "-o", tmp_path / "out", "--by", "project", "--top", 2)
    assert done.returncode == 0, done.stderr
    listing = done.stdout[done.stdout.index("statement by project: 4 groups") :].splitlines()
    assert [line.split()[0] for line in listing[1:5]] == ["ml", "search", "...", "total"]
    assert listing[3] == "  ... 2 more groups (statement.csv)"
    totals = json.loads((out / "report.json").read_text())["meta"]["totals"]
    assert listing[4].split()[1:3] == [str(totals["vms"]), "VMs"]
    # The fleet has an upsize: each owner's line names what its upsizes would add, apart from
    # its saving, as statement.csv does; the terminal once showed the saving alone.
    assert listing[4].endswith("saving %12s  upsize extra %12s" % (
        "{:,.2f}".format(totals["monthly_saving"]), "{:,.2f}".format(totals["upsize_extra_cost"])))
    lines = {line["value"]: line for line in read_csv(tmp_path / "out" / "statement.csv")}
    for shown in (listing[1], listing[2]):
        extra = float(lines[shown.split()[0]]["upsize_extra_cost"])
        assert shown.endswith("upsize extra %12s" % "{:,.2f}".format(extra))
    assert totals["upsize_extra_cost"] > 0


def test_a_run_without_by_removes_the_statement_an_earlier_run_left(tagged, tmp_path):
    data, _out = tagged
    out = tmp_path / "nightly"
    assert report(data, "-o", out, "--by", "project").returncode == 0
    assert (out / "statement.csv").exists()
    done = report(data, "-o", out)
    assert done.returncode == 0, done.stderr
    assert not (out / "statement.csv").exists()  # no stale bill beside this run's report
    assert "vmstats report: removed %s of an earlier run (this one has no --by)" % (
        out / "statement.csv") in done.stderr.splitlines()
    assert report(data, "-o", out).stderr.count("statement.csv") == 0  # nothing to remove, nothing said


def test_a_statement_by_a_tag_no_vm_carries_says_so_and_names_the_tags_seen(tagged, tmp_path):
    """``--by projct`` billed the whole fleet to one untagged group without a word."""
    data, _out = tagged
    done = report(data, "-o", tmp_path / "typo", "--by", "projct")
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "no VM carries" in line]
    assert len(warned) == 1 and warned[0].startswith("vmstats report: warning: no VM carries tag 'projct'")
    seen = warned[0].split("(tags the VMs carry: ")[1].rstrip(")").split(", ")
    assert "project" in seen and "host" in seen and seen == sorted(seen)
    with open(tmp_path / "typo" / "statement.csv", newline="") as handle:
        assert [row["value"] for row in csv.DictReader(handle)] == [""]  # one untagged group
    assert "no VM carries" not in report(data, "-o", tmp_path / "right", "--by", "project").stderr


def test_usage_cost_is_the_usage_matrix_times_unit_prices(tagged):
    data, _out = tagged
    result, by_vm = run([data])
    row = by_vm["vm3"]  # 4 vCPUs, 2 GB, disk 30 kB/s, network 150 kB/s
    seconds = 730 * 3600
    expected = {
        "cpu": row["cpu_avg"] / 100 * 4 * 0.025 * 730,
        "ram": row["mem_avg"] / 100 * 2 * 0.0034 * 730,
        "disk": 3e4 * seconds / 1e9 * 0.0,
        "network": 1.5e5 * seconds / 1e9 * 0.01,
    }
    assert row["usage"] == pytest.approx(expected, abs=0.01)
    assert row["usage_cost"] == pytest.approx(sum(expected.values()), abs=0.02)
    assert row["host"] == "hv1" and row["tags"] == {"env": "prod", "project": "search"}
    assert result.meta.get("statement") is None  # only with --by


def test_latest_tags_win_and_old_files_read_as_untagged(tmp_path):
    """A VM re-tagged mid-window is grouped by its latest tags; a version-1 file has none."""
    data = tmp_path / "data"
    ts = T0 + 60 * np.arange(2 * 1440)
    records = series("moved", ts, np.full(len(ts), 20.0), np.full(len(ts), 40.0))
    old = protocol.check_tags([("project", "old")])
    new = protocol.check_tags([("project", "new")])
    write_records(data, [r._replace(tags=old if r.ts < T0 + DAY + 600 else new) for r in records])
    legacy = logstore.day_path(str(data), "legacy", logstore.day_of(T0))
    (data / "vms" / "legacy").mkdir()
    with open(legacy, "wb") as handle:
        handle.write(
            logstore.HEADER_V1
            + b"".join(
                logstore.format_row(r) + b"\n"
                for r in series("legacy", ts[:1440], np.full(1440, 3.0), np.full(1440, 9.0))
            )
        )
    frame, bad = logstore.read_rows([legacy])
    assert bad == 0 and len(frame) == 1440 and (frame["tags"].fillna("") == "").all()
    mixed, bad = logstore.read_rows(path for _d, path in logstore.day_files(str(data), "moved"))
    assert bad == 0 and len(mixed) == 2 * 1440
    assert set(mixed["tags"].dropna()) == {"project=old", "project=new"}
    result, by_vm = run([data], by="project")
    assert by_vm["moved"]["tags"] == {"project": "new"} and by_vm["legacy"]["tags"] == {}
    groups = {line["value"]: line["vms"] for line in result.meta["statement"]["groups"]}
    assert groups == {"new": 1, "": 1}
    assert logstore.last_labels(legacy)[1:] == ("", None)


def test_bad_by_is_one_readable_line(tagged):
    data, _out = tagged
    for key in ("Project", "vm", "a b", "x" * 40):
        done = report(data, "-o", data.parent / "bad", "--by", key)
        assert done.returncode != 0 and done.stderr.count("\n") == 1 and "--by" in done.stderr, done.stderr
    with pytest.raises(ReportError):
        statement_mod.check_key("owner=x")


@pytest.mark.parametrize(
    "text, message",
    [
        ("project", "not key=value"),
        ("Project=x", "tag key"),
        ("vm=x", "tag key"),
        ("host=x", "tag key"),
        ("project=a,project=b", "given twice"),
        ("project=a;b", "is not [A-Za-z0-9]"),
        ("project=" + "x" * 65, "1-64"),
        (",".join("k%d=v" % i for i in range(9)), "at most 8"),
    ],
)
def test_tag_limits_hold_at_the_agent_and_the_decoder(text, message):
    with pytest.raises(agent_config.ConfigError, match="VMSTATS_TAGS: .*" + message.replace("[", r"\[")):
        agent_config.load(["--server", "127.0.0.1:1"], environ={"VMSTATS_TAGS": text})
    if text.partition("=")[0] in protocol.TAG_NAMES:
        return  # on the wire these are the vm and host tags themselves
    decoder = protocol.Decoder(clock=lambda: T0)
    with pytest.raises(protocol.DecodeError) as caught:
        decoder.decode_line("vmstats,vm=a,%s cpu=1,mem=2 %d" % (text.replace(";", ","), T0))
    assert caught.value.reason in (protocol.R_SYNTAX,)


def test_tagged_records_round_trip_and_untagged_ones_are_spelled_as_before():
    decoder = protocol.Decoder(clock=lambda: T0)
    record = decoder.decode_line("vmstats,vm=10.0.0.5,env=prod,host=h1,project=billing cpu=1,mem=2 %d" % T0)
    assert record.tags == (("env", "prod"), ("project", "billing")) and record.host == "h1"
    line = protocol.encode_record(record)
    assert line == "vmstats,vm=10.0.0.5,host=h1,env=prod,project=billing cpu=1,mem=2 %d" % T0
    assert decoder.decode_line(line) == record
    assert protocol.encode_records([record]) == [line.encode()]
    plain = record._replace(tags=None)
    assert protocol.encode_record(plain) == "vmstats,vm=10.0.0.5,host=h1 cpu=1,mem=2 %d" % T0
    assert logstore.format_tail(plain) == b"1,,2,,,,,,,,h1"
    assert logstore.format_tail(record) == b"1,,2,,,,,,,,h1,env=prod;project=billing"
    settings = agent_config.load(["--server", "127.0.0.1:1", "--tags", " project=a , env=b "], environ={})
    assert settings.tags == (("env", "b"), ("project", "a"))
    assert agent_config.load(["--server", "127.0.0.1:1"], environ={}).tags is None


def test_sparklines_and_daily_p95_span_the_analysed_window_not_the_asked_one(tmp_path):
    """Two days of data under a 7-day look-back: no blank stretch beside 'coverage 100%'."""
    data = tmp_path / "data"
    start = T0 + 5 * 3600 + 17 * 60  # starts mid-hour, mid-day
    ts = start + 60 * np.arange(2 * 1440)
    write_records(data, series("steady", ts, np.full(len(ts), 12.0), np.full(len(ts), 30.0)))
    result, by_vm = run([data], policy=None)
    row = by_vm["steady"]
    assert result.meta["window"]["clipped"] and row["coverage"] == 1.0
    assert None not in row["spark_cpu"] and set(row["spark_cpu"]) == {12.0}
    hours = (int(ts[-1]) // 3600) - (start // 3600) + 1
    step = result.meta["sparkline_step_hours"]
    assert len(row["spark_cpu"]) == -(-hours // step)
    assert result.meta["sparkline_start"] == "2026-01-01T05:00:00Z"
    assert result.meta["daily_start"] == "2026-01-01" and row["daily_cpu_p95"] == [12.0, 12.0, 12.0]
    out = tmp_path / "out"
    done = report(data, "-o", out)
    assert done.returncode == 0, done.stderr
    page = (out / "report.html").read_text()
    assert "<title>VM reclamation report 2026-01-01 to 2026-01-03</title>" in page


def test_by_host_with_an_inventory_places_vms_as_the_capacity_section_does(tmp_path):
    """A VM without a host tag that the inventory's `vms` selectors place is on that host.

    The rule is the inventory's (docs/CAPACITY.md): a tag naming an inventory host
    wins, then the first host whose selectors match, else the tag as sent.
    """
    data = tmp_path / "data"
    ts = T0 + 60 * np.arange(2 * 1440)
    hosts = {"web-1": "", "web-2": "", "db1": "kvm02", "moved": "old-host", "stray": "hv9", "lone": ""}
    for vm, host in hosts.items():
        records = series(vm, ts, np.full(len(ts), 20.0), np.full(len(ts), 40.0))
        write_records(data, [r._replace(host=host) for r in records])
    inventory = tmp_path / "hosts.toml"
    inventory.write_text(
        '[[host]]\nname = "kvm01"\nvcpus = 64\nmem_gb = 256\nvms = ["web-*", "db1", "moved"]\n\n'
        '[[host]]\nname = "kvm02"\nvcpus = 64\nmem_gb = 256\n'
    )
    out = tmp_path / "out"
    done = report(data, "-o", out, "--by", "host", "--inventory", inventory)
    assert done.returncode == 0, done.stderr
    by_vm = {row["vm"]: row["host"] for row in read_csv(out / "report.csv")}
    assert by_vm == {"web-1": "kvm01", "web-2": "kvm01", "db1": "kvm02", "moved": "kvm01", "stray": "hv9",
                     "lone": ""}
    groups = {line["value"]: line["vms"] for line in read_csv(out / "statement.csv")}
    assert groups == {"kvm01": "3", "kvm02": "1", "hv9": "1", "": "1"}
