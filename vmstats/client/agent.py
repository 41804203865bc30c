"""The agent's loop: sample every sub-interval, push one record per interval.

Timing: intervals are laid on the monotonic clock from one anchor, so they
do not drift however long a send takes.  Each record is stamped with the
wall clock when its interval ends, read afresh every time so an NTP step at
boot does not leave every later record off by the step; a stamp that would
not move forward (rounding, a small step back) becomes the previous one plus
one second, because the server keeps one record per (vm, ts).  The last stamp is kept on disk
(laststamp.py): a clock behind it at the next start (a reboot without time sync) has records
stamped on from it as time goes by instead, until it catches up (Agent.stamp); a clock set back
while the agent was stopped (in the boot that kept the stamp, or by time sync) is met as a
running agent meets a step back (Agent.kept_stamp).
No record is made while the clock is not set (before protocol.FIRST_STAMP: every such stamp is
refused), nor after a step back that the server took the stamps before, until the clock passes
the last stamp sent: such intervals are counted (Agent.withheld) and spend no ``seq``.
Before the first interval the agent waits a random part of ``--jitter``, so a
fleet booted together does not send in the same second.

Sleeping is a select() on a self-pipe that SIGTERM/SIGINT write to, so a
stop request is answered at once without polling; a TCP agent then makes one
last delivery attempt and anything still unacknowledged stays in the spool
for the next start.  SIGHUP does not stop the agent: it looks the server up
again and a TCP agent delivers its spool at once (Agent.hangup).

Standard library only, Python 3.6+.
"""

import collections
import logging
import os
import random
import select
import signal
import socket
import sys
import threading
import time

from vmstats import protocol
from vmstats.client import cgroup, clocksync, laststamp, procfs, sampler, spool, transport
from vmstats.client.hostfile import DEFAULT_HOST_FILE, HostSource, host_tag
from vmstats.words import counted

LOG = logging.getLogger("vmstats.agent")
#: Where ``--once`` without ``--server`` looks for a route to pick the VM id
#: (TEST-NET-1: never contacted, only used to ask for the default route).
_ROUTE_PROBE = "192.0.2.1"
#: ``--count``'s exit status when records were made but not all acknowledged (they stay spooled).
LEFT_IN_SPOOL = 3
#: A wall clock this far (s) behind the monotonic clock's progress was stepped back.
CLOCK_STEP = 5.0
#: How long (s) the stamps of the records sent are remembered, so that a clock stepped back
#: never stamps a record with a second already used: the server keeps one record per (VM,
#: second) and took the new one for a resend of the old.  Its --max-future (300 s) refused
#: the records of a clock that was further ahead, so they cannot collide.
RECENT_STAMPS = 600.0


class AgentError(Exception):
    """The agent cannot start (one readable line); ``status`` is its exit status: 1, or 2 for a
    bad setting (the unit does not restart after it: only an edit mends it)."""

    def __init__(self, message, status=1):
        Exception.__init__(self, message)
        self.status = status


def vm_identity(config):
    """``(vm_id, host source)``, the id validated as the server will validate it."""
    if config.vm_id:
        raw = config.vm_id
    elif config.server:
        raw = address_towards(config.server)
    else:
        try:
            raw = transport.local_address(_ROUTE_PROBE, protocol.DEFAULT_PORT)
        except transport.TransportError:
            raw = host_tag(socket.gethostname()) or "localhost"
    try:
        vm = protocol.normalize_vm_id(raw)
    except protocol.DecodeError as exc:
        raise AgentError("bad VM id: %s" % exc.detail)
    return vm, host_source(config)


def address_towards(server):
    """The VM's source address towards ``server`` (``HOST:PORT``): its default id."""
    host, port = transport.parse_server(server)
    return transport.local_address(host, port)


def host_source(config):
    """The ``host`` tag's source, in the documented order (hostfile.py)."""
    if config.host is not None:
        return HostSource(fixed=config.host)
    return HostSource(path=config.host_file or DEFAULT_HOST_FILE)


def make_sender(config):
    """The UDP or TCP sender for the settings; AgentError on unusable ones."""
    try:
        host, port = transport.parse_server(config.server)
        signer = transport.Signer.from_file(config.key_file) if config.key_file else None
        if config.transport == "udp":
            return transport.UdpSender(host, port, signer)
        # Resolve now so a bad name fails at start, not at the first send.
        transport.resolve(host, port, socket.SOCK_STREAM)
        files = (config.machine_id_file,) if config.machine_id_file else spool.MACHINE_ID_FILES
        machine = spool.machine_id(files)
        if machine is None:
            LOG.info("no machine id in %s: spool %s is not checked for records an image brought "
                     "from another machine", " or ".join(files), config.spool_dir)
        store = spool.Spool(config.spool_dir, config.spool_max, machine)
        return transport.TcpSender(host, port, store, signer, timeout=config.timeout,
                                   backoff=transport.Backoff(maximum=config.backoff_max))
    except (transport.TransportError, spool.SpoolError) as exc:
        raise AgentError(str(exc), 2 if isinstance(exc, transport.KeyFileError) else 1)


class Sleeper(object):
    """Sleeps until a deadline or a stop signal, whichever comes first.

    SIGHUP wakes it without stopping it: ``on_hangup`` runs (outside the signal handler) and
    the sleep goes on.  Its default action ended the agent at once, without the last delivery,
    and systemd counts a death by SIGHUP as a clean exit, so ``Restart=on-failure`` did not
    start it again: one habitual ``kill -HUP`` (a "reload") and the VM reported nothing more.
    A SIGHUP ignored on purpose (``nohup``) is left ignored.
    """

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.stopped = False
        self.signal = None
        #: When (on ``clock``) the stop was asked for, or None.
        self.stopped_at = None
        #: Called with no argument after a SIGHUP, at the next wake-up.
        self.on_hangup = None
        self._hangups = 0
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            handlers = [(n, signal.signal(n, self._on_signal))
                        for n in (signal.SIGTERM, signal.SIGINT)]
            if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
                handlers.append((signal.SIGHUP, signal.signal(signal.SIGHUP, self._on_hangup)))
            self._previous = (signal.set_wakeup_fd(self._write), handlers)

    def _on_signal(self, number, _frame):
        # No logging here: the handler may run while the logging lock is held.
        self.signal = number
        self.stopped_at = self.clock()
        self.stopped = True

    def _on_hangup(self, _number, _frame):
        self._hangups += 1

    def _hung_up(self):
        """Run ``on_hangup`` once for the SIGHUPs received since the last call."""
        if self._hangups and not self.stopped:
            self._hangups = 0
            if self.on_hangup is not None:
                self.on_hangup()

    def stop(self):
        self.stopped_at = self.clock()
        self.stopped = True
        try:
            os.write(self._write, b"x")
        except OSError:
            pass

    def until(self, deadline):
        """False if stopped before ``deadline`` (monotonic seconds)."""
        while not self.stopped:
            remaining = deadline - self.clock()
            if remaining <= 0:
                return True
            ready, _w, _x = select.select([self._read], [], [], remaining)
            if ready:
                try:
                    os.read(self._read, 512)
                except OSError:
                    pass
            self._hung_up()
        return False

    def close(self):
        if self._previous is not None:
            wakeup_fd, handlers = self._previous
            signal.set_wakeup_fd(wakeup_fd)
            for number, handler in handlers:
                signal.signal(number, handler)
            self._previous = None
        os.close(self._read)
        os.close(self._write)


class Agent(object):
    """Samples and sends; ``run()`` returns the number of records produced."""

    def __init__(self, config, sender, vm, host, sleeper=None, rng=None,
                 clock=time.monotonic, wall=time.time, last=None):
        self.config = config
        self.sender = sender
        self.vm = vm
        # A plain name (or None) is a fixed tag; a HostSource may follow a file.
        self.host = host if isinstance(host, HostSource) else HostSource(fixed=host)
        self.sleeper = sleeper or Sleeper(clock)
        if hasattr(self.sleeper, "on_hangup"):
            self.sleeper.on_hangup = self.hangup
        self.rng = rng or random.Random()
        self.clock = clock
        self.wall = wall
        self.sampler = sampler.IntervalSampler(config.proc_root, clock, measure=config.measure)
        self.seq = 0
        #: When (on ``clock``) an id taken from the VM's address was last taken (Agent.vm_now).
        self._vm_taken_at = clock()
        self.last_ts = None
        self._last_clocks = None
        self._recent = collections.deque(
            maxlen=min(4096, max(16, int(RECENT_STAMPS / config.interval) + 1)))
        #: Intervals whose record was not made: the clock not set, or stepped back behind the
        #: stamps sent (Agent.stamp); and the wall-clock time the clock was first seen unset.
        self.withheld = 0
        self._unset_at = None
        #: After a step back that the server took the stamps before (Agent.stamp, kept_stamp):
        #: the last stamp sent, which the clock must pass before records are made again; else
        #: None.
        self._held_to = None
        #: The sender's count of records refused as stamped ahead, when last looked at.
        self._refused_ahead = 0
        #: Where the last stamp is kept (laststamp.LastStamp), or None.
        self.last = last
        #: The stamp a record must come after, while the clock is behind the one kept, and when
        #: (on ``clock``) it was given (None for the one kept from before the start).  A clock
        #: not set yet (clock_set) judges no kept stamp: it is read once the clock is.
        now = wall()
        self._floor = self.kept_stamp(now) if last is not None and clock_set(now) else None
        self._floor_unread = last is not None and not clock_set(now)
        self._floor_at = None

    def stamp(self):
        """The wall-clock second of an interval's end, increasing record to record; None when no
        record is to be made for the interval (``withheld``).

        A clock before protocol.FIRST_STAMP is not set (a VM booted without a hardware clock,
        before time sync): the server refuses every record it stamps, and they were sent (and
        spooled) for nothing.  No record is made, so no ``seq`` is spent on one (the server
        would count the gap as records lost), it is said once, and records are made again
        once the clock is set (clock_unset).

        The wall clock is compared with the monotonic one: falling behind it
        by more than CLOCK_STEP is a step back (NTP correcting a fast clock),
        and the new time is taken; otherwise a stamp that would not move
        forward becomes the previous one plus one.  Either way a second
        already used in the last RECENT_STAMPS becomes the next free one: a
        step back by a whole number of intervals (two minutes, exactly) gave
        the next records the very stamps of records already sent.

        A clock behind the last stamp kept from before this start (a reboot
        of a guest whose clock starts behind, without time sync) is not
        followed back: the first record is stamped one interval after it, each
        next one after the one before by the time gone by (on the monotonic
        clock), until the clock catches up.  Followed, it
        stamped records with seconds already sent, which the server dropped
        as resends, and between them, in time already measured; waiting for
        it would send nothing for as long as it is behind, for ever without
        time sync.  A clock known to have been set back since that stamp
        (kept_stamp) is met as a step back instead.
        """
        wall, mono = self.wall(), self.clock()
        if self.clock_unset(wall):
            return None
        ts = int(round(wall))
        if self._held_to is not None:
            if ts <= self._held_to:
                self._last_clocks = (wall, mono)
                self.withheld += 1
                LOG.debug("no record for this interval: the clock is %ds behind the last stamp "
                          "sent (%d not made)", self._held_to - ts, self.withheld)
                return None
            LOG.info("the clock is past the last stamp sent before it stepped back: records "
                     "are made again")
            self._held_to = None
        if self._last_clocks is not None:
            expected = self._last_clocks[0] + (mono - self._last_clocks[1])
            if wall < expected - CLOCK_STEP:
                back = expected - wall
                if self._floor is None and ts <= self.last_ts \
                        and back <= protocol.DEFAULT_MAX_FUTURE:
                    # The records stamped ahead were inside the server's window, and taken:
                    # stamped by the new time, the next ones fell among them (out of order, two
                    # in one interval's time), which no other record of the VM does.
                    LOG.warning("wall clock stepped back by %ds, %ds behind the last stamp sent: "
                                "the records stamped ahead before it were taken by the server "
                                "(within its --max-future), so none is made until the clock "
                                "passes that stamp, rather than stamped among them",
                                back, self.last_ts - ts)
                    self._held_to = self.last_ts
                    self._last_clocks = (wall, mono)
                    self.withheld += 1
                    return None
                LOG.warning("wall clock stepped back by %ds; stamping records by the new time%s",
                            back, "" if back <= protocol.DEFAULT_MAX_FUTURE else
                            " (the records stamped ahead before it were from the future to a "
                            "server whose clock is right: refused, over UDP unheard)")
            elif ts <= self.last_ts:
                ts = self.last_ts + 1
        if self._floor is not None:
            step = max(1, int(round(self.config.interval)))
            if ts < self._floor + step:
                if self.last_ts is None:
                    LOG.warning("the clock reads %d, less than one interval after the last stamp "
                                "sent before this start (%d): records are stamped on from that "
                                "one as time goes by%s", ts, self._floor, self._floor_kept(ts))
                gone = step if self._floor_at is None else int(round(mono - self._floor_at))
                ts = self._floor = self._floor + max(1, gone)
                self._floor_at = mono
            else:
                self._floor = None
        while ts in self._recent:
            ts += 1
        self._recent.append(ts)
        self.last_ts = ts
        self._last_clocks = (wall, mono)
        return ts

    def kept_stamp(self, now):
        """The stamp kept from before this start that records are to be stamped after (the
        floor, Agent.stamp), or None.

        A clock behind the kept stamp at start is one read behind at boot (a hardware clock
        kept in local time, no time sync), which stamping on from the kept stamp mends, or one
        set right while the agent was stopped after it ran ahead.  Stamped on from the kept
        stamp, the second ran as far ahead as the first had, and past the server's --max-future
        (300 s) every record was refused as from the future, for as long as the clock had been
        ahead and after each restart; a UDP agent, which hears no refusal, went silent until an
        operator deleted ``last-stamp``.  Two things tell the second: the clock went back in
        the boot that kept the stamp (one read behind from a hardware clock comes with a
        reboot), or time sync has set it (clocksync.py).  A step back in this boot is then met
        as a running agent meets it (Agent.stamp): past --max-future the server refused what
        was stamped ahead, so the clock is followed at once (said once, and its stamp kept);
        within it the server took those records, so none is made until the clock passes the
        kept stamp, rather than stamped among them.  Without either, the kept stamp is stamped
        on from; a TCP agent still hears a refusal (heed_refusals).
        """
        stamp = self.last.load(now)
        if stamp is None or stamp <= now:
            return stamp
        ahead = int(round(stamp - now))
        if self.last.this_boot and ahead <= protocol.DEFAULT_MAX_FUTURE:
            LOG.warning("the clock reads %d, %ds behind the last stamp sent before this start "
                        "(%d) in this boot: it was set back while the agent was stopped, and the "
                        "server took the records stamped ahead before (within its --max-future), "
                        "so none is made until the clock passes that stamp, rather than stamped "
                        "among them", now, ahead, stamp)
            self._held_to = self.last_ts = stamp
            return None
        if self.last.this_boot:
            why = "was set back in this boot while the agent was stopped"
        elif ahead > protocol.DEFAULT_MAX_FUTURE and clocksync.synchronized():
            why = "has been set by time sync"
        else:
            return stamp
        LOG.warning("the last stamp kept in %s (%d) is %ds ahead of the clock, which %s: the "
                    "clock that gave it was ahead, and the server refuses records stamped on "
                    "from it as from the future (past its --max-future, %ds); records are "
                    "stamped by the clock", self.last.path, stamp, ahead, why,
                    protocol.DEFAULT_MAX_FUTURE)
        self.last.save(int(now))
        return None

    def _floor_kept(self, ts):
        """The end of the warning that records are stamped on from the kept stamp: until the
        clock catches up, for a clock behind; a clock right after one ahead never does."""
        if self._floor - ts <= protocol.DEFAULT_MAX_FUTURE:
            return ", until the clock catches up"
        return (", until the clock catches up (time sync stepping it); if it was the clock "
                "before this start that was ahead, they are refused as from the future%s"
                % (": the server's acknowledgement will say so, and the clock is followed then"
                   if isinstance(self.sender, transport.TcpSender) else
                   ", unheard over UDP: start time sync, and the clock is followed at the next "
                   "start"))

    def clock_unset(self, wall):
        """Whether the clock, reading ``wall``, is not set yet (clock_set); said once as it
        is found unset and once as it is set again (the kept stamp is read then)."""
        if not clock_set(wall):
            self.withheld += 1
            LOG.debug("no record for this interval: the clock is not set (%d not made)",
                      self.withheld)
            if self._unset_at is None:
                self._unset_at = wall
                LOG.warning("the clock reads %d, before %d (2000-01-01): it is not set yet (no "
                            "hardware clock, time sync not done); no record is made until it "
                            "is, since the server refuses every stamp before then", wall,
                            protocol.FIRST_STAMP)
            return True
        if self._unset_at is not None:
            LOG.warning("the clock is set now (it reads %d): records are made again; %s not "
                        "made while it was not", wall, counted(self.withheld, "record"))
            self._unset_at = None
            self._last_clocks = None
        if self._floor_unread:
            self._floor_unread = False
            self._floor = self.kept_stamp(wall)
        return False

    def heed_refusals(self):
        """Stop stamping on from the last stamp kept once the server refuses records stamped
        ahead of this clock as from the future.

        A clock behind that stamp at start is either one behind (a reboot without time sync),
        which the kept stamp mends, or one set right after it ran ahead while the agent was
        stopped, which the kept stamp keeps ahead: every record was refused, for as long as the
        clock had been ahead, and again after each restart.  Where the boot id or time sync
        cannot tell the two apart at start (kept_stamp), only the server can, and a TCP agent
        hears it: on a refusal the clock is taken as right from the next record on, and its
        stamp replaces the one kept.  (A UDP agent hears nothing.)
        """
        refused = getattr(self.sender, "refused_ahead", 0)
        if refused == self._refused_ahead:
            return
        self._refused_ahead = refused
        now = int(round(self.wall()))
        if self._floor is None or not clock_set(now):
            return
        LOG.warning("the server refused records stamped on from the last stamp kept (%ds ahead "
                    "of this clock) as from the future: the clock was ahead before this start "
                    "and is right now; records are stamped by it again", self._floor - now)
        self._floor = self._floor_at = None
        self.last_ts = self._last_clocks = None
        if self.last is not None:
            self.last.save(now)

    def hangup(self):
        """SIGHUP: the server's name looked up again now, and a TCP spool delivered now rather
        than after the backoff's delay (an aggregator moved, or back).  Settings are read at
        start only: this is no reload, and the log says so."""
        LOG.info("SIGHUP: looking up server %s again%s; settings are read at start only "
                 "(restart the agent to change them)", self.config.server,
                 ", delivering the spool now" if isinstance(self.sender, transport.TcpSender) else "")
        self._vm_taken_at = float("-inf")
        look_up_again = getattr(self.sender, "look_up_again", None)
        if look_up_again is not None:
            look_up_again()
            self.sender.flush()

    def vm_now(self):
        """The VM id, a default one (the VM's address towards the server) taken again every
        transport.RESOLVE_EVERY seconds and after a SIGHUP.

        It was taken once at start: a VM whose address changed (a new DHCP lease, a clone's
        network set up after the agent started) went on sending as its old address, which the
        network may give another VM, so that two VMs' records were stored as one VM's.  A
        failed lookup keeps the id.
        """
        if self.config.vm_id or not self.config.server \
                or self.clock() - self._vm_taken_at < transport.RESOLVE_EVERY:
            return self.vm
        self._vm_taken_at = self.clock()
        try:
            vm = protocol.normalize_vm_id(address_towards(self.config.server))
        except (transport.TransportError, protocol.DecodeError) as exc:
            LOG.debug("VM id kept: %s", getattr(exc, "detail", exc))
            return self.vm
        if vm != self.vm:
            LOG.warning("this VM's address towards the server is now %s: records go as VM %s, "
                        "not %s (--vm-id sets an id that stays)", vm, vm, self.vm)
            self.vm = vm
        return self.vm

    def record(self, metrics, ts):
        values = metrics._asdict()
        record = protocol.Record(vm=self.vm_now(), ts=ts, seq=self.seq, host=self.host.current(),
                                 tags=self.config.tags, **values)
        self.seq += 1
        return record

    def run(self):
        interval = self.config.interval
        sub = min(self.config.sub_interval, interval)
        offset = self.rng.uniform(0, self.config.jitter) if self.config.jitter else 0.0
        LOG.info("vm %s, %s: one record every %gs to %s over %s, first in %.1fs",
                 self.vm, self.host.describe(), interval, self.config.server, self.config.transport,
                 offset + interval)
        if offset and not self.sleeper.until(self.clock() + offset):
            return self._stop(0)
        produced = 0
        self.sampler.begin()
        anchor, k = self.clock(), 0
        while True:
            start = anchor + k * interval
            end = start + interval
            j = 1
            while start + j * sub < end - sub / 100:
                due = start + j * sub
                j += 1
                if self.clock() - due > sub / 2:
                    continue  # late after a slow send: a sliver of a sub-sample is only noise
                if not self.sleeper.until(due):
                    return self._stop(produced)
                self.sampler.sub_sample()
            if not self.sleeper.until(end):
                return self._stop(produced)
            k += 1
            metrics = self.sampler.finish()
            ts = self.stamp()
            if ts is not None:
                record = self.record(metrics, ts)
                self.sender.send([protocol.encode_record(record).encode("utf-8")])
                if self.last is not None:
                    self.last.save(record.ts)
                self.heed_refusals()
                produced += 1
            if self.config.count and produced + self.withheld >= self.config.count:
                return self._stop(produced)
            if self.clock() > anchor + (k + 1) * interval:
                # Suspended or starved for more than an interval: start afresh
                # rather than emit a burst of records for time not sampled.
                LOG.warning("fell behind by more than one interval; re-synchronising")
                self.sampler.begin()
                anchor, k = self.clock(), 0
            if not self.sleeper.stopped:  # late or not, the record goes now, not an interval on
                self.sender.flush()
                self.heed_refusals()

    def _stop(self, produced):
        if getattr(self.sleeper, "signal", None):
            LOG.info("stopping on signal %d", self.sleeper.signal)
        # One last delivery attempt, unless one already failed after the stop was asked for:
        # a server that takes connections and never answers (stopped, swapping) made a stop
        # wait out --timeout twice, and the unit's stop timeout may be near.
        stopped_at = getattr(self.sleeper, "stopped_at", None)
        failed_at = getattr(self.sender, "failed_at", None)
        again = stopped_at is None or failed_at is None or failed_at < stopped_at
        delivered = self.sender.flush(force=again)
        self.heed_refusals()
        if not delivered and not self.config.count:
            # A --count run says it in its last line (count_outcome), with the spool's path.
            held = len(self.sender.held)
            LOG.warning("%s left in the spool for the next start%s",
                        counted(len(self.sender.spool), "record"),
                        ", %d lost (the disk refused to spool them)" % held if held else "")
        return produced


def clock_set(wall):
    """Whether a clock reading ``wall`` (s) has been set: not before protocol.FIRST_STAMP, the
    least stamp the server takes (a clock counting from 1970 since boot has not been)."""
    return wall >= protocol.FIRST_STAMP


def last_stamp(config, environ=os.environ):
    """Where the last stamp is kept (laststamp.LastStamp): the spool folder, for a TCP agent and
    for any agent under the unit (``$STATE_DIRECTORY`` set); None for a UDP agent run by hand,
    which has no folder of its own."""
    if config.transport != "tcp":
        if not environ.get("STATE_DIRECTORY"):
            return None
        try:
            os.makedirs(config.spool_dir, exist_ok=True)
        except (IOError, OSError) as exc:
            LOG.warning("cannot keep the last stamp in %s (%s): a clock behind at the next start "
                        "may stamp records with seconds already sent", config.spool_dir,
                        exc.strerror or exc)
            return None
    return laststamp.LastStamp(config.spool_dir, laststamp.boot_id(config.proc_root))


def sample_once(config, vm, host):
    """One record over one second, for checking a VM by hand."""
    probe = sampler.IntervalSampler(config.proc_root, measure=config.measure)
    probe.begin()
    time.sleep(1.0)
    metrics = probe.finish()
    probe.close()
    return protocol.Record(vm=vm, ts=int(time.time()), seq=0, host=host.current(), tags=config.tags,
                           **metrics._asdict())


def measured(config, host_cpus, host_bytes):
    """What the records will measure, said once at start (cgroup.py): a container's
    operator sees whether its limits or the host's figures are being sent."""
    confinement = cgroup.Confinement(config.proc_root, config.measure)
    try:
        return confinement.describe(host_cpus, host_bytes,
                                    procfs.read_block_devices(config.proc_root))
    finally:
        confinement.close()


def setup_logging(level):
    """Log lines to stderr; under systemd, prefixed with the syslog priority.

    journald reads ``<N>`` prefixes (it sets JOURNAL_STREAM for services whose
    stderr it collects), so ``journalctl -p warning`` works for the agent.
    """
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        priorities = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3, "CRITICAL": 2}

        class JournalFormatter(logging.Formatter):
            def format(self, record):
                return "<%d>%s" % (priorities.get(record.levelname, 6),
                                   logging.Formatter.format(self, record))

        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(logging.Formatter("vmstats-agent %(levelname)s: %(message)s"))
    LOG.handlers[:] = [handler]
    LOG.setLevel(level.upper())
    LOG.propagate = False


def main(config):
    """Run the agent with loaded settings; returns the exit status."""
    setup_logging(config.log_level)
    for name, close in getattr(config, "unknown_env", ()):
        LOG.warning("%s is no setting of the agent: ignored%s", name,
                    " (%s?)" % close if close else "")
    try:
        vm, host = vm_identity(config)
        # Fail at start, not one jittered interval later, if /proc is unusable; and say whether
        # a container's records will carry its cgroup's figures or the host's.
        host_cpus = sampler.Snapshot.read(config.proc_root).vcpus
        host_kib = procfs.read_meminfo(config.proc_root)["MemTotal"]
        source = measured(config, host_cpus, host_kib * 1024)
        if config.once:
            LOG.info("%s", source)
            record = sample_once(config, vm, host)
            sys.stdout.write(protocol.encode_record(record) + "\n")
            return 0
        sender = make_sender(config)
        LOG.info("%s", source)
    except (AgentError, transport.TransportError, procfs.ProcError) as exc:
        LOG.error("%s", exc)
        return getattr(exc, "status", 1)
    agent = Agent(config, sender, vm, host, last=last_stamp(config))
    try:
        produced = agent.run()
        if config.count:
            return count_outcome(sender, produced, agent.withheld)
    except procfs.ProcError as exc:
        LOG.error("%s", exc)
        return 1
    finally:
        agent.sampler.close()
        agent.sleeper.close()
        sender.close()
    return 0


def count_outcome(sender, produced, withheld=0):
    """``--count``'s last line and exit status: LEFT_IN_SPOOL when TCP records were not
    delivered, 1 when records were not made (withheld: the clock not set, or stepped back).

    ``--count`` is a one-shot smoke check, so a server that was down or refused every batch must
    not pass as 0; the records stay spooled for the next start, as on any stop. A running agent
    (no ``--count``) still exits 0 on a stop, so systemd does not restart it for a backlog.
    UDP has no acknowledgement to report.  The figures are this run's records; records spooled
    by an earlier run and delivered now are counted apart (they made "acknowledged" exceed
    "made", and passed for this run's).
    """
    unmade = (", %s not made (the clock not set, or stepped back behind the stamps sent)"
              % counted(withheld, "record")) if withheld else ""
    if not isinstance(sender, transport.TcpSender):
        if withheld:
            LOG.warning("%s made%s", counted(produced, "record"), unmade)
        return 1 if withheld else 0
    left = len(sender.spool)
    lost = len(sender.held) + sender.lost
    ahead = sender.refused_ahead
    by = ", ".join("%d %s" % (count, reason) for reason, count in sorted(sender.rejected_by.items()))
    rejected = (", %d rejected by the server%s" % (sender.rejected, " (%s)" % "; ".join(
        part for part in (by, "%d stamped ahead of this VM's clock" % ahead if ahead else "")
        if part) if by or ahead else "")) if sender.rejected else ""
    delivered = sender.acked + sender.rejected
    earlier = (", and %s spooled before this run acknowledged now"
               % counted(sender.earlier, "record")) if sender.earlier else ""
    (LOG.warning if left or lost or withheld else LOG.info)(
        "%s made%s, %d acknowledged%s%s, %d left in the spool at %s%s",
        counted(produced, "record"), unmade, delivered - sender.earlier, earlier, rejected, left,
        sender.spool.path, ", %d lost (the disk refused to spool them)" % lost if lost else "")
    return LEFT_IN_SPOOL if left or lost else 1 if withheld else 0
