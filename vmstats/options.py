"""Click parameter types the commands share."""

import math
import os
import re
from collections.abc import Iterable
from typing import Any, NoReturn

import click

from vmstats.inputfile import BadInput
from vmstats.protocol import DECIMAL_RE, spells_non_finite

#: Exit status of a command line refused before any work: an option's or argument's value, a
#: missing or conflicting option, or a file it names that is missing, unreadable or wrong.
#: click's own for a usage error; the systemd units do not restart a command that exits so
#: (RestartPreventExitStatus=2), since the same command line would fail the same way.
#: A run that fails on the way (the logs, the disk, the network) exits 1, click's default.
USAGE = 2


class Refused(click.ClickException):
    """The command line, or a file it names, is wrong: one ``Error: ...`` line, status USAGE.

    Unlike click's UsageError it adds no usage block ("Usage: ... Try ... for help"): that
    says nothing about what was wrong, and made four lines of one."""

    exit_code = USAGE


def failure(exc: Exception) -> click.ClickException:
    """The one line a command ends with for ``exc``: Refused for bad input (BadInput), a
    failed run's status 1 for anything else."""
    message = str(exc)
    return Refused(message) if isinstance(exc, BadInput) else click.ClickException(message)

#: An integer as an operator types one.  click's INT and FLOAT call int() and float(), which
#: also take ``1_000``, Unicode digits (``\u0661\u0662`` is 12) and surrounding whitespace:
#: a typo or a pasted character would then pass as some other number than the one shown.
_INTEGER = re.compile(r"-?[0-9]+\Z")


class _Spelled:
    """What IntRange and FiniteRange share: text is read only if ``spelling`` matches it, and
    without bounds the help shows the plain type (``INTEGER``, no ``x<=None``)."""

    spelling: "re.Pattern[str]"
    plain: str
    refusal: str

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.min is None and self.max is None:
            self.name = self.plain

    def _describe_range(self) -> str:
        return "" if self.min is None and self.max is None else super()._describe_range()

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        # nan and inf go on to the check (FiniteRange's, or the caller's) that names them so.
        if isinstance(value, str) and not self.spelling.match(value) \
                and not spells_non_finite(value):
            self.fail(self.refusal % (value,), param, ctx)
        return super().convert(value, param, ctx)


class IntRange(_Spelled, click.IntRange):
    """click's IntRange for ASCII digits only (``_INTEGER``); no bounds: any integer."""

    spelling, plain, refusal = _INTEGER, "integer", "%r is not an integer."


class FloatRange(_Spelled, click.FloatRange):
    """click's FloatRange for decimal numbers (``protocol.DECIMAL``) and nan and inf, which the
    caller judges; no bounds: any float."""

    spelling, plain, refusal = DECIMAL_RE, "float", "%r is not a valid float."


class FiniteRange(FloatRange):
    """A FloatRange that refuses ``nan`` and ``inf``.

    click lets both through (``nan`` compares false with every bound, ``inf`` passes an
    open upper end), and either would run a simulation forever or poison every sum after it.
    """

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail("%r is not a finite number." % value, param, ctx)
        return number


class _OutputPath(click.ParamType):
    """What the path types share: an empty name is refused, the checks create nothing, and a
    refusal is one line with a usage error's status (Refused) that names the option.

    click adds its usage block ("Usage: ... Try ... for help") to a parameter's errors; it
    says nothing about the path, and a command that did not turn it off printed four lines for
    one wrong name.  Raised here, the refusal reads the same in every command.  An empty name
    is what an unset shell variable gives: taken for no path, it silently turned an output
    (or a server's journal) off, so it is refused instead.
    """

    empty: str

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not value:
            self._refuse(self.empty, param, ctx)
        return value

    def _refuse(self, message: str, param: click.Parameter | None, ctx: click.Context | None) -> NoReturn:
        hint = param.get_error_hint(ctx) if param is not None and ctx is not None else "the %s" % self.name
        raise Refused("Invalid value for %s: %s" % (hint, message))

    def _check_writable(self, target: str, param: click.Parameter | None, ctx: click.Context | None) -> None:
        if not os.access(target, os.W_OK):
            self._refuse("%s is not writable" % target, param, ctx)


def _not_a_folder(path: str) -> str:
    """Why ``path``, which is there, is no folder: a link to nothing is not called a file."""
    if os.path.islink(path) and not os.path.exists(path):
        return "%s is a symbolic link to %s, which does not exist" % (path, os.readlink(path))
    return "%s is a file, not a folder" % path


def _nearest(path: str) -> str:
    """``path`` if it is there, else the nearest folder above it that is (or what is in its
    place): what stops a path from being made is the first thing on the way that is there."""
    while not os.path.lexists(path):
        path = os.path.dirname(os.path.abspath(path))
    return path


class FolderName(_OutputPath):
    """A folder the command checks itself, once it knows more than a name says (``serve``'s
    data and journal folders: what is in the way, and what of it the server owns); only an
    empty name is refused here."""

    name = "folder"
    empty = "an empty folder name (use . for the current folder)"


class FileName(_OutputPath):
    """A file the command checks itself (``serve --status-file``); only an empty name is
    refused here."""

    name = "file"
    empty = "an empty file name"


class OutputFolder(FolderName):
    """The folder a command writes its files into (``-o``, ``--cache-dir``), checked before the
    command does any work.

    A file where the folder should be, or on the way to it, got "File exists"
    from one command and "cannot write to" from another, some only once the run
    was over: every command now says what is wrong, in the same words, before
    it starts.  The command makes the folder (and any missing folders above it)
    itself, once nothing else can stop it.
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        super().convert(value, param, ctx)
        if os.path.lexists(value) and not os.path.isdir(value):
            self._refuse(_not_a_folder(value), param, ctx)
        existing = _nearest(value)  # the folder and those above it are made later
        if not os.path.isdir(existing):
            self._refuse(_not_a_folder(existing), param, ctx)
        self._check_writable(existing, param, ctx)
        return value


class OutputFile(FileName):
    """A file a command writes (``--json``, ``-o``), checked before the command does any work.

    Several commands write their file only at the end of a run that takes
    minutes (every record sent, then the summary): a folder that is not there
    failed the run only then, with the records already sent.  The checks here
    create nothing, so a run refused later leaves no empty file behind.
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        super().convert(value, param, ctx)
        if os.path.isdir(value):
            self._refuse("%s is a folder, not a file" % value, param, ctx)
        folder = os.path.dirname(value) or "."
        existing = _nearest(folder)
        if not os.path.isdir(existing):
            self._refuse(_not_a_folder(existing), param, ctx)
        if existing != folder:
            self._refuse("%s does not exist (no folder is made for it)" % folder, param, ctx)
        # The file is written beside its place and renamed over it (vmstats.outputfile):
        # its folder is what must take it.
        self._check_writable(os.path.dirname(os.path.realpath(value)), param, ctx)
        return value


#: ``click.Context.meta`` key: the folders prepare_folder made in this run, each the
#: outermost of those one call made.
_MADE = "vmstats.options.made"


def prepare_folder(folder: str, files: Iterable[str]) -> None:
    """Make an output folder and prove it takes the command's ``files``, before any work.

    OutputFolder read the name; this is the part that needs the folder made:
    a file created (then removed) in it is the only test that holds for root,
    read-only mounts and full disks alike, and a folder or other non-file in
    the place of one of ``files`` would fail the run only at its end.  What it
    makes is noted in the command's context, for remove_made_folders to take
    away if the run fails.
    """
    import tempfile

    made = _nearest(folder) != folder and os.path.abspath(folder)
    while made and not os.path.lexists(os.path.dirname(made)):
        made = os.path.dirname(made)
    context = click.get_current_context(silent=True)
    if made and context is not None:
        context.meta.setdefault(_MADE, []).append(made)
    try:
        os.makedirs(folder, exist_ok=True)
        for name in files:
            path = os.path.join(folder, name)
            if os.path.lexists(path) and not os.path.isfile(path):
                raise IsADirectoryError(0, "%s is in the way and is not a file" % name)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise click.ClickException(cannot_write(folder, exc)) from None


def cannot_write(folder: str, exc: OSError) -> str:
    """The line for an output that could not be written: the folder and the reason, no errno."""
    return "cannot write to %s: %s" % (folder, exc.strerror or exc)


def remove_made_folders(context: click.Context) -> None:
    """Remove the folders prepare_folder made in a run that failed, with what it wrote in them.

    An operator reads a failed run as one that changed nothing: an empty OUT/ (and
    OUT/decision/) left by a report refused on its dates or price book, or a half
    one left by Ctrl-C, reads as a run that happened.  Only folders that were not
    there before the run are removed; files the run replaced in a folder that was
    there are each whole (vmstats.outputfile).
    """
    import shutil

    for folder in context.meta.pop(_MADE, ()):
        shutil.rmtree(folder, ignore_errors=True)
