"""kafka-python (an independent protocol implementation) against a secured sluice listener
(SASL_SSL with SCRAM by default).

--op roundtrip (default): create a topic, produce N keyed messages, consume them back in a group;
     {"ok": true, "produced": n, "consumed": n}
--op describe-acls: every ACL; {"ok": true, "acls": N}
--op scram-describe: every SCRAM user; {"ok": true, "users": {"NAME": [[mechanism, iterations]]}}
(librdkafka drops DescribeAcls' request-level error code and crashes on a request-level error of
DescribeUserScramCredentials, so tests check those errors with this client.)

Prints one JSON line; failures as {"ok": false, "error": "<exception class>", "message": "..."}.
kafka-python's log goes to stderr (WARNING, or DEBUG with --debug)."""
import argparse, json, logging, sys, time
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--protocol", default="SASL_SSL")
ap.add_argument("--mechanism", default="SCRAM-SHA-256")
ap.add_argument("--user")
ap.add_argument("--password")
ap.add_argument("--ca")
ap.add_argument("--topic", default="kp-secure")
ap.add_argument("--count", type=int, default=100)
ap.add_argument("--group", default="kp-group")
ap.add_argument("--timeout", type=float, default=10.0)
ap.add_argument("--debug", action="store_true")
ap.add_argument("--op", default="roundtrip", choices=["roundtrip", "describe-acls", "scram-describe"])
a = ap.parse_args()
logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if a.debug else logging.WARNING)

common = {"bootstrap_servers": a.bootstrap, "security_protocol": a.protocol,
          "request_timeout_ms": int(a.timeout * 1000) + 1000,
          # Give up quickly when the broker refuses us (e.g. a wrong password).
          "bootstrap_timeout_ms": int(a.timeout * 1000)}
if a.protocol.startswith("SASL"):
    common.update(sasl_mechanism=a.mechanism, sasl_plain_username=a.user, sasl_plain_password=a.password)
if a.protocol.endswith("SSL"):
    common.update(ssl_cafile=a.ca, ssl_check_hostname=True)


def run():
    admin = KafkaAdminClient(**common)
    admin.create_topics([NewTopic(a.topic, 2, 1)])
    p = KafkaProducer(acks="all", linger_ms=5, max_block_ms=int(a.timeout * 1000), **common)
    futs = [p.send(a.topic, key=f"k{i % 5}".encode(), value=f"v-{i}".encode()) for i in range(a.count)]
    p.flush(a.timeout)
    acked = [f.get(timeout=a.timeout) for f in futs]
    p.close()
    c = KafkaConsumer(a.topic, group_id=a.group, auto_offset_reset="earliest", enable_auto_commit=False,
                      consumer_timeout_ms=int(a.timeout * 1000), **common)
    got = {}
    deadline = time.time() + 40
    while len(got) < a.count and time.time() < deadline:
        for tp, msgs in c.poll(timeout_ms=500).items():
            for m in msgs:
                k = (m.partition, m.offset)
                assert k not in got, f"duplicate {k}"
                got[k] = (m.key.decode(), m.value.decode())
    c.commit()
    c.close()
    want = {f"v-{i}": f"k{i % 5}" for i in range(a.count)}
    have = {v: k for (k, v) in got.values()}
    assert have == want, f"consumed {len(got)} of {a.count}; missing {sorted(set(want) - set(have))[:5]}"
    topics = admin.list_topics()
    assert a.topic in topics, topics
    admin.close()
    return {"ok": True, "produced": len(acked), "consumed": len(got)}


def describe_acls():
    from kafka.admin import (ACLFilter, ResourcePatternFilter, ResourceType, ACLOperation,
                             ACLPermissionType, ACLResourcePatternType)
    admin = KafkaAdminClient(**common)
    f = ACLFilter(principal=None, host="*", operation=ACLOperation.ANY,
                  permission_type=ACLPermissionType.ANY,
                  resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY))
    acls, err = admin.describe_acls(f)
    return {"ok": True, "acls": len(acls)}


def scram_describe():
    admin = KafkaAdminClient(**common)
    res = admin.describe_user_scram_credentials(None)
    return {"ok": True, "users": {u: [[getattr(c["mechanism"], "name", str(c["mechanism"])), c["iterations"]]
                                       for c in d["credential_infos"]] for u, d in res.items()}}


try:
    op = {"roundtrip": run, "describe-acls": describe_acls, "scram-describe": scram_describe}[a.op]
    print(json.dumps(op()), flush=True)
except Exception as e:  # reported to the test, which decides
    print(json.dumps({"ok": False, "error": type(e).__name__, "message": str(e)}), flush=True)
