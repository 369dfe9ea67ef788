"""A confluent-kafka (librdkafka) member of consumer group --group for cluster tests: subscribes to
--topic, consumes, commits the offsets it consumed up to synchronously (explicit offsets: the
offset after the last message it consumed of each partition), closes (LeaveGroup) and exits.

--limit P:N,...  consume at most N messages of partition P (it is paused once it has them;
                 messages fetched beyond the limit are dropped, neither consumed nor committed);
                 stops once every limited partition has its N messages.
--expect N       stops once N messages were consumed in all, after polling --linger-s more
                 seconds (so a message delivered twice or past the end would be seen).

Prints one JSON object per line, flushed at once:
  {"event": "assign", "partitions": [..]}
  {"event": "committed_at_assign", "offsets": {"P": OFFSET}}   OffsetFetch (librdkafka's
      Consumer.committed) for the first assignment; -1001 means none committed
  {"event": "msg", "p": P, "o": OFFSET, "v": VALUE}
  {"event": "commit", "offsets": {"P": OFFSET}}                 the synchronous commit succeeded
  {"event": "done", "count": N, "dropped": N}
Exits non-zero (reason on stderr) if the commit fails or the target is not met in --timeout s.
RDKAFKA_DEBUG=<contexts> (e.g. cgrp,fetch) turns on librdkafka's debug log."""
import argparse, json, os, sys, time
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--topic", required=True)
ap.add_argument("--group", required=True)
ap.add_argument("--limit", default=None)
ap.add_argument("--expect", type=int, default=None)
ap.add_argument("--linger-s", type=float, default=2.0)
ap.add_argument("--timeout", type=float, default=40)
a = ap.parse_args()
assert (a.limit is None) != (a.expect is None), "give one of --limit and --expect"
limits = {int(p): int(n) for p, n in (kv.split(":") for kv in a.limit.split(","))} if a.limit else {}
deadline = time.time() + a.timeout


def emit(**kv):
    sys.stdout.write(json.dumps(kv) + "\n")
    sys.stdout.flush()


c = Consumer({
    "bootstrap.servers": a.bootstrap,
    "group.id": a.group,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 500,
    "topic.metadata.refresh.interval.ms": 2000,
    "reconnect.backoff.ms": 100,
    "reconnect.backoff.max.ms": 500,
    "retry.backoff.ms": 100,
    "retry.backoff.max.ms": 500,
    "enable.partition.eof": False,
    "error_cb": lambda e: print(f"consumer client error: {e}", file=sys.stderr, flush=True),
    **({"debug": os.environ["RDKAFKA_DEBUG"]} if os.environ.get("RDKAFKA_DEBUG") else {}),
})
c.subscribe([a.topic], on_assign=lambda _c, ps: emit(event="assign",
                                                       partitions=sorted(p.partition for p in ps)))

consumed = {}   # partition -> count
next_offset = {}  # partition -> offset after the last consumed message
count = dropped = 0
fetched_committed = False
reached_at = None


def finished():
    global reached_at
    if limits:
        return all(consumed.get(p, 0) >= n for p, n in limits.items())
    if count >= a.expect:
        reached_at = reached_at or time.time()
        return time.time() - reached_at >= a.linger_s
    return False


while not finished():
    if time.time() > deadline:
        sys.exit(f"timed out after {a.timeout} s: consumed {consumed} (limits {limits}, expected "
                 f"{a.expect}), assignment {c.assignment()}")
    m = c.poll(0.2)
    if not fetched_committed and c.assignment():
        fetched_committed = True
        # The group coordinator may move right now (a preferred-leader hand-off of its
        # __consumer_offsets partition): NOT_COORDINATOR is retriable, as for any application.
        while True:
            try:
                got = c.committed(c.assignment(), timeout=max(1.0, deadline - time.time()))
                break
            except KafkaException as e:
                err = e.args[0]
                coordinator_moved = err.code() in (KafkaError.NOT_COORDINATOR,
                                                   KafkaError.COORDINATOR_NOT_AVAILABLE,
                                                   KafkaError.COORDINATOR_LOAD_IN_PROGRESS)
                if not (err.retriable() or coordinator_moved) or time.time() > deadline:
                    raise
                print(f"committed(): {e}; retrying", file=sys.stderr, flush=True)
                time.sleep(0.2)
        for tp in got:
            if tp.error is not None:
                sys.exit(f"committed(): {tp}: {tp.error}")
        emit(event="committed_at_assign", offsets={str(tp.partition): tp.offset for tp in got})
    if m is None:
        continue
    if m.error():
        if m.error().code() != KafkaError._PARTITION_EOF:
            print(f"consume error: {m.error()}", file=sys.stderr, flush=True)
        continue
    p = m.partition()
    if p in limits and consumed.get(p, 0) >= limits[p]:
        dropped += 1
        continue
    count += 1
    consumed[p] = consumed.get(p, 0) + 1
    next_offset[p] = m.offset() + 1
    emit(event="msg", p=p, o=m.offset(), v=m.value().decode())
    if p in limits and consumed[p] >= limits[p]:
        c.pause([TopicPartition(a.topic, p)])

offsets = [TopicPartition(a.topic, p, o) for p, o in sorted(next_offset.items())]
if offsets:
    for tp in c.commit(offsets=offsets, asynchronous=False):
        if tp.error is not None:
            sys.exit(f"commit: {tp}: {tp.error}")
    emit(event="commit", offsets={str(tp.partition): tp.offset for tp in offsets})
emit(event="done", count=count, dropped=dropped)
c.close()
