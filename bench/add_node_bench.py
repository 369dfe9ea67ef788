#!/usr/bin/env python3
"""Time to add a node holding N GiB to a running 3-node cluster (127.0.0.1).

Starts three `sluice raft-cluster` nodes, writes --gib GiB of 10 KiB records to topic `big`
(--partitions partitions, replication factor 3), then adds node 4: it is started with --join,
`sluice cluster add-node` records it and waits until it votes in `__meta` (the join), and
every partition of `big` moves from node 3 to node 4 (AlterPartitionReassignments, kafka-python,
all at once), timed until Metadata lists node 4 in place of node 3 everywhere and no move is
left. Reported: the join time, the time until node 4 holds the data, and the catch-up rate
(data copied / time). The copy goes over loopback on this machine, so it says what the node's
own work (snapshot install, segment writes, fsync) costs.

  cargo build --release -p sluice-server
  python3 bench/add_node_bench.py --gib 1
"""
import argparse, json, os, shutil, signal, socket, subprocess, tempfile, time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import TopicPartition
from kafka.admin import KafkaAdminClient

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default="target/release/sluice")
ap.add_argument("--gib", type=float, default=1.0)
ap.add_argument("--partitions", type=int, default=4)
a = ap.parse_args()

work = tempfile.mkdtemp(prefix="sluice-add-node-bench-")
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


def start(i, raft, kafka, members):
    log = open(f"{work}/log{i}", "w")
    procs.append(subprocess.Popen(
        [a.bin, "--node-id", str(i), "--data-dir", f"{work}/d{i}",
         "--kafka-addr", f"127.0.0.1:{kafka}", "raft-cluster", "--raft-addr",
         f"127.0.0.1:{raft}", *members, "--tls-dir", f"{work}/certs"], stderr=log, stdout=log))


signal.signal(signal.SIGTERM, cleanup)
try:
    subprocess.run([a.bin, "certs", "--nodes", "1,2,3", "--out", f"{work}/certs"],
                   check=True, capture_output=True)
    raft = free_ports(4, socket.SOCK_DGRAM)
    kafka = free_ports(4, socket.SOCK_STREAM)
    peers = ",".join(f"{i + 1}@127.0.0.1:{raft[i]}" for i in range(3))
    for i in range(3):
        start(i + 1, raft[i], kafka[i], ["--peers", peers])
    bootstrap = ",".join(f"127.0.0.1:{p}" for p in kafka[:3])
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.time() + 30
    while True:
        try:
            for _, f in admin.create_topics([NewTopic("big", a.partitions, 3)]).items():
                f.result(10)
            break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    time.sleep(2)

    # The data the new node will hold.
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 5, "batch.size": 1 << 20})
    value = os.urandom(10240)
    n = int(a.gib * (1 << 30)) // len(value)
    fill_start = time.time()
    for i in range(n):
        while True:
            try:
                p.produce("big", value, partition=i % a.partitions)
                break
            except BufferError:
                p.poll(0.05)
    p.flush(600)
    fill_s = time.time() - fill_start
    mb = n * len(value) / 1e6

    # Node 4 joins.
    subprocess.run([a.bin, "certs", "--nodes", "4", "--out", f"{work}/certs"],
                   check=True, capture_output=True)
    t0 = time.time()
    start(4, raft[3], kafka[3], ["--join", f"127.0.0.1:{raft[0]}"])
    subprocess.run([a.bin, "cluster", "add-node", f"4@127.0.0.1:{raft[3]}", "--bootstrap",
                    bootstrap, "--wait-ms", "60000"], check=True, capture_output=True)
    join_s = time.time() - t0

    # Every partition moves from node 3 to node 4.
    kp = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    md = admin.list_topics("big", timeout=10).topics["big"].partitions
    target = {pid: [4 if r == 3 else r for r in md[pid].replicas] for pid in md}
    t1 = time.time()
    kp.alter_partition_reassignments(
        {TopicPartition("big", pid): reps for pid, reps in target.items()})
    while True:
        if not kp.list_partition_reassignments():
            md = admin.list_topics("big", timeout=10).topics["big"].partitions
            if all(list(md[pid].replicas) == target[pid] for pid in md):
                break
        time.sleep(0.2)
    copy_s = time.time() - t1
    print(json.dumps({
        "gib": a.gib, "partitions": a.partitions, "mb": round(mb, 1),
        "fill_mb_per_s": round(mb / fill_s, 1),
        "join_s": round(join_s, 2), "copy_s": round(copy_s, 2),
        "add_node_total_s": round(join_s + copy_s, 2),
        "catch_up_mb_per_s": round(mb / copy_s, 1),
        "catch_up_vs_fill": round((mb / copy_s) / (mb / fill_s), 2),
    }), flush=True)
finally:
    cleanup()
