"""The VM ids found shared (sharedids.py), kept across a restart in the journal's folder.

Finding an id took its two counters four turns, minutes at an agent's default
interval; a server that forgot it at each restart (an upgrade, a crash) listed
nothing on /status and said nothing in its log until they took four more, and
counted the first step between the two counters as lost records.  So the ids
found are written to one small file (``FILE``, a JSON object a line, at most
sharedids.MAX_LISTED lines) beside the signature marks: at once when an id is
found, found again or shows a new sender, at most once a minute when only
their last times move, and at the stop.  The next start lists them on /status
(``before_start`` until found again), names them in one log line, and watches
each from its first record (seqturns.Watches.step, through SharedIds.known).

A finding is kept for ``KEEP_FOR`` after it was last found: an id whose second
machine is gone, or was given its own id, leaves /status and the file then.
A damaged line costs its id only.
"""

import json
import logging
import os
from collections.abc import Callable

from vmstats.inputfile import Damage
from vmstats.protocol import MAX_VM_ID_LENGTH, DecodeError, normalize_vm_id
from vmstats.seqturns import MAX_SOURCES
from vmstats.server.every import Every
from vmstats.server.metrics import RateLimitedLog
from vmstats.server.ownfiles import read_file, replace_durably
from vmstats.server.sharedids import MAX_LISTED, Found, SharedIds
from vmstats.words import counted

log = logging.getLogger(__name__)

#: The file's name in the journal's folder.
FILE = "shared-vm-ids"
#: Seconds a finding is kept after it was last found (a week: past the weekend of a fleet
#: left alone, short enough that an id put right leaves the listing by itself).
KEEP_FOR = 7 * 86400.0
#: Seconds between two saves when only a finding's last time moved (its counters still
#: taking turns): the file says when it was last found to within this.
SAVE_AFTER = 60.0
#: Ids named in the start's log line; /status lists them all.
NAMED = 10


class SharedKept:
    """Saves ``shared.found`` to ``directory``/FILE and puts it back at the start."""

    def __init__(self, directory: str, shared: SharedIds, wall: Callable[[], float], reactor=None):
        self.directory = directory
        self.path = os.path.join(directory, FILE)
        self.shared = shared
        #: The time of day (the file keeps times of day; ``shared`` keeps monotonic ones).
        self.wall = wall
        self.reactor = reactor
        self._saved = (shared.news, shared.changes)
        self._saved_at = shared.clock()
        self._saver: Every | None = None
        self._trouble = RateLimitedLog(log, "shared VM ids file error", burst=1, period=3600.0)

    def load(self) -> int:
        """Put the findings the file keeps (last found within KEEP_FOR) in ``shared.found``,
        say so in one line; returns how many.  Raises OSError (one line) if it cannot be read."""
        text = read_file(self.path, "shared VM ids file")
        now = self.wall()
        offset = self.shared.clock() - now  # a time of day + offset: the monotonic reading
        kept: list[tuple[str, Found]] = []
        old = 0
        damage = Damage()
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                vm, found = _entry(line, now)
            except ValueError as exc:
                damage.skip(number, str(exc))
                continue
            if found.last >= now - KEEP_FOR:
                found.first += offset
                found.last += offset
                kept.append((vm, found))
            else:
                old += 1
        if damage.count:
            log.warning("%s", damage.note(self.path))
        kept.sort(key=lambda item: item[1].last)
        found_now = self.shared.found
        for vm, found in kept[-MAX_LISTED:]:
            found_now.pop(vm, None)
            found_now[vm] = found
        # The file is written whole again at the first tick if it held more than is kept.
        self._saved = (self.shared.news - bool(damage.count or old or len(kept) > MAX_LISTED),
                       self.shared.changes)
        if kept:
            names = [vm for vm, _found in reversed(kept[-MAX_LISTED:])]
            more = len(names) - NAMED
            log.warning("%s found sent by more than one machine before this start (kept %s "
                        "after last found): %s%s; listed on /status, each watched from its first "
                        "record. docs/OPERATIONS.md, One VM id, two machines",
                        counted(len(names), "VM id"), counted(int(KEEP_FOR // 86400), "day"),
                        ", ".join(names[:NAMED]), " and %d more" % more if more > 0 else "")
        return len(kept)

    def start(self) -> None:
        if self.reactor is not None:
            self._saver = Every(self.reactor, 1.0, self.tick, "saving the shared VM ids found")
            self._saver.start()

    def stop(self) -> None:
        if self._saver is not None:
            self._saver.stop()
        self.tick(final=True)

    def tick(self, final: bool = False) -> None:
        """Forget findings older than KEEP_FOR; save at once what is news, the rest at most
        every SAVE_AFTER (and everything at the stop)."""
        shared = self.shared
        now = shared.clock()
        shared.drop_older(now - KEEP_FOR)
        news, changes = shared.news, shared.changes
        if news == self._saved[0] and (changes == self._saved[1] or (
                not final and now - self._saved_at < SAVE_AFTER)):
            return
        if self.save():
            self._saved, self._saved_at = (news, changes), now

    def save(self) -> bool:
        """Write the file whole, durably (False, logged, when that fails: tried again at the
        next change)."""
        offset = self.wall() - self.shared.clock()
        text = "".join(json.dumps({"vm": vm, "first": f.first + offset, "last": f.last + offset,
                                   "times": f.times, "senders": list(f.sources)}) + "\n"
                       for vm, f in self.shared.found.items())
        try:
            os.makedirs(self.directory, exist_ok=True)
            replace_durably(self.path, text.encode(), os.path.join(self.directory, ".shared-vm-ids.new"),
                            0o600)
        except OSError as exc:
            self._trouble.emit("cannot save the shared VM ids found in %s (a restart would "
                               "forget those found since the last save): %s", self.path, exc)
            return False
        return True


def _entry(line: str, now: float) -> tuple[str, Found]:
    """One line of the file as (vm, Found) with times of day (none after ``now`` and
    KEEP_FOR: a clock set back since may have made some look ahead); ValueError saying what
    is wrong."""
    try:
        item = json.loads(line)
    except ValueError:
        raise ValueError("not a JSON object") from None
    if not isinstance(item, dict):
        raise ValueError("not a JSON object")
    vm, first, last = item.get("vm"), item.get("first"), item.get("last")
    times, senders = item.get("times"), item.get("senders")
    if not isinstance(vm, str) or len(vm) > MAX_VM_ID_LENGTH:
        raise ValueError("no VM id")
    try:
        if normalize_vm_id(vm) != vm:
            raise ValueError("VM id %r is not canonical" % vm)
    except DecodeError as exc:
        raise ValueError(str(exc)) from None
    if not all(isinstance(t, int | float) and not isinstance(t, bool) for t in (first, last)) \
            or not 0 <= first <= last <= now + KEEP_FOR:
        raise ValueError("times first and last are not two times of day in order")
    if not isinstance(times, int) or isinstance(times, bool) or times < 1:
        raise ValueError("times found is not a count")
    if not isinstance(senders, list) or not all(
            isinstance(s, str) and 0 < len(s) <= 64 for s in senders):
        raise ValueError("senders are not a list of addresses")
    return vm, Found(float(first), float(last), float("-inf"),
                     dict.fromkeys(senders[:MAX_SOURCES]), times, before=True)

