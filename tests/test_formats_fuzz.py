"""Random input in every format never crashes a decoder and every line of it is counted."""

import re
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_protocol import UNICODE

from vmstats import protocol
from vmstats.server.formats import Tally, lineprotocol
from vmstats.server.formats import collectd as cd
from vmstats.server.formats.graphite import GraphiteDecoder, parse_templates
from vmstats.server.formats.influx import InfluxDecoder
from vmstats.server.formats.minutes import MinuteAssembler

NOW = 1732262400.0
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Bytes that make line protocol interesting, so random lines get past the first check often.
ALPHABET = st.sampled_from(list(b"cpu,host=vm1 usage_idle=12.5i\\\"tT-e.0u#\n\r\x00\xff"))


def lines_of(data: bytes) -> int:
    return sum(1 for line in data.split(b"\n") if line.strip() and line[:1] != b"#")


def assemble(samples) -> None:
    assembler = MinuteAssembler(max_open=50)
    assembler.add(samples, NOW, Tally())
    assembler.complete_all()
    for record in assembler.take():
        assert 0 <= record.cpu <= 100 and 0 <= record.mem <= 100


@SETTINGS
@given(st.one_of(st.binary(max_size=300), st.lists(ALPHABET, max_size=300).map(bytes)))
def test_line_protocol_never_crashes_and_counts_every_line(data):
    tally = Tally()
    samples = InfluxDecoder().decode(data, NOW, tally)
    assert sum(tally.counts.values()) == lines_of(data)
    assemble(samples)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["cpu,cpu=cpu-total", "mem", "net,interface=e0",
                                           "diskio,name=sda", "system"]),
                          st.sampled_from(["usage_idle", "available_percent", "total", "n_cpus",
                                           "bytes_recv", "read_bytes"]),
                          st.one_of(st.floats(), st.integers(-2**70, 2**70))),
                max_size=30))
def test_telegraf_shaped_lines_with_any_numbers(fields):
    data = "\n".join("%s,host=vm1 %s=%r%s 1732262400000000000"
                     % (m, f, v, "i" if isinstance(v, int) else "") for m, f, v in fields).encode()
    tally = Tally()
    samples = InfluxDecoder().decode(data, NOW, tally)
    assert sum(tally.counts.values()) == lines_of(data)
    assemble(samples)


@SETTINGS
@given(st.one_of(st.binary(max_size=300), st.lists(st.sampled_from(list(b"servers.vm1.cpu 12 -1\n")),
                                                   max_size=200).map(bytes)))
def test_graphite_never_crashes_and_counts_every_line(data):
    tally = Tally()
    decoder = GraphiteDecoder(parse_templates(["servers.{vm}.cpu cpu", "{vm}.{field}"]))
    samples = decoder.decode(data, NOW, tally)
    assert sum(tally.counts.values()) == sum(1 for line in data.split(b"\n") if line.strip())
    assemble(samples)


PART = st.one_of(
    st.tuples(st.sampled_from([0, 2, 3, 4, 5]), st.text(UNICODE, max_size=12)).map(
        lambda kv: cd.part_string(*kv)),
    st.tuples(st.sampled_from([1, 7, 8, 9]), st.integers(0, 2**64 - 1)).map(
        lambda kv: cd.part_number(*kv)),
    st.lists(st.tuples(st.sampled_from([0, 2, 3]), st.integers(0, 2**63 - 1)), min_size=1,
             max_size=3).map(cd.part_values),
    st.lists(st.floats(), min_size=1, max_size=3).map(
        lambda vs: cd.part_values([(cd.GAUGE, v) for v in vs])),
    st.binary(max_size=20),
    st.tuples(st.integers(0, 0x300), st.binary(max_size=12)).map(
        lambda kv: struct.pack("!HH", kv[0], 4 + len(kv[1])) + kv[1]))


@SETTINGS
@given(st.lists(PART, min_size=1, max_size=12).map(b"".join), st.booleans(), st.booleans())
def test_collectd_never_crashes_and_counts_every_packet(packet, signed, require):
    if signed:
        packet = cd.sign(packet, "u", "p")
    decoder = cd.CollectdDecoder({"u": "p"}, "sign" if require else "none")
    tally = Tally()
    samples = decoder.decode(packet, NOW, tally)
    assert sum(tally.counts.values()) >= 1
    assemble(samples)


def _native_reads(text: str) -> bool:
    """Does the native decoder take ``text`` as a number (in range or not)?"""
    line = "vmstats,vm=v cpu=1,mem=1,disk_r=%s %d" % (text, NOW)
    try:
        protocol.Decoder(clock=lambda: NOW).decode_line(line.encode("utf-8"))
    except protocol.DecodeError as exc:
        return exc.reason == protocol.R_RANGE
    return True


def _line_protocol_reads(text: str) -> bool:
    """Does line protocol's grammar take ``text`` as a finite number?"""
    value = text.encode("utf-8")
    if not re.fullmatch(lineprotocol._VALUE, value):
        return False
    try:
        lineprotocol.number(value)
    except lineprotocol.LineError:
        return False
    return True


def _graphite_reads(text: str) -> bool:
    tally = Tally()
    decoder = GraphiteDecoder(parse_templates(["servers.{vm}.cpu.percent cpu"]))
    decoder.decode(("servers.vm1.cpu.percent %s %d" % (text, NOW)).encode("utf-8"), NOW, tally)
    return tally.counts["used"] == 1


@SETTINGS
@given(st.text(alphabet=st.sampled_from("0123456789.eE-+_iuxnaIN\u0661\uff11\u00a0\u2003"),
               min_size=1, max_size=8))
def test_every_format_reads_numbers_by_one_grammar(text):
    """float() and int() would take ``1_0``, ``+1``, ``\\u0661`` and more: the native decoder
    (the C and regexes' reference), Graphite and line protocol all take the same numbers."""
    native = _native_reads(text)
    assert native == _line_protocol_reads(text), text
    if text[-1:] not in ("i", "u"):  # Graphite has no typed integers
        assert native == _graphite_reads(text), text
