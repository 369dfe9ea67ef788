#!/usr/bin/env python3
"""Restart time against log size: how long a broker holding N GiB in P partitions takes, from
process start, to answer Metadata and acknowledge a produce — after a clean shutdown (SIGTERM)
and after kill -9 — with an idempotent producer's state in every partition.

For each size: fill a fresh data dir (10 KiB records, idempotent producer, spread over the
partitions), then restart it twice: SIGTERM + start, SIGKILL + start. Prints one JSON line per
size and a table.

Usage: bench/restart_bench.py [--bin target/release/sluice] [--partitions 1000] [--gib 1,2.5,5,10]
                              [--drop-caches]
"""
import argparse, json, os, shutil, signal, socket, subprocess, tempfile, time
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "sluice"))
ap.add_argument("--partitions", type=int, default=1000)
ap.add_argument("--gib", default="1,2.5,5,10")
ap.add_argument("--record-bytes", type=int, default=10240)
ap.add_argument("--drop-caches", action="store_true",
                help="drop the page cache before each start (root): a cold start, as after a reboot")
args = ap.parse_args()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start(data, port, log):
    return subprocess.Popen([args.bin, "--kafka-addr", f"127.0.0.1:{port}", "--data-dir", data,
                             "--offsets-partitions", "10"], stderr=log, stdout=subprocess.DEVNULL)


def serving_after(broker, port, t0):
    """Seconds from t0 until Metadata answers and an idempotent produce is acknowledged."""
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert broker.poll() is None, "broker exited"
            time.sleep(0.01)
    accept_s = time.monotonic() - t0
    bs = f"127.0.0.1:{port}"
    admin = AdminClient({"bootstrap.servers": bs})
    md = admin.list_topics(timeout=60)
    assert "restart" in md.topics and len(md.topics["restart"].partitions) == args.partitions
    metadata_s = time.monotonic() - t0
    p = Producer({"bootstrap.servers": bs, "enable.idempotence": True, "acks": "all"})
    got = []
    p.produce("restart", b"after-restart", partition=args.partitions - 1,
              on_delivery=lambda e, m: got.append(e))
    p.flush(60)
    assert got == [None], got
    return accept_s, metadata_s, time.monotonic() - t0


def fill(port, total_bytes):
    bs = f"127.0.0.1:{port}"
    p = Producer({"bootstrap.servers": bs, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 20, "batch.size": 1_000_000, "queue.buffering.max.kbytes": 1_000_000})
    payload = os.urandom(args.record_bytes)
    n = int(total_bytes // args.record_bytes)
    for i in range(n):
        while True:
            try:
                p.produce("restart", payload, partition=i % args.partitions)
                break
            except BufferError:
                p.poll(0.01)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(600) == 0


rows = []
for gib in [float(g) for g in args.gib.split(",")]:
    tmp = tempfile.mkdtemp(prefix="sluice-restart-")
    data = os.path.join(tmp, "data")
    log = open(os.path.join(tmp, "broker.log"), "w")
    port = free_port()
    b = start(data, port, log)
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})  # kept until the future resolves
    admin.create_topics([NewTopic("restart", args.partitions, 1)])["restart"].result(60)
    t = time.monotonic()
    fill(port, gib * (1 << 30))
    fill_s = time.monotonic() - t
    row = {"gib": gib, "partitions": args.partitions, "fill_s": round(fill_s, 1)}
    for how in ("clean", "kill9"):
        if how == "clean":
            b.send_signal(signal.SIGTERM)
        else:
            b.send_signal(signal.SIGKILL)
        b.wait(300)
        if args.drop_caches:
            subprocess.run(["sync"], check=True)
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("3\n")
        t0 = time.monotonic()
        b = start(data, port, log)
        accept_s, metadata_s, produce_s = serving_after(b, port, t0)
        row[how] = {"listening_s": round(accept_s, 2), "metadata_s": round(metadata_s, 2),
                    "produce_acked_s": round(produce_s, 2)}
    b.terminate()
    b.wait(120)
    rows.append(row)
    print(json.dumps(row), flush=True)
    shutil.rmtree(tmp, ignore_errors=True)

print("| GiB | partitions | clean: listening / Metadata / produce acked (s) | kill -9: listening / Metadata / produce acked (s) |")
print("|---|---|---|---|")
for r in rows:
    c, k = r["clean"], r["kill9"]
    print(f"| {r['gib']} | {r['partitions']} | {c['listening_s']} / {c['metadata_s']} / {c['produce_acked_s']} | "
          f"{k['listening_s']} / {k['metadata_s']} / {k['produce_acked_s']} |")
