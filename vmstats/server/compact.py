"""Compaction and retention of a data dir: CSV day files -> columnar fleet-day files -> rollups.

One pass (``compact``) does, oldest day first:

1. every closed day whose end is at least ``compact_after`` ago and that still
   has CSV files: its rows (and those of its columnar file, if an earlier
   pass made one: a late record) are written to a new columnar file sorted by
   VM and time, the last row of a timestamp winning as in every reader; the
   file is read back and checked against what was written (rows per VM, a
   digest of every value) before anything is removed; the VM-day rollups are
   computed from that file with the report's own aggregation; both files are
   renamed into place; only then are the CSV files removed, each only if it
   has not changed since it was read (a record logged meanwhile keeps its
   file for the next pass);
2. columnar files of days that ended ``retain_raw`` or more ago are removed,
   once their day's rollups are in place;
3. rollup files of days that ended ``retain_rollups`` or more ago are removed.

Retention (steps 2 and 3) is measured from the earlier of the wall clock and
the end of the newest day the data dir holds a file of (``retention_clock``),
as Prometheus measures it from its newest data: a clock set months ahead (a
bad RTC, a typo in ``date -s``, NTP not yet synced) would otherwise retire
every day at once.  The day files' names give the newest day, so nothing is
read for it.  A day file dated after the clock's next UTC day (a stray copy, a
VM and server that once agreed on a wrong date) is future-dated: it is
reported, never taken as the newest day (one such file would lift the cap and
let a clock ahead retire everything again) and left in place.  A clock behind
only keeps data longer; one ahead by less than the rest of the newest day
(indistinguishable from a right one) can retire a day up to that much early,
never a full day.  ``--trust-clock`` measures from the clock alone, for a data
dir that no longer receives data (its newest day never advances).

Every step leaves the data dir readable with nothing lost or counted twice:
killed anywhere (SIGKILL), a pass leaves at most a ``.partial`` file (removed
by the next pass, never read) and CSV files whose rows are also in the
columnar file (readers merge them by timestamp; the next pass finishes the
job).  A lock file keeps two passes from running at once on one data dir.
The pass runs in its own process (``vmstats compact``, which the server's
compaction service starts on a schedule), never on the reactor.
"""

import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vmstats import logstore
from vmstats.server.config import FUTURE_DATED, LINKS_LEFT, RETENTION_HELD_BACK
from vmstats.words import counted

log = logging.getLogger(__name__)
# numpy and pyarrow are imported by the functions of a pass: `vmstats serve` imports this
# module at every start (its Policy checks the options), and numpy alone is a tenth of a second.

DAY = logstore.DAY_SECONDS
#: VMs read, checked and written per row group: bounds memory (a VM-day is at most a few
#: thousand rows) and lets a reader of a few VMs skip the other groups by their statistics.
#: As many as the report parses per task (load.TASK_UNITS), so a task reads one group.
CHUNK_VMS = 64
LOCK_NAME = "compaction.lock"
#: A wall clock this far past the end of the newest data's day is worth a warning: a silent
#: fleet leaves a gap of hours, a wrong clock one of days or months.
FAR_AHEAD = DAY
#: Days after the wall clock's day that day files may name: a record stamped up to --max-future
#: ahead of the clock names at most the next UTC day; a later day file is future-dated.
FUTURE_ALLOWANCE_DAYS = 1


class CompactionBusy(RuntimeError):
    """Another pass holds the data dir's compaction lock."""


class LockError(RuntimeError):
    """The compaction lock file cannot be opened (a folder in its place, no permission): no
    pass can run on the data dir until an operator clears it."""


class VerifyError(RuntimeError):
    """A written file does not read back as what was written: nothing is removed."""


@dataclass
class Policy:
    """When a closed day is compacted, and how long raw rows and rollups are kept (seconds
    after the day's end; a day exactly that old is past the limit)."""

    compact_after: float = 2 * DAY
    retain_raw: float = 90 * DAY
    retain_rollups: float = 730 * DAY

    def check(self) -> None:
        if self.compact_after < 0:
            raise ValueError("--compact-after must not be negative")
        if self.retain_raw < self.compact_after:
            raise ValueError("--retain-raw must be at least --compact-after: rows are kept until compacted")
        if self.retain_rollups < self.retain_raw:
            raise ValueError("--retain-rollups must be at least --retain-raw")


@dataclass
class Summary:
    days_compacted: int = 0
    rows_compacted: int = 0
    csv_removed: int = 0
    csv_kept: list[str] = field(default_factory=list)  # changed while compacted, or unreadable
    late_dropped: int = 0  # CSV files of VM-days whose raw rows were already retired
    columnar_removed: int = 0
    rollups_removed: int = 0
    partial_removed: int = 0
    #: Seconds the wall clock was past the end of the newest data's day, when FAR_AHEAD or more.
    clock_ahead: float = 0.0
    newest_day: int | None = None
    #: Day files dated after the clock's next day: not trusted as the newest data, left in place.
    future_files: list[str] = field(default_factory=list)
    #: VM folders and day files under vms/ that are symbolic links: never followed, left in place.
    links: list[str] = field(default_factory=list)

    def line(self) -> str:
        """What the pass did: one line for stdout (the notices go to stderr)."""
        return ("compacted %s (%s, %s removed, %d kept), removed %d columnar and "
                "%s past retention, %s past retention"
                % (counted(self.days_compacted, "day"), counted(self.rows_compacted, "row"),
                   counted(self.csv_removed, "CSV file"), len(self.csv_kept), self.columnar_removed,
                   counted(self.rollups_removed, "rollup file"), counted(self.late_dropped, "late CSV file"))
                + ("; removed %s of an interrupted pass" % counted(self.partial_removed, "partial file")
                   if self.partial_removed else ""))

    def notices(self) -> list[str]:
        """What an operator should look at: each a line starting with its constant (config.py),
        which the server's compaction service counts."""
        found = []
        if self.future_files:
            found.append("%s: %s dated after tomorrow by this clock, e.g. %s: not taken as "
                         "the newest data's day, left in place; remove them if they are stray copies"
                         % (FUTURE_DATED, counted(len(self.future_files), "day file"),
                            logstore.printable(self.future_files[0])))
        if self.clock_ahead and self.newest_day is not None:
            found.append("%s: the clock is %.1f days past the end of the newest data's day %s (a "
                         "clock set ahead, or no data since), so retention is measured from that "
                         "day's end; if the clock is right and no data will come, `vmstats compact "
                         "--trust-clock` measures it from the clock"
                         % (RETENTION_HELD_BACK, self.clock_ahead / DAY,
                            logstore.day_name(self.newest_day)))
        if self.links:
            first = self.links[0]
            try:
                target = os.readlink(first)
            except OSError as exc:  # removed since, or its folder made unreadable
                target = "(%s)" % (exc.strerror or exc)
            found.append("%s: %s under %s, e.g. %s -> %s: a pass follows no link out of the data "
                         "dir (it may lead into another data dir, whose files are not this one's "
                         "to remove), so their rows stay uncompacted; move the files into the data "
                         "dir, or put the whole data dir on the other disk"
                         % (LINKS_LEFT, counted(len(self.links), "VM folder or day file",
                                                "VM folders or day files"), logstore.VMS_DIR,
                            logstore.one_line(first), logstore.one_line(target)))
        return found


def elapsed_days(day: int, now: float) -> float:
    """Seconds since UTC day ``day`` ended."""
    return now - (day + 1) * DAY


def retention_clock(now: float, newest_day: int | None) -> float:
    """The moment retention is measured from: the wall clock, but never past the end of the
    newest day the data dir holds, so a clock far ahead retires nothing the data do not say
    is old.  (Records stamped up to --max-future ahead of the clock can name the next day;
    the earlier of the two is then the clock, as before.)"""
    if newest_day is None:
        return now
    return min(now, (newest_day + 1) * DAY)


def trusted_days(days: dict[int, list[str]], now: float) -> tuple[int | None, list[str]]:
    """The newest day of ``{day: [path]}`` that is not future-dated, and the future-dated paths.

    A day after the clock's next one cannot come from a record the server accepted under
    this clock: trusting it would put the cap on retention in the future."""
    last = int(now // DAY) + FUTURE_ALLOWANCE_DAYS
    newest = max((day for day in days if day <= last), default=None)
    return newest, sorted(path for day in days if day > last for path in days[day])


def compact(data_dir: str, policy: Policy, now: float | None = None,
            step: Callable[[str], None] | None = None, trust_clock: bool = False) -> Summary:
    """One pass over ``data_dir``; CompactionBusy if another pass is running.

    ``step`` is told of each committed change (for tests that stop a pass
    part-way); it never changes what is done.  ``trust_clock`` measures retention
    from ``now`` alone (an operator's choice for a data dir that no longer receives data).
    """
    policy.check()
    if not logstore.is_utf8(data_dir):  # Arrow opens files by UTF-8 paths only
        raise ValueError("data dir %s: its path is not UTF-8, so columnar files cannot be "
                         "written there; rename it" % logstore.printable(data_dir))
    now = time.time() if now is None else now
    summary = Summary()
    with _lock(data_dir):
        for tier in (logstore.COLUMNAR_DIR, logstore.ROLLUPS_DIR):
            summary.partial_removed += _remove_partials(os.path.join(data_dir, tier))
        csv_days = _csv_by_day(data_dir, summary.links)
        rollup_days = {logstore.day_number(name): path
                       for name, path in logstore.tier_days(data_dir, logstore.ROLLUPS_DIR)}
        dated: dict[int, list[str]] = {}
        for day, files in csv_days.items():
            dated.setdefault(day, []).extend(path for _vm, path in files)
        for tier in (logstore.COLUMNAR_DIR, logstore.ROLLUPS_DIR):
            for name, path in logstore.tier_days(data_dir, tier):
                dated.setdefault(logstore.day_number(name), []).append(path)
        newest, summary.future_files = trusted_days(dated, now)
        retain_now = now if trust_clock else retention_clock(now, newest)
        if now - retain_now >= FAR_AHEAD:
            summary.clock_ahead, summary.newest_day = now - retain_now, newest  # said in line()
        for day in sorted(csv_days):
            if elapsed_days(day, now) >= policy.compact_after:
                _compact_day(data_dir, day, csv_days[day], summary, step)
        for name, path in logstore.tier_days(data_dir, logstore.COLUMNAR_DIR):
            day = logstore.day_number(name)
            if elapsed_days(day, retain_now) < policy.retain_raw:
                continue
            try:
                if not _described(path)["vms"]:
                    pass  # no VM's rows (a pass never writes such a file): nothing to roll up first
                elif day not in rollup_days or not _rolled_up(path, rollup_days[day]):
                    _write_rollups(data_dir, day, path)
            except logstore.DamagedTier as exc:  # not ours to remove: its rows cannot be rolled up
                log.warning("compaction: %s left in place past retention: %s", path, exc)
                continue
            os.unlink(path)
            summary.columnar_removed += 1
            _tell(step, "retired " + path)
        for name, path in logstore.tier_days(data_dir, logstore.ROLLUPS_DIR):
            if elapsed_days(logstore.day_number(name), retain_now) >= policy.retain_rollups:
                try:
                    logstore.check_tier_file(path)
                except logstore.DamagedTier as exc:  # a folder, FIFO or link put there: not ours
                    log.warning("compaction: %s left in place past retention: %s", path, exc)
                    continue
                os.unlink(path)
                summary.rollups_removed += 1
                _tell(step, "retired " + path)
    return summary


def _tell(step, what: str) -> None:
    if step is not None:
        step(what)


class _lock:
    """An exclusive flock on DATA_DIR/compaction.lock: released by the kernel if killed."""

    def __init__(self, data_dir: str):
        self.path = os.path.join(data_dir, LOCK_NAME)

    def __enter__(self):
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise LockError("compaction lock %s cannot be opened: %s; no pass runs until it is "
                            "a file this user can write (or absent)"
                            % (logstore.printable(self.path), exc.strerror or exc)) from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise CompactionBusy("another compaction of %s is running" % os.path.dirname(self.path)) from None
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def _remove_partials(folder: str) -> int:
    """Files a killed pass left half-written (never read by anyone)."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    removed = 0
    for name in names:
        if name.endswith(logstore.PARTIAL_SUFFIX):
            logstore.remove_quietly(os.path.join(folder, name))
            removed += 1
    return removed


def _csv_by_day(data_dir: str, links: list[str]) -> dict[int, list[tuple[str, str]]]:
    """``{day: [(vm, path)]}`` of the data dir's CSV day files, VMs sorted.

    A VM folder or day file that is a symbolic link is added to ``links`` instead: a pass
    removes the files it compacts, and a link may lead anywhere, into another data dir (an
    operator's copy, a disk shared by two aggregators) whose files are not this pass's to
    remove, nor its rows this data dir's.  The report still reads them where they are."""
    days: dict[int, list[tuple[str, str]]] = {}
    for vm in logstore.iter_vms(data_dir):
        if not logstore.is_vm_id(vm):  # copied in by other means; the report names it
            why = "is not UTF-8, so" if not logstore.is_utf8(vm) else "is"
            log.warning("compaction: %s left alone: its name %s not a VM id",
                        logstore.one_line(vm), why)
            continue
        folder = logstore.vm_dir(data_dir, vm)
        if os.path.islink(folder):
            links.append(folder)
            continue
        try:
            files = logstore.day_files(data_dir, vm)
        except (OSError, ValueError) as exc:
            log.warning("compaction: VM folder %s not listed: %s", vm, exc)
            continue
        for name, path in files:
            if os.path.islink(path):
                links.append(path)
                continue
            try:
                days.setdefault(logstore.day_number(name), []).append((vm, path))
            except ValueError:
                continue  # not a day file: the report names it; compaction leaves it alone
    return days


def _compact_day(data_dir: str, day: int, files: list[tuple[str, str]], summary: Summary, step) -> None:
    """Rewrite one day's CSV files (merged with its columnar file) and remove them once safe."""
    name = logstore.day_name(day)
    target = logstore.tier_path(data_dir, logstore.COLUMNAR_DIR, name)
    rollup_target = logstore.tier_path(data_dir, logstore.ROLLUPS_DIR, name)
    try:
        old = _listed(target)
        kept = _held(rollup_target, old)
    except logstore.DamagedTier as exc:
        _leave_day(name, files, summary, exc)
        return
    if kept:
        # The day's rows were retired already: rows that came since cannot join its rollups
        # (its other rows are gone), so they go the way of the day's other raw rows.  A VM
        # the rollups do not hold (silent that day until now) is rolled up beside them
        # (_write_rollups), also by a pass after one killed between its two renames.
        late = [(vm, path) for vm, path in files if vm in kept]
        for _vm, path in late:
            logstore.remove_quietly(path)
            summary.late_dropped += 1
            log.warning("compaction: %s came after its day was retired; removed", path)
        files = [(vm, path) for vm, path in files if vm not in kept]
        if not files:
            return
    csv_of = dict(files)
    vms = sorted(set(csv_of) | set(old))
    seen: dict[str, os.stat_result] = {}
    writer = logstore.TierWriter(target, logstore.columnar_schema())
    info: dict = {"version": logstore.COLUMNAR_VERSION, "day": name, "vms": [], "rows": [], "bad": []}
    digests: list[bytes] = []
    unreadable: set[str] = set()
    try:
        for start in range(0, len(vms), CHUNK_VMS):
            chunk = vms[start:start + CHUNK_VMS]
            table, rows, bad, digest = _chunk(target, chunk, old, csv_of, seen, unreadable)
            if table.num_rows:
                writer.add(table)
                digests.append(digest)
            for vm in chunk:
                if rows.get(vm):
                    info["vms"].append(vm)
                    info["rows"].append(rows[vm])
                    info["bad"].append(bad.get(vm, 0))
                elif vm in csv_of and vm not in unreadable:
                    unreadable.add(vm)  # no readable row: the file stays for the report to name
                    log.warning("compaction: %s has no readable row; left in place", csv_of[vm])
        if not info["vms"]:
            writer.abort()
            summary.csv_kept.extend(path for _vm, path in files)
            return
        writer.close(info)
        _verify(writer.partial, info, digests)
        rollups = _write_rollups(data_dir, day, writer.partial, commit=False)
    except logstore.DamagedTier as exc:  # the day's columnar file: described well, rows unreadable
        writer.abort()
        _leave_day(name, files, summary, exc)
        return
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    _tell(step, "columnar " + target)
    rollups.commit()
    _tell(step, "rollups " + rollup_target)
    summary.days_compacted += 1
    summary.rows_compacted += sum(info["rows"])
    for vm, path in files:
        if vm in unreadable:
            summary.csv_kept.append(path)
            continue
        before = seen.get(path)
        try:
            now = os.stat(path)
        except FileNotFoundError:
            continue
        if before is None or (now.st_size, now.st_mtime_ns, now.st_ino) != (
                before.st_size, before.st_mtime_ns, before.st_ino):
            summary.csv_kept.append(path)  # written to since it was read: the next pass merges it
            continue
        os.unlink(path)
        summary.csv_removed += 1
        _tell(step, "removed " + path)


def _leave_day(name: str, files: list[tuple[str, str]], summary: Summary, exc: Exception) -> None:
    """A day whose compacted file is damaged: its rows cannot be merged into it, so the day's
    CSV files stay, read by the report beside it, and the pass goes on with the other days."""
    log.warning("compaction: day %s left alone: %s", name, exc)
    summary.csv_kept.extend(path for _vm, path in files)


def _chunk(target: str, chunk: list[str], old: list[str], csv_of: dict[str, str],
           seen: dict[str, os.stat_result], unreadable: set[str]):
    """The merged, sorted rows of a few VMs as a pyarrow table, with rows and malformed lines
    per VM and a digest of the values (checked against the file when it is read back)."""
    import numpy as np
    import pyarrow as pa

    old_set = set(old)
    sources: list = []
    owners: list[str] = []
    for vm in chunk:
        if vm in old_set:
            sources.append(logstore.Part(target, vm, logstore.COLUMNAR_DIR))
            owners.append(vm)
        path = csv_of.get(vm)
        if path is not None:
            try:
                seen[path] = os.stat(path)  # before the read: a later change keeps the file
            except OSError:
                unreadable.add(vm)
                continue
            sources.append(path)
            owners.append(vm)
    errors: dict[int, str] = {}
    frame, bad_lines = logstore.read_columns(sources, errors=errors)
    for index, why in errors.items():
        if not isinstance(sources[index], logstore.Part):
            unreadable.add(owners[index])
            log.warning("compaction: %s left in place: %s", sources[index], why)
        else:
            raise logstore.DamagedTier("%s: %s" % (target, why))
    vm_of = np.asarray(owners, dtype=object)[frame["file"].to_numpy()] if len(frame) else np.array([], object)
    frame = frame.drop(columns="file")
    frame.insert(0, "vm", vm_of)
    # Sorted by VM then time; the last copy of a timestamp (file order: columnar, then CSV) wins.
    frame["_pos"] = np.arange(len(frame))
    frame = frame.sort_values(["vm", "ts", "_pos"], kind="stable")
    frame = frame.drop_duplicates(["vm", "ts"], keep="last").drop(columns="_pos").reset_index(drop=True)
    bad: dict[str, int] = {}
    for index, count in enumerate(bad_lines):
        if count:
            bad[owners[index]] = bad.get(owners[index], 0) + count
    rows = frame["vm"].value_counts().to_dict() if len(frame) else {}
    table = pa.Table.from_pandas(frame, schema=logstore.columnar_schema(), preserve_index=False)
    return table, rows, bad, _digest(table)


def _digest(table) -> bytes:
    """A hash of every value of a table, column by column, unknown values included."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    h = hashlib.sha256()
    for name in table.column_names:
        column = table.column(name)
        h.update(name.encode() + b"\0")
        h.update(np.packbits(column.is_null().to_numpy(zero_copy_only=False)).tobytes())
        if pa.types.is_string(column.type):
            h.update("\n".join(pc.fill_null(column, "").to_pylist()).encode("utf-8"))
        else:
            h.update(np.ascontiguousarray(pc.fill_null(column, 0).to_numpy()).tobytes())
    return h.digest()


def _verify(path: str, info: dict, digests: list[bytes]) -> None:
    """Read the written file back: its description, rows per VM and every value as written."""
    import numpy as np
    import pyarrow.parquet as pq

    if logstore.tier_info(path)["vms"] != info["vms"]:
        raise VerifyError("%s: its VMs do not read back" % path)
    handle = pq.ParquetFile(path)
    if [_digest(handle.read_row_group(i)) for i in range(handle.num_row_groups)] != digests:
        raise VerifyError("%s: its values do not read back as written" % path)
    vm, counts = np.unique(np.asarray(handle.read(columns=["vm"]).column("vm").to_pylist(), dtype=object),
                           return_counts=True)
    expected = dict(zip(info["vms"], info["rows"], strict=True))
    if dict(zip(vm.tolist(), counts.tolist(), strict=True)) != expected:
        raise VerifyError("%s: its rows per VM do not read back" % path)


def _described(path: str) -> dict:
    """A tier file's description (logstore.tier_info); one whose footer disagrees with its
    table is named in a warning: it is read, merged and rolled up as its table holds it."""
    info = logstore.tier_info(path)
    if "disagrees" in info:
        log.warning("compaction: %s: %s", path, info["disagrees"])
    return info


def _listed(path: str) -> list[str]:
    """The VMs of a tier file, none when there is no file; DamagedTier names the file."""
    if not os.path.lexists(path):
        return []
    try:
        return _described(path)["vms"]
    except logstore.DamagedTier as exc:
        raise logstore.DamagedTier("%s: %s" % (path, exc)) from None


def _held(path: str, rows: list[str]) -> set[str]:
    """The VMs whose rows of the day were retired: a rollup file lists and holds their rollups,
    and the day's columnar file (``rows``: its VMs) holds none of their rows.

    A columnar file beside the rollups of a retired day holds only late VMs' rows (a pass
    killed before its retention step leaves it): a late file of a VM the rollups hold was
    merged with none of its rows, and its rollup rewritten from the late records alone.  And
    the table is read, not the footer alone: a footer may list a VM whose rollup the table
    lacks (as many VMs as the table has rows, one of them held twice), and a late file of that
    VM, removed on the footer's word, was lost with its day.  Read only when the rollup file
    lists a VM the columnar file lacks (a retired day with CSV files: a late record's, rare)."""
    listed = set(_listed(path)).difference(rows)
    return listed.intersection(logstore.table_vms(path)) if listed else set()


def _rolled_up(columnar: str, rollups: str) -> bool:
    """Whether a rollup file holds every VM of a columnar file, once each, in an aggregate
    version the report reads (rollups of another version, from a newer vmstats run before a
    downgrade, are left out of reports: the rows must not be retired on their word).  The
    rollup file's table is read, not its footer, which may list a VM whose rollup is not there."""
    from vmstats.report import aggregate

    try:
        if not aggregate.readable_rollups(_described(rollups).get("version")):
            return False
        held = logstore.table_vms(rollups)
        return len(set(held)) == len(held) and set(logstore.tier_info(columnar)["vms"]) <= set(held)
    except (OSError, ValueError):
        return False


def _write_rollups(data_dir: str, day: int, columnar: str, commit: bool = True):
    """The VM-day rollups of a columnar file, computed by the report's own aggregation.

    The day's rollup file, if there is one, may hold VMs the columnar file does not: its rows
    were retired, and the columnar file holds only records that came since, of VMs silent that
    day until then (an agent's spool after a long partition).  Their rollups are kept beside the
    new ones: written alone, the new file would replace every other VM's rollups of the day.
    """
    import pyarrow as pa

    from vmstats.report import aggregate

    name = logstore.day_name(day)
    vms = logstore.tier_info(columnar)["vms"]
    target = logstore.tier_path(data_dir, logstore.ROLLUPS_DIR, name)
    beside = target if _others(target, vms) else None
    writer = logstore.rollup_writer(target)
    # Rollup tables of chunks not yet written: one row group of many VMs.  With ``beside``, all
    # of them, to be put in VM order with the kept ones (a day's late VMs are few).
    pending: list = [] if beside is None else [_kept_rollups(beside, vms)]
    try:
        for start in range(0, len(vms), CHUNK_VMS):
            chunk = vms[start:start + CHUNK_VMS]
            parts = [logstore.Part(columnar, vm, logstore.COLUMNAR_DIR) for vm in chunk]
            table, issues = aggregate.aggregate_units([[part] for part in parts])
            # Malformed lines the CSV had are carried over and counted, not a failure to read.
            unread = [entry for entries in issues.values() for entry in entries if not entry["bad_lines"]]
            if unread:  # a columnar file (past retention) whose rows cannot be read
                raise logstore.DamagedTier(unread[0]["problem"])
            labels = logstore.last_labels_many(parts)
            pending.append(logstore.rollup_table(
                chunk, [(None, None, None) if label is None else (label[0], label[1], _tags_text(label[2]))
                        for label in labels], table, sparse=aggregate.HISTOGRAMS))
            if beside is None and (len(pending) * CHUNK_VMS >= logstore.ROLLUP_GROUP_VMS
                                   or start + CHUNK_VMS >= len(vms)):
                writer.add(pa.concat_tables(pending))
                pending = []
        if beside is not None:
            vms = _add_in_order(writer, pending, beside)
        writer.close({"version": aggregate.ROLLUP_VERSION, "day": name, "vms": vms})
    except BaseException:
        writer.abort()
        raise
    if commit:
        writer.commit()
    return writer


def _others(path: str, vms: list[str]) -> bool:
    """Whether a rollup file holds VMs besides ``vms`` (one that cannot be read holds none
    worth keeping: the new file replaces it, as it always did)."""
    try:
        return bool(set(logstore.tier_info(path)["vms"]) - set(vms))
    except (OSError, ValueError):
        return False


def _kept_rollups(path: str, replaced: list[str]):
    """The rollups of a day file whose rows were retired, but those of ``replaced``, in the
    aggregate version written now; DamagedTier when they cannot share a file with rollups
    written now (a version this vmstats does not read).

    Rollups of an older version the report still reads (aggregate.OLDER_ROLLUPS) are brought
    to this version by the report's own filling of what they lack: left as they were, a late
    VM's records on a day retired before an upgrade could never be rolled up, and its CSV file
    was left in place with a warning on every pass.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vmstats.report import aggregate

    version = logstore.tier_info(path).get("version")
    if not aggregate.readable_rollups(version):
        raise logstore.DamagedTier("%s: its rollups are of aggregate version %s, not %d: the late VMs' "
                                   "rollups cannot join them" % (path, version, aggregate.ROLLUP_VERSION))
    try:
        table = pq.read_table(path)
        if version != aggregate.ROLLUP_VERSION:
            table = _upgraded(table, aggregate.OLDER_ROLLUPS[version])
    except (OSError, ValueError) as exc:
        raise logstore.DamagedTier("%s: %s" % (path, exc)) from None
    table = table.replace_schema_metadata(None)  # the file's description: the new file has its own
    # Each kept VM once, its last rollup (as the report reads a table holding one twice): a
    # file that held it twice would otherwise pass the damage on to the one written now.
    vms = table.column("vm").to_pylist()
    last = {vm: row for row, vm in enumerate(vms)}
    replaced_set = set(replaced)
    return table.take(pa.array(sorted(row for vm, row in last.items() if vm not in replaced_set), pa.int64()))


def _upgraded(table, upgrade):
    """``table`` (rollups of an older aggregate version) with the columns ``upgrade`` fills
    from what it holds, as the report fills them when it reads such a file."""
    from vmstats.report import aggregate

    vms, data = logstore.rollup_arrays(table)
    added = {name: values for name, values in upgrade(data).items() if name not in data}
    columns = logstore.rollup_table(vms, [(None, None, None)] * len(vms), added,
                                    sparse=set(aggregate.HISTOGRAMS) & set(added))
    for k, name in enumerate(columns.column_names):
        if name not in ("vm", "label_ts", "host", "tags"):
            table = table.append_column(columns.schema.field(k), columns.column(k))
    return table


def _add_in_order(writer, tables: list, path: str) -> list[str]:
    """Write the kept and the new rollups as one file's row groups, in VM order; its VMs."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        # In the new rollups' column order: a kept table brought from an older version has the
        # columns it gained at its end.
        order = tables[-1].column_names
        tables = [t.select(order) if sorted(t.column_names) == sorted(order) else t for t in tables]
        table = pa.concat_tables(tables)
    except pa.ArrowInvalid as exc:
        raise logstore.DamagedTier("%s: its columns are not those of the rollups written now: %s"
                                   % (path, exc)) from None
    table = table.take(pc.sort_indices(table, [("vm", "ascending")]))
    for start in range(0, table.num_rows, logstore.ROLLUP_GROUP_VMS):
        writer.add(table.slice(start, logstore.ROLLUP_GROUP_VMS))
    return table.column("vm").to_pylist()


def _tags_text(tags) -> str | None:
    if not tags:
        return None
    from vmstats.protocol import format_tags

    return format_tags(tags, logstore.TAGS_SEPARATOR)
