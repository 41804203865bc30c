"""Times are written in one place (vmstats/stamps.py), alike in every output.

A reader matches the report's first-seen, an alert's startsAt, a mute's end and a line of
``vmstats alerts`` by their text: a second formatter drifts (a zone, a fraction, a blank for
1970) the day one of them is touched.
"""

import re
from pathlib import Path

from vmstats.rules.mutes import describe, parse_mute
from vmstats.rules.notifiers import summary
from vmstats.server.http import last_seen_table
from vmstats.stamps import NO_STAMP, iso, moment

ROOT = Path(__file__).resolve().parent.parent
#: A strftime format writing seconds and a "Z" zone: an ISO stamp made by hand.
FORMATTER = re.compile(r"%S ?Z|strftime\([^)]*%H:%M:%S")


def test_no_module_but_stamps_writes_an_iso_time_of_its_own():
    found = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "vmstats").rglob("*.py"))
             if path.name != "stamps.py" and FORMATTER.search(path.read_text())]
    assert found == []


def test_the_outputs_write_the_same_text():
    at = 1_800_000_000.7
    assert moment(at) == iso(at) == "2027-01-15T08:00:00Z"
    assert (iso(0), iso(float("nan")), iso(NO_STAMP)) == ("", "", "")  # a column's "never"
    assert moment(0) == "1970-01-01T00:00:00Z"  # a time that is one: a mute from 1970
    mute = parse_mute({"rule": "hot", "starts": 0, "ends": at, "author": "ana", "comment": "k"},
                      at - 10, "m1")
    assert (mute.as_dict()["starts_at"], mute.as_dict()["ends_at"]) == (
        "1970-01-01T00:00:00Z", "2027-01-15T08:00:00Z")
    assert describe(mute.as_dict()).startswith("m1  1970-01-01T00:00:00Z .. 2027-01-15T08:00:00Z")
    reminder = {"kind": "reminder", "rule": "hot", "scope": "vm1", "to": "alarm", "at": at,
                "since": at - 3600}
    assert summary(reminder) == "hot vm1: still alarm since 2027-01-15T07:00:00Z"
    assert last_seen_table({"vm1": at}) == {"vm1": "2027-01-15T08:00:00Z"}
