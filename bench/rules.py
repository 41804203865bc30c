"""Rules benchmark: a record's arrival to the webhook receiver's 200, and ingest with 50 rules.

    .venv/bin/python bench/rules.py            # about 4 minutes
    .venv/bin/python bench/rules.py --quick    # fewer periods and rounds

Latency: a real ``vmstats serve --rules`` with 50 rules (per-VM thresholds
and expressions on every VM and on network slices, group aggregates,
silence checks) takes 10,000 VMs each reporting once per rule period over
UDP, evenly spread as agents' jitter spreads them.  The period is
``--minute`` seconds (default 10: six times a real fleet's rate, so the run
stays short and the load is heavier than the target's).  Each period 50
fresh VMs report 99 % CPU and the previous 50 calm down: 100 transitions a
period of the rule whose webhook goes to a receiver on loopback that checks
the HMAC.  Latency is the receiver's time at its 200 minus the time the
datagram holding the record was sent (one clock, this process).

In process, the same 50 rules run in an Engine without a server, so the
rules' own costs are measured apart from the host's noise (CPU time of this
process): the hand-off (what the ingest calls for each filed payload, and
the fold a tick starts with) per record over the flood's million records,
and a tick over the 10,000 VMs when each has a newer record, as under a
flood; and what a /alerts page costs the reactor (its mute look-ups, its
states chosen from 200,000 series).

Ingest: the same run starts a second server without rules, and both take the
same TCP flood in turn (records from 10,000 VMs with fresh timestamps, so the
rules do evaluate them), each starting just after a flush of its server (no
flush cuts into it on an idle host; one that does is reported), timed to the
acknowledgement of the last batch; ``--rounds`` alternations.  Capacity is each server's best round: the host
is shared, and a busy neighbour only ever slows a round down, so the best
round is the one closest to what the server itself can do (every round's
rate is kept in the JSON).  Target: with rules >= 90 % of without.
"""

import argparse
import json
import marshal
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ingest import cpu_seconds, send_synced  # noqa: E402
from rulesutil import WebhookReceiver  # noqa: E402
from serverproc import ServerProcess  # noqa: E402

from vmstats import logstore  # noqa: E402
from vmstats.protocol import Record, encode_record  # noqa: E402
from vmstats.rules.config import parse_rules  # noqa: E402
from vmstats.rules.evaluator import Engine  # noqa: E402
from vmstats.rules.mutes import MuteSet, parse_mute  # noqa: E402

VMS = 10_000
NETS = 40
SECRET = b"bench-secret"
HOT_PER_PERIOD = 50
#: The servers' flush interval, seconds: a million-record flood fits between two flushes.
FLUSH_INTERVAL = 5.0
#: Longer than a server's pause between two ingest rounds on a busy host (the other server's
#: flood, seconds each when neighbours slow it down): a round measures ingest with the rules,
#: not an alert storm of the whole fleet going silent and coming back.
SILENT_AFTER = "5m"
#: Payloads the reactor parsed itself (every parser had its share in flight), and the CPU of
#: the rules' ticks: read before and after each flood.
PARSED_HERE = 'vmstats_parsed_payloads_total{where="here"}'
TICK_CPU = 'vmstats_rule_cpu_seconds_total{kind="tick"}'
#: The reactor's CPU microseconds a record in a flood (``reactor_seconds``).
REACTOR = "reactor_us"


def vm_id(k: int) -> str:
    return "10.%d.%d.%d" % (k % NETS, (k // NETS) // 200, (k // NETS) % 200 + 1)


def rules_text(hook_url: str, minute: float) -> str:
    """50 rules: 1 that fires, 49 that are evaluated on every record of their scope."""
    out = ['[action.hook]\nkind = "webhook"\nurl = "%s"\nsecret = "%s"\n' % (hook_url, SECRET.decode())]

    def rule(name, body):
        out.append('[[rule]]\nname = "%s"\nperiod = "%gs"\nactions = ["hook"]\n%s' % (name, minute, body))

    rule("hot", 'metric = "cpu"\nenter = 90\nexit = 70\nsilent_after = "%s"\n' % SILENT_AFTER)
    for i in range(20):
        rule("mem-%d" % i, 'metric = "mem"\nenter = 99.5\nexit = 90\ndatapoints = 2\nperiods = 3\n'
                           'match = { cidr = "10.%d.0.0/16" }\nsilent_after = "%s"\n' % (i, SILENT_AFTER))
    for i in range(19):
        rule("expr-%d" % i, 'metric = "max(cpu, mem) + net_per_vcpu / 1e6"\nenter = 1e9\n'
                            'match = { cidr = "10.%d.0.0/16" }\n' % (20 + i))
    aggregates = ["mean", "max", "p95", "p50", "count_above", "min", "mean", "p99", "max", "mean"]
    for i, how in enumerate(aggregates):
        level = "level = 95\n" if how == "count_above" else ""
        rule("group-%d" % i, 'scope = "group"\nmetric = "cpu"\naggregate = "%s"\n%senter = 1e6\n'
                             'match = { cidr = "10.%d.0.0/16" }\n' % (how, level, i))
    return "\n".join(out)


def encode(vm: str, ts: int, cpu: float) -> bytes:
    return encode_record(Record(vm=vm, ts=ts, cpu=cpu, mem=40.0, net_rx=1000, net_tx=500, vcpus=2,
                                mem_mb=4096)).encode("ascii")


def latency_phase(server: ServerProcess, hook: WebhookReceiver, minute: float, periods: int) -> dict:
    """Send the fleet for ``periods`` periods; returns latency figures of the hot rule."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    per_datagram = 16
    sent_at: dict[tuple[str, str], float] = {}  # (vm, expected state) -> send time
    began = time.time()
    for period in range(periods):
        start = began + period * minute
        hot = set(range(period * HOT_PER_PERIOD, (period + 1) * HOT_PER_PERIOD))
        cooling = set(range((period - 1) * HOT_PER_PERIOD, period * HOT_PER_PERIOD)) if period else set()
        batches = [list(range(i, min(i + per_datagram, VMS))) for i in range(0, VMS, per_datagram)]
        for n, batch in enumerate(batches):
            due = start + minute * n / len(batches)
            pause = due - time.time()
            if pause > 0:
                time.sleep(pause)
            ts = int(time.time())
            payload = b"\n".join(encode(vm_id(k), ts, 99.0 if k in hot else 20.0) for k in batch)
            sock.sendto(payload, ("127.0.0.1", server.udp_port))
            now = time.time()
            for k in batch:
                if k in hot:
                    sent_at[(vm_id(k), "alarm")] = now
                elif k in cooling:
                    sent_at[(vm_id(k), "ok")] = now
    sock.close()
    expected = len(sent_at)
    deadline = time.time() + 30
    while time.time() < deadline and len(hook.received) < expected:
        time.sleep(0.1)
    latencies = []
    with hook.lock:
        received = list(hook.received)
    for r in received:
        for alert in r["body"]["alerts"]:
            key = (alert["labels"]["scope"], alert["annotations"]["state"])
            if alert["labels"]["alertname"] == "hot" and key in sent_at:
                latencies.append(r["at"] - sent_at.pop(key))
    latencies.sort()
    return {"records": VMS * periods, "transitions_expected": expected,
            "webhooks_received": len(received), "unmatched": len(sent_at),
            "bad_signatures": hook.bad_signatures,
            "p50_ms": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
            "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1)
            if latencies else None,
            "max_ms": round(1000 * latencies[-1], 1) if latencies else None}


def in_process(minute: float, count: int) -> dict:
    """The rules' own work on the reactor for one flood, in this process (CPU time).

    The hand-off of each payload as the server's flood makes it: a tick after its first
    80,000 records (the server's first tick, 0.1 s into the flood), then nothing but the
    hand-off (and the folds past ``PENDING_MAX`` it makes) until the flood ends; then a tick
    over the 10,000 VMs when each has a newer record two periods on (median of 4, after the
    fleet's first sight), and a sweep of them all (median of 4).
    """
    now = [time.time()]
    engine = Engine(parse_rules(tomllib.loads(rules_text("http://127.0.0.1:9/", minute))),
                    lambda: now[0])
    vms = [vm_id(k) for k in range(VMS)]
    variants = [[logstore.format_tail(Record(vm=vm, ts=0, cpu=20.0 + (k + j) % 50, mem=40.0,
                                             net_rx=1000, net_tx=500, vcpus=2, mem_mb=4096))
                 for k, vm in enumerate(vms)] for j in range(4)]
    slices = [slice(i, i + 500) for i in range(0, VMS, 500)]
    # Marshalled as the parsers' replies are: each payload's VM names, stamps and rows are new
    # objects, as in the server.  Handing over the same few lists again and again measured half
    # the cost (0.06 against 0.12 us a record): the dicts' keys were the very names handed
    # over and the rows they replaced were still in the cache.
    payloads = [[marshal.dumps((vms[part], rows[part])) for part in slices] for rows in variants]

    def fleet(j: int) -> None:
        """Every VM once, stamped ``j`` seconds on, as the parsers hand payloads over."""
        stamps = marshal.dumps([int(now[0]) + j] * 500)
        for blob in payloads[j % 4]:
            names, rows = marshal.loads(blob)
            set(names)  # the ingest hashes the names as it files them
            engine.observe(names, marshal.loads(stamps), rows)

    fleet(0)
    engine.process()  # the fleet's first sight: its routes worked out once
    per_vm = count // VMS
    handoff = 0.0
    held = []  # the rows the buffer holds while the flood is filed
    for j in range(per_vm):  # the flood's order: every VM once, then again a second later
        stamps = marshal.dumps([int(now[0]) - per_vm + j] * 500)
        for blob in payloads[j % 4]:
            names, rows = marshal.loads(blob)
            tss = marshal.loads(stamps)
            set(names)
            held.append(rows)
            began = time.process_time()
            engine.observe(names, tss, rows)
            handoff += time.process_time() - began
        if j == 8:
            now[0] += 0.1
            engine.process()  # the flood's first tick (not the hand-off's)
    held.clear()
    ticks, sweeps = [], []
    for j in range(4):
        now[0] += 2 * minute
        fleet(j)
        engine._fold()  # the hand-off's
        began = time.process_time()
        engine.process()
        ticks.append(time.process_time() - began)
        began = time.process_time()
        engine.sweep()
        sweeps.append(time.process_time() - began)
    return {**mute_lookups(), **states_page(),
            "handoff_us_per_record": round(handoff / (per_vm * VMS) * 1e6, 3),
            "handoff_ms_per_million": round(handoff / (per_vm * VMS) * 1e9, 1),
            "tick_ms_median": round(1000 * statistics.median(ticks), 1),
            "tick_ms_min": round(1000 * min(ticks), 1), "ticks": len(ticks),
            "sweep_ms_median": round(1000 * statistics.median(sweeps), 1),
            "evaluations": engine.evaluations}


def flood_chunks(count: int) -> list[bytes]:
    """``count`` records from 10,000 VMs with fresh stamps, in 500-record payloads."""
    now = int(time.time())
    per_vm = count // VMS
    # Values that cross no threshold: the rules evaluate every VM, and nothing floods the receiver.
    lines = [encode(vm_id(k), now - per_vm + j, 20.0 + (k + j) % 50) for j in range(per_vm)
             for k in range(VMS)]
    return [b"\n".join(lines[i:i + 500]) + b"\n" for i in range(0, len(lines), 500)]


def written_out(server: ServerProcess, timeout: float = 120.0) -> None:
    """Wait until the server holds no record unwritten (none buffered, none with a writer).

    The latency phase's records share minutes, so counts of records received and written
    never meet; an empty buffer is what says a flood's write-out is over.
    """
    deadline = time.monotonic() + timeout
    while True:
        m = server.metrics()
        if not m["vmstats_buffered_records"] and not m["vmstats_in_flight_records"]:
            return
        if time.monotonic() > deadline:
            raise RuntimeError("records were still unwritten after %.0f s" % timeout)
        time.sleep(0.1)


class FlushClock:
    """When a server's scheduled flushes swap its buffer: every ``interval`` from its start.

    A flood that a flush cuts into has the writers on the host's cores beside the ingest and
    runs about a third slower, with rules or without: a round then measures where the flush
    fell, not the server.  Starting a flood a fixed time after its server's own write-out put
    it at the same place in that server's schedule round after round, and the other server's
    flood at another, so the rounds split by their order.  Each flood now starts just after a
    flush of its server: both have a whole interval before the next.
    """

    #: Seconds between polls of the buffer while the swap is awaited (its error).
    POLL = 0.05
    #: Start this long after a flush's swap (that flush, of an empty buffer, does nothing).
    MARGIN = 0.2

    def __init__(self, interval: float):
        self.interval = interval
        self.swap_at: float | None = None  # time.monotonic() of a swap seen

    def learn(self, server: ServerProcess, held: int, timeout: float = 60.0) -> None:
        """Watch the buffer (``held`` records just acknowledged) until a flush swaps it.

        The schedule is fixed from the server's start, so it is learned once, before the
        rounds: polling it during a round would add requests to the CPU measured.
        """
        deadline = time.monotonic() + timeout
        while server.metrics()["vmstats_buffered_records"] >= held:
            if time.monotonic() > deadline:
                raise RuntimeError("no flush swapped the buffer in %.0f s" % timeout)
            time.sleep(self.POLL)
        self.swap_at = time.monotonic() - self.POLL / 2

    def wait_for_next(self) -> None:
        """Sleep until just after the server's next flush (known once ``learn`` has run)."""
        assert self.swap_at is not None, "the flush clock was never learned"
        since = (time.monotonic() - self.swap_at) % self.interval
        pause = self.interval - since + self.MARGIN
        if pause > self.interval:  # within the margin of a swap already
            pause -= self.interval
        time.sleep(pause)


def meet_fleet(server: ServerProcess, interval: float) -> FlushClock:
    """Each VM's first record (its folder and day file made, as a fleet's first report makes
    them), written out; returns the server's flush schedule, seen in that write-out."""
    reply, _elapsed = send_synced(server.tcp_port, flood_chunks(VMS), timeout=120)
    assert reply.startswith(b"#!ack"), reply
    clock = FlushClock(interval)
    clock.learn(server, VMS)
    written_out(server)
    return clock


def host_busy() -> float:
    """CPU seconds the host's cores have been busy or taken by the hypervisor, all processes."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def reactor_seconds(pid: int) -> float:
    """User+system CPU of the server's own process (the reactor and its threads), without its
    parsers and writers: under the flood the reactor is what bounds the rate."""
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def flood(server: ServerProcess, chunks: list[bytes],
          clock: FlushClock) -> tuple[float, float, bool, float]:
    """(records/s over one TCP connection, timed to the last batch's acknowledgement,
    the server's CPU microseconds per record, its processes together, from the flood's first
    record until its last is in the logs, whether a flush cut into the flood, the CPU seconds
    the host spent on anything but the server and this process until the acknowledgement,
    and until then the payloads the reactor parsed itself, the rules' ticks' CPU seconds and
    the reactor's CPU microseconds per record).

    The last is a neighbour's share of a shared host: a round it is large in says the host's
    load, not the server's, set its rate.

    Read at the acknowledgement, the CPU held whatever share of the writers' work a flush
    happened to fire inside the flood: 0.3 to 1.7 s a million records for the same flood.
    The flood starts just after a flush (``FlushClock``): on an idle host it ends seconds
    before the next one, and a flood that a flush did cut into (a slow host) is reported.
    """
    count = sum(chunk.count(b"\n") for chunk in chunks)
    written_out(server)  # nothing of the round before is left to write
    start = server.metrics()
    clock.wait_for_next()
    cpu, busy, own = cpu_seconds(server.pid), host_busy(), sum(os.times()[:2])
    reactor = reactor_seconds(server.pid)
    reply, elapsed = send_synced(server.tcp_port, chunks, timeout=120)
    reactor = reactor_seconds(server.pid) - reactor
    others = (host_busy() - busy) - (sum(os.times()[:2]) - own) - (cpu_seconds(server.pid) - cpu)
    assert reply.startswith(b"#!ack"), reply
    end = server.metrics()
    cut = end["vmstats_buffered_records"] < count
    written_out(server)
    seen = {key: end.get(key, 0) - start.get(key, 0) for key in (PARSED_HERE, TICK_CPU)}
    seen[REACTOR] = reactor / count * 1e6
    return (count / elapsed, (cpu_seconds(server.pid) - cpu) / count * 1e6, cut, max(0.0, others),
            seen)


def mute_lookups(mutes: int = 1000, rows: int = 1000) -> dict:
    """The mute look-ups of a /alerts page (one a row, on the reactor), CPU time: ``mutes``
    single-VM mutes in force (one per VM under maintenance) and 3 by glob, network and tag,
    ``rows`` alarm rows about other VMs and the muted ones (median of 5)."""
    now = time.time()
    held = MuteSet(tempfile.gettempdir())
    for k in range(mutes):
        held.add(parse_mute({"match": {"id": vm_id(k)}, "duration": "2h", "author": "ops",
                             "comment": "maintenance"}, now))
    for match in ({"id": "db-*"}, {"cidr": "192.0.2.0/24"}, {"tags": {"host": "kvm9"}}):
        held.add(parse_mute({"match": match, "duration": "1h", "author": "ops",
                             "comment": "maintenance"}, now))
    alerts = [("cpu_hot", vm_id(k * VMS // rows if k % 2 else k), {"host": "kvm1"})
              for k in range(rows)]
    pages = []
    for _ in range(5):
        began = time.process_time()
        muted = sum(held.covering(rule, vm, tags, now) is not None for rule, vm, tags in alerts)
        pages.append(time.process_time() - began)
    return {"mute_page_ms_median": round(1000 * statistics.median(pages), 2),
            "mute_page_mutes": mutes + 3, "mute_page_rows": rows, "mute_page_muted": muted}


def states_page(vms: int = 100_000, rows: int = 1000) -> dict:
    """The states of a /alerts page (on the reactor), CPU time: 2 rules over ``vms`` VMs, one
    in 50 of them hot, the page's ``rows`` chosen from the 2 x ``vms`` series (median of 5)."""
    now = time.time()
    engine = Engine(parse_rules({"rule": [{"name": name, "metric": "cpu", "enter": 90}
                                          for name in ("hot", "hotter")]}), lambda: now)
    names = [vm_id(k) for k in range(vms)]
    engine.observe(names, [int(now)] * vms,
                   [logstore.format_tail(Record(vm=vm, ts=0, cpu=95.0 if k % 50 == 0 else 10.0,
                                                mem=40.0, net_rx=1000, net_tx=500, vcpus=2,
                                                mem_mb=4096))
                    for k, vm in enumerate(names)])
    engine.process()
    pages = []
    for _ in range(5):
        began = time.process_time()
        engine.states(rows)
        pages.append(time.process_time() - began)
    return {"states_page_ms_median": round(1000 * statistics.median(pages), 1),
            "states_page_series": engine.size, "states_page_rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer periods and rounds")
    parser.add_argument("--minute", type=float, default=10.0,
                        help="the rules' period and the fleet's reporting interval, seconds")
    parser.add_argument("--periods", type=int, default=None, help="periods of the latency phase")
    parser.add_argument("--rounds", type=int, default=None, help="alternated ingest floods")
    parser.add_argument("--flood", type=int, default=1_000_000, help="records per ingest flood")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    periods = args.periods or (3 if args.quick else 6)
    rounds = args.rounds or (2 if args.quick else 5)
    work = Path(tempfile.mkdtemp(prefix="vmstats-bench-rules-"))
    results: dict = {"vms": VMS, "rules": 50, "minute_s": args.minute}
    try:
        with WebhookReceiver(SECRET) as hook:
            rules = work / "rules.toml"
            rules.write_text(rules_text(hook.url, args.minute))
            common = ("--flush-interval", "%gs" % FLUSH_INTERVAL)
            with ServerProcess(work / "with", "--rules", str(rules), *common) as with_rules, \
                    ServerProcess(work / "without", *common) as without:
                print("latency: %d VMs every %gs, 50 rules, %d periods" % (VMS, args.minute, periods),
                      flush=True)
                results["latency"] = latency_phase(with_rules, hook, args.minute, periods)
                print(json.dumps(results["latency"]), flush=True)
                results["in_process"] = in_process(args.minute, args.flood)
                print("in process: %s" % json.dumps(results["in_process"]), flush=True)
                # Both meet the fleet here (the server with rules met it in the latency phase
                # too): each VM's first record, its folder and day file, written out.
                clocks = {"without": meet_fleet(without, FLUSH_INTERVAL),
                          "with": meet_fleet(with_rules, FLUSH_INTERVAL)}
                rates: dict[str, list[float]] = {"without": [], "with": []}
                cpu: dict[str, list[float]] = {"without": [], "with": []}
                cut: dict[str, list[bool]] = {"without": [], "with": []}
                others: dict[str, list[float]] = {"without": [], "with": []}
                here: dict[str, list[int]] = {"without": [], "with": []}
                ticks: dict[str, list[float]] = {"without": [], "with": []}
                reactor: dict[str, list[float]] = {"without": [], "with": []}
                transitions = []  # decided by the rules during each round (none is expected)
                for turn in range(rounds):
                    chunks = flood_chunks(args.flood)  # the same records for both, in turn
                    order = [("without", without), ("with", with_rules)]
                    before = with_rules.metrics().get("vmstats_rule_transitions_total", 0)
                    for name, server in order if turn % 2 == 0 else order[::-1]:
                        rate, us, flushed, neighbours, seen = flood(server, chunks, clocks[name])
                        others[name].append(round(neighbours, 2))
                        here[name].append(int(seen[PARSED_HERE]))
                        ticks[name].append(round(seen[TICK_CPU], 3))
                        reactor[name].append(round(seen[REACTOR], 3))
                        rates[name].append(rate)
                        cpu[name].append(us)
                        cut[name].append(flushed)
                    transitions.append(int(with_rules.metrics().get(
                        "vmstats_rule_transitions_total", 0) - before))
                    print("ingest records/s: without %.0f (%.2f CPU us each, the reactor %.2f; "
                          "others on the host %.2f s; %d payloads parsed in the reactor), with 50 "
                          "rules %.0f (%.2f, %.2f; %.2f s; %d; ticks %.3f CPU s); %d transitions%s" % (
                              rates["without"][-1], cpu["without"][-1], reactor["without"][-1],
                              others["without"][-1], here["without"][-1], rates["with"][-1],
                              cpu["with"][-1], reactor["with"][-1], others["with"][-1],
                              here["with"][-1], ticks["with"][-1],
                              transitions[-1],
                              "".join("; a flush cut into the flood %s rules" % name
                                      for name in ("without", "with") if cut[name][-1])),
                          flush=True)
                evaluated = with_rules.metrics().get("vmstats_rule_evaluations_total", 0)
        results["ingest"] = {"records_per_flood": args.flood, "rounds": rounds,
                             "without": round(max(rates["without"])),
                             "with_rules": round(max(rates["with"])),
                             "median_without": round(statistics.median(rates["without"])),
                             "median_with_rules": round(statistics.median(rates["with"])),
                             "rates_without": [round(r) for r in rates["without"]],
                             "rates_with_rules": [round(r) for r in rates["with"]],
                             "cpu_us_without": round(statistics.median(cpu["without"]), 2),
                             "cpu_us_with_rules": round(statistics.median(cpu["with"]), 2),
                             "reactor_us_without": reactor["without"],
                             "reactor_us_with_rules": reactor["with"],
                             "round_ratios": [round(w / o, 3) for w, o in zip(rates["with"],
                                                                              rates["without"], strict=True)],
                             "rule_evaluations": int(evaluated), "transitions": transitions,
                             "flush_cut_without": cut["without"], "flush_cut_with_rules": cut["with"],
                             "others_cpu_s_without": others["without"],
                             "others_cpu_s_with_rules": others["with"],
                             "parsed_here_without": here["without"],
                             "parsed_here_with_rules": here["with"],
                             "tick_cpu_s_with_rules": ticks["with"]}
        results["ingest"]["ratio"] = round(results["ingest"]["with_rules"]
                                           / results["ingest"]["without"], 3)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    latency, ingest = results["latency"], results["ingest"]
    ok_latency = latency["p99_ms"] is not None and latency["p99_ms"] <= 1000 and not latency["unmatched"]
    ok_ingest = ingest["ratio"] >= 0.9
    print("\nrecord -> webhook 200: p50 %s ms, p99 %s ms, max %s ms over %d transitions "
          "(%d unmatched) [target p99 <= 1000 ms: %s]"
          % (latency["p50_ms"], latency["p99_ms"], latency["max_ms"],
             latency["transitions_expected"], latency["unmatched"], "met" if ok_latency else "MISSED"))
    print("ingest with 50 rules: %d records/s vs %d without = %.1f %% [target >= 90 %%: %s]; "
          "medians %d vs %d (%.1f %%), median of the rounds' ratios %.1f %%; server CPU per record "
          "(median) %.2f us with rules, %.2f without; the reactor's %.3f and %.3f"
          % (ingest["with_rules"], ingest["without"], 100 * ingest["ratio"],
             "met" if ok_ingest else "MISSED", ingest["median_with_rules"],
             ingest["median_without"],
             100 * ingest["median_with_rules"] / ingest["median_without"],
             100 * statistics.median(ingest["round_ratios"]), ingest["cpu_us_with_rules"],
             ingest["cpu_us_without"], statistics.median(ingest["reactor_us_with_rules"]),
             statistics.median(ingest["reactor_us_without"])))
    inner = results["in_process"]
    print("in process: the hand-off over a flood, with its folds, %.3f us per record (%.0f ms per "
          "million); a tick over the %d VMs, each with a newer record, %.1f ms (median of %d, "
          "best %.1f); a sweep of them %.1f ms"
          % (inner["handoff_us_per_record"], inner["handoff_ms_per_million"], VMS,
             inner["tick_ms_median"], inner["ticks"], inner["tick_ms_min"], inner["sweep_ms_median"]))
    print("in process: the mute look-ups of a /alerts page of %d rows (%d muted) under %d mutes, "
          "%.2f ms (median of 5)" % (inner["mute_page_rows"], inner["mute_page_muted"],
                                     inner["mute_page_mutes"], inner["mute_page_ms_median"]))
    print("in process: the states of a /alerts page of %d rows chosen from %d series, %.1f ms "
          "(median of 5)" % (inner["states_page_rows"], inner["states_page_series"],
                             inner["states_page_ms_median"]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0 if ok_latency and ok_ingest else 1


if __name__ == "__main__":
    sys.exit(main())
