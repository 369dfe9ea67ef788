"""Produces msg-0, msg-1, ... with acks=1 and prints `ACK <partition> <offset> <value>` for each
acknowledged message, flushed at once, so a test can kill the broker at any moment and know
exactly what was acknowledged."""
import argparse, sys
from confluent_kafka import Producer

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--topic", required=True)
ap.add_argument("--count", type=int, default=1_000_000)
ap.add_argument("--acks", default="1")
ap.add_argument("--one-per-batch", action="store_true", help="flush after every message")
args = ap.parse_args()

p = Producer({"bootstrap.servers": args.bootstrap, "acks": args.acks, "linger.ms": 2,
              "enable.idempotence": False, "message.timeout.ms": 4000, "retries": 0,
              "queue.buffering.max.messages": 20000})
out = sys.stdout
def cb(err, msg):
    if err is None:
        out.write(f"ACK {msg.partition()} {msg.offset()} {msg.value().decode()}\n")
        out.flush()
for i in range(args.count):
    while True:
        try:
            p.produce(args.topic, value=f"msg-{i}".encode(), key=str(i % 7).encode(), on_delivery=cb)
            break
        except BufferError:
            p.poll(0.05)
    if args.one_per_batch:
        p.flush(10)
    else:
        p.poll(0)
p.flush(10)
print("DONE", flush=True)
