"""ElectLeaders through confluent-kafka's AdminClient (librdkafka): prints one JSON line,
{"partition": error name or null} for partitions 0..--partitions of --topic, or the error of
the whole request as {"error": name}.
"""
import argparse, json

from confluent_kafka import ElectionType, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--topic", required=True)
ap.add_argument("--partitions", type=int, default=1)
ap.add_argument("--type", choices=["preferred", "unclean"], default="preferred")
a = ap.parse_args()

admin = AdminClient({"bootstrap.servers": a.bootstrap})
kind = ElectionType.PREFERRED if a.type == "preferred" else ElectionType.UNCLEAN
parts = [TopicPartition(a.topic, p) for p in range(a.partitions)]
try:
    result = admin.elect_leaders(kind, parts).result(30)
except KafkaException as e:
    print(json.dumps({"error": e.args[0].name()}), flush=True)
else:
    out = {}
    for tp, err in result.items():
        if err is not None and not hasattr(err, "name"):
            err = err.args[0]  # a KafkaException wrapping the KafkaError
        out[str(tp.partition)] = None if err is None else err.name()
    print(json.dumps(out), flush=True)
