"""How a flush divides the table into pool tasks."""

import pickle

import pytest

from vmstats.server.flusher import split_tasks
from vmstats.server.writer import MarshalledShare


def test_tasks_are_bounded_and_never_split_a_vm():
    table = {"vm%d" % i: {ts: b"row" for ts in range(i % 7 + 1)} for i in range(100)}
    table["big"] = {ts: b"row" for ts in range(50)}
    tasks = split_tasks(table, max_records=20)
    seen = [vm for task in tasks for vm, _rows in task]
    assert sorted(seen) == sorted(table)  # every VM exactly once
    for task in tasks:
        size = sum(len(rows) for _vm, rows in task)
        assert size <= 20 or len(task) == 1  # only a VM bigger than a task travels alone
    assert split_tasks({}) == []


def test_a_failed_task_keeps_only_its_own_vms_for_the_retry():
    from twisted.internet.task import Clock
    from twisted.python.failure import Failure

    from vmstats.server.buffer import Buffer
    from vmstats.server.flusher import FlusherService
    from vmstats.server.metrics import Metrics

    metrics = Metrics()
    buffer = Buffer(metrics, 100, 100)
    clock = Clock()
    flusher = FlusherService(clock, buffer, metrics, "unused", 60, 1, 5)
    lost_task = [("10.0.0.1", {1: b"a"}), ("10.0.0.2", {1: b"b", 2: b"c"})]
    ok_task = [("10.0.0.3", {1: b"d"}), ("10.0.0.4", {1: b"e"})]
    outcomes = [(False, Failure(RuntimeError("worker died"))),
                (True, [("10.0.0.3", 1, None, False), ("10.0.0.4", 0, "OSError: full", True)])]
    tasks = [lost_task, ok_task]
    assert flusher._settle(outcomes, tasks, 0.0) == 1
    assert sorted(buffer.table) == ["10.0.0.1", "10.0.0.2", "10.0.0.4"]  # not 10.0.0.3
    assert buffer.count == 4
    assert metrics.write_failures == 3 and metrics.flushed_records == 1
    # The flush's rows are let go one task per reactor turn, not all at once.
    assert tasks == [lost_task]
    clock.advance(0)
    assert tasks == []
    assert buffer.table["10.0.0.2"] == {1: b"b", 2: b"c"}  # restored rows are the buffer's now


@pytest.mark.parametrize("refused, said", [
    ([("a/b", {1: b"x"}), ("..", {1: b"y", 2: b"z"})], "dropping 3 records of 2 VMs the log layout refuses"),
    # One of each read "1 records of 1 vms": the count's noun is words.counted's.
    ([("a/b", {1: b"x"})], "dropping 1 record of 1 VM the log layout refuses"),
])
def test_records_the_layout_refuses_are_counted_and_logged_once_per_period(tmp_path, caplog, refused, said):
    """Ids the layout refuses cannot reach the buffer through the parser any more (the grammar
    admits only writable ids); should one get there, its drop is counted and one ERROR line a
    period says so, not one per VM and flush."""
    import logging

    from twisted.internet.task import Clock

    from vmstats.server.buffer import Buffer
    from vmstats.server.flusher import FlusherService
    from vmstats.server.metrics import Metrics
    from vmstats.server.writer import write_share

    metrics = Metrics()
    flusher = FlusherService(Clock(), Buffer(metrics, 100, 100), metrics, str(tmp_path), 60, 1, 5)
    caplog.set_level(logging.ERROR, logger="vmstats.server.flusher")
    for _flush in range(3):
        task = [*refused, ("10.0.0.1", {60: b"1,,2,,,,,,,,"})]
        flusher._settle([(True, write_share(str(tmp_path), task))], [task], 0.0)
    lost = sum(len(rows) for _vm, rows in refused)
    assert metrics.drops["unwritable"] == 3 * lost and metrics.flushed_records == 1  # logged once
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage().startswith(said + ": vm a/b: "), caplog.records[0].getMessage()


def test_a_share_reaches_its_writer_whole_as_one_marshal_blob():
    # The pool pickles tasks in a thread of the reactor's process, holding the GIL throughout:
    # the share crosses as one marshal blob (a quarter of pickle's time), and comes out as
    # the plain list write_share takes.
    share = [("vm-%d" % i, {1_700_000_000 + 60 * k: b"%d,1.5,2.5,%d" % (k, i) for k in range(3)})
             for i in range(50)]
    pickled = pickle.dumps(MarshalledShare(share), protocol=pickle.HIGHEST_PROTOCOL)
    assert b"vm-49" in pickled and b"MarshalledShare" not in pickled  # no class needed to load
    assert pickle.loads(pickled) == share
