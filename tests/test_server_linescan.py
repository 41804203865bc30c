"""The C reader of record lines (vmstats/server/_linescan.c) against parse.py's regexes.

The regexes are the reference: a payload the C takes must give exactly their columns, and
every payload they take whole (no decoder, no reject) the C must take too, so the fast path
is the same wherever it runs.  It reads untrusted bytes, so it is held to them on lines
damaged at every place, not only on good ones; bin/test builds it, so these tests fail
rather than skip where it is missing.  test_server_fastpath.py runs every parser test with
and without it.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from test_protocol import NOW
from test_server_fastpath import _counting_decoder, complete, partial, per_vm, regex_parser, spellings

from vmstats import protocol
from vmstats.server import parse
from vmstats.server.parse import Parser, line_spec

native = parse._native
SPEC = None if native is None else native.spec(*line_spec())
#: Spellings at the edges of the field table: tops, typing, precision, tags, a CR line end.
EDGES = [
    b"vmstats,vm=10.0.0.1,host=h1 cpu=1.5,cpu_max=9.5,mem=41.25,disk_r=0,disk_w=5120.5,"
    b"net_rx=812,net_tx=300,vcpus=2i,mem_mb=4096i,seq=17i %d" % NOW,
    b"vmstats,host=web1,vm=10.0.0.2 cpu=100i,cpu_max=100,disk_r=1000000000000000i,disk_w=0.,"
    b"mem=100.00000000000000000,mem_mb=999999999u,net_rx=999999999999999,net_tx=00.5,"
    b"seq=999999999999999999i,vcpus=999 %d123456789" % NOW,
    b"vmstats,vm=web-1.example,zone=eu_1,project=billing,owner=ops mem=2,cpu=0 %d123\r" % NOW,
    b"vmstats,vm=fe80::1%%eth0 cpu=7.25,mem=3 %d123456" % NOW,
]
#: What an edit puts in or over a byte: separators, digits, suffixes, and bytes no line has.
EDIT_BYTES = [b"", b" ", b",", b"=", b"\r", b"\n", b"0", b"1", b"9", b".", b"i", b"u", b"e", b"-",
              b"+", b"a", b"Z", b";", b"%", b"_", b"\x00", b"\xff", b"\xc3\xa9", b"vm=x,",
              "\u0661".encode()]  # a digit to int() and float(), no digit to the protocol


def test_the_c_reader_is_built():
    assert native is not None, ("vmstats.server._linescan was not built: bin/test installs a "
                                "C compiler and Python's headers when missing")


def regexes_counting() -> tuple[Parser, list]:
    """A parser without the C reader, and the list of the lines it hands its decoder."""
    parser = regex_parser()
    return parser, _counting_decoder(parser)


def agrees(payload: bytes, regexes: tuple[Parser, list] | None = None) -> bool:
    """The C reads exactly the lines the regexes take (once they have met its VM ids), with
    their columns, and leaves the others to them; returns whether it read every line.

    A payload the regexes take whole the C reads whole.  Otherwise the lines it read are a
    payload the regexes take whole, to the same columns, and each line it left is one the
    regexes do not take (a reject, or the decoder's)."""
    parser, decoded = regexes or regexes_counting()
    parser.parse(payload, NOW)
    del decoded[:]
    vms, tss, rows, seqs, rejects, _details, _refused = parser.parse(payload, NOW)
    hi, lo = parser._window(NOW)
    scanned = native.scan(payload, SPEC, parser._vm_ids, lo, hi)
    whole = not rejects and not decoded
    if scanned is None:  # more lines left than read: the regexes read it all
        assert not whole, payload
        return False
    *columns, rest = scanned
    # A lone \r (a CRLF sender's blank line) the C hands back, and the regexes skip.
    assert (not [line for line in rest if line != b"\r"]) == whole, payload
    if not rest:  # in order; the regexes' sieve may order VMs by spelling
        assert per_vm(zip(*columns, strict=True)) == per_vm(zip(vms, tss, rows, seqs,
                                                                strict=True)), payload
        return True
    read = [line for line in payload.split(b"\n") if line and line[:1] != b"#"]
    for line in rest:
        read.remove(line)
        del decoded[:]
        assert parser.parse(line, NOW)[4] or decoded or line == b"\r", line
    if read:
        assert agrees(b"\n".join(read), regexes), payload
    return False


def scan_whole(payload: bytes, spec, known: dict, lo: int, hi: int) -> tuple | None:
    """The C's columns of ``payload`` if it read every line, else None."""
    found = native.scan(payload, spec, known, lo, hi)
    return None if found is None or found[4] else found[:4]


def test_the_edge_spellings_are_read_as_the_regexes_read_them():
    assert all(agrees(line) for line in EDGES)
    assert agrees(b"\n".join(EDGES) + b"\n\n")  # several spellings, blank lines, in order
    vms, _tss, rows, _seqs = scan_whole(EDGES[2], SPEC, {b"web-1.example": "web-1.example"},
                                        0, NOW + 1)
    assert rows == [b"0,,2,,,,,,,,,owner=ops;project=billing;zone=eu_1"]


def test_a_line_damaged_at_any_place_is_read_as_the_regexes_read_it_or_left_to_them():
    taken, regexes = 0, regexes_counting()
    for line in EDGES:
        for at in range(len(line) + 1):
            for piece in EDIT_BYTES:
                for damaged in (line[:at] + piece + line[at + 1:], line[:at] + piece + line[at:]):
                    taken += agrees(damaged, regexes)
    assert taken > 1000  # the damage that leaves a valid record (a digit for a digit) is read


def test_what_it_leaves_to_the_regexes():
    """New VM ids, stamps outside the window, and anything not provably valid: each such line
    is handed back whole, the others read; comments are skipped, as the regexes skip them."""
    line = EDGES[0]
    known = {b"10.0.0.1": "10.0.0.1"}
    read = scan_whole(line, SPEC, known, 0, NOW + 300)
    assert read is not None
    assert scan_whole(line, SPEC, {}, 0, NOW + 300) is None
    assert scan_whole(line, SPEC, known, 0, NOW - 1) is None
    assert scan_whole(line, SPEC, known, NOW + 1, NOW + 300) is None
    assert scan_whole(b"# a comment\n" + line + b"\n#!sync x", SPEC, known, 0, NOW + 300) == read
    for other in (b"vmstats,vm=10.0.0.1 cpu=1e2,mem=2 %d" % NOW,
                  b"vmstats,vm=10.0.0.1 cpu=1,mem=2,cpu=1 %d" % NOW,
                  b"vmstats,vm=10.0.0.1,vm=10.0.0.1 cpu=1,mem=2 %d" % NOW,
                  b"vmstats,vm=10.0.0.1 cpu=1 %d" % NOW,
                  b"vmstats,vm=10.0.0.2 cpu=1,mem=2 %d" % NOW,
                  b"vmstats,vm=10.0.0.1 cpu=1,mem=2 %d\r" % (NOW + 301),
                  b"vmstats,vm=10.0.0.1,a=1,b=1,c=1,d=1,e=1,f=1,g=1,h=1,i=1 cpu=1,mem=2 %d" % NOW):
        assert native.scan(b"\n".join([line, other, line]), SPEC, known, 0, NOW + 300) == \
            (*(column * 2 for column in read), [other]), other


def test_a_payload_mostly_left_is_left_whole():
    """More lines left than read (past a margin): the regexes read it all, without a pass that
    copies what the C left (the first payload of new VM ids)."""
    good, bad = EDGES[0], b"vmstats,vm=10.0.0.9 cpu=1,mem=2 %d" % NOW
    known = {b"10.0.0.1": "10.0.0.1"}
    assert native.scan(b"\n".join([good] + [bad] * 9), SPEC, known, 0, NOW + 300)[4] == [bad] * 9
    assert native.scan(b"\n".join([good] + [bad] * 10), SPEC, known, 0, NOW + 300) is None
    assert native.scan(b"\n".join([bad] * 8), SPEC, known, 0, NOW + 300)[4] == [bad] * 8
    assert native.scan(b"\n".join([bad] * 9), SPEC, known, 0, NOW + 300) is None


def test_a_bad_line_among_many_costs_the_regexes_that_line_alone():
    """A parser joins many senders' datagrams: one line of garbage among them is read by the
    regexes and the decoder, and the rest by the C, to the columns the regexes give."""
    good = [protocol.encode_record(protocol.Record(vm="10.0.7.%d" % (i % 50), ts=NOW - i,
                                                   cpu=1.5, mem=2.0, seq=i)).encode()
            for i in range(400)]
    bad = [b"garbage", b"vmstats,vm=10.0.7.99 cpu=x,mem=2 %d" % NOW,
           b"vmstats,vm=10.0.8.1 cpu=1,mem=2 %d" % (NOW + 86400), b"# hello"]
    payload = b"\n".join(good[:100] + bad[:2] + good[100:300] + bad[2:] + good[300:])
    regexes, decoded = regexes_counting()
    vms, tss, rows, seqs, rejects, _details, _refused = regexes.parse(payload, NOW)
    parser = Parser(max_future=300, max_past=0)
    parser.parse(b"\n".join(good), NOW)  # meets the VM ids
    parsed = []
    matched = parser._matched
    parser._matched = lambda data, now: parsed.append(data) or matched(data, now)
    got = parser.parse(payload, NOW)
    assert per_vm(zip(*got[:4], strict=True)) == per_vm(zip(vms, tss, rows, seqs, strict=True))
    assert sorted(got[4]) == sorted(rejects) and sum(count for _r, count in rejects) == 3
    assert parsed == [b"\n".join(bad[:3])]
    # A VM with records on both sides keeps them in order: the regexes read the payload whole.
    twice = b"vmstats,vm=10.0.7.1 cpu=1e0,mem=2,seq=401i %d" % NOW
    del parsed[:]
    got = parser.parse(payload + b"\n" + twice, NOW)
    assert parsed == [b"\n".join(bad[:3] + [twice]), payload + b"\n" + twice]
    assert per_vm(zip(*got[:4], strict=True))["10.0.7.1"][-1][3] == 401


def test_one_vm_in_two_spellings_keeps_its_records_in_order():
    lines = [b"vmstats,vm=10.0.0.1 cpu=1,mem=2,seq=1i %d" % (NOW - 1),
             b"vmstats,vm=10.0.0.1 mem=2,cpu=3,seq=2i %d000" % NOW]
    vms, tss, rows, seqs = scan_whole(b"\n".join(lines), SPEC, {b"10.0.0.1": "10.0.0.1"}, 0,
                                      NOW + 300)
    assert tss == [NOW - 1, NOW] and seqs == [1, 2] and [r[:2] for r in rows] == [b"1,", b"3,"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(spellings(), spellings(partial), complete.map(lambda r: (
    protocol.encode_record(r).encode(), r))), min_size=1, max_size=6))
def test_every_spelling_is_read_as_the_regexes_read_it(batch):
    agrees(b"\n".join(line for line, _record in batch))


def test_its_limits_are_the_protocols():
    """A line at every limit at once (VM id, host, extra tags, tag key and value, fraction) is
    read as the regexes read it, and refused by a reader given any one limit one lower: the
    C holds none of its own."""
    key, value = b"k" * (protocol.MAX_TAG_KEY_LENGTH - 1), b"v" * protocol.MAX_TAG_VALUE_LENGTH
    tags = b",".join(b"%s%c=%s" % (key, letter, value)
                     for letter in b"abcdefgh"[:protocol.MAX_EXTRA_TAGS])
    line = b"vmstats,vm=%s,host=%s,%s cpu=1.%s,mem=2 %d" % (
        b"a" * protocol.MAX_VM_ID_LENGTH, b"h" * protocol.MAX_HOST_LENGTH, tags,
        b"5" * parse._FRACTION_DIGITS, NOW)
    assert agrees(line)
    fields, limits = line_spec()
    known = {b"a" * protocol.MAX_VM_ID_LENGTH: "a"}
    for at in range(len(limits)):
        narrowed = limits[:at] + (limits[at] - 1,) + limits[at + 1:]
        assert scan_whole(line, native.spec(fields, narrowed), known, 0, NOW + 1) is None, at
