"""``vmstats admit --backtest``: the command-line side of the admission backtest (backtest.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import click

from vmstats.options import Refused, failure
from vmstats.report.settings import ReportError

#: Options only the backtest takes, added to ``vmstats admit``.
BACKTEST_OPTIONS = (
    click.option("--backtest", is_flag=True,
                 help="Plan on --days of logs, admit arrivals by the offer, and judge host-minutes over "
                      "capacity on the next --days (every argument is then a DATA_DIR; --until is the plan's "
                      "last day, by default the latest day with logs less --days)."),
    click.option("--arrivals", default=None, metavar="SELECTORS",
                 help="--backtest: VMs of the logs whose copies arrive (ids, globs, CIDRs, comma-separated). "
                      "Default: the VMs the inventory does not place."),
    click.option("--arrival-profile", default=None, metavar="PROFILE",
                 help="--backtest: synthetic arrivals of this profile (e.g. 4x16@30%) instead of VMs "
                      "of the logs."),
)


def backtest_options(function):
    for option in reversed(BACKTEST_OPTIONS):
        function = option(function)
    return function


def run_backtest(data_dirs: Sequence[str], settings, inventory_path: str, until: str | None,
                 arrivals: str | None, profile_text: str | None, as_json: bool) -> None:
    """Run the backtest and print it (terminal summary, or JSON); one line on bad input."""
    from vmstats.capacity import backtest
    from vmstats.capacity.inventory import load_inventory
    from vmstats.capacity.profiles import parse_profile

    if arrivals is not None and profile_text is not None:
        raise click.UsageError("--arrivals and --arrival-profile are two kinds of arrivals: give one")
    selectors = [part.strip() for part in (arrivals or "").split(",") if part.strip()]
    if arrivals is not None and not selectors:  # "$ARRIVALS" unset: not the default's VMs
        raise Refused("--arrivals %r names no VM: give ids, globs or CIDRs, or leave it out for "
                      "the VMs the inventory does not place" % arrivals)
    try:
        inventory = load_inventory(inventory_path)
        profile = parse_profile(profile_text) if profile_text is not None else None
        result = backtest.run(data_dirs, inventory, settings, settings.days, until, selectors, profile)
    except ReportError as exc:
        raise failure(exc) from None
    for short in result.fewer_days():  # on stderr with --json too, where no one reads the header
        click.echo("warning: " + short, err=True)
    if as_json:
        json.dump(result.as_dict(), sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
    else:
        click.echo(backtest.render(result))
