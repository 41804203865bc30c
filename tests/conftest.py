"""Shared fixtures, and the number of test workers."""

import os

import pytest


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config) -> int | None:
    """One worker more than the machine has cores (``-n auto``; one on a one-core machine).

    A worker spends about a third of its time waiting on what its tests started rather than
    computing (servers flushing on their timers, agents sending once a second, clocks to be
    stepped): on 2 cores a third worker fills that time.  PYTEST_XDIST_AUTO_NUM_WORKERS still
    decides when it is set (None: xdist reads it).
    """
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity outside Linux
        cores = os.cpu_count() or 1
    return cores + 1 if cores > 1 else 1
