"""Reads a whole topic (no group) up to each partition's high watermark and prints
{"values": {partition: [values in offset order]}, "offsets": {partition: [offsets]}} as JSON."""
import argparse, json, os, sys, time
from confluent_kafka import Consumer, TopicPartition

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--topic", required=True)
args = ap.parse_args()
c = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "dump-unused", "enable.auto.commit": False})
md = c.list_topics(args.topic, timeout=10)
parts = sorted(md.topics[args.topic].partitions)
high = {p: c.get_watermark_offsets(TopicPartition(args.topic, p), timeout=10)[1] for p in parts}
c.assign([TopicPartition(args.topic, p, 0) for p in parts if high[p] > 0])
values = {p: [] for p in parts}
offsets = {p: [] for p in parts}
pos = {p: 0 for p in parts}
deadline = time.time() + 60
while any(pos[p] < high[p] for p in parts) and time.time() < deadline:
    m = c.poll(1.0)
    if m is None or m.error():
        continue
    values[m.partition()].append(m.value().decode())
    offsets[m.partition()].append(m.offset())
    pos[m.partition()] = m.offset() + 1
print(json.dumps({"values": values, "offsets": offsets}), flush=True)
c.close()
sys.stdout.flush()
os._exit(0)
