"""The admission backtest against a small fleet whose answers are worked out here by hand.

Two hosts of 8 vCPUs and 16 GB, no reserve, a 25% buffer (6 cores and 12 GB
usable by the plan; 8 and 16 the judge's capacity):

- r1 on h1: 2 vCPUs / 4 GB, 1 core and 2 GB all day, both days;
- r2 on h2: the same, but at 2 cores for 60 minutes of each day (4% of the
  day, so its p99 is 2 cores);
- a1, on no host (the arrivals' VM): 2 vCPUs / 4 GB, 0.5 core and 1 GB on the
  plan day, 2 cores and 1 GB on the judged day (it got busy).

a1 runs on some host all the same: each plan withholds its use (or its size)
from the hosts' room in proportion to it, as a live answer does, and that
plan's judge adds its use to the hosts in the same proportions.  Demand basis: h1 has 6 - 1 = 5 cores
and 12 - 2 = 10 GB of room, h2 6 - 2 = 4 cores and 10 GB; a1's 0.5 core is
withheld 5:4 (0.28 from h1, 0.22 from h2), its 1 GB 10:8 (0.56, 0.44): 9
copies of a1 on h1 (4.72 / 0.5), 7 on h2 (3.78 / 0.5): 16.  Allocation at
ratio 1.0: 8 - 2 = 6 vCPUs and 16 - 4 = 12 GB free per host, less half of
a1's 2 vCPUs and 4 GB each: 5 and 10, 2 copies each: 4.  Nova (CPU 4.0, RAM
1.0): 30 - 1 = 29 vCPUs but still 10 GB: 2 each, 4.  On the judged day a1's
copies use 2 cores each: h1 carries 1 + 9 x 2 + 5/9 x 2 = 20.1 cores, h2
1 + 7 x 2 + 4/9 x 2 = 15.9: every minute of both hosts is over (2 x 1440);
with 2 copies a host carries at most 2 + 4 + 1 = 7 cores (h2 in r2's busy
hour, half of a1's 2 cores where the allocation plans withheld half its
size): not over, 0.
"""

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from serverproc import ROOT, serve

from vmstats.capacity import backtest
from vmstats.capacity.demand import Settings, VmUse, Window
from vmstats.capacity.inventory import parse_inventory
from vmstats.capacity.profiles import parse_profile
from vmstats.protocol import Record, encode_records
from vmstats.report.settings import ReportError
from vmstats.simulator.sender import open_sender

DAY = 1440
T0 = 1767225600  # 2026-01-01T00:00Z
PLAN = Window(T0, DAY)
JUDGE = Window(T0 + 86400, DAY)
BUSY = slice(600, 660)
BASES = ("demand", "allocation 1.0", "allocation nova")
HOSTS_TOML = """[defaults]
reserve_mem_gb = 0
buffer = 0.25

[[host]]
name = "h1"
vcpus = 8
mem_gb = 16

[[host]]
name = "h2"
vcpus = 8
mem_gb = 16
"""


def inventory():
    host = dict(vcpus=8, mem_gb=16, reserve_mem_gb=0, buffer=0.25)
    return parse_inventory({"host": [dict(name="h1", **host), dict(name="h2", **host)]}, "test.toml")


def use(vm, tag, cpu, mem, vcpus=2, mem_gb=4.0, seen=None):
    cpu = np.broadcast_to(np.asarray(cpu, float), (DAY,)).copy()
    mem = np.broadcast_to(np.asarray(mem, float), (DAY,)).copy()
    seen = np.ones(DAY, bool) if seen is None else seen
    cpu[~seen] = np.nan
    mem[~seen] = np.nan
    return VmUse(vm, tag, float(vcpus), float(mem_gb), seen, cpu, mem, since_start=True)


def busy_hour(idle, busy):
    out = np.full(DAY, float(idle))
    out[BUSY] = busy
    return out


def day(a1_cpu):
    return [use("r1", "h1", 1.0, 2.0), use("r2", "h2", busy_hour(1.0, 2.0), 2.0),
            use("a1", None, a1_cpu, 1.0)]


SETTINGS = Settings(horizon_days=0)


def test_history_arrivals_admitted_and_judged_as_worked_out_by_hand():
    result = backtest.backtest(inventory(), day(0.5), day(2.0), PLAN, JUDGE, SETTINGS)
    demand, ratio_1, nova = (result.outcomes[k] for k in BASES)
    assert (demand.admitted, ratio_1.admitted, nova.admitted) == (16, 4, 4)
    assert sorted(h for h in demand.placed.values()).count("h1") == 9
    assert all(vm.startswith("a1#") for vm in demand.placed)
    assert demand.over_minutes == demand.over_cpu_minutes == 2 * DAY and demand.over_mem_minutes == 0
    assert demand.host_minutes == 2 * DAY
    assert ratio_1.over_minutes == nova.over_minutes == 0
    # r2's busy hour, and a1's half, where ratio 1.0 withheld its size (h2's 4/9 of it by demand)
    assert ratio_1.peak_cpu_share == pytest.approx((2 + 4 + 2 / 2) / 8)
    assert result.baseline.over_minutes == 0 and result.baseline.admitted == 0
    assert result.unplaced == ["a1"] and result.residents == 2
    doc = result.as_dict()
    assert doc["admitted_vs_ratio_1"] == 4.0 and doc["judge_coverage"] == 1.0


def test_the_unplaced_vms_room_is_withheld_in_the_plan_and_their_use_judged_on_the_hosts():
    """u1 (4 vCPUs / 8 GB) tags h1 by another name and uses 3 cores on both days.  The plan offered
    its room (5 cores: 10 of 1x2@50%; 6 vCPUs: 6 at ratio 1.0) and the judge counted h1 with r1
    alone (1 of 8 cores at its busiest), so 10 copies looked safe on a host they put at 9 cores.
    Withheld as a live answer withholds it, the plan admits 4 (2 cores left) and 2 at ratio 1.0
    (2 vCPUs and 4 GB left), and the judge sees u1 on h1."""
    only_h1 = parse_inventory({"host": [dict(name="h1", vcpus=8, mem_gb=16, reserve_mem_gb=0, buffer=0.25)]})
    fleet = [use("r1", "h1", 1.0, 2.0), use("u1", "h1.lab", 3.0, 2.0, vcpus=4, mem_gb=8.0)]
    result = backtest.backtest(only_h1, fleet, fleet, PLAN, JUDGE, SETTINGS, profile=parse_profile("1x2@50%"))
    assert result.unplaced == ["u1"]
    assert [result.outcomes[k].admitted for k in BASES] == [4, 2, 2]
    assert result.baseline.peak_cpu_share == pytest.approx((1 + 3) / 8)
    assert result.outcomes["demand"].peak_cpu_share == pytest.approx((1 + 3 + 4 * 0.5) / 8)
    assert all(o.over_minutes == 0 for o in result.outcomes.values())


def test_each_basis_is_judged_with_the_unplaced_use_where_its_own_plan_withheld_it():
    """u (4 vCPUs, 4 cores busy) runs on no host the inventory names.  h1 holds two idle VMs of 8
    vCPUs (1 core used, 16 vCPUs allocated), h2 one busy VM of 4 vCPUs and 28 GB.  Nova's plan
    (CPU 4.0, RAM 1.0) withholds u's 4 vCPUs by the room its ratios leave, 16 : 28 (1.45 from
    h1), and offers h1 14 copies of 1x1@35%: 1 + 14 x 0.35 + 1.45 = 7.35 of 8 cores.  The judge
    put u's use where the demand plan withheld it instead, by measured room 7 : 4 (2.55 on h1):
    8.45 cores, every minute of h1 over, for a placement whose plan had kept u elsewhere: the
    plan and the judge of one basis answered "does it fit" on two different fleets.  Each
    basis is now judged with u where its own plan put it."""
    host = dict(vcpus=8, mem_gb=32, reserve_mem_gb=0, buffer=0)
    inv = parse_inventory({"host": [dict(name="h1", **host), dict(name="h2", **host)]}, "test.toml")
    fleet = [use("r1a", "h1", 0.5, 0.4, vcpus=8, mem_gb=4.0), use("r1b", "h1", 0.5, 0.4, vcpus=8, mem_gb=4.0),
             use("r2", "h2", 4.0, 14.0, vcpus=4, mem_gb=28.0), use("u", None, 4.0, 1.0, vcpus=4, mem_gb=2.0)]
    result = backtest.backtest(inv, fleet, fleet, PLAN, JUDGE, SETTINGS, profile=parse_profile("1x1@35%"))
    nova = result.outcomes["allocation nova"]
    assert (nova.admitted, sorted(nova.placed.values()).count("h1")) == (17, 14)
    h1, h2 = nova.per_host
    assert (h1["over_minutes"], h2["over_minutes"]) == (0, 0), nova.per_host
    assert h1["peak_cpu_share"] == pytest.approx((1 + 14 * 0.35 + 4 * 16 / 44) / 8)
    assert h2["peak_cpu_share"] == pytest.approx((4 + 3 * 0.35 + 4 * 28 / 44) / 8)
    # The demand basis withheld u by measured room, and is judged so: 12 on h1, 7 on h2, none over.
    demand = result.outcomes["demand"]
    assert (demand.admitted, demand.over_minutes) == (19, 0)
    assert demand.per_host[0]["peak_cpu_share"] == pytest.approx((1 + 12 * 0.35 + 4 * 7 / 11) / 8)
    # Residents only: no plan of their own, judged with u where the demand basis puts it.
    assert result.baseline.per_host[1]["peak_cpu_share"] == pytest.approx((4 + 4 * 4 / 11) / 8)


def test_a_profile_planned_and_judged_at_its_expected_use():
    # 1 vCPU / 2 GB at 50%: 0.5 core and 1 GB.  Demand, a1's use withheld: 9 on h1, 7 on h2;
    # allocation, a1's size withheld: 5 vCPUs and 10 GB per host, 5 each.
    result = backtest.backtest(inventory(), day(0.5), day(2.0), PLAN, JUDGE, SETTINGS,
                               profile=parse_profile("1x2@50%"))
    admitted = [result.outcomes[k].admitted for k in BASES]
    assert admitted == [16, 10, 10]
    # h1: 1 + 9 x 0.5 + 1.11 (a1's part) = 6.6 cores, h2 at most 2 + 7 x 0.5 + 0.89: never over 8.
    assert all(o.over_minutes == 0 for o in result.outcomes.values())
    assert result.outcomes["demand"].rounds == 1                # the first round of 100 was not placed whole


def test_correlated_arrivals_fit_fewer_where_they_peak_with_the_host():
    # One host (6 cores usable); r2 at 3 cores in its busy hour, 1 otherwise; a1 at 2 cores for an
    # hour, 0.1 otherwise, its level of 2 cores withheld at every minute.  In r2's hour:
    # 3 + 2 + 2n <= 6, no copy.  Apart: 1 + 2 + 2n <= 6, one copy.
    only_h2 = parse_inventory({"host": [dict(name="h2", vcpus=8, mem_gb=16, reserve_mem_gb=0, buffer=0.25)]})
    apart = np.full(DAY, 0.1)
    apart[900:960] = 2.0
    admitted = {}
    for name, a1 in (("together", busy_hour(0.1, 2.0)), ("apart", apart)):
        plan = [use("r2", "h2", busy_hour(1.0, 3.0), 2.0), use("a1", None, a1, 0.1)]
        result = backtest.backtest(only_h2, plan, plan, PLAN, JUDGE, SETTINGS)
        admitted[name] = result.outcomes["demand"].admitted
        # Judged on the same day, a1 itself on the host: 3 + 2 = 5 cores, or 1 + 2 x 2 = 5: nothing over.
        assert result.outcomes["demand"].over_minutes == 0
    assert admitted == {"together": 0, "apart": 1}


def test_unknown_hosts_are_never_offered_and_no_arrivals_is_one_clear_error():
    seen = np.zeros(DAY, bool)
    seen[:DAY // 2] = True                                    # r2 seen half the day: h2 below the gate
    plan = [use("r1", "h1", 1.0, 2.0), use("r2", "h2", 1.0, 2.0, seen=seen), use("a1", None, 0.5, 1.0)]
    result = backtest.backtest(inventory(), plan, day(0.5), PLAN, JUDGE, SETTINGS)
    assert result.unknown_hosts == ["h2"]
    assert set(result.outcomes["demand"].placed.values()) == {"h1"}
    assert result.outcomes["demand"].admitted == 9            # a1's use withheld from h1 alone
    with pytest.raises(ReportError, match="no arrivals"):  # what the logs lack: a failed run
        backtest.backtest(inventory(), day(0.5)[:2], day(0.5)[:2], PLAN, JUDGE, SETTINGS)


def test_admit_backtest_on_logs_a_real_server_wrote(tmp_path):
    """The same fleet sent over TCP to `vmstats serve`, judged by `vmstats admit --backtest`."""
    first = (int(time.time()) // 86400 - 3) * 86400       # two whole past UTC days
    plan, judged = day(0.5), day(2.0)
    records = []
    for offset, uses in ((0, plan), (86400, judged)):
        for u in uses:
            for minute in range(DAY):
                records.append(Record(u.vm, first + offset + 60 * minute, 100 * u.cpu[minute] / u.vcpus, None,
                                      100 * u.mem[minute] / u.mem_gb, vcpus=int(u.vcpus),
                                      mem_mb=int(u.mem_gb * 1024), host=u.host_tag))
    hosts = tmp_path / "hosts.toml"
    hosts.write_text(HOSTS_TOML)
    with serve(tmp_path, "--flush-interval", "0.5") as server:
        sender = open_sender("tcp", "127.0.0.1:%d" % server.tcp_port)
        sender.send(encode_records(records))
        stats = sender.close(60)
        assert stats.accepted == len(records) and not stats.unacknowledged
    assert server.returncode == 0, server.output

    def admit(*args):
        return subprocess.run([sys.executable, "-m", "vmstats", "admit", "--backtest", str(tmp_path / "data"),
                               "--inventory", str(hosts), "--days", "1", "--horizon-days", "0", *args],
                              cwd=str(ROOT), capture_output=True, text=True, timeout=120)

    done = admit("--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["plan"]["minutes"] == doc["judge"]["minutes"] == DAY
    assert [doc["outcomes"][k]["admitted"] for k in BASES] == [16, 4, 4]
    assert [doc["outcomes"][k]["over_minutes"] for k in BASES] == [2 * DAY, 0, 0]
    text = admit()
    assert text.returncode == 0 and "allocation, ratio 1.0" in text.stdout and "16" in text.stdout
    for args, message in ((("--arrivals", "nothing-*"), "no arrivals"),
                          (("--arrival-profile", "4x"), "profile"),
                          (("--until", "1999-01-01"), "no logs"),
                          (("--until", "0001-01-01"), "Error: --until 0001-01-01 is outside 1970-01-01")):
        bad = admit(*args)
        assert bad.returncode != 0 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
