"""Transactions with kafka-python (an implementation independent of librdkafka): a committed,
an aborted and another committed transaction, then what a read_committed and a
read_uncommitted consumer see. Prints one JSON line."""
import argparse, json, sys, time
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--topic", default="kp-tx")
args = ap.parse_args()

admin = KafkaAdminClient(bootstrap_servers=args.bootstrap)
admin.create_topics([NewTopic(args.topic, 1, 1)])
admin.close()

p = KafkaProducer(bootstrap_servers=args.bootstrap, transactional_id="kp-tx",
                  enable_idempotence=True)
p.init_transactions()
p.begin_transaction()
for i in range(5):
    p.send(args.topic, f"c-{i}".encode())
p.commit_transaction()
p.begin_transaction()
for i in range(5):
    p.send(args.topic, f"a-{i}".encode())
p.flush()
p.abort_transaction()
p.begin_transaction()
for i in range(3):
    p.send(args.topic, f"c2-{i}".encode())
p.commit_transaction()
p.close()


def read(isolation):
    c = KafkaConsumer(bootstrap_servers=args.bootstrap, isolation_level=isolation,
                      enable_auto_commit=False, consumer_timeout_ms=3000)
    tp = TopicPartition(args.topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    got = [m.value.decode() for m in c]
    end = c.end_offsets([tp])[tp]
    c.close()
    return got, end


committed, lso = read("read_committed")
uncommitted, hw = read("read_uncommitted")
sys.stdout.write(json.dumps({"committed": committed, "uncommitted": uncommitted,
                             "lso": lso, "hw": hw}) + "\n")
