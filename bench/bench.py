#!/usr/bin/env python3
"""Sluice benchmark with a standard client (confluent-kafka = librdkafka).

Starts the broker under test (a release build by default) on a free port with a fresh data dir
and measures, for 100 B and 10 KiB messages:
  * the client's own enqueue ceiling (produce() calls only, nothing sent) -- the baseline,
  * produce throughput with acks=all, linger.ms=5, 1 MB batches, fsync on (msgs/s, MB/s) and its
    ratio to that ceiling,
  * ack latency p50/p99 at a fixed 20,000 msg/s,
  * consume throughput from the start of the topic,
  * broker RSS idle and peak.
Usage: bench/bench.py [--bin target/release/sluice] [--messages 1000000] [--sizes 100,10240]
"""
import argparse, json, os, socket, subprocess, sys, tempfile, time
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "sluice"))
ap.add_argument("--messages", type=int, default=1_000_000)
ap.add_argument("--sizes", default="100,10240")
ap.add_argument("--rate", type=int, default=20_000)
ap.add_argument("--rate-seconds", type=float, default=10)
ap.add_argument("--durability", default="fsync")
ap.add_argument("--json", action="store_true")
args = ap.parse_args()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


tmp = tempfile.mkdtemp(prefix="sluice-bench-")
port = free_port()
bs = f"127.0.0.1:{port}"
log = open(os.path.join(tmp, "broker.log"), "w")
broker = subprocess.Popen([args.bin, "--kafka-addr", bs, "--data-dir", os.path.join(tmp, "data"),
                           "--durability", args.durability], stderr=log, stdout=subprocess.DEVNULL)
try:
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.time() < deadline and broker.poll() is None, "broker did not start"
            time.sleep(0.05)
    time.sleep(0.5)
    results = {"broker": os.path.abspath(args.bin), "durability": args.durability,
               "rss_idle_kib": rss_kib(broker.pid), "runs": []}
    admin = AdminClient({"bootstrap.servers": bs})
    for size in [int(s) for s in args.sizes.split(",")]:
        n = args.messages if size <= 1024 else max(args.messages // 20, 20_000)
        topic = f"bench-{size}"
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
        payload = os.urandom(size)
        conf = {"bootstrap.servers": bs, "acks": "all", "linger.ms": 5, "batch.size": 1_000_000,
                "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 2_000_000,
                "enable.idempotence": False, "compression.type": "none"}
        # Baseline: how fast this client enqueues when nothing limits it (no broker involved).
        base = Producer(dict(conf, **{"bootstrap.servers": "127.0.0.1:1", "message.timeout.ms": 600000, "log_level": 0}))
        t0 = time.perf_counter()
        for _ in range(n):
            base.produce(topic, payload)
        enqueue_rate = n / (time.perf_counter() - t0)
        base.purge()
        del base
        # Produce throughput.
        p = Producer(conf)
        errors = [0]
        def cb(err, msg):
            if err:
                errors[0] += 1
        t0 = time.perf_counter()
        for _ in range(n):
            while True:
                try:
                    p.produce(topic, payload, on_delivery=cb)
                    break
                except BufferError:
                    p.poll(0.001)
        p.flush(300)
        el = time.perf_counter() - t0
        assert errors[0] == 0, f"{errors[0]} delivery errors"
        rss_peak = rss_kib(broker.pid, "VmHWM")
        # Fixed-rate latency: send time -> delivery report time, per message.
        lat = []
        lp = Producer(dict(conf, **{"linger.ms": 1}))
        count = int(args.rate * args.rate_seconds)
        interval = 1.0 / args.rate
        start = time.perf_counter()
        for i in range(count):
            target = start + i * interval
            now = time.perf_counter()
            if target > now:
                time.sleep(target - now) if target - now > 0.0005 else None
                while time.perf_counter() < target:
                    pass
            t = time.perf_counter()
            lp.produce(topic, payload, on_delivery=(lambda err, msg, t=t: lat.append(time.perf_counter() - t) if err is None else None))
            lp.poll(0)
        lp.flush(60)
        achieved = count / (time.perf_counter() - start)
        lat.sort()
        p50 = lat[len(lat) // 2] * 1000
        p99 = lat[int(len(lat) * 0.99)] * 1000
        # Consume throughput.
        c = Consumer({"bootstrap.servers": bs, "group.id": "bench", "enable.auto.commit": False,
                      "fetch.max.bytes": 52428800, "max.partition.fetch.bytes": 10485760,
                      "queued.max.messages.kbytes": 1048576})
        c.assign([TopicPartition(topic, 0, 0)])
        got = 0
        total = n + count
        t0 = time.perf_counter()
        while got < total:
            msgs = c.consume(10000, 5.0)
            if not msgs:
                break
            got += sum(1 for m in msgs if not m.error())
        cel = time.perf_counter() - t0
        c.close()
        run = {"size": size, "messages": n, "client_enqueue_msgs_s": round(enqueue_rate),
               "produce_msgs_s": round(n / el), "produce_MB_s": round(n * size / el / 1e6, 1),
               "produce_vs_client_ceiling": round((n / el) / enqueue_rate, 3),
               "fixed_rate_msgs_s": round(achieved), "ack_p50_ms": round(p50, 2), "ack_p99_ms": round(p99, 2),
               "consumed": got, "consume_msgs_s": round(got / cel), "consume_MB_s": round(got * size / cel / 1e6, 1),
               "rss_peak_kib": rss_peak}
        results["runs"].append(run)
        if not args.json:
            print(json.dumps(run), flush=True)
    results["rss_peak_kib"] = rss_kib(broker.pid, "VmHWM")
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(json.dumps({"rss_idle_kib": results["rss_idle_kib"], "rss_peak_kib": results["rss_peak_kib"]}))
finally:
    broker.terminate()
    broker.wait(30)
    subprocess.run(["rm", "-rf", tmp])
