"""The agent's loop in-process: timing, stamps, sequence numbers, stopping."""

import os
import signal
import threading

from vmstats import protocol
from vmstats.client import agent, config

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "proc", "c")


class Collector(object):
    """A sender that keeps what it is given."""

    def __init__(self):
        self.lines = []
        self.flushes = 0

    def send(self, lines):
        self.lines.extend(lines)

    def flush(self, force=False):
        self.flushes += 1
        return True


def settings(*args):
    return config.load(["--server", "127.0.0.1:9", "--proc-root", FIXTURE, "--jitter", "0", *args],
                       environ={})


def test_loop_sends_count_records_with_rising_seq_and_stamps():
    sender = Collector()
    runner = agent.Agent(settings("--interval", "0.05", "--sub-interval", "0.01", "--count", "5"),
                         sender, "10.0.0.7", "web1")
    try:
        assert runner.run() == 5
    finally:
        runner.sleeper.close()
        runner.sampler.close()
    records = [protocol.Decoder().decode_line(line) for line in sender.lines]
    assert [r.seq for r in records] == [0, 1, 2, 3, 4]
    assert all(r.vm == "10.0.0.7" and r.host == "web1" for r in records)
    stamps = [r.ts for r in records]
    assert stamps == sorted(set(stamps))       # sub-second intervals still get distinct stamps
    # The fixture never changes: nothing moved, memory and size as in the file.
    assert {(r.cpu, r.cpu_max, r.mem, r.vcpus, r.mem_mb, r.net_rx) for r in records} == \
        {(0.0, 0.0, 25.0, 2, 4096, 0.0)}
    assert sender.flushes == 5                 # one at each interval, late or not, one forced at the end


def test_stamps_follow_the_wall_clock_and_always_increase():
    base = 1700000000                            # a clock that is set (agent.clock_set)
    mono, wall = [0.0], [0.0]
    runner = agent.Agent(settings("--interval", "60"), Collector(), "v", None, sleeper=object(),
                         clock=lambda: mono[0], wall=lambda: base + wall[0])
    stamps = []
    for mono[0], wall[0] in ((0.0, 1000.4),
                             (60.0, 1060.6),
                             (60.3, 1060.9),     # same second after rounding: +1
                             (61.0, 1059.0),     # a small step back: +1
                             (121.0, 5000.2),    # a jump forward: the new time
                             (181.0, 100.0)):    # a big step back: the new time
        stamps.append(runner.stamp() - base)
    assert stamps == [1000, 1061, 1062, 1063, 5000, 100]


def test_sigterm_ends_the_loop_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGTERM)
    sender = Collector()
    runner = agent.Agent(settings("--interval", "30"), sender, "v", None)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        assert runner.run() == 0
    finally:
        timer.join()
        runner.sleeper.close()
        runner.sampler.close()
    assert runner.sleeper.stopped and sender.lines == []
    assert signal.getsignal(signal.SIGTERM) is before
