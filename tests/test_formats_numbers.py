"""Numbers on the wire are read by one grammar in every format, not by what float() and int() take.

Python's ``float('1_0')`` is 10, ``float('\\u0661\\u0662')`` (Arabic-Indic digits) is 12,
``float('+5')`` 5 and ``str.isdigit`` is true for every script's digits: no sender writes them,
and a value read from them is a value nobody sent.  Each class is sent to a real server, in the
native protocol, Graphite, line protocol (UDP and HTTP) and collectd, and must be counted as
the format's reject and written nowhere; a ``-0`` that is a valid value is logged as ``0``.
The options an operator types are held to ASCII digits the same way.
"""

import json
import subprocess
import sys
import time

from serverproc import ROOT, serve
from test_formats_rejects import _GRAPHITE_AND_COLLECTD, collectd_list, outcomes
from test_formats_server import NS, post

from vmstats import logstore
from vmstats.server.formats import collectd as cd

ARABIC_12 = "\u0661\u0662"
FULLWIDTH_12 = "\uff11\uff12"


def arabic(number: int) -> str:
    """``number`` in Arabic-Indic digits, which str.isdigit and int() take as ASCII ones."""
    return "".join(chr(0x660 + int(digit)) for digit in str(number))


def logged_cells(data_dir, vm: str) -> list[dict[str, str]]:
    """The rows of one VM's day files as written: column name -> the cell's text."""
    rows = []
    for _day, path in logstore.day_files(str(data_dir), vm):
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        rows += [dict(zip(logstore.COLUMNS, line.split(","), strict=False)) for line in lines[1:]]
    return rows


def vms(data_dir) -> list[str]:
    return sorted(logstore.iter_vms(str(data_dir)))


def rejected(metrics: dict) -> dict[str, float]:
    prefix = 'vmstats_rejected_total{reason="'
    return {key[len(prefix):-2]: value for key, value in metrics.items()
            if key.startswith(prefix) and value}


def test_native_values_and_stamps_outside_the_grammar_are_refused_and_minus_zero_is_zero(tmp_path):
    at = (int(time.time()) - 3600) // 60 * 60 + 30
    lines = {  # vm: (line, the reason it is refused under)
        "n-underscore": ("cpu=1_0,mem=5 %d" % at, "non_numeric"),
        "n-arabic": ("cpu=%s,mem=5 %d" % (ARABIC_12, at), "non_numeric"),
        "n-fullwidth": ("cpu=5,mem=%s %d" % (FULLWIDTH_12, at), "non_numeric"),
        "n-arabic-int": ("cpu=5,mem=5,vcpus=%si %d" % (ARABIC_12, at), "non_numeric"),
        "n-plus": ("cpu=+5,mem=5 %d" % at, "non_numeric"),
        "n-hex": ("cpu=0x10,mem=5 %d" % at, "non_numeric"),
        "n-infinity": ("cpu=Infinity,mem=5 %d" % at, "non_finite"),
        "n-arabic-stamp": ("cpu=5,mem=5 %s" % arabic(at), "syntax"),
    }
    with serve(tmp_path, "--flush-interval", "0.3") as server:
        payload = ["vmstats,vm=%s %s" % (vm, line) for vm, (line, _why) in lines.items()]
        payload += ["vmstats,vm=n-good cpu=5,mem=6,cpu_max=-0,disk_r=-0.0e0 %d" % at,
                    "vmstats,vm=n-good-exp cpu=1e1,mem=.5,vcpus=2i,mem_mb=1024.0 %d" % at]
        server.send_udp("\n".join(payload).encode("utf-8"))
        metrics = server.wait_metrics(lambda m: sum(rejected(m).values()) >= len(lines))
        expected: dict[str, float] = {}
        for _line, why in lines.values():
            expected[why] = expected.get(why, 0) + 1
        assert rejected(metrics) == expected
        server.wait_for(lambda s: len(vms(tmp_path / "data")) == 2 or None)
    assert server.returncode == 0, server.output
    assert vms(tmp_path / "data") == ["n-good", "n-good-exp"]  # nothing of the refused lines
    [row] = logged_cells(tmp_path / "data", "n-good")
    assert (row["cpu"], row["mem"], row["cpu_max"], row["disk_r"]) == ("5", "6", "0", "0")
    [row] = logged_cells(tmp_path / "data", "n-good-exp")
    assert (row["cpu"], row["mem"], row["vcpus"], row["mem_mb"]) == ("10", "0.5", "2", "1024")


def test_graphite_values_and_stamps_outside_the_grammar_are_syntax_and_collectd_minus_zero(tmp_path):
    t0 = (int(time.time()) - 3600) // 60 * 60
    at = t0 + 30
    with serve(tmp_path, *_GRAPHITE_AND_COLLECTD) as server:
        refused = ["servers.g-underscore.cpu.percent 1_0 %d" % at,
                   "servers.g-arabic.cpu.percent %s %d" % (ARABIC_12, at),
                   "servers.g-fullwidth.cpu.percent %s %d" % (FULLWIDTH_12, at),
                   "servers.g-plus.cpu.percent +5 %d" % at,
                   "servers.g-hex.cpu.percent 0x10 %d" % at,
                   "servers.g-stamp.cpu.percent 12 %s" % arabic(at),
                   "servers.g-stamp.cpu.percent 12 1_%d" % at]
        good = ["servers.gr.cpu.percent 20 %d" % at, "servers.gr.cpu.percent 1e1 %d" % (at + 1),
                "servers.gr.mem.percent -0 %d" % at,
                "servers.gr-zero.cpu.percent -0 %d" % at, "servers.gr-zero.mem.percent 5 %d" % at]
        other = ["servers.g-inf.cpu.percent Infinity %d" % at,
                 # A no-break space is no separator: the path is then not a template's.
                 "servers.g-nbsp.cpu.percent\u00a012 %d" % at]
        server.send_udp_to(server.status["graphite_port"],
                           "\n".join(refused + good + other).encode("utf-8"))
        packet = (collectd_list("cd", at, "cpu", "", "percent", "active", [(cd.GAUGE, -0.0)])
                  + collectd_list("cd", at, "memory", "", "percent", "used", [(cd.GAUGE, -0.0)]))
        server.send_udp_to(server.status["collectd_port"], packet)
        metrics = server.wait_metrics(lambda m: sum(outcomes(m, "graphite").values()) >= 14
                                      and sum(outcomes(m, "collectd").values()) >= 2)
        assert outcomes(metrics, "graphite") == {"used": 5, "syntax": 7, "non_finite": 1,
                                                 "ignored": 1}
        assert outcomes(metrics, "collectd") == {"used": 2}
    assert server.returncode == 0, server.output
    assert vms(tmp_path / "data") == ["cd", "gr", "gr-zero"]
    [row] = logged_cells(tmp_path / "data", "gr")
    assert (row["ts"], row["cpu"], row["cpu_max"], row["mem"]) == (str(t0 + 60), "15", "20", "0")
    [row] = logged_cells(tmp_path / "data", "gr-zero")  # the max of -0 alone was "-0"
    assert (row["cpu"], row["cpu_max"], row["mem"]) == ("0", "0", "5")
    [row] = logged_cells(tmp_path / "data", "cd")
    assert (row["cpu"], row["cpu_max"], row["mem"]) == ("0", "0", "0")


def _line_protocol(prefix: str, at: int) -> tuple[list[bytes], list[bytes]]:
    """Lines outside the line protocol's number grammar, one per class, and two good ones."""
    ns = at * NS
    refused = ["cpu,cpu=cpu-total,host={p}-underscore usage_idle=1_0 {ns}",
               "system,host={p}-underscore-int n_cpus=1_0i {ns}",
               "cpu,cpu=cpu-total,host={p}-arabic usage_idle=%s {ns}" % ARABIC_12,
               "system,host={p}-plus n_cpus=+4i {ns}",
               "cpu,cpu=cpu-total,host={p}-inf usage_idle=inf {ns}",
               # An escape sends the line through the character scanner, not the fast path.
               "cpu,cpu=cpu-total,host={p}-escaped,x=a\\ b usage_idle=1_0 {ns}",
               "cpu,cpu=cpu-total,host={p}-stamp usage_idle=50 %s" % arabic(ns)]
    good = ["cpu,cpu=cpu-total,host={p}-good usage_idle=80,usage_iowait=-0 {ns}",
            "mem,host={p}-good used_percent=-0 {ns}"]
    return ([line.format(p=prefix, ns=ns).encode("utf-8") for line in refused],
            [line.format(p=prefix, ns=ns).encode("utf-8") for line in good])


def test_line_protocol_numbers_outside_the_grammar_are_syntax_over_udp_and_http(tmp_path):
    t0 = (int(time.time()) - 3600) // 60 * 60
    with serve(tmp_path, "--flush-interval", "0.3", "--influx-port", "0") as server:
        refused, good = _line_protocol("udp", t0 + 30)
        server.send_udp_to(server.status["influx_port"], b"\n".join(refused + good))
        server.wait_metrics(lambda m: sum(outcomes(m, "influx").values()) >= 9)
        refused, good = _line_protocol("http", t0 + 30)
        status, text = post(server, "/write?precision=ns", b"\n".join(good + refused))
        assert status == 400, text
        error = json.loads(text)["error"]
        assert all("line %d: syntax" % number in error for number in range(3, 10)), error
        metrics = server.wait_metrics(lambda m: sum(outcomes(m, "influx").values()) >= 18)
        assert outcomes(metrics, "influx") == {"used": 4, "syntax": 14}
    assert server.returncode == 0, server.output
    assert vms(tmp_path / "data") == ["http-good", "udp-good"]
    for vm in ("http-good", "udp-good"):
        [row] = logged_cells(tmp_path / "data", vm)
        assert (row["cpu"], row["mem"]) == ("20", "0"), vm


def test_options_with_underscores_or_other_scripts_digits_are_one_usage_line(tmp_path):
    rules = tmp_path / "rules.toml"
    for aggregate, code in (("p95", 0), ("p" + arabic(95), 1)):  # a rule's percentile too
        rules.write_text('[[rule]]\nname = "r"\nscope = "group"\nmetric = "cpu"\nenter = 90\n'
                         'period = "60s"\naggregate = "%s"\n' % aggregate, encoding="utf-8")
        done = subprocess.run([sys.executable, "-m", "vmstats", "rules", "check", str(rules)],
                              cwd=ROOT, timeout=60, capture_output=True, text=True)
        assert done.returncode == code, done.stderr
    assert "%r is not mean" % ("p" + arabic(95)) in done.stderr, done.stderr
    for args in (["serve", "--max-past", "1_0s"], ["serve", "--max-past", arabic(10) + "s"],
                 ["serve", "--udp-port", arabic(12)], ["serve", "--max-vms", "1_000"],
                 ["serve", "--capacity-coverage-min", "0.\uff15"],
                 ["simulate", "--days", "1_0"], ["simulate", "--speed", FULLWIDTH_12],
                 ["simulate", "--end", arabic(1732262400)],
                 ["report", "--set", "days=1_4", "-o", str(tmp_path / "out"), str(tmp_path)]):
        done = subprocess.run([sys.executable, "-m", "vmstats", *args], cwd=ROOT, timeout=60,
                              capture_output=True, text=True)
        last = done.stderr.strip().splitlines()[-1]
        assert done.returncode in (1, 2) and last.startswith("Error: "), (args, done.stderr)
        assert args[2].split("=")[-1] in last and "Traceback" not in done.stderr, (args, last)
