"""The ``vmstats`` command.

Sub-commands live beside the stage they drive (``vmstats/<stage>/command.py``)
and are imported only when invoked, so ``vmstats agent`` never pays for
pandas and ``vmstats report`` never imports Twisted.
"""

import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator

import click

from vmstats import __version__
from vmstats.options import Refused, remove_made_folders
from vmstats.server.native import StaleBuild

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
#: Exit status of a command whose standard output's reader went away ("| head"): 128 + SIGPIPE,
#: as a shell reports a program that signal ended.  Its work is done: its outputs are kept.
READER_GONE = 141


@contextlib.contextmanager
def _one_line() -> Iterator[None]:
    """click's usage errors as one line (options.Refused), as every other refusal reads:
    click's usage block ("Usage: ... Try ... for help") says nothing of what was wrong.
    A group given no command ("vmstats rules") still shows its help.  A C part built from an
    older source than the Python that imports it (server/native.py) is refused the same way,
    wherever the command imports it: a rebuild is the one thing that makes it run."""
    try:
        yield
    except click.UsageError as exc:
        if isinstance(exc, click.exceptions.NoArgsIsHelpError):
            raise
        raise Refused(exc.format_message().replace("\n", " ")) from None
    except StaleBuild as exc:
        raise Refused(str(exc)) from None


def _failed(exc: BaseException) -> bool:
    """Whether ``exc`` ends a command as a failure: anything but an exit with status 0."""
    if isinstance(exc, click.exceptions.Exit):
        return exc.exit_code not in (0, READER_GONE)
    if isinstance(exc, SystemExit):
        return exc.code not in (0, None)
    return True


@contextlib.contextmanager
def _watching_stdout() -> Iterator[list]:
    """Tells a failure to write standard output (a redirection to a full disk, a pipe whose
    reader went away) from the command's other errors: a summary or listing failing there
    ended in a traceback.  The list yielded holds each such failure met."""
    stream = sys.stdout
    lost: list = []

    def watched(method):
        def call(*args):
            try:
                return method(*args)
            except OSError as exc:
                lost.append(exc)  # click's own probes of the stream swallow some: the one met is told
                raise
        return call

    saved = {name: stream.__dict__.get(name) for name in ("write", "flush")}
    try:
        stream.write, stream.flush = watched(stream.write), watched(stream.flush)
    except (AttributeError, TypeError):  # a stream that takes no attributes: left as it is
        yield lost
        return
    try:
        yield lost
    finally:
        for name, value in saved.items():
            if value is None:
                stream.__dict__.pop(name, None)
            else:
                setattr(stream, name, value)


def _written(run: Callable[[], object]) -> object:
    """``run()``, with standard output flushed before it ends (here, where a failure can be
    told, not at exit) and a failure to write it one line, exit status 1; what stdout still
    holds is then dropped, so the exit's own flush does not fail once more."""
    with _watching_stdout() as lost:
        try:
            try:
                return run()
            finally:
                sys.stdout.flush()
        except OSError as exc:
            if not any(exc is met for met in lost):
                raise
            devnull = os.open(os.devnull, os.O_WRONLY)  # what stdout still holds is dropped
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            if isinstance(exc, BrokenPipeError):  # "| head": the reader had what it wanted
                raise click.exceptions.Exit(READER_GONE) from None
            raise click.ClickException("cannot write to standard output: %s" % (exc.strerror or "")) from None


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use.

    Ctrl-C ends any command with one line and status 130, as shells and
    scripts expect of an interrupted program (click's own "Aborted!" exits 1,
    which reads as a failure of the command).  A usage error is one line with
    status 2 in every command (vmstats.options.USAGE).
    """

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        with _one_line():  # "vmstats --bogus", and "vmstats --version" to a full disk
            return _written(lambda: super(LazyGroup, self).make_context(info_name, args, parent=parent,
                                                                        **extra))

    def invoke(self, ctx: click.Context) -> object:
        try:
            with _one_line():  # the sub-command's own, and "vmstats nosuchcommand"
                return _written(lambda: super(LazyGroup, self).invoke(ctx))
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
