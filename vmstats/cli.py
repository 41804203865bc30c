"""The ``vmstats`` command.

Sub-commands live beside the stage they drive (``vmstats/<stage>/command.py``)
and are imported only when invoked, so ``vmstats agent`` never pays for
pandas and ``vmstats report`` never imports Twisted.
"""

import contextlib
import importlib
import sys
from collections.abc import Iterator

import click

from vmstats import __version__
from vmstats.options import Refused, remove_made_folders

#: sub-command name -> "module:attribute" of its click command.
COMMANDS = {
    "serve": "vmstats.server.command:serve",
    "compact": "vmstats.server.command:compact",
    "agent": "vmstats.client.command:agent",
    "agent-bundle": "vmstats.client.command:agent_bundle",
    "simulate": "vmstats.simulator.command:simulate",
    "replay": "vmstats.simulator.command:replay",
    "simulate-pool": "vmstats.simulator.command:simulate_pool",
    "score": "vmstats.simulator.command:score",
    "report": "vmstats.report.command:report",
    "backtest": "vmstats.report.backtest_command:backtest",
    "rules": "vmstats.rules.command:rules",
    "alerts": "vmstats.rules.command:alerts",
    "headroom": "vmstats.capacity.command:headroom",
    "admit": "vmstats.capacity.command:admit",
}


#: Exit status of a command stopped by Ctrl-C (SIGINT): 128 + 2, as a shell reports it.
INTERRUPTED = 130


@contextlib.contextmanager
def _one_line() -> Iterator[None]:
    """click's usage errors as one line (options.Refused), as every other refusal reads:
    click's usage block ("Usage: ... Try ... for help") says nothing of what was wrong.
    A group given no command ("vmstats rules") still shows its help."""
    try:
        yield
    except click.UsageError as exc:
        if isinstance(exc, click.exceptions.NoArgsIsHelpError):
            raise
        raise Refused(exc.format_message().replace("\n", " ")) from None


def _failed(exc: BaseException) -> bool:
    """Whether ``exc`` ends a command as a failure: anything but an exit with status 0."""
    if isinstance(exc, click.exceptions.Exit):
        return exc.exit_code != 0
    if isinstance(exc, SystemExit):
        return exc.code not in (0, None)
    return True


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use.

    Ctrl-C ends any command with one line and status 130, as shells and
    scripts expect of an interrupted program (click's own "Aborted!" exits 1,
    which reads as a failure of the command).  A usage error is one line with
    status 2 in every command (vmstats.options.USAGE).
    """

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        with _one_line():  # "vmstats --bogus"
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context) -> object:
        try:
            with _one_line():  # the sub-command's own, and "vmstats nosuchcommand"
                return super().invoke(ctx)
        except BaseException as exc:
            if _failed(exc):
                remove_made_folders(ctx)  # a failed run leaves no new output folder
            if not isinstance(exc, KeyboardInterrupt):
                raise
            if sys.stderr.isatty():
                click.echo("", err=True)  # off the line a progress display or ^C left
            click.echo("vmstats %s: interrupted" % (ctx.invoked_subcommand or ""), err=True)
            ctx.exit(INTERRUPTED)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        return getattr(importlib.import_module(module), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vmstats")
def main() -> None:
    """Push-model VM usage stats aggregator and reclamation reporter."""
