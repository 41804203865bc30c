"""``vmstats report``: the click command."""

import contextlib
import errno
import gc
import os
import sys
from typing import Any

import click

from vmstats.options import FloatRange, IntRange, OutputFolder, Refused, cannot_write, failure, prepare_folder
from vmstats.outputfile import Outputs, together
from vmstats.progress import Progress
from vmstats.report.settings import DEFAULTS, MAX_DAYS, SETTINGS, InputError, ReportError, coerce
from vmstats.words import counted

_MEANING = {s.name: s.meaning for s in SETTINGS}
_UNIT = {s.name: s.unit for s in SETTINGS}

#: Threshold flags (the policy's main knobs); any other setting goes through --set.
_FLAGS = (
    "coverage_min",
    "idle_percentile",
    "cpu_idle",
    "disk_idle",
    "net_idle",
    "stopped_after_hours",
    "headroom",
    "schedule_min_off_hours",
    "utc_offset_hours",
)


def _threshold_options(function):
    for name in reversed(_FLAGS):
        function = click.option(
            "--" + name.replace("_", "-"),
            name,
            type=FloatRange(),
            default=None,
            help="%s (default %s)."
            % (
                _MEANING[name][:1].upper() + _MEANING[name][1:],
                "auto" if DEFAULTS[name] is None else "%g %s" % (DEFAULTS[name], _UNIT[name]),
            ),
        )(function)
    return function


def policy_options(function):
    """The options of every command that runs the report: policy, prices, exclusions, cache."""
    options = (
        click.option(
            "--policy", "policy_path", default=None, metavar="FILE", help="Policy TOML (thresholds, groups)."
        ),
        click.option(
            "--prices",
            "prices_path",
            default=None,
            metavar="FILE",
            help="Price book TOML (default: the shipped example, and the report says so).",
        ),
        click.option(
            "--exclusions",
            "exclusions_path",
            default=None,
            metavar="FILE",
            help="Exclusions TOML: [[exclude]] vm, reason, expires.",
        ),
        _threshold_options,
        click.option(
            "--set", "extra", multiple=True, metavar="KEY=VALUE", help="Override any policy setting."
        ),
        click.option(
            "--cache-dir",
            type=OutputFolder(),
            default=None,
            metavar="DIR",
            help="Statistics cache (default OUT/.cache).",
        ),
        click.option("--no-cache", is_flag=True, help="Neither read nor write the cache."),
        click.option(
            "--workers",
            type=IntRange(1, 64),
            default=None,
            help="Parsing processes (default: CPUs, <= 4).",
        ),
    )
    for option in reversed(options):
        function = option(function)
    return function


def policy_overrides(flags: dict, extra: tuple[str, ...]) -> dict:
    """Setting flags that were given (``--cpu-idle``, ``--days``...), then each ``--set KEY=VALUE``.

    Each ``--set`` is checked here, where it is still known to be one: Policy.load
    names an override by its flag, and most settings have none (``--set days=...`` is
    not ``--days``).  A ``--set`` and a flag, or two ``--set``, that give one setting
    two values are refused: both are the command line, so neither has a better claim
    to win, and a silent last-one-wins hides the typo of a long command line.
    """
    given = {k: v for k, v in flags.items() if v is not None}
    overrides = dict(given)
    earlier: dict[str, tuple[str, Any]] = {}  # key -> (the --set that gave it, its value)
    for item in extra:
        key, sep, value = item.partition("=")
        if not sep:
            raise Refused("--set expects KEY=VALUE, got %r" % item)
        key, value = key.strip(), value.strip()
        try:
            wanted = coerce(key, value, "--set %s" % item)
            flag = "--" + key.replace("_", "-")
            if key in given and coerce(key, given[key], "option " + flag) != wanted:
                raise InputError(
                    "--set %s and %s %g give %s two values: give one of them"
                    % (item, flag, given[key], key)
                )
            if key in earlier and earlier[key][1] != wanted:
                raise InputError(
                    "--set %s and --set %s give %s two values: give one of them"
                    % (earlier[key][0], item, key)
                )
        except ReportError as exc:
            raise failure(exc) from None
        earlier.setdefault(key, (item, wanted))
        overrides[key] = value
    return overrides


def load_inputs(policy_path, prices_path, overrides: dict, out_dir: str, cache_dir, no_cache: bool, workers):
    """Policy, price book and loading options (cache, workers) of a report run; ReportError on bad input.

    The command has prepared its output folder first (options.prepare_folder):
    a place the report cannot be written fails before any log is read.
    """
    from vmstats.report.prices import PriceBook
    from vmstats.report.settings import Policy

    policy = Policy.load(policy_path, overrides)
    prices = PriceBook.load(prices_path)
    inconsistent = prices.bigger_but_cheaper()
    if inconsistent:
        click.echo("warning: price book %s" % inconsistent, err=True)  # backtest's too
    if not no_cache and cache_dir is None:
        cache_dir = os.path.join(out_dir, ".cache")
    return (
        policy,
        prices,
        {"cache_dir": None if no_cache else cache_dir, "workers": workers or min(4, os.cpu_count() or 1)},
    )


def write_report(result, out_dir: str, outputs: Outputs) -> None:
    """report.csv, report.json and report.html of a built report in ``out_dir``, and
    statement.csv when it has a statement (``--by``), staged in ``outputs``: they are put in
    place with the run's other files once all are written (vmstats.outputfile.together).

    The page is rendered in a forked child while this process writes the CSV and JSON: the
    two take about as long (~0.15 s each for 1,000 VMs) and share nothing but the report.
    """
    from vmstats.report.outputs import write_csv, write_json
    from vmstats.report.statement import STATEMENT_NAME
    from vmstats.report.statement import write_csv as write_statement

    os.makedirs(out_dir, exist_ok=True)
    with beside(_render, result, outputs.stage(os.path.join(out_dir, "report.html")), "report.html"):
        write_csv(result, outputs.stage(os.path.join(out_dir, "report.csv")))
        write_json(result, outputs.stage(os.path.join(out_dir, "report.json")))
    if result.meta.get("statement"):
        write_statement(result.meta["statement"], outputs.stage(os.path.join(out_dir, STATEMENT_NAME)))


def remove_old_statement(result, out_dir: str) -> None:
    """Remove the statement.csv an earlier run with ``--by`` left in ``out_dir``, when this
    run's report has none; called once the report's files are in place.

    A nightly report into the same folder would otherwise keep last month's
    bill beside this run's report, for a chargeback job to pick up as current.
    """
    from vmstats.report.statement import STATEMENT_NAME

    if result.meta.get("statement"):
        return
    path = os.path.join(out_dir, STATEMENT_NAME)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        click.echo("vmstats report: warning: %s is of an earlier run (this one has no --by) and "
                   "cannot be removed: %s" % (path, exc.strerror), err=True)
        return
    click.echo("vmstats report: removed %s of an earlier run (this one has no --by)" % path, err=True)


def _render(result, path: str) -> None:
    """report.html, its template engine imported where the page is rendered (the child)."""
    from vmstats.report.render import render

    render(result, path)


#: Rows of a report below which its page is rendered in this process (a fork costs more).
_FORK_ROWS = 200


@contextlib.contextmanager
def beside(function, result, path: str, name: str | None = None):
    """Run ``function(result, path)`` in a forked child while the block runs, then wait for it.

    The child's failure is raised here as it would have been in this process: an OSError
    with its errno and message (the caller names the output folder), anything else as a
    ReportError naming the file (``name``, by default the last part of ``path``).  Without
    fork, on one CPU, or for a small report it simply runs here first.
    """
    if len(result.rows) < _FORK_ROWS or (os.cpu_count() or 1) < 2 or not hasattr(os, "fork"):
        function(result, path)
        yield
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: render, report a failure through the pipe, never return
        code = 0
        try:
            os.close(read_end)
            function(result, path)
        except OSError as exc:
            os.write(write_end, ("%d\0%s" % (exc.errno or 0, exc.strerror or exc)).encode())
            code = 1
        except BaseException as exc:  # every failure goes back to the parent
            os.write(write_end, ("-1\0%s: %s" % (type(exc).__name__, exc)).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        yield
    finally:
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read().decode(errors="replace")
        _pid, status = os.waitpid(pid, 0)
    name = name or os.path.basename(path)
    if message:
        number, _sep, text = message.partition("\0")
        if int(number) >= 0:
            raise OSError(int(number) or errno.EIO, text)
        raise ReportError("%s not written: %s" % (name, text))
    if status:
        raise ReportError("%s not written: its process ended with status %d" % (name, status))


#: Allocations between two collections of the garbage collector's youngest generation while a
#: report is built (Python's default: 700).
_REPORT_GC_THRESHOLD = 100_000


@contextlib.contextmanager
def fewer_collections():
    """The cyclic garbage collector run rarely while a report is built and written.

    A long window's report makes hundreds of thousands of small objects that form no cycle
    (a key, a list and a source per VM-day, the rows' values); at the default threshold the
    collector walks them again and again: ~0.15 s of CPU of a 90-day report of 1,000 VMs
    from rollups.  Cycles are still collected, less often.
    """
    before = gc.get_threshold()
    gc.set_threshold(_REPORT_GC_THRESHOLD, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def one_blas_thread() -> None:
    """numpy's BLAS (OpenBLAS) with one thread, unless OPENBLAS_NUM_THREADS says otherwise; only
    before numpy is imported does it count.

    OpenBLAS starts a thread per core when numpy is imported, which spin for ~0.1 s of CPU
    (half of a report process's imports) and then serve nothing: the report multiplies only
    matrices of a few dozen rows, which OpenBLAS keeps on one thread anyway.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def use_system_allocator() -> None:
    """Arrow's buffers from the C library's malloc instead of Arrow's default (mimalloc), unless
    ARROW_DEFAULT_MEMORY_POOL says otherwise.

    The report decodes file after file and drops most of each at once; mimalloc gave those
    pages back and faulted them in again for the next file: a 90-day report of 1,000 VMs from
    rollups spent ~1.15 s of system time instead of ~0.35 s, one columnar day of 1,000 VMs
    ~2 s instead of ~0.6 s, same user time, a lower peak (BENCHMARKS.md, "Storage tiers").
    """
    # Arrow reads the variable when its default pool is first asked for: set here, it spares
    # importing pyarrow (~20 ms) in a report that reads no columnar file, and forked parsing
    # processes inherit it.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")


class _Progress(Progress):
    """Parsing progress of a report run (vmstats.progress), shown for 100 VM-days or more,
    then one closing line."""

    def __init__(self) -> None:
        super().__init__("report", "VM-days parsed", quiet_below=100)

    def close(self, line: str | None = None) -> None:
        super().close(line or "parsed %s in %.1f s" % (counted(self.total or 0, "VM-day"), self.elapsed()))


@click.command()
@click.argument("data_dirs", nargs=-1, required=True, metavar="DATA_DIR...")
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=OutputFolder(),
    required=True,
    help="Folder for report.html, report.csv, report.json.",
)
@click.option(
    "--days",
    type=IntRange(1, MAX_DAYS),
    default=None,
    help="Look-back in whole days (default %d)." % DEFAULTS["days"],
)
@click.option("--since", default=None, metavar="YYYY-MM-DD", help="First day of the window (UTC).")
@click.option("--until", default=None, metavar="YYYY-MM-DD", help="Last day of the window (UTC).")
@policy_options
@click.option("--top", type=IntRange(0, 1000), default=10, show_default=True,
              help="Candidates listed on the terminal.")
@click.option(
    "--by",
    default=None,
    metavar="TAG",
    help="Group costs by a tag (host, or an agent's extra tag such as project) into a statement: "
    "statement.csv and a section of the HTML.",
)
@click.option(
    "--inventory",
    "inventory_path",
    default=None,
    metavar="FILE",
    help="Host inventory (docs/CAPACITY.md): adds a capacity section, room per host for --profile.",
)
@click.option(
    "--profile",
    "profile_text",
    default="4x16@30%",
    show_default=True,
    metavar="VCPUSxGB[@USE%]",
    help="The VM profile the capacity section counts (with --inventory).",
)
@click.option(
    "--dask",
    "dask_address",
    default=None,
    metavar="ADDRESS",
    help="Parse the logs on a Dask cluster: its scheduler (tcp://HOST:8786), which must see the "
    "data dirs at the same paths, or 'local' for --workers processes on this machine.",
)
def report(
    data_dirs,
    out_dir,
    days,
    since,
    until,
    policy_path,
    prices_path,
    exclusions_path,
    extra,
    cache_dir,
    no_cache,
    workers,
    top,
    by,
    inventory_path,
    profile_text,
    dask_address,
    **thresholds,
):
    """Rank idle and oversized VMs for reclamation, with savings, from DATA_DIR logs.

    Several DATA_DIRs (aggregators behind a load balancer) give one report;
    a VM present in several is merged and duplicate records dropped.
    """
    one_blas_thread()
    from vmstats.report.build import build
    from vmstats.report.outputs import OUTPUTS, terminal_summary

    overrides = policy_overrides(dict(thresholds, days=days), extra)
    if since is not None and "days" in overrides:
        given = "--days %d" % days if days is not None else "--set days=%s" % overrides["days"]
        raise Refused(
            "%s and --since %s both choose the window's first day: give --since [--until] or"
            " --days [--until]" % (given, since)
        )
    use_system_allocator()
    progress = _Progress()
    try:
        with fewer_collections():
            prepare_folder(out_dir, OUTPUTS)
            policy, prices, loading = load_inputs(
                policy_path, prices_path, overrides, out_dir, cache_dir, no_cache, workers
            )
            placement = None
            if inventory_path:  # checked before any log is read
                from vmstats.capacity.inventory import load_inventory
                from vmstats.capacity.profiles import parse_profile

                inventory, profile = load_inventory(inventory_path), parse_profile(profile_text)
                placement = inventory.host_of  # the capacity section's hosts, in every output
            with contextlib.ExitStack() as stack:
                if dask_address:
                    from vmstats.report import distributed

                    loading["pool"] = stack.enter_context(
                        distributed.pool(dask_address, data_dirs, loading["workers"])
                    )
                result = build(
                    data_dirs,
                    policy,
                    prices,
                    exclusions_path,
                    since=since,
                    until=until,
                    progress=progress,
                    by=by,
                    placement=placement,
                    **loading,
                )
            progress.close()
            with together() as outputs:  # all in place, or none of them
                if inventory_path:
                    from vmstats.capacity.command import report_section

                    result.meta["capacity"] = report_section(
                        data_dirs, result, inventory, inventory_path, profile, out_dir, outputs
                    )
                write_report(result, out_dir, outputs)
            remove_old_statement(result, out_dir)
    except ReportError as exc:
        raise failure(exc) from None
    except OSError as exc:
        raise click.ClickException(cannot_write(out_dir, exc)) from None
    if result.meta.get("statement_unmatched"):
        click.echo("vmstats report: warning: " + result.meta["statement_unmatched"], err=True)
    free = prices.free_outside_sizes([(r["vm"], r["vcpus"], r["mem_gb"]) for r in result.rows
                                      if r["vcpus"] is not None and r["mem_gb"] is not None])
    if free:
        click.echo("vmstats report: warning: price book " + free, err=True)
    terminal_summary(result, out_dir, sys.stdout, top=top)
