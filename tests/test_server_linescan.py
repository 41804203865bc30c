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
    """The C takes ``payload`` exactly when the regexes take it whole (once they have met its
    VM ids), with their columns; returns whether it took it."""
    parser, decoded = regexes or regexes_counting()
    parser.parse(payload, NOW)
    del decoded[:]
    vms, tss, rows, seqs, rejects, _details = parser.parse(payload, NOW)
    hi, lo = parser._window(NOW)
    scanned = native.scan(payload, SPEC, parser._vm_ids, lo, hi)
    whole = not rejects and not decoded
    assert (scanned is not None) == whole, payload
    if scanned is not None:  # in order; the regexes' sieve may order VMs by spelling
        assert per_vm(zip(*scanned, strict=True)) == per_vm(zip(vms, tss, rows, seqs,
                                                                 strict=True)), payload
    return scanned is not None


def test_the_edge_spellings_are_read_as_the_regexes_read_them():
    assert all(agrees(line) for line in EDGES)
    assert agrees(b"\n".join(EDGES) + b"\n\n")  # several spellings, blank lines, in order
    vms, _tss, rows, _seqs = native.scan(EDGES[2], SPEC, {b"web-1.example": "web-1.example"},
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
    """New VM ids, stamps outside the window, and anything not provably valid: None."""
    line = EDGES[0]
    known = {b"10.0.0.1": "10.0.0.1"}
    assert native.scan(line, SPEC, known, 0, NOW + 300) is not None
    assert native.scan(line, SPEC, {}, 0, NOW + 300) is None
    assert native.scan(line, SPEC, known, 0, NOW - 1) is None
    assert native.scan(line, SPEC, known, NOW + 1, NOW + 300) is None
    for other in (b"# a comment", b"vmstats,vm=10.0.0.1 cpu=1e2,mem=2 %d" % NOW,
                  b"vmstats,vm=10.0.0.1 cpu=1,mem=2,cpu=1 %d" % NOW,
                  b"vmstats,vm=10.0.0.1,vm=10.0.0.1 cpu=1,mem=2 %d" % NOW,
                  b"vmstats,vm=10.0.0.1 cpu=1 %d" % NOW,
                  b"vmstats,vm=10.0.0.1,a=1,b=1,c=1,d=1,e=1,f=1,g=1,h=1,i=1 cpu=1,mem=2 %d" % NOW):
        assert native.scan(line + b"\n" + other, SPEC, known, 0, NOW + 300) is None, other


def test_one_vm_in_two_spellings_keeps_its_records_in_order():
    lines = [b"vmstats,vm=10.0.0.1 cpu=1,mem=2,seq=1i %d" % (NOW - 1),
             b"vmstats,vm=10.0.0.1 mem=2,cpu=3,seq=2i %d000" % NOW]
    vms, tss, rows, seqs = native.scan(b"\n".join(lines), SPEC, {b"10.0.0.1": "10.0.0.1"}, 0,
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
        assert native.scan(line, native.spec(fields, narrowed), known, 0, NOW + 1) is None, at
