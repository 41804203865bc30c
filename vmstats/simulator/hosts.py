"""Simulated physical hosts: VMs placed onto hypervisors as a private cloud's scheduler would.

Headroom and admission need hosts with capacities and VMs on them; a simulated
fleet or a replayed trace has neither.  The packer gives them what a real
OpenStack cloud has: a mix of two-socket servers of a few generations, filled
by allocation the way Nova fills them (a VM goes to the host with the most
free memory that passes the allocation filter, as Nova's default RAM weigher
spreads), to a share ``fill`` of the allocation limit
``(capacity - reserve) x ratio``.  At Nova's default ratios (CPU 4.0, RAM 1.0)
that is a cloud overcommitted on CPU, nearly full on memory by allocation, and
mostly idle by use: the gap the capacity figures are about.

Placement is online (``place`` takes VMs as they appear, adding a host from
the mix when none has room), so a replay can place each trace's VM when its
first record comes, and seeded, so the same VMs in the same order give the
same hosts.  ``inventory_toml`` writes the hosts in the inventory format the
capacity package reads (docs/CAPACITY.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from vmstats.words import counted

MIB_PER_GIB = 1024
#: Host generations of a private cloud: (vCPUs = hardware threads, memory GiB, weight).
HOST_MIX = ((32, 256, 2), (48, 384, 3), (64, 512, 3), (96, 768, 2))
#: Nova's defaults since 2023: CPU and RAM allocation ratios, reserved host memory.
NOVA_CPU_RATIO = 4.0
NOVA_RAM_RATIO = 1.0
NOVA_RESERVE_MEM_GB = 0.5
#: Share of each host's allocation limit the packer fills (clouds keep some room for rebuilds).
DEFAULT_FILL = 0.85
#: Share of a simulated fleet whose agents send no host tag (images older than the setting).
UNTAGGED_SHARE = 0.10


class PackError(ValueError):
    """A VM that no host of the mix can take, or a VM without a size."""


@dataclass
class SimHost:
    """One simulated hypervisor and the VMs placed on it (allocations in vCPUs and GiB)."""

    name: str
    vcpus: int
    mem_gb: float
    vms: list[str] = field(default_factory=list)
    alloc_vcpus: int = 0
    alloc_mem_gb: float = 0.0


class HostPacker:
    """Places VMs on hosts drawn from ``mix``, adding hosts as the fleet needs them."""

    def __init__(self, seed: int = 1, fill: float = DEFAULT_FILL, cpu_ratio: float = NOVA_CPU_RATIO,
                 ram_ratio: float = NOVA_RAM_RATIO, reserve_mem_gb: float = NOVA_RESERVE_MEM_GB,
                 mix: tuple = HOST_MIX, prefix: str = "kvm"):
        if not 0 < fill <= 1:
            raise PackError("fill must be in (0, 1], got %r" % fill)
        self.fill = fill
        self.cpu_ratio = cpu_ratio
        self.ram_ratio = ram_ratio
        self.reserve_mem_gb = reserve_mem_gb
        self.mix = mix
        self.prefix = prefix
        self.hosts: list[SimHost] = []
        self.placed: dict[str, SimHost] = {}
        self._rng = np.random.default_rng([seed, 0x4057])
        weights = np.array([w for _v, _m, w in mix], dtype=float)
        self._p = weights / weights.sum()

    def _limits(self, host: SimHost) -> tuple[float, float]:
        return (host.vcpus * self.cpu_ratio * self.fill,
                (host.mem_gb - self.reserve_mem_gb) * self.ram_ratio * self.fill)

    def _fits(self, host: SimHost, vcpus: int, mem_gb: float) -> bool:
        cpu_limit, mem_limit = self._limits(host)
        return host.alloc_vcpus + vcpus <= cpu_limit and host.alloc_mem_gb + mem_gb <= mem_limit

    def _new_host(self) -> SimHost:
        vcpus, mem_gb, _w = self.mix[int(self._rng.choice(len(self.mix), p=self._p))]
        host = SimHost("%s%03d" % (self.prefix, len(self.hosts) + 1), vcpus, float(mem_gb))
        self.hosts.append(host)
        return host

    def place(self, vm: str, vcpus: int | None, mem_mb: int | None) -> str:
        """The host ``vm`` goes on (the same one if it was placed before)."""
        if vm in self.placed:
            return self.placed[vm].name
        if not vcpus or not mem_mb:
            raise PackError("%s has no size (vcpus, mem_mb): it cannot be placed on a host" % vm)
        mem_gb = mem_mb / MIB_PER_GIB
        candidates = [h for h in self.hosts if self._fits(h, vcpus, mem_gb)]
        if candidates:
            host = max(candidates, key=lambda h: (self._limits(h)[1] - h.alloc_mem_gb, -len(h.vms)))
        else:
            host = self._new_host()
            if not self._fits(host, vcpus, mem_gb):
                # Drawn too small: the largest size of the mix takes it, or nothing does.
                vcpus_max, mem_max, _w = max(self.mix, key=lambda s: (s[1], s[0]))
                host.vcpus, host.mem_gb = vcpus_max, float(mem_max)
                if not self._fits(host, vcpus, mem_gb):
                    self.hosts.pop()
                    raise PackError("%s (%s, %.1f GiB) fits on no host of the mix"
                                    % (vm, counted(vcpus, "vCPU"), mem_gb))
        host.vms.append(vm)
        host.alloc_vcpus += vcpus
        host.alloc_mem_gb += mem_gb
        self.placed[vm] = host
        return host.name

    def inventory_toml(self, untagged: set[str] | frozenset = frozenset(), header: str = "") -> str:
        """The hosts as an inventory file; VMs in ``untagged`` send no host tag and are listed by id."""
        lines = ["# %s" % line for line in header.splitlines()]
        lines += ["[defaults]",
                  "reserve_vcpus = 0",
                  "reserve_mem_gb = %s" % _number(self.reserve_mem_gb),
                  "cpu_ratio = %r" % float(self.cpu_ratio),
                  "ram_ratio = %r" % float(self.ram_ratio),
                  "buffer = 0.10", ""]
        for host in self.hosts:
            lines += ["[[host]]",
                      'name = "%s"' % host.name,
                      "vcpus = %d" % host.vcpus,
                      "mem_gb = %s" % _number(host.mem_gb)]
            listed = [vm for vm in host.vms if vm in untagged]
            if listed:
                lines.append("vms = [%s]" % ", ".join('"%s"' % vm for vm in listed))
            lines.append("# %s, allocated %s (%.1f per thread), %.0f GiB (%.0f%% of memory)" % (
                counted(len(host.vms), "VM"), counted(host.alloc_vcpus, "vCPU"),
                host.alloc_vcpus / host.vcpus, host.alloc_mem_gb,
                100.0 * host.alloc_mem_gb / host.mem_gb))
            lines.append("")
        return "\n".join(lines)

    def summary(self) -> str:
        """One line: how many hosts of which sizes, and the fleet's allocation on them."""
        sizes: dict[tuple, int] = {}
        for host in self.hosts:
            sizes[(host.vcpus, host.mem_gb)] = sizes.get((host.vcpus, host.mem_gb), 0) + 1
        vcpus = sum(h.vcpus for h in self.hosts) or 1
        mem = sum(h.mem_gb for h in self.hosts) or 1
        return "%s (%s): %s, %.1f vCPUs per thread, %.0f%% of memory allocated" % (
            counted(len(self.hosts), "host"),
            ", ".join("%d x %d/%d" % (n, v, m) for (v, m), n in sorted(sizes.items())),
            counted(len(self.placed), "VM"), sum(h.alloc_vcpus for h in self.hosts) / vcpus,
            100.0 * sum(h.alloc_mem_gb for h in self.hosts) / mem)


def _number(value: float) -> str:
    return ("%d" % value) if float(value).is_integer() else repr(float(value))


def untagged_vms(vms: list[str], seed: int, share: float) -> set[str]:
    """The seeded ``share`` of ``vms`` whose agents were never told their host (older images)."""
    if share <= 0 or not vms:
        return set()
    rng = np.random.default_rng([seed, 0x7A6])
    count = int(round(len(vms) * share))
    return set(rng.choice(vms, size=count, replace=False).tolist()) if count else set()


def place_fleet(fleet: list, seed: int, untagged_share: float = UNTAGGED_SHARE,
                fill: float = DEFAULT_FILL) -> tuple[HostPacker, list, set[str]]:
    """A simulated fleet placed on hosts: ``(packer, fleet with host tags, untagged VMs)``.

    VMs arrive in a seeded order (not by index, so hosts mix profiles as a
    cloud's do); the untagged ones keep ``host=None`` and are listed by id in
    the inventory, as an operator lists VMs whose agents do not say.
    """
    packer = HostPacker(seed, fill=fill)
    for index in np.random.default_rng([seed, 0xA11]).permutation(len(fleet)).tolist():
        vm = fleet[index]
        packer.place(vm.vm, vm.vcpus, vm.mem_mb)
    untagged = untagged_vms([vm.vm for vm in fleet], seed, untagged_share)
    placed = [replace(vm, host=None if vm.vm in untagged else packer.placed[vm.vm].name) for vm in fleet]
    return packer, placed, untagged


def parse_ratios(text: str) -> dict[str, float]:
    """``4.0:1.0`` -> ``{"cpu_ratio": 4.0, "ram_ratio": 1.0}``."""
    try:
        cpu, ram = (float(part) for part in text.split(":"))
    except ValueError:
        raise PackError("expected CPU:RAM allocation ratios such as 4.0:1.0, got %r" % text) from None
    if not (0 < cpu < float("inf") and 0 < ram < float("inf")):
        raise PackError("allocation ratios must be positive, got %r" % text)
    return {"cpu_ratio": cpu, "ram_ratio": ram}
