"""Transactions with confluent-kafka (librdkafka). Subcommands print one JSON line each:

basic    commit, abort and commit again; what read_committed and read_uncommitted consumers see
fence    a second instance with the same transactional.id fences the first
timeout  a transaction left open past transaction.timeout.ms is aborted by the broker
offsets  send_offsets_to_transaction: offsets appear with the commit, not with an abort
eos      consume-transform-produce from --input to --output until every input record is
         copied (runs through broker restarts; prints progress lines). A supervisor runs the
         loop in a worker process and starts a new one when the worker's librdkafka hangs
         (librdkafka issues #5456 and #5511: send_offsets_to_transaction can wait forever for a
         group coordinator that restarted), as a process supervisor would.
read     every record of --topic as a read_committed consumer sees it
"""
import argparse, json, os, sys, time
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ap = argparse.ArgumentParser()
ap.add_argument("cmd")
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--topic", default="tx")
ap.add_argument("--input", default="in")
ap.add_argument("--output", default="out")
ap.add_argument("--count", type=int, default=0)
ap.add_argument("--partitions", type=int, default=1)
args = ap.parse_args()
B = args.bootstrap


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def create(topic, partitions=1):
    a = AdminClient({"bootstrap.servers": B})
    for f in a.create_topics([NewTopic(topic, partitions, 1)]).values():
        try:
            f.result()
        except KafkaException as e:
            if "already exists" not in str(e).lower():
                raise


def producer(txn_id, **extra):
    conf = {"bootstrap.servers": B, "transactional.id": txn_id, "linger.ms": 5}
    if os.environ.get("TXN_DEBUG"):
        conf["debug"] = os.environ["TXN_DEBUG"]
    conf.update(extra)
    return Producer(conf)


def read_all(topic, isolation, partitions=1, idle=3.0):
    """Every record of `topic` from the start: [(partition, offset, value)]."""
    c = Consumer({"bootstrap.servers": B, "group.id": f"reader-{time.time()}",
                  "isolation.level": isolation, "enable.auto.commit": False,
                  "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got, eof, last = [], set(), time.time()
    while len(eof) < partitions and time.time() - last < idle:
        m = c.poll(0.5)
        if m is None:
            continue
        last = time.time()
        if m.error():
            if m.error().code() == -191:  # _PARTITION_EOF
                eof.add(m.partition())
            continue
        eof.discard(m.partition())
        got.append((m.partition(), m.offset(), m.value().decode()))
    c.close()
    return got


def error_name(e):
    err = e.args[0]
    return {"name": err.name(), "fatal": err.fatal(), "abortable": err.txn_requires_abort(),
            "retriable": err.retriable(), "str": err.str()}


if args.cmd == "basic":
    n = args.partitions
    create(args.topic, n)
    p = producer("basic-tx")
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(10):
        p.produce(args.topic, value=f"c-{i}".encode(), partition=i % n)
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(10):
        p.produce(args.topic, value=f"a-{i}".encode(), partition=i % n)
    p.flush(30)  # written to the log, then aborted
    p.abort_transaction(30)
    p.begin_transaction()
    for i in range(5):
        p.produce(args.topic, value=f"c2-{i}".encode(), partition=i % n)
    p.commit_transaction(30)
    # In log order per partition (one partition: the order they were produced in).
    emit({"committed": [v for _, _, v in sorted(read_all(args.topic, "read_committed", n))],
          "uncommitted": [v for _, _, v in sorted(read_all(args.topic, "read_uncommitted", n))]})

elif args.cmd == "fence":
    create(args.topic)
    old = producer("fence-tx")
    old.init_transactions(30)
    old.begin_transaction()
    old.produce(args.topic, value=b"zombie")
    old.flush(30)
    new = producer("fence-tx")
    new.init_transactions(30)  # aborts the zombie's transaction and fences it
    new.begin_transaction()
    new.produce(args.topic, value=b"fresh")
    new.commit_transaction(30)
    outcome = None
    try:
        old.produce(args.topic, value=b"zombie-2")
        old.commit_transaction(30)
        outcome = {"name": "committed"}
    except KafkaException as e:
        outcome = error_name(e)
    emit({"zombie": outcome,
          "committed": [v for _, _, v in read_all(args.topic, "read_committed")]})

elif args.cmd == "timeout":
    create(args.topic)
    p = producer("timeout-tx", **{"transaction.timeout.ms": 2000})
    p.init_transactions(30)
    p.begin_transaction()
    p.produce(args.topic, value=b"left-open")
    p.flush(30)
    time.sleep(4.0)  # past the timeout: the broker aborts it
    q = producer("timeout-other")
    q.init_transactions(30)
    q.begin_transaction()
    q.produce(args.topic, value=b"after")
    q.commit_transaction(30)
    outcome = None
    try:
        p.commit_transaction(30)
        outcome = {"name": "committed"}
    except KafkaException as e:
        outcome = error_name(e)
    emit({"commit_after_timeout": outcome,
          "committed": [v for _, _, v in read_all(args.topic, "read_committed")],
          "uncommitted": [v for _, _, v in read_all(args.topic, "read_uncommitted")]})

elif args.cmd == "offsets":
    create(args.input)
    create(args.output)
    plain = Producer({"bootstrap.servers": B})
    for i in range(20):
        plain.produce(args.input, value=f"in-{i}".encode())
    plain.flush(30)
    c = Consumer({"bootstrap.servers": B, "group.id": "offsets-g", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "isolation.level": "read_committed"})
    c.assign([TopicPartition(args.input, 0, 0)])
    p = producer("offsets-tx")
    p.init_transactions(30)
    seen = []
    while len(seen) < 10:
        m = c.poll(1)
        if m is not None and not m.error():
            seen.append(m)
    p.begin_transaction()
    for m in seen:
        p.produce(args.output, value=m.value())
    p.send_offsets_to_transaction([TopicPartition(args.input, 0, seen[-1].offset() + 1)],
                                  c.consumer_group_metadata(), 30)
    p.commit_transaction(30)
    after_commit = c.committed([TopicPartition(args.input, 0)], 10)[0].offset
    # An aborted transaction's offsets do not count.
    p.begin_transaction()
    p.send_offsets_to_transaction([TopicPartition(args.input, 0, 15)],
                                  c.consumer_group_metadata(), 30)
    p.abort_transaction(30)
    after_abort = c.committed([TopicPartition(args.input, 0)], 10)[0].offset
    c.close()
    emit({"after_commit": after_commit, "after_abort": after_abort,
          "output": [v for _, _, v in read_all(args.output, "read_committed")]})

elif args.cmd == "eos":
    import subprocess
    workers = 0
    while True:
        workers += 1
        child = subprocess.Popen([sys.executable, __file__, "eos-worker"] + sys.argv[2:],
                                 stdout=subprocess.PIPE, text=True)
        finished = False
        for line in child.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            finished |= '"done"' in line
        code = child.wait()
        if finished or code != 3 or workers >= 10:
            emit({"event": "supervisor", "workers": workers, "exit": code})
            break

elif args.cmd == "eos-worker":
    import threading
    total = args.count
    cons = Consumer({"bootstrap.servers": B, "group.id": "eos-g", "auto.offset.reset": "earliest",
                     "enable.auto.commit": False, "isolation.level": "read_committed",
                     "session.timeout.ms": 30000, "reconnect.backoff.max.ms": 500})
    parts = [TopicPartition(args.input, p) for p in range(args.partitions)]
    cons.assign(parts)

    def new_producer():
        while True:
            p = producer("eos-tx", **{"transaction.timeout.ms": 20000,
                                      "reconnect.backoff.max.ms": 500,
                                      "message.timeout.ms": 20000})
            try:
                p.init_transactions(60)
                return p
            except KafkaException as e:
                emit({"event": "init_failed", "error": error_name(e)})
                time.sleep(0.5)

    def rewind():
        """Back to the committed offsets: the aborted batch is processed again."""
        while True:
            try:
                committed = cons.committed(parts, 10)
                break
            except KafkaException:
                time.sleep(0.5)
        for tp in committed:
            cons.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else 0))

    def done():
        try:
            committed = cons.committed(parts, 10)
        except KafkaException:
            return False
        return sum(max(tp.offset, 0) for tp in committed) >= total

    p = new_producer()
    commits = aborts = 0
    while True:
        msgs = [m for m in cons.consume(200, 1.0) if not m.error()]
        if not msgs:
            if done():
                break
            continue
        try:
            p.begin_transaction()
            for m in msgs:
                p.produce(args.output, key=m.key(), value=m.value(), partition=m.partition())
            positions = cons.position(parts)
            # The call can hang in librdkafka past its timeout: give up the process then.
            watchdog = threading.Timer(35, lambda: (emit({"event": "stuck"}), os._exit(3)))
            watchdog.start()
            try:
                p.send_offsets_to_transaction(positions, cons.consumer_group_metadata(), 30)
            finally:
                watchdog.cancel()
            while True:
                try:
                    p.commit_transaction(30)
                    break
                except KafkaException as e:
                    if e.args[0].retriable():
                        continue
                    raise
            commits += 1
            emit({"event": "commit", "n": len(msgs), "commits": commits})
        except KafkaException as e:
            emit({"event": "txn_error", "error": error_name(e)})
            if e.args[0].txn_requires_abort():
                try:
                    p.abort_transaction(30)
                except KafkaException:
                    p = new_producer()
            else:
                p = new_producer()
            aborts += 1
            rewind()
    emit({"event": "done", "commits": commits, "aborts": aborts})

elif args.cmd == "read":
    got = read_all(args.topic, "read_committed", args.partitions, idle=5.0)
    emit({"records": got})
