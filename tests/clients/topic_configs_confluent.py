"""Topic configs with confluent-kafka (librdkafka), the way librdkafka's admin tests use them:
creates a topic with 15 Kafka topic configs, has bad ones refused, alters compression.type and
flush.ms incrementally, describes with synonyms, produces uncompressed batches to a zstd topic and
consumes the same records back, stamps LogAppendTime, gets INVALID_TIMESTAMP for a record two
hours ahead, and adds partitions with explicit replica assignments.
Prints one JSON line. Usage: topic_configs_confluent.py --bootstrap HOST:PORT"""
import argparse, json, time
from confluent_kafka import (Consumer, KafkaException, Producer, TIMESTAMP_CREATE_TIME,
                             TIMESTAMP_LOG_APPEND_TIME)
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ConfigSource, NewPartitions, NewTopic, ResourceType)

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
a = ap.parse_args()
admin = AdminClient({"bootstrap.servers": a.bootstrap})
out = {}

MANY = {
    "cleanup.policy": "delete",
    "compression.type": "lz4",
    "delete.retention.ms": "900",
    "file.delete.delay.ms": "30000",
    "flush.messages": "1000",
    "flush.ms": "5000",
    "index.interval.bytes": "8192",
    "max.message.bytes": "2000000",
    "message.timestamp.type": "CreateTime",
    "min.insync.replicas": "1",
    "preallocate": "false",
    "retention.bytes": "104857600",
    "retention.ms": "86400000",
    "segment.bytes": "1048576",
    "unclean.leader.election.enable": "false",
}


def create(name, config, partitions=1):
    f = admin.create_topics([NewTopic(name, partitions, 1, config=config)])[name]
    try:
        f.result(30)
        return "ok"
    except KafkaException as e:
        err = e.args[0]
        return f"{err.name()}: {err.str()}"


out["create_many"] = create("cfg-many", MANY)
out["create_unknown"] = create("cfg-bad", {"retention.ms": "1000", "dummy.doesntexist": "x"})
out["create_small_segment"] = create("cfg-bad", {"segment.bytes": "1000"})
out["create_compact"] = create("cfg-compact", {"cleanup.policy": "compact"})


def source(s):
    return ConfigSource(s).name


def entry(v):
    return {"value": v.value, "source": source(v.source), "read_only": v.is_read_only,
            "synonyms": [[s.name, s.value, source(s.source)] for s in v.synonyms.values()]}


def describe(name):
    r = ConfigResource(ResourceType.TOPIC, name)
    return admin.describe_configs([r])[r].result(30)


before = describe("cfg-many")
out["described_count"] = len(before)
out["before"] = {k: entry(before[k]) for k in ("compression.type", "flush.ms", "retention.ms",
                                               "segment.ms", "max.message.bytes",
                                               "flush.messages", "preallocate")}

# librdkafka's admin test alters compression.type and flush.ms (and friends) incrementally.
res = ConfigResource(ResourceType.TOPIC, "cfg-many", incremental_configs=[
    ConfigEntry("compression.type", "zstd", incremental_operation=AlterConfigOpType.SET),
    ConfigEntry("flush.ms", "1000", incremental_operation=AlterConfigOpType.SET),
    ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.APPEND),
    ConfigEntry("max.compaction.lag.ms", "3600000", incremental_operation=AlterConfigOpType.SET),
])
admin.incremental_alter_configs([res])[res].result(30)
after = describe("cfg-many")
out["after"] = {k: entry(after[k]) for k in ("compression.type", "flush.ms", "retention.ms",
                                             "cleanup.policy", "max.compaction.lag.ms")}
bad = ConfigResource(ResourceType.TOPIC, "cfg-many", incremental_configs=[
    ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND)])
try:
    admin.incremental_alter_configs([bad])[bad].result(30)
    out["append_compact"] = "ok"
except KafkaException as e:
    out["append_compact"] = f"{e.args[0].name()}: {e.args[0].str()}"

# Uncompressed batches to a zstd topic: the broker recompresses; the records come back as sent.
out["create_zstd"] = create("cfg-zstd", {"compression.type": "zstd"})
p = Producer({"bootstrap.servers": a.bootstrap, "compression.type": "none", "linger.ms": 20,
              "acks": "all"})
sent = []
errors = []


def report(err, msg):
    if err is not None:
        errors.append(err.name())


for i in range(300):
    key, value = f"k{i}".encode(), (f"value-{i}-" * 10).encode()
    p.produce("cfg-zstd", value=value, key=key, headers=[("n", str(i).encode())],
              on_delivery=report)
    sent.append([key.decode(), value.decode(), str(i)])
p.flush(30)
out["zstd_produce_errors"] = errors[:]


def consume(topic, n):
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": f"g-{topic}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got = []
    deadline = time.time() + 30
    while len(got) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        got.append(m)
    c.close()
    return got


got = consume("cfg-zstd", len(sent))
out["zstd_consumed_equal"] = [[m.key().decode(), m.value().decode(), m.headers()[0][1].decode()]
                              for m in got] == sent
out["zstd_offsets"] = [m.offset() for m in got] == list(range(len(sent)))

# LogAppendTime: the broker's time replaces the producer's.
out["create_lat"] = create("cfg-lat", {"message.timestamp.type": "LogAppendTime"})
p.produce("cfg-lat", value=b"old", timestamp=1000)
p.flush(30)
t0 = int(time.time() * 1000)
got = consume("cfg-lat", 1)
ts_type, ts = got[0].timestamp()
out["lat_type"] = {TIMESTAMP_LOG_APPEND_TIME: "LogAppendTime",
                   TIMESTAMP_CREATE_TIME: "CreateTime"}.get(ts_type, ts_type)
out["lat_recent"] = abs(ts - t0) < 60_000

# Kafka 4's message.timestamp.after.max.ms (1 h): a record two hours ahead is refused.
errors.clear()
p.produce("cfg-zstd", value=b"future", timestamp=int(time.time() * 1000) + 2 * 3600 * 1000,
          on_delivery=report)
p.flush(30)
out["future_timestamp"] = errors[:]

# CreatePartitions with explicit replica assignments (a single broker: only its own id).
def grow(name, count, assignment):
    f = admin.create_partitions([NewPartitions(name, count, replica_assignment=assignment)])[name]
    try:
        f.result(30)
        return "ok"
    except KafkaException as e:
        return f"{e.args[0].name()}: {e.args[0].str()}"


out["grow_other_broker"] = grow("cfg-zstd", 2, [[2]])
out["grow_own_broker"] = grow("cfg-zstd", 3, [[1], [1]])
print(json.dumps(out), flush=True)
