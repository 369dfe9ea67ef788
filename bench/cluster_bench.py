#!/usr/bin/env python3
"""Cluster-mode cost: the same producer against a standalone broker and a 3-node RF=3 cluster,
in one invocation, so the cluster numbers are read as ratios of the standalone baseline.

For each target: produce --messages 100 B messages (acks=all, idempotent, linger.ms=5) to a
3-partition topic and report msgs/s; then ack latency p50/p99 at a fixed --rate, with acks=all
(idempotent) and with acks=1 (the cluster answers acks=1 once the leader's Raft log has the
entry, before a majority does); the brokers' peak RSS; and, per replica, the bytes it wrote to
storage during the throughput run per byte of the topic's Kafka log it holds after it.
Usage: bench/cluster_bench.py [--bin target/release/sluice] [--messages 300000] [--rate 5000]
"""
import argparse, json, os, re, subprocess, tempfile, time
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from benchlib import rss_kib, start_brokers

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "sluice"))
ap.add_argument("--messages", type=int, default=300_000)
ap.add_argument("--rate", type=int, default=5_000)
ap.add_argument("--rate-seconds", type=float, default=8)
ap.add_argument("--logs", help="copy the cluster nodes' logs into this directory")
args = ap.parse_args()


def start(target, tmp):
    procs, bs = start_brokers(args.bin, target, tmp)
    deadline = time.time() + 30
    admin = AdminClient({"bootstrap.servers": bs})
    while True:
        try:
            fs = admin.create_topics([NewTopic("bench", 3, 3 if target == "cluster" else 1)], request_timeout=10)
            fs["bench"].result(15)
            break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    # Wait for every partition to have a leader.
    while time.time() < deadline:
        md = admin.list_topics("bench", timeout=5)
        t = md.topics.get("bench")
        if t and len(t.partitions) == 3 and all(p.leader >= 0 for p in t.partitions.values()):
            break
        time.sleep(0.2)
    return procs, bs


def producer(bs, acks="all"):
    return Producer({"bootstrap.servers": bs, "acks": acks, "enable.idempotence": acks == "all",
                     "linger.ms": 5, "batch.size": 1_000_000, "queue.buffering.max.messages": 2_000_000})


def throughput(bs, procs, peak):
    p = producer(bs)
    payload = b"x" * 100
    acked = [0]

    def cb(err, _m):
        if err is None:
            acked[0] += 1
    t0 = time.time()
    for i in range(args.messages):
        while True:
            try:
                p.produce("bench", payload, partition=i % 3, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.01)
        if i % 10000 == 0:
            p.poll(0)
            peak[0] = max(peak[0], sum(rss_kib(x.pid) for x in procs))
    p.flush(120)
    dt = time.time() - t0
    peak[0] = max(peak[0], sum(rss_kib(x.pid) for x in procs))
    return acked[0] / dt, acked[0]


def latency(bs, acks):
    p = producer(bs, acks)
    # Warm up: connections and metadata are not what is measured.
    for i in range(300):
        p.produce("bench", b"w" * 100, partition=i % 3)
    p.flush(30)
    lat = []
    interval = 1.0 / args.rate
    t_end = time.time() + args.rate_seconds
    nxt = time.time()
    i = 0
    while time.time() < t_end:
        now = time.time()
        if now < nxt:
            p.poll(min(nxt - now, 0.001))
            continue
        sent = time.time()
        p.produce("bench", b"y" * 100, partition=i % 3,
                  on_delivery=lambda err, m, s=sent: lat.append(time.time() - s) if err is None else None)
        i += 1
        nxt += interval
    p.flush(60)
    lat.sort()
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] * 1000 if lat else float("nan")
    return q(0.5), q(0.99)


def write_bytes(pid):
    """Bytes the process caused to be written to storage (page cache pages it dirtied)."""
    with open(f"/proc/{pid}/io") as f:
        return int(next(line for line in f if line.startswith("write_bytes:")).split()[1])


def log_bytes(data_dir):
    """Bytes of the `bench` topic's Kafka logs (segments and indexes) in a node's data dir."""
    total = 0
    logs = os.path.join(data_dir, "logs")
    for d in os.listdir(logs):
        if d.startswith("bench-"):
            for f in os.listdir(os.path.join(logs, d)):
                total += os.path.getsize(os.path.join(logs, d, f))
    return total


def udp_receive_drops():
    """Datagrams the kernel dropped for full socket buffers, machine-wide (RcvbufErrors in
    /proc/net/snmp): each one the QUIC transport must recover from. None off Linux."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, IndexError, ValueError):
        return None


results = {}
for target in ["standalone", "cluster"]:
    with tempfile.TemporaryDirectory() as tmp:
        procs, bs = start(target, tmp)
        try:
            peak = [0]
            drops = udp_receive_drops()
            written = [write_bytes(x.pid) for x in procs]
            rate, acked = throughput(bs, procs, peak)
            # Disk bytes per byte of log, per replica (the one-write-per-replica target: <= 1.2).
            dirs = [f"{tmp}/s"] if target == "standalone" else [f"{tmp}/d{i + 1}" for i in range(3)]
            amplification = [round((write_bytes(x.pid) - w) / max(1, log_bytes(d)), 2)
                             for x, w, d in zip(procs, written, dirs)]
            p50, p99 = latency(bs, "all")
            p50_1, p99_1 = latency(bs, "1")
            results[target] = {"msgs_per_s": round(rate), "acked": acked, "p50_ms": round(p50, 2),
                               "p99_ms": round(p99, 2), "acks1_p50_ms": round(p50_1, 2),
                               "acks1_p99_ms": round(p99_1, 2),
                               "peak_rss_mib_total": round(peak[0] / 1024, 1),
                               "disk_bytes_per_log_byte": amplification}
            if target == "cluster" and drops is not None:
                results[target]["udp_receive_drops"] = udp_receive_drops() - drops
        finally:
            for x in procs:
                x.terminate()
            for x in procs:
                try:
                    x.wait(10)
                except subprocess.TimeoutExpired:
                    x.kill()
        if target == "cluster":
            # Each node logs at shutdown how late its loop got back to due Raft ticks
            # (heartbeats ride on them; the heartbeat interval is 150 ms).
            late = []
            for i in range(3):
                for line in open(f"{tmp}/n{i + 1}.log", errors="replace"):
                    if "raft loop: lateness" in line:
                        f = dict(kv.split("=", 1) for kv in re.sub(r"\x1b\[[0-9;]*m", "", line).split() if "=" in kv)
                        late.append({k: int(f[k]) for k in ("worst_ms", "over_heartbeat", "over_tick", "passes")})
            results[target]["tick_lateness"] = late
            if args.logs:
                os.makedirs(args.logs, exist_ok=True)
                for i in range(3):
                    subprocess.run(["cp", f"{tmp}/n{i + 1}.log", args.logs], check=True)
    print(json.dumps({target: results[target]}), flush=True)

s, c = results["standalone"], results["cluster"]
print(json.dumps({"cluster_over_standalone": {
    "throughput": round(c["msgs_per_s"] / s["msgs_per_s"], 2),
    "p50": round(c["p50_ms"] / s["p50_ms"], 2),
    "p99": round(c["p99_ms"] / s["p99_ms"], 2),
    "acks1_p50": round(c["acks1_p50_ms"] / s["acks1_p50_ms"], 2)}}))
print(json.dumps({"cluster_acks1_over_acks_all": {
    "p50": round(c["acks1_p50_ms"] / c["p50_ms"], 2),
    "p99": round(c["acks1_p99_ms"] / c["p99_ms"], 2)}}))
