"""The one part of vmstats in C: signed frames read and their HMACs computed a batch at a time.

Optional: without a C compiler or OpenSSL's headers the build goes on without it, and the
server checks signed frames in Python (signing.py), about 1.6 us a datagram slower.  Everything
else about the package is in setup.cfg.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("vmstats.server._framecheck", ["vmstats/server/_framecheck.c"],
                             libraries=["crypto"], optional=True)])
