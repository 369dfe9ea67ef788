#!/usr/bin/env python3
"""The cost of security: produce and consume over SASL_SSL (SCRAM-SHA-512 over TLS) against
PLAINTEXT, on one broker with both listeners, in the same invocation.

For each message size the two listeners are measured back to back, alternating which goes first,
for --rounds rounds. Before every run the page cache's dirty pages are written out (sync), so one
run's writeback does not land in the next. Reported per listener: the median produce and consume
msg/s and MB/s and the broker's CPU seconds per MB moved (from /proc/PID/stat); the ratio is the
median of each round's SASL_SSL / PLAINTEXT ratio (the two runs of a round are adjacent in time,
so a noisy neighbour hits both). `--data-root /dev/shm` takes the disk out of the measurement.

Usage: bench/security_bench.py [--bin target/release/sluice] [--messages 500000] [--sizes 100,10240]
       [--rounds 5] [--data-root DIR] [--partition-fetch-bytes N]
"""
import argparse, json, os, shutil, socket, statistics, subprocess, sys, tempfile, time
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from benchlib import cpu_seconds, free_port

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "sluice"))
ap.add_argument("--messages", type=int, default=500_000)
ap.add_argument("--sizes", default="100,10240")
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--data-root", default=None, help="where the broker's data dir goes (default: a temp dir)")
ap.add_argument("--partition-fetch-bytes", type=int, default=10_485_760,
                help="the consumer's max.partition.fetch.bytes (0: librdkafka's default, 1 MiB)")
args = ap.parse_args()

tmp = tempfile.mkdtemp(prefix="sluice-secbench-")
certs = os.path.join(tmp, "certs")
data = os.path.join(tempfile.mkdtemp(prefix="sluice-secbench-", dir=args.data_root) if args.data_root else tmp, "data")
subprocess.run([args.bin, "certs", "--server-names", "localhost,127.0.0.1", "--out", certs],
               check=True, stdout=subprocess.DEVNULL)
subprocess.run([args.bin, "users", "add", "bench", "--mechanism", "SCRAM-SHA-512",
                "--password-stdin", "--data-dir", data], input=b"bench-pw\n", check=True,
               stdout=subprocess.DEVNULL)
plain_port, sasl_port = free_port(), free_port()
log = open(os.path.join(tmp, "broker.log"), "w")
broker = subprocess.Popen(
    [args.bin, "--data-dir", data,
     "--listeners", f"PLAINTEXT://127.0.0.1:{plain_port},SASL_SSL://127.0.0.1:{sasl_port}",
     "--tls-cert", os.path.join(certs, "server.pem"), "--tls-key", os.path.join(certs, "server.key")],
    stderr=log, stdout=subprocess.DEVNULL)

LISTENERS = {
    "PLAINTEXT": {"bootstrap.servers": f"127.0.0.1:{plain_port}"},
    "SASL_SSL": {"bootstrap.servers": f"127.0.0.1:{sasl_port}", "security.protocol": "SASL_SSL",
                 "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "bench",
                 "sasl.password": "bench-pw", "ssl.ca.location": os.path.join(certs, "ca.pem")},
}


def produce(conf, topic, n, payload):
    p = Producer(dict(conf, **{"acks": "all", "linger.ms": 5, "batch.size": 1_000_000,
                               "queue.buffering.max.messages": 2_000_000,
                               "queue.buffering.max.kbytes": 2_000_000,
                               "enable.idempotence": False}))
    p.produce(topic, b"warm-up")
    p.flush(30)
    errors = [0]

    def cb(err, msg):
        if err:
            errors[0] += 1
    cpu0, t0 = cpu_seconds(broker.pid), time.perf_counter()
    for _ in range(n):
        while True:
            try:
                p.produce(topic, payload, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.001)
    p.flush(300)
    el, cpu = time.perf_counter() - t0, cpu_seconds(broker.pid) - cpu0
    assert errors[0] == 0, f"{errors[0]} delivery errors"
    return el, cpu


def consume(conf, topic, n):
    fetch = {"fetch.max.bytes": 52428800, "max.partition.fetch.bytes": args.partition_fetch_bytes}
    c = Consumer(dict(conf, **{"group.id": "bench", "enable.auto.commit": False,
                               "queued.max.messages.kbytes": 1048576},
                      **(fetch if args.partition_fetch_bytes else {})))
    c.assign([TopicPartition(topic, 0, 1)])  # offset 0 is the warm-up message
    got = 0
    cpu0, t0 = cpu_seconds(broker.pid), time.perf_counter()
    while got < n:
        msgs = c.consume(10000, 5.0)
        if not msgs:
            break
        got += sum(1 for m in msgs if not m.error())
    el, cpu = time.perf_counter() - t0, cpu_seconds(broker.pid) - cpu0
    c.close()
    assert got == n, f"consumed {got} of {n}"
    return el, cpu


try:
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", sasl_port), timeout=1).close()
            break
        except OSError:
            assert time.time() < deadline and broker.poll() is None, "broker did not start"
            time.sleep(0.05)
    admin = AdminClient(LISTENERS["PLAINTEXT"])
    out = {"broker": os.path.abspath(args.bin), "runs": []}
    for size in [int(s) for s in args.sizes.split(",")]:
        n = args.messages if size <= 1024 else max(args.messages // 20, 20_000)
        payload = os.urandom(size)
        mb = n * size / 1e6
        runs = {name: [] for name in LISTENERS}
        ratios = {"produce": [], "consume": []}
        for rnd in range(args.rounds):
            # Alternate the order (P,S then S,P) so neither side always runs second.
            order = list(LISTENERS.items())
            if rnd % 2:
                order.reverse()
            for name, conf in order:
                topic = f"sec-{size}-{name}-{rnd}"
                admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
                os.sync()
                pe, pc = produce(conf, topic, n, payload)
                os.sync()
                ce, cc = consume(conf, topic, n)
                admin.delete_topics([topic])[topic].result(30)
                r = {"produce_msgs_s": n / pe, "produce_MB_s": mb / pe, "produce_cpu_s_per_MB": pc / mb,
                     "consume_msgs_s": n / ce, "consume_MB_s": mb / ce, "consume_cpu_s_per_MB": cc / mb}
                print(f"# {size} B round {rnd} {name}: produce {r['produce_MB_s']:.0f} MB/s "
                      f"({r['produce_cpu_s_per_MB']:.4f} s/MB), consume {r['consume_MB_s']:.0f} MB/s "
                      f"({r['consume_cpu_s_per_MB']:.4f} s/MB)", file=sys.stderr, flush=True)
                runs[name].append(r)
            for kind in ratios:
                ratios[kind].append(runs["SASL_SSL"][-1][f"{kind}_msgs_s"] / runs["PLAINTEXT"][-1][f"{kind}_msgs_s"])
        run = {"size": size, "messages": n, "rounds": args.rounds}
        for name, rs in runs.items():
            run[name] = {k: round(statistics.median(r[k] for r in rs), 4 if "cpu" in k else 1) for k in rs[0]}
        for kind, rs in ratios.items():
            run[f"ratio_{kind}"] = round(statistics.median(rs), 3)
            run[f"ratio_{kind}_rounds"] = [round(x, 2) for x in rs]
        out["runs"].append(run)
        print(json.dumps(run), flush=True)
    print("| size | listener | produce msg/s | produce MB/s | broker CPU s/MB (produce) | consume msg/s | consume MB/s | broker CPU s/MB (consume) |")
    print("|---|---|---|---|---|---|---|---|")
    for run in out["runs"]:
        for name in LISTENERS:
            r = run[name]
            print(f"| {run['size']} B | {name} | {r['produce_msgs_s']:,.0f} | {r['produce_MB_s']:.1f} | {r['produce_cpu_s_per_MB']:.4f} | {r['consume_msgs_s']:,.0f} | {r['consume_MB_s']:.1f} | {r['consume_cpu_s_per_MB']:.4f} |")
        print(f"| {run['size']} B | median ratio SASL_SSL / PLAINTEXT | {run['ratio_produce']} | | | {run['ratio_consume']} | | |")
finally:
    broker.terminate()
    broker.wait(30)
    log.close()
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(os.path.dirname(data), ignore_errors=True)
