"""The money an operator bills from: report.csv's costs and ``report --by TAG``'s statement.

A small fleet with the awkward cases of a bill (a VM that starts mid-window,
one that stops, one resized, one re-tagged, one the agent left for a day and
a quarter of every other, one without a size, one without tags) is sent to
the real server over TCP and reported with a price book whose prices land on
half cents.  The expected figures are reckoned here from the day logs the
server wrote and the price book's decimal figures, without the report's code,
as an auditor would: docs/REPORT.md ("Statement") is the rule they follow.
"""

import csv
import json
import shutil
import subprocess
import sys
import tomllib
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from serverproc import serve
from test_client_push import wait_rows

from vmstats import protocol
from vmstats.protocol import Record
from vmstats.report import policy
from vmstats.report.money import Money
from vmstats.report.prices import PriceBook
from vmstats.report.settings import DEFAULTS

DAY = 86400
T0 = 1_790_035_200  # 2026-09-22 00:00 UTC
DAYS = 3
#: Every price here times 730 hours ends in half a cent (0.0305 x 730 = 22.265, 0.0715 x 730 = 52.195).
PRICES = """\
currency = "EUR"
hours_per_month = 730
vcpu_hour = 0.0305
gb_ram_hour = 0.0045
disk_gb = 0.025
network_gb = 0.015
[[sizes]]
name = "medium"
vcpus = 2
memory_gb = 4
hourly = 0.0715
"""
CPU_IDLE = Decimal(5)  # the policy's default cpu_idle (docs/POLICY.md)
PARTS = ("cpu", "ram", "disk", "network")
#: The log columns of each mean (docs/REPORT.md: disk is read + write, network received + sent).
METRICS = {"cpu": ["cpu"], "mem": ["mem"], "disk": ["disk_r", "disk_w"], "net": ["net_rx", "net_tx"]}


def fleet_records() -> list[Record]:
    records = []

    def add(vm, ts, cpu, mem, size=None, tags=None, net=2e4):
        vcpus, mem_mb = size or (None, None)
        records.append(Record(vm=vm, ts=ts, cpu=cpu, mem=mem, disk_r=1e3, disk_w=1e3, net_rx=net, net_tx=net,
                              vcpus=vcpus, mem_mb=mem_mb, host="hv1",
                              tags=protocol.check_tags(sorted((tags or {}).items()))))

    for m in range(DAYS * 1440):
        ts, day, hour = T0 + 60 * m, m // 1440, m // 60 % 24
        add("steady", ts, 30.0 + m % 7, 50.5, (2, 4096), {"project": "alpha"})
        if day >= 1:  # starts mid-window
            add("late", ts, 40.0, 60.0, (4, 16384), {"project": "alpha"})
        if day < 1:  # stops mid-window
            add("gone", ts, 10.0, 20.0, (8, 32768), {"project": "beta"})
        # resized at noon of the second day: 8 vCPUs / 32 GB, then 2 / 4
        small = m >= 1440 + 720
        add("resized", ts, 50.0 if small else 12.5, 80.0 if small else 25.0,
            (2, 4096) if small else (8, 32768), {"project": "beta"})
        add("retag", ts, 20.0, 30.0, (1, 2048), {"project": "alpha" if day < 2 else "gamma"})
        if day != 1 and hour < 18:  # its agent down a day, and 6 hours of every other
            add("gappy", ts, 70.0, 70.0, (3, 6000), {"project": "gamma"}, net=5e6)
        add("nosize", ts, 5.0, 5.0, None, {"project": "gamma"})
        add("notag", ts, 1.0, 10.0, (1, 2048), None, net=100.0)
    return records


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """The fleet's logs as the real server wrote them, and the price book."""
    root = tmp_path_factory.mktemp("billing")
    with serve(root / "server", "--flush-interval", "0.3", "--max-per-vm", "100000") as server:
        send(server, fleet_records())
    assert server.returncode == 0, server.output
    prices = root / "prices.toml"
    prices.write_text(PRICES)
    return root / "server" / "data", prices


def send(server, records: list[Record]) -> None:
    """``records`` over TCP, returning once the server's ack says it holds every one."""
    payload = b"".join(line + b"\n" for line in protocol.encode_records(records))
    assert server.send_synced(payload) == ["#!ack", "all", str(len(records)), "0"]


def run_report(data, prices, out, by="project", window=("--days", str(DAYS))):
    """``vmstats report`` as an operator runs it; its completed process, once it succeeded."""
    done = subprocess.run(
        [sys.executable, "-m", "vmstats", "report", str(data), "-o", str(out), "--prices", str(prices),
         "--by", by, *window, "--set", "min_days=0", "--no-cache"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done


def report(data, prices, out, by="project", window=("--days", str(DAYS))):
    run_report(data, prices, out, by, window)
    return read_outputs(out)


def read_outputs(out):
    """The report's rows by VM, its statement's lines by value, and report.json."""
    with open(out / "report.csv", newline="") as handle:
        rows = {row["vm"]: row for row in csv.DictReader(handle)}
    with open(out / "statement.csv", newline="") as handle:
        lines = {line["value"]: line for line in csv.DictReader(handle)}
    return rows, lines, json.loads((out / "report.json").read_text())


def reckon(data: Path, prices: Path, digits: int = 2) -> dict[str, dict]:
    """Each VM's bill from its day logs and the book, in decimal, as docs/REPORT.md states it,
    to ``digits`` after the point (the currency's minor unit), half a unit away from zero."""

    def to_cent(amount: Decimal) -> Decimal:
        return amount.quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP)

    book = tomllib.loads(prices.read_text(), parse_float=Decimal)
    hours = Decimal(book["hours_per_month"])
    out = {}
    for folder in sorted((data / "vms").iterdir()):
        rows = []
        for path in sorted(folder.glob("*.csv")):
            with open(path, newline="") as handle:
                rows += list(csv.DictReader(handle))
        rows.sort(key=lambda r: int(r["ts"]))
        sized = [(int(r["ts"]) // DAY, r["vcpus"], r["mem_mb"]) for r in rows if r["vcpus"]]
        # Means are taken from the first whole UTC day at the last size (data_quality's "judged
        # since"): the day of a resize at midnight, the next after one within a day.
        since = max((b[0] + (a[0] == b[0]) for a, b in zip(sized, sized[1:], strict=False) if a[1:] != b[1:]),
                    default=0)
        judged = [r for r in rows if int(r["ts"]) // DAY >= since]

        def mean(values):
            return sum(values, Decimal(0)) / len(values)

        tags = dict(p.split("=") for p in (rows[-1].get("tags") or "").split(";") if p)
        bill = {"project": tags.get("project", ""), "monthly_cost": None, "usage": None, "idle_cost": None}
        if sized:
            vcpus, gb = Decimal(sized[-1][1]), Decimal(sized[-1][2]) / 1024
            hourly = next((s["hourly"] for s in book["sizes"] if (s["vcpus"], s["memory_gb"]) == (vcpus, gb)),
                          vcpus * book["vcpu_hour"] + gb * book["gb_ram_hour"])
            avg = {name: mean([sum(Decimal(r[c]) for c in cells) for r in judged])
                   for name, cells in METRICS.items()}
            gb_month = hours * 3600 / Decimal(10**9)  # GB moved in a month at 1 byte/s
            bill["monthly_cost"] = to_cent(hourly * hours)
            bill["usage"] = {
                "cpu": to_cent(avg["cpu"] / 100 * vcpus * book["vcpu_hour"] * hours),
                "ram": to_cent(avg["mem"] / 100 * gb * book["gb_ram_hour"] * hours),
                "disk": to_cent(avg["disk"] * gb_month * book["disk_gb"]),
                "network": to_cent(avg["net"] * gb_month * book["network_gb"]),
            }
            idle = mean([Decimal(Decimal(r["cpu"]) < CPU_IDLE) for r in judged])  # idle_share, 4 places
            bill["idle_cost"] = to_cent(bill["monthly_cost"] * idle.quantize(Decimal("0.0001")))
        out[folder.name] = bill
    return out


def money(cell) -> Decimal:
    return Decimal(cell or "0")


def test_the_bill_is_what_an_auditor_reckons_from_the_logs_to_the_cent(fleet, tmp_path):
    data, prices = fleet
    rows, lines, document = report(data, prices, tmp_path / "out")
    bills = reckon(data, prices)
    usage = {v["vm"]: v["usage"] for v in document["vms"]}
    assert set(rows) == set(bills)
    for vm, bill in bills.items():
        assert money(rows[vm]["monthly_cost"]) == (bill["monthly_cost"] or 0), vm
        if bill["usage"] is None:  # no size reported: no cost of either kind
            assert rows[vm]["monthly_cost"] == rows[vm]["usage_cost"] == "" and usage[vm] is None
            continue
        assert {k: Decimal(str(v)) for k, v in usage[vm].items()} == bill["usage"], vm
        assert money(rows[vm]["usage_cost"]) == sum(bill["usage"].values()), vm
    # Half a cent goes up: 2 vCPUs / 4 GB is the 0.0715 size, 52.195 a month.
    assert rows["steady"]["monthly_cost"] == "52.2" and rows["resized"]["monthly_cost"] == "52.2"
    # A reclaimed VM saves what it costs, to the cent.
    assert rows["notag"]["category"] == "reclaim"
    # 1 vCPU / 2 GB at unit prices: 22.265 + 2 x 3.285 = 28.835 a month.
    assert rows["notag"]["monthly_saving"] == rows["notag"]["monthly_cost"] == "28.84"

    groups = defaultdict(list)
    for vm, bill in bills.items():
        groups[bill["project"]].append(vm)
    assert {v: int(line["vms"]) for v, line in lines.items()} == {v: len(m) for v, m in groups.items()}
    for value, members in groups.items():
        line = lines[value]
        priced = [bills[vm] for vm in members if bills[vm]["usage"] is not None]
        assert int(line["unpriced_vms"]) == len(members) - len(priced)
        assert money(line["monthly_cost"]) == sum(b["monthly_cost"] for b in priced)
        assert money(line["idle_cost"]) == sum(b["idle_cost"] for b in priced)
        for part in PARTS:
            assert money(line["usage_" + part]) == sum(b["usage"][part] for b in priced), (value, part)
        assert money(line["usage_cost"]) == sum(money(line["usage_" + p]) for p in PARTS)
        assert line["currency"] == "EUR"
    # The lines add up to the statement's total and to report.csv's columns, to the cent.
    total = document["meta"]["statement"]["total"]
    for column in ("monthly_cost", "usage_cost", "idle_cost", "monthly_saving"):
        assert sum(money(line[column]) for line in lines.values()) == Decimal(str(total[column])), column
    for column in ("monthly_cost", "usage_cost"):
        assert sum(money(row[column]) for row in rows.values()) == Decimal(str(total[column])), column
    assert lines[""]["vms"] == "1" and lines["gamma"]["vms"] == "3"  # retag: billed to its latest project


def test_compacted_days_give_the_same_bill(fleet, tmp_path):
    data, prices = fleet
    _rows, lines, _doc = report(data, prices, tmp_path / "csv")
    compacted = tmp_path / "data"
    shutil.copytree(data, compacted)
    done = subprocess.run(
        # Rows past retention at once: every VM-day is answered by its rollup alone.
        [sys.executable, "-m", "vmstats", "compact", "--data-dir", str(compacted), "--compact-after", "1s",
         "--retain-raw", "1s", "--trust-clock"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0 and "compacted %d days" % DAYS in done.stdout, done.stdout + done.stderr
    assert not list((compacted / "vms").glob("*/*.csv"))
    rows, again, _doc = report(compacted, prices, tmp_path / "rollups")
    assert again == lines
    original = {vm: row for vm, row in _rows.items()}
    for vm, row in rows.items():
        for column in ("monthly_cost", "usage_cost", "monthly_saving", "idle_share", "tags"):
            assert row[column] == original[vm][column], (vm, column)


def test_a_damaged_newest_file_leaves_the_vm_with_its_owner(fleet, tmp_path):
    data, prices = fleet
    damaged = tmp_path / "data"
    shutil.copytree(data, damaged)
    newest = sorted((damaged / "vms" / "steady").glob("*.csv"))[-1]
    newest.write_bytes(bytes(range(256)) * 8)  # no readable row
    rows, lines, document = report(damaged, prices, tmp_path / "out")
    assert any(f["vm"] == "steady" for f in document["meta"]["skipped_files"])
    # Its two readable days say project=alpha: its cost stays on alpha's bill.
    assert rows["steady"]["tags"] == "project=alpha"
    assert lines["alpha"]["vms"] == "2" and lines[""]["vms"] == "1"


def test_a_line_the_report_skips_names_no_owner(fleet, tmp_path):
    """A hand-edited last line with a quote in its host: malformed (docs/REPORT.md, "Damaged
    logs"), so neither a record nor the VM's labels, whichever cell holds the quote."""
    data, prices = fleet
    edited = tmp_path / "data"
    shutil.copytree(data, edited)
    newest = sorted((edited / "vms" / "steady").glob("*.csv"))[-1]
    last = newest.read_text().splitlines()[-1].split(",")
    stamp = str(int(last[0]) + 30)
    with open(newest, "a") as handle:
        handle.write(",".join([stamp, *last[1:-2], 'hv"9', "project=zeta"]) + "\n")
    rows, lines, _doc = report(edited, prices, tmp_path / "out", by="host")
    assert rows["steady"]["bad_lines"] == "1" and rows["steady"]["records"] == str(DAYS * 1440)
    assert rows["steady"]["host"] == "hv1" and rows["steady"]["tags"] == "project=alpha"
    assert list(lines) == ["hv1"]


def test_a_backlog_written_after_newer_records_leaves_the_vm_with_its_latest_owner(tmp_path):
    """An agent's spooled records reach the server after its live ones: the day file ends with
    older records, which name the owner the VM had before; the bill goes by the latest record."""
    def minutes(first, last, project):
        return [Record(vm="moved", ts=T0 + 60 * m, cpu=20.0, mem=30.0, vcpus=2, mem_mb=4096, host="hv1",
                       tags=protocol.check_tags([("project", project)])) for m in range(first, last)]

    with serve(tmp_path / "server", "--flush-interval", "0.3") as server:
        send(server, minutes(600, 1440, "new"))  # live, since 10:00, re-tagged
        assert len(wait_rows(server.data_dir, "moved", 840)) == 840  # written before the backlog comes
        send(server, minutes(0, 600, "old"))  # the backlog from before 10:00
    assert server.returncode == 0, server.output
    (day_file,) = (server.data_dir / "vms" / "moved").glob("*.csv")
    assert day_file.read_text().splitlines()[-1].endswith("project=old")  # written out of order
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    rows, lines, _doc = report(server.data_dir, prices, tmp_path / "out")
    assert rows["moved"]["tags"] == "project=new" and list(lines) == ["new"]
    assert rows["moved"]["records"] == "1440"


@pytest.mark.parametrize(
    "book, message",
    [
        ('currency = ["USD", "EUR"]\n', "currency must be one code such as USD or EUR"),  # not two currencies
        ('currency = ""\n', "currency must be one code"),  # a bill in no unit
        ("currency = 978\n", "currency must be one code"),
        ("hours_per_month = 0\n", "hours_per_month must be above 0"),  # every bill 0.00
    ],
)
def test_a_book_that_cannot_name_or_price_a_month_is_one_error(fleet, tmp_path, book, message):
    data, _prices = fleet
    prices = tmp_path / "book.toml"
    prices.write_text(book + "vcpu_hour = 0.03\ngb_ram_hour = 0.004\n")
    done = subprocess.run([sys.executable, "-m", "vmstats", "report", str(data), "-o", str(tmp_path / "out"),
                           "--prices", str(prices)], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("Error: price book %s: %s" % (prices, message)), done.stderr
    assert not (tmp_path / "out" / "report.csv").exists()


def _sizes(*sizes: dict) -> str:
    """``[[sizes]]``: each a 2 vCPU / 4 GB size at 0.0715 an hour but for its own keys (TOML values)."""
    base = {"vcpus": 2, "memory_gb": 4, "hourly": 0.0715}
    tables = ("".join("%s = %s\n" % item for item in dict(base, **size).items()) for size in sizes)
    return "".join("[[sizes]]\n" + table for table in tables)


@pytest.mark.parametrize(
    "sizes, message",
    [
        # Two zones' prices of one shape: every 2 vCPU / 4 GB VM was billed the cheaper zone's.
        (_sizes({"name": '"m-eu"', "zone": '"eu"', "hourly": 0.09}, {"name": '"m-us"', "zone": '"us"'}),
         "size 1 (m-eu): unknown key zone"),
        # A size in another currency: billed 7,300 EUR a month for 10 yen an hour.
        (_sizes({"name": '"m"', "currency": '"JPY"', "hourly": 10}), "size 1 (m): unknown key currency"),
        # Two families of one shape (3.99 GB is the 4 GB shape, as an agent reports it).
        (_sizes({"name": '"t3"'}, {"name": '"c5"', "memory_gb": 3.99, "hourly": 0.09}),
         "sizes t3 (2 vCPU / 4 GB) and c5 (3.99 GB) are one shape"),
        (_sizes({"name": '"m"'}, {"name": '"m"', "vcpus": 4, "memory_gb": 8, "hourly": 0.143}),
         "two sizes are named m"),
    ],
    ids=["zones", "currency", "families", "names"],
)
def test_a_book_that_would_bill_a_shape_at_a_price_it_does_not_say_is_one_error(fleet, tmp_path, sizes,
                                                                                 message):
    data, _prices = fleet
    prices = tmp_path / "book.toml"
    prices.write_text('currency = "EUR"\nvcpu_hour = 0.0305\ngb_ram_hour = 0.0045\n' + sizes)
    done = subprocess.run([sys.executable, "-m", "vmstats", "report", str(data), "-o", str(tmp_path / "out"),
                           "--prices", str(prices), "--days", str(DAYS)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("Error: price book %s: %s" % (prices, message)), done.stderr
    assert not (tmp_path / "out" / "report.csv").exists()


@pytest.mark.parametrize(
    "amount, billed",
    [(0.0015 * 730, 1.10), (0.0045 * 730, 3.29), (0.0715 * 730, 52.20), (-(0.0015 * 730), -1.10),
     (0.0025 * 730, 1.83), (0.0035 * 730, 2.56), (24.454999, 24.45), (0.1 + 0.2, 0.30)],
)
def test_money_rounds_half_a_cent_away_from_zero(amount, billed):
    """round(x, 2) gives 1.09 for 1.095 (its double is 1.0949999...) but 2.56 for 2.555: a coin toss."""
    assert Money("USD").round(amount) == billed


def test_an_upsize_names_one_extra_cost_in_its_text_evidence_and_saving():
    # Before: the saving was rounded to the cent as money is (1.10) while the text and the
    # evidence rounded the binary double (1.0949999... -> 1.09): one VM, two figures.
    book = PriceBook(source="test", is_example=False, currency="EUR", hours_per_month=730,
                     vcpu_hour=0.00075, gb_ram_hour=0.0)
    vm = {"vcpus": 1.0, "mem_gb": 2.0, "monthly_cost": 0.0, "cpu_p95": 99.0, "mem_p95": 10.0}
    decision = policy._upsize(vm, dict(DEFAULTS), book, 1.0, 1.0)
    assert decision.recommended_vcpus == 2  # 2 x 0.00075 x 730 = 1.095 a month more
    assert decision.monthly_saving == -1.10 and decision.evidence["extra_monthly_cost"] == 1.10
    assert decision.recommendation.endswith("(1.10 more a month)")


def test_the_terminal_and_the_page_name_each_owner_whole_and_the_unit_of_their_bill(tmp_path):
    """Two owners whose names differ past their 24th character printed as one owner twice, and
    the statement's amounts on the terminal named neither their currency nor their period."""
    owners = ("team-infrastructure-platform-eu", "team-infrastructure-platform-us")
    records = [Record(vm="vm-%d" % k, ts=T0 + 60 * m, cpu=20.0, mem=30.0, vcpus=2 + 2 * k,
                      mem_mb=4096 * (1 + k), host="hv1", tags=protocol.check_tags([("project", owner)]))
               for m in range(1440) for k, owner in enumerate(owners)]
    with serve(tmp_path / "server", "--flush-interval", "0.3") as server:
        send(server, records)
    assert server.returncode == 0, server.output
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "vmstats", "report", str(server.data_dir), "-o", str(out), "--prices",
         str(prices), "--by", "project", "--days", "1", "--set", "min_days=0", "--no-cache"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    listing = done.stdout[done.stdout.index("statement by project: 2 groups (EUR a month)\n"):].splitlines()
    assert sorted(line.split()[0] for line in listing[1:3]) == list(owners)
    assert listing[3].split()[0] == "total"
    page = " ".join((out / "report.html").read_text().split())
    assert "Statement by project: cost as provisioned and by use, EUR a month</h2>" in page
    assert "a monthly rate (730 hours) at each VM's last size, not the cost of the 1.0 days analysed" in page


def test_a_stopped_vm_s_share_of_its_owner_s_line_is_said(fleet, tmp_path):
    """A VM silent since before the window stayed on its owner's line at a month of its last size,
    usage 0, with nothing in statement.csv, on the page or the terminal to tell it from a live one."""
    data, prices = fleet
    out = tmp_path / "out"
    window = ("--since", "2026-09-24", "--until", "2026-09-24")
    done = run_report(data, prices, out, window=window)
    rows, lines, _doc = read_outputs(out)
    gone = rows["gone"]  # its last record two days before the window's one day
    assert gone["category"] == "stopped" and gone["records"] == "0" and gone["monthly_cost"] == "283.24"
    said = {value: (line["stopped_vms"], line["stopped_cost"]) for value, line in lines.items()}
    assert said == {"beta": ("1", "283.24"), "alpha": ("0", "0.0"), "gamma": ("0", "0.0"), "": ("0", "0.0")}
    total = json.loads((out / "report.json").read_text())["meta"]["statement"]["total"]
    # The idle share is of the VMs whose minutes were judged: the stopped month is in neither side.
    judged = total["monthly_cost"] - total["stopped_cost"]
    assert total["idle_cost"] > 0 and total["idle_share"] == round(total["idle_cost"] / judged, 4)
    assert (total["stopped_vms"], total["stopped_cost"]) == (1, 283.24)
    assert "  of which stopped (silent at the window's end, billed at their last size): 1 VM, EUR 283.24" \
        in done.stdout.splitlines()
    page = (out / "report.html").read_text()
    beta = page.index('data-filter="project=beta"')
    assert "(1 stopped: 283.24 of its cost)" in page[beta : page.index("</tr>", beta)]


def test_a_book_of_sizes_alone_says_which_vms_it_bills_nothing(fleet, tmp_path):
    """A book meant to price by its sizes alone (unit prices 0) billed every VM of another shape
    0.00, on its owner's statement line too, with nothing to tell it from a free VM."""
    data, prices = fleet
    book = tmp_path / "sizes.toml"
    book.write_text(PRICES.replace("vcpu_hour = 0.0305", "vcpu_hour = 0").replace("gb_ram_hour = 0.0045",
                                                                                  "gb_ram_hour = 0"))
    command = [sys.executable, "-m", "vmstats", "report", str(data), "--by", "project", "--days", str(DAYS),
               "--set", "min_days=0", "--no-cache"]
    done = subprocess.run(command + ["-o", str(tmp_path / "out"), "--prices", str(book)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "out" / "report.csv", newline="") as handle:
        costs = {row["vm"]: row["monthly_cost"] for row in csv.DictReader(handle)}
    free = sorted(vm for vm, cost in costs.items() if cost == "0.0")
    assert free == ["gappy", "gone", "late", "notag", "retag"]  # all but the 2 vCPU / 4 GB size, and nosize
    warned = [line for line in done.stderr.splitlines() if "warning" in line]
    assert warned == ["vmstats report: warning: price book %s: 5 VMs match none of its sizes and are billed "
                      "0 at its unit prices of 0 (vcpu_hour, gb_ram_hour), e.g. notag (1 vCPU / 2 GB)" % book]
    # A book with unit prices bills those VMs by them: nothing to say.
    done = subprocess.run(command + ["-o", str(tmp_path / "priced"), "--prices", str(prices)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr
