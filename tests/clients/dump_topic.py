"""Prints every record of a topic as `<partition> <offset> <value>`, from the log start to the
high watermark of each partition, then `END <partition> <low> <high>` lines."""
import argparse, sys, time
from confluent_kafka import Consumer, TopicPartition, KafkaException

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--topic", required=True)
args = ap.parse_args()
c = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "dump", "enable.auto.commit": False,
              "auto.offset.reset": "earliest", "check.crcs": True})
md = c.list_topics(args.topic, timeout=10).topics[args.topic]
parts = sorted(md.partitions)
marks = {p: c.get_watermark_offsets(TopicPartition(args.topic, p), timeout=10) for p in parts}
todo = {p: hi for p, (lo, hi) in marks.items() if hi > lo}
c.assign([TopicPartition(args.topic, p, marks[p][0]) for p in parts])
pos = {p: marks[p][0] for p in parts}
deadline = time.time() + 60
while any(pos[p] < todo[p] for p in todo) and time.time() < deadline:
    m = c.poll(1.0)
    if m is None:
        continue
    if m.error():
        raise KafkaException(m.error())
    print(f"{m.partition()} {m.offset()} {m.value().decode()}")
    pos[m.partition()] = m.offset() + 1
for p in parts:
    print(f"END {p} {marks[p][0]} {marks[p][1]}")
assert all(pos[p] >= todo[p] for p in todo), (pos, todo)
