"""``vmstats headroom`` and ``vmstats admit``: the click commands."""

import json
import os
import sys
from typing import NoReturn

import click

from vmstats.capacity import defaults
from vmstats.capacity.backtest_command import backtest_options, run_backtest
from vmstats.options import (
    FiniteRange,
    IntRange,
    OutputFolder,
    Refused,
    cannot_write,
    failure,
    prepare_folder,
)
from vmstats.outputfile import Outputs, together, write_text
from vmstats.report.settings import MAX_DAYS, ReportError


def capacity_options(function):
    """How demand is judged (demand.Settings), shared by every capacity command."""
    options = (
        click.option(
            "--percentile",
            default=defaults.PERCENTILE_TEXT,
            show_default=True,
            help="Percentile of each host's summed demand: p99.9, p99, p95, max or a number.",
        ),
        click.option(
            "--peak-minutes",
            type=IntRange(1, 1440),
            default=defaults.PEAK_MINUTES,
            show_default=True,
            help="Each VM counts its peak of every block of this many minutes (60: hourly peaks; "
            "1: minute by minute).",
        ),
        click.option(
            "--coverage-min",
            type=FiniteRange(0, 1),
            default=0.8,
            show_default=True,
            help="Share of its VMs' minutes a host needs seen; below it the host is unknown.",
        ),
        click.option(
            "--days",
            type=IntRange(1, MAX_DAYS),
            default=14,
            show_default=True,
            help="Look-back in whole UTC days.",
        ),
        click.option("--until", default=None, metavar="YYYY-MM-DD", help="Last day of the window (UTC)."),
        click.option(
            "--reserve-stopped/--no-reserve-stopped",
            default=defaults.RESERVE_STOPPED,
            show_default=True,
            help="A stopped VM (silent for a day, still allocated) keeps room for its own level of "
            "when it ran, which it takes back when it starts; or adds no demand.",
        ),
        click.option(
            "--stopped-share-max",
            type=FiniteRange(0, 100),
            default=defaults.STOPPED_SHARE_MAX * 100,
            show_default=True,
            metavar="PERCENT",
            help="A host more than this share (%) of whose VMs are stopped or never heard from is "
            "unknown: what is measured of it is the lesser part.",
        ),
        click.option(
            "--horizon-days",
            type=FiniteRange(0, MAX_DAYS),
            default=defaults.HORIZON_DAYS,
            show_default=True,
            help="Days ahead a rising trend is projected and added to demand.",
        ),
        click.option(
            "--inventory",
            "inventory_path",
            default=None,
            metavar="FILE",
            help="Host inventory TOML (docs/CAPACITY.md); required but with admit --summary.",
        ),
    )
    for option in reversed(options):
        function = option(function)
    return function


def settings_from(
    percentile: str,
    coverage_min: float,
    days: int,
    horizon_days: float,
    peak_minutes: int,
    reserve_stopped: bool = defaults.RESERVE_STOPPED,
    stopped_share_max: float = defaults.STOPPED_SHARE_MAX * 100,
):
    """demand.Settings from the options (``stopped_share_max`` in per cent, as typed)."""
    from vmstats.capacity.demand import Settings, parse_percentile

    return Settings(
        percentile=parse_percentile(percentile),
        coverage_min=coverage_min,
        days=days,
        horizon_days=horizon_days,
        peak_minutes=peak_minutes,
        reserve_stopped=reserve_stopped,
        stopped_share_max=stopped_share_max / 100.0,
    )


def report_changes(rows: list[dict]):
    """The report's reclaim and downsize advice as a what-if (demand.Change), and its description."""
    from vmstats.capacity.demand import Change

    reclaimed = sorted(r["vm"] for r in rows if r["category"] == "reclaim")
    downsized = {
        r["vm"]: (r["recommended_vcpus"], r["recommended_mem_gb"])
        for r in rows
        if r["category"] == "downsize" and r["recommended_vcpus"] and r["recommended_mem_gb"]
    }
    return Change(frozenset(reclaimed), downsized), {"reclaimed": reclaimed, "downsized": sorted(downsized)}


@click.command()
@click.argument("data_dirs", nargs=-1, required=True, metavar="DATA_DIR...")
@click.option(
    "--profile",
    "profile_text",
    required=True,
    metavar="VCPUSxGB[@USE%]",
    help="The VM profile to fit, e.g. 4x16@30% (4 vCPUs, 16 GB, expected to use 30%).",
)
@capacity_options
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=OutputFolder(),
    default=None,
    help="Folder for headroom.csv, headroom.json and capacity-summary.json.",
)
@click.option("--no-after", is_flag=True, help="Skip the figures after the report's advice (no report run).")
@click.option(
    "--policy", "policy_path", default=None, metavar="FILE", help="Report policy TOML, for the advice."
)
@click.option(
    "--prices", "prices_path", default=None, metavar="FILE", help="Price book TOML, for the advice."
)
@click.option(
    "--exclusions",
    "exclusions_path",
    default=None,
    metavar="FILE",
    help="Exclusions TOML: excluded VMs are never counted as reclaimed.",
)
@click.option("--cache-dir", type=OutputFolder(), default=None, metavar="DIR",
              help="The report's statistics cache.")
@click.option(
    "--top",
    type=IntRange(0, 100000),
    default=20,
    show_default=True,
    help="Hosts listed on the terminal.",
)
def headroom(
    data_dirs,
    profile_text,
    percentile,
    peak_minutes,
    coverage_min,
    days,
    until,
    reserve_stopped,
    stopped_share_max,
    horizon_days,
    inventory_path,
    out_dir,
    no_after,
    policy_path,
    prices_path,
    exclusions_path,
    cache_dir,
    top,
):
    """How many more VMs of a profile fit per host and in the fleet, from DATA_DIR logs.

    Demand per host is its VMs' use (each VM's hourly peaks by default) summed
    minute by minute, at a high percentile; the figures are given now and after the report's reclaim and
    downsize advice, with the allocation-based (Nova) count beside them.
    """
    from vmstats.capacity import outputs
    from vmstats.capacity.inventory import load_inventory
    from vmstats.capacity.profiles import parse_profile
    from vmstats.capacity.summary import SUMMARY_FILE
    from vmstats.report.outputs import damaged_files_summary

    if not inventory_path:
        raise click.UsageError("Missing option '--inventory'.")
    try:
        profile = parse_profile(profile_text)
        settings = settings_from(percentile, coverage_min, days, horizon_days, peak_minutes, reserve_stopped,
                                 stopped_share_max)
        inventory = load_inventory(inventory_path)
        if out_dir is not None:
            prepare_folder(out_dir, (*outputs.OUTPUTS, SUMMARY_FILE))
        advice = None
        if not no_after:
            advice, meta = _advice(data_dirs, days, until, policy_path, prices_path, exclusions_path,
                                   cache_dir)
            # The figures now and after rest on the days the advice was made on: the report's own.
            settings, until = report_days(settings, meta["window"])
        with together() as files:  # headroom.csv, .json and the summary: all or none
            summary = files.stage(os.path.join(out_dir, SUMMARY_FILE)) if out_dir is not None else None
            result = from_logs(data_dirs, inventory, inventory_path, profile, settings, until, advice,
                               summary)
            if advice is not None:  # the damaged files the report met (a newest day of junk) too
                result["basis"].update(_named_with(result["basis"], meta))
            if out_dir is not None:
                outputs.write(result, out_dir, files)
    except ReportError as exc:
        raise failure(exc) from None
    except OSError as exc:
        raise click.ClickException(cannot_write(out_dir, exc)) from None
    click.echo(outputs.terminal(result, top, written=out_dir is not None))
    rest = "all named in headroom.json (basis.%s)"
    damaged_files_summary(result["basis"], sys.stderr, rest if out_dir is not None else "-o OUT/: " + rest)


def from_logs(
    data_dirs,
    inventory,
    inventory_path: str,
    profile,
    settings,
    until,
    advice,
    summary_path: str | None = None,
) -> dict:
    """The headroom result (headroom.result) of the logs, now and, with ``advice`` (a
    demand.Change and its description), after it: one pass over the logs for both.

    With ``summary_path`` the per-host summary of now (summary.SUMMARY_FILE) is
    written there too (its folder made), so ``vmstats admit --summary`` answers from
    this pass instead of reading the logs again.
    """
    from vmstats.capacity import headroom as headroom_mod
    from vmstats.capacity import reader
    from vmstats.capacity.demand import Change, demand_views
    from vmstats.capacity.summary import summarise

    logs = reader.find_logs(data_dirs, settings.days, until)
    changes = [Change()] + ([advice[0]] if advice else [])
    views = demand_views(inventory, reader.read_vms(logs), logs.window, settings, changes,
                         reader.read_gone(logs))
    named = logs.named()
    if summary_path:
        os.makedirs(os.path.dirname(summary_path) or ".", exist_ok=True)
        write_text(summary_path, summarise(views[0], named).to_json())
    return headroom_mod.result(
        views[0],
        views[1] if advice else None,
        profile,
        advice[1] if advice else None,
        {"inventory": inventory_path, **named},
    )


def report_section(
    data_dirs, report, inventory, inventory_path: str, profile, out_dir: str, files: Outputs
) -> dict:
    """The report's capacity section: headroom for ``profile`` now and after the report's own advice
    (and the per-host summary in ``out_dir``, for ``vmstats admit --summary``, staged in ``files``
    with the report's own).

    It reads the report's own UTC days (``meta.window``), whichever of ``--days``, ``--since``
    and ``--until`` chose them: a page whose headroom came from other days than its verdicts
    would set a reclaim's room against load it was not judged on.

    The damaged log files this pass met are named once, with the report's own in
    ``report.meta`` (its terminal summary and page read them there); the section's basis
    points there instead of listing them a second time.
    """
    from vmstats.capacity.demand import Settings
    from vmstats.capacity.summary import SUMMARY_FILE
    from vmstats.report.issues import named_files

    change, described = report_changes(report.rows)
    described["source"] = "this report"
    described["window"] = advice_days(report.meta["window"])
    advice = (change, described)
    settings, until = report_days(Settings(), report.meta["window"])
    section = from_logs(
        data_dirs, inventory, inventory_path, profile, settings, until, advice,
        files.stage(os.path.join(out_dir, SUMMARY_FILE)),
    )
    basis, meta = section["basis"], report.meta
    met = basis.pop("skipped_files") + basis.pop("damaged_files")
    # The report's entry of a file both met comes last, so it is the one kept.
    meta.update(named_files(met + meta["skipped_files"] + meta["damaged_files"]))
    basis["damaged_logs"] = "meta.skipped_files, meta.damaged_files"
    return section


def _named_with(basis: dict, meta: dict) -> dict[str, list[dict]]:
    """The damaged log files a capacity pass met (``basis``) and those its report met (``meta``),
    each named once: a report's window ends before a newest day file with no record in it, so
    the capacity pass on its days never reads that file."""
    from vmstats.report.issues import named_files

    met = basis["skipped_files"] + basis["damaged_files"]
    return named_files(meta["skipped_files"] + meta["damaged_files"] + met)


def report_days(settings, window: dict):
    """``settings`` for the report's UTC days (its ``meta.window``), and the last of them as
    ``--until``: a capacity pass on them reads the days the report's advice was made on, whichever
    the report chose (its window ends with the last day holding a record, so a newest day file
    with none, torn or junk, moves it back a day)."""
    from dataclasses import replace

    from vmstats import logstore

    days = logstore.day_number(window["last_day"]) - logstore.day_number(window["first_day"]) + 1
    return replace(settings, days=days), window["last_day"]


def advice_days(window: dict) -> dict:
    """The UTC days the report's advice rests on (its ``meta.window``), as a capacity window names
    its own (demand.day_span): ``{"first_day", "last_day", "days"}``."""
    from vmstats.capacity.demand import day_span

    return day_span(window["start"], window["end"])


def _advice(data_dirs, days, until, policy_path, prices_path, exclusions_path, cache_dir):
    """Run the report on the same window; its reclaim and downsize rows become the what-if.
    Returns the what-if and its description, and the report's ``meta``."""
    from vmstats.report.build import build
    from vmstats.report.prices import PriceBook
    from vmstats.report.settings import Policy

    policy = Policy.load(policy_path, {"days": days})
    report = build(
        data_dirs,
        policy,
        PriceBook.load(prices_path),
        exclusions_path,
        until=until,
        cache_dir=cache_dir,
        workers=min(4, os.cpu_count() or 1),
    )
    change, described = report_changes(report.rows)
    described["source"] = "policy %s" % policy.source
    described["window"] = advice_days(report.meta["window"])
    return (change, described), report.meta


def load_manifest(path: str):
    """A manifest file (TOML, or JSON when it ends in .json) checked; CapacityError otherwise."""
    from vmstats import inputfile
    from vmstats.capacity.admission import parse_manifest
    from vmstats.capacity.errors import CapacityError

    try:
        raw = inputfile.read_bytes(path)
        if path.endswith(".json"):
            data = inputfile.parse_json(raw, path)
        else:
            data = inputfile.parse_toml(raw, path)
    except inputfile.FileProblem as exc:
        raise CapacityError("manifest %s" % exc) from None
    return parse_manifest(data, path)


@click.command()
@click.argument("paths", nargs=-1, metavar="MANIFEST DATA_DIR...")
@capacity_options
@click.option(
    "--json", "as_json", is_flag=True, help="Print the answer as JSON (as POST /admission gives it)."
)
@click.option(
    "--summary",
    "summary_path",
    default=None,
    metavar="FILE",
    help="Answer from the per-host summary a report or headroom run wrote (capacity-summary.json) "
    "instead of reading the logs: MANIFEST is then the only argument; the summary's settings apply.",
)
@backtest_options
def admit(
    paths,
    percentile,
    peak_minutes,
    coverage_min,
    days,
    until,
    reserve_stopped,
    stopped_share_max,
    horizon_days,
    inventory_path,
    as_json,
    summary_path,
    backtest,
    arrivals,
    arrival_profile,
):
    """Answer a deployment manifest from DATA_DIR logs: accept, partial or reject, with an offer.

    Exits 0 on accept, 3 on partial, 4 on reject, so a pipeline can gate on it.
    With --backtest (every argument a DATA_DIR): plan on one window, admit
    arrivals by the offer, and judge the next window (docs/CAPACITY.md).
    """
    from vmstats.capacity import admission
    from vmstats.capacity import summary as summary_mod

    try:
        settings = settings_from(percentile, coverage_min, days, horizon_days, peak_minutes, reserve_stopped,
                                 stopped_share_max)
    except ReportError as exc:
        raise failure(exc) from None
    if not paths:  # click's "Missing argument 'MANIFEST DATA_DIR...'" asked --backtest for a manifest
        raise Refused("--backtest needs DATA_DIR... (the logs to plan and judge on)" if backtest else
                      "expected MANIFEST DATA_DIR... (or --backtest DATA_DIR...)")
    if summary_path:
        if backtest or arrivals is not None or arrival_profile is not None or len(paths) != 1:
            raise Refused(
                "with --summary the manifest is the only argument (no DATA_DIR, no backtest)"
            )
        try:
            result = admission.answer(load_summary(summary_path), load_manifest(paths[0]))
        except ReportError as exc:
            raise failure(exc) from None
        return _print_answer(result, as_json)
    if not inventory_path:
        raise click.UsageError("Missing option '--inventory'.")
    if backtest:
        run_backtest(paths, settings, inventory_path, until, arrivals, arrival_profile, as_json)
        return
    if arrivals is not None or arrival_profile is not None:
        raise Refused("--arrivals and --arrival-profile go with --backtest")
    if len(paths) < 2:
        raise Refused("expected MANIFEST DATA_DIR... (or --backtest DATA_DIR...)")
    manifest_path, data_dirs = paths[0], paths[1:]
    try:
        manifest = load_manifest(manifest_path)
        summary = summary_mod.from_logs(data_dirs, inventory_path, settings, until)
        result = admission.answer(summary, manifest)
    except ReportError as exc:
        raise failure(exc) from None
    _print_answer(result, as_json)


def _print_answer(result: dict, as_json: bool) -> NoReturn:
    """The answer on stdout (JSON or the terminal's lines), the damaged logs its summary rests on
    named on stderr (whether read now or by the run that left the summary); the exit status says
    which answer."""
    from vmstats.capacity import admission
    from vmstats.report.outputs import damaged_files_summary

    damaged_files_summary(result["basis"], sys.stderr, "all named in the answer's basis.%s (--json)")

    if as_json:
        json.dump(result, sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
    else:
        click.echo(admission.terminal(result))
    sys.exit(EXIT[result["status"]])


def load_summary(path: str):
    """A per-host summary file (summary.SUMMARY_FILE) read back; CapacityError when it cannot be used."""
    from vmstats.capacity.errors import CapacityError
    from vmstats.capacity.summary import Summary

    try:
        with open(path, "rb") as handle:
            return Summary.from_json(handle.read())
    except OSError as exc:
        raise CapacityError("summary %s cannot be read: %s" % (path, exc.strerror or exc)) from None
    except (ValueError, TypeError, KeyError) as exc:
        raise CapacityError("summary %s is not a capacity summary: %s" % (path, exc)) from None


#: Exit status of ``vmstats admit`` per answer.
EXIT = {"accept": 0, "partial": 3, "reject": 4}
