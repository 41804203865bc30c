"""The log files a command could not read whole, named the same way by every command.

An issue is one file: unreadable, not a regular file, or read with malformed
lines skipped.  The report, the backtest and admission name them alike
(``skipped_files``, ``damaged_files``).
"""

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
    ``damaged_files`` (read in part), each file once (several reads may meet it), by path."""
    by_path = {entry["path"]: entry for entry in issues}
    ordered = [by_path[path] for path in sorted(by_path)]
    return {
        "skipped_files": [entry for entry in ordered if not entry["rows"]],
        "damaged_files": [entry for entry in ordered if entry["rows"]],
    }


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
