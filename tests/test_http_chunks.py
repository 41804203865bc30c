"""A chunked write body must carry its data in chunks of some size: past its first 1,024 chunks,
64 bytes of data a chunk on average, or it is refused (400, ``chunk_overhead``).

Each chunk costs the reactor its decoding, whatever it carries: in Twisted's decoder (~1.8 us a
chunk) a 25 MiB body sent in one-byte chunks held the reactor for ~45 s while every other client
waited.
"""

import socket

from serverproc import LOOPBACK, serve
from test_http_bodies import read_answer, status_and_json
from test_http_bodies_in_flight import REFUSED, USED, lines, write_head


def framed(data: bytes, pieces: list[bytes] | None = None, size: int = 1) -> bytes:
    """``data`` as a chunked body: in ``pieces`` if given, else in chunks of ``size`` bytes."""
    pieces = pieces or [data[at:at + size] for at in range(0, len(data), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def test_a_body_of_one_byte_chunks_is_refused_and_a_chunk_a_line_is_taken(tmp_path):
    """64 KiB of lines in one-byte chunks is answered 400 (counted as chunk_overhead) and none
    of it taken; the same lines a chunk each (over 1,024 chunks, ~70 bytes each) land whole."""
    data = lines(1000, "ck")
    assert 64 < len(data) / 1000 < 128
    with serve(tmp_path, "--influx-port", "0") as server:
        with socket.create_connection((LOOPBACK, server.http_port), timeout=5) as sock:
            sock.sendall(write_head(None) + framed(data, size=1))
            code, headers, error = status_and_json(read_answer(sock, 3))
        assert (code, headers["connection"]) == (400, "close"), error
        assert "chunks must carry 64 bytes on average" in error["error"], error
        with socket.create_connection((LOOPBACK, server.http_port), timeout=5) as sock:
            body = lines(1200, "ln")
            sock.sendall(write_head(None) + framed(body, body.splitlines(keepends=True)))
            assert read_answer(sock, 3).startswith(b"HTTP/1.1 204 ")
        metrics = server.wait_metrics(lambda m: m.get(USED, 0) >= 1200, timeout=3)
        assert (metrics[REFUSED % "chunk_overhead"], metrics[USED]) == (1, 1200)
