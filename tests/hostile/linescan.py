"""Record lines for _linescan.c: every spelling damaged, cut, stretched past every limit.

parse.py's regexes are the reference, through test_server_linescan's ``agrees``: they cost
two hundred times the scans, so this runs in the ordinary Python and the sanitized build
makes its calls again (driver.RECORDED).
"""

import random

import test_server_linescan as reference
from test_protocol import NOW

from vmstats import protocol
from vmstats.server import parse
from vmstats.server.parse import line_spec

native = parse._native
SPEC = native.spec(*line_spec())
KNOWN = {b"10.0.0.1": "10.0.0.1", b"a" * protocol.MAX_VM_ID_LENGTH: "a"}
LINE = b"vmstats,vm=10.0.0.1 cpu=1.5,mem=2 %d" % NOW


def sound(payload: bytes, regexes: tuple) -> None:
    """What the C reads is what the regexes read, and it leaves them the rest (``agrees``)."""
    reference.agrees(payload, regexes)


def overlong() -> list[bytes]:
    """Lines with a part far past its limit, or a count of parts past the reader's room."""
    many_tags = b",".join(b"t%d=v" % i for i in range(200))
    many_fields = b",".join(b"cpu=1" for _ in range(200))
    return [
        b"vmstats,vm=%s cpu=1,mem=2 %d" % (b"a" * 100_000, NOW),
        b"vmstats,vm=10.0.0.1,host=%s cpu=1,mem=2 %d" % (b"h" * 70_000, NOW),
        b"vmstats,vm=10.0.0.1,%s cpu=1,mem=2 %d" % (many_tags, NOW),
        b"vmstats,vm=10.0.0.1 %s,mem=2 %d" % (many_fields, NOW),
        b"vmstats,vm=10.0.0.1 cpu=%s,mem=2 %d" % (b"1" * 100_000, NOW),
        b"vmstats,vm=10.0.0.1 cpu=1.%s,mem=2 %d" % (b"5" * 100_000, NOW),
        b"vmstats,vm=10.0.0.1 cpu=1,mem=2,seq=%si %d" % (b"9" * 40, NOW),
        b"vmstats,vm=10.0.0.1 cpu=1,mem=2,seq=%s %d" % (b"9" * 40, NOW),
        b"vmstats,vm=10.0.0.1 cpu=1,mem=2 %s" % (b"1" * 100_000),
        b"vmstats,%s=1 cpu=1,mem=2 %d" % (b"k" * 100_000, NOW),
        b"vmstats,vm=10.0.0.1 %s=1,mem=2 %d" % (b"f" * 100_000, NOW),
        LINE * 1000,
        b"\n".join([LINE] * 5000),
    ]


def odd_bytes() -> list[bytes]:
    """NULs, CRs, bad UTF-8 and separators where a line ends or a part does."""
    out = [b"", b"\n", b"\r", b"\r\n", b"\0", b"vmstats,", b"vmstats, ", b"vmstats,vm=",
           b"vmstats,vm=10.0.0.1", b"vmstats,vm=10.0.0.1 ", b"vmstats,vm=10.0.0.1 cpu=",
           b"vmstats,vm=10.0.0.1 cpu=1,mem=2 ", b"vmstats,vm=10.0.0.1 cpu=1,mem=2 \r"]
    for piece in (b"\0", b"\r", b"\xff", b"\xc3", b"\xed\xa0\x80", b"=", b",", b" ", b"i", b"u"):
        out += [LINE + piece, piece + LINE, LINE.replace(b" ", piece, 1), LINE.replace(b"=", piece)]
    for digits in range(1, 25):  # stamps of every length
        out.append(b"vmstats,vm=10.0.0.1 cpu=1,mem=2 %s" % (b"1" + b"7" * (digits - 1)))
    return out


def hostile_specs() -> int:
    """spec() at the edges of the reader's room, and scans with each: no more than it holds."""
    fields, limits = line_spec()
    count = 0
    long_name = (b"n" * 31,) + fields[0][1:]
    wide = (10**6, 10**6, 32, 10**6, 10**6, 10**6)
    for table, widths in (((long_name,) * 32, limits), (fields, (0, 0, 0, 0, 0, 0)),
                          (fields, (-1, -5, 32, -1, -1, -1)), (fields, wide)):
        spec = native.spec(table, widths)
        for line in [LINE] + reference.EDGES + odd_bytes():
            native.scan(line, spec, KNOWN, -(2**63), 2**63 - 1)
            count += 1
    for table, widths in (((long_name,) * 33, limits), ((fields[0],) + ((b"n" * 32,) + fields[0][1:],),
                          limits), (fields, limits[:2] + (33,) + limits[3:]),
                          (fields, limits[:2] + (-1,) + limits[3:])):
        try:
            native.spec(table, widths)
        except ValueError:
            count += 1
        else:
            raise AssertionError(widths)
    return count


def run() -> int:
    rng = random.Random(2)
    reference.test_the_edge_spellings_are_read_as_the_regexes_read_them()
    reference.test_what_it_leaves_to_the_regexes()
    reference.test_its_limits_are_the_protocols()
    reference.test_a_line_damaged_at_any_place_is_read_as_the_regexes_read_it_or_left_to_them()
    regexes = reference.regexes_counting()
    count = 0
    payload = b"\n".join(reference.EDGES)
    for cut in range(len(payload) + 1):  # every prefix of valid input
        sound(payload[:cut], regexes)
        count += 1
    for line in overlong() + odd_bytes():
        sound(line, regexes)
        for lo, hi in ((-(2**63), 2**63 - 1), (2**63 - 1, -(2**63)), (0, 0)):
            native.scan(line, SPEC, KNOWN, lo, hi)
        count += 4
    alphabet = list(b"vmstats,=. 0123456789iu\r\n\0\xff-_:%abcdefhmpq")
    for _ in range(1500):  # random bytes, bytes of the grammar, and random splices
        sound(rng.randbytes(rng.randrange(200)), regexes)
        sound(bytes(rng.choices(alphabet, k=rng.randrange(200))), regexes)
        line = rng.choice(reference.EDGES)
        at = rng.randrange(len(line) + 1)
        sound(line[:at] + rng.randbytes(rng.randrange(1, 5)) + line[at + 1:], regexes)
        count += 3
    return count + hostile_specs()
