"""``vmstats agent`` and ``vmstats agent-bundle``: thin click wrappers.

The agent's options are declared once, in the standard-library parser of
config.py, because the bundled agent has no click; ``vmstats agent`` hands
its arguments to that parser untouched, so both spell every flag the same.
"""

import sys

import click

from vmstats.client import bundle
from vmstats.client.__main__ import main as agent_main
from vmstats.options import OutputFile
from vmstats.words import counted


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                 "help_option_names": []},
               add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def agent(args: tuple) -> None:
    """Sample this VM from /proc and push records (see `vmstats agent --help`)."""
    sys.exit(agent_main(list(args), prog="vmstats agent"))


@click.command("agent-bundle")
@click.option("-o", "--output", default="vmstats-agent.pyz", show_default=True,
              type=OutputFile(),
              help="where to write the single-file agent")
def agent_bundle(output: str) -> None:
    """Build the agent as one file that runs with any python3 >= 3.6."""
    try:
        names = bundle.build(output)
    except OSError as exc:
        raise click.ClickException("cannot write %s: %s" % (output, exc.strerror or exc)) from None
    click.echo("%s: %s; run it with: python3 %s --server HOST:PORT"
               % (output, counted(len(names), "file"), output))
