"""The decoders' refusals (malformed lines, bad VM ids) are worded only where they are read,
and read as they always did.

A flood of malformed lines is counted whole, but logged ten lines in ten seconds and answered
ten lines a request: wording each (a line's number, a ``%r`` of its start) cost a string
format per line for nothing (BENCHMARKS.md, "Refused lines").  The words below are what the
commit before this gave for the same input, byte for byte; each is now ``Words`` until read.
The real decoders and edge run in process; a real server's log and answers say the same
words (test_formats_rejects.py, test_formats_server.py).
"""

import logging
import pickle
import struct

from vmstats.server.clock import outside_window, window_reason
from vmstats.server.formats import Sample, Tally, Words
from vmstats.server.formats.collectd import CollectdDecoder
from vmstats.server.formats.edge import Edge
from vmstats.server.formats.graphite import GraphiteDecoder, Template
from vmstats.server.formats.influx import InfluxDecoder
from vmstats.server.formats.minutes import MinuteAssembler
from vmstats.server.metrics import Metrics

NOW = 1767225600.0
#: A line of each refusal the line-protocol decoder makes, its reason and its words.
INFLUX = [
    (b"cpu,cpu=cpu-total,host=vm1" + b"x" * 300 + b" usage_idle=50", "too_long",
     "line of 340 bytes"),
    (b"cpu,cpu=cpu-total,host=vm1 usage_idle=50 17672256000000000000000", "syntax",
     "timestamp '17672256000000000000000' is not an integer"),
    (b"cpu,cpu=cpu-total,host usage_idle=50", "syntax", "tag 'host' is not key=value"),
    (b"cpu,cpu=cpu-total,host=vm1 usage_idle", "syntax",
     "fields 'usage_idle' are not key=value,..."),
    (b"cpu,cpu=cpu-total,host=vm1 usage_idle=50 1 2", "syntax",
     "expected 'measurement[,tags] fields [timestamp]'"),
    (b",host=vm1 usage_idle=50", "syntax", "empty measurement"),
    (b"cpu,cpu=cpu-total,host=vm1,host=vm2 usage_idle=50", "syntax", "tag 'host' given twice"),
    (b"cpu,cpu=cpu-total,host=vm1 usage_idle=50,usage_idle=40", "syntax",
     "field 'usage_idle' given twice"),
    (b"cpu,cpu=cpu-total usage_idle=50", "missing_vm", "no 'host' tag"),
    (b"cpu,cpu=cpu-total,host=\xff usage_idle=50", "bad_utf8", "tag value is not UTF-8"),
    (b"cpu,cpu=cpu-total,host=a..b usage_idle=50", "bad_vm_id",
     "vm id 'a..b' is not an IP or a safe name"),
    (b"cpu,cpu=cpu-total,host=1:2:x usage_idle=50", "bad_vm_id", "invalid IP address '1:2:x'"),
    (b"cpu,cpu=cpu-total,host=vm1 usage_idle=t", "field_type", "boolean where a number is needed"),
    (b"cpu,cpu=cpu-total,host=vm1 usage_idle=1e999", "non_finite", "'1e999' is not finite"),
    (b"cpu,cpu=cpu-total,host=vm1 usage_idle=150", "out_of_range",
     "usage_idle=150.0 outside [0.0, 100.0]"),
    (b'cpu,cpu=cpu-total,host=vm1 usage_idle="x"', "field_type", "str where a number is needed"),
    (b"cpu,cpu=cpu-total,host=vm\\ 1 usage_idle=50", "bad_vm_id",
     "vm id 'vm 1' is not an IP or a safe name"),
    (b'cpu,cpu=cpu-total,host=vm1,x usage_idle=50,s="a"', "syntax", "tag without key=value"),
    (b'cpu,cpu=cpu-total,host=vm1 usage_idle=5x,s="a"', "syntax",
     "field 'usage_idle' has no valid value"),
    (b'cpu,cpu=cpu-total,host=vm1 s="a', "syntax", "unterminated string field"),
    (b'cpu,cpu=cpu-total,host=vm1 s="a"x', "syntax", "unexpected character after fields"),
]


def test_each_malformed_line_is_worded_when_read_and_reads_as_before():
    decoder = InfluxDecoder(max_line=200)
    for _twice in range(2):  # the second time, a bad VM id is one refused before
        for line, reason, text in INFLUX:
            tally, errors = Tally(), []
            assert decoder.decode(line + b"\n", NOW, tally, errors=errors) == []
            assert tally.counts[reason] == 1
            [detail] = tally.details
            assert type(detail) is Words, line  # not yet worded
            assert str(detail) == "%s: line 1: %s" % (reason, text)
            # The HTTP write API's answer, as it read.
            assert errors == [(1, "%s: %s" % (reason, text))]
            # As the decoding processes hand them on.
            assert [str(one) for one in pickle.loads(pickle.dumps(tally.details))] == [str(detail)]


def test_the_plain_paths_refusals_read_as_before():
    """Lines without escapes, refused by the one-regex pass (no line numbers there)."""
    payload = b"\n".join([
        b"cpu,cpu=cpu-total,host=a..b usage_idle=50", b"cpu,cpu=cpu-total,host=vm1 usage_idle=t",
        b"cpu,cpu=cpu-total usage_idle=50", b"cpu,cpu=cpu-total,host=vm1,host=vm2 usage_idle=50",
        b"cpu,cpu=cpu-total,host=vm1 usage_idle=150", b"mem,host=vm1 total=" + b"9" * 5000 + b"i"])
    tally = Tally()
    assert InfluxDecoder().decode(payload, NOW, tally) == []
    assert [str(one) for one in tally.details] == [
        "bad_vm_id: vm id 'a..b' is not an IP or a safe name",
        "field_type: boolean where a number is needed", "missing_vm: no 'host' tag",
        "syntax: tag 'host' given twice", "out_of_range: usage_idle=150.0 outside [0.0, 100.0]",
        "syntax: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 "
        "digits; use sys.set_int_max_str_digits() to increase the limit"]
    # Words where they have arguments to put in (a fixed sentence costs nothing to word).
    assert [type(one) for one in tally.details] == [str, str, Words, Words, Words, str]


def test_graphites_refusals_are_worded_when_read_and_read_as_before():
    decoder = GraphiteDecoder([Template("servers.{vm}.{field}")], max_line=200)
    payload = b"\n".join([
        b"servers.vm1.cpu 50 1767225600", b"servers.vm1.cpu " + b"1" * 300, b"servers.\xff.cpu 5 1",
        b"servers.vm1.cpu", b"servers.vm1.cpu nan 1", b"servers.vm1.cpu x 1",
        b"servers.vm1.cpu 1" + b"0" * 400 + b" 1", b"servers.vm1.cpu 5 -5",
        b"servers.a..b.cpu 5 1767225600", b"servers.-a.cpu 5"])
    tally = Tally()
    assert len(decoder.decode(payload, NOW, tally)) == 1
    assert [str(one) for one in tally.details] == [
        "too_long: line of 316 bytes", "bad_utf8: line is not UTF-8",
        "syntax: 'servers.vm1.cpu' is not 'path value [timestamp]'",
        "non_finite: 'servers.vm1.cpu nan 1' is not finite",
        "syntax: 'servers.vm1.cpu x 1' has no decimal value and time",
        "too_long: line of 419 bytes", "out_of_range: 'servers.vm1.cpu 5 -5': timestamp before 1970",
        "bad_vm_id: vm id '-a' is not an IP or a safe name"]
    assert [type(one) for one in tally.details] == [Words, str] + [Words] * 5 + [str]


def _part(kind: int, body: bytes) -> bytes:
    return struct.pack("!HH", kind, len(body) + 4) + body


def _text(kind: int, text: bytes) -> bytes:
    return _part(kind, text + b"\0")


def test_collectds_refusals_are_worded_when_read_and_read_as_before():
    at = _part(1, struct.pack("!Q", 1767225600))
    nan = _part(6, struct.pack("!HB", 1, 1) + struct.pack("<d", float("nan")))
    mem = _text(2, b"memory") + _text(4, b"percent") + _text(5, b"used")
    packets = [
        (_text(0, b"vm1") + at + mem + nan, "non_finite: memory/percent value is not finite"),
        (_text(0, b"vm1") + b"\0\0\0", "truncated: 3 bytes after the last part"),
        (_text(0, b"vm1") + struct.pack("!HH", 2, 400),
         "truncated: part 0x0002 of 400 bytes at 8 in a 12-byte packet"),
        (_text(0, b"vm1"), "no_values: packet of 8 bytes without values"),
        (_part(2, b"abc"), "syntax: string part 0x0002 is not NUL-terminated"),
        (_part(1, b"abc"), "syntax: time part of 7 bytes"),
        (_part(6, struct.pack("!H", 3) + b"\1"), "syntax: values part of 3 bytes for 3 values"),
    ]
    for packet, text in packets:
        tally = Tally()
        assert CollectdDecoder().decode(packet, NOW, tally) == []
        [detail] = tally.details
        assert type(detail) is Words and str(detail) == text


def test_a_flood_of_malformed_lines_is_counted_whole_and_ten_logged_as_before(caplog):
    edge = Edge(None, Metrics(), MinuteAssembler(), lambda: NOW)
    decoder = InfluxDecoder()
    edge.decoders["influx"] = decoder
    payload = b"\n".join(b"cpu,cpu=cpu-total,host=vm%d.. usage_idle=50" % (vm % 7)
                         for vm in range(500))
    with caplog.at_level(logging.WARNING, logger="vmstats.server.formats.edge"):
        edge.feed(decoder, payload)
        edge.feed(decoder, payload)  # logged no more: ten lines in ten seconds
    assert edge.metrics.edge[("influx", "bad_vm_id")] == 1000
    assert [record.getMessage() for record in caplog.records] == [
        "influx: bad_vm_id: vm id 'vm%d..' is not an IP or a safe name" % (vm % 7)
        for vm in range(10)]


def test_the_window_reason_is_chosen_in_one_place():
    """The minutes' refusals (worded when read) and every refusal's words name one reason."""
    for ahead, reason in ((True, "future_timestamp"), (False, "past_timestamp")):
        assert window_reason(ahead) == reason
        assert outside_window(NOW, NOW, ahead, 300, 3600, minute=True)[0] == reason
    assembler = MinuteAssembler(max_past=3600)
    refused: list = []
    assembler.add([Sample("a", NOW + 900, "cpu", "", 5.0), Sample("a", NOW - 7200, "cpu", "", 5.0)],
                  NOW, Tally(), refused)
    assert [reason for _index, reason, _words in refused] == ["future_timestamp", "past_timestamp"]
