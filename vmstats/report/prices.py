"""The price book: what a VM costs as provisioned, by use, and after a recommendation.

Prices are the operator's own (a TOML file); the shipped example is only a
starting point and the report says when it was used.  Named sizes, when the
book has them, price a VM whose shape matches one and are what a downsize
picks from; otherwise unit prices per vCPU-hour and GB-RAM-hour apply and a
downsize picks from the policy's size ladders.
"""

import math
import os
import re
from dataclasses import dataclass, field

from vmstats.report.money import Money, largest_exact, minor_unit_of
from vmstats.report.settings import SHAPE_TOLERANCE, InputError, load_toml
from vmstats.words import counted

EXAMPLE = os.path.join(os.path.dirname(__file__), "examples", "pricebook.toml")
BYTES_PER_GB = 1e9
_CURRENCY_RE = re.compile(r"[^\s,;\"']{1,16}\Z")


@dataclass(frozen=True)
class Size:
    name: str
    vcpus: float
    memory_gb: float
    hourly: float


@dataclass
class PriceBook:
    source: str
    is_example: bool
    currency: str
    hours_per_month: float
    vcpu_hour: float
    gb_ram_hour: float
    disk_gb: float = 0.0
    network_gb: float = 0.0
    sizes: list[Size] = field(default_factory=list)
    #: Digits after the decimal point of ``currency`` (money.minor_unit_of): ISO 4217's unless set.
    minor_unit: int | None = None
    #: The one rounding and formatting of every amount priced by this book.
    money: Money = field(init=False)

    def __post_init__(self) -> None:
        if self.minor_unit is None:
            self.minor_unit = minor_unit_of(self.currency, None, self.source)
        self.money = Money(self.currency, self.minor_unit)

    @classmethod
    def load(cls, path: str | None) -> "PriceBook":
        source = path or EXAMPLE
        data = load_toml(source, "price book")

        def number(key: str, default: float | None = None) -> float:
            value = data.get(key, default)
            if not _non_negative(value):
                raise InputError("price book %s: %s must be a non-negative number" % (source, key))
            return float(value)

        unknown = set(data) - {
            "currency",
            "hours_per_month",
            "vcpu_hour",
            "gb_ram_hour",
            "disk_gb",
            "network_gb",
            "sizes",
            "minor_unit",
        }
        if unknown:
            raise InputError("price book %s: unknown key %s" % (source, sorted(unknown)[0]))
        sizes: list[Size] = []
        listed = data.get("sizes", [])
        for i, item in enumerate(listed if isinstance(listed, list) else [listed]):
            try:
                name, shape = str(item["name"]), (item["vcpus"], item["memory_gb"], item["hourly"])
            except (KeyError, TypeError):
                shape = (-1,)
            if not all(map(_non_negative, shape)) or not shape[0] or not shape[1]:
                raise InputError(
                    "price book %s: size %d needs a name, positive vcpus and memory_gb and an hourly "
                    "price that is not negative" % (source, i + 1)
                )
            size = Size(name, *map(float, shape))
            _check_size(source, i + 1, item, size, sizes)
            sizes.append(size)
        currency = data.get("currency", "USD")
        if not (isinstance(currency, str) and _CURRENCY_RE.match(currency)):
            # Every money cell names it: a list or a blank would make each bill's unit unreadable.
            raise InputError(
                "price book %s: currency must be one code such as USD or EUR (1-16 characters, no "
                "spaces or commas): one book, one currency" % source
            )
        hours = number("hours_per_month", 730.0)
        if not hours:
            raise InputError("price book %s: hours_per_month must be above 0 (730 = 365 x 24 / 12)" % source)
        minor_unit = minor_unit_of(currency, data.get("minor_unit"), source)
        book = cls(
            source=source,
            is_example=path is None,
            currency=currency,
            hours_per_month=hours,
            vcpu_hour=number("vcpu_hour"),
            gb_ram_hour=number("gb_ram_hour"),
            disk_gb=number("disk_gb", 0.0),
            network_gb=number("network_gb", 0.0),
            sizes=sorted(sizes, key=lambda s: s.hourly),
            minor_unit=minor_unit,
        )
        book.check_months()
        return book

    def check_months(self) -> None:
        """Refuse a price whose month alone is past what an amount is reckoned exactly to.

        A typo of ``vcpu_hour = 1e308`` made every cost infinite (a report of "monthly cost
        USD inf", numpy's warnings on the terminal); one a little smaller, amounts whose
        minor unit is noise.  A month of one unit of each price is checked, so a fleet's
        sums may still pass the limit for a price near it (docs/REPORT.md).
        """
        largest = largest_exact(self.minor_unit)
        months = [("vcpu_hour", self.vcpu_hour * self.hours_per_month),
                  ("gb_ram_hour", self.gb_ram_hour * self.hours_per_month),
                  ("disk_gb", self.disk_gb), ("network_gb", self.network_gb)]
        months += [("size %s's hourly" % size.name, size.hourly * self.hours_per_month)
                   for size in self.sizes]
        for key, month in months:
            if not month < largest:
                raise InputError(
                    "price book %s: %s makes a month of %s %.6g, past the %s %s amounts are "
                    "reckoned exactly to (15 significant digits)"
                    % (self.source, key, self.currency, month, self.currency,
                       self.money.figure(largest)))

    def named(self, vcpus: float, memory_gb: float) -> Size | None:
        """The named size of a shape, None when none matches.

        Sizes match within SHAPE_TOLERANCE: an agent reports the memory its
        guest sees (1.99 GB of a 2 GB size), which is still that size.
        """
        return next((s for s in self.sizes if s.vcpus == vcpus and same_size(s.memory_gb, memory_gb)), None)

    def hourly(self, vcpus: float, memory_gb: float) -> float:
        """Hourly price of a shape: its named size when one matches, else unit prices."""
        size = self.named(vcpus, memory_gb)
        return size.hourly if size else vcpus * self.vcpu_hour + memory_gb * self.gb_ram_hour

    def free_outside_sizes(self, shapes: list[tuple[str, float, float]]) -> str | None:
        """Which of ``shapes`` (``(vm, vcpus, memory_gb)``) the book bills 0 by default, in words.

        A book of named sizes whose unit prices are 0 (written so because only
        its sizes are meant to price anything) bills every VM of another shape
        0.00, on its owner's statement line too, which reads as a free VM; a
        price of 0 is a price, so this is a warning, not an error.
        """
        if not self.sizes or self.vcpu_hour or self.gb_ram_hour:
            return None
        free = [(vm, v, m) for vm, v, m in shapes if v > 0 and m > 0 and self.named(v, m) is None]
        if not free:
            return None
        vm, vcpus, memory_gb = free[0]
        one = len(free) == 1
        return ("%s: %s match%s none of its sizes and %s billed 0 at its unit prices of 0 (vcpu_hour, "
                "gb_ram_hour), e.g. %s (%g vCPU / %g GB)"
                % (self.source, counted(len(free), "VM"), "es" if one else "", "is" if one else "are", vm,
                   vcpus, round(memory_gb, 3)))

    def monthly(self, vcpus: float, memory_gb: float) -> float:
        if not (vcpus > 0 and memory_gb > 0):
            return math.nan
        return self.hourly(vcpus, memory_gb) * self.hours_per_month

    def usage_parts(
        self, vcpus: float, memory_gb: float, cpu_avg: float, mem_avg: float, disk_avg: float, net_avg: float
    ) -> dict[str, float] | None:
        """Cost by use per resource, per month: ``{cpu, ram, disk, network}``; None when unsized.

        The usage matrix (mean vCPUs busy, mean GB of memory used, GB moved on
        disk and network in a month at the window's mean rates) times the
        book's unit prices: a chargeback by what each VM consumed rather than
        what it reserved.  An unknown mean (never reported) counts as zero.
        Each part is rounded to the currency's minor unit here (``money.round``),
        once, so the VM's usage cost (their sum) and a statement's columns (sums
        of them) add up to the last digit.
        """
        if not (vcpus > 0 and memory_gb > 0):
            return None
        seconds = self.hours_per_month * 3600.0
        parts = {
            "cpu": _known(cpu_avg) / 100.0 * vcpus * self.vcpu_hour * self.hours_per_month,
            "ram": _known(mem_avg) / 100.0 * memory_gb * self.gb_ram_hour * self.hours_per_month,
            "disk": _known(disk_avg) * seconds / BYTES_PER_GB * self.disk_gb,
            "network": _known(net_avg) * seconds / BYTES_PER_GB * self.network_gb,
        }
        return {name: self.money.round(float(value)) for name, value in parts.items()}

    def bigger_but_cheaper(self) -> str | None:
        """A shape priced below a strictly smaller one, in words; None when the book is consistent.

        Unit prices alone are linear, hence consistent; named sizes can break
        that (a 1 vCPU / 2 GB size cheaper than 1 vCPU / 1 GB at unit prices),
        and then a downsize could recommend a shape that costs more.  Checked
        over the named sizes and the power-of-two shapes up to the largest one;
        the pair with the widest gap is named.
        """
        if not self.sizes:
            return None
        top_vcpus = max(s.vcpus for s in self.sizes)
        top_gb = max(s.memory_gb for s in self.sizes)
        vcpus = sorted({s.vcpus for s in self.sizes} | set(_powers(1.0, top_vcpus)))
        memory = sorted({s.memory_gb for s in self.sizes} | set(_powers(0.5, top_gb)))
        shapes = [(self.hourly(v, m), v, m) for v in vcpus for m in memory]
        worst = max(
            (
                (price - other, (price, v, m), (other, bv, bm))
                for price, v, m in shapes
                for other, bv, bm in shapes
                if bv >= v and bm >= m and (bv, bm) != (v, m)
            ),
            default=None,
        )
        if worst is None or worst[0] <= 1e-9:
            return None
        _gap, (price, v, m), (other, bv, bm) = worst
        return "%s: %s costs %s %.4f an hour, more than the bigger %s at %.4f" % (
            self.source,
            self._shape(v, m),
            self.currency,
            price,
            self._shape(bv, bm),
            other,
        )

    def _shape(self, vcpus: float, memory_gb: float) -> str:
        named = next((s.name for s in self.sizes if (s.vcpus, s.memory_gb) == (vcpus, memory_gb)), "")
        return "%g vCPU / %g GB%s" % (vcpus, memory_gb, " (%s)" % named if named else "")

    def smaller(
        self,
        need_vcpus: float,
        need_gb: float,
        vcpu_ladder: list[float],
        memory_ladder: list[float],
        max_gb_per_vcpu: float = 8.0,
        vcpu_step: float | None = None,
    ) -> tuple[str, float, float, float]:
        """The cheapest shape holding the need: ``(name, vcpus, memory_gb, monthly)``.

        ``vcpu_step``: the size is fractional (a container's CPU limit), so
        the need is rounded up to a multiple of the step, at unit prices,
        rather than to a named size or the ladder's whole vCPUs, which are
        VM shapes (docs/POLICY.md, "Fractional sizes").
        """
        fitting = [s for s in self.sizes if s.vcpus >= need_vcpus and s.memory_gb >= need_gb]
        if fitting and vcpu_step is None:
            best = fitting[0]
            return best.name, best.vcpus, best.memory_gb, best.hourly * self.hours_per_month
        memory = next((m for m in memory_ladder if m >= need_gb), math.ceil(need_gb))
        # Real shapes have a bounded memory per vCPU (memory-optimised families ~8 GB).
        need_vcpus = max(need_vcpus, memory / max_gb_per_vcpu)
        if vcpu_step is not None:
            steps = max(1, math.ceil(round(need_vcpus / vcpu_step, 9)))
            vcpus = round(steps * vcpu_step, 3)
        else:
            vcpus = next((v for v in vcpu_ladder if v >= need_vcpus), math.ceil(need_vcpus))
        return "", vcpus, memory, self.monthly(vcpus, memory)


def _check_size(source: str, number: int, item: dict, size: Size, before: list[Size]) -> None:
    """InputError for a size that would price VMs other than as the book reads.

    A VM is priced by its shape alone (the agent reports vCPUs and memory, not a
    family, zone or currency), so a key the size table does not know (``zone``,
    ``currency``, a misspelt ``hourly``) was ignored, and two sizes of one shape
    (a zone's price and another's, two families of one shape) billed every such
    VM at the cheaper one, with nothing on the page to show it.  One name for
    two shapes would leave ``recommended_size`` naming either.
    """
    unknown = sorted(set(item) - {"name", "vcpus", "memory_gb", "hourly"})
    if unknown:
        raise InputError(
            "price book %s: size %d (%s): unknown key %s (a size is name, vcpus, memory_gb and hourly: "
            "one book prices one zone in one currency)" % (source, number, size.name, unknown[0])
        )
    for other in before:
        if other.vcpus == size.vcpus and same_size(other.memory_gb, size.memory_gb):
            raise InputError(
                "price book %s: sizes %s (%g vCPU / %g GB) and %s (%g GB) are one shape: a VM is priced "
                "by its shape alone, so give each shape one size and one price"
                % (source, other.name, other.vcpus, other.memory_gb, size.name, size.memory_gb)
            )
        if other.name == size.name:
            raise InputError("price book %s: two sizes are named %s: give each its own name"
                             % (source, size.name))


def _non_negative(value: object) -> bool:
    """A price or size from TOML, which also spells ``inf`` and ``nan``: both would poison sums."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


def _powers(start: float, top: float) -> list[float]:
    """start, 2 start, 4 start ... up to top."""
    out = []
    while start <= top:
        out.append(start)
        start *= 2
    return out


def same_size(a: float, b: float) -> bool:
    """Two sizes (GB or vCPUs) within SHAPE_TOLERANCE of each other are one shape."""
    return abs(a - b) <= SHAPE_TOLERANCE * max(abs(a), abs(b))


def _known(value: float) -> float:
    return 0.0 if value != value else value
