"""Files a command writes for others to read (a report, a summary, a truth file), put in place whole.

Each is written under a temporary name in its own folder and renamed over the
old one only once it is complete: a run stopped by Ctrl-C, a full disk or an
error half-way leaves the earlier file as it was (or no file), never a
truncated one, for a nightly job or a server (``serve --summary``) to read as
current.  The temporary file is removed when the write fails.

A file that replaces another takes the old one's permission bits (and its
owner and group, where this process may give them): an operator who made last
night's report 0640 for one group finds tonight's the same.  A new file gets
what ``open`` gives, 0666 less the umask, as any file the command made itself.
"""

import contextlib
import os
import stat
from collections.abc import Iterator
from typing import IO, Any

#: What a temporary file's name ends with (``report.csv.<pid>.partial``).
PARTIAL = ".partial"


@contextlib.contextmanager
def replacing(path: str, mode: str = "w", **kwargs: Any) -> Iterator[IO[Any]]:
    """``open(path, mode, **kwargs)`` that puts the file at ``path`` only when the block ends
    without an exception; on any (KeyboardInterrupt too) the partial file is removed.

    A symbolic link at ``path`` is written through (its target replaced), as ``open`` would.
    """
    path = os.path.realpath(path)
    temporary = "%s.%d%s" % (path, os.getpid(), PARTIAL)
    try:
        with open(temporary, mode, **kwargs) as handle:
            yield handle
        keep_mode(temporary, path)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def keep_mode(temporary: str, path: str) -> None:
    """Give ``temporary``, about to be renamed over ``path``, the mode, owner and group of the
    file at ``path``, when there is one.

    The mode always (an OSError if it cannot be set, before anything is replaced); the
    owner and group only where they differ and this process may set them (root, or a
    group it is in), since a replacement owned by whoever ran the command is still the
    report and refusing it would lose the run.
    """
    try:
        old = os.stat(path)
    except FileNotFoundError:
        return
    new = os.stat(temporary)
    if (old.st_uid, old.st_gid) != (new.st_uid, new.st_gid):
        with contextlib.suppress(OSError):
            os.chown(temporary, old.st_uid, old.st_gid)
    # After chown, which clears the set-id bits on some systems.
    if stat.S_IMODE(old.st_mode) != stat.S_IMODE(os.stat(temporary).st_mode):
        os.chmod(temporary, stat.S_IMODE(old.st_mode))


def write_text(path: str, text: str) -> None:
    """``text`` as the UTF-8 file at ``path``, put in place whole."""
    with replacing(path, "w", encoding="utf-8") as handle:
        handle.write(text)
