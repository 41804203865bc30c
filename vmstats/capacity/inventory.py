"""The host inventory: what each physical host holds, and which host each VM is on.

The file's one definition (docs/CAPACITY.md describes it for people)::

    [defaults]
    reserve_vcpus = 0      reserve_mem_gb = 0.5    cpu_ratio = 4.0
    ram_ratio = 1.0        buffer = 0.10

    [[host]]
    name = "kvm01"   vcpus = 64   mem_gb = 256   vms = ["web-*", "10.1.0.0/24"]
    max_instances = 50     # optional: Nova's max_instances_per_host (none by default)

Every key but ``name``, ``vcpus`` and ``mem_gb`` is optional; a host's own
keys override ``[defaults]``, which override the built-in defaults below
(Nova's reserved host memory and allocation ratios since 2023).  A VM is on
the host its ``host`` tag names when the inventory knows that host, else on
the first host whose ``vms`` selectors match it, else it is unplaced.
"""

import math
from dataclasses import dataclass, field
from typing import Any

from vmstats import inputfile
from vmstats.capacity.errors import CapacityError
from vmstats.client.hostfile import host_tag
from vmstats.protocol import MAX_HOST_LENGTH
from vmstats.report.settings import ReportError, parse_selector
from vmstats.selectors import selected

#: Keys of [defaults] and of a host that [defaults] may set, with the built-in values.
DEFAULTS = {
    "reserve_vcpus": 0.0,  # held back for the hypervisor
    "reserve_mem_gb": 0.5,  # Nova's reserved_host_memory_mb default
    "cpu_ratio": 4.0,  # Nova's allocation ratios since 2023 (16.0 / 1.5 before)
    "ram_ratio": 1.0,
    "buffer": 0.10,  # share of capacity kept free on top of the reserve
    # VMs a host may hold in all, as Nova's NumInstancesFilter caps them (max_instances_per_host):
    # none by default, as that filter is not among Nova's default ones.
    "max_instances": math.inf,
}
_HOST_KEYS = ("name", "vcpus", "mem_gb", "vms") + tuple(DEFAULTS)
#: Largest number the inventory takes (vCPUs, GB, reserves, ratios): far past any host, and small
#: enough that what is worked out from it (``(total - reserved) x ratio``, VMs that fit) stays a
#: number.  1e300 vCPUs at ratio 1e10 overflowed to infinity: headroom ended in a traceback and
#: the server's summary could not be read back, so every admission was answered 503.
MAX_NUMBER = 1e12


@dataclass(frozen=True)
class Host:
    """One physical host: its size, what is held back, its allocation ratios, its VM selectors."""

    name: str
    vcpus: float
    mem_gb: float
    reserve_vcpus: float = DEFAULTS["reserve_vcpus"]
    reserve_mem_gb: float = DEFAULTS["reserve_mem_gb"]
    cpu_ratio: float = DEFAULTS["cpu_ratio"]
    ram_ratio: float = DEFAULTS["ram_ratio"]
    buffer: float = DEFAULTS["buffer"]
    max_instances: float = DEFAULTS["max_instances"]
    vms: tuple[str, ...] = ()
    patterns: tuple[str, ...] = field(default=(), compare=False, repr=False)
    networks: tuple[Any, ...] = field(default=(), compare=False, repr=False)

    @property
    def usable_vcpus(self) -> float:
        """vCPUs demand may fill: capacity less the reserve and the buffer."""
        return self.vcpus - self.reserve_vcpus - self.buffer * self.vcpus

    @property
    def usable_mem_gb(self) -> float:
        return self.mem_gb - self.reserve_mem_gb - self.buffer * self.mem_gb

    @property
    def alloc_vcpus(self) -> float:
        """vCPUs Nova would let VMs be allocated: (total - reserved) x ratio."""
        return (self.vcpus - self.reserve_vcpus) * self.cpu_ratio

    @property
    def alloc_mem_gb(self) -> float:
        return (self.mem_gb - self.reserve_mem_gb) * self.ram_ratio

    def selects(self, vm: str) -> bool:
        """Do this host's ``vms`` selectors (ids, globs, CIDRs) name ``vm``?"""
        return bool(self.patterns or self.networks) and selected(vm, self.patterns, list(self.networks))


@dataclass(frozen=True)
class Inventory:
    """The hosts of one inventory file, in file order (the order selectors are tried in)."""

    hosts: tuple[Host, ...]
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {h.name: h for h in self.hosts})

    def get(self, name: str) -> Host | None:
        return self._by_name.get(name)  # type: ignore[attr-defined]

    def host_of(self, vm: str, tag: str | None) -> str | None:
        """The host ``vm`` is on: its ``host`` tag if the inventory knows it, else the first
        host whose selectors match, else None (unplaced: never counted as free capacity)."""
        if tag and tag in self._by_name:  # type: ignore[attr-defined]
            return tag
        for host in self.hosts:
            if host.selects(vm):
                return host.name
        return None


def load_inventory(path: str) -> Inventory:
    """Read and check an inventory file; CapacityError names the file and the key at fault."""
    try:
        data = inputfile.load_toml(path)
    except inputfile.FileProblem as exc:
        raise CapacityError("inventory %s" % exc) from None
    return parse_inventory(data, path)


def parse_inventory(data: dict[str, Any], source: str = "inventory") -> Inventory:
    """An Inventory from parsed TOML (``source`` names it in errors)."""
    where = "inventory %s" % source
    unknown = sorted(set(data) - {"defaults", "host"})
    if unknown:
        raise CapacityError("%s: unknown table %r (known: defaults, host)" % (where, unknown[0]))
    defaults = dict(DEFAULTS)
    given = data.get("defaults", {})
    if not isinstance(given, dict):
        raise CapacityError("%s: [defaults] must be a table" % where)
    for key, value in given.items():
        if key not in DEFAULTS:
            raise CapacityError(
                "%s: defaults.%s: unknown key (known: %s)" % (where, key, ", ".join(DEFAULTS))
            )
        defaults[key] = _number(value, key, "%s: defaults.%s" % (where, key))
    hosts = data.get("host")
    if not isinstance(hosts, list) or not hosts:
        raise CapacityError("%s: no [[host]] tables" % where)
    found: list[Host] = []
    seen: set[str] = set()
    for index, entry in enumerate(hosts):
        host = _host(entry, defaults, "%s: host[%d]" % (where, index))
        if host.name in seen:
            raise CapacityError("%s: host[%d].name: %r is named twice" % (where, index, host.name))
        seen.add(host.name)
        found.append(host)
    return Inventory(tuple(found), source)


def _host(entry: Any, defaults: dict[str, float], origin: str) -> Host:
    if not isinstance(entry, dict):
        raise CapacityError("%s: must be a table" % origin)
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise CapacityError("%s.name: missing or not a non-empty string" % origin)
    if name != name.strip():  # "kvm01 " is no VM's host tag: its VMs counted on no host, it looked empty
        raise CapacityError("%s.name: %r has white space around it, which no host tag has" % (origin, name))
    if not name.isprintable():  # "kvm\n01" split every line naming the host in two
        raise CapacityError("%s.name: %r is not printable text, which no host tag is" % (origin, name))
    if not entry.get("vms") and host_tag(name) != name:
        # "kvm 01": no record carries such a host tag, and no selector names a VM of it, so the
        # host was shown empty and offered whole while its VMs, tagged kvm-01, ran there unplaced.
        raise CapacityError("%s.name: %s" % (origin, _no_tag(name)))
    origin = "%s (%s)" % (origin, name)
    for key in entry:
        if key not in _HOST_KEYS:
            raise CapacityError("%s.%s: unknown key (known: %s)" % (origin, key, ", ".join(_HOST_KEYS)))
    values = dict(defaults)
    for key in ("vcpus", "mem_gb"):
        if key not in entry:
            raise CapacityError("%s.%s: missing" % (origin, key))
    for key in ("vcpus", "mem_gb") + tuple(DEFAULTS):
        if key in entry:
            values[key] = _number(entry[key], key, "%s.%s" % (origin, key))
    if values["reserve_vcpus"] >= values["vcpus"]:
        raise CapacityError(
            "%s.reserve_vcpus: %g holds back the whole host" % (origin, values["reserve_vcpus"])
        )
    if values["reserve_mem_gb"] >= values["mem_gb"]:
        raise CapacityError(
            "%s.reserve_mem_gb: %g holds back the whole host" % (origin, values["reserve_mem_gb"])
        )
    for size, reserve, unit in (("vcpus", "reserve_vcpus", "vCPUs"), ("mem_gb", "reserve_mem_gb", "GB")):
        # Demand may fill what is left of both: nothing left is a host never offered, shown "ok".
        if values[size] - values[reserve] - values["buffer"] * values[size] <= 0:
            raise CapacityError(
                "%s.buffer: %g of %g %s on top of %s = %g holds back the whole host"
                % (origin, values["buffer"], values[size], unit, reserve, values[reserve])
            )
    vms = entry.get("vms", [])
    if isinstance(vms, str):
        vms = [vms]
    if not isinstance(vms, list):
        raise CapacityError("%s.vms: must be a list of VM ids, globs or CIDRs" % origin)
    try:
        patterns, networks = parse_selector(vms, "%s.vms" % origin)
    except ReportError as exc:
        raise CapacityError(str(exc)) from None
    return Host(name, vms=tuple(vms), patterns=tuple(patterns), networks=tuple(networks), **values)


def _no_tag(name: str) -> str:
    """Why a host named ``name`` with no ``vms`` selectors can hold no VM, and what would."""
    tag = host_tag(name)
    sent = " (the VM agent sends %r for it)" % tag if tag else ""
    return ("%r is no host tag (at most %d letters, digits, '.', '_' or '-', the first a letter or "
            "digit), so no VM is on it: give the tag its VMs send%s, or name its VMs under vms"
            % (name, MAX_HOST_LENGTH, sent))


def _number(value: Any, key: str, origin: str) -> float:
    """A checked number: sizes positive, reserves not negative, ratios positive, buffer a share,
    an instance cap a whole number of at least 1, none past MAX_NUMBER."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CapacityError("%s: must be a number, not %r" % (origin, value))
    number = float(value)
    if number > MAX_NUMBER:
        raise CapacityError("%s: must be at most %g, not %g" % (origin, MAX_NUMBER, number))
    if key in ("vcpus", "mem_gb", "cpu_ratio", "ram_ratio") and number <= 0:
        raise CapacityError("%s: must be positive" % origin)
    if number < 0:
        raise CapacityError("%s: must not be negative" % origin)
    if key == "buffer" and number >= 1:
        raise CapacityError("%s: is a share of capacity below 1" % origin)
    if key == "max_instances" and (number < 1 or not number.is_integer()):
        # 0 would be a host never offered, shown as one with room; 2.5 VMs is no count.
        raise CapacityError("%s: must be a whole number of VMs, at least 1, not %g" % (origin, number))
    return number
