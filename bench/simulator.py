"""Simulator send rate (records/s) over UDP (packed) and TCP (acknowledged), against the server.

    .venv/bin/python bench/simulator.py                  # 100 VMs x 2 days: about 283,000 records
    .venv/bin/python bench/simulator.py --vms 50 --days 1

The simulator is there to load the server, so it must be faster than the
server or it would hide the server's limit.  In one run, on loopback:

1. generate + encode only (no socket), with protocol.encode_records and,
   as the reference, the per-record protocol.encode_record; and the same
   fleet as containers of fractional sizes (``vcpus=1.5``, ``0.25``), with
   the share of the default fleet's records whose size is fractional;
2. the simulator sending to sinks in another process that do almost nothing
   (a TCP peer that acknowledges every ``#!sync`` at once, a UDP socket that
   counts datagrams), streaming (generate, encode, send as it goes: what
   ``vmstats simulate`` does by default) and preloaded (``--preload``:
   everything encoded first, only the sending timed);
3. the real ``vmstats serve`` (tests/serverproc.py) fed by the preloaded
   simulator, which is far faster than the server, so the rate measured is
   the server's: over TCP the acknowledged rate, over UDP (unpaced) the rate
   at which it took records in, and how many it lost;

and prints simulator / server per transport: above 1 means the simulator
does not hide the server's limit.  Everything binds 127.0.0.1.
"""

import argparse
import dataclasses
import multiprocessing
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from serverproc import serve  # noqa: E402

from vmstats.protocol import encode_record, encode_records  # noqa: E402
from vmstats.simulator import fleet as fleets  # noqa: E402
from vmstats.simulator.sender import TcpSender, UdpSender, cut_payloads  # noqa: E402


def fractional(vm):
    """The VM as a container of a fractional size: half a vCPU less, a quarter for one vCPU."""
    return dataclasses.replace(vm, vcpus=vm.vcpus - 0.5 if vm.vcpus > 1 else 0.25)


def batches(vms, days, seed=1, sizes=None):
    """The default fleet's records; ``sizes`` (a SimVM -> SimVM) changes each VM's size."""
    start, stop = fleets.period(time.time(), days)
    fleet = fleets.make_fleet(vms, seed, None, start, stop)
    if sizes:
        fleet = [sizes(vm) for vm in fleet]
    return fleets.generate(fleet, seed, start, stop)


def generate_only(vms, days, encoder, sizes=None):
    began = time.perf_counter()
    count = 0
    for _t, records in batches(vms, days, sizes=sizes):
        count += len(encoder(records))
    return count, time.perf_counter() - began


def fractional_share(vms, days):
    """The share of the default fleet's records whose size is not a whole int (sent ``vcpus=1.5``)."""
    total = fraction = 0
    for _t, records in batches(vms, days):
        total += len(records)
        fraction += sum(1 for r in records if type(r.vcpus) is not int)
    return fraction / total if total else 0.0


def per_record(records):
    return [encode_record(r).encode("utf-8") for r in records]


def send(vms, days, sender, workers=1):
    """Streaming: generate, encode and send as it goes (vmstats simulate's default)."""
    began = time.perf_counter()
    if workers > 1:
        start, stop = fleets.period(time.time(), days)
        fleet = fleets.make_fleet(vms, 1, None, start, stop)
        for pairs in fleets.parallel_payloads(fleet, 1, start, stop, sender.stats.transport, workers):
            for payload, count in pairs:
                sender.send_payload(payload, count)
    else:
        for _t, records in batches(vms, days):
            for payload, count in cut_payloads(encode_records(records), sender.stats.transport):
                sender.send_payload(payload, count)
    stats = sender.close(120)
    return stats, time.perf_counter() - began


def preload(vms, days, transport):
    return [pair for _t, records in batches(vms, days)
            for pair in cut_payloads(encode_records(records), transport)]


def send_preloaded(pairs, sender):
    """Only the sending is timed (vmstats simulate --preload)."""
    began = time.perf_counter()
    for payload, count in pairs:
        sender.send_payload(payload, count)
    stats = sender.close(120)
    return stats, time.perf_counter() - began


# -- sinks, in their own process so they do not share our interpreter ------------------------------

def tcp_sink(ready, stop):
    listener = socket.create_server(("127.0.0.1", 0))
    ready.put(listener.getsockname()[1])
    conn, _ = listener.accept()
    tail = b""
    records = 0  # since the last sync
    with conn:
        while True:
            data = conn.recv(1 << 20)
            if not data:
                return
            data = tail + data
            cut = data.rfind(b"\n") + 1
            data, tail = data[:cut], data[cut:]
            replies = []
            at = data.find(b"#!sync ")
            last = 0
            while at >= 0:
                end = data.index(b"\n", at)
                records += data.count(b"\n", last, at)
                replies.append(b"#!ack %s %d 0\n" % (data[at + 7:end], records))
                records = 0
                last = end + 1
                at = data.find(b"#!sync ", last)
            records += data.count(b"\n", last)
            if replies:
                conn.sendall(b"".join(replies))


def udp_sink(ready, result):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    sock.bind(("127.0.0.1", 0))
    ready.put(sock.getsockname()[1])
    sock.settimeout(2.0)
    records = 0
    try:
        while True:
            records += sock.recv(65536).count(b"\n") + 1
    except TimeoutError:
        pass
    result.put(records)


def with_sink(target, *extra):
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Queue()
    proc = ctx.Process(target=target, args=(ready,) + extra, daemon=True)
    proc.start()
    return proc, ready.get(timeout=10)


def server_udp(pairs, workdir, rates=(25000, 50000, 100000, 200000, 400000)):
    """Paced UDP into the real server at rising rates: the fastest it took without loss.

    Unpaced UDP only measures the kernel dropping datagrams; the server's UDP
    limit is the highest send rate at which it still receives everything.
    """
    ladder = []
    with serve(workdir, "--flush-interval", "1") as server:
        for rate in rates:
            before = server.metrics().get("vmstats_records_received_total", 0)
            stats, spent = send_preloaded(pairs, UdpSender("127.0.0.1", server.udp_port, rate=rate))
            seen, last_change, last = before, time.perf_counter(), -1
            while time.perf_counter() - last_change < 1.0:
                seen = server.metrics().get("vmstats_records_received_total", 0)
                if seen != last:
                    last, last_change = seen, time.perf_counter()
                time.sleep(0.05)
            ladder.append((rate, stats.records / spent, stats.records - int(seen - before)))
    return ladder


def server_tcp(pairs, workdir):
    with serve(workdir, "--flush-interval", "1") as server:
        try:
            return send_preloaded(pairs, TcpSender("127.0.0.1", server.tcp_port, timeout=60))
        except Exception:
            print("server metrics when the send failed:", server.metrics())
            raise


def tcp_to_sink(run):
    proc, port = with_sink(tcp_sink, multiprocessing.get_context("fork").Event())
    stats, spent = run(TcpSender("127.0.0.1", port))
    proc.join(10)
    assert stats.accepted == stats.records, stats
    return stats, spent


def udp_to_sink(run):
    result = multiprocessing.get_context("fork").Queue()
    proc, port = with_sink(udp_sink, result)
    stats, spent = run(UdpSender("127.0.0.1", port, rate=None))
    got = result.get(timeout=30)
    proc.join(10)
    return stats, spent, got


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=100)
    parser.add_argument("--days", type=float, default=2.0)
    args = parser.parse_args()
    vms, days = args.vms, args.days
    rows = []

    n, t_ref = generate_only(vms, days, per_record)
    n, t_batch = generate_only(vms, days, encode_records)
    rows.append(("generate + encode_record (reference)", n, t_ref))
    rows.append(("generate + encode_records", n, t_batch))
    n_frac, t_frac = generate_only(vms, days, encode_records, fractional)
    rows.append(("generate + encode_records, fractional sizes", n_frac, t_frac))
    share = fractional_share(vms, days)

    sim = {}
    for workers in (1, 2):
        stats, spent = tcp_to_sink(lambda sender, w=workers: send(vms, days, sender, w))
        rows.append(("streaming (%d process), TCP to an acking sink" % workers, stats.records, spent))
        sim["tcp", workers] = stats.records / spent
        stats, spent, got = udp_to_sink(lambda sender, w=workers: send(vms, days, sender, w))
        rows.append(("streaming (%d process), UDP packed to a sink" % workers, stats.records, spent))
        sim["udp", workers] = stats.records / spent

    pre = {}
    loads = {transport: preload(vms, days, transport) for transport in ("tcp", "udp")}
    stats, spent = tcp_to_sink(lambda sender: send_preloaded(loads["tcp"], sender))
    rows.append(("preloaded, TCP to an acking sink", stats.records, spent))
    pre["tcp"] = stats.records / spent
    stats, spent, got = udp_to_sink(lambda sender: send_preloaded(loads["udp"], sender))
    rows.append(("preloaded, UDP packed to a sink (got %d)" % got, stats.records, spent))
    pre["udp"] = stats.records / spent

    with tempfile.TemporaryDirectory() as tmp:
        stats, spent = server_tcp(loads["tcp"], Path(tmp) / "tcp")
        assert stats.accepted == stats.records, stats
        rows.append(("server: preloaded TCP into vmstats serve (acked)", stats.records, spent))
        srv = {"tcp": stats.records / spent}
        ladder = server_udp(loads["udp"], Path(tmp) / "udp")
    lossless = [achieved for _rate, achieved, lost in ladder if lost == 0]
    srv["udp"] = max(lossless) if lossless else float("nan")

    print("%d VMs x %g days = %d records per run\n" % (vms, days, n))
    print("%-52s %10s %8s %12s" % ("step", "records", "seconds", "records/s"))
    for name, count, seconds in rows:
        print("%-52s %10d %8.2f %12.0f" % (name, count, seconds, count / seconds))
    print("\nserver over UDP, paced: %s" % "; ".join(
        "%.0fk/s sent, %d lost" % (achieved / 1000, lost) for _rate, achieved, lost in ladder))
    print("server limit: TCP %.0f records/s, UDP %.0f records/s (fastest lossless pace)"
          % (srv["tcp"], srv["udp"]))
    print("\nencode_records vs encode_record (whole simulator): %.2fx" % (t_ref / t_batch))
    print("fractional sizes vs whole (whole simulator): %.2fx the time; records of the default fleet "
          "with a fractional size: %.1f%%" % ((t_frac / n_frac) / (t_batch / n), 100 * share))
    for transport in ("tcp", "udp"):
        print("%s simulator / server: streaming %.2fx (2 processes: %.2fx), preloaded %.2fx"
              % (transport.upper(), sim[transport, 1] / srv[transport], sim[transport, 2] / srv[transport],
                 pre[transport] / srv[transport]))


if __name__ == "__main__":
    main()
