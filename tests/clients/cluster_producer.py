"""A producer for cluster tests (confluent-kafka / librdkafka): produces `<prefix>-<i>` (i zero
padded to 8 digits, so no value is a prefix of another) to partition i % --partitions, at about
--rate messages per second, until --count messages (0: no limit) or SIGTERM/SIGINT. acks=all
(or --acks 1: then not idempotent, which needs acks=all), idempotent unless --no-idempotence,
uncompressed (values are readable in the segment files).

Prints, flushed at once, one line per delivery report:
  ACK <partition> <offset> <value> <wall-clock ms of the report>
  ERR <partition> <value> <error>
and at the end (after flushing for up to --flush-s) one JSON line:
  {"produced": N, "acked": N, "failed": N, "unflushed": N, "errors": [..], "fatal": null|"..."}
--debug <contexts> or RDKAFKA_DEBUG=<contexts> (e.g. topic,metadata,eos,msg,broker) turns on
librdkafka's debug log.
Client errors go to stderr."""
import argparse, json, os, signal, sys, time
from confluent_kafka import Producer

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--topic", required=True)
ap.add_argument("--partitions", type=int, required=True)
ap.add_argument("--count", type=int, default=0)
ap.add_argument("--rate", type=float, default=1000)
ap.add_argument("--prefix", default="v")
ap.add_argument("--timeout-ms", type=int, default=30000, help="message.timeout.ms")
ap.add_argument("--no-idempotence", action="store_true")
ap.add_argument("--acks", default="all", choices=["all", "1"])
ap.add_argument("--flush-s", type=float, default=30)
ap.add_argument("--debug", default=os.environ.get("RDKAFKA_DEBUG", ""),
                help="librdkafka debug contexts (its log goes to stderr)")
a = ap.parse_args()

stop = False


def on_signal(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)

out = sys.stdout
fatal = None


def on_error(e):
    global fatal
    print(f"producer client error: {e}", file=sys.stderr, flush=True)
    if e.fatal():
        fatal = str(e)


p = Producer({
    "bootstrap.servers": a.bootstrap,
    "acks": a.acks,
    "enable.idempotence": a.acks == "all" and not a.no_idempotence,
    "compression.type": "none",
    "linger.ms": 5,
    "message.timeout.ms": a.timeout_ms,
    "retry.backoff.ms": 100,
    "retry.backoff.max.ms": 500,
    "reconnect.backoff.ms": 100,
    "reconnect.backoff.max.ms": 500,
    "error_cb": on_error,
    **({"debug": a.debug} if a.debug else {}),
})
acked = failed = 0
errors = []


def report(err, msg):
    global acked, failed
    if err is None:
        acked += 1
        out.write(f"ACK {msg.partition()} {msg.offset()} {msg.value().decode()} {int(time.time() * 1000)}\n")
    else:
        failed += 1
        if len(errors) < 10:
            errors.append(str(err))
        out.write(f"ERR {msg.partition()} {msg.value().decode()} {err.name()}\n")
    out.flush()


start = time.time()
i = 0
while not stop and fatal is None and (a.count == 0 or i < a.count):
    try:
        p.produce(a.topic, value=f"{a.prefix}-{i:08d}".encode(), partition=i % a.partitions,
                  on_delivery=report)
    except BufferError:
        p.poll(0.05)
        continue
    i += 1
    p.poll(0)
    # Pace to --rate; serve delivery reports while waiting so their timestamps are accurate.
    while not stop:
        ahead = i / a.rate - (time.time() - start)
        if ahead <= 0:
            break
        p.poll(min(ahead, 0.05))
left = p.flush(a.flush_s)
out.write(json.dumps({"produced": i, "acked": acked, "failed": failed, "unflushed": left,
                      "errors": errors, "fatal": fatal}) + "\n")
out.flush()
