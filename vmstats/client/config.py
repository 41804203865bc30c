"""The agent's settings: command-line flags, environment variables, a config file.

Precedence is flag > environment (``VMSTATS_<NAME>``, e.g. ``VMSTATS_SERVER``)
> config file (``--config``, ``VMSTATS_CONFIG``, else /etc/vmstats/agent.conf
if it exists) > built-in default.  Images usually set the environment or
drop a config file; flags are for trying things by hand.  Every setting is
declared once, in OPTIONS, and every source goes through the same converter,
so a bad value reads the same wherever it came from.

The config file holds ``name = value`` lines (names as the long flags,
without dashes or with underscores), ``#`` comments and blank lines; a value
may be quoted and followed by a `` # comment``.

Standard library only, Python 3.6+.
"""

import argparse
import os

from vmstats import __version__
from vmstats.client.cgroup import MODES as MEASURE_MODES
from vmstats.protocol import DEFAULT_PORT

DEFAULT_CONFIG = "/etc/vmstats/agent.conf"
#: How the agent reads the files an operator writes for it: UTF-8, a byte order mark skipped.
TEXT = "utf-8-sig"
ENV_PREFIX = "VMSTATS_"


class ConfigError(Exception):
    """A setting is invalid (one readable line)."""


#: The longest time a setting may give, in seconds (a day): beyond what the kernel's timers and
#: select() take, ``--interval 1e12`` ended the agent in a traceback at its first wait.
MAX_SECONDS = 86400.0
#: The shortest sub-sample (s): shorter ones measure nothing more (a jiffy is 1-10 ms) and a
#: vanishing one (``--sub-interval 1e-320``) spun the agent at 100 % CPU without a sample.
MIN_SUB_INTERVAL = 0.01


def _number(kind, minimum, strict, maximum=None):
    def convert(text):
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise ValueError("%r is not a%s number" % (text, "n integer" if kind is int else ""))
        if value != value or (value <= minimum if strict else value < minimum) \
                or value == float("inf"):
            raise ValueError("%r must be %s %s" % (text, ">" if strict else ">=", minimum))
        if maximum is not None and value > maximum:
            raise ValueError("%r must be at most %g%s" % (text, maximum,
                                                         " (a day)" if maximum == MAX_SECONDS else ""))
        return value
    return convert


def _seconds(minimum=0, strict=True):
    """A duration setting's converter: above ``minimum``, at most a day."""
    return _number(float, minimum, strict, MAX_SECONDS)


def _choice(*allowed):
    def convert(text):
        value = str(text).strip().lower()
        if value not in allowed:
            raise ValueError("%r is not one of %s" % (text, ", ".join(allowed)))
        return value
    return convert


def _text(text):
    value = str(text).strip()
    if not value:
        raise ValueError("empty value")
    return value


def _server(text):
    from vmstats.client.transport import TransportError, parse_server
    try:
        parse_server(text)
    except TransportError as exc:
        raise ValueError(str(exc))
    return text.strip()


def _vm_id(text):
    from vmstats.protocol import DecodeError, normalize_vm_id
    try:
        return normalize_vm_id(str(text).strip())
    except DecodeError as exc:
        raise ValueError(exc.detail)


def _tags(text):
    from vmstats.protocol import parse_tags
    return parse_tags(str(text))


def _default_spool():
    # systemd's StateDirectory= exports the directory it created for the unit.
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    return os.path.join(state, "spool") if state else "/var/lib/vmstats-agent/spool"


#: name -> (converter, default, metavar, help).  One place for every setting.
OPTIONS = (
    ("server", _server, None, "HOST:PORT", "aggregator address (port defaults to %d)" % DEFAULT_PORT),
    ("transport", _choice("udp", "tcp"), "udp", "udp|tcp",
     "udp: fire-and-forget; tcp: spooled on disk until acknowledged"),
    ("interval", _seconds(), 60.0, "SECONDS", "one record per interval"),
    ("sub_interval", _seconds(MIN_SUB_INTERVAL, False), 5.0, "SECONDS",
     "CPU sub-sample period; the record's cpu_max is the busiest sub-sample"),
    ("jitter", _seconds(0, False), None, "SECONDS",
     "random delay before the first interval, so a fleet spreads its sends "
     "(default: up to one interval; 0 disables)"),
    ("count", _number(int, 0, True), None, "N",
     "stop after N records (default: run until stopped; an interval whose record is not made, "
     "the clock not set, counts); over TCP, exit 3 if any record is left unacknowledged in the "
     "spool; exit 1 if a record was not made"),
    ("vm_id", _vm_id, None, "ID",
     "VM id (default: the local address used to reach the server)"),
    ("host", _text, None, "NAME",
     "the physical host (hypervisor) this VM runs on, sent as the host tag "
     "(default: the host file's name, else none; never this VM's own name)"),
    ("host_file", _text, None, "FILE",
     "one-line file naming the physical host, written by cloud-init or the platform; "
     "re-read when it changes (default: /etc/vmstats/host)"),
    ("tags", _tags, None, "KEY=VALUE,...",
     "extra tags for grouping the report, e.g. project=billing,owner=ops,env=prod "
     "(at most 8; keys [a-z][a-z0-9_]*, values [A-Za-z0-9._-]; default: none)"),
    ("proc_root", _text, "/proc", "DIR",
     "where to read the kernel's counters (sysfs is read beside it: /sys for /proc)"),
    ("measure", _choice(*MEASURE_MODES), "auto", "auto|host|cgroup",
     "what a container's records measure: auto reads CPU and memory from its cgroup where a "
     "cgroup limit confines them, and then its disk bytes, else /proc as on a VM; host always "
     "reads /proc; cgroup "
     "reads the container's use even without a limit"),
    ("spool_dir", _text, None, "DIR",
     "TCP spool, and where the last stamp given is kept "
     "(default: $STATE_DIRECTORY/spool or /var/lib/vmstats-agent/spool)"),
    ("spool_max", _number(int, 0, True), 10080, "N",
     "most records kept while the server is unreachable; the oldest go first"),
    ("machine_id_file", _text, None, "FILE",
     "the file naming this machine, which the TCP spool is marked with, so that records an "
     "image brought from another machine are set aside, not sent (default: systemd's "
     "/etc/machine-id, else /var/lib/dbus/machine-id; none there: the spool is not checked)"),
    ("key_file", _text, None, "FILE", "sign records with the key in FILE ('key_id secret')"),
    ("timeout", _seconds(), 10.0, "SECONDS", "TCP connect and acknowledgement timeout"),
    ("backoff_max", _seconds(), 60.0, "SECONDS", "longest TCP reconnect delay"),
    ("log_level", _choice("debug", "info", "warning", "error"), "info", "LEVEL", "stderr log level"),
)


class _Parser(argparse.ArgumentParser):
    """argparse with its errors in one line, as the agent's own checks word theirs.

    argparse prints its whole usage (eight lines of options) above an unknown or
    incomplete option: the one line that matters was below it, in a journal too.
    """

    def error(self, message):
        self.exit(2, "%s: error: %s (see --help)\n" % (self.prog, message))


def build_parser(prog="vmstats agent"):
    parser = _Parser(
        prog=prog, description="Sample this VM's CPU, memory, disk and network usage from /proc "
        "and push one record per interval to a vmstats aggregator.",
        epilog="Every option can also be set as VMSTATS_<NAME> in the environment "
        "(e.g. VMSTATS_SERVER) or as 'name = value' in the config file.")
    for name, _convert, default, metavar, text in OPTIONS:
        if default is not None:
            # The help says the default from the one table the agent runs on, as the others
            # ("default: ...") say theirs: an operator should not need the docs for it.
            text += " (default: %s)" % ("%g" % default if isinstance(default, float) else default)
        parser.add_argument("--" + name.replace("_", "-"), dest=name, metavar=metavar, help=text)
    parser.add_argument("--once", action="store_true",
                        help="sample one second, print the record and exit (sends nothing)")
    parser.add_argument("--config", metavar="FILE",
                        help="config file (default: $VMSTATS_CONFIG, else %s if present)"
                        % DEFAULT_CONFIG)
    parser.add_argument("--version", action="version", version="vmstats-agent " + __version__)
    return parser


def unquoted(text):
    """A value as meant: one pair of quotes around it removed, as systemd removes them in
    agent.env (and a Docker env file does not).  Left on, they became part of the value:
    ``host = "kvm07"`` tagged records with a host ``kvm07-`` that does not exist, and a quoted
    ``spool_dir`` made a folder named ``"`` under the working directory, both without a word."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1].strip()
    return text


def _without_comment(text):
    """``text`` up to a `` #`` that starts a comment after the value (outside quotes)."""
    quote = None
    for index, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and index and text[index - 1].isspace():
            return text[:index]
    return text


def read_config_file(path):
    """``{name: text}`` from a config file; ConfigError if unreadable or malformed.

    Read as UTF-8 whatever the locale, a byte order mark (an editor's) skipped: Python 3.6
    in the C locale (a unit with no LANG) read it as ASCII, and a comment naming "Müller"
    stopped the agent there while the same file worked on 3.7+.
    """
    known = dict((o[0], o) for o in OPTIONS)
    values = {}
    try:
        with open(path, "r", encoding=TEXT) as handle:
            lines = handle.read().splitlines()
    except UnicodeDecodeError as exc:
        raise ConfigError("cannot read config file %s: not UTF-8 text (byte %d)" % (path, exc.start))
    except (IOError, OSError) as exc:
        raise ConfigError("cannot read config file %s: %s" % (path, getattr(exc, "strerror", exc)))
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in known:
            raise ConfigError("%s:%d: expected 'name = value' with a known name, got %r"
                              % (path, number, line[:60]))
        values[name] = unquoted(_without_comment(value))
    return values


def unknown_environment(environ):
    """``[(name, the setting's variable it is closest to or None)]`` for each ``VMSTATS_*``
    variable that names no setting.  A typo in /etc/vmstats/agent.env (``VMSTATS_INTERVL``)
    left the default in force without a word; the agent warns of each at start.  A warning,
    not a refusal as in the config file: the environment is shared, and other vmstats
    commands read variables of their own (``VMSTATS_STATUS_TOKEN``)."""
    known = sorted([ENV_PREFIX + o[0].upper() for o in OPTIONS] + [ENV_PREFIX + "CONFIG"])
    found = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            import difflib  # only then: the agent's footprint is measured (OPERATIONS.md)
            close = difflib.get_close_matches(name, known, 1, 0.8)
            found.append((name, close[0] if close else None))
    return found


def load(argv=None, environ=None, prog="vmstats agent"):
    """The agent's settings as an argparse Namespace; raises ConfigError.

    argparse itself exits with status 2 and a usage line on unknown flags.
    """
    environ = os.environ if environ is None else environ
    args = build_parser(prog).parse_args(argv)
    path = args.config or environ.get(ENV_PREFIX + "CONFIG")
    if not path and os.path.exists(DEFAULT_CONFIG):
        path = DEFAULT_CONFIG
    from_file = read_config_file(path) if path else {}
    for name, convert, default, _metavar, _text in OPTIONS:
        flag = getattr(args, name)
        env_name = ENV_PREFIX + name.upper()
        if flag is not None:
            raw, source = flag, "--" + name.replace("_", "-")
        elif environ.get(env_name):
            raw, source = unquoted(environ[env_name]), env_name
        elif name in from_file:
            raw, source = from_file[name], "%s in %s" % (name, path)
        else:
            setattr(args, name, default)
            continue
        try:
            setattr(args, name, convert(raw))
        except ValueError as exc:
            raise ConfigError("%s: %s" % (source, exc))
    args.unknown_env = unknown_environment(environ)
    if args.spool_dir is None:
        args.spool_dir = _default_spool()
    if args.jitter is None:
        args.jitter = args.interval
    if args.server is None and not args.once:
        raise ConfigError("no server address (use --server HOST:PORT or VMSTATS_SERVER)")
    return args
