"""The agent's bounded on-disk spool of records not yet acknowledged.

One file per record, named by an increasing number, so adding is one small
atomic write (temporary file + rename: a crash leaves either the whole record
or nothing; the file and then its folder are synced, so a power cut keeps
what was spooled, at two syncs a record, a minute apart), removing
acknowledged records is an unlink, and the oldest are simply the smallest
names.  A week of minute records is ~10 000 small files,
which any file system lists in milliseconds; record bodies are read only when
they are sent, so the agent's memory does not grow while the server is down.

A lock file keeps two agents from sharing (and double-sending) one spool, and a mark file
names the machine it was written on (Spool._claim): the records of a spool an image brought along
from the VM it was made from are set aside at start, not sent by every clone.

What is read back is checked line by line as the server would check it (Spool.oldest): only
record lines are sent.  A damaged file (torn, or garbage bytes from a file system repaired after
a crash) was sent as it was, and a control line in it went to the server as one: a ``#!sync``
took the records before it out of the batch's acknowledgement (the count said fewer delivered
than were, and a refusal of them went unseen), and a ``#!sig1`` header swallowed the batch's own
``#!sync``, so that the batch was never acknowledged and nothing was delivered again.

Standard library only, Python 3.6+.
"""

import errno
import fcntl
import logging
import os
import stat

from vmstats.protocol import MAX_DATAGRAM_SIZE, DecodeError, Decoder
from vmstats.words import counted

LOG = logging.getLogger("vmstats.agent")
SUFFIX = ".rec"
_NAME_DIGITS = 16
#: The spool's mark: the id of the machine its records were written on.
MARK = "machine-id"
#: Where the machine's id is read (systemd's, and D-Bus's where systemd is not).
MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")
#: A machine id: 128 bits as 32 hex digits (systemd's sd-id128 format).
_ID_DIGITS = 32
_HEX = frozenset("0123456789abcdef")
#: The folder (in the spool) that another machine's records are moved to: ``from-<its id>``.
ASIDE_PREFIX = "from-"


class SpoolError(OSError):
    """The spool directory cannot be used (one readable line); an OSError, as a record the
    disk refuses is, because a running agent meets it the same way (TcpSender.send)."""


class Spool(object):
    """Records (encoded lines, bytes) waiting for the server's acknowledgement."""

    def __init__(self, path, max_records, machine=None):
        if max_records < 1:
            raise SpoolError("spool size must be at least 1 record")
        self.path = path
        self.max_records = max_records
        #: This machine's id (machine_id()), or None: the spool is then not checked.
        self.machine = machine
        #: Records dropped because the spool was full (oldest first).
        self.dropped = 0
        #: Lines of record files skipped as no record (damage), never sent.
        self.damaged = 0
        # The server's own check of a line, without its time window: an old record is the
        # server's to refuse, and it says so in its acknowledgement.
        self._decoder = Decoder(max_future=float("inf"), max_past=0, first=0)
        self._lock = self._take()
        self._claim()
        self._names = self._scan()
        self._next = int(self._names[-1][:_NAME_DIGITS]) + 1 if self._names else 0
        #: The number of the first record added by this start: those below were spooled before.
        self.first_new = self._next
        if self._names:
            LOG.info("spool %s holds %s", path, counted(len(self._names), "unacknowledged record"))
        self._trim()

    def _take(self):
        """Make the folder if need be and lock it for this agent: the open lock file."""
        path = self.path
        if os.path.lexists(path) and not os.path.isdir(path):
            raise SpoolError("spool directory %s is %s" % (path, not_a_folder(path)))
        try:
            os.makedirs(path, exist_ok=True)
        except (IOError, OSError) as exc:
            raise SpoolError("spool directory %s is not writable: %s" % (path, exc.strerror or exc))
        lock = os.path.join(path, "lock")
        try:
            handle = open(lock, "a")
        except (IOError, OSError) as exc:
            raise SpoolError("cannot open the spool's lock file %s: %s" % (lock, exc.strerror or exc))
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (IOError, OSError) as exc:
            handle.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise SpoolError("spool directory %s is in use by another agent" % path)
            raise SpoolError("cannot lock spool directory %s: %s" % (path, exc.strerror or exc))
        return handle

    def _claim(self):
        """Mark the spool as this machine's; the records of another machine's are set aside.

        A VM image made from a running VM whose agent had records not yet acknowledged took
        them along: every clone sent them at its first start, as the original VM's (the
        server kept one of each, whichever clone sent it), and a clone with the same fixed
        ``--vm-id`` mixed them with its own.  They are moved to ``from-<machine id>`` in the
        spool, said in one warning, never sent.  A spool without a mark (an agent's from before
        the mark) is taken as this machine's.
        """
        if not self.machine:
            return
        mark = os.path.join(self.path, MARK)
        try:
            with open(mark, "rb") as handle:
                written = handle.read(256).decode("ascii", "replace").strip()
        except (IOError, OSError):
            written = ""
        if written == self.machine:
            return
        if written:
            self._set_aside(written)
        try:
            self._write(MARK, self.machine.encode("ascii", "replace") + b"\n")
        except (IOError, OSError) as exc:   # a full disk: records are then held in memory
            LOG.warning("cannot mark spool directory %s as this machine's (%s): it is checked "
                        "again at the next start", self.path, exc.strerror or exc)

    def _set_aside(self, written):
        """Move the records of the spool written on machine ``written`` out of the way."""
        names = [n for n in os.listdir(self.path) if n.endswith(SUFFIX)]
        if not names:
            return
        aside = os.path.join(self.path, ASIDE_PREFIX + "".join(
            c for c in written if c.isalnum())[:64])
        try:
            os.makedirs(aside, exist_ok=True)
            for name in names:
                os.rename(os.path.join(self.path, name), os.path.join(aside, name))
        except (IOError, OSError) as exc:
            raise SpoolError("cannot set aside the records spool directory %s holds from "
                             "another machine: %s" % (self.path, exc.strerror or exc))
        LOG.warning("spool %s was written on another machine (machine id %s, this one's is %s: "
                    "an image made from a VM with records not yet sent?): its %s set aside in "
                    "%s, not sent", self.path, written[:64], self.machine,
                    counted(len(names), "record"), aside)

    def _scan(self):
        names = []
        for name in os.listdir(self.path):
            if name.endswith(".tmp"):
                self._unlink(name)
            elif name.endswith(SUFFIX) and name[:_NAME_DIGITS].isdigit():
                names.append(name)
        names.sort()
        return names

    def __len__(self):
        return len(self._names)

    def add(self, line):
        """Keep one record (bytes, no newline); drops the oldest if the spool is full.

        A write the disk refuses (full, a quota) raises, and takes its partial
        temporary file with it: otherwise each interval of a full disk would
        leave one more until the next start.
        """
        name = "%0*d%s" % (_NAME_DIGITS, self._next, SUFFIX)
        self._next += 1
        try:
            self._write(name, line)
        except (IOError, OSError) as exc:
            if exc.errno != errno.ENOENT or os.path.isdir(self.path):
                raise
            self._again()
            self._write(name, line)
        self._names.append(name)
        self._trim()

    def _write(self, name, line):
        put_whole(os.path.join(self.path, name), line)
        self._sync_folder()

    def _again(self):
        """The folder was removed under the running agent (a clean-up, an image being made
        ready to clone): make it again, with its lock, rather than lose every later record
        until a restart.  What it held went with it, and is said."""
        gone, self._names = len(self._names), []
        self._lock.close()
        self._lock = self._take()
        self._claim()
        LOG.warning("spool directory %s was removed; made again%s", self.path,
                    " (%s it held lost)" % counted(gone, "record") if gone else "")

    def _sync_folder(self):
        """The new name on disk too: a synced file whose rename was not is lost at a power cut."""
        folder = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def _trim(self):
        excess = len(self._names) - self.max_records
        if excess <= 0:
            return
        for name in self._names[:excess]:
            self._unlink(name)
        del self._names[:excess]
        self.dropped += excess
        LOG.warning("spool full (%s): dropped the %d oldest, %d dropped so far",
                    counted(self.max_records, "record"), excess, self.dropped)

    def oldest(self, max_records, max_bytes):
        """``[(name, line)]`` of the oldest records, within both limits (at least one).

        A file that vanished or is empty (a crash between create and write),
        or that is no record (read_record), is discarded rather than sent; so is
        a file none of whose lines is a record, and the lines of a file that are
        none (records_in) are skipped and counted in ``damaged``.
        """
        batch = []
        size = 0
        broken = []
        skipped = damaged_files = 0
        for name in self._names:
            if len(batch) >= max_records:
                break
            line, bad = self.records_in(read_record(os.path.join(self.path, name)))
            skipped += bad
            damaged_files += 1 if bad else 0
            if not line:
                broken.append(name)
                continue
            if batch and size + len(line) + 1 > max_bytes:
                break
            batch.append((name, line))
            size += len(line) + 1
        if skipped:
            self.damaged += skipped
            LOG.warning("spool: skipped %s of %s that %s no record (torn or damaged), not sent; "
                        "%d skipped so far", counted(skipped, "line"),
                        counted(damaged_files, "record file"),
                        "is" if skipped == 1 else "are", self.damaged)
        if broken:
            LOG.warning("spool: discarded %s (gone, empty, not a regular file, larger than "
                        "any record, or no record in it)",
                        counted(len(broken), "unreadable record file"))
            self.remove(broken)
        return batch

    def records_in(self, data):
        """``(the record lines of a record file's bytes, how many other lines it holds)``.

        A file holds one line the agent wrote; anything else in it is damage, and is never
        sent: the server would take a control line among it (``#!sync``, ``#!sig1``) as
        the agent's own.
        """
        records, bad = [], 0
        for part in data.split(b"\n"):
            part = part.strip()
            if not part:
                continue
            try:
                self._decoder.decode_line(part)
            except DecodeError:
                bad += 1
            else:
                records.append(part)
        return b"\n".join(records), bad

    def earlier(self, names):
        """How many of ``names`` were spooled before this start (``--count``'s summary tells
        them from this run's records)."""
        return sum(1 for name in names if int(name[:_NAME_DIGITS]) < self.first_new)

    def remove(self, names):
        """Forget records the server acknowledged."""
        gone = set(names)
        for name in gone:
            self._unlink(name)
        self._names = [n for n in self._names if n not in gone]

    def _unlink(self, name):
        try:
            os.unlink(os.path.join(self.path, name))
        except OSError:
            pass

    def close(self):
        self._lock.close()


def machine_id(files=MACHINE_ID_FILES):
    """This machine's id (lowercase), or None where there is none.

    The first of ``files`` that holds one, as systemd takes it: /etc/machine-id (made anew
    for each clone of a prepared image), else D-Bus's /var/lib/dbus/machine-id, which
    systemd itself falls back to where /etc/machine-id is missing, empty (an image made
    ready to clone), ``uninitialized`` (a first boot not yet committed) or no id at all.
    Where none holds one, the spool is not checked (agent.make_sender says so at start).
    """
    for path in files:
        try:
            with open(path, "rb") as handle:
                text = handle.read(256).decode("ascii", "replace").strip().lower()
        except (IOError, OSError):
            continue
        if len(text) == _ID_DIGITS and set(text) <= _HEX:
            return text
    return None


def not_a_folder(path):
    """What is at ``path`` instead of a folder, in a few words."""
    if not os.path.exists(path):
        return "a symbolic link to %s, which does not exist" % os.readlink(path)
    return "not a directory"


def read_record(path):
    """A record file's line; b"" for anything that is not a readable regular file of at most
    MAX_DATAGRAM_SIZE bytes (the longest line the server takes).

    Opened without blocking and checked before the read: a FIFO with a record's name in the
    spool (nothing the agent makes) would otherwise hold the agent for ever at its next send,
    and a damaged file of hundreds of MiB ended it in a MemoryError (or the unit's MemoryMax)
    at every start, so that nothing was ever delivered again.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (IOError, OSError):
        return b""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_DATAGRAM_SIZE:
            return b""
        with os.fdopen(os.dup(fd), "rb") as handle:
            line = handle.read(MAX_DATAGRAM_SIZE + 1)
        return b"" if len(line) > MAX_DATAGRAM_SIZE else line.strip()
    except (IOError, OSError):
        return b""
    finally:
        os.close(fd)


def put_whole(path, data):
    """``data`` as the file ``path``, put in place by a rename once synced, so a crash leaves
    the old file or the new one, never a part (its ``.tmp`` is removed on failure)."""
    temporary = path + ".tmp"
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temporary, path)
    except (IOError, OSError):
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
