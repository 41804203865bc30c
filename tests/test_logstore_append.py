"""The log write path: appends and the check for rows already logged.

What they must keep doing is what the plain versions did (kept below as the
reference: group by day with ``day_of``, ``makedirs`` per VM, a buffered
append, read the whole day file for the rows it holds); the cheaper versions
read only a day file's new bytes when this process remembers its end, so most
tests here are about a remembered end going stale: another writer appending,
the file truncated, rewritten or deleted, rows arriving out of order.
"""

import datetime
import os
import shutil
import stat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmstats import logstore
from vmstats.logstore import append
from vmstats.server.writer import write_share

DAY = 86400
T0 = 1_732_233_600  # 2024-11-22 00:00:00 UTC
VM = "10.7.0.1"


def row(ts: int, tag: int = 0) -> bytes:
    return b"%d,1.5,,40.25,,,,,,,%d,web1" % (ts, tag)


def tails(rows: dict) -> dict:
    """``{ts: log row}`` to the form append_missing takes: each row without its leading ``ts,``."""
    return {ts: line.split(b",", 1)[1] for ts, line in rows.items()}


# -- the reference: the write path as it was, byte for byte -----------------------------------
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


def reference_unlogged(data_dir: str, vm: str, rows: dict) -> dict:
    by_day: dict = {}
    for ts in rows:
        by_day.setdefault(ts // DAY, []).append(ts)
    fresh = dict(rows)
    for stamps in by_day.values():
        path = logstore.day_path(data_dir, vm, logstore.day_of(stamps[0]))
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                continue
            with open(path, "rb") as handle:
                body = handle.read()
        except FileNotFoundError:
            continue
        if body[-1:] not in (b"\n", b""):
            with open(path, "ab") as handle:
                handle.write(b"\n")
        present = set(body.split(b"\n"))
        for ts in stamps:
            if rows[ts] in present:
                del fresh[ts]
    return fresh


def files(data_dir) -> dict:
    """Every file under ``data_dir``, relative path -> bytes."""
    found = {}
    for folder, _dirs, names in os.walk(data_dir):
        for name in names:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, data_dir)] = open(path, "rb").read()
    return found


@pytest.fixture
def memory() -> logstore.DayFileEnds:
    """What one writer process remembers of the day files' ends; each test starts a new one."""
    return logstore.DayFileEnds()


def logged(data_dir: str, rows: dict, memory: logstore.DayFileEnds) -> int:
    """What a writer does with one VM's rows (``{ts: log row}``): the missing ones appended;
    the count written."""
    return logstore.append_missing(data_dir, VM, tails(rows), memory)


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
    assert logstore.append_missing(str(tmp_path / "new"), VM, tails(rows)) == 5
    reference_append(str(tmp_path / "old"), VM, rows)
    assert files(tmp_path / "new") == files(tmp_path / "old")
    assert body(str(tmp_path / "new"), T0 - DAY) == logstore.HEADER + row(T0 - 120, 0) + b"\n" + row(
        T0 - 60, 1) + b"\n"
    assert body(str(tmp_path / "new"), T0).startswith(logstore.HEADER + row(T0, 2) + b"\n")


def test_an_empty_append_still_makes_the_vm_folder(tmp_path):
    assert logstore.append_missing(str(tmp_path), VM, {}) == 0
    assert os.path.isdir(logstore.vm_dir(str(tmp_path), VM))


@pytest.mark.parametrize("removed", ["vm folder", "vms folder", "day file"])
def test_a_folder_or_file_deleted_since_the_last_write_is_made_again(tmp_path, removed, memory):
    data = str(tmp_path)
    assert logged(data, {T0: row(T0)}, memory) == 1
    target = {"vm folder": logstore.vm_dir(data, VM), "vms folder": os.path.join(data, "vms"),
              "day file": logstore.day_path(data, VM, logstore.day_of(T0))}[removed]
    shutil.rmtree(target) if os.path.isdir(target) else os.unlink(target)
    # The same row again: the file that held it is gone, so it is written again, with a header.
    assert logged(data, {T0: row(T0), T0 + 60: row(T0 + 60)}, memory) == 2
    assert body(data, T0) == logstore.HEADER + row(T0) + b"\n" + row(T0 + 60) + b"\n"
    assert logged(data, {T0 + 60: row(T0 + 60)}, memory) == 0


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
        logstore.append_missing(data, VM, tails({T0: row(T0)}))
    [(vm, count, error, retry)] = write_share(data, [(VM, {T0: b"web1,1.5,,,,,,,,,"})])
    assert (vm, count, retry) == (VM, 0, True) and error.split(":")[0] in (
        "IsADirectoryError", "NotADirectoryError")


def test_a_short_write_is_continued_and_a_write_of_nothing_is_an_error(tmp_path, monkeypatch, memory):
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
    rows = {T0 + 60 * i: row(T0 + 60 * i, i) for i in range(3)}
    assert logged(str(tmp_path / "new"), rows, memory) == 3
    reference_append(str(tmp_path / "old"), VM, rows)
    assert files(tmp_path / "new") == files(tmp_path / "old")
    monkeypatch.setattr(os, "write", lambda fd, data: 0)
    with pytest.raises(OSError):
        logged(str(tmp_path / "new"), {T0 + DAY: row(T0 + DAY)}, memory)
    # The failed append is not remembered as written: the next check reads the file.
    monkeypatch.setattr(os, "write", real_write)
    assert logged(str(tmp_path / "new"), rows, memory) == 0


# -- the check for rows already logged ---------------------------------------------------------
@pytest.mark.parametrize("process", ["this one", "another"])
def test_a_resent_row_is_found_even_after_a_later_write_of_an_older_row(tmp_path, memory, process):
    """A row newer than the file's last line can still be in it when the file is out of order;
    only rows newer than every row logged may skip the comparison."""
    data = str(tmp_path)
    assert logged(data, {T0 + 60: row(T0 + 60), T0 + 120: row(T0 + 120)}, memory) == 2
    assert logged(data, {T0: row(T0)}, memory) == 1  # late: the file ends with its oldest row
    if process == "another":  # one that has not seen the file
        memory = logstore.DayFileEnds()
    assert logged(data, {T0 + 120: row(T0 + 120), T0 + 180: row(T0 + 180)}, memory) == 1
    assert body(data, T0) == logstore.HEADER + b"".join(
        row(t) + b"\n" for t in (T0 + 60, T0 + 120, T0, T0 + 180))


def test_rows_another_writer_appended_since_are_read_and_found(tmp_path, memory):
    data = str(tmp_path)
    assert logged(data, {T0: row(T0)}, memory) == 1
    with open(logstore.day_path(data, VM, logstore.day_of(T0)), "ab") as other:  # another process
        other.write(row(T0 + 60) + b"\n" + row(T0 + 120) + b"\n")
    rows = {T0 + 60: row(T0 + 60), T0 + 120: row(T0 + 120, tag=9), T0 + 180: row(T0 + 180)}
    assert logged(data, rows, memory) == 2  # the corrected row, and the new one
    assert body(data, T0) == logstore.HEADER + b"".join(line + b"\n" for line in (
        row(T0), row(T0 + 60), row(T0 + 120), row(T0 + 120, tag=9), row(T0 + 180)))


def test_an_end_remembered_after_another_writers_append_vouches_for_its_rows(tmp_path, memory):
    """What another writer added since this process last saw the file is read before this
    one appends, so the end it then remembers covers those rows too."""
    data = str(tmp_path)
    assert logged(data, {T0: row(T0)}, memory) == 1
    with open(logstore.day_path(data, VM, logstore.day_of(T0)), "ab") as other:
        other.write(row(T0 + 180) + b"\n")
    assert logged(data, {T0 + 120: row(T0 + 120)}, memory) == 1
    assert logged(data, {T0 + 180: row(T0 + 180)}, memory) == 0


def test_only_the_new_bytes_are_read_when_the_end_is_remembered(tmp_path, monkeypatch, memory):
    data = str(tmp_path)
    assert logged(data, {T0 + 60 * i: row(T0 + 60 * i, i) for i in range(1000)}, memory) == 1000
    reads = []
    real_pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, at: reads.append(n) or real_pread(fd, n, at))
    assert logged(data, {T0 + 60_000: row(T0 + 60_000)}, memory) == 1
    assert reads == [append._TAIL]
    memory = logstore.DayFileEnds()
    size = len(body(data, T0))
    assert logged(data, {T0 + 60_060: row(T0 + 60_060)}, memory) == 1
    assert reads[-1] == size  # not remembered: the whole file


@pytest.mark.parametrize("change", ["truncated", "rewritten in place", "replaced"])
def test_a_file_changed_behind_the_writers_back_is_read_whole_again(tmp_path, change, memory):
    data = str(tmp_path)
    assert logged(data, {T0 + 60 * i: row(T0 + 60 * i, i) for i in range(3)}, memory) == 3
    path = logstore.day_path(data, VM, logstore.day_of(T0))
    original = open(path, "rb").read()
    # The change puts in a row newer than any this process wrote, and keeps the file's size.
    hidden = row(T0 + 600, 7)
    changed = original.replace(row(T0 + 120, 2), hidden)
    assert len(changed) == len(original) and changed != original
    if change == "truncated":
        os.truncate(path, len(original) - 5)
        with open(path, "ab") as handle:
            handle.write(b"\n" + hidden + b"\n")
    elif change == "rewritten in place":
        with open(path, "r+b") as handle:
            handle.write(changed)
    else:
        os.unlink(path)
        with open(path, "wb") as handle:
            handle.write(changed)
    assert logged(data, {T0 + 600: hidden, T0 + 660: row(T0 + 660)}, memory) == 1
    assert body(data, T0).count(hidden) == 1 and body(data, T0).endswith(b"\n" + row(T0 + 660) + b"\n")


def test_a_file_replaced_with_the_same_size_and_end_is_read_whole_again(tmp_path, memory):
    """Only the inode tells this one apart (an editor's or ``sed -i``'s rename over the file)."""
    data = str(tmp_path)
    assert logged(data, {T0: row(T0, 0), T0 + 60: row(T0 + 60, 1)}, memory) == 2
    path = logstore.day_path(data, VM, logstore.day_of(T0))
    hidden = row(T0 + 600, 7)
    with open(path + ".tmp", "wb") as handle:
        handle.write(logstore.HEADER + hidden + b"\n" + row(T0 + 60, 1) + b"\n")
    assert os.path.getsize(path + ".tmp") == os.path.getsize(path)
    os.rename(path + ".tmp", path)
    assert logged(data, {T0 + 600: hidden}, memory) == 0


def test_a_torn_line_another_writer_left_is_ended_before_the_next_append(tmp_path, memory):
    data = str(tmp_path)
    assert logged(data, {T0: row(T0)}, memory) == 1
    path = logstore.day_path(data, VM, logstore.day_of(T0))
    with open(path, "ab") as other:  # a writer killed mid-write, after this one remembered the end
        other.write(row(T0 + 60)[:-5])
    assert logged(data, {T0 + 60: row(T0 + 60), T0 + 120: row(T0 + 120)}, memory) == 2
    assert open(path, "rb").read() == (logstore.HEADER + row(T0) + b"\n" + row(T0 + 60)[:-5] + b"\n"
                                       + row(T0 + 60) + b"\n" + row(T0 + 120) + b"\n")
    frame, bad = logstore.read_rows([path])
    assert bad == 1 and list(frame["ts"]) == [T0, T0 + 60, T0 + 120]


def test_a_fifo_in_the_way_is_appended_to_unchecked_as_open_ab_would(tmp_path, memory):
    """It cannot be read for rows already logged; the append that follows blocks while the
    FIFO has no reader, which the server reports (test_server_lifecycle's hung writer)."""
    path = logstore.day_path(str(tmp_path), VM, logstore.day_of(T0))
    os.makedirs(os.path.dirname(path))
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        assert logged(str(tmp_path), {T0: row(T0), T0 + 60: row(T0 + 60)}, memory) == 2
        assert os.read(reader, 4096) == row(T0) + b"\n" + row(T0 + 60) + b"\n"
    finally:
        os.close(reader)
    assert len(memory) == 0


@pytest.mark.parametrize("start", [0, 60, 999_999_999 - 600])  # days whose stamps vary in length
def test_days_whose_timestamps_change_length_are_checked_too(tmp_path, start, memory):
    data = str(tmp_path)
    rows = {start + 60 * i: row(start + 60 * i, i) for i in range(12)}
    assert logged(data, rows, memory) == 12
    assert logged(data, rows, memory) == 0
    memory = logstore.DayFileEnds()
    assert logged(data, rows, memory) == 0


@pytest.mark.parametrize("junk", [logstore.HEADER, b"99999999999,x\n", b"9,x\n", b"1732233600x\n"])
def test_a_line_sorting_after_every_row_does_not_hide_a_logged_row(tmp_path, junk, memory):
    """The largest row is found as the largest line; a line that is not a row of the day (a
    header repeated, hand-edited junk) sorting after it makes the check parse every line."""
    data = str(tmp_path)
    assert logged(data, {T0 + 60 * i: row(T0 + 60 * i, i) for i in range(3)}, memory) == 3
    path = logstore.day_path(data, VM, logstore.day_of(T0))
    with open(path, "ab") as other:
        other.write(junk + row(T0 + 900) + b"\n")
    for process in ("this one", "another"):
        if process == "another":
            memory = logstore.DayFileEnds()
        assert logged(data, {T0 + 900: row(T0 + 900)}, memory) == 0


def test_the_remembered_ends_are_bounded(tmp_path):
    memory = logstore.DayFileEnds(capacity=4)
    data = str(tmp_path)
    for day in range(10):
        assert logged(data, {T0 + day * DAY: row(T0 + day * DAY)}, memory) == 1
    assert len(memory) == 4
    for day in range(10):  # forgotten or not, nothing is written twice
        assert logged(data, {T0 + day * DAY: row(T0 + day * DAY)}, memory) == 0


# -- the same files as before, whatever happens ------------------------------------------------
STEP = st.one_of(
    # a flush of one VM: rows of a few minutes around midnight, some resent with other values
    st.tuples(st.just("flush"), st.sampled_from(["a", "b"]),
              st.lists(st.tuples(st.integers(-8, 8), st.integers(0, 1)), min_size=1, max_size=6)),
    st.tuples(st.just("torn"), st.integers(1, 20), st.integers(-1, 0)),  # a writer killed mid-write
    st.tuples(st.just("retention"), st.integers(-1, 0), st.just(0)),  # yesterday's or today's file
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEP, max_size=14))
def test_any_sequence_of_flushes_leaves_the_same_files_as_the_plain_write_path(tmp_path, steps):
    """Two writer processes (their own remembered ends) share the flushes, as the pool does."""
    new, old = str(tmp_path / "new"), str(tmp_path / "old")
    for folder in (new, old):
        shutil.rmtree(folder, ignore_errors=True)
    memories = {"a": logstore.DayFileEnds(), "b": logstore.DayFileEnds()}
    for kind, first, second in steps:
        if kind == "flush":
            memory = memories[first]
            rows = {T0 + 60 * minute: row(T0 + 60 * minute, tag) for minute, tag in second}
            written = logged(new, rows, memory)
            fresh_old = reference_unlogged(old, VM, rows)
            assert written == (reference_append(old, VM, fresh_old) if fresh_old else 0)
        else:
            for folder in (new, old):
                path = logstore.day_path(folder, VM, logstore.day_of(T0 + second * DAY))
                if not os.path.exists(path):
                    continue
                if kind == "torn":
                    with open(path, "ab") as handle:
                        handle.write(row(T0 + 60 * first)[:first])
                else:
                    os.unlink(path)
        assert files(new) == files(old)
