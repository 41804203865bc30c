"""Mutes in the real server: added, listed and ended over /mutes and ``vmstats rules mute``.

Records over UDP in, the rules tests' webhook receiver (HMAC-checked, keys kept)
and command recorder out: a muted alert is not delivered, but shown muted on
/alerts and logged as muted; at the mute's end an alert still firing is
delivered once, one that resolved meanwhile not at all; a muted scaling
decision is not acted on until the mute ends; a mute survives a restart, and
one that ended while the server was down sends what it held back at the start;
bad mutes are refused with one line and counted.
"""

import contextlib
import http.client
import json
import signal
import subprocess
import sys
import time

import pytest
from rulesutil import (
    HOT,
    SECRET,
    WebhookReceiver,
    calls,
    line,
    log_entries,
    post,
    recorder_script,
    rules_file,
    serve,
    wait_until,
)
from serverproc import STATUS_TOKEN

from vmstats import logstore
from vmstats.protocol import Record
from vmstats.rules.service import last_heard


def rules_cli(server, *args: str, token: str | None = STATUS_TOKEN) -> subprocess.CompletedProcess:
    """``vmstats rules ...`` against the server, as an operator runs it."""
    where = ["--url", "http://127.0.0.1:%d" % server.http_port]
    if token:
        where += ["--token", token]
    return subprocess.run([sys.executable, "-m", "vmstats", "rules", *args, *where],
                          capture_output=True, text=True, timeout=60)


def add_mute(server, *args: str) -> str:
    done = rules_cli(server, "mute", "--author", "ana", "--comment", "kernel updates", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[0]


def muted_entries(server, scope: str) -> list[dict]:
    return [e for e in log_entries(server) if e["type"] == "muted" and e["scope"] == scope]


def scopes(hook) -> list[tuple[str, str]]:
    return [(a["labels"]["scope"], a["status"]) for a in hook.alerts()]


def test_a_muted_alert_is_not_sent_and_one_still_firing_is_sent_once_at_the_end(tmp_path):
    with WebhookReceiver(SECRET.encode()) as hook:
        with serve(tmp_path, rules_file(tmp_path, hook.url, HOT % "")) as server:
            mute = add_mute(server, "--id", "10.0.0.1", "--id", "10.0.0.3", "--duration", "6s")
            now = int(time.time())
            server.send_udp(line("10.0.0.1", now, 95.0), line("10.0.0.2", now, 95.0),
                            line("10.0.0.3", now, 95.0))
            # 10.0.0.3 resolves within the mute: its receivers never heard it fire.
            wait_until(lambda: muted_entries(server, "10.0.0.3"))
            server.send_udp(line("10.0.0.3", now + 1, 20.0))
            wait_until(lambda: len(muted_entries(server, "10.0.0.3")) == 4)  # two events, hook and say
            assert hook.wait(1) and scopes(hook) == [("10.0.0.2", "firing")]
            page = json.loads(server.http("/alerts"))
            states = {s["scope"]: s for s in page["states"]}
            assert (states["10.0.0.1"]["state"], states["10.0.0.1"]["muted"]) == ("alarm", mute)
            assert "muted" not in states["10.0.0.2"] and [m["id"] for m in page["mutes"]] == [mute]
            assert {(e["key"].rsplit(".", 1)[1], e["mute"]) for e in muted_entries(server, "10.0.0.1")} \
                == {("hook", mute), ("say", mute)}
            assert "hot 10.0.0.1" not in server.output  # the log action is muted too
            # The mute ends on its own: 10.0.0.1 still fires, and is sent then, once.
            wait_until(lambda: len(hook.alerts()) == 2)
            wait_until(lambda: any(e["type"] == "unmuted" and e["mute"] == mute
                                   for e in log_entries(server)))
            metrics = server.wait_metrics(
                lambda m: m.get('vmstats_rule_deliveries_total{action="hook",result="delivered"}') == 2
                and m["vmstats_rule_deliveries_pending"] == 0 and m["vmstats_rule_mutes"] == 0)
            assert metrics['vmstats_rule_deliveries_total{action="hook",result="muted"}'] == 3
            late = hook.alerts()[1]
            assert (late["labels"]["scope"], late["status"], late["annotations"]["state"]) == (
                "10.0.0.1", "firing", "alarm")
            assert late["annotations"]["unmuted"] == mute
            listing = rules_cli(server, "mutes")
            assert listing.returncode == 0 and listing.stdout == "0 mutes\n", listing
        assert scopes(hook) == [("10.0.0.2", "firing"), ("10.0.0.1", "firing")]
        assert len(set(hook.keys)) == 2


def test_scaling_is_not_acted_on_while_muted_and_is_decided_again_at_the_end(tmp_path):
    script, call_file = recorder_script(tmp_path)
    body = ('[action.run]\nkind = "command"\nargv = ["%s", "%s"]\n\n[[rule]]\nname = "pool"\n'
            'scope = "group"\nmatch = { id = "web-*" }\nmetric = "cpu"\nperiod = 1\nactions = ["run"]\n'
            '[rule.scale]\ntarget = 50\nmax = 10\n' % (sys.executable, script))
    with WebhookReceiver(SECRET.encode()) as hook:
        with serve(tmp_path, rules_file(tmp_path, hook.url, body)) as server:
            mute = add_mute(server, "--rule", "po*", "--duration", "1h")

            def send() -> None:
                now = int(time.time())
                server.send_udp(*[line("web-%d" % i, now, 100.0, host="h1") for i in range(4)])

            def held() -> list[dict]:
                send()
                time.sleep(0.2)
                return [e["event"] for e in log_entries(server) if e["type"] == "event"
                        and e["event"]["kind"] == "held" and e["event"]["reason"] == "muted"]

            event = wait_until(held)[0]
            assert (event["mute"], event["direction"], event["desired"]) == (mute, "out", 8)
            for _ in range(5):  # decided again and again, never acted on
                send()
                time.sleep(0.2)
            assert calls(call_file) == []
            state = json.loads(server.http("/alerts"))["states"]
            assert [(s["scope"], s.get("muted")) for s in state] == [("group", mute)]
            ended = rules_cli(server, "unmute", mute)
            assert ended.returncode == 0 and ended.stdout.startswith("ended " + mute), ended

            def acted() -> list[dict]:
                send()
                time.sleep(0.2)
                return calls(call_file)

            first = wait_until(acted)[0]
            assert (first["VMSTATS_EVENT"], first["VMSTATS_CURRENT"], first["VMSTATS_DESIRED"]) == (
                "scale", "4", "8")


def test_a_mute_survives_a_restart_and_one_ended_meanwhile_sends_what_it_held(tmp_path):
    with WebhookReceiver(SECRET.encode()) as hook:
        rules = rules_file(tmp_path, hook.url, HOT % "")
        with serve(tmp_path, rules) as server:
            by_host = add_mute(server, "--host", "kvm9", "--rule", "hot", "--duration", "1h")
        with serve(tmp_path, rules) as server:
            # Made just before the records it holds back, so it can be brief: it ends while
            # the server is down, and this run's steps take well under its 3 s.
            brief = add_mute(server, "--id", "10.0.0.7", "--duration", "3s")
            listing = rules_cli(server, "mutes")
            assert listing.returncode == 0 and listing.stdout.startswith("2 mutes\n"), listing
            assert "host kvm9" in listing.stdout and "by ana: kernel updates" in listing.stdout
            now = int(time.time())
            server.send_udp(line("10.0.0.5", now, 95.0, host="kvm9"),
                            line("10.0.0.6", now, 95.0, host="kvm1"),
                            line("10.0.0.7", now, 95.0, host="kvm1"))
            assert hook.wait(1) and scopes(hook) == [("10.0.0.6", "firing")]
            wait_until(lambda: muted_entries(server, "10.0.0.5") and muted_entries(server, "10.0.0.7"))
            assert {e["mute"] for e in muted_entries(server, "10.0.0.5")} == {by_host}
        ends = json.loads((server.data_dir / "rules" / "mutes.json").read_text())
        brief_end = {m["id"]: m["ends"] for m in ends["mutes"]}[brief]
        assert time.time() < brief_end, "the host was too slow for this test's 3 s mute"
        # Down while the brief mute ends: at the next start 10.0.0.7, still firing, is sent once.
        wait_until(lambda: time.time() > brief_end + 0.5)
        with serve(tmp_path, rules) as server:
            wait_until(lambda: len(hook.alerts()) == 2)
            assert scopes(hook)[1] == ("10.0.0.7", "firing")
            listing = rules_cli(server, "mutes")
            assert listing.stdout.startswith("1 mute\n") and by_host in listing.stdout, listing
            # Ended by hand: 10.0.0.5 (on kvm9) still fires, and is sent then.
            assert rules_cli(server, "unmute", by_host).returncode == 0
            wait_until(lambda: len(hook.alerts()) == 3)
            assert scopes(hook)[2] == ("10.0.0.5", "firing")
            server.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 0)
        assert len(hook.alerts()) == 3 and len(set(hook.keys)) == 3


def test_bad_mutes_are_refused_with_one_line_and_counted(tmp_path):
    with WebhookReceiver(SECRET.encode()) as hook:
        with serve(tmp_path, rules_file(tmp_path, hook.url, HOT % "")) as server:
            for args, said in [
                (("--rule", "hot"), "no end: a mute needs ends (a time) or duration"),
                (("--rule", "hot", "--ends", "2020-01-01T00:00:00Z"),
                 "ends 2020-01-01T00:00:00Z is in the past"),
                (("--rule", "hot", "--duration", "1h", "--ends", "2099-01-01T00:00:00Z"),
                 "ends and duration: give one"),
                (("--duration", "1h"), "no matcher"),
                (("--rule", "hot", "--duration", "soon"), "duration: 'soon' is not a duration"),
                (("--rule", "hot", "--duration", "1h", "--cidr", "10.0.0.0/33"), "match: cidr:"),
                (("--rule", "hot", "--duration", "1h", "--tag", "nameless"), "expected NAME=GLOB"),
            ]:
                done = rules_cli(server, "mute", "--author", "ana", "--comment", "x", *args)
                assert done.returncode == 2, (args, done)
                assert len(done.stderr.splitlines()) == 1 and said in done.stderr, (args, done.stderr)
            no_comment = rules_cli(server, "mute", "--rule", "hot", "--duration", "1h")
            assert no_comment.returncode == 2 and "comment: missing" in no_comment.stderr
            # The server checks the same (a client that is not the command line).
            past = json.dumps({"rule": "hot", "ends": 1_000_000_000, "author": "a", "comment": "b"})
            code, answer = post(server, past.encode())
            assert code == 400 and "is in the past" in answer["error"]
            for body in (b"not json", b"[1, 2]", b'{"rule": "hot", "duration": "1h", "who": 1}'):
                code, answer = post(server, body)
                assert code == 400 and "\n" not in answer["error"], (body, answer)
            # Matchers that are all empty name nothing: such a mute would cover every rule.
            for match in ({"id": []}, {"tags": {}}, {"cidr": [], "id": []}):
                empty = {"rule": [], "match": match, "duration": "1h", "author": "a", "comment": "b"}
                code, answer = post(server, json.dumps(empty).encode())
                assert code == 400 and answer["error"].startswith("no matcher"), (match, answer)
            # A key given twice was taken at its last value: which duration was meant?
            twice = b'{"rule": "hot", "duration": "10m", "duration": "30d", "author": "a", "comment": "b"}'
            code, answer = post(server, twice)
            assert (code, answer) == (400, {"error": "a mute is JSON: 'duration' is given twice in one "
                                                     "object"})
            code, answer = post(server, b"{}", token=None)
            assert code == 401 and "Bearer" in answer["error"]
            anonymous = rules_cli(server, "mutes", token=None)
            assert anonymous.returncode == 2 and len(anonymous.stderr.splitlines()) == 1, anonymous
            unknown = rules_cli(server, "unmute", "0123456789ab")
            assert unknown.returncode == 2 and "no mute 0123456789ab in force" in unknown.stderr
            code, _answer = post(server, b"", method="DELETE", path="/mutes")
            assert code == 400
            metrics = server.metrics()
            assert metrics['vmstats_rule_mute_requests_total{result="error_400"}'] == 9
            assert metrics['vmstats_rule_mute_requests_total{result="error_401"}'] >= 2
            assert metrics["vmstats_rule_mutes"] == 0 and server.returncode is None
            # Nothing refused is in force: the alert goes out.
            server.send_udp(line("10.0.0.1", int(time.time()), 95.0))
            assert hook.wait(1)[0]["labels"]["scope"] == "10.0.0.1"
    gone = rules_cli(server, "mutes")  # the server is stopped: a failure, not a refusal
    assert gone.returncode == 1 and len(gone.stderr.splitlines()) == 1, gone


def test_an_alert_notified_before_the_mute_that_resolved_within_it_is_sent_resolved(tmp_path):
    """Its receivers last heard it fire: at the mute's end they hear it resolved, once."""
    with WebhookReceiver(SECRET.encode()) as hook:
        with serve(tmp_path, rules_file(tmp_path, hook.url, HOT % "")) as server:
            now = int(time.time())
            server.send_udp(line("10.0.0.1", now, 95.0))
            hook.wait(1)
            mute = add_mute(server, "--rule", "hot", "--duration", "1h")
            server.send_udp(line("10.0.0.1", now + 1, 20.0))
            wait_until(lambda: muted_entries(server, "10.0.0.1"))
            assert scopes(hook) == [("10.0.0.1", "firing")]
            assert rules_cli(server, "unmute", mute).returncode == 0
            wait_until(lambda: len(hook.alerts()) == 2)
            server.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 0)
        assert scopes(hook) == [("10.0.0.1", "firing"), ("10.0.0.1", "resolved")]
        assert hook.alerts()[1]["annotations"]["unmuted"] == mute


def test_a_damaged_mutes_file_costs_its_bad_entries_not_the_start(tmp_path):
    with WebhookReceiver(SECRET.encode()) as hook:
        rules = rules_file(tmp_path, hook.url, HOT % "")
        with serve(tmp_path, rules) as server:
            kept = add_mute(server, "--id", "10.0.0.1", "--duration", "1h")
        path = server.data_dir / "rules" / "mutes.json"
        entries = json.loads(path.read_text())
        entries["mutes"].append({"id": "bad", "ends": "never"})
        path.write_text(json.dumps(entries))
        with serve(tmp_path, rules) as server:
            listing = rules_cli(server, "mutes")
            assert listing.stdout.startswith("1 mute\n") and kept in listing.stdout, listing
        assert "1 entries skipped, not mutes" in server.output
        path.write_text("{not json")
        with serve(tmp_path, rules) as server:
            assert rules_cli(server, "mutes").stdout == "0 mutes\n"
        assert "not a mutes file" in server.output
        path.write_text('{"mutes": ' + "[" * 100000)  # nested past the parser's recursion
        with serve(tmp_path, rules) as server:  # before: Error: RecursionError, exit 1, no start
            assert rules_cli(server, "mutes").stdout == "0 mutes\n"
        assert "not a mutes file" in server.output


def events_after(server, since: float, rule: str, scope: str) -> list[dict]:
    return [e["event"] for e in log_entries(server) if e["type"] == "event"
            and (e["event"]["rule"], e["event"]["scope"]) == (rule, scope) and e["event"]["at"] > since]


def test_a_mute_by_tag_covers_vms_that_said_their_tags_before_it_and_before_a_restart(tmp_path):
    """A mute of ``host = kvm9`` covers every VM known to be on kvm9 at once: one whose host
    went down for the maintenance before the mute was made (its reminders), and, after a
    restart, one that stopped across it (its silence), though neither reports again."""
    body = ('[[rule]]\nname = "hot"\nmetric = "cpu"\nenter = 90\nexit = 70\nperiod = 1\n'
            'remind = "1s"\nactions = ["hook"]\n\n'
            '[[rule]]\nname = "quiet"\nmetric = "cpu"\nperiod = 1\nsilent_after = "2s"\n'
            'actions = ["hook"]\n')
    down, other, still = "10.0.0.5", "10.0.0.6", "10.0.0.7"  # on kvm9, kvm1, kvm9
    mute = {"match": {"tags": {"host": "kvm9"}}, "duration": "1h", "author": "ana",
            "comment": "kvm9 kernel updates"}

    def report(*which: str) -> None:
        now = int(time.time())
        server.send_udp(*[line(vm, now, 95.0 if vm == down else 20.0,
                               host="kvm1" if vm == other else "kvm9") for vm in which])

    with WebhookReceiver(SECRET.encode()) as hook:
        rules = rules_file(tmp_path, hook.url, body)
        with serve(tmp_path, rules) as server:
            def logged() -> bool:  # in the VMs' logs, and firing
                report(down, other, still)
                time.sleep(0.2)
                heard = {vm for vm, _ts, _labels in last_heard(str(server.data_dir), time.time())}
                return heard == {down, other, still} and bool(hook.alerts())

            wait_until(logged)
            # kvm9 goes down with ``down`` on it; then the mute is made.
            code, made = post(server, json.dumps(mute).encode())
            assert code == 201, made
            answered = time.time()

            def muted_reminders() -> list[dict]:
                report(other, still)
                time.sleep(0.2)
                return len(muted_entries(server, down)) >= 2 and events_after(server, answered, "hot", down)

            reminders = wait_until(muted_reminders)
            muted = {e["key"] for e in muted_entries(server, down)}
            sent = {e["key"] for e in log_entries(server) if e["type"] == "attempt"}
            assert {e["kind"] for e in reminders} == {"reminder"}
            assert all(e["key"] + ".hook" in muted and e["key"] + ".hook" not in sent for e in reminders)
            report(other, still)  # reporting until the stop
        with serve(tmp_path, rules) as server:
            # Neither reports again: both go silent, the one on kvm9 muted.
            wait_until(lambda: muted_entries(server, still) and [
                a for a in hook.alerts() if a["labels"]["scope"] == other
                and a["annotations"]["state"] == "silent"])
            assert {e["mute"] for e in muted_entries(server, still)} == {made["id"]}
            assert [a for a in hook.alerts() if a["labels"]["scope"] == still] == []
            states = {(s["rule"], s["scope"]): s for s in json.loads(server.http("/alerts"))["states"]}
            assert states[("quiet", still)]["muted"] == made["id"]
            assert "muted" not in states[("quiet", other)]


def test_a_member_under_a_mute_is_left_out_of_its_groups_figure(tmp_path):
    """A pool member being rebooted reads 0 % CPU: it pulled the pool's mean down to a
    scale-in its mute did not cover (the group's decision is its rule's).  Muted, its readings
    are left out of the figure (it still counts as a member), so nothing is decided from it;
    once every member is muted, the group's alerts and scaling are muted by those mutes."""
    body = ('[[rule]]\nname = "pool"\nscope = "group"\nmatch = { id = "web-*" }\nmetric = "cpu"\n'
            'enter = 60\nexit = 50\nperiod = 1\nactions = ["hook"]\n'
            '[rule.scale]\ntarget = 40\nmin = 1\nmax = 10\n')
    with WebhookReceiver(SECRET.encode()) as hook:
        with serve(tmp_path, rules_file(tmp_path, hook.url, body)) as server:
            rebooted = add_mute(server, "--id", "web-3", "--duration", "1h")

            def group() -> dict | None:
                now = int(time.time())
                server.send_udp(*[line("web-%d" % i, now, 0.0 if i == 3 else 40.0, host="h1")
                                  for i in range(4)])
                time.sleep(0.2)
                rows = [s for s in json.loads(server.http("/alerts"))["states"]
                        if s["scope"] == "group" and s["value"] is not None]
                return rows[0] if rows else None

            for _ in range(3):  # a few figures, each of the three others only
                row = wait_until(group)
                assert row["value"] == 40.0 and row["state"] == "ok" and "muted" not in row, row
            decided = [e["event"] for e in log_entries(server) if e["type"] == "event"]
            assert decided == [] and hook.alerts() == []  # no scale-in from the rebooted member
            # Every member under maintenance: the group's alerts are muted by their mutes.
            everyone = add_mute(server, "--id", "web-*", "--duration", "30m")
            def muted() -> str | None:
                group()  # the members go on reporting
                return next((s["muted"] for s in json.loads(server.http("/alerts"))["states"]
                             if s["scope"] == "group" and s.get("muted")), None)

            assert wait_until(muted) == everyone  # the first of the mutes to end that leaves one out
            assert rebooted != everyone


def test_a_mute_by_tag_made_while_the_tags_are_being_read_is_answered_once_they_are(tmp_path):
    """Two mutes by tag made at once: the first starts the reading of every VM's tags from
    the logs; the second, answered without a reading of its own, was answered before that
    one had read them, and a VM on its host known only from the logs was not covered yet.
    Each is answered once the tags are read: from its answer on, it covers that VM."""
    body = '[[rule]]\nname = "hot"\nmetric = "cpu"\nenter = 90\nexit = 70\nperiod = 1\nactions = ["hook"]\n'
    down = "10.0.0.5"  # on kvm8, firing, then its host goes down
    with WebhookReceiver(SECRET.encode()) as hook:
        rules = rules_file(tmp_path, hook.url, body)
        with serve(tmp_path, rules) as server:
            # Other VMs' logs, so that reading every VM's newest record takes a while.
            stamp = int(time.time()) - 3600
            for n in range(3000):
                vm = "10.1.%d.%d" % divmod(n, 250)
                record = Record(vm=vm, ts=stamp, cpu=1.0, mem=5.0, host="kvm1", vcpus=1, mem_mb=512)
                logstore.append_missing(str(server.data_dir), vm, {stamp: logstore.format_tail(record)})

            def logged() -> bool:
                server.send_udp(line(down, int(time.time()), 95.0, host="kvm8"))
                time.sleep(0.2)
                return any(vm == down for vm, _ts, _l in last_heard(str(server.data_dir), time.time())) \
                    and bool(hook.alerts())

            wait_until(logged)
            mutes = [{"match": {"tags": {"host": host}}, "duration": "1h", "author": "ana",
                      "comment": "%s kernel updates" % host} for host in ("kvm9", "kvm8")]
            # Both requests reach the server in one turn of its loop (it is stopped meanwhile).
            connections = [http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
                           for _ in mutes]
            server.proc.send_signal(signal.SIGSTOP)
            try:
                for connection, mute in zip(connections, mutes, strict=True):
                    connection.request("POST", "/mutes", json.dumps(mute), {
                        "Authorization": "Bearer " + STATUS_TOKEN, "Content-Type": "application/json"})
            finally:
                server.proc.send_signal(signal.SIGCONT)
            answer = connections[1].getresponse()
            made = json.loads(answer.read())
            assert answer.status == 201, made
            states = {(s["rule"], s["scope"]): s for s in json.loads(server.http("/alerts"))["states"]}
            assert states[("hot", down)].get("muted") == made["id"]
            assert connections[0].getresponse().status == 201
            for connection in connections:
                connection.close()


def test_a_vm_moved_onto_a_muted_host_and_off_it_is_judged_by_its_latest_tags(tmp_path):
    """A VM's tags are read again only when its record carries other ones: migrated onto
    the host under maintenance it is covered from its next record, and moved off it, not."""
    body = '[[rule]]\nname = "hot"\nmetric = "cpu"\nenter = 90\nexit = 70\nperiod = 1\nactions = ["hook"]\n'
    vm = "10.0.0.5"
    with WebhookReceiver(SECRET.encode()) as hook:
        rules = rules_file(tmp_path, hook.url, body)
        with serve(tmp_path, rules) as server:
            code, made = post(server, json.dumps({"match": {"tags": {"host": "kvm9"}}, "duration": "1h",
                                                  "author": "ana", "comment": "kvm9"}).encode())
            assert code == 201, made
            for host, muted in (("kvm1", None), ("kvm9", made["id"]), ("kvm1", None)):
                def judged(host: str = host, muted: str | None = muted) -> bool:
                    server.send_udp(line(vm, int(time.time()), 95.0, host=host))
                    time.sleep(0.1)
                    states = json.loads(server.http("/alerts"))["states"]
                    return [s.get("muted") for s in states if s["scope"] == vm] == [muted]

                wait_until(judged)
            assert [a["labels"]["scope"] for a in hook.alerts()] == [vm]  # fired on kvm1, once


@pytest.mark.parametrize("answer", [b"[]", b"null", b"[" * 100000])
def test_a_mute_answered_by_something_that_is_not_the_server_is_one_line(answer):
    """Another service on the port answering JSON that is no mute: `[]` or `null` ended
    `rules mute` and `unmute` in an AttributeError's traceback, and JSON nested 100,000 deep
    every mutes command in a RecursionError's."""
    import http.server
    import threading
    from types import SimpleNamespace

    class Other(http.server.BaseHTTPRequestHandler):
        def answer(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = do_DELETE = answer  # noqa: N815 (http.server's names)

        def log_message(self, *args):
            pass

    other = http.server.HTTPServer(("127.0.0.1", 0), Other)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        server = SimpleNamespace(http_port=other.server_address[1])
        for args in (("mute", "--id", "x", "--duration", "1h", "--comment", "c"),
                     ("unmute", "abc"), ("mutes",)):
            done = rules_cli(server, *args)
            assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
            lines = done.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    finally:
        other.shutdown()
        other.server_close()


def test_a_mute_by_tag_whose_tags_cannot_be_read_is_refused_and_not_kept(tmp_path):
    """The VMs' logs cannot be read (the VMs' folder is no folder: a failing disk): a mute by
    tag would cover only VMs that report again, not those whose host is already down, the
    ones it is made for. It was answered 201 all the same; it is refused (503, one ``error``
    line) and nothing of it is kept, on disk or in force; a mute by id needs no reading."""
    body = '[[rule]]\nname = "hot"\nmetric = "cpu"\nenter = 90\nexit = 70\nperiod = 1\nactions = ["hook"]\n'
    mute = {"match": {"tags": {"host": "kvm9"}}, "duration": "1h", "author": "ana", "comment": "kvm9"}
    with WebhookReceiver(SECRET.encode()) as hook:
        with serve(tmp_path, rules_file(tmp_path, hook.url, body)) as server:
            vms = server.data_dir / logstore.VMS_DIR
            vms.mkdir(parents=True, exist_ok=True)
            vms.rmdir()
            vms.write_text("not a folder\n")
            code, said = post(server, json.dumps(mute).encode())
            assert code == 503, said
            assert list(said) == ["error"] and "the mute was not made" in said["error"], said
            assert json.loads(server.http("/mutes"))["mutes"] == []
            metrics = server.metrics()
            assert metrics['vmstats_rule_mute_requests_total{result="error_503"}'] == 1
            assert metrics["vmstats_rule_mutes"] == 0
            done = rules_cli(server, "mute", "--host", "kvm9", "--duration", "1h", "--author", "ana",
                             "--comment", "kvm9")
            assert (done.returncode, done.stdout) == (1, ""), done
            assert done.stderr.count("\n") == 1 and "the mute was not made" in done.stderr
            add_mute(server, "--id", "10.0.0.5", "--duration", "1h")
        assert [m["match"] for m in json.loads((server.data_dir / "rules" / "mutes.json").read_text())
                ["mutes"]] == [{"id": ["10.0.0.5"]}]


def test_the_selectors_of_the_mutes_in_force_are_bounded_and_each_one_in_length(tmp_path):
    """100 mutes of 1,000 id globs each (13 KB bodies) held the reactor 14 s for a few alerts:
    each check tries every glob.  The selectors of all mutes in force are bounded, and so is
    each one's length (a 16 KB glob took 70 ms to compile).  VM ids named plainly are looked
    up, not tried: they count against a bound of their own, not the selectors' (1,000 of them
    were refused once 1,000 globs were in force).  The log names a few of a mute's selectors,
    /mutes all of them."""
    from vmstats.rules.mutes import MAX_PLAIN_IDS, MAX_SELECTOR, MAX_SELECTORS

    def mute(ids: list[str], **more) -> bytes:
        return json.dumps({"match": {"id": ids}, "duration": "1h", "author": "a", "comment": "b",
                           **more}).encode()

    with serve(tmp_path, rules_file(tmp_path, "http://127.0.0.1:9/hook", HOT % "")) as server:
        code, answer = post(server, mute(["*a" * (MAX_SELECTOR // 2) + "*"]))
        assert code == 400 and "longer than %d characters" % MAX_SELECTOR in answer["error"]
        half = MAX_SELECTORS // 2
        made = []
        for first in (0, half):
            code, answer = post(server, mute(["vm-%d?" % n for n in range(first, first + half)]))
            assert code == 201, answer
            made.append(answer["id"])
        code, answer = post(server, mute(["vm-x*"]))
        assert code == 400 and "%d at most" % MAX_SELECTORS in answer["error"], answer
        code, answer = post(server, mute([], rule="hot"))  # a rule's name counts as well
        assert code == 400 and "%d at most" % MAX_SELECTORS in answer["error"], answer
        code, answer = post(server, mute(["vm-%d" % n for n in range(half)]))  # plain: looked up
        assert code == 201, answer
        made.append(answer["id"])
        plain, per = half, 1400
        while plain + per <= MAX_PLAIN_IDS:
            code, answer = post(server, mute(["%d.%x" % (plain // per, n) for n in range(per)]))
            assert code == 201, answer
            plain += per
        code, answer = post(server, mute(["x.%x" % n for n in range(per)]))
        assert code == 400 and "%d at most" % MAX_PLAIN_IDS in answer["error"], answer
        listed = json.loads(server.http("/mutes"))["mutes"]
        assert sum(len(m["match"]["id"]) for m in listed) == 2 * half + plain
        code, _answer = post(server, b"", method="DELETE", path="/mutes?id=" + made[0])
        assert code == 200
        code, answer = post(server, mute(["vm-x*"]))  # room again
        assert code == 201, answer
        assert server.metrics()['vmstats_rule_mute_requests_total{result="error_400"}'] == 4
        assert len([m for m in listed if m["id"] == made[1]][0]["match"]["id"]) == half  # whole
    # Each mute added is one log line, bounded: logged whole, one of 1,000 ids was 13 KB.
    added = [x for x in server.output.splitlines() if " added: " in x]
    assert len(added) == 4 + (plain - half) // per
    assert all(made_id in x for made_id, x in zip(made, added, strict=False))
    assert all(len(x) < 400 for x in added), [len(x) for x in added]
    assert "id vm-0 or vm-1 or vm-2 or %d more" % (half - 3) in added[2], added[2]


def test_a_mute_holding_what_a_listing_cannot_show_is_refused(tmp_path):
    """A comment holding half a surrogate pair (JSON's "\\ud800") was taken, and from then on
    every ``vmstats rules mutes`` ended in a UnicodeEncodeError traceback; U+2028 and U+0085
    broke the one-line listing, and U+202E turned the rest of its line around."""
    with serve(tmp_path, rules_file(tmp_path, "http://127.0.0.1:9/hook", HOT % "")) as server:
        for field, text in [("comment", "kernel \\ud800"), ("author", "\\udfffana"),
                            ("comment", "two\\u2028lines"), ("comment", "next\\u0085line"),
                            ("author", "\\u202eana"), ("rule", "hot\\ud800")]:
            body = {"rule": "hot", "duration": "1h", "author": "ana", "comment": "kernel updates"}
            body[field] = "@"
            raw = json.dumps(body).replace('"@"', '"%s"' % text).encode()
            code, answer = post(server, raw)
            assert code == 400 and "not printable" in answer["error"], (text, answer)
        code, answer = post(server, json.dumps({"rule": "hot", "duration": "1h", "author": "ana",
                                                "comment": "kernel updates"}).encode())
        assert code == 201, answer
        listing = rules_cli(server, "mutes")
        assert listing.returncode == 0 and "kernel updates" in listing.stdout, listing


HOT_HOOK = '[[rule]]\nname = "hot"\nmetric = "cpu"\nenter = 90\nexit = 70\nperiod = 1\nactions = ["hook"]\n'
HEADERS = {"Authorization": "Bearer " + STATUS_TOKEN, "Content-Type": "application/json"}


@contextlib.contextmanager
def one_turn(server):
    """The server stopped (SIGSTOP) meanwhile: what is sent within reaches it in one turn of
    its loop, while a reading on its mutes' thread is still under way."""
    server.proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.proc.send_signal(signal.SIGCONT)


def making_a_mute_by_tag(server) -> tuple[http.client.HTTPConnection, http.client.HTTPConnection, list]:
    """A mute by tag POSTed, and listed, while the VMs' logs are read for it (5,000 other VMs'
    logs make the reading take a while): the POST's connection (its answer not read yet), a
    second one, and the listing."""
    stamp = int(time.time()) - 3600
    for n in range(5000):
        vm = "10.1.%d.%d" % divmod(n, 250)
        record = Record(vm=vm, ts=stamp, cpu=1.0, mem=5.0, host="kvm1", vcpus=1, mem_mb=512)
        logstore.append_missing(str(server.data_dir), vm, {stamp: logstore.format_tail(record)})
    mute = {"match": {"tags": {"host": "kvm9"}}, "duration": "1h", "author": "ana",
            "comment": "kvm9 kernel updates"}
    making, other = (http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
                     for _ in range(2))
    with one_turn(server):
        making.request("POST", "/mutes", json.dumps(mute), HEADERS)
        other.request("GET", "/mutes", headers=HEADERS)
    listed = json.loads(other.getresponse().read())["mutes"]
    assert [m["comment"] for m in listed] == [mute["comment"]]
    return making, other, listed


def test_a_mute_ended_before_its_answer_is_refused_409_not_answered_made(tmp_path):
    """A mute by tag is in force and listed while the VMs' logs are read for it, before its
    answer: an operator who sees it on /mutes may end it then.  The POST was answered 201
    all the same, with a mute no longer in force, on disk or listed, and "added" was logged
    after "ended".  It is answered 409 (one line: ended before it was made); the DELETE's 200
    stands, and nothing of the mute is kept."""
    with WebhookReceiver(SECRET.encode()) as hook:
        with serve(tmp_path, rules_file(tmp_path, hook.url, HOT_HOOK)) as server:
            making, listing, listed = making_a_mute_by_tag(server)
            with one_turn(server):  # the DELETE while the logs are still being read
                listing.request("DELETE", "/mutes?id=" + listed[0]["id"], headers=HEADERS)
            ended = listing.getresponse()
            assert ended.status == 200, ended.read()
            ended.read()
            answer = making.getresponse()
            said = json.loads(answer.read())
            assert answer.status == 409, said
            assert list(said) == ["error"] and "ended before it was made" in said["error"], said
            assert listed[0]["id"] in said["error"] and "\n" not in said["error"]
            for connection in (making, listing):
                connection.close()
            assert json.loads(server.http("/mutes"))["mutes"] == []
            assert server.metrics()['vmstats_rule_mute_requests_total{result="error_409"}'] == 1
        assert json.loads((server.data_dir / "rules" / "mutes.json").read_text())["mutes"] == []


def test_alerts_a_refused_mute_held_back_while_it_was_made_are_sent(tmp_path):
    """A mute by tag holds back what fires while the VMs' logs are read for it; refused then
    (its file cannot be written: 500), it was taken out without letting go of what it held,
    and those alerts were never sent, until a restart."""
    with WebhookReceiver(SECRET.encode()) as hook:
        with serve(tmp_path, rules_file(tmp_path, hook.url, HOT_HOOK)) as server:
            mutes_file = server.data_dir / "rules" / "mutes.json"
            if mutes_file.exists():
                mutes_file.unlink()
            mutes_file.mkdir(parents=True)  # the file cannot be written in its place
            making, listing, _listed = making_a_mute_by_tag(server)
            with one_turn(server):  # the hot record while the logs are still being read
                server.send_udp(line("10.9.0.1", int(time.time()), 95.0, host="kvm9"))
                listing.request("GET", "/mutes", headers=HEADERS)
            listing.getresponse().read()
            answer = making.getresponse()
            said = json.loads(answer.read())
            assert answer.status == 500 and "cannot write" in said["error"], said
            assert muted_entries(server, "10.9.0.1"), "the alert came after the mute's answer"
            assert hook.wait(1) and scopes(hook) == [("10.9.0.1", "firing")]
            for connection in (making, listing):
                connection.close()
