#!/usr/bin/env python3
"""The cost of security: produce and consume over SASL_SSL (SCRAM-SHA-512 over TLS) against
PLAINTEXT, on one broker with both listeners, in the same invocation.

For each message size the two listeners are measured back to back (PLAINTEXT first, then
SASL_SSL, then both again, and the better run of each kept, so a noisy neighbour hurts neither
side alone). Reported per listener: produce and consume msg/s and MB/s, the broker's CPU seconds
per MB moved (from /proc/PID/stat), and the SASL_SSL / PLAINTEXT throughput ratio.

Usage: bench/security_bench.py [--bin target/release/sluice] [--messages 500000] [--sizes 100,10240]
"""
import argparse, json, os, shutil, socket, subprocess, sys, tempfile, time
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "sluice"))
ap.add_argument("--messages", type=int, default=500_000)
ap.add_argument("--sizes", default="100,10240")
ap.add_argument("--rounds", type=int, default=2)
args = ap.parse_args()

CLK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


tmp = tempfile.mkdtemp(prefix="sluice-secbench-")
certs = os.path.join(tmp, "certs")
data = os.path.join(tmp, "data")
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
    c = Consumer(dict(conf, **{"group.id": "bench", "enable.auto.commit": False,
                               "fetch.max.bytes": 52428800, "max.partition.fetch.bytes": 10485760,
                               "queued.max.messages.kbytes": 1048576}))
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
        best = {}
        for rnd in range(args.rounds):
            # Alternate the order (P,S then S,P) so neither side always runs on a busier disk.
            order = list(LISTENERS.items())
            if rnd % 2:
                order.reverse()
            for name, conf in order:
                topic = f"sec-{size}-{name}-{rnd}"
                admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
                pe, pc = produce(conf, topic, n, payload)
                ce, cc = consume(conf, topic, n)
                admin.delete_topics([topic])[topic].result(30)
                r = {"produce_msgs_s": n / pe, "produce_MB_s": mb / pe, "produce_cpu_s_per_MB": pc / mb,
                     "consume_msgs_s": n / ce, "consume_MB_s": mb / ce, "consume_cpu_s_per_MB": cc / mb}
                print(f"# {size} B round {rnd} {name}: produce {r['produce_MB_s']:.0f} MB/s, "
                      f"consume {r['consume_MB_s']:.0f} MB/s", file=sys.stderr, flush=True)
                b = best.setdefault(name, dict(r))
                for k in ("produce_msgs_s", "produce_MB_s", "consume_msgs_s", "consume_MB_s"):
                    b[k] = max(b[k], r[k])
                for k in ("produce_cpu_s_per_MB", "consume_cpu_s_per_MB"):
                    b[k] = min(b[k], r[k])
        run = {"size": size, "messages": n}
        for name, r in best.items():
            run[name] = {k: round(v, 4 if "cpu" in k else 1) for k, v in r.items()}
        run["ratio_produce"] = round(best["SASL_SSL"]["produce_msgs_s"] / best["PLAINTEXT"]["produce_msgs_s"], 3)
        run["ratio_consume"] = round(best["SASL_SSL"]["consume_msgs_s"] / best["PLAINTEXT"]["consume_msgs_s"], 3)
        out["runs"].append(run)
        print(json.dumps(run), flush=True)
    print("| size | listener | produce msg/s | produce MB/s | broker CPU s/MB (produce) | consume msg/s | consume MB/s | broker CPU s/MB (consume) |")
    print("|---|---|---|---|---|---|---|---|")
    for run in out["runs"]:
        for name in LISTENERS:
            r = run[name]
            print(f"| {run['size']} B | {name} | {r['produce_msgs_s']:,.0f} | {r['produce_MB_s']:.1f} | {r['produce_cpu_s_per_MB']:.4f} | {r['consume_msgs_s']:,.0f} | {r['consume_MB_s']:.1f} | {r['consume_cpu_s_per_MB']:.4f} |")
        print(f"| {run['size']} B | ratio SASL_SSL / PLAINTEXT | {run['ratio_produce']} | | | {run['ratio_consume']} | | |")
finally:
    broker.terminate()
    broker.wait(30)
    log.close()
    shutil.rmtree(tmp, ignore_errors=True)
