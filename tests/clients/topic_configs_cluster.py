"""Topic configs in a sluice cluster (confluent-kafka): creates TOPIC with an explicit replica
assignment (partition 0 on REPLICAS, first = preferred leader) and compression.type=zstd,
message.timestamp.type=LogAppendTime; waits for a leader; produces COUNT uncompressed records
(acks=all) and consumes them back. Prints one JSON line:
  {"create": "ok"|error, "replicas": [...], "errors": [...], "consumed_equal": bool,
   "timestamp_types": [...], "bad_assignment": error}
Usage: topic_configs_cluster.py --bootstrap H:P,... --replicas 2,3,1 TOPIC COUNT"""
import argparse, json, time
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--replicas", required=True)
ap.add_argument("topic")
ap.add_argument("count", type=int)
a = ap.parse_args()
replicas = [int(x) for x in a.replicas.split(",")]
admin = AdminClient({"bootstrap.servers": a.bootstrap})
out = {}


def create(name, assignment):
    f = admin.create_topics([NewTopic(name, len(assignment), -1, replica_assignment=assignment, config={
        "compression.type": "zstd", "message.timestamp.type": "LogAppendTime"})],
        operation_timeout=30)[name]
    try:
        f.result(30)
        return "ok"
    except KafkaException as e:
        return f"{e.args[0].name()}: {e.args[0].str()}"


out["create"] = create(a.topic, [replicas])
out["bad_assignment"] = create(a.topic + "-bad", [[1, 9]])
deadline = time.time() + 30
while time.time() < deadline:
    t = admin.list_topics(a.topic, timeout=10).topics[a.topic]
    p = t.partitions.get(0)
    if p is not None and p.leader in replicas:
        out["replicas"] = list(p.replicas)
        break
    time.sleep(0.1)

prod = Producer({"bootstrap.servers": a.bootstrap, "compression.type": "none", "acks": "all",
                 "linger.ms": 10, "enable.idempotence": True})
errors = []
sent = [(f"k{i}", f"value-{i}-" * 8) for i in range(a.count)]
for k, v in sent:
    prod.produce(a.topic, key=k, value=v, partition=0,
                 on_delivery=lambda err, m: err and errors.append(err.name()))
prod.flush(60)
out["errors"] = errors
c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "cfg-cluster",
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.assign([TopicPartition(a.topic, 0, 0)])
got = []
deadline = time.time() + 60
while len(got) < len(sent) and time.time() < deadline:
    m = c.poll(0.5)
    if m is not None and not m.error():
        got.append(m)
c.close()
out["consumed_equal"] = [(m.key().decode(), m.value().decode()) for m in got] == sent
out["timestamp_types"] = sorted({m.timestamp()[0] for m in got})
print(json.dumps(out), flush=True)
