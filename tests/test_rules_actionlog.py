"""The action log's replay: a torn last line, and compaction that replays to the same state."""

import json

from vmstats.rules.actionlog import compacted, read, replay


def event(key, rule="r", scope="10.0.0.1", to="alarm", kind="transition", at=1.0, **more):
    fields = dict(key=key, rule=rule, scope=scope, to=to, kind=kind, at=at, actions=["hook"],
                  fingerprint="f", seq=1, **more)
    fields.setdefault("from", "ok")
    return {"type": "event", "event": fields}


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
               event("b", to="ok", at=2),
               {"type": "attempt", "key": "b.hook", "n": 3, "at": 50.5, "age": 40.25},
               event("c", scope="10.0.0.2", at=3), {"type": "gave_up", "key": "c.hook"},
               event("d", kind="scale", scope="group", at=4, direction="out", current=2,
                     desired=3, delta=1),
               {"type": "result", "key": "d.hook", "ok": True}]
    full = replay(lines(entries).splitlines())
    small = replay(compacted(full))
    assert small.states == full.states and small.scaling == full.scaling
    # With the retry budget it had spent: a compaction must not start it again.
    assert {k: (p.action, p.attempts, p.age, p.aged_at) for k, p in small.pending.items()} == {
        "b.hook": ("hook", 3, 40.25, 50.5)}
    assert len(compacted(full)) < len(entries)


def test_damaged_lines_are_skipped_and_counted_and_the_rest_replays(tmp_path):
    """Disk damage or a hand's edit in the middle of the log costs those lines, not the server's
    start nor the other scopes' alarms."""
    good = [event("a", to="alarm", at=1), {"type": "attempt", "key": "a.hook", "n": 2},
            event("b", scope="10.0.0.2", to="alarm", at=2), {"type": "result", "key": "b.hook", "ok": True}]
    bad_event = event("x", scope="10.0.0.9")
    bad = [b"not json", b"\xff\xfe{}", b"[" * 100_000 + b"]" * 100_000, b"[1, 2]", b'"text"',
           b'{"type": "event"}', b'{"type": "event", "event": {}}', b'{"type": "nothing"}',
           json.dumps({"type": "event", "event": dict(bad_event["event"], kind="other")}).encode(),
           json.dumps({"type": "event", "event": dict(bad_event["event"], seq="1")}).encode(),
           json.dumps({"type": "event", "event": dict(bad_event["event"], actions=[1])}).encode(),
           json.dumps({"type": "event", "event": dict(bad_event["event"], value="hot")}).encode(),
           json.dumps({"type": "event", "event": dict(bad_event["event"], scope=["a"])}).encode(),
           b'{"type": "attempt", "key": "a.hook", "n": "9"}', b'{"type": "result", "key": 5}',
           b'{"type": "result", "key": "a.hook", "ok": true, "error": 3}',
           b'{"type": "gave_up", "key": "a.hook", "at": "soon"}',
           b'{"type": "attempt", "key": "a.hook", "n": 3, "at": 9, "age": "long"}']
    mixed = []
    for i, entry in enumerate(good):
        mixed.append(json.dumps(entry).encode())
        mixed += bad[i::len(good)]
    path = tmp_path / "actions.log"
    path.write_bytes(b"\n".join(mixed) + b"\n")
    state = read(str(path), repair=True)
    clean = replay(lines(good).splitlines())
    assert (state.states, state.scaling, state.delivered) == (clean.states, clean.scaling, 1)
    assert {k: p.attempts for k, p in state.pending.items()} == {"a.hook": 2}
    assert state.lines == len(good) and state.damage.count == len(bad)
    assert state.damage.first == "line 2: not JSON (JSONDecodeError)"
    assert "18 damaged lines skipped (first: line 2: " in state.damage.note(str(path))
