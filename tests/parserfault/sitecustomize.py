"""Loaded by a test's server through PYTHONPATH: a parser process fails on a chosen payload.

With ``VMSTATS_TEST_PARSER_FAULT`` set (a string), a parser process's ``Parser.parse`` raises
``RuntimeError`` on a payload that holds it, as a bug in the parser would: the process goes
on, and what it failed on is handed to the reactor (parseworker.py).  The server's own
parser (the reactor's) is left alone.  Without the variable nothing is changed.
"""

import os

if os.environ.get("VMSTATS_TEST_PARSER_FAULT"):
    import sys

    from vmstats.server import parse

    _marker = os.environ["VMSTATS_TEST_PARSER_FAULT"].encode()
    _parse = parse.Parser.parse

    def _failing(self, data: bytes, now: float):
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        if _marker in data and spec is not None and spec.name == "vmstats.server.parseworker":
            raise RuntimeError("a parser fault on a payload holding %r" % _marker)
        return _parse(self, data, now)

    parse.Parser.parse = _failing
