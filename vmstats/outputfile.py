"""Files a command writes for others to read (a report, a summary, a truth file), put in place whole.

Each is written under a temporary name in its own folder and renamed over the
old one only once it is complete: a run stopped by Ctrl-C, a full disk or an
error half-way leaves the earlier file as it was (or no file), never a
truncated one, for a nightly job or a server (``serve --summary``) to read as
current.  The temporary file is removed when the write fails.
"""

import contextlib
import os
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
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_text(path: str, text: str) -> None:
    """``text`` as the UTF-8 file at ``path``, put in place whole."""
    with replacing(path, "w", encoding="utf-8") as handle:
        handle.write(text)
