"""A parser process: framed payloads in on stdin, ``Parsed`` columns out on stdout.

Started and fed by ``parsers.ParserService``; this module holds the framing both sides use
and imports nothing heavier than the parser.  It ignores SIGINT and SIGTERM:
the aggregator still needs it while it drains after a signal, and it exits
when its stdin closes (the aggregator is done, or died).
"""

import marshal
import signal
import struct
import sys

from vmstats.server.parse import Parser

#: Request: sequence number, the reactor's time (for the timestamp window), payload length.
REQUEST = struct.Struct("!QdI")
#: Reply: sequence number, length of the marshal data (0: the parser failed on this payload).
REPLY = struct.Struct("!QI")


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parser = Parser(max_future=int(argv[0]), max_past=int(argv[1]))
    read = sys.stdin.buffer.read
    out = sys.stdout.buffer
    while True:
        header = read(REQUEST.size)
        if len(header) < REQUEST.size:
            return 0
        seq, now, length = REQUEST.unpack(header)
        data = read(length)
        if len(data) < length:
            return 0
        try:
            reply = marshal.dumps(parser.parse(data, now))
        except Exception as exc:  # a bug, not bad input (the parser rejects that): say, go on
            print("payload %d: %r" % (seq, exc), file=sys.stderr, flush=True)
            reply = b""
        out.write(REPLY.pack(seq, len(reply)))
        out.write(reply)
        out.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
