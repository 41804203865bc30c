"""The files under a data dir as files: what stands at a day file's name, opening it for
reading without ever waiting on a FIFO, and the folder fsync and removal the tiers' writers use.

A day file's name may be taken by a folder, a FIFO or a device copied in by
other means: readers name it (NotALogFile, describe_error) and go on.
"""

import os
import stat
from typing import BinaryIO

from vmstats.logstore.rows import strip_header

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


class NotALogFile(OSError):
    """A day file's name on something that is not a regular file (a folder, a FIFO...)."""


def not_regular(mode: int) -> str:
    """What a day file's name is on, when it is not a regular file, in a few words."""
    for test, name in _KINDS:
        if test(mode):
            return "not a regular file: %s" % name
    return "not a regular file"


def describe_error(path: str, exc: OSError) -> str:
    """An OSError met reading a day file, as the report names it."""
    if isinstance(exc, NotALogFile):
        return str(exc)
    return "unreadable: %s" % os_problem(path, exc)


def os_problem(path: str, exc: OSError) -> str:
    """Why ``path`` could not be opened, in the system's words (a dangling link said as such)."""
    if isinstance(exc, FileNotFoundError) and os.path.islink(path):
        return "a symbolic link to a missing file"
    return exc.strerror or str(exc)


def _open_day_file(path: str) -> int:
    """A day file's descriptor, for reading.  O_NONBLOCK and a check before any read: a FIFO
    or a folder in a day file's place raises NotALogFile instead of blocking or reading."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotALogFile(not_regular(mode))
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_day_file(path: str) -> BinaryIO:
    """A day file opened for reading: NotALogFile (an OSError) for a FIFO, a folder or a
    device in its place.  A plain ``open`` of a FIFO waits for a writer for ever, so a reader
    that opens day files by name opens them here."""
    return os.fdopen(_open_day_file(path), "rb")


def read_body(path: str) -> bytes:
    """A day file's bytes after its header (never waiting on a FIFO: _open_day_file)."""
    fd = _open_day_file(path)
    try:
        parts = []
        while True:  # one read of the whole file, and one more that finds its end
            part = os.read(fd, 1 << 20)
            if not part:
                break
            parts.append(part)
    finally:
        os.close(fd)
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    return strip_header(data)


def sync_dir(folder: str) -> None:
    """fsync a folder, so a rename or unlink in it outlives a crash of the machine."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
