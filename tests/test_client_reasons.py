"""Why the server rejected a TCP agent's records, told in its acks and said once in the agent's log.

An ack gave counts only, so a TCP agent whose records were refused could say no more than
"invalid, or outside the time window", once a batch.  A sender now asks (``#!reasons``) and the
ack names the reasons; older agents and older servers still work with newer ones both ways: a
sender that does not ask gets the three-field ack it reads, and an older server ignores the
request (as it ignores every control line it does not know) and acks with three fields, which
the agent reads as before.  The agent and the server are real, on loopback; the older server is
a scripted peer answering as one did.
"""

import logging
import subprocess
import time

import pytest
from serverproc import ServerProcess
from test_client_push import ENV, agent_command, wait_rows
from test_client_spool import FakeServer

from vmstats import protocol
from vmstats.client import spool, transport


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("server"), "--flush-interval", "0.5") as running:
        yield running


def old_record(vm: str, seq: int) -> bytes:
    """A record an older agent spooled while its clock was not set: stamped in 1970."""
    return b"vmstats,vm=%s cpu=1,mem=2,seq=%di %d" % (vm.encode(), seq, 300 + seq)


def test_rejections_are_named_by_reason_once_however_many_batches(server, tmp_path):
    """250 records an older agent spooled stamped in 1970 (two batches): each batch was said
    as "invalid, or stamped outside the server's time window", the reason guessed; now the
    server's reason is said once, in words, and the summary counts by it."""
    vm = "reasons-vm"
    folder = tmp_path / "spool"
    folder.mkdir()
    for number in range(250):
        (folder / ("%016d.rec" % number)).write_bytes(old_record(vm, number))
    result = subprocess.run(
        agent_command("--server", "127.0.0.1:%d" % server.tcp_port, "--transport", "tcp",
                      "--count", "1", "--vm-id", vm, "--spool-dir", str(folder)),
        env=ENV, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("WARNING: server rejected") == 1, result.stderr
    assert "DEBUG: server rejected 50 records as past_timestamp" in result.stderr
    assert "server rejected 200 records as past_timestamp (not resent): stamped before the " \
        "server's time window: before 2000-01-01 (made while this VM's clock was not set)" \
        in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "vmstats-agent INFO: 1 record made, 1 acknowledged, and 250 records spooled before this "
        "run acknowledged now, 250 rejected by the server (250 past_timestamp), 0 left in the "
        "spool at %s" % folder)
    assert len(wait_rows(server.data_dir, vm, 1)) == 1


def test_a_sender_that_does_not_ask_gets_the_three_field_ack_it_reads(server):
    """An older agent, the simulator, a hand-written sender: the same batch is acked with the
    counts alone unless the connection asked for the reasons."""
    now = int(time.time())
    batch = b"vmstats,vm=ask-vm cpu=1,mem=2 %d\nvmstats,vm=ask-vm cpu=1,mem=2 300\n" \
            b"vmstats,vm=ask-vm cpu=1,mem=200 %d\n#!sync t-1\n" % (now, now - 1)
    replies = []
    for opening in (b"", protocol.REASONS_REQUEST + b"\n"):
        with server.tcp() as sock:
            sock.sendall(opening + batch)
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = sock.recv(4096)
                assert chunk, reply
                reply += chunk
            replies.append(reply)
    assert replies == [b"#!ack t-1 1 2\n", b"#!ack t-1 1 2 out_of_range=1,past_timestamp=1\n"]


def test_an_older_servers_ack_without_reasons_is_read_as_before(tmp_path, caplog):
    """A server from before the reasons ignores the request and acks with three fields: the
    batch leaves the spool, the rejection is counted and said as it was."""
    peer = FakeServer([b"#!ack TOKEN 1 1\n"])
    store = spool.Spool(str(tmp_path), 10)
    sender = transport.TcpSender("127.0.0.1", peer.port, store, timeout=5)
    with caplog.at_level(logging.WARNING, logger="vmstats.agent"):
        sender.send([old_record("older-vm", 0), old_record("older-vm", 1).replace(b" 301", b" %d"
                     % int(time.time()))])
    sender.close()
    peer.close()
    assert peer.received.startswith(protocol.REASONS_REQUEST + b"\n")
    assert (sender.acked, sender.rejected, sender.rejected_by, len(store)) == (1, 1, {}, 0)
    assert "server rejected 1 of 2 records (not resent): invalid, or stamped outside" in caplog.text


def test_a_clock_not_set_takes_no_rejected_record_for_one_stamped_ahead(tmp_path, caplog):
    """An older server's ack gives counts only, so the agent judges by the stamps whether its
    records were refused as stamped ahead of its clock (and then stamps by the clock).  A clock
    not set, reading 1970, leads every stamp a set clock made: records spooled before a reboot
    without a hardware clock, refused for their age, were said to be "from the future" and
    counted as stamped ahead.  An unset clock judges none."""
    peer = FakeServer([b"#!ack TOKEN 0 2\n"])
    store = spool.Spool(str(tmp_path), 10)
    sender = transport.TcpSender("127.0.0.1", peer.port, store, timeout=5, wall=lambda: 300.0)
    now = int(time.time())
    with caplog.at_level(logging.WARNING, logger="vmstats.agent"):
        sender.send([b"vmstats,vm=unset-vm cpu=1,mem=2 %d" % (now - 7200 + i) for i in range(2)])
    sender.close()
    peer.close()
    assert (sender.rejected, sender.refused_ahead) == (2, 0)
    assert "from the future" not in caplog.text
    assert "server rejected 2 of 2 records (not resent): invalid, or stamped outside" in caplog.text
