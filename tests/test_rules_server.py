"""Rules in the real server: records over UDP/TCP in, real receivers on loopback out.

A webhook receiver that checks the HMAC and remembers idempotency keys, a
real SMTP server (aiosmtpd) for apprise's mail, a command that records its
calls; silence, SIGHUP reloads, a refused bad file, a receiver that is down
then up, and SIGKILLs while deliveries are under way.
"""

import email
import email.policy
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from rulesutil import (
    HOT,
    SECRET,
    WebhookReceiver,
    calls,
    line,
    log_entries,
    recorder_script,
    rules_file,
    serve,
    sigkill_rounds,
    wait_until,
)
from serverproc import ROOT, STATUS_TOKEN, ServerError, ServerProcess

from vmstats import logstore
from vmstats.protocol import Record
from vmstats.rules.config import NO_RULES
from vmstats.rules.service import last_heard
from vmstats.server import compact as compact_mod

#: Offline, the count is of the scopes the action log holds; it says so, as /alerts counts all.
IN_LOG = "in the action log (those that ever changed state; /alerts counts all)"


class Mailbox:
    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.content.decode("utf-8", "replace"))
        return "250 OK"

    def __init__(self):
        self.messages: list[str] = []


@pytest.fixture
def smtp():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    box.port = port
    yield box
    controller.stop()


def alerts_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``vmstats alerts`` as an operator runs it (offline with --data-dir, or --url)."""
    return subprocess.run([sys.executable, "-m", "vmstats", "alerts", *args], capture_output=True,
                          text=True, env=env)


def test_a_transition_reaches_webhook_command_mail_and_log_once(tmp_path, smtp):
    script, call_file = recorder_script(tmp_path)
    actions = ('[action.run]\nkind = "command"\nargv = ["%s", "%s"]\n\n[action.mail]\nkind = "apprise"\n'
               'url = "mailto://localhost:%d?smtp=127.0.0.1&from=alerts@example.com&to=ops@example.com"\n'
               % (sys.executable, script, smtp.port))
    with WebhookReceiver(SECRET.encode()) as hook:
        rules = rules_file(tmp_path, hook.url, HOT % ', "run", "mail"', actions)
        with serve(tmp_path, rules) as server:
            now = int(time.time())
            sent = time.time()
            server.send_udp(line("10.0.0.1", now, 95.0), line("10.0.0.2", now, 20.0))
            alerts = hook.wait(1)
            assert time.time() - sent < 1.0  # arrival to the receiver's 200 within a second
            alert = alerts[0]
            assert alert["status"] == "firing" and alert["labels"]["alertname"] == "hot"
            assert alert["labels"]["scope"] == "10.0.0.1" and alert["annotations"]["state"] == "alarm"
            body = hook.received[0]["body"]
            assert body["version"] == "4" and body["receiver"] == "hook"
            key = hook.received[0]["key"]
            assert key.endswith(".hook") and alert["annotations"]["idempotency_key"] == key
            wait_until(lambda: calls(call_file) and smtp.messages)
            call = calls(call_file)[0]
            assert (call["VMSTATS_RULE"], call["VMSTATS_SCOPE"], call["VMSTATS_STATE"],
                    call["VMSTATS_PREVIOUS_STATE"], float(call["VMSTATS_VALUE"])) == (
                "hot", "10.0.0.1", "alarm", "ok", 95.0)
            assert call["VMSTATS_KEY"] == key[: -len(".hook")] + ".run"
            assert "hot 10.0.0.1: ok -> alarm" in smtp.messages[0]
            time.sleep(1.05)  # resolved in a later second than it fired
            server.send_udp(line("10.0.0.1", now + 1, 50.0))
            resolved = hook.wait(2)[1]
            assert resolved["status"] == "resolved" and resolved["annotations"]["state"] == "ok"
            # One alert as Alertmanager sees one: the same labels, fingerprint and group when it
            # resolves (a receiver keyed on them closes it), and the time it began.
            fired, cleared = (r["body"] for r in hook.received[:2])
            assert cleared["groupKey"] == fired["groupKey"] == '{}:{alertname="hot", scope="10.0.0.1"}'
            assert resolved["labels"] == alert["labels"] and cleared["groupLabels"] == fired["groupLabels"]
            assert resolved["fingerprint"] == alert["fingerprint"]
            assert resolved["startsAt"] == alert["startsAt"] < resolved["endsAt"]
            page = json.loads(server.http("/alerts"))
            assert {(s["scope"], s["state"]) for s in page["states"]} == {("10.0.0.1", "ok"),
                                                                           ("10.0.0.2", "ok")}
            metrics = server.wait_metrics(
                lambda m: m.get('vmstats_rule_deliveries_total{action="hook",result="delivered"}') == 2)
            assert metrics['vmstats_rule_scopes{rule="hot",state="ok"}'] == 2
            # The rules' own CPU is counted (the ticks that took these records did work).
            assert metrics['vmstats_rule_cpu_seconds_total{kind="tick"}'] > 0
            assert 'vmstats_rule_cpu_seconds_total{kind="sweep"}' in metrics
            wait_until(lambda: len(calls(call_file)) == 2 and len(smtp.messages) == 2)
            page = wait_until(lambda: (lambda p: p["deliveries"]["pending"] == 0 and p)(
                json.loads(server.http("/alerts"))))
        assert server.returncode == 0
        assert "hot 10.0.0.1: ok -> alarm" in server.output  # the log action
        assert hook.bad_signatures == 0 and len(hook.received) == 2
    listing = alerts_cli("--data-dir", str(server.data_dir))
    assert listing.returncode == 0, listing.stderr
    # Offline, the log knows the scopes that ever changed state.
    assert "1 scope %s, 0 not ok" % IN_LOG in listing.stdout
    assert "hot 10.0.0.1: alarm -> ok" in listing.stdout
    # --json offline is the server's /alerts page: the same keys, read by the same code.
    offline = json.loads(alerts_cli("--data-dir", str(server.data_dir), "--json").stdout)
    assert sorted(offline) == sorted(page)
    assert offline["rules"] is None and offline["series"] is None  # known to the server alone
    assert offline["counts"] == {"hot.ok": 1} and page["counts"] == {"hot.ok": 2}  # 10.0.0.2: never logged
    for action in ("hook", "run", "mail", "say"):
        assert offline["deliveries"][action + ".delivered"] == page["deliveries"][action + ".delivered"] == 2
    assert offline["deliveries"]["delivered"] == page["deliveries"]["delivered"] == 8
    assert offline["deliveries"]["pending"] == page["deliveries"]["pending"] == 0
    assert offline["deliveries"]["gave_up"] == page["deliveries"]["gave_up"] == 0
    assert offline["states"] == [s for s in page["states"] if s["scope"] == "10.0.0.1"]


def test_alerts_offline_before_any_change_of_state_and_without_rules(tmp_path):
    """A server with rules and nothing changed yet has every scope ok: said, not an error."""
    with WebhookReceiver(SECRET.encode()) as hook:
        with serve(tmp_path, rules_file(tmp_path, hook.url, HOT % "")) as server:
            server.send_udp(line("10.0.0.1", int(time.time()), 20.0))
            listing = alerts_cli("--data-dir", str(server.data_dir))
    assert listing.returncode == 0, listing.stderr
    assert "0 scopes %s, 0 not ok" % IN_LOG in listing.stdout and not hook.received
    (server.data_dir / "rules" / "actions.log").mkdir()  # unreadable as a file
    unreadable = alerts_cli("--data-dir", str(server.data_dir))
    assert unreadable.returncode == 1 and unreadable.stderr.startswith(
        "Error: cannot read the action log: ") and len(unreadable.stderr.splitlines()) == 1
    (tmp_path / "elsewhere").mkdir()  # a data dir of a server run without --rules
    missing = alerts_cli("--data-dir", str(tmp_path / "elsewhere"))
    assert missing.returncode == 1 and "was the server run with --rules?" in missing.stderr
    mistyped = alerts_cli("--data-dir", str(tmp_path / "nowhere"))  # the command line's mistake
    assert mistyped.returncode == 2 and "does not exist or is not a directory" in mistyped.stderr


def test_the_action_log_past_its_cap_is_rewritten_and_replays_to_the_same_states(tmp_path):
    """With a small ``log_max_bytes`` the log is compacted while transitions come, and what
    is left still says which scopes are in alarm (offline, and to the next start)."""
    body = "[settings]\nlog_max_bytes = 4096\n" + HOT % ""
    with WebhookReceiver(SECRET.encode()) as hook:
        with serve(tmp_path, rules_file(tmp_path, hook.url, body)) as server:
            now = int(time.time())
            server.send_udp(*[line("10.0.9.%d" % i, now, 95.0) for i in range(1, 61)])
            hook.wait(60)
            metrics = server.wait_metrics(
                lambda m: m.get('vmstats_rule_deliveries_total{action="hook",result="delivered"}') == 60
                and m.get("vmstats_rule_log_compactions_total", 0) >= 1)
            assert metrics["vmstats_rule_log_errors_total"] == 0
    assert server.returncode == 0, server.output
    entries = log_entries(server)
    assert any(entry.get("compacted") for entry in entries)  # the file is a rewritten one
    listing = alerts_cli("--data-dir", str(server.data_dir), "--recent", "0")
    assert "60 scopes %s, 60 not ok" % IN_LOG in listing.stdout, listing.stdout
    assert listing.stdout.count(" alarm ") == 60 and "deliveries pending: 0" in listing.stdout


def test_a_damaged_action_log_costs_its_bad_lines_not_the_start_nor_the_alarms(tmp_path):
    with WebhookReceiver(SECRET.encode()) as hook:
        rules = rules_file(tmp_path, hook.url, HOT % "")
        with serve(tmp_path, rules) as server:
            server.send_udp(line("10.0.0.1", int(time.time()), 95.0))
            hook.wait(1)
            server.wait_metrics(lambda m: m.get(
                'vmstats_rule_deliveries_total{action="hook",result="delivered"}') == 1)
        log_file = server.data_dir / "rules" / "actions.log"
        entries = log_file.read_bytes().splitlines(keepends=True)
        log_file.write_bytes(b"".join(entries[:1]) + b"\x00\x00garbage\n" + b"".join(entries[1:])
                             + b'{"type": "event", "event": {"kind": "transition"}}\n')
        with serve(tmp_path, rules) as again:
            page = json.loads(again.http("/alerts"))
            assert [(s["scope"], s["state"]) for s in page["states"]] == [("10.0.0.1", "alarm")]
        assert again.returncode == 0
        assert "2 damaged lines skipped (first: line 2: not JSON" in again.output, again.output
        assert len(hook.received) == 1  # the restart sent nothing again
    listing = alerts_cli("--data-dir", str(server.data_dir))
    assert listing.returncode == 0 and "1 scope %s, 1 not ok" % IN_LOG in listing.stdout, listing
    assert listing.stderr.startswith("warning: ") and "damaged lines skipped" in listing.stderr


def test_a_vm_that_stops_reporting_goes_silent(tmp_path):
    body = ('[[rule]]\nname = "quiet"\nmetric = "cpu"\nperiod = 1\nsilent_after = "2s"\n'
            'actions = ["hook"]\n')
    with WebhookReceiver(SECRET.encode()) as hook:
        with serve(tmp_path, rules_file(tmp_path, hook.url, body)) as server:
            for second in range(5):
                now = int(time.time())
                server.send_udp(line("10.0.0.2", now, 20.0))
                if second < 1:
                    server.send_udp(line("10.0.0.1", now, 20.0))
                time.sleep(1)
            alerts = hook.wait(1)
            assert [(a["labels"]["scope"], a["annotations"]["state"]) for a in alerts] == [
                ("10.0.0.1", "silent")]
            server.send_udp(line("10.0.0.1", int(time.time()), 20.0))
            assert hook.wait(2)[1]["annotations"]["state"] == "ok"


def test_an_alarm_without_data_is_insufficient_data_told_as_such_to_every_receiver(tmp_path):
    """A VM deleted while in alarm, under a rule without ``silent_after``, kept firing for ever
    (a reminder every ``remind``); and "insufficient-data" reached receivers as ``firing``.
    After ``stale_after`` without data it is insufficient-data: the webhook resolves the alert
    (its annotations say the state and why), a command is told VMSTATS_STATUS, no reminder
    follows, and its next value decides again."""
    script, call_file = recorder_script(tmp_path)
    body = HOT.replace("period = 1", 'period = 1\nstale_after = "1s"\nremind = "0.5s"') % ', "run"'
    actions = '[action.run]\nkind = "command"\nargv = ["%s", "%s"]\n' % (sys.executable, script)
    with WebhookReceiver(SECRET.encode()) as hook:
        with serve(tmp_path, rules_file(tmp_path, hook.url, body, actions)) as server:
            server.send_udp(line("10.0.0.1", int(time.time()), 95.0),
                            line("10.0.0.2", int(time.time()), 95.0))
            for _ in range(4):  # 10.0.0.2 keeps reporting its alarm; 10.0.0.1 is gone
                time.sleep(0.4)
                server.send_udp(line("10.0.0.2", int(time.time()), 95.0))
            stale = wait_until(lambda: [a for a in hook.alerts()
                                        if a["annotations"]["state"] == "insufficient-data"], 5)
            assert [(a["labels"]["scope"], a["status"]) for a in stale] == [("10.0.0.1", "resolved")]
            assert stale[0]["annotations"]["reason"] == "no data for 1s (stale_after)"
            assert stale[0]["endsAt"] != "0001-01-01T00:00:00Z"
            # The data stopped: no current value, the last one labelled so, with its age.
            said = stale[0]["annotations"]
            assert "value" not in said and said["last_value"] == "95.0"
            assert float(said["last_value_age"].rstrip("s")) >= 1
            assert said["last_value_at"] <= stale[0]["endsAt"]
            assert "(no current value: the last, 95, came at %s, " % said["last_value_at"] in (
                said["summary"])
            ran = wait_until(lambda: [c for c in calls(call_file)
                                      if c["VMSTATS_STATE"] == "insufficient-data"], 5)
            assert ran[0]["VMSTATS_STATUS"] == "insufficient-data"
            assert "VMSTATS_VALUE" not in ran[0] and ran[0]["VMSTATS_LAST_VALUE"] == "95.0"
            assert float(ran[0]["VMSTATS_AT"]) - float(ran[0]["VMSTATS_LAST_VALUE_AT"]) == (
                pytest.approx(float(ran[0]["VMSTATS_LAST_VALUE_AGE"]), abs=0.1))
            # /alerts and `vmstats alerts` say it alike: no value, the last one as such.
            [row] = [s for s in json.loads(server.http("/alerts"))["states"]
                     if s["scope"] == "10.0.0.1"]
            assert row["value"] is None and row["last_value"] == 95.0
            assert row["last_value_at"] == float(ran[0]["VMSTATS_LAST_VALUE_AT"])
            online = alerts_cli("--url", "http://127.0.0.1:%d" % server.http_port,
                                "--token", STATUS_TOKEN)
            assert " no current value (last 95 at " in online.stdout, online.stdout
            offline = alerts_cli("--data-dir", str(server.data_dir), "--json")
            [row] = [s for s in json.loads(offline.stdout)["states"] if s["scope"] == "10.0.0.1"]
            assert row["value"] is None and row["last_value"] == 95.0
            assert {c["VMSTATS_STATUS"] for c in calls(call_file) if c["VMSTATS_STATE"] == "alarm"} == {
                "firing"}
            time.sleep(0.6)  # past the next reminder: 10.0.0.2's, none of 10.0.0.1's
            one = [(a["annotations"]["event"], a["annotations"]["state"]) for a in hook.alerts()
                   if a["labels"]["scope"] == "10.0.0.1"]
            assert one[0] == ("transition", "alarm") and one[-1] == ("transition", "insufficient-data")
            assert ("reminder", "alarm") in [
                (a["annotations"]["event"], a["annotations"]["state"]) for a in hook.alerts()
                if a["labels"]["scope"] == "10.0.0.2"]
            server.send_udp(line("10.0.0.1", int(time.time()), 96.0))  # back, and still hot
            back = wait_until(lambda: [a for a in hook.alerts() if a["labels"]["scope"] == "10.0.0.1"
                                       and a["annotations"]["state"] == "alarm"][1:], 5)
            assert back[0]["status"] == "firing"
        assert "10.0.0.1: alarm -> insufficient-data: no data for 1s (stale_after)" in server.output


def test_a_rule_matching_by_tags_keeps_judging_every_tick(tmp_path):
    """A rule matching VMs by their tags stopped every rule's judging after its first tick:
    the tick answered the VMs its tag rules took (a list) where the service spaces ticks by a
    count, its comparison raised, and no tick was scheduled again.  An alarm raised after that
    first tick reached no receiver until the server stopped."""
    body = HOT.replace("period = 1", 'period = 1\nmatch = { tags = { host = "kvm*" } }') % ""
    with WebhookReceiver(SECRET.encode()) as hook:
        with serve(tmp_path, rules_file(tmp_path, hook.url, body)) as server:
            server.send_udp(line("10.0.0.1", int(time.time()), 95.0, host="kvm1"),
                            line("10.0.0.2", int(time.time()), 20.0, host="kvm1"),
                            line("10.0.0.3", int(time.time()), 95.0, host="other"))
            assert [a["labels"]["scope"] for a in hook.wait(1, 3)] == ["10.0.0.1"]
            time.sleep(0.3)  # ticks later, 10.0.0.2 runs hot
            server.send_udp(line("10.0.0.2", int(time.time()), 96.0, host="kvm1"))
            assert [a["labels"]["scope"] for a in hook.wait(2, 3)] == ["10.0.0.1", "10.0.0.2"]
        assert "Traceback" not in server.output


def test_a_late_record_never_replaces_a_newer_ones_value(tmp_path):
    """Rules judge a VM on its newest-stamped record.  An older record that arrived after a
    newer one (a resend, a relay's retried batch) was taken instead: in the same tick it hid
    the newer one (an alarm never raised), in a later one it replaced the period's value (an
    alarm still true resolved)."""
    body = HOT.replace("period = 1", 'period = "1h"') % ""
    now = int(time.time())
    new = now if now % 3600 >= 2 else now - 2  # both stamps in one hour, one period
    with WebhookReceiver(SECRET.encode()) as hook:
        with serve(tmp_path, rules_file(tmp_path, hook.url, body)) as server:
            # In one tick: the newer record, then the older, in two datagrams and in one.
            server.send_udp(line("10.0.0.1", new, 95.0), line("10.0.0.1", new - 1, 10.0),
                            line("10.0.0.2", new, 95.0) + b"\n" + line("10.0.0.2", new - 1, 10.0))
            fired = hook.wait(2)
            assert sorted((a["labels"]["scope"], a["annotations"]["value"]) for a in fired) == [
                ("10.0.0.1", "95.0"), ("10.0.0.2", "95.0")]
            # Ticks apart: the older record comes once the alarm is out; then a marker VM's.
            server.send_udp(line("10.0.0.1", new - 1, 10.0))
            time.sleep(0.3)
            server.send_udp(line("10.0.0.3", new, 95.0))
            assert hook.wait(3)[2]["labels"]["scope"] == "10.0.0.3"
            time.sleep(0.2)
            assert [a["annotations"]["state"] for a in hook.alerts()] == ["alarm"] * 3
            states = {s["scope"]: (s["state"], s["value"])
                      for s in json.loads(server.http("/alerts"))["states"]}
            assert states["10.0.0.1"] == ("alarm", 95.0)


def _only_the_stopped_vm_goes_silent(tmp_path, quiet: int, between, outage: int = 0) -> None:
    """A server hears 10.0.0.1 and 10.0.0.2 until it stops (and 10.0.0.3 once, longer than
    ``quiet`` before); ``between(last)`` runs while it is down (``last``: the stamp of the last
    records), then it starts again with its clock ``outage`` seconds ahead.  10.0.0.2 goes on
    reporting, 10.0.0.1 does not: it alone goes silent, and 10.0.0.3 is left alone.

    The first run's silence is a minute (the rule is edited to ``quiet`` while the server is
    down): its stop, however slow on a starved host, cannot make a VM silent before the
    restart under test (with ``quiet`` there, 10.0.0.3, heard about a second before the stop,
    went silent in the first run whenever its stop took three seconds, and that alert ended
    the wait below at once)."""
    body = ('[[rule]]\nname = "quiet"\nmetric = "cpu"\nperiod = 1\nsilent_after = "%ds"\n'
            'match = { tags = { host = "kvm*" } }\nactions = ["hook"]\n')
    later = {"PYTHONPATH": str(ROOT / "tests" / "stepclock"), "VMSTATS_TEST_STEP": "1",
             "VMSTATS_TEST_OFFSET": str(outage)} if outage else None
    with WebhookReceiver(SECRET.encode()) as hook:
        rules = rules_file(tmp_path, hook.url, body % 60)
        with serve(tmp_path, rules) as server:
            now = int(time.time())
            server.send_udp(line("10.0.0.3", now - 30, 20.0, host="kvm1"),
                            line("10.0.0.4", now, 20.0, host="other"))
            for _ in range(2):
                last = int(time.time())
                server.send_udp(*[line(vm, last, 20.0, host="kvm1") for vm in ("10.0.0.1", "10.0.0.2")])
                time.sleep(0.5)
        assert hook.alerts() == []
        rules_file(tmp_path, hook.url, body % quiet)
        between(last)
        with serve(tmp_path, rules, env=later) as server:
            # A sweep before 10.0.0.2 reports again: the downtime alone does not make it silent.
            server.wait_metrics(lambda m: m.get('vmstats_rule_cpu_seconds_total{kind="sweep"}', 0) > 0)
            began = time.monotonic()
            while not hook.alerts() and time.monotonic() - began < 30:
                # 10.0.0.2 goes on reporting (stamped by the server's clock), 10.0.0.1 does not
                server.send_udp(line("10.0.0.2", int(time.time()) + outage, 20.0, host="kvm1"))
                time.sleep(0.5)
            alerts = hook.alerts()
            states = json.loads(server.http("/alerts"))["states"]
        assert [(a["labels"]["scope"], a["annotations"]["state"]) for a in alerts] == [
            ("10.0.0.1", "silent")]
        assert sorted((s["scope"], s["state"]) for s in states) == [("10.0.0.1", "silent"),
                                                                    ("10.0.0.2", "ok")]


def test_a_vm_that_stops_across_a_restart_still_goes_silent(tmp_path):
    """The restarted server had heard of no VM: one that stopped reporting across the restart
    never went silent. Its logs say who was reporting when it stopped; one quiet for longer
    before the stop went quiet before it, and is left alone (a restart is no storm of old VMs).
    The restart here is always longer than ``silent_after`` (as a slow one under load is): the
    downtime neither hides the VM that stopped nor makes the one still reporting silent.  (The
    server starts again with its clock ``silent_after`` + 1 s on, rather than waited for.)
    A file in the columnar folder's place (a restore gone wrong), whose listing the start read
    unguarded and stopped on, costs that tier only: the CSV days still say who stopped."""
    quiet = 4

    def down(_last: int) -> None:
        (tmp_path / "data" / "columnar").write_text("not a folder")

    _only_the_stopped_vm_goes_silent(tmp_path, quiet, down, quiet + 1)


@pytest.mark.parametrize("compacted", [False, True], ids=["csv", "compacted"])
def test_a_vm_that_stops_across_a_weekend_outage_still_goes_silent(tmp_path, compacted):
    """A server down for days (a weekend) had no log of today or yesterday to read: no VM was
    seeded and one that stopped across the outage never went silent.  Each VM's newest record
    is found however old, also once its day was compacted into the columnar tier meanwhile;
    one quiet for longer than silent_after at the stop is still left alone."""
    outage = 3 * 86400
    data = tmp_path / "data"

    def down(_last: int) -> None:
        assert len(list((data / "vms").glob("*/*.csv"))) >= 4
        if compacted:  # a pass while the server was down: the CSV files are gone
            compact_mod.compact(str(data), compact_mod.Policy(compact_after=86400),
                                now=time.time() + outage)
            assert list((data / "vms").glob("*/*.csv")) == []
            assert list((data / "columnar").glob("*.parquet"))

    _only_the_stopped_vm_goes_silent(tmp_path, 4, down, outage)


def test_last_heard_takes_each_vms_newest_record_from_either_tier_and_no_stray_day(tmp_path):
    """The newest day file of a VM's folder, the day before when it holds no whole row (torn),
    the columnar tier for a compacted day (a CSV file beside it wins its later rows), never a
    file dated after the clock's next day; a VM quiet for longer than ``within`` is left out."""
    day = 20_000
    now = (day + 5) * 86400 + 3600

    def log(vm: str, ts: int, host: str = "kvm1") -> None:
        logstore.append_missing(str(tmp_path), vm, {ts: logstore.format_tail(
            Record(vm=vm, ts=ts, cpu=1.0, mem=2.0, host=host))})

    log("10.0.0.1", day * 86400 + 100)
    log("10.0.0.2", day * 86400 + 200)
    log("10.0.0.3", (day + 4) * 86400 + 10)
    compact_mod.compact(str(tmp_path), compact_mod.Policy(compact_after=86400), now=now)
    log("10.0.0.2", day * 86400 + 300, host="kvm2")  # late, beside the compacted day
    log("10.0.0.3", (day + 5) * 86400 + 20)
    with open(logstore.day_path(str(tmp_path), "10.0.0.3", logstore.day_name(day + 5)), "ab") as f:
        f.write(b"torn")  # its newest file's last line: passed over, the row before it taken
    log("10.0.0.4", (day + 3) * 86400)
    torn = logstore.day_path(str(tmp_path), "10.0.0.4", logstore.day_name(day + 4))
    with open(torn, "wb") as f:
        f.write(logstore.HEADER + b"12,3")  # no whole row: the day before answers
    log("10.0.0.4", (day + 400) * 86400)  # a stray future-dated file
    heard = {vm: (ts, labels) for vm, ts, labels in last_heard(str(tmp_path), now)}
    assert heard == {"10.0.0.1": (day * 86400 + 100, {"host": "kvm1"}),
                     "10.0.0.2": (day * 86400 + 300, {"host": "kvm2"}),
                     "10.0.0.3": ((day + 5) * 86400 + 20, {"host": "kvm1"}),
                     "10.0.0.4": ((day + 3) * 86400, {"host": "kvm1"})}
    assert [vm for vm, _ts, _l in last_heard(str(tmp_path), now, within=2 * 86400)] == [
        "10.0.0.3", "10.0.0.4"]


def test_a_reminder_is_due_remind_after_the_last_notification_across_a_restart(tmp_path):
    """Timed from the start, a server restarted more often than ``remind`` never reminded; the
    action log says when the alarm was last notified, and the next reminder is due from then."""
    body = HOT.replace('actions = ["hook", "say"%s]', 'remind = "60s"\nactions = ["hook"]')
    later = {"PYTHONPATH": str(ROOT / "tests" / "stepclock"), "VMSTATS_TEST_STEP": "1",
             "VMSTATS_TEST_OFFSET": "58"}  # the restart is 58 s after the stop by its clock
    with WebhookReceiver(SECRET.encode()) as hook:
        rules = rules_file(tmp_path, hook.url, body)
        with serve(tmp_path, rules) as server:
            server.send_udp(line("10.0.0.1", int(time.time()), 99.0))
            hook.wait(1)
        with serve(tmp_path, rules, env=later) as server:
            def hot() -> list[dict]:
                server.send_udp(line("10.0.0.1", int(time.time()) + 58, 99.0))
                time.sleep(0.2)
                return hook.alerts()[1:]

            reminder = wait_until(hot, 10)
    assert [(a["annotations"]["event"], a["status"]) for a in reminder] == [("reminder", "firing")]


def test_sighup_reload_keeps_unchanged_state_and_refuses_a_bad_file(tmp_path):
    with WebhookReceiver(SECRET.encode()) as hook:
        rules = rules_file(tmp_path, hook.url, HOT % "")
        with serve(tmp_path, rules) as server:
            server.send_udp(line("10.0.0.1", int(time.time()), 95.0))
            hook.wait(1)
            # A second rule added: "hot" is unchanged and stays in alarm without a new notice.
            rules_file(tmp_path, hook.url, HOT % "" + HOT.replace('"hot"', '"hot2"') % "")
            server.proc.send_signal(signal.SIGHUP)
            server.wait_metrics(lambda m: m.get('vmstats_rule_reloads_total{result="ok"}') == 1)
            page = json.loads(server.http("/alerts"))
            assert [(s["rule"], s["state"]) for s in page["states"]] == [("hot", "alarm")]
            assert [r["name"] for r in page["rules"]] == ["hot", "hot2"]
            # A broken file: refused, problem by problem, and the rules in force stay.
            (tmp_path / "rules.toml").write_text('[[rule]]\nname = "x"\nmetric = "cpux"\nenter = "a"\n')
            server.proc.send_signal(signal.SIGHUP)
            server.wait_metrics(lambda m: m.get('vmstats_rule_reloads_total{result="refused"}') == 1)
            server.send_udp(line("10.0.0.3", int(time.time()), 99.0))
            alerts = hook.wait(3)[1:]
            assert sorted((a["labels"]["alertname"], a["labels"]["scope"]) for a in alerts) == [
                ("hot", "10.0.0.3"), ("hot2", "10.0.0.3")]
            assert server.proc.poll() is None
            # A file that is not UTF-8 (a Latin-1 comment) is refused the same way, and named.
            (tmp_path / "rules.toml").write_bytes(b"# r\xe8gles\n")
            server.proc.send_signal(signal.SIGHUP)
            server.wait_metrics(lambda m: m.get('vmstats_rule_reloads_total{result="refused"}') == 2)
            assert server.proc.poll() is None
            # A URL urllib cannot split and a command with no program: problems, not a
            # traceback that leaves the reload uncounted, nor an action silently left out.
            (tmp_path / "rules.toml").write_text(
                '[action.h]\nkind = "webhook"\nurl = "http://[::1/hook"\n\n'
                '[action.c]\nkind = "command"\nargv = []\n' + HOT.replace('"say"', '"c"') % "")
            server.proc.send_signal(signal.SIGHUP)
            server.wait_metrics(lambda m: m.get('vmstats_rule_reloads_total{result="refused"}') == 3)
            # A FIFO in the file's place (a --rules <(...) pipe): opening it on the reactor
            # stopped the whole server until someone wrote to it.  Refused, the server answers.
            (tmp_path / "rules.toml").unlink()
            os.mkfifo(tmp_path / "rules.toml")
            server.proc.send_signal(signal.SIGHUP)
            server.wait_metrics(lambda m: m.get('vmstats_rule_reloads_total{result="refused"}') == 4)
            server.send_udp(line("10.0.0.4", int(time.time()), 99.0))
            assert len(hook.wait(5)) == 5  # the rules in force still notify
        assert "rules reload refused, the previous rules stay" in server.output
        assert "metric: 'cpux'" in server.output and "enter: expected a number" in server.output
        assert "%s: not UTF-8 at byte 3 (line 1)" % (tmp_path / "rules.toml") in server.output
    assert ("%s: action h: url: 'http://[::1/hook' is not an http:// or https:// URL"
            % (tmp_path / "rules.toml")) in server.output
    assert ("%s: action c: argv: missing (the program and its arguments, as a list)"
            % (tmp_path / "rules.toml")) in server.output
    assert ("%s: not a regular file: a FIFO, which a reload does not read (it may never end)"
            % (tmp_path / "rules.toml")) in server.output
    assert "Traceback" not in server.output
    assert len(hook.received) == 5


def test_an_edited_or_removed_rule_resolves_what_it_no_longer_sees_and_fires_nothing_twice(
        tmp_path):
    """Alerts an operator's receiver holds as firing stay true across edits: an edit (by SIGHUP,
    or while the server was down) keeps the rule's states, its new threshold resolves the alarm
    it no longer sees and leaves the one it still sees alone; removing the rule resolves the
    rest, saying why."""
    def states(server):
        return sorted((s["scope"], s["state"]) for s in json.loads(server.http("/alerts"))["states"])

    with WebhookReceiver(SECRET.encode()) as hook:
        rules = rules_file(tmp_path, hook.url, HOT % "")
        with serve(tmp_path, rules) as server:
            now = int(time.time())
            server.send_udp(*[line("10.0.0.%d" % i, now, 93.0 + i) for i in (1, 2, 3)])
            hook.wait(3)
            # Enter 90 -> 95 (exit 70 -> 95), and one more action: 10.0.0.1 (94) is no
            # longer hot, 10.0.0.2 (95) is not past the exit, 10.0.0.3 (96) still hot.
            rules_file(tmp_path, hook.url, HOT.replace("enter = 90\nexit = 70", "enter = 95\nexit = 95")
                       % ', "say"')
            server.proc.send_signal(signal.SIGHUP)
            server.wait_metrics(lambda m: m.get('vmstats_rule_reloads_total{result="ok"}') == 1)
            assert states(server) == [("10.0.0.1", "alarm"), ("10.0.0.2", "alarm"),
                                      ("10.0.0.3", "alarm")]
            server.send_udp(*[line("10.0.0.%d" % i, now + 1, 93.0 + i) for i in (1, 2, 3)])
            resolved = hook.wait(4)[3]
            assert (resolved["labels"]["scope"], resolved["status"]) == ("10.0.0.1", "resolved")
        # Edited while the server is down: exit 95 -> 96 also sees 10.0.0.2 (95) as cool.
        rules_file(tmp_path, hook.url, HOT.replace("enter = 90\nexit = 70", "enter = 97\nexit = 96")
                   % "")
        with serve(tmp_path, rules) as server:
            assert states(server) == [("10.0.0.1", "ok"), ("10.0.0.2", "alarm"), ("10.0.0.3", "alarm")]
            server.send_udp(*[line("10.0.0.%d" % i, int(time.time()), 93.0 + i) for i in (2, 3)])
            resolved = hook.wait(5)[4]
            assert (resolved["labels"]["scope"], resolved["status"]) == ("10.0.0.2", "resolved")
            # The rule removed: what it still had in alarm is resolved, with the reason.
            rules_file(tmp_path, hook.url, HOT.replace('"hot"', '"other"') % "")
            server.proc.send_signal(signal.SIGHUP)
            last = hook.wait(6)[5]
            assert (last["labels"]["alertname"], last["labels"]["scope"], last["status"]) == (
                "hot", "10.0.0.3", "resolved")
            assert last["annotations"]["reason"] == "the rule was removed"
            assert "hot 10.0.0.3: alarm -> ok: the rule was removed" in last["annotations"]["summary"]
            server.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 0)
        assert server.returncode == 0
    time.sleep(0.3)  # nothing else arrives: no alarm fired twice
    seen = [(a["labels"]["scope"], a["status"]) for a in hook.alerts()]
    assert sorted(seen[:3]) == [("10.0.0.1", "firing"), ("10.0.0.2", "firing"), ("10.0.0.3", "firing")]
    assert seen[3:] == [("10.0.0.1", "resolved"), ("10.0.0.2", "resolved"), ("10.0.0.3", "resolved")]


def test_a_bad_rules_file_stops_the_server_from_starting(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[[rule]]\nname = "a"\nmetric = "cpu"\nenter = 50\nexit = 60\nhold = "soon"\n'
                    '[[rule]]\nname = "b"\nscope = "vm"\nmetric = "cpu"\nsilent_after = "1m"\n'
                    'aggregate = "p99"\n')
    with pytest.raises(ServerError) as failed:
        ServerProcess(tmp_path, "--rules", str(path)).start()
    problems = [x for x in str(failed.value).splitlines() if x.startswith(str(path))]
    assert problems == [
        "%s: rule a: hold: 'soon' is not a duration like 90s, 5m or 1h" % path,
        "%s: rule a: exit: the exit threshold 60 is past the enter threshold 50: it must be at or "
        "below it" % path,
        "%s: rule b: aggregate: only a group rule aggregates over members" % path]
    checked = subprocess.run([sys.executable, "-m", "vmstats", "rules", "check", str(path)],
                             capture_output=True, text=True)
    assert checked.returncode == 1 and checked.stderr.splitlines() == ["Error: " + p for p in problems]


def test_infinite_and_nan_numbers_are_problems_not_rules_that_never_fire(tmp_path):
    """TOML spells inf and nan, and enough digits read as inf: a threshold neither can cross, a
    period or hold that never ends. Each is one problem line, not a file that checks out OK."""
    path = tmp_path / "inf.toml"
    path.write_text('[settings]\nretry_for = inf\n'
                    '[[rule]]\nname = "a"\nmetric = "cpu"\nenter = inf\nexit = nan\nperiod = inf\n'
                    'hold = "%ss"\n'
                    '[[rule]]\nname = "b"\nscope = "group"\nmetric = "cpu"\n'
                    '[rule.scale]\ntarget = 60\ntolerance = nan\n' % ("9" * 400))
    checked = subprocess.run([sys.executable, "-m", "vmstats", "rules", "check", str(path)],
                             capture_output=True, text=True)
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    assert checked.stderr.splitlines() == ["Error: %s: %s" % (path, problem) for problem in (
        "settings: retry_for: expected a finite duration, got inf",
        "rule a: enter: expected a finite number, got inf",
        "rule a: exit: expected a finite number, got nan",
        "rule a: period: expected a finite duration, got inf",
        "rule a: hold: '%ss' is longer than 36500d" % ("9" * 400),
        "rule b: scale: tolerance: expected a finite number, got nan",
    )]


def test_a_window_of_a_billion_periods_is_refused_at_check_start_and_reload(tmp_path):
    """A window sizes the work of every evaluation: one no operator could mean is one problem
    line at check, a server that does not start, and a reload that keeps the rules in force."""
    wide = tmp_path / "wide.toml"
    wide.write_text('[[rule]]\nname = "wide"\nmetric = "cpu"\nenter = 50\nperiod = "1s"\n'
                    'datapoints = 1\nperiods = 1000000000\n')
    problem = "%s: rule wide: periods: 1000000000 is more than the 1440 a window may span" % wide
    checked = subprocess.run([sys.executable, "-m", "vmstats", "rules", "check", str(wide)],
                             capture_output=True, text=True)
    assert checked.returncode == 1 and checked.stderr.splitlines() == ["Error: " + problem]
    with pytest.raises(ServerError) as failed:
        ServerProcess(tmp_path / "refused", "--rules", str(wide)).start()
    assert problem in str(failed.value)
    with WebhookReceiver(SECRET.encode()) as hook:
        rules = rules_file(tmp_path, hook.url, HOT % "")
        with serve(tmp_path, rules) as server:
            (tmp_path / "rules.toml").write_text(wide.read_text())
            server.proc.send_signal(signal.SIGHUP)
            server.wait_metrics(lambda m: m.get('vmstats_rule_reloads_total{result="refused"}') == 1)
            for i in range(3):
                server.send_udp(line("10.0.0.%d" % i, int(time.time()), 99.0))
            assert len(hook.wait(3)) == 3  # the rules in force stay, and the server answers
            assert json.loads(server.http("/alerts"))["rules"][0]["name"] == "hot"
        assert problem.replace(str(wide), rules) in server.output


#: ``vmstats serve``, its start held for a second once the status file is in place, as a busy
#: host's scheduler may hold it there: where a SIGHUP sent on seeing the file arrives then.
HELD_AFTER_STATUS = """
import sys
import time

from vmstats.server import service

write = service.write_atomically


def held(path, text):
    write(path, text)
    time.sleep(1.0)


service.write_atomically = held
from vmstats.cli import main

main()
"""


class HeldServer(ServerProcess):
    """The server run by ``HELD_AFTER_STATUS`` instead of ``python -m vmstats``."""

    def command(self) -> list:
        python, flag, module, *args = super().command()
        assert (flag, module) == ("-m", "vmstats")
        return [python, "-c", HELD_AFTER_STATUS, *args]


def test_a_sighup_sent_once_the_server_says_it_started_reloads_the_rules(tmp_path):
    """The status file (and the "listening" line before it) say the server started; a SIGHUP
    sent on seeing them reloads the rules.  Before, the reload took SIGHUP over only once the
    start was done, and a start still between the two (a loaded host; held there a second
    here) took it as the terminal's hang-up and stopped: a reload right after a start ended
    the server, and a test sending one once the server answered failed under load."""
    rules = rules_file(tmp_path, "http://127.0.0.1:9/", HOT % "")
    with HeldServer(tmp_path, "--rules", rules, "--parsers", "0", "--workers", "1") as server:
        server.proc.send_signal(signal.SIGHUP)
        server.wait_metrics(lambda m: m.get('vmstats_rule_reloads_total{result="ok"}') == 1)
        assert server.proc.poll() is None
    assert "received SIGHUP" not in server.output and server.returncode == 0


def test_a_file_emptied_by_mistake_is_refused_and_rule_equals_empty_list_is_taken(tmp_path):
    """A rules file cut to nothing (an editor's save cut short, a template rendered empty)
    read as "no rules" resolved every alert at the next SIGHUP and watched nothing since, in
    silence.  It is refused, with one line, and the rules in force stay; ``rule = []``, which
    says it on purpose, is taken (its alerts resolved: the rule was removed)."""
    with WebhookReceiver(SECRET.encode()) as hook:
        rules = rules_file(tmp_path, hook.url, HOT % "")
        with serve(tmp_path, rules) as server:
            server.send_udp(line("10.0.0.1", int(time.time()), 95.0))
            hook.wait(1)
            refused = 0
            for text in ("", '# rules moved to the new host\n[settings]\nmax_age = "5m"\n'):
                (tmp_path / "rules.toml").write_text(text)
                server.proc.send_signal(signal.SIGHUP)
                refused += 1
                server.wait_metrics(
                    lambda m, n=refused: m.get('vmstats_rule_reloads_total{result="refused"}') == n)
            page = json.loads(server.http("/alerts"))
            assert [(s["rule"], s["state"]) for s in page["states"]] == [("hot", "alarm")]
            assert [r["name"] for r in page["rules"]] == ["hot"]
            assert len(hook.alerts()) == 1  # nothing resolved
            rules_file(tmp_path, hook.url, "")  # its actions stay: they carry the resolution
            (tmp_path / "rules.toml").write_text("rule = []\n" + (tmp_path / "rules.toml").read_text())
            server.proc.send_signal(signal.SIGHUP)
            server.wait_metrics(lambda m: m.get('vmstats_rule_reloads_total{result="ok"}') == 1)
            resolved = hook.wait(2)[1]
            assert (resolved["status"], resolved["annotations"]["reason"]) == (
                "resolved", "the rule was removed")
    assert server.output.count("%s: %s" % (rules, NO_RULES)) == 2
    checked = subprocess.run([sys.executable, "-m", "vmstats", "rules", "check", rules],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_a_command_whose_program_is_not_there_is_said_at_check_start_and_reload(tmp_path):
    """A typo in a command action's program failed only when an alert or a scaling decision
    was delivered, the moment it was needed.  Check, start and reload say so; a warning, not a
    refusal: the file may be checked on another machine, the program installed after the start."""
    missing = tmp_path / "no-such-resize"
    body = ('[action.resize]\nkind = "command"\nargv = ["%s", "--pool", "web"]\n\n[[rule]]\n'
            'name = "hot"\nmetric = "cpu"\nenter = 50\nperiod = 1\nactions = ["resize"]\n')
    path = tmp_path / "command.toml"

    def check(program: str) -> list[str]:
        path.write_text(body % program)
        done = subprocess.run([sys.executable, "-m", "vmstats", "rules", "check", str(path)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stderr.splitlines()

    doubt = "action resize: program %s does not exist: its deliveries will fail until it is there"
    assert check(str(missing)) == ["warning: " + doubt % missing]
    assert check("true") == []  # found in PATH: nothing said
    script = tmp_path / "resize.sh"
    script.write_text("#!/bin/sh\n")  # not made executable
    assert check(str(script)) == ["warning: " + doubt.replace("does not exist", "is no "
                                  "executable file") % script]
    path.write_text(body % missing)
    with serve(tmp_path / "server", str(path)) as server:
        path.write_text(body % "pool-resize-typo")
        server.proc.send_signal(signal.SIGHUP)
        server.wait_metrics(lambda m: m.get('vmstats_rule_reloads_total{result="ok"}') == 1)
    assert (doubt % missing) in server.output  # at start
    assert "action resize: program pool-resize-typo is not found in PATH (" in server.output


class Blackhole:
    """A mail server that accepts connections and never says a word."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1000)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_mail_server_that_never_answers_delays_only_its_own_deliveries(tmp_path):
    """Thirty mails hang on a server that accepts and never speaks; the webhook of another
    rule is still delivered, the server answers, a hung attempt fails at the action's timeout,
    and the server stops, the mails pending for the next start.  The hung sends never end, so
    no bound on the clock is needed: a webhook or a stop queued behind them would not come
    (within 30 s, the test's wait and ServerProcess's stop timeout)."""
    hole = Blackhole()
    mail = ('[action.mail]\nkind = "apprise"\nurl = "mailto://u:p@127.0.0.1:%d?from=a@example.com'
            # A send hangs for apprise's socket timeout (cto), far past ServerProcess's stop timeout.
            '&to=b@example.com&mode=insecure&cto=300"\ntimeout = "1s"\n' % hole.port)
    body = ('[[rule]]\nname = "hot"\nmetric = "cpu"\nenter = 50\nperiod = 1\nactions = ["mail"]\n'
            '[[rule]]\nname = "memhi"\nmetric = "mem"\nenter = 50\nperiod = 1\nactions = ["hook"]\n')
    try:
        with WebhookReceiver(SECRET.encode()) as hook:
            server = serve(tmp_path, rules_file(tmp_path, hook.url, body, mail)).start()
            try:
                now = int(time.time())
                server.send_udp(*[line("10.0.1.%d" % i, now, 99.0, mem=10.0) for i in range(30)])
                wait_until(lambda: len(hole.held) >= 4)  # the mails are hanging
                time.sleep(0.5)
                server.send_udp(line("10.0.2.1", now, 10.0, mem=99.0))
                assert hook.wait(1, timeout=30)[0]["labels"]["alertname"] == "memhi"
                assert json.loads(server.http("/alerts"))["deliveries"]["pending"] >= 30
                # Each hung attempt fails at the action's timeout, to be retried with backoff.
                server.wait_metrics(lambda m: m.get(
                    'vmstats_rule_deliveries_total{action="mail",result="failed"}', 0) >= 4, 10)
                assert server.stop() == 0, server.output
            finally:
                if server.returncode is None:
                    server.kill()
        assert "30 pending (sent at the next start)" in server.output
    finally:
        hole.close()


def test_a_receiver_down_then_up_gets_everything_once(tmp_path):
    body = HOT % "" + '[settings]\nretry_min = "0.2s"\nretry_max = "1s"\n'
    with WebhookReceiver(SECRET.encode()) as hook:
        hook.down = True
        with serve(tmp_path, rules_file(tmp_path, hook.url, body)) as server:
            now = int(time.time())
            for i in range(5):
                server.send_udp(line("10.0.0.%d" % i, now, 99.0))
            server.wait_metrics(
                lambda m: m.get('vmstats_rule_deliveries_total{action="hook",result="failed"}', 0) >= 10)
            hook.down = False
            hook.wait(5)
            server.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 0)
            time.sleep(1.5)
    assert sorted(a["labels"]["scope"] for a in hook.alerts()) == ["10.0.0.%d" % i for i in range(5)]
    assert len(set(hook.keys)) == len(hook.keys) == 5


def test_a_receiver_down_while_a_fleet_fires_holds_max_pending_and_drops_the_oldest(tmp_path):
    """100 VMs fire while the receiver is down and max_pending is 30: the 70 oldest webhook
    deliveries are dropped (counted, said, logged as given up), the log lines all made, the 30
    newest reach the receiver once it is up, and a restart sends none of the dropped."""
    body = HOT % "" + '[settings]\nretry_min = "0.2s"\nretry_max = "0.5s"\nmax_pending = 30\n'
    dropped = 'vmstats_rule_deliveries_total{action="hook",result="dropped"}'
    vms = ["10.0.1.%d" % i for i in range(100)]
    with WebhookReceiver(SECRET.encode()) as hook:
        rules = rules_file(tmp_path, hook.url, body)
        hook.down = True
        with serve(tmp_path, rules) as server:
            now = int(time.time())
            for start in range(0, 100, 10):  # ten datagrams of ten VMs' records
                server.send_udp(b"\n".join(line(vm, now, 99.0) for vm in vms[start:start + 10]))
            metrics = server.wait_metrics(lambda m: m["vmstats_rule_transitions_total"] == 100
                                          and m.get(dropped) == 70, 30)
            assert metrics["vmstats_rule_deliveries_pending"] == 30
            assert metrics['vmstats_rule_deliveries_total{action="say",result="delivered"}'] == 100
            page = json.loads(server.http("/alerts"))["deliveries"]
            assert (page["pending"], page["dropped"], page["hook.dropped"]) == (30, 70, 70)
            hook.down = False
            server.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 0, 30)
        assert "70 dropped" in server.output and " dropped, the oldest first" in server.output
        entries = log_entries(server)
        order = [e["event"]["scope"] for e in entries if e["type"] == "event"]
        assert sorted(order) == sorted(vms)
        # The 30 newest all arrive. A dropped delivery whose first POST was already written
        # when it was dropped may still be read by the receiver (bytes on the wire cannot be
        # recalled; here the receiver's thread may judge it after it came back up), but none
        # is attempted again.
        got = {a["labels"]["scope"]: a for a in hook.alerts()}
        assert set(order[70:]) <= set(got)
        gave_up = {e["key"] for e in entries if e["type"] == "gave_up" and e.get("dropped")}
        tries = Counter(e["key"] for e in entries if e["type"] == "attempt")
        late = [k for k in hook.keys if k in gave_up]
        assert len(hook.keys) == 30 + len(late) and all(tries[k] == 1 for k in late), late
        posts = len(hook.keys)
        with serve(tmp_path, rules) as server:  # nothing dropped comes back after a restart
            server.wait_metrics(lambda m: "vmstats_rule_deliveries_pending" in m)
            assert server.metrics()["vmstats_rule_deliveries_pending"] == 0
        assert len(hook.keys) == len(set(hook.keys)) == posts
    offline = json.loads(alerts_cli("--data-dir", str(server.data_dir), "--json").stdout)
    assert (offline["deliveries"]["dropped"], offline["deliveries"]["hook.dropped"]) == (70, 70)
    assert offline["deliveries"]["hook.delivered"] == 30 and offline["deliveries"]["pending"] == 0
    listing = alerts_cli("--data-dir", str(server.data_dir))
    assert "deliveries pending: 0, 70 dropped (past max_pending)" in listing.stdout


GROUPED = """
[action.hook]
kind = "webhook"
url = "%s"
secret = "%s"
group_by = ["alertname", "host"]
group_wait = "3s"
group_interval = "1s"
repeat_interval = "3s"

[action.mail]
kind = "apprise"
url = "mailto://localhost:%d?smtp=127.0.0.1&from=alerts@example.com&to=ops@example.com"
group_by = ["rule"]
group_wait = "3s"
group_interval = "1s"
repeat_interval = 0

[action.say]
kind = "log"
"""


def plain(message: str) -> tuple[str, str]:
    """A mail's subject and its text part."""
    parsed = email.message_from_string(message, policy=email.policy.default)
    return str(parsed["subject"]), parsed.get_body(("plain",)).get_content()


def test_a_fleet_firing_at_once_is_one_notification_per_group_and_resolves_alert_by_alert(
        tmp_path, smtp):
    """200 VMs on two hosts go into alarm in one blip: the webhook grouped by rule and host
    gets two notifications of 100 alerts, the mail grouped by rule one message of 200, the
    log action 200 lines.  Three VMs recover: one notification of their host's group, with
    the three resolved and the 97 others still firing; the next repeat leaves them out."""
    vms = ["10.0.2.%d" % i for i in range(200)]
    host = {vm: "kvm%d" % (i % 2) for i, vm in enumerate(vms)}
    with WebhookReceiver(SECRET.encode()) as hook:
        rules = tmp_path / "rules.toml"
        rules.write_text(GROUPED % (hook.url, SECRET, smtp.port) + HOT % ', "mail"')
        with serve(tmp_path, str(rules)) as server:
            now = int(time.time())
            for start in range(0, 200, 20):  # ten datagrams of twenty VMs' records
                server.send_udp(b"\n".join(line(vm, now, 99.0, host=host[vm])
                                           for vm in vms[start:start + 20]))
            wait_until(lambda: len(hook.received) >= 2 and smtp.messages)
            metrics = server.wait_metrics(
                lambda m: m.get('vmstats_rule_deliveries_total{action="mail",result="delivered"}') == 200
                and m.get('vmstats_rule_deliveries_total{action="say",result="delivered"}') == 200)
            assert metrics['vmstats_rule_deliveries_total{action="hook",result="delivered"}'] == 200
            assert metrics['vmstats_rule_deliveries_total{action="hook",result="notifications"}'] == 2
            assert metrics["vmstats_rule_deliveries_pending"] == 0
            first = {r["body"]["groupLabels"]["host"]: r for r in hook.received[:2]}
            for name in ("kvm0", "kvm1"):
                body = first[name]["body"]
                assert body["groupLabels"] == {"alertname": "hot", "host": name}
                assert body["status"] == "firing" and len(body["alerts"]) == 100
                assert body["commonLabels"] == {"alertname": "hot", "host": name, "source": "vmstats"}
                assert sorted(a["labels"]["scope"] for a in body["alerts"]) == sorted(
                    vm for vm in vms if host[vm] == name)
                assert {a["annotations"]["state"] for a in body["alerts"]} == {"alarm"}
            assert first["kvm0"]["key"] != first["kvm1"]["key"]
            assert len(smtp.messages) == 1
            subject, text = plain(smtp.messages[0])
            assert subject == "vmstats: [FIRING:200] alertname=hot"
            assert text.count(": ok -> alarm (value 99") == 200 and text.count(".mail]") == 200
            # Three VMs of kvm0 recover: their alerts resolve, alone, inside the group.
            calm = [vm for vm in vms if host[vm] == "kvm0"][:3]
            server.send_udp(b"\n".join(line(vm, now + 2, 10.0, host="kvm0") for vm in calm))
            wait_until(lambda: len(hook.received) >= 3 and len(smtp.messages) == 2)
            third = hook.received[2]["body"]
            assert third["groupLabels"]["host"] == "kvm0" and third["status"] == "firing"
            status = {a["labels"]["scope"]: a["status"] for a in third["alerts"]}
            assert sorted(vm for vm, s in status.items() if s == "resolved") == sorted(calm)
            assert sum(1 for s in status.values() if s == "firing") == 97
            fingerprints = {a["labels"]["scope"]: a["fingerprint"] for a in first["kvm0"]["body"]["alerts"]}
            assert all(a["fingerprint"] == fingerprints[a["labels"]["scope"]] for a in third["alerts"])
            subject, text = plain(smtp.messages[1])
            assert subject == "vmstats: [FIRING:197 RESOLVED:3] alertname=hot"
            assert text.index("resolved:") < min(text.index("%s: alarm -> ok" % vm) for vm in calm)
            # Nothing new: repeat_interval later each group again, the resolved ones gone.
            repeat = wait_until(lambda: next((r["body"] for r in hook.received[3:]
                                              if r["body"]["groupLabels"]["host"] == "kvm0"), None))
            assert len(repeat["alerts"]) == 97 and {a["status"] for a in repeat["alerts"]} == {"firing"}
            assert not set(calm) & {a["labels"]["scope"] for a in repeat["alerts"]}
        assert server.returncode == 0
        assert server.output.count("hot 10.0.2.") >= 203  # the log action: one line an event
        assert len(smtp.messages) == 2  # repeat_interval = 0: the mail is not sent again
        assert hook.bad_signatures == 0


def test_a_grouped_notification_cut_by_sigkill_is_sent_again_with_its_alerts(tmp_path):
    """The server is killed while a group's notification is at a slow receiver: at the next
    start the alerts it carried go out again, in a notification of their group, none lost."""
    body = (HOT % "" + '[settings]\nretry_min = "0.2s"\nretry_max = "0.5s"\n').replace(
        'actions = ["hook", "say"]', 'actions = ["hook"]')
    vms = ["10.0.3.%d" % i for i in range(20)]
    with WebhookReceiver(SECRET.encode(), delay=3.0) as hook:
        rules = rules_file(tmp_path, hook.url, body)
        with open(rules) as plain_file:
            text = plain_file.read()
        with open(rules, "w") as out:
            out.write(text.replace('timeout = "2s"\n', 'timeout = "10s"\ngroup_by = ["alertname"]\n'
                                   'group_wait = "0.5s"\ngroup_interval = "0.5s"\n', 1))
        server = serve(tmp_path, rules).start()
        try:
            with server.tcp() as sock:
                now = int(time.time())
                sock.sendall(b"\n".join(line(vm, now, 99.0) for vm in vms) + b"\n#!sync 1\n")
                sock.recv(100)
            log = server.data_dir / "rules" / "actions.log"
            wait_until(lambda: log.exists() and '"covers"' in log.read_text())
            server.kill()  # the notification is logged and at the receiver, 3 s from an answer
        finally:
            if server.returncode is None:
                server.kill()
        with serve(tmp_path, rules) as server:
            server.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 0, 30)
        entries = [json.loads(x) for x in log.read_text().splitlines()]
        events = {e["event"]["key"] + ".hook" for e in entries if e["type"] == "event"}
        assert len(events) == 20
        with hook.lock:
            bodies = [r["body"] for r in hook.received]
        got = {a["annotations"]["idempotency_key"] for b in bodies for a in b["alerts"]}
        assert got == events  # none lost
        assert all(b["groupLabels"] == {"alertname": "hot"} for b in bodies)
        assert any(len(b["alerts"]) == 20 for b in bodies)
        covers = [e["covers"] for e in entries if e["type"] == "attempt"]
        # The first, cut short, and after the restart one for all that were undelivered.
        assert len(covers) >= 2 and set(covers[0]) <= events and set(covers[1]) == events


def test_sigkill_during_delivery_loses_nothing_and_sends_nothing_twice(tmp_path):
    """Each round three VMs flip state at every record and the server is SIGKILLed mid-delivery.

    The receiver is slow (deliveries are under way at the kill) and honours
    the idempotency key; across the rounds every transition of the chain
    arrives once per key, each VM's chain unbroken (20 rounds: bench/rules_reliability.py).
    """
    with WebhookReceiver(SECRET.encode(), delay=0.3) as hook:
        result = sigkill_rounds(tmp_path, hook, 3)
    assert result["lost"] == [] and result["duplicated"] == 0 and result["chain_broken"] == 0
    assert result["transitions"] == result["records"]  # each acknowledged record flipped it
    assert result["resent"] > 0  # the kills did land mid-delivery: sent again after a restart
    assert hook.bad_signatures == 0


def test_a_group_scales_out_with_placement_and_a_cooldown_that_defers(tmp_path):
    script, call_file = recorder_script(tmp_path)
    body = ('[action.run]\nkind = "command"\nargv = ["%s", "%s"]\n\n[[rule]]\nname = "pool"\n'
            'scope = "group"\nmatch = { id = "web-*" }\nmetric = "cpu"\nperiod = 1\nactions = ["run"]\n'
            '[rule.scale]\ntarget = 50\nmax = 10\nout_cooldown = "2s"\n' % (sys.executable, script))
    with WebhookReceiver(SECRET.encode()) as hook:
        with serve(tmp_path, rules_file(tmp_path, hook.url, body)) as server:
            hosts = {"web-1": ("h1", 100.0), "web-2": ("h1", 100.0), "web-3": ("h2", 80.0),
                     "web-4": ("h2", 80.0), "db-1": ("h3", 0.0)}
            began = time.time()
            while len(calls(call_file)) < 2 and time.time() - began < 10:
                now = int(time.time())
                server.send_udp(*[line(vm, now, cpu, host=host) for vm, (host, cpu) in hosts.items()])
                time.sleep(0.3)
            first, second = calls(call_file)[:2]
            assert (first["VMSTATS_EVENT"], first["VMSTATS_CURRENT"], first["VMSTATS_DESIRED"],
                    first["VMSTATS_DELTA"], first["VMSTATS_PLACEMENT"]) == ("scale", "4", "8", "4", "h2")
            # The next decision waited for the cooldown (recorded as held) and was then made.
            assert float(second["VMSTATS_AT"]) - float(first["VMSTATS_AT"]) >= 2.0
            page = json.loads(server.http("/alerts"))
            held = [e["event"] for e in page["recent"]
                    if e["type"] == "event" and e["event"]["kind"] == "held"]
            assert any(e["reason"] == "cooldown" and e["direction"] == "out" for e in held)


def test_a_scaling_command_that_fails_is_retried_within_its_cooldown_then_decided_again(tmp_path):
    """A decision whose command keeps failing is not acted on a day late on the figures it was
    made on, nor does it hold the rule's next decisions back for that day."""
    log_file = tmp_path / "calls.txt"
    script = tmp_path / "resize.py"
    script.write_text("import os, sys\nwith open(%r, 'a') as out:\n"
                      "    out.write(os.environ['VMSTATS_DESIRED'] + '\\n')\n"
                      "sys.stderr.write('quota exceeded\\n')\nsys.exit(3)\n" % str(log_file))
    body = ('[action.run]\nkind = "command"\nargv = ["%s", "%s"]\n\n[[rule]]\nname = "pool"\n'
            'scope = "group"\nmatch = { id = "web-*" }\nmetric = "cpu"\nperiod = 1\n'
            'actions = ["run"]\n[rule.scale]\ntarget = 50\nmax = 10\nout_cooldown = "2s"\n'
            'in_cooldown = "1s"\n\n[settings]\nretry_min = "0.2s"\nretry_max = "0.5s"\n'
            % (sys.executable, script))

    def asked() -> list[str]:
        return log_file.read_text().split() if log_file.exists() else []

    with WebhookReceiver(SECRET.encode()) as hook:
        with serve(tmp_path, rules_file(tmp_path, hook.url, body)) as server:
            def report(cpu: float) -> None:
                server.send_udp(*[line("web-%d" % i, int(time.time()), cpu) for i in range(4)])
                time.sleep(0.3)

            wait_until(lambda: report(100.0) or len(asked()) >= 3, 20)  # 4 -> 8, failing
            # The pool calms down: the next decision is a scale-in to 1, made once the failed
            # scale-out's cooldown is over, not the scale-out retried for a day.
            wait_until(lambda: report(10.0) or "1" in asked(), 20)
            entries = log_entries(server)
    assert set(asked()) == {"8", "1"} and asked().index("1") > asked().index("8")
    out = next(e["event"] for e in entries if e["type"] == "event" and e["event"]["kind"] == "scale")
    gave_up = [e for e in entries if e["type"] == "gave_up" and e["key"] == out["key"] + ".run"]
    assert [e["reason"] for e in gave_up] == [
        "undelivered within its 2s cooldown: the rule decides again on the figures of now"]
    errors = {e["error"] for e in entries if e["type"] == "result" and not e["ok"]}
    assert errors == {"exit 3 quota exceeded"}


def test_a_command_past_its_timeout_is_killed_with_what_it_started(tmp_path):
    """A script whose child hangs (a cloud CLI waiting on a dead API): the timeout kills both,
    not the script alone, which left the child running on, one more at every retry."""
    pids = tmp_path / "children.txt"
    script = tmp_path / "resize.sh"
    script.write_text("#!/bin/sh\nsleep 300 &\necho $! >> %s\nwait\n" % pids)
    script.chmod(0o755)
    body = ('[action.run]\nkind = "command"\nargv = ["%s"]\ntimeout = "1s"\n\n'
            '[[rule]]\nname = "hot"\nmetric = "cpu"\nenter = 90\nperiod = 1\nactions = ["run"]\n'
            '\n[settings]\nretry_min = "0.2s"\nretry_max = "0.5s"\n' % script)

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return "zombie" not in Path("/proc/%d/status" % pid).read_text(errors="replace").lower()

    def started() -> list[int]:
        return [int(x) for x in pids.read_text().split()] if pids.exists() else []

    try:
        with serve(tmp_path, rules_file(tmp_path, "http://127.0.0.1:9/", body)) as server:
            server.send_udp(line("10.0.0.1", int(time.time()), 99.0))
            server.wait_metrics(lambda m: m.get(
                'vmstats_rule_deliveries_total{action="run",result="failed"}', 0) >= 2, timeout=20)
            errors = {e["error"] for e in log_entries(server) if e["type"] == "result" and not e["ok"]}
            assert errors == {"still running after 1s: killed"}
            wait_until(lambda: len(started()) >= 2 and not any(alive(pid) for pid in started()[:2]),
                       10)
    finally:
        for pid in started():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_simulated_pool_rising_and_falling_scales_out_then_in(tmp_path):
    """vmstats simulate-pool follows its load curve; the rule's command resizes it.  Periods,
    reports, cooldowns and the curve are on a clock of quarter seconds: a run of 7 s."""
    desired = tmp_path / "desired"
    script, call_file = recorder_script(tmp_path)
    resize = tmp_path / "resize.sh"
    resize.write_text('#!/bin/sh\necho "$VMSTATS_DESIRED" > "%s"\nexec "%s" "%s"\n'
                      % (desired, sys.executable, script))
    resize.chmod(0o755)
    body = ('[action.resize]\nkind = "command"\nargv = ["%s"]\n\n[[rule]]\nname = "pool"\n'
            'scope = "group"\nmatch = { id = "pool-*" }\nmetric = "cpu"\nperiod = "0.25s"\n'
            'actions = ["resize"]\n[rule.scale]\ntarget = 50\nmin = 2\nmax = 8\n'
            'out_cooldown = "0.75s"\nin_cooldown = "1s"\n' % resize)
    with WebhookReceiver(SECRET.encode()) as hook:
        with serve(tmp_path, rules_file(tmp_path, hook.url, body)) as server:
            run = subprocess.run(
                [sys.executable, "-m", "vmstats", "simulate-pool", "--server",
                 "127.0.0.1:%d" % server.udp_port, "--transport", "udp", "--members", "2",
                 "--curve", "0:80,1:300,3.5:300,4.5:60", "--duration", "7", "--interval", "0.25",
                 "--desired-file", str(desired)], capture_output=True, text=True, timeout=60)
            assert run.returncode == 0, run.stderr
    scales = [c for c in calls(call_file) if c["VMSTATS_EVENT"] == "scale"]
    deltas = [int(c["VMSTATS_DELTA"]) for c in scales]
    assert any(d > 0 for d in deltas) and any(d < 0 for d in deltas), deltas
    outs = [float(c["VMSTATS_AT"]) for c in scales if int(c["VMSTATS_DELTA"]) > 0]
    assert all(b - a >= 0.75 for a, b in zip(outs, outs[1:], strict=False))
    assert max(int(c["VMSTATS_DESIRED"]) for c in scales) >= 6  # 300 % of demand at 50 % each
    assert desired.read_text().strip() == "2"  # back at the minimum once the load fell
    assert "members 6" in run.stdout or "members 7" in run.stdout or "members 8" in run.stdout


def test_alerts_names_vms_only_to_the_status_token(tmp_path):
    with WebhookReceiver(SECRET.encode()) as hook:
        with serve(tmp_path, rules_file(tmp_path, hook.url, HOT % "")) as server:
            server.send_udp(line("10.0.0.7", int(time.time()), 99.0))
            hook.wait(1)
            anonymous = json.loads(server.http("/alerts", token=None))
            assert "states" not in anonymous and "recent" not in anonymous
            assert anonymous["counts"] == {"hot.alarm": 1} and "10.0.0.7" not in json.dumps(anonymous)
            listing = alerts_cli("--url", "http://127.0.0.1:%d" % server.http_port,
                             "--token", STATUS_TOKEN)
            assert listing.returncode == 0, listing.stderr
            assert "1 scope, 1 not ok" in listing.stdout and "10.0.0.7" in listing.stdout
            # From a file, as the server reads its own (a flag shows in ps and the history).
            url = "http://127.0.0.1:%d" % server.http_port
            token_file = tmp_path / "token"
            token_file.write_text(STATUS_TOKEN + "\n")
            env = dict(os.environ, VMSTATS_STATUS_TOKEN="stale")  # the file beats the default
            from_file = alerts_cli("--url", url, "--token-file", str(token_file), env=env)
            assert from_file.returncode == 0, from_file.stderr
            assert "1 scope, 1 not ok" in from_file.stdout and "10.0.0.7" in from_file.stdout
            both = alerts_cli("--url", url, "--token", STATUS_TOKEN, "--token-file", str(token_file))
            assert both.returncode == 2 and "--token and --token-file" in both.stderr
            token_file.write_bytes(b"\xff" + STATUS_TOKEN.encode())
            damaged = alerts_cli("--url", url, "--token-file", str(token_file))
            assert damaged.returncode == 2 and "Traceback" not in damaged.stderr
            assert damaged.stderr.strip().splitlines() == [
                "Error: cannot read --token-file: %s: not UTF-8 at byte 0 (line 1)" % token_file]


@pytest.mark.parametrize("answer", [b"[1, 2]", b'{"states": 3}', b"not json", b"[" * 100000])
def test_alerts_from_something_that_is_not_the_server_is_one_line(answer):
    """Another service on the port: one line naming the address, exit 1 (an address that is
    no URL is refused before any work: tests/test_cli_errors.py)."""
    import http.server

    class Other(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    other = http.server.HTTPServer(("127.0.0.1", 0), Other)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        url = "http://127.0.0.1:%d" % other.server_address[1]
        done = alerts_cli("--url", url)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith("Error: ") and url + "/alerts" in done.stderr, done.stderr
    finally:
        other.shutdown()
        other.server_close()


def test_a_rules_file_saved_with_a_byte_order_mark_checks_and_loads(tmp_path):
    """An editor's byte order mark before the first line: TOML refused the file at "line 1,
    column 1", a place where nothing is wrong to the eye."""
    path = tmp_path / "rules.toml"
    path.write_bytes(b'\xef\xbb\xbf[[rule]]\nname = "hot"\nmetric = "cpu"\nenter = 90\n')
    checked = subprocess.run([sys.executable, "-m", "vmstats", "rules", "check", str(path)],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "hot" in checked.stdout
    path.write_bytes(b"\xef\xbb\xbfname = \"\xe9\"\n")  # the offset is still the file's
    checked = subprocess.run([sys.executable, "-m", "vmstats", "rules", "check", str(path)],
                             capture_output=True, text=True)
    assert checked.returncode != 0 and "not UTF-8 at byte 11 (line 1)" in checked.stderr, checked.stderr


def test_a_rule_removed_with_its_action_still_resolves_its_alerts_at_that_receiver(tmp_path):
    """An operator deletes a noisy rule and the webhook it alone used in one SIGHUP: the
    receiver held its alerts firing for ever, since the resolutions found the action gone
    ("the action is no longer in the rules").  The retired action lives on until they are
    delivered; a rule whose action was renamed to another receiver resolves its alerts at the
    old one too, and the new one hears of them from then on."""
    pager = ('[action.pager]\nkind = "webhook"\nurl = "%s"\nsecret = "%s"\ntimeout = "2s"\n')
    noisy = ('[[rule]]\nname = "noisy"\nmetric = "mem"\nenter = 90\nexit = 70\nperiod = 1\n'
             'actions = ["%s"]\n')
    with WebhookReceiver(SECRET.encode()) as hook, WebhookReceiver(SECRET.encode()) as old, \
            WebhookReceiver(SECRET.encode()) as new:
        rules = rules_file(tmp_path, hook.url, HOT % "" + noisy % "pager",
                           pager % (old.url, SECRET))
        with serve(tmp_path, rules) as server:
            now = int(time.time())
            server.send_udp(line("10.0.0.1", now, 95.0, mem=95.0))
            hook.wait(1)
            assert old.wait(1)[0]["status"] == "firing"
            # The rule keeps its name and its alarm; its action is another receiver now.
            rules_file(tmp_path, hook.url, HOT % "" + noisy % "oncall",
                       (pager % (new.url, SECRET)).replace("pager", "oncall"))
            server.proc.send_signal(signal.SIGHUP)
            told = old.wait(2)[1]
            assert (told["labels"]["alertname"], told["status"]) == ("noisy", "resolved")
            assert told["annotations"]["reason"] == "the rule no longer notifies this action"
            server.send_udp(line("10.0.0.1", now + 1, 95.0, mem=20.0))
            assert new.wait(1)[0]["status"] == "resolved"
            server.send_udp(line("10.0.0.1", now + 2, 95.0, mem=95.0))
            assert new.wait(2)[1]["status"] == "firing"
            # Now the rule and its action go in one reload.
            rules_file(tmp_path, hook.url, HOT % "")
            server.proc.send_signal(signal.SIGHUP)
            gone = new.wait(3)[2]
            assert (gone["labels"]["alertname"], gone["status"]) == ("noisy", "resolved")
            assert gone["annotations"]["reason"] == "the rule was removed"
            server.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 0)
            assert json.loads(server.http("/alerts"))["deliveries"]["gave_up"] == 0
        assert server.returncode == 0
    assert "given up" not in server.output
    assert len(old.alerts()) == 2 and len(new.alerts()) == 3


@pytest.mark.parametrize("end", ["stop", "sigkill"])
def test_a_restart_after_a_reload_retired_an_action_still_resolves_its_alerts_there(
        tmp_path, end):
    """A rule and the webhook it alone used go in one SIGHUP while that receiver is down; the
    server stops (or is killed) before the resolution got through, and starts again on the
    new file: the receiver still gets it.  The log did not hold the retired action's settings,
    so the restart gave the resolution up and the receiver kept the alert firing for ever.  A
    retired command is not run from the log: its delivery is given up, said and counted."""
    flag, ran = tmp_path / "down", tmp_path / "ran"
    pager = ('[action.pager]\nkind = "webhook"\nurl = "%s"\nsecret = "%s"\ntimeout = "2s"\n'
             '[action.cloud]\nkind = "command"\nargv = ["/bin/sh", "-c", '
             '"test -e %s && exit 3; echo $VMSTATS_STATUS >> %s"]\n')
    noisy = ('[[rule]]\nname = "noisy"\nmetric = "mem"\nenter = 90\nexit = 70\nperiod = 1\n'
             'actions = ["pager", "cloud"]\n')
    fast = '[settings]\nretry_min = "0.2s"\nretry_max = "0.5s"\n'
    with WebhookReceiver(SECRET.encode()) as hook, WebhookReceiver(SECRET.encode()) as old:
        rules = rules_file(tmp_path, hook.url, HOT % "" + noisy + fast,
                           pager % (old.url, SECRET, flag, ran))
        server = serve(tmp_path, rules).start()
        try:
            server.send_udp(line("10.0.0.1", int(time.time()), 20.0, mem=95.0))
            assert old.wait(1)[0]["status"] == "firing"
            wait_until(lambda: ran.exists() and ran.read_text() == "firing\n")
            old.down = True
            flag.touch()
            rules_file(tmp_path, hook.url, HOT % "" + fast)
            server.proc.send_signal(signal.SIGHUP)
            server.wait_metrics(lambda m: all(
                m.get('vmstats_rule_deliveries_total{action="%s",result="failed"}' % a, 0) >= 1
                for a in ("pager", "cloud")))
            if end == "stop":
                assert server.stop() == 0
            else:
                server.kill()
        finally:
            server.kill()
        old.down = False
        flag.unlink()
        log = server.data_dir / "rules" / "actions.log"
        assert stat.S_IMODE(log.stat().st_mode) == 0o600  # it holds the webhook's secret
        log.chmod(0o640)  # as an earlier version made it
        with serve(tmp_path, rules) as again:
            told = old.wait(2, 5)[1]
            assert (told["labels"]["alertname"], told["status"]) == ("noisy", "resolved")
            assert told["annotations"]["reason"] == "the rule was removed"
            metrics = again.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 0)
            assert metrics['vmstats_rule_deliveries_total{action="pager",result="delivered"}'] == 1
            assert metrics['vmstats_rule_deliveries_total{action="cloud",result="gave_up"}'] == 1
            page = json.loads(again.http("/alerts"))
            assert SECRET not in json.dumps(page)  # the kept settings are not shown
        assert again.returncode == 0
    assert "cloud, taken out of the rules by a reload before the restart: 1 delivery" in again.output
    assert "not run after a restart" in again.output
    assert ran.read_text() == "firing\n"  # the retired command was not run again
    assert len(old.alerts()) == 2 and hook.alerts() == []
    assert stat.S_IMODE(log.stat().st_mode) == 0o600  # made owner-only at its next write


def test_an_action_taken_out_of_the_file_while_the_server_was_down_still_resolves_its_alerts(
        tmp_path):
    """A rule and the webhook, command and log actions it alone used are deleted from the file
    while the server is stopped: no reload retired them, so the start gave the resolutions up
    ("the action is no longer in the rules") and the receiver kept the alerts firing for ever.
    The first event to each action logged its settings (once, not with every event), and the
    start rebuilds the webhook and the log action from them, resolves the alerts there, signed
    with the webhook's own secret, then lets them go; the command is given up, said and
    counted, as after a reload."""
    pager_secret = "pager-secret"
    actions = ('[action.pager]\nkind = "webhook"\nurl = "%s"\nsecret = "%s"\ntimeout = "2s"\n'
               '[action.cloud]\nkind = "command"\nargv = ["/bin/sh", "-c", "echo $VMSTATS_SCOPE '
               '$VMSTATS_STATUS >> %s"]\n[action.note]\nkind = "log"\nlevel = "warning"\n')
    noisy = ('[[rule]]\nname = "noisy"\nmetric = "mem"\nenter = 90\nexit = 70\nperiod = 1\n'
             'actions = ["pager", "cloud", "note"]\n')
    ran = tmp_path / "ran"
    with WebhookReceiver(SECRET.encode()) as hook, \
            WebhookReceiver(pager_secret.encode()) as pager:
        rules = rules_file(tmp_path, hook.url, HOT % "" + noisy,
                           actions % (pager.url, pager_secret, ran))
        with serve(tmp_path, rules) as server:
            now = int(time.time())
            # Two alerts fire, one of them resolves and fires again: four events to each action.
            for sent, (vm, ts, mem) in enumerate((("10.0.0.1", now, 95.0),
                                                  ("10.0.0.2", now, 95.0),
                                                  ("10.0.0.1", now + 1, 20.0),
                                                  ("10.0.0.1", now + 2, 95.0)), 1):
                server.send_udp(line(vm, ts, 20.0, mem=mem))
                pager.wait(sent)
            assert [a["status"] for a in pager.wait(4)] == ["firing", "firing", "resolved",
                                                            "firing"]
            server.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 0)
            entries = log_entries(server)
        assert server.returncode == 0
        settings = [e for e in entries if e["type"] == "settings"]
        assert sorted(e["action"] for e in settings) == ["cloud", "note", "pager"]  # once each
        assert sum(e["type"] == "event" for e in entries) == 4
        rules_file(tmp_path, hook.url, HOT % "")  # the rule and its actions deleted, offline
        with serve(tmp_path, rules) as again:
            told = pager.wait(6)[4:]
            assert sorted((a["labels"]["scope"], a["status"]) for a in told) == [
                ("10.0.0.1", "resolved"), ("10.0.0.2", "resolved")]
            assert {a["annotations"]["reason"] for a in told} == {"the rule was removed"}
            metrics = again.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 0)
            for action, result in (("pager", "delivered"), ("note", "delivered"),
                                   ("cloud", "gave_up")):
                assert metrics['vmstats_rule_deliveries_total{action="%s",result="%s"}'
                               % (action, result)] == 2
            log = again.data_dir / "rules" / "actions.log"
            wait_until(lambda: "action pager, no longer in the rules, is let go" in (
                again.workdir / "server-output.txt").read_text())
        assert again.returncode == 0
        offline = alerts_cli("--data-dir", str(again.data_dir), "--json")
        assert offline.returncode == 0 and pager_secret not in offline.stdout
    assert pager.bad_signatures == 0 and hook.alerts() == []
    assert "action pager, taken out of the rules while the server was down, is kept" in again.output
    assert ("action cloud, taken out of the rules while the server was down: 2 deliveries owed "
            "to it given up: a command action taken out of the rules is not run after a "
            "restart") in again.output
    assert "noisy 10.0.0.2" in again.output  # the log action's resolution, in the server's log
    # Each alert's runs in the order raised; the two alerts' runs go side by side.
    told = [run.split() for run in ran.read_text().splitlines()]
    assert [status for scope, status in told if scope == "10.0.0.1"] == ["firing", "resolved",
                                                                          "firing"]
    assert [status for scope, status in told if scope == "10.0.0.2"] == ["firing"]
    assert stat.S_IMODE(log.stat().st_mode) == 0o600  # it holds the webhook's secret


def test_a_rule_pointed_at_another_action_while_the_server_was_down_resolves_at_the_old_one(
        tmp_path):
    """A firing rule's webhook replaced by another in the file while the server is stopped:
    the start kept the alarm and told the new receiver of its next change only, and the old
    one held the alert firing for ever (a reload said farewell to it; a start did not).  The
    start resolves it there, once: a second start does not again."""
    pager_secret = "pager-secret"
    pager = '[action.pager]\nkind = "webhook"\nurl = "%s"\nsecret = "%s"\ntimeout = "2s"\n'
    noisy = ('[[rule]]\nname = "noisy"\nmetric = "mem"\nenter = 90\nexit = 70\nperiod = 1\n'
             'actions = ["%s"]\n')
    with WebhookReceiver(SECRET.encode()) as hook, \
            WebhookReceiver(pager_secret.encode()) as old:
        rules = rules_file(tmp_path, hook.url, HOT % "" + noisy % "pager",
                           pager % (old.url, pager_secret))
        with serve(tmp_path, rules) as server:
            server.send_udp(line("10.0.0.1", int(time.time()), 20.0, mem=95.0))
            assert old.wait(1)[0]["status"] == "firing"
            server.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 0)
        rules_file(tmp_path, hook.url, HOT % "" + noisy % "hook")  # pager gone, offline
        for start in range(2):
            with serve(tmp_path, rules) as again:
                metrics = again.wait_metrics(lambda m: m["vmstats_rule_deliveries_pending"] == 0)
                page = json.loads(again.http("/alerts", token=STATUS_TOKEN))
                assert [(s["rule"], s["state"]) for s in page["states"]] == [("noisy", "alarm")]
                if start == 0:
                    told = old.wait(2)[1]
                    assert (told["labels"]["alertname"], told["status"]) == ("noisy", "resolved")
                    assert told["annotations"]["reason"] == "the rule no longer notifies this action"
                    assert metrics[
                        'vmstats_rule_deliveries_total{action="pager",result="delivered"}'] == 1
            assert again.returncode == 0
    assert len(old.alerts()) == 2 and old.bad_signatures == 0  # the second start said nothing
    assert hook.alerts() == []  # the new action hears of the alert's next change
