"""kafka-python (an independent protocol implementation) against sluice: same checks as the
librdkafka script."""
import argparse, json, time
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic, ConfigResource, ConfigResourceType

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--topic", default="rt-kafka-python")
ap.add_argument("--per-codec", type=int, default=200)
args = ap.parse_args()
bs, topic = args.bootstrap, args.topic
CODECS = [None, "gzip", "snappy", "lz4", "zstd"]
PARTS = 2

admin = KafkaAdminClient(bootstrap_servers=bs)
admin.create_topics([NewTopic(topic, PARTS, 1)])
assert topic in admin.list_topics()

sent = {}
t_before = int(time.time() * 1000) - 1
for codec in CODECS:
    p = KafkaProducer(bootstrap_servers=bs, compression_type=codec, acks="all",
                      enable_idempotence=False, linger_ms=5)
    futs = []
    for i in range(args.per_codec):
        key = f"{codec}-k{i % 11}".encode()
        value = f"{codec}-v{i}".encode() * (1 + i % 7)
        headers = [("codec", str(codec).encode()), ("i", str(i).encode())]
        futs.append((p.send(topic, key=key, value=value, headers=headers), key, value, headers))
    p.flush(30)
    for f, key, value, headers in futs:
        md = f.get(timeout=30)
        sent[(md.partition, md.offset)] = (key, value, headers)
    p.close()
assert len(sent) == len(CODECS) * args.per_codec

c = KafkaConsumer(bootstrap_servers=bs, enable_auto_commit=False, auto_offset_reset="earliest",
                  consumer_timeout_ms=5000, check_crcs=True)
tps = [TopicPartition(topic, p) for p in range(PARTS)]
c.assign(tps)
c.seek_to_beginning()
got = {}
for m in c:
    k = (m.partition, m.offset)
    assert k not in got, f"duplicate {k}"
    got[k] = (m.key, m.value, [(h[0], h[1]) for h in m.headers])
    if len(got) == len(sent):
        break
assert got == sent, f"consumed {len(got)} != produced {len(sent)}"

ends = c.end_offsets(tps)
begins = c.beginning_offsets(tps)
for tp in tps:
    n = sum(1 for (pp, _) in got if pp == tp.partition)
    assert ends[tp] == n and begins[tp] == 0, (tp, ends[tp], begins[tp], n)
times = c.offsets_for_times({tp: t_before for tp in tps})
assert all(v is not None and v.offset == 0 for v in times.values()), times
c.close()

admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.bytes": "1073741824"})])
desc = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
flat = json.dumps(desc, default=str)
assert "1073741824" in flat, flat[:2000]

dirs = json.dumps(admin.describe_log_dirs(), default=str)
assert topic in dirs, dirs[:2000]

admin.delete_topics([topic])
deadline = time.time() + 10
while topic in admin.list_topics():
    assert time.time() < deadline
    time.sleep(0.2)
print(json.dumps({"produced": len(sent), "consumed": len(got)}))
