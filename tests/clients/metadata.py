"""Prints the partition count of a topic (auto-creating it through Metadata)."""
import argparse, time
from confluent_kafka import Producer
ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("topic")
a = ap.parse_args()
p = Producer({"bootstrap.servers": a.bootstrap, "allow.auto.create.topics": True})
deadline = time.time() + 10
while True:
    md = p.list_topics(a.topic, timeout=10).topics[a.topic]
    if md.error is None and md.partitions:
        print(len(md.partitions))
        break
    assert time.time() < deadline, md.error
    time.sleep(0.1)
