"""An operator's small input files (settings TOML, a VM map) read whole, with one line for what is wrong.

Every command that takes such a file words its errors the same way, ``PATH:
PROBLEM``, so a file that is missing, a folder, unreadable, not UTF-8 or not
TOML is named whichever command met it, and never ends in a traceback.
Each caller adds what the file is for (``inventory hosts.toml: ...``).
"""

import codecs
import json
import os
import stat
import tomllib
from dataclasses import dataclass

from vmstats.words import counted


class BadInput(Exception):
    """Mixed into an error that says the command line, or a file it names, is wrong (not
    that the run failed on the way): the command refuses it with a usage error's status
    (vmstats.options.failure)."""


class FileProblem(ValueError, BadInput):
    """A file that cannot be used as it is: ``path`` and ``problem`` (one line, no path in it)."""

    def __init__(self, path: str, problem: str):
        self.path = path
        self.problem = problem
        super().__init__("%s: %s" % (path, problem))


def read_bytes(path: str) -> bytes:
    """The file's bytes; FileProblem when it cannot be opened or read."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise FileProblem(path, "does not exist") from None
    except IsADirectoryError:
        raise FileProblem(path, "is a directory, not a file") from None
    except OSError as exc:
        raise FileProblem(path, "cannot be read: %s" % (exc.strerror or exc)) from None


def decode(raw: bytes, path: str) -> str:
    """``raw`` as UTF-8 text, less a leading byte order mark; FileProblem with the first bad
    byte's offset and line.

    The mark is what some editors put first in a UTF-8 file: kept, it was read as part of
    the first line (TOML refused "line 1, column 1", a key file its first key), and the agent
    reads its own files past it already.  The offset counts from 0 in the file, as a hex
    dump shows it; the line is where an editor would show the odd character (a Latin-1 name
    pasted into a comment).
    """
    mark = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[mark:].decode("utf-8")
    except UnicodeDecodeError as exc:
        start = exc.start + mark
        line = raw.count(b"\n", 0, start) + 1
        raise FileProblem(path, "not UTF-8 at byte %d (line %d)" % (start, line)) from None


def read_text(path: str) -> str:
    """The file's UTF-8 text; FileProblem when it is unreadable or not UTF-8."""
    return decode(read_bytes(path), path)


def loose_secret(path: str) -> str | None:
    """Why the secret file at ``path`` is open to other local users, or None.

    A key file others can read lets them sign records for its VMs, one they can write lets them
    add a key of their own: the server still starts (the file is the operator's to fix), but
    says so once.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # reading it fails next, with its own one-line error
    if not stat.S_ISREG(mode) or not mode & 0o077:
        return None
    return ("%s is open to other users (mode %04o): anyone who can read it holds its secrets; "
            "chmod 600 it" % (path, stat.S_IMODE(mode)))


def read_secret(path: str) -> str:
    """The first line of a secret file (a token), stripped; FileProblem when unreadable or empty.

    A secret is read from a file so that it shows neither in ``ps`` nor in a shell's history;
    the server's --status-token-file and the clients' --token-file read it the same way.
    """
    secret = read_text(path).split("\n", 1)[0].strip()
    if not secret:
        raise FileProblem(path, "is empty (the token is its first line)")
    return secret


def parse_toml(raw: bytes, path: str) -> dict:
    """TOML ``raw`` (read from ``path``) parsed; FileProblem when it is not UTF-8 or not TOML."""
    try:
        return tomllib.loads(decode(raw, path))
    except tomllib.TOMLDecodeError as exc:
        raise FileProblem(path, "not valid TOML: %s" % exc) from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise FileProblem(path, "not valid TOML: nested too deeply") from None


def json_loads(text: str | bytes, **options):
    """``json.loads``, with JSON nested deeper than the parser recurses a ValueError as any
    other text that is not JSON: ``[`` x 100,000 is a few hundred KiB, which a file, a body
    or an answer may hold, and the RecursionError it raised ended commands in a traceback,
    stopped the server's start, or escaped each reader's ``except ValueError``."""
    try:
        return json.loads(text, **options)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def json_document(text: str | bytes):
    """``json_loads`` for what an operator wrote (a manifest, a mute): a key given twice in one
    object is a ValueError.  ``json.loads`` keeps the last silently, so ``{"profile": "2x4",
    "profile": "64x512"}`` asked for one size and got the other; TOML refuses the same."""
    return json_loads(text, object_pairs_hook=_unique_keys)


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    found = dict(pairs)
    if len(found) < len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise ValueError("%r is given twice in one object" % key)
            seen.add(key)
    return found


def parse_json(raw: bytes, path: str):
    """JSON ``raw`` (read from ``path``: UTF-8, -16 or -32, as JSON allows) parsed; FileProblem
    when it is not JSON or gives a key twice (``json_document``)."""
    try:
        return json_document(raw)
    except ValueError as exc:
        raise FileProblem(path, "not valid JSON: %s" % exc) from None


def load_toml(path: str) -> dict:
    """The TOML file at ``path``; FileProblem for every way it cannot be used."""
    return parse_toml(read_bytes(path), path)


@dataclass
class Damage:
    """Lines of a file the program wrote and reads back (a log, a marks file) that are no
    entry of it: skipped and counted, the first named.

    A stray block of a disk or a hand's edit must cost those lines only, never the start;
    every such file words its one warning the same way.
    """

    count: int = 0
    first: str = ""

    def skip(self, number: int, why: str) -> None:
        self.count += 1
        self.first = self.first or "line %d: %s" % (number, why)

    def note(self, path: str) -> str:
        """The warning ('' when nothing was skipped)."""
        return ("%s: %s skipped (first: %s)" % (path, counted(self.count, "damaged line"), self.first)
                if self.count else "")
