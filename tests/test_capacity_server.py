"""``POST /admission`` on the real aggregator (loopback): answers from the live summary, errors
that change nothing, room held between answers, and answers while records keep arriving."""

import contextlib
import json
import os
import signal
import urllib.error
import urllib.request

import numpy as np
import pytest
from capacitydata import damaged_copy, write_fleet
from serverproc import LOOPBACK, ROOT, STATUS_TOKEN, ServerProcess, descendants
from test_http_bodies import status_and_json, stream
from test_server_udp import line, now

from vmstats.capacity.admission import MAX_SHAPES
from vmstats.capacity.service import MAX_BODY
from vmstats.protocol import Record

MANIFEST = {
    "name": "shop",
    "profiles": {"web": "2x8@50%"},
    "vms": [{"profile": "web", "count": 2, "anti_affinity": True}, {"name": "cache", "profile": "1x2"}],
}


def post(server, body, token=STATUS_TOKEN, raw=False):
    """``(status, JSON)`` of a POST /admission."""
    data = body if raw else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = "Bearer " + token
    url = "http://%s:%d/admission" % (LOOPBACK, server.http_port)
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def state(server) -> dict:
    return json.loads(server.http("/admission"))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    base = tmp_path_factory.mktemp("admission")
    expected = write_fleet(base / "data", base / "hosts.toml")
    # One summary at start (refreshes an hour apart), so records sent by a test cannot move the window.
    with ServerProcess(
        base / "server",
        "--inventory",
        str(base / "hosts.toml"),
        "--capacity-refresh",
        "1h",
        "--flush-interval",
        "0.5",
        data_dir=base / "data",
    ) as server:
        server.wait_for(lambda s: "basis" in state(s), timeout=60)
        yield server, expected


def test_errors_are_one_clear_4xx_and_change_nothing(live):
    server, _expected = live
    before = state(server)
    cases = [
        (post(server, MANIFEST, token=None), 401, "Authorization: Bearer"),
        (post(server, MANIFEST, token="wrong"), 401, "Authorization: Bearer"),
        (post(server, b"{not json", raw=True), 400, "manifest is not valid JSON"),
        (post(server, {"vms": [{"profile": "huge"}]}), 400, "vms[0].profile: unknown profile 'huge'"),
        (post(server, {"vms": [{"profile": "2x4", "replicas": 3}]}), 400, "vms[0].replicas: unknown key"),
        (post(server, {"vms": []}), 400, "vms: a list of at least one entry"),
        (post(server, b"[" * (2 << 20), raw=True), 413, "larger than"),
        (post(server, b"[" * 200000, raw=True), 400, "nested too deeply"),
        # json.loads kept the last of a key given twice: one size asked for, the other placed
        (post(server, b'{"vms": [{"profile": "2x4", "profile": "64x512"}]}', raw=True), 400,
         "manifest is not valid JSON: 'profile' is given twice in one object"),
        (post(server, {"profiles": {"2x4": "64x512"}, "vms": [{"profile": "2x4"}]}), 400,
         "manifest: profiles.2x4: a profile's name may not be written as a size"),
        # An expected use below 1% fitted millions of VMs on one host: refused, named, as admit does.
        (post(server, {"vms": [{"profile": "2x8@0.0001%", "count": 3}]}), 400,
         "vms[0].profile: profile '2x8@0.0001%': expected use of 0.0001% is below 1%, no running VM's "
         "peak: give what it uses at its busiest"),
        (post(server, {"profiles": {"quiet": "4x16@30%/0.5%"}, "vms": [{"profile": "quiet"}]}), 400,
         "profiles.quiet: profile '4x16@30%/0.5%': expected use of 0.5% is below 1%"),
        # Each shape is a pass over the hosts in the reactor: 1 MiB held it 3 s on 500 hosts.
        (post(server, {"vms": [{"profile": "1x%d" % (i + 1)} for i in range(MAX_SHAPES + 1)]}), 400,
         "manifest: asks for VMs of more than {:,} shapes (sizes and expected use)".format(MAX_SHAPES)),
    ]
    for (code, body), want_code, want in cases:
        assert code == want_code and list(body) == ["error"] and want in body["error"], body
        assert "\n" not in body["error"]
    # Without the token, refused at the headers: answered with none of the manifest sent.
    _sent, answer = stream(server.http_port, b"POST /admission HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Length: %d\r\n\r\n" % MAX_BODY, b"", 0)
    code, _headers, body = status_and_json(answer)
    assert code == 401 and "Authorization: Bearer" in body["error"]
    after = state(server)
    assert after["held"] == before["held"] == [] and after["hosts"] == before["hosts"]
    with pytest.raises(urllib.error.HTTPError) as denied:
        server.http("/admission", token=None)
    assert denied.value.code == 401
    metrics = server.metrics()
    assert metrics['vmstats_admission_requests_total{result="error_400"}'] == 10
    assert metrics['vmstats_admission_requests_total{result="error_401"}'] == 4  # three POSTs, the GET


def test_answers_from_the_summary_and_holds_what_it_offered(live):
    server, expected = live
    hosts = {h["name"]: h for h in state(server)["hosts"]}
    one = hosts["kvm01"]
    cpu, mem = expected["now"]
    # The summary's demand is the p99.9 of the summed hourly peaks, plus a week of any rising trend.
    assert cpu - 1e-3 <= one["cpu_demand"] <= cpu + 0.5 and mem - 1e-3 <= one["mem_demand"] <= mem + 0.5
    assert hosts["kvm02"]["status"] == "unknown"
    code, answer = post(server, MANIFEST)
    assert code == 200 and answer["status"] == "partial" and answer["held"] is True
    assert sorted(answer["offer"].values()) == ["kvm01", "kvm01"] and "cache-1" in answer["offer"]
    assert "anti-affinity" in next(iter(answer["rejected"].values()))
    # stray's use counts on no host: kvm01, the only one known, gives it room as well.
    basis = answer["basis"]
    unplaced = basis["unplaced_use"]
    assert unplaced["by_host_tag"] == [{"host_tag": None, "vms": 1, "cpu_cores": unplaced["cpu_cores"],
                                        "mem_gb": unplaced["mem_gb"], "allocated_vcpus": 2.0,
                                        "allocated_mem_gb": 4.0}]  # fmt: skip
    stray_cpu, stray_mem = expected["unplaced"]
    assert stray_cpu - 1e-3 <= unplaced["cpu_cores"] <= stray_cpu + 0.5
    assert stray_mem - 1e-3 <= unplaced["mem_gb"] <= stray_mem + 0.5
    withheld = answer["withheld_for_unplaced"]["kvm01"]
    assert withheld == {"cpu_cores": unplaced["cpu_cores"], "mem_gb": unplaced["mem_gb"]}
    # Nova's view takes stray's size (2 vCPUs, 4 GB) from the room its ratios leave, on every host:
    # kvm01 has 44 vCPUs and no memory left to allocate, kvm02 254 vCPUs and 252 GB.
    assert answer["allocation_basis"]["withheld_for_unplaced"] == {
        "kvm01": {"vcpus": round(2 * 44 / 298, 3), "mem_gb": 0.0},
        "kvm02": {"vcpus": round(2 * 254 / 298, 3), "mem_gb": 4.0}}
    left = answer["headroom_left"]["kvm01"]
    assert left["cpu_cores"] == pytest.approx(16 - one["cpu_demand"] - withheld["cpu_cores"] - 2.0, abs=1e-3)
    assert left["mem_gb"] == pytest.approx(64 - one["mem_demand"] - withheld["mem_gb"] - 6.0, abs=1e-3)
    assert basis["window"]["minutes"] == 7 * 1440 and basis["percentile"] == "p99.9"
    assert basis["hosts_unknown"] == ["kvm02"] and basis["coverage_min"] == 0.8
    assert 0 <= basis["summary_age_s"] < 600
    # The next answer starts from what the first holds; a question with hold = false holds nothing.
    code, second = post(server, dict(MANIFEST, name="ask-only", hold=False))
    assert code == 200 and second["held"] is False
    assert second["held_by_earlier_answers"]["kvm01"] == {"cpu_cores": 2.0, "mem_gb": 6.0, "vms": 2,
                                                          "allocated_vcpus": 3.0, "allocated_mem_gb": 10.0}
    assert second["headroom_left"]["kvm01"]["mem_gb"] == pytest.approx(left["mem_gb"] - 6.0, abs=1e-3)
    assert [h["request"] for h in state(server)["held"]] == ["shop"]


def test_all_or_nothing_rejects_and_holds_nothing(live):
    server, _expected = live
    def holds():  # what is held, not how long it has left (that moves between the two looks)
        return [(h["request"], h["hosts"]) for h in state(server)["held"]]

    held = holds()
    code, answer = post(server, {"name": "big", "partial": False, "vms": [{"profile": "4x16", "count": 10}]})
    assert code == 200 and answer["status"] == "reject" and answer["offer"] == {}
    assert len(answer["rejected"]) == 10 and holds() == held


def test_answers_while_records_keep_arriving(live):
    server, _expected = live
    start = server.metrics()["vmstats_records_received_total"]
    t = now() - 120
    answers = []
    for batch in range(20):
        records = [Record(vm="10.77.%d.%d" % (batch, i), ts=t, cpu=5.0, mem=20.0) for i in range(50)]
        server.send_udp(b"\n".join(line(r) for r in records))
        answers.append(post(server, dict(MANIFEST, name="while-%d" % batch, hold=False))[0])
    assert answers == [200] * 20
    server.wait_received(start + 1000, timeout=20)


def test_answers_name_the_damaged_logs_the_summary_rests_on(tmp_path):
    """The live summary is made from the logs as ``vmstats admit`` reads them: every answer, and
    the state, names the files it could not read whole, as admit's answer does."""
    base = tmp_path / "fleet"
    write_fleet(base / "data", base / "hosts.toml")
    data, torn, junk = damaged_copy(base, tmp_path, junk=2)
    with ServerProcess(tmp_path / "server", "--inventory", str(base / "hosts.toml"),
                       "--capacity-refresh", "1h", data_dir=data) as server:  # fmt: skip
        server.wait_for(lambda s: "basis" in state(s), timeout=60)
        code, answer = post(server, dict(MANIFEST, hold=False))
        shown = state(server)["basis"]
    assert code == 200
    basis = answer["basis"]
    assert [e["path"] for e in basis["skipped_files"]] == junk
    assert [(e["path"], e["vm"], e["bad_lines"]) for e in basis["damaged_files"]] == [(str(torn), "stray", 1)]
    assert basis["damaged_files"][0]["rows"] > 1000
    for key in ("skipped_files", "damaged_files"):
        assert shown[key] == basis[key], key


def test_a_lapsed_hold_still_counts_until_a_newer_summary_has_seen_its_vms(tmp_path):
    """Holds of 1 s, one summary at the start (a refresh slower than the hold, or one failing):
    when the hold's time is up no summary has yet seen the VMs it was for, so the room it held
    is not offered again."""
    base = tmp_path / "fleet"
    write_fleet(base / "data", base / "hosts.toml")
    with ServerProcess(tmp_path / "server", "--inventory", str(base / "hosts.toml"),
                       "--capacity-refresh", "1h",
                       "--admission-hold", "1s", data_dir=base / "data") as server:  # fmt: skip
        server.wait_for(lambda s: "basis" in state(s), timeout=60)
        fill = {"name": "fill", "vms": [{"profile": "1x2@100%", "count": 100}]}
        code, first = post(server, fill)
        assert code == 200 and first["status"] == "partial" and first["held"] is True
        placed = first["placed"]
        assert placed > 0 and first["headroom_left"]["kvm01"]["cpu_cores"] < 1
        server.wait_for(lambda s: all(h["expires_in_s"] < 0 for h in state(s)["held"]))  # time is up
        code, second = post(server, dict(fill, name="again"))
        kept = state(server)["held"]
    assert code == 200 and second["status"] == "reject" and second["placed"] == 0, second
    assert second["held_by_earlier_answers"]["kvm01"] == {
        "cpu_cores": placed * 1.0, "mem_gb": placed * 2.0, "allocated_vcpus": placed * 1.0,
        "allocated_mem_gb": placed * 2.0, "vms": placed}
    assert [h["request"] for h in kept] == ["fill"] and kept[0]["expires_in_s"] < 0


def test_without_a_status_token_admission_is_refused(tmp_path):
    inventory = tmp_path / "hosts.toml"
    inventory.write_text('[[host]]\nname = "h"\nvcpus = 8\nmem_gb = 32\n')
    with ServerProcess(tmp_path / "server", "--inventory", str(inventory), "--status-token", "") as server:
        code, body = post(server, MANIFEST, token="anything")
        assert code == 403 and "status token" in body["error"]


def test_a_bad_inventory_stops_the_start_with_one_line(tmp_path):
    import subprocess
    import sys

    inventory = tmp_path / "hosts.toml"
    inventory.write_text('[[host]]\nname = "h"\nvcpus = 8\n')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "vmstats",
            "serve",
            "--bind",
            LOOPBACK,
            "--udp-port",
            "0",
            "--tcp-port",
            "0",
            "--http-port",
            "0",
            "--data-dir",
            str(tmp_path / "data"),
            "--inventory",
            str(inventory),
            "--duration",
            "5s",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert (
        result.stderr.strip().splitlines()[-1]
        == "Error: inventory %s: host[0] (h).mem_gb: missing" % inventory
    )


@pytest.mark.parametrize("no_http", [["--no-http"], ["--http-port", "-1"]])
def test_an_inventory_without_http_is_a_usage_error_not_ignored(tmp_path, no_http):
    """With the HTTP port off no admission can be asked: the inventory, even a bad one, was
    never read and the server started as if it had not been given."""
    import subprocess
    import sys

    inventory = tmp_path / "hosts.toml"
    inventory.write_text('[[host]]\nname = "h"\nvcpus = 8\n')  # bad too: no mem_gb
    result = subprocess.run(
        [sys.executable, "-m", "vmstats", "serve", "--bind", LOOPBACK, "--udp-port", "0", "--tcp-port", "0",
         *no_http, "--data-dir", str(tmp_path / "data"), "--inventory", str(inventory), "--duration", "5s"],
        capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "Error: --inventory answers POST /admission on the HTTP port: it needs HTTP "
        "(not --no-http or --http-port -1)"), result.stderr
    assert not (tmp_path / "data").exists()  # refused before the start


@contextlib.contextmanager
def summarising(tmp_path, write_logs, hosts: str, *options: str):
    """A server with ``hosts`` as its inventory on the logs ``write_logs`` wrote, once its first
    summary is in use (refreshes an hour apart)."""
    write_logs(tmp_path / "data")
    (tmp_path / "hosts.toml").write_text(hosts)
    with ServerProcess(tmp_path / "server", "--inventory", str(tmp_path / "hosts.toml"),
                       "--capacity-refresh", "1h", *options, data_dir=tmp_path / "data") as server:
        server.wait_for(lambda s: "basis" in state(s), timeout=60)
        yield server


@pytest.fixture(scope="module")
def paused(tmp_path_factory):
    """One server on test_capacity_edges' paused fleet (its HOSTS, --capacity-days 3), shared
    because its start and first summary take seconds: one test holds room on it, the other
    reads the summary only, which holds do not change, so either runs alone or first."""
    from test_capacity_edges import HOSTS, write_paused

    base = tmp_path_factory.mktemp("paused")
    with summarising(base, write_paused, HOSTS, "--capacity-days", "3") as server:
        yield server


@pytest.mark.parametrize("reserve", [[], ["--capacity-no-reserve-stopped"]])
def test_a_stopped_vm_keeps_room_in_the_live_summary_unless_told_not_to(tmp_path, reserve, request):
    """The server's summary reserves a stopped VM's level by default (4 cores, 16 GB on top of the
    running VM's 2 and 8), as ``vmstats admit`` does; --capacity-no-reserve-stopped does not."""
    from test_capacity_edges import HOSTS, write_paused

    if reserve:
        with summarising(tmp_path, write_paused, HOSTS, "--capacity-days", "3", *reserve) as server:
            shown = state(server)
    else:
        shown = state(request.getfixturevalue("paused"))
    one = next(h for h in shown["hosts"] if h["name"] == "small1")
    kept = not reserve
    assert shown["basis"]["reserve_stopped"] is kept
    assert (one["status"], one["allocated_vcpus"], one["allocated_mem_gb"]) == ("ok", 12, 48)
    assert one["cpu_demand"] == pytest.approx(6 if kept else 2, abs=0.01)
    assert one["mem_demand"] == pytest.approx(24 if kept else 8, abs=0.01)


@pytest.mark.parametrize("share", [[], ["--capacity-stopped-share-max", "40"]])
def test_the_live_summary_names_vms_silent_since_before_its_window(tmp_path, share):
    """VMs placed by the inventory's glob or their host tag, silent for longer than the window,
    are named by every answer with when they were last seen, and keep their room (7 cores and
    28 GB left on small1, not 15 and 60), as ``vmstats admit`` counts them; past the stopped
    share the server is given, their hosts are unknown."""
    from test_capacity_edges import GONE_AT, HOSTS_GLOB, write_gone

    with summarising(tmp_path, write_gone, HOSTS_GLOB, "--capacity-days", "2", *share) as server:
        status, answer = post(server, {"hold": False, "vms": [{"profile": "7x28", "count": 2,
                                                               "anti_affinity": True}]})  # fmt: skip
    assert status == 200, answer
    basis = answer["basis"]
    assert basis["vms_unknown"] == [{"vm": "web-1", "host": "small1", "last_seen": GONE_AT},
                                    {"vm": "old", "host": "small2", "last_seen": GONE_AT}]  # fmt: skip
    if share:
        assert basis["stopped_share_max"] == 0.4 and basis["hosts_unknown"] == ["small1", "small2"]
        assert answer["status"] == "reject" and answer["offer"] == {}
    else:
        assert basis["stopped_share_max"] == 0.5 and basis["hosts_unknown"] == []
        assert sorted(answer["offer"].values()) == ["small1", "small2"], answer
        assert answer["headroom_left"]["small1"] == {"cpu_cores": 0.0, "mem_gb": 0.0}


def test_a_stopped_share_outside_0_to_100_stops_the_start_with_one_line(tmp_path):
    import subprocess
    import sys

    for bad in ("100.5", "-3", "many"):
        result = subprocess.run(
            [sys.executable, "-m", "vmstats", "serve", "--bind", LOOPBACK, "--udp-port", "0",
             "--tcp-port", "0", "--data-dir", str(tmp_path / "data"), "--capacity-stopped-share-max", bad,
             "--duration", "5s"],
            capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith("Error: Invalid value for '--capacity-stopped-share-max'"), \
            result.stderr
    assert not (tmp_path / "data").exists()  # refused before the start


def test_the_allocation_figure_counts_the_sizes_earlier_answers_hold(paused):
    """small1 has 12 of its 64 vCPUs and 48 of its 64 GB allocated (Nova's ratios 4 and 1).  The
    first answer holds two 1x8 VMs there (56, then 64 GB); the next 1x8 takes it to 72 GB, past
    the RAM ratio, so Nova would refuse it.  The allocation figure and past_allocation_ratios
    left the held VMs out, as if they were never going to be created: it said Nova places it."""
    server = paused
    code, first = post(server, {"name": "first", "vms": [{"profile": "1x8@25%", "count": 2}]})
    assert code == 200 and first["status"] == "accept" and first["held"] is True, first
    assert set(first["offer"].values()) == {"small1"} and first["past_allocation_ratios"] == {}
    assert first["allocation_basis"]["placed"] == 2
    code, second = post(server, {"hold": False, "vms": [{"profile": "1x8@25%"}]})
    assert code == 200 and second["status"] == "accept" and second["offer"] == {"1x8@25%-1": "small1"}
    assert second["allocation_basis"]["placed"] == 0
    assert second["past_allocation_ratios"] == {"small1": {"vcpus": [15.0, 64.0], "mem_gb": [72.0, 64.0]}}
    assert second["held_by_earlier_answers"] == {"small1": {
        "cpu_cores": 0.5, "mem_gb": 4.0, "allocated_vcpus": 2.0, "allocated_mem_gb": 16.0, "vms": 2}}


def test_answers_say_that_refreshes_fail_and_rest_on_the_summary_before(tmp_path):
    """The inventory edited into a mistake while the server runs: refreshes fail, and answers come
    from the last summary made, of the inventory as it was.  The answer said only how old that
    summary was, not that it could not be refreshed, nor why."""
    from test_capacity_edges import HOSTS, write_paused

    with summarising(tmp_path, write_paused, HOSTS, "--capacity-days", "3",
                     "--capacity-refresh", "0.5s") as server:  # fmt: skip
        code, fine = post(server, {"hold": False, "vms": [{"profile": "1x1"}]})
        assert code == 200 and fine["basis"]["refresh_error"] == "", fine["basis"]
        (tmp_path / "hosts.toml").write_text(HOSTS + "vcpus = 8\n")  # big's vcpus given twice
        server.wait_for(lambda s: state(s)["refreshes"]["failed"] > 0, timeout=20)
        code, stale = post(server, {"hold": False, "vms": [{"profile": "1x1"}]})
    assert code == 200 and stale["status"] == "accept"
    assert stale["basis"]["refresh_error"].startswith(
        "inventory %s: not valid TOML: " % (tmp_path / "hosts.toml")), stale["basis"]


def test_no_summary_yet_is_a_503_that_says_when_to_ask_again(tmp_path):
    """A server with no logs yet answers 503 until a summary is in: a deploy pipeline had no
    Retry-After to tell it when, and either hammered the server or gave up."""
    (tmp_path / "data").mkdir()
    (tmp_path / "hosts.toml").write_text('[[host]]\nname = "h"\nvcpus = 8\nmem_gb = 32\n')
    with ServerProcess(tmp_path / "server", "--inventory", str(tmp_path / "hosts.toml"),
                       "--capacity-refresh", "40s", data_dir=tmp_path / "data") as server:
        server.wait_for(lambda s: state(s)["refreshes"]["failed"] > 0, timeout=30)
        request = urllib.request.Request(
            "http://%s:%d/admission" % (LOOPBACK, server.http_port), method="POST",
            data=json.dumps({"hold": False, "vms": [{"profile": "1x1"}]}).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer " + STATUS_TOKEN})
        with pytest.raises(urllib.error.HTTPError) as answered:
            urllib.request.urlopen(request, timeout=10)
    assert answered.value.code == 503
    assert 1 <= int(answered.value.headers["Retry-After"]) <= 40, answered.value.headers
    assert "no capacity summary yet" in json.loads(answered.value.read())["error"]


def test_an_answer_of_many_shapes_leaves_the_reactor_serving(tmp_path):
    """10,000 VMs of as many shapes on 503 hosts take the placing most of a second or more: it
    held the reactor, so a /status asked meanwhile waited for the answer (2 to 3 s on a loaded
    machine, ingest waiting alike).  Placed in a worker thread, /status is answered while the
    POST is still being placed, and the answer is the same."""
    import http.client
    import select
    import time

    from test_capacity_edges import HOSTS, write_paused

    empty = "".join('[[host]]\nname = "e%03d"\nvcpus = 64\nmem_gb = 256\n' % i for i in range(500))
    shapes = [{"profile": "%dx%d@%d%%" % (1 + i % 8, 2 + i % 31, 5 + i % 41)} for i in range(MAX_SHAPES)]
    with summarising(tmp_path, write_paused, HOSTS + empty, "--capacity-days", "3") as server:
        posting = http.client.HTTPConnection(LOOPBACK, server.http_port, timeout=60)
        posting.request("POST", "/admission", json.dumps({"hold": False, "vms": shapes}),
                        {"Authorization": "Bearer " + STATUS_TOKEN})  # fmt: skip
        time.sleep(0.1)  # the body read: the placing has begun
        assert "records" in server.http("/status", timeout=30)
        answered_first = select.select([posting.sock], [], [], 0)[0] == []
        response = posting.getresponse()
        answer = json.loads(response.read())
    assert response.status == 200 and answer["status"] == "accept" and answer["placed"] == MAX_SHAPES
    assert answered_first, "/status waited for the admission answer"


def test_a_host_at_its_instance_cap_counts_the_vms_earlier_answers_hold(tmp_path):
    """small1 holds 2 VMs (one stopped: Nova counts it) and is capped at 4, with room for many
    more 1x8@25% by CPU and memory; small2 and big are full.  The first answer places 2 and says
    the cap refused the third; the next finds small1 at its cap with the 2 held, not in the data
    yet.  Without the cap small1 took all of them."""
    from test_capacity_edges import HOSTS, write_paused

    capped = HOSTS.replace('name = "small1"\n', 'name = "small1"\nmax_instances = 4\n')
    at_cap = ("every host with room for 0.25 cores and 2.00 GB of demand is at its instance cap "
              "(max_instances): small1")
    with summarising(tmp_path, write_paused, capped, "--capacity-days", "3") as server:
        code, first = post(server, {"name": "first", "vms": [{"profile": "1x8@25%", "count": 3}]})
        assert code == 200 and first["status"] == "partial" and first["held"] is True, first
        assert list(first["offer"].values()) == ["small1", "small1"]
        assert list(first["rejected"].values()) == [at_cap]
        code, second = post(server, {"hold": False, "vms": [{"profile": "1x8@25%"}]})
    assert code == 200 and second["status"] == "reject" and list(second["rejected"].values()) == [at_cap]
    assert second["held_by_earlier_answers"]["small1"]["vms"] == 2
    assert second["allocation_basis"]["placed"] == 0


def test_the_unplaced_vms_count_against_the_capped_hosts_in_the_live_answer(tmp_path):
    """test_capacity_unplaced's capped fleet on the server: 4 hosts capped at 10, each holding 4,
    and 10 VMs that name their hosts otherwise.  POST /admission offered 6 more on each, 24;
    it now withholds each host's share of the 10 (3), places 12 and says why the rest were
    refused.  A second answer finds the 12 held, and every host at its cap."""
    from test_capacity_unplaced import AT_CAP, CAPPED, write_capped

    ask = {"name": "fill", "vms": [{"profile": "1x2@10%", "count": 20}]}
    with summarising(tmp_path, write_capped, CAPPED) as server:
        code, first = post(server, ask)
        code_again, second = post(server, dict(ask, hold=False))
    assert code == 200 and first["status"] == "partial" and first["placed"] == 12, first
    assert sorted(first["offer"].values()) == sorted(["cap1", "cap2", "cap3", "cap4"] * 3)
    assert set(first["rejected"].values()) == {AT_CAP}
    assert first["instances_withheld_for_unplaced"] == {"cap%d" % k: 3 for k in range(1, 5)}
    assert first["allocation_basis"]["placed"] == 12
    assert code_again == 200 and second["status"] == "reject" and second["placed"] == 0, second


def test_a_summary_stopped_when_the_server_is_killed_ends_with_it(tmp_path):
    """A refresh's summary held as it starts reading (tests/stallsummary) and stopped there
    (``kill -STOP``): SIGKILL of the server ends it within seconds.  Before, it was tied to
    nothing: running, it read on for up to an hour for a server that was gone; stopped, it
    stayed for good."""
    (tmp_path / "data").mkdir()
    (tmp_path / "hosts.toml").write_text('[[host]]\nname = "h"\nvcpus = 8\nmem_gb = 32\n')
    marker = tmp_path / "stalled-summary"
    env = {"PYTHONPATH": str(ROOT / "tests" / "stallsummary"),
           "VMSTATS_TEST_STALL_SUMMARY": str(marker)}
    with ServerProcess(tmp_path / "server", "--inventory", str(tmp_path / "hosts.toml"),
                       data_dir=tmp_path / "data", env=env) as server:
        server.wait_for(lambda s: marker.exists() and marker.read_text(), timeout=30)
        stalled = int(marker.read_text())
        assert stalled in descendants(server.pid)
        os.kill(stalled, signal.SIGSTOP)
        assert server.killed_leaving([stalled]) == []


def test_a_request_given_up_on_before_its_answer_holds_no_room(live):
    """Answers take turns: a deploy job that timed out while an answer of many shapes was
    placed ahead of it, and asked again, found the room taken by its own earlier tries, each
    held for --admission-hold by an answer nobody read.  A request whose client has gone is
    neither placed nor held, and is counted as given up."""
    import http.client
    import socket
    import time

    server, _expected = live
    shapes = [{"profile": "%dx%d@%d%%" % (1 + i % 8, 2 + i % 31, 5 + i % 41)} for i in range(MAX_SHAPES)]
    ahead = http.client.HTTPConnection(LOOPBACK, server.http_port, timeout=60)
    ahead.request("POST", "/admission", json.dumps({"hold": False, "vms": shapes}),
                  {"Authorization": "Bearer " + STATUS_TOKEN})  # fmt: skip
    time.sleep(0.05)  # its body read: its turn has begun
    for attempt in range(3):
        body = json.dumps({"name": "tried-%d" % attempt, "vms": [{"profile": "1x2"}]}).encode()
        with socket.create_connection((LOOPBACK, server.http_port), timeout=10) as sock:
            sock.sendall(b"POST /admission HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (STATUS_TOKEN.encode(), len(body), body))
        # Closed at once: the server reads the request, then finds its client gone.
    assert ahead.getresponse().status == 200
    server.wait_metrics(lambda m: m.get('vmstats_admission_requests_total{result="given_up"}') == 3, 10)
    assert not [h for h in state(server)["held"] if h["request"].startswith("tried-")]


GROWING = '[defaults]\nreserve_mem_gb = 0\nbuffer = 0\n\n[[host]]\nname = "grow"\nvcpus = 16\nmem_gb = 64\n'


def write_growing(data):
    """One VM of 8 vCPUs on "grow", 10% busy on its first day and 15 points busier each day
    after: 0.8, 2.0, 3.2 and 4.4 cores, a rise of 8.4 cores a week."""
    from test_report_stats import T0, series, write_records

    minutes = np.arange(4 * 1440)
    cpu = 10.0 + 15.0 * (minutes // 1440)
    records = series("app", T0 + 60 * minutes, cpu, np.full(len(minutes), 30.0), vcpus=8, mem_mb=32768)
    write_records(data, [r._replace(host="grow") for r in records])


@pytest.mark.parametrize("horizon", [None, "0"])
def test_the_servers_trend_horizon_is_an_option_as_the_commands_is(tmp_path, horizon):
    """The server projected every rising trend 7 days ahead, with no option to say otherwise,
    where ``vmstats admit --horizon-days`` answers the same logs with another horizon: a
    server and a command told alike gave different answers.  --capacity-horizon-days 0 leaves
    grow's 4.4 cores (11.6 of 16 free: two VMs of 4 busy cores fit); the default adds the
    week's rise of 8.4 (3.2 free: none fits)."""
    option = ["--capacity-horizon-days", horizon] if horizon is not None else []
    with summarising(tmp_path, write_growing, GROWING, "--capacity-days", "4", *option) as server:
        code, answer = post(server, {"hold": False, "vms": [{"profile": "4x4@100%/10%", "count": 2}]})
    assert code == 200, answer
    if horizon == "0":
        assert (answer["status"], answer["basis"]["horizon_days"]) == ("accept", 0.0), answer
        assert answer["headroom_left"]["grow"]["cpu_cores"] == pytest.approx(16 - 4.4 - 8, abs=0.01)
    else:
        assert (answer["status"], answer["basis"]["horizon_days"]) == ("reject", 7.0), answer
        assert answer["headroom_left"]["grow"]["cpu_cores"] == pytest.approx(16 - 4.4 - 8.4, abs=0.01)


def test_a_trend_horizon_the_command_refuses_stops_the_servers_start_with_one_line(tmp_path):
    """--capacity-horizon-days takes what admit's --horizon-days takes (0 to the longest window),
    refused in the same words."""
    import subprocess
    import sys

    from vmstats.report.settings import MAX_DAYS

    for bad in ("nan", "-1", str(MAX_DAYS + 1), "week"):
        result = subprocess.run(
            [sys.executable, "-m", "vmstats", "serve", "--bind", LOOPBACK, "--udp-port", "0",
             "--tcp-port", "0", "--data-dir", str(tmp_path / "data"), "--capacity-horizon-days", bad,
             "--duration", "5s"],
            capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        said = result.stderr.split(": ", 2)[-1]
        assert result.stderr.startswith("Error: Invalid value for '--capacity-horizon-days'"), result.stderr
        command = subprocess.run(
            [sys.executable, "-m", "vmstats", "admit", "m.toml", "data", "--inventory", "h.toml",
             "--horizon-days", bad], capture_output=True, text=True, timeout=60, cwd=tmp_path)  # fmt: skip
        assert command.returncode == 2 and command.stderr.endswith(said), (command.stderr, said)
    assert not (tmp_path / "data").exists()  # refused before the start
