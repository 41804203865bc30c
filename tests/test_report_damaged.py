"""The report never dies on a data file: damaged or unreadable logs are skipped and named.

A real data dir (written by the real server from a simulated fleet, or by the
flusher's own writer for the small cases) gets junk, torn quotes, bad UTF-8,
folders, FIFOs and dangling links where day files should be; ``vmstats report``
must exit 0, name every such file in the terminal summary, the JSON meta and
the HTML, keep the rows that can still be read, and never block on a FIFO.
"""

import calendar
import gzip
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serverproc import serve

from vmstats import logstore
from vmstats.logstore import text
from vmstats.protocol import Record

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400


def report(data_dir, out, *args, timeout=240):
    """``vmstats report`` in a subprocess: (exit code, stdout, stderr, report.json or None)."""
    result = subprocess.run(
        [sys.executable, "-m", "vmstats", "report", str(data_dir), "-o", str(out), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    document = None
    if (Path(out) / "report.json").exists():
        document = json.loads((Path(out) / "report.json").read_text())
    return result.returncode, result.stdout, result.stderr, document


def named(document) -> dict:
    """{path: entry} of every log file the report says it skipped or read in part."""
    meta = document["meta"]
    return {entry["path"]: entry for entry in meta["skipped_files"] + meta["damaged_files"]}


def write_fleet(data_dir: Path, end: int, vms=("10.0.0.1", "10.0.0.2"), days: int = 2) -> None:
    """Two days of per-minute records per VM, written by the flusher's writer."""
    for k, vm in enumerate(vms):
        rows = {}
        for ts in range(end - days * DAY, end, 60):
            record = Record(vm=vm, ts=ts, cpu=0.5 + 60 * k, mem=30.0, disk_r=1.0, disk_w=1.0,
                            net_rx=1.0, net_tx=1.0, vcpus=2, mem_mb=4096)
            rows[ts] = logstore.format_tail(record)
        logstore.append_missing(str(data_dir), vm, rows)


def _end() -> int:
    return (int(time.time()) // DAY) * DAY - DAY // 2  # noon yesterday: every test sees whole days


def _insert_line(path: Path, line: bytes, after: int) -> None:
    """Put ``line`` among the rows of a day file, after its ``after``-th row."""
    lines = path.read_bytes().split(b"\n")
    lines.insert(1 + after, line)
    path.write_bytes(b"\n".join(lines))


def _day_file(data_dir: Path, vm: str, ts: int) -> Path:
    return Path(logstore.day_path(str(data_dir), vm, logstore.day_of(ts)))


#: Damaged rows put among good ones (``%d``: their timestamp, inside the window).
_BAD_LINES = {
    "unmatched quote": b'%d,"12.5,3,40,,,,,2,4096,9,',
    "carriage return": b"%d,1\r2.5,3,40,,,,,2,4096,9,",
    "bad utf-8 in a number": b"%d,1\xff\xfe,3,40,,,,,2,4096,9,",
    "value out of range": b"%d,1e300,3,40,,,,,2,4096,9,",
    # vcpus holds at most 3 places and starts at 0.001 (protocol.FIELDS), as the server admits.
    "vcpus of more places than it holds": b"%d,1.5,3,40,,,,,1.23456,4096,9,",
    "vcpus below its smallest step": b"%d,1.5,3,40,,,,,0.0001,4096,9,",
}


def _damage(kind: str, data_dir: Path, end: int) -> tuple[Path, int]:
    """Damage the data dir one way; returns the file to be named and the rows it still holds."""
    yesterday = _day_file(data_dir, "10.0.0.1", end - 60)
    rows = len(yesterday.read_bytes().split(b"\n")) - 2  # minus the header and the last newline
    earlier = _day_file(data_dir, "10.0.0.2", end - 4 * DAY)
    earlier.parent.mkdir(parents=True, exist_ok=True)
    if kind in _BAD_LINES:
        _insert_line(yesterday, _BAD_LINES[kind] % (end - 30), after=10)
        return yesterday, rows
    if kind == "random junk":
        earlier.write_bytes(random.Random(7).randbytes(65536))
        return earlier, 0
    if kind == "truncated gzip":
        earlier.write_bytes(gzip.compress(yesterday.read_bytes())[:5000])
        return earlier, 0
    if kind == "directory":
        earlier.mkdir()
        return earlier, 0
    if kind == "fifo":
        os.mkfifo(earlier)
        return earlier, 0
    if kind == "dangling link":  # unreadable even for root, unlike a file without permissions
        earlier.symlink_to(data_dir / "no-such-file.csv")
        return earlier, 0
    raise AssertionError(kind)


KINDS = (*_BAD_LINES, "random junk", "truncated gzip", "directory", "fifo", "dangling link")


@pytest.fixture(scope="module")
def undamaged(tmp_path_factory) -> tuple[int, dict]:
    """(end, report.json) of write_fleet's two days ending at ``end``, before any damage: one
    report for the module's tests that damage their own copy of the same fleet (``--no-cache``:
    the report neither reads nor writes a cache, so it leaves nothing in the data dir)."""
    base = tmp_path_factory.mktemp("undamaged")
    end = _end()
    write_fleet(base / "data", end)
    code, _out, err, clean = report(base / "data", base / "clean", "--days", 7, "--no-cache")
    assert code == 0, err
    return end, clean


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_file_is_named_and_the_rest_reported(tmp_path, kind, undamaged):
    data = tmp_path / "data"
    end, clean = undamaged
    write_fleet(data, end)
    path, rows = _damage(kind, data, end)
    out = tmp_path / "out"
    code, stdout, err, document = report(data, out, "--days", 7, timeout=60)
    assert code == 0, err
    assert "Traceback" not in err
    entry = named(document)[str(path)]
    assert entry["rows"] == rows and entry["vm"] in ("10.0.0.1", "10.0.0.2"), entry
    assert str(path) in stdout and entry["problem"] in stdout
    assert str(path) in (out / "report.html").read_text()
    # The damage costs only the damaged line: the other rows and every verdict are as before.
    before = {v["vm"]: v for v in clean["vms"]}
    after = {v["vm"]: v for v in document["vms"]}
    for vm, row in before.items():
        for column in ("category", "records", "cpu_p95", "mem_p95", "coverage"):
            assert after[vm][column] == row[column], (vm, column)
    if rows:
        assert entry["bad_lines"] == 1 and after["10.0.0.1"]["bad_lines"] == 1
    # The cache keeps what it found: a re-run over unchanged data names the same file.
    code, stdout, err, again = report(data, out, "--days", 7, timeout=60)
    assert code == 0 and again["meta"]["cache"]["parsed_vm_days"] == 0, err
    assert named(again)[str(path)] == entry


def test_a_vm_whose_files_are_all_damaged_has_insufficient_data(tmp_path):
    data = tmp_path / "data"
    end = _end()
    write_fleet(data, end)
    broken = [_day_file(data, "10.0.0.9", end - k * DAY) for k in range(3)]
    broken[0].parent.mkdir(parents=True)
    broken[0].write_bytes(logstore.HEADER + b'%d,"1,2,3,,,,,,,,\n' % (end - 60))
    broken[1].write_bytes(random.Random(1).randbytes(4096))
    os.mkfifo(broken[2])
    code, stdout, err, document = report(data, tmp_path / "out", "--days", 7, timeout=60)
    assert code == 0, err
    row = {v["vm"]: v for v in document["vms"]}["10.0.0.9"]
    assert row["category"] == "insufficient-data", row
    assert "3 log files damaged or unreadable" in row["reason"]
    assert sorted(f["path"] for f in row["evidence"]["damaged_files"]) == sorted(map(str, broken))
    assert all(str(path) in stdout for path in broken)


def test_names_that_are_not_days_are_named(tmp_path):
    data = tmp_path / "data"
    write_fleet(data, _end())
    stray = data / "vms" / "10.0.0.1" / "copy of yesterday.csv"
    stray.write_bytes(b"anything")
    code, stdout, err, document = report(data, tmp_path / "out", timeout=60)
    assert code == 0, err
    assert "not a day file" in named(document)[str(stray)]["problem"]
    assert str(stray) in stdout


def test_names_that_are_not_utf8_are_named_and_the_rest_reported_and_compacted(tmp_path):
    """A data dir, VM folder or day file whose name is not UTF-8 (copied in from another
    system): the report names each, readably, and reports the rest; compaction leaves them."""
    data = tmp_path / os.fsdecode(b"data-\xfe")
    end = _end()
    write_fleet(data, end)
    code, _out, err, clean = report(data, tmp_path / "clean", "--days", 7, "--no-cache")
    assert code == 0, err
    odd_vm = data / "vms" / os.fsdecode(b"copied-\xff")
    odd_vm.mkdir()
    yesterday = _day_file(data, "10.0.0.1", end)
    content = yesterday.read_bytes()
    (odd_vm / yesterday.name).write_bytes(content)
    (yesterday.parent / os.fsdecode(b"2026-01-0\xff.csv")).write_bytes(content)
    out = tmp_path / "out"
    code, stdout, err, document = report(data, out, "--days", 7, timeout=60)
    assert code == 0 and "Traceback" not in err, err
    shown = str(tmp_path) + "/data-\\xfe/vms/"
    entries = named(document)
    assert entries[shown + "copied-\\xff"]["problem"] == "VM folder name is not UTF-8: not a VM id of vmstats"
    assert entries[shown + "10.0.0.1/2026-01-0\\xff.csv"]["problem"].startswith("not a day file")
    page = (out / "report.html").read_text()
    for path in entries:
        assert path in stdout and path in page
    assert document["meta"]["data_dirs"] == [str(tmp_path) + "/data-\\xfe"]
    before = {v["vm"]: v for v in clean["vms"]}
    assert {v["vm"]: (v["category"], v["records"]) for v in document["vms"]} == {
        vm: (row["category"], row["records"]) for vm, row in before.items()
    }
    def compact(folder: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "vmstats", "compact", "--data-dir", str(folder), "--compact-after", "0s"],
            cwd=ROOT, capture_output=True, text=True, errors="replace", timeout=120,
        )

    # Arrow cannot open a path that is not UTF-8: compaction refuses in one line, touching nothing.
    done = compact(data)
    assert done.returncode == 1 and done.stderr.strip() == (
        "Error: data dir %s/data-\\xfe: its path is not UTF-8, so columnar files cannot be "
        "written there; rename it" % tmp_path
    ), done.stderr
    assert len(list((data / "vms" / "10.0.0.2").glob("*.csv"))) == 3
    renamed = data.rename(tmp_path / "data")
    done = compact(renamed)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "copied-\\xff left alone: its name is not UTF-8" in done.stderr
    assert not list((renamed / "vms" / "10.0.0.2").glob("*.csv"))  # the others were compacted
    assert (renamed / "vms" / odd_vm.name / yesterday.name).read_bytes() == content


#: VM folders copied in by other means, named what no VM id is: a spreadsheet formula, markup,
#: a newline and a tab, a quote and a comma, a leading sign, a letter outside ASCII.
_NOT_VM_IDS = ("=1+2", "+1-2", "-A1", "@SUM(A1)", "<img src=x onerror=alert(1)>", "line\nbreak",
               "tab\tname", 'quo"te,comma', "caf\u00e9", "two words")


def test_folders_named_what_no_vm_id_is_are_named_and_never_reported(tmp_path):
    """A folder under vms/ that the server could not have written (its name is outside the VM
    id grammar) is no VM: report.csv would hand a spreadsheet a formula (``=1+2``) and the
    terminal a line break.  It is named once, on one line, with what is wrong; compaction
    leaves it."""
    data = tmp_path / "data"
    end = _end()
    write_fleet(data, end)
    yesterday = _day_file(data, "10.0.0.1", end)
    for name in _NOT_VM_IDS:
        (data / "vms" / name).mkdir()
        (data / "vms" / name / yesterday.name).write_bytes(yesterday.read_bytes())
    out = tmp_path / "out"
    code, stdout, err, document = report(data, out, "--days", 7, "--no-cache", timeout=60)
    assert code == 0 and "Traceback" not in err, err
    assert [v["vm"] for v in document["vms"]] == ["10.0.0.1", "10.0.0.2"]
    cells = (out / "report.csv").read_text(encoding="utf-8").splitlines()
    assert len(cells) == 3 and not any(line.split(",")[1].startswith(("=", "+", "-", "@")) for line in cells)
    entries = named(document)
    for name in _NOT_VM_IDS:
        shown = name.replace("\n", "\\n").replace("\t", "\\t")
        path = "%s/vms/%s" % (data, shown)
        assert entries[path]["problem"] == "VM folder name is not a VM id of vmstats (docs/PROTOCOL.md)"
        assert entries[path]["vm"] == shown
        # One line of the terminal summary each.
        line = "  %s: VM folder name is not a VM id of vmstats (docs/PROTOCOL.md)" % path
        assert line in stdout.splitlines()
    done = subprocess.run(
        [sys.executable, "-m", "vmstats", "compact", "--data-dir", str(data), "--compact-after", "0s"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "line\\nbreak left alone: its name is not a VM id" in done.stderr
    assert (data / "vms" / "=1+2" / yesterday.name).is_file()


def test_a_day_without_a_readable_row_costs_that_day_only(tmp_path):
    """A day whose file holds no readable row has no size: not a resize to nothing, which
    would judge the VM from that day on (dropping its days before) or, on its newest day,
    leave it without a size."""
    data = tmp_path / "data"
    end = _end()
    write_fleet(data, end, days=4)
    code, _out, err, clean = report(data, tmp_path / "clean", "--days", 7, "--no-cache")
    assert code == 0, err
    middle, newest = _day_file(data, "10.0.0.1", end - 2 * DAY), _day_file(data, "10.0.0.2", end)
    lost = {}
    for path, vm in ((middle, "10.0.0.1"), (newest, "10.0.0.2")):
        lost[vm] = path.read_bytes().count(b"\n") - 1
        path.write_bytes(random.Random(3).randbytes(4096))
    code, _out, err, document = report(data, tmp_path / "out", "--days", 7, "--no-cache")
    assert code == 0, err
    for path in (middle, newest):
        assert named(document)[str(path)]["problem"].startswith("no readable row"), path
    before = {v["vm"]: v for v in clean["vms"]}
    for row in document["vms"]:
        vm = row["vm"]
        assert lost[vm] > 0 and row["records"] == before[vm]["records"] - lost[vm], vm
        for column in ("vcpus", "mem_gb", "monthly_cost"):
            assert row[column] == before[vm][column], (vm, column)
        assert "resized" not in row["data_quality"] and "impossible" not in row["data_quality"], row


def test_a_fifo_as_a_vms_newest_or_oldest_day_file_never_blocks(tmp_path, undamaged):
    """The report reads the newest day file's last row for a VM's labels and headroom the
    oldest's first row for the window's start: a FIFO in either place is named, not waited on."""
    data = tmp_path / "data"
    end, clean = undamaged
    write_fleet(data, end)
    newest, oldest = _day_file(data, "10.0.0.1", end), _day_file(data, "10.0.0.2", end - 3 * DAY)
    lost = newest.read_bytes().count(b"\n") - 1  # its rows, after the header
    newest.unlink()
    os.mkfifo(newest)
    os.mkfifo(oldest)
    code, stdout, err, document = report(data, tmp_path / "out", "--days", 7, "--no-cache", timeout=60)
    assert code == 0 and "Traceback" not in err, err
    for fifo in (newest, oldest):
        assert named(document)[str(fifo)]["problem"] == "not a regular file: a FIFO"
        assert str(fifo) in stdout
    records = {v["vm"]: v["records"] for v in clean["vms"]}
    assert lost > 0 and {v["vm"]: v["records"] for v in document["vms"]} == {
        "10.0.0.1": records["10.0.0.1"] - lost, "10.0.0.2": records["10.0.0.2"]}
    inventory = tmp_path / "hosts.toml"
    inventory.write_text('[[host]]\nname = "kvm01"\nvcpus = 16\nmem_gb = 64\nvms = ["10.0.0.*"]\n')
    done = subprocess.run(
        [sys.executable, "-m", "vmstats", "headroom", str(data), "--inventory", str(inventory),
         "--profile", "2x4@30%", "--days", "7", "--no-after", "-o", str(tmp_path / "headroom")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    hosts = json.loads((tmp_path / "headroom" / "headroom.json").read_text())["hosts"]
    assert [(h["host"], h["vms"]) for h in hosts] == [("kvm01", 2)]


def test_a_tier_folder_that_is_not_a_folder_is_named_and_the_rows_answer(tmp_path, undamaged):
    """A file where ``columnar/`` should be and a link loop where ``rollups/`` should be: the
    report ended with "cannot write to OUT: Not a directory" (the listing's OSError taken for
    one of its own writes) though every row was in the CSV files; now each folder is named
    and the report is the undamaged one."""
    data = tmp_path / "data"
    end, clean = undamaged
    write_fleet(data, end)
    (data / "columnar").write_text("not a folder")
    (data / "rollups").symlink_to(data / "rollups")
    code, stdout, err, document = report(data, tmp_path / "out", "--days", 7, "--no-cache", timeout=60)
    assert code == 0 and "Traceback" not in err, err
    entries = named(document)
    assert entries[str(data / "columnar")]["problem"] == "unreadable columnar folder: Not a directory"
    assert entries[str(data / "rollups")]["problem"] == (
        "unreadable rollups folder: Too many levels of symbolic links")
    assert str(data / "columnar") in stdout
    assert [(v["vm"], v["records"]) for v in document["vms"]] == [
        (v["vm"], v["records"]) for v in clean["vms"]]


def test_a_damaged_or_foreign_cache_is_parsed_around_never_waited_on(tmp_path, undamaged):
    """``--cache-dir`` holding, in the cache file's place, a FIFO (the report waited on it for
    ever), a header that is JSON but not an object, a cached issue without its path, or arrays
    of another width (a build with the same cache version): each stopped the report or made it
    hang; now each is only a cache that does not answer, and the report is the undamaged one.
    A folder named like an older version's cache, which the report cannot remove, warned that
    the cache was not written when it was."""
    from vmstats.report import cache

    data = tmp_path / "data"
    end, clean = undamaged
    write_fleet(data, end)
    code, _out, err, _document = report(data, tmp_path / "out", "--days", 7, "--cache-dir", tmp_path / "good")
    assert code == 0, err
    good = cache.read_cache(str(tmp_path / "good"))
    assert good is not None and good["keys"]
    header = b"[1, 2]"
    damaged = {
        "fifo": None,
        "header": cache._MAGIC + len(header).to_bytes(8, "little") + header,
        "issue": {**good, "issues": {0: [{"problem": "no path"}]}},
        "width": {**good, "data": {**good["data"], "h_n": good["data"]["h_n"][:, :3]}},
        "older": "report-cache-v1.bin",
    }
    for kind, content in damaged.items():
        folder = tmp_path / kind
        folder.mkdir()
        if content is None:
            os.mkfifo(folder / cache.CACHE_NAME)
        elif isinstance(content, bytes):
            (folder / cache.CACHE_NAME).write_bytes(content)
        elif isinstance(content, str):
            (folder / content).mkdir()
        else:
            cache.write_cache(str(folder), content)
        code, _out, err, document = report(data, tmp_path / kind / "out", "--days", 7, "--cache-dir", folder,
                                           timeout=10)
        assert code == 0 and "Traceback" not in err and "warning" not in err, (kind, err)
        assert document["meta"]["cache"]["cached_vm_days"] == 0, kind
        assert [(v["vm"], v["records"]) for v in document["vms"]] == [
            (v["vm"], v["records"]) for v in clean["vms"]], kind
        assert cache.read_cache(str(folder))["sigs"] == good["sigs"], kind  # rewritten whole


def test_a_row_stamped_outside_its_files_day_is_a_malformed_line(tmp_path, undamaged):
    """A row of another day in a day file (copied by hand, damage): one stamped in 2255 made the
    report ask numpy for petabytes for its daily tables (a traceback), and a row of the day
    before was counted twice, in that day and in this one.  Each is now a malformed line of its
    file, from the CSV tier and from a columnar file alike."""
    data = tmp_path / "data"
    end, clean = undamaged
    write_fleet(data, end)
    path, earlier = _day_file(data, "10.0.0.1", end - 60), _day_file(data, "10.0.0.1", end - DAY)
    rows = path.read_bytes().count(b"\n") - 1
    copied = earlier.read_bytes().split(b"\n")[1]  # a row of the day before, also in its own file
    with path.open("ab") as handle:
        handle.write(b"9000000000000000000,1.5,3,40,,,,,2,4096,9,\n" + copied + b"\n")
    code, stdout, err, document = report(data, tmp_path / "out", "--days", 7, "--no-cache", timeout=60)
    assert code == 0 and "Traceback" not in err, err
    entry = named(document)[str(path)]
    assert (entry["rows"], entry["bad_lines"]) == (rows, 2), entry
    assert [(v["vm"], v["records"]) for v in document["vms"]] == [
        (v["vm"], v["records"]) for v in clean["vms"]]
    # Compacted: the day's columnar file answers (its rollups removed), a stamp in it moved.
    done = _compact(data, "--compact-after", "0s")
    assert done.returncode == 0, done.stderr
    columnar = sorted((data / "columnar").iterdir())[0]
    (data / "rollups" / columnar.name).unlink()
    _rewrite_tier(columnar, cells={("10.0.0.2", 0, "ts"): 9_000_000_000_000_000_000})
    code, stdout, err, document = report(data, tmp_path / "again", "--days", 7, "--no-cache", timeout=60)
    assert code == 0 and "Traceback" not in err, err
    assert named(document)[str(columnar)]["bad_lines"] == 1
    records = {v["vm"]: v["records"] for v in clean["vms"]}
    assert {v["vm"]: v["records"] for v in document["vms"]} == {
        "10.0.0.1": records["10.0.0.1"], "10.0.0.2": records["10.0.0.2"] - 1}


def _compact(folder: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vmstats", "compact", "--data-dir", str(folder), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )


def _rewrite_tier(path: Path, describe=None, column: str | None = None,
                  cells: dict | None = None) -> None:
    """Rewrite a tier file with its description changed by ``describe`` (to bytes as they are,
    or to what is written as JSON), ``column`` as text, or ``cells`` (``{(vm, its row's place
    among the VM's rows, column): value}``) set."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    handle = pq.ParquetFile(path)
    table, meta = handle.read(), dict(handle.metadata.metadata)
    if describe is not None:
        described = describe(json.loads(meta[b"vmstats"]))
        meta[b"vmstats"] = described if isinstance(described, bytes) else json.dumps(described).encode()
    if column is not None:
        table = table.set_column(table.schema.get_field_index(column), column,
                                 pa.array(["x"] * table.num_rows))
    for (vm, at, name), value in (cells or {}).items():
        values = table.column(name).to_pylist()
        values[table.column("vm").to_pylist().index(vm) + at] = value
        table = table.set_column(table.schema.get_field_index(name), name,
                                 pa.array(values, table.schema.field(name).type))
    pq.write_table(table.replace_schema_metadata(meta), path)


def _compacted_fleet(tmp_path: Path) -> tuple[Path, int, Path]:
    """``(data dir, end, newest columnar file)`` of eight days of the fleet compacted after a
    day (three days kept as rows)."""
    data = tmp_path / "data"
    end = _end()
    write_fleet(data, end, days=8)
    done = _compact(data, "--compact-after", "1d", "--retain-raw", "3d")
    assert done.returncode == 0, done.stderr
    return data, end, sorted((data / "columnar").iterdir())[-1]


def test_damaged_tier_files_and_odd_vm_entries_are_named_and_never_block(tmp_path):
    """Compacted files that are a FIFO (Arrow would wait on it for ever), or Parquet with a
    description or a column of the wrong shape, or a description nested past the JSON parser's
    recursion (a RecursionError stopped the report), and a file or a dangling link where a VM's
    folder should be: the report and the backtest name each and use the rest; compaction
    leaves them and goes on."""
    data = tmp_path / "data"
    end = _end()
    write_fleet(data, end, days=8)
    done = _compact(data, "--compact-after", "1d", "--retain-raw", "3d")
    assert done.returncode == 0, done.stderr
    rollups, columnar = sorted((data / "rollups").iterdir()), sorted((data / "columnar").iterdir())
    assert len(rollups) >= 5 and columnar, (rollups, columnar)
    lost = {}  # the records of the rollup files about to be damaged, per VM
    for path in rollups[:5]:
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=["vm", "n"]).to_pydict()
        for vm, n in zip(table["vm"], table["n"], strict=True):
            lost[vm] = lost.get(vm, 0) + n
    code, _out, err, clean = report(data, tmp_path / "clean", "--days", 10, "--no-cache")
    assert code == 0, err
    fifos = [data / "rollups" / "2020-01-01.parquet", data / "columnar" / "2020-01-02.parquet"]
    for fifo in fifos:
        os.mkfifo(fifo)
    problems = {
        str(fifos[0]): "unreadable rollups file: not a regular file: a FIFO",
        str(fifos[1]): "unreadable columnar file: not a regular file: a FIFO",
        str(rollups[0]): "unreadable rollups file: its vmstats description does not list VM names",
        str(rollups[1]): "unreadable rollups file: its vmstats description does not list VM names",
        str(rollups[2]): "unreadable rollups file: its vmstats description's version is not a number",
        str(rollups[3]): "unreadable rollup: cpu_sum is not a column of numbers (string)",
        str(rollups[4]): "unreadable rollups file: its vmstats description is not JSON",
        str(data / "vms" / "web-1"): "not a folder where a VM's folder of logs should be",
        str(data / "vms" / "web-2"): "a link to nothing where a VM's folder of logs should be",
    }
    _rewrite_tier(rollups[0], lambda info: {**info, "vms": 2})
    _rewrite_tier(rollups[1], lambda info: {**info, "vms": ["10.0.0.1", 2]})
    _rewrite_tier(rollups[2], lambda info: {**info, "version": [7]})
    _rewrite_tier(rollups[3], column="cpu_sum")
    _rewrite_tier(rollups[4], lambda info: b"[" * 100_000)
    (data / "vms" / "web-1").write_text("not a folder")
    (data / "vms" / "web-2").symlink_to(tmp_path / "gone")
    code, stdout, err, document = report(data, tmp_path / "out", "--days", 10, "--no-cache", timeout=60)
    assert code == 0 and "Traceback" not in err, err
    entries = named(document)
    for path, problem in problems.items():
        assert entries[path]["problem"] == problem, (path, entries.get(path))
        assert path in stdout
    # The 5 damaged days are missing, nothing else: the other days' rows are all there.
    before = {v["vm"]: v for v in clean["vms"]}
    after = {v["vm"]: v for v in document["vms"]}
    assert set(after) == set(before) and set(lost) == set(before)
    for vm, row in before.items():
        assert after[vm]["records"] == row["records"] - lost[vm] > 0, vm
    # The backtest lists the columnar tier: it does not wait on the FIFO there (outside its windows).
    done = subprocess.run(
        [sys.executable, "-m", "vmstats", "backtest", str(data), "-o", str(tmp_path / "bt"),
         "--decide-days", "2", "--judge-days", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    # A new CSV file of the FIFO's day cannot be merged into it: that day is left, the rest
    # compacted; past retention the FIFO stays where it is, named.
    late = data / "vms" / "10.0.0.1" / "2020-01-02.csv"
    late.write_bytes(_day_file(data, "10.0.0.1", end - 60).read_bytes())
    done = _compact(data, "--compact-after", "0s", "--retain-raw", "0s")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "day 2020-01-02 left alone: %s: not a regular file: a FIFO" % fifos[1] in done.stderr
    assert "%s left in place past retention: not a regular file: a FIFO" % fifos[1] in done.stderr
    assert late.exists() and fifos[1].exists()
    assert not list((data / "vms" / "10.0.0.2").glob("*.csv"))  # the rest compacted


def test_a_tier_files_vm_names_that_are_no_vm_ids_are_never_reported(tmp_path):
    """A rollup file whose VMs include ``=HYPERLINK(...)`` (written by another hand): the CSV
    tier's folder of that name was never a VM of the report, but from the rollup it was
    reported as one, into report.csv.  Now the name is left out and the file named."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "data"
    write_fleet(data, _end())
    done = _compact(data, "--compact-after", "0s")
    assert done.returncode == 0, done.stderr
    rollup = sorted((data / "rollups").iterdir())[-1]
    stranger = '=HYPERLINK("http://x","y")'
    handle = pq.ParquetFile(rollup)
    table, info = handle.read(), json.loads(handle.metadata.metadata[b"vmstats"])
    info["vms"] = [stranger if vm == "10.0.0.1" else vm for vm in info["vms"]]
    renamed = [stranger if vm == "10.0.0.1" else vm for vm in table.column("vm").to_pylist()]
    table = table.set_column(0, "vm", pa.array(renamed, pa.string()))
    pq.write_table(table.replace_schema_metadata({b"vmstats": json.dumps(info).encode()}), rollup)
    code, stdout, err, document = report(data, tmp_path / "out", "--days", 7, "--no-cache", timeout=60)
    assert code == 0 and "Traceback" not in err, err
    assert [v["vm"] for v in document["vms"]] == ["10.0.0.1", "10.0.0.2"]
    assert "HYPERLINK" not in (tmp_path / "out" / "report.csv").read_text()
    assert named(document)[str(rollup)]["problem"] == (
        "1 VM name left out: not a VM id of vmstats (docs/PROTOCOL.md), e.g. " + stranger)
    assert str(rollup) in stdout


def test_compaction_leaves_tier_entries_it_cannot_read_and_goes_on(tmp_path):
    """A link to nothing in columnar/, a columnar file described right but with a column of
    text, a folder and a FIFO in rollups/ past retention: each is named and left where it is,
    by the report too, and the pass compacts and retires everything else."""
    data, end, damaged = _compacted_fleet(tmp_path)
    _rewrite_tier(damaged, column="cpu")
    late = data / "vms" / "10.0.0.1" / (damaged.stem + ".csv")  # rows that would be merged into it
    late.write_bytes(_day_file(data, "10.0.0.1", end).read_bytes())
    link = data / "columnar" / "2020-01-03.parquet"
    link.symlink_to(tmp_path / "gone.parquet")
    folder, fifo = data / "rollups" / "2020-01-04.parquet", data / "rollups" / "2020-01-05.parquet"
    folder.mkdir()
    os.mkfifo(fifo)
    code, stdout, err, document = report(data, tmp_path / "out", "--days", 10, "--no-cache", timeout=60)
    assert code == 0 and "Traceback" not in err, err
    entries = named(document)
    assert entries[str(link)]["problem"] == "unreadable columnar file: a symbolic link to a missing file"
    assert entries[str(damaged)]["problem"].startswith("unreadable: could not convert string to float")
    assert entries[str(folder)]["problem"] == "unreadable rollups file: not a regular file: a directory"
    assert entries[str(fifo)]["problem"] == "unreadable rollups file: not a regular file: a FIFO"
    assert all(str(path) in stdout for path in (link, damaged, folder, fifo))
    rollups = len(list((data / "rollups").iterdir()))
    done = _compact(data, "--compact-after", "0s", "--retain-raw", "0s", "--retain-rollups", "5d")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    unmerged = "day %s left alone: %s: unreadable: could not convert string" % (damaged.stem, damaged)
    for line in (unmerged,
                 "%s left in place past retention: a symbolic link to a missing file" % link,
                 "%s left in place past retention: not a regular file: a directory" % folder,
                 "%s left in place past retention: not a regular file: a FIFO" % fifo):
        assert line in done.stderr, (line, done.stderr)
    assert late.exists() and link.is_symlink() and folder.is_dir() and fifo.exists()
    # The rest: every columnar file but the link retired (the damaged one's day is in its
    # rollups, written when it was whole), the old rollups removed.
    assert sorted(p.name for p in (data / "columnar").iterdir()) == [link.name]
    assert not list((data / "vms" / "10.0.0.2").glob("*.csv"))
    assert 2 < len(list((data / "rollups").iterdir())) < rollups


def test_a_columnar_file_of_no_vm_past_retention_is_retired_and_stops_no_pass(tmp_path):
    """A columnar file described and written with no VM (another hand's; a pass never writes
    one) and no rollups beside it: past --retain-raw every pass stopped with "Error: nothing to
    write to DIR/rollups/<day>.parquet", so retention stopped for good.  It holds no row: it is
    retired like any other, and the pass goes on."""
    import pyarrow.parquet as pq

    data = tmp_path / "data"
    write_fleet(data, _end())
    done = _compact(data, "--compact-after", "0s")
    assert done.returncode == 0, done.stderr
    empty = sorted((data / "columnar").iterdir())[0]
    handle = pq.ParquetFile(empty)
    meta = dict(handle.metadata.metadata)
    meta[b"vmstats"] = json.dumps({**json.loads(meta[b"vmstats"]), "vms": [], "rows": [], "bad": []}).encode()
    pq.write_table(handle.read().slice(0, 0).replace_schema_metadata(meta), empty)
    (data / "rollups" / empty.name).unlink()
    done = _compact(data, "--compact-after", "0s", "--retain-raw", "0s")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert not list((data / "columnar").iterdir())  # the empty file and the other day's retired
    assert not (data / "rollups" / empty.name).exists()


def test_rows_a_columnar_files_footer_lists_and_it_lacks_are_named(tmp_path, undamaged):
    """A columnar file cut down by another hand (a VM's rows gone, its footer as written):
    the VM-day lost them unsaid.  They are malformed lines of the file now, as a torn CSV's."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    data = tmp_path / "data"
    end, clean = undamaged
    write_fleet(data, end)
    done = _compact(data, "--compact-after", "0s")
    assert done.returncode == 0, done.stderr
    columnar = sorted((data / "columnar").iterdir())[-1]
    handle = pq.ParquetFile(columnar)
    table, meta = handle.read(), dict(handle.metadata.metadata)
    mine = pc.equal(table.column("vm"), "10.0.0.1")
    lost = pc.sum(mine).as_py()
    pq.write_table(table.filter(pc.invert(mine)).replace_schema_metadata(meta), columnar)
    (data / "rollups" / columnar.name).unlink()
    code, stdout, err, document = report(data, tmp_path / "out", "--days", 7, "--no-cache", timeout=60)
    assert code == 0 and "Traceback" not in err, err
    entry = named(document)[str(columnar)]
    assert lost > 0 and (entry["vm"], entry["rows"], entry["bad_lines"]) == ("10.0.0.1", 0, lost), entry
    records = {v["vm"]: v["records"] for v in clean["vms"]}
    assert {v["vm"]: v["records"] for v in document["vms"]} == {
        "10.0.0.1": records["10.0.0.1"] - lost, "10.0.0.2": records["10.0.0.2"]}


def _retold(path: Path, vms=None, rows=None) -> None:
    """Rewrite a tier file with its footer as written and its table's ``vm`` column set to
    ``vms`` (or only the rows ``rows`` of it kept): what another hand's tool might leave."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    handle = pq.ParquetFile(path)
    table, meta = handle.read(), dict(handle.metadata.metadata)
    if rows is not None:
        table = table.take(pa.array(rows))
    if vms is not None:
        table = table.set_column(0, "vm", pa.array(vms, pa.string()))
    pq.write_table(table.replace_schema_metadata(meta), path)


#: (tier, how its newest file is damaged, what the report names it by).
DISAGREEING = {
    "rollup footer twice": ("rollups", lambda path: _rewrite_tier(
        path, lambda info: {**info, "vms": ["10.0.0.1", "10.0.0.1"]}),
        "damaged rollups file: its description lists 10.0.0.1 more than once; its table holds "
        "10.0.0.2, which its description does not list; each VM read as its table holds it"),
    "rollup unlisted": ("rollups", lambda path: _rewrite_tier(
        path, lambda info: {**info, "vms": ["10.0.0.1"]}),
        "damaged rollups file: its table holds 10.0.0.2, which its description does not list; "
        "each VM read as its table holds it"),
    "columnar unlisted": ("columnar", lambda path: _rewrite_tier(
        path, lambda info: {**info, "vms": info["vms"][:1], "rows": info["rows"][:1], "bad": [0]}),
        "damaged columnar file: its table holds 10.0.0.2, which its description does not list; "
        "each VM read as its table holds it"),
}


@pytest.mark.parametrize("case", sorted(DISAGREEING))
def test_a_tier_file_whose_footer_disagrees_with_its_table_is_named_and_loses_no_vm_day(
        tmp_path, undamaged, case):
    """A tier file whose footer lists a VM twice, or not at all, beside a table that holds
    that VM's rows or rollup: readers trusted the footer, and the VM-day was gone from the
    report without a word.  Each VM is read as the table holds it, and the file is named."""
    tier, damage, problem = DISAGREEING[case]
    data = tmp_path / "data"
    end, clean = undamaged
    write_fleet(data, end)
    # Rollups: the rows retired, so the rollups alone answer; columnar: the rollups removed.
    done = _compact(data, "--compact-after", "0s", *(["--retain-raw", "0s"] if tier == "rollups" else []))
    assert done.returncode == 0, done.stderr
    path = sorted((data / tier).iterdir())[-1]
    if tier == "columnar":
        for rollup in (data / "rollups").iterdir():
            rollup.unlink()
    damage(path)
    code, stdout, err, document = report(data, tmp_path / "out", "--days", 7, "--no-cache", timeout=60)
    assert code == 0 and "Traceback" not in err, err
    assert [(v["vm"], v["records"]) for v in document["vms"]] == [
        (v["vm"], v["records"]) for v in clean["vms"]]
    entry = named(document)[str(path)]
    assert entry["problem"] == problem and entry["rows"] > 0, entry
    assert str(path) in stdout


def test_compaction_retires_no_rows_on_the_word_of_a_footer_its_table_belies(tmp_path, undamaged):
    """A rollup file whose table lacks a VM its footer lists: retention removed the day's
    columnar file on the footer's word, and a late CSV file of that VM was removed as if its
    day's rollup held it; both VM-days were lost.  Now the pass reads the rollup file's table:
    the rows are rolled up again before they are retired, the late file rolled up beside the
    others, and the file named in a warning."""
    data, late = tmp_path / "data", tmp_path / "late"
    end, clean = undamaged
    write_fleet(data, end)
    write_fleet(late, end)
    done = _compact(data, "--compact-after", "0s")  # every day's rows and rollups kept
    assert done.returncode == 0, done.stderr
    first, middle, last = sorted((data / "rollups").iterdir())
    for path in (first, last):
        _retold(path, rows=[0])  # 10.0.0.1's rollup only, its footer listing both VMs
    _retold(middle, rows=[0, 0])  # 10.0.0.1's twice: as many rows as the footer's VMs
    # The last day's rows retired by hand (a pass of --retain-raw 0s before the damage), then
    # a late CSV file of 10.0.0.2 for it: the rollups alone stand for that day.
    (data / "columnar" / last.name).unlink()
    arrived = Path(logstore.day_path(str(data), "10.0.0.2", last.stem))
    arrived.parent.mkdir(parents=True, exist_ok=True)
    arrived.write_bytes(Path(logstore.day_path(str(late), "10.0.0.2", last.stem)).read_bytes())
    done = _compact(data, "--compact-after", "0s", "--retain-raw", "0s")
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    for path in (first, last):
        assert ("compaction: %s: its description lists 10.0.0.2, whose rollup its table lacks; each "
                "VM read as its table holds it" % path) in done.stderr
    assert not list((data / "columnar").iterdir()) and not arrived.exists()
    for path in (first, middle, last):
        assert logstore.table_vms(str(path)) == ["10.0.0.1", "10.0.0.2"], path
    code, stdout, err, document = report(data, tmp_path / "out", "--days", 7, "--no-cache", timeout=60)
    assert code == 0 and "Traceback" not in err, err
    assert [(v["vm"], v["records"]) for v in document["vms"]] == [
        (v["vm"], v["records"]) for v in clean["vms"]]
    assert not document["meta"]["skipped_files"] + document["meta"]["damaged_files"]


#: What a report says of each VM that a damaged rollup file could change.
_FIGURES = ("vm", "records", "days_with_data", "cpu_avg", "cpu_p95", "mem_p95", "cpu_max")


def test_a_vm_its_rollup_table_lacks_at_the_footers_count_is_read_from_its_kept_rows(
        tmp_path, undamaged):
    """A rollup file whose table holds one VM twice and lacks another has as many rows as its
    footer lists VMs, so its footer seems to agree: the missing VM's day was named and left
    empty until a pass rolled the day up again, though the day's columnar rows were there.  The
    report reads that VM-day from the kept rows in the same read, and names the file."""
    data = tmp_path / "data"
    end, clean = undamaged
    write_fleet(data, end)
    done = _compact(data, "--compact-after", "0s")  # rows and rollups of every day kept
    assert done.returncode == 0, done.stderr
    middle = sorted((data / "rollups").iterdir())[1]
    _retold(middle, rows=[0, 0])  # 10.0.0.1's rollup twice, 10.0.0.2's gone
    code, stdout, err, document = report(data, tmp_path / "out", "--days", 7, "--no-cache", timeout=60)
    assert code == 0 and "Traceback" not in err, err
    assert [[v[k] for k in _FIGURES] for v in document["vms"]] == [
        [v[k] for k in _FIGURES] for v in clean["vms"]]
    entry = named(document)[str(middle)]
    assert entry["problem"] == (
        "damaged rollups file: its table lacks the rollup of 10.0.0.2; its table holds more than "
        "one rollup of 10.0.0.1 (the last is read); 10.0.0.2 read from the day's kept rows instead")
    assert entry["rows"] > 0 and str(middle) in stdout, entry


def test_a_late_csv_file_of_a_vm_its_retired_days_rollup_table_lacks_is_read_before_the_pass(
        tmp_path, undamaged):
    """A rollup file whose table lacks a VM its footer lists (one VM held twice, at the
    footer's count), its day's rows retired, and that VM's records of the day written late to
    its CSV file: the report left the file out on the footer's word (as if the rollup held
    the VM) and the VM's day was empty; the next pass then removed the file as past retention,
    and the day was lost.  The report reads the late file, the pass rolls it up beside the
    others, and the report after the pass is the report before it."""
    data = tmp_path / "data"
    end, clean = undamaged
    write_fleet(data, end)
    done = _compact(data, "--compact-after", "0s", "--retain-raw", "0s")  # rollups alone answer
    assert done.returncode == 0 and not list((data / "columnar").iterdir()), done.stderr
    middle = sorted((data / "rollups").iterdir())[1]
    _retold(middle, rows=[0, 0])  # 10.0.0.1's rollup twice, 10.0.0.2's gone
    # 10.0.0.2's afternoon of that day, sent late (an agent's spool), written by the writer.
    start = logstore.day_number(middle.stem) * DAY + DAY // 2
    late = {ts: logstore.format_tail(Record(vm="10.0.0.2", ts=ts, cpu=60.5, mem=30.0, disk_r=1.0,
                                            disk_w=1.0, net_rx=1.0, net_tx=1.0, vcpus=2, mem_mb=4096))
            for ts in range(start, start + DAY // 2, 60)}
    logstore.append_missing(str(data), "10.0.0.2", late)
    arrived = Path(logstore.day_path(str(data), "10.0.0.2", middle.stem))
    code, stdout, err, before = report(data, tmp_path / "before", "--days", 7, "--no-cache", timeout=60)
    assert code == 0 and "Traceback" not in err, err
    records = {v["vm"]: v["records"] for v in clean["vms"]}
    assert {v["vm"]: v["records"] for v in before["vms"]} == {
        "10.0.0.1": records["10.0.0.1"], "10.0.0.2": records["10.0.0.2"] - DAY // 60 + len(late)}
    assert str(arrived) not in named(before)
    assert named(before)[str(middle)]["problem"] == (
        "damaged rollups file: its table lacks the rollup of 10.0.0.2; its table holds more than "
        "one rollup of 10.0.0.1 (the last is read); 10.0.0.2 read from its CSV file instead, "
        "which came after the day's rows were retired")
    done = _compact(data, "--compact-after", "0s", "--retain-raw", "0s")
    assert done.returncode == 0 and "0 late CSV files" in done.stdout, done.stdout + done.stderr
    assert not arrived.exists() and logstore.table_vms(str(middle)) == ["10.0.0.1", "10.0.0.2"]
    code, stdout, err, after = report(data, tmp_path / "after", "--days", 7, "--no-cache", timeout=60)
    assert code == 0 and "Traceback" not in err, err
    assert [[v[k] for k in _FIGURES] for v in after["vms"]] == [
        [v[k] for k in _FIGURES] for v in before["vms"]]
    assert not after["meta"]["skipped_files"] + after["meta"]["damaged_files"]


def test_a_rollup_file_that_fails_two_vms_two_ways_is_named_for_both(tmp_path):
    """A rollup file whose table lacks two VMs its footer lists, its day's rows retired: one
    VM answered by its late CSV file (the listing names the file), the other by nothing (the
    aggregation names it).  The file was named once, by the last read only, and the VM its
    late file answered went unmentioned.  Its one entry names both."""
    data = tmp_path / "data"
    end = _end()
    write_fleet(data, end)
    write_fleet(data, end, vms=("10.0.0.3",))
    done = _compact(data, "--compact-after", "0s", "--retain-raw", "0s")  # rollups alone answer
    assert done.returncode == 0 and not list((data / "columnar").iterdir()), done.stderr
    middle = sorted((data / "rollups").iterdir())[1]
    _retold(middle, rows=[0, 0, 0])  # 10.0.0.1's rollup thrice, at the footer's count
    start = logstore.day_number(middle.stem) * DAY + DAY // 2
    late = {ts: logstore.format_tail(Record(vm="10.0.0.2", ts=ts, cpu=60.5, mem=30.0, disk_r=1.0,
                                            disk_w=1.0, net_rx=1.0, net_tx=1.0, vcpus=2, mem_mb=4096))
            for ts in range(start, start + DAY // 2, 60)}
    logstore.append_missing(str(data), "10.0.0.2", late)
    code, stdout, err, document = report(data, tmp_path / "out", "--days", 7, "--no-cache", timeout=60)
    assert code == 0 and "Traceback" not in err, err
    entries = [e for e in document["meta"]["skipped_files"] + document["meta"]["damaged_files"]
               if e["path"] == str(middle)]
    problem = (
        "damaged rollups file: its table lacks the rollup of 10.0.0.2, 10.0.0.3; its table holds "
        "more than one rollup of 10.0.0.1 (the last is read); 10.0.0.2 read from its CSV file "
        "instead, which came after the day's rows were retired")
    assert [(e["problem"], e["vm"], e["day"]) for e in entries] == [(problem, "", middle.stem)], entries
    assert entries[0]["rows"] > 0 and "%s: %s" % (middle, problem) in stdout, stdout


def test_200_junk_files_in_a_real_data_dir(tmp_path):
    """The target of issue 18: exit 0 on 200 random junk files mixed into real data, all named."""
    with serve(tmp_path, "--flush-interval", "1") as server:
        result = subprocess.run(
            [sys.executable, "-m", "vmstats", "simulate", "--vms", "12", "--days", "3", "--seed", "5",
             "--transport", "tcp", "--server", "127.0.0.1:%d" % server.tcp_port],
            cwd=ROOT, capture_output=True, text=True, timeout=240,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    assert server.returncode == 0, server.output
    data = tmp_path / "data"
    began = time.monotonic()
    code, _out, err, clean = report(data, tmp_path / "clean", "--days", 7, "--no-cache")
    clean_seconds = time.monotonic() - began
    assert code == 0, err
    assert len(clean["vms"]) == 12 and sum(v["records"] for v in clean["vms"]) > 12 * 1440
    vms = sorted(os.listdir(data / "vms"))
    days = sorted({name for vm in vms for name in os.listdir(data / "vms" / vm)})
    rng = random.Random(18)
    junk = []
    for k in range(200):
        size = rng.choice((65536, 65536, 4096, 100, 1))
        if k % 4 == 0:  # a new VM whose only file is junk
            path = data / "vms" / ("junk-%03d" % k) / rng.choice(days)
        elif k % 4 == 1:  # a day of a real VM without logs that day
            before = calendar.timegm(time.strptime(days[0], "%Y-%m-%d.csv")) - rng.randrange(1, 4) * DAY
            day = time.strftime("%Y-%m-%d", time.gmtime(before))
            path = data / "vms" / rng.choice(vms) / (day + ".csv")
        else:  # a stray name beside real day files
            path = data / "vms" / rng.choice(vms) / ("junk-%03d.csv" % k)
        if path.exists():
            path = path.with_name("junk-%03d.csv" % k)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        junk.append(str(path))
    out = tmp_path / "out"
    began = time.monotonic()
    code, stdout, err, document = report(data, out, "--days", 7, "--no-cache")
    junk_seconds = time.monotonic() - began
    assert code == 0, err
    found = named(document)
    assert set(junk) <= set(found), sorted(set(junk) - set(found))[:5]
    assert all(found[path]["rows"] == 0 for path in junk)
    html = (out / "report.html").read_text()
    assert all(path in html for path in junk)
    assert "log files skipped: %d" % len(document["meta"]["skipped_files"]) in stdout
    before = {v["vm"]: v for v in clean["vms"]}
    after = {v["vm"]: v for v in document["vms"]}
    for vm, row in before.items():
        for column in ("category", "records", "cpu_p95", "coverage", "monthly_saving"):
            assert after[vm][column] == row[column], (vm, column)
    for vm in set(after) - set(before):
        assert vm.startswith("junk-") and after[vm]["category"] == "insufficient-data"
    print(
        "RELIABILITY report on junk: %d VMs, %d records; %d junk files (%.1f MiB) added: exit %d, "
        "%d files named skipped (%d junk), %d junk-only VMs insufficient-data, real VMs unchanged; "
        "report %.1f s clean, %.1f s with junk"
        % (len(before), sum(v["records"] for v in before.values()), len(junk),
           sum(os.path.getsize(p) for p in junk) / 2**20, code, len(document["meta"]["skipped_files"]),
           len(set(junk) & set(found)), len(set(after) - set(before)), clean_seconds, junk_seconds)
    )


def test_read_columns_names_what_it_cannot_open_and_never_blocks(tmp_path):
    good = tmp_path / "good.csv"
    good.write_bytes(logstore.HEADER + b"1794523200,1,2,3,,,,,2,4096,7,\n")
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    link = tmp_path / "link.csv"
    link.symlink_to(tmp_path / "missing")
    errors: dict[int, str] = {}
    frame, bad = logstore.read_columns([str(fifo), str(good), str(folder), str(link)], errors=errors)
    assert frame["file"].tolist() == [1] and bad == [0, 0, 0, 0]
    assert errors == {
        0: "not a regular file: a FIFO",
        2: "not a regular file: a directory",
        3: "unreadable: a symbolic link to a missing file",
    }
    with pytest.raises(OSError):  # without ``errors`` a caller still learns of it
        logstore.read_columns([str(fifo)])


#: Cells a damaged line may hold: numbers in and out of range, words, quotes, line breaks.
_CELLS = st.sampled_from(["", "1", "2.5", "-1", "1e300", "inf", "nan", "abc", '"', '"x"', "\r",
                          "99999999999999999999", "\xff", "\x00", "1794523260"])
_LINES = st.one_of(
    st.binary(max_size=200),
    st.lists(_CELLS, min_size=len(logstore.COLUMNS), max_size=len(logstore.COLUMNS)).map(
        lambda cells: ",".join(cells).encode("utf-8", "surrogateescape")
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_LINES, max_size=12), st.integers(0, 40), st.booleans())
def test_no_content_breaks_read_columns_and_good_rows_survive(tmp_path_factory, damage, where, as_float):
    """Any bytes among well-formed rows: no exception, every good row kept, the rest counted."""
    folder = tmp_path_factory.mktemp("fuzz")
    good = [b"%d,1.5,2,30,1,1,1,1,2,4096,%d,h1" % (1794523200 + 60 * i, i) for i in range(40)]
    lines = good[:where] + damage + good[where:]
    path = folder / "day.csv"
    path.write_bytes(logstore.HEADER + b"\n".join(lines) + b"\n")
    other = folder / "other.csv"
    other.write_bytes(logstore.HEADER + b"\n".join(good) + b"\n")
    frame, bad = logstore.read_columns([str(path), str(other)], as_float=as_float)
    kept = frame[frame["file"] == 0]
    assert set(range(40)) <= set(kept["seq"].dropna().astype(int)), "a good row was lost"
    assert (frame["file"] == 1).sum() == 40 and bad[1] == 0
    # Every line is either a row kept or a malformed line counted (blank lines are neither).
    assert len(kept) + bad[0] == len([line for line in b"\n".join(lines).split(b"\n") if line])
    assert kept["cpu"].dropna().between(0, 100).all()



def test_a_compacted_row_the_log_reader_would_refuse_is_refused_from_the_columnar_file(tmp_path):
    """A columnar day file written by another hand, one row holding vcpus=1.23456 (more places
    than vcpus holds) and one cpu=1e300 (out of range), read as rows (a row logged late for
    that day beside it: rollups do not answer such a day): the report drops both and counts
    each as a malformed line of its VM's day, as the CSV reader does (one rule,
    ``_in_range``), and its figures are those of the file without them.  Before, the columnar
    rows were read as they were: cpu_max 1e300, and both rows counted as records."""
    data, _end_time, path = _compacted_fleet(tmp_path)
    day = calendar.timegm(time.strptime(path.stem, "%Y-%m-%d"))
    late = Record(vm="10.0.0.1", ts=day + 600, cpu=0.5, mem=30.0, disk_r=1.0, disk_w=1.0,
                  net_rx=1.0, net_tx=1.0, vcpus=2, mem_mb=4096)  # as the row compacted there
    logstore.append_missing(str(data), "10.0.0.1", {late.ts: logstore.format_tail(late)})
    code, _out, err, clean = report(data, tmp_path / "clean", "--days", 10, "--no-cache")
    assert code == 0, err
    _rewrite_tier(path, cells={("10.0.0.1", 0, "vcpus"): 1.23456, ("10.0.0.1", 1, "cpu"): 1e300})
    code, _out, err, document = report(data, tmp_path / "out", "--days", 10, "--no-cache")
    assert code == 0 and "Traceback" not in err, err
    before = {v["vm"]: v for v in clean["vms"]}
    after = {v["vm"]: v for v in document["vms"]}
    assert (after["10.0.0.1"]["bad_lines"], after["10.0.0.2"]["bad_lines"]) == (2, 0)
    assert after["10.0.0.1"]["records"] == before["10.0.0.1"]["records"] - 2
    for vm, row in before.items():
        for column in ("category", "cpu_p95", "cpu_max", "mem_p95", "vcpus"):
            assert after[vm][column] == row[column], (vm, column)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.none(), st.lists(_LINES, min_size=1, max_size=3)), min_size=2, max_size=12),
       st.sampled_from([64, 3, 0]), st.booleans())
def test_files_read_together_read_as_each_alone(tmp_path_factory, damages, tries, as_float):
    """A batch split around its damaged files (and past the tries it may take) keeps each file's own
    rows, in file order, and counts each file's own malformed lines, as reading it alone does; with
    the tries to spare, only damaged files are read line by line."""
    folder = tmp_path_factory.mktemp("batch")
    paths = []
    for index, damage in enumerate(damages):
        rows = [b"%d,%d.5,2,30,1,1,1,1,2,4096,%d,h%d" % (1794523200 + 60 * i, index, i, index)
                for i in range(5)]
        path = folder / ("%02d.csv" % index)
        path.write_bytes(logstore.HEADER + b"\n".join(rows[:2] + (damage or []) + rows[2:]) + b"\n")
        paths.append(str(path))
    alone = [logstore.read_columns([path], as_float=as_float) for path in paths]
    lenient = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(text, "_STRICT_TRIES", tries)
        parse = text._parse_lenient
        patch.setattr(text, "_parse_lenient", lambda lines, *rest: lenient.append(len(lines)) or
                      parse(lines, *rest))
        frame, bad = logstore.read_columns(paths, as_float=as_float)
    if tries == 64:
        assert sum(lenient) <= sum(7 if damage else 0 for damage in damages), lenient
    assert bad == [counts[0] for _frame, counts in alone]
    for index, (own, _counts) in enumerate(alone):
        mine = frame[frame["file"] == index].drop(columns="file").reset_index(drop=True)
        assert mine.equals(own.drop(columns="file").reset_index(drop=True)), paths[index]
    assert frame["file"].is_monotonic_increasing
