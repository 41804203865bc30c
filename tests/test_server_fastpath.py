"""The receive fast path agrees with the general decoder: same records, same rows, same rejects."""

import itertools
import math
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_protocol import NOW, UNICODE, percent, rate, records, sizes

from vmstats import logstore, protocol
from vmstats.server import parse
from vmstats.server.buffer import Buffer
from vmstats.server.ingest import Ingest
from vmstats.server.metrics import Metrics
from vmstats.server.parse import FIELD_NAME_BYTES, CompactShape, Parser, build_fast_path

REGEX, TS, SEQ = build_fast_path()


@pytest.fixture(scope="module", autouse=True, params=["c", "regexes"])
def reader(request):
    """Every test twice: with the C reader of lines (``_linescan``) as built, which takes the
    payloads it proves valid, and without it, where the regexes and the decoder take them all
    (a build without a compiler, and every payload the C leaves)."""
    built = parse._native
    assert built is not None, ("vmstats.server._linescan was not built: bin/test installs a "
                               "C compiler and Python's headers when missing")
    if request.param == "regexes":
        parse._native = None
    yield request.param
    parse._native = built


def regex_parser(budget: bool = False) -> Parser:
    """A parser without the C reader: for the tests of the regexes' passes themselves, which
    meet more spellings than the build budget allows, unless ``budget``."""
    parser = Parser(max_future=300, max_past=0)
    parser._scan_spec = None
    if not budget:
        parser.build_burst = parser._builds = math.inf
    return parser


def make_ingest(**caps) -> Ingest:
    metrics = Metrics()
    buffer = Buffer(metrics, caps.get("max_buffered", 10 ** 6), caps.get("max_per_vm", 10 ** 6))
    return Ingest(buffer, metrics, max_future=300, max_past=0, clock=lambda: NOW)


def fast_row(line: bytes):
    """The log row the fast path produces for ``line`` (None if the regex leaves it)."""
    found = REGEX.fullmatch(line)
    if found is None:
        return None
    groups = found.groups(b"")
    ts = int(groups[TS])
    return b"%d,%s" % (ts, b",".join(groups[2:-1] + groups[1:2]))  # ts, fields, host


#: Records with every field, as the agent sends them: the compact regex's column path.
complete = st.builds(
    protocol.Record, vm=st.ip_addresses(v=4).map(str), ts=st.integers(NOW - 10 ** 6, NOW + 300),
    cpu=percent, mem=percent, cpu_max=percent, disk_r=rate, disk_w=rate, net_rx=rate, net_tx=rate,
    vcpus=sizes, mem_mb=st.integers(1, 1 << 32), seq=st.integers(0, (1 << 63) - 1),
    host=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,30}", fullmatch=True, alphabet=UNICODE))
#: ...and with some of the optional ones left out: the path with a group per field.
partial = st.tuples(complete, st.sets(st.sampled_from(
    [name for name in protocol.FIELD_NAMES + ("host",) if name not in protocol.REQUIRED_FIELDS]),
    min_size=1)).map(lambda pair: pair[0]._replace(**dict.fromkeys(pair[1])))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(complete, partial, records), min_size=1, max_size=6))
def test_a_payload_parses_to_the_decoders_records_in_order_whatever_the_path(batch):
    payload = b"\n".join(protocol.encode_record(r).encode() for r in batch)
    expected, rejects = _decoded(payload)
    parser = Parser(max_future=300, max_past=0)
    for _ in range(2):  # the first pass meets the VM ids, the second takes the column path
        vms, tss, rows, seqs, reasons, _details, _refused = parser.parse(payload, NOW)
        assert per_vm(zip(vms, tss, rows, seqs, strict=True)) == per_vm(expected)
        assert sum(count for _reason, count in reasons) == rejects


def _decoded(payload: bytes) -> tuple[list, int]:
    """The decoder's ``(vm, ts, held row, seq)`` for each line of ``payload``, and its rejects."""
    decoder = protocol.Decoder(clock=lambda: NOW)
    expected, rejects = [], 0
    for line in payload.split(b"\n"):
        try:
            record = decoder.decode_line(line)
        except protocol.DecodeError:
            rejects += 1
            continue
        expected.append((record.vm, record.ts, logstore.format_tail(record), record.seq))
    return expected, rejects


def per_vm(records) -> dict:
    """Each VM's records in order: what a payload's filing must keep (``Parser._mixed`` may
    file one spelling's lines before another's, never one VM's out of order)."""
    out: dict = {}
    for record in records:
        out.setdefault(record[0], []).append(record)
    return out


def test_the_compact_regex_admits_complete_lines_and_names_only_deletes_field_names():
    compact, ts, seq = build_fast_path(compact=True)
    assert compact.groups == 5 and (ts, seq) == (4, 3)
    line = protocol.encode_record(protocol.Record(
        vm="10.0.0.1", ts=NOW, cpu=1.5, cpu_max=100.0, mem=2.25, disk_r=1.0, disk_w=2.0, net_rx=3.0,
        net_tx=4.0, vcpus=2, mem_mb=4096, seq=7, host="h-1")).encode()
    [groups] = compact.findall(line)
    assert groups[2].translate(None, FIELD_NAME_BYTES) + b"," + groups[1] == \
        b",".join(REGEX.fullmatch(line).groups()[2:-1] + (b"h-1",))
    assert not set(FIELD_NAME_BYTES) & set(b"0123456789.,")
    for bad in (line + b"x", line.replace(b"cpu=1.5", b"cpu=101"), line.replace(b"4096i", b"4096")):
        assert compact.fullmatch(bad) is None and REGEX.fullmatch(bad) is None
    # A size: whole and typed as encode_record writes it, or a positive decimal of at most
    # three places (untyped "2" is an integral decimal); zero, a fourth place, a typed
    # fraction and a size the regex cannot prove in range go to the decoder.
    for value in (b"2i", b"2", b"0.25", b"0.001", b"1.5", b"999.999", b"999i", b"0.100", b"00.5"):
        sized = line.replace(b"vcpus=2i", b"vcpus=" + value)
        assert compact.fullmatch(sized) is not None and REGEX.fullmatch(sized) is not None, value
        assert REGEX.fullmatch(sized).group(10) == value.rstrip(b"i")
    for value in (b"0", b"0i", b"0.000", b"0.", b"0.0005", b"0.2500", b"0.25i", b"2.i", b"-1",
                  b"1e-3", b".5", b"4096", b"1000i", b"2ii"):
        sized = line.replace(b"vcpus=2i", b"vcpus=" + value)
        assert compact.fullmatch(sized) is None and REGEX.fullmatch(sized) is None, value
    lacking = line.replace(b",disk_w=2", b"")
    assert compact.fullmatch(lacking) is None and REGEX.fullmatch(lacking) is not None
    for value in (b"100", b"100.", b"100.000", b"99.5", b"0.", b"7"):
        assert compact.fullmatch(line.replace(b"cpu=1.5", b"cpu=" + value)) is not None
    for value in (b"100.5", b"1000", b"100.0.", b".5", b"1..5", b"1.5.", b"1005"):
        assert compact.fullmatch(line.replace(b"cpu=1.5", b"cpu=" + value)) is None


def parsed(row: bytes) -> list:
    """A log row's cells: its timestamp and fields as numbers, the host and tags as text."""
    cells = row.split(b",")
    numbers = len(protocol.FIELD_NAMES) + 1
    return [None if c == b"" else (c.decode() if i >= numbers else float(c))
            for i, c in enumerate(cells)]


# Once: fast_row is the regex alone and the decoder never meets the C reader.
@pytest.mark.parametrize("reader", ["c"], indirect=True)
@settings(max_examples=800, deadline=None)
@given(records)
def test_canonical_lines_give_the_decoders_row_byte_for_byte(record):
    line = protocol.encode_record(record).encode()
    row = fast_row(line)
    # The rows compared, the stamp judged by neither (a regex alone judges none).
    expected = logstore.format_row(protocol.Decoder(clock=lambda: NOW, first=0).decode_line(line))
    if row is not None:  # the regex is allowed to be narrower, never different
        assert row == expected
    if record.ts >= 10 ** 9 and "e" not in line.decode() and (record.vcpus or 0) < 1000:
        assert row is not None, line  # ...but covers what agents actually send


_values = st.sampled_from(["0", "1", "100", "100.0", "100.5", "101", "07.50", "99.99999",
                           "1e5", "5i", "0i", "5.5i", "-0", "-1", "1000000000000000",
                           "999999999999999.5", "4096i", "4097i", "abc", ""])


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(protocol.FIELD_NAMES), _values), max_size=6),
       st.sampled_from(["10.0.0.1", "0010.0.0.1", "::1", "web-1", "a..b", "x" * 65]),
       st.sampled_from([str(NOW), str(NOW + 301), str(NOW * 1000), "0" + str(NOW)[1:]]))
def test_whenever_the_regex_matches_the_decoder_accepts_the_same_values(fields, vm, stamp):
    body = ",".join("%s=%s" % pair for pair in [("cpu", "1"), ("mem", "2")] + fields)
    line = ("vmstats,vm=%s %s %s" % (vm, body, stamp)).encode()
    ingest = make_ingest()
    accepted, rejected, dropped = ingest.payload(line)
    try:
        record = protocol.Decoder(clock=lambda: NOW).decode_line(line)
    except protocol.DecodeError:
        assert (accepted, rejected) == (0, 1)
        return
    assert (accepted, rejected) == (1, 0)
    [(held_vm, rows)] = ingest.buffer.table.items()
    assert held_vm == record.vm and list(rows) == [record.ts]
    assert parsed(b"%d,%s" % (record.ts, rows[record.ts])) == parsed(logstore.format_row(record))


def test_a_packed_payload_is_matched_in_one_pass_and_rejects_do_not_cost_neighbours():
    good = [protocol.encode_record(protocol.Record(vm="10.0.0.%d" % i, ts=NOW - i, cpu=1.0,
                                                   mem=2.0, seq=i)).encode() for i in range(5)]
    ingest = make_ingest()
    assert ingest.payload(b"\n".join(good)) == (5, 0, 0)
    assert ingest.payload(b"\n".join(good[:2] + [b"junk", b"", b"# comment"] + good[2:])) == (5, 1, 0)
    assert ingest.buffer.count == 5  # the second payload replaced, never duplicated
    assert ingest.metrics.rejects["syntax"] == 1


def test_caps_drop_and_count_and_the_global_cap_asks_for_a_flush():
    asked = []
    ingest = make_ingest(max_buffered=3, max_per_vm=2)
    ingest.buffer.on_full = lambda: asked.append(True)
    lines = [b"vmstats,vm=10.0.0.1 cpu=1,mem=2 %d" % (NOW - i) for i in range(3)]
    lines += [b"vmstats,vm=10.0.0.2 cpu=1,mem=2 %d" % (NOW - i) for i in range(3)]
    assert ingest.payload(b"\n".join(lines)) == (3, 0, 3)
    assert (ingest.metrics.drops["per_vm_cap"], ingest.metrics.drops["global_cap"]) == (1, 2)
    assert asked == [True]


def test_sequence_gaps_estimate_lost_records():
    ingest = make_ingest()
    for seq in (1, 2, 5, 5, 6, 9, 0, 1):  # 3,4 and 7,8 lost; 5 resent; 0 = agent restarted
        ingest.payload(b"vmstats,vm=10.0.0.1 cpu=1,mem=2,seq=%di %d" % (seq, NOW - 100 + seq))
    assert ingest.metrics.seq_lost == 4


def test_the_regex_is_built_from_the_field_table():
    for name in protocol.FIELD_NAMES:
        assert re.escape(name).encode() in REGEX.pattern
    # The vm id, then one group per column but tags: lines with extra tags take the decoder.
    assert REGEX.groups == len(logstore.COLUMNS) and logstore.COLUMNS[-1] == "tags"


def test_only_whole_lines_match_the_fast_path():
    good = b"vmstats,vm=10.0.0.1 cpu=1,mem=2 %d" % NOW
    ingest = make_ingest()
    assert ingest.payload(b"\n".join([b"x" + good, good + b"x", good + b" 1", good])) == (1, 3, 0)
    assert REGEX.findall(b"x" + good) == [] and REGEX.findall(good + b"0") == []
    assert len(REGEX.findall(good + b"\r\n" + good + b"\n")) == 2


def test_reject_logging_is_rate_limited(caplog):
    import logging

    from vmstats.server.metrics import RateLimitedLog

    limited = RateLimitedLog(logging.getLogger("test.limited"), "rejected record", burst=3,
                             period=3600)
    with caplog.at_level(logging.WARNING, logger="test.limited"):
        for i in range(1000):
            limited.emit("bad line %d", i)
    assert len(caplog.records) == 3 and limited.suppressed == 997


def test_each_payload_runs_one_regex_pass_when_its_lines_share_a_shape():
    parser = regex_parser()
    passes = []
    for name in ("_findall", "_compact_findall"):
        run = getattr(parser, name)
        setattr(parser, name, lambda data, run=run, name=name: passes.append(name) or run(data))
    full = protocol.Record(vm="10.0.0.1", ts=NOW, cpu=1.5, cpu_max=2.0, mem=2.25, disk_r=1.0,
                           disk_w=2.0, net_rx=3.0, net_tx=4.0, vcpus=2, mem_mb=4096, seq=7)
    shapes = {"every field": full, "some fields": full._replace(disk_r=None, seq=None)}
    for shape, record in shapes.items():
        payload = b"\n".join(protocol.encode_record(record._replace(ts=NOW - i)).encode()
                             for i in range(3))
        parser.parse(payload, NOW)  # meets the VM id
        del passes[:]
        vms, _tss, rows, _seqs, _rejects, _details, _refused = parser.parse(payload, NOW)
        assert vms == ["10.0.0.1"] * 3 and rows[0] == logstore.format_tail(record)
        assert passes == (["_compact_findall"] if shape == "every field" else ["_findall"])


def test_a_payload_that_mixes_shapes_takes_the_per_field_regex_not_the_decoder():
    """Every field in the first line, not in a later one: two regex passes, no line by line."""
    parser = regex_parser()
    full = protocol.Record(vm="10.0.0.1", ts=NOW, cpu=1.5, cpu_max=2.0, mem=2.25, disk_r=1.0,
                           disk_w=2.0, net_rx=3.0, net_tx=4.0, vcpus=2, mem_mb=4096, seq=7)
    records = [full, full._replace(ts=NOW - 1, disk_w=None, seq=8), full._replace(ts=NOW - 2)]
    payload = b"\n".join(protocol.encode_record(r).encode() for r in records)
    parser.parse(payload, NOW)  # meets the VM id
    passes = []
    for name in ("_findall", "_compact_findall", "_line_by_line"):
        run = getattr(parser, name)
        setattr(parser, name, lambda *a, run=run, name=name: passes.append(name) or run(*a))
    vms, tss, rows, seqs, rejects, _details, _refused = parser.parse(payload, NOW)
    assert passes == ["_compact_findall", "_findall"] and rejects == []
    assert rows == [logstore.format_tail(r) for r in records] and seqs == [7, 8, 7]
    assert tss == [NOW, NOW - 1, NOW - 2]


# -- every other valid spelling: tags and fields in any order, typed values, any precision --------
_INT_FIELDS = {name for name, is_int, _lo, _hi, _required, _places in protocol.FIELDS if is_int}
_extra_tags = st.lists(st.tuples(st.sampled_from(["project", "owner", "env", "team_2"]),
                                 st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,10}", fullmatch=True,
                                               alphabet=UNICODE)),
                       max_size=3, unique_by=lambda pair: pair[0])


def _spell_value(name: str, value, typing: str) -> str:
    """``value`` as a sender may write it: typed with i/u, or untyped (a float's repr)."""
    if name in _INT_FIELDS:
        return "%d%s" % (value, typing) if typing or value >= 10 ** 15 else "%d" % value
    if typing and value == int(value) and value < 10 ** 15:
        return "%d%s" % (value, typing)
    return protocol._format_number(value, False, None)


@st.composite
def spellings(draw, record_strategy=complete):
    """(line, record) with the record's tags and fields shuffled, typed and stamped at will."""
    record = draw(record_strategy)._replace(tags=protocol.check_tags(draw(_extra_tags)))
    tags = [("vm", record.vm)] + ([("host", record.host)] if record.host else [])
    tags += list(record.tags or ())
    fields = [(name, getattr(record, name)) for name in protocol.FIELD_NAMES
              if getattr(record, name) is not None]
    tags, fields = draw(st.permutations(tags)), draw(st.permutations(fields))
    typing = draw(st.lists(st.sampled_from(["", "i", "u"]), min_size=len(fields),
                           max_size=len(fields)))
    precision = draw(st.sampled_from([0, 3, 6, 9]))
    stamp = record.ts * 10 ** precision + draw(st.integers(0, 10 ** precision - 1))
    line = "vmstats,%s %s %d" % (
        ",".join("%s=%s" % pair for pair in tags),
        ",".join("%s=%s" % (name, _spell_value(name, value, kind))
                 for (name, value), kind in zip(fields, typing, strict=True)), stamp)
    return line.encode(), record


def _counting_decoder(parser: Parser) -> list:
    """Lines the parser hands to its decoder (the slow path) are appended to the list returned."""
    calls: list = []
    decode = parser.decoder.decode_line
    parser.decoder.decode_line = lambda line, now=None: calls.append(line) or decode(line, now)
    return calls


@settings(max_examples=200, deadline=None)
@given(st.lists(spellings(), min_size=1, max_size=5), st.booleans())
def test_every_spelling_of_a_record_takes_the_fast_path_to_the_decoders_rows(batch, same_shape):
    """Tags and fields in any order, i/u typing, extra tags, s/ms/us/ns stamps: same rows,
    and never the decoder for what agents and InfluxDB clients write."""
    if same_shape:  # one sender: every line of the payload spelled like the first
        batch = [batch[0]] * 3
    payload = b"\n".join(line for line, _record in batch)
    expected, rejects = _decoded(payload)
    parser = Parser(max_future=300, max_past=0)
    calls = _counting_decoder(parser)
    for _ in range(2):  # the first pass meets the VM ids, the second takes the column path
        vms, tss, rows, seqs, reasons, _details, _refused = parser.parse(payload, NOW)
        assert per_vm(zip(vms, tss, rows, seqs, strict=True)) == per_vm(expected)
        assert sum(count for _reason, count in reasons) == rejects
    covered = [line for line, record in batch if record.ts <= NOW + 300 and record.vcpus < 1000
               and b"e" not in line.partition(b" ")[2].partition(b" ")[0]]
    assert not set(calls) & set(covered)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.one_of(complete, complete, partial),
                          _extra_tags.filter(bool)), min_size=1, max_size=5), st.booleans())
def test_the_agents_lines_with_tags_take_a_compact_regex_to_the_decoders_rows(batch, late):
    """The agent's spelling with extra tags (sorted, after the host) has a compact regex of its
    own: the field section in one group, as without tags, and the tags in one more."""
    lines = [protocol.encode_record(record._replace(tags=protocol.check_tags(tags))).encode()
             for record, tags in batch]
    if late:  # a stamp past the window: that line is checked one by one, and refused
        lines.append(lines[0].rpartition(b" ")[0] + b" %d" % (NOW + 301))
    payload = b"\n".join(lines)
    expected, rejects = _decoded(payload)
    parser = Parser(max_future=300, max_past=0)
    calls = _counting_decoder(parser)
    for _ in range(2):
        vms, tss, rows, seqs, reasons, _details, _refused = parser.parse(payload, NOW)
        assert per_vm(zip(vms, tss, rows, seqs, strict=True)) == per_vm(expected)
        assert sum(count for _reason, count in reasons) == rejects
    compact = [line for (record, _tags), line in zip(batch, lines, strict=False)
               if None not in [getattr(record, name) for name in protocol.FIELD_NAMES]]
    assert all(isinstance(parser._shape_of(line), CompactShape) for line in compact)
    covered = [line for line in compact if b"e" not in line.partition(b" ")[2]
               and int(line.rpartition(b" ")[2]) <= NOW + 300]
    assert not set(calls) & set(covered)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(spellings(), spellings(partial), records.map(lambda r: (
    protocol.encode_record(r).encode(), r))), min_size=2, max_size=6))
def test_a_payload_mixing_spellings_parses_to_the_decoders_records_in_order(batch):
    payload = b"\n".join(line for line, _record in batch)
    expected, rejects = _decoded(payload)
    parser = Parser(max_future=300, max_past=0)
    for _ in range(2):
        vms, tss, rows, seqs, reasons, _details, _refused = parser.parse(payload, NOW)
        assert per_vm(zip(vms, tss, rows, seqs, strict=True)) == per_vm(expected)
        assert sum(count for _reason, count in reasons) == rejects


def test_a_payload_mixing_senders_spellings_is_matched_by_each_spellings_regex():
    """A parser joins the datagrams of many senders: the agent's lines and an InfluxDB client's
    in one payload take two regex passes, not the decoder line by line."""
    agent = [protocol.encode_record(protocol.Record(
        vm="10.0.1.%d" % i, ts=NOW - i, cpu=1.5, mem=2.0, seq=i, host="a")).encode()
        for i in range(1, 4)]
    influx = [b"vmstats,host=b,vm=10.0.2.%d cpu=1.5,mem=2,seq=%di %d000000000" % (i, i, NOW - i)
              for i in range(1, 4)]
    payload = b"\n".join(line for pair in zip(agent, influx, strict=True) for line in pair)
    expected, _rejects = _decoded(payload)
    parser = regex_parser()
    parser.parse(payload, NOW)  # meets the VM ids and the spellings
    calls = _counting_decoder(parser)
    passes = []
    run = parser._line_by_line
    parser._line_by_line = lambda *a: passes.append("line by line") or run(*a)
    vms, tss, rows, seqs, rejects, _details, _refused = parser.parse(payload, NOW)
    assert passes == [] and calls == [] and rejects == []
    assert per_vm(zip(vms, tss, rows, seqs, strict=True)) == per_vm(expected)
    # One VM in both spellings: its lines keep their order, so the payload goes line by line.
    both = payload + b"\nvmstats,host=b,vm=10.0.1.1 cpu=1.5,mem=2,seq=9i %d000000000" % (NOW - 9)
    vms, tss, rows, seqs, rejects, _details, _refused = parser.parse(both, NOW)
    assert passes == ["line by line"]
    assert list(zip(vms, tss, rows, seqs, strict=True)) == _decoded(both)[0]


_tag_pieces = st.sampled_from(["vm=10.0.0.1", "vm=web-1", "vm=a..b", "vm=", "host=h1", "host=-x",
                               "project=p1", "project=p2", "Bad=x", "env=", "owner=o.1", "vm",
                               "x%d=1" % 7, "team_a=" + "v" * 65])
_field_names = st.sampled_from(protocol.FIELD_NAMES + ("cpux", "CPU"))


@settings(max_examples=800, deadline=None)
@given(st.lists(_tag_pieces, min_size=1, max_size=10), st.lists(st.tuples(_field_names, _values),
       max_size=6), st.permutations(["cpu=1", "mem=2i"]),
       st.sampled_from([str(NOW), str(NOW) + "123", str(NOW) + "123456", str(NOW) + "123456789",
                        str(NOW + 301) + "000", str(NOW) + "1", "0" + str(NOW)[1:] + "000",
                        str(NOW) + "\r", ""]), st.sampled_from(["vmstats", "vmstat"]))
def test_whatever_the_spelling_the_parser_accepts_and_rejects_as_the_decoder(
        tags, fields, required, stamp, measurement):
    """Near-valid lines in every spelling: accepted with the same values, or rejected for the
    same reason, whichever path the parser takes (a spelling's regex, or the decoder)."""
    body = ",".join(required + ["%s=%s" % pair for pair in fields])
    line = ("%s,%s %s %s" % (measurement, ",".join(tags), body, stamp)).encode()
    for payload in (line, b"\n".join([line] * 3)):
        ingest = make_ingest()
        ingest.payload(payload)  # meets the spelling and the VM id
        ingest = make_ingest()
        ingest.parser = Parser(max_future=300, max_past=0)
        ingest.payload(payload)
        ingest = make_ingest()
        accepted, rejected, _dropped = ingest.payload(payload)
        try:
            record = protocol.Decoder(clock=lambda: NOW).decode_line(line)
        except protocol.DecodeError as exc:
            assert (accepted, rejected) == (0, payload.count(b"\n") + 1)
            assert {k: v for k, v in ingest.metrics.rejects.items() if v} == {exc.reason: rejected}
            continue
        assert (accepted, rejected) == (payload.count(b"\n") + 1, 0)
        [(held_vm, rows)] = ingest.buffer.table.items()
        assert held_vm == record.vm and list(rows) == [record.ts]
        assert parsed(b"%d,%s" % (record.ts, rows[record.ts])) == \
            parsed(logstore.format_row(record))


def test_an_influxdb_client_line_takes_its_spellings_regex_once_per_payload():
    """Sorted tags and fields, integers typed, nanoseconds: one regex pass, no decoder."""
    line = (b"vmstats,host=web1,vm=10.0.0.5 cpu=3.2,cpu_max=100i,disk_r=68469571i,disk_w=5120i,"
            b"mem=41,mem_mb=4096i,net_rx=812i,net_tx=300i,seq=17i,vcpus=2i %d000000000")
    payload = b"\n".join(line % (NOW - i) for i in range(4))
    parser = Parser(max_future=300, max_past=0)
    calls = _counting_decoder(parser)
    parser.parse(payload, NOW)
    passes = []
    for name in ("_findall", "_compact_findall", "_line_by_line", "_checked"):
        run = getattr(parser, name)
        setattr(parser, name, lambda *a, run=run, name=name: passes.append(name) or run(*a))
    vms, tss, rows, seqs, rejects, _details, _refused = parser.parse(payload, NOW)
    assert passes == [] and calls == [] and rejects == []
    assert rows == [b"3.2,100,41,68469571,5120,812,300,2,4096,17,web1"] * 4
    assert tss == [NOW - i for i in range(4)] and seqs == [17] * 4 and vms == ["10.0.0.5"] * 4


# -- payloads mixing spellings, VMs and bad lines, as a parser joins many senders' datagrams -----
#: A few VM ids, so that one VM turns up in several spellings; ``0::1`` is ``::1`` spelled otherwise.
_FEW_VMS = st.sampled_from(["10.0.0.1", "10.0.0.2", "web-1", "::1", "0::1"])
_BAD_LINES = st.sampled_from([
    b"junk", b"", b"# a comment", b"\r", b" vmstats,vm=10.0.0.1 cpu=1,mem=2 %d" % NOW,
    b"vmstats,vm=10.0.0.1 cpu=101,mem=2 %d" % NOW,  # out of range
    b"vmstats,vm=10.0.0.2,project=p cpu=1,mem=2 %d000" % (NOW + 301),  # in the future
    b"vmstats,vm=a..b cpu=1,mem=2 %d" % NOW,  # a bad VM id
    b"vmstats,vm=10.0.0.1 cpu=1e1,mem=2 %d" % NOW,  # valid: the decoder's, not a regex's
    b"vmstats,vm=10.0.0.2 cpu=1,mem=2,mem=3 %d" % NOW])  # a field twice


def _mixed_line(record_strategy):
    return spellings(st.tuples(record_strategy, _FEW_VMS).map(
        lambda pair: pair[0]._replace(vm=pair[1]))).map(lambda pair: pair[0])


def _decoded_reasons(payload: bytes) -> tuple[list, dict]:
    """What the decoder makes of each record line (the server skips blank lines, a CRLF
    sender's ``\r`` among them, and comments)."""
    lines = [line for line in payload.split(b"\n") if line and line[:1] != b"#" and line != b"\r"]
    decoder = protocol.Decoder(clock=lambda: NOW)
    expected, reasons = [], {}
    for line in lines:
        try:
            record = decoder.decode_line(line)
        except protocol.DecodeError as exc:
            reasons[exc.reason] = reasons.get(exc.reason, 0) + 1
            continue
        expected.append((record.vm, record.ts, logstore.format_tail(record), record.seq))
    return expected, reasons


def _fleet_line(record: protocol.Record, vm: str, sender: str) -> bytes:
    """``record`` of ``vm`` as one of a fleet's senders writes it: the agent, the agent with a
    tag, or an InfluxDB client (tags and fields sorted, integers typed, nanoseconds)."""
    record = record._replace(vm=vm)
    if sender != "influx":
        tags = protocol.check_tags([("project", "p1")]) if sender == "tagged" else None
        return protocol.encode_record(record._replace(tags=tags)).encode()
    tags = sorted([("vm", vm)] + ([("host", record.host)] if record.host else []))
    fields = sorted((name, getattr(record, name)) for name in protocol.FIELD_NAMES
                    if getattr(record, name) is not None)
    return ("vmstats,%s %s %d000000000" % (
        ",".join("%s=%s" % pair for pair in tags),
        ",".join("%s=%s" % (name, _spell_value(name, value, "i" if name in _INT_FIELDS else ""))
                 for name, value in fields), record.ts)).encode()


#: Records as agents measure them: values a regex admits (no exponents), stamps in the window.
_measured = st.builds(
    protocol.Record, vm=st.just("x"), ts=st.integers(NOW - 600, NOW),
    cpu=st.integers(0, 10000).map(lambda x: x / 100), mem=st.integers(0, 400).map(lambda x: x / 4),
    cpu_max=st.just(100.0), disk_r=st.integers(0, 10 ** 9).map(float),
    disk_w=st.integers(0, 10 ** 9).map(lambda x: x / 2), net_rx=st.just(812.5),
    net_tx=st.just(0.0), vcpus=st.integers(1, 64), mem_mb=st.integers(1, 1 << 20),
    seq=st.integers(0, 1000), host=st.sampled_from([None, "hv1", "hv-2"]))


@st.composite
def _mixed_payload(draw) -> list[bytes]:
    """Lines of a few VMs as a fleet's few senders spell them; or also in any spelling, and
    perhaps a bad line or two."""
    line = st.builds(_fleet_line, _measured, _FEW_VMS, st.sampled_from(["agent", "tagged",
                                                                        "influx"]))
    if draw(st.booleans()):
        return draw(st.lists(line, min_size=1, max_size=10))
    good = draw(st.lists(st.one_of(line, _mixed_line(complete), _mixed_line(partial)),
                         min_size=1, max_size=8))
    return draw(st.permutations(good + draw(st.lists(_BAD_LINES, max_size=2))))


@settings(max_examples=200, deadline=None)
@given(st.lists(_mixed_payload(), min_size=1, max_size=4))
def test_payloads_mixing_spellings_vms_and_bad_lines_parse_as_the_decoder_one_after_another(
        payloads):
    """One parser, payload after payload (sieving once one mixed spellings, its lead spelling
    first): each VM's records in the decoder's order, the same rejects for the same reasons."""
    parser = Parser(max_future=300, max_past=0)
    for batch in payloads * 2:  # again: the VM ids known, the parser sieving
        payload = b"\n".join(batch)
        expected, reasons = _decoded_reasons(payload)
        vms, tss, rows, seqs, rejects, _details, _refused = parser.parse(payload, NOW)
        assert per_vm(zip(vms, tss, rows, seqs, strict=True)) == per_vm(expected)
        assert dict(rejects) == reasons


def _sieve_passes(parser: Parser) -> list:
    """The spellings' sieve passes the parser runs are appended to the list returned."""
    passes: list = []
    run = parser._stage

    def stage(first):
        found = run(first)
        if found is None:
            return None
        sieve, shape = found
        return (lambda data: passes.append(shape) or sieve(data)), shape

    parser._stage = stage
    return passes


def _watched(parser: Parser) -> tuple[list, list, list]:
    """The lines the parser decodes, its sieve passes, and its plain passes over a payload."""
    plain: list = []
    for name in ("_findall", "_compact_findall"):
        run = getattr(parser, name)
        setattr(parser, name, lambda data, run=run, name=name: plain.append(name) or run(data))
    return _counting_decoder(parser), _sieve_passes(parser), plain


def test_a_mixed_payload_is_sieved_one_pass_per_spelling_and_the_next_one_at_once():
    """The agent's lines, an InfluxDB client's, a shuffled spelling with a tag, and bad lines:
    a pass per spelling and the decoder for the bad lines only; the next payload is sieved
    without a plain pass first, led by the spelling most lines had."""
    agent = [protocol.encode_record(protocol.Record(
        vm="10.0.1.%d" % i, ts=NOW - i, cpu=1.5, mem=2.0, seq=i, host="a")).encode()
        for i in range(1, 5)]
    influx = [b"vmstats,host=b,vm=10.0.2.%d cpu=1.5,mem=2,seq=%di %d000000000" % (i, i, NOW - i)
              for i in range(1, 3)]
    shuffled = [b"vmstats,project=x,vm=10.0.3.%d mem=2,cpu=%d %d000" % (i, i, NOW - i)
                for i in range(1, 3)]
    bad = [b"vmstats,vm=10.0.0.9 cpu=101,mem=2 %d" % NOW, b"junk"]
    payload = b"\n".join([influx[0], agent[0], bad[0], shuffled[0], agent[1], influx[1],
                          agent[2], b"", bad[1], shuffled[1], agent[3]])
    expected, reasons = _decoded_reasons(payload)
    parser = regex_parser()  # the C reads the good lines (test_server_linescan.py)
    calls, passes, plain = _watched(parser)
    parser.parse(payload, NOW)  # meets the VM ids and the spellings, and finds them mixed
    del calls[:], passes[:], plain[:]
    for _ in range(2):
        vms, tss, rows, seqs, rejects, _details, _refused = parser.parse(payload, NOW)
        assert per_vm(zip(vms, tss, rows, seqs, strict=True)) == per_vm(expected)
        assert dict(rejects) == reasons == {protocol.R_RANGE: 1, protocol.R_SYNTAX: 1}
        assert sorted(calls) == sorted(bad) and plain == []
        assert len(passes) == 3 and len(set(passes)) == 3
        assert vms[:4] == ["10.0.1.%d" % i for i in range(1, 5)]  # the lead spelling's, first
        del calls[:], passes[:]


def test_one_vm_in_two_spellings_keeps_its_records_in_order():
    """``0::1`` and ``::1`` are one VM: spelled so by two senders (one with a tag) in one
    payload, its records of one timestamp keep their order, so the later one is held."""
    tagged = b"vmstats,vm=0::1,project=p cpu=1,mem=2 %d" % NOW
    plain = b"vmstats,vm=::1 cpu=%d,mem=2 %d"
    payload = b"\n".join([plain % (5, NOW - 1), tagged, plain % (3, NOW - 2), plain % (2, NOW)])
    expected, _reasons = _decoded_reasons(payload)
    parser = Parser(max_future=300, max_past=0)
    for _ in range(3):  # meeting the ids and spellings, then sieving
        vms, tss, rows, seqs, rejects, _details, _refused = parser.parse(payload, NOW)
        assert list(zip(vms, tss, rows, seqs, strict=True)) == expected and rejects == []
        assert [row for ts, row in zip(tss, rows, strict=True) if ts == NOW][-1] == \
            b"2,,2,,,,,,,,"


def test_a_payload_of_more_spellings_than_sieved_leaves_the_rest_to_the_decoder():
    """Each field order is a spelling: past MAX_SPELLINGS, the lines left go one by one."""
    from vmstats.server.parse import MAX_SPELLINGS

    orders = itertools.permutations([b"cpu=1", b"mem=2", b"net_rx=3", b"net_tx=4"])
    lines = [b"vmstats,vm=10.0.4.%d %s %d" % (i, b",".join(order), NOW)
             for i, order in enumerate(itertools.islice(orders, MAX_SPELLINGS + 4))]
    payload = b"\n".join(lines)
    expected, _reasons = _decoded_reasons(payload)
    parser = regex_parser()
    passes = _sieve_passes(parser)
    parser.parse(payload, NOW)
    one_by_one = []
    run = parser._line_by_line
    parser._line_by_line = lambda data, now: one_by_one.append(data) or run(data, now)
    del passes[:]
    vms, tss, rows, seqs, rejects, _details, _refused = parser.parse(payload, NOW)
    assert per_vm(zip(vms, tss, rows, seqs, strict=True)) == per_vm(expected) and rejects == []
    assert len(passes) == MAX_SPELLINGS and one_by_one == [b"\n".join(lines[MAX_SPELLINGS:])]


def test_bad_lines_among_the_agents_cost_the_decoder_them_alone_and_no_extra_pass():
    """A broken sender among agents: its lines go to the decoder, the agents' take one sieve
    pass, and the next payload is sieved at once (no plain pass that would not cover it)."""
    good = [protocol.encode_record(protocol.Record(
        vm="10.0.5.%d" % i, ts=NOW - i, cpu=1.5, mem=2.0, seq=i, host="a")).encode()
        for i in range(1, 7)]
    bad = [b"garbage one", b"garbage two", b"vmstats,vm=10.0.5.9 cpu=x,mem=2 %d" % NOW]
    payload = b"\n".join(good[:2] + bad[:2] + good[2:4] + bad[2:] + good[4:])
    expected, reasons = _decoded_reasons(payload)
    parser = regex_parser()  # the C reads the good lines (test_server_linescan.py)
    calls, passes, plain = _watched(parser)
    parser.parse(payload, NOW)  # meets the VM ids
    for _ in range(2):
        del calls[:], passes[:], plain[:]
        vms, tss, rows, seqs, rejects, _details, _refused = parser.parse(payload, NOW)
        assert list(zip(vms, tss, rows, seqs, strict=True)) == expected
        assert dict(rejects) == reasons and sum(reasons.values()) == 3
        assert sorted(calls) == sorted(bad) and len(passes) == 1 and plain == []


def test_a_sender_inventing_a_spelling_per_line_buys_no_regex_beyond_the_budget(monkeypatch):
    """Tag names are free, and each new spelling's regex costs ~0.5 ms to compile: past the
    build budget a new spelling's lines go to the decoder (the same rows, a few us each), and
    a spelling in use keeps its regex however many others pass through the cache."""
    built = []
    build = parse.build_shape
    monkeypatch.setattr(parse, "build_shape", lambda key: built.append(key) or build(key))
    parser = regex_parser(budget=True)
    started = time.monotonic()
    honest = b"vmstats,vm=10.0.6.1,rack=r1 mem=2,cpu=1 %d" % NOW
    parser.parse(honest, NOW)
    kept = parser._shapes[parse.shape_key(honest)]
    # Half a spelling of its own that could be valid, half one that cannot (an unknown field).
    lines = [b"vmstats,vm=10.0.6.%d,k%d=x cpu=1.5,mem=2%s %d"
             % (i % 200, i, b",f=1" if i % 2 else b"", NOW + 60 * (i % 9)) for i in range(3000)]
    for start in range(0, len(lines), 20):
        payload = b"\n".join(lines[start:start + 20])
        expected, reasons = _decoded_reasons(payload)
        vms, tss, rows, seqs, rejects, _details, _refused = parser.parse(payload, NOW)
        assert per_vm(zip(vms, tss, rows, seqs, strict=True)) == per_vm(expected)
        assert dict(rejects) == reasons
        assert parser.parse(honest, NOW)[2] == [b"1,,2,,,,,,,,,rack=r1"]
    refilled = (time.monotonic() - started) * parse.SHAPE_BUILDS_PER_SECOND
    assert len(built) <= parse.SHAPE_BUILD_BURST + refilled + 1
    assert parser._shapes[parse.shape_key(honest)] is kept
    assert len(parser._shapes) == parse.MAX_SHAPES
