"""Preloaded by the writers' forkserver (``set_forkserver_preload``), for its side effect only.

systemd (KillMode=control-group), ``timeout`` and Ctrl-C signal every process of the service
at once.  Python's forkserver ignores SIGINT but dies of SIGTERM or SIGHUP; its pool then took
every writer for gone, started new ones from a new forkserver, and the old writers, still
alive, took the new ones' end-of-work messages, so the aggregator hung at exit.  With the stop
signals ignored here the forkserver, and each writer it forks, outlive the signal: only the
aggregator ends them, after its final flush.  Nothing else imports this module.

The forkserver ends at the end of a pipe only the aggregator holds, if it runs then; the kernel
also kills it when the aggregator dies (lifeline.py), even stopped, and with it each writer.
"""

import signal

from vmstats.server import lifeline, writer  # noqa: F401  (writer: what the writers run)

signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
lifeline.killed_with_parent()
