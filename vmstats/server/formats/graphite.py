"""Graphite plaintext (``path value timestamp``), with path templates naming VMs and fields.

A template is ``pattern field[:counter]``: the pattern is the metric path
with ``{vm}`` where the VM's name is, optionally ``{device}`` (a disk or an
interface, whose rates are summed per VM) and ``{field}`` (a segment that is
itself the vmstats field's name), and ``*`` for any one segment; a
placeholder or ``*`` may share a segment with literal text
(``interface-{device}``).  ``field`` is one of cpu, mem, mem_mb, vcpus,
disk_r, disk_w, net_rx, net_tx (omitted when the pattern has ``{field}``);
``:counter`` says the values are cumulative (bytes so far) rather than rates
already.  The first template that matches a path wins; a path no template
matches is counted as ignored.

    servers.{vm}.cpu.percent cpu
    servers.{vm}.interface.{device}.rx_bytes net_rx:counter
    collectd.{vm}.interface-{device}.if_octets.rx net_rx:counter

Graphite writes dots in host names as ``_`` (``10_0_0_5``): a VM segment
made of four numbers joined by ``_`` is read as that IPv4 address.  A
timestamp of ``-1`` (or none) means now (another below 0 is out of range);
Graphite 1.1 tags (``path;tag=value``) are dropped before matching.
"""

import math
import re

from vmstats import protocol
from vmstats.server.formats import (
    GAUGES,
    IGNORED,
    R_BAD_VM,
    R_NON_FINITE,
    R_RANGE,
    R_SYNTAX,
    R_TOO_LONG,
    R_UTF8,
    RATES,
    TOTAL,
    USED,
    Decoder,
    Sample,
    Tally,
    VmIds,
    Words,
)

FIELDS = GAUGES + RATES
_PLACEHOLDER = re.compile(r"\{(vm|device|field)\}|\*")
#: A value or timestamp: a decimal number (``protocol.DECIMAL``), not whatever float() takes.
_DECIMAL = re.compile(protocol.DECIMAL.encode("ascii") + rb"\Z").match
_UNDERSCORED_IP = re.compile(r"[0-9]{1,3}(?:_[0-9]{1,3}){3}\Z")


class Template:
    """One compiled ``pattern field[:counter]``."""

    def __init__(self, text: str):
        parts = text.split()
        if len(parts) not in (1, 2):
            raise ValueError("template %r is not 'pattern field[:counter]'" % text)
        pattern = parts[0]
        target = parts[1] if len(parts) == 2 else ""
        field, _sep, mode = target.partition(":")
        if mode not in ("", "counter"):
            raise ValueError("template %r: only ':counter' may follow the field" % text)
        if "{vm}" not in pattern:
            raise ValueError("template %r has no {vm}" % text)
        if field and field not in FIELDS:
            raise ValueError("template %r: %r is not one of %s" % (text, field, ", ".join(FIELDS)))
        if not field and "{field}" not in pattern:
            raise ValueError("template %r names no field" % text)
        self.counter = mode == "counter"
        if self.counter and field and field not in RATES:
            raise ValueError("template %r: only rates (%s) can be counters" % (text, ", ".join(RATES)))
        self.field = field
        regex = []
        last = 0
        for match in _PLACEHOLDER.finditer(pattern):
            regex.append(re.escape(pattern[last:match.start()]))
            regex.append("[^.]+" if match.group(0) == "*" else "(?P<%s>[^.]+)" % match.group(1))
            last = match.end()
        regex.append(re.escape(pattern[last:]))
        try:
            self.regex = re.compile("".join(regex) + r"\Z")
        except re.error as exc:
            raise ValueError("template %r: %s" % (text, exc)) from None
        self.text = text


def parse_templates(texts: list[str]) -> list[Template]:
    """Templates from the config; ValueError naming the first bad one."""
    return [Template(text) for text in texts]


class GraphiteDecoder(Decoder):
    """``path value [timestamp]`` lines to samples through the templates."""

    name = "graphite"
    title = "Graphite"
    options = {"max_line": "--max-line", "templates": "--graphite-template"}

    def __init__(self, templates: list[Template], max_line: int = 65536):
        self.templates = templates
        self.max_line = max_line
        self.vm_ids = VmIds()

    def settings(self) -> dict:
        """What a replay decodes this decoder's journaled payloads by (Decoder.settings): the
        templates as configured, which the journal keeps once a checkpoint, not per payload."""
        return {"max_line": self.max_line, "templates": [template.text for template in self.templates]}

    @classmethod
    def from_settings(cls, settings: dict) -> "GraphiteDecoder":
        """ValueError if a template no longer parses, TypeError if ``settings`` are no
        GraphiteDecoder's."""
        settings = dict(settings)
        texts = settings.pop("templates", [])
        if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
            raise TypeError("the Graphite templates are not a list of strings")
        return cls(parse_templates(texts), **settings)

    def decode(self, data: bytes, now: float, tally: Tally,
               lines: list | None = None) -> list[Sample]:
        """Samples of every line a template maps (values as sent: the minutes judge them)."""
        out: list[Sample] = []
        counts = tally.counts
        for number, line in enumerate(data.split(b"\n"), 1):
            line = line.strip()
            if not line:
                continue
            if len(line) > self.max_line:
                tally.reject(R_TOO_LONG, Words("line of %d bytes", len(line)))
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                tally.reject(R_UTF8, "line is not UTF-8")
                continue
            # Split as bytes: ASCII whitespace, as carbon splits; str.split would also take
            # a no-break space or U+2003 between the path and the value.
            parts = line.split()
            if len(parts) not in (2, 3):
                tally.reject(R_SYNTAX, Words("%r is not 'path value [timestamp]'", text[:60]))
                continue
            numbers = parts[1:]
            if not all(map(_DECIMAL, numbers)):
                words = [number.decode("utf-8") for number in numbers]
                if any(map(protocol.spells_non_finite, words)):
                    tally.reject(R_NON_FINITE, Words("%r is not finite", text[:60]))
                else:
                    tally.reject(R_SYNTAX, Words("%r has no decimal value and time", text[:60]))
                continue
            value = float(parts[1])
            ts = float(parts[2]) if len(parts) == 3 else -1.0
            if not math.isfinite(value) or not math.isfinite(ts):  # digits past a double's
                tally.reject(R_NON_FINITE, Words("%r is not finite", text[:60]))
                continue
            if ts == -1:
                ts = now
            elif ts < 0:  # no minute before 1970 was ever written: "late" would say one was
                tally.reject(R_RANGE, Words("%r: timestamp before 1970", text[:60]))
                continue
            path = parts[0].decode("utf-8").partition(";")[0]
            for template in self.templates:
                match = template.regex.match(path)
                if match is not None:
                    break
            else:
                counts[IGNORED] += 1
                continue
            groups = match.groupdict()
            field = template.field or groups.get("field", "")
            if field not in (RATES if template.counter else FIELDS):
                counts[IGNORED] += 1
                continue
            raw = groups["vm"]
            if _UNDERSCORED_IP.match(raw):
                raw = raw.replace("_", ".")
            try:
                vm = self.vm_ids(raw)
            except protocol.DecodeError as exc:
                tally.reject(R_BAD_VM, exc.detail)
                continue
            kind = field + TOTAL if template.counter else field
            if lines is not None:
                lines += len(out), number
            out.append(Sample(vm, ts, kind, groups.get("device", ""), value))
            counts[USED] += 1
        return out
