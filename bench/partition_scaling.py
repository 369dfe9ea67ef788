#!/usr/bin/env python3
"""What partitions cost a cluster: for each partition count, a 3-node RF=3 cluster and a
standalone broker (the baseline, in the same invocation) are started fresh and measured:

- readiness: seconds from CreateTopics until Metadata shows a leader for every partition;
- idle CPU: the nodes' CPU (all three together, % of one core) over --idle-seconds with nothing
  produced, after the topic settled;
- RSS: the largest resident set of any node after the produce run;
- produce: --messages 100 B messages spread over every partition (idempotent, acks=all,
  linger.ms=5), msg/s, and the cluster / standalone ratio;
- restart (cluster only): every node killed with SIGKILL and started again at once; seconds
  until one acks=all message to every partition has been acknowledged.

Usage: bench/partition_scaling.py [--bin target/release/sluice] [--partitions 3,1000,3000,10000]
       [--messages 300000] [--idle-seconds 10] [--skip-standalone]
Prints one JSON line per partition count and a Markdown table at the end.
"""
import argparse, json, os, shutil, sys, tempfile, time
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from benchlib import cpu_seconds, kill9_and_restart, rss_kib, start_brokers, stop

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "sluice"))
ap.add_argument("--partitions", default="3,1000,3000,10000")
ap.add_argument("--messages", type=int, default=300_000)
ap.add_argument("--idle-seconds", type=float, default=10)
ap.add_argument("--skip-standalone", action="store_true")
args = ap.parse_args()

def leaders_ready(admin, topic, n):
    try:
        t = admin.list_topics(topic, timeout=5).topics.get(topic)
    except Exception:
        return False
    if t is None or t.error is not None or len(t.partitions) != n:
        return False
    return all(p.leader >= 0 and p.error is None for p in t.partitions.values())


def produce(bs, topic, n_parts):
    p = Producer({"bootstrap.servers": bs, "acks": "all", "enable.idempotence": True, "linger.ms": 5,
                  "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 1_000_000})
    payload = b"x" * 100
    t0 = time.perf_counter()
    errors = [0]

    def cb(err, _msg):
        if err:
            errors[0] += 1
    for i in range(args.messages):
        while True:
            try:
                p.produce(topic, payload, partition=i % n_parts, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.01)
    left = p.flush(120)
    el = time.perf_counter() - t0
    assert left == 0 and errors[0] == 0, f"{left} undelivered, {errors[0]} delivery errors"
    return args.messages / el


def every_partition_writable(bs, topic, n_parts, timeout_s=300):
    """Seconds until one acks=all message to each partition is acknowledged."""
    t0 = time.perf_counter()
    p = Producer({"bootstrap.servers": bs, "acks": "all", "message.timeout.ms": timeout_s * 1000,
                  "queue.buffering.max.messages": 2_000_000})
    errors = []
    for i in range(n_parts):
        p.produce(topic, b"r", partition=i, on_delivery=lambda err, _m: err and errors.append(err))
    left = p.flush(timeout_s)
    assert left == 0 and not errors, f"{left} undelivered, errors {errors[:3]}"
    return time.perf_counter() - t0


def measure(target, n_parts):
    tmp = tempfile.mkdtemp(prefix=f"sluice-pscale-{target}-")
    procs, bs = start_brokers(args.bin, target, tmp)
    try:
        admin = AdminClient({"bootstrap.servers": bs})
        topic = "scale"
        rf = 3 if target == "cluster" else 1
        t0 = time.perf_counter()
        admin.create_topics([NewTopic(topic, n_parts, rf)], request_timeout=120)[topic].result(120)
        while not leaders_ready(admin, topic, n_parts):
            if time.perf_counter() - t0 > 300:
                raise SystemExit(f"{target}: not every partition had a leader after 300 s")
            time.sleep(0.1)
        ready = time.perf_counter() - t0
        time.sleep(3)  # let elections, leader balancing and first housekeeping settle
        cpu0 = sum(cpu_seconds(p.pid) for p in procs)
        time.sleep(args.idle_seconds)
        idle = (sum(cpu_seconds(p.pid) for p in procs) - cpu0) / args.idle_seconds * 100
        rate = produce(bs, topic, n_parts)
        rss = max(rss_kib(p.pid) for p in procs) / 1024
        result = {"ready_s": round(ready, 2), "idle_cpu_pct": round(idle, 1), "rss_mib": round(rss, 1),
                  "produce_msgs_s": round(rate)}
        if target == "cluster":
            procs = kill9_and_restart(procs)
            result["restart_s"] = round(every_partition_writable(bs, topic, n_parts), 2)
    except BaseException:
        stop(procs)
        print(f"{target} with {n_parts} partitions failed; logs kept in {tmp}", file=sys.stderr)
        raise
    stop(procs)
    # Removed only at the end: this VM's ext4 runs without a journal, and creating files
    # within ~30 s of deleting thousands makes it scan recently deleted inodes at every
    # allocation (seconds for a 3,000-partition topic), which would bias every later run.
    finished_dirs.append(tmp)
    return result


finished_dirs = []
rows = []
for n in [int(x) for x in args.partitions.split(",")]:
    row = {"partitions": n, "cluster": measure("cluster", n)}
    if not args.skip_standalone:
        row["standalone"] = measure("standalone", n)
        row["ratio"] = round(row["cluster"]["produce_msgs_s"] / row["standalone"]["produce_msgs_s"], 2)
    print(json.dumps(row), flush=True)
    rows.append(row)

print("| partitions | all leaders after CreateTopics | idle CPU, 3 nodes (% of one core) | max RSS per node | cluster produce | standalone produce | ratio | every partition writable after kill -9 of all nodes |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    c, s = r["cluster"], r.get("standalone")
    alone = f"{s['produce_msgs_s']:,} msg/s" if s else "-"
    print(f"| {r['partitions']:,} | {c['ready_s']} s | {c['idle_cpu_pct']} % | {c['rss_mib']:.0f} MB | "
          f"{c['produce_msgs_s']:,} msg/s | {alone} | {r.get('ratio', '-')} | {c['restart_s']} s |")

for d in finished_dirs:
    shutil.rmtree(d, ignore_errors=True)
