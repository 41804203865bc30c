"""``vmstats simulate``, ``vmstats replay`` and ``vmstats score``."""

from __future__ import annotations

import datetime
import json
import math
import sys
import time
from collections import Counter

import click

from vmstats import stamps
from vmstats.options import FiniteRange, IntRange, OutputFile, Refused, failure
from vmstats.outputfile import write_text
from vmstats.progress import Progress
from vmstats.protocol import FIRST_STAMP, SECONDS_BELOW, decimal, encode_records
from vmstats.report.settings import MAX_DAYS
from vmstats.words import counted, plural

TRANSPORT = click.Choice(["udp", "tcp"])
#: UDP has no flow control; this pace keeps a loopback server's socket buffer from overflowing.
DEFAULT_UDP_RATE = 20000


#: The last minute a record can be stamped in seconds (in year 5138): a later stamp reads as
#: milliseconds on the wire, and one past year 9999 ended in a traceback here.
_LAST_MOMENT = (SECONDS_BELOW - 1) // 60 * 60
_TOO_LATE = "%%s is after %s, the last minute a record can be stamped in" % (
    datetime.datetime.fromtimestamp(_LAST_MOMENT, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ"))


def _moment(text: str | None, option: str) -> int | None:
    """Unix seconds from ``1732262400``, ``2024-05-01`` or ``2024-05-01T09:00:00Z`` (UTC by default)."""
    if text is None:
        return None
    if text.isascii() and text.isdigit():  # isdigit alone takes every script's digits
        if int(text) > _LAST_MOMENT:  # the calendar's end: datetime cannot name a later minute
            raise click.BadParameter(_TOO_LATE % text, param_hint=option)
        return int(text)
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("%r is neither Unix seconds nor an ISO 8601 time" % text,
                                 param_hint=option) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    if moment.timestamp() > _LAST_MOMENT:
        raise click.BadParameter(_TOO_LATE % text, param_hint=option)
    return int(moment.timestamp())


def _speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = decimal(text)  # float() alone takes 1_0 too
    except ValueError:
        raise click.BadParameter("--speed is 'max' or a factor such as 60, got %r" % text) from None
    if not 0 < value < math.inf:  # inf would be --speed max spelled as a number: say so
        raise click.BadParameter("--speed factor must be a positive finite number (or 'max'), got %r" % text)
    return value


def _open(transport: str, server: str, rate: float | None, timeout: float):
    from vmstats.simulator.sender import SendError, open_sender

    if transport == "udp" and rate is None:
        rate = DEFAULT_UDP_RATE
    try:
        return open_sender(transport, server, rate=rate or None,
                           **({"timeout": timeout} if transport == "tcp" else {}))
    except ValueError as exc:  # --server is no HOST:PORT
        raise Refused(str(exc)) from None
    except SendError as exc:
        raise click.ClickException(str(exc)) from None


def _records_were(count: int) -> str:
    """"1 record was", "3 records were": the verb follows the count too."""
    return "%s %s" % (counted(count, "record"), "was" if count == 1 else "were")


def _finish(sender, summary: dict, json_path: str | None, timeout: float) -> None:
    """Wait for acknowledgements, print and save the summary, and fail loudly on any loss."""
    from vmstats.simulator.sender import SendError

    try:
        stats = sender.close(timeout)
    except SendError as exc:
        raise click.ClickException(str(exc)) from None
    summary.update(stats.as_dict())
    rate = stats.records / stats.elapsed if stats.elapsed else 0.0
    line = "sent %s over %s in %.1f s (%.0f records/s)" % (counted(stats.records, "record"),
                                                         stats.transport, stats.elapsed, rate)
    if stats.transport == "tcp":
        line += "; server accepted %d, rejected %d" % (stats.accepted, stats.rejected)
        if stats.resent_batches or stats.reconnects:
            line += "; %s resent (naks %s, reconnects %d)" % (
                counted(stats.resent_batches, "batch", "batches"), dict(stats.naks) or "none",
                stats.reconnects)
    click.echo(line)
    busy = stats.naks.get("busy", 0) if stats.transport == "tcp" else 0
    if busy:
        click.echo("the server answered 'busy' to %s: a VM's buffer held --max-per-vm "
                   "records until the next flush. A history sent in bulk goes faster into a server "
                   "started with a shorter --flush-interval (5s: about 12 times the default's rate)"
                   % counted(busy, "batch", "batches"))
    if json_path:
        _write_text(json_path, json.dumps(summary, indent=2, sort_keys=True), "--json")
    if stats.unacknowledged:
        raise click.ClickException("%s not acknowledged by the server within %.0f s"
                                   % (_records_were(stats.unacknowledged), timeout))
    if stats.rejected:
        raise click.ClickException("the server rejected %s (see its /metrics for the reasons)"
                                   % counted(stats.rejected, "record"))


_common = [
    click.option("--server", default="127.0.0.1:8899", show_default=True, help="HOST:PORT of vmstats serve."),
    click.option("--transport", type=TRANSPORT, default="tcp", show_default=True,
                 help="tcp: acknowledged, resent on nak or disconnect. udp: packed datagrams, paced."),
    click.option("--rate", type=FiniteRange(0), default=None,
                 help="Cap in records/s (0 = none). Default: none over tcp, %d over udp." % DEFAULT_UDP_RATE),
    click.option("--timeout", type=FiniteRange(1), default=120.0, show_default=True,
                 help="Give up when the server acknowledges nothing for this many seconds."),
    click.option("--json", "json_path", type=OutputFile(), default=None,
                 help="Also write the run's summary here as JSON."),
]


def common_options(func):
    for option in reversed(_common):
        func = option(func)
    return func


@click.command()
@click.option("--vms", type=IntRange(1, 1_000_000), default=200, show_default=True, help="Fleet size.")
@click.option("--days", type=FiniteRange(min=0, max=MAX_DAYS, min_open=True), default=7.0, show_default=True,
              help="Simulated days of 1-minute records, ending at the current minute (at most "
                   "the report's longest look-back).")
@click.option("--seed", type=IntRange(0), default=1, show_default=True,
              help="The same seed gives the same VM sizes and profiles; with the same --end, "
                   "the same records too (without it the records move with the current minute).")
@click.option("--mix", default=None,
              help="Profile weights, e.g. 'idle=30,oversized=20,steady_busy=50' (unnamed: none). "
                   "Default: a typical private cloud (see docs/SIMULATOR.md).")
@click.option("--speed", default="max", show_default=True,
              help="'max', or simulated seconds per real second (60: a simulated minute each second); "
                   "records go out in time order, in steps of at most a real second.")
@click.option("--truth", type=OutputFile(), default=None,
              help="Write each VM's size, profile and expected report category here (CSV).")
@click.option("--end", default=None,
              help="Last minute of the period (Unix seconds or ISO 8601). Default: now.")
@click.option("--inventory", type=OutputFile(), default=None,
              help="Place the VMs on simulated hosts (a mix of sizes, filled as Nova would), send each "
                   "VM's host tag, and write the hosts here as an inventory (TOML).")
@click.option("--workers", type=IntRange(1, 64), default=1, show_default=True,
              help="Processes generating and encoding in parallel (for servers on other cores; "
                   "records then go out one group of VMs and day at a time).")
@click.option("--preload", is_flag=True,
              help="Generate and encode the whole run before sending (about 150 bytes of memory a record), "
                   "so sending runs at socket speed and shows the server's limit.")
@click.option("--dry-run", is_flag=True,
              help="Generate and encode everything, send nothing (measures the simulator).")
@common_options
def simulate(vms, days, seed, mix, speed, truth, end, inventory, workers, preload, dry_run, server,
             transport, rate, timeout, json_path):
    """Push a simulated fleet's 1-minute records to a server, through the real encoder and sockets.

    Each VM gets a size and a usage profile (idle, low_steady, business_hours,
    nightly_batch, bursty_web, steady_busy, memory_heavy, network_heavy,
    growing, oversized, stopped). Time is simulated: the period ends at the
    current minute, so the server's future-timestamp check passes.
    """
    from vmstats.client.transport import parse_server
    from vmstats.simulator import fleet as fleets
    from vmstats.simulator.sender import SendError, cut_payloads

    factor = _speed(speed)
    if workers > 1 and factor is not None:
        raise click.UsageError("--workers sends each VM group's day in turn: it needs --speed max")
    try:
        weights = fleets.parse_mix(mix)
        if not dry_run:
            parse_server(server)
    except fleets.MixError as exc:
        raise click.BadParameter(str(exc), param_hint="--mix") from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--server") from None
    end_at = _moment(end, "--end")
    start, stop = fleets.period(time.time() if end_at is None else end_at, days)
    if start < FIRST_STAMP:  # the server takes no stamp before it: every record refused
        raise click.BadParameter("the %g %s up to --end %s would start before %s, the first "
                                 "moment the server takes a stamp from"
                                 % (days, plural(days, "day"), end, stamps.moment(FIRST_STAMP)),
                                 param_hint="--days")
    fleet = fleets.make_fleet(vms, seed, weights, start, stop)
    if inventory:
        fleet = _place_on_hosts(fleet, seed, inventory)
    if truth:
        _write_text(truth, fleets.truth_csv(fleet), "--truth")
    counts = Counter(vm.profile for vm in fleet)
    click.echo("fleet of %s, seed %d, %s to %s UTC: %s" % (
        counted(vms, "VM"), seed,
        datetime.datetime.fromtimestamp(start, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        datetime.datetime.fromtimestamp(stop, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        ", ".join("%s %d" % (name, counts[name]) for name in fleets.PROFILES if counts[name])))
    summary = {"vms": vms, "days": days, "seed": seed, "start": start, "end": stop, "profiles": dict(counts)}
    # Units of sending: (simulated time it is due, [(payload, records), ...]).
    if workers > 1:
        parts = fleets.parallel_payloads(fleet, seed, start, stop, transport, workers)
        units = ((None, pairs) for pairs in parts)
    else:
        slice_minutes = 60 if factor is None else max(1, min(60, int(factor // 60)))
        units = ((t, cut_payloads(encode_records(records), transport))
                 for t, records in fleets.generate(fleet, seed, start, stop, slice_minutes))
    if dry_run or preload:
        began = time.monotonic()
        units = list(units)
        spent = time.monotonic() - began
        total = sum(count for _t, pairs in units for _p, count in pairs)
        summary["prepare_seconds"] = spent
        click.echo("generated and encoded %s in %.1f s (%.0f records/s)%s"
                   % (counted(total, "record"), spent, total / spent if spent else 0.0,
                      ", sent nothing" if dry_run else ""))
        if dry_run:
            return
    sender = _open(transport, server, rate, timeout)
    began = time.monotonic()
    progress = Progress("simulate", "records sent")
    sent = 0
    try:
        for due, pairs in units:
            if factor is not None:
                wait = began + (due - start) / factor - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            for payload, count in pairs:
                sender.send_payload(payload, count)
                sent += count
            progress(sent)
    except SendError as exc:
        raise click.ClickException(str(exc)) from None
    progress.close()
    _finish(sender, summary, json_path, timeout)


def _write_text(path: str, text: str, option: str) -> None:
    try:
        write_text(path, text)
    except OSError as exc:
        raise click.ClickException("cannot write %s %s: %s" % (option, path, exc.strerror or exc)) from None


def _place_on_hosts(fleet: list, seed: int, path: str) -> list:
    """The fleet with host tags, its hosts written to ``path`` as an inventory."""
    from vmstats.simulator import hosts

    packer, placed, untagged = hosts.place_fleet(fleet, seed)
    _write_text(path, packer.inventory_toml(untagged, "Simulated hosts of vmstats simulate --seed %d "
                                                      "(%s)." % (seed, counted(len(fleet), "VM"))),
                "--inventory")
    click.echo("hosts: %s; %s no host tag and %s listed by id" % (
        packer.summary(), counted(len(untagged), "VM sends", "VMs send"), plural(len(untagged), "is", "are")))
    return placed


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["bitbrains", "planetlab", "csv"]), required=True,
              help="bitbrains (GWA-T-12 files), planetlab (CoMon CPU files) or csv "
                   "(header vm,timestamp,cpu, and mem or --fill-mem; optional cpu_max,disk_r,disk_w,"
                   "net_rx,net_tx,vcpus,mem_mb).")
@click.option("--vm-map", type=click.Path(), default=None,
              help="CSV 'source,vm': the id each source (file name or csv vm) is sent as. "
                   "Default: bitbrains-<file>, planetlab-<file>, the csv's own vm.")
@click.option("--start", default=None,
              help="planetlab: time of the first 5-minute slot (Unix seconds or ISO 8601); "
                   "default 2011-03-06T00:00Z, the day the sample was recorded. csv: the time a "
                   "trace's relative stamps (digits before 2000-01-01: 0, 60, ...) count from; "
                   "without it such a trace is refused.")
@click.option("--interval", type=IntRange(60), default=None,
              help="Seconds per trace row (a multiple of 60). Default: each VM's median row "
                   "spacing (bitbrains, csv; 300 and 60 for a VM of two rows), 300 for planetlab.")
@click.option("--fill-mem", type=FiniteRange(0, 100), default=None,
              help="Memory % to send when the trace has none "
                   "(planetlab is CPU only; the protocol requires mem).")
@click.option("--fill-size", default=None, metavar="VCPUS:MEM_MB",
              help="Size to send when the trace has none (planetlab), e.g. 2:4096.")
@click.option("--inventory", "inventory_path", type=click.Path(), default=None,
              help="Send each VM's host tag as this host inventory places it (its hosts' `vms` selectors); "
                   "VMs it does not place go untagged.")
@click.option("--pack-hosts", type=OutputFile(), default=None,
              help="Place the trace's VMs on simulated hosts as they appear (a mix of sizes, filled as "
                   "Nova would), send each VM's host tag, and write the hosts here as an inventory (TOML).")
@click.option("--pack-fill", type=FiniteRange(0, 1, min_open=True), default=None,
              help="Share of each host's allocation limit (CPU x 4.0, RAM x 1.0) the packing fills. "
                   "Default: 0.85.")
@click.option("--pack-ratio", default=None, metavar="CPU:RAM",
              help="Allocation ratios the packing fills to, e.g. 1.0:1.0 for a cloud without "
                   "overcommit. Default: Nova's 4.0:1.0.")
@click.option("--seed", type=IntRange(0), default=1, show_default=True,
              help="Seed of the hosts' sizes (--pack-hosts).")
@common_options
def replay(paths, fmt, vm_map, start, interval, fill_mem, fill_size, inventory_path, pack_hosts, pack_fill,
           pack_ratio, seed, server, transport, rate, timeout, json_path):
    """Replay recorded traces (files or folders, .gz accepted) through the encoder and sockets to a server.

    Rows coarser than a minute are held: each 5-minute row becomes five
    1-minute records with the row's values (stamped t, t+60, ..., never past
    the next row), so the values stay exactly as recorded and the clock real.
    Rows where the VM was off send nothing (missing is not idle); CPU above
    100 % is clamped; duplicates keep the last row; every quirk is counted in
    the summary. Records keep their original (past) timestamps.
    """
    from vmstats.simulator import traces

    fill = {}
    if fill_mem is not None:
        fill["mem"] = float(fill_mem)
    if fill_size:
        try:
            vcpus, mem_mb = (int(part) for part in fill_size.split(":"))
        except ValueError:
            raise click.BadParameter("expected VCPUS:MEM_MB such as 2:4096",
                                     param_hint="--fill-size") from None
        fill.update(vcpus=vcpus, mem_mb=mem_mb)
        from vmstats import protocol

        try:  # 0:0 or -1:4096 was sent, every record refused by the server, then exit 1
            _as_the_server_reads(protocol.Record(vm="x", ts=0, cpu=0.0, mem=0.0, vcpus=vcpus,
                                                 mem_mb=mem_mb))
        except protocol.DecodeError as exc:
            raise click.BadParameter("%s: the server would refuse every record: %s"
                                     % (fill_size, exc.detail), param_hint="--fill-size") from None
    if fmt == "planetlab" and "mem" not in fill:
        raise click.UsageError("planetlab traces hold CPU only and every record needs mem: "
                               "pass --fill-mem PCT to state the memory use to assume")
    if (pack_fill is not None or pack_ratio) and not pack_hosts:
        raise click.UsageError("--pack-fill and --pack-ratio say how --pack-hosts fills each host: "
                               "pass --pack-hosts FILE")
    if inventory_path and pack_hosts:
        raise click.UsageError("--inventory places VMs on the hosts it names, --pack-hosts on simulated "
                               "ones: give one")
    packer = inventory = None
    if inventory_path:
        from vmstats.capacity.inventory import load_inventory
        from vmstats.report.settings import ReportError

        try:
            inventory = load_inventory(inventory_path)
        except ReportError as exc:
            raise failure(exc) from None
    if pack_hosts:
        from vmstats.simulator.hosts import DEFAULT_FILL, HostPacker, PackError, parse_ratios

        try:
            ratios = parse_ratios(pack_ratio) if pack_ratio else {}
        except PackError as exc:
            raise click.BadParameter(str(exc), param_hint="--pack-ratio") from None
        packer = HostPacker(seed, fill=pack_fill or DEFAULT_FILL, **ratios)
    quirks: Counter = Counter()
    first = _moment(start, "--start")
    try:
        mapping = traces.load_vm_map(vm_map) if vm_map else None
        files = traces.find_trace_files(paths)
        if not files:
            raise traces.TraceError("no trace files under %s" % ", ".join(paths))
        found = [traces.read_trace(path, fmt, vm_map=mapping, start=first, interval=interval,
                                   fill=fill, quirks=quirks) for path in files]
    except traces.TraceError as exc:  # the files named: before anything is sent
        raise Refused(str(exc)) from None
    sender = _open(transport, server, rate, timeout)
    vms = set()
    from vmstats.simulator.sender import SendError

    progress = Progress("replay", "records sent")
    sent = 0
    try:
        pending: list = []  # turns of several VMs, sent together as one acknowledged batch
        for batch in interleave(found):
            if any(record.mem is None for record in batch):
                raise click.ClickException("%s has no memory values and the protocol requires mem: pass "
                                           "--fill-mem PCT" % batch[0].vm)
            vms.add(batch[0].vm)
            if packer is not None:
                try:
                    host = packer.place(batch[0].vm, batch[0].vcpus, batch[0].mem_mb)
                except PackError as exc:
                    raise click.ClickException("--pack-hosts: %s" % exc) from None
                batch = [record._replace(host=host) for record in batch]
            elif inventory is not None:
                host = inventory.host_of(batch[0].vm, None)
                if host is not None:
                    batch = [record._replace(host=host) for record in batch]
            pending += encode_records(batch)
            if len(pending) >= 1000:
                sender.send(pending)
                sent += len(pending)
                progress(sent)
                pending = []
        sender.send(pending)
    except (traces.TraceError, SendError) as exc:
        raise click.ClickException(str(exc)) from None
    progress.close()
    click.echo("replayed %s (%s), format %s" % (counted(len(files), "file"), counted(len(vms), "VM"), fmt))
    if packer is not None:
        _write_text(pack_hosts, packer.inventory_toml(header="Simulated hosts of vmstats replay --seed %d "
                                                             "(%s)." % (seed, counted(len(vms), "VM"))),
                    "--pack-hosts")
        click.echo("hosts: %s; written to %s" % (packer.summary(), pack_hosts))
    click.echo(render_quirks(quirks))
    _finish(sender, {"files": len(files), "vms": len(vms), "quirks": dict(quirks)}, json_path, timeout)


def interleave(found, chunk: int = 60, group: int = 64):
    """Batches of ``chunk`` records taking turns across up to ``group`` traces at a time.

    A real fleet reports all VMs each minute; sending one VM's month in one
    burst would instead fill that VM's buffer on the server.  Groups bound how
    many traces are held in memory at once.
    """
    from itertools import islice

    for first in range(0, len(found), group):
        iterators = [iter(trace) for trace in found[first:first + group]]
        while iterators:
            alive = []
            for iterator in iterators:
                batch = list(islice(iterator, chunk))
                if batch:
                    # A csv file may hold several VMs: one batch, one VM.
                    yield from _split_by_vm(batch)
                    alive.append(iterator)
            iterators = alive


def _split_by_vm(batch):
    if batch[0].vm == batch[-1].vm:
        yield batch
        return
    current = [batch[0]]
    for record in batch[1:]:
        if record.vm != current[-1].vm:
            yield current
            current = []
        current.append(record)
    yield current


def render_quirks(quirks: Counter) -> str:
    from vmstats.simulator.traces import QUIRKS

    lines = ["trace quirks (handled, never fatal):"]
    for name, meaning in QUIRKS.items():
        if name == "rows" or quirks.get(name):
            lines.append("  %-20s %9d  %s" % (name, quirks.get(name, 0), meaning))
    return "\n".join(lines)


@click.command()
@click.option("--truth", type=click.Path(dir_okay=False), required=True,
              help="The truth file of vmstats simulate.")
@click.option("--report", "report_path", type=click.Path(), required=True,
              help="The report's report.csv (or the folder holding it).")
@click.option("--json", "json_path", type=OutputFile(), default=None,
              help="Also write the score here as JSON.")
@click.option("--max-wrong", type=IntRange(0), default=30, show_default=True,
              help="List at most this many wrong verdicts.")
def score(truth, report_path, json_path, max_wrong):
    """Grade a reclamation report against a simulated fleet's truth: accuracy, confusion, misses."""
    from vmstats.simulator import score as scoring

    try:
        result = scoring.score(scoring.load_truth(truth), scoring.load_report(report_path))
        result.money = scoring.report_money(report_path)
    except scoring.ScoreError as exc:  # the two files named
        raise Refused(str(exc)) from None
    click.echo(scoring.render(result, max_wrong))
    if json_path:
        _write_text(json_path, json.dumps(result.as_dict(), indent=2, sort_keys=True), "--json")
    sys.stdout.flush()


def _as_the_server_reads(record):
    """``record`` encoded, then decoded by the decoder the server runs (its time unbounded):
    what the server would take, or protocol.DecodeError saying why it would refuse it."""
    from vmstats import protocol

    decoder = protocol.Decoder(max_future=float("inf"), first=0)
    return decoder.decode_line(protocol.encode_record(record), now=0.0)


def _check_pool_names(pool) -> None:
    """Refuse a --prefix or --hosts the server would refuse every record of (a VM id or host
    tag outside the protocol's grammar), before anything is sent: judged by the decoder the
    server runs, on the first and the last member a pool can have, on each host."""
    from vmstats import protocol
    from vmstats.protocol import Record

    largest = max(pool.members, pool.maximum)
    for option, vm, host in ([("--prefix", "%s-%d" % (pool.prefix, n), None) for n in (1, largest)]
                             + [("--hosts", "%s-1" % pool.prefix, host) for host in pool.hosts]):
        try:
            record = _as_the_server_reads(Record(vm=vm, ts=0, cpu=0.0, mem=0.0, host=host))
        except protocol.DecodeError as exc:
            raise click.BadParameter("%s: the server would refuse every record: %s"
                                     % (host or vm, exc.detail), param_hint=option) from None
        if (record.vm, record.host, record.tags) != (vm, host, None):  # a ',' read as a tag
            raise click.BadParameter("%s: the server would read another VM or host in its "
                                     "records" % (host or vm), param_hint=option)


@click.command("simulate-pool")
@click.option("--curve", default="0:120,15:360,35:360,50:90", show_default=True,
              help="The pool's total demand over the run, second:demand (percent of one VM's CPU).")
@click.option("--members", type=IntRange(1, 1000), default=3, show_default=True,
              help="Members at the start.")
@click.option("--prefix", default="pool", show_default=True, help="Members are PREFIX-1, PREFIX-2, ...")
@click.option("--hosts", default="kvm1,kvm2", show_default=True,
              help="Hosts the members are spread over (their host tag); '' for none.")
@click.option("--duration", type=FiniteRange(1), default=60.0, show_default=True,
              help="Seconds to run.")
@click.option("--interval", type=FiniteRange(0.1), default=1.0, show_default=True,
              help="Seconds between reports (a rules period to match).")
@click.option("--desired-file", type=click.Path(dir_okay=False), default=None,
              help="Read the member count a scaling action wrote here before each report.")
@click.option("--silent", default=None, metavar="N:SECOND",
              help="Member N stops reporting at SECOND (a stopped agent); N is one of the "
                   "--members (or one it can grow to with --desired-file), SECOND within --duration.")
@common_options
def simulate_pool(curve, members, prefix, hosts, duration, interval, desired_file, silent, server,
                  transport, rate, timeout, json_path):
    """A live pool following a load curve, scaled by the rules' actions (docs/RULES.md)."""
    from vmstats.simulator.pool import Pool, parse_curve, parse_silent, run

    try:
        points = parse_curve(curve)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--curve") from None
    pool = Pool(points, members, prefix, tuple(h for h in hosts.split(",") if h), desired_file)
    if silent is not None:
        try:
            pool.silent = parse_silent(silent, pool, duration)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--silent") from None
    _check_pool_names(pool)
    sender = _open(transport, server, rate, timeout)

    def show(step):
        click.echo("t=%5.1fs demand %6.1f  members %d  reporting %d" % (
            step["second"], step["demand"], step["members"], step["reported"]))

    from vmstats.simulator.sender import SendError

    try:
        summary = run(pool, sender, duration, interval, show)
    except SendError as exc:
        raise click.ClickException(str(exc)) from None
    _finish(sender, summary, json_path, timeout)
