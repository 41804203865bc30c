"""The last stamp the agent gave a record, kept on disk so a clock behind at the next start
does not stamp records with seconds already sent.

The server keeps one record per (VM, second), so a record stamped with a second already sent is
taken for a resend and dropped; one stamped between records already sent lands in time already
measured.  A guest whose clock starts behind at boot (a hardware clock kept in local time, no
time sync) did both with the first records after a reboot: the agent's memory of the stamps it
used (agent.RECENT_STAMPS) did not outlive the restart.

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


class LastStamp(object):
    """The last stamp given, read at start and written after each record's send."""

    def __init__(self, folder):
        self.path = os.path.join(folder, NAME)
        self._error = None

    def load(self, now):
        """The stamp kept, or None (none kept, damaged, or implausibly far ahead of ``now``)."""
        try:
            with open(self.path, "rb") as handle:
                text = handle.read(64).strip()
        except (IOError, OSError):
            return None
        if not text.isdigit():
            LOG.warning("%s is damaged (%r): ignored", self.path, text[:20])
            return None
        stamp = int(text)
        if stamp > now + FURTHEST_AHEAD:
            LOG.warning("the last stamp kept in %s is %ds ahead of the clock: ignored",
                        self.path, stamp - now)
            return None
        return stamp

    def save(self, stamp):
        """Keep ``stamp`` (a whole file put in place by a rename, so a crash leaves the old one
        or the new one); a failure is said once a streak, and the agent goes on."""
        try:
            put_whole(self.path, b"%d\n" % stamp)
        except (IOError, OSError) as exc:
            error = exc.strerror or str(exc)
            if error != self._error:
                LOG.warning("cannot keep the last stamp in %s (%s): a clock behind at the next "
                            "start may stamp records with seconds already sent", self.path, error)
            self._error = error
            return
        self._error = None
