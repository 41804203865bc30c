"""One server per data dir and per journal: a second one pointed at them is refused at start.

Two servers sharing a journal delete each other's acknowledged records: the
second one takes the first one's open segment for a crash's leftover,
replays it and deletes it, and everything the first then acknowledges goes
into that deleted file; a SIGKILL of the first loses it all (and either
server's flush retires segments the other still needs).  Two sharing a data
dir race on the same day files.  So each holds an exclusive lock on
``serve.lock`` in its data dir and in its journal dir (which
``--journal-dir`` may put anywhere, another server's among them) for as long
as it runs; a second server exits with one line naming the
first one's process id.  The data dir's lock file also keeps notes for the
next start: the journal dir this run used (service.py names a journal dir
an earlier run left segments in that this one does not replay).

POSIX record locks (``lockf``), not ``flock``: the kernel drops them when
the process dies, and a child forked from the server never holds them, so a
parser or writer that outlives a SIGKILL'd server for a moment never keeps
the restarted one out.  A file system that cannot lock (an NFS mount without
its lock service) is logged once and the server runs without the lock.
"""

import errno
import fcntl
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

LOCK_NAME = "serve.lock"
#: Errors that mean "this file system takes no locks", not "someone holds it".
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)


#: What a lock file holds at most: the process id, then the notes of ``hold``.
_MOST = 1 << 16


def _read(fd: int) -> str:
    """The lock file's text ('' if it cannot be read)."""
    try:
        return os.pread(fd, _MOST, 0).decode("utf-8", "replace")
    except OSError:
        return ""


def _holder(fd: int) -> str:
    """The process id the running server wrote into the lock file, as text ('?' if none)."""
    first = _read(fd).split("\n", 1)[0].strip()
    return first if first.isdigit() else "?"


def notes(text: str, key: str) -> list[str]:
    """The values of the ``key value`` lines of a lock file's text."""
    return [line[len(key) + 1:] for line in text.splitlines() if line.startswith(key + " ")]


def hold(directory: str, what: str, option: str,
         note: Callable[[str], list[tuple[str, str]]] | None = None) -> tuple[int | None, str]:
    """Lock ``directory`` for this process: ``(descriptor, the file's text before)``; the
    descriptor is None if the file system takes no locks.  OSError in one line if another
    server holds it or the lock file cannot be opened.

    ``what`` and ``option`` name the folder in the error (``data directory``, ``--data-dir``).
    The file then holds this process's id and the ``key value`` lines ``note`` makes of the
    text the last server left (what the next start should know of this run).
    """
    path = os.path.join(directory, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        raise OSError(exc.errno, "cannot use the %s (%s) %s: its lock file %s cannot be opened: %s"
                      % (what, option, directory, path, exc.strerror)) from None
    locked = True
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            holder = _holder(fd)
            os.close(fd)
            raise OSError(errno.EBUSY, "cannot use the %s (%s) %s: another vmstats serve (pid %s) "
                          "is using it (%s); two servers on one %s lose acknowledged records: "
                          "give each its own %s" % (what, option, directory, holder, path, what,
                                                    option)) from None
        if exc.errno not in _NO_LOCKS:
            os.close(fd)
            raise OSError(exc.errno, "cannot use the %s (%s) %s: locking %s: %s"
                          % (what, option, directory, path, exc.strerror)) from None
        log.warning("the %s %s cannot be locked (%s): make sure no other vmstats serve uses "
                    "it", what, directory, exc.strerror or exc)
        locked = False
    before = _read(fd)
    lines = ["%d" % os.getpid()] + ["%s %s" % pair for pair in (note(before) if note else [])]
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"), 0)
    except OSError as exc:  # the error of a second server misses the pid, the next start the notes
        log.warning("cannot write into %s: %s", path, exc.strerror or exc)
    if not locked:
        os.close(fd)
        return None, before
    return fd, before


def release(fds: list[int | None]) -> None:
    """Let go of the locks (at the end of the stop; the kernel does it if the process dies)."""
    for fd in fds:
        if fd is not None:
            os.close(fd)
