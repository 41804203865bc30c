"""Admission benchmark: the answer's latency for 10,000 VMs on 500 hosts; the backtest on a real fleet.

    .venv/bin/python bench/admission.py latency            # about 1 minute
    .venv/bin/python bench/admission.py http               # about 5 minutes
    .venv/bin/python bench/admission.py backtest           # the 250-VM Bitbrains month on simulated hosts
    .venv/bin/python bench/admission.py grains             # each default's alternatives on that month

``latency``: a fleet of 500 hosts (a mix of 48, 64 and 96 vCPUs with 256 to
768 GB) holding 10,000 VMs of five shapes, each with a week of per-minute use
(a daily cycle at its own phase and level, and noise), is summarised per host
the way the server's scheduled job does (host_demand, from series already in
memory), then manifests of 100, 1,000 and 10,000 VMs of three profiles, one
group of 20 with anti-affinity, are placed on the summary (placement.place,
demand basis).  Each answer's time is the median of ``--rounds``; the
allocation basis (Nova's ratios) goes through the same function in the same
run, as a reference.  Target: an answer within 1 s.

``http``: the same fleet's last ``--hours`` of minute records are written as
real logs (logstore), a real ``vmstats serve --inventory`` on loopback
summarises them (the scheduled child process), and ``POST /admission`` is
timed from this process, first with the aggregator idle (the reference), then
while a sender process pushes the fleet's records over UDP at ``--rate``
records a second (10,000 VMs a minute each is 167 a second; the default is
ten times that) and the summary is refreshed under it.  Targets: every answer
within 1 s, the answers under ingest about as fast as idle, and every record
sent received.

Backtest part (``backtest``):

1. replay: the real ``vmstats serve`` on loopback, fed by ``vmstats replay
   --format bitbrains --pack-hosts`` over TCP: the trace's VMs are placed on
   simulated hosts as they appear (the simulator's mix of host sizes, filled
   to 85% of the allocation limit at ratio 1.0, a cloud full by allocation
   without overcommit) and send those hosts' names as their host tag.  This
   takes several minutes, so the data dir and the inventory are kept under
   bench/out/ and reused while the trace's MANIFEST.tsv and the packing are
   the same; each packing seed (``--pack-seeds``) is one replay;
2. ``vmstats admit --backtest``: plan on ``--days`` whole UTC days from ``--plan-from``,
   place arrivals (copies of the trace's own VMs, each with its own
   history) by the capacity package's offer, and replay the next ``--days``
   days with the admitted VMs on their hosts;
3. check the targets: host-minutes over capacity, and the VMs admitted
   against allocation at ratio 1.0 and at Nova's default ratios.  The
   product's default plan and reference plans (``PLANS``: the former
   default, p99 minute by minute, and each of the two changes alone) are
   judged on the main split; the default plan also on ``--other-splits``
   and every packing seed.  The part passes when the default plan meets all
   three targets on every split and packing.

Everything listens on 127.0.0.1 only.
"""

import argparse
import datetime
import json
import multiprocessing
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))

from serverproc import LOOPBACK, STATUS_TOKEN, ServerProcess  # noqa: E402
from tracereplay import replayed  # noqa: E402

from vmstats import logstore  # noqa: E402
from vmstats.capacity.demand import Settings, VmUse, Window, host_demand  # noqa: E402
from vmstats.capacity.inventory import parse_inventory  # noqa: E402
from vmstats.capacity.placement import Ask, loads, place  # noqa: E402
from vmstats.capacity.profiles import parse_profile  # noqa: E402
from vmstats.protocol import Record, encode_record, pack_lines  # noqa: E402

HOSTS = 500
VMS = 10_000
DAYS = 7
SHAPES = ((1, 2), (2, 4), (2, 8), (4, 16), (8, 32))
HOST_SHAPES = ((48, 256), (64, 512), (96, 768))
MANIFEST_PROFILES = ("2x8@30%", "4x16@25%", "8x32@40%/60%")
T0 = 1767225600  # 2026-01-01T00:00:00Z


def inventory(hosts: int):
    """``hosts`` hosts of three shapes, the inventory's default reserve, ratios and buffer."""
    shapes = [HOST_SHAPES[i % len(HOST_SHAPES)] for i in range(hosts)]
    hosts_toml = [{"name": "kvm%03d" % i, "vcpus": v, "mem_gb": m} for i, (v, m) in enumerate(shapes)]
    return parse_inventory({"host": hosts_toml}, "bench")


def fleet_series(vms: int, hosts: int, minutes: int, seed: int = 5):
    """VMs one at a time: a daily cycle at the VM's own phase and level, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(minutes)
    for k in range(vms):
        vcpus, mem_gb = SHAPES[k % len(SHAPES)]
        base, swing, phase = rng.uniform(0.02, 0.35), rng.uniform(0.0, 0.3), rng.uniform(0, 2 * np.pi)
        daily = swing * np.sin(2 * np.pi * t / 1440 + phase)
        cpu = np.clip(base + daily + rng.normal(0, 0.03, minutes), 0, 1)
        mem = np.clip(rng.uniform(0.3, 0.8) + rng.normal(0, 0.01, minutes), 0, 1)
        yield VmUse(
            "vm%05d" % k,
            "kvm%03d" % (k % hosts),
            float(vcpus),
            float(mem_gb),
            np.ones(minutes, bool),
            cpu * vcpus,
            mem * mem_gb,
            since_start=True,
        )


#: The manifests that are hardest to place, beside the three-profile one: every VM of its own
#: shape (8 x 31 x 41 shapes, so 10,000 are all different), or all in one anti-affinity group.
HARD_MANIFESTS = {
    "shapes": "VMs of as many shapes",
    "group": "VMs in one anti-affinity group",
}


def manifest(count: int, basis: str, kind: str = "profiles") -> list[Ask]:
    """``count`` VMs of three profiles, the first 20 in one anti-affinity group; or (``kind``,
    HARD_MANIFESTS) each of its own shape, or all in one group."""
    asks = []
    for i in range(count):
        text = MANIFEST_PROFILES[i % len(MANIFEST_PROFILES)]
        if kind == "shapes":
            text = "%dx%d@%d%%" % (1 + i % 8, 2 + i % 31, 5 + i % 41)
        p = parse_profile(text)
        cpu, mem = (p.cpu_demand, p.mem_demand) if basis == "demand" else (p.vcpus, p.mem_gb)
        group = "spread" if kind == "group" else ("db" if i < 20 else None)
        asks.append(Ask("new%05d" % i, cpu, mem, group=group, vcpus=p.vcpus, mem_gb=p.mem_gb))
    return asks


def timed(function, rounds: int):
    """The median time of ``rounds`` calls, and the last call's result."""
    times, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def latency(args) -> dict:
    minutes = DAYS * 1440
    start = time.perf_counter()
    fleet = host_demand(
        inventory(args.hosts), fleet_series(args.vms, args.hosts, minutes), Window(T0, minutes), Settings()
    )
    summary_s = time.perf_counter() - start
    demand, allocation = loads(fleet), loads(fleet, basis="allocation")
    out = {"vms": args.vms, "hosts": args.hosts, "minutes": minutes, "summary_s": round(summary_s, 2)}
    print(
        "summary of %d VMs on %d hosts (%d minutes each, in memory): %.1f s"
        % (args.vms, args.hosts, minutes, summary_s)
    )
    answers = []
    runs = [(count, "VMs asked", "profiles") for count in args.asks]
    runs += [(max(args.asks), label, kind) for kind, label in HARD_MANIFESTS.items()]
    for count, label, kind in runs:
        seconds, offer = timed(lambda c=count, k=kind: place(demand, manifest(c, "demand", k)), args.rounds)
        ref_s, ref = timed(
            lambda c=count, k=kind: place(allocation, manifest(c, "allocation", k), 100.0), args.rounds
        )
        answers.append(
            {
                "asked": count,
                "kind": kind,
                "seconds": round(seconds, 4),
                "status": offer.status,
                "placed": len(offer.placed),
                "allocation_seconds": round(ref_s, 4),
                "allocation_placed": len(ref.placed),
            }
        )
        print(
            "  %6d %s: %-7s %6d placed in %.3f s (allocation basis: %d placed in %.3f s)"
            % (count, label, offer.status, len(offer.placed), seconds, len(ref.placed), ref_s)
        )
    worst = max(a["seconds"] for a in answers)
    out.update(answers=answers, slowest_s=worst, target_met=worst < 1.0)
    print("target (an answer within 1 s): %s, slowest %.3f s" % ("met" if worst < 1.0 else "MISSED", worst))
    return out


# --- HTTP part ------------------------------------------------------------------------------


def _use(k: int, minute: np.ndarray) -> tuple[np.ndarray, float]:
    """VM ``k``'s CPU % at ``minute`` (minutes since the epoch, a daily cycle) and its memory %."""
    rng = np.random.default_rng(k)
    base, swing, phase = rng.uniform(2, 35), rng.uniform(0, 30), rng.uniform(0, 2 * np.pi)
    return np.clip(base + swing * np.sin(2 * np.pi * minute / 1440 + phase), 0, 100).round(1), round(
        rng.uniform(30, 80), 1
    )


def write_fleet_logs(data_dir: Path, vms: int, hosts: int, hours: float, end_ts: int) -> int:
    """The fleet's last ``hours`` of minute records as real logs (the flusher's layout)."""
    stamps = np.arange(end_ts - int(hours * 3600), end_ts, 60) // 60 * 60
    written = 0
    for k in range(vms):
        vcpus, mem_gb = SHAPES[k % len(SHAPES)]
        cpu, mem = _use(k, stamps // 60)
        host = "kvm%03d" % (k % hosts)
        rows = {
            int(t): logstore.format_tail(
                Record(
                    vm="vm%05d" % k,
                    ts=int(t),
                    cpu=float(c),
                    mem=mem,
                    vcpus=vcpus,
                    mem_mb=mem_gb * 1024,
                    host=host,
                )
            )
            for t, c in zip(stamps.tolist(), cpu.tolist(), strict=True)
        }
        written += logstore.append_missing(str(data_dir), "vm%05d" % k, rows)
    return written


def send_fleet(port: int, vms: int, hosts: int, rate: float, seconds: float, sent) -> None:
    """A sender process: the fleet's records, fresh timestamps, at ``rate`` a second over UDP."""
    datagrams = []
    for k in range(vms):
        vcpus, mem_gb = SHAPES[k % len(SHAPES)]
        datagrams.append(
            encode_record(
                Record(
                    vm="vm%05d" % k,
                    ts=0,
                    cpu=10.0,
                    mem=50.0,
                    vcpus=vcpus,
                    mem_mb=mem_gb * 1024,
                    host="kvm%03d" % (k % hosts),
                )
            )
        )
    per_datagram = 10
    count = 0
    started = time.perf_counter()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        k = 0
        while time.perf_counter() - started < seconds:
            stamp = " %d" % int(time.time())
            lines = [
                (datagrams[(k + i) % vms].rsplit(" ", 1)[0] + stamp).encode() for i in range(per_datagram)
            ]
            k += per_datagram
            for payload in pack_lines(lines):
                sock.sendto(payload, (LOOPBACK, port))
            count += per_datagram
            delay = started + count / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    sent.value = count


def post(port: int, body: dict) -> tuple[float, dict]:
    """Seconds to the whole answer of one POST /admission, and the answer."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        "http://%s:%d/admission" % (LOOPBACK, port),
        data=data,
        headers={"Authorization": "Bearer " + STATUS_TOKEN, "Content-Type": "application/json"},
        method="POST",
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    return time.perf_counter() - start, answer


def manifest_json(count: int) -> dict:
    entries = [{"profile": p, "count": count // len(MANIFEST_PROFILES)} for p in MANIFEST_PROFILES]
    entries[0]["count"] += count - sum(e["count"] for e in entries)
    entries.append({"name": "db", "profile": "2x8@30%", "count": 20, "anti_affinity": True})
    return {"name": "bench-%d" % count, "hold": False, "vms": entries}


def shapes_json(count: int) -> dict:
    """``count`` VMs each of its own shape (as the latency part's "shapes"): the slowest to place."""
    return {"name": "shapes-%d" % count, "hold": False,
            "vms": [{"profile": "%dx%d@%d%%" % (1 + i % 8, 2 + i % 31, 5 + i % 41)} for i in range(count)]}


def status_while_placing(server, body: dict) -> dict:
    """One POST of ``body``, and /status asked every 20 ms until its answer: how long the answer
    took, and how long /status took meanwhile (the reactor's wait, if it places in the reactor)."""
    import threading

    done: dict = {}

    def ask() -> None:
        done["seconds"], done["answer"] = post(server.http_port, body)

    asking = threading.Thread(target=ask)
    asking.start()
    time.sleep(0.05)
    times = []
    while asking.is_alive():
        start = time.perf_counter()
        server.http("/status", timeout=30)
        times.append(time.perf_counter() - start)
        time.sleep(0.02)
    asking.join()
    answer = done["answer"]
    return {"asked": answer["asked"], "placed": answer["placed"], "seconds": round(done["seconds"], 3),
            "status_during": _spread(times) if times else None}


def _spread(times: list[float]) -> dict:
    ordered = sorted(times)
    return {
        "answers": len(times),
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
        "max_ms": round(1000 * ordered[-1], 1),
    }


def _state(server) -> dict:
    return json.loads(server.http("/admission"))


def http_part(args) -> dict:
    work = Path(tempfile.mkdtemp(prefix="vmstats-admission-"))
    try:
        return _http_part(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _http_part(args, work: Path) -> dict:
    data = work / "data"
    inventory_path = work / "hosts.toml"
    shapes = [HOST_SHAPES[i % len(HOST_SHAPES)] for i in range(args.hosts)]
    inventory_path.write_text(
        "".join(
            '[[host]]\nname = "kvm%03d"\nvcpus = %d\nmem_gb = %d\n' % (i, v, m)
            for i, (v, m) in enumerate(shapes)
        )
    )
    start = time.perf_counter()
    rows = write_fleet_logs(data, args.vms, args.hosts, args.hours, int(time.time()) - 120)
    print(
        "logs: %d rows for %d VMs on %d hosts written in %.0f s"
        % (rows, args.vms, args.hosts, time.perf_counter() - start)
    )
    out = {"vms": args.vms, "hosts": args.hosts, "hours": args.hours, "rows": rows, "rate": args.rate}
    with ServerProcess(
        work / "server",
        "--inventory",
        str(inventory_path),
        "--capacity-refresh",
        "%ds" % args.refresh,
        "--flush-interval",
        "10",
        data_dir=data,
        start_timeout=60,
    ) as server:
        first = server.wait_for(lambda s: _state(s).get("basis") and _state(s), timeout=900, interval=0.5)
        out["summary_s"] = first["last_refresh_s"]
        print("first summary: %.1f s for %d rows (a child process)" % (first["last_refresh_s"], rows))
        port = server.http_port
        seconds, big = post(port, manifest_json(args.big))
        out["big"] = {"asked": big["asked"], "placed": big["placed"], "seconds": round(seconds, 3)}
        print(
            "one answer for %d VMs: %s, %d placed in %.3f s"
            % (big["asked"], big["status"], big["placed"], seconds)
        )
        many = out["shapes"] = status_while_placing(server, shapes_json(args.big))
        during = many["status_during"] or {"answers": 0, "p50_ms": 0.0, "max_ms": 0.0}
        print(
            "one answer for %d VMs of as many shapes: %d placed in %.3f s; /status meanwhile: %d "
            "answers, p50 %.1f ms, max %.1f ms"
            % (many["asked"], many["placed"], many["seconds"], during["answers"], during["p50_ms"],
               during["max_ms"])
        )
        idle = [post(port, manifest_json(100))[0] for _ in range(args.answers)]
        out["idle"] = _spread(idle)
        received = server.metrics()["vmstats_records_received_total"]
        refreshes = _state(server)["refreshes"]["ok"]
        sent = multiprocessing.Value("q", 0)
        sender = multiprocessing.Process(
            target=send_fleet,
            args=(server.udp_port, args.vms, args.hosts, args.rate, args.ingest_seconds, sent),
        )
        sender.start()
        busy = []
        deadline = time.monotonic() + args.ingest_seconds
        while time.monotonic() < deadline:
            busy.append(post(port, manifest_json(100))[0])
            time.sleep(0.1)
        sender.join()
        server.wait_received(int(received + sent.value), timeout=60)
        after = _state(server)
        out["ingest"] = dict(
            _spread(busy),
            sent=sent.value,
            received=int(server.metrics()["vmstats_records_received_total"] - received),
            refreshes_during=after["refreshes"]["ok"] - refreshes,
            last_refresh_s=after["last_refresh_s"],
        )
    for name in ("idle", "ingest"):
        r = out[name]
        print(
            "%-7s %4d answers (100 + 20 VMs each): p50 %.1f ms, p99 %.1f ms, max %.1f ms"
            % (name, r["answers"], r["p50_ms"], r["p99_ms"], r["max_ms"])
        )
    i = out["ingest"]
    print(
        "ingest: %d records sent at %d/s, %d received; %d summary refreshes ran meanwhile (last %.1f s)"
        % (i["sent"], args.rate, i["received"], i["refreshes_during"], i["last_refresh_s"])
    )
    out["ratio_p50"] = round(i["p50_ms"] / max(out["idle"]["p50_ms"], 1e-3), 2)
    worst = max(i["max_ms"], out["idle"]["max_ms"], 1000 * out["big"]["seconds"])
    out["target_met"] = worst < 1000 and i["received"] == i["sent"] > 0
    print(
        "ingest/idle p50: %.2f; target (every answer within 1 s, every record received): %s"
        % (out["ratio_p50"], "met" if out["target_met"] else "MISSED")
    )
    return out


# --- backtest part ------------------------------------------------------------------------

TRACE = ROOT.parent / "shared" / "traces" / "bitbrains-rnd-2013-8"
#: How the replay packs the trace's VMs on simulated hosts (vmstats replay --pack-*; --seed added).
PACKING = ("--pack-ratio", "1.0:1.0", "--pack-fill", "0.85")
#: The plans judged: the product's defaults, and reference plans that show what each default is for.
PLANS = {
    "default": (),
    "p99-minutes": ("--percentile", "p99", "--peak-minutes", "1"),
    "p99.9-minutes": ("--percentile", "p99.9", "--peak-minutes", "1"),
    "p99-hourly": ("--percentile", "p99"),
}
#: Other plan windows (first day:days) the default plan is judged on, beside --plan-from/--days.
OTHER_SPLITS = ("2013-08-03:14", "2013-08-01:7", "2013-08-08:7", "2013-08-15:7", "2013-08-01:10",
                "2013-08-11:10")
#: The backtest targets (issue 22).
TARGETS = {"over_capacity_share": 0.001, "vs_ratio_1": 2.0, "vs_nova": 1.0}


def run_admit_backtest(data: Path, inventory: Path, plan_until: str, days: int,
                       plan: Sequence[str]) -> tuple[dict, float]:
    """``vmstats admit --backtest`` as an operator runs it; its JSON document and its wall time."""
    command = [sys.executable, "-m", "vmstats", "admit", "--backtest", str(data),
               "--inventory", str(inventory), "--arrivals", "bitbrains-*", "--until", plan_until,
               "--days", str(days), *plan, "--json"]  # fmt: skip
    began = time.monotonic()
    done = subprocess.run(command, cwd=str(ROOT), capture_output=True, text=True)
    seconds = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit("vmstats admit --backtest failed (%d):\n%s" % (done.returncode, done.stderr))
    return json.loads(done.stdout), seconds


def targets_met(doc: dict) -> dict:
    """Each backtest target, met or not."""
    outcomes = doc["outcomes"]
    demand = outcomes["demand"]["admitted"]
    return {
        "over_capacity_share": outcomes["demand"]["over_share"] <= TARGETS["over_capacity_share"],
        "vs_ratio_1": demand >= TARGETS["vs_ratio_1"] * outcomes["allocation 1.0"]["admitted"],
        "vs_nova": demand >= TARGETS["vs_nova"] * outcomes["allocation nova"]["admitted"],
    }


def replayed_fleet(args: argparse.Namespace, seed: int) -> tuple[Path, Path]:
    """The trace replayed onto hosts packed with ``seed`` (cached): its data dir and inventory."""
    work = replayed(args.trace, "admission-replay",
                    ("--pack-hosts", "{work}/hosts.toml", *PACKING, "--seed", str(seed)),
                    ("--flush-interval", "10"), args.fresh)
    return work / "data", work / "hosts.toml"


def judged(label: str, data: Path, inventory: Path, plan_from: str, days: int, plan: Sequence[str]) -> dict:
    """One ``vmstats admit --backtest`` run, printed; its figures and whether each target is met."""
    first = datetime.date.fromisoformat(plan_from)
    plan_until = (first + datetime.timedelta(days=days - 1)).isoformat()
    doc, seconds = run_admit_backtest(data, inventory, plan_until, days, plan)
    met = targets_met(doc)
    print("\n%s (%.0f s): plan %s .. %s, judged %s .. %s; %d hosts, %d residents; "
          "judging window coverage %.1f%%; %s" % (
              label, seconds, doc["plan"]["start"][:10], doc["plan"]["end"][:10],
              doc["judge"]["start"][:10], doc["judge"]["end"][:10], doc["hosts"], doc["residents"],
              100 * doc["judge_coverage"], doc["basis"]))
    ordered = [(name, doc["outcomes"][name]) for name in ("demand", "allocation 1.0", "allocation nova")]
    for name, outcome in ordered + [("residents only", doc["baseline"])]:
        print("  %-16s admitted %6d   host-minutes over %6d of %d (%.3f%%; cpu %d, mem %d)   "
              "peak cpu %.0f%%" % (name, outcome["admitted"], outcome["over_minutes"],
                                   outcome["host_minutes"], 100 * outcome["over_share"],
                                   outcome["over_cpu_minutes"], outcome["over_mem_minutes"],
                                   100 * outcome["peak_cpu_share"]))
    print("  targets: over capacity <= %.1f%%: %s; >= %gx ratio 1.0 (%.1fx): %s; >= Nova (%.2fx): %s" % (
        100 * TARGETS["over_capacity_share"], "met" if met["over_capacity_share"] else "MISSED",
        TARGETS["vs_ratio_1"], doc["admitted_vs_ratio_1"] or 0, "met" if met["vs_ratio_1"] else "MISSED",
        doc["admitted_vs_nova"] or 0, "met" if met["vs_nova"] else "MISSED"))
    return {"label": label, "plan_from": plan_from, "days": days, "plan": " ".join(plan) or "(defaults)",
            "seconds": round(seconds, 1), "targets": met, "backtest": doc}


def backtest_part(args: argparse.Namespace) -> dict:
    """The targets on the packed Bitbrains month: each plan on the main split, then the default
    plan on other splits and other packings, so the defaults are not fitted to one split."""
    out = {"trace": args.trace.name, "packing": " ".join(PACKING), "plan_from": args.plan_from,
           "days": args.days, "runs": [], "splits": []}
    fleets = {seed: replayed_fleet(args, seed) for seed in sorted({1, *args.pack_seeds})}
    data, inventory = fleets[1]
    for name in args.plans:
        label = "plan %s, seed 1, %s + %d days" % (name, args.plan_from, args.days)
        out["runs"].append(dict(judged(label, data, inventory, args.plan_from, args.days, PLANS[name]),
                                name=name))
    splits = [(args.plan_from, args.days)] + [(text.split(":")[0], int(text.split(":")[1]))
                                              for text in args.other_splits]
    for seed in args.pack_seeds:
        data, inventory = fleets[seed]
        for plan_from, days in splits:
            if seed == 1 and (plan_from, days) == (args.plan_from, args.days) and "default" in args.plans:
                continue  # judged above
            label = "plan default, seed %d, %s + %d days" % (seed, plan_from, days)
            out["splits"].append(dict(judged(label, data, inventory, plan_from, days, PLANS["default"]),
                                      seed=seed))
    defaults = [run for run in out["runs"] if run["name"] == "default"] + out["splits"]
    print("\nthe default plan on every split and packing:")
    print("  %-34s %9s %10s %9s %9s %8s" % ("split", "admitted", "over", "vs 1.0", "vs Nova", "targets"))
    for run in defaults:
        doc = run["backtest"]
        print("  %-34s %9d %9.3f%% %8.1fx %8.2fx %8s" % (
            run["label"].split(", ", 1)[1], doc["outcomes"]["demand"]["admitted"],
            100 * doc["outcomes"]["demand"]["over_share"], doc["admitted_vs_ratio_1"] or 0,
            doc["admitted_vs_nova"] or 0, "met" if all(run["targets"].values()) else "MISSED"))
    out["target_met"] = bool(defaults) and all(all(run["targets"].values()) for run in defaults)
    print("target (the default plan meets all three on every split): %s"
          % ("met" if out["target_met"] else "MISSED"))
    return out


#: Alternatives to each default judged on every seed-1 window (``grains``): the peaks' grain, the
#: percentile, and the former minute-by-minute sums at p99.9.
GRAIN_PLANS = {
    "default (p99.9 of hourly peaks)": (),
    "5-minute peaks": ("--peak-minutes", "5"),
    "15-minute peaks": ("--peak-minutes", "15"),
    "30-minute peaks": ("--peak-minutes", "30"),
    "120-minute peaks": ("--peak-minutes", "120"),
    "max of hourly peaks": ("--percentile", "max"),
    "p99.9 minute by minute": PLANS["p99.9-minutes"],
}


def window_facts(data: Path, plan_from: str, days: int) -> dict:
    """Of one plan window: its minutes in which half the VMs or more sent nothing (collection
    outages), and the median minute of the fleet's summed use (cores, GB)."""
    from vmstats.capacity import reader

    first = datetime.date.fromisoformat(plan_from)
    logs = reader.find_logs([str(data)], days, (first + datetime.timedelta(days=days - 1)).isoformat())
    seen = np.zeros(logs.window.minutes)
    running = np.zeros(logs.window.minutes)
    cpu = np.zeros(logs.window.minutes)
    mem = np.zeros(logs.window.minutes)
    for use in reader.read_vms(logs):
        at = np.flatnonzero(use.seen)
        if not len(at):
            continue
        running[at[0] : at[-1] + 1] += 1  # between its first and last record: expected to send
        seen += use.seen
        cpu += np.nan_to_num(use.cpu)
        mem += np.nan_to_num(use.mem)
    return {"outage_minutes": int(((running > 0) & (seen <= running / 2)).sum()),
            "median_cores": round(float(np.median(cpu)), 2), "median_gb": round(float(np.median(mem)), 2)}


def grains_part(args: argparse.Namespace) -> dict:
    """The figures docs/CAPACITY.md ("What the defaults rest on") quotes: each alternative plan
    (GRAIN_PLANS) on the seven seed-1 windows, each window's collection outages, and how the
    fleet's median use moved from the first fortnight to the second."""
    data, inventory = replayed_fleet(args, 1)
    splits = [(args.plan_from, args.days)] + [(text.split(":")[0], int(text.split(":")[1]))
                                              for text in OTHER_SPLITS]
    out = {"trace": args.trace.name, "windows": []}
    for plan_from, days in splits:
        window = {"plan_from": plan_from, "days": days, **window_facts(data, plan_from, days), "plans": {}}
        for name, plan in GRAIN_PLANS.items():
            first = datetime.date.fromisoformat(plan_from)
            doc, _seconds = run_admit_backtest(data, inventory, (first + datetime.timedelta(days=days - 1))
                                               .isoformat(), days, plan)
            demand = doc["outcomes"]["demand"]
            window["plans"][name] = {"admitted": demand["admitted"], "over_share": demand["over_share"],
                                     "peak_cpu_share": demand["peak_cpu_share"]}
            print("%s + %2d days, %-32s admitted %5d, over %.3f%%, busiest minute %.0f%%" % (
                plan_from, days, name, demand["admitted"], 100 * demand["over_share"],
                100 * demand["peak_cpu_share"]), flush=True)
        print("%s + %2d days: %d outage minutes; median fleet use %.1f cores, %.1f GB" % (
            plan_from, days, window["outage_minutes"], window["median_cores"], window["median_gb"]),
            flush=True)
        out["windows"].append(window)
    fortnights = [window_facts(data, day, 14) for day in ("2013-08-01", "2013-08-15")]
    out["fortnights"] = fortnights
    print("median fleet use, 08-01 .. 08-14 against 08-15 .. 08-28: cores %+.1f%%, GB %+.1f%%" % (
        100 * (fortnights[1]["median_cores"] / fortnights[0]["median_cores"] - 1),
        100 * (fortnights[1]["median_gb"] / fortnights[0]["median_gb"] - 1)))
    for name in GRAIN_PLANS:
        worst = max(w["plans"][name]["over_share"] for w in out["windows"])
        held = sum(w["plans"][name]["over_share"] <= TARGETS["over_capacity_share"] for w in out["windows"])
        print("%-32s over the target on %d of %d windows; most over %.3f%%" % (
            name, len(out["windows"]) - held, len(out["windows"]), 100 * worst))
    out["target_met"] = True  # a survey of alternatives: nothing here is a target
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parts = parser.add_subparsers(dest="part", required=True)
    lat = parts.add_parser("latency", help="the answer's latency from a per-host summary")
    lat.add_argument("--vms", type=int, default=VMS)
    lat.add_argument("--hosts", type=int, default=HOSTS)
    lat.add_argument("--asks", type=int, nargs="+", default=[100, 1000, 10000])
    lat.add_argument("--rounds", type=int, default=5)
    lat.add_argument("--json", default=None, help="write the figures to this file")
    web = parts.add_parser("http", help="POST /admission on a real server, idle and under ingest")
    web.add_argument("--vms", type=int, default=VMS)
    web.add_argument("--hosts", type=int, default=HOSTS)
    web.add_argument("--hours", type=float, default=6.0, help="hours of logs written before the start")
    web.add_argument(
        "--rate", type=float, default=1667.0, help="records a second sent during the ingest phase"
    )
    web.add_argument("--ingest-seconds", type=float, default=120.0)
    web.add_argument("--refresh", type=int, default=20, help="seconds between summary refreshes")
    web.add_argument("--answers", type=int, default=100, help="answers timed with the aggregator idle")
    web.add_argument("--big", type=int, default=10000, help="VMs of the one large manifest")
    web.add_argument("--json", default=None, help="write the figures to this file")
    backtest = parts.add_parser("backtest", help="plan, admit and judge on the packed Bitbrains month")
    backtest.add_argument("--trace", type=Path, default=TRACE, help="Folder of Bitbrains *.csv[.gz] files.")
    backtest.add_argument("--days", type=int, default=14, help="Days of each window (default 14).")
    backtest.add_argument("--plan-from", default="2013-08-01", metavar="YYYY-MM-DD",
                          help="First day of the plan window (default: the trace's first whole UTC day).")
    backtest.add_argument("--plans", nargs="+", choices=list(PLANS), default=list(PLANS),
                          help="Plans judged on the main split (default: all: the product's defaults and "
                               "the references).")
    backtest.add_argument("--other-splits", nargs="*", metavar="FROM:DAYS", default=list(OTHER_SPLITS),
                          help="Further plan windows (first day, days) the default plan is judged on.")
    backtest.add_argument("--pack-seeds", nargs="+", type=int, default=[1, 2],
                          help="Packings (vmstats replay --seed) the default plan is judged on.")
    backtest.add_argument("--json", default=None, help="write the figures to this file")
    backtest.add_argument("--fresh", action="store_true",
                          help="Replay again even if a cached replay matches.")
    grains = parts.add_parser("grains",
                              help="each default's alternatives on the seed-1 windows (CAPACITY.md)")
    grains.add_argument("--trace", type=Path, default=TRACE, help="Folder of Bitbrains *.csv[.gz] files.")
    grains.add_argument("--days", type=int, default=14, help="Days of the main split (default 14).")
    grains.add_argument("--plan-from", default="2013-08-01", metavar="YYYY-MM-DD")
    grains.add_argument("--json", default=None, help="write the figures to this file")
    grains.add_argument("--fresh", action="store_true", help="Replay again even if a cached replay matches.")
    args = parser.parse_args()
    parts_run = {"latency": latency, "http": http_part, "backtest": backtest_part, "grains": grains_part}
    part = parts_run[args.part]
    result = part(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
