"""Admission benchmark: the answer's latency for 10,000 VMs on 500 hosts.

    .venv/bin/python bench/admission.py latency            # about 1 minute

``latency``: a fleet of 500 hosts (a mix of 48, 64 and 96 vCPUs with 256 to
768 GB) holding 10,000 VMs of five shapes, each with a week of per-minute use
(a daily cycle at its own phase and level, and noise), is summarised per host
the way the server's scheduled job does (host_demand, from series already in
memory), then manifests of 100, 1,000 and 10,000 VMs of three profiles, one
group of 20 with anti-affinity, are placed on the summary (placement.place,
demand basis).  Each answer's time is the median of ``--rounds``; the
allocation basis (Nova's ratios) goes through the same function in the same
run, as a reference.  Target: an answer within 1 s.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vmstats.capacity.demand import Settings, VmUse, Window, host_demand  # noqa: E402
from vmstats.capacity.inventory import parse_inventory  # noqa: E402
from vmstats.capacity.placement import Ask, loads, place  # noqa: E402
from vmstats.capacity.profiles import parse_profile  # noqa: E402

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


def manifest(count: int, basis: str) -> list[Ask]:
    """``count`` VMs of three profiles; the first 20 in one anti-affinity group."""
    asks = []
    for i in range(count):
        p = parse_profile(MANIFEST_PROFILES[i % len(MANIFEST_PROFILES)])
        cpu, mem = (p.cpu_demand, p.mem_demand) if basis == "demand" else (p.vcpus, p.mem_gb)
        asks.append(Ask("new%05d" % i, cpu, mem, group="db" if i < 20 else None))
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
    for count in args.asks:
        seconds, offer = timed(lambda c=count: place(demand, manifest(c, "demand")), args.rounds)
        ref_s, ref = timed(lambda c=count: place(allocation, manifest(c, "allocation"), 100.0), args.rounds)
        answers.append(
            {
                "asked": count,
                "seconds": round(seconds, 4),
                "status": offer.status,
                "placed": len(offer.placed),
                "allocation_seconds": round(ref_s, 4),
                "allocation_placed": len(ref.placed),
            }
        )
        print(
            "  %6d VMs asked: %-7s %6d placed in %.3f s (allocation basis: %d placed in %.3f s)"
            % (count, offer.status, len(offer.placed), seconds, len(ref.placed), ref_s)
        )
    worst = max(a["seconds"] for a in answers)
    out.update(answers=answers, slowest_s=worst, target_met=worst < 1.0)
    print("target (an answer within 1 s): %s, slowest %.3f s" % ("met" if worst < 1.0 else "MISSED", worst))
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
    args = parser.parse_args()
    result = latency(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
