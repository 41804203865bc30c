"""Every setting an edge decoder reads is one the journal keeps for a replay.

A line-protocol or Graphite payload is journaled as it came and decoded again at a restart, by
a decoder made from the settings journaled with it (``Decoder.settings``, then
``Decoder.from_settings``).  A setting a decoder read and the journal did not carry would make
a replay after an operator changed it decode acknowledged payloads otherwise than they were
acknowledged: samples misfiled or lost.  So each of the server's settings is changed in turn,
the decoders are made from it as the server makes them (``edge.decoders``), and each decoder
journaled raw is made again from its settings through JSON, as a replay makes it: the two must
hold the same state (what the decoding processes are sent, pickled) and decode the same lines
alike.  A setting added to ServerConfig needs another value here (the test says so), and one
that reaches a decoder and is not in its ``settings`` fails.
"""

import dataclasses
import json
import logging
import pickle

import pytest
from twisted.internet.task import Clock

from vmstats.server.config import ServerConfig
from vmstats.server.formats import Tally
from vmstats.server.formats.edge import Edge, decoders, minute_assembler
from vmstats.server.formats.graphite import GraphiteDecoder, parse_templates
from vmstats.server.formats.influx import InfluxDecoder
from vmstats.server.formats.journaling import EdgeJournal, taken_under
from vmstats.server.formats.minutes import MinuteAssembler
from vmstats.server.journal import Journal
from vmstats.server.metrics import Metrics

NOW = 1_800_000_000.0
#: Another value for each setting whose type says none by itself (None, a choice, a list).
OTHER = {
    "duration": 60.0,
    "status_file": "status.json",
    "auth_keys": {b"k1": b"0" * 32},
    "status_token": "token",
    "journal_dir": "journal",
    "write_token": "token",
    "collectd_auth": {"fleet": "s3cret"},
    "collectd_security": "sign",
    "graphite_templates": ["servers.{vm}.{field}", "hosts.{vm}.cpu.total cpu"],
    "virtual_interfaces": ("vnet*",),
    "allow": ("127.0.0.1",),
    "http_allow": ("127.0.0.1",),
    "fsync": "batch",
    "rules_file": "rules.toml",
    "inventory": "hosts.toml",
    "capacity_percentile": "p99",
    "influx_vm_tag": "vm",
}
#: Settings that only make sense with another changed too.
WITH = {"collectd_security": {"collectd_auth": {"fleet": "s3cret"}}}
#: Lines of each format the decoders read, some of them by the settings changed above.
LINES = {
    "influx": b"\n".join([
        b"cpu,cpu=cpu-total,host=tagged,vm=other usage_idle=90,usage_iowait=1 1800000000000000000",
        b"mem,host=tagged,vm=other used_percent=40,total=2147483648i 1800000000000000000",
        b"net,vm=named,interface=eth0 bytes_recv=10i,bytes_sent=2i 1800000000000000000",
        b"mem,host=long,pad=" + b"x" * 2000 + b" used_percent=41 1800000000000000000",
    ]),
    "graphite": b"\n".join([
        b"servers.graphed.cpu 10 1800000000",
        b"servers.graphed.mem 40 1800000000",
        b"hosts.other.cpu.total 12 1800000000",
        b"servers.long.cpu;pad=" + b"x" * 2000 + b" 11 1800000000",
    ]),
}


def other(name: str, value):
    """Another value of setting ``name`` than ``value``, its default."""
    if name in OTHER:
        return OTHER[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1 if value > 0 else value + 1  # a port of -1 (off) on
    if isinstance(value, str):  # a path or an address: free text
        return value + "-other"
    raise AssertionError("say in OTHER what else the server's setting %r may be" % name)


def decoded(decoder, data: bytes) -> tuple:
    tally = Tally()
    samples = decoder.decode(data, NOW, tally)
    return [tuple(sample) for sample in samples], dict(tally.counts)


@pytest.mark.parametrize("setting", [None] + [field.name for field in dataclasses.fields(ServerConfig)])
def test_a_decoder_made_from_its_journaled_settings_decodes_as_the_one_taken_by(setting):
    changed = {} if setting is None else {
        setting: other(setting, getattr(ServerConfig(), setting)), **WITH.get(setting, {})}
    config = dataclasses.replace(ServerConfig(), **changed)
    assert all(getattr(config, name) != getattr(ServerConfig(), name) for name in changed)
    raw = {name: decoder for name, decoder in decoders(config).items()
           if not decoder.journal_samples}
    assert sorted(raw) == sorted(LINES)  # a new format journaled raw needs its lines here
    for name, decoder in raw.items():
        settings = json.loads(json.dumps(decoder.settings()))  # as a settings line holds them
        again = type(decoder).from_settings(settings)
        assert pickle.dumps(again) == pickle.dumps(decoder), (name, changed)
        assert decoded(again, LINES[name]) == decoded(decoder, LINES[name]), (name, changed)


#: The settings the assembler reads that no payload's line keeps, applied to a minute as it is
#: written: journaled once after each checkpoint (an ``#!edge ... virtual`` line), by which a
#: replay writes the minutes the run completed (tests/test_formats_replay_minutes.py); a minute
#: open at a crash may hold samples of two runs, and is written by one list.
WHEN_WRITTEN = {"virtual_interfaces"}


def assembled_by(assembler: MinuteAssembler) -> dict:
    """Everything a fresh assembler was set to: its own plain values, its counters' bound, and
    which interfaces it leaves out."""
    plain = (int, float, str, tuple, type(None))
    return {**{key: value for key, value in vars(assembler).items() if isinstance(value, plain)},
            **{"rates." + key: value for key, value in vars(assembler.rates).items()
               if isinstance(value, plain)},
            "virtual": assembler.virtual.patterns}


@pytest.mark.parametrize("setting", [field.name for field in dataclasses.fields(ServerConfig)])
def test_each_setting_the_minutes_are_assembled_by_is_journaled_with_each_payload(setting):
    """The assembler is made outside the decoders' settings (edge.minute_assembler), and what
    a replay repeats a payload by is what its line keeps (journaling.taken_under).
    --minute-grace was not kept: a replay after it was changed completed minutes the run that
    took them held open, and refused a sample they took as late."""
    changed = {setting: other(setting, getattr(ServerConfig(), setting)),
               **WITH.get(setting, {})}
    made = minute_assembler(dataclasses.replace(ServerConfig(), **changed))
    plain = minute_assembler(ServerConfig())
    moved = assembled_by(made) != assembled_by(plain)
    kept = json.dumps(taken_under(made)) != json.dumps(taken_under(plain))
    if setting in WHEN_WRITTEN:
        assert moved and not kept
    else:
        assert kept == moved, (setting, "reaches the assembler: journal it (taken_under)")


def test_the_lines_here_tell_each_decoder_setting_apart():
    """Without this the comparison of decoded lines above could pass on lines no setting moves."""
    defaults, changed = decoders(ServerConfig()), decoders(ServerConfig(
        influx_vm_tag="vm", graphite_templates=OTHER["graphite_templates"], max_line=1024))
    for name in LINES:
        assert decoded(defaults[name], LINES[name]) != decoded(changed[name], LINES[name])
        for key, value in changed[name].settings().items():
            alone = type(defaults[name]).from_settings({**defaults[name].settings(), key: value})
            if value != defaults[name].settings()[key]:
                assert decoded(alone, LINES[name]) != decoded(defaults[name], LINES[name]), key


def test_an_edge_made_directly_reads_by_every_decoder_it_was_given(tmp_path, caplog):
    """Its formats are all taken to be reading: a replay by other templates than its own is
    "other settings", not payloads of a port turned off (an Edge made directly said that of
    every format: the formats whose port was on were only known to ``build``)."""
    directory = str(tmp_path / "j")
    clock = Clock()
    journal = Journal(clock, directory, Metrics(), fsync="off")
    journal.open()
    edge = Edge(None, Metrics(), MinuteAssembler(grace=30.0), lambda: NOW,
                {"graphite": GraphiteDecoder(parse_templates(["servers.{vm}.{field}"]))})
    edge.journal = EdgeJournal(journal, edge, directory)
    edge.feed(edge.decoders["graphite"], b"servers.graphed.cpu 10 1799999981\n")
    journal.close()
    caplog.set_level(logging.WARNING)
    again = Journal(clock, directory, Metrics(), fsync="off")
    replayed = Edge(None, Metrics(), MinuteAssembler(grace=30.0), lambda: NOW,
                    {"graphite": GraphiteDecoder(parse_templates(["servers.*.{field}.{vm}"]))})
    replayed.journal = EdgeJournal(again, replayed, directory)
    replayed.journal.restore(again.open())
    assert sorted(replayed.assembler.open) == ["graphed"]
    assert ("edge: 1 journaled payload taken under other settings (1 other set of "
            "--graphite-template) replayed by those") in caplog.text
    assert "port is off" not in caplog.text


def test_a_journal_of_the_version_before_is_read_by_the_settings_in_its_payload_lines(tmp_path):
    """It kept --max-line and --influx-vm-tag in each payload's options, and no settings line
    for the line protocol: a restart on this version with other ones reads by those still."""
    directory = str(tmp_path / "j")
    clock = Clock()
    journal = Journal(clock, directory, Metrics(), fsync="off")
    journal.open()
    edge = Edge(None, Metrics(), MinuteAssembler(grace=30.0), lambda: NOW,
                {"influx": InfluxDecoder()})
    edge.journal = EdgeJournal(journal, edge, directory)
    options = {"limits": [300, 0], "bounds": list(edge.assembler.bounds), "max_line": 65536,
               "vm_tag": "host"}
    payload = (b"cpu,cpu=cpu-total,host=tagged,vm=other usage_idle=90 %d\n"
               b"mem,host=tagged,vm=other,pad=%s used_percent=40 %d"
               % (NOW * 10 ** 9 - 19e9, b"x" * 2000, NOW * 10 ** 9 - 19e9))
    journal.append(edge.journal._line(b"in influx %r %s nul %s" % (
        NOW, json.dumps(options, separators=(",", ":")).encode(), payload.replace(b"\n", b"\0"))))
    journal.close()
    again = Journal(clock, directory, Metrics(), fsync="off")
    replayed = Edge(None, Metrics(), MinuteAssembler(grace=30.0), lambda: NOW,
                    {"influx": InfluxDecoder("vm", max_line=1024)})
    replayed.journal = EdgeJournal(again, replayed, directory)
    replayed.journal.restore(again.open())
    assert replayed.journal.unreadable == 0
    assert sorted(replayed.assembler.open) == ["tagged"]
    assert replayed.journal.kept_lines == 1
