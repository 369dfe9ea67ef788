"""Topic configs with kafka-python (an independent client): create a topic with Kafka configs,
describe every config with synonyms and types, alter with AlterConfigs and
IncrementalAlterConfigs, have bad values refused, add a partition with an explicit assignment.
Prints one JSON line. Usage: topic_configs_kafka_python.py --bootstrap HOST:PORT"""
import argparse, json
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import (ConfigResource, ConfigResourceType, KafkaAdminClient, NewPartitions,
                         NewTopic)
from kafka.errors import KafkaError

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
a = ap.parse_args()
admin = KafkaAdminClient(bootstrap_servers=a.bootstrap, request_timeout_ms=15000)
out = {}
T = "kp-cfg"


def outcome(f):
    """"ok", or the error: raised, or (alter_configs) returned per resource."""
    try:
        r = f()
    except (KafkaError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    if isinstance(r, dict):
        errors = [str(v) for by_name in r.values() if isinstance(by_name, dict)
                  for v in by_name.values()
                  if v is not None and str(v) != "OK" and not str(v).startswith("NoError")]
        return errors[0] if errors else "ok"
    return "ok"


out["create"] = outcome(lambda: admin.create_topics([NewTopic(T, 1, 1, topic_configs={
    "retention.ms": "3600000",
    "compression.type": "gzip",
    "message.timestamp.type": "LogAppendTime",
    "segment.bytes": "2097152",
    "min.cleanable.dirty.ratio": "0.25",
    "leader.replication.throttled.replicas": "0:1",
})]))
out["create_bad"] = outcome(lambda: admin.create_topics([NewTopic("kp-bad", 1, 1, topic_configs={
    "compression.type": "brotli"})]))


def describe():
    r = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, T)],
                               include_synonyms=True, config_filter="all")
    return r["topic"][T]


d = describe()
out["count"] = len(d)
pick = lambda d, k: {"value": d[k]["value"], "source": d[k]["config_source"],
                     "type": d[k].get("config_type"),
                     "synonyms": [[s["name"], s["value"], s["source"]] for s in d[k]["synonyms"]]}
out["flush_defaults"] = {k: [d[k]["value"], d[k]["config_source"]]
                         for k in ("flush.ms", "flush.messages")}
out["described"] = {k: pick(d, k) for k in ("retention.ms", "compression.type", "segment.ms",
                                            "min.cleanable.dirty.ratio",
                                            "leader.replication.throttled.replicas")}

# IncrementalAlterConfigs (kafka-python uses it when the broker has it) ...
out["alter_incremental"] = outcome(lambda: admin.alter_configs([ConfigResource(
    ConfigResourceType.TOPIC, T, configs={"compression.type": "snappy", "flush.ms": "2000",
                                          "retention.ms": ("DELETE", None)})]))
d = describe()
out["after_incremental"] = {k: [d[k]["value"], d[k]["config_source"]]
                            for k in ("compression.type", "flush.ms", "retention.ms")}
# ... and the legacy AlterConfigs, which replaces the overrides (kafka-python sends the other
# modified ones along).
out["alter_legacy"] = outcome(lambda: admin.alter_configs([ConfigResource(
    ConfigResourceType.TOPIC, T, configs={"segment.ms": "3600000"})], incremental=False))
d = describe()
out["after_legacy"] = {k: [d[k]["value"], d[k]["config_source"]]
                       for k in ("segment.ms", "compression.type", "flush.ms")}
out["alter_bad"] = outcome(lambda: admin.alter_configs([ConfigResource(
    ConfigResourceType.TOPIC, T, configs={"min.insync.replicas": "0"})]))
out["grow"] = outcome(lambda: admin.create_partitions({T: NewPartitions(2, [[1]])}))
out["grow_bad"] = outcome(lambda: admin.create_partitions({T: NewPartitions(3, [[5]])}))

# Uncompressed records to the (now snappy, LogAppendTime) topic come back as sent, stamped.
p = KafkaProducer(bootstrap_servers=a.bootstrap, compression_type=None, acks="all")
sent = [(f"k{i}".encode(), f"v{i}".encode() * 50) for i in range(50)]
for k, v in sent:
    p.send(T, key=k, value=v, partition=0, timestamp_ms=1000)
p.flush(30)
p.close()
c = KafkaConsumer(bootstrap_servers=a.bootstrap, auto_offset_reset="earliest",
                  enable_auto_commit=False, consumer_timeout_ms=10000)
c.assign([TopicPartition(T, 0)])
got = []
for m in c:
    got.append(m)
    if len(got) == len(sent):
        break
c.close()
out["consumed_equal"] = [(m.key, m.value) for m in got] == sent
out["timestamp_types"] = sorted({m.timestamp_type for m in got})
out["timestamps_stamped"] = all(m.timestamp > 1000 for m in got)
admin.close()
print(json.dumps(out), flush=True)
