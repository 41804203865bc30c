"""The last stamp the agent gave a record, kept on disk so a clock behind at the next start
does not stamp records with seconds already sent.

The server keeps one record per (VM, second), so a record stamped with a second already sent is
taken for a resend and dropped; one stamped between records already sent lands in time already
measured.  A guest whose clock starts behind at boot (a hardware clock kept in local time, no
time sync) did both with the first records after a reboot: the agent's memory of the stamps it
used (agent.RECENT_STAMPS) did not outlive the restart.

The kernel's boot id is kept beside the stamp (``1796640523 d11e0d81-...``): a clock behind the
kept stamp in the boot that kept it was stepped back while the agent was stopped, not read
behind from a hardware clock at boot (Agent.kept_stamp).  A file of an older agent, the stamp
alone, is read as from another boot.

Standard library only, Python 3.6+.
"""

import logging
import os

from vmstats.client.spool import put_whole

LOG = logging.getLogger("vmstats.agent")
#: The file's name, in the agent's state folder (the spool folder).
NAME = "last-stamp"
#: A kept stamp further ahead of the clock than this (s) is not followed: the clock it came from
#: was wrong (a hardware clock years ahead), and records stamped after it would all be refused
#: by the server as from the future, after every restart.  A clock kept in local time is at most
#: 14 hours behind.
FURTHEST_AHEAD = 86400
#: Where the kernel says which boot this is (under the proc root).
BOOT_ID = os.path.join("sys", "kernel", "random", "boot_id")


def boot_id(proc_root="/proc"):
    """This boot's id (text, no spaces), or None where the kernel does not say."""
    try:
        with open(os.path.join(proc_root, BOOT_ID), "rb") as handle:
            text = handle.read(64).strip().decode("ascii")
    except (IOError, OSError, UnicodeDecodeError):
        return None
    return text if text and len(text.split()) == 1 else None


class LastStamp(object):
    """The last stamp given, read at start and written after each record's send."""

    def __init__(self, folder, boot=None):
        self.path = os.path.join(folder, NAME)
        #: This boot's id (boot_id), kept with each stamp; None: none kept.
        self.boot = boot
        #: Whether the stamp load() read was kept in this boot.
        self.this_boot = False
        self._error = None

    def load(self, now):
        """The stamp kept, or None (none kept, damaged, or implausibly far ahead of ``now``)."""
        try:
            with open(self.path, "rb") as handle:
                words = handle.read(64).split()
        except (IOError, OSError):
            return None
        if not words or not words[0].isdigit() or len(words) > 2:
            LOG.warning("%s is damaged (%r): ignored", self.path, b" ".join(words)[:20])
            return None
        stamp = int(words[0])
        self.this_boot = self.boot is not None and words[1:] == [self.boot.encode("ascii")]
        if stamp > now + FURTHEST_AHEAD:
            LOG.warning("the last stamp kept in %s is %ds ahead of the clock: ignored",
                        self.path, stamp - now)
            return None
        return stamp

    def save(self, stamp):
        """Keep ``stamp`` (a whole file put in place by a rename, so a crash leaves the old one
        or the new one); a failure is said once a streak, and the agent goes on."""
        try:
            put_whole(self.path, (("%d %s\n" % (stamp, self.boot)) if self.boot else
                                  ("%d\n" % stamp)).encode("ascii"))
        except (IOError, OSError) as exc:
            error = exc.strerror or str(exc)
            if error != self._error:
                LOG.warning("cannot keep the last stamp in %s (%s): a clock behind at the next "
                            "start may stamp records with seconds already sent", self.path, error)
            self._error = error
            return
        self._error = None
