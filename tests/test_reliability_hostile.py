"""Hostile and broken input against the real server: it never crashes or stalls, every valid
record lands, every bad one is counted by the cause the protocol's decoder gives it."""

import random
import socket
import threading
import time
from collections import Counter

from serverproc import cpu_seconds, parsers_of, serve
from test_reliability_faults import report
from test_reliability_journal import raw_rows
from test_server_tcp import read_reply
from test_server_udp import line, now

from vmstats import protocol
from vmstats.protocol import Record

LOOPBACK = "127.0.0.1"
IDLE_CLOSED = 'vmstats_connections_idle_closed_total{port="tcp"}'


def rss_kib(pid: int) -> int:
    with open("/proc/%d/status" % pid) as status:
        return int(status.read().split("VmRSS:")[1].split()[0])


# -- making bad input ----------------------------------------------------------------------------
_NASTY = [b"nan", b"inf", b"-1", b"1e999", b"abc", b"", b"99999999999999999999", b"0x10", b"1,",
          b"=", b" ", b"\xff\xfe", b"\x00", b"\r", b"'", b"..", b"/", b"-inf", b"1i", b"true"]


def random_line(rng: random.Random) -> bytes:
    """Random bytes, one line: never empty, never a comment or control line."""
    body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300))).replace(b"\n", b"")
    return bytes([rng.choice(b"abcvmsXYZ019=,")]) + body


def mutated_line(rng: random.Random, t: int) -> bytes:
    """A well-formed record with one or two random edits (it may happen to stay valid)."""
    record = line(Record(vm="10.52.%d.%d" % (rng.randrange(4), rng.randrange(250)),
                         ts=t + rng.randrange(-86400, 0), cpu=rng.uniform(0, 100),
                         mem=rng.uniform(0, 100), disk_r=float(rng.randrange(10 ** 6)),
                         vcpus=rng.randrange(1, 64), seq=rng.randrange(10 ** 6)))
    for _ in range(rng.randrange(1, 3)):
        where = rng.randrange(len(record))
        edit = rng.randrange(7)
        if edit == 0:
            record = record[:where] + bytes([rng.randrange(32, 127)]) + record[where + 1:]
        elif edit == 1:
            record = record[:where] + record[where + 1:]
        elif edit == 2:
            record = record[:where] + rng.choice(_NASTY) + record[where:]
        elif edit == 3:  # a value replaced by something nasty
            start = record.find(b"=", where)
            end = record.find(b",", start + 1)
            if start > 0 and end > 0:
                record = record[:start + 1] + rng.choice(_NASTY) + record[end:]
        elif edit == 4:
            record = record.replace(b"vm=", rng.choice([b"vm=../../x", b"vm=", b"host=", b"vm=a b"]))
        elif edit == 5:
            record = record.rsplit(b" ", 1)[0] + b" %d" % rng.choice([t + 86400, 0, -5, 10 ** 19])
        else:
            record = rng.choice([b"cpu", b"vmstatz", b"vmstats,vm=1.2.3.4"]) + record[7:]
    record = record.replace(b"\n", b"")
    return record if record and record[:1] != b"#" and record.strip() else b"x" + record


def verdicts(lines: list, decoder: protocol.Decoder, keep: set | None = None) -> Counter:
    """What the protocol's decoder says of each line: a reject reason, or ``accepted`` (whose
    (vm, ts) go into ``keep``)."""
    counts: Counter = Counter()
    for raw in lines:
        try:
            record = decoder.decode_line(raw)
            counts["accepted"] += 1
            if keep is not None:
                keep.add((record.vm, record.ts))
        except protocol.DecodeError as exc:
            counts[exc.reason] += 1
    return counts


def rejected_by_cause(metrics: dict) -> Counter:
    return Counter({key.split('"')[1]: int(value) for key, value in metrics.items()
                    if key.startswith("vmstats_rejected_total{") and value})


# -- the blaster ---------------------------------------------------------------------------------
def test_random_and_mutated_input_over_udp_and_tcp_while_valid_traffic_flows(tmp_path):
    rng = random.Random(66)
    t = now()
    duration = 4.0
    decoder = protocol.Decoder()
    junk_udp: list = []
    junk_tcp: list = []
    valid_udp: list = []
    acked: list = []
    latencies: list = []
    failures: list = []

    with serve(tmp_path, "--flush-interval", "0.5") as server:
        deadline = time.monotonic() + duration

        def udp_blaster():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                i = 0
                while time.monotonic() < deadline:
                    for _ in range(50):
                        bad = random_line(rng) if i % 2 else mutated_line(rng, t)
                        junk_udp.append(bad)
                        sock.sendto(bad, (LOOPBACK, server.udp_port))
                        if i % 5 == 0:  # valid records between the junk, as datagrams too
                            record = Record(vm="10.50.1.%d" % (i % 40), ts=t - 86400 + i, cpu=1.0,
                                            mem=2.0)
                            valid_udp.append(record)
                            sock.sendto(line(record), (LOOPBACK, server.udp_port))
                        i += 1
                    time.sleep(0.005)

        def tcp_blaster():
            try:
                with socket.create_connection((LOOPBACK, server.tcp_port), timeout=10) as sock:
                    n = 0
                    while time.monotonic() < deadline:
                        batch = [random_line(rng) if k % 2 else mutated_line(rng, t)
                                 for k in range(100)]
                        payload = b"\n".join(batch) + b"\n"
                        # ... cut at random places: the stream's segmentation is hostile too
                        cuts = sorted(rng.sample(range(len(payload)), 5))
                        for a, b in zip([0] + cuts, cuts + [len(payload)], strict=True):
                            sock.sendall(payload[a:b])
                        sock.sendall(b"#!sync j%d\n" % n)
                        reply = read_reply(sock)
                        expected = verdicts(batch, decoder)
                        if reply != b"#!ack j%d %d %d\n" % (n, expected["accepted"],
                                                             len(batch) - expected["accepted"]):
                            failures.append((reply, expected))
                        junk_tcp.extend(batch)
                        n += 1
            except OSError as exc:
                failures.append(exc)

        def valid_tcp():
            try:
                with socket.create_connection((LOOPBACK, server.tcp_port), timeout=10) as sock:
                    n = 0
                    while time.monotonic() < deadline:
                        batch = [Record(vm="10.50.0.%d" % (k % 20), ts=t - 30 * 86400 + n * 50 + k,
                                        cpu=3.0, mem=4.0) for k in range(50)]
                        sock.sendall(b"\n".join(line(r) for r in batch) + b"\n#!sync v%d\n" % n)
                        if read_reply(sock) != b"#!ack v%d 50 0\n" % n:
                            failures.append("valid batch %d not acknowledged" % n)
                        acked.extend(batch)
                        n += 1
            except OSError as exc:
                failures.append(exc)

        threads = [threading.Thread(target=f) for f in (udp_blaster, tcp_blaster, valid_tcp)]
        for thread in threads:
            thread.start()
        while time.monotonic() < deadline:  # never stalls: /metrics answers throughout
            started = time.monotonic()
            server.metrics()
            latencies.append(time.monotonic() - started)
            time.sleep(0.2)
        for thread in threads:
            thread.join(30)
        junk_kept: set = set()
        udp_expected = verdicts(junk_udp, decoder, junk_kept)
        total_lines = len(junk_udp) + len(valid_udp) + len(junk_tcp) + len(acked)
        metrics = server.wait_received(total_lines, timeout=20)
        server.wait_for(lambda s: s.metrics()["vmstats_buffered_records"] == 0)
    assert server.returncode == 0, server.output
    assert not failures, failures[:3]
    expected = udp_expected + verdicts(junk_tcp, decoder, junk_kept)
    accepted_junk = expected.pop("accepted", 0)
    assert rejected_by_cause(metrics) == expected  # every bad line, by the decoder's cause
    assert metrics["vmstats_records_received_total"] == accepted_junk + len(valid_udp) + len(acked)
    logged = raw_rows(tmp_path / "data")
    valid = Counter((r.vm, r.ts) for r in valid_udp + acked)
    # Every valid record is logged once, and so is junk that the decoder finds valid (an edit
    # that kept the record well-formed: it may even turn a 10.52.* id into a 10.50.* one).
    # (Junk may repeat a (vm, ts) with other values: a correction, logged again by design.)
    assert set(logged) == set(valid) | junk_kept
    assert all(logged[key] == 1 for key in valid)
    report("blaster", seconds=duration, udp_junk=len(junk_udp), tcp_junk=len(junk_tcp),
           valid_udp=len(valid_udp), valid_tcp_acked=len(acked), junk_that_stayed_valid=accepted_junk,
           rejected=sum(expected.values()), causes=len(expected),
           max_metrics_latency_ms=round(max(latencies) * 1000), valid_lost=0)


# -- TCP abuse -----------------------------------------------------------------------------------
def closed_by_server(sock) -> bool:
    sock.settimeout(5)
    try:
        while sock.recv(65536):
            pass  # replies the server had sent before it closed
    except ConnectionResetError:
        pass  # aborted: the idle timeout does not wait for an unread reply to drain
    return True


def test_idle_crowds_endless_lines_and_slow_readers_are_bounded(tmp_path):
    t = now() - 3600
    args = ("--flush-interval", "0.5", "--max-line", "4096", "--idle-timeout", "2s",
            "--max-connections", "400")
    with serve(tmp_path, *args) as server:
        base_rss = rss_kib(server.pid)
        idle = [server.tcp() for _ in range(300)]  # a crowd that connects and says nothing
        server.wait_for(lambda s: s.metrics()['vmstats_connections_total{port="tcp"}'] >= 300)

        with server.tcp() as endless:  # one line that never ends: 8 MiB without a newline
            chunk = b"v" * 65536
            for _ in range(128):
                endless.sendall(chunk)
            # Cut off once (counted); the connection still works after the newline.
            endless.sendall(b"\n" + line(Record(vm="10.53.0.2", ts=t, cpu=1.0, mem=2.0))
                            + b"\n#!sync e\n")
            assert read_reply(endless) == b"#!ack e 1 1\n"

        slow = server.tcp()  # sends syncs as fast as it can, never reads a reply
        slow.setblocking(False)
        syncs = b"".join(b"#!sync s%d\n" % i for i in range(20_000))
        pushed = 0
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            try:
                pushed += slow.send(syncs[pushed % len(syncs):])
            except BlockingIOError:
                time.sleep(0.01)
        # Meanwhile an honest client is served normally.
        with server.tcp() as honest:
            batch = [Record(vm="10.53.0.1", ts=t + 60 * i, cpu=1.0, mem=2.0) for i in range(50)]
            honest.sendall(b"\n".join(line(r) for r in batch) + b"\n#!sync h\n")
            assert read_reply(honest) == b"#!ack h 50 0\n"
        grown = rss_kib(server.pid) - base_rss
        # The crowd and the reader that stopped reading are all closed by the idle timeout.
        metrics = server.wait_metrics(lambda m: m[IDLE_CLOSED] >= 301, timeout=10)
        # ... including the one that never reads its replies (aborted after a grace period).
        server.wait_for(lambda s: s.metrics()['vmstats_connections_open{port="tcp"}'] == 0, timeout=15)
        assert all(closed_by_server(sock) for sock in idle + [slow])
        for sock in idle + [slow]:
            sock.close()
        server.wait_for(lambda s: s.metrics()["vmstats_buffered_records"] == 0)
    assert server.returncode == 0, server.output
    assert metrics['vmstats_rejected_total{reason="too_long"}'] == 1
    report("tcp_abuse", idle_connections=300, idle_closed=int(metrics[IDLE_CLOSED]),
           endless_line_mib=8, slow_reader_bytes_pushed=pushed, rss_growth_mib=round(grown / 1024, 1))
    assert grown < 32 * 1024  # neither the 8 MiB line nor the unread replies are held
    assert raw_rows(tmp_path / "data") == Counter(
        [("10.53.0.1", t + 60 * i) for i in range(50)] + [("10.53.0.2", t)])


def test_a_spelling_invented_per_line_costs_the_parsers_what_a_bad_line_costs(tmp_path):
    """Tag names are free: a sender that gives each line a new one would make a parser
    compile a regex per line (~0.5 ms, some 15 s of CPU for these 30,000 lines).  Beyond
    the build budget the decoder reads them, and an honest record still lands."""
    t = now()
    flood = [b"vmstats,vm=10.54.0.1,k%d=x cpu=1.5,mem=2 %d" % (i, t + 86400) for i in range(30_000)]
    with serve(tmp_path, "--flush-interval", "0.5", "--parsers", "2") as server:
        pids = [server.pid] + parsers_of(server.pid)
        assert len(pids) == 3
        spent = cpu_seconds(pids)
        with server.tcp(timeout=120) as sock:
            for start in range(0, len(flood), 1000):
                sock.sendall(b"\n".join(flood[start:start + 1000]) + b"\n")
            sock.sendall(b"#!sync f\n")
            assert read_reply(sock) == b"#!ack f 0 30000\n"
        spent = cpu_seconds(pids) - spent
        honest = Record(vm="10.54.0.2", ts=t - 60, cpu=1.0, mem=2.0)
        assert server.send_synced(line(honest) + b"\n") == ["#!ack", "all", "1", "0"]
        metrics = server.metrics()
        server.wait_for(lambda s: s.metrics()["vmstats_buffered_records"] == 0)
    assert server.returncode == 0, server.output
    report("invented_spellings", lines=len(flood), cpu_seconds=round(spent, 2))
    assert metrics['vmstats_rejected_total{reason="future_timestamp"}'] == len(flood)
    assert raw_rows(tmp_path / "data") == Counter([("10.54.0.2", t - 60)])
    assert spent < 5.0


def settled(server) -> dict:
    """/metrics once the counters stop moving (the socket's backlog is processed)."""
    last = None
    while True:
        metrics = server.metrics()
        seen = (metrics["vmstats_records_received_total"], metrics["vmstats_datagrams_received_total"])
        if seen == last:
            return metrics
        last = seen
        time.sleep(0.5)


# -- overload ------------------------------------------------------------------------------------
def test_overload_above_capacity_stays_under_the_memory_cap_counts_drops_and_recovers(tmp_path):
    """Two senders replay prebuilt packed datagrams flat out (several times what one core can
    parse), against a global cap of 20,000 held records (reaching it flushes early)."""
    t = now() - 10 * 86400
    cap = 20_000
    per_sender = 20_000  # datagrams of 12 records: 480,000 distinct records in all
    template = b"vmstats,vm=10.54.%d.%d cpu=1,mem=2,seq=%di %d"
    floods = [[b"\n".join(template % (index, j % 200, j // 200 * 12 + k, t + j // 200 * 12 + k)
                          for k in range(12)) for j in range(per_sender)] for index in range(2)]
    with serve(tmp_path, "--flush-interval", "30s", "--max-buffered", str(cap),
               "--max-per-vm", "5000") as server:
        base_rss = rss_kib(server.pid)
        peak = [base_rss]
        elapsed = [0.0, 0.0]

        def flood(index):
            started = time.monotonic()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for datagram in floods[index]:
                    try:
                        sock.sendto(datagram, (LOOPBACK, server.udp_port))
                    except OSError:
                        pass  # the kernel may refuse too: that is a drop the seq numbers show
            elapsed[index] = time.monotonic() - started

        threads = [threading.Thread(target=flood, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            peak.append(rss_kib(server.pid))
            time.sleep(0.05)
        under_load = settled(server)
        # A flush is counted once its records are written, which on a loaded host may end
        # seconds after the last datagram was read: still well inside the 30 s interval.
        flushed = server.wait_metrics(lambda m: m["vmstats_flushes_total"] >= 1, timeout=15)
        peak.append(rss_kib(server.pid))
        # Recovery: an acknowledged batch once the flood is over.
        recovery = [Record(vm="10.54.9.1", ts=t + i, cpu=1.0, mem=2.0) for i in range(100)]
        with server.tcp() as sock:
            for _attempt in range(50):  # busy until the early flush made room: resend
                sock.sendall(b"\n".join(line(r) for r in recovery) + b"\n#!sync r\n")
                reply = read_reply(sock)
                if not reply.startswith(b"#!nak"):
                    break
                time.sleep(0.2)
            assert reply.startswith(b"#!ack r 100 0")
    assert server.returncode == 0, server.output
    sent = 2 * per_sender * 12
    received = int(under_load["vmstats_records_received_total"])
    dropped = int(under_load['vmstats_dropped_total{cause="global_cap"}']
                  + under_load['vmstats_dropped_total{cause="per_vm_cap"}'])
    lost_in_kernel = sent - received - dropped
    logged = raw_rows(tmp_path / "data")
    growth_mib = (max(peak) - base_rss) / 1024
    report("overload", offered_rec_per_s=round(sent / max(elapsed)), sent=sent, received=received,
           dropped_at_cap=dropped, lost_before_the_server=lost_in_kernel,
           estimated_by_seq=int(under_load["vmstats_estimated_lost_records_total"]),
           cap_records=cap, early_flushes=int(flushed["vmstats_flushes_total"]),
           peak_rss_growth_mib=round(growth_mib, 1),
           logged_rows=sum(logged.values()))
    assert sent / max(elapsed) > 200_000  # above what the server parses on this machine
    assert dropped + lost_in_kernel > 0
    assert flushed["vmstats_flushes_total"] >= 1  # the cap, not the 30 s interval, flushed
    assert flushed["vmstats_flush_seconds_total"] > 0
    # 20,000 held records cost ~4 MiB; a flush in flight may hold as many again.
    assert growth_mib < 40
    assert all(logged[(r.vm, r.ts)] == 1 for r in recovery)
    flood_rows = sum(n for key, n in logged.items() if not key[0].startswith("10.54.9."))
    assert flood_rows == received  # every record the server took is logged, exactly once


# -- signatures ----------------------------------------------------------------------------------
def test_forged_replayed_and_stale_frames_are_rejected_over_tcp_and_udp(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("k1 first-secret\n")
    t = now() - 600
    good = b"\n".join(line(Record(vm="10.55.0.1", ts=t + 60 * i, cpu=1.0, mem=2.0))
                      for i in range(5)) + b"\n"
    evil = line(Record(vm="10.55.6.6", ts=t, cpu=66.0, mem=66.0)) + b"\n"
    signed = protocol.sign_payload("k1", "first-secret", good)
    with serve(tmp_path, "--flush-interval", "0.3", "--auth-keys", str(keys)) as server:
        with server.tcp() as sock:
            sock.sendall(signed + b"#!sync ok\n")
            assert read_reply(sock) == b"#!ack ok 5 0\n"
            attacks = {
                "sig_replay": signed,
                "sig_bad": protocol.sign_payload("k1", "guessed", evil),
                "sig_unknown_key": protocol.sign_payload("k7", "first-secret", evil),
                "sig_stale": protocol.sign_payload("k1", "first-secret", evil,
                                                   now=time.time() - 7200),
                "sig_missing": evil,
            }
            for n, frame in enumerate(attacks.values()):
                sock.sendall(frame + b"#!sync a%d\n" % n)
                assert read_reply(sock) == b"#!nak a%d auth\n" % n
        # A captured UDP frame replayed 500 times: counted each time, logged never again.
        captured = protocol.sign_payload("k1", "first-secret",
                                         line(Record(vm="10.55.0.2", ts=t, cpu=1.0, mem=2.0)))
        server.send_udp(*[captured] * 501)
        metrics = server.wait_metrics(lambda m: m['vmstats_rejected_total{reason="sig_replay"}'] >= 501)
        server.wait_for(lambda s: s.metrics()["vmstats_buffered_records"] == 0)
    assert server.returncode == 0
    rejected = rejected_by_cause(metrics)
    assert rejected == Counter({"sig_replay": 501, "sig_bad": 1, "sig_unknown_key": 1,
                                "sig_stale": 1, "sig_missing": 1})
    logged = raw_rows(tmp_path / "data")
    assert set(logged) == {("10.55.0.1", t + 60 * i) for i in range(5)} | {("10.55.0.2", t)}
    report("signatures", forged_or_stale_tcp=4, unsigned_tcp=1, udp_replays=500,
           rejected=sum(rejected.values()), accepted=6, logged_rows=sum(logged.values()))
