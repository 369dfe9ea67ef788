"""An idempotent producer overwrites one key in a compacted topic, then a plain producer
overwrites it again: once cleaned, the idempotent producer's last batch survives as an empty
batch. Prints what confluent-kafka and kafka-python read from the start ({"confluent": [...],
"kafka_python": [...]}, each [offset, value]); --phase produce / consume."""
import argparse, json
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--topic", default="cmp-idem")
ap.add_argument("--phase", required=True)
a = ap.parse_args()

if a.phase == "produce":
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    admin.create_topics([NewTopic(a.topic, 1, 1, config={
        "cleanup.policy": "compact", "internal.segment.bytes": "3000",
        "min.cleanable.dirty.ratio": "0.01"})])[a.topic].result(30)
    p = Producer({"bootstrap.servers": a.bootstrap, "enable.idempotence": True, "linger.ms": 0})
    for i in range(300):
        p.produce(a.topic, key=b"same", value=f"idem-{i}".encode())
        p.flush(10)
    p = Producer({"bootstrap.servers": a.bootstrap, "linger.ms": 0})
    for i in range(100):
        p.produce(a.topic, key=b"same", value=f"plain-{i}".encode())
        p.flush(10)
    print(json.dumps({"produced": 400}))
else:
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "cmp-idem",
                  "auto.offset.reset": "earliest", "enable.partition.eof": True})
    c.assign([TopicPartition(a.topic, 0, 0)])
    got = []
    while True:
        m = c.poll(10)
        if m is None or m.error():
            break
        got.append([m.offset(), m.value().decode()])
    c.close()
    from kafka import KafkaConsumer, TopicPartition as KTP
    k = KafkaConsumer(bootstrap_servers=a.bootstrap, auto_offset_reset="earliest",
                      consumer_timeout_ms=4000, enable_auto_commit=False)
    tp = KTP(a.topic, 0)
    k.assign([tp])
    k.seek_to_beginning(tp)
    kg = [[m.offset, m.value.decode()] for m in k]
    k.close()
    print(json.dumps({"confluent": got, "kafka_python": kg}))
