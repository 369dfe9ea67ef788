#!/usr/bin/env python3
"""Transactions against the idempotent producer, on one standalone broker (or a 3-node cluster),
in one invocation.

For each round, in turn: the idempotent producer (acks=all, warmed up with one message) sends
--messages records of --size bytes; then the transactional producer sends the same in transactions of 100 records and of
1,000 records (begin, produce, commit_transaction). Reported: msg/s of each (median over
rounds), the ratio of each transactional run to the idempotent run of the same round (median),
and commit_transaction() latency p50/p99 over every commit of the run.

Usage: bench/txn_bench.py [--bin target/release/sluice] [--messages 200000] [--size 100]
       [--rounds 3] [--data-root DIR] [--target standalone|cluster] [--producers 1]
"""
import argparse, multiprocessing as mp, os, shutil, statistics, subprocess, tempfile, time
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from benchlib import start_brokers, stop

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "sluice"))
ap.add_argument("--messages", type=int, default=200_000)
ap.add_argument("--size", type=int, default=100)
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--data-root", default=None)
ap.add_argument("--target", choices=["standalone", "cluster"], default="standalone",
                help="one broker, or a 3-node cluster on this machine (topics with RF 3)")
ap.add_argument("--producers", type=int, default=1,
                help="producers running at once, each in its own process and on its own topic "
                     "(exactly-once pipelines run one transactional producer per task)")
args = ap.parse_args()

tmp = tempfile.mkdtemp(prefix="sluice-txnbench-", dir=args.data_root)
procs, bs = start_brokers(args.bin, args.target, tmp)
RF = 3 if args.target == "cluster" else 1
admin = AdminClient({"bootstrap.servers": bs})
payload = b"x" * args.size
topic_n = 0


def new_topic():
    global topic_n
    topic_n += 1
    name = f"bench-{topic_n}"
    for f in admin.create_topics([NewTopic(name, 1, RF)]).values():
        f.result()
    if args.target == "cluster":
        time.sleep(1)  # the partition's leader is elected
    return name


def idempotent(topic, ready=None):
    p = Producer({"bootstrap.servers": bs, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 5, "batch.num.messages": 10000})
    # Warm up: the producer id and the connection, as init_transactions() does for the other.
    p.produce(topic, payload)
    p.flush(30)
    if ready:
        ready.wait()
    start = time.perf_counter()
    for _ in range(args.messages):
        while True:
            try:
                p.produce(topic, payload)
                break
            except BufferError:
                p.poll(0.001)
    p.flush(120)
    return start, time.perf_counter(), []


def transactional(topic, per_txn, txn_id, ready=None):
    p = Producer({"bootstrap.servers": bs, "transactional.id": txn_id, "linger.ms": 5,
                  "batch.num.messages": 10000})
    p.init_transactions(30)
    commits = []
    if ready:
        ready.wait()
    start = time.perf_counter()
    sent = 0
    while sent < args.messages:
        p.begin_transaction()
        for _ in range(min(per_txn, args.messages - sent)):
            while True:
                try:
                    p.produce(topic, payload)
                    break
                except BufferError:
                    p.poll(0.001)
            sent += 1
        t = time.perf_counter()
        p.commit_transaction(60)
        commits.append((time.perf_counter() - t) * 1000)
    return start, time.perf_counter(), commits


def _worker(fn, fn_args, ready, out):
    out.put(fn(*fn_args, ready))


def concurrently(make_args, fn):
    """Runs `fn` in --producers processes at once (each on its own topic, started together);
    returns (msg/s of all together, commit latencies of all)."""
    if args.producers == 1:
        start, end, lat = fn(*make_args(0))
        return args.messages / (end - start), lat
    ready = mp.Barrier(args.producers)
    out = mp.Queue()
    workers = [mp.Process(target=_worker, args=(fn, make_args(i), ready, out))
               for i in range(args.producers)]
    for w in workers:
        w.start()
    runs = [out.get() for _ in workers]
    for w in workers:
        w.join()
    start = min(r[0] for r in runs)
    end = max(r[1] for r in runs)
    return args.producers * args.messages / (end - start), [x for r in runs for x in r[2]]


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


results = {"idempotent": [], "txn100": [], "txn1000": []}
ratios = {"txn100": [], "txn1000": []}
commits = {"txn100": [], "txn1000": []}
try:
    for r in range(args.rounds):
        subprocess.run(["sync"])
        topics = [new_topic() for _ in range(args.producers)]
        base, _ = concurrently(lambda i: (topics[i],), idempotent)
        results["idempotent"].append(base)
        for name, per in (("txn100", 100), ("txn1000", 1000)):
            subprocess.run(["sync"])
            topics = [new_topic() for _ in range(args.producers)]
            rate, lat = concurrently(lambda i: (topics[i], per, f"bench-{name}-{r}-{i}"),
                                     transactional)
            results[name].append(rate)
            ratios[name].append(rate / base)
            commits[name].extend(lat)
        print(f"round {r}: idempotent {base:,.0f} msg/s, "
              f"txn100 {results['txn100'][-1]:,.0f}, txn1000 {results['txn1000'][-1]:,.0f}", flush=True)
finally:
    stop(procs)
    shutil.rmtree(tmp, ignore_errors=True)

print(f"\n{args.messages} messages of {args.size} B per producer and run, {args.producers} "
      f"producer(s) at once, {args.rounds} rounds, {args.target}, fsync on")
print("| producer | msg/s (median) | ratio to idempotent (median of rounds) | commit p50 | commit p99 |")
print("|---|---|---|---|---|")
print(f"| idempotent, acks=all | {statistics.median(results['idempotent']):,.0f} | 1 | | |")
for name, label in (("txn100", "transactional, 100 per txn"), ("txn1000", "transactional, 1,000 per txn")):
    print(f"| {label} | {statistics.median(results[name]):,.0f} | {statistics.median(ratios[name]):.2f} | "
          f"{pct(commits[name], 0.5):.2f} ms | {pct(commits[name], 0.99):.2f} ms |")
