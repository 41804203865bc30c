"""``vmstats serve``: the click front end of the aggregator."""

import logging
import sys
import time

import click

from vmstats import inputfile, protocol
from vmstats.options import FileName, FiniteRange, FolderName, IntRange, Refused
from vmstats.report.settings import MAX_DAYS
from vmstats.server.config import MAX_RCVBUF, MIN_PER_VM, ServerConfig, format_duration, parse_duration
from vmstats.server.connections import ListenError, allow_network, resolve_bind
from vmstats.server.journal import FSYNC_POLICIES


class _Duration(click.ParamType):
    """A duration (90s, 5m, 1h); ``period``: the time between two runs of a job, never 0.

    A period of 0 did not mean "never" (as --compact-interval's 0 does): the fsync and
    capacity jobs ran back to back, a core busy for nothing, and the flush silently ran
    every second (the scheduler's floor).
    """

    name = "duration"

    def __init__(self, period: bool = False):
        self.period = period

    def convert(self, value, param, ctx):
        try:
            seconds = float(value) if isinstance(value, (int, float)) else parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if self.period and seconds <= 0:
            self.fail("%r is a period between two runs: it must be more than 0s" % value, param, ctx)
        return seconds


DURATION = _Duration()
PERIOD = _Duration(period=True)
#: The defaults live in ServerConfig; the options show them.
D = ServerConfig()


def _seconds(value: float) -> str:
    return "%gs" % value


def retention_options(command):
    """The compaction and retention settings (docs/STORAGE.md), shared by serve and compact."""
    for name, flag, meaning in reversed((
        ("compact_after", "--compact-after",
         "Compact a closed day's CSV files once the day ended this long ago."),
        ("retain_raw", "--retain-raw",
         "Keep a day's rows this long after it ended; its VM-day rollups stay."),
        ("retain_rollups", "--retain-rollups", "Keep a day's VM-day rollups this long after it ended."),
    )):
        command = click.option(flag, type=DURATION, default=format_duration(getattr(D, name)),
                               show_default=True, help=meaning)(command)
    return command


class UTCFormatter(logging.Formatter):
    """Log times in UTC, saying so (``2026-12-05T02:10:00.123Z``): the day files, /status, the
    report and the records' stamps are all UTC, and a server log in the machine's local zone,
    unmarked, put an operator in Europe or Asia an hour or nine off beside them."""

    converter = time.gmtime
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"


@click.command()
@click.option("--bind", default=D.bind, show_default=True,
              help="Address or host name to listen on (a name is resolved once, IPv4 first).")
@click.option("--udp-port", type=IntRange(0, 65535), default=D.udp_port,
              show_default=True, help="UDP port (0 = ephemeral).")
@click.option("--tcp-port", type=IntRange(0, 65535), default=D.tcp_port,
              show_default=True, help="TCP port (0 = ephemeral).")
@click.option("--http-port", type=IntRange(-1, 65535), default=D.http_port,
              show_default=True, help="HTTP port for /metrics and /status (0 = ephemeral, -1 = off).")
@click.option("--no-http", is_flag=True, help="Do not serve /metrics and /status.")
@click.option("--data-dir", default=D.data_dir, show_default=True, type=FolderName(),
              help="Where the per-VM logs go.")
@click.option("--compact-interval", type=DURATION, default=format_duration(D.compact_interval),
              show_default=True,
              help="How often a compaction pass runs (vmstats compact, in its own process; 0 = never).")
@retention_options
@click.option("--flush-interval", type=PERIOD, default=_seconds(D.flush_interval), show_default=True,
              help="How often the buffer is written to the logs.")
@click.option("--workers", type=IntRange(1, 256), default=None,
              help="Writer processes (default: number of cores).")
@click.option("--parsers", type=IntRange(0, 256), default=None,
              help="Parser processes that take the regex work off the reactor "
                   "(default: number of cores; 0 = parse in the reactor).")
@click.option("--parser-timeout", type=DURATION, default=_seconds(D.parser_timeout),
              show_default=True,
              help="A parser or decoding process that holds payloads this long without answering "
                   "is killed and restarted; the reactor parses them (nothing is lost).")
@click.option("--duration", type=DURATION, default=None,
              help="Stop after this long (90s, 5m, 1h); default: until SIGINT/SIGTERM.")
@click.option("--status-file", type=FileName(), default=None,
              help="Write ports and pid here as JSON once listening.")
@click.option("--auth-keys", type=click.Path(), default=None,
              help="Key file ('key_id secret [vm-pattern ...]' per line): require signed frames; "
                   "a key with patterns may sign only for those VMs (ids, globs, CIDRs).")
@click.option("--sig-window", type=IntRange(1), default=D.sig_window,
              show_default=True, help="Seconds a signed frame's time may differ from ours.")
@click.option("--max-buffered", type=IntRange(1), default=D.max_buffered, show_default=True,
              help="Global cap on buffered records (reaching it flushes early).")
@click.option("--max-per-vm", type=IntRange(MIN_PER_VM), default=D.max_per_vm,
              show_default=True,
              help="Cap on buffered records of one VM; at least %d, a batch of one VM's records "
                   "(a larger batch could never be acknowledged: it is answered busy each time)."
                   % MIN_PER_VM)
@click.option("--max-vms", type=IntRange(1), default=D.max_vms, show_default=True,
              help="Cap on VMs known at once: records of new VMs beyond it are dropped "
                   "(counted; VMs silent 10 min are forgotten when it is reached).")
@click.option("--edge-max-open", type=IntRange(1), default=D.edge_max_open, show_default=True,
              help="Cap on minutes of Telegraf, collectd and Graphite VMs assembled at once: one "
                   "more writes the oldest 1% early, as they stand (counted as forced).")
@click.option("--edge-max-counters", type=IntRange(1), default=D.edge_max_counters,
              show_default=True,
              help="Cap on those agents' cumulative counters tracked for rates: one more forgets "
                   "the 1% least recently updated (counted as forgotten; each primes again).")
@click.option("--edge-max-written", type=IntRange(1), default=D.edge_max_written,
              show_default=True,
              help="Cap on those agents' VMs whose minute last written is remembered beside those "
                   "with a minute open (a sample for it is late): one more forgets the half "
                   "written longest ago.")
@click.option("--edge-max-names", type=IntRange(1), default=D.edge_max_names, show_default=True,
              help="Cap on device names (disks, interfaces, each second's CPUs and memory kinds) "
                   "the minutes of Telegraf, collectd and Graphite hold at once: a new one past "
                   "it is refused as name_budget until minutes written make room.")
@click.option("--edge-max-name-bytes", type=IntRange(1), default=D.edge_max_name_bytes,
              show_default=True,
              help="Longest device name (interface, disk, CPU, collectd instance, tag) those "
                   "minutes take, in bytes: a sample naming a longer one is refused as too_long "
                   "(256 holds any Linux device's name, NAME_MAX 255, and collectd's, 127).")
@click.option("--max-past", type=DURATION, default=_seconds(D.max_past), show_default=True,
              help="Reject records older than this (0 = no limit).")
@click.option("--max-future", type=DURATION, default=_seconds(D.max_future),
              show_default=True, help="Reject records stamped further ahead than this.")
@click.option("--drain-timeout", type=DURATION, default=_seconds(D.drain_timeout), show_default=True,
              help="Deadline for the final flush at shutdown (missed: exit 1).")
@click.option("--rcvbuf", type=IntRange(4096, MAX_RCVBUF), default=D.rcvbuf, show_default=True,
              help="UDP socket receive buffer in bytes (beyond net.core.rmem_max only "
                   "with CAP_NET_ADMIN).")
@click.option("--max-line", type=IntRange(64, protocol.MAX_DATAGRAM_SIZE),
              default=D.max_line, show_default=True,
              help="Longest TCP line accepted.")
@click.option("--max-connections", type=IntRange(1), default=D.max_connections, show_default=True,
              help="Open TCP connections allowed; at the cap the longest silent one is closed for "
                   "a newcomer.")
@click.option("--max-per-source", type=IntRange(1), default=D.max_per_source,
              show_default=True, help="Open TCP connections allowed from one address (raise it "
                                      "for agents behind NAT).")
@click.option("--idle-timeout", type=DURATION, default=_seconds(D.idle_timeout), show_default=True,
              help="Close TCP connections silent this long (0 = never).")
@click.option("--http-max-connections", type=IntRange(1), default=D.http_max_connections,
              show_default=True, help="Open HTTP connections allowed.")
@click.option("--http-max-per-source", type=IntRange(1), default=D.http_max_per_source,
              show_default=True, help="Open HTTP connections allowed from one address.")
@click.option("--http-idle-timeout", type=DURATION, default=_seconds(D.http_idle_timeout),
              show_default=True, help="Close HTTP connections silent this long (0 = never).")
@click.option("--http-body-memory", type=IntRange(1 << 20), default=D.http_body_memory,
              show_default=True, metavar="BYTES",
              help="Bytes of InfluxDB write bodies held in memory at once; a body past it is "
                   "answered 503 with Retry-After (one body is always taken).")
@click.option("--http-body-timeout", type=DURATION, default=_seconds(D.http_body_timeout),
              show_default=True,
              help="Seconds a request body may take to arrive after its headers; a slower one "
                   "is answered 408 and its connection closed (0 = never).")
@click.option("--http-head-timeout", type=DURATION, default=_seconds(D.http_head_timeout),
              show_default=True,
              help="Seconds a request's line and headers may take from their first byte; a "
                   "slower head is answered 408 and its connection closed (0 = never).")
@click.option("--allow", "allow", multiple=True, metavar="CIDR[,CIDR...]",
              help="Accept UDP datagrams and TCP connections only from these networks "
                   "(repeatable; default: any).  Others are dropped and counted.")
@click.option("--http-allow", "http_allow", multiple=True, metavar="CIDR[,CIDR...]",
              help="Accept HTTP connections only from these networks (repeatable; default: any).")
@click.option("--status-token", default=None, envvar="VMSTATS_STATUS_TOKEN",
              help="Bearer token that unlocks /status details (data dir, per-VM last seen); "
                   "prefer --status-token-file or $VMSTATS_STATUS_TOKEN (a flag shows in ps).")
@click.option("--status-token-file", type=click.Path(), default=None,
              help="File holding the /status token (its first line); not with --status-token.")
@click.option("--journal-dir", type=FolderName(), default=None,
              help="Where accepted records are journaled until they are in the logs "
                   "(default: DATA_DIR/journal).")
@click.option("--no-journal", is_flag=True,
              help="Keep records only in memory until flushed (a crash loses them).")
@click.option("--fsync", type=click.Choice(FSYNC_POLICIES), default=D.fsync, show_default=True,
              help="When the journal is forced to disk: off (a machine crash may lose what the "
                   "page cache held), interval (every --fsync-interval), batch (before each TCP "
                   "ack; slowest).")
@click.option("--fsync-interval", type=PERIOD, default=_seconds(D.fsync_interval),
              show_default=True, help="Seconds between journal fsyncs with --fsync interval.")
@click.option("--influx-port", type=IntRange(-1, 65535), default=D.influx_port,
              show_default=True,
              help="UDP and TCP port for InfluxDB line protocol from Telegraf and other agents "
                   "(0 = ephemeral, -1 = off). The HTTP write API is on --http-port.")
@click.option("--influx-vm-tag", default=D.influx_vm_tag, show_default=True,
              help="The line-protocol tag that names the VM.")
@click.option("--write-token", default=None, envvar="VMSTATS_WRITE_TOKEN",
              help="Token the InfluxDB write API (/write, /api/v2/write) requires; with "
                   "--auth-keys the write API is off (403) until it is set. Prefer "
                   "--write-token-file or $VMSTATS_WRITE_TOKEN (a flag shows in ps).")
@click.option("--write-token-file", type=click.Path(), default=None,
              help="File holding the write API's token (its first line); not with --write-token.")
@click.option("--collectd-port", type=IntRange(-1, 65535), default=D.collectd_port,
              show_default=True,
              help="UDP port for collectd's network plugin (collectd's is 25826; -1 = off).")
@click.option("--collectd-auth-file", type=click.Path(), default=None,
              help="collectd's AuthFile ('user: password' per line) for signed or encrypted "
                   "packets.")
@click.option("--collectd-security", type=click.Choice(["none", "sign", "encrypt"]),
              default=D.collectd_security, show_default=True,
              help="The least security a collectd packet must have (collectd's SecurityLevel).")
@click.option("--graphite-port", type=IntRange(-1, 65535), default=D.graphite_port,
              show_default=True, help="UDP and TCP port for Graphite plaintext (carbon's is 2003; "
                                      "-1 = off).")
@click.option("--graphite-template", "graphite_templates", multiple=True,
              help="'pattern field[:counter]', e.g. 'servers.{vm}.cpu.percent cpu' (repeatable).")
@click.option("--virtual-interfaces", default=",".join(D.virtual_interfaces), show_default=True,
              help="Comma-separated glob patterns of interface names (bridges, veths, taps, "
                   "tunnels, bonds, VLANs) other agents' network rates leave out unless a VM "
                   "has no other; replaces the list ('' for none, loopback is never counted).")
@click.option("--minute-grace", type=DURATION, default=_seconds(D.minute_grace), show_default=True,
              help="How long other agents' minutes wait for late samples.")
@click.option("--rules", "rules_file", type=click.Path(dir_okay=False), default=None,
              help="Rules file (TOML): live alerts and scaling on the incoming records; "
                   "SIGHUP reloads it. Check one with 'vmstats rules check FILE'.")
@click.option("--inventory", type=click.Path(dir_okay=False), default=None,
              help="Host inventory (TOML, docs/CAPACITY.md): enables POST /admission on the HTTP "
                   "port, answered from a per-host demand summary of the logs (needs the status token).")
@click.option("--capacity-refresh", type=PERIOD, default=_seconds(D.capacity_refresh), show_default=True,
              help="How often the per-host demand summary is recomputed from the logs.")
@click.option("--admission-hold", type=DURATION, default=_seconds(D.admission_hold), show_default=True,
              help="How long an admission answer's offer holds its room on its hosts.")
@click.option("--capacity-percentile", default=D.capacity_percentile, show_default=True,
              help="Percentile of each host's summed demand for admission: p99.9, p99, max or a number.")
@click.option("--capacity-peak-minutes", type=IntRange(1, 1440), default=D.capacity_peak_minutes,
              show_default=True, help="Each VM counts its peak of every block of this many minutes for "
                                      "admission (60: hourly peaks; 1: minute by minute).")
@click.option("--capacity-coverage-min", type=FiniteRange(0, 1), default=D.capacity_coverage_min,
              show_default=True, help="Share of its VMs' minutes a host needs seen to be offered.")
@click.option("--capacity-days", type=IntRange(1, MAX_DAYS), default=D.capacity_days, show_default=True,
              help="Days of logs the admission summary reads.")
@click.option("--capacity-horizon-days", type=FiniteRange(0, MAX_DAYS), default=D.capacity_horizon_days,
              show_default=True, help="Days ahead a rising trend is projected and added to demand for "
                                      "admission (0: none).")
@click.option("--capacity-reserve-stopped/--capacity-no-reserve-stopped", default=D.capacity_reserve_stopped,
              show_default=True,
              help="For admission, a stopped VM (silent for a day, still allocated) keeps room for its own "
                   "level of when it ran, which it takes back when it starts; or adds no demand.")
@click.option("--capacity-stopped-share-max", type=FiniteRange(0, 100), default=D.capacity_stopped_share_max,
              show_default=True, metavar="PERCENT",
              help="For admission, a host more than this share (%) of whose VMs are stopped or never "
                   "heard from is unknown: what is measured of it is the lesser part.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True)
def serve(**options) -> None:
    """Receive VM records over UDP and TCP and append them to per-VM logs."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(UTCFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=options.pop("log_level").upper(), handlers=[handler])
    # One line per scheduled flush would drown the useful messages.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    if options.pop("no_journal"):
        options["journal_dir"] = ""
    if options.pop("no_http"):
        options["http_port"] = -1
    keys_path = options.pop("auth_keys")
    if keys_path:
        # Imported here, not with this module: signing loads _framecheck and _linescan, and a
        # stale build of either refuses the import (server/native.py), which stopped
        # ``vmstats compact`` too -- it shares this module and needs no C part.
        from vmstats.server.signing import load_keys

        try:
            options["auth_keys"] = load_keys(keys_path)
        except (OSError, ValueError, UnicodeError) as exc:
            raise Refused("cannot read --auth-keys: %s" % one_line(exc)) from None
    auth_file = options.pop("collectd_auth_file")
    if options["collectd_security"] != "none" and not auth_file:
        raise Refused("--collectd-security %s needs --collectd-auth-file" % options["collectd_security"])
    if auth_file:
        from vmstats.server.formats.collectd import load_auth_file
        try:
            options["collectd_auth"] = load_auth_file(auth_file)
        except (OSError, ValueError, UnicodeError) as exc:
            raise Refused("cannot read --collectd-auth-file: %s" % one_line(exc)) from None
    options["graphite_templates"] = list(options["graphite_templates"])
    if options["graphite_templates"]:
        from vmstats.server.formats.graphite import parse_templates
        try:
            parse_templates(options["graphite_templates"])
        except ValueError as exc:
            raise Refused("--graphite-template: %s" % exc) from None
    from vmstats.server.formats.interfaces import parse_patterns
    try:
        options["virtual_interfaces"] = parse_patterns(options["virtual_interfaces"])
    except ValueError as exc:
        raise Refused("--virtual-interfaces: %s" % exc) from None
    token_paths = [_token_from_file(options, name) for name in ("status_token", "write_token")]
    for name in ("status_token", "write_token"):
        # A request's token is compared without the spaces around it, as a file's is read:
        # kept, a flag's or the environment's spaces made a token no request can give (every
        # write refused, 401). An empty one is no token, as if not given (the start says so
        # of the write API); one of spaces alone is a mistake, not that.
        given = options[name]
        if given:
            options[name] = given.strip()
            if not options[name]:
                raise Refused("--%s is only spaces: give the token, or leave the option out"
                              % name.replace("_", "-"))
    if not options["influx_vm_tag"]:  # every line would be refused as naming no VM
        raise Refused("--influx-vm-tag is empty: name the line-protocol tag that names the VM")
    for path in (keys_path, auth_file, *token_paths):  # read: a file that is not stops first
        loose = path and inputfile.loose_secret(path)
        if loose:
            logging.getLogger(__name__).warning("%s", loose)
    for name in ("allow", "http_allow"):
        options[name] = networks(options[name], "--" + name.replace("_", "-"))
    try:
        options["bind"] = resolve_bind(options["bind"])
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    for name in ("workers", "parsers"):
        if options[name] is None:
            options.pop(name)
    if options["parser_timeout"] < 1:
        raise Refused("--parser-timeout must be 1s or more (a parse takes "
                      "milliseconds; a shorter wait would kill working parsers)")
    for name in ("max_past", "max_future"):
        options[name] = int(options[name])
    from vmstats.server.compact import Policy

    try:
        Policy(options["compact_after"], options["retain_raw"], options["retain_rollups"]).check()
    except ValueError as exc:
        raise Refused(str(exc)) from None
    if options["inventory"] and options["http_port"] < 0:
        # Without HTTP the inventory was never read: a bad one started the server all the same,
        # and an operator who asked for admission got a server that answers none.
        raise click.UsageError("--inventory answers POST /admission on the HTTP port: it needs "
                               "HTTP (not --no-http or --http-port -1)")
    if options["inventory"]:
        from vmstats.capacity.demand import parse_percentile
        from vmstats.capacity.errors import CapacityError

        try:
            parse_percentile(options["capacity_percentile"])
        except CapacityError as exc:
            raise Refused("--capacity-percentile: %s" % exc) from None
    config = ServerConfig(**options)
    from vmstats.server.ownfiles import usable_directory, writable_file_place

    try:  # the folders the command line names: a file there is a refused command line
        usable_directory(config.data_dir, "data directory (--data-dir)")
        if config.journal_dir:  # "" is --no-journal
            usable_directory(config.journal_dir, "journal directory (--journal-dir)")
        if config.status_file:
            writable_file_place(config.status_file, "status file (--status-file)")
    except OSError as exc:
        raise Refused(one_line(exc)) from None
    from vmstats.capacity.errors import CapacityError
    from vmstats.rules.config import RulesError
    from vmstats.server.native import StaleBuild
    from vmstats.server.service import run

    try:
        code = run(config)
    except RulesError as exc:  # one line per problem; the server does not start
        lead = "the rules file cannot be used:\n" if len(exc.problems) > 1 else "rules file "
        raise Refused(lead + str(exc)) from None
    except CapacityError as exc:  # a bad inventory: the server does not start
        raise Refused(str(exc)) from None
    except StaleBuild as exc:  # a C part imported as the server is built (cli.py's line)
        raise Refused(str(exc)) from None
    except (OSError, ListenError) as exc:
        raise click.ClickException(one_line(exc)) from None
    except Exception as exc:  # anything else that stops the start: one readable line
        raise click.ClickException("%s: %s" % (type(exc).__name__, exc)) from None
    sys.exit(code)


def _token_from_file(options: dict, name: str) -> str | None:
    """``--NAME-file``'s first line as ``options[name]``; the file's path, or None without one.

    The file stands in for the flag (as `vmstats alerts --token-file` does): both given is a
    mistake that would otherwise let the file win silently; the environment's is a default.
    """
    path = options.pop(name + "_file")
    if not path:
        return None
    flag = "--" + name.replace("_", "-")
    if click.get_current_context().get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("%s and %s-file are one setting: give one" % (flag, flag))
    try:
        options[name] = inputfile.read_secret(path)
    except inputfile.FileProblem as exc:
        raise Refused("cannot read %s-file: %s" % (flag, exc)) from None
    return path


def networks(values: tuple[str, ...], option: str) -> tuple[str, ...]:
    """``--allow`` values (repeated, or comma-separated) as checked CIDR strings."""
    found = []
    for value in values:
        for text in value.replace(",", " ").split():
            try:
                found.append(str(allow_network(text)))
            except ValueError:
                raise Refused("%s: %r is not an address or network (CIDR)" % (option, text)) from None
    return tuple(found)


def one_line(exc: BaseException) -> str:
    """An error as one line a person reads: no ``[Errno 13]``, the path when there is one."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (": %s" % exc.filename if exc.filename else "")
    return str(exc) or type(exc).__name__


@click.command()
@click.option("--data-dir", default=D.data_dir, show_default=True, type=click.Path(),
              help="The data dir whose logs are compacted.")
@retention_options
@click.option("--trust-clock", is_flag=True,
              help="Measure retention from the wall clock alone, not capped at the newest data's "
                   "day: for a data dir that no longer receives data, once the clock is checked.")
@click.option("--end-with", type=int, hidden=True,
              help="End the pass when process END_WITH ends: the server's scheduled pass ends "
                   "with the server, however it is killed (a pass is safe to cut anywhere).")
def compact(data_dir: str, compact_after: float, retain_raw: float, retain_rollups: float,
            trust_clock: bool, end_with: int | None) -> None:
    """Compact old CSV day files into columnar files and rollups, and apply retention (one pass).

    Safe to kill at any moment and to run while the server writes (docs/STORAGE.md).  What
    it did is one line on stdout; what an operator should look at (retention held back,
    future-dated files) is a warning on stderr, the exit status 0 all the same: the pass did
    all it safely could, and the next one does the same.
    """
    import os

    from vmstats.server import compact as compact_mod

    if end_with is not None:
        from vmstats.server import lifeline

        lifeline.end_with(end_with)
    if not os.path.isdir(data_dir):
        raise Refused("data dir %s does not exist or is not a directory" % data_dir)
    policy = compact_mod.Policy(compact_after, retain_raw, retain_rollups)
    try:
        policy.check()
    except ValueError as exc:
        raise Refused(str(exc)) from None
    try:
        summary = compact_mod.compact(data_dir, policy, trust_clock=trust_clock)
    except (ValueError, compact_mod.CompactionBusy, compact_mod.LockError,
            compact_mod.VerifyError) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(one_line(exc)) from None
    click.echo(summary.line())
    for notice in summary.notices():
        click.echo("vmstats compact: warning: " + notice, err=True)
