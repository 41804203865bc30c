"""Simulated hosts: VMs packed as Nova would, inventories in the agreed format, host tags on the wire."""

import subprocess
import sys
import time
import tomllib

import pytest
from serverproc import ROOT, serve

from vmstats import logstore
from vmstats.simulator import fleet as fleets
from vmstats.simulator import hosts


def vmstats(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "vmstats", *args], cwd=str(ROOT), capture_output=True,
                          text=True, timeout=timeout)


def logged_hosts(data_dir) -> dict:
    """vm -> the set of host cells of its rows ('' for rows without a tag)."""
    position = logstore.COLUMNS.index("host")
    out = {}
    for vm in logstore.iter_vms(str(data_dir)):
        cells = set()
        for _day, path in logstore.day_files(str(data_dir), vm):
            for line in open(path).read().splitlines()[1:]:
                cells.add(line.split(",")[position])
        out[vm] = cells
    return out


def members(inventory: dict) -> dict:
    """host name -> the VM ids its `vms` list names."""
    return {h["name"]: set(h.get("vms", [])) for h in inventory["host"]}


def test_packing_respects_each_hosts_allocation_limit_and_spreads():
    fleet = fleets.make_fleet(300, 3)
    packer, placed, untagged = hosts.place_fleet(fleet, 3, fill=0.85)
    assert set(packer.placed) == {vm.vm for vm in fleet}
    sizes = {(v, m) for v, m, _w in hosts.HOST_MIX}
    for host in packer.hosts:
        assert (host.vcpus, int(host.mem_gb)) in sizes
        # Recomputed from the fleet, not from the packer's own tallies.
        on = [vm for vm in fleet if packer.placed[vm.vm] is host]
        vcpus = sum(vm.vcpus for vm in on)
        mem = sum(vm.mem_mb for vm in on) / 1024
        assert vcpus <= host.vcpus * 4.0 * 0.85
        assert mem <= (host.mem_gb - 0.5) * 1.0 * 0.85
    # Nova's RAM weigher spreads: the hosts end up about equally full by memory.
    shares = sorted(h.alloc_mem_gb / h.mem_gb for h in packer.hosts)
    assert shares[-1] <= 0.85 and shares[len(shares) // 2] > 0.6
    # Overcommitted on CPU, by allocation: more vCPUs than threads somewhere.
    assert max(h.alloc_vcpus / h.vcpus for h in packer.hosts) > 1.0
    assert len(untagged) == 30
    assert all((vm.host is None) == (vm.vm in untagged) for vm in placed)
    again, _placed, again_untagged = hosts.place_fleet(fleet, 3, fill=0.85)
    assert [(h.name, h.vcpus, h.vms) for h in again.hosts] == [(h.name, h.vcpus, h.vms) for h in packer.hosts]
    assert again_untagged == untagged


def test_a_vm_no_host_can_take_or_without_a_size_is_a_clear_error():
    packer = hosts.HostPacker(1)
    with pytest.raises(hosts.PackError, match="fits on no host"):
        packer.place("huge", 2000, 1024)
    with pytest.raises(hosts.PackError, match="has no size"):
        packer.place("unsized", None, None)
    assert packer.hosts == [] and packer.placed == {}


def test_simulate_writes_an_inventory_and_its_vms_send_their_hosts(tmp_path):
    inventory_path = tmp_path / "hosts.toml"
    end = int(time.time()) // 60 * 60
    with serve(tmp_path, "--flush-interval", "0.5") as server:
        result = vmstats("simulate", "--vms", "40", "--days", "0.05", "--seed", "5", "--end", str(end),
                         "--server", "127.0.0.1:%d" % server.tcp_port, "--inventory", str(inventory_path))
        assert result.returncode == 0, result.stdout + result.stderr
        start, stop = fleets.period(end, 0.05)
        sent = sum(len(b) for _t, b in fleets.generate(fleets.make_fleet(40, 5, None, start, stop), 5, start,
                                                          stop))
        server.wait_received(sent, timeout=30)
    assert server.returncode == 0, server.output
    inventory = tomllib.loads(inventory_path.read_text())
    assert inventory["defaults"]["cpu_ratio"] == 4.0 and inventory["defaults"]["ram_ratio"] == 1.0
    assert all(isinstance(h["vcpus"], int) and h["mem_gb"] > 0 for h in inventory["host"])
    names = {h["name"] for h in inventory["host"]}
    listed = members(inventory)
    logged = logged_hosts(tmp_path / "data")
    assert len(logged) == 40
    untagged = [vm for vm, cells in logged.items() if cells == {""}]
    assert len(untagged) == 4                      # the 10% whose agents do not say
    for vm, cells in logged.items():
        owners = [name for name, vms in listed.items() if vm in vms]
        if cells == {""}:
            assert len(owners) == 1                # placed by the inventory's list, once
        else:
            assert len(cells) == 1 and cells <= names and owners == []
    assert "hosts: " in result.stdout and "4 VMs send no host tag" in result.stdout


def test_replay_packs_a_traces_vms_onto_hosts_and_tags_their_records(tmp_path):
    trace = tmp_path / "fleet.csv"
    rows = ["vm,timestamp,cpu,mem,vcpus,mem_mb"]
    sizes = {"big": (40, 200 * 1024), "mid": (16, 64 * 1024), "small": (2, 4096), "tiny": (1, 1024)}
    for vm, (vcpus, mem_mb) in sizes.items():
        rows += ["%s,%d,10,20,%d,%d" % (vm, 1714521600 + 60 * k, vcpus, mem_mb) for k in range(3)]
    trace.write_text("\n".join(rows) + "\n")
    inventory_path = tmp_path / "packed.toml"
    with serve(tmp_path, "--flush-interval", "0.5") as server:
        result = vmstats("replay", "--format", "csv", str(trace),
                         "--server", "127.0.0.1:%d" % server.tcp_port, "--pack-hosts", str(inventory_path),
                         "--pack-ratio", "1.0:1.0", "--pack-fill", "0.9")
        assert result.returncode == 0, result.stdout + result.stderr
        server.wait_received(12, timeout=20)
    inventory = tomllib.loads(inventory_path.read_text())
    assert (inventory["defaults"]["cpu_ratio"], inventory["defaults"]["ram_ratio"]) == (1.0, 1.0)
    capacity = {h["name"]: (h["vcpus"], h["mem_gb"]) for h in inventory["host"]}
    logged = logged_hosts(tmp_path / "data")
    assert set(logged) == set(sizes)
    load: dict = {}
    for vm, cells in logged.items():
        assert len(cells) == 1 and next(iter(cells)) in capacity
        used = load.setdefault(next(iter(cells)), [0, 0.0])
        used[0] += sizes[vm][0]
        used[1] += sizes[vm][1] / 1024
    # At ratio 1.0, filled to 90%: no host holds more vCPUs or memory than 90% of what it has.
    for name, (vcpus, mem) in load.items():
        assert vcpus <= 0.9 * capacity[name][0] and mem <= 0.9 * (capacity[name][1] - 0.5)
    bad = vmstats("replay", "--format", "csv", str(trace), "--server", "127.0.0.1:9", "--pack-fill", "0.5")
    assert bad.returncode != 0 and "--pack-hosts" in bad.stderr and "Traceback" not in bad.stderr


def test_replay_with_an_inventory_tags_the_vms_its_selectors_place(tmp_path):
    trace = tmp_path / "fleet.csv"
    vms = ("web-1", "web-2", "db1", "other")
    trace.write_text("vm,timestamp,cpu,mem\n" + "".join(
        "%s,%d,10,20\n" % (vm, 1714521600 + 60 * k) for vm in vms for k in range(2)))
    hosts = tmp_path / "hosts.toml"
    hosts.write_text('[[host]]\nname = "kvm-a"\nvcpus = 8\nmem_gb = 32\nvms = ["web-*"]\n\n'
                     '[[host]]\nname = "kvm-b"\nvcpus = 8\nmem_gb = 32\nvms = ["db1", "web-2"]\n')
    with serve(tmp_path, "--flush-interval", "0.5") as server:
        result = vmstats("replay", "--format", "csv", str(trace),
                         "--server", "127.0.0.1:%d" % server.tcp_port, "--inventory", str(hosts))
        assert result.returncode == 0, result.stdout + result.stderr
        server.wait_received(8, timeout=20)
    # The first host whose selectors match, as the capacity figures place them; "other" stays untagged.
    assert logged_hosts(tmp_path / "data") == {"web-1": {"kvm-a"}, "web-2": {"kvm-a"}, "db1": {"kvm-b"},
                                               "other": {""}}
    broken = tmp_path / "broken.toml"
    broken.write_text("[[host]]\nname = 'x'\n")
    bad = vmstats("replay", "--format", "csv", str(trace), "--server", "127.0.0.1:9",
                  "--inventory", str(broken))
    assert bad.returncode != 0 and "vcpus: missing" in bad.stderr and "Traceback" not in bad.stderr
