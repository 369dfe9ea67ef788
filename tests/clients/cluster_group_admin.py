"""Where a consumer group lives and what it committed, asked of a sluice cluster by two independent
clients. Retries (leaders and coordinators may be moving) until --timeout s, then exits non-zero
with the last error on stderr.
  describe GROUP   confluent-kafka (librdkafka) AdminClient.describe_consumer_groups
                   (FindCoordinator + DescribeGroups); prints
                   {"coordinator": ID, "state": "EMPTY", "members": N}
  offsets GROUP    kafka-python KafkaAdminClient: FindCoordinator, then OffsetFetch of every
                   committed offset of the group from that coordinator; prints
                   {"coordinator": ID, "offsets": {"TOPIC": {"P": OFFSET}}}
                   A fresh client per attempt, so no coordinator is remembered from a failed one."""
import argparse, json, sys, time
import cluster_retry

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--timeout", type=float, default=30)
ap.add_argument("op", choices=["describe", "offsets"])
ap.add_argument("group")
a = ap.parse_args()
deadline = time.time() + a.timeout


def retry(what, f):
    return cluster_retry.retry(what, f, deadline, 0.3)


def describe():
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": a.bootstrap, "reconnect.backoff.max.ms": 500})

    def once():
        d = admin.describe_consumer_groups([a.group], request_timeout=5)[a.group].result(10)
        return {"coordinator": d.coordinator.id, "state": d.state.name, "members": len(d.members)}
    return retry("describe_consumer_groups", once)


def offsets():
    from kafka import KafkaAdminClient

    def once():
        admin = KafkaAdminClient(bootstrap_servers=a.bootstrap.split(","), request_timeout_ms=5000)
        try:
            # The node list_group_offsets sends its OffsetFetch to (kafka-python 3.0 keeps it
            # private; it caches the answer, so both use the same FindCoordinator response).
            coordinator = admin._manager.run(admin._find_coordinator_id, a.group)
            got = admin.list_group_offsets(a.group)[a.group]
        finally:
            admin.close()
        out = {}
        for tp, om in got.items():
            out.setdefault(tp.topic, {})[str(tp.partition)] = om.offset
        return {"coordinator": coordinator, "offsets": out}
    return retry("kafka-python OffsetFetch", once)


print(json.dumps(describe() if a.op == "describe" else offsets()), flush=True)
