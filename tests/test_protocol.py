"""The wire format's decoder: never raises anything but DecodeError, and round-trips records."""

import ipaddress
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmstats import protocol
from vmstats.protocol import DecodeError, Decoder, Record

NOW = 1_732_262_400


def decoder() -> Decoder:
    return Decoder(max_future=300, max_past=0, clock=lambda: NOW)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=300))
def test_decode_line_raises_only_decode_error_on_arbitrary_bytes(data):
    try:
        decoder().decode_line(data)
    except DecodeError as exc:
        assert exc.reason in protocol.REJECT_REASONS


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_decode_payload_never_raises(data):
    records, rejects = decoder().decode_payload(data)
    assert all(isinstance(r, Record) for r in records)
    assert all(e.reason in protocol.REJECT_REASONS for e in rejects)


# Near-valid lines reach far deeper into the decoder than random bytes.
_pieces = st.sampled_from([
    "vmstats", "vm=", "host=", "cpu=", "mem=", "cpu_max=", "seq=", "vcpus=", "10.0.0.1", "::1",
    "web-1", "..", "/", ",", " ", "=", "i", "u", "1", "0", "-1", "1e309", "nan", "inf", "100.5",
    "99.9", "4096i", "1.5i", "_1", "\r", "\x00", "\u00e9", str(NOW), str(NOW * 1000),
    str(NOW * 10 ** 9), "99999999999999999999999",
])


@settings(max_examples=1500, deadline=None)
@given(st.lists(_pieces, max_size=25).map("".join))
def test_decode_line_raises_only_decode_error_on_near_valid_text(text):
    for line in (text, text.encode("utf-8")):
        try:
            record = decoder().decode_line(line)
        except DecodeError as exc:
            assert exc.reason in protocol.REJECT_REASONS
            continue
        assert record.ts <= NOW + 300
        assert 0 <= record.cpu <= 100 and 0 <= record.mem <= 100


def _optional(strategy):
    return st.one_of(st.none(), strategy)


percent = st.floats(0, 100, allow_nan=False)
rate = st.floats(0, 1e15, allow_nan=False)
#: Every character UTF-8 can encode (all but the surrogates): st.text()'s and st.from_regex()'s
#: own alphabet, given by category, which Hypothesis finds in its table of categories; their
#: default, characters(codec="utf-8"), encodes each of the 1.1 million code points first, ~1 s
#: of each test process wherever .hypothesis/ is absent (a fresh clone, CI).
UNICODE = st.characters(exclude_categories=("Cs",))
#: A size: whole vCPUs (an int, sent as ``2i``) or a multiple of a thousandth (sent as ``0.25``).
sizes = st.one_of(st.integers(1, 4096),
                  st.integers(1, 4096000).map(lambda n: protocol.stepped(n / 1000, 3)))
records = st.builds(
    Record,
    vm=st.one_of(st.ip_addresses().map(str),
                 st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True, alphabet=UNICODE)),
    ts=st.integers(0, NOW + 300),
    cpu=percent, mem=percent, cpu_max=_optional(percent),
    disk_r=_optional(rate), disk_w=_optional(rate), net_rx=_optional(rate), net_tx=_optional(rate),
    vcpus=_optional(sizes), mem_mb=_optional(st.integers(1, 1 << 32)),
    seq=_optional(st.integers(0, (1 << 63) - 1)),
    host=_optional(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,30}", fullmatch=True, alphabet=UNICODE)),
)


@settings(max_examples=500, deadline=None)
@given(records)
def test_encode_then_decode_is_the_identity(record):
    line = protocol.encode_record(record)
    if record.ts < protocol.FIRST_STAMP:  # before 2000: no reading of a set clock, as the server
        with pytest.raises(DecodeError) as refused:
            decoder().decode_line(line)
        assert refused.value.reason == protocol.R_PAST
        return
    decoded = decoder().decode_line(line)
    assert decoded == record._replace(vm=protocol.normalize_vm_id(record.vm))


def test_record_optional_fields_default_to_none():
    record = Record(vm="10.0.0.1", ts=NOW, cpu=1.0, mem=2.0)
    assert record.cpu_max is None and record.seq is None and record.host is None
    assert decoder().decode_line(b"vmstats,vm=10.0.0.1 cpu=1,mem=2 %d" % NOW) == record


@pytest.mark.parametrize("stamp, expected", [
    (NOW, NOW), (NOW * 1000 + 999, NOW), (NOW * 10 ** 6, NOW), (NOW * 10 ** 9 + 5, NOW),
])
def test_timestamps_are_recognised_by_magnitude(stamp, expected):
    line = "vmstats,vm=10.0.0.1 cpu=1,mem=2 %d" % stamp
    assert decoder().decode_line(line).ts == expected


@pytest.mark.parametrize("line, reason", [
    ("vmstats,vm=10.0.0.1 cpu=1,mem=2 %d" % (NOW + 301), protocol.R_FUTURE),
    ("vmstats,vm=10.0.0.1 cpu=inf,mem=2 %d" % NOW, protocol.R_NON_FINITE),
    ("vmstats,vm=10.0.0.1 cpu=1,mem=2,vcpus=0i %d" % NOW, protocol.R_RANGE),
    ("vmstats,vm=a/b cpu=1,mem=2 %d" % NOW, protocol.R_BAD_VM),
    ("vmstats,vm=.. cpu=1,mem=2 %d" % NOW, protocol.R_BAD_VM),
    ("vmstats,vm=%s cpu=1,mem=2 %d" % ("a" * 65, NOW), protocol.R_BAD_VM),
    ("vmstats,vm=10.0.0.1 cpu=1 %d" % NOW, protocol.R_MISSING),
    ("vmstats,vm=10.0.0.1 cpu=1,mem=2", protocol.R_MISSING),
])
def test_rejects_name_their_reason(line, reason):
    with pytest.raises(DecodeError) as caught:
        decoder().decode_line(line)
    assert caught.value.reason == reason


def test_past_limit_is_configurable():
    old = "vmstats,vm=10.0.0.1 cpu=1,mem=2 %d" % (NOW - 7200)
    assert decoder().decode_line(old).ts == NOW - 7200
    strict = Decoder(max_past=3600, clock=lambda: NOW)
    with pytest.raises(DecodeError) as caught:
        strict.decode_line(old)
    assert caught.value.reason == protocol.R_PAST


def test_signed_frames_verify_and_reject_by_cause():
    keys = {"k1": "secret-one"}
    payload = b"vmstats,vm=10.0.0.1 cpu=1,mem=2 %d" % NOW
    frame = protocol.sign_payload("k1", "secret-one", payload, now=NOW)
    key_id, ts, nonce, mac, body, rest = protocol.split_signed(frame + b"tail")
    assert body == payload and rest == b"tail"
    verifier = protocol.SignatureVerifier(keys, clock=lambda: NOW)
    assert verifier.verify(key_id, ts, nonce, mac, body) is None

    def cause(*parts):
        with pytest.raises(protocol.SignatureError) as caught:
            verifier.verify(*parts)
        return caught.value.reason

    assert cause(key_id, ts, nonce, mac, body) == protocol.S_REPLAY
    assert cause(b"k2", ts, nonce, mac, body) == protocol.S_UNKNOWN_KEY
    assert cause(key_id, ts, b"other", mac, body + b"0") == protocol.S_BAD
    stale = protocol.sign_payload("k1", "secret-one", payload, now=NOW - 1000)
    assert cause(*protocol.split_signed(stale)[:5]) == protocol.S_STALE
    assert protocol.split_signed(frame[:-3]) is False
    with pytest.raises(protocol.SignatureError) as caught:
        protocol.split_signed(b"#!sig1 k1 x y 5 abc\nhello")
    assert caught.value.length == 5  # the payload a stream reader refuses with the header
    for header in (b"#!sig1 k1 12 y five abc", b"#!sig1 k1 12 y %d %s" % (protocol.MAX_DATAGRAM_SIZE + 1,
                                                                          b"0" * 64)):
        with pytest.raises(protocol.SignatureError) as caught:
            protocol.split_signed(header + b"\nhello")
        assert caught.value.length is None, header  # no length to go by: its lines are refused
    assert protocol.split_signed(payload) is None


def test_encode_never_writes_non_finite_numbers():
    line = protocol.encode_record(Record(vm="10.0.0.1", ts=NOW, cpu=0.1, mem=100.0, net_rx=1e15))
    assert "nan" not in line and "inf" not in line
    assert math.isclose(decoder().decode_line(line).net_rx, 1e15)


def test_sync_replies_round_trip_and_noise_is_not_a_reply():
    assert protocol.parse_reply(protocol.format_reply(b"a-1", 7, 2).rstrip(b"\n")) == (b"a-1", 7, 2, None)
    nak = protocol.format_reply(b"a-2", refused=protocol.NAK_BUSY)
    assert nak == b"#!nak a-2 busy\n"
    assert protocol.parse_reply(nak.rstrip(b"\n")) == (b"a-2", 0, 0, "busy")
    for noise in (b"", b"#!ack", b"#!ack a-1 7", b"#!ack a-1 x 2", b"#!nak ", b"vmstats,vm=a cpu=1,mem=2 1"):
        assert protocol.parse_reply(noise) is None


def test_an_ack_names_its_rejects_by_reason_only_when_asked_and_reads_either_way():
    """Reasons travel in an ack's fourth field, for a sender that asked (REASONS_REQUEST): a
    sender reading three fields took four for a broken reply.  An ack without them (an older
    server) reads as before, with no reasons."""
    reasons = {protocol.R_PAST: 2, protocol.R_FUTURE: 1, protocol.R_RANGE: 0}
    plain = protocol.format_reply(b"a-1", 4, 3)
    named = protocol.format_reply(b"a-1", 4, 3, reasons=reasons)
    assert plain == b"#!ack a-1 4 3\n"
    assert named == b"#!ack a-1 4 3 future_timestamp=1,past_timestamp=2\n"
    assert protocol.format_reply(b"a-1", 4, 0, reasons={}) == b"#!ack a-1 4 0\n"
    for line in (plain, named):
        assert protocol.parse_reply(line.rstrip(b"\n")) == (b"a-1", 4, 3, None)
    assert protocol.reply_reasons(named.rstrip(b"\n")) == {"past_timestamp": 2, "future_timestamp": 1}
    assert protocol.reply_reasons(plain.rstrip(b"\n")) == {}
    assert protocol.reply_reasons(b"#!ack a-1 4 3 bad_utf8=1,=2,X=3,too_long=x") == {"bad_utf8": 1}
    assert protocol.reply_reasons(b"#!nak a-1 busy") == {}


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(["0", "00", "1", "01", "9", "10", "99", "100", "199", "200",
                                 "249", "250", "255", "256", "260", "300", "999", "1000", ""]),
                min_size=3, max_size=5).map(".".join))
def test_dotted_quads_are_judged_as_the_ipaddress_module_judges_them(text):
    """The canonical-IPv4 shortcut never accepts, or rewrites, what ipaddress would not."""
    try:
        expected = str(ipaddress.ip_address(text))
    except ValueError:
        expected = None
    try:
        got = protocol.normalize_vm_id(text)
    except DecodeError:
        got = None
    if expected is not None:
        assert got == expected
    else:  # not an address: at most a safe name, kept as it is
        assert got is None or got == text


# Pieces of VM ids of every class the grammar (docs/PROTOCOL.md, "VM ids") speaks of, and of
# the near misses around them: zones, dots, case, unicode, separators, lengths.
_id_pieces = st.sampled_from([
    "10.0.0.1", "fe80::1", "FE80::B89", "::ffff:1.2.3.4", "::", "1", "a", "Web", "-", "_", ".",
    "..", ":", "%", "%eth0", "%0", "%..", "%`id`", "%<x>|y", "/", "\\", "\x00", " ", "é", "١",
    "x" * 40])


@settings(max_examples=3000, deadline=None)
@given(st.lists(_id_pieces, min_size=1, max_size=4).map("".join) | st.text(UNICODE, max_size=70))
def test_every_accepted_vm_id_is_a_canonical_fixed_point_and_a_folder_the_logstore_takes(text):
    """Accepted => writable, by construction: the logs' folder for an id is never refused."""
    from vmstats import logstore

    try:
        vm = protocol.normalize_vm_id(text)
    except DecodeError as exc:
        assert exc.reason == protocol.R_BAD_VM
        return
    assert protocol.normalize_vm_id(vm) == vm
    assert 1 <= len(vm) <= protocol.MAX_VM_ID_LENGTH and vm.isascii() and vm.isprintable()
    assert logstore.vm_dir("/data", vm) == "/data/vms/" + vm


@pytest.mark.parametrize("raw, canonical", [
    ("10.0.0.5", "10.0.0.5"),
    ("FE80::0001%eth0", "fe80::1%eth0"),
    ("fe80::1%12", "fe80::1%12"),
    ("::FFFF:1.2.3.4", "::ffff:102:304"),
    ("Web-1.example", "Web-1.example"),
    ("x" * 64, "x" * 64),
])
def test_vm_ids_of_each_class_take_their_canonical_form(raw, canonical):
    assert protocol.normalize_vm_id(raw) == canonical


@pytest.mark.parametrize("raw", [
    "fe80::1%..", "fe80::b89%`id`", "fe80::d2d%<x>|y", "fe80::1%", "fe80::1%a/b", "1.2.3.4%eth0",
    ".", "..", "a..b", "-a", "x" * 65, "wéb", "a b", "a/b", "",
])
def test_vm_ids_outside_the_grammar_are_bad_vm_ids(raw):
    with pytest.raises(DecodeError) as caught:
        protocol.normalize_vm_id(raw)
    assert caught.value.reason == protocol.R_BAD_VM


@pytest.mark.parametrize("stamp", [0, 300, 86_400, 1_000_000, protocol.FIRST_STAMP - 1])
def test_a_stamp_before_2000_is_refused_whatever_the_past_limit(stamp):
    """The server takes no stamp before protocol.FIRST_STAMP (a clock counting from boot, a
    stamp left unset), and accepts exactly what the decoder accepts; a decoder that judges no
    stamp (the agent's spool, the server's own parser) reads the line as any other."""
    line = "vmstats,vm=10.0.0.1 cpu=1,mem=2 %d" % stamp
    for strict in (decoder(), Decoder(max_past=3600, clock=lambda: NOW)):
        with pytest.raises(DecodeError) as caught:
            strict.decode_line(line)
        assert caught.value.reason == protocol.R_PAST
    assert Decoder(max_future=float("inf"), first=0).decode_line(line).ts == stamp
    assert decoder().decode_line(line.replace(" %d" % stamp, " %d" % protocol.FIRST_STAMP)).ts \
        == protocol.FIRST_STAMP
