"""``vmstats backtest``: the click command."""

import os
import sys

import click

from vmstats.options import IntRange, OutputFolder, cannot_write, failure, prepare_folder
from vmstats.outputfile import together
from vmstats.report.command import (
    _Progress,
    load_inputs,
    policy_options,
    policy_overrides,
    remove_old_statement,
    write_report,
)
from vmstats.report.settings import MAX_DAYS, ReportError


@click.command()
@click.argument("data_dirs", nargs=-1, required=True, metavar="DATA_DIR...")
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=OutputFolder(),
    required=True,
    help="Folder for backtest.html, backtest.csv, backtest.json.",
)
@click.option(
    "--decide-until",
    default=None,
    metavar="YYYY-MM-DD",
    help="Last day (UTC) of the deciding window (default: leaves --judge-days of logs after it).",
)
@click.option(
    "--decide-days",
    type=IntRange(1, MAX_DAYS),
    default=14,
    show_default=True,
    help="Whole days the report decides on.",
)
@click.option(
    "--judge-days",
    type=IntRange(1, MAX_DAYS),
    default=14,
    show_default=True,
    help="Whole days after the deciding window the decisions are judged on.",
)
@policy_options
@click.option("--top", type=IntRange(0, 1000), default=10, show_default=True,
              help="Faults listed on the terminal.")
def backtest(
    data_dirs,
    out_dir,
    decide_until,
    decide_days,
    judge_days,
    policy_path,
    prices_path,
    exclusions_path,
    extra,
    cache_dir,
    no_cache,
    workers,
    top,
    **thresholds,
):
    """Check the report's advice against what the fleet did next, from DATA_DIR logs.

    Runs the report on the deciding window, then judges each decision on the
    following days: reclaimed VMs that were busy, downsized VMs that overran
    their new size, scheduled VMs busy in their off-hours, and quiet VMs that
    were not reclaimed (missed savings).  The report of the deciding window is
    written too, in OUT/decision/.
    """  # fmt: skip
    from vmstats.report import backtest_outputs as outputs
    from vmstats.report.backtest import run
    from vmstats.report.outputs import OUTPUTS

    overrides = policy_overrides(thresholds, extra)
    progress = _Progress()
    try:
        prepare_folder(out_dir, outputs.FILES)
        prepare_folder(os.path.join(out_dir, "decision"), OUTPUTS)
        policy, prices, loading = load_inputs(
            policy_path, prices_path, overrides, out_dir, cache_dir, no_cache, workers
        )
        result = run(
            data_dirs,
            policy,
            prices,
            exclusions_path,
            decide_until=decide_until,
            decide_days=decide_days,
            judge_days=judge_days,
            progress=progress,
            **loading,
        )
        progress.close()
        decision = os.path.join(out_dir, "decision")
        with together() as files:  # the decision's report and the backtest's, all or none
            write_report(result.decision, decision, files)
            outputs.write_csv(result, files.stage(os.path.join(out_dir, "backtest.csv")))
            outputs.write_json(result, files.stage(os.path.join(out_dir, "backtest.json")))
            outputs.render(result, files.stage(os.path.join(out_dir, "backtest.html")))
        remove_old_statement(result.decision, decision)
    except ReportError as exc:
        raise failure(exc) from None
    except OSError as exc:
        raise click.ClickException(cannot_write(out_dir, exc)) from None
    outputs.terminal_summary(result, out_dir, sys.stdout, top=top)
