"""Small admin helper: `create TOPIC PARTITIONS [k=v ...]`, `alter TOPIC k=v ...`,
`describe TOPIC`, `delete TOPIC`; prints `ok` or the config as JSON."""
import argparse, json
from confluent_kafka.admin import AdminClient, NewTopic, ConfigResource, ConfigEntry, AlterConfigOpType, ResourceType

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("op")
ap.add_argument("topic")
ap.add_argument("rest", nargs="*")
a = ap.parse_args()
admin = AdminClient({"bootstrap.servers": a.bootstrap})
if a.op == "create":
    cfg = dict(kv.split("=", 1) for kv in a.rest[1:])
    admin.create_topics([NewTopic(a.topic, int(a.rest[0]), 1, config=cfg)])[a.topic].result(30)
    print("ok")
elif a.op == "alter":
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in (kv.split("=", 1) for kv in a.rest)]
    r = ConfigResource(ResourceType.TOPIC, a.topic, incremental_configs=entries)
    admin.incremental_alter_configs([r])[r].result(30)
    print("ok")
elif a.op == "describe":
    r = ConfigResource(ResourceType.TOPIC, a.topic)
    cfg = list(admin.describe_configs([r]).values())[0].result(30)
    print(json.dumps({k: v.value for k, v in cfg.items()}))
elif a.op == "delete":
    admin.delete_topics([a.topic])[a.topic].result(30)
    print("ok")
