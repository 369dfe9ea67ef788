"""Partition reassignment through kafka-python's KafkaAdminClient (AlterPartitionReassignments,
ListPartitionReassignments) and Metadata. Prints one JSON line.

  alter --topic T --partition P --replicas 2,3   {"error": name or null}
  cancel --topic T --partition P                 {"error": name or null}
  list                                           {"T-P": {"replicas": [...], "adding": [...], "removing": [...]}}
  wait --topic T --partition P --replicas 2,3    waits (--timeout s) until no move of T-P is in
                                                 progress and Metadata lists exactly those
                                                 replicas, all in sync: {"replicas", "isr", "leader"}
  fill --topic T --mb N                          writes N MB of 10 KB records (confluent-kafka,
                                                 acks=all): {"records": n}
  throttle --topic T --rate R                    Kafka's reassignment throttle, as
                                                 kafka-reassign-partitions --throttle sets it:
                                                 both *.replication.throttled.rate on every node
                                                 and both *.replication.throttled.replicas=* on
                                                 T (confluent-kafka incremental_alter_configs);
                                                 --rate "" removes them all: {"error": null}
  broker-configs --node N                        DescribeConfigs of broker N (kafka-python):
                                                 {name: [value, source]} for the throttle rates
  bad-throttle                                   {"negative": error, "static": error} for
                                                 invalid values and a non-dynamic config
"""
import argparse, json, sys, time

from kafka import TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaConnectionError, NodeNotReadyError

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("command", choices=["alter", "cancel", "list", "wait", "fill", "throttle",
                                    "broker-configs", "bad-throttle"])
ap.add_argument("--topic")
ap.add_argument("--partition", type=int, default=0)
ap.add_argument("--replicas", default="")
ap.add_argument("--timeout", type=float, default=60)
ap.add_argument("--mb", type=float, default=1)
ap.add_argument("--rate", default="")
ap.add_argument("--node", type=int, default=1)
a = ap.parse_args()

admin = KafkaAdminClient(bootstrap_servers=a.bootstrap, request_timeout_ms=30000)
tp = TopicPartition(a.topic, a.partition) if a.topic else None
replicas = [int(r) for r in a.replicas.split(",") if r]


def name(err):
    return None if err is None else getattr(err, "__name__", str(err))


def ongoing():
    out = {}
    for p, r in admin.list_partition_reassignments().items():
        out[f"{p.topic}-{p.partition}"] = {
            "replicas": r["replicas"],
            "adding": r["adding_replicas"],
            "removing": r["removing_replicas"],
        }
    return out


def partition_metadata():
    topics = admin.describe_topics([a.topic])
    for p in topics[0]["partitions"]:
        if p["partition_index"] == a.partition:
            return {"replicas": p["replica_nodes"], "isr": p["isr_nodes"], "leader": p["leader_id"]}
    return None


RATES = ["leader.replication.throttled.rate", "follower.replication.throttled.rate"]
REPLICAS = ["leader.replication.throttled.replicas", "follower.replication.throttled.replicas"]


def node_ids():
    from confluent_kafka.admin import AdminClient

    return sorted(AdminClient({"bootstrap.servers": a.bootstrap}).list_topics(timeout=15).brokers)


if a.command == "fill":
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": a.bootstrap, "acks": "all", "linger.ms": 20,
                  "enable.idempotence": True})
    failed = []
    value = b"x" * 10_000
    n = int(a.mb * 100)
    for i in range(n):
        while True:
            try:
                p.produce(a.topic, value, key=str(i).encode(),
                          on_delivery=lambda e, m: e and failed.append(str(e)))
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    p.flush(60)
    if failed:
        print(f"undelivered: {failed[:3]}", file=sys.stderr, flush=True)
        sys.exit(1)
    print(json.dumps({"records": n}), flush=True)
elif a.command == "throttle":
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

    ca = AdminClient({"bootstrap.servers": a.bootstrap})
    op = AlterConfigOpType.SET if a.rate else AlterConfigOpType.DELETE
    resources = [ConfigResource("broker", str(n), incremental_configs=[
        ConfigEntry(k, a.rate, incremental_operation=op) for k in RATES]) for n in node_ids()]
    resources.append(ConfigResource("topic", a.topic, incremental_configs=[
        ConfigEntry(k, "*", incremental_operation=op) for k in REPLICAS]))
    error = None
    for r in resources:  # librdkafka takes one broker resource per call
        try:
            ca.incremental_alter_configs([r])[r].result(30)
        except Exception as e:  # noqa: BLE001 - reported to the test
            error = f"{r}: {e}"
    print(json.dumps({"error": error}), flush=True)
elif a.command == "broker-configs":
    from kafka.admin import ConfigResource as KpConfigResource, ConfigResourceType

    resp = admin.describe_configs([KpConfigResource(ConfigResourceType.BROKER, str(a.node))],
                                  config_filter="all")
    configs = resp["broker"][str(a.node)]
    out = {k: [v.get("value"), v.get("config_source")] for k, v in configs.items() if k in RATES}
    print(json.dumps(out), flush=True)
elif a.command == "bad-throttle":
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

    ca = AdminClient({"bootstrap.servers": a.bootstrap})
    out = {}
    for label, key, value in [("negative", RATES[0], "-5"), ("static", "num.partitions", "3")]:
        r = ConfigResource("broker", str(node_ids()[0]), incremental_configs=[
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)])
        try:
            ca.incremental_alter_configs([r])[r].result(30)
            out[label] = None
        except Exception as e:  # noqa: BLE001 - reported to the test
            out[label] = str(e)
    print(json.dumps(out), flush=True)
elif a.command in ("alter", "cancel"):
    # Just after a node died, Metadata may still name it the controller: ask again, with a
    # new client (the old one keeps the controller it found).
    deadline = time.time() + a.timeout
    while True:
        try:
            result = admin.alter_partition_reassignments(
                {tp: replicas if a.command == "alter" else None}, timeout_ms=30000
            )
            break
        except (KafkaConnectionError, NodeNotReadyError):
            if time.time() > deadline:
                raise
            time.sleep(0.5)
            admin.close()
            admin = KafkaAdminClient(bootstrap_servers=a.bootstrap, request_timeout_ms=30000)
    print(json.dumps({"error": name(result.get(tp))}), flush=True)
elif a.command == "list":
    print(json.dumps(ongoing()), flush=True)
else:
    deadline = time.time() + a.timeout
    last = None
    while True:
        try:
            moving = ongoing().get(f"{a.topic}-{a.partition}")
            p = partition_metadata()
        except (KafkaConnectionError, NodeNotReadyError, OSError) as e:
            # A node just died (the controller Metadata names may be it): a new client.
            last = {"error": str(e)}
            if time.time() > deadline:
                print(f"not moved within {a.timeout}s: {last}", file=sys.stderr, flush=True)
                sys.exit(1)
            time.sleep(0.5)
            admin.close()
            admin = KafkaAdminClient(bootstrap_servers=a.bootstrap, request_timeout_ms=30000)
            continue
        last = {"moving": moving, "metadata": p}
        if (
            moving is None
            and p is not None
            and p["replicas"] == replicas
            and sorted(p["isr"]) == sorted(replicas)
            and p["leader"] in replicas
        ):
            print(json.dumps({"replicas": p["replicas"], "isr": p["isr"], "leader": p["leader"]}), flush=True)
            break
        if time.time() > deadline:
            print(f"not moved within {a.timeout}s: {last}", file=sys.stderr, flush=True)
            sys.exit(1)
        time.sleep(0.3)
