"""A failed or interrupted run leaves nothing new behind, and never a half-written output.

Run in this process through the real ``vmstats`` group (click's CliRunner), with a small
data dir written through the real log layout.
"""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_report_stats import DAY, T0, series, write_records

from vmstats import cli
from vmstats.outputfile import replacing, together


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Two days of one quiet VM: enough logs for a report to run to its outputs."""
    folder = tmp_path_factory.mktemp("data")
    ts = T0 + 60 * np.arange(2 * DAY // 60)
    quiet = np.ones(len(ts))
    write_records(folder, series("10.0.0.1", ts, quiet, 30 * quiet, disk=500 * quiet, net=200 * quiet))
    return folder


def run(*args: str):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


@pytest.mark.parametrize("command", [
    ("report", "-o", "OUT"),
    ("backtest", "-o", "OUT"),
    ("headroom", "--inventory", "HOSTS", "--profile", "2x4", "-o", "OUT"),
    ("report", "-o", "OUT", "--since", "2026-01-02", "--until", "2026-01-01"),
    ("report", "-o", "OUT", "--prices", "NOPE"),
    ("backtest", "-o", "OUT", "--decide-until", "someday"),
])
def test_a_refused_run_leaves_no_output_folder(tmp_path, data, command):
    """Each left an empty OUT/ (backtest OUT/decision/ too), made before the refusal."""
    hosts = tmp_path / "hosts.toml"
    hosts.write_text('[[host]]\nname = "h"\nvcpus = 8\nmem_gb = 32\n')
    places = {"OUT": tmp_path / "new" / "out", "HOSTS": hosts, "NOPE": tmp_path / "no-such.toml"}
    data_dir = tmp_path / "no-such-data" if "--since" not in command and "--prices" not in command \
        and "--decide-until" not in command else data
    result = run(command[0], data_dir, *(places.get(a, a) for a in command[1:]))
    assert result.exit_code != 0 and result.stderr.startswith("Error: "), result.output
    assert not (tmp_path / "new").exists(), sorted((tmp_path / "new").rglob("*"))


def test_a_refused_run_keeps_a_folder_that_was_there_as_it_was(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.csv").write_text("an earlier run's\n")
    result = run("backtest", tmp_path / "no-such-data", "-o", out)
    assert result.exit_code != 0
    assert sorted(p.name for p in out.iterdir()) == ["report.csv"]  # decision/ made, then removed
    assert (out / "report.csv").read_text() == "an earlier run's\n"


def test_an_interrupted_write_leaves_the_earlier_output_whole(tmp_path, data, monkeypatch):
    """Ctrl-C while report.json was written truncated the earlier run's file."""
    out = tmp_path / "out"
    assert run("report", data, "-o", out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    from vmstats.report import outputs

    def interrupted(document):  # once report.json is open, before its bytes are written
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs, "to_json", interrupted)
    result = run("report", data, "-o", out, "--cpu-idle", "4")
    assert result.exit_code == 130 and result.stderr == "vmstats report: interrupted\n"
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after["report.json"] == before["report.json"]
    assert sorted(after) == sorted(before), "a partial file was left"


@pytest.mark.parametrize("command, module, function, names", [
    (("report",), "vmstats.report.outputs", "to_json", ["report.csv", "report.html", "report.json"]),
    (("backtest", "--decide-until", "2026-01-01", "--decide-days", "1", "--judge-days", "1"),
     "vmstats.report.backtest_outputs", "render",
     ["backtest.csv", "backtest.html", "backtest.json", "decision/report.csv",
      "decision/report.html", "decision/report.json"]),
])
def test_a_failed_run_into_an_earlier_runs_folder_leaves_that_runs_set_whole(
        tmp_path, data, monkeypatch, command, module, function, names):
    """A disk that filled half-way left this run's page beside the earlier run's JSON (and a
    backtest's new decision/ beside its old backtest.*): a set no run made."""
    import importlib

    out = tmp_path / "out"
    assert run(command[0], data, "-o", out, *command[1:]).exit_code == 0
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.*")
              if p.is_file() and ".cache" not in p.parts}
    assert sorted(before) == names

    def full(*args, **kwargs):  # the last file of the run, as a full disk would fail it
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(importlib.import_module(module), function, full)
    result = run(command[0], data, "-o", out, *command[1:], "--cpu-idle", "4")
    assert (result.exit_code, result.stderr) == (
        1, "Error: cannot write to %s: No space left on device\n" % out), result.output
    after = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
             if p.is_file() and ".cache" not in p.parts}
    assert after == before, "replaced: %s" % sorted(n for n in after if after[n] != before.get(n))


def test_a_rename_that_fails_half_way_names_the_files_already_replaced(tmp_path):
    (tmp_path / "b.json").mkdir()
    (tmp_path / "b.json" / "x").write_text("a folder that is not empty: no file renames over it")
    with pytest.raises(OSError) as failed:
        with together() as outputs:
            for name in ("a.csv", "b.json"):
                with replacing(outputs.stage(str(tmp_path / name))) as handle:
                    handle.write("new")
    assert "(a.csv replaced by this run, the rest not)" in failed.value.strerror
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "b.json"]


def test_replacing_puts_a_file_in_place_only_when_it_is_whole(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")
    with pytest.raises(OSError):
        with replacing(str(path)) as handle:
            handle.write("new, half")
            raise OSError(28, "No space left on device")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]
    link = tmp_path / "link.txt"
    link.symlink_to(path)
    with replacing(str(link)) as handle:
        handle.write("new")
    assert link.is_symlink() and path.read_text() == "new"


#: A report whose parsing processes say when a task began, then hold it until the test has
#: pressed Ctrl-C (the file ``argv[4]``): the report is surely still parsing when it comes, on a
#: host however loaded, and no task holds it longer than that.
_SLOW_PARSE = textwrap.dedent("""
    import os, sys, time
    from vmstats import cli
    from vmstats.report import load

    real = load.aggregate_units

    def slow(task):
        open(sys.argv[1], "a").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(sys.argv[4]) and time.monotonic() < deadline:
            time.sleep(0.02)
        return real(task)

    load.aggregate_units, load.TASK_UNITS = slow, 1  # one task per VM-day: two tasks, a process idle
    cli.main(["report", sys.argv[2], "-o", sys.argv[3], "--no-cache", "--workers", "3"], "vmstats")
""")


def test_ctrl_c_while_logs_are_parsed_is_one_line_and_ends(tmp_path, data):
    """Ctrl-C at a terminal reaches every process of the group: each parsing process printed
    a traceback, and one stopped while it wrote its answer left the report hung for good."""
    began, out, pressed = tmp_path / "began", tmp_path / "out", tmp_path / "pressed"
    child = subprocess.Popen([sys.executable, "-c", _SLOW_PARSE, str(began), str(data), str(out),
                              str(pressed)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True,
                             # As from a terminal: a test runner's worker may ignore SIGINT, and
                             # an ignored signal stays ignored in its children.
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not began.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert began.exists(), child.communicate()
        os.killpg(child.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
        pressed.touch()  # the tasks under way may end now: the report waits for them, then stops
        _stdout, stderr = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
    assert (child.returncode, stderr) == (130, "vmstats report: interrupted\n")
    assert not out.exists()


def test_a_replaced_output_keeps_the_old_files_mode_and_owner(tmp_path, data):
    """The replacement took the temporary file's mode: a report made 0640 for one group was 0644
    after the next night's run, and root's run handed it to root."""
    out = tmp_path / "out"
    assert run("report", data, "-o", out).exit_code == 0
    umask = os.umask(0)
    os.umask(umask)
    for name in ("report.html", "report.csv", "report.json"):  # a new file: open()'s mode
        assert (out / name).stat().st_mode & 0o7777 == 0o666 & ~umask, name
    os.chmod(out / "report.csv", 0o640)
    os.chmod(out / "report.json", 0o600)
    owned = os.geteuid() == 0
    if owned:
        os.chown(out / "report.csv", 65534, 65534)
    before = {name: (out / name).read_bytes() for name in ("report.csv", "report.json")}
    assert run("report", data, "-o", out, "--cpu-idle", "4").exit_code == 0
    assert (out / "report.json").read_bytes() != before["report.json"]  # replaced, not kept
    assert (out / "report.csv").stat().st_mode & 0o7777 == 0o640
    assert (out / "report.json").stat().st_mode & 0o7777 == 0o600
    assert (out / "report.html").stat().st_mode & 0o7777 == 0o666 & ~umask
    if owned:
        assert ((out / "report.csv").stat().st_uid, (out / "report.csv").stat().st_gid) == (65534, 65534)


def test_replacing_through_a_link_keeps_its_targets_mode(tmp_path):
    target, link = tmp_path / "target.csv", tmp_path / "link.csv"
    target.write_text("old")
    os.chmod(target, 0o604)
    link.symlink_to(target)
    with replacing(str(link)) as handle:
        handle.write("new")
    assert link.is_symlink() and target.read_text() == "new"
    assert target.stat().st_mode & 0o7777 == 0o604


def test_standard_output_that_cannot_be_written_is_one_line(tmp_path, data):
    """A report's summary to a full disk (``> /dev/full``) ended in a traceback; now one line,
    status 1, and no output folder, as any failed run.  A reader that went away (``| head``)
    had what it wanted: no word, the report kept, status 141 as a shell reports SIGPIPE."""
    command = [sys.executable, "-m", "vmstats", "report", str(data), "--no-cache", "-o"]
    with open("/dev/full", "w") as full:
        done = subprocess.run([*command, str(tmp_path / "full")], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    full_disk = "Error: cannot write to standard output: No space left on device"
    assert done.stderr.splitlines()[-1:] == [full_disk], done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "full").exists()
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        done = subprocess.run([*command, str(tmp_path / "piped")], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(write)
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr and "Error" not in done.stderr, done.stderr
    assert (tmp_path / "piped" / "report.html").exists()
