"""report.html: one self-contained page (inline CSS, SVG and a few lines of JS).

Charts are drawn here as SVG strings so the page needs no network and no
charting library; the template only lays them out.
"""

import html
import os
from typing import Any

import jinja2

from vmstats.report.build import Report
from vmstats.report.policy import CANDIDATES, CATEGORIES, rate

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
SPARK_W, SPARK_H = 140, 30


def _points(values: list) -> str:
    """Whole percent, comma-separated, empty for a gap: all a 30-pixel line needs."""
    return ",".join("" if v is None else str(int(v + 0.5)) for v in values)


def sparkline(cpu: list, mem: list) -> str:
    """An empty SVG carrying its series; the page's script draws the lines.

    Drawing in the browser keeps a 1,000-VM report fast to write (no SVG
    formatting of every point in Python) and the page stays self-contained.
    """
    return (
        '<svg class="spark" width="%d" height="%d" viewBox="0 0 %d %d" role="img" '
        'aria-label="CPU and memory over the window" data-series="%s;%s"></svg>'
        % (SPARK_W, SPARK_H, SPARK_W, SPARK_H, _points(cpu), _points(mem))
    )


def distribution_chart(fleet: dict[str, list[int]]) -> str:
    """Grouped bars: VMs per 10-point band of CPU p95 and of memory p95."""
    width, height, left, bottom = 520, 200, 36, 34
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
                '<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %d-%d%%: %d VMs'
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
    parts = [
        '<svg width="%d" height="%d" role="img" aria-label="fleet CPU by hour of week">'
        % (left + 24 * cell + 4, legend_y + 22)
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
    parts = ['<svg width="%d" height="18" role="img" aria-label="VMs by category">' % width]
    for name in CATEGORIES:
        count = categories[name]["vms"]
        if not count:
            continue
        w = width * count / max(total, 1)
        parts.append(
            '<rect x="%.1f" y="0" width="%.1f" height="18" fill="%s"><title>%s: %d</title></rect>'
            % (x, w, COLOURS[name], html.escape(name), count)
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
    template = env.get_template("report.html.j2")
    meta = report.meta
    rows = []
    for row in report.rows:
        rows.append(
            dict(row, spark=sparkline(row["spark_cpu"], row["spark_mem"]), colour=COLOURS[row["category"]])
        )
    text = template.render(
        meta=meta,
        rows=rows,
        categories=CATEGORIES,
        colours=COLOURS,
        candidates=CANDIDATES,
        currency=meta["prices"]["currency"],
        distribution=distribution_chart(report.fleet),
        heatmap=week_heatmap(report.fleet["hour_of_week_cpu"]),
        heat_range=heat_range(report.fleet["hour_of_week_cpu"]),
        category_bar=category_bar(meta["categories"], meta["totals"]["vms"]),
    )
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
