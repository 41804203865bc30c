"""Money: one currency's minor unit, and the one rounding and formatting of amounts in it.

A price book names one currency; how many digits an amount of it has after
the decimal point (its *minor unit*: 2 for USD's cents, 0 for JPY, 3 for
KWD's fils) is a fact of that currency, and every money figure of the report,
the statement, the backtest and their HTML, CSV, JSON and terminal outputs is
rounded and written with it.  ISO 4217 gives it for the currencies below; a
price book's ``minor_unit`` key gives it for any other code (a company's own
credits, a crypto-currency) or overrides the table.
"""

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from vmstats.report.settings import InputError

#: ISO 4217 currencies with a minor unit other than 2 (list one, 2024), by exponent.
_NOT_TWO = {
    0: "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF",
    3: "BHD IQD JOD KWD LYD OMR TND",
    4: "CLF UYW",
}
#: ISO 4217 currencies with cents (2 digits).  Codes without a minor unit (gold XAU, the IMF's
#: XDR, the test code XTS, no currency XXX) are in neither list: a book in one names its own.
_TWO = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN "
    "BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP "
    "GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK "
    "LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK "
    "NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD "
    "SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG "
    "YER ZAR ZMW ZWG ZWL"
)
#: Digits after the decimal point of each ISO 4217 currency the price book knows by its code.
MINOR_UNITS: dict[str, int] = {
    **{code: 2 for code in _TWO.split()},
    **{code: digits for digits, codes in _NOT_TWO.items() for code in codes.split()},
}
#: The finest minor unit a price book may set: amounts are reckoned at 15 significant digits,
#: which leaves a billion in whole units with 6 digits after the point.
MAX_MINOR_UNIT = 6


def largest_exact(minor_unit: int) -> float:
    """The amounts ``Money.round`` reckons to the unit are below this: 15 significant digits,
    ``minor_unit`` of them after the point (USD: under 10,000,000,000,000.00)."""
    return 10.0 ** (15 - minor_unit)


def minor_unit_of(currency: str, override: object, source: str) -> int:
    """The minor unit of ``currency``: the book's ``minor_unit`` when set, else ISO 4217's.

    A code neither knows is refused (InputError) rather than taken for cents:
    a bill in whole units written to the cent, or in mills cut to the cent, is
    wrong on every line and nothing on the page would show it.
    """
    if override is not None:
        if isinstance(override, bool) or not isinstance(override, int) or not 0 <= override <= MAX_MINOR_UNIT:
            raise InputError(
                "price book %s: minor_unit must be a whole number of digits after the decimal point, "
                "0 to %d (e.g. 0 for JPY, 2 for USD, 3 for KWD)" % (source, MAX_MINOR_UNIT)
            )
        return override
    digits = iso_minor_unit(currency)
    if digits is None:
        raise InputError(
            "price book %s: currency %s is not an ISO 4217 code with a minor unit: set minor_unit = the "
            "digits its amounts have after the decimal point (0 to %d)" % (source, currency, MAX_MINOR_UNIT)
        )
    return digits


def iso_minor_unit(currency: str) -> int | None:
    """ISO 4217's minor unit of ``currency`` (any case), None for a code it gives none."""
    return MINOR_UNITS.get(currency.upper())


@dataclass(frozen=True)
class Money:
    """Amounts in ``currency``, to ``minor_unit`` digits after the decimal point."""

    currency: str
    minor_unit: int = 2

    @classmethod
    def of(cls, prices: dict) -> "Money":
        """The money of a report's ``meta.prices`` (its ``currency`` and ``minor_unit``)."""
        return cls(prices["currency"], prices["minor_unit"])

    def round(self, value: float) -> float:
        """``value`` to the minor unit, half a unit away from zero: the one rounding of money.

        ``round(x, 2)`` rounds the binary double, so a half cent goes either
        way: 0.0015 an hour x 730 hours is 1.0949999... in binary (1.09) while
        0.0035 x 730 is 2.5550000... (2.56).  The amount is read at 15
        significant digits first (as a spreadsheet shows it, without the binary
        noise), so the unit is the one a person figuring the price on paper
        gets: 1.095 is 1.10.  A currency without a minor unit (JPY) gives an
        int, which CSV and JSON write as 1235, not 1235.0.  Rounded amounts are
        added by ``total``, in whole minor units.
        """
        if not math.isfinite(value):
            return value
        exact = Decimal(format(value, ".15g")).quantize(Decimal(1).scaleb(-self.minor_unit), ROUND_HALF_UP)
        return int(exact) if self.minor_unit == 0 else float(exact)

    def total(self, amounts: Iterable[float | int]) -> float | int:
        """The sum of ``amounts`` (each already to the minor unit, ``round``), exact to the unit.

        ``sum()`` of floats rounds at every addition, and near the amounts reckoned exactly
        (``largest_exact``) the error reaches half a unit: 36 VMs at USD 225,356,864,476.90
        a month summed to ...168.41, not the ...168.40 that adding the printed lines gives
        (at 2 digits such a fleet is absurd, but a bill of 100,000 VMs in IDR or a currency of
        6 digits meets it).  Each amount is counted as a whole number of minor units, which
        a double holds exactly below 2**53, and the sum is divided once: the total is the sum
        of the lines a person adds up.  A non-finite amount makes the total what ``sum`` gives.
        """
        scale = 10**self.minor_unit
        units, odd = 0, []
        for value in amounts:
            if math.isfinite(value):
                units += int(round(value * scale))
            else:
                odd.append(value)
        return self.round(math.fsum(odd) if odd else units / scale)

    def saving(self, cost: float, new_cost: float = 0.0, share: float = 1.0) -> float | int:
        """What a decision saves a month, reckoned from the amounts the report prints: ``share``
        of ``cost`` as rounded (``round``), rounded, less ``new_cost`` as rounded, exact to the unit.

        The one rule for every saving and extra cost: a reclaim saves its ``monthly_cost`` cell,
        a schedule that cell x off-hours / 168, a resize the cell less the new size's month
        (negative, an upsize's extra cost).  Reckoned from the costs before rounding, a schedule
        of 112.712 a month x 128/168 was 85.88 where the cells give 112.71 x 128/168 = 85.87,
        and the header's total was cents above the sum of what an operator checks.  An unknown
        ``cost`` or ``new_cost`` (NaN: no size, no price) gives NaN.
        """
        kept = self.round(self.round(cost) * share)
        return self.total((kept, -self.round(new_cost)))

    def amount(self, value: float | None, unknown: float | None = None) -> float | int | None:
        """A money figure of a row or a decision: ``value`` rounded (``round``) when known; when
        it is None or NaN (no price, no size), ``unknown`` rounded: None leaves a report's cell
        empty, 0 is a decision's saving that nothing priced."""
        if value is None or value != value:
            return None if unknown is None else self.round(unknown)
        return self.round(float(value))

    def figure(self, value: float) -> str:
        """``value`` with thousands separators and exactly the minor unit's digits: 1,234.50."""
        return format(value, ",.%df" % self.minor_unit)

    def text(self, value: float) -> str:
        """``value`` with its currency, for sentences and the terminal: USD 1,234.50, JPY 1,235."""
        return "%s %s" % (self.currency, self.figure(value))
