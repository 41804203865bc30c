"""The action log's replay: a torn last line, and compaction that replays to the same state."""

import json

from vmstats.rules.actionlog import compacted, read, replay


def event(key, rule="r", scope="10.0.0.1", to="alarm", kind="transition", at=1.0, **more):
    return {"type": "event", "event": dict(key=key, rule=rule, scope=scope, to=to, kind=kind, at=at,
                                           actions=["hook"], fingerprint="f", seq=1, **more)}


def lines(entries):
    return b"".join(json.dumps(e).encode() + b"\n" for e in entries)


def test_a_line_cut_short_by_a_crash_is_dropped_and_the_file_trimmed(tmp_path):
    path = tmp_path / "actions.log"
    whole = lines([event("a"), {"type": "attempt", "key": "a.hook", "n": 1}])
    path.write_bytes(whole + b'{"type": "result", "key": "a.ho')
    state = read(str(path), repair=True)
    assert list(state.pending) == ["a.hook"] and state.pending["a.hook"].attempts == 1
    assert path.read_bytes() == whole


def test_compaction_keeps_states_cooldowns_and_pending_deliveries(tmp_path):
    entries = [event("a", to="alarm", at=1), {"type": "result", "key": "a.hook", "ok": True},
               event("b", to="ok", at=2), {"type": "attempt", "key": "b.hook", "n": 3},
               event("c", scope="10.0.0.2", at=3), {"type": "gave_up", "key": "c.hook"},
               event("d", kind="scale", scope="group", at=4, direction="out"),
               {"type": "result", "key": "d.hook", "ok": True}]
    full = replay(lines(entries).splitlines())
    small = replay(compacted(full))
    assert small.states == full.states and small.scaling == full.scaling
    assert {k: (p.action, p.attempts) for k, p in small.pending.items()} == {"b.hook": ("hook", 3)}
    assert len(compacted(full)) < len(entries)
