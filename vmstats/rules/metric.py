"""What a rule measures: a held row's figures, derived ones, and simple expressions of them.

The buffer holds each record as its log row without the timestamp
(``logstore.format_tail``); the columns are read here by name from
``logstore.COLUMNS``, so a column added to the layout (a new tag) moves
nothing.  ``cpu`` and ``mem`` are already shares of the VM's own size;
disk and network rates are also offered per vCPU, so one threshold fits VMs
of every size.
"""

import ast
import math

from vmstats import logstore
from vmstats.protocol import FIELD_NAMES, parse_tags

#: Position of each field and tag in a held row (the log row without ``ts,``).
_TAIL = logstore.COLUMNS[1:]
FIELD_INDEX = {name: _TAIL.index(name) for name in FIELD_NAMES if name != "seq"}
_HOST = _TAIL.index("host")
#: The cell of the extra tags (``project=web;owner=ops``), absent from a row without them.
_TAGS = _TAIL.index("tags")

#: Derived figures: name -> (what it is, the row's fields it reads, function of them).
DERIVED = {
    "disk": ("disk read + write, bytes/s", ("disk_r", "disk_w"),
             lambda v: _add(v["disk_r"], v["disk_w"])),
    "net": ("network received + sent, bytes/s", ("net_rx", "net_tx"),
            lambda v: _add(v["net_rx"], v["net_tx"])),
    "cpu_cores": ("vCPUs busy (cpu % x vcpus)", ("cpu", "vcpus"),
                  lambda v: _mul(v["cpu"], v["vcpus"], 0.01)),
    "mem_used_mb": ("memory used, MB (mem % x mem_mb)", ("mem", "mem_mb"),
                    lambda v: _mul(v["mem"], v["mem_mb"], 0.01)),
    "disk_per_vcpu": ("disk bytes/s per vCPU", ("disk_r", "disk_w", "vcpus"),
                      lambda v: _per(_add(v["disk_r"], v["disk_w"]), v["vcpus"])),
    "net_per_vcpu": ("network bytes/s per vCPU", ("net_rx", "net_tx", "vcpus"),
                     lambda v: _per(_add(v["net_rx"], v["net_tx"]), v["vcpus"])),
}
NAMES = tuple(FIELD_INDEX) + tuple(DERIVED)
_FUNCTIONS = {"max": max, "min": min, "abs": abs}
_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.USub,
          ast.UAdd, ast.Constant, ast.Name, ast.Load, ast.Call)


def _add(a, b):
    return None if a is None or b is None else a + b


def _mul(a, b, scale):
    return None if a is None or b is None else a * b * scale


def _per(a, b):
    return None if a is None or not b else a / b


def tags(cells: list) -> dict[str, str]:
    """The tags of a held row split at its commas: ``host`` and the extra tags, by name."""
    found = {}
    if len(cells) > _TAGS and cells[_TAGS]:
        try:
            found = dict(parse_tags(cells[_TAGS].decode("utf-8"), logstore.TAGS_SEPARATOR))
        except (ValueError, UnicodeError):
            found = {}
    host = host_of(cells)
    if host is not None:
        found["host"] = host
    return found


def host_of(cells: list) -> str | None:
    return cells[_HOST].decode("utf-8", "replace") if cells[_HOST] else None


class Expression:
    """A compiled metric: ``value(fields)`` is a float, or None when an input is unknown."""

    def __init__(self, text: str, names: tuple[str, ...], code):
        self.text = text
        self.names = names
        self._code = code
        #: The row's cell of a metric that is one field of it (read without a dict), else None.
        self.index = FIELD_INDEX[names[0]] if code is None and names[0] in FIELD_INDEX else None
        #: (name, cell) of every field the metric reads, and no other: a tick parses these only.
        inputs = [name for n in names for name in ((n,) if n in FIELD_INDEX else DERIVED[n][1])]
        self._cells = tuple((name, FIELD_INDEX[name]) for name in dict.fromkeys(inputs))

    def read(self, cells: list):
        """The metric of a held row split at its commas (``row.split(b",")``).

        An empty cell is None (unknown), never 0, and so is the metric of it.
        """
        if self.index is not None:
            cell = cells[self.index]
            return float(cell) if cell else None
        return self.value({name: float(cells[i]) if cells[i] else None for name, i in self._cells})

    def value(self, fields: dict):
        if self._code is None and self.names[0] in FIELD_INDEX:
            return fields[self.names[0]]
        scope = {}
        for name in self.names:
            figure = fields.get(name) if name in FIELD_INDEX else DERIVED[name][2](fields)
            if figure is None:
                return None
            scope[name] = figure
        if self._code is None:
            return scope[self.names[0]]
        try:
            result = eval(self._code, {"__builtins__": {}, **_FUNCTIONS}, scope)  # noqa: S307
        except (ZeroDivisionError, OverflowError, TypeError):
            return None
        return float(result) if math.isfinite(result) else None


def compile_metric(text: str) -> Expression:
    """A metric name or an arithmetic expression of them (+ - * /, max, min, abs, numbers).

    The expression is parsed and every node checked against a short list
    before it is compiled, so a rules file can never run anything else.
    """
    text = text.strip()
    if text in NAMES:
        return Expression(text, (text,), None)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ValueError("%r is neither a metric (%s) nor an expression of them"
                         % (text, ", ".join(NAMES))) from None
    names = []
    for node in ast.walk(tree):
        if not isinstance(node, _NODES):
            raise ValueError("%r: only + - * /, numbers, max(), min(), abs() and the metrics %s "
                             "may appear" % (text, ", ".join(NAMES)))
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS or node.keywords:
                raise ValueError("%r: the only functions are max(), min() and abs()" % text)
        elif isinstance(node, ast.Name) and node.id not in _FUNCTIONS:
            if node.id not in NAMES:
                raise ValueError("%r: unknown metric %r (known: %s)" % (text, node.id,
                                                                      ", ".join(NAMES)))
            names.append(node.id)
        elif isinstance(node, ast.Constant) and not isinstance(node.value, (int, float)):
            raise ValueError("%r: only numbers may appear as constants" % text)
    if not names:
        raise ValueError("%r does not use any metric" % text)
    return Expression(text, tuple(dict.fromkeys(names)), compile(tree, "<metric>", "eval"))
