"""Which physical host the VM runs on: the ``host`` tag of its records.

The capacity figures sum VMs per hypervisor, so the tag must name the
hypervisor, never the VM itself: a VM's own host name sent there would make
an inventory that happens to hold the same name count the VM on the wrong
machine, or make a host look present that is not.  A guest cannot see its
hypervisor, so the platform has to say it: a setting (``--host``,
``VMSTATS_HOST``, ``host =`` in the config file, in that order), else a
one-line file the platform writes at boot (cloud-init ``write_files``, or a
hook after live migration), else no tag at all; the inventory's ``vms``
selectors then place the VM, or it is reported as unplaced.

The file is re-read whenever it changes (one ``stat`` a record), so a
migration hook that rewrites it moves the VM's next record to the new host
without restarting the agent.

Standard library only, Python 3.6+.
"""

import logging
import os
import re

from vmstats.client.config import TEXT

LOG = logging.getLogger("vmstats.agent")
#: Where the platform writes the hypervisor's name (``--host-file`` changes it).
DEFAULT_HOST_FILE = "/etc/vmstats/host"
#: Longest host tag the protocol accepts.
MAX_HOST = 255


def host_tag(name):
    """``name`` as a tag value the protocol accepts (unsafe characters become ``-``), or None."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", name.strip())
    name = name.lstrip("._-")[:MAX_HOST]
    return name or None


def read_host_file(path):
    """The host named by the first line of ``path`` that is neither blank nor a comment.

    Returns None when the file is missing (nothing written yet); raises
    ValueError with a readable reason when it exists but names no host.
    """
    try:
        with open(path, "r", encoding=TEXT) as handle:  # whatever the locale (config.TEXT)
            text = handle.read(4096)
    except (IOError, OSError) as exc:
        if getattr(exc, "errno", None) == 2:
            return None
        raise ValueError("cannot read %s: %s" % (path, getattr(exc, "strerror", None) or exc))
    except UnicodeError:
        raise ValueError("%s is not text" % path)
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            # A NUL or other control byte is damage, not a name: mapped to "-" like a space,
            # it would tag every record with a host that does not exist, without a word.
            if not line.isprintable():
                raise ValueError("%s is damaged (control characters): %r" % (path, line[:60]))
            name = host_tag(line)
            if name is None:
                raise ValueError("%s names no usable host: %r" % (path, line[:60]))
            return name
    raise ValueError("%s is empty" % path)


class HostSource(object):
    """The current host tag: a fixed setting, else the host file as it is now, else None."""

    def __init__(self, fixed=None, path=None):
        self.fixed = host_tag(fixed) if fixed is not None else None
        self.path = path
        self._seen = None       # (mtime_ns, size, inode) of the file last read, or "missing"
        self._value = None

    def current(self):
        if self.fixed is not None or not self.path:
            return self.fixed
        try:
            st = os.stat(self.path)
            seen = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            seen = "missing"
        if seen != self._seen:
            self._seen = seen
            previous = self._value
            try:
                self._value = read_host_file(self.path) if seen != "missing" else None
            except ValueError as exc:
                LOG.warning("%s; records carry no host tag until it is fixed", exc)
                self._value = None
            if self._value != previous and previous is not None:
                LOG.info("host is now %s (from %s)", self._value or "unknown", self.path)
        return self._value

    def describe(self):
        """Where the tag comes from, for the start-up log line."""
        if self.fixed is not None:
            return "host %s" % self.fixed
        value = self.current()
        if value is not None:
            return "host %s (from %s)" % (value, self.path)
        if not self.path:
            return "no host tag"
        # A file that is there but names no host was just warned about: "absent" would
        # contradict that warning in the next line.
        return "no host tag (%s %s)" % (self.path, "absent" if self._seen == "missing" else "unusable")
