"""A confluent-kafka (librdkafka) consumer in a group. Prints one JSON object per line, flushed at
once, so a test can follow it (and SIGKILL it) while it runs:
  {"event": "assign", "partitions": [..]}   {"event": "revoke", "partitions": [..]}
  {"event": "msg", "p": P, "o": OFFSET, "v": VALUE}
  {"event": "done", "count": N}
Commits synchronously after every --commit-every messages (0: never commits by itself, but
auto-commit can be enabled with --auto-commit)."""
import argparse, json, sys, time
from confluent_kafka import Consumer, KafkaError

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--topic", required=True)
ap.add_argument("--group", required=True)
ap.add_argument("--strategy", default="range")
ap.add_argument("--instance-id", default=None)
ap.add_argument("--session-timeout-ms", type=int, default=6000)
ap.add_argument("--commit-every", type=int, default=1)
ap.add_argument("--max-messages", type=int, default=-1)
ap.add_argument("--idle-exit-s", type=float, default=-1, help="exit after this long without messages (once assigned)")
ap.add_argument("--run-s", type=float, default=120)
ap.add_argument("--close", action="store_true", help="close (LeaveGroup) on exit")
args = ap.parse_args()

out = sys.stdout
def emit(**kv):
    out.write(json.dumps(kv) + "\n")
    out.flush()

conf = {
    "bootstrap.servers": args.bootstrap,
    "group.id": args.group,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "session.timeout.ms": args.session_timeout_ms,
    "heartbeat.interval.ms": 500,
    "partition.assignment.strategy": args.strategy,
    "topic.metadata.refresh.interval.ms": 2000,
}
if args.instance_id:
    conf["group.instance.id"] = args.instance_id

def on_assign(c, parts):
    emit(event="assign", partitions=sorted(p.partition for p in parts), incremental=args.strategy == "cooperative-sticky")
def on_revoke(c, parts):
    emit(event="revoke", partitions=sorted(p.partition for p in parts))
def on_lost(c, parts):
    emit(event="lost", partitions=sorted(p.partition for p in parts))

c = Consumer(conf)
c.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
count = 0
since_commit = 0
last_msg = time.time()
start = time.time()
assigned_once = False
while time.time() - start < args.run_s:
    m = c.poll(0.2)
    if m is None:
        if c.assignment():
            assigned_once = True
        if args.idle_exit_s >= 0 and assigned_once and time.time() - last_msg > args.idle_exit_s:
            break
        continue
    if m.error():
        if m.error().code() != KafkaError._PARTITION_EOF:
            emit(event="error", error=str(m.error()))
        continue
    assigned_once = True
    last_msg = time.time()
    count += 1
    since_commit += 1
    emit(event="msg", p=m.partition(), o=m.offset(), v=m.value().decode())
    if args.commit_every > 0 and since_commit >= args.commit_every:
        c.commit(asynchronous=False)
        since_commit = 0
    if args.max_messages >= 0 and count >= args.max_messages:
        break
if since_commit and args.commit_every > 0:
    c.commit(asynchronous=False)
emit(event="done", count=count)
if args.close:
    c.close()
