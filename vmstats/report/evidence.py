"""A VM's evidence in words, for the drill-down of report.html.

report.json keeps the policy's figures as they are (``margins`` as shares,
rates in bytes per second, ``blocked_by`` as metric, check, value, limit and
over) for scripts.  An operator reading the page wants what they mean:
"CPU 5.0%, disk 524.3 kB/s", not ``{"cpu": 5.0, "disk": 524288.0}``.  Every
value becomes one line of text here; a key this module does not know (a newer
policy's) is worded generically, never shown as JSON.
"""

from collections.abc import Callable
from typing import Any

from vmstats.report.money import Money
from vmstats.report.policy import rate, zone
from vmstats.words import plural

_METRICS = {"cpu": "CPU", "disk": "disk", "net": "network", "mix": "work across CPU, disk and network"}
_CHECKS = {"floor": "floor (p50)", "p": "busiest minutes", "run": "held 30 min"}
#: evidence key -> its label on the page.
LABELS = {
    "margins": "room below each idle limit",
    "work_levels": "work levels (above them: work)",
    "idle_days": "idle days",
    "need_vcpus": "CPU needed",
    "need_mem_gb": "memory needed",
    "cpu_trend": "CPU trend",
    "mem_trend": "memory trend",
    "blocked_by": "kept from reclaim by",
    "off_hours_per_week": "off a week",
    "irregular_share": "irregular hours of the week",
    "utc_offset_hours": "users' time zone",
    "utc_offset_source": "time zone from",
    "off_local": "off, local time",
    "off_utc": "off, UTC",
    "data_quality": "data quality",
    "hours_since_last_record": "since the last record",
    "coverage": "coverage",
    "bad_lines": "malformed lines",
    "span_days": "observed",
    "min_days": "a verdict needs",
    "extra_monthly_cost": "extra cost a month",
    "upsize_at": "upsize at",
    "would_be": "would be",
    "would_save": "would save a month",
    # An excluded upsize's ``would_save`` is negative: worded as the upsize's own extra cost.
    "would_add": "would add a month (extra cost)",
    "exclusion": "excluded by",
    "expires": "exclusion expires",
    "damaged_files": "damaged files",
}


def _known(value: Any) -> bool:
    return isinstance(value, int | float) and value == value and abs(value) != float("inf")


def _number(value: Any) -> str:
    """A figure as people write it: 3, 1.25, 0.333 (no 1.2500000001, no 3.0)."""
    if isinstance(value, bool) or not _known(value):
        return _plain(value)
    return "%g" % round(float(value), 3)


def _days(value: Any) -> str:
    """A span in days as written (``_number``), the noun read after the figure shown: "1 day"."""
    text = _number(value)
    return "%s %s" % (text, plural(1 if text == "1" else 2, "day"))


def _plain(value: Any) -> str:
    """Any value in words: a mapping as "key value, ...", a list joined by "; ", nothing as "none"."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return _number(value) if _known(value) else "n/a"
    if isinstance(value, dict):
        return ", ".join("%s %s" % (str(k).replace("_", " "), _plain(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return "; ".join(_plain(v) for v in value)
    return str(value)


def _percent(share: Any) -> str:
    return "%.1f%%" % (100 * share) if _known(share) else "n/a"


def _margins(margins: dict[str, Any]) -> str:
    parts = []
    for key, share in margins.items():
        metric, _, check = str(key).partition("_")
        parts.append("%s %s %s" % (_METRICS.get(metric, metric), _CHECKS.get(check, check), _percent(share)))
    return ", ".join(parts)


def _work_levels(levels: dict[str, Any]) -> str:
    return ", ".join(
        "%s %s" % (_METRICS.get(m, m), ("%.1f%%" % v if _known(v) else "n/a") if m == "cpu" else rate(v))
        for m, v in levels.items()
    )


def _trend(value: Any) -> str:
    """A slope to the hundredth, as report.csv's ``cpu_trend`` cell gives it: to the tenth, -0.03
    read "-0.0", a sign on a zero; a zero is unsigned."""
    if not _known(value):
        return "n/a"
    value = round(float(value), 2) + 0.0
    return "%s points a week" % ("%+.2f" % value if value else "0.00")


def _offset(hours: Any) -> str:
    return zone(hours) if _known(hours) else _plain(hours)


def _damaged(files: Any) -> str:
    if not isinstance(files, list):
        return _plain(files)
    return "; ".join("%s: %s" % (f.get("path"), f.get("problem")) if isinstance(f, dict) else _plain(f)
                     for f in files)


def _formats(money: Money) -> dict[str, Callable[[Any], str]]:
    amount = lambda v: money.text(v) if _known(v) else "n/a"  # noqa: E731
    return {
        "margins": lambda v: _margins(v) if isinstance(v, dict) else _plain(v),
        "work_levels": lambda v: _work_levels(v) if isinstance(v, dict) else _plain(v),
        "need_vcpus": lambda v: "%s vCPU" % _number(v),
        "need_mem_gb": lambda v: "%s GB" % _number(v),
        "cpu_trend": _trend,
        "mem_trend": _trend,
        "off_hours_per_week": lambda v: "%s h of 168" % _number(v),
        "irregular_share": _percent,
        "utc_offset_hours": _offset,
        "hours_since_last_record": lambda v: "%s h" % _number(v),
        "coverage": lambda v: "%s of the window's minutes" % _percent(v),
        "span_days": _days,
        "min_days": _days,
        "extra_monthly_cost": amount,
        "would_save": amount,
        "upsize_at": lambda v: "%s%% of its size" % _number(v),
        "damaged_files": _damaged,
    }


def evidence_lines(row: dict[str, Any], money: Money) -> list[tuple[str, str]]:
    """``[(label, text)]`` for each entry of the row's evidence, in its order; amounts in ``money``.

    ``blocked_by`` is the row's own ``blocked_by`` text ("net floor (p50) 487.0 kB/s above
    10.2 kB/s (47.6x)"): the words the table's column shows, not the figures behind them.
    """
    formats = _formats(money)
    lines = []
    for key, value in (row.get("evidence") or {}).items():
        if key == "blocked_by" and row.get("blocked_by"):
            text = str(row["blocked_by"])
        elif key == "would_save" and _known(value) and value < 0:
            # What an excluded upsize would add is a cost, never "would save USD -56.36".
            key, text = "would_add", formats[key](-value)
        elif key in formats and value is not None:
            text = formats[key](value)
        else:
            text = _plain(value)
        lines.append((LABELS.get(key, str(key).replace("_", " ")), text))
    return lines
