"""VM selectors: shell globs and CIDR networks naming a set of VMs.

The report's policy groups and exclusions, and the server's keys bound to VMs, say "these VMs" the
same way, so they match the same way: a glob against the VM id, or the id as an IP address inside
a network.
"""

import fnmatch
import ipaddress
from collections.abc import Iterable
from typing import Any


def selected(vm: str, patterns: Iterable[str], networks: list[Any]) -> bool:
    """Does ``vm`` match a glob of ``patterns`` or lie in one of ``networks``?"""
    if any(fnmatch.fnmatchcase(vm, pattern) for pattern in patterns):
        return True
    if networks:
        try:
            address = ipaddress.ip_address(vm)
        except ValueError:
            return False
        return any(address in network for network in networks)
    return False
