"""Assembly and lifecycle of the aggregator: services, status file, shutdown, summary."""

import contextlib
import faulthandler
import gc
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable

from twisted.application import service
from twisted.internet import defer

from vmstats import logstore
from vmstats.server import dirlock, native
from vmstats.server.auth import Authenticator
from vmstats.server.buffer import Buffer
from vmstats.server.clock import WallClock, install
from vmstats.server.compaction import CompactionService
from vmstats.server.config import ServerConfig
from vmstats.server.connections import (
    ConnectionTable,
    SourceFilter,
    descriptor_budget,
    is_loopback,
    raise_file_limit,
    share_budget,
)
from vmstats.server.every import Every
from vmstats.server.flusher import FlusherService
from vmstats.server.formats import edge, httpwrite
from vmstats.server.formats.influx import native_scan
from vmstats.server.formats.journaling import KEY_FILE, EdgeJournal
from vmstats.server.formats.minutes import native_filing
from vmstats.server.http import HTTPService, StatusToken, last_seen_table
from vmstats.server.ingest import Ingest
from vmstats.server.journal import Journal, list_segments
from vmstats.server.listeners import ListenerService
from vmstats.server.metrics import Metrics
from vmstats.server.ownfiles import (
    check_file,
    existing_directory,
    usable_directory,
    writable_file_place,
)
from vmstats.server.parse import native_reader
from vmstats.server.parsers import ParserService
from vmstats.server.replay import replay
from vmstats.server.sharedkept import SharedKept
from vmstats.server.signing import keys_config, native_checks
from vmstats.words import counted

log = logging.getLogger(__name__)

#: Shared VM ids the stop summary names with their senders, the last found (/status lists all).
SUMMARY_IDS = 10


def _say_what_python_does(signed: bool) -> None:
    """A warning at start for each C part whose work is done in Python, slower: one that does
    not load, with the loader's error (native.unloadable), else one not built; the signed
    frames' part only where frames are ``signed``."""
    broken = native.unloadable()
    for line in broken.values():
        log.warning(line)
    unbuilt = {name for name, loaded in (("_linescan", native_reader()),
                                         ("_influxscan", native_scan()),
                                         ("_minutes", native_filing()),
                                         ("_framecheck", native_checks()))
               if not loaded and name not in broken}
    if "_linescan" in unbuilt:
        log.warning("records are read by regexes in Python: this vmstats was built without "
                    "its C part (it needs a C compiler and Python's headers), so a parser "
                    "spends ~1.2 us a record where it would spend ~0.4")
    if unbuilt & {"_influxscan", "_minutes"}:
        log.warning("Telegraf's lines are read, and other agents' samples filed into their "
                    "minutes, in Python: this vmstats was built without its C parts (they "
                    "need a C compiler and Python's headers), so a Telegraf line costs ~4 us "
                    "more to read and ~1 us more to file")
    if signed and "_framecheck" in unbuilt:
        log.warning("signed frames are checked in Python: this vmstats was built without its "
                    "C part (it needs a C compiler and OpenSSL's headers), so a signed "
                    "one-record datagram costs ~1.5x the CPU of a plain one, not ~1.2x")


class Aggregator(service.MultiService):
    """Listeners, flusher and HTTP endpoint, stopped in the order that loses nothing.

    MultiService stops its children all at once; the aggregator must stop
    listening first, file what the parsers still hold, then flush, then end
    the parsers and close the HTTP endpoint (so /status can be read during
    the drain).
    """

    def __init__(self, config: ServerConfig, reactor):
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.metrics = Metrics()
        #: This server's hold on its data dir and journal dir (dirlock.py).
        self._locks: list[int | None] = []
        #: Journal dirs of earlier runs holding segments this run does not replay (start).
        self.journals_left: list[str] = []
        #: The time of day (stamps, windows); reactor.seconds() times delays (clock.py).
        self.clock = WallClock()
        self.metrics.families.append(self.clock.families)
        self._clock_watch = Every(reactor, 1.0, self.clock, "the wall clock's watch")
        self.buffer = Buffer(self.metrics, config.max_buffered, config.max_per_vm,
                             max_vms=config.max_vms)
        self.journal = None
        if config.journal_dir != "":
            self.journal = Journal(reactor, journal_dir(config), self.metrics, config.fsync,
                                   config.fsync_interval)
        self.parsers = None
        if config.parsers > 0:
            self.parsers = ParserService(reactor, config.parsers, config.max_future,
                                         config.max_past, self.metrics, config.parser_timeout)
            self.metrics.gauges["parsers_running"] = (
                "Parser processes running (payloads they cannot take are parsed by the reactor).",
                lambda: len(self.parsers.pids()))
            self.metrics.gauges["parsers_reading_udp"] = (
                "Parser processes reading the UDP socket themselves (0: the reactor reads it).",
                lambda: len(self.parsers.udp_readers))
        # Payloads read time.time() itself: the watch above notices a step within a second,
        # and WallClock's three clock reads a payload would cost one-record datagrams ~3 %.
        self.ingest = Ingest(self.buffer, self.metrics, config.max_future, config.max_past,
                             journal=self.journal, parsers=self.parsers)
        self.rules = None
        if config.rules_file:
            # A bad file raises RulesError here: the server does not start with it.
            from vmstats.rules.config import load_rules
            from vmstats.rules.service import RulesService, rules_dir

            self.rules = RulesService(reactor, config.rules_file, load_rules(config.rules_file),
                                      rules_dir(config.data_dir), wall=self.clock,
                                      data_dir=config.data_dir)
            self.ingest.observe = self.rules.observe
            self.metrics.families.append(self.rules.families)
            self.rules.setServiceParent(self)  # started first: the action log replays before data
        self.auth = Authenticator(self.ingest, config.auth_keys, config.sig_window)
        self.auth.remember_in(journal_dir(config), self.journal, reactor)
        if self.parsers is not None and self.auth.required:  # they check signatures too
            self.parsers.auth_config = keys_config(self.auth.keys, config.sig_window)
        _say_what_python_does(self.auth.required)
        self.tables = self._connection_tables()
        self.listeners = ListenerService(
            reactor, config.bind, config.udp_port, config.tcp_port, self.ingest, self.auth,
            self.metrics, config.rcvbuf, config.max_line, self.tables["tcp"])
        # The edge reads the watching clock: its minutes keep arrival times, which a step moves,
        # so it must notice the step before it uses the new time (a tick that saw it first
        # completed every open minute at once; a payload stamped by it was moved twice).  Its
        # payloads are whole batches, so the two more clock reads cost it nothing to speak of.
        self.edge, self.edge_service = edge.build(reactor, config, self.ingest, self.metrics,
                                                  self.clock, self.tables["tcp"])
        self.flusher = FlusherService(reactor, self.buffer, self.metrics, config.data_dir,
                                      config.flush_interval, config.workers, config.drain_timeout,
                                      self.journal)
        self.buffer.on_full = self.flusher.request_flush
        # What keeps a time of day as the start of a duration moves with a step of the clock.
        self.clock.on_step += [self.flusher.schedule.clock_stepped,
                               self.edge.clock_stepped]
        self.metrics.gauges["write_failing_vms"] = (
            "VMs whose last log write failed (disk full, permissions): retried each flush.",
            lambda: self.flusher.failing_vms)
        self.metrics.gauges["write_links_refused_vms"] = (
            "VMs whose folder or day file is a symbolic link out of the data dir (or to other "
            "logs in it): not written through, their rows held and retried each flush "
            "(docs/STORAGE.md).", lambda: len(self.flusher.linked_vms))
        #: The shared VM ids found, kept across a restart beside the signature marks.
        self.shared_kept = SharedKept(journal_dir(config), self.buffer.shared, self.clock, reactor)
        self.metrics.gauges["shared_vm_ids"] = (
            "VM ids whose two seq counters took turns within the last 15 minutes: sent by more "
            "than one machine now (docs/OPERATIONS.md, One VM id, two machines).",
            self.buffer.shared.shared_now)
        if self.journal is not None:
            self.metrics.gauges["journal_segments"] = (
                "Journal segments on disk (records not yet confirmed in the logs).",
                self.journal.segments)
            self.metrics.gauges["journal_failing"] = (
                "1 while journal writes fail (TCP batches are refused with busy).",
                lambda: int(self.journal.failing))
        # The listeners start first: the parsers are handed the UDP socket they bound.
        self.listeners.setServiceParent(self)
        if self.parsers is not None:
            self.parsers.setServiceParent(self)
        self.edge_service.setServiceParent(self)
        self.flusher.setServiceParent(self)
        if config.compact_interval > 0:
            self.compaction = CompactionService(
                reactor, self.metrics, config.data_dir, config.compact_interval,
                config.compact_after, config.retain_raw, config.retain_rollups)
            self.compaction.setServiceParent(self)
            self.clock.on_step.append(self.compaction.schedule.clock_stepped)
        self.http = None
        self.admission = None
        if config.http_port >= 0:
            token = StatusToken(config.status_token)
            bodies = httpwrite.BodyBudget(config.http_body_memory)
            routes = httpwrite.routes(self.edge, self.edge.influx, config.write_token,
                                      self.auth.required, bodies)
            self.metrics.gauges["http_body_bytes_held"] = (
                "Bytes of InfluxDB write bodies held: admitted at their headers or arriving, read "
                "and being fed (bounded by --http-body-memory).", lambda: bodies.held)
            if config.inventory:
                self.admission = self._admission(token)
                routes[b"/admission"] = self.admission.page()
            if self.rules is not None:  # beside /alerts: mutes of the live rules (docs/RULES.md)
                from vmstats.rules.mutepage import MutesPage

                mutes = routes[b"/mutes"] = MutesPage(self.rules, token)
                self.metrics.families.append(mutes.families)
            self.http = HTTPService(reactor, config.bind, config.http_port, self.metrics_text,
                                    self.status, self.tables["http"], token, routes,
                                    self.rules.alerts if self.rules is not None else None,
                                    config.http_body_timeout or None,
                                    config.http_head_timeout or None)
            self.http.setServiceParent(self)
        self.metrics.gauges["unsigned_accepted_beyond_loopback"] = (
            "1 when a port takes unsigned records from beyond this machine (the push ports without "
            "--auth-keys, the write API without --write-token, the other formats' ports).",
            lambda: int(self.exposed()))

    def _admission(self, token: StatusToken):
        """The admission API (vmstats/capacity/service.py): a bad inventory stops the start."""
        from vmstats.capacity.demand import Settings, parse_percentile
        from vmstats.capacity.service import AdmissionService

        config = self.config
        settings = Settings(percentile=parse_percentile(config.capacity_percentile),
                            coverage_min=config.capacity_coverage_min, days=config.capacity_days,
                            horizon_days=config.capacity_horizon_days,
                            peak_minutes=config.capacity_peak_minutes,
                            reserve_stopped=config.capacity_reserve_stopped,
                            stopped_share_max=config.capacity_stopped_share_max / 100.0)
        admission = AdmissionService(self.reactor, config.data_dir, config.inventory, settings,
                                     config.capacity_refresh, config.admission_hold, token)
        self.metrics.families.append(admission.families)
        admission.setServiceParent(self)
        return admission

    def _connection_tables(self) -> dict[str, ConnectionTable]:
        """The TCP and HTTP connection tables, their caps fitted under the file limit."""
        config = self.config
        limit = raise_file_limit()
        wanted = {"tcp": config.max_connections}
        if config.http_port >= 0:
            wanted["http"] = config.http_max_connections
        budget = descriptor_budget(limit, config.workers + config.parsers)
        caps = share_budget(budget, wanted)
        if caps != wanted:
            log.warning("the open file limit (%d) leaves room for %s: caps lowered "
                        "to %s (raise the hard limit, e.g. LimitNOFILE=, to keep %s)", limit,
                        counted(budget, "connection"), caps, wanted)
        self.metrics.gauges["file_limit"] = (
            "The open file limit (the soft limit is raised to the hard one at start).",
            lambda: limit)
        self.metrics.gauges["open_files"] = ("File descriptors open now.", open_files)
        tables = {
            "tcp": ConnectionTable("tcp", self.metrics.connections["tcp"], caps["tcp"],
                                   config.max_per_source, config.idle_timeout, self.reactor,
                                   SourceFilter(config.allow)),
            "http": ConnectionTable("http", self.metrics.connections["http"],
                                    caps.get("http", 1), config.http_max_per_source,
                                    config.http_idle_timeout, self.reactor,
                                    SourceFilter(config.http_allow)),
        }
        for kind, table in tables.items():
            self.metrics.connections[kind].open = table.open.__len__
        return tables

    def exposed(self) -> bool:
        """Does any port take unsigned records from other machines?"""
        return bool(self.unsigned_doors()) and not is_loopback(self.config.bind)

    def unsigned_doors(self) -> list[tuple[str, str]]:
        """``(what, its port's key in ports())`` of each way in for records no signature or
        token vouches for: --auth-keys guards only the native ports, so each other format's
        port is one even with keys (collectd's unless --collectd-security asks for more)."""
        config = self.config
        doors = [] if self.auth.required else [("udp", "udp_port"), ("tcp", "tcp_port")]
        if self.http is not None and config.write_token is None and not self.auth.required:
            doors.append(("http /write", "http_port"))
        for name, port in (("influx", config.influx_port), ("graphite", config.graphite_port)):
            if port >= 0:
                doors.append((name, "%s_port" % name))
        if config.collectd_port >= 0 and config.collectd_security == "none":
            doors.append(("collectd", "collectd_port"))
        return doors

    def startService(self) -> None:
        self.check_paths()
        memory = self.auth.memory
        if self.journal is not None:
            # Leftovers of a crash reach the logs before anything new is accepted.
            self.journal.open()
            edge = self._edge_journal()
            readers: list = [edge]
            if memory is not None:
                memory.load_marks()
                memory.start()  # before replay: it retires segments, the marks go first
                readers.append(memory)
            # One pass reads each segment and checks its units: the edge and the signature
            # memory take their lines from it and settle before the replay retires any segment.
            replay(self.journal, self.config.data_dir, self.buffer, self.metrics,
                   self.ingest.observe, readers=readers)
            self.metrics.journal_damaged["edge_line"] += edge.forged + edge.unreadable
            if edge.restored:  # minutes the edge completed again: logged once (writer.py)
                self.ingest.payload(edge.restored, timed=False)
        else:
            if memory is not None:
                memory.restore([])
                memory.start()
        for folder in self.journals_left:
            log.warning("%s holds %s that this run (%s) does not replay: acknowledged records "
                        "that may not be in the logs; start once with --journal-dir %s to write "
                        "them", folder, counted(len(list_segments(folder)), "journal segment"),
                        "journal in %s" % self.journal.directory if self.journal is not None
                        else "--no-journal", folder)
        self.shared_kept.load()  # before any record: a kept id is watched from its first one
        self.shared_kept.start()
        super().startService()
        self._clock_watch.start()
        self._announce()

    def _journals_noted(self, before: str) -> list[tuple[str, str]]:
        """What the data dir's lock file keeps of this run for the next start: its journal
        dir, and each journal dir of an earlier run whose segments this one does not replay.

        A server restarted after a crash with another ``--journal-dir`` (or ``--no-journal``)
        never reads the segments the crash left in the old one: acknowledged records, out of
        the logs for good unless someone knows.  So every start names such a folder until a
        run replays it (``journals_left``, warned in startService).
        """
        mine = os.path.abspath(self.journal.directory) if self.journal is not None else None
        earlier = dirlock.notes(before, "journal") + dirlock.notes(before, "unreplayed")
        if mine is None:
            earlier.append(os.path.abspath(journal_dir(self.config)))  # the one it would use
        self.journals_left = [folder for folder in dict.fromkeys(earlier)
                              if folder != mine and list_segments(folder)]
        return ([("journal", mine)] if mine else []) + [("unreplayed", folder)
                                                        for folder in self.journals_left]

    def check_paths(self) -> None:
        """The paths the server owns that need no other step of the start, checked before it
        listens: something in the way stops it with one line (ownfiles.py)."""
        config = self.config
        usable_directory(config.data_dir, "data directory (--data-dir)")
        self._locks.append(dirlock.hold(config.data_dir, "data directory", "--data-dir",
                                        self._journals_noted)[0])
        existing_directory(os.path.join(config.data_dir, logstore.VMS_DIR), "VMs' log folder")
        if self.journal is not None:
            usable_directory(self.journal.directory, "journal directory")
            if not os.path.samefile(self.journal.directory, config.data_dir):  # locked above
                self._locks.append(dirlock.hold(self.journal.directory, "journal directory",
                                                "--journal-dir")[0])
            check_file(os.path.join(self.journal.directory, KEY_FILE), "edge journal key")
        check_file(self.shared_kept.path, "shared VM ids file")
        if config.status_file:
            writable_file_place(config.status_file, "status file (--status-file)")

    def _edge_journal(self) -> EdgeJournal:
        """The edge's lines in the journal, its checkpoints on: the replay hands it the
        leftover segments' lines, which bring its open minutes and counters back."""
        self.edge.journal = EdgeJournal(self.journal, self.edge, self.journal.directory)
        self.metrics.gauges["edge_key_in_memory"] = (
            "1 when the edge's journal key could not be kept in its file: a crash of this run "
            "loses the other agents' open minutes.", lambda: int(self.edge.journal.key_in_memory))
        self.journal.before_retire.append(self.edge.journal.checkpoint)
        return self.edge.journal

    def ports(self) -> dict:
        ports = {"udp_port": self.listeners.udp_port, "tcp_port": self.listeners.tcp_port,
                 "http_port": self.http.port if self.http else None}
        ports.update(("%s_port" % name, port) for name, port in self.edge_service.ports.items())
        return ports

    def _announce(self) -> None:
        ports = self.ports()
        others = "".join(" %s %d" % (name, port) for name, port in self.edge_service.ports.items())
        print("vmstats serve: listening on %s udp %d tcp %d http %s%s; data in %s"
              % (self.config.bind, ports["udp_port"], ports["tcp_port"],
                 ports["http_port"] if ports["http_port"] is not None else "off", others,
                 self.config.data_dir), flush=True)
        self._announce_exposure(ports)
        if self.config.status_file:
            status = dict(ports, pid=os.getpid(), data_dir=os.path.abspath(self.config.data_dir),
                          bind=self.config.bind, rcvbuf=self.listeners.rcvbuf_granted)
            try:
                write_atomically(self.config.status_file, json.dumps(status, indent=1) + "\n")
            except OSError as exc:  # a full disk: say which file, as the start's checks do
                raise OSError(exc.errno, "cannot write the status file (--status-file) %s: %s"
                              % (self.config.status_file, exc.strerror or exc)) from None

    def _announce_exposure(self, ports: dict) -> None:
        """A loud warning when anyone beyond this machine may write records unsigned."""
        if not self.exposed():
            return
        doors = {}  # who may reach them -> the ports: the HTTP port has its own --http-allow
        for what, key in self.unsigned_doors():
            allow, option = ((self.config.http_allow, "--http-allow") if key == "http_port"
                             else (self.config.allow, "--allow"))
            who = ("the networks in %s (%s)" % (option, ", ".join(allow)) if allow
                   else "ANY address that can reach it")
            doors.setdefault(who, []).append("%s %s" % (what, ports.get(key)))
        where = "; ".join("%s from %s" % (" / ".join(names), who) for who, names in doors.items())
        banner = "!" * 78
        log.warning("\n%s\nvmstats serve accepts UNSIGNED records on %s %s:"
                    "\nanyone there can write records for any VM and change what the report "
                    "reclaims.\nRequire signatures (--auth-keys, keys bound to VMs; --write-token "
                    "for HTTP), limit the\nsources (--allow CIDR), or listen on loopback only "
                    "(--bind 127.0.0.1). See docs/OPERATIONS.md,\n\"Exposure\".\n%s", banner,
                    self.config.bind, where, banner)

    @defer.inlineCallbacks
    def stopService(self):
        log.info("stopping: closing listeners, then the final flush")
        service.Service.stopService(self)
        self._clock_watch.stop()
        yield defer.maybeDeferred(self.listeners.stopService)
        if self.admission is not None:  # a summary being computed is of no use any more
            yield defer.maybeDeferred(self.admission.stopService)
        yield defer.maybeDeferred(self.edge_service.stopService)  # open minutes into ingest
        yield self.ingest.idle()
        self.buffer.settle(float("inf"))  # every record filed: a jump waiting is counted now
        if self.rules is not None:
            yield defer.maybeDeferred(self.rules.stopService)
        yield defer.maybeDeferred(self.flusher.stopService)
        self.shared_kept.stop()  # every record filed: the findings as they end
        if self.parsers is not None:
            yield defer.maybeDeferred(self.parsers.stopService)
        if self.journal is not None:
            self.journal.close()
        if self.auth.memory is not None:
            self.auth.memory.stop()
        if self.http is not None:
            yield defer.maybeDeferred(self.http.stopService)
        dirlock.release(self._locks)  # drained: a next server may take the data dir
        self._locks = []

    def in_flight(self) -> int:
        return self.flusher.in_flight_records

    def metrics_text(self) -> str:
        return self.metrics.prometheus(self.buffer.count, len(self.buffer.table), self.in_flight(),
                                       len(self.buffer.last_seen))

    def status(self, details: bool = True) -> dict:
        """The counters; with ``details`` (the status token) also the data dir and VM times."""
        status = self.metrics.snapshot(self.buffer.count, len(self.buffer.table), self.in_flight())
        status.update(self.ports())
        status["vms_seen"] = len(self.buffer.last_seen)
        if details:
            status["data_dir"] = os.path.abspath(self.config.data_dir)
            status["last_seen"] = last_seen_table(self.buffer.seen_at(self.clock()))
            status["shared_vm_ids"] = self.buffer.shared.listing(self.clock())
        else:
            status["details"] = "send 'Authorization: Bearer <token>' (--status-token) for the " \
                                "data dir, per-VM last-seen times and the VM ids found shared"
        return status

    def join(self) -> None:
        """Once the reactor has stopped: reap the writers and wait for the threads of every
        process pool ended, the decoders' too (vmstats/server/executors.py says why)."""
        self.flusher.join()
        self.edge_service.pool.join()

    def summary(self) -> str:
        """The one-screen account printed at exit."""
        s = self.metrics.snapshot(self.buffer.count, len(self.buffer.table), self.in_flight())
        lines = [
            "vmstats serve: summary after %.1fs" % s["uptime_seconds"],
            "  records received  %d (%s, %s)" % (
                s["records_received"], counted(s["datagrams_received"], "datagram"),
                counted(s["bytes_received"], "byte")),
            "  records written   %d in %s (write failures %d)" % (
                s["flushed_records"], counted(s["flushes"], "flush", "flushes"), s["write_failures"]),
            "  repeats           %d (a (VM, time) already held or logged: kept once)" % (
                s["repeated_records"]),
            "  VMs seen          %d" % len(self.buffer.last_seen),
            "  rejected          %d" % s["rejected_total"],
        ]
        lines += ["    %-22s %d" % (k, v) for k, v in sorted(s["rejected"].items()) if v]
        lines.append("  dropped           %d" % s["dropped_total"])
        lines += ["    %-22s %d" % (k, v) for k, v in sorted(s["dropped"].items()) if v]
        lines.append("  est. lost (seq)   %d%s" % (
            s["estimated_lost_records"],
            " (and %s too far to be loss, not counted)" % counted(s["seq_jumps_too_far"], "jump")
            if s["seq_jumps_too_far"] else ""))
        if self.buffer.shared.found:
            before = sum(1 for found in self.buffer.shared.found.values() if found.before)
            lines.append("  shared VM ids     %d found (sent by more than one machine: /status, the "
                         "log)%s" % (s["shared_vm_ids_found"], ", and %d before this start, not since"
                                     % before if before else ""))
            lines += ["    %-22s senders %s" % (vm, ", ".join(found.sources) or "not known")
                      for vm, found in list(self.buffer.shared.found.items())[-SUMMARY_IDS:]]
        if s["edge"]:
            lines.append("  other formats     %s" % ", ".join(
                "%s %d" % (key, count) for key, count in s["edge"].items()))
        tcp, conns = s["tcp"], s["connections"]["tcp"]
        lines.append("  tcp               %s (%d evicted, %d idle-closed, %d not allowed), %s, %s" % (
            counted(conns["total"], "connection"), conns["evicted_per_source"] + conns["evicted_full"],
            conns["idle_closed"], conns["not_allowed"], counted(tcp["acks"], "ack"),
            counted(tcp["naks"], "nak")))
        if self.rules is not None:
            lines.append("  rules             " + self.rules.summary())
        if self.flusher.unwritten:
            lines.append("  NOT WRITTEN       %s" % counted(self.flusher.unwritten, "record"))
        if self.journal is not None and self.journal.segments():
            # With every record in the logs, what is kept is state for the next start to resume
            # from (other agents' counters and open minutes, signatures seen), not records.
            lines.append("  journal           %s kept in %s: %s" % (
                counted(self.journal.segments(), "segment"), self.journal.directory,
                "replayed at the next start" if self.flusher.unwritten
                else "state the next start resumes from (every record is in the logs)"))
        if self.flusher.deadline_missed:
            lines.append("  drain deadline of %.1fs MISSED" % self.config.drain_timeout)
        return "\n".join(lines)


def journal_dir(config: ServerConfig) -> str:
    """Where the journal lives: beside the logs unless told otherwise (same disk, same fate)."""
    return config.journal_dir or os.path.join(config.data_dir, "journal")


def open_files() -> int:
    """Descriptors this process has open (Linux's /proc; -1 elsewhere)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def write_atomically(path: str, text: str) -> None:
    """Readers polling for the file see nothing or all of it; a write that fails (a full disk
    takes the name but not the bytes) leaves no temporary file behind, at any number of starts."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temp = tempfile.mkstemp(dir=folder, prefix=".status-")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def stop_on_signals(reactor, reload: Callable[[], object] | None = None) -> None:
    """SIGTERM, SIGINT and SIGHUP stop the reactor (the drain), whatever was inherited.

    Twisted handles SIGINT only when Python's default handler is in place,
    and a shell starts a background job with SIGINT ignored: such a server
    would ignore Ctrl-C and ``kill -INT``.  So both are installed here
    explicitly.  SIGHUP (the terminal closed) drains too instead of killing
    the server with its buffer, except when it was ignored on purpose
    (``nohup``): that asks the server to outlive its terminal.  A second
    signal during the drain changes nothing.

    With ``reload`` (a server with rules) SIGHUP calls it on the reactor instead, from here
    on: before the start, which says the server started (its "listening" line, its status
    file) before it ends.  Installed once the start was done, it left a moment when a SIGHUP
    sent on seeing either stopped the server instead of reloading its rules.
    """
    stopping = []

    def stop(number, _frame) -> None:
        log.info("received %s: stopping", signal.Signals(number).name)
        reactor.callFromThread(stop_once)

    def stop_once() -> None:
        if not stopping:
            stopping.append(True)
            reactor.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if reload is not None:
        signal.signal(signal.SIGHUP, lambda _n, _f: reactor.callFromThread(reload))
    elif signal.getsignal(signal.SIGHUP) != signal.SIG_IGN:
        signal.signal(signal.SIGHUP, stop)


#: Allocations between two passes of the cyclic collector's youngest generation in the server
#: (Python's default: 700); see ``run``.
SERVER_GC_THRESHOLD = 20_000


def _stack_stream():
    """Where SIGUSR1's stacks go: ``sys.stderr``, or the process's own standard error when the
    caller put a stream with no file descriptor in its place (a test runner, a program that
    runs the command inside itself); faulthandler writes to a descriptor, and its
    ``fileno()`` failure stopped the start with "Error: fileno".  None when there is neither."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            stream.fileno()
        except (AttributeError, OSError, ValueError):
            continue
        return stream
    return None


def run(config: ServerConfig) -> int:
    """Run the aggregator until --duration elapses or a signal arrives; return the exit code.

    The collector runs less often than Python's default: under load the reactor makes and
    drops small containers by the million (parsed replies, samples, open minutes), few of them
    in cycles, and at 700 allocations a pass the collector walked them about a thousand times a
    million Telegraf lines.  Cycles are still collected, less often.
    """
    from twisted.internet import reactor

    gc.set_threshold(SERVER_GC_THRESHOLD, *gc.get_threshold()[1:])
    install(reactor)  # timed calls by the monotonic clock: a step of the wall clock holds none

    aggregator = Aggregator(config, reactor)
    failure = []

    def start():
        try:
            aggregator.startService()
        except Exception as exc:  # a port in use, an unwritable data dir: one line, then exit
            failure.append(exc)
            reactor.stop()
            return
        reactor.addSystemEventTrigger("before", "shutdown", aggregator.stopService)
        if config.duration is not None:
            reactor.callLater(config.duration, reactor.stop)

    # SIGUSR1 prints every thread's stack to stderr and carries on: what to ask a server that
    # seems stuck.  The stop signals are ours once the reactor runs (it installs its own first).
    stream = _stack_stream()
    if stream is not None:
        faulthandler.register(signal.SIGUSR1, file=stream, all_threads=True)
    def reload() -> None:
        """SIGHUP with rules: a reload.  One that came during the start is made once it is
        done (not after a start that failed), none once the rules stopped (the drain)."""
        if not failure and aggregator.rules.running:
            aggregator.rules.reload()

    reactor.callWhenRunning(stop_on_signals, reactor,
                            reload if aggregator.rules is not None else None)
    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=True)
    if failure:
        if aggregator.flusher.pool is not None:
            aggregator.flusher.deadline_missed = True  # nothing to drain: just end the workers
        aggregator.join()
        raise failure[0]
    aggregator.join()
    print(aggregator.summary(), file=sys.stdout, flush=True)
    if aggregator.flusher.deadline_missed or aggregator.flusher.unwritten:
        return 1
    return 0

