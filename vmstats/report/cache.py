"""The report's statistics cache: one file of VM-day aggregates, kept per unit while its files
do not change.

The file holds plain arrays behind a JSON header (no pickle, so a planted
cache file cannot run code), keyed per unit by the (path, size, mtime) of its
files (``signature``): a unit whose files did not change is never parsed
again; a unit whose file grew (today's, while the aggregator runs) is.
Re-running over unchanged data therefore reads one file and stats the logs.
"""

import json
import mmap
import os
import stat
import sys

import numpy as np

from vmstats import inputfile, logstore
from vmstats.report.aggregate import AGGREGATES, ROLLUP_VERSION, Source, empty_table
from vmstats.report.issues import issue

#: The cache holds aggregates: its version is theirs.
CACHE_VERSION = ROLLUP_VERSION
CACHE_NAME = "report-cache-v%d.bin" % CACHE_VERSION


def signature(sources: list[Source], issues: list[dict],
              stats: dict[str, os.stat_result] | None = None) -> tuple[str, list[Source]]:
    """What identifies a unit's files (path, size and mtime of each, as one string), and
    which of them are regular files to read.  The others are named in ``issues``."""
    if len(sources) == 1 and type(sources[0]) is str:  # most units: one CSV file
        path = sources[0]
        try:
            info = os.stat(path)
        except OSError:
            return _signature_of_files(sources, issues, stats)
        if stat.S_ISREG(info.st_mode):
            return _file_signature(path, "", info), sources
    return _signature_of_files(sources, issues, stats)


def _file_signature(path: str, vm: str, info: os.stat_result) -> str:
    """One file of a unit in its signature (``vm``: "\\0" + the VM of a shared tier file)."""
    return "%s%s\0%d\0%d" % (path, vm, info.st_size, info.st_mtime_ns)


def signature_files(sig: str) -> dict[str, tuple[int, int]]:
    """A signature's files, ``{path (NUL and the VM, for a shared file): (size, mtime_ns)}``."""
    files = {}
    for line in sig.split("\n"):
        if line:
            name, size, mtime_ns = line.rsplit("\0", 2)
            files[name] = (int(size), int(mtime_ns))
    return files


def _signature_of_files(sources: list[Source], issues: list[dict],
                        stats: dict[str, os.stat_result] | None) -> tuple[str, list[Source]]:
    out = []
    readable = []
    for source in sorted(sources, key=logstore.source_path):
        path = logstore.source_path(source)
        try:
            info = stats[path] if stats is not None and path in stats else os.stat(path)
            if stats is not None and isinstance(source, logstore.Part):
                stats[path] = info  # a fleet-day file serves many units: one stat
        except OSError as exc:
            # A file gone since it was listed was removed by retention: not a problem.
            if not isinstance(exc, FileNotFoundError) or os.path.islink(path):
                issues.append(issue(path, logstore.describe_error(path, exc)))
            continue
        if not stat.S_ISREG(info.st_mode):  # a folder or FIFO named like a log is not one
            issues.append(issue(path, logstore.not_regular(info.st_mode)))
            continue
        vm = "\0" + source.vm if isinstance(source, logstore.Part) else ""
        out.append(_file_signature(path, vm, info))
        readable.append(source)
    return "\n".join(out), readable


_MAGIC = b"vmstats report cache\n"


def read_cache(cache_dir: str | None) -> dict | None:
    """The cache file: a magic line, a JSON header (keys, signatures, array layout), raw arrays.

    Plain bytes seen through numpy views: no pickle (a planted file cannot run
    code) and no zip checksums to compute on every run.  The file is mapped,
    not read: a re-run reads only what it uses and copies nothing (~0.06 s of a
    1,000-VM re-run's ~0.8 s).  It is safe to map because a cache is only ever
    replaced whole (``write_cache``), never changed in place.
    """
    if not cache_dir:
        return None
    try:
        # Opened as a day file is: a FIFO put in its place would block an open() for ever.
        with logstore.open_day_file(os.path.join(cache_dir, CACHE_NAME)) as handle:
            blob = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        if blob[: len(_MAGIC)] != _MAGIC:
            return None
        start = len(_MAGIC) + 8
        size = int.from_bytes(blob[len(_MAGIC) : start], "little")
        header = inputfile.json_loads(blob[start : start + size])
        if not isinstance(header, dict) or header.get("version") != CACHE_VERSION:
            return None
        base = start + size + (-(start + size) % 64)
        keys = list(zip(header["vm"], header["day"], strict=True))
        data = {}
        for name, dtype, shape, offset in header["arrays"]:
            count = int(np.prod(shape))
            data[name] = np.frombuffer(blob, np.dtype(dtype), count, base + offset).reshape(shape)
        issues = {int(i): entries for i, entries in header.get("issues", {}).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not _of_our_shape(data, len(keys), issues) or not isinstance(header.get("sig"), list):
        return None
    return {"keys": keys, "sigs": header["sig"], "data": data, "issues": issues}


#: What the report takes from each cached issue (issues.issue's fields), by type.
_ISSUE_FIELDS = {"path": str, "vm": str, "day": str, "problem": str, "rows": int, "bad_lines": int}
#: An aggregate table of no rows: the dtype kind and row shape each cached array must have.
_EMPTY = empty_table(0)


def _of_our_shape(data: dict, rows: int, issues: dict) -> bool:
    """Whether a cache's arrays and issues are what the report's aggregation makes.

    A cache file of another build with the same version (an array of another dtype or width)
    or a damaged header that still parses would otherwise stop the report with a traceback,
    where it should only cost the time of parsing the logs again.
    """
    if set(data) != AGGREGATES:
        return False
    for name, values in data.items():
        expected = _EMPTY[name]
        if (len(values) != rows or values.dtype.kind != expected.dtype.kind
                or values.shape[1:] != expected.shape[1:]):
            return False
    for position, entries in issues.items():
        if not 0 <= position < rows or not isinstance(entries, list):
            return False
        for entry in entries:
            if not isinstance(entry, dict) or any(type(entry.get(key)) is not kind
                                                  for key, kind in _ISSUE_FIELDS.items()):
                return False
    return True


def write_cache(cache_dir: str, cache: dict) -> None:
    """Write atomically; a cache that cannot be written only costs time next run."""
    path = os.path.join(cache_dir, CACHE_NAME)
    temporary = "%s.%d.tmp" % (path, os.getpid())
    keys = cache["keys"]
    arrays = [(name, np.ascontiguousarray(values)) for name, values in cache["data"].items()]
    layout, offset = [], 0
    for name, values in arrays:
        layout.append([name, values.dtype.str, list(values.shape), offset])  # from the data start
        offset += values.nbytes
    header = {
        "version": CACHE_VERSION,
        "vm": [k[0] for k in keys],
        "day": [int(k[1]) for k in keys],
        "sig": list(cache["sigs"]),
        # The damaged files of each unit, by its position: only units that have any.
        "issues": {str(i): entries for i, entries in cache["issues"].items()},
        "arrays": layout,
    }
    encoded = json.dumps(header).encode("utf-8")
    head = _MAGIC + len(encoded).to_bytes(8, "little") + encoded
    try:
        os.makedirs(cache_dir, exist_ok=True)
        with open(temporary, "wb") as handle:
            handle.write(head + b"\0" * (-len(head) % 64))  # arrays start 64-byte aligned
            for _name, values in arrays:
                handle.write(values.data)
        os.replace(temporary, path)
    except OSError as exc:
        # headroom, admit and backtest read through here too: no command's name in the line.
        print("warning: statistics cache not written to %s: %s" % (cache_dir, exc.strerror or exc),
              file=sys.stderr)
        try:
            os.unlink(temporary)
        except OSError:
            pass
        return
    _remove_older(cache_dir)


def _remove_older(cache_dir: str) -> None:
    """Remove the caches of older versions (dead weight) beside a cache just written.  What
    cannot be removed (a folder of that name, a folder that cannot be listed) stays, unsaid:
    the cache itself was written, and a warning that it was not misled."""
    try:
        names = os.listdir(cache_dir)
    except OSError:
        return
    for name in names:
        if name.startswith("report-cache-v") and name != CACHE_NAME and not name.endswith(".tmp"):
            try:
                os.unlink(os.path.join(cache_dir, name))
            except OSError:
                pass
