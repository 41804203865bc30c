"""A ``done`` line first after an edge checkpoint, replayed by the real server after a SIGKILL.

The clock completes a minute (``done``) a grace after its last sample, so when other agents
fall silent the checkpoint the flush wrote holds the minute open and the next line the edge
journals is the ``done`` that completes it (with the ``virtual`` list it is written by before
it: journaling.py).  A crash there leaves a replay nothing but the checkpoint and that line to
rebuild the minute from; it must write the minute once, with the values sent.
"""

import re
import time

from serverproc import serve
from test_formats_durable import VMS, expected, step_lines
from test_formats_replay_bounds import write
from test_server_udp import logged

from vmstats.server.journal import list_segments

#: Each edge line's kind, after its prefix and HMAC (journaling.EdgeJournal.lines).
EDGE_KIND = re.compile(rb"(?:^|\n)#!edge [0-9a-f]{32} (\w+)")
#: A flush every 2 s; a minute is completed by the clock 6 s after its last sample: the samples
#: are in the checkpoint of the first flush after them, seconds before the clock completes their
#: minute, and the checkpoint after that is not due for 30 s (CHECKPOINT_SECONDS).
ARGS = ("--flush-interval", "2", "--minute-grace", "6s")


def edge_kinds(journal_dir) -> list[bytes]:
    """The kinds of the edge's lines in the journal's segments, oldest first."""
    return [kind for _number, path in list_segments(str(journal_dir))
            for kind in EDGE_KIND.findall(open(path, "rb").read())]


def test_a_done_line_first_after_a_checkpoint_completes_its_minute_once_after_a_sigkill(tmp_path):
    t0 = (int(time.time()) - 3600) // 60 * 60
    journal = tmp_path / "data" / "journal"
    server = serve(tmp_path, *ARGS).start()
    try:
        # Minute 1 of every VM in one payload, so that no flush falls among its lines.
        body = "\n".join(line for step in range(1, 7) for line in step_lines(step, t0))
        assert write(server, body.encode()) == 204
        # The flush after it checkpoints the open minutes, and the clock then completes them.
        server.wait_for(lambda s: b"done" in after_checkpoint(edge_kinds(journal)), timeout=30)
        server.kill_outright()
    finally:
        server.kill()
    kinds = edge_kinds(journal)
    assert b"state" in kinds and after_checkpoint(kinds) == [b"virtual", b"done"], kinds

    server = serve(tmp_path, *ARGS).start()
    try:
        assert server.stop() == 0, server.output
    finally:
        server.kill()
    assert "Traceback" not in server.output and "could not be replayed" not in server.output
    assert ("edge: 0 payloads replayed after the checkpoint; 0 open minutes restored, %d "
            "records to write again" % VMS) in server.output, server.output
    for i in range(VMS):
        rows = logged(tmp_path / "data", "tg-%02d" % i)
        assert list(rows["ts"]) == [t0 + 60], (i, rows)  # once, however often replayed
        row = rows.iloc[0]
        assert {key: row[key] for key in expected(i, 1)} == expected(i, 1), i


def after_checkpoint(kinds: list[bytes]) -> list[bytes]:
    """The edge lines after the newest checkpoint (``state``); [] while there is none."""
    if b"state" not in kinds:
        return []
    return kinds[len(kinds) - kinds[::-1].index(b"state"):]
