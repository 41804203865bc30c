"""Grading a reclamation report against the simulator's truth.

A report is only as good as its verdicts on VMs whose right answer is known.
The simulator writes that answer (the truth file); this module joins it with
the report's ``report.csv`` and says, per expected category, how often the
report agreed, where it went wrong, and how much of the savings it claims
rest on correct verdicts.

A VM the report calls ``insufficient-data`` is not graded: the report gives
no verdict on a VM observed for less than its minimum span (POLICY.md,
``min_days``), by design, so a one-day fleet is all too little data, not all
wrong.  Such VMs are counted apart; a test that wants every VM judged (a
fleet of two weeks) says so with that count.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass, field

from vmstats import inputfile
from vmstats.report.money import MAX_MINOR_UNIT, Money, iso_minor_unit
from vmstats.simulator.fleet import TRUTH_COLUMNS
from vmstats.simulator.profiles import EXPECTED
from vmstats.words import counted, part_of, plural

#: Report categories in display order; a VM absent from the report is "missing".
REPORT_CATEGORIES = ("reclaim", "schedule", "downsize", "upsize", "keep", "stopped", "insufficient-data",
                     "excluded")
MISSING = "missing"
#: The report's category for a VM it does not judge (too short a span or too little coverage).
UNJUDGED = "insufficient-data"
#: report.csv's money columns, each written to the currency's minor unit.
MONEY_COLUMNS = ("monthly_cost", "usage_cost", "monthly_saving")
#: The money of a report CSV written before it named its currency: cents, as all its money was.
NO_CURRENCY = Money("", 2)


class ScoreError(ValueError):
    """A truth or report file that cannot be read or lacks its columns."""


@dataclass
class TruthRow:
    vm: str
    vcpus: int
    mem_mb: int
    profile: str
    expected: str


@dataclass
class Score:
    """The outcome of grading: counts, confusion, the VMs the report got wrong, savings.

    ``total``, ``correct`` and ``per_expected`` count the judged VMs only; ``unjudged`` holds the
    VMs the report left ``insufficient-data``, and the confusion table shows every VM.
    """

    total: int = 0
    correct: int = 0
    per_expected: dict = field(default_factory=dict)  # expected -> (n, correct)
    confusion: dict = field(default_factory=dict)  # expected -> Counter(got)
    wrong: list = field(default_factory=list)  # (vm, profile, expected, got)
    unjudged: list = field(default_factory=list)  # (vm, profile, expected): insufficient-data
    extra: int = 0  # report rows for VMs the truth does not know
    saving_total: float = 0.0
    saving_correct: float = 0.0
    saving_wrong: float = 0.0
    money: Money = NO_CURRENCY  # the report's (report_money)

    @property
    def accuracy(self) -> float | None:
        """The share of judged VMs right; None when none was judged (not 0: nothing was wrong)."""
        return self.correct / self.total if self.total else None

    def as_dict(self) -> dict:
        return {
            "total": self.total, "correct": self.correct, "accuracy": self.accuracy,
            "insufficient_data": [dict(zip(("vm", "profile", "expected"), u, strict=True))
                                  for u in self.unjudged],
            "per_expected": {k: {"vms": n, "correct": c} for k, (n, c) in self.per_expected.items()},
            "confusion": {k: dict(v) for k, v in self.confusion.items()},
            "wrong": [dict(zip(("vm", "profile", "expected", "got"), w, strict=True)) for w in self.wrong],
            "extra": self.extra, "saving_total": self.money.round(self.saving_total),
            "saving_correct": self.money.round(self.saving_correct),
            "saving_wrong": self.money.round(self.saving_wrong),
            "currency": self.money.currency, "minor_unit": self.money.minor_unit,
        }


def _rows(path: str, needed: tuple[str, ...], what: str) -> list[dict]:
    """The rows of a CSV file; ScoreError worded as every input file's (vmstats.inputfile)."""
    try:
        reader = csv.DictReader(io.StringIO(inputfile.read_text(path), newline=""))
        missing = [c for c in needed if c not in (reader.fieldnames or ())]
        if missing:
            raise ScoreError("%s %s lacks %s %s"
                             % (what, path, plural(len(missing), "column"), ", ".join(missing)))
        return list(reader)
    except inputfile.FileProblem as exc:
        raise ScoreError("%s %s" % (what, exc)) from None
    except csv.Error as exc:
        raise ScoreError("%s %s is not valid CSV: %s" % (what, path, exc)) from None


def load_truth(path: str) -> dict[str, TruthRow]:
    truth = {}
    for number, row in enumerate(_rows(path, TRUTH_COLUMNS, "truth file"), 2):
        try:
            item = TruthRow(row["vm"], int(row["vcpus"]), int(row["mem_mb"]), row["profile"], row["expected"])
        except (TypeError, ValueError):
            raise ScoreError("truth file %s:%d: vcpus and mem_mb must be integers" % (path, number)) from None
        if item.expected not in EXPECTED:
            raise ScoreError("truth file %s:%d: expected %r is not one of %s"
                             % (path, number, item.expected, ", ".join(EXPECTED)))
        truth[item.vm] = item
    return truth


def report_csv_path(path: str) -> str:
    """A report folder means its ``report.csv``."""
    return os.path.join(path, "report.csv") if os.path.isdir(path) else path


def load_report(path: str) -> dict[str, tuple[str, float]]:
    """vm -> (category, monthly_saving) from a report CSV."""
    path = report_csv_path(path)
    report = {}
    for number, row in enumerate(_rows(path, ("vm", "category", "monthly_saving"), "report"), 2):
        text = (row["monthly_saving"] or "").strip()
        try:
            saving = float(text) if text else 0.0
        except ValueError:
            raise ScoreError("report %s:%d: monthly_saving %r is not a number"
                             % (path, number, text)) from None
        report[row["vm"]] = ((row["category"] or "").strip(), saving)
    return report


def report_money(path: str) -> Money:
    """The money of a report CSV: its ``currency`` column, to that currency's minor unit.

    The score's sums are printed in that unit as the report prints them (JPY
    1,235, BHD 12.345).  The unit is the CSV's ``minor_unit`` column (the price
    book's, which may set one for an ISO code too: USD in mills).  A CSV written
    before it had that column: the ``minor_unit`` of the report.json beside it
    (exact, when that file is of the same currency), else ISO 4217's for the
    code, else the most digits after the point of its money cells (each written
    to the unit, so none has more).  A CSV without ``currency``, written before
    it had one, is in cents.
    """
    path = report_csv_path(path)
    rows = _rows(path, (), "report")
    currency = (rows[0].get("currency") or "").strip() if rows else ""
    if not currency:
        return NO_CURRENCY
    digits = _minor_unit_column(path, rows)
    if digits is None:
        digits = _book_minor_unit(os.path.join(os.path.dirname(path), "report.json"), currency)
    if digits is None:
        digits = iso_minor_unit(currency)
    if digits is None:
        written = (_places(row.get(column)) for row in rows for column in MONEY_COLUMNS)
        digits = min(MAX_MINOR_UNIT, max(written, default=0))
    return Money(currency, digits)


def _minor_unit_column(path: str, rows: list[dict]) -> int | None:
    """The CSV's ``minor_unit`` (the same on every row); None for a CSV without the column.
    A cell that is no unit the report writes is ScoreError: a guess would print every sum
    to the wrong digits."""
    if "minor_unit" not in rows[0]:
        return None
    first = (rows[0]["minor_unit"] or "").strip()
    for number, row in enumerate(rows, 2):
        text = (row.get("minor_unit") or "").strip()
        if text != first or not (text.isascii() and text.isdigit()) or int(text) > MAX_MINOR_UNIT:
            raise ScoreError("report %s:%d: minor_unit %r is not the digits of its money (0 to %d, "
                             "the same on every row)" % (path, number, text, MAX_MINOR_UNIT))
    return int(first)


def _book_minor_unit(path: str, currency: str) -> int | None:
    """``meta.prices.minor_unit`` of a report.json priced in ``currency``; None without one."""
    try:
        with open(path, "rb") as handle:
            prices = inputfile.json_loads(handle.read())["meta"]["prices"]
        digits = prices["minor_unit"]
    except (OSError, ValueError, KeyError, TypeError):  # damaged: as if not there
        return None
    if prices.get("currency") != currency or isinstance(digits, bool) or not isinstance(digits, int):
        return None
    return digits if 0 <= digits <= MAX_MINOR_UNIT else None


def _places(cell: str | None) -> int:
    """Digits after the point of a number as written (``12.345``: 3), 0 for a whole or empty one."""
    text = (cell or "").strip()
    return len(text.partition(".")[2]) if "e" not in text.lower() else 0


def score(truth: dict[str, TruthRow], report: dict[str, tuple[str, float]]) -> Score:
    result = Score()
    for name in EXPECTED:
        result.per_expected[name] = (0, 0)
        result.confusion[name] = Counter()
    for vm, item in truth.items():
        got, saving = report.get(vm, (MISSING, 0.0))
        if got == "upsize":
            saving = 0.0  # an extra cost, which the report keeps out of its savings too
        result.confusion[item.expected][got] += 1
        result.saving_total += saving
        if got == UNJUDGED:
            result.unjudged.append((vm, item.profile, item.expected))
            continue
        n, c = result.per_expected[item.expected]
        # The profiles do not model under-provisioning: an upsize is a keep that asks for more.
        right = got == item.expected or (got, item.expected) == ("upsize", "keep")
        result.per_expected[item.expected] = (n + 1, c + right)
        result.total += 1
        result.correct += right
        if right:
            result.saving_correct += saving
        else:
            result.saving_wrong += saving
            result.wrong.append((vm, item.profile, item.expected, got))
    result.extra = sum(1 for vm in report if vm not in truth)
    result.saving_total += sum(s for vm, (_c, s) in report.items() if vm not in truth)
    result.wrong.sort(key=lambda w: (w[2], w[3], w[0]))
    result.unjudged.sort(key=lambda u: (u[2], u[0]))
    return result


def headline(result: Score) -> str:
    """How many VMs the report got right, and apart from them those it had too little data to
    judge: "0 of 1 VM right" for a fleet of one day read as a failed report."""
    share = " (%.1f %%)" % (100.0 * result.accuracy) if result.total else ""
    line = "%s right%s" % (part_of(result.correct, result.total, "judged VM" if result.unjudged else "VM"),
                           share)
    if result.unjudged:
        line += "; %s with too little data to judge (insufficient-data)" % counted(len(result.unjudged), "VM")
    return line

def render(result: Score, max_wrong: int = 30) -> str:
    """The terminal summary: accuracy per expected category, the confusion table, the misses."""
    lines = ["Score against the simulator's truth: " + headline(result)]
    if result.total:  # judged VMs only (a VM left insufficient-data is in the confusion table)
        lines += ["", "%-10s %5s %7s %9s" % ("expected", "VMs", "right", "accuracy")]
    for name, (n, c) in result.per_expected.items():
        if n:
            lines.append("%-10s %5d %7d %8.1f%%" % (name, n, c, 100.0 * c / n))
    # Columns: every category expected of some VM (so the diagonal is whole), plus any the report used.
    seen = [c for c in REPORT_CATEGORIES + (MISSING,)
            if result.confusion.get(c) or any(result.confusion[e][c] for e in result.confusion)]
    seen += sorted({c for e in result.confusion.values() for c in e} - set(seen))
    lines += ["", "Confusion (rows: expected, columns: report's category)",
              "%-10s " % "" + " ".join("%9s" % c[:9] for c in seen)]
    for name in EXPECTED:
        if result.confusion[name]:
            lines.append("%-10s " % name + " ".join("%9d" % result.confusion[name][c] for c in seen))
    if result.wrong:
        lines += ["", "Wrong verdicts (%d):" % len(result.wrong)]
        for vm, profile, expected, got in result.wrong[:max_wrong]:
            lines.append("  %-18s %-15s expected %-9s got %s" % (vm, profile, expected, got))
        if len(result.wrong) > max_wrong:
            lines.append("  ... and %d more" % (len(result.wrong) - max_wrong))
    if result.unjudged:
        lines += ["", "Not judged, too little data (%d; the report's reasons are in report.csv):"
                  % len(result.unjudged)]
        for vm, profile, expected in result.unjudged[:max_wrong]:
            lines.append("  %-18s %-15s expected %s" % (vm, profile, expected))
        if len(result.unjudged) > max_wrong:
            lines.append("  ... and %d more" % (len(result.unjudged) - max_wrong))
    if result.extra:
        lines.append("\n%s in the report not in the truth file (not scored)." % counted(result.extra, "VM"))
    money = result.money
    amount = money.text if money.currency else money.figure  # no currency column: the figure alone
    lines += ["", "Savings claimed: %s per month; %s on correct verdicts, %s on wrong ones."
              % tuple(amount(money.round(v)) for v in (result.saving_total, result.saving_correct,
                                                         result.saving_wrong))]
    return "\n".join(lines)
