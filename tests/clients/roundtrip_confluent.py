"""librdkafka (confluent-kafka) against sluice: topic admin, every codec, exact consume-back,
list offsets, configs. Exits non-zero on any mismatch; prints a JSON summary."""
import argparse, json, sys, time
from confluent_kafka import Consumer, Producer, TopicPartition, KafkaException
from confluent_kafka.admin import (AdminClient, NewTopic, NewPartitions, ConfigResource, ConfigEntry,
                                   AlterConfigOpType, ResourceType)

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--topic", default="rt-confluent")
ap.add_argument("--per-codec", type=int, default=300)
args = ap.parse_args()
bs, topic = args.bootstrap, args.topic
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PARTS = 3

admin = AdminClient({"bootstrap.servers": bs})
admin.create_topics([NewTopic(topic, PARTS, 1)])[topic].result(30)
md = admin.list_topics(timeout=10)
assert topic in md.topics and len(md.topics[topic].partitions) == PARTS, md.topics

sent = {}  # (partition, offset) -> (key, value, headers)
t_before = int(time.time() * 1000) - 1
for codec in CODECS:
    p = Producer({"bootstrap.servers": bs, "compression.type": codec, "linger.ms": 5,
                  "acks": "all", "enable.idempotence": False})
    errors = []
    def cb(err, msg, expect):
        if err:
            errors.append(str(err))
        else:
            sent[(msg.partition(), msg.offset())] = expect
    for i in range(args.per_codec):
        key = f"{codec}-key-{i % 17}".encode()
        value = (f"{codec}-value-{i}-" + "x" * (i % 50)).encode()
        headers = [("codec", codec.encode()), ("i", str(i).encode())]
        p.produce(topic, key=key, value=value, headers=headers,
                  on_delivery=lambda err, msg, e=(key, value, headers): cb(err, msg, e))
    left = p.flush(30)
    assert left == 0 and not errors, (left, errors[:3])
assert len(sent) == len(CODECS) * args.per_codec, len(sent)
t_after = int(time.time() * 1000) + 1

c = Consumer({"bootstrap.servers": bs, "group.id": "unused", "enable.auto.commit": False,
              "auto.offset.reset": "earliest", "check.crcs": True})
c.assign([TopicPartition(topic, p, 0) for p in range(PARTS)])
got = {}
deadline = time.time() + 60
while len(got) < len(sent) and time.time() < deadline:
    m = c.poll(1.0)
    if m is None:
        continue
    if m.error():
        raise KafkaException(m.error())
    key = (m.partition(), m.offset())
    assert key not in got, f"duplicate {key}"
    got[key] = (m.key(), m.value(), m.headers())
assert got == sent, f"consumed {len(got)} != produced {len(sent)}"
# Per partition, offsets are dense from 0.
for p in range(PARTS):
    offs = sorted(o for (pp, o) in got if pp == p)
    assert offs == list(range(len(offs))), f"partition {p} offsets not dense"

# Watermarks and offsets for times.
marks = {}
for p in range(PARTS):
    lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
    n = sum(1 for (pp, _) in got if pp == p)
    assert (lo, hi) == (0, n), (p, lo, hi, n)
    marks[p] = hi
early = c.offsets_for_times([TopicPartition(topic, p, t_before) for p in range(PARTS)], timeout=10)
assert all(tp.offset == 0 for tp in early if marks[tp.partition] > 0), early
late = c.offsets_for_times([TopicPartition(topic, p, t_after + 60000) for p in range(PARTS)], timeout=10)
assert all(tp.offset in (-1, marks[tp.partition]) for tp in late), late
c.close()

# Configs: alter one, read it back.
res = ConfigResource(ResourceType.TOPIC, topic,
                     incremental_configs=[ConfigEntry("retention.ms", "3600000",
                                                      incremental_operation=AlterConfigOpType.SET)])
admin.incremental_alter_configs([res])[res].result(30)
desc = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])
cfg = list(desc.values())[0].result(30)
assert cfg["retention.ms"].value == "3600000", cfg["retention.ms"]
assert cfg["cleanup.policy"].value == "delete"
bad = ConfigResource(ResourceType.TOPIC, topic,
                     incremental_configs=[ConfigEntry("retention.ms", "not-a-number",
                                                      incremental_operation=AlterConfigOpType.SET)])
try:
    admin.incremental_alter_configs([bad])[bad].result(30)
    raise AssertionError("invalid config accepted")
except KafkaException as e:
    assert "INVALID_CONFIG" in str(e) or "Invalid value" in str(e), e

# DescribeCluster, DeleteRecords, CreatePartitions.
cluster = admin.describe_cluster().result(30)
assert len(cluster.nodes) == 1 and cluster.cluster_id, cluster
p0_count = marks[0]
assert p0_count > 10
dr = admin.delete_records([TopicPartition(topic, 0, 10)])
low = list(dr.values())[0].result(30)
assert low.low_watermark == 10, low.low_watermark
c2 = Consumer({"bootstrap.servers": bs, "group.id": "unused2"})
lo, hi = c2.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
assert (lo, hi) == (10, p0_count), (lo, hi)
c2.close()
admin.create_partitions([NewPartitions(topic, PARTS + 2)])[topic].result(30)
assert len(admin.list_topics(timeout=10).topics[topic].partitions) == PARTS + 2

# Delete.
admin.delete_topics([topic])[topic].result(30)
deadline = time.time() + 10
while topic in admin.list_topics(timeout=10).topics:
    assert time.time() < deadline, "topic still listed after delete"
    time.sleep(0.2)
print(json.dumps({"produced": len(sent), "consumed": len(got), "codecs": CODECS}))
