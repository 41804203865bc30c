"""Files a command writes for others to read (a report, a summary, a truth file), put in place whole.

Each is written under a temporary name in its own folder and renamed over the
old one only once it is complete: a run stopped by Ctrl-C, a full disk or an
error half-way leaves the earlier file as it was (or no file), never a
truncated one, for a nightly job or a server (``serve --summary``) to read as
current.  The temporary file is removed when the write fails.

A command that writes several files into one folder (a report's page, CSV and
JSON) writes them all first under staged names and renames them into place only
once every one is written (``together``): a run that fails half-way into a folder
of an earlier run leaves that run's set as it was, never this run's page beside
the earlier run's CSV.

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


class Outputs:
    """The files of one run, put in place together (``together``).

    A writer is given ``stage(path)`` as the path to write; it writes that whole (through
    ``replacing`` as ever), and the staged files are renamed over their places in ``commit``,
    after all of them were written.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[str, str]] = []  # (staged name, final path)

    def stage(self, path: str) -> str:
        """The name under which to write ``path`` (``report.csv.<pid>.partial``, beside it)."""
        final = os.path.realpath(path)  # a link at ``path``: its target is replaced, as open does
        staged = "%s.%d%s" % (final, os.getpid(), PARTIAL)
        self._staged.append((staged, final))
        return staged

    def commit(self) -> None:
        """Rename every staged file over its place, each with the mode of the file it replaces.

        Renames in one folder do not fail for want of room; should one fail all the same,
        the error says which files were already replaced.
        """
        for staged, final in self._staged:
            keep_mode(staged, final)
        replaced: list[str] = []
        for staged, final in self._staged:
            try:
                os.replace(staged, final)
            except OSError as exc:
                if not replaced:
                    raise
                raise OSError(exc.errno, "%s (%s replaced by this run, the rest not)"
                              % (exc.strerror, ", ".join(replaced))) from None
            replaced.append(os.path.basename(final))
        self._staged.clear()

    def discard(self) -> None:
        """Remove what was staged: the run failed, the files in place stay as they were."""
        for staged, _final in self._staged:
            with contextlib.suppress(OSError):
                os.unlink(staged)
        self._staged.clear()


@contextlib.contextmanager
def together() -> Iterator[Outputs]:
    """An Outputs whose files are put in place when the block ends without an exception, and
    removed when it raises one (KeyboardInterrupt too)."""
    outputs = Outputs()
    try:
        yield outputs
        outputs.commit()
    except BaseException:
        outputs.discard()
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
