"""Which of a VM's interfaces other agents report are virtual, told by name.

The vmstats agent leaves out what sysfs lists as virtual (bridges, veth pairs,
taps, tunnels, bonds, VLANs) unless nothing else is left: a byte between a VM
and its containers or guests never leaves the VM, and one that does leave
through them is counted again on the NIC beneath.  Telegraf's ``net`` input
sends every interface that is up but loopback, collectd's ``interface``
plugin every one, and neither says which are virtual, so the server tells them
by the names Linux, Docker, Kubernetes' network plugins, libvirt and OpenStack
give them.  A bond is left out and its slaves (named as NICs) counted, as the
agent does: their bytes are the bond's, and a name cannot say which NICs a
bond holds.  A VLAN (``eth0.100``) is left out for the same reason.

The names are glob patterns, as Telegraf's ``interfaces`` takes them
(``--virtual-interfaces`` replaces the list).  Each name is judged once and
remembered, in a bounded cache: a minute's rates are summed over a handful of
names that come back every minute.
"""

import functools
import re
from collections.abc import Callable, Iterable
from fnmatch import translate

#: The default patterns: containers, virtual machines, tunnels, aggregates and the kernel's
#: own virtual devices (docs/PROTOCOL.md, "Virtual interfaces", says why each is there).
VIRTUAL_INTERFACES = (
    # Containers: veth pairs and bridges (Docker, Podman, LXC/LXD, CNI, kubenet, Kubernetes'
    # network plugins: Calico, Flannel, Cilium, Weave, kube-router, Antrea, OVN).
    "veth*", "docker*", "br*", "cni*", "cbr*", "podman*", "lxc*", "lxd*", "incusbr*",
    "cali*", "flannel*", "vxlan*", "cilium_*", "weave", "datapath", "kube-*", "antrea-*",
    "genev_sys_*", "ovs-system", "nodelocaldns",
    # Virtual machines: libvirt's bridge and guests' taps, QEMU's and OpenStack's taps and
    # hybrid-plug veths and bridges, VirtualBox and VMware host-only networks.
    "virbr*", "vnet*", "tap*", "macvtap*", "qbr*", "qvb*", "qvo*", "vboxnet*", "vmnet*",
    # Tunnels and VPNs (tun covers Calico's tunl0).
    "tun*", "wg*", "gre*", "erspan*", "ip6*", "ip_vti*", "sit*", "geneve*", "zt*",
    "tailscale*",
    # Aggregates and VLANs: their bytes are their members' (counted on the NICs).
    "bond*", "team*", "vlan*", "*.*",
    # The kernel's other virtual devices.
    "ifb*", "dummy*", "nlmon*",
)
#: Names remembered at most (a sender inventing names cannot grow memory).
CACHE_SIZE = 65536
#: What the kernel refuses in an interface name (dev_valid_name): a pattern holding one of
#: these could never match, so it is an operator's typo.
_NEVER_IN_A_NAME = re.compile(r"[\s/:]")
_NONE: frozenset[str] = frozenset()


def parse_patterns(text: str) -> tuple[str, ...]:
    """``--virtual-interfaces``: comma-separated glob patterns ('' for none).

    ValueError names a pattern that can match no interface name.
    """
    patterns = tuple(part.strip() for part in text.split(",") if part.strip())
    for pattern in patterns:
        if _NEVER_IN_A_NAME.search(pattern):
            raise ValueError("%r can match no interface name (no spaces, '/' or ':' in one)"
                             % pattern)
    return patterns


@functools.lru_cache(maxsize=8)
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], re.Match | None] | None:
    """One regex's ``match`` for every pattern of ``patterns`` (None for none), made once per
    list: fnmatch.translate of the forty-odd defaults costs ~0.2 ms, and an assembler (every
    edge worker's, every test's) makes a VirtualInterfaces of the same list."""
    return re.compile("|".join(translate(p) for p in patterns)).match if patterns else None


class VirtualInterfaces:
    """The rule: ``left_out(names)`` is what a VM's minute does not count."""

    def __init__(self, patterns: Iterable[str] = VIRTUAL_INTERFACES):
        self.patterns = tuple(patterns)
        self._match = _matcher(self.patterns)
        self._known: dict[str, bool] = {}

    def __call__(self, name: str) -> bool:
        """Is ``name`` a virtual interface's?"""
        known = self._known.get(name)
        if known is None:
            known = self._match is not None and self._match(name) is not None
            if len(self._known) >= CACHE_SIZE:
                self._known.clear()
            self._known[name] = known
        return known

    def left_out(self, *groups: Iterable[str]) -> frozenset[str]:
        """The virtual ones among a VM's interfaces (``groups`` of names: a minute's rx and tx),
        none when every one is virtual (inside a container they are its only way out, and its
        ``eth0`` is a veth named as a NIC).  Called for every minute written: the common VM,
        a NIC or two and no virtual one, costs a cache lookup a name and makes no set."""
        known = self._known
        virtual = None
        nic = False
        for names in groups:
            for name in names:
                is_virtual = known.get(name)
                if is_virtual is None:
                    is_virtual = self(name)
                if not is_virtual:
                    nic = True
                elif virtual is None:
                    virtual = {name}
                else:
                    virtual.add(name)
        return frozenset(virtual) if nic and virtual else _NONE
