"""The edge in the server's journal: what other agents sent survives a crash like native records.

An open minute lives in the assembler until it completes, possibly a minute
and a half after its first sample; the samples in it were acknowledged long
before (HTTP 204).  So the edge writes to the native journal, in the same
once-per-turn write and under the same ``--fsync`` policy, five kinds of
control line (``#!edge <mac> <kind> ...``, comments to every other reader):

* ``in <format> <now> <options> <encoding> <payload>``: a payload whose samples
  went into the assembler, at the moment they went in (its newlines written
  as NULs when it has none, as text formats do not: a third of base64's cost,
  which binary payloads get; collectd's is the samples it was decoded to, encoding
  ``samples``: a signed or encrypted packet was verified by passwords the restart may no
  longer have, and a password is never journaled).  Decoding is deterministic, ``now`` is the
  arrival time the decoder and the assembler used and ``options`` hold the
  ``--max-future``/``--max-past`` they judged the samples by and the bounds
  the assembler held them by (``--edge-max-name-bytes``, ``--edge-max-open``
  and the others: formats.Bounds) and the ``--minute-grace`` that decided which
  minutes the VM's later samples completed (``taken_under``), and with the
  format's ``settings`` line before it, decoding it again and adding the samples
  repeats exactly what the assembler did with it, whatever the clock, the
  limits, the bounds or the settings at the restart: the same counter steps,
  the same minutes completed by later samples (the grace journaled too: before,
  a replay by a shorter one completed minutes the run held open and refused a
  sample they took as late), the same samples refused as late, for their time
  or past a bound, and none refused that was taken.  (A bound lowered before the restart
  guards what comes after it; what the journal holds was acknowledged under
  the old one, and the replay says how much of it it kept past the new one.)
* ``settings <format> <json>``: everything the decoder of a format journaled as it came (the
  line protocol, Graphite) reads besides the payload, as ``Decoder.settings`` says (the
  ``--max-line``, the ``--influx-vm-tag``, the Graphite templates), written before the
  format's first payload after each checkpoint (the segments before one go, and a replay
  starts from it): the payloads after it, up to the next, are decoded by a decoder made from
  it (``Decoder.from_settings``).  A run's settings cost a line every CHECKPOINT_SECONDS or
  more, not bytes a payload.  The decoder says what it reads, so a setting added to one is
  journaled with it; tests/test_formats_replay_settings.py holds every decoder to it for every
  one of the server's settings.  (Journaling these formats' samples instead, as collectd's,
  would need no settings, but costs the reactor more per line than a few percent of what a
  line costs now: BENCHMARKS.md, "What the edge journals".)  A journal of the version before,
  which kept ``max_line`` and ``vm_tag`` in each payload's options (``LEGACY_SETTINGS``), is
  read by those.
* ``virtual <json>``: the ``--virtual-interfaces`` patterns the minutes are written by (which
  interfaces' rates a record leaves out), before the first ``in`` or ``done`` line after each
  checkpoint: a replay completes the minutes the run completed after it by that list, so a
  minute completed and not yet flushed at a crash is written as the run wrote it, not by a
  list changed at the restart (the minutes still open after the replay are written by this
  run's).  Its samples were taken whatever the list: it is applied as a minute is written.
* ``done <[[vm, end], ...]>``: minutes the clock completed (``tick``, and the
  shutdown's ``complete_all``); the one decision a replay cannot repeat by
  itself, so it is journaled in its place in the sequence.
* ``step <seconds>``: a step of the wall clock (vmstats/server/clock.py), which
  moved every open minute's last arrival with it; the journaled arrival times
  before it are the old clock's, so a replay moves them at the same point.
* ``state <json>``: a checkpoint, the assembler's whole state (open minutes,
  counters, the minutes already written) plus the records handed to the
  native ingest path and not yet filed there.  It is written and synced
  before the journal retires any segment (the journal's ``before_retire``),
  so the ``in`` lines before it can go: the journal holds the edge's payloads
  of about one flush interval (at least CHECKPOINT_SECONDS), not everything
  ever sent.

At start the native replay's one pass over the leftover segments hands this
journal their checked lines (``take``: each segment is read and its units
checked once, not once for the edge and once for the records), and before
the replay retires any, ``settle`` loads the last checkpoint and repeats
every ``in`` and ``done`` after it.  The
assembler then holds the open minutes it held when the server died, the
counters their last values, and the records completed meanwhile come back
to be written (the writer skips rows already in the logs, and a repeated
minute is byte for byte the record already logged, so nothing is logged
twice), with no time refused: their samples were judged when they came.
A restored minute last touched later than the clock now says (the clock
went back while the server was down, which no ``step`` line tells) is
taken as touched now: it waits its grace, not the clock's way back to then.

Each line carries an HMAC (with a key kept in the journal directory, made
when first needed) because native payloads are journaled as they arrived: a sender
could put a ``#!edge`` line in a datagram, and a replay must not take it for
the edge's own.  (A byte changed on the disk is caught before, by the
checksum of the journal write holding the line: journal.check_units.)  A
line that passes both and cannot be read back is skipped and counted; JSON
is read with ``inputfile.json_loads``, so one nested past the parser is such
a line, not a RecursionError that stops the start.  A checkpoint is read whole
(``MinuteAssembler.read_state``) before any of it is applied: one that cannot
be is such a line too, and never leaves the assembler half replaced.  One the
crash cut short is in a write cut short, which no replay reads.
"""

import base64
import contextlib
import hmac
import json
import logging
import os
import secrets
from hashlib import sha256

from vmstats import protocol
from vmstats.inputfile import json_loads
from vmstats.server.formats import BOUND_OPTIONS, Bounds, Decoder, Sample, Tally
from vmstats.server.formats.interfaces import VirtualInterfaces
from vmstats.server.journal import read_segments
from vmstats.server.ownfiles import read_file
from vmstats.words import counted

log = logging.getLogger(__name__)

PREFIX = b"#!edge "
#: Least seconds between two checkpoints while other agents send: a checkpoint of 10,000 VMs
#: takes ~0.15 s of the reactor, too much for every flush at a short --flush-interval.  Until
#: one is due, retiring waits (the segments stay a little longer, and are replayed if need be).
CHECKPOINT_SECONDS = 30.0
KEY_FILE = "edge.key"
#: Hex digits of the HMAC kept in each line: 128 bits.
MAC_DIGITS = 32
#: Settings the version before journaled in each payload's line, not in a ``settings`` line: a
#: replay of its journal takes them from there.
LEGACY_SETTINGS = ("max_line", "vm_tag")


def load_key(directory: str) -> tuple[bytes, bool]:
    """The journal directory's edge key, made (durably, owner-only) the first time, and
    whether it is in that file (False: kept in memory for this run).

    Something other than a file in its place stops the start (the server checks the path
    before it listens).  The key is first needed on the receive path, though, long after:
    a key file that cannot be read or written then (a folder put there since, a disk gone
    read-only) must not lose the payloads that arrive, so the edge signs with a key kept in
    memory, says once that a crash of this run would lose its open minutes, and /metrics shows
    it (``vmstats_edge_key_in_memory``).  A file too short to be a key (damaged) is replaced,
    said too: the lines signed with the old key can no longer be told from forged ones.
    """
    path = os.path.join(directory, KEY_FILE)
    try:
        key = read_file(path, "edge journal key").strip()
    except OSError as exc:
        return _key_in_memory(path, "cannot be read", exc), False
    if len(key) >= 32:
        return key, True
    if os.path.lexists(path):
        log.warning("journal: %s holds no key (%d bytes): a new one is made", path, len(key))
    key = secrets.token_hex(32).encode("ascii")
    problem = store_key(directory, key)
    if problem is not None:
        return _key_in_memory(path, "cannot be written", problem), False
    return key, True


def store_key(directory: str, key: bytes) -> OSError | None:
    """Write ``key`` to the directory's key file durably, owner-only; the error if it could not."""
    path = os.path.join(directory, KEY_FILE)
    temp = path + ".new"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, key + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
        folder = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        return exc
    return None


def _key_in_memory(path: str, what: str, exc: OSError) -> bytes:
    """A key for this run only, when the key file cannot be used (logged once: it is read once)."""
    log.error("journal: the edge key %s %s (%s): this run's edge lines are signed with a key "
              "kept in memory, so a crash would lose the edge's open minutes; move it aside",
              path, what, exc.strerror or exc)
    return secrets.token_hex(32).encode("ascii")


def taken_under(assembler) -> dict:
    """What the assembler takes a payload's samples by, as each payload's line keeps it for a
    replay to repeat: the ``(max_future, max_past)`` its samples are judged by, the bounds it
    holds them by, and the grace that decides which minutes a VM's later samples complete (so
    which samples after them are late).  Of the settings that reach the assembler
    (edge.minute_assembler) only --virtual-interfaces is not here: it is applied to a minute
    as it is written, and journaled once after each checkpoint (``virtual`` lines,
    ``EdgeJournal._note_virtual``), not with each payload (tests/test_formats_replay_settings.py)."""
    return {"limits": [assembler.max_future, assembler.max_past], "bounds": assembler.bounds,
            "grace": assembler.grace}


def _seconds(value: float) -> str:
    """A --minute-grace as it is given: ``30s``, ``1.5s``."""
    return "%gs" % value


def _pending(state: dict) -> list[bytes]:
    """A checkpoint's records handed to the native path and not yet filed there."""
    pending = state["pending"]
    if not isinstance(pending, list) or not all(isinstance(text, str) for text in pending):
        raise TypeError("a checkpoint's pending records are not a list of strings")
    return [text.encode("utf-8") for text in pending]


def _patterns(raw: object) -> tuple[str, ...]:
    """A ``virtual`` line's JSON, checked: TypeError if it is not a list of patterns."""
    if not isinstance(raw, list) or not all(isinstance(text, str) for text in raw):
        raise TypeError("a virtual line holds no list of patterns")
    return tuple(raw)


def _samples(raw: object) -> list[Sample]:
    """A ``samples`` payload's JSON, checked: TypeError if it is not what ``payload`` writes."""
    if not isinstance(raw, list):
        raise TypeError("a samples payload holds no list")
    samples = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 5 and isinstance(item[0], str)
                and isinstance(item[2], str) and isinstance(item[3], str)
                and all(isinstance(item[k], (int, float)) and not isinstance(item[k], bool)
                        for k in (1, 4))):
            raise TypeError("a journaled sample is not [vm, time, kind, device, value]")
        samples.append(Sample(*item))
    return samples


class EdgeJournal:
    """Writes the edge's lines to the journal and reads them back after a crash."""

    def __init__(self, journal, edge, directory: str):
        self.journal = journal
        self.edge = edge
        self.directory = directory
        self._key: bytes | None = None
        #: The key could not be kept in its file: a crash of this run loses the open minutes.
        self.key_in_memory = False
        #: The segment holding the newest checkpoint while it is still open (None: none there),
        #: and whether anything happened since: if not, retiring needs no new one.
        self.checkpoint_in: int | None = None
        self.changed = False
        #: Did the newest checkpoint hold nothing at all (or was none needed yet)?  Then none is
        #: needed until something changes: a server without other agents writes none.
        self.saved_empty = True
        self.checkpoints = 0
        #: ``#!edge`` lines found at start without this journal's HMAC (forged in a payload).
        self.forged = 0
        #: ``#!edge`` lines with this journal's HMAC that could not be read back at start.
        self.unreadable = 0
        #: Of the last replay: payloads taken under other settings than this run's (replayed by
        #: those), those bounds (the assembler's), and what they kept past this run's: samples
        #: naming a device longer, lines longer than --max-line.
        self.other_settings = 0
        self.bounds_then: set[Bounds] = set()
        #: Of the last replay: the --minute-grace values other than this run's it repeated by,
        #: and this run's (which the minutes restored wait by from the start on).
        self.grace_then: set[float] = set()
        self.grace_now = 0.0
        self.kept_long = self.kept_lines = 0
        #: Of the last replay: the decoders' settings other than this run's it read by, by the
        #: option that sets each (``Decoder.options``): the values then (a list's, Graphite's
        #: templates, as a tuple), and this run's.
        self.settings_then: dict[str, tuple[set, object]] = {}
        #: Of the last replay: format -> payloads it read by settings other than this run's
        #: although the format takes no new input now (its port off: no change an operator
        #: made to how it reads), and those settings' options.
        self.port_off: dict[str, tuple[int, list[str]]] = {}
        #: (format, settings as JSON) -> the decoder a replay reads payloads taken under those
        #: settings with (``Decoder.from_settings``).
        self._replicas: dict[tuple[str, str], Decoder] = {}
        #: Formats whose settings line (``_note``) is in the journal since the last checkpoint.
        self._noted: set[str] = set()
        #: Is the --virtual-interfaces line (``_note_virtual``) there since the last checkpoint?
        self._listed = False
        #: Of the last replay: the minutes it completed by a --virtual-interfaces list other
        #: than this run's (journaled by the run that completed them), and those lists.
        self.written_then = 0
        self.virtual_then: set[tuple[str, ...]] = set()
        #: What ``take`` kept for ``settle``: the last checkpoint read whole, the lines after.
        self._entries: list[tuple[bytes, object]] = []
        #: The records ``settle`` completed again, to be written.
        self.restored = b""
        self.last_checkpoint: float | None = None
        #: Set at shutdown: the last checkpoint is written whenever the final flush retires.
        self.closing = False
        journal.after_remade.append(self.remade)

    @property
    def key(self) -> bytes:
        """The HMAC key, read (or made) when first needed: a server that never hears from other
        agents leaves nothing of the edge in the journal directory."""
        if self._key is None:
            self._key, durable = load_key(self.directory)
            self.key_in_memory = not durable
        return self._key

    def remade(self) -> None:
        """The journal directory was removed under the server, and its key file and newest
        checkpoint with it.  The key this run signs with is written again before the new
        segment takes a line (a restart would otherwise make another and take every line
        since for forged), and the next retire writes a checkpoint whether it is due or not
        (the open minutes' samples from before are in memory only)."""
        self.last_checkpoint = None
        self.changed = True
        self.checkpoint_in = None
        self._noted.clear()  # the new segment holds none of them
        self._listed = False
        if self._key is None or self.key_in_memory:
            return  # made when first needed, or never in a file this run
        problem = store_key(self.directory, self._key)
        if problem is not None:
            self.key_in_memory = True
            _key_in_memory(os.path.join(self.directory, KEY_FILE), "cannot be written again",
                           problem)

    # -- writing ---------------------------------------------------------------------------------
    def _line(self, body: bytes) -> bytes:
        mac = hmac.new(self.key, body, sha256).hexdigest()[:MAC_DIGITS].encode("ascii")
        return PREFIX + mac + b" " + body + b"\n"

    def payload(self, name: str, now: float, options: dict | None, data: bytes,
                samples: list | None = None) -> int:
        """Journal a payload whose samples are going into the assembler; returns its write.

        A format whose decoder says ``journal_samples`` (collectd) is journaled as ``samples``
        (its encoding): what it was decoded to, which a replay takes as it is."""
        since = self.journal.next_write()
        if not self._listed:
            self._note_virtual()
        if name not in self._noted:
            self._note(name)
        opts = {"divisor": options.get("divisor"), "errors": "errors" in options} if options \
            else {}
        opts.update(taken_under(self.edge.assembler))
        decoder = self.edge.decoders.get(name)
        if samples is not None and decoder is not None and decoder.journal_samples:
            encoding = b"samples"
            text = json.dumps([list(sample) for sample in samples],
                              separators=(",", ":")).encode("ascii")
        elif b"\0" in data:
            encoding, text = b"b64", base64.b64encode(data)
        else:
            encoding, text = b"nul", data.replace(b"\n", b"\0")
        self.journal.append(self._line(b"in %s %r %s %s %s" % (
            name.encode("ascii"), now, json.dumps(opts, separators=(",", ":")).encode("ascii"),
            encoding, text)))
        self.changed = True
        return since

    def _note(self, name: str) -> None:
        """Journal what format ``name`` decodes by (``Decoder.settings``: its templates, its
        --max-line, the tag naming the VM), before its first payload since the last checkpoint:
        a replay reads the payloads after it by those, until the next such line (a restart
        writes its own before its first payload).  Not for a format journaled as the samples
        its payloads were decoded to, which a replay never decodes again."""
        self._noted.add(name)
        decoder = self.edge.decoders.get(name)
        if decoder is not None and not decoder.journal_samples:
            self.journal.append(self._line(b"settings %s %s" % (
                name.encode("ascii"),
                json.dumps(decoder.settings(), separators=(",", ":")).encode("utf-8"))))

    def _note_virtual(self) -> None:
        """Journal the --virtual-interfaces patterns the minutes are written by, before the
        first line after a checkpoint that may complete one (``in``, ``done``): a replay
        completes the minutes after it by them, as this run wrote them.  A line every
        checkpoint, not with each payload: the default list is some 400 bytes."""
        self._listed = True
        self.journal.append(self._line(b"virtual " + json.dumps(
            list(self.edge.assembler.virtual.patterns), separators=(",", ":")).encode("utf-8")))

    def completed(self, keys: list[tuple[str, int]]) -> None:
        """Journal minutes the clock completed (the replay completes them at the same point)."""
        if keys:
            if not self._listed:
                self._note_virtual()
            self.journal.append(self._line(b"done " + json.dumps(keys).encode("utf-8")))
            self.changed = True

    def stepped(self, step: float) -> None:
        """Journal a step of the wall clock the open minutes moved with (a replay moves them
        at the same point: the arrival times journaled before it are the old clock's)."""
        self.journal.append(self._line(b"step %r" % step))
        self.changed = True

    def checkpoint(self) -> bool:
        """Before segments are retired: the whole state, on disk (False keeps the segments)."""
        journal = self.journal
        if not self.changed and (self.saved_empty or (journal.fd is not None
                                                      and journal.number == self.checkpoint_in)):
            return True  # nothing to keep, or the newest checkpoint is in the open segment
        now = journal.reactor.seconds()
        if (not self.closing and self.last_checkpoint is not None
                and now - self.last_checkpoint < CHECKPOINT_SECONDS):
            return False  # not due yet: the segments wait for a later retire
        state = self.edge.assembler.state()
        state["pending"] = [payload.decode("utf-8") for payload in self.edge.unfiled.values()]
        empty = not any(state.values())
        journal.append(self._line(b"state " + json.dumps(state, separators=(",", ":"))
                                  .encode("utf-8")))
        if not journal.write_through():
            self.checkpoint_in = None
            log.error("the edge's checkpoint could not be written: journal segments are kept")
            return False
        self.checkpoint_in = journal.number if journal.fd is not None else None
        self.changed = False
        self._noted.clear()  # the segments before it go: their settings lines with them
        self._listed = False
        self.saved_empty = empty
        self.last_checkpoint = now
        self.checkpoints += 1
        return True

    # -- reading back ----------------------------------------------------------------------------
    def lines(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """``(kind, rest)`` of every whole ``#!edge`` line of a segment with a valid HMAC."""
        found = []
        marker = b"\n" + PREFIX
        at = 0 if data.startswith(PREFIX) else (data.find(marker) + 1 or -1)
        while at >= 0:
            end = data.find(b"\n", at)
            if end < 0:
                break  # torn by the crash: nothing acknowledged it
            mac, _sep, body = data[at + len(PREFIX):end].partition(b" ")
            expected = hmac.new(self.key, body, sha256).hexdigest()[:MAC_DIGITS].encode("ascii")
            if hmac.compare_digest(mac, expected):
                kind, _sep, rest = body.partition(b" ")
                found.append((kind, rest))
            else:
                self.forged += 1
            at = data.find(marker, end) + 1 or -1
        return found

    def restore(self, segments: list[tuple[int, str]]) -> bytes:
        """Rebuild the assembler from ``segments`` read here (``take``, then ``settle``);
        returns the records to write again.  The server's start hands ``take`` the replay's
        pieces instead (replay.replay's ``readers``), so each segment is read and checked once."""
        for _number, data in read_segments(segments, "the edge"):
            self.take(data)
        return self.settle()

    def take(self, data: bytes) -> None:
        """Keep the last checkpoint in whole lines of leftover segments (their checked units,
        in order) and the lines after it, for ``settle``."""
        if PREFIX[:1] not in data:  # a memchr: most pieces hold records alone
            return
        for kind, rest in self.lines(data):
            if kind == b"state":
                try:  # read whole here: one that cannot be must not drop what came before
                    raw = json_loads(rest)
                    state, pending = self.edge.assembler.read_state(raw), _pending(raw)
                except (ValueError, KeyError, TypeError) as exc:
                    self.unreadable += 1
                    log.error("journal: an edge checkpoint could not be read (skipped): %s",
                              exc)
                    continue
                self._entries = [(kind, (state, pending))]
            else:
                self._entries.append((kind, rest))

    def settle(self) -> bytes:
        """Apply what ``take`` kept: the checkpoint whole, then the lines after it.  Returns the
        records to write again (``restored`` holds them too).

        Nothing is counted twice: the decoders' tallies and the assembler's events of the
        replay are not the live counters'.
        """
        entries, self._entries = self._entries, []
        if self.forged:  # said even when no line is left: a damaged segment's one trace in the log
            log.warning("journal: %s without this journal's HMAC ignored (sent "
                        "inside payloads, or the key file %s changed)", counted(self.forged, "#!edge line"),
                        KEY_FILE)
        if not entries:
            self.restored = b""
            return self.restored
        edge = self.edge
        assembler = edge.assembler
        events = (dict(assembler.events), dict(assembler.rates.events))
        pending: list[bytes] = []
        replayed = 0
        current = assembler.bounds
        grace = self.grace_now = assembler.grace
        virtual = assembler.virtual
        #: Format -> the settings its payloads were taken under (``_note``), as met.
        settings: dict[str, dict] = {}
        self.other_settings = self.kept_long = self.kept_lines = 0
        self.bounds_then = set()
        self.grace_then = set()
        self.settings_then = {}
        self.port_off = {}
        self.written_then = 0
        self.virtual_then = set()
        try:
            for kind, rest in entries:
                other_list = assembler.virtual is not virtual
                if other_list:
                    before = assembler.events["records"]
                try:
                    if kind == b"state":  # read whole by take: adopting it cannot fail halfway
                        state, pending = rest
                        assembler.adopt(state)
                    elif kind == b"in":
                        name, now, options, encoding, text = rest.split(b" ", 4)
                        data = (base64.b64decode(text) if encoding == b"b64"
                                else _samples(json_loads(text)) if encoding == b"samples"
                                else text.replace(b"\0", b"\n"))
                        name = name.decode("ascii")
                        self._repeat(name, float(now), json_loads(options), data, current,
                                     settings.get(name))
                        replayed += 1
                    elif kind == b"settings":
                        name, _sep, text = rest.partition(b" ")
                        name = name.decode("ascii")
                        settings[name] = self._taken_by(name, json_loads(text))
                    elif kind == b"virtual":
                        patterns = _patterns(json_loads(rest))
                        assembler.virtual = (virtual if patterns == virtual.patterns
                                             else VirtualInterfaces(patterns))
                    elif kind == b"done":
                        assembler.complete([(vm, end) for vm, end in json_loads(rest)])
                    elif kind == b"step":
                        assembler.clock_stepped(float(rest))
                except (ValueError, KeyError, TypeError) as exc:  # a bug, a changed format, or
                    # a line written with the key by someone else (nested past the parser, say)
                    self.unreadable += 1
                    log.error("journal: an edge line could not be replayed (skipped): %s", exc)
                if other_list:
                    written = assembler.events["records"] - before
                    if written:
                        self.written_then += written
                        self.virtual_then.add(assembler.virtual.patterns)
        finally:
            assembler.bounds = current  # what comes now is judged by this run's bounds
            assembler.grace = grace  # and waited for by this run's grace
            assembler.virtual = virtual  # and written by this run's list
        self._replicas.clear()
        if self.other_settings:
            self._say_settings(current)
        if self.written_then:
            log.warning("edge: minutes completed before the restart written by the "
                        "--virtual-interfaces the run before completed them under, as it "
                        "wrote them (%s, %s); the minutes still open are written by this run's",
                        counted(self.written_then, "minute"),
                        counted(len(self.virtual_then), "other list"))
        for name, (payloads, options) in self.port_off.items():
            title = edge.decoders[name].title
            log.warning("edge: %s replayed by the %s they were taken under, although the %s "
                        "port is off now", counted(payloads, "journaled %s payload" % title),
                        " and ".join(options), title)
        for counter, saved in zip((assembler.events, assembler.rates.events), events,
                                  strict=True):
            counter.clear()
            counter.update(saved)
        assembler.touched_by(edge.clock())
        self.changed = True  # the segments replayed go: the next retire writes a checkpoint
        records = protocol.encode_records(assembler.take())
        log.info("edge: %s replayed after the checkpoint; %s restored, %s to write again",
                 counted(replayed, "payload"), counted(assembler.open_count, "open minute"),
                 counted(len(records) + len(pending), "record"))
        self.restored = b"\n".join(pending + records)
        return self.restored

    def _taken_by(self, name: str, raw: object) -> dict:
        """A ``settings`` line's JSON: the settings of format ``name`` its payloads after it
        were taken under (those it lacks, of a journal from before they were journaled: this
        run's).  TypeError or ValueError if no decoder can be made from them, so that the line
        is counted unreadable, not each payload after it."""
        decoder = self.edge.decoders.get(name)
        if decoder is None:
            raise ValueError("settings of a format this server does not read: %r" % name)
        if not isinstance(raw, dict):
            raise TypeError("a settings line holds no object")
        then = {**decoder.settings(), **raw}
        self._replica(name, then)
        return then

    def _replica(self, name: str, settings: dict) -> Decoder:
        """The decoder of format ``name`` made from ``settings`` (one a replay per set)."""
        key = (name, json.dumps(settings, sort_keys=True))
        replica = self._replicas.get(key)
        if replica is None:
            replica = self._replicas[key] = type(self.edge.decoders[name]).from_settings(settings)
        return replica

    def _repeat(self, name: str, now: float, options: dict, data: bytes | list,
                current: Bounds, settings: dict | None) -> None:
        """Decode a journaled payload again (``data`` a list: the samples it was decoded to)
        and add its samples by the limits, the bounds, the grace and the format's ``settings``
        they were taken under (None: none journaled, this run's)."""
        decoder = self.edge.decoders.get(name)
        if decoder is None:  # every format's decoder is built, its port on or off (edge.decoders)
            raise ValueError("a payload of a format this server does not read: %r" % name)
        assembler = self.edge.assembler
        bounds = Bounds(*map(int, options["bounds"])) if "bounds" in options else current
        assembler.bounds = bounds
        # The grace decides which minutes a VM's later samples complete, and so which samples
        # after them are late: repeated by the one the payload was taken under.
        grace = float(options.get("grace", self.grace_now))
        assembler.grace = grace
        other = bounds != current or grace != self.grace_now
        if bounds != current:
            self.bounds_then.add(bounds)
        if grace != self.grace_now:
            self.grace_then.add(grace)
        if isinstance(data, list):  # decoded when it came: by no setting of this run
            self.other_settings += other
            self._add(data, now, options, Tally(), bounds, current)
            return
        ours = decoder.settings()
        then = dict(ours if settings is None else settings)
        for key in LEGACY_SETTINGS:  # the version before journaled these in each payload's line
            if options.get(key) and key in then:
                then[key] = options[key]
        differ = [key for key in ours if then[key] != ours[key]]
        reading = self.edge.reads(name)
        if differ and not reading:  # its settings read nothing new now: no change to be told
            payloads, said = self.port_off.get(name, (0, []))
            named = [decoder.options.get(key, key) for key in differ]
            self.port_off[name] = (payloads + 1, said + [one for one in named if one not in said])
        if other or (differ and reading):
            self.other_settings += 1
            for key in differ if reading else ():
                value = then[key]
                values, _ours = self.settings_then.setdefault(decoder.options.get(key, key),
                                                              (set(), ours[key]))
                values.add(tuple(value) if isinstance(value, list) else value)
                if key == "max_line" and value > ours[key]:
                    self.kept_lines += sum(len(line) > ours[key] for line in data.split(b"\n"))
        if differ:
            decoder = self._replica(name, then)
        kwargs: dict = {}
        if options.get("divisor"):
            kwargs["divisor"] = options["divisor"]
        if options.get("errors"):
            kwargs["errors"] = []
        tally = Tally()
        self._add(decoder.decode(data, now, tally, **kwargs), now, options, tally, bounds,
                  current)

    def _add(self, samples: list, now: float, options: dict, tally: Tally, bounds: Bounds,
             current: Bounds) -> None:
        """A journaled payload's samples into the assembler, judged by the limits they were
        judged by then (journals before these were journaled: this run's)."""
        if samples:
            assembler = self.edge.assembler
            room = self.edge.vm_room
            limits = options.get("limits")
            refused: list = []
            assembler.add(samples, now, tally, refused,
                          limits=(int(limits[0]), int(limits[1])) if limits else None)
            if options.get("errors") and room is not None:
                # A write API body was acknowledged (204 or 400): the VMs it had samples of taken
                # are known again, past --max-vms if need be (a cap lowered since, or a version
                # that judged VMs only as their minutes completed), so the minutes it went into
                # are written.  One all of whose samples were refused was not known then either.
                room.know_taken(samples, refused)
            # Past a name bound lowered since, the samples taken are counted (the others are
            # not: which of them this run's bounds would refuse depends on all that came before).
            if bounds.name_bytes > current.name_bytes:
                self.kept_long += assembler.named_past(samples, current.name_bytes, refused)

    def _say_settings(self, current: Bounds) -> None:
        """One line when a replay took payloads by settings other than this run's (an operator
        changed an edge bound, --minute-grace, --max-line, --influx-vm-tag or
        --graphite-template between the crash and this start): what the journal holds was
        acknowledged under them, so it is written by them; what comes now is taken by the new
        ones."""
        then = self.bounds_then
        changed = ["%s %s (now %d)" % (
            BOUND_OPTIONS[field], "/".join(str(value) for value in
                                           sorted({getattr(old, field) for old in then})),
            getattr(current, field))
            for field in Bounds._fields if any(getattr(old, field) != getattr(current, field)
                                              for old in then)]
        if self.grace_then:
            changed.append("--minute-grace %s (now %s)" % (
                "/".join(map(_seconds, sorted(self.grace_then))), _seconds(self.grace_now)))
        for option, (values, ours) in self.settings_then.items():
            if any(isinstance(value, tuple) for value in values):  # many and long: counted
                changed.append("%s of %s" % (counted(len(values), "other set"), option))
            else:
                changed.append("%s %s (now %s)" % (option, "/".join(map(str, sorted(values))),
                                                   ours))
        kept = []
        if self.kept_long:
            kept.append("%s naming a device longer than --edge-max-name-bytes (%d)"
                        % (counted(self.kept_long, "sample"), current.name_bytes))
        if self.kept_lines:
            kept.append("%s longer than --max-line (%d)" % (counted(self.kept_lines, "line"),
                                                            self.settings_then["--max-line"][1]))
        log.warning("edge: %s taken under other settings (%s) replayed by those, as they "
                    "were acknowledged%s; new input is taken by this run's",
                    counted(self.other_settings, "journaled payload"), ", ".join(changed),
                    "; kept past this run's: " + " and ".join(kept) if kept else "")
