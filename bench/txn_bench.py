#!/usr/bin/env python3
"""Transactions against the idempotent producer, on one standalone broker (or a 3-node cluster),
in one invocation.

For each round, in turn: the idempotent producer (acks=all, warmed up with one message) sends
--messages records of --size bytes; then the transactional producer sends the same in transactions of 100 records and of
1,000 records (begin, produce, commit_transaction). Reported: msg/s of each (median over
rounds), the ratio of each transactional run to the idempotent run of the same round (median),
and commit_transaction() latency p50/p99 over every commit of the run.

--client native runs the same producers on librdkafka's C API (bench/txn_native.c, one thread
per producer, built here with cc against the librdkafka bundled in confluent-kafka; needs the
librdkafka headers, e.g. Debian's librdkafka-dev), so the Python client's own cost per
transaction is out of the measurement.

Usage: bench/txn_bench.py [--bin target/release/sluice] [--messages 200000] [--size 100]
       [--rounds 3] [--data-root DIR] [--target standalone|cluster] [--producers 1]
       [--client python|native]
"""
import argparse, glob, json, multiprocessing as mp, os, shutil, statistics, subprocess, tempfile, time
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
ap.add_argument("--client", choices=["python", "native"], default="python",
                help="confluent-kafka in Python processes, or librdkafka's C API in threads")
args = ap.parse_args()

tmp = tempfile.mkdtemp(prefix="sluice-txnbench-", dir=args.data_root)
procs, bs = start_brokers(args.bin, args.target, tmp)
RF = 3 if args.target == "cluster" else 1
admin = AdminClient({"bootstrap.servers": bs})
payload = b"x" * args.size
topic_n = 0


def new_topics(n):
    """Creates topics PREFIX-0 .. PREFIX-(n-1), one per producer; returns PREFIX."""
    global topic_n
    topic_n += 1
    prefix = f"bench-{topic_n}"
    for f in admin.create_topics([NewTopic(f"{prefix}-{i}", 1, RF) for i in range(n)]).values():
        f.result()
    if args.target == "cluster":
        time.sleep(1)  # the partitions' leaders are elected
    return prefix


def build_native():
    import confluent_kafka
    libs = os.path.join(os.path.dirname(os.path.dirname(confluent_kafka.__file__)), "confluent_kafka.libs")
    lib = glob.glob(os.path.join(libs, "librdkafka*.so*"))[0]
    out = os.path.join(tmp, "txn_native")
    subprocess.run(["cc", "-O2", "-pthread", "-o", out, os.path.join(os.path.dirname(__file__), "txn_native.c"),
                    lib, f"-Wl,-rpath,{libs}"], check=True)
    return out


NATIVE = build_native() if args.client == "native" else None


def native(prefix, per_txn=None, _id=None):
    """The native run of --producers producers on PREFIX-i: (msg/s, commit latencies)."""
    mode = "transactional" if per_txn else "idempotent"
    out = subprocess.run([NATIVE, bs, prefix, mode, str(args.producers), str(args.messages),
                          str(per_txn or 1), str(args.size)], check=True, capture_output=True, text=True)
    r = json.loads(out.stdout)
    return r["msgs_s"], r["commit_ms"]


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
    if NATIVE:
        topic, *rest = make_args(0)
        return native(topic.rsplit("-", 1)[0], *rest)
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
        prefix = new_topics(args.producers)
        base, _ = concurrently(lambda i: (f"{prefix}-{i}",), idempotent)
        results["idempotent"].append(base)
        for name, per in (("txn100", 100), ("txn1000", 1000)):
            subprocess.run(["sync"])
            prefix = new_topics(args.producers)
            rate, lat = concurrently(lambda i: (f"{prefix}-{i}", per, f"bench-{name}-{r}-{i}"),
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
      f"producer(s) at once ({args.client} client), {args.rounds} rounds, {args.target}, fsync on")
print("| producer | msg/s (median) | ratio to idempotent (median of rounds) | commit p50 | commit p99 |")
print("|---|---|---|---|---|")
print(f"| idempotent, acks=all | {statistics.median(results['idempotent']):,.0f} | 1 | | |")
for name, label in (("txn100", "transactional, 100 per txn"), ("txn1000", "transactional, 1,000 per txn")):
    print(f"| {label} | {statistics.median(results[name]):,.0f} | {statistics.median(ratios[name]):.2f} | "
          f"{pct(commits[name], 0.5):.2f} ms | {pct(commits[name], 0.99):.2f} ms |")
