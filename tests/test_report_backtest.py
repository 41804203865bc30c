"""``vmstats backtest`` on a constructed four-week history, against an independent computation.

The history is written through the log layout (as the flusher writes it):
two weeks to decide on, two to judge on.  Each VM is built so that one
outcome is expected; the expected states, stretches and overrun shares are
recomputed here minute by minute in plain Python from the records written,
with only the thresholds taken from the product's JudgingRules.
"""

import csv
import html
import json
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_report_stats import T0, series, write_records

from vmstats import logstore
from vmstats.report.backtest import RULES, off_hours_mask
from vmstats.report.backtest_outputs import BACKTEST_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400
DAYS = 28
#: What a page that fetches something from another place holds (src, href, url(), @import).
EXTERNAL_FETCH = re.compile(r"""(?:src\s*=|href\s*=|url\(|@import)\s*["']?\s*(?:https?:)?//""", re.I)
#: T0 is a Thursday; the deciding window is its first 14 days, the judging window the next 14.
JUDGE_START = T0 + 14 * DAY


def vmstats(*args):
    return subprocess.run(
        [sys.executable, "-m", "vmstats", *map(str, args)], capture_output=True, text=True, cwd=str(ROOT)
    )


def _history():
    """{vm: dict of per-minute numpy arrays} for the whole four weeks."""
    ts = T0 + 60 * np.arange(DAYS * 1440, dtype=np.int64)
    rng = np.random.default_rng(7)
    noise = rng.random(len(ts))
    hour = (ts // 3600) % 24
    weekday = (ts // DAY + 3) % 7  # 0 = Monday
    judged = ts >= JUDGE_START
    def vm(cpu, mem, disk, net, vcpus, mem_mb=4096):
        return {"cpu": cpu, "mem": mem, "disk": disk, "net": net, "vcpus": vcpus, "mem_mb": mem_mb}

    idle = 0.2 + 0.2 * noise
    service = dict(disk=5e4 + 5e4 * noise, net=2e4 + 2e4 * noise, vcpus=8, mem_mb=16384)
    vms = {}
    # Idle throughout: reclaimed, and the decision holds.
    vms["idle"] = vm(idle, 20 + noise, 200 * noise, 300 * noise, 2)
    # Idle while deciding, then a 90-minute batch at 80% CPU on the first Tuesday judged: needed later.
    batch = (ts >= JUDGE_START + 5 * DAY + 10 * 3600) & (ts < JUDGE_START + 5 * DAY + 10 * 3600 + 90 * 60)
    vms["woken"] = vm(np.where(batch, 80.0, idle), 20 + noise, 200 * noise, 300 * noise, 2)
    # Idle but for one 30-minute burst at 80% CPU while deciding (a p99 over two weeks misses it).
    burst = (ts >= T0 + 3 * DAY + 15 * 3600) & (ts < T0 + 3 * DAY + 15 * 3600 + 30 * 60)
    vms["burst"] = vm(np.where(burst, 80.0, idle), 20 + noise, 200 * noise, 300 * noise, 2)
    # Steady small service on 8 vCPUs: downsized; in the judging window it runs hot 3 hours a day.
    hot = judged & (hour >= 12) & (hour < 15)
    vms["grown"] = vm(np.where(hot, 70.0, 8 + 4 * noise), 20 + 2 * noise, **service)
    # The same service, unchanged: downsized, and the new size holds.
    vms["steady"] = vm(8 + 4 * noise, 20 + 2 * noise, **service)
    # Office hours (Mon-Fri 09-18 UTC): scheduled; in the judging window it works a Saturday night.
    office = (weekday < 5) & (hour >= 9) & (hour < 18)
    night = judged & (weekday == 5) & (hour >= 2) & (hour < 4) & (ts < JUDGE_START + 7 * DAY)
    busy = office | night
    vms["office"] = vm(
        np.where(busy, 40 + 30 * noise, 0.3 * noise),
        np.where(busy, 60.0, 30.0),
        np.where(busy, 2e6 * noise, 500 * noise),
        np.where(busy, 5e5 * noise, 200 * noise),
        4,
    )
    # Quiet, one minute in twenty missing: its policy group asks 99% coverage, so it is not reclaimed.
    vms["missed"] = vm(1.8 + 0.4 * noise, 25 + noise, 300 * noise, 5e3 + 0 * noise, 2)
    vms["missed"]["present"] = np.arange(len(ts)) % 20 != 0
    # Busy all the time: kept.
    vms["busy"] = vm(40 + 30 * noise, 70 + 10 * noise, 2e6 * noise, 1e6 * noise, 4)
    for spec in vms.values():
        present = spec.pop("present", np.ones(len(ts), bool))
        for key in ("cpu", "mem", "disk", "net"):
            spec[key] = np.broadcast_to(spec[key], ts.shape)[present]
        spec["ts"] = ts[present]
    return vms


@pytest.fixture(scope="module")
def backtest(tmp_path_factory):
    base = tmp_path_factory.mktemp("backtest")
    data = base / "data"
    history = _history()
    for vm, spec in history.items():
        write_records(data, series(vm, spec["ts"], spec["cpu"], spec["mem"], spec["disk"], spec["net"],
                                   vcpus=spec["vcpus"], mem_mb=spec["mem_mb"]))  # fmt: skip
    out = base / "out"
    policy = base / "policy.toml"
    policy.write_text('[[groups]]\nmatch = ["missed"]\ncoverage_min = 0.99\n')
    done = vmstats("backtest", data, "-o", out, "--decide-days", 14, "--judge-days", 14, "--policy", policy)
    assert done.returncode == 0, done.stderr
    document = json.loads((out / "backtest.json").read_text())
    return history, out, done.stdout, document, {row["vm"]: row for row in document["vms"]}


@pytest.fixture(scope="module")
def compacted(backtest, tmp_path_factory):
    """The history's logs compacted whole into the columnar tier, once for the module (a pass
    takes seconds): (data dir, the pass's summary).  A test that damages it works on a copy."""
    from vmstats.server import compact as compact_mod

    data = tmp_path_factory.mktemp("compacted") / "data"
    shutil.copytree(backtest[1].parent / "data", data)
    # now=4e9: every day closed long ago.
    summary = compact_mod.compact(str(data), compact_mod.Policy(0, 1e10, 1e10), now=4e9)
    return data, summary


# -- the independent computation ---------------------------------------------------------------


def _work(cpu, disk, net):
    return cpu >= RULES.work_cpu or disk >= RULES.work_disk or net >= RULES.work_net


def _stretches(minutes):
    """Lengths (minutes) of runs of work minutes, minute by minute (records every minute here)."""
    runs, length = [], 0
    for work in minutes:
        if work:
            length += 1
        else:
            if length:
                runs.append(length)
            length = 0
    if length:
        runs.append(length)
    return [r for r in runs if r >= RULES.stretch_minutes]


def _state(spec, start, end):
    inside = [(c, d, n) for t, c, d, n in zip(spec["ts"], spec["cpu"], spec["disk"], spec["net"], strict=True)
              if start <= t < end]  # fmt: skip
    work = [_work(c, d, n) for c, d, n in inside]
    runs = _stretches(work)
    if runs:
        return "busy", max(runs)
    if len(inside) < RULES.min_coverage * (end - start) / 60:
        return "unknown", 0
    quiet = (
        sum(work) <= RULES.quiet_max_work_share * len(work)
        and statistics.median(c for c, _d, _n in inside) < RULES.quiet_cpu
        and statistics.median(n for _c, _d, n in inside) < RULES.quiet_net
    )
    return ("quiet" if quiet else "neither"), 0


def _overrun(spec, row):
    mem_gb = spec["mem_mb"] / 1024
    over = total = 0
    for t, cpu, mem in zip(spec["ts"], spec["cpu"], spec["mem"], strict=True):
        if t >= JUDGE_START:
            total += 1
            over += cpu / 100 * spec["vcpus"] > row["recommended_vcpus"] or mem / 100 * mem_gb > row[
                "recommended_mem_gb"
            ]
    return over / total


# -- the tests ---------------------------------------------------------------------------------


def test_states_and_stretches_match_an_independent_computation(backtest):
    history, _out, _stdout, _doc, rows = backtest
    for vm, spec in history.items():
        decide = _state(spec, T0, JUDGE_START)
        judge = _state(spec, JUDGE_START, T0 + DAYS * DAY)
        row = rows[vm]
        assert (row["decide_state"], row["decide_longest_stretch"]) == decide, vm
        assert (row["judge_state"], row["judge_longest_stretch"]) == judge, vm
        assert row["quiet_in_both"] == (decide[0] == judge[0] == "quiet"), vm


def test_each_constructed_case_gets_its_outcome(backtest):
    history, _out, _stdout, _doc, rows = backtest
    # The decisions this history was built to provoke (the deciding run is the report's own).
    assert {vm: rows[vm]["category"] for vm in ("idle", "woken", "grown", "steady", "office")} == {
        "idle": "reclaim",
        "woken": "reclaim",
        "grown": "downsize",
        "steady": "downsize",
        "office": "schedule",
    }
    assert rows["missed"]["category"] == "insufficient-data" and rows["busy"]["category"] != "reclaim"
    assert rows["idle"]["outcome"] == "held"
    assert rows["woken"]["outcome"] == "needed-later"
    assert rows["woken"]["judge_longest_stretch"] == 90
    assert rows["woken"]["judge_first_stretch"] == "2026-01-20T10:00:00Z"
    for vm in ("grown", "steady"):
        assert rows[vm]["overrun_share"] == pytest.approx(_overrun(history[vm], rows[vm]), abs=1e-5)
    assert rows["grown"]["outcome"] == "overrun" and rows["grown"]["overrun_share"] > RULES.overrun_share
    assert rows["steady"]["outcome"] == "held" and rows["steady"]["overrun_share"] <= RULES.overrun_share
    assert rows["office"]["outcome"] == "busy-off-hours"
    assert rows["office"]["off_hours_longest_stretch"] == 120
    assert rows["missed"]["outcome"] == "missed-saving" and rows["missed"]["quiet_in_both"]
    assert rows["busy"]["outcome"] == "held"


def test_summary_counts_the_rows(backtest):
    _history_, _out, stdout, doc, rows = backtest
    s = doc["summary"]
    assert s["vms"] == len(rows) == 8
    reclaimed = [r for r in rows.values() if r["category"] == "reclaim"]
    assert rows["burst"]["decide_state"] == "busy" and rows["burst"]["decide_longest_stretch"] == 30
    assert s["reclaim"] == {
        "vms": len(reclaimed),
        "needed_later": 1,
        "worked_while_deciding": sum(1 for r in reclaimed if r["decide_state"] == "busy"),
    }
    downsized = sum(1 for r in rows.values() if r["category"] == "downsize")  # "missed" may be one
    assert s["downsize"] == {"vms": downsized, "overrun": 1}
    assert s["schedule"] == {"vms": 1, "busy_off_hours": 1}
    quiet = s["quiet_in_both"]
    assert (quiet["vms"], quiet["reclaimed"], quiet["missed"]) == (2, 1, 1)
    assert quiet["missed_monthly_cost"] == rows["missed"]["monthly_cost"] > 0
    assert doc["windows"] == {
        "decide": {"first_day": "2026-01-01", "last_day": "2026-01-14", "days": 14},
        "judge": {"first_day": "2026-01-15", "last_day": "2026-01-28", "days": 14},
    }
    assert "2026-01-01 .. 2026-01-14 (14 days), judged on 2026-01-15 .. 2026-01-28" in stdout
    assert re.search(r"reclaim +%d VMs: 1 busy in the judging window \(needed later\), %d with a stretch"
                     % (len(reclaimed), s["reclaim"]["worked_while_deciding"]), stdout)  # fmt: skip
    assert re.search(r"quiet +2 VMs quiet in both windows: 1 reclaimed, 1 not", stdout)
    assert not re.search(r"\b1 VMs\b", stdout)  # a category of one VM reads "1 VM"
    # Faults first, in the order of FAULTS.
    faults = ["needed-later", "overrun", "busy-off-hours", "missed-saving"]
    assert [r["outcome"] for r in doc["vms"][:4]] == faults


def test_csv_json_html_and_the_deciding_report(backtest):
    _history_, out, _stdout, doc, rows = backtest
    with open(out / "backtest.csv", newline="") as handle:
        table = list(csv.reader(handle))
    assert tuple(table[0]) == BACKTEST_COLUMNS == tuple(doc["columns"])
    assert [r[0] for r in table[1:]] == [r["vm"] for r in doc["vms"]]
    woken = dict(zip(table[0], next(r for r in table[1:] if r[0] == "woken"), strict=True))
    assert woken["outcome"] == "needed-later" and woken["quiet_in_both"] == "no"
    page = (out / "backtest.html").read_text()
    # Self-contained: nothing is fetched from elsewhere (the page may name local paths).
    assert not EXTERNAL_FETCH.search(page)
    for vm in rows:
        assert ">%s<" % vm in page
    decision = json.loads((out / "decision" / "report.json").read_text())
    assert decision["meta"]["window"]["first_day"] == "2026-01-01"
    assert decision["meta"]["window"]["last_day"] == "2026-01-14"
    assert (out / "decision" / "report.html").exists()


def test_a_deciding_window_mostly_before_the_logs_is_told_not_judged_as_zeroes(backtest, tmp_path):
    """The default window leaves --judge-days after it: on a short history it has almost no logs."""
    _history_, out, stdout, doc, _rows = backtest
    assert "note:" not in stdout and doc["decision"]["note"] == ""  # a full deciding window
    done = vmstats("backtest", out.parent / "data", "-o", tmp_path / "out", "--judge-days", 27)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("vmstats backtest: 8 VMs; decided on 2025-12-19 .. 2026-01-01 (14 days)")
    assert lines[1].startswith("note: the deciding window holds 1 of its 14 days (from 2026-01-01T00:00:00Z")
    assert "too young to judge" in lines[1] and "--judge-days" in lines[1]
    again = json.loads((tmp_path / "out" / "backtest.json").read_text())
    assert again["decision"]["note"] == lines[1][len("note: ") :]
    assert {r["category"] for r in again["vms"]} == {"insufficient-data"}
    page = (tmp_path / "out" / "backtest.html").read_text()
    assert html.escape(again["decision"]["note"], quote=True) in page


def test_columns_are_documented():
    text = (ROOT / "docs" / "REPORT.md").read_text()
    section = text[text.index("## Backtest") :]
    documented = re.findall(r"^- `([a-z_]+)`: ", section, re.M)
    assert tuple(documented[: len(BACKTEST_COLUMNS)]) == BACKTEST_COLUMNS


def test_off_hours_text_of_the_report_is_read():
    # The week in quarter hours: a half-hour zone's stops start on the half hour in UTC.
    mask = off_hours_mask("off Mon 00:00-17:00; Tue-Fri 02:00-17:00; Sat 02:00-24:00; Sun all day (UTC)")
    hours = mask.reshape(168, 4)
    assert (hours.all(axis=1) == hours.any(axis=1)).all()
    hours = hours[:, 0]
    assert mask is not None and hours.sum() == 17 + 4 * 15 + 22 + 24
    assert hours[0] and not hours[17] and hours[24 + 2] and not hours[24 + 1] and hours[6 * 24 + 23]
    daily = off_hours_mask("off daily 00:00-08:00, 20:00-24:00 (UTC)")
    assert daily.sum() == 7 * 12 * 4
    half = off_hours_mask("off Mon-Fri 00:00-02:30, 13:30-24:00; Sat-Sun all day (UTC)")
    assert half.sum() == (5 * 13 + 48) * 4
    assert half[2 * 4 + 1] and not half[2 * 4 + 2] and not half[13 * 4 + 1] and half[13 * 4 + 2]
    for unreadable in ("off sometimes (UTC)", "off Mon 17:00-09:00 (UTC)", "off Mon 10:10-12:00 (UTC)",
                       "off Mon 10:60-12:00 (UTC)"):
        assert off_hours_mask(unreadable) is None, unreadable


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--decide-until", "2026-01-28"], "no logs after the deciding window"),
        (["--decide-until", "2025-12-01"], "before the first log"),
        (["--decide-until", "yesterday"], "is not a YYYY-MM-DD date"),
        (["--decide-until", "9999-12-31"], "--decide-until 9999-12-31 is outside 1970-01-01 to 9989-12-23"),
        # backtest has no --days: a bad look-back is named as it was given.
        (["--set", "days=1e9"], "Error: --set days=1e9: days is a look-back in whole days, from 1 to 3660"),
        (["--set", "headroom=inf"], "Error: --set headroom=inf: headroom='inf' is not a finite"),
        (["--net-idle", "1000", "--set", "net_idle=2000"],
         "Error: --set net_idle=2000 and --net-idle 1000 give net_idle two values"),
    ],
)
def test_bad_windows_are_one_line_and_non_zero(tmp_path, extra, message):
    ts = T0 + 60 * np.arange(3 * 1440)
    write_records(tmp_path / "data", series("a", ts, np.ones(len(ts)), np.ones(len(ts)), vcpus=1))
    done = vmstats("backtest", tmp_path / "data", "-o", tmp_path / "out", "--judge-days", 1, *extra)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


def test_a_judging_window_in_a_gap_of_the_logs_is_not_judged_on_nothing(tmp_path):
    """Logs of 2026-01-01 and 2026-01-04 only: judging 01-02 .. 01-03 read no record, yet the
    run ended 0 with "0 busy in the judging window", a verdict on nothing.  It fails as a
    deciding window without records does (status 1, one line naming the days)."""
    minutes, ones = 60 * np.arange(1440), np.ones(1440)
    for start in (T0, T0 + 3 * DAY):
        write_records(tmp_path / "data", series("a", start + minutes, ones, ones, vcpus=1))
    done = vmstats("backtest", tmp_path / "data", "-o", tmp_path / "out", "--decide-until", "2026-01-01",
                   "--decide-days", 1, "--judge-days", 2)
    assert (done.returncode, done.stdout) == (1, ""), done
    assert done.stderr == ("Error: no logs in the judging window (2026-01-02 .. 2026-01-03, the days after "
                           "the deciding window): nothing to judge on\n")
    assert not (tmp_path / "out").exists()
    done = vmstats("backtest", tmp_path / "data", "-o", tmp_path / "out", "--decide-until", "2026-01-01",
                   "--decide-days", 1, "--judge-days", 3)
    assert done.returncode == 0, done.stderr  # its last day has logs: judged on those


def test_vms_left_unjudged_for_want_of_data_are_counted_on_the_terminal(tmp_path):
    """A judging window with records for a quarter of its minutes: the reclaimed VM is
    no-data, and the terminal said only "0 busy in the judging window", a decision that held
    to the eye.  A no-data line counts the VMs not judged."""
    minutes = 60 * np.arange(7 * 1440 + 360)
    idle = np.full(len(minutes), 0.5)
    write_records(tmp_path / "data", series("quiet", T0 + minutes, idle, idle, idle, idle, vcpus=2))
    done = vmstats("backtest", tmp_path / "data", "-o", tmp_path / "out", "--decide-until", "2026-01-07",
                   "--decide-days", 7, "--judge-days", 1)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "reclaim   1 VM: 0 busy in the judging window (needed later), 0 with a stretch of work " \
        "in the deciding window" in lines
    assert "no-data   1 VM: too little data in the judging window to judge" in lines


def test_an_upsizes_extra_cost_reads_as_a_cost_on_the_backtest_page(tmp_path):
    """A VM pinned at its size is told to grow; backtest.html's saving cell read "-56.35", as the
    report's table did.  It reads "+56.35" over "extra cost"; backtest.csv keeps the figure."""
    minutes = 60 * np.arange(8 * 1440)
    noise = np.random.default_rng(2).random(len(minutes))
    flat = np.full(len(minutes), 40.0)
    write_records(tmp_path / "data", series("pinned", T0 + minutes, 95 + 3 * noise, flat,
                                            net=np.full(len(minutes), 2e6), vcpus=2, mem_mb=8192))
    done = vmstats("backtest", tmp_path / "data", "-o", tmp_path / "out", "--decide-until", "2026-01-07",
                   "--decide-days", 7, "--judge-days", 1)
    assert done.returncode == 0, done.stderr
    with (tmp_path / "out" / "backtest.csv").open(newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["category"] == "upsize" and float(row["monthly_saving"]) < 0
    page = (tmp_path / "out" / "backtest.html").read_text()
    cells = re.findall(r"<td[^>]*>(.*?)</td>", page.split("<td>pinned</td>", 1)[1], re.S)
    saving = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", cells[4])).strip()
    assert saving == "+%s extra cost" % row["monthly_saving"].lstrip("-")


def test_an_excluded_quiet_vm_is_not_a_missed_saving(backtest, tmp_path):
    _history_, out, _stdout, _doc, rows = backtest
    exclusions = tmp_path / "exclusions.toml"
    exclusions.write_text('[[exclude]]\nvm = "missed"\nreason = "kept for audits"\n')
    policy = out.parent / "policy.toml"
    done = vmstats("backtest", out.parent / "data", "-o", tmp_path / "out", "--policy", policy,
                   "--exclusions", exclusions)  # fmt: skip
    assert done.returncode == 0, done.stderr
    again = {r["vm"]: r for r in json.loads((tmp_path / "out" / "backtest.json").read_text())["vms"]}
    assert again["missed"]["category"] == "excluded" and again["missed"]["quiet_in_both"]
    assert again["missed"]["outcome"] == "held"
    assert {vm: r["outcome"] for vm, r in again.items() if vm != "missed"} == {
        vm: r["outcome"] for vm, r in rows.items() if vm != "missed"
    }


def test_a_fifo_or_folder_in_a_judged_day_file_is_named_not_fatal(backtest, tmp_path):
    """Damage in the judging window ends nothing: the file is named and the rest judged."""
    import os

    _history_, out, _stdout, _doc, rows = backtest
    data = tmp_path / "data"
    shutil.copytree(out.parent / "data", data)
    judged = sorted((data / "vms" / "idle").glob("*.csv"))[-3:-1]
    for path in judged:
        path.unlink()
    os.mkfifo(judged[0])
    judged[1].mkdir()
    done = vmstats("backtest", data, "-o", tmp_path / "out", "--policy", out.parent / "policy.toml")
    assert done.returncode == 0, done.stderr
    document = json.loads((tmp_path / "out" / "backtest.json").read_text())
    assert sorted(Path(item["path"]).name for item in document["skipped_files"]) == sorted(
        p.name for p in judged
    )
    assert "2 day files not read whole" in done.stdout
    again = {r["vm"]: r for r in document["vms"]}
    assert {vm: r["outcome"] for vm, r in again.items()} == {vm: r["outcome"] for vm, r in rows.items()}


def test_compacted_logs_give_the_same_backtest(backtest, compacted, tmp_path):
    """The judging window's records come from the columnar tier as they did from the CSV files."""
    _history_, out, _stdout, _doc, rows = backtest
    data, summary = compacted
    assert summary.days_compacted and not list(data.glob("vms/*/*.csv"))
    done = vmstats("backtest", data, "-o", tmp_path / "out", "--policy", out.parent / "policy.toml")
    assert done.returncode == 0, done.stderr
    again = {r["vm"]: r for r in json.loads((tmp_path / "out" / "backtest.json").read_text())["vms"]}
    assert again == rows


def test_a_damaged_columnar_file_is_named_once_with_the_vms_it_held(backtest, compacted, tmp_path):
    """A columnar file holds a day of every VM: when its rows cannot be read it is one damaged
    file, named once with how many VMs lost that day, not once per VM."""
    import pyarrow.parquet as pq
    from test_report_damaged import _rewrite_tier

    _history_, out, _stdout, _doc, rows = backtest
    data = tmp_path / "data"
    shutil.copytree(compacted[0], data)
    damaged = sorted((data / "columnar").iterdir())[-3]  # a judged day
    held = len(set(pq.read_table(damaged, columns=["vm"]).column("vm").to_pylist()))
    assert held > 1
    _rewrite_tier(damaged, column="cpu")  # described right, its rows unreadable
    done = vmstats("backtest", data, "-o", tmp_path / "out", "--policy", out.parent / "policy.toml")
    assert done.returncode == 0, done.stderr
    skipped = json.loads((tmp_path / "out" / "backtest.json").read_text())["skipped_files"]
    assert [(item["path"], item["vms"]) for item in skipped] == [(str(damaged), held)]
    assert skipped[0]["why"].startswith("unreadable: could not convert string to float")
    assert "1 day file not read whole while judging:" in done.stdout
    assert done.stdout.count(str(damaged)) == 1
    assert "(rows of %d VMs)" % held in done.stdout


def test_a_truncated_columnar_file_is_named_too(backtest, compacted, tmp_path):
    """A columnar file too damaged to list its VMs never becomes a day to read; its day is still
    missing from the windows, so the backtest names it rather than judging without it in silence."""
    _history_, out, _stdout, _doc, _rows = backtest
    data = tmp_path / "data"
    shutil.copytree(compacted[0], data)
    damaged = sorted((data / "columnar").iterdir())[-3]  # a judged day
    damaged.write_bytes(damaged.read_bytes()[:100])
    done = vmstats("backtest", data, "-o", tmp_path / "out", "--policy", out.parent / "policy.toml")
    assert done.returncode == 0, done.stderr
    skipped = json.loads((tmp_path / "out" / "backtest.json").read_text())["skipped_files"]
    assert [(item["path"], item["vms"]) for item in skipped] == [(str(damaged), 0)]
    assert "1 day file not read whole while judging:" in done.stdout
    assert done.stdout.count(str(damaged)) == 1


def test_a_judged_day_file_with_nul_bytes_is_named_with_its_rows_kept(backtest, tmp_path):
    """NUL bytes in one line cost that line only; the file is named, as the report names it."""
    _history_, out, _stdout, _doc, rows = backtest
    data = tmp_path / "data"
    shutil.copytree(out.parent / "data", data)
    judged = sorted((data / "vms" / "idle").glob("*.csv"))[-2]
    lines = judged.read_bytes().split(b"\n")
    lines[5] = lines[5][:12] + b"\x00\x00" + lines[5][12:]
    judged.write_bytes(b"\n".join(lines))
    done = vmstats("backtest", data, "-o", tmp_path / "out", "--policy", out.parent / "policy.toml")
    assert done.returncode == 0, done.stderr
    document = json.loads((tmp_path / "out" / "backtest.json").read_text())
    assert document["skipped_files"] == [{"path": str(judged), "why": "1 malformed line skipped", "vms": 1}]
    assert {r["vm"]: r["outcome"] for r in document["vms"]} == {vm: r["outcome"] for vm, r in rows.items()}


def test_a_judged_day_file_with_no_readable_row_says_so(backtest, tmp_path):
    """A file whose every row is damaged is not "N malformed lines skipped": nothing of it was used."""
    _history_, out, _stdout, _doc, _rows = backtest
    data = tmp_path / "data"
    shutil.copytree(out.parent / "data", data)
    judged = sorted((data / "vms" / "idle").glob("*.csv"))[-2]
    header, *rows = judged.read_bytes().rstrip(b"\n").split(b"\n")
    judged.write_bytes(b"\n".join([header] + [row[:12] + b"\x00" + row[12:] for row in rows]) + b"\n")
    done = vmstats("backtest", data, "-o", tmp_path / "out", "--policy", out.parent / "policy.toml")
    assert done.returncode == 0, done.stderr
    document = json.loads((tmp_path / "out" / "backtest.json").read_text())
    assert document["skipped_files"] == [
        {"path": str(judged), "why": "no readable row (%d malformed lines)" % len(rows), "vms": 1}]


def test_a_downsize_or_schedule_with_few_judged_minutes_is_not_called_held(backtest, tmp_path):
    """Three days of logs in a 14-day judging window: a reclaimed VM there is no-data (under
    half the minutes), and so must a downsize or a schedule be; they were called held on any
    minute at all.  An overrun seen in those minutes is still an overrun."""
    _history, out, _stdout, _doc, rows = backtest
    data = tmp_path / "data"
    shutil.copytree(out.parent / "data", data)
    kept = {logstore.day_name((JUDGE_START + n * DAY) // DAY) for n in (11, 12, 13)}
    for vm in ("idle", "grown", "steady", "office"):
        for day_file in (data / "vms" / vm).iterdir():
            day = day_file.name.removesuffix(".csv")
            if day >= logstore.day_name(JUDGE_START // DAY) and day not in kept:
                day_file.unlink()
    done = vmstats("backtest", data, "-o", tmp_path / "out", "--decide-days", 14, "--judge-days", 14,
                   "--policy", out.parent / "policy.toml")  # fmt: skip
    assert done.returncode == 0, done.stderr
    again = {r["vm"]: r for r in json.loads((tmp_path / "out" / "backtest.json").read_text())["vms"]}
    assert {vm: again[vm]["category"] for vm in ("idle", "grown", "steady", "office")} == {
        vm: rows[vm]["category"] for vm in ("idle", "grown", "steady", "office")}
    assert again["idle"]["outcome"] == "no-data" and again["idle"]["judge_coverage"] < RULES.min_coverage
    assert again["steady"]["outcome"] == "no-data", again["steady"]
    assert again["steady"]["detail"] == "records for 21.4% of the judging window's minutes"
    assert again["office"]["outcome"] == "no-data", again["office"]
    share = re.fullmatch(r"records for ([\d.]+)% of its off-hours minutes in the judging window",
                         again["office"]["detail"])  # fmt: skip
    assert share and 0 < float(share[1]) < 100 * RULES.min_coverage, again["office"]["detail"]
    assert again["grown"]["outcome"] == "overrun" and again["grown"]["overrun_share"] > RULES.overrun_share
    assert "no-data   3 VMs: too little data in the judging window to judge" in done.stdout.splitlines()
