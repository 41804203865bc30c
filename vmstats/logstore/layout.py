"""Where the per-VM logs live: the day names, the folders and files, the VM ids among them.

Layout::

    DATA_DIR/vms/<vm-id>/<YYYY-MM-DD>.csv      one file per VM per UTC day

Splitting by day keeps retention a matter of deleting old files and lets the
report cache statistics per file.  What a file holds is rows.py's; the
compacted tiers beside ``vms/`` are tiers.py's.
"""

import bisect
import datetime
import functools
import os
from typing import Iterable, Iterator, List, Optional, Tuple

from vmstats.protocol import DecodeError, normalize_vm_id

VMS_DIR = "vms"
SUFFIX = ".csv"
_EPOCH = datetime.date(1970, 1, 1)
DAY_SECONDS = 86400


@functools.lru_cache(maxsize=1024)
def day_name(day: int) -> str:
    """``YYYY-MM-DD`` of day number ``day`` (UTC days since 1970-01-01): its files' name.

    Cached: a flush names the same one or two days for every VM it writes,
    and the date arithmetic costs several times the cache lookup.  ``day`` may
    be a numpy integer (the report's day arrays), which timedelta refuses.
    """
    return (_EPOCH + datetime.timedelta(days=int(day))).isoformat()


def day_of(ts: int) -> str:
    """The UTC day (``YYYY-MM-DD``) whose file holds a record stamped ``ts``."""
    return day_name(ts // DAY_SECONDS)


def split_days(stamps: Iterable[int]) -> List[Tuple[int, List[int]]]:
    """``[(day number, its timestamps sorted)]`` for ``stamps``, oldest day first.

    A flush almost always holds one day per VM: comparing the first and last
    timestamp settles that without any per-row Python work; only a batch
    spanning midnight is cut, by bisection, once per day boundary.
    """
    ordered = sorted(stamps)
    if not ordered:
        return []
    first = ordered[0] // DAY_SECONDS
    if ordered[-1] // DAY_SECONDS == first:
        return [(first, ordered)]
    groups = []
    start = 0
    while start < len(ordered):
        day = ordered[start] // DAY_SECONDS
        end = bisect.bisect_left(ordered, (day + 1) * DAY_SECONDS, start)
        groups.append((day, ordered[start:end]))
        start = end
    return groups


def day_number(day: str) -> int:
    """The day number (UTC days since 1970-01-01) of a ``YYYY-MM-DD`` name; ValueError otherwise."""
    return (datetime.date.fromisoformat(day) - _EPOCH).days


def vm_dir(data_dir: str, vm: str) -> str:
    """The folder of one VM's logs.

    ``vm`` has been validated by the protocol (an IP or a safe token), but a
    file name built from network input is checked once more here: the result
    must stay inside the data dir whatever the caller passed.
    """
    if not vm or "/" in vm or "\x00" in vm or vm in (".", "..") or ".." in vm:
        raise ValueError("unsafe vm id %r" % vm[:80])
    # os.path.join(data_dir, VMS_DIR, vm), the same string without its cost (several us
    # a call, paid per VM per flush): the root ends in VMS_DIR and vm holds no separator.
    return _vms_root(data_dir) + os.sep + vm


@functools.lru_cache(maxsize=16)
def _vms_root(data_dir: str) -> str:
    return os.path.join(data_dir, VMS_DIR)


def day_file_in(folder: str, day: str) -> str:
    """The file of UTC ``day`` in a VM's folder: ``os.path.join(folder, day + SUFFIX)``."""
    return folder + os.sep + day + SUFFIX


def day_path(data_dir: str, vm: str, day: str) -> str:
    """The log file of ``vm`` for UTC ``day``."""
    return day_file_in(vm_dir(data_dir, vm), day)


def iter_vms(data_dir: str, not_folders: Optional[List[str]] = None) -> Iterator[str]:
    """The VM ids that have logs under ``data_dir``, sorted.

    Other entries (a file or a dangling link where a VM's folder should be; hidden names
    aside) are added to ``not_folders`` if given, for a reader that names what it skips.
    """
    root = os.path.join(data_dir, VMS_DIR)
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return
    for name in names:
        if os.path.isdir(os.path.join(root, name)):
            yield name
        elif not_folders is not None and not name.startswith("."):
            not_folders.append(name)


def day_files(data_dir: str, vm: str, first_day: Optional[str] = None,
              last_day: Optional[str] = None, links: Optional[List[str]] = None) -> List[Tuple[str, str]]:
    """``(day, path)`` of one VM's log files, oldest first, within the day range.

    With ``links`` given, the day files that are symbolic links are added to it instead (a
    listing tells them apart without a ``stat`` each), for the caller to judge (link_problem).
    """
    folder = vm_dir(data_dir, vm)
    prefix = folder + os.sep  # os.path.join's result without its cost, paid per file
    found = []
    linked: frozenset = frozenset()
    if links is None:
        names = sorted(os.listdir(folder))
    else:
        with os.scandir(folder) as listing:
            entries = list(listing)
        names = sorted(entry.name for entry in entries)
        linked = frozenset(entry.name for entry in entries if entry.is_symlink())
    for name in names:
        if not name.endswith(SUFFIX):
            continue
        day = name[: -len(SUFFIX)]
        if (first_day and day < first_day) or (last_day and day > last_day):
            continue
        if name in linked:
            links.append(prefix + name)
            continue
        found.append((day, prefix + name))
    return found


class LinkRefused(OSError):
    """A VM folder or day file that is a symbolic link vmstats does not go through (link_problem):
    the writer keeps the VM's rows and retries them, as after any failed write."""


def link_problem(data_dir: str, path: str) -> Optional[str]:
    """Why a VM folder or day file that is a symbolic link (``path``) is not gone through, or
    None for one that leads elsewhere inside the data dir, which is then read and written as if
    it stood there.

    A link out of the data dir may lead into another data dir (an operator's copy, a disk two
    aggregators share): writing through it would put this fleet's rows in that dir's files, and
    reading it would count that dir's VM as this fleet's, while compaction, which removes what
    it compacts, leaves every link below ``vms/`` alone.  A link into ``vms/`` itself stands for
    another VM's (or another day's) logs under a second name: written through, two VMs' rows
    would mix in one file; read, one VM would count twice.  The data dir itself and its
    ``vms/`` may be links: that is where the operator put it.
    """
    target = os.path.realpath(path)
    if not _below(target, os.path.realpath(data_dir)):
        return "a symbolic link out of the data dir (-> %s)" % one_line(target)
    vms = (os.path.abspath(_vms_root(data_dir)), os.path.realpath(_vms_root(data_dir)))
    hop = path
    for _hop in range(40):  # each link of a chain: an alias may lead through another VM's name
        try:
            hop = os.path.normpath(os.path.join(os.path.dirname(hop), os.readlink(hop)))
        except OSError:  # the end of the chain (or a loop, which realpath resolved as it could)
            break
        if any(_below(hop, root) or hop == root for root in vms):
            return "a symbolic link to other logs of the data dir (-> %s)" % one_line(hop)
    return None


def _below(path: str, root: str) -> bool:
    """Whether ``path`` (absolute, normalised) lies inside the folder ``root``."""
    return path.startswith(root.rstrip(os.sep) + os.sep)


def followed(data_dir: str, day_file: str) -> bool:
    """Whether a day file is read where it stands: neither it nor its VM folder is a symbolic
    link that link_problem refuses (a ``stat`` each for a file read outside a listing)."""
    return all(not os.path.islink(path) or link_problem(data_dir, path) is None
               for path in (os.path.dirname(day_file), day_file))


def refuse_link(data_dir: str, path: str) -> None:
    """LinkRefused if ``path`` is a symbolic link that link_problem refuses."""
    if os.path.islink(path):
        problem = link_problem(data_dir, path)
        if problem is not None:
            raise LinkRefused("%s is %s: not written through (docs/STORAGE.md, \"Symbolic links "
                              "under vms/\")" % (one_line(path), problem))


def printable(text: str) -> str:
    """``text`` with the bytes of a file name that is not UTF-8 shown as ``\\xff``.

    os.listdir gives such bytes as lone surrogates, which no UTF-8 output (the
    terminal, report.json, the page) can hold: one folder copied in from another
    system would otherwise stop the whole report when it names it.
    """
    if text.isascii():
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that was not a byte of a name
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def one_line(name: str) -> str:
    """``printable(name)`` with its control characters (a newline, a tab) escaped as ``\\n``,
    ``\\t``: a folder named by other means stays one line wherever it is named."""
    text = printable(name)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def is_utf8(name: str) -> bool:
    """Whether a name from os.listdir was UTF-8 on disk (no VM id or path we write is not)."""
    return printable(name) == name


def is_vm_id(name: str) -> bool:
    """Whether a folder name under ``vms/`` is a VM id the server could have written there
    (docs/PROTOCOL.md, "VM ids").  A folder copied in by other means may be named anything:
    ``=HYPERLINK(...)``, ``<b>``, a newline, which a spreadsheet, a page or a terminal would take
    for something else; such a folder holds no VM's logs."""
    try:
        normalize_vm_id(name)
    except DecodeError:
        return False
    return True
