"""The compacted tiers: their fleet-day files, how they are written, checked and read.

Past ``--compact-after`` a closed day's CSV files are rewritten as one columnar file for the
whole fleet, and next to it the report's aggregate of each VM-day (its rollup) is kept::

    DATA_DIR/columnar/<YYYY-MM-DD>.parquet    every VM's rows of the day, sorted by VM then time
    DATA_DIR/rollups/<YYYY-MM-DD>.parquet     one row per VM: the report's VM-day aggregate

Both are Parquet (columnar files zstd, rollups LZ4_RAW: see rollups.py) written under a
temporary name and renamed into place, so a reader sees the old file or the new one, never
half of one.  A file's key-value metadata names the VMs it holds (and, for the columnar tier,
each VM's rows and the malformed lines its CSV had), so finding what a file holds reads its
footer, not its data; tier_info checks it against the table's row count, also in the footer,
and reads the table's VMs only for a file whose footer disagrees.  How a rollup's aggregates
are laid out in columns is rollups.py's.
"""

import contextlib
import json
import os
import re
import stat
from typing import Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Tuple

from vmstats import inputfile
from vmstats.logstore.files import not_regular, os_problem, remove_quietly, sync_dir
from vmstats.logstore.layout import day_path, followed
from vmstats.logstore.rows import COLUMNS, DTYPES
from vmstats.words import counted

COLUMNAR_DIR = "columnar"
ROLLUPS_DIR = "rollups"
TIER_SUFFIX = ".parquet"
#: Temporary files of a write in progress end so; a crash leaves them, the next compaction
#: removes them, and no reader lists them.
PARTIAL_SUFFIX = ".partial"
COLUMNAR_VERSION = 1
#: zstd level of the columnar tier: level 9 took the real trace from 4.7 to 4.2 bytes a record
#: (bench/storage.py) for about 10% more compaction time.
ZSTD_LEVEL = 9
#: How a tier file is compressed unless its writer says otherwise (the columnar tier's codec).
#: The codec is recorded per column chunk, so readers take files of either codec alike.
_ZSTD = {"compression": "zstd", "compression_level": ZSTD_LEVEL}
#: The metadata key holding a tier file's description (JSON).
_META_KEY = b"vmstats"


class Part(NamedTuple):
    """One VM's share of a fleet-day file of a compacted tier (``tier``: COLUMNAR_DIR or
    ROLLUPS_DIR).  The report's units and read_columns take it wherever they take a CSV path."""

    path: str
    vm: str
    tier: str


def source_path(source) -> str:
    """The file a source (a CSV path or a Part) lives in."""
    return source.path if isinstance(source, Part) else source


def tier_path(data_dir: str, tier: str, day: str) -> str:
    """The fleet-day file of ``tier`` for UTC ``day``."""
    return os.path.join(data_dir, tier, day + TIER_SUFFIX)


def tier_days(data_dir: str, tier: str) -> List[Tuple[str, str]]:
    """``(day, path)`` of a tier's fleet-day files, oldest first (none if the tier is empty)."""
    folder = os.path.join(data_dir, tier)
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return []
    return [(name[: -len(TIER_SUFFIX)], os.path.join(folder, name))
            for name in names if name.endswith(TIER_SUFFIX)]


class DamagedTier(ValueError):
    """A file in a tier's folder that cannot be read as vmstats writes them: not a regular
    file, not Parquet, or a description of the wrong shape.  Readers name it and go on."""


def tier_info(path: str) -> dict:
    """A tier file's description: ``{"vms": [...], ...}`` (its footer only is read, unless it
    disagrees with the table).

    Columnar files also hold ``rows`` and ``bad`` (per VM, in ``vms`` order);
    rollup files ``version``, the aggregate's version they were written with.  A footer that
    disagrees with its table (_agrees) is read as the table bears it out, and ``disagrees``
    says how (_as_held): its readers name the file.
    Raises OSError (or DamagedTier for a file that is not one of ours).
    """
    import pyarrow
    import pyarrow.parquet as pq

    check_tier_file(path)
    try:
        footer = pq.read_metadata(path)
        info = _description(footer.metadata or {})
    except pyarrow.ArrowInvalid as exc:
        raise DamagedTier("not a Parquet file: %s" % exc) from None
    except OSError as exc:
        raise _unreadable(path, exc) from None
    if _agrees(path, info, footer.num_rows):
        return info
    return _as_held(path, info, table_vms(path))


def table_vms(path: str) -> List[str]:
    """The ``vm`` column of a tier file's table, row by row: what it holds, whatever its footer
    says (a rollup file's is a few KB; compaction reads it before it retires rows on its word).
    DamagedTier when the table has no such column of names."""
    import pyarrow
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as handle:
            held = handle.read(columns=["vm"]).column("vm").to_pylist()
    except pyarrow.ArrowInvalid as exc:
        raise DamagedTier("its table cannot be read: %s" % exc) from None
    except OSError as exc:
        raise _unreadable(path, exc) from None
    except KeyError:
        raise DamagedTier("its table has no vm column") from None
    if any(type(vm) is not str for vm in held):
        raise DamagedTier("its table's vm column is not of VM names")
    return held


def _unreadable(path: str, exc: OSError) -> Exception:
    """What to raise for a tier file that cannot be opened or read (no permission, EIO):
    DamagedTier, named and gone around like any file not of ours, so one such file never
    stops a pass over the other days; FileNotFoundError as it is (retention removed it since
    it was listed)."""
    if type(exc) is FileNotFoundError:
        return exc
    why = os.strerror(exc.errno) if exc.errno else os_problem(path, exc)  # Arrow's text names the file again
    return DamagedTier("cannot be read: %s" % why)


def check_tier_file(path: str) -> None:
    """DamagedTier unless ``path`` is a regular file: Arrow would wait on a FIFO for ever, and
    a folder, a device or a link to nothing is no file of ours either.  FileNotFoundError
    only when the file itself is gone (retention, since it was listed)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if type(exc) is FileNotFoundError and not os.path.islink(path):
            raise
        raise DamagedTier(os_problem(path, exc)) from None
    if not stat.S_ISREG(mode):
        raise DamagedTier(not_regular(mode))


def _description(meta: Mapping[bytes, bytes]) -> dict:
    """The footer's description, checked for the shape every reader relies on (a file from
    elsewhere, or damaged, must be named as such, not break a reader with a TypeError)."""
    if _META_KEY not in meta:
        raise DamagedTier("a Parquet file without vmstats' description")
    try:
        info = inputfile.json_loads(meta[_META_KEY])
    except ValueError:
        raise DamagedTier("its vmstats description is not JSON") from None
    vms = info.get("vms") if isinstance(info, dict) else None
    if not isinstance(vms, list) or not all(type(vm) is str for vm in vms):
        raise DamagedTier("its vmstats description does not list VM names")
    for key in ("rows", "bad"):  # columnar files': counts per VM
        counts = info.get(key, [])
        if key in info and (not isinstance(counts, list) or len(counts) != len(vms)
                            or not all(type(n) is int and n >= 0 for n in counts)):
            raise DamagedTier("its vmstats description's %s do not match its VMs" % key)
    if type(info.get("version", 0)) is not int:
        raise DamagedTier("its vmstats description's version is not a number")
    return info


def _rollups(path: str, info: dict) -> bool:
    """Whether ``path`` is a rollup file (one row per VM), not a columnar one (rows per VM)."""
    return "rows" not in info and os.path.basename(os.path.dirname(path)) == ROLLUPS_DIR


def _agrees(path: str, info: dict, rows: int) -> bool:
    """Whether a tier file's description can be the whole truth of its table, as far as its
    footer tells (``rows``: the table's rows, which Parquet keeps there): each VM listed once,
    and as many rows as the description gives (a rollup file: one a VM; a columnar file: the
    rows it lists per VM, or fewer, which the reader counts per VM: read._columnar_frame).
    A file vmstats writes always agrees, so only one that does not costs a read of its table."""
    vms = info["vms"]
    if len(set(vms)) != len(vms):
        return False
    if _rollups(path, info):
        return rows == len(vms)
    return "rows" not in info or sum(info["rows"]) >= rows


def _as_held(path: str, info: dict, held: List[str]) -> dict:
    """The description of a file whose footer disagrees with its table (``held``: the table's
    ``vm`` column), as the table bears it out, with ``disagrees`` saying how, for its readers
    to name the file: a VM listed twice once, a VM the table holds and the footer does not list
    added (its rows or rollup are there to read: trusting the footer lost them unsaid).  A
    rollup file lists only the VMs the table holds, so the rows of those it lacks answer where
    they are still kept (a rollup's word would retire them); a columnar file keeps listing them,
    its reader counting their rows as malformed lines (read._columnar_frame)."""
    from collections import Counter

    vms, counts = info["vms"], Counter(held)
    said = []
    twice = sorted(vm for vm, n in Counter(vms).items() if n > 1)
    if twice:
        said.append("its description lists %s more than once" % _some(twice))
    unlisted = sorted(set(counts).difference(vms))
    if unlisted:
        said.append("its table holds %s, which its description does not list" % _some(unlisted))
    lacking = sorted(set(vms).difference(counts))
    rollups = _rollups(path, info)
    if rollups:
        if lacking:
            said.append("its description lists %s, whose rollup its table lacks" % _some(lacking))
        doubled = sorted(vm for vm, n in counts.items() if n > 1)
        if doubled:
            said.append("its table holds more than one rollup of %s (the last is read)" % _some(doubled))
        out = dict(info, vms=sorted(counts))
    else:
        listed = sorted(set(vms) | set(counts))
        rows = dict(zip(vms, info.get("rows", [0] * len(vms)), strict=True))
        bad = dict(zip(vms, info.get("bad", [0] * len(vms)), strict=True))
        out = dict(info, vms=listed, rows=[rows.get(vm, counts[vm]) for vm in listed],
                   bad=[bad.get(vm, 0) for vm in listed])
        if not said:
            said.append("its table holds %s, its description %d"
                        % (counted(len(held), "row"), sum(info.get("rows", []))))
    out["disagrees"] = "%s; each VM read as its table holds it" % "; ".join(said)
    return out


def _some(vms: List[str]) -> str:
    """A few of ``vms`` for a line that names them: the first two and how many more."""
    shown = ", ".join(vms[:2])
    return shown if len(vms) <= 2 else "%s and %d more" % (shown, len(vms) - 2)


def kept_rows(data_dir: str, day: str, vms: Iterable[str]) -> Dict[str, list]:
    """``{vm: [its columnar Part, then its CSV file if any]}`` of the ``vms`` whose rows of UTC
    ``day`` the data dir's columnar file still holds: the sources the report reads for a
    VM-day of rows (report/discover.py), for a VM whose rollup turns out to be missing from
    its rollup file's table when that is read.  Without the day's columnar rows a CSV file
    holds only what came after they were retired: the report's listing (discover.py) already
    gave such a VM-day that file, having read the table then, so it answers for nothing here."""
    path = tier_path(data_dir, COLUMNAR_DIR, day)
    try:
        listed = set(tier_info(path)["vms"])
    except (OSError, ValueError):  # gone, or damaged (its own reader names it)
        return {}
    found = {}
    for vm in vms:
        if vm not in listed:
            continue
        csv = day_path(data_dir, vm, day)
        beside = os.path.isfile(csv) and followed(data_dir, csv)
        found[vm] = [Part(path, vm, COLUMNAR_DIR)] + ([csv] if beside else [])
    return found


def columnar_schema():
    """The columnar tier's columns: ``vm``, then the CSV's columns with their types."""
    import pyarrow as pa

    kinds = {"int64": pa.int64(), "Int64": pa.int64(), "float64": pa.float64(), "string": pa.string()}
    return pa.schema([("vm", pa.string())] + [(name, kinds[DTYPES[name]]) for name in COLUMNS])


#: How Arrow's file errors give the system's error number: in their text only ("Error writing
#: bytes to file. Detail: [errno 28] No space left on device"), with no file named.
_ARROW_ERRNO = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)


@contextlib.contextmanager
def naming(path: str) -> Iterator[None]:
    """An OSError raised writing ``path`` names the file (``filename``): Arrow's say only "No
    space left on device" (in their text), and an operator of a full disk could not tell which
    file, on which disk, the compaction was writing."""
    try:
        yield
    except OSError as exc:
        if exc.filename:
            raise
        code = exc.errno
        if code is None:
            found = _ARROW_ERRNO.search(str(exc))
            code = int(found.group(1)) if found else None
        text = os.strerror(code) if code is not None else str(exc) or type(exc).__name__
        raise OSError(code or 0, text, path) from exc


class TierWriter:
    """Writes one fleet-day file in row groups, then puts it in place atomically.

    ``add`` takes pyarrow tables (one row group each, groups of VMs in VM
    order); ``close(info)`` ends the file under its temporary name with the
    description in its footer, where it can be read back and checked;
    ``commit`` fsyncs it and renames it into place (then fsyncs the folder):
    until then the old file, if any, is what readers see.  ``abort`` removes
    the temporary file.
    """

    def __init__(self, path: str, schema=None, options: Optional[Dict] = None):
        self.path = path
        self.partial = path + PARTIAL_SUFFIX
        self._schema = schema
        self._options = dict(_ZSTD, **(options or {}))
        self._writer = None
        os.makedirs(os.path.dirname(path), exist_ok=True)

    def _open(self, schema):
        import pyarrow.parquet as pq

        self._writer = pq.ParquetWriter(self.partial, schema, **self._options)

    def add(self, table) -> None:
        with naming(self.partial):
            if self._writer is None:
                self._open(self._schema or table.schema)
            self._writer.write_table(table, row_group_size=max(1, table.num_rows))

    def close(self, info: dict) -> None:
        if self._writer is None and self._schema is None:
            raise ValueError("nothing to write to %s" % self.path)
        with naming(self.partial):
            if self._writer is None:
                self._open(self._schema)
            self._writer.add_key_value_metadata({_META_KEY: json.dumps(info)})
            self._writer.close()

    def commit(self) -> None:
        with naming(self.partial):
            fd = os.open(self.partial, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(self.partial, self.path)
        sync_dir(os.path.dirname(self.path))

    def abort(self) -> None:
        try:
            if self._writer is not None and self._writer.is_open:
                self._writer.close()
        finally:
            remove_quietly(self.partial)


def read_tier(path: str, vms: Optional[Iterable[str]] = None, columns: Optional[List[str]] = None):
    """A tier file's rows (of ``vms`` only, if given) as a pyarrow Table, in file order.

    The files are sorted by VM with one row group per group of VMs, so a
    filter on a few VMs skips the other groups by their statistics.
    """
    import pyarrow.parquet as pq

    wanted = None if columns is None else list(dict.fromkeys(["vm"] + list(columns)))
    if vms is None:  # the whole file: one open, without the dataset layer a filter needs (~4 ms a file)
        with pq.ParquetFile(path) as handle:
            return handle.read(columns=wanted)
    return pq.read_table(path, columns=wanted, filters=[("vm", "in", sorted(set(vms)))])


def read_tier_part(path: str, vms: Iterable[str], columns: Optional[List[str]] = None,
                   threads: bool = True) -> Tuple[dict, "object"]:
    """``(tier_info, rows)`` of a tier file for the VMs ``vms``: the whole file when they are at
    least half of its VMs (cheaper than filtering; the caller picks its rows), else read_tier's
    filtered rows.  One open of the footer either way.

    ``threads=False`` decodes a whole file's columns one after the other, for a caller that
    reads several files at once in threads of its own: Arrow's pool beside them cost ~15%
    more CPU for the same 90 rollup files."""
    import pyarrow
    import pyarrow.parquet as pq

    vms = set(vms)
    check_tier_file(path)
    try:
        with pq.ParquetFile(path) as handle:
            info = _description(handle.metadata.metadata or {})
            if 2 * len(vms) >= len(info["vms"]):
                wanted = None if columns is None else list(dict.fromkeys(["vm"] + list(columns)))
                return info, handle.read(columns=wanted, use_threads=threads)
    except pyarrow.ArrowInvalid as exc:
        raise DamagedTier("not a Parquet file: %s" % exc) from None
    except OSError as exc:
        raise _unreadable(path, exc) from None
    return info, read_tier(path, vms, columns)
