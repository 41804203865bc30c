"""Room under ``--max-vms`` for the VMs a body of the HTTP write API names, taken at its intake.

The buffer drops the records of a VM it does not know once it knows ``--max-vms`` VMs
(``vm_cap``, buffer.py).  A native batch meets that check as it is filed, before its
``#!ack``; a written body's lines only become records when their minutes complete, a minute or
more after its 204.  Judged there, a new host's acknowledged minutes were dropped.  So a body
is judged at its intake instead: its new VMs become known then (the buffer's ``last_seen``,
which the native path counts as well), or, with no room for them all, the whole body is
refused with a 503 and nothing of it is taken (a minute's means are sums, so a retry of a body
taken in part would count its samples twice).  Only a VM one of whose samples the minutes took
becomes known (``know_taken``): one all of whose samples were refused was not heard from.

Cheap where it matters: a body cannot name more VMs than it has lines, so while the room left
exceeds that (every body below the cap; the count of newlines is one ``memchr`` pass) it is fed
at once, and its VMs are made known piece by piece, one set lookup per VM a piece names.  Only
near the cap is a body decoded first for the VMs it names, then fed.
"""

from collections.abc import Iterable
from operator import attrgetter

from vmstats.server.buffer import Buffer
from vmstats.words import counted

#: A sample's VM.
_VM_OF = attrgetter("vm")
#: Seconds a client is told to wait when a write finds no room: VMs silent for ten minutes are
#: forgotten at a flush once the cap is reached (buffer.FORGET_AFTER), so room comes slowly.
RETRY_AFTER = 60


class VmRoom:
    """What the write API may still add under the buffer's ``max_vms``."""

    def __init__(self, buffer: Buffer):
        self.buffer = buffer
        #: Lines of the bodies admitted by their size alone and still being fed: each may yet
        #: name that many VMs, so the room they were admitted to is kept for them.
        self.promised = 0

    def room(self) -> int:
        """VMs the write API may still make known (negative: none, past the cap)."""
        buffer = self.buffer
        return buffer.max_vms - len(buffer.last_seen) - self.promised

    def new(self, vms: Iterable[str]) -> set[str]:
        """The VMs of ``vms`` the server does not know."""
        return set(vms).difference(self.buffer.last_seen)

    def know(self, vms: Iterable[str]) -> None:
        """Make ``vms`` known now (the buffer's ``last_seen``), past the cap if need be: their
        samples were taken, so their minutes must be written when they complete."""
        buffer = self.buffer
        seen = buffer.last_seen
        now = None
        for vm in vms:
            if vm not in seen:
                if now is None:
                    now = buffer.clock()
                seen[vm] = now

    def know_taken(self, samples: list, refused: list) -> None:
        """``know`` the VMs of ``samples`` that the minutes took one of (``refused``:
        MinuteAssembler.add's list): a VM all of whose samples were refused (stamped past
        --max-future, in a minute already written) was not heard from, and holds no place."""
        if not refused:
            self.know(set(map(_VM_OF, samples)))
            return
        out = {index for index, _reason, _detail in refused}
        self.know({sample.vm for index, sample in enumerate(samples) if index not in out})

    def refusal(self, new: int, room: int) -> str:
        """The one-line reason a body naming ``new`` VMs is refused."""
        return ("this write names %s new to the server, which has room for %d more under "
                "--max-vms %d: nothing of it was taken; retry later"
                % (counted(new, "VM"), max(room, 0), self.buffer.max_vms))
