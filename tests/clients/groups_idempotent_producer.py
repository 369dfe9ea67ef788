"""An idempotent producer (enable.idempotence=true, acks=all) producing `v-0`, `v-1`, ... in order
to one partition-keyed topic. It rides through broker restarts (long message timeout, librdkafka
retries). Prints `ACK <partition> <offset> <value>` per acknowledged message and a final JSON
line {"acked": N, "errors": [...]}."""
import argparse, json, sys, time
from confluent_kafka import Producer

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--topic", required=True)
ap.add_argument("--count", type=int, default=20000)
ap.add_argument("--rate", type=int, default=2000, help="messages per second, roughly")
args = ap.parse_args()

p = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": True, "acks": "all",
              "linger.ms": 5, "message.timeout.ms": 120000, "retry.backoff.ms": 100,
              "reconnect.backoff.max.ms": 500, "max.in.flight.requests.per.connection": 5})
out = sys.stdout
errors = []
acked = 0
def cb(err, msg):
    global acked
    if err is not None:
        errors.append(str(err))
    else:
        acked += 1
        out.write(f"ACK {msg.partition()} {msg.offset()} {msg.value().decode()}\n")
        out.flush()
start = time.time()
for i in range(args.count):
    while True:
        try:
            p.produce(args.topic, value=f"v-{i}".encode(), key=str(i % 3).encode(), on_delivery=cb)
            break
        except BufferError:
            p.poll(0.05)
    p.poll(0)
    ahead = i - (time.time() - start) * args.rate
    if ahead > 0:
        time.sleep(ahead / args.rate)
left = p.flush(150)
out.write(json.dumps({"acked": acked, "unflushed": left, "errors": errors[:5]}) + "\n")
out.flush()
