"""The action log's replay: a torn last line, and compaction that replays to the same state."""

import json

from vmstats.rules.actionlog import compacted, read, replay


def event(key, rule="r", scope="10.0.0.1", to="alarm", kind="transition", at=1.0, **more):
    fields = dict(key=key, rule=rule, scope=scope, to=to, kind=kind, at=at, actions=["hook"],
                  fingerprint="f", seq=1)
    fields.update(more)
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
               event("f", scope="10.0.0.2", kind="reminder", at=2.5),  # before its transition
               {"type": "result", "key": "f.hook", "ok": True},
               event("c", scope="10.0.0.2", at=3), {"type": "gave_up", "key": "c.hook"},
               event("d", kind="scale", scope="group", at=4, direction="out", current=2,
                     desired=3, delta=1),
               {"type": "result", "key": "d.hook", "ok": True},
               event("e", kind="reminder", to="alarm", at=5), {"type": "result", "key": "e.hook", "ok": True}]
    full = replay(lines(entries).splitlines())
    small = replay(compacted(full))
    assert small.states == full.states and small.scaling == full.scaling
    # The last reminder since each scope's transition: a restart times the next one from it.
    assert {scope: e["key"] for scope, e in full.reminded.items()} == {("r", "10.0.0.1"): "e"}
    assert small.reminded == full.reminded
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


def muted(key, mute, told="ok", scope="10.0.0.1"):
    return {"type": "muted", "key": key + ".hook", "mute": mute, "rule": "r", "scope": scope,
            "told": told}


def test_what_mutes_held_back_replays_and_survives_compaction():
    """A restart (or a rewrite of the log) remembers each alert a mute held back, with what its
    receivers last heard: the mute's end sends what still stands, once."""
    entries = [event("a", at=1), muted("a", "m1"),
               event("b", scope="10.0.0.2", at=2), muted("b", "m1", scope="10.0.0.2"),
               # heard again (not muted): nothing of 10.0.0.2 is held back any more
               event("b2", scope="10.0.0.2", to="ok", at=3),
               {"type": "result", "key": "b2.hook", "ok": True},
               event("c", scope="10.0.0.3", at=4), muted("c", "m2", scope="10.0.0.3"),
               event("c2", scope="10.0.0.3", to="ok", at=5), muted("c2", "m2", scope="10.0.0.3"),
               event("d", scope="10.0.0.4", at=6), muted("d", "m3", scope="10.0.0.4"),
               {"type": "unmuted", "mute": "m3"},
               event("s", kind="scale", scope="group", at=7, direction="out", current=2, desired=3,
                     delta=1),
               {"type": "muted", "key": "s.hook", "mute": "m1", "rule": "r", "scope": "group"}]
    full = replay(lines(entries).splitlines())
    assert full.pending == {} and full.damage.count == 0
    assert {scope: (held[0], held[1], held[2]["key"]) for scope, held in full.held.items()} == {
        ("r", "10.0.0.1"): ("m1", "ok", "a"), ("r", "10.0.0.3"): ("m2", "ok", "c2")}
    assert full.outcomes[("hook", "muted")] == 6
    small = replay(compacted(full))
    assert small.held == full.held and small.pending == {} and small.states == full.states


def test_a_retired_actions_settings_last_while_it_is_owed_deliveries_and_are_never_shown():
    """A reload retired ``hook`` (its settings, secret too, in a ``retired`` entry): replay and
    compaction keep them while a delivery to it is pending, so a restart still reaches its
    receiver, and drop them once none is; ``back`` says the name is in the rules again.  The
    entry is no ``recent`` one (/alerts and ``vmstats alerts`` show those)."""
    table = {"kind": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "s3cret"}
    retired = {"type": "retired", "action": "hook", "kind": "webhook", "table": table, "at": 2.0}
    entries = [event("a", to="alarm", at=1), {"type": "result", "key": "a.hook", "ok": True},
               retired, event("b", to="ok", at=3)]
    full = replay(lines(entries).splitlines())
    assert full.retired == {"hook": retired} and full.damage.count == 0
    assert "s3cret" not in json.dumps(list(full.recent))
    small = replay(compacted(full))
    assert small.retired == full.retired and list(small.pending) == ["b.hook"]
    done = replay(compacted(full) + [{"type": "result", "key": "b.hook", "ok": True}])
    assert replay(compacted(done)).retired == {}
    back = dict(retired, back=True)
    del back["table"]
    assert replay(lines(entries + [back]).splitlines()).retired == {}
    assert replay(lines([dict(retired, table="x")]).splitlines()).damage.count == 1


def test_an_actions_settings_last_while_it_is_in_the_rules_or_told_of_an_alert_not_ok():
    """The ``settings`` entry the first event to an action logged: compaction keeps it while
    the action is in the rules (it is not logged again), owed a delivery, or told of an alert
    not ok (a start without it in the file still resolves that there), and drops it after.
    Never a ``recent`` entry: it holds the webhook's secret."""
    table = {"kind": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "s3cret"}
    settings = {"type": "settings", "action": "hook", "kind": "webhook", "table": table,
                "at": 0.5}
    entries = [settings, event("a", to="alarm", at=1), {"type": "result", "key": "a.hook",
                                                       "ok": True}]
    full = replay(lines(entries).splitlines())
    assert full.settings == {"hook": settings} and full.damage.count == 0
    assert "s3cret" not in json.dumps(list(full.recent))
    assert replay(compacted(full)).settings == full.settings  # the alert fires
    resolved = replay(lines(entries + [event("b", to="ok", at=2), {
        "type": "result", "key": "b.hook", "ok": True}]).splitlines())
    assert replay(compacted(resolved)).settings == {}  # nothing it was told of is owed
    assert replay(compacted(resolved, frozenset({"hook"}))).settings == full.settings
    assert replay(lines([dict(settings, action=3)]).splitlines()).damage.count == 1


def test_a_farewell_since_the_scopes_last_transition_is_remembered_through_compaction():
    """A start says farewell to an action an edit took off a firing rule once: replay (and a
    compacted log) remembers it was said, until the scope's next transition."""
    fired = event("a", to="alarm", at=1, actions=["old"])
    farewell = event("b", to="ok", at=2, actions=["old"], farewell=True)
    entries = [fired, {"type": "result", "key": "a.old", "ok": True}, farewell,
               {"type": "result", "key": "b.old", "ok": True}]
    full = replay(lines(entries).splitlines())
    assert full.farewelled == {("r", "10.0.0.1"): {"old": farewell["event"]}}
    small = replay(compacted(full))
    assert small.farewelled == full.farewelled and small.pending == {}
    assert small.states == full.states
    moved = replay(lines(entries + [event("c", to="ok", at=3)]).splitlines())
    assert moved.farewelled == {}
