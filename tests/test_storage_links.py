"""Symbolic links under a data dir's vms/: the server, the report, compaction and rules agree.

A VM folder or day file linked out of the data dir (into another data dir, say) is that dir's:
the server does not write this fleet's rows through it (it keeps them, acknowledged, until it
can write them), the report does not count it, compaction leaves it alone, and rules do not
take it for one of this fleet's VMs at start.  A link that
stays inside the data dir is written and read as if the files stood there.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rulesutil import SECRET, WebhookReceiver, rules_file
from rulesutil import serve as serve_rules
from serverproc import ROOT, serve
from test_server_udp import line, logged
from test_storage_compaction import _files, _linked_data_dirs

from vmstats import logstore
from vmstats.protocol import Record


def _records(vm: str, start: int, count: int) -> bytes:
    return b"".join(line(Record(vm=vm, ts=start + 60 * k, cpu=1.0 + k, mem=2.0)) + b"\n"
                    for k in range(count))


def _start() -> int:
    """A minute half an hour ago, moved earlier when the few minutes after it would cross
    midnight UTC: each VM's records then lie in one day file, whenever the test runs."""
    start = (int(time.time()) // 60 - 30) * 60
    return min(start, (start // 86400 + 1) * 86400 - 600)


def test_the_server_writes_no_row_through_a_link_out_of_the_data_dir_and_loses_none(tmp_path):
    """A VM folder linked into another data dir: the server appended this fleet's records to
    that dir's files.  It now keeps them (acknowledged: in memory and in the journal), counts
    and logs the VM once, writes the other VMs, and writes them all once the link is gone --
    after a restart too, from the journal the stop left."""
    data, other, _first = _linked_data_dirs(tmp_path)
    before = _files(other)
    start = _start()
    with serve(tmp_path, "--flush-interval", "0.2", data_dir=data) as server:
        reply = server.send_synced(_records("10.0.0.9", start, 3) + _records("10.0.0.3", start, 2))
        assert reply[:2] == ["#!ack", "all"], reply
        # Written, or refused twice (once per flush): then every flush has tried them.
        server.wait_metrics(lambda m: m["vmstats_flushed_records_total"] >= 2 and (
            m["vmstats_flushed_records_total"] == 5 or m["vmstats_write_failures_total"] >= 2))
        assert _files(other) == before
        assert len(logged(data, "10.0.0.3")) == 2  # the other VM was not held back
        metrics = server.metrics()
        assert metrics["vmstats_write_links_refused_vms"] == 1
        assert metrics["vmstats_write_failing_vms"] == 1 and metrics["vmstats_buffered_records"] == 3
        assert metrics["vmstats_journal_segments"] >= 1  # what it acknowledged is on disk
    assert server.returncode == 1  # records not written: the summary says so
    assert "  NOT WRITTEN       3 records" in server.output.splitlines(), server.output
    said = [text for text in server.output.splitlines() if "through a symbolic link" in text]
    assert len(said) == 1, said  # once, not every flush
    assert ("not writing the records of 1 VM through a symbolic link (kept in memory and in the "
            "journal, retried every flush; 1 VM now held back so): %s is a symbolic link out of "
            "the data dir (-> %s)" % (data / "vms" / "10.0.0.9", other / "vms" / "10.0.0.1")) in said[0]
    assert _files(other) == before
    (data / "vms" / "10.0.0.9").unlink()  # the operator's fix: the VM's logs in this data dir
    with serve(tmp_path / "again", "--flush-interval", "0.2", data_dir=data) as server:
        server.wait_for(lambda s: len(logstore.day_files(str(data), "10.0.0.9")) == 1)
        assert server.metrics()["vmstats_write_links_refused_vms"] == 0
    assert server.returncode == 0, server.output
    assert list(logged(data, "10.0.0.9")["cpu"]) == [1.0, 2.0, 3.0]
    assert _files(other) == before


def test_a_link_inside_the_data_dir_is_written_through_and_an_alias_is_not(tmp_path):
    """A VM folder linked to a folder elsewhere inside the data dir is written as if it stood
    there; one linked to another VM's folder (a second name for it) would mix two VMs' rows
    in one file: kept and retried like a link out of the data dir."""
    data = tmp_path / "data"
    (data / "vms").mkdir(parents=True)
    (data / "spare" / "10.0.0.7").mkdir(parents=True)
    (data / "vms" / "10.0.0.7").symlink_to(Path("..") / "spare" / "10.0.0.7")
    (data / "vms" / "web1").symlink_to("10.0.0.7")
    start = _start()
    with serve(tmp_path, "--flush-interval", "0.2", data_dir=data) as server:
        server.send_synced(_records("10.0.0.7", start, 2) + _records("web1", start + 1, 1))
        server.wait_metrics(lambda m: m["vmstats_flushed_records_total"] >= 2 and (
            m["vmstats_flushed_records_total"] == 3 or m["vmstats_write_failures_total"] >= 2))
        assert [path.name for path in (data / "spare" / "10.0.0.7").iterdir()] == [
            logstore.day_of(start) + logstore.SUFFIX]
        assert list(logged(data, "10.0.0.7")["cpu"]) == [1.0, 2.0]  # web1's row not mixed in
        assert server.metrics()["vmstats_write_links_refused_vms"] == 1
        server.stop(signal.SIGKILL)


def _report(data: Path, out: Path) -> tuple[subprocess.CompletedProcess, dict]:
    done = subprocess.run([sys.executable, "-m", "vmstats", "report", str(data), "-o", str(out),
                           "--days", "10", "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return done, json.loads((out / "report.json").read_text())


def test_the_report_counts_no_vm_of_another_data_dir_through_a_link(tmp_path):
    """The report counted the VM another data dir holds, through a VM folder linked to it, as
    this fleet's, and a linked day file's rows as this VM's.  It now leaves both out, named
    among the log files skipped, as compaction does; a link inside the data dir is read."""
    data, other, first = _linked_data_dirs(tmp_path)
    (data / "spare").mkdir()
    os.rename(data / "vms" / "10.0.0.1", data / "spare" / "10.0.0.1")
    (data / "vms" / "10.0.0.1").symlink_to(data / "spare" / "10.0.0.1")  # inside: read
    (data / "vms" / "web1").symlink_to("10.0.0.2")  # a second name of another VM: not read
    own = {vm: [path for day, path in logstore.day_files(str(data), vm) if not os.path.islink(path)]
           for vm in ("10.0.0.1", "10.0.0.2")}
    assert [len(paths) for paths in own.values()] == [2, 1]
    done, document = _report(data, tmp_path / "out")
    records = {v["vm"]: v["records"] for v in document["vms"]}
    assert records == {vm: len(logstore.read_rows(paths)[0]) for vm, paths in own.items()}, records
    skipped = {entry["path"]: entry["problem"] for entry in document["meta"]["skipped_files"]}
    why = " whose rows this data dir does not count (docs/STORAGE.md, \"Symbolic links under vms/\")"
    linked = logstore.day_path(str(data), "10.0.0.2", logstore.day_name(first))
    assert skipped == {
        str(data / "vms" / "10.0.0.9"): "left out: a symbolic link out of the data dir (-> %s),%s"
        % (other / "vms" / "10.0.0.1", why),
        linked: "left out: a symbolic link out of the data dir (-> %s),%s"
        % (logstore.day_path(str(other), "10.0.0.2", logstore.day_name(first)), why),
        str(data / "vms" / "web1"): "left out: a symbolic link to other logs of the data dir (-> %s),%s"
        % (data / "vms" / "10.0.0.2", why),
    }, skipped
    assert str(data / "vms" / "10.0.0.9") in done.stdout


def _logged(data: Path, vm: str, ts: int) -> None:
    logstore.append_missing(str(data), vm, {ts: logstore.format_tail(
        Record(vm=vm, ts=ts, cpu=1.0, mem=2.0, host="kvm1"))})


def test_rules_seed_no_vm_of_another_data_dir_and_none_goes_silent(tmp_path):
    """At start, rules took each VM's newest record through any link under vms/: a VM folder
    or today's day file linked into another data dir seeded that dir's VM here, which then went
    silent and alerted.  Neither is read now (said once in the log); a VM folder linked inside
    the data dir is read as before, and goes silent when it stays quiet."""
    data, other = tmp_path / "data", tmp_path / "other"
    now = int(time.time()) - 1
    today = logstore.day_of(now)
    for vm in ("10.0.0.5", "10.0.0.6"):
        _logged(other, vm, now)
    _logged(data / "spare", "10.0.0.7", now)
    _logged(data, "10.0.0.8", now - logstore.DAY_SECONDS)  # quiet long before the stop
    (data / "vms" / "10.0.0.9").symlink_to(other / "vms" / "10.0.0.5")
    (data / "vms" / "10.0.0.7").symlink_to(Path("..") / "spare" / "vms" / "10.0.0.7")
    Path(logstore.day_path(str(data), "10.0.0.8", today)).symlink_to(
        logstore.day_path(str(other), "10.0.0.6", today))
    body = ('[[rule]]\nname = "quiet"\nmetric = "cpu"\nperiod = 1\nsilent_after = "2s"\n'
            'actions = ["hook"]\n')
    with WebhookReceiver(SECRET.encode()) as hook:
        with serve_rules(tmp_path, rules_file(tmp_path, hook.url, body), data_dir=data) as server:
            alerts = hook.wait(1)
            # Seeded alike, the three would go silent in one sweep: the one heard is all there is.
            states = sorted((s["scope"], s["state"]) for s in json.loads(server.http("/alerts"))["states"])
    assert [(a["labels"]["scope"], a["annotations"]["state"]) for a in alerts] == [
        ("10.0.0.7", "silent")]
    assert states == [("10.0.0.7", "silent")]
    said = [text for text in server.output.splitlines() if "not read for the VMs' last records" in text]
    assert len(said) == 1 and (
        "rules: 2 VM folders or day files under vms/ not read for the VMs' last records, e.g. %s is "
        "a symbolic link out of the data dir (-> %s): not this data dir's logs (docs/STORAGE.md, "
        "\"Symbolic links under vms/\")" % (data / "vms" / "10.0.0.9", other / "vms" / "10.0.0.5")
    ) in said[0], said
