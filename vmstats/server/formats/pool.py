"""Other formats' payloads decoded in worker processes, filed in the order they arrived.

Decoding (bytes to samples) needs no state but the decoder's settings, so it
runs on the other cores, as the native parsers do; turning counters into
rates and assembling minutes needs each VM's state, so it stays in the
reactor and takes the results in arrival order (a counter's samples must meet
the rate state in the order they were sent).  When the workers are busy or
gone, the reactor decodes the payload itself: nothing waits without bound.
A worker that dies breaks the executor: it is replaced a second later. One
that keeps the oldest payload for ``--parser-timeout`` seconds (stopped,
swapped out, looping) has its executor killed and replaced, and what was
waiting for it is decoded here, in turn.

A payload its decoder reads in C (``Decoder.quick``: Telegraf's lines) is read
in the reactor, in turn with the others: making its samples there costs less
than taking them from a worker (pickled there, unpickled here by the executor's
thread, which holds the reactor's GIL meanwhile).
"""

import logging
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context

from twisted.internet import defer

from vmstats.server import executors, lifeline
from vmstats.server.every import Every
from vmstats.server.formats import R_SYNTAX, Decoder, Tally
from vmstats.server.idle import IdleWaiters
from vmstats.words import counted

log = logging.getLogger(__name__)

#: Payloads handed to the workers and not yet filed, beyond which the reactor decodes itself.
MAX_PENDING = 32
#: Seconds between the watchdog's looks at the oldest payload, and before a broken executor
#: (a worker died) is replaced: a crash loop costs little.
WATCH_INTERVAL = 1.0
RESTART_DELAY = 1.0

#: The decoders of this worker process, by format name (set once, when the process starts).
_WORKER_DECODERS: dict[str, Decoder] = {}


def _start_worker(decoders: dict[str, Decoder], aggregator: int) -> None:
    """Executor initializer: the decoders, and this worker's end with the aggregator (process
    id ``aggregator``), whose death it would never see otherwise (vmstats/server/lifeline.py)."""
    _WORKER_DECODERS.update(decoders)
    lifeline.end_with(aggregator)


def _decode(name: str, data: bytes, now: float) -> tuple[list, dict, list, list]:
    """In a worker: ``(samples as plain tuples, outcome counts, reject details, lines)``."""
    tally = Tally()
    lines: list = []
    samples = _WORKER_DECODERS[name].decode(data, now, tally, lines=lines)
    return [tuple(sample) for sample in samples], dict(tally.counts), tally.details, lines


def _decode_here(decoder: Decoder, data: bytes, now: float) -> tuple[list, Tally, list]:
    """``_decode``'s result, decoded in the reactor.

    A decoder that raises (a bug its input found) costs that payload, counted as one
    ``syntax`` reject, and never the port: left undecoded, the payload would hold every one
    behind it in the queue, and the server's stop, for good."""
    tally = Tally()
    lines: list = []
    try:
        return decoder.decode(data, now, tally, lines=lines), tally, lines
    except Exception as exc:
        log.exception("a %s payload of %d bytes could not be decoded: counted as syntax",
                      decoder.name, len(data))
        tally = Tally()  # what it counted before it failed goes with its samples
        tally.reject(R_SYNTAX, "%s payload could not be decoded (%s)" % (decoder.name,
                                                                        type(exc).__name__))
        return [], tally, []


class DecodePool:
    """Worker processes for the edge's decoders; ``submit`` keeps the arrival order."""

    def __init__(self, reactor, edge, decoders: dict[str, Decoder], workers: int,
                 timeout: float = 10.0):
        self.reactor = reactor
        self.edge = edge
        self.decoders = decoders
        self.workers = workers
        #: Seconds the oldest payload may wait for a worker before its executor is replaced.
        self.timeout = timeout
        self.executor: ProcessPoolExecutor | None = None
        #: [decoder, now, (samples, tally, lines) or None, payload, executor or None, handed],
        #: oldest first (the payload is journaled; ``lines`` let the edge count a line the
        #: minutes refuse once; ``executor`` and ``handed``, the reactor's time, say where and
        #: since when a worker has it).
        self.queue: deque[list] = deque()
        self._idle = IdleWaiters()
        self._watchdog = Every(reactor, WATCH_INTERVAL, self._watch, "the decoding processes' watchdog")
        self._restart = None
        #: The manager threads of the executors ended so far, joined at the stop (``join``).
        self._ended: list = []

    def start(self) -> None:
        if self.workers > 0 and self.decoders:
            self._start_executor()
            self._watchdog.start()

    def _start_executor(self) -> None:
        self._restart = None
        self.executor = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"),
                                            initializer=_start_worker,
                                            initargs=(self.decoders, os.getpid()))

    def submit(self, decoder: Decoder, data: bytes) -> None:
        """Decode ``data`` in a worker if one has room (else here) and file it in turn."""
        now = self.edge.clock()
        decoded = decoder.quick(data, now)
        if decoded is not None:
            entry = [decoder, now, decoded, data, None, 0.0]
            if self.queue:
                self.queue.append(entry)  # filed once the payloads before it are
            else:
                self.edge.file(decoder.name, decoded[0], decoded[1], now, decoded[2], data)
            return
        if self.executor is None or len(self.queue) >= MAX_PENDING:
            if not self.queue:
                self.edge.feed(decoder, data)
                return
            self.queue.append([decoder, now, _decode_here(decoder, data, now), data, None, 0.0])
            return
        executor = self.executor
        entry = [decoder, now, None, data, executor, self.reactor.seconds()]
        self.queue.append(entry)
        try:
            future = executor.submit(_decode, decoder.name, data, now)
        except RuntimeError:  # the pool is shutting down or broken: decode here
            entry[2] = _decode_here(decoder, data, now)
            self._broken(executor)
            self._drain()
            return
        future.add_done_callback(
            lambda done: self.reactor.callFromThread(self._decoded, entry, data, done))

    def _decoded(self, entry: list, data: bytes, future) -> None:
        if entry[2] is not None:  # decoded here already: its worker was stuck
            return
        try:
            samples, counts, details, lines = future.result()
            tally = Tally()
            tally.counts.update(counts)
            tally.details.extend(details)
            entry[2] = (samples, tally, lines)
        except Exception as exc:  # a worker died: decode here, lose nothing
            log.warning("decoding worker failed (%s): decoding in the reactor", exc)
            entry[2] = _decode_here(entry[0], data, entry[1])
            if isinstance(exc, BrokenProcessPool):
                self._broken(entry[4])
        self._drain()

    def _broken(self, executor: ProcessPoolExecutor | None) -> None:
        """Replace ``executor`` (a worker of it died) in RESTART_DELAY, if it is still ours."""
        if executor is None or executor is not self.executor:
            return
        self.edge.metrics.parser_deaths += 1
        self.executor = None
        self._ended.append(executors.end(executor, cancel=True))
        log.error("a decoding process died; starting new ones in %.0fs", RESTART_DELAY)
        self._restart = self.reactor.callLater(RESTART_DELAY, self._start_executor)

    def _watch(self) -> None:
        """Decode here what waits behind a worker that has kept the oldest payload too long."""
        queue = self.queue
        if not queue or queue[0][2] is not None or queue[0][4] is None:
            return
        waited = self.reactor.seconds() - queue[0][5]
        if waited <= self.timeout:
            return
        stuck = queue[0][4]
        held = [entry for entry in queue if entry[2] is None]
        self.edge.metrics.parser_stalls += 1
        log.error("a decoding process answered nothing for %.0fs with %s waiting: "
                  "stopping its pool (the reactor decodes them)", waited, counted(len(held), "payload"))
        for entry in held:
            entry[2] = _decode_here(entry[0], entry[3], entry[1])
        self._ended.append(executors.kill(stuck))
        if stuck is self.executor:  # not one a death already replaced
            self._start_executor()
        self._drain()

    def _drain(self) -> None:
        queue = self.queue
        while queue and queue[0][2] is not None:
            decoder, now, (samples, tally, lines), data, _executor, _handed = queue.popleft()
            self.edge.file(decoder.name, samples, tally, now, lines, data)
        if not queue:
            self._idle.fire()

    def idle(self) -> defer.Deferred:
        """Fires once everything submitted is filed."""
        return self._idle.wait(bool(self.queue))

    def stop(self) -> None:
        """After ``idle``: nothing is waiting, so the workers are killed rather than awaited (a
        stuck one would hold the process's exit)."""
        self._watchdog.stop()
        if self._restart is not None and self._restart.active():
            self._restart.cancel()
        executor, self.executor = self.executor, None
        if executor is not None:
            self._ended.append(executors.kill(executor))

    def join(self) -> None:
        """Once the reactor has stopped: wait for the ended executors' threads (executors.join)."""
        ended, self._ended = self._ended, []
        executors.join(ended)

