"""report.html: one self-contained page (inline CSS, SVG and JavaScript, no network).

The fleet's charts are drawn here as SVG strings; the VM table, its filters
and each VM's drill-down are drawn by the page's own script from the rows
embedded as JSON, a page of rows at a time, so a 10,000-VM report opens in a
second or two instead of laying out 10,000 table rows and their charts.
"""

import html
import os
import time
from typing import Any

import jinja2
import numpy as np

from vmstats.outputfile import write_text
from vmstats.report import exclusions as exclusions_mod
from vmstats.report.build import Report
from vmstats.report.evidence import LABELS, evidence_lines
from vmstats.report.money import Money
from vmstats.report.outputs import to_json
from vmstats.report.policy import CANDIDATES, CATEGORIES, rate
from vmstats.words import number, plural

TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")
COLOURS = {
    "stopped": "#7f7f7f",
    "insufficient-data": "#bcbd22",
    "reclaim": "#d62728",
    "schedule": "#9467bd",
    "downsize": "#ff7f0e",
    "keep": "#2ca02c",
    "excluded": "#17becf",
}
#: Colour of a category this module does not know (a newer policy's): drawn, never an error.
OTHER_COLOUR = "#8c564b"
SPARK_W, SPARK_H = 100, 28
#: Series sent to the page as text ("12.5,,13"), not JSON arrays: about half the bytes; the
#: value is the precision kept (sparklines are 28 pixels tall: whole percent is plenty).
_SERIES = {"spark_cpu": 0, "spark_mem": 0, "hour_of_week_cpu": 1, "daily_cpu_p95": 1, "daily_mem_p95": 1}
#: Row fields the page does not draw (report.json has them): a fifth of a large page.
_NOT_ON_PAGE = ("hour_of_week_mem",)
#: Names a sentence of the page gives of a list (the capacity section's unknown hosts, its VMs
#: not heard from, the hosts giving room for the unplaced VMs) before it counts the rest and
#: says where report.json has every one: a fleet of thousands of unknown hosts made one
#: unreadable line of them.
MOST_NAMED = 20


def _series(values: list, digits: int) -> str:
    """A series as text, empty for a gap ("12.5,,13"): its JSON without the brackets, nulls
    and ".0" endings (about 4x faster than formatting it point by point in Python).

    Whole numbers are rounded half up, as ``int(v + 0.5)``; tenths are rounded to 0.1,
    whose shortest form, the one JSON writes, has one decimal at most.
    """
    points = np.array(values, dtype=float)  # a gap (None) is NaN, then null
    if digits:
        points = np.round(points, 1)
    else:
        points = np.trunc(points + 0.5) + 0.0  # + 0.0: -0.0 is 0
    text = to_json(points).decode()[1:-1].replace("null", "").replace(".0,", ",")
    return text[:-2] if text.endswith(".0") else text


def _lapsed_words(item: dict[str, Any], expires: str) -> None:
    """An excluded row's words once its exclusion has expired since the window's end: its
    reason's "(until D)" and its evidence's "exclusion expires D" say it expired, as the
    page's note of such exclusions does (report.csv and report.json keep the words of the
    window's end, so the same logs give the same files on any day)."""
    head = "excluded: %s" % item["excluded_reason"]
    until = exclusions_mod.until_note(expires)
    words = exclusions_mod.lapsed_words(expires)
    if item["reason"].startswith(head + until):
        item["reason"] = "%s (%s)%s" % (head, words, item["reason"][len(head + until):])
    item["evidence_text"] = [
        ("exclusion", words) if label == LABELS["expires"] else (label, text)
        for label, text in item["evidence_text"]
    ]


def page_data(report: Report, lapsed: list[dict[str, Any]] | None = None) -> str:
    """The rows for the page's script: every field of each row, long series as text.

    Fields this module does not know (a newer policy's) travel too, and the
    drill-down shows them, so additions need no change here.  The evidence
    travels as figures and as the words the drill-down shows (evidence.py).  ``<`` is
    escaped so no value can close the script element that holds the JSON.  ``lapsed``
    (exclusions.since_expired) are the exclusions expired since the window's end, whose
    rows say so (``_lapsed_words``).
    """
    money = Money.of(report.meta["prices"])
    gone = {entry["vm"]: entry["expires"] for entry in lapsed or ()}
    rows = []
    for row in report.rows:
        item = {
            k: (_series(v, _SERIES[k]) if k in _SERIES and v is not None else v)
            for k, v in row.items()
            if k not in _NOT_ON_PAGE
        }
        item["colour"] = COLOURS.get(row["category"], OTHER_COLOUR)
        item["evidence_text"] = evidence_lines(row, money)
        selector = (row.get("evidence") or {}).get("exclusion") if row["category"] == "excluded" else None
        if selector in gone:
            _lapsed_words(item, gone[selector])
        rows.append(item)
    return to_json(rows).decode().replace("<", "\\u003c")


def distribution_chart(fleet: dict[str, list[int]]) -> str:
    """Grouped bars: VMs per 10-point band of CPU p95 and of memory p95, each axis titled.

    The left margin holds the title of the y axis and, right of it, tick values of up to five
    digits (a fleet of 10,000 VMs), so neither runs into the other.
    """
    width, height, left, bottom = 520, 200, 54, 34
    most = max([1] + fleet["cpu_p95"] + fleet["mem_p95"])
    step = next(s * 10**k for k in range(9) for s in (1, 2, 5) if s * 10**k * 4 >= most)
    top = step * 4  # round ticks: 0, step, 2 step, ...
    band = (width - left - 10) / 10.0
    parts = [
        '<svg width="%d" height="%d" viewBox="0 0 %d %d" role="img" '
        'aria-label="VMs by CPU and memory p95">' % (width, height, width, height)
    ]
    plot_h = height - bottom - 10
    for k in range(5):
        y = 10 + plot_h * k / 4.0
        value = top * (4 - k) / 4.0
        parts.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>' % (left, width - 10, y, y))
        parts.append(
            '<text x="%d" y="%.1f" font-size="10" text-anchor="end">%d</text>' % (left - 4, y + 3, value)
        )
    for i in range(10):
        x = left + i * band
        for j, (metric, colour) in enumerate((("cpu_p95", "#4e79a7"), ("mem_p95", "#f28e2b"))):
            count = fleet[metric][i]
            h = plot_h * count / top
            parts.append(
                '<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %d-%d%%: %d %s'
                "</title></rect>"
                % (
                    x + 3 + j * (band - 6) / 2,
                    10 + plot_h - h,
                    (band - 6) / 2,
                    h,
                    colour,
                    metric,
                    i * 10,
                    i * 10 + 10,
                    count,
                    plural(count, "VM"),
                )
            )
        parts.append(
            '<text x="%.1f" y="%d" font-size="10" text-anchor="middle">%d-%d</text>'
            % (x + band / 2, height - bottom + 14, i * 10, i * 10 + 10)
        )
    parts.append(
        '<text x="%d" y="%d" font-size="11" text-anchor="middle">p95 utilisation over the window, %%'
        "</text>" % (left + (width - left) / 2, height - 4)
    )
    middle = 10 + plot_h / 2.0
    parts.append(
        '<text x="12" y="%.1f" font-size="11" text-anchor="middle" transform="rotate(-90 12 %.1f)">'
        "VMs per band</text>" % (middle, middle)
    )
    parts.append("</svg>")
    return "".join(parts)


def heat_range(profile: list) -> tuple[float, float]:
    """The fleet's quietest and busiest hour: the colour scale's ends.

    A fleet's mean CPU moves within a few points over the week; a scale from
    0 would paint every hour the same blue and hide when the fleet works.
    """
    known = [v for v in profile if v is not None]
    return (min(known), max(known)) if known else (0.0, 0.0)


def _heat_fill(value: float, low: float, high: float) -> str:
    share = (value - low) / (high - low) if high > low else 0.5
    shade = int(round(240 - 200 * share))
    return "rgb(%d,%d,255)" % (shade, shade)


def week_heatmap(profile: list) -> str:
    """Fleet mean CPU per hour of the week: 7 rows (Monday first) x 24 hours (UTC), with its scale."""
    cell, left, top = 14, 34, 14
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    low, high = heat_range(profile)
    legend_y = top + 7 * cell + 8
    size = (left + 24 * cell + 4, legend_y + 22)
    parts = [
        '<svg width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="fleet CPU by hour of week">'
        % (size + size)
    ]
    for hour in range(0, 24, 3):
        parts.append(
            '<text x="%d" y="10" font-size="9" text-anchor="middle">%02d</text>'
            % (left + hour * cell + cell / 2, hour)
        )
    for d, label in enumerate(days):
        parts.append(
            '<text x="%d" y="%d" font-size="10" text-anchor="end">%s</text>'
            % (left - 4, top + d * cell + 11, label)
        )
        for hour in range(24):
            value = profile[d * 24 + hour]
            if value is None:
                fill, title = "#eee", "no data"
            else:
                fill, title = _heat_fill(value, low, high), "%.1f%%" % value
            parts.append(
                '<rect x="%d" y="%d" width="%d" height="%d" fill="%s"><title>%s %02d:00 UTC: %s'
                "</title></rect>"
                % (left + hour * cell, top + d * cell, cell - 1, cell - 1, fill, label, hour, title)
            )
    # The scale: quietest hour to busiest hour of the fleet.
    steps = 12
    width = 24 * cell / 2.0
    for k in range(steps):
        parts.append(
            '<rect x="%.1f" y="%d" width="%.1f" height="8" fill="%s"/>'
            % (
                left + width / 2 + k * width / steps,
                legend_y,
                width / steps + 0.5,
                _heat_fill(low + (high - low) * k / (steps - 1), low, high),
            )
        )
    parts.append(
        '<text x="%.1f" y="%d" font-size="9" text-anchor="end">%.1f%%</text>'
        % (left + width / 2 - 3, legend_y + 8, low)
    )
    parts.append(
        '<text x="%.1f" y="%d" font-size="9">%.1f%%</text>' % (left + width * 1.5 + 3, legend_y + 8, high)
    )
    parts.append("</svg>")
    return "".join(parts)


def category_bar(categories: dict[str, dict[str, Any]], total: int) -> str:
    width = 520
    x = 0.0
    parts = [
        '<svg class="bar" width="%d" height="18" viewBox="0 0 %d 18" preserveAspectRatio="none" role="img" '
        'aria-label="VMs by category">' % (width, width)
    ]
    for name, entry in categories.items():
        count = entry["vms"]
        if not count:
            continue
        w = width * count / max(total, 1)
        parts.append(
            '<rect x="%.1f" y="0" width="%.1f" height="18" fill="%s"><title>%s: %d</title></rect>'
            % (x, w, COLOURS.get(name, OTHER_COLOUR), html.escape(name), count)
        )
        x += w
    parts.append("</svg>")
    return "".join(parts)


def render(report: Report, path: str) -> None:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
    )
    env.filters["rate"] = rate
    env.filters["when"] = lambda text: text[:16].replace("T", " ") + " UTC"  # to the minute
    env.filters["num"] = lambda v, fmt="%.1f": "" if v is None else fmt % v
    env.filters["plural"] = plural
    env.filters["count"] = number  # thousands grouped, as the capacity commands' terminal says them
    meta = report.meta
    money = Money.of(meta["prices"])
    env.filters["money"] = money.figure
    template = env.get_template("report.html.j2")
    categories = list(CATEGORIES) + [c for c in meta["categories"] if c not in CATEGORIES]
    lapsed = exclusions_mod.since_expired(report.rows, time.time())
    text = template.render(
        meta=meta,
        data=page_data(report, lapsed),
        categories=categories,
        colours={c: COLOURS.get(c, OTHER_COLOUR) for c in categories},
        candidates=CANDIDATES,
        currency=meta["prices"]["currency"],
        minor_unit=money.minor_unit,
        statement=meta.get("statement"),
        lapsed=lapsed,
        capacity=meta.get("capacity"),
        distribution=distribution_chart(report.fleet),
        heatmap=week_heatmap(report.fleet["hour_of_week_cpu"]),
        heat_range=heat_range(report.fleet["hour_of_week_cpu"]),
        category_bar=category_bar(meta["categories"], meta["totals"]["vms"]),
        spark_size=(SPARK_W, SPARK_H),
        most_named=MOST_NAMED,
    )
    write_text(path, text)
