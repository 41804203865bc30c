"""The aggregator's settings, in one place, so the CLI, the services and the tests agree."""

import os
import re
from dataclasses import dataclass, field
from typing import Any

from vmstats.capacity import defaults as capacity_defaults
from vmstats.protocol import DEFAULT_MAX_FUTURE, DEFAULT_MAX_PAST, DEFAULT_PORT, DEFAULT_SIG_WINDOW
from vmstats.server.formats import MAX_DEVICES, MAX_NAME_BYTES, MAX_NAMES, MAX_WRITTEN
from vmstats.server.formats.interfaces import VIRTUAL_INTERFACES

DEFAULT_HTTP_PORT = 8898
#: 8 MiB absorbs about 100,000 small datagrams while the reactor is busy elsewhere.
DEFAULT_RCVBUF = 8 << 20
#: SO_RCVBUF is a C int: a larger --rcvbuf cannot even be asked for (Linux grants half of it).
MAX_RCVBUF = (1 << 31) - 1
#: The least --max-per-vm: the most records of one VM our senders put in one acknowledged batch
#: (the agent 200, replay and simulate 1,000).  A batch larger than the cap is answered busy
#: every time it is sent, so its sender would never move on.
MIN_PER_VM = 1000

#: ASCII: ``\d`` and ``\s`` would otherwise take every script's digits and spaces (float()
#: reads ``\u0661\u0660`` as 10), which no operator means to type.
_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*\Z", re.ASCII)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


#: The longest duration any option takes: a century outlasts any retention or run an operator
#: means, and longer ones overflow the timers and dates they are turned into.
MAX_DURATION = 36500 * 86400

#: How a compaction pass's summary line says its retention was held back by a clock far ahead
#: of the data (compact.py writes it, the server's compaction service counts the passes that
#: say it); here so the server need not import compact.py and numpy with it.
RETENTION_HELD_BACK = "retention held back"
#: How a pass's notice names day files dated after the clock's next day (compact.py).
FUTURE_DATED = "future-dated"
#: How a pass's notice names the symbolic links under vms/ it left alone (compact.py).
LINKS_LEFT = "symbolic links left alone"


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``5m``, ``1h`` (what operators type); ValueError otherwise."""
    match = _DURATION_RE.match(text or "")
    if not match:
        raise ValueError("%r is not a duration like 90s, 5m or 1h" % text)
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds <= MAX_DURATION:  # also inf, from enough digits
        raise ValueError("%r is longer than %s" % (text, format_duration(MAX_DURATION)))
    return seconds


def format_duration(seconds: float) -> str:
    """A duration as parse_duration reads it back: ``2d`` for whole days, else seconds."""
    if seconds and seconds % 86400 == 0:
        return "%dd" % (seconds // 86400)
    return ("%d" % seconds if seconds == int(seconds) else repr(float(seconds))) + "s"


@dataclass
class ServerConfig:
    """Everything ``vmstats serve`` can be told; defaults are the documented ones."""

    bind: str = "0.0.0.0"
    udp_port: int = DEFAULT_PORT
    tcp_port: int = DEFAULT_PORT
    #: -1 disables the HTTP endpoint.
    http_port: int = DEFAULT_HTTP_PORT
    data_dir: str = "vmstats-data"
    flush_interval: float = 60.0
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    #: Parser processes (0: the reactor parses everything itself).
    parsers: int = field(default_factory=lambda: os.cpu_count() or 1)
    #: Seconds a parser or decoding process may hold payloads without answering before it is
    #: killed and the reactor parses them (a stopped, swapped-out or looping process).
    parser_timeout: float = 10.0
    duration: float | None = None
    status_file: str | None = None
    #: key id -> signing.Key (secret, optional VM binding); None: signatures optional.
    auth_keys: dict[bytes, Any] | None = None
    sig_window: int = DEFAULT_SIG_WINDOW
    max_buffered: int = 2_000_000
    max_per_vm: int = 10_000
    #: VMs known at once; records of further new VMs are dropped (docs/OPERATIONS.md, "Memory").
    max_vms: int = 100_000
    max_past: int = DEFAULT_MAX_PAST
    max_future: int = DEFAULT_MAX_FUTURE
    drain_timeout: float = 30.0
    rcvbuf: int = DEFAULT_RCVBUF
    max_line: int = 65536
    #: TCP push connections, in all and from one source address; when a cap is reached the
    #: longest silent one is closed for the newcomer (connections.py).
    max_connections: int = 4096
    max_per_source: int = 512
    idle_timeout: float = 300.0
    http_max_connections: int = 256
    http_max_per_source: int = 32
    http_idle_timeout: float = 30.0
    #: Bytes of InfluxDB write bodies held in memory at once (read, unzipped, being fed): a
    #: body that would pass it is answered 503 with Retry-After until others are in.  Without
    #: it, every HTTP connection could hold a 25 MiB body and its unzipped copy at once.
    http_body_memory: int = 128 << 20
    #: Seconds a request body may take to arrive whole after its headers: past it the request
    #: is answered 408 and its connection closed.  The idle timeout alone let a sender of one
    #: byte a second keep its connection, and the room its body holds, for as long as it liked.
    http_body_timeout: float = 60.0
    #: Seconds a request's head (request line and headers, at most 16 KiB) may take from its
    #: first byte to its end: past it 408 and the connection closed.  A head trickled a byte a
    #: second, never idle, held its connection for hours.  Clients write a head in one go; 20 s
    #: is Apache's (mod_reqtimeout) and lets 16 KiB through a 9.6 kbit/s link (OPERATIONS.md).
    http_head_timeout: float = 20.0
    #: Networks the push ports (UDP, TCP) and the HTTP port accept; empty: any.
    allow: tuple[str, ...] = ()
    http_allow: tuple[str, ...] = ()
    #: The bearer token that unlocks /status details (data dir, per-VM last seen).
    status_token: str | None = None
    #: None: DATA_DIR/journal; "" disables the journal.
    journal_dir: str | None = None
    #: off: never (a crash of the machine can lose what the page cache held);
    #: interval: every fsync_interval seconds; batch: before every TCP ack.
    fsync: str = "interval"
    fsync_interval: float = 1.0
    # Other agents' formats (docs/PROTOCOL.md, "Other formats"); -1: off, 0: ephemeral.
    #: InfluxDB line protocol (Telegraf's socket_writer, InfluxDB's UDP), UDP and TCP.
    influx_port: int = -1
    #: The tag that names the VM in line protocol (Telegraf's is host).
    influx_vm_tag: str = "host"
    #: Token the HTTP write API requires (None: any, or none).
    write_token: str | None = None
    #: collectd's binary network protocol, UDP (collectd's own port is 25826).
    collectd_port: int = -1
    #: collectd user -> password (collectd's AuthFile), for signed and encrypted packets.
    collectd_auth: dict[str, str] | None = None
    #: The least collectd security a packet must have: none, sign or encrypt.
    collectd_security: str = "none"
    #: Graphite plaintext, UDP and TCP (carbon's port is 2003).
    graphite_port: int = -1
    #: Graphite path templates, ``pattern field[:counter]`` each.
    graphite_templates: list[str] = field(default_factory=list)
    #: Seconds a minute stays open for late samples of other agents.
    minute_grace: float = 30.0
    #: Glob patterns of the interface names other agents' network rates leave out
    #: (formats/interfaces.py); when a VM's every interface matches, all are counted.
    virtual_interfaces: tuple[str, ...] = VIRTUAL_INTERFACES
    #: Bounds of the other agents' state: counters tracked (--edge-max-counters), minutes open
    #: (--edge-max-open), VMs whose minute last written is remembered beside those open
    #: (--edge-max-written: a sample for it is late), devices of one kind
    #: (disks, interfaces; the CPUs or memory kinds of all its seconds) in one VM's minute,
    #: and device names in all open minutes together (--edge-max-names); and the bytes of one
    #: device name (--edge-max-name-bytes), since the bound on names counts names.
    edge_max_counters: int = 200_000
    edge_max_open: int = 200_000
    edge_max_written: int = MAX_WRITTEN
    edge_max_devices: int = MAX_DEVICES
    edge_max_names: int = MAX_NAMES
    edge_max_name_bytes: int = MAX_NAME_BYTES
    #: Compaction and retention (docs/STORAGE.md): how often a pass runs (0: never), and
    #: how long after a day ends its CSV files are compacted, its rows kept, its rollups kept.
    compact_interval: float = 3600.0
    compact_after: float = 2 * 86400.0
    retain_raw: float = 90 * 86400.0
    retain_rollups: float = 730 * 86400.0
    #: A rules file (vmstats/rules/): live alerts and scaling on the incoming records.
    rules_file: str | None = None
    #: A host inventory (vmstats/capacity/): enables POST /admission on the HTTP port.
    inventory: str | None = None
    #: Seconds between refreshes of the per-host demand summary admission answers from.
    capacity_refresh: float = 300.0
    #: Seconds an admission answer's offer holds its room (until the VMs show in the data).
    admission_hold: float = 1800.0
    #: How demand is judged for admission (vmstats.capacity.demand.Settings' fields).
    capacity_percentile: str = capacity_defaults.PERCENTILE_TEXT
    capacity_peak_minutes: int = capacity_defaults.PEAK_MINUTES
    capacity_coverage_min: float = 0.8
    capacity_days: int = 14
    #: Days ahead a rising trend is projected and added to a host's demand for admission.
    capacity_horizon_days: float = capacity_defaults.HORIZON_DAYS
    capacity_reserve_stopped: bool = capacity_defaults.RESERVE_STOPPED
    #: Per cent of a host's VMs stopped or never heard from past which the host is unknown.
    capacity_stopped_share_max: float = capacity_defaults.STOPPED_SHARE_MAX * 100
