"""Parse cost per record of the agent's lines, without and with extra tags.

    .venv/bin/python bench/parsetags.py                 # this tree
    # another checkout's code on the same lines (-S: not this tree's editable install)
    PYTHONPATH=OTHER_TREE:.venv/lib/python3.11/site-packages .venv/bin/python -S bench/parsetags.py

Extra tags (``project=...``) must not slow the records that have none: those
are the agent's exact spelling, which the server's compact regex parses for a
whole payload at once.  Lines with extra tags are another spelling, with a
regex of its own (``parse.build_shape``, cached per spelling); a payload that
mixes spellings is sieved by each one's regex in turn (``Parser._mixed``).
This times ``server.parse.Parser.parse`` on payloads of 10 agent lines (what a
parser process gathers in its 2 ms window at a modest rate; ``--lines`` for
more) of 1,000 VMs: untagged, all with three extra tags, and one line in ten
tagged (a fleet where some VMs have tags) -- with an untagged line first, as 9
in 10 such payloads begin, and with a tagged one first -- best of several
rounds, in microseconds per record.  On a tree without tags the tagged lines
are rejected (counted, not timed as records).
"""

import argparse
import time

from vmstats import protocol
from vmstats.server.parse import Parser

NOW = 1767225600
#: Extra tags as the agent writes them after ``host``, spelled out so an older tree parses the same bytes.
TAGS = b",env=prod,owner=ops,project=billing"


def payloads(tagged: int, vms: int = 1000, per_payload: int = 10, first: int = 0) -> list[bytes]:
    """Payloads of ``per_payload`` lines, of which every ``tagged``-th carries extra tags (0:
    none), from the ``first``-th on."""
    lines = []
    for k in range(vms):
        record = protocol.Record(
            vm="10.1.%d.%d" % (k // 250, k % 250 + 1),
            ts=NOW - 60,
            cpu=3.25 + k % 50,
            cpu_max=9.5,
            mem=41.0,
            disk_r=0.0,
            disk_w=5120.0,
            net_rx=812.5,
            net_tx=300.0,
            vcpus=2,
            mem_mb=4096,
            seq=k,
            host="hv%d" % (k % 7),
        )
        line = protocol.encode_record(record).encode()
        if tagged and k % tagged == first:
            head, space, rest = line.partition(b" ")
            line = head + TAGS + space + rest
        lines.append(line)
    return [b"\n".join(lines[i : i + per_payload]) for i in range(0, len(lines), per_payload)]


def per_record(data: list[bytes], rounds: int) -> tuple[float, int]:
    """Best microseconds per accepted record over ``rounds`` passes of a warmed parser."""
    parser = Parser(max_future=300, max_past=0)
    accepted = sum(len(parser.parse(p, NOW)[0]) for p in data)  # warm: VM ids known
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for payload in data:
            parser.parse(payload, NOW)
        best = min(best, time.perf_counter() - started)
    return best / max(accepted, 1) * 1e6, accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--lines", type=int, default=10,
                        help="lines a payload (a parser joins more of them the higher the rate)")
    args = parser.parse_args()
    plain, plain_n = per_record(payloads(0, per_payload=args.lines), args.rounds)
    tagged, tagged_n = per_record(payloads(1, per_payload=args.lines), args.rounds)
    mixed, mixed_n = per_record(payloads(10, per_payload=args.lines, first=5), args.rounds)
    led, led_n = per_record(payloads(10, per_payload=args.lines), args.rounds)
    print("untagged lines: %.2f us per record (%d records)" % (plain, plain_n))
    if tagged_n:
        for name, value, count in (
            ("tagged lines:  ", tagged, tagged_n),
            ("1 in 10 tagged:", mixed, mixed_n),
            ("1 in 10, tagged first:", led, led_n),
        ):
            print("%s %.2f us per record (%d records), %.1fx untagged" % (name, value, count, value / plain))
    else:
        print("tagged lines:   all rejected (this tree has no extra tags)")


if __name__ == "__main__":
    main()
