#!/usr/bin/env python3
"""Durability check for reused Raft log files: a 3-node cluster (RF 3) takes enough acks=all
writes that every node has written over freed write-ahead log files, then all three nodes are
killed with SIGKILL at once and started again while the producer keeps going; at the end every
acknowledged value must be read back.

Files are reused only after about five 64 MiB files per node, so the kill comes after
--kill-at acknowledged 100 B values (default 5,000,000, about 9 files). Prints the first node's
WAL files (name, inode: a file whose inode is older than its predecessors' was reused) before
the kill, the counts, and any torn-tail warning or panic from the nodes' logs. Exits 1 if an
acknowledged value is missing.

Usage: bench/kill_after_wal_reuse.py [--bin target/release/sluice] [--messages 6000000]
                                     [--kill-at 5000000]
"""
import argparse, os, shutil, subprocess, sys, tempfile, threading, time
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, os.path.dirname(__file__))
from benchlib import kill9_and_restart, start_brokers, stop  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "sluice"))
ap.add_argument("--messages", type=int, default=6_000_000)
ap.add_argument("--kill-at", type=int, default=5_000_000)
args = ap.parse_args()

tmp = tempfile.mkdtemp(prefix="sluice-reusekill-")
procs, bs = start_brokers(args.bin, "cluster", tmp)
missing = None
try:
    admin = AdminClient({"bootstrap.servers": bs})
    admin.create_topics([NewTopic("t", 3, 3)])["t"].result(20)
    time.sleep(2)
    acked, lock = set(), threading.Lock()

    def delivered(err, m):
        if err is None:
            with lock:
                acked.add(m.value())

    p = Producer({"bootstrap.servers": bs, "acks": "all", "enable.idempotence": True, "linger.ms": 5,
                  "batch.size": 1_000_000, "queue.buffering.max.messages": 2_000_000,
                  "message.timeout.ms": 120_000})
    killed = False
    for i in range(args.messages):
        while True:
            try:
                p.produce("t", b"%099d" % i, partition=i % 3, on_delivery=delivered)
                break
            except BufferError:
                p.poll(0.01)
        if i % 10_000 == 0:
            p.poll(0)
            if not killed and len(acked) >= args.kill_at:
                wal = f"{tmp}/d1/raft/wal"
                print("node 1 WAL before the kill:",
                      sorted((f, os.stat(f"{wal}/{f}").st_ino) for f in os.listdir(wal)), flush=True)
                print(f"kill -9 of all three nodes at {len(acked)} acknowledged", flush=True)
                procs = kill9_and_restart(procs)
                killed = True
    p.flush(300)
    c = Consumer({"bootstrap.servers": bs, "group.id": "check", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.assign([TopicPartition("t", i, 0) for i in range(3)])
    seen, last = set(), time.time()
    while time.time() - last < 15:
        for m in c.consume(10_000, 1.0):
            if m.error() is None:
                seen.add(m.value())
                last = time.time()
    c.close()
    missing = acked - seen
    print(f"acknowledged {len(acked)} of {args.messages}; read back {len(seen)} distinct; "
          f"acknowledged and missing: {len(missing)}", flush=True)
    subprocess.run(f"grep -h -i 'torn or corrupt raft log\\|panicked' {tmp}/n*.log | head -5", shell=True)
finally:
    stop(procs)
    shutil.rmtree(tmp, ignore_errors=True)
sys.exit(0 if missing == set() else 1)
