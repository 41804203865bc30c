"""Counters of everything the aggregator did, rendered for /metrics, /status and the summary.

One instance per server (no module-level state); the receive path only
increments integers, the rendering happens when someone asks.
"""

import logging
import time
from collections import Counter

from vmstats import protocol
from vmstats.words import plural

_PREFIX = "vmstats_"


class RateLimitedLog:
    """Logs at most ``burst`` messages per ``period`` seconds, then says how many it skipped.

    A flood of malformed input must not turn into a flood of log lines that
    stalls the reactor or fills the disk.
    """

    def __init__(self, logger: logging.Logger, what: str, burst: int = 10, period: float = 10.0,
                 level: int = logging.WARNING):
        self.logger = logger
        self.what = what
        self.level = level
        self.burst = burst
        self.period = period
        self.window_start = 0.0
        self.emitted = 0
        self.suppressed = 0

    def emit(self, message: str, *args) -> None:
        now = time.monotonic()
        if now - self.window_start >= self.period:
            if self.suppressed:
                self.logger.log(self.level, "%d more %s %s suppressed", self.suppressed,
                                self.what, plural(self.suppressed, "message"))
            self.window_start = now
            self.emitted = 0
            self.suppressed = 0
        if self.emitted < self.burst:
            self.emitted += 1
            self.logger.log(self.level, message, *args)
        else:
            self.suppressed += 1


class ConnectionCounts:
    """What one port's connection table did (connections.py)."""

    __slots__ = ("accepted", "evicted_per_source", "evicted_full", "idle_closed", "not_allowed",
                 "open", "requests_refused")

    def __init__(self) -> None:
        self.accepted = self.evicted_per_source = self.evicted_full = 0
        self.idle_closed = self.not_allowed = 0
        #: HTTP requests refused at the headers or mid-body, by reason (http.py's channel).
        self.requests_refused: dict[str, int] = {}
        #: How many are open now: set by the owner of the table (a read function).
        self.open = lambda: 0

    def refused(self, reason: str) -> None:
        """Count an HTTP request refused for ``reason``."""
        self.requests_refused[reason] = self.requests_refused.get(reason, 0) + 1


class Metrics:
    """The server's counters (monotonic) plus a few gauges read from their owners."""

    def __init__(self) -> None:
        self.started = time.monotonic()  # uptime: a step of the wall clock changes none
        self.records = 0  # accepted into the buffer (a replacing retransmit counts)
        #: Accepted records that repeated a (VM, timestamp) already held or already logged
        #: (a resend, a replay): kept once, so received = written + repeated + held.
        self.repeated = 0
        self.datagrams = 0
        self.bytes = 0
        self.rejects: Counter[str] = Counter({r: 0 for r in protocol.REJECT_REASONS
                                              + protocol.SIGNATURE_REASONS})
        self.drops: Counter[str] = Counter({"per_vm_cap": 0, "global_cap": 0, "vm_cap": 0,
                                              "unwritable": 0})
        self.seq_lost = 0
        #: Jumps up of an agent's seq further than one agent numbers in the time between its
        #: records (seqturns.plausible): not in ``seq_lost``.
        self.seq_too_far = 0
        #: VM ids found sent by more than one machine (two seq counters taking turns;
        #: sharedids.py), once each time one is found.
        self.shared_ids = 0
        #: Per port with connections: "tcp" (the push port) and "http".
        self.connections = {"tcp": ConnectionCounts(), "http": ConnectionCounts()}
        #: UDP datagrams from sources outside --allow.
        self.datagrams_not_allowed = 0
        self.acks = 0
        self.naks = 0
        self.flushes = 0
        self.flushed_records = 0
        self.write_failures = 0
        self.flush_seconds = 0.0
        self.journal_bytes = 0
        self.journal_syncs = 0
        self.journal_errors = 0
        #: Saves of the signature marks (auth.py) that failed: replay floors not on disk.
        self.signature_marks_errors = 0
        self.journal_retired = 0
        #: Pieces of journal segments refused at start as damaged: ``unit`` (a write whose
        #: checksum did not match), ``edge_line`` (an ``#!edge`` line that failed its HMAC or
        #: could not be read back).
        self.journal_damaged: Counter[str] = Counter({"unit": 0, "edge_line": 0})
        self.replayed_records = 0
        self.writer_deaths = 0
        self.parsed_remote = 0  # payloads parsed by parser processes
        self.parsed_here = 0  # payloads parsed by the reactor (parsers busy or down, or none;
        #                       the edge's minutes under --max-past)
        self.parser_deaths = 0
        self.parser_stalls = 0  # parser processes killed for keeping payloads without an answer
        #: Gauges owned elsewhere (journal, flusher): name -> (help, read function).
        self.gauges: dict = {}
        #: Other formats' lines (or collectd value lists) by (format, outcome): used, ignored,
        #: or the reason they could not be used.
        self.edge: Counter[tuple[str, str]] = Counter()
        #: Counter-rate and minute-assembly events of the other formats (formats/edge.py).
        self.edge_events = dict
        #: Labelled families owned elsewhere (the rules): functions returning
        #: [(name, kind, help, [(labels, value)])].
        self.families: list = []

    def reject(self, reason: str, count: int = 1) -> None:
        self.rejects[reason] += count

    def drop(self, cause: str, count: int = 1) -> None:
        self.drops[cause] += count

    def snapshot(self, buffered: int, vms: int, in_flight: int) -> dict:
        """Plain numbers for /status and the shutdown summary."""
        return {
            "uptime_seconds": round(time.monotonic() - self.started, 3),
            "records_received": self.records,
            "datagrams_received": self.datagrams,
            "bytes_received": self.bytes,
            "rejected": dict(self.rejects),
            "rejected_total": sum(self.rejects.values()),
            "dropped": dict(self.drops),
            "dropped_total": sum(self.drops.values()),
            "estimated_lost_records": self.seq_lost,
            "seq_jumps_too_far": self.seq_too_far,
            "shared_vm_ids_found": self.shared_ids,
            "buffered_records": buffered,
            "in_flight_records": in_flight,
            "vms_buffered": vms,
            "tcp": {"acks": self.acks, "naks": self.naks},
            "connections": {kind: {"total": c.accepted, "open": c.open(),
                                   "evicted_per_source": c.evicted_per_source,
                                   "evicted_full": c.evicted_full, "idle_closed": c.idle_closed,
                                   "not_allowed": c.not_allowed}
                            for kind, c in self.connections.items()},
            "datagrams_not_allowed": self.datagrams_not_allowed,
            "flushes": self.flushes,
            "flushed_records": self.flushed_records,
            "repeated_records": self.repeated,
            "flush_seconds": round(self.flush_seconds, 3),
            "write_failures": self.write_failures,
            "journal": {"bytes": self.journal_bytes, "syncs": self.journal_syncs,
                        "errors": self.journal_errors, "segments_retired": self.journal_retired,
                        "replayed_records": self.replayed_records,
                        "damaged": dict(self.journal_damaged)},
            "writer_deaths": self.writer_deaths,
            "parsing": {"remote": self.parsed_remote, "here": self.parsed_here,
                        "parser_deaths": self.parser_deaths,
                        "parser_stalls": self.parser_stalls},
            **{name: read() for name, (_help, read) in self.gauges.items()},
            "edge": {"%s %s" % key: n for key, n in sorted(self.edge.items())},
            "edge_events": self.edge_events(),
        }

    def prometheus(self, buffered: int, vms: int, in_flight: int, vms_seen: int) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        out = []

        def metric(name, kind, help_text, samples):
            out.append("# HELP %s%s %s" % (_PREFIX, name, help_text))
            out.append("# TYPE %s%s %s" % (_PREFIX, name, kind))
            for labels, value in samples:
                label = "{%s}" % ",".join('%s="%s"' % kv for kv in labels) if labels else ""
                out.append("%s%s%s %s" % (_PREFIX, name, label, value))

        metric("records_received_total", "counter", "Records accepted into the buffer.",
               [((), self.records)])
        metric("datagrams_received_total", "counter", "UDP datagrams received.",
               [((), self.datagrams)])
        metric("bytes_received_total", "counter", "Payload bytes received (UDP and TCP).",
               [((), self.bytes)])
        metric("rejected_total", "counter", "Records or frames rejected, by reason.",
               [((("reason", r),), n) for r, n in sorted(self.rejects.items())])
        metric("dropped_total", "counter", "Valid records dropped for lack of room, by cause.",
               [((("cause", c),), n) for c, n in sorted(self.drops.items())])
        metric("estimated_lost_records_total", "counter",
               "Records missing from agents' seq counters (UDP loss).", [((), self.seq_lost)])
        metric("seq_jumps_too_far_total", "counter",
               "Jumps up of an agent's seq counter further than one agent numbers in the time "
               "since its previous record (a forged or damaged record, another sender under its "
               "id): not counted as lost records.", [((), self.seq_too_far)])
        metric("shared_vm_ids_found_total", "counter",
               "VM ids found sent by more than one machine: two seq counters taking turns under "
               "one id (their records are filed as one VM's; the ids are on /status and in the "
               "log).", [((), self.shared_ids)])
        ports = sorted(self.connections.items())
        metric("connections_total", "counter", "Connections accepted, by port (tcp: the push "
               "port).", [((("port", kind),), c.accepted) for kind, c in ports])
        metric("connections_open", "gauge", "Connections open now, by port.",
               [((("port", kind),), c.open()) for kind, c in ports])
        metric("connections_evicted_total", "counter",
               "Connections closed to make room for a new one: the longest silent of its source "
               "(per_source) or of all (full).",
               [((("port", kind), ("cause", cause)), getattr(c, "evicted_" + cause))
                for kind, c in ports for cause in ("per_source", "full")])
        metric("connections_idle_closed_total", "counter", "Connections closed for idleness.",
               [((("port", kind),), c.idle_closed) for kind, c in ports])
        metric("not_allowed_total", "counter",
               "Connections and UDP datagrams refused because their source is outside --allow.",
               [((("port", kind),), c.not_allowed) for kind, c in ports]
               + [((("port", "udp"),), self.datagrams_not_allowed)])
        metric("http_requests_refused_total", "counter",
               "HTTP requests refused: before their body was stored, too_large, not_found, "
               "length_required, cross_origin, uri_too_long, headers_too_large, bad_request, "
               "duplicate_header, "
               "unsupported_encoding, chunk_overhead; busy, a write body past --http-body-memory (503); "
               "body_timeout, a body not whole within --http-body-timeout (408); head_timeout, "
               "a request line and headers not whole within --http-head-timeout (408).",
               [((("reason", reason),), n) for reason, n in
                sorted(self.connections["http"].requests_refused.items())])
        metric("acks_total", "counter", "TCP batches acknowledged.", [((), self.acks)])
        metric("naks_total", "counter", "TCP batches refused (to be resent).", [((), self.naks)])
        metric("flushes_total", "counter", "Flushes of the buffer to the logs.", [((), self.flushes)])
        metric("flushed_records_total", "counter", "Records written to the per-VM logs.",
               [((), self.flushed_records)])
        metric("repeated_records_total", "counter", "Records received that repeated a (VM, "
               "timestamp) already held or logged (a resend): kept once, not written again.",
               [((), self.repeated)])
        metric("flush_seconds_total", "counter", "Wall seconds flushes took, from the swap of the "
               "buffer to the last log written: a slowing disk shows here before the buffer fills.",
               [((), round(self.flush_seconds, 6))])
        metric("write_failures_total", "counter", "Per-VM log writes that failed (retried).",
               [((), self.write_failures)])
        metric("journal_bytes_total", "counter", "Bytes appended to the journal.",
               [((), self.journal_bytes)])
        metric("journal_syncs_total", "counter", "fsync calls on journal segments.",
               [((), self.journal_syncs)])
        metric("journal_errors_total", "counter", "Journal writes or syncs that failed.",
               [((), self.journal_errors)])
        metric("signature_marks_errors_total", "counter",
               "Saves of the signature marks that failed (retried; a restart meanwhile forgets "
               "the floors since the last save).", [((), self.signature_marks_errors)])
        metric("journal_segments_retired_total", "counter",
               "Journal segments deleted once their records were logged.",
               [((), self.journal_retired)])
        metric("replayed_records_total", "counter",
               "Records replayed from journal segments left by a crash.",
               [((), self.replayed_records)])
        metric("journal_damaged_total", "counter",
               "Pieces of journal segments refused at start as damaged, by part: unit (one "
               "write, whose checksum did not match), edge_line (an other format's line that "
               "failed its HMAC or could not be read back).",
               [((("part", part),), n) for part, n in sorted(self.journal_damaged.items())])
        metric("writer_deaths_total", "counter",
               "Flushes abandoned because a writer process died (pool rebuilt, records kept).",
               [((), self.writer_deaths)])
        metric("parsed_payloads_total", "counter",
               "Payloads parsed, by where: parser processes, or the reactor (parsers busy or down, "
               "or --parsers 0).",
               [((("where", "remote"),), self.parsed_remote),
                ((("where", "here"),), self.parsed_here)])
        metric("parser_deaths_total", "counter",
               "Parser processes that died (restarted; their payloads parsed by the reactor).",
               [((), self.parser_deaths)])
        metric("parser_stalls_total", "counter",
               "Parser or decoding processes that kept payloads past --parser-timeout without an "
               "answer: killed and restarted, their payloads parsed by the reactor.",
               [((), self.parser_stalls)])
        metric("edge_lines_total", "counter",
               "Lines (collectd: value lists) of other formats, by format and outcome: used, "
               "ignored (nothing vmstats stores), or why they could not be used.",
               [((("format", f), ("outcome", o)), n) for (f, o), n in sorted(self.edge.items())])
        metric("edge_events_total", "counter",
               "Other formats' counters primed, restarted, stale or forgotten, "
               "minutes written, incomplete (no cpu or mem), late or completed early, and "
               "virtual interfaces left out of a minute's network rates.",
               [((("event", e),), n) for e, n in sorted(self.edge_events().items())])
        for name, (help_text, read) in sorted(self.gauges.items()):
            metric(name, "gauge", help_text, [((), int(read()))])
        for families in self.families:
            for name, kind, help_text, samples in families():
                metric(name, kind, help_text, samples)
        metric("buffered_records", "gauge", "Records held in memory.", [((), buffered)])
        metric("in_flight_records", "gauge", "Records handed to writers, not yet confirmed.",
               [((), in_flight)])
        metric("buffered_vms", "gauge", "VMs with records held in memory.", [((), vms)])
        metric("vms_seen", "gauge", "VMs heard from since start.", [((), vms_seen)])
        metric("uptime_seconds", "gauge", "Seconds since start.",
               [((), round(time.monotonic() - self.started, 3))])
        return "\n".join(out) + "\n"
