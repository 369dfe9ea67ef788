"""Reads every partition of a topic from its log start to its high watermark without a consumer
group (assign + seek), with librdkafka (--client confluent) or kafka-python (--client
kafka-python, an independent implementation). --bootstrap may name a single node: the client
finds each partition's leader itself. Prints one JSON object:
  {"client": "...", "partitions": {"P": {"low": L, "high": H,
                                         "records": [[offset, value, leader_epoch], ...]}}}
Exits non-zero if a partition cannot be read up to its high watermark within --timeout s."""
import argparse, json, os, sys, time
import cluster_retry

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--topic", required=True)
ap.add_argument("--client", choices=["confluent", "kafka-python"], default="confluent")
ap.add_argument("--timeout", type=float, default=40)
a = ap.parse_args()
deadline = time.time() + a.timeout


def retry(what, f):
    return cluster_retry.retry(what, f, deadline, 0.2)


def confluent():
    from confluent_kafka import Consumer, TopicPartition, KafkaError
    # group.id is mandatory for the Python client's Consumer; it is never used (no subscribe,
    # no commits).
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "cluster-dump-unused",
                  "enable.auto.commit": False, "enable.auto.offset.store": False,
                  "auto.offset.reset": "error", "check.crcs": True,
                  "enable.partition.eof": False})

    def parts():
        t = c.list_topics(a.topic, timeout=5).topics[a.topic]
        if t.error is not None or not t.partitions:
            raise RuntimeError(f"metadata: {t.error}")
        return sorted(t.partitions)
    ps = retry("metadata", parts)
    marks = {p: retry(f"watermarks of {p}",
                      lambda p=p: c.get_watermark_offsets(TopicPartition(a.topic, p), timeout=5))
             for p in ps}
    c.assign([TopicPartition(a.topic, p, marks[p][0]) for p in ps])
    records = {p: [] for p in ps}
    pos = {p: marks[p][0] for p in ps}
    while any(pos[p] < marks[p][1] for p in ps):
        if time.time() > deadline:
            sys.exit(f"read {pos} of {marks} within {a.timeout} s")
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                continue
            print(f"consume error: {m.error()}", file=sys.stderr, flush=True)
            continue
        epoch = m.leader_epoch()
        records[m.partition()].append([m.offset(), m.value().decode(), -1 if epoch is None else epoch])
        pos[m.partition()] = m.offset() + 1
    c.close()
    return marks, records


def kafka_python():
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=a.bootstrap.split(","), group_id=None,
                      enable_auto_commit=False, auto_offset_reset="earliest", check_crcs=True)

    def parts():
        ps = c.partitions_for_topic(a.topic)
        if not ps:
            raise RuntimeError("no partitions in metadata yet")
        return sorted(ps)
    ps = retry("metadata", parts)
    tps = [TopicPartition(a.topic, p) for p in ps]
    c.assign(tps)
    lows = retry("beginning offsets", lambda: c.beginning_offsets(tps))
    highs = retry("end offsets", lambda: c.end_offsets(tps))
    marks = {tp.partition: (lows[tp], highs[tp]) for tp in tps}
    for tp in tps:
        c.seek(tp, lows[tp])
    records = {p: [] for p in ps}
    pos = {p: marks[p][0] for p in ps}
    while any(pos[p] < marks[p][1] for p in ps):
        if time.time() > deadline:
            sys.exit(f"read {pos} of {marks} within {a.timeout} s")
        for tp, msgs in c.poll(timeout_ms=500).items():
            for m in msgs:
                epoch = getattr(m, "leader_epoch", None)
                records[tp.partition].append([m.offset, m.value.decode(), -1 if epoch is None else epoch])
                pos[tp.partition] = m.offset + 1
    c.close()
    return marks, records


marks, records = confluent() if a.client == "confluent" else kafka_python()
print(json.dumps({"client": a.client,
                  "partitions": {str(p): {"low": marks[p][0], "high": marks[p][1], "records": records[p]}
                                 for p in records}}), flush=True)
sys.stdout.flush()
os._exit(0)
