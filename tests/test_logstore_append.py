"""The log write path: appends to the per-VM day files.

What appends must keep doing is what the plain version did (kept below as
the reference: group by day with ``day_of``, ``makedirs`` per VM, a buffered
append); the cheaper one computes each day once per batch, builds paths
without ``os.path.join`` and makes a VM's folder only when the open finds it
missing, so the tests are about those: midnight, deleted folders, failures.
"""

import datetime
import os
import shutil

import pytest

from vmstats import logstore
from vmstats.server.writer import unlogged, write_share

DAY = 86400
T0 = 1_732_233_600  # 2024-11-22 00:00:00 UTC
VM = "10.7.0.1"


def row(ts: int, tag: int = 0) -> bytes:
    return b"%d,1.5,,40.25,,,,,,,%d,web1" % (ts, tag)


# -- the reference: the append as it was, byte for byte -----------------------------------
def reference_append(data_dir: str, vm: str, rows: dict) -> int:
    by_day: dict = {}
    for ts in sorted(rows):
        by_day.setdefault((datetime.date(1970, 1, 1) + datetime.timedelta(days=ts // DAY)).isoformat(),
                          []).append(rows[ts])
    folder = os.path.join(data_dir, "vms", vm)
    os.makedirs(folder, exist_ok=True)
    for day, lines in by_day.items():
        payload = b"\n".join(lines) + b"\n"
        with open(os.path.join(folder, day + ".csv"), "ab") as handle:
            if handle.tell() == 0:
                payload = logstore.HEADER + payload
            handle.write(payload)
    return len(rows)


def files(data_dir) -> dict:
    """Every file under ``data_dir``, relative path -> bytes."""
    found = {}
    for folder, _dirs, names in os.walk(data_dir):
        for name in names:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, data_dir)] = open(path, "rb").read()
    return found


def logged(data_dir: str, rows: dict) -> int:
    """What a writer does with one VM's rows: the missing ones appended; the count written."""
    fresh = unlogged(data_dir, VM, rows)
    return logstore.append_rows(data_dir, VM, fresh) if fresh else 0


def body(data_dir: str, day_start: int) -> bytes:
    return open(logstore.day_path(data_dir, VM, logstore.day_of(day_start)), "rb").read()


# -- days --------------------------------------------------------------------------------------
@pytest.mark.parametrize("ts", [0, 1, DAY - 1, DAY, T0 - 1, T0, T0 + DAY - 1, -1, -DAY, -DAY - 1,
                                999_999_999, 1_000_000_000, 9_999_999_999, 10_000_000_000])
def test_day_of_is_the_utc_date(ts):
    assert logstore.day_of(ts) == datetime.datetime.fromtimestamp(
        ts, datetime.timezone.utc).date().isoformat()


def test_split_days_cuts_at_midnight_only():
    assert logstore.split_days([]) == []
    assert logstore.split_days([T0 + 120, T0, T0 + 60]) == [(T0 // DAY, [T0, T0 + 60, T0 + 120])]
    stamps = [T0 + 2 * DAY + 5, T0 - 1, T0, T0 + DAY - 1, T0 - DAY, T0 + 2 * DAY]
    assert logstore.split_days(stamps) == [
        (T0 // DAY - 1, [T0 - DAY, T0 - 1]), (T0 // DAY, [T0, T0 + DAY - 1]),
        (T0 // DAY + 2, [T0 + 2 * DAY, T0 + 2 * DAY + 5])]


def test_paths_are_what_os_path_join_builds():
    for data_dir in ("data", "data/", "/srv/x//", "", "."):
        assert logstore.vm_dir(data_dir, VM) == os.path.join(data_dir, "vms", VM)
        assert logstore.day_path(data_dir, VM, "2024-11-22") == os.path.join(
            data_dir, "vms", VM, "2024-11-22.csv")
    with pytest.raises(ValueError):
        logstore.vm_dir("data", "../etc")


# -- appends -----------------------------------------------------------------------------------
def test_rows_spanning_midnight_go_to_two_day_files_each_with_its_header(tmp_path):
    rows = {T0 - 120 + 60 * i: row(T0 - 120 + 60 * i, i) for i in range(5)}  # 2 before, 3 after
    assert logstore.append_rows(str(tmp_path / "new"), VM, rows) == 5
    reference_append(str(tmp_path / "old"), VM, rows)
    assert files(tmp_path / "new") == files(tmp_path / "old")
    assert body(str(tmp_path / "new"), T0 - DAY) == logstore.HEADER + row(T0 - 120, 0) + b"\n" + row(
        T0 - 60, 1) + b"\n"
    assert body(str(tmp_path / "new"), T0).startswith(logstore.HEADER + row(T0, 2) + b"\n")


def test_an_empty_append_still_makes_the_vm_folder(tmp_path):
    assert logstore.append_rows(str(tmp_path), VM, {}) == 0
    assert os.path.isdir(logstore.vm_dir(str(tmp_path), VM))


@pytest.mark.parametrize("removed", ["vm folder", "vms folder", "day file"])
def test_a_folder_or_file_deleted_since_the_last_write_is_made_again(tmp_path, removed):
    data = str(tmp_path)
    assert logged(data, {T0: row(T0)}) == 1
    target = {"vm folder": logstore.vm_dir(data, VM), "vms folder": os.path.join(data, "vms"),
              "day file": logstore.day_path(data, VM, logstore.day_of(T0))}[removed]
    shutil.rmtree(target) if os.path.isdir(target) else os.unlink(target)
    # The same row again: the file that held it is gone, so it is written again, with a header.
    assert logged(data, {T0: row(T0), T0 + 60: row(T0 + 60)}) == 2
    assert body(data, T0) == logstore.HEADER + row(T0) + b"\n" + row(T0 + 60) + b"\n"
    assert logged(data, {T0 + 60: row(T0 + 60)}) == 0


@pytest.mark.parametrize("in_the_way", ["day file", "vm folder"])
def test_a_failed_write_is_reported_for_a_retry(tmp_path, in_the_way):
    data = str(tmp_path)
    folder = logstore.vm_dir(data, VM)
    if in_the_way == "day file":  # a directory where the day file should be
        os.makedirs(logstore.day_path(data, VM, logstore.day_of(T0)))
    else:  # a plain file where the VM's folder should be
        os.makedirs(os.path.dirname(folder))
        open(folder, "w").close()
    with pytest.raises(OSError):
        logstore.append_rows(data, VM, {T0: row(T0)})
    [(vm, count, error, retry)] = write_share(data, [(VM, {T0: b"web1,1.5,,,,,,,,,"})])
    assert (vm, count, retry) == (VM, 0, True) and error.split(":")[0] in (
        "IsADirectoryError", "NotADirectoryError")


def test_a_short_write_is_continued_and_a_write_of_nothing_is_an_error(tmp_path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(logstore.os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
    rows = {T0 + 60 * i: row(T0 + 60 * i, i) for i in range(3)}
    assert logstore.append_rows(str(tmp_path / "new"), VM, rows) == 3
    reference_append(str(tmp_path / "old"), VM, rows)
    assert files(tmp_path / "new") == files(tmp_path / "old")
    monkeypatch.setattr(logstore.os, "write", lambda fd, data: 0)
    with pytest.raises(OSError):
        logstore.append_rows(str(tmp_path / "new"), VM, {T0 + DAY: row(T0 + DAY)})
    # Nothing is written twice after it.
    monkeypatch.setattr(logstore.os, "write", real_write)
    assert logged(str(tmp_path / "new"), rows) == 0
