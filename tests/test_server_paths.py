"""The server's own files and folders when something else is in their place.

At start: one line naming the path, exit 1 (2 for the --data-dir the command line names), before
it listens, and the thing in the way left as it was.  At run time: the server keeps going, counts
it in /metrics, says it once, and recovers once the path is fixed.
"""

import json
import os
import shutil
import time

import pytest
from serverproc import ServerError, ServerProcess, serve
from test_reliability_journal import send_acked
from test_server_udp import line, logged

from vmstats import protocol

KEY = "k1 " + "ab" * 32 + "\n"
RULES = '[action.say]\nkind = "log"\n\n[[rule]]\nname = "hot"\nmetric = "cpu"\nenter = 90\n' \
        'actions = ["say"]\n'


def folder(path):
    path.mkdir()


def dangling(path):
    os.symlink(str(path.parent / "not-mounted" / path.name), str(path))


def fifo(path):
    os.mkfifo(str(path))


def regular_file(path):
    path.write_text("x")


KINDS = {"a directory": folder, "a symbolic link to": dangling, "a FIFO": fifo}


def keys(work, data):
    (work / "keys").write_text(KEY)
    (work / "keys").chmod(0o600)  # else its warning comes before the one line looked for
    return ["--auth-keys", str(work / "keys")]


def rules(work, data):
    (work / "rules.toml").write_text(RULES)
    return ["--rules", str(work / "rules.toml")]


#: name -> (the path, the options that make the server use it, what the error calls it)
PLACES = {
    "signature marks": (lambda work, data: data / "journal" / "signatures", keys,
                        "signature marks file"),
    "signature marks, --no-journal": (lambda work, data: data / "journal" / "signatures",
                                      lambda w, d: keys(w, d) + ["--no-journal"],
                                      "signature marks file"),
    "journal segment": (lambda work, data: data / "journal" / "0000000001.journal",
                        lambda w, d: [], "journal segment"),
    "edge key": (lambda work, data: data / "journal" / "edge.key",
                 lambda w, d: ["--influx-port", "0"], "edge journal key"),
    "action log": (lambda work, data: data / "rules" / "actions.log", rules, "rules action log"),
}


def refused(tmp_path, args, data=None) -> ServerProcess:
    """A server that must exit before it listens; returns it, exited.  It is waited for as long
    as a start may take: a loaded host took over 10 s to start one and see it refuse, and the
    test killed it, printing the line, before it could exit."""
    server = ServerProcess(tmp_path, *args, data_dir=data, start_timeout=60)
    with pytest.raises(ServerError):
        server.start()
    server.kill()
    return server


def one_error_line(server: ServerProcess, status: int = 1) -> str:
    """The server's whole output, which must be one error line, exit status ``status``."""
    assert server.returncode == status, server.output
    assert "Traceback" not in server.output and "listening" not in server.output
    lines = server.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot "), server.output
    return lines[0]


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("place", sorted(PLACES))
def test_something_else_in_an_own_files_place_stops_the_start_in_one_line(tmp_path, place, kind):
    # Before: a FIFO there held the start for ever (signature marks, segment); a dangling link
    # at the marks was taken for no marks (replays passed after the restart); a folder or a
    # dangling link at a segment started the server, which logged it unreadable and went on;
    # anything at the edge key started it without a word.
    where, options, called = PLACES[place]
    data = tmp_path / "data"
    path = where(tmp_path, data)
    path.parent.mkdir(parents=True, exist_ok=True)
    KINDS[kind](path)
    server = refused(tmp_path, options(tmp_path, data))
    error = one_error_line(server)
    assert called in error and str(path) in error and kind in error
    assert os.path.lexists(str(path)) and os.path.islink(str(path)) == (KINDS[kind] is dangling)


@pytest.mark.parametrize("what", ["VMs' log folder", "rules folder", "status file's folder",
                                  "status file"])
def test_a_file_or_nothing_where_a_folder_goes_stops_the_start_in_one_line(tmp_path, what):
    # Before: a file at DATA_DIR/vms started the server, whose every write then failed; a file
    # at DATA_DIR/rules said only 'File exists', and a status file whose folder is missing, or
    # a folder in its place, was found once the server listened.
    data = tmp_path / "data"
    data.mkdir()
    args = []
    if what == "VMs' log folder":
        regular_file(data / "vms")
        path = data / "vms"
    elif what == "rules folder":
        regular_file(data / "rules")
        path = data / "rules"
        args = rules(tmp_path, data)
    elif what == "status file":  # written whole at start: only a folder is in the way
        path = tmp_path / "status.json"
        folder(path)
        args = ["--status-file", str(path)]
    else:
        path = tmp_path / "gone" / "status.json"
        args = ["--status-file", str(path)]
    # The status file is named on the command line: a refused command line's status.
    error = one_error_line(refused(tmp_path, args), status=2 if "status" in what else 1)
    assert str(path) in error
    assert any(why in error for why in ("does not exist", "not a directory", "a directory is"))


def test_a_data_dir_linked_to_nothing_is_named_as_such(tmp_path):
    data = tmp_path / "data"
    dangling(data)
    # The folder the command line names: a refused command line's status.
    error = one_error_line(refused(tmp_path, [], data=data), status=2)
    assert "data directory" in error and "a symbolic link to" in error and "does not exist" in error


def test_an_edge_key_unusable_after_the_start_runs_on_one_in_memory_counted(tmp_path):
    # The key is made when other agents first send.  If it cannot be kept then (a folder put
    # in its place since the start, a disk gone read-only), their payloads are still filed;
    # the run's key is in memory, said once and shown in /metrics.
    t0 = (int(time.time()) - 3600) // 60 * 60
    with serve(tmp_path, "--flush-interval", "0.3", "--graphite-port", "0",
               "--graphite-template", "servers.{vm}.cpu.percent cpu",
               "--graphite-template", "servers.{vm}.mem.percent mem") as server:
        assert server.metrics()["vmstats_edge_key_in_memory"] == 0
        (server.data_dir / "journal" / "edge.key").mkdir()
        server.send_udp_to(server.status["graphite_port"], b"".join(
            b"servers.gr-1.cpu.percent 5 %d\nservers.gr-1.mem.percent 6 %d\n" % (t, t)
            for t in range(t0 + 10, t0 + 70, 10)))
        server.wait_metrics(lambda m: m.get(
            'vmstats_edge_lines_total{format="graphite",outcome="used"}', 0) == 12)
        assert server.metrics()["vmstats_edge_key_in_memory"] == 1
        server.send_udp(line(protocol.Record(vm="10.0.0.9", ts=t0, cpu=1.0, mem=2.0)))
        server.wait_received(1)
    assert server.returncode == 0 and "Traceback" not in server.output
    assert server.output.count("kept in memory, so a crash") == 1
    assert len(logged(server.data_dir, "gr-1")) == 1 and len(logged(server.data_dir, "10.0.0.9")) == 1


def test_signature_marks_unsavable_after_the_start_are_counted_told_once_and_saved_later(tmp_path):
    (tmp_path / "keys").write_text("k1 s3cret\n")
    marks = tmp_path / "data" / "journal" / "signatures"
    t = int(time.time()) - 120

    def signed(vm: str) -> bytes:
        return protocol.sign_payload("k1", "s3cret", line(protocol.Record(
            vm=vm, ts=t, cpu=1.0, mem=2.0)) + b"\n", now=int(time.time()))

    errors = "vmstats_signature_marks_errors_total"
    with serve(tmp_path, "--flush-interval", "0.2", "--auth-keys", str(tmp_path / "keys"),
               "--no-journal") as server:
        marks.mkdir(parents=True)  # saved each second without the journal
        for number in range(3):
            server.send_udp(signed("10.0.0.%d" % number))
            server.wait_metrics(lambda m, n=number: m["vmstats_records_received_total"] > n)
        server.wait_metrics(lambda m: m[errors] >= 2)
        marks.rmdir()
        server.wait_for(lambda s: marks.is_file())
        assert server.metrics()["vmstats_records_received_total"] == 3
    assert server.returncode == 0 and "Traceback" not in server.output
    assert server.output.count("cannot save the signature marks") == 1
    assert "saved again" in server.output and marks.read_text().startswith("k1 ")


def test_an_action_log_unwritable_after_the_start_is_counted_told_once_and_written_later(
        tmp_path):
    # Before: one error line per failed write (one per retry of every delivery waiting), and
    # nothing said when it worked again.
    args = rules(tmp_path, tmp_path / "data")
    now = int(time.time())
    with serve(tmp_path, "--flush-interval", "0.5", *args) as server:
        actions = server.data_dir / "rules" / "actions.log"
        if actions.exists():
            actions.unlink()
        actions.mkdir()
        for number in range(10):
            server.send_udp(line(protocol.Record(vm="vm-%d" % number, ts=now - 5, cpu=95.0,
                                                 mem=2.0)))
        server.wait_metrics(lambda m: m["vmstats_rule_log_errors_total"] >= 3, timeout=20)
        assert server.metrics()['vmstats_rule_deliveries_total{action="say",result="log_error"}'] \
            == 10
        actions.rmdir()
        server.wait_metrics(lambda m: m["vmstats_rule_log_syncs_total"] >= 1, timeout=20)
        output = tmp_path / "server-output.txt"
        server.wait_for(lambda s: output.read_text().count("ok -> alarm") == 10, timeout=20)
    assert server.returncode == 0 and "Traceback" not in server.output
    assert server.output.count("cannot write the action log") == 1
    assert "is written again" in server.output and actions.read_text().count('"type":"event"') == 10
    # Before: the transitions' own entries were never written once it failed, so a restart
    # forgot that these VMs were in alarm (the log held only their attempts and results).
    with serve(tmp_path / "again", *args, data_dir=server.data_dir) as again:
        assert json.loads(again.http("/alerts"))["counts"] == {"hot.alarm": 10}


def test_a_journal_directory_removed_under_the_server_is_made_again(tmp_path):
    # Before: every later segment's open failed, so every TCP batch was refused busy until
    # someone made the directory by hand; the log said only 'No such file or directory'.
    t = int(time.time()) // 60 * 60 - 600
    with serve(tmp_path, "--flush-interval", "0.3") as server:
        first = [protocol.Record(vm="tcp-1", ts=t, cpu=1.0, mem=2.0)]
        assert send_acked(server.tcp_port, first, "a") == b"#!ack a 1 0\n"
        server.wait_metrics(lambda m: m["vmstats_journal_segments"] == 0)  # flushed, retired
        shutil.rmtree(str(server.data_dir / "journal"))
        then = [protocol.Record(vm="tcp-1", ts=t + 60, cpu=1.0, mem=2.0)]
        assert send_acked(server.tcp_port, then, "b") == b"#!ack b 1 0\n"
        assert server.metrics()["vmstats_journal_failing"] == 0
    assert server.returncode == 0 and "was gone: made again" in server.output
    assert len(logged(server.data_dir, "tcp-1")) == 2
