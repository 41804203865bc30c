"""Parsing elsewhere changes nothing that is filed: arrival order, counts, failures."""

import marshal

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from vmstats import protocol
from vmstats.server import ingest as ingest_module
from vmstats.server.buffer import Buffer
from vmstats.server.ingest import Ingest
from vmstats.server.metrics import Metrics
from vmstats.server.parse import Parser, _all_lines_matched, _lines, frame_start, has_frame
from vmstats.server.parsers import ParserDied, _Parser
from vmstats.server.parseworker import REPLY

NOW = 1_732_262_400


class HeldParsers:
    """Parser processes whose answers the test releases, in any order it likes."""

    def __init__(self, room: bool = True):
        self.room = room
        self.calls: list[tuple[bytes, defer.Deferred]] = []

    def has_room(self) -> bool:
        return self.room

    def parse(self, data: bytes, now: float) -> defer.Deferred:
        waiting: defer.Deferred = defer.Deferred()
        self.calls.append((data, waiting))
        return waiting


def make(parsers) -> Ingest:
    metrics = Metrics()
    return Ingest(Buffer(metrics, 10 ** 6, 10 ** 6), metrics, 300, 0, clock=lambda: NOW,
                  parsers=parsers)


def rec(cpu: int, ts: int = NOW - 60, vm: str = "10.0.0.1") -> bytes:
    return b"vmstats,vm=%s cpu=%d,mem=1 %d\n" % (vm.encode(), cpu, ts)


def test_answers_out_of_order_are_filed_in_arrival_order():
    parsers = HeldParsers()
    ingest = make(parsers)
    done = []
    ingest.submit(rec(1), lambda *r: done.append(("first", r)))
    ingest.submit(rec(2) + b"junk\n", lambda *r: done.append(("second", r)))
    ingest.after(lambda: done.append("sync"))
    ingest.submit(rec(3, vm="10.0.0.2"), lambda *r: done.append(("third", r)))
    parser = Parser(300, 0)
    answers = [parser.parse(data, NOW) for data, _ in parsers.calls]
    parsers.calls[2][1].callback(answers[2])
    parsers.calls[1][1].callback(answers[1])
    assert done == [] and ingest.buffer.count == 0  # the first payload is still out
    parsers.calls[0][1].callback(answers[0])
    assert done == [("first", (1, 0, 0, [])), ("second", (1, 1, 0, [(protocol.R_SYNTAX, 1)])),
                    "sync", ("third", (1, 0, 0, []))]   # each payload's rejects by reason too
    # The later record for the same (vm, ts) replaced the earlier one.
    [(ts, held)] = ingest.buffer.table["10.0.0.1"].items()
    assert ts == NOW - 60 and held.split(b",")[0] == b"2"  # cpu, ..., host
    assert ingest.buffer.count == 2 and ingest.metrics.records == 3
    assert ingest.metrics.rejects["syntax"] == 1 and ingest.metrics.parsed_remote == 3
    assert ingest.idle().called


def test_datagrams_a_parser_read_itself_wait_behind_earlier_payloads_and_a_failure_is_reparsed():
    """UDP a parser read and parsed is filed after what was submitted before it; when the
    parser failed on it (None), the reactor parses the payload it came with."""
    parsers = HeldParsers()
    ingest = make(parsers)
    done = []
    ingest.submit(rec(1), lambda *r: done.append("tcp"))
    ingest.parsed_elsewhere(rec(2), Parser(300, 0).parse(rec(2), NOW))
    ingest.parsed_elsewhere(rec(3, vm="10.0.0.2"), None)
    assert done == [] and ingest.buffer.count == 0  # the submitted payload is still out
    parsers.calls[0][1].callback(Parser(300, 0).parse(rec(1), NOW))
    assert done == ["tcp"]
    assert ingest.buffer.table["10.0.0.1"][NOW - 60].split(b",")[0] == b"2"  # the later one won
    assert ingest.buffer.table["10.0.0.2"][NOW - 60].split(b",")[0] == b"3"
    assert (ingest.metrics.parsed_remote, ingest.metrics.parsed_here) == (2, 1)
    assert ingest.metrics.records == 3 and ingest.idle().called


def test_a_dead_parsers_payloads_are_parsed_by_the_reactor():
    parsers = HeldParsers()
    ingest = make(parsers)
    done = []
    ingest.submit(rec(5), lambda *r: done.append(r))
    waiting = ingest.idle()
    assert not waiting.called
    parsers.calls[0][1].errback(Failure(ParserDied("parser 123 ended")))
    assert done == [(1, 0, 0, [])] and waiting.called
    assert ingest.metrics.parsed_here == 1 and ingest.buffer.count == 1


def test_without_room_the_reactor_parses_and_still_keeps_the_order():
    parsers = HeldParsers()
    ingest = make(parsers)
    done = []
    ingest.submit(rec(1), lambda *r: done.append("remote"))
    parsers.room = False
    ingest.submit(rec(2), lambda *r: done.append("here"))
    assert len(parsers.calls) == 1 and done == []  # parsed already, but waits its turn
    parsers.calls[0][1].callback(Parser(300, 0).parse(parsers.calls[0][0], NOW))
    assert done == ["remote", "here"]
    assert ingest.buffer.table["10.0.0.1"][NOW - 60].split(b",")[0] == b"2"
    ingest.submit(rec(3), lambda *r: done.append("here, at once"))  # nothing waits: filed now
    assert done[-1] == "here, at once" and len(parsers.calls) == 1
    assert (ingest.metrics.parsed_remote, ingest.metrics.parsed_here) == (1, 2)


def test_a_payload_a_parser_sits_on_is_parsed_here_once_too_many_wait_behind_it(monkeypatch):
    """A stopped parser holds the oldest payload; the datagrams other parsers read queue behind
    it.  Past MAX_BEHIND of them the reactor parses the held one itself and files everything in
    order; the parser's answer, if it ever comes, changes nothing."""
    monkeypatch.setattr(ingest_module, "MAX_BEHIND", 4)
    parsers = HeldParsers()
    ingest = make(parsers)
    done = []
    ingest.submit(rec(1), lambda *r: done.append(("held", r)))
    parser = Parser(300, 0)
    for k in range(4):
        data = rec(10 + k, vm="10.0.1.%d" % k)
        ingest.parsed_elsewhere(data, parser.parse(data, NOW))
    assert done == [] and len(ingest.queue) == 5  # at the bound, still waiting
    data = rec(20, vm="10.0.2.1")
    ingest.parsed_elsewhere(data, parser.parse(data, NOW))
    assert done == [("held", (1, 0, 0, []))] and not ingest.queue and ingest.buffer.count == 6
    assert (ingest.metrics.parsed_remote, ingest.metrics.parsed_here) == (5, 1)
    parsers.calls[0][1].callback(parser.parse(rec(1), NOW))  # the parser wakes up
    assert ingest.metrics.records == 6 and ingest.buffer.count == 6
    assert (ingest.metrics.parsed_remote, ingest.metrics.parsed_here) == (5, 1)


class _Transport:
    pid = 4242
    pipes: dict = {}

    def __init__(self):
        self.signals = []
        self.written = []

    def signalProcess(self, name):
        self.signals.append(name)

    def writeSequence(self, parts):
        self.written.append(b"".join(parts))


def test_a_parser_that_answers_nonsense_is_stopped_and_nothing_is_lost():
    class Pool:
        stderr = None
        auth_config = None
        senders = False
        reactor = Clock()

    parser = _Parser(Pool())
    parser.transport = _Transport()
    parser.connectionMade()
    first = parser.send(rec(1), NOW)
    second = parser.send(rec(2), NOW)
    results = []
    first.addCallback(results.append)
    good = marshal.dumps(Parser(300, 0).parse(rec(1), NOW))
    # A reply split across reads is reassembled; then one for a payload never sent.
    frame = REPLY.pack(0, len(good)) + good
    parser.outReceived(frame[:7])
    parser.outReceived(frame[7:])
    assert results and results[0][0] == ["10.0.0.1"] and parser.transport.signals == []
    parser.outReceived(REPLY.pack(99, 0))
    assert parser.transport.signals == ["KILL"]
    assert not second.called  # failed when the process ends, then parsed by the reactor


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="a\n\r#", max_size=40).map(str.encode))
def test_lines_counts_the_non_empty_lines(data):
    assert _lines(data) == sum(1 for line in data.split(b"\n") if line)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="a\n\r#", max_size=40).map(str.encode), st.integers(0, 40))
def test_one_count_proves_every_line_matched_only_when_it_is_so(data, matched):
    """The single-count shortcut never admits a payload with a line the regex left."""
    matched = min(matched, _lines(data))  # the regex matches at most one per non-empty line
    assert _all_lines_matched(data, matched) == (matched == _lines(data))


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="a\n#!", max_size=40).map(str.encode))
def test_frame_start_is_where_the_first_control_line_begins(data):
    assert frame_start(data) == data.find(b"\n#!")
    assert has_frame(data) == any(line.startswith(b"#!") for line in data.split(b"\n"))


def test_blank_lines_keep_a_payload_on_the_column_path(monkeypatch):
    """Datagrams ending in a newline, joined with newlines, leave blank lines between records."""
    parser = Parser(300, 0)
    datagrams = [rec(cpu, vm="10.0.0.%d" % cpu) for cpu in range(1, 5)]  # each ends in "\n"
    parser.parse(datagrams[0], NOW)  # the first sight of a VM id takes the checked path
    parser.parse(b"".join(datagrams), NOW)

    def slow(*_args):
        raise AssertionError("line-by-line path taken")

    monkeypatch.setattr(parser, "_line_by_line", slow)
    monkeypatch.setattr(parser, "_checked", slow)
    parsed = parser.parse(b"\n" + b"\n".join(datagrams) + b"\n\n", NOW)
    assert parsed[0] == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert [row.split(b",")[0] for row in parsed[2]] == [b"1", b"2", b"3", b"4"]
