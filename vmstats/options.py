"""Click parameter types the commands share."""

import math
import os
import re
from typing import Any, NoReturn

import click

from vmstats.protocol import DECIMAL_RE, spells_non_finite

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


class OutputFolder(click.ParamType):
    """The folder a command writes its files into (``-o``): an empty name, or a file's, is refused.

    Left alone, ``-o ""`` reads as no folder to a command whose outputs are
    optional (nothing written, exit 0) and as a folder that cannot be made to
    the others; an operator who passed it meant some folder, so every command
    says the same instead.  A file where the folder should be got "File
    exists" from one command and "cannot write to" from another: every command
    now says what is wrong, in the same words.
    """

    name = "folder"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not value:
            self.fail("an empty folder name (use . for the current folder)", param, ctx)
        if os.path.lexists(value) and not os.path.isdir(value):
            self.fail("%s is a file, not a folder" % value, param, ctx)
        return value


class OutputFile(click.ParamType):
    """A file a command writes (``--json``, ``-o``), checked before the command does any work.

    Several commands write their file only at the end of a run that takes
    minutes (every record sent, then the summary): a folder that is not there
    failed the run only then, with the records already sent.  The checks here
    create nothing, so a run refused later leaves no empty file behind.  The
    refusal is one line with a usage error's status 2: it names the option,
    and the usage block click adds to a parameter's errors says nothing about
    the path.
    """

    name = "file"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not value:
            self._refuse("an empty file name", param, ctx)
        if os.path.isdir(value):
            self._refuse("%s is a folder, not a file" % value, param, ctx)
        folder = os.path.dirname(value) or "."
        if not os.path.isdir(folder):
            self._refuse("%s %s" % (folder, "is not a folder" if os.path.lexists(folder)
                                    else "does not exist (no folder is made for it)"), param, ctx)
        target = value if os.path.lexists(value) else folder
        if not os.access(target, os.W_OK):
            self._refuse("%s is not writable" % target, param, ctx)
        return value

    @staticmethod
    def _refuse(message: str, param: click.Parameter | None, ctx: click.Context | None) -> NoReturn:
        hint = param.get_error_hint(ctx) if param is not None and ctx is not None else "the file"
        refusal = click.ClickException("Invalid value for %s: %s" % (hint, message))
        refusal.exit_code = 2  # a usage error's status; click adds its usage block only to UsageError
        raise refusal
