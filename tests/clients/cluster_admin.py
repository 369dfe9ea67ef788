"""Admin helper for a sluice cluster (confluent-kafka AdminClient).
  create TOPIC --partitions N --rf R   creates the topic, then waits until Metadata names a leader
                                       among the brokers for every partition, with R replicas;
                                       prints `ok`
  describe [TOPIC]                     prints one Metadata response as JSON:
      {"controller": ID, "brokers": {"ID": "HOST:PORT"},
       "partitions": {"P": {"leader": ID, "replicas": [..], "isr": [..], "error": null}}}
  delete TOPIC                         DeleteTopics; prints `ok`
  delete-records TOPIC --partition P --offset O
                                       DeleteRecords (retried while the cluster moves leaders);
                                       prints {"low_watermark": N}
Exits non-zero (with the reason on stderr) when the cluster does not answer in --timeout s.
RDKAFKA_DEBUG=<contexts> (e.g. admin,metadata,broker) turns on librdkafka's debug log."""
import argparse, json, os, sys, time
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--timeout", type=float, default=30)
ap.add_argument("op", choices=["create", "describe", "delete", "delete-records"])
ap.add_argument("topic", nargs="?")
ap.add_argument("--partitions", type=int, default=1)
ap.add_argument("--rf", type=int, default=3)
ap.add_argument("--partition", type=int, default=0)
ap.add_argument("--offset", type=int, default=-1)
ap.add_argument("config", nargs="*", help="k=v topic configs (create)")
a = ap.parse_args()
admin = AdminClient({"bootstrap.servers": a.bootstrap, "reconnect.backoff.max.ms": 500,
                     **({"debug": os.environ["RDKAFKA_DEBUG"]} if os.environ.get("RDKAFKA_DEBUG") else {})})
deadline = time.time() + a.timeout


def describe(topic):
    md = admin.list_topics(topic, timeout=max(1.0, min(10.0, deadline - time.time())))
    out = {"controller": md.controller_id,
           "brokers": {str(b.id): f"{b.host}:{b.port}" for b in md.brokers.values()},
           "partitions": {}}
    t = md.topics.get(topic) if topic else None
    if t is not None:
        out["error"] = str(t.error) if t.error is not None else None
        for p in t.partitions.values():
            out["partitions"][str(p.id)] = {"leader": p.leader, "replicas": list(p.replicas),
                                            "isr": list(p.isrs),
                                            "error": str(p.error) if p.error is not None else None}
    return out


if a.op == "create":
    cfg = dict(kv.split("=", 1) for kv in a.config)
    fut = admin.create_topics([NewTopic(a.topic, a.partitions, a.rf, config=cfg)],
                              operation_timeout=a.timeout)[a.topic]
    fut.result(a.timeout)
    while True:
        try:
            d = describe(a.topic)
            ready = (len(d["partitions"]) == a.partitions and
                     all(str(p["leader"]) in d["brokers"] and len(p["replicas"]) == a.rf
                         for p in d["partitions"].values()))
            if ready:
                break
        except KafkaException as e:
            d = str(e)
        if time.time() > deadline:
            sys.exit(f"topic {a.topic}: not every partition has a leader and {a.rf} replicas "
                     f"after {a.timeout} s: {d}")
        time.sleep(0.1)
    print("ok", flush=True)
elif a.op == "describe":
    while True:
        try:
            print(json.dumps(describe(a.topic)), flush=True)
            break
        except KafkaException as e:
            if time.time() > deadline:
                sys.exit(f"no Metadata within {a.timeout} s: {e}")
            time.sleep(0.1)
elif a.op == "delete":
    admin.delete_topics([a.topic], operation_timeout=a.timeout)[a.topic].result(a.timeout)
    print("ok", flush=True)
elif a.op == "delete-records":
    while True:
        try:
            fut = admin.delete_records([TopicPartition(a.topic, a.partition, a.offset)],
                                       operation_timeout=a.timeout)
            low = list(fut.values())[0].result(a.timeout)
            print(json.dumps({"low_watermark": low.low_watermark}), flush=True)
            break
        except KafkaException as e:
            if time.time() > deadline:
                sys.exit(f"DeleteRecords failed for {a.timeout} s: {e}")
            time.sleep(0.2)
