"""A refusal's words are put together only where they are read, and read as they always did.

A flood of refused samples is counted whole but logged ten lines in ten seconds, and an HTTP
answer names ten lines: wording every refusal made a refused line cost more CPU than a line
taken (BENCHMARKS.md, "Refused lines").  The minutes now hand on ``Words``, worded when read.
These run the real decoder, assembler and edge in process: a real server's log and answers
say the same words (test_formats_server.py, test_formats_device_cap.py and the others).
"""

import logging

from vmstats.server.clock import outside_window
from vmstats.server.formats import CPU_STATE, TOTAL, Sample, Tally, Words
from vmstats.server.formats.edge import Edge
from vmstats.server.formats.influx import InfluxDecoder
from vmstats.server.formats.minutes import MinuteAssembler
from vmstats.server.metrics import Metrics

NOW = 1767225600.0
NS = 10**9

#: A sample of each refusal the minutes make, and its words, as they read before they were
#: put together lazily (the same samples through the commit before gave these strings).
REFUSALS = [
    (Sample("a", NOW + 900, "cpu", "", 5.0), "future_timestamp",
     "stamped 900s ahead of this server's clock: its minute would end past --max-future 300s "
     "(timestamp 1767226500, server time 1767225600): the VM's clock or the server's is off"),
    (Sample("a", NOW - 7200, "cpu", "", 5.0), "past_timestamp",
     "stamped 7200s before this server's clock, past --max-past 3600s (timestamp 1767218400, "
     "server time 1767225600)"),
    (Sample("a", NOW - 100, "cpu", "", 5.0), "late",
     "sample for a's minute ending 1767225540, already written"),
    (Sample("b", NOW - 5, "net_rx" + TOTAL, "eth0", -5), "out_of_range",
     "net_rx_total=-5 outside [0, 1.7976931348623157e+308]"),
    (Sample("b", NOW - 5, "net_rx" + TOTAL, "eth1", 2**1100), "out_of_range",
     "net_rx_total=135829852904...(332 digits) outside [0, 1.7976931348623157e+308]"),
    (Sample("b", NOW - 5, "disk_r" + TOTAL, "vda", 10**17), "out_of_range",
     "disk_r=1e+16/s outside [0, 1000000000000000.0]"),
    (Sample("b", NOW - 5, "cpu", "", 150.0), "out_of_range", "cpu=150.0 outside [0.0, 100.0]"),
    (Sample("b", NOW - 5, "vcpus", "", 0), "out_of_range", "vcpus=0 outside [0.001, 4096]"),
    (Sample("b", NOW - 5, "disk_w", "d3", 1.0), "device_cap",
     "b's minute already holds 2 devices of disk_w: 'd3' refused"),
    (Sample("b", NOW - 5, "net_tx", "e2", 1.0), "name_budget",
     "open minutes already hold 3 device names: b's net_tx 'e2' refused"),
    (Sample("b", NOW - 5, "net_tx", "x" * 40, 1.0), "too_long",
     "b's net_tx device name of 40 bytes is over 16: %r... refused" % ("x" * 32)),
    (Sample("b", NOW - 5, CPU_STATE, "0:" + "\u20ac" * 6, 1.0), "too_long",
     "b's cpu_state device name of 20 bytes is over 16: '0:\u20ac\u20ac\u20ac\u20ac\u20ac\u20ac'"
     "... refused"),
]


def refused_by_the_minutes(by_line: bool) -> tuple[list, Tally]:
    """Every refusal of ``REFUSALS``, after what sets them up (a minute of a written, b's
    disk counter primed and two disks and a name held)."""
    assembler = MinuteAssembler(max_past=3600, max_devices=2, max_names=3, max_name_bytes=16)
    assembler.add([Sample("a", NOW - 100, "cpu", "", 5.0), Sample("a", NOW - 100, "mem", "", 5.0)],
                  NOW, Tally())
    assembler.complete_all()
    held = [Sample("b", NOW - 15, "disk_r" + TOTAL, "vda", 0),
            Sample("b", NOW - 5, "disk_w", "d1", 1.0), Sample("b", NOW - 5, "disk_w", "d2", 1.0),
            Sample("b", NOW - 5, "net_tx", "e1", 1.0)]
    refused: list = []
    tally = Tally()
    assembler.add(held + [sample for sample, _reason, _words in REFUSALS], NOW, tally,
                  refused if by_line else None)
    return refused, tally


def test_each_refusal_is_worded_when_read_and_reads_as_before():
    refused, _tally = refused_by_the_minutes(by_line=True)
    assert [(index, reason) for index, reason, _words in refused] == [
        (4 + k, reason) for k, (_sample, reason, _words) in enumerate(REFUSALS)]
    for (_index, _reason, words), (_sample, _reason_too, text) in zip(refused, REFUSALS, strict=True):
        assert type(words) is Words  # not yet worded
        assert str(words) == text and words == text and "%s" % words == text
    # Counted into a tally instead (a replay): its first ten details, worded when read.
    _refused, tally = refused_by_the_minutes(by_line=False)
    assert len(tally.details) == 10 and all(type(one) is Words for one in tally.details)
    assert [str(one) for one in tally.details] == [
        "%s: %s" % (reason, text) for _sample, reason, text in REFUSALS[:10]]


def test_a_flood_of_refused_lines_is_counted_whole_and_only_the_logged_lines_worded(caplog):
    """500 Telegraf lines stamped a day ahead, through the edge as the line-protocol port hands
    them on: each counted, handed on unworded, and ten logged in the words they always had."""
    edge = Edge(None, Metrics(), MinuteAssembler(), lambda: NOW)
    decoder = InfluxDecoder()
    edge.decoders["influx"] = decoder
    ahead = int(NOW) + 86400
    payload = b"\n".join(b"cpu,cpu=cpu-total,host=vm%d usage_idle=50 %d" % (vm, ahead * NS)
                         for vm in range(500))
    tally, lines = Tally(), []
    samples = decoder.decode(payload, NOW, tally, lines=lines)
    refused: list = []
    edge.assembler.add(samples, NOW, tally, refused)
    assert len(refused) == 500 and {type(words) for _index, _reason, words in refused} == {Words}
    with caplog.at_level(logging.WARNING, logger="vmstats.server.formats.edge"):
        edge.feed(decoder, payload)
        edge.feed(decoder, payload)  # logged no more: ten lines in ten seconds
    assert edge.metrics.edge == {("influx", "future_timestamp"): 1000}
    _reason, words = outside_window(ahead, NOW, True, 300, 0, minute=True)
    assert [record.getMessage() for record in caplog.records] == [
        "influx: future_timestamp: line %d: %s" % (number, words) for number in range(1, 11)]
    # The HTTP write API's answer names its first ten lines, worded as before.
    errors: list = []
    edge.feed_lines(decoder, payload, errors, divisor=NS)
    assert errors == [(number, "future_timestamp: %s" % words) for number in range(1, 11)]
