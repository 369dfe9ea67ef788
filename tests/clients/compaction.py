"""Compacted topics with a real client (confluent-kafka or kafka-python).

--phase create:   create the topic (cleanup.policy=compact, small segments, a low dirty ratio).
--phase produce:  a keyed workload with overwrites and tombstones; prints the latest value per
                  key ({"latest": {key: value or null}, "produced": n}).
--phase consume:  reads the whole partition from the beginning to the end; prints the latest
                  value per key, the records read, their offsets and whether every offset holds
                  the value produced at it.
--phase keyless:  (confluent only) a record without a key is refused with INVALID_RECORD, a
                  keyed one in the same topic still goes through.
"""
import argparse, json, random, sys

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--topic", required=True)
ap.add_argument("--client", choices=["confluent", "kafka-python"], default="confluent")
ap.add_argument("--phase", required=True)
ap.add_argument("--records", type=int, default=3000)
ap.add_argument("--keys", type=int, default=60)
ap.add_argument("--value-bytes", type=int, default=100)
ap.add_argument("--segment-bytes", default="20000")
ap.add_argument("--seed", type=int, default=7)
ap.add_argument("--start", type=int, default=0, help="number the values from here")
ap.add_argument("--replication-factor", type=int, default=1)
a = ap.parse_args()

CONFIGS = {
    "cleanup.policy": "compact",
    "internal.segment.bytes": a.segment_bytes,
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "3600000",
}


def value_of(i):
    # Hex of seeded random bits: compresses about 2:1, so segments fill as sized.
    noise = format(random.Random(i).getrandbits(4 * a.value_bytes), "x").zfill(a.value_bytes)
    return (f"v{i}-" + noise)[: a.value_bytes]


def workload():
    rng = random.Random(a.seed)
    for i in range(a.start, a.start + a.records):
        key = f"k{rng.randrange(a.keys)}"
        tomb = rng.randrange(9) == 0
        yield key, None if tomb else value_of(i)


def out(d):
    print(json.dumps(d), flush=True)


if a.client == "confluent":
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    if a.phase == "create":
        admin = AdminClient({"bootstrap.servers": a.bootstrap})
        f = admin.create_topics([NewTopic(a.topic, 1, a.replication_factor,
                                          config=CONFIGS)])[a.topic]
        f.result(30)
        out({"created": True})
    elif a.phase == "produce":
        # Small batches, so segments roll as sized even when a loaded machine lets librdkafka
        # gather the whole workload into one request (the log rolls between appends only).
        p = Producer({"bootstrap.servers": a.bootstrap, "acks": "all", "linger.ms": 5,
                      "compression.type": "lz4", "batch.num.messages": 100})
        errors, latest, at = [], {}, {}

        def report(err, msg):
            if err:
                errors.append(err.name())
            else:
                v = msg.value()
                at[msg.offset()] = [msg.key().decode(), None if v is None else v.decode()]
        for key, value in workload():
            p.produce(a.topic, key=key.encode(),
                      value=None if value is None else value.encode(), on_delivery=report)
            latest[key] = value
            p.poll(0)
        p.flush(60)
        out({"latest": latest, "produced": len(at), "errors": errors, "at": at})
    elif a.phase == "keyless":
        p = Producer({"bootstrap.servers": a.bootstrap, "acks": "all", "linger.ms": 0,
                      "retries": 0})
        results = []

        def report(err, msg):
            results.append(None if err is None else [err.name(), err.str()])
        p.produce(a.topic, value=b"no key", on_delivery=report)
        p.flush(30)
        p.produce(a.topic, key=b"k", value=b"keyed", on_delivery=report)
        p.flush(30)
        out({"results": results})
    elif a.phase == "consume":
        c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": f"cmp-{random.random()}",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest",
                      "enable.partition.eof": True, "check.crcs": True})
        tp = TopicPartition(a.topic, 0, 0)
        _, high = c.get_watermark_offsets(tp, timeout=30)
        c.assign([tp])
        records, latest = [], {}
        while True:
            m = c.poll(10)
            if m is None:
                break
            if m.error():
                if m.error().code() == -191:  # _PARTITION_EOF
                    break
                raise KafkaException(m.error())
            v = m.value()
            records.append([m.offset(), m.key().decode(), None if v is None else v.decode()])
            latest[m.key().decode()] = None if v is None else v.decode()
        c.close()
        out({"latest": latest, "records": records, "high": high})
else:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic

    if a.phase == "create":
        admin = KafkaAdminClient(bootstrap_servers=a.bootstrap)
        admin.create_topics([NewTopic(a.topic, 1, a.replication_factor, topic_configs=CONFIGS)])
        out({"created": True})
    elif a.phase == "produce":
        p = KafkaProducer(bootstrap_servers=a.bootstrap, acks="all", linger_ms=5,
                          compression_type="gzip", enable_idempotence=False)
        futs, latest = [], {}
        for key, value in workload():
            futs.append((p.send(a.topic, key=key.encode(),
                                value=None if value is None else value.encode()), key, value))
            latest[key] = value
        p.flush(60)
        errors, at = [], {}
        for f, key, value in futs:
            try:
                at[f.get(timeout=30).offset] = [key, value]
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
        p.close()
        out({"latest": latest, "produced": len(at), "errors": errors, "at": at})
    elif a.phase == "consume":
        c = KafkaConsumer(bootstrap_servers=a.bootstrap, enable_auto_commit=False,
                          auto_offset_reset="earliest", consumer_timeout_ms=5000,
                          check_crcs=True)
        tp = TopicPartition(a.topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        high = c.end_offsets([tp])[tp]
        records, latest = [], {}
        for m in c:
            v = m.value
            records.append([m.offset, m.key.decode(), None if v is None else v.decode()])
            latest[m.key.decode()] = None if v is None else v.decode()
            if m.offset >= high - 1:
                break
        c.close()
        out({"latest": latest, "records": records, "high": high})
    else:
        sys.exit(f"phase {a.phase} is confluent only")
