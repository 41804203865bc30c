"""The server's own files and folders, checked at start: each is absent or what the server made.

The journal's segments, the signature marks, the edge's key, the action log and the status
file are written by the server and read back by it.  Something else in one of their places (a
folder, a FIFO, a symbolic link to nothing) is an operator's mistake or a disk not mounted: at
start it stops the server with one line naming the path, before it listens, rather than a
traceback, a start that hangs on a FIFO's open, or a run that quietly works without the file
(a missing signature floor lets replays through after the next restart).  Later, at run time,
the server keeps going instead; each caller says how.
"""

import errno
import os
import stat

from vmstats.logstore import not_regular


def problem(path: str) -> str | None:
    """Why ``path`` cannot be one of the server's files, in a few words; None if it is a
    regular file or nothing is there (the server makes it)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            return "a symbolic link to %s, which does not exist" % os.readlink(path)
        return None
    except OSError as exc:
        return exc.strerror or str(exc)
    if not stat.S_ISREG(mode):
        return not_regular(mode)
    return None


def replace_durably(path: str, data: bytes, temp: str | None = None, mode: int = 0o640) -> None:
    """Put ``data`` at ``path`` whole, durably (written under ``temp``, synced, renamed over it,
    the folder synced): a crash leaves the old file or the new one, never a part.  Blocking:
    call it on a thread."""
    temp = temp or path + ".new"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def in_the_way(path: str, what: str, why: str, number: int = errno.EINVAL) -> OSError:
    """The one line for something else in the place of ``what`` (left there: it may hold what
    the operator needs, such as a segment's acknowledged records on a disk not mounted)."""
    return OSError(number, "cannot use the %s %s: %s (move it aside)" % (what, path, why))


def check_file(path: str, what: str) -> None:
    """OSError naming ``path`` and what it is for, if something else than a file is there."""
    why = problem(path)
    if why is not None:
        raise in_the_way(path, what, why)


def read_file(path: str, what: str) -> bytes:
    """The bytes of one of the server's files (b"" when absent); OSError in one line if
    something else is there or it cannot be read.  Opened without blocking: a FIFO in its
    place is refused, not waited on for ever."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        check_file(path, what)  # a dangling link is named; nothing at all is no file yet
        return b""
    except OSError as exc:
        raise OSError(exc.errno, "cannot read the %s %s: %s" % (what, path, exc.strerror)) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise in_the_way(path, what, not_regular(mode))
        try:
            with os.fdopen(os.dup(fd), "rb") as handle:
                return handle.read()
        except OSError as exc:
            raise OSError(exc.errno, "cannot read the %s %s: %s"
                          % (what, path, exc.strerror)) from None
    finally:
        os.close(fd)


def usable_directory(path: str, what: str) -> None:
    """Create ``path`` if needed and check it is a writable directory; OSError naming it if not."""
    if os.path.islink(path) and not os.path.exists(path):
        raise OSError(errno.ENOENT, "cannot use the %s %s: a symbolic link to %s, which does not "
                      "exist" % (what, path, os.readlink(path)))
    try:
        os.makedirs(path, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OSError(errno.ENOTDIR, "cannot use the %s %s: %s" % (what, path, _not_a_folder(path))) from None
    except OSError as exc:
        raise OSError(exc.errno, "cannot use the %s %s: %s" % (what, path, exc.strerror)) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OSError(errno.EACCES, "cannot use the %s %s: not writable" % (what, path))


def writable_file_place(path: str, what: str) -> None:
    """OSError naming ``path`` if a file cannot be put there whole: its folder missing, or a
    directory in its place (anything else is replaced at the first write)."""
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise OSError(errno.ENOENT, "cannot write the %s %s: its folder does not exist" % (what, path))
    if os.path.isdir(path):
        raise OSError(errno.EISDIR, "cannot write the %s %s: a directory is in its place" % (what, path))


def _not_a_folder(path: str) -> str:
    """What is in the way of the folder ``path``: itself, or the nearest folder above it,
    being something else (``data is a file, not a directory``)."""
    place = path
    while place and not os.path.lexists(place):
        parent = os.path.dirname(place.rstrip(os.sep))
        if parent == place:
            break
        place = parent
    what = (problem(place) or "a file").replace("not a regular file: ", "")
    if place == path:
        return "%s, not a directory" % what
    return "%s is %s, not a directory" % (place, what)


def existing_directory(path: str, what: str) -> None:
    """OSError if something other than a directory is at ``path`` (nothing there is fine: the
    server makes it when first needed)."""
    if os.path.lexists(path) and not os.path.isdir(path):
        why = problem(path) or "a file, not a directory"
        raise in_the_way(path, what, why, errno.ENOTDIR)
