"""Counts in messages read through vmstats/words.py: "1 VM", never "1 vms" or "1 VMs".

A message that pastes a count before a plural noun ("%d records") reads wrong the day the
count is one, and an operator who sees "1 records of 1 vms" doubts the figure beside it.
"""

import logging
import re
import time
from pathlib import Path

from vmstats.report.evidence import evidence_lines
from vmstats.report.money import Money
from vmstats.rules.config import parse_rules
from vmstats.server.metrics import RateLimitedLog
from vmstats.simulator.score import render, score

ROOT = Path(__file__).resolve().parent.parent
#: A count pasted before a noun's plural, or a "(s)" plural: what words.counted replaces.
HAND_MADE = re.compile(
    r"%[0-9]*d ([a-z-]+ )?(VMs|vms|records|rules|hosts|files|days|hours|minutes|payloads|deliveries|"
    r"transitions|connections|segments|columns|periods|messages|vCPUs|lines|rows|members|times|"
    r"keys|actions|stamps|samples|datagrams|VM-days)\b"
    r'|"[^"]*[a-z]\(s\)[^"]*"')


def test_no_message_pastes_a_count_before_a_plural():
    found = []
    for path in sorted([*(ROOT / "vmstats").rglob("*.py"), *(ROOT / "bin").iterdir()]):
        if path.is_file():
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if HAND_MADE.search(line):
                    found.append("%s:%d: %s" % (path.relative_to(ROOT), number, line.strip()))
    assert found == []


def test_one_of_each_reads_in_the_singular(caplog):
    # score's not-scored line read "1 VMs in the report are not in the truth file".
    one, two = score({}, {"10.0.0.1": ("reclaim", 0.0)}), score({}, {"a": ("keep", 0.0), "b": ("keep", 0.0)})
    assert "\n1 VM in the report not in the truth file (not scored)." in render(one)
    assert "\n2 VMs in the report not in the truth file (not scored)." in render(two)
    # A report's evidence read "span 1 days".
    lines = evidence_lines({"evidence": {"span_days": 1.0, "min_days": 6}}, Money("USD"))
    spans = [text for _label, text in lines]
    assert spans == ["1 day", "6 days"]
    assert evidence_lines({"evidence": {"span_days": 1.25}}, Money("USD"))[0][1] == "1.25 days"
    # The server's rate-limited log said "1 more unwritable messages suppressed".
    log = logging.getLogger("test-words")
    limited = RateLimitedLog(log, "unwritable", burst=1, period=3600.0)
    limited.window_start = time.monotonic()  # a window just begun: one message, then silence
    with caplog.at_level(logging.INFO, logger="test-words"):
        limited.emit("first")
        limited.emit("second")  # suppressed
        limited.window_start -= 3600.0  # the window over: the next message counts the silence
        limited.emit("third")
    assert "1 more unwritable message suppressed" in caplog.messages, caplog.messages
    # A rule's description read "alarm when 1 of 1 period are above 90".
    rule = parse_rules({"rule": [{"name": "one", "metric": "cpu", "enter": 90, "datapoints": 1,
                                  "periods": 1}]}).rules[0]
    assert "alarm when 1 of 1 period is above 90; ok again when 1 of 1 is back" in rule.describe()
    rule = parse_rules({"rule": [{"name": "two", "metric": "cpu", "enter": 90, "datapoints": 2,
                                  "periods": 3}]}).rules[0]
    assert "alarm when 2 of 3 periods are above 90; ok again when 2 of 3 are back" in rule.describe()
