"""VM profiles: ``VCPUSxGB[@USE%[/MEM%]]``, the shape of VMs asked for and their expected use.

``4x16@30%`` is 4 vCPUs and 16 GB expected to use 30% of both; ``4x16@30%/60%``
30% of its CPU and 60% of its memory; ``4x16`` alone is expected to use all of
its size, the safe assumption for a service nobody has measured.
"""

import math
import re
from dataclasses import dataclass

from vmstats.capacity.errors import CapacityError

_PROFILE = re.compile(
    r"^\s*(?P<vcpus>\d+(?:\.\d+)?)\s*[xX]\s*(?P<mem>\d+(?:\.\d+)?)\s*(?:g|gb|G|GB)?\s*"
    r"(?:@\s*(?P<cpu_use>\d+(?:\.\d+)?)\s*(?P<cpu_pct>%)?\s*"
    r"(?:/\s*(?P<mem_use>\d+(?:\.\d+)?)\s*(?P<mem_pct>%)?)?)?\s*$",
    re.ASCII,  # \d and \s of every script would read "\uff14x16" as 4 x 16
)


#: Least expected use taken, per resource (a share of the size): a guest's peak holds its kernel,
#: its services and their memory, and a VM expected to peak below 1% of its size is a typo (a
#: decimal point, a digit short) or one the report would reclaim.  Taken as written, 0.0001% put
#: 4,360,000 VMs of 2 vCPUs on a host of 16: each VM counts its expected use against the room.
MIN_USE = 0.01
#: Least size taken: one vCPU (Nova's flavors count whole vCPUs, at least one) and 64 MB (the
#: smallest flavor clouds ship, OpenStack's m1.nano).  With MIN_USE no VM counts less than 0.01
#: cores, so no host fits more than 100 VMs per usable vCPU however idle they are expected to be.
MIN_VCPUS = 1.0
MIN_MEM_GB = 0.0625


@dataclass(frozen=True)
class Profile:
    """A VM shape and its expected use (shares of its size, 0-1)."""

    vcpus: float
    mem_gb: float
    cpu_use: float = 1.0
    mem_use: float = 1.0

    @property
    def cpu_demand(self) -> float:
        """Cores the VM is expected to keep busy at its peak."""
        return self.vcpus * self.cpu_use

    @property
    def mem_demand(self) -> float:
        return self.mem_gb * self.mem_use

    def name(self) -> str:
        text = "%gx%g" % (self.vcpus, self.mem_gb)
        if self.cpu_use == self.mem_use == 1.0:
            return text
        if self.cpu_use == self.mem_use:
            return "%s@%g%%" % (text, self.cpu_use * 100)
        return "%s@%g%%/%g%%" % (text, self.cpu_use * 100, self.mem_use * 100)


def shaped_like_profile(text: str) -> bool:
    """Is ``text`` written as a profile (``VCPUSxGB[@USE%[/MEM%]]``), whatever its numbers?
    A manifest then says what is wrong with the numbers, not that no such profile is named."""
    return bool(_PROFILE.match(str(text)))


def parse_profile(text: str) -> Profile:
    """A Profile from ``4x16``, ``4x16@30%`` or ``4x16@30%/60%``; CapacityError otherwise."""
    match = _PROFILE.match(str(text))
    if not match:
        raise CapacityError("profile %r: expected VCPUSxGB[@USE%%[/MEM%%]], e.g. 4x16@30%%" % text)
    vcpus, mem = float(match["vcpus"]), float(match["mem"])
    if vcpus <= 0 or mem <= 0:
        raise CapacityError("profile %r: vCPUs and GB must be positive" % text)
    if not (math.isfinite(vcpus) and math.isfinite(mem)):  # 400 digits read as infinity
        raise CapacityError("profile %r: vCPUs and GB must be finite" % text)
    if vcpus < MIN_VCPUS or mem < MIN_MEM_GB:
        raise CapacityError("profile %r: a VM has at least %g vCPU and %g GB (64 MB), as the smallest "
                            "flavor" % (text, MIN_VCPUS, MIN_MEM_GB))
    # "4x16@0.5" read as 0.5% would admit a hundred times the VMs meant by half: say which.
    if (match["cpu_use"] is not None and not match["cpu_pct"]) or (match["mem_use"] is not None
                                                                  and not match["mem_pct"]):
        raise CapacityError("profile %r: expected use is a per cent with its %% sign, e.g. 4x16@30%%" % text)
    cpu_use = 1.0 if match["cpu_use"] is None else float(match["cpu_use"]) / 100.0
    mem_use = cpu_use if match["mem_use"] is None else float(match["mem_use"]) / 100.0
    for use in (cpu_use, mem_use):
        if not 0 < use <= 1 or math.isnan(use):
            raise CapacityError("profile %r: expected use is a share above 0%% and at most 100%%" % text)
        if use < MIN_USE:  # 0.0001% fitted millions of VMs on one host
            raise CapacityError("profile %r: expected use of %g%% is below %g%%, no running VM's peak: "
                                "give what it uses at its busiest" % (text, use * 100, MIN_USE * 100))
    return Profile(vcpus, mem, cpu_use, mem_use)
