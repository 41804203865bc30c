"""Click parameter types the commands share."""

import math
from typing import Any

import click


class FiniteRange(click.FloatRange):
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
    """The folder a command writes its files into (``-o``): an empty name is refused.

    Left alone, ``-o ""`` reads as no folder to a command whose outputs are
    optional (nothing written, exit 0) and as a folder that cannot be made to
    the others; an operator who passed it meant some folder, so every command
    says the same instead.
    """

    name = "folder"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not value:
            self.fail("an empty folder name (use . for the current folder)", param, ctx)
        return value
