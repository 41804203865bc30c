"""The log files a command could not read whole, named the same way by every command.

An issue is one file: unreadable, not a regular file, or read with malformed
lines skipped.  The report, the backtest and admission name them alike
(``skipped_files``, ``damaged_files``).
"""

import collections
import os
from collections.abc import Iterable

import numpy as np

from vmstats import logstore
from vmstats.words import counted


def issue(path: str, problem: str, rows: int = 0, bad_lines: int = 0, vm: str | None = None,
          day: str | None = None) -> dict:
    """One log file the report could not read whole, as the report names it.

    ``rows`` is what it still read (0: the file was skipped); the VM and day
    come from the layout (``<vm>/<day>.csv``) so each place can group by them.
    """
    folder, name = os.path.split(path)
    if day is None:
        day = name[: -len(logstore.SUFFIX)] if name.endswith(logstore.SUFFIX) else ""
    return {
        "path": logstore.printable(path),
        "vm": logstore.printable(os.path.basename(folder) if vm is None else vm),
        "day": logstore.printable(day),
        "problem": problem,
        "rows": rows,
        "bad_lines": bad_lines,
    }


def named_files(issues: Iterable[dict]) -> dict[str, list[dict]]:
    """The damaged files as every command names them: ``skipped_files`` (no row read) and
    ``damaged_files`` (read in part), each file once (several reads may meet it), by path.

    A rollup file whose table lacks several VMs is met by several reads (the listing answers
    a VM from its late CSV file, the aggregation another from its kept rows or not at all):
    its one entry names every VM it failed, not only the last read's."""
    by_path: dict[str, dict] = {}
    for entry in issues:
        earlier = by_path.get(entry["path"])
        by_path[entry["path"]] = entry if earlier is None else _joined(earlier, entry)
    ordered = [_shown(by_path[path]) for path in sorted(by_path)]
    return {
        "skipped_files": [entry for entry in ordered if not entry["rows"]],
        "damaged_files": [entry for entry in ordered if entry["rows"]],
    }


def _joined(earlier: dict, later: dict) -> dict:
    """One entry for two of the same file: the later, or (both of a rollup file whose table
    lacks VMs, rollup_lacks) one that names the VMs and answers of both."""
    if _LACKS not in earlier or _LACKS not in later:
        return later
    held, lacking, answered = earlier[_LACKS]
    _held, more, answers = later[_LACKS]
    lacking = sorted(set(lacking) | set(more))
    answered = {**answered, **answers}
    vm = later["vm"] if earlier["vm"] == later["vm"] else ""
    day = later["day"] if earlier["day"] == later["day"] else ""
    return rollup_lacks(later["path"], held, lacking, answered, max(earlier["rows"], later["rows"]), vm, day)


def _shown(entry: dict) -> dict:
    """``entry`` as the commands name it: without what only named_files reads."""
    return {key: value for key, value in entry.items() if key != _LACKS}


#: The key of an issue of a rollup file whose table lacks VMs that holds ``(its table's VMs, the
#: VMs it lacks, {VM: where it was read from instead})``, for named_files to join two reads'.
_LACKS = "lacks"


def rollup_lacks(path: str, held: list[str], lacking: list[str], answered: dict[str, str], rows: int,
                 vm: str, day: str) -> dict:
    """The issue of a rollup file whose table (``held``: its ``vm`` column) lacks the rollups
    of ``lacking``, ``answered`` of them read from elsewhere (``{vm: where}``, e.g. "the day's
    kept rows instead"): made in one place for the read that finds the gap (read_rollups) and
    the listing (discover.py), which may each meet the same file."""
    said = ["its table lacks the rollup of %s" % _some(sorted(set(lacking)))]
    doubled = sorted(name for name, n in collections.Counter(held).items() if n > 1)
    if doubled:
        said.append("its table holds more than one rollup of %s (the last is read)" % _some(doubled))
    for source in sorted(set(answered.values())):
        read = sorted(name for name, where in answered.items() if where == source)
        said.append("%s read from %s" % (_some(read), source))
    entry = issue(path, "damaged rollups file: %s" % "; ".join(said), rows=rows, vm=vm, day=day)
    entry[_LACKS] = (held, sorted(set(lacking)), dict(answered))
    return entry


def _some(vms: list[str]) -> str:
    """A few of ``vms`` for a line that names them: the first two and how many more."""
    shown = ", ".join(vms[:2])
    return shown if len(vms) <= 2 else "%s and %d more" % (shown, len(vms) - 2)


def file_day(path: str) -> str:
    """The day (``YYYY-MM-DD``) of a compacted tier's fleet-day file, from its name."""
    return os.path.basename(path)[: -len(logstore.TIER_SUFFIX)]


def rows_per_file(frame, files: int) -> np.ndarray:
    """Rows read from each of ``files`` files (``frame["file"]`` is each row's file)."""
    if not len(frame):
        return np.zeros(files, dtype=np.int64)
    return np.bincount(frame["file"].to_numpy(), minlength=files)


def damage_words(kept: int, bad: int) -> str:
    """What a file read in part lost, worded once for the report, the backtest and admission.

    A file with no readable row says so: "N malformed lines skipped" alone reads as
    if the rest of the file had been used.
    """
    if kept:
        return "%s skipped" % counted(bad, "malformed line")
    return "no readable row (%s)" % counted(bad, "malformed line")


def file_issues(paths, owner, frame, bad: list[int], errors: dict[int, str]) -> dict[int, list[dict]]:
    """``{unit: [issue]}`` for the files that were unreadable or had malformed lines."""
    damaged = sorted(set(errors) | {i for i, count in enumerate(bad) if count})
    if not damaged:
        return {}
    rows = rows_per_file(frame, len(paths))
    found: dict[int, list[dict]] = {}
    for index in damaged:
        kept = int(rows[index])
        problem = errors[index] if index in errors else damage_words(kept, bad[index])
        source = paths[index]
        if isinstance(source, logstore.Part):
            entry = issue(source.path, problem, kept, bad[index], vm=source.vm, day=file_day(source.path))
        else:
            entry = issue(source, problem, kept, bad[index])
        found.setdefault(int(owner[index]), []).append(entry)
    return found
