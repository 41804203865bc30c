"""Reports of any size built from a real one, for tests of the page rather than of the data.

A 10,000-VM server run or log parse would take minutes; the page only needs
rows shaped exactly like build()'s.  So a small fleet goes through the real
pipeline once (test_report_policy.build_fleet, build), and its rows are
copied under new ids with their figures varied, tags and hosts assigned, and
ranks, totals, categories and the statement recomputed from the copies.
"""

import copy
import dataclasses
import random
from pathlib import Path

from test_report_policy import build_fleet

from vmstats.report import statement as statement_mod
from vmstats.report.build import Report, _rank_key, build
from vmstats.report.money import Money
from vmstats.report.prices import PriceBook
from vmstats.report.settings import Policy

PROJECTS = ("billing", "search", "web", "data", "ml")
ENVS = ("prod", "staging", "dev")


def small_fleet(folder: Path) -> Report:
    """The report of test_report_policy's small fleet, its logs written under ``folder``."""
    build_fleet(folder / "data")
    return build([str(folder / "data")], Policy.load(None, {}), PriceBook.load(None))


def grown(base: Report, count: int, seed: int = 7, by: str | None = "project") -> Report:
    """``base``'s rows copied to ``count`` VMs (``vm-00001``...), each with host and tags."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        row = copy.deepcopy(base.rows[i % len(base.rows)])
        scale = rng.uniform(0.5, 1.5)
        row["vm"] = "vm-%05d" % (i + 1)
        row["host"] = "host%02d" % (i % 40)
        row["tags"] = {"project": PROJECTS[i % len(PROJECTS)], "env": ENVS[i % len(ENVS)]}
        for name in ("monthly_saving", "monthly_cost", "usage_cost"):
            if row[name] is not None:
                row[name] = round(row[name] * scale, 2)
        if row["usage"]:
            row["usage"] = {k: round(v * scale, 2) for k, v in row["usage"].items()}
        rows.append(row)
    rows.sort(key=_rank_key)
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    meta = copy.deepcopy(base.meta)
    money = Money.of(meta["prices"])
    meta["categories"] = statement_mod.categories(rows, money)
    meta["totals"] = dict(
        meta["totals"],
        vms=len(rows),
        **statement_mod.totals(rows, money),
        unpriced_vms=sum(1 for r in rows if r["monthly_cost"] is None),
    )
    if by:
        meta["statement"] = statement_mod.statement(rows, by, money)
    else:
        meta.pop("statement", None)
    return dataclasses.replace(base, rows=rows, meta=meta)
