"""The parts of vmstats in C: signed frames' checks, and record lines of every spelling read.

Optional: without a C compiler (or OpenSSL's headers, for the first) the build goes on
without them, and the server does the same work in Python: about 1.6 us more a signed
datagram, and about 0.5 us more a record spelled otherwise than the agent's.  Everything
else about the package is in setup.cfg.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("vmstats.server._framecheck", ["vmstats/server/_framecheck.c"],
                             libraries=["crypto"], optional=True),
                   Extension("vmstats.server._linescan", ["vmstats/server/_linescan.c"],
                             optional=True)])
