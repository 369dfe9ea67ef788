#!/usr/bin/env python3
"""Availability under network faults: the longest stretch without any acknowledgement.

A 3-node RF=3 cluster and one idempotent acks=all producer (confluent-kafka, 5 s request
timeout) writing --rate messages/s to a 1-partition topic. Each fault cuts Raft traffic (UDP,
with iptables; the Kafka port stays reachable, so clients still reach the faulty leader) for
--fault-seconds, then heals for --heal-seconds:
  isolate  the partition leader neither sends to nor receives from its peers;
  deaf     the leader receives nothing from its peers but can still send to them;
  mute     the leader can send nothing to its peers but still receives;
  bridge   the leader and one follower cannot reach each other; the other follower reaches both.
For each fault it reports the longest window without an acknowledgement that overlaps the fault
(target: under 3 s), and at the end that every acknowledged message is in the log exactly once.
Needs root (iptables). Usage: bench/cluster_nemesis.py [--faults isolate,deaf,mute,bridge]
[--rounds 2] [--fault-seconds 15] [--heal-seconds 10] [--rate 500]
"""
import argparse, json, os, socket, subprocess, sys, tempfile, threading, time
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from benchlib import free_port

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "sluice"))
ap.add_argument("--faults", default="isolate,deaf,mute,bridge")
ap.add_argument("--rounds", type=int, default=2)
ap.add_argument("--fault-seconds", type=float, default=15)
ap.add_argument("--heal-seconds", type=float, default=10)
ap.add_argument("--rate", type=int, default=500)
ap.add_argument("--logs", help="copy the nodes' logs into this directory")
args = ap.parse_args()
TAG = "sluice-nemesis"
TOPIC = "nemesis"


def iptables(*a):
    subprocess.run(["iptables", "-w", *a], check=True)


class Cut:
    """DROP rules for UDP from port `src` to port `dst` on loopback; removed on exit."""

    def __init__(self, pairs):
        self.rules = [["INPUT", "-i", "lo", "-p", "udp", "--sport", str(s), "--dport", str(d),
                       "-m", "comment", "--comment", TAG, "-j", "DROP"] for s, d in pairs]

    def __enter__(self):
        for r in self.rules:
            iptables("-I", *r)
        return self

    def __exit__(self, *_):
        for r in self.rules:
            iptables("-D", *r)


def start(tmp):
    subprocess.run([args.bin, "certs", "--nodes", "1,2,3", "--out", f"{tmp}/certs"], check=True,
                   stdout=subprocess.DEVNULL)
    raft = [free_port(socket.SOCK_DGRAM) for _ in range(3)]
    kafka = [free_port() for _ in range(3)]
    peers = ",".join(f"{i + 1}@127.0.0.1:{raft[i]}" for i in range(3))
    procs = [subprocess.Popen(
        [args.bin, "--node-id", str(i + 1), "--kafka-addr", f"127.0.0.1:{kafka[i]}", "--data-dir", f"{tmp}/d{i + 1}",
         "raft-cluster", "--raft-addr", f"127.0.0.1:{raft[i]}", "--peers", peers, "--tls-dir", f"{tmp}/certs"],
        stderr=open(f"{tmp}/n{i + 1}.log", "w")) for i in range(3)]
    return procs, raft, ",".join(f"127.0.0.1:{k}" for k in kafka)


def leader(admin):
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            t = admin.list_topics(TOPIC, timeout=5).topics.get(TOPIC)
            if t and 0 in t.partitions and t.partitions[0].leader > 0:
                return t.partitions[0].leader
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit("no partition leader within 30 s")


def cuts(kind, raft, lead):
    me = raft[lead - 1]
    others = [raft[i] for i in range(3) if i != lead - 1]
    if kind == "isolate":
        return [(o, me) for o in others] + [(me, o) for o in others]
    if kind == "deaf":
        return [(o, me) for o in others]
    if kind == "mute":
        return [(me, o) for o in others]
    if kind == "bridge":
        return [(others[0], me), (me, others[0])]
    raise SystemExit(f"unknown fault {kind}")


def main():
    subprocess.run(["iptables", "-w", "-S", "INPUT"], check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory(prefix="sluice-nemesis-") as tmp:
        procs, raft, bs = start(tmp)
        try:
            run(tmp, raft, bs)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
            if args.logs:
                os.makedirs(args.logs, exist_ok=True)
                for i in range(3):
                    subprocess.run(["cp", f"{tmp}/n{i + 1}.log", args.logs], check=True)


def run(tmp, raft, bs):
    admin = AdminClient({"bootstrap.servers": bs})
    deadline = time.time() + 30
    while True:
        try:
            admin.create_topics([NewTopic(TOPIC, 1, 3)], request_timeout=10)[TOPIC].result(15)
            break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    leader(admin)
    acks, errors, stop = [], [], threading.Event()

    def produce():
        conf = {"bootstrap.servers": bs, "acks": "all", "enable.idempotence": True,
                "request.timeout.ms": 5000, "message.timeout.ms": 120000, "linger.ms": 1}
        if os.environ.get("RDKAFKA_DEBUG"):
            conf["debug"] = os.environ["RDKAFKA_DEBUG"]
        p = Producer(conf)
        i, nxt = 0, time.time()
        while not stop.is_set():
            now = time.time()
            if now < nxt:
                p.poll(min(nxt - now, 0.005))
                continue
            v = str(i).encode()
            p.produce(TOPIC, v, partition=0, on_delivery=lambda e, m, v=v: (
                acks.append((time.time(), v, m.offset())) if e is None else errors.append(str(e))))
            i += 1
            nxt += 1.0 / args.rate
        p.flush(150)

    t = threading.Thread(target=produce)
    t.start()
    time.sleep(3)
    results = []
    for rnd in range(args.rounds):
        for kind in args.faults.split(","):
            lead = leader(admin)
            began = time.time()
            with Cut(cuts(kind, raft, lead)):
                time.sleep(args.fault_seconds)
            healed = time.time()
            time.sleep(args.heal_seconds)
            times = sorted(a[0] for a in acks if began - 5 <= a[0] <= time.time())
            # The longest gap between acknowledgements that overlaps the fault.
            gap = max((b - a for a, b in zip(times, times[1:]) if b >= began and a <= healed), default=None)
            r = {"round": rnd + 1, "fault": kind, "leader": lead, "fault_s": round(healed - began, 1),
                 "longest_no_ack_s": None if gap is None else round(gap, 2),
                 "new_leader": leader(admin)}
            results.append(r)
            print(json.dumps(r), flush=True)
    stop.set()
    t.join()
    # Every acknowledged value is in the log exactly once.
    c = Consumer({"bootstrap.servers": bs, "group.id": "nemesis-check", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(TOPIC, 0, 0)])
    seen, end = {}, time.time() + 60
    want = len(acks)
    while time.time() < end and len(seen) < want:
        for m in c.consume(1000, 1):
            if m.error() is None:
                seen.setdefault(m.value(), []).append(m.offset())
    c.close()
    lost = [v for _, v, _ in acks if v not in seen]
    twice = [v for v, offs in seen.items() if len(offs) > 1]
    moved = [v for _, v, o in acks if v in seen and seen[v][0] != o]
    worst = max((r["longest_no_ack_s"] or 1e9) for r in results)
    print(json.dumps({"acked": len(acks), "errors": len(errors), "lost": len(lost), "duplicated": len(twice),
                      "moved": len(moved), "worst_no_ack_s": worst}), flush=True)
    if lost or twice or moved:
        sys.exit(1)


main()
