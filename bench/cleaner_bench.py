#!/usr/bin/env python3
"""Log cleaner benchmark: cleaner throughput, and produce latency with the cleaner idle and busy.

Starts the broker itself (fsync on) with the cleaner asleep for --cleaner-wait-s after its
first (empty) pass, fills a compacted topic with a keyed workload (overwrites of --keys keys, 1
in 9 a tombstone), then measures produce latency (one 200 B message at a time, acks=all, to
another topic) for --seconds: cleaner idle. The cleaner then wakes and works through the whole
log, and the same latency is measured while it cleans (cleaner busy), then once more after it
(cleaner done). One broker process throughout, warmed the same way for every window. Cleaner
throughput comes from the broker's metrics (segment bytes rewritten / clean duration; the dirty
section is also read once more for the key map).

    python3 bench/cleaner_bench.py --bin target/release/sluice [--records 400000] \
        [--io-max-bytes-per-second 67108864]
"""
import argparse, json, os, random, signal, socket, subprocess, sys, tempfile, time, urllib.request

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default="target/release/sluice")
ap.add_argument("--records", type=int, default=400_000)
ap.add_argument("--keys", type=int, default=20_000)
ap.add_argument("--value-bytes", type=int, default=1000)
ap.add_argument("--segment-bytes", type=int, default=64 << 20)
ap.add_argument("--io-max-bytes-per-second", type=int, default=64 << 20)
ap.add_argument("--seconds", type=float, default=8)
ap.add_argument("--cleaner-wait-s", type=float, default=30,
                help="the cleaner's backoff: long enough to fill the topic and measure idle")
a = ap.parse_args()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


tmp = tempfile.mkdtemp(prefix="sluice-cleaner-bench-")
port, mport = free_port(), free_port()
bs = f"127.0.0.1:{port}"
args = [a.bin, "--data-dir", os.path.join(tmp, "data"), "--kafka-addr", bs,
        "--metrics-addr", f"127.0.0.1:{mport}",
        "--log-cleaner-backoff-ms", str(int(a.cleaner_wait_s * 1000)),
        "--log-cleaner-io-max-bytes-per-second", str(a.io_max_bytes_per_second)]


def start():
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "broker.log"), "a"))
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return p
        except OSError:
            time.sleep(0.05)
    sys.exit("broker did not start")


def metrics():
    text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("sluice_log_cleaner_"):
            k, v = line.split(" ")
            out[k] = float(v)
    return out


def latency(until):
    p = Producer({"bootstrap.servers": bs, "acks": "all", "linger.ms": 0})
    lat = []
    end = time.time() + a.seconds
    # `until` scrapes the metrics endpoint: at most every 200 ms, so the scraping itself does
    # not load the broker between the measured messages.
    next_check, done = 0.0, False
    while time.time() < end and not done:
        if time.time() >= next_check:
            done, next_check = until(), time.time() + 0.2
            if done:
                break
        t = time.perf_counter()
        p.produce("latency", key=b"k", value=b"x" * 200)
        p.flush(10)
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    pick = lambda q: round(lat[min(len(lat) - 1, int(len(lat) * q))], 3)
    return {"messages": len(lat), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": round(lat[-1], 3)}


broker = start()
started = time.time()
try:
    admin = AdminClient({"bootstrap.servers": bs})
    for f in admin.create_topics([
        NewTopic("table", 1, 1, config={"cleanup.policy": "compact",
                                        "segment.bytes": str(a.segment_bytes)}),
        NewTopic("latency", 1, 1)]).values():
        f.result(30)
    rng = random.Random(7)
    p = Producer({"bootstrap.servers": bs, "acks": "1", "linger.ms": 5, "compression.type": "lz4"})
    t0 = time.time()
    for i in range(a.records):
        value = None if rng.randrange(9) == 0 else format(rng.getrandbits(4 * a.value_bytes), "x").encode()
        while True:
            try:
                p.produce("table", key=f"k{rng.randrange(a.keys)}".encode(), value=value)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    p.flush(120)
    produced_s = time.time() - t0
    idle = latency(lambda: False)
    if time.time() > started + a.cleaner_wait_s:
        sys.exit("filling and the idle window took longer than --cleaner-wait-s")
    time.sleep(started + a.cleaner_wait_s + 0.2 - time.time())
    busy = latency(lambda: metrics().get("sluice_log_cleaner_cleans_total", 0) >= 1)
    deadline = time.time() + 600
    while metrics().get("sluice_log_cleaner_cleans_total", 0) < 1:
        if time.time() > deadline:
            sys.exit("the clean did not finish")
        time.sleep(0.2)
    m = metrics()
    ms = m["sluice_log_cleaner_last_clean_milliseconds"]
    rewritten = m["sluice_log_cleaner_read_bytes_total"]
    after = latency(lambda: False)
    print(json.dumps({
        "records": a.records, "keys": a.keys, "value_bytes": a.value_bytes,
        "io_max_bytes_per_second": a.io_max_bytes_per_second,
        "produce_s": round(produced_s, 1),
        "clean": {"segment_mb_rewritten": round(rewritten / 1e6, 1),
                  "cleaned_mb": round(m["sluice_log_cleaner_written_bytes_total"] / 1e6, 1),
                  "seconds": round(ms / 1000, 2),
                  "segment_mb_per_s": round(rewritten / 1e6 / max(ms / 1000, 1e-3), 1)},
        "latency_cleaner_idle": idle, "latency_cleaner_busy": busy, "latency_after": after,
        "p99_busy_over_idle": round(busy["p99_ms"] / idle["p99_ms"], 2),
    }, indent=1))
finally:
    broker.kill()
    if os.environ.get("KEEP"):
        print(tmp)
    else:
        subprocess.run(["rm", "-rf", tmp])
