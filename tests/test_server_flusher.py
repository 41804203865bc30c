"""How a flush divides the table into pool tasks."""

from vmstats.server.flusher import split_tasks


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
