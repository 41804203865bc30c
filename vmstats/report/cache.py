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
from vmstats.report.aggregate import AGGREGATES, ROLLUP_VERSION, Source
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
        with open(os.path.join(cache_dir, CACHE_NAME), "rb") as handle:
            blob = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        if blob[: len(_MAGIC)] != _MAGIC:
            return None
        start = len(_MAGIC) + 8
        size = int.from_bytes(blob[len(_MAGIC) : start], "little")
        header = inputfile.json_loads(blob[start : start + size])
        if header.get("version") != CACHE_VERSION:
            return None
        base = start + size + (-(start + size) % 64)
        keys = list(zip(header["vm"], header["day"], strict=True))
        data = {}
        for name, dtype, shape, offset in header["arrays"]:
            count = int(np.prod(shape))
            data[name] = np.frombuffer(blob, np.dtype(dtype), count, base + offset).reshape(shape)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if set(data) != AGGREGATES or any(len(v) != len(keys) for v in data.values()):
        return None
    issues = {int(i): entries for i, entries in header.get("issues", {}).items()}
    return {"keys": keys, "sigs": header["sig"], "data": data, "issues": issues}


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
        for name in os.listdir(cache_dir):  # caches of older versions are dead weight
            if name.startswith("report-cache-v") and name != CACHE_NAME and not name.endswith(".tmp"):
                os.unlink(os.path.join(cache_dir, name))
    except OSError as exc:
        # headroom, admit and backtest read through here too: no command's name in the line.
        print("warning: statistics cache not written to %s: %s" % (cache_dir, exc.strerror or exc),
              file=sys.stderr)
        try:
            os.unlink(temporary)
        except OSError:
            pass
