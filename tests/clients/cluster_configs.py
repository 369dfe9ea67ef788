"""Topic configs in a sluice cluster: changes one topic config through one node (confluent-kafka
incremental_alter_configs), then reads it back through every node given (DescribeConfigs with
confluent-kafka, and with kafka-python as an independent client). Prints one JSON line:
  {"altered_via": "HOST:PORT", "librdkafka": {"HOST:PORT": VALUE}, "kafka_python": {...}}
Usage: cluster_configs.py --via HOST:PORT --nodes H:P,H:P,H:P TOPIC KEY VALUE"""
import argparse, json
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource
from kafka.admin import ConfigResource as KpConfigResource, ConfigResourceType, KafkaAdminClient

ap = argparse.ArgumentParser()
ap.add_argument("--via", required=True)
ap.add_argument("--nodes", required=True)
ap.add_argument("topic")
ap.add_argument("key")
ap.add_argument("value")
a = ap.parse_args()

res = ConfigResource("topic", a.topic, incremental_configs=[
    ConfigEntry(a.key, a.value, incremental_operation=AlterConfigOpType.SET)])
via = AdminClient({"bootstrap.servers": a.via})  # must outlive the future
via.incremental_alter_configs([res])[res].result(30)

out = {"altered_via": a.via, "librdkafka": {}, "kafka_python": {}}
for node in a.nodes.split(","):
    r = ConfigResource("topic", a.topic)
    one = AdminClient({"bootstrap.servers": node})
    got = one.describe_configs([r])[r].result(15)
    out["librdkafka"][node] = got[a.key].value
    # kafka-python asks "any" broker; with one bootstrap node that is this node.
    kp = KafkaAdminClient(bootstrap_servers=node, request_timeout_ms=15000)
    try:
        resp = kp.describe_configs([KpConfigResource(ConfigResourceType.TOPIC, a.topic)],
                                   config_filter="all")
        out["kafka_python"][node] = resp["topic"][a.topic].get(a.key, {}).get("value")
    finally:
        kp.close()
print(json.dumps(out), flush=True)
