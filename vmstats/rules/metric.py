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
from operator import itemgetter

from vmstats import logstore
from vmstats.protocol import FIELD_NAMES, parse_tags

#: Position of each field and tag in a held row (the log row without ``ts,``).
_TAIL = logstore.COLUMNS[1:]
FIELD_INDEX = {name: _TAIL.index(name) for name in FIELD_NAMES if name != "seq"}
_HOST = _TAIL.index("host")
#: The cell of the extra tags (``project=web;owner=ops``), absent from a row without them.
_TAGS = _TAIL.index("tags")

#: Derived figures: name -> (what it is, its expression of the row's fields).  A figure with
#: an unknown input is unknown, and so is one divided by zero (a row without ``vcpus``).
DERIVED = {
    "disk": ("disk read + write, bytes/s", "disk_r + disk_w"),
    "net": ("network received + sent, bytes/s", "net_rx + net_tx"),
    "cpu_cores": ("vCPUs busy (cpu % x vcpus)", "cpu * vcpus * 0.01"),
    "mem_used_mb": ("memory used, MB (mem % x mem_mb)", "mem * mem_mb * 0.01"),
    "disk_per_vcpu": ("disk bytes/s per vCPU", "(disk_r + disk_w) / vcpus"),
    "net_per_vcpu": ("network bytes/s per vCPU", "(net_rx + net_tx) / vcpus"),
}
NAMES = tuple(FIELD_INDEX) + tuple(DERIVED)
_FUNCTIONS = {"max": max, "min": min, "abs": abs}
#: The longest metric expression: far more than any figure an operator writes, and short of
#: what nests deep enough to exhaust the parser (100,000 minus signs raised MemoryError).
MAX_LENGTH = 1000
_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.USub,
          ast.UAdd, ast.Constant, ast.Name, ast.Load, ast.Call)


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


def tag_cells(cells: list) -> tuple[bytes, bytes]:
    """The cells of a held row that ``tags`` reads (host, extra tags): a row whose cells are
    those of the VM's last has its tags."""
    return cells[_HOST], cells[_TAGS] if len(cells) > _TAGS else b""


def host_of(cells: list) -> str | None:
    return cells[_HOST].decode("utf-8", "replace") if cells[_HOST] else None


class Expression:
    """A compiled metric: ``read(cells)`` is a float, or None when an input is unknown."""

    def __init__(self, text: str, fields: tuple[str, ...], function=None, checked: bool = False):
        self.text = text
        #: The row's fields the metric reads, and no other: a tick parses these only.
        self.fields = fields
        self._function = function
        self._checked = checked
        #: The row's cell of a metric that is one field of it (read without a call), else None.
        self.index = FIELD_INDEX[fields[0]] if function is None else None
        cells = [FIELD_INDEX[name] for name in fields]
        self._pick = itemgetter(*cells) if len(cells) > 1 else lambda row: (row[cells[0]],)

    def read(self, cells: list):
        """The metric of a held row split at its commas (``row.split(b",")``).

        An empty cell is None (unknown), never 0, and so is a metric that reads it.
        """
        if self.index is not None:
            cell = cells[self.index]
            return float(cell) if cell else None
        inputs = self._pick(cells)
        if not all(inputs):
            return None
        try:
            result = self._function(*map(float, inputs))
        except (ZeroDivisionError, OverflowError, TypeError):
            return None
        if not self._checked:
            return result
        return float(result) if math.isfinite(result) else None


class _Inline(ast.NodeTransformer):
    """A derived figure's name replaced by its expression of the row's fields."""

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in DERIVED:
            return ast.parse(DERIVED[node.id][1], mode="eval").body
        return node


def compile_metric(text: str) -> Expression:
    """A metric name or an arithmetic expression of them (+ - * /, max, min, abs, numbers).

    The expression is parsed and every node checked against a short list
    before it is compiled, so a rules file can never run anything else.
    """
    text = text.strip()
    if text in FIELD_INDEX:
        return Expression(text, (text,))
    if text in DERIVED:
        return _compile(text, ast.parse(text, mode="eval"), checked=False)
    if len(text) > MAX_LENGTH:  # nested past reason, the parser runs out of stack or memory
        raise ValueError("%r... is %d characters, more than the %d a metric may have"
                         % (text[:40], len(text), MAX_LENGTH))
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, RecursionError, MemoryError):
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
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and _zero(node.right):
            raise ValueError("%r divides by %s, which is 0: the metric would never have a value"
                             % (text, ast.unparse(node.right)))
    try:
        return _compile(text, tree, checked=True)
    except (RecursionError, MemoryError):  # a few hundred signs or brackets deep
        raise ValueError("%r... nests deeper than an expression can be compiled"
                         % text[:40]) from None


def _zero(node: ast.AST) -> bool:
    """Is this part of a checked expression a constant that is 0 (or cannot be worked out)?
    A rule dividing by it is unknown at every record and never leaves insufficient-data."""
    if any(isinstance(n, ast.Name) and n.id not in _FUNCTIONS for n in ast.walk(node)):
        return False
    code = compile(ast.fix_missing_locations(ast.Expression(node)), "<metric>", "eval")
    try:
        return eval(code, {"__builtins__": {}, **_FUNCTIONS}) == 0  # noqa: S307
    except (ZeroDivisionError, OverflowError):
        return True


def _compile(text: str, tree: ast.Expression, checked: bool) -> Expression:
    """A checked tree as one function of the row's fields it reads, compiled once.

    Derived figures are written out in their fields, so a tick parses each
    cell once and calls one function; ``checked`` (an expression) turns an
    infinite result into None.
    """
    body = _Inline().visit(tree).body
    fields = tuple(dict.fromkeys(node.id for node in ast.walk(body)
                                 if isinstance(node, ast.Name) and node.id in FIELD_INDEX))
    function = ast.Expression(ast.Lambda(ast.arguments(
        posonlyargs=[], args=[ast.arg(name) for name in fields], kwonlyargs=[], kw_defaults=[],
        defaults=[]), body))
    ast.fix_missing_locations(function)
    code = compile(function, "<metric>", "eval")
    return Expression(text, fields, eval(code, {"__builtins__": {}, **_FUNCTIONS}),  # noqa: S307
                      checked)
