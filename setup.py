"""The parts of vmstats in C: signed frames' checks, record lines of every spelling read,
Telegraf's line-protocol lines read, and other agents' samples filed into their minutes.

Optional: without a C compiler (or OpenSSL's headers, for the first) the build goes on
without them, and the server does the same work in Python: about 1.6 us more a signed
datagram, 0.8-1.1 us more a record of any spelling in a parser, ~4 us more a Telegraf line
in a decoding process, and ~1 us more a Telegraf line filed into its minute in the reactor.
Each module numbers what passes between it and the Python that calls it (its VERSION), and a
build of another number is refused at import (vmstats/server/native.py): a module left from an
older checkout stops the server with one line instead of failing at its first call.
Everything else about the package is in setup.cfg.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("vmstats.server._framecheck", ["vmstats/server/_framecheck.c"],
                             libraries=["crypto"], optional=True),
                   Extension("vmstats.server._linescan", ["vmstats/server/_linescan.c"],
                             optional=True),
                   Extension("vmstats.server._influxscan", ["vmstats/server/_influxscan.c"],
                             optional=True),
                   Extension("vmstats.server._minutes", ["vmstats/server/_minutes.c"],
                             optional=True)])
