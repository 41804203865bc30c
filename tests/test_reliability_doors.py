"""Hostile input at the server's newer doors (/mutes, the other formats' ports), on the real
server over loopback: each is refused and counted, and costs nothing else -- no hung answer,
no state that breaks the pages or the alerts after it, no reactor held for seconds."""

import json
import time

from rulesutil import HOT, SECRET, WebhookReceiver, line, rules_file, serve
from test_rules_mutes import post


def test_a_mute_whose_times_are_no_time_of_day_or_never_end_is_refused(tmp_path):
    """``ends: 1e300`` was taken into force, then neither answered (the request hung), saved
    nor listed (GET /mutes and /alerts a 500 from then on); ``duration: null`` made a mute
    with no end, 201, after which every alert of its rule was lost in the tick (TypeError)."""
    with WebhookReceiver(SECRET.encode()) as hook:
        with serve(tmp_path, rules_file(tmp_path, hook.url, HOT % "")) as server:
            mute = {"rule": "hot", "author": "ana", "comment": "kernel updates"}
            for bad, said in [({"ends": 1e300}, "ends: 1e+300 is not between 1970 and the end of 9999"),
                              ({"ends": "999999999999"}, "not between 1970"),
                              ({"duration": 1e300}, "duration: 1e+300 from the start ends after 9999"),
                              ({"starts": -1e300, "duration": "1h"}, "starts: -1e+300 is not between"),
                              ({"ends": "0001-01-01T00:00:00+23:59"}, "ends: '0001-01-01T00:00:00+23:59'"),
                              ({"duration": None}, "no end: a mute needs ends")]:
                code, answer = post(server, json.dumps({**mute, **bad}).encode())
                assert code == 400 and said in answer["error"], (bad, code, answer)
            listing = json.loads(server.http("/mutes"))
            assert listing == {"mutes": []}
            metrics = server.metrics()
            assert metrics['vmstats_rule_mute_requests_total{result="error_400"}'] == 6
            assert metrics["vmstats_rule_mutes"] == 0
            # Nothing refused is in force, and the rules still page.
            server.send_udp(line("10.0.0.1", int(time.time()), 95.0))
            assert hook.wait(1)[0]["labels"]["scope"] == "10.0.0.1"
            [state] = json.loads(server.http("/alerts"))["states"]
            assert state["state"] == "alarm" and "muted" not in state
