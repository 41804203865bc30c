"""The decoder of a chunked request body (RFC 9112, 7.1), for the HTTP port.

It replaces Twisted's decoder, a private class (``twisted.web.http._ChunkedTransferDecoder``)
that Twisted has reshaped again and again (its buffer and a size line limit in 2021, trailers
read rather than refused in 2023, then bounded) and may drop in any release: subclassed, it tied
the server, which takes any Twisted from 23.8 on, to one release's internals.  A state method
looked up by name, a buffer cut at every step and a store of the body per chunk cost the reactor
~2 us a 64-byte chunk beyond its lines' parsing; here a read's chunks are decoded in one loop and
their data stored in one call, ~0.7 us (BENCHMARKS.md, "HTTP writes").

What it takes is what RFC 9112's grammar allows, no more (a proxy in front frames a body as the
RFC does, so the two never disagree on where a body ends): a size of hex digits only (no sign,
``0x``, ``_`` or space around it, which ``int(x, 16)`` would take) but for spaces and tabs before
an extension's ``;`` (``1a ;x=y``: the grammar's BWS, which Twisted's refused), extensions of
visible characters, tabs and spaces, ignored; every chunk's data followed by CRLF exactly; lines
ended by CRLF, never by a bare LF or CR (refused as soon as one is seen, not waited on); trailer
fields read and dropped.  What it bounds: a size line (extensions included) to
``SIZE_LINE_LIMIT``, the trailer section to ``TRAILER_LIMIT``, the body's bytes on the wire
(framing included, not its data alone) to the route's limit, and the chunks to what their data
is worth (``CHUNKS_FREE``, ``CHUNK_AVERAGE``).
"""

from collections.abc import Callable

#: Longest chunk size line, extensions and CRLF included (Twisted's ``maxChunkSizeLineLength``):
#: a size needs a few bytes, extensions are ignored, and a longer line is only bytes to scan.
SIZE_LINE_LIMIT = 1024
#: Largest trailer section, its final CRLF included: the head's own limit (16 KiB).  Twisted's
#: is 64 KiB; trailers are dropped here, and no client of the write API sends any.
TRAILER_LIMIT = 16 << 10
#: A chunked body's chunks past its first CHUNKS_FREE must carry CHUNK_AVERAGE bytes of data
#: each on average, or it is refused (400, ``chunk_overhead``): each chunk costs the reactor its
#: decoding whatever it carries, so a body of one-byte chunks cost ~225 times a plain body's
#: parsing in Twisted's decoder, 45 s for 25 MiB.  At 64 bytes a chunk a line a chunk passes.
CHUNKS_FREE = 1024
CHUNK_AVERAGE = 64

_HEX_DIGITS = b"0123456789abcdefABCDEF"
#: What a chunk extension may hold (RFC 9112's chunk-ext: tokens, quoted strings, "=", ";",
#: whitespace around them): HTAB, SP, visible ASCII and obs-text; no other control byte.
_EXTENSION_BYTES = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
#: What a trailer line may not hold: a bare LF or CR would end it for one reader and not for
#: another, and NUL no field value may hold (RFC 9110, 5.5).
_NOT_IN_TRAILER = b"\r\n\x00"

_SIZE, _DATA, _CRLF, _TRAILER, _DONE = range(5)


class ChunkedBody:
    """Decodes one chunked body as its reads arrive (``dataReceived``, as Twisted's channel
    calls its decoders): the data of each read's chunks to ``deliver`` in one call, the bytes
    after the body's end to ``finish``, or a refusal to ``refuse(reason, message)`` -- reason
    ``bad_request`` (malformed framing), ``chunk_overhead`` or ``too_large`` (past ``limit``
    bytes on the wire) -- after which it reads nothing more."""

    __slots__ = ("deliver", "finish", "refuse", "limit", "chunks", "data", "wire", "_state",
                 "_left", "_pending", "_allowed", "_trailers")

    def __init__(self, deliver: Callable[[bytes], object], finish: Callable[[bytes], object],
                 refuse: Callable[[str, str], object], limit: int) -> None:
        self.deliver = deliver
        self.finish = finish
        self.refuse = refuse
        #: Largest body on the wire, chunk framing included.
        self.limit = limit
        #: Chunks read, the last (empty) one included, and the data their sizes announced.
        self.chunks = self.data = 0
        #: Bytes of the body read and decoded, framing included (not those still pending).
        self.wire = 0
        self._state = _SIZE
        self._left = 0  # bytes of the current chunk's data still to come
        self._pending = b""  # an unfinished line (or CRLF) from the last read
        self._allowed = CHUNKS_FREE  # chunks allowed for the data announced when last checked
        self._trailers = 0  # bytes of the trailer section read

    def dataReceived(self, data: bytes) -> None:
        """Decode the next bytes of the body (and any after its end, handed to ``finish``)."""
        state = self._state
        if state == _DONE:
            return
        if self._pending:
            data = self._pending + data
            self._pending = b""
        view = memoryview(data)
        pieces: list = []
        at = 0
        end = len(data)
        left = self._left
        chunks = self.chunks
        room = self.limit - self.wire  # the body's bytes on the wire still allowed, from data[0]
        while at < end:
            if state == _DATA:
                if end - at < left:
                    pieces.append(view[at:])
                    left -= end - at
                    at = end
                    break
                pieces.append(view[at:at + left])
                at += left
                left = 0
                state = _CRLF
            if state == _CRLF:
                if not data.startswith(b"\r\n", at):
                    if end - at == 1 and data[at] == 13:  # the LF is in the next read
                        self._pending = data[at:]
                        at = end
                        break
                    if at < end:
                        return self._malformed("a chunk's data is not followed by CRLF")
                    break
                at += 2
                state = _SIZE
                if at == end:
                    break
            if state == _SIZE:
                eol = data.find(b"\r\n", at, at + SIZE_LINE_LIMIT)
                if eol < 0:
                    return self._unfinished(data, at, SIZE_LINE_LIMIT, "a chunk size line",
                                            pieces, chunks, left, state)
                line = data[at:eol]
                semicolon = line.find(b";")
                # Spaces and tabs may stand before an extension's ";" (RFC 9112, 7.1.1: BWS),
                # nowhere else around the size: only a line with an extension pays for them.
                digits = line if semicolon < 0 else line[:semicolon].rstrip(b" \t")
                if not digits or digits.translate(None, _HEX_DIGITS):
                    return self._malformed("chunk size %r is not hexadecimal digits"
                                           % digits[:40].decode("latin-1"))
                if semicolon >= 0 and line[semicolon + 1:].translate(None, _EXTENSION_BYTES):
                    return self._malformed("a chunk extension holds a control character")
                size = int(digits, 16)
                at = eol + 2
                chunks += 1
                if not size:
                    state = _TRAILER
                    continue
                if at + size + 2 > room:  # its data and CRLF cannot fit
                    return self._refuse("too_large", "")
                self.data += size
                if chunks > self._allowed:
                    self._allowed = CHUNKS_FREE + self.data // CHUNK_AVERAGE
                    if chunks > self._allowed:
                        return self._refuse(
                            "chunk_overhead",
                            "chunked body of %d chunks for %d bytes: past the first %d, chunks "
                            "must carry %d bytes on average (send larger chunks, or a "
                            "Content-Length)" % (chunks, self.data, CHUNKS_FREE, CHUNK_AVERAGE))
                left = size
                state = _DATA
                continue
            # _TRAILER: field lines, then the CRLF that ends the body.
            trailer_room = TRAILER_LIMIT - self._trailers
            eol = data.find(b"\r\n", at, at + trailer_room)
            if eol < 0:
                return self._unfinished(data, at, trailer_room, "the trailer section", pieces, chunks,
                                        left, state)
            if eol > at:
                field = data[at:eol]
                if b":" not in field or field.translate(None, _NOT_IN_TRAILER) != field:
                    return self._malformed("a trailer field is not a field line")
                self._trailers += eol + 2 - at
                at = eol + 2
                continue
            at += 2
            if at > room:
                return self._refuse("too_large", "")
            self._state = _DONE
            self.chunks = chunks
            self.wire += at
            if pieces:
                self.deliver(b"".join(pieces))
            self.finish(data[at:])
            return None
        self._state = state
        self._left = left
        self.chunks = chunks
        self.wire += at - len(self._pending)
        if pieces:
            self.deliver(b"".join(pieces) if len(pieces) > 1 else pieces[0].tobytes())
        return None

    def _unfinished(self, data: bytes, at: int, room: int, what: str, pieces: list,
                    chunks: int, left: int, state: int) -> None:
        """A line not ended in this read: kept for the next, unless it is already too long or
        ends in a bare LF or CR, which no later byte can mend."""
        rest = data[at:]
        if len(rest) >= room:
            limit = SIZE_LINE_LIMIT if state == _SIZE else TRAILER_LIMIT
            return self._malformed("%s is longer than %d bytes" % (what, limit))
        if b"\n" in rest or b"\r" in rest[:-1]:
            return self._malformed("%s ends in a bare LF or CR, not CRLF (\\r\\n)" % what)
        self._state = state
        self._left = left
        self.chunks = chunks
        self._pending = rest
        self.wire += at
        if pieces:
            self.deliver(b"".join(pieces))
        return None

    def _malformed(self, why: str) -> None:
        self._refuse("bad_request", "malformed request: chunked body: " + why)

    def _refuse(self, reason: str, message: str) -> None:
        """Refuse the body, and read nothing more of it (the rest of a read full of one-byte
        chunks is not worth decoding to drop)."""
        self._state = _DONE
        self.refuse(reason, message)
