"""The receive fast path agrees with the general decoder: same records, same rows, same rejects."""

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from test_protocol import NOW, records

from vmstats import logstore, protocol
from vmstats.server.buffer import Buffer
from vmstats.server.ingest import Ingest
from vmstats.server.metrics import Metrics
from vmstats.server.parse import build_fast_path
from vmstats.server.rows import held_from_record, log_row

REGEX, TS, SEQ = build_fast_path()


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
    return log_row(int(groups[TS]), b",".join(groups[2:-1] + groups[1:2]))  # fields, host


def parsed(row: bytes) -> list:
    cells = row.split(b",")
    return [None if c == b"" else (c.decode() if i == len(cells) - 1 else float(c))
            for i, c in enumerate(cells)]


@settings(max_examples=800, deadline=None)
@given(records)
def test_canonical_lines_give_the_decoders_row_byte_for_byte(record):
    line = protocol.encode_record(record).encode()
    row = fast_row(line)
    expected = logstore.format_row(protocol.Decoder(clock=lambda: NOW).decode_line(line))
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
    assert parsed(log_row(record.ts, rows[record.ts])) == parsed(logstore.format_row(record))
    assert log_row(record.ts, held_from_record(record)) == logstore.format_row(record)


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
    assert REGEX.groups == len(logstore.COLUMNS) + 1  # the vm id, then one group per column


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
