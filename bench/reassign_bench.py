#!/usr/bin/env python3
"""Partition reassignment on a 3-node cluster (127.0.0.1): how fast a new replica is seeded, and
what a move does to a producer's latency on another partition.

Starts three `sluice raft-cluster` nodes, writes --mb MB of 10 KiB records to topic `mv`
(one partition, replication factor 1), then moves it to another node with
AlterPartitionReassignments (kafka-python) and times the move until Metadata lists only the new
replica and no move is listed: MB/s = data moved / time. Meanwhile an acks=all producer
(confluent-kafka) writes 1 KiB records at --rate msg/s to topic `lat` (replication factor 3);
its acknowledgement latency p50/p99 is reported during the move and, in the same invocation,
over the same duration without one (the baseline), with their ratio.

With --throttle MB/s the partition then moves back under Kafka's reassignment throttle (both
*.replication.throttled.rate on every node, both *.replication.throttled.replicas=* on `mv`,
as kafka-reassign-partitions --throttle sets them), measured the same way.

  cargo build --release -p sluice-server
  python3 bench/reassign_bench.py --mb 256 --throttle 40
"""
import argparse, json, os, shutil, signal, socket, subprocess, tempfile, time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import TopicPartition
from kafka.admin import KafkaAdminClient

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default="target/release/sluice")
ap.add_argument("--mb", type=int, default=256)
ap.add_argument("--rate", type=int, default=2000)
ap.add_argument("--throttle", type=float, default=0, help="MB/s for a second, throttled move")
a = ap.parse_args()

work = tempfile.mkdtemp(prefix="sluice-reassign-bench-")
procs = []


def free_ports(n, kind):
    socks = [socket.socket(socket.AF_INET, kind) for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def cleanup(*_):
    for p in procs:
        p.kill()
    if not os.environ.get("KEEP"):
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work}", flush=True)


signal.signal(signal.SIGTERM, cleanup)
try:
    subprocess.run([a.bin, "certs", "--nodes", "1,2,3", "--out", f"{work}/certs"],
                   check=True, capture_output=True)
    raft = free_ports(3, socket.SOCK_DGRAM)
    kafka = free_ports(3, socket.SOCK_STREAM)
    peers = ",".join(f"{i + 1}@127.0.0.1:{raft[i]}" for i in range(3))
    for i in range(3):
        log = open(f"{work}/log{i + 1}", "w")
        procs.append(subprocess.Popen(
            [a.bin, "--node-id", str(i + 1), "--data-dir", f"{work}/d{i + 1}",
             "--kafka-addr", f"127.0.0.1:{kafka[i]}", "raft-cluster", "--peers", peers,
             "--tls-dir", f"{work}/certs"], stderr=log, stdout=log))
    bootstrap = ",".join(f"127.0.0.1:{p}" for p in kafka)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.time() + 30
    while True:
        try:
            for t, f in admin.create_topics([NewTopic("mv", 1, 1), NewTopic("lat", 1, 3)]).items():
                f.result(10)
            break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    time.sleep(2)

    # The data to move.
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 5, "batch.size": 1 << 20})
    value = os.urandom(10240)
    n = a.mb * 1024 * 1024 // len(value)
    for i in range(n):
        while True:
            try:
                p.produce("mv", value, partition=0)
                break
            except BufferError:
                p.poll(0.05)
    p.flush(120)
    md = admin.list_topics("mv", timeout=10)
    home = md.topics["mv"].partitions[0].replicas[0]
    to = 1 if home == 3 else home + 1

    def timed_producer(until):
        """acks=all 1 KiB records to `lat` at --rate until `until(elapsed s, sent)` says
        stop: (latencies in ms, sorted; seconds it ran)."""
        lat = []
        q = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
        payload = b"x" * 1024
        start = time.time()
        sent = 0
        while not until(time.time() - start, sent):
            due = start + sent / a.rate
            if time.time() < due:
                q.poll(min(0.01, max(0.0, due - time.time())))
                continue
            t0 = time.time()
            q.produce("lat", payload, partition=0,
                      on_delivery=lambda err, msg, t0=t0: lat.append((time.time() - t0) * 1000))
            sent += 1
            q.poll(0)
        elapsed = time.time() - start
        q.flush(30)
        return sorted(lat), elapsed

    def pct(v, x):
        return v[min(len(v) - 1, int(len(v) * x))] if v else None

    kp = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    checked = [0]

    def moved(_elapsed, sent):
        """Whether the move is complete (asked every 200 records sent)."""
        if sent < checked[0] + 200:
            return False
        checked[0] = sent
        if kp.list_partition_reassignments():
            return False
        reps = admin.list_topics("mv", timeout=10).topics["mv"].partitions[0].replicas
        return list(reps) == [to]

    def throttle(rate):
        """Sets (bytes/s) or removes (None) the reassignment throttle."""
        from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

        op = AlterConfigOpType.SET if rate else AlterConfigOpType.DELETE
        value = str(int(rate)) if rate else ""
        resources = [ConfigResource("broker", str(n), incremental_configs=[
            ConfigEntry(k, value, incremental_operation=op)
            for k in ("leader.replication.throttled.rate", "follower.replication.throttled.rate")])
            for n in (1, 2, 3)]
        resources.append(ConfigResource("topic", "mv", incremental_configs=[
            ConfigEntry(k, "*", incremental_operation=op)
            for k in ("leader.replication.throttled.replicas",
                      "follower.replication.throttled.replicas")]))
        for r in resources:  # librdkafka takes one broker resource per call
            admin.incremental_alter_configs([r])[r].result(30)

    def move(target):
        """Moves `mv` to `target` while the latency producer writes: (latencies, seconds)."""
        checked[0] = 0
        global to
        to = target
        kp.alter_partition_reassignments({TopicPartition("mv", 0): [target]})
        return timed_producer(moved)

    def summary(lat, seconds):
        return {"move_s": round(seconds, 2), "mb_per_s": round(a.mb / seconds, 1),
                "p50_ms": round(pct(lat, 0.5), 2), "p99_ms": round(pct(lat, 0.99), 2)}

    # The move, while the latency producer writes; then the same without a move (baseline).
    lat, seconds = move(to)
    out = {"mb": a.mb, "unthrottled": summary(lat, seconds)}
    longest = seconds
    if a.throttle:
        throttle(a.throttle * 1e6)
        lat, seconds = move(home)
        throttle(None)
        out["throttled"] = summary(lat, seconds)
        out["throttled"]["limit_mb_per_s"] = a.throttle
        longest = max(longest, seconds)
    base, _ = timed_producer(lambda elapsed, _sent: elapsed >= longest)
    out["baseline"] = {"p50_ms": round(pct(base, 0.5), 2), "p99_ms": round(pct(base, 0.99), 2)}
    for k in ("unthrottled", "throttled"):
        if k in out:
            out[k]["p99_vs_baseline"] = round(out[k]["p99_ms"] / out["baseline"]["p99_ms"], 2)
    print(json.dumps(out), flush=True)
finally:
    cleanup()
