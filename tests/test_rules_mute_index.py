"""The mutes' look-up index answers as trying every mute would.

A check of an alert tries only the mutes naming its VM by exact id, those naming its rule by
exact name, and the rest (globs, networks, tags): 1,000 single-VM mutes made each check try
all 1,000, and /alerts of 1,000 rows held the reactor 1-2 s.  Which mute covers an alert must
not change: the one ending last, of several the first made.  Checked against a plain loop over
the mutes, in process over a mix (exact ids, globs, networks, tags, rule names, mutes ended
and to come, equal ends, mutes taken out and added), and through the real server: /alerts
names the same mute on each row.
"""

import json
import time

from rulesutil import SECRET, WebhookReceiver, line, post, rules_file, serve, wait_until

from vmstats import selectors
from vmstats.rules.mutes import Mute, MuteSet, parse_mute, request_of_entry

RULES = ("hot", "warm", "disk")


def plainly(mutes, rule: str, scope: str, tags: dict[str, str] | None, now: float) -> Mute | None:
    """The covering mute by trying each in turn (what ``MuteSet.covering`` did before its index)."""
    found = None
    for mute in mutes:
        if mute.active(now) and mute.covers(rule, scope, tags) and (
                found is None or mute.ends > found.ends):
            found = mute
    return found


def mix(now: float) -> list[dict]:
    """Mutes of every kind, several covering the same alerts, some with the same end."""
    hour = 3600.0
    out = []
    for k in range(40):  # one per VM under maintenance, some also naming a rule
        out.append({"match": {"id": "vm-%d" % k}, "ends": now + hour + (k % 3) * 60,
                    **({"rule": RULES[k % 3]} if k % 2 else {})})
    out += [
        {"match": {"id": ["vm-1", "vm-2", "vm-3"]}, "ends": now + hour + 60},  # ties with vm-1's
        {"match": {"id": "vm-1?"}, "ends": now + 2 * hour},
        {"match": {"id": "vm-[2-3]*"}, "rule": "h*", "ends": now + hour},
        {"match": {"cidr": "10.0.0.0/30"}, "ends": now + hour},
        {"match": {"cidr": "10.0.0.0/29"}, "rule": "warm", "ends": now + hour},
        {"match": {"id": "10.0.0.1"}, "ends": now + hour},  # ties with the cidr's, made after it
        {"match": {"tags": {"host": "kvm9"}}, "ends": now + 1.5 * hour},
        {"match": {"tags": {"host": "kvm*"}, "id": "vm-4"}, "ends": now + 3 * hour},
        {"rule": "warm", "ends": now + hour + 120},
        {"rule": ["disk", "hot"], "ends": now + hour + 60},
        {"rule": "d?sk", "ends": now + 0.5 * hour},
        {"rule": "*", "match": {"id": "vm-30"}, "ends": now + 4 * hour},
        {"match": {"id": "vm-5"}, "starts": now + hour, "ends": now + 9 * hour},  # to come
        {"rule": "hot", "starts": now + hour, "ends": now + 9 * hour},  # to come
    ]
    return out


def made(entries: list[dict], now: float) -> list[Mute]:
    return [parse_mute({"author": "ana", "comment": "maintenance", **entry}, now)
            for entry in entries]


def alerts() -> list[tuple[str, str, dict[str, str] | None]]:
    vms = ["vm-%d" % k for k in range(45)] + ["10.0.0.%d" % k for k in range(10)] + ["group"]
    return [(rule, vm, tags) for rule in RULES + ("other",) for vm in vms
            for tags in (None, {}, {"host": "kvm9"}, {"host": "kvm1"})]


def test_the_index_names_the_mute_trying_every_mute_names(tmp_path):
    now = 1_800_000_000.0
    mutes = MuteSet(str(tmp_path))
    ended = made([{"match": {"id": "vm-7"}, "ends": now - 10}, {"rule": "hot", "ends": now - 5},
                  {"match": {"cidr": "10.0.0.0/28"}, "ends": now - 1}], now - 100)
    for mute in made(mix(now), now) + ended:
        mutes.add(mute)
    for mute in made([{"match": {"id": "vm-8"}, "ends": now + 9 * 3600}], now):  # in, then out
        mutes.add(mute)
        assert mutes.covering("hot", "vm-8", None, now) is mute
        mutes.remove(mute.id)
    mutes.add(made([{"match": {"id": "vm-9"}, "ends": now + 9 * 3600}], now)[0])  # after a look-up
    covered = 0
    for rule, scope, tags in alerts():
        for at in (now, now + 2 * 3600):
            want = plainly(mutes.mutes.values(), rule, scope, tags, at)
            got = mutes.covering(rule, scope, tags, at)
            assert (got and got.id) == (want and want.id), (rule, scope, tags, at)
            covered += want is not None
    assert covered > 500  # the mix does cover: not a comparison of two Nones
    assert mutes.covering("hot", "vm-1", None, now).match.ids == ("vm-1", "vm-2", "vm-3")


def test_a_groups_members_are_judged_by_the_index_as_by_every_mute(tmp_path):
    """``naming_vms`` and ``judge`` (a group rule's members under maintenance) use the index:
    the mutes they name and the members they find covered are those a plain loop finds."""
    now = 1_800_000_000.0
    mutes = MuteSet(str(tmp_path))
    for mute in made(mix(now), now):
        mutes.add(mute)
    covered = 0
    for rule in RULES + ("other",):
        for at in (now, now + 2 * 3600):
            plain = [m for m in mutes.mutes.values() if m.names_vms and m.active(at)
                     and (not m.rules or selectors.selected(rule, m.rules, []))]
            naming = mutes.naming_vms(rule, at)
            assert [m.id for m in naming] == [m.id for m in plain], (rule, at)
            judge = mutes.judge(rule, naming)
            for _rule, vm, tags in alerts():
                want = any(m.covers(rule, vm, tags) for m in plain)
                assert judge(vm, tags) == want, (rule, vm, tags, at)
                covered += want
    assert covered > 500


def test_a_mute_of_plain_ids_covers_as_its_globs_would(tmp_path):
    """A mute naming VMs by plain ids looks the VM up in them instead of trying each as a
    glob: it covers what its ``match`` (every id a glob) covers, no more, no less."""
    now = 1_800_000_000.0
    mutes = made(mix(now) + [{"match": {"id": ["vm-1", "vm-2"], "tags": {"host": "kvm9"}},
                              "ends": now + 60}], now)
    assert sum(m.plain_ids is not None for m in mutes) > 40
    for mute in mutes:
        for rule, scope, tags in alerts():
            want = (not mute.rules or selectors.selected(rule, mute.rules, [])) and (
                not mute.names_vms or (scope != "group" and not (mute.match.tags and tags is None)
                                       and mute.match(scope, tags or {})))
            assert mute.covers(rule, scope, tags) == want, (mute.given, rule, scope, tags)


def test_alerts_names_the_same_mutes_through_the_server(tmp_path):
    """Rows of three rules about 12 VMs on two hosts under a mix of mutes: each row's ``muted``
    is the mute a plain loop over the server's own listing of its mutes names."""
    body = "".join('[[rule]]\nname = "%s"\nmetric = "cpu"\nenter = %d\nexit = 5\nperiod = 1\n'
                   'actions = ["say"]\n\n' % (name, enter)
                   for name, enter in zip(RULES, (90, 50, 10), strict=True))
    vms = ["vm-%d" % k for k in range(6)] + ["10.0.0.%d" % k for k in range(6)]
    host = {vm: "kvm9" if n % 3 == 0 else "kvm1" for n, vm in enumerate(vms)}
    with WebhookReceiver(SECRET.encode()) as hook:
        with serve(tmp_path, rules_file(tmp_path, hook.url, body)) as server:
            now = time.time()
            for entry in mix(now) + [{"match": {"id": "vm-0"}, "ends": now + 99}]:
                code, answer = post(server, json.dumps({"author": "ana", "comment": "updates",
                                                        **entry}).encode())
                assert code == 201, answer
            code, answer = post(server, b"", method="DELETE", path="/mutes?id=" + answer["id"])
            assert code == 200, answer  # expired: it covers nothing

            def rows() -> list[dict]:
                server.send_udp(*[line(vm, int(time.time()), 95.0, host=host[vm]) for vm in vms])
                time.sleep(0.2)
                page = json.loads(server.http("/alerts"))
                states = [s for s in page["states"] if s["scope"] in host]
                return (states, page["mutes"]) if len(states) == len(RULES) * len(vms) else None

            states, listed = wait_until(rows)
            at = time.time()
            mutes = [parse_mute(request_of_entry(e), e["starts"], e["id"], e["created"])
                     for e in listed]  # ending soonest first, of equal ends the first made first
            assert len(mutes) == len(mix(now))
            muted = 0
            for row in states:
                want = plainly(mutes, row["rule"], row["scope"], {"host": host[row["scope"]]}, at)
                assert row.get("muted") == (want and want.id), row
                muted += want is not None
            assert muted > len(states) // 2
