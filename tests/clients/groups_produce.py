"""Creates --topic with --partitions partitions (if missing) and produces --count messages
`<prefix>-<i>` round-robin over the partitions (explicit partition), acks=all. Prints
{"produced": N, "per_partition": {...}}."""
import argparse, json
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--topic", required=True)
ap.add_argument("--partitions", type=int, default=6)
ap.add_argument("--count", type=int, default=600)
ap.add_argument("--prefix", default="m")
ap.add_argument("--start", type=int, default=0)
args = ap.parse_args()

admin = AdminClient({"bootstrap.servers": args.bootstrap})
md = admin.list_topics(timeout=10)
if args.topic not in md.topics or md.topics[args.topic].error is not None:
    fs = admin.create_topics([NewTopic(args.topic, num_partitions=args.partitions, replication_factor=1)])
    for f in fs.values():
        try:
            f.result(10)
        except Exception as e:  # already exists is fine
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise
p = Producer({"bootstrap.servers": args.bootstrap, "acks": "all", "linger.ms": 5})
per = {}
errors = []
def cb(err, msg):
    if err is not None:
        errors.append(str(err))
    else:
        per[msg.partition()] = per.get(msg.partition(), 0) + 1
for i in range(args.start, args.start + args.count):
    p.produce(args.topic, value=f"{args.prefix}-{i}".encode(), partition=i % args.partitions, on_delivery=cb)
    p.poll(0)
p.flush(30)
print(json.dumps({"produced": sum(per.values()), "per_partition": per, "errors": errors[:5]}))
