"""librdkafka (confluent-kafka) against a secured sluice listener (SSL, SASL_PLAINTEXT, SASL_SSL).

One operation per run; the connection options (--protocol, --mechanism, --user, --password,
--ca, --cert, --key) are shared. Prints exactly one JSON line on stdout:
  {"ok": true, ...}                                   the operation worked
  {"ok": false, "error": "<Kafka error name>", "message": "...", "client_errors": [...]}
"client_errors" are the errors librdkafka reported through error_cb (e.g. _AUTHENTICATION, _SSL,
_TRANSPORT), as "NAME: text". Exit status 0 either way (the test decides what is expected);
non-zero only for a bug in this script. librdkafka's own log goes to stderr (--debug adds
debug contexts, e.g. --debug security,broker,protocol).

Operations:
  connect                       list topics; ok if metadata came back
  topics                        {"topics": [...]} (what this principal may describe)
  create-topic --topic T [--partitions P]
  produce --topic T --count N [--prefix P] [--spread S]
                                keyed messages, acks=all, optionally paced over S seconds;
                                {"produced": n}
  consume --topic T [--group G] [--count N] [--wait S]
                                with --group: subscribe, read until N messages or S seconds;
                                without: assign every partition from the log start to the high
                                watermark. {"values": [...], "keys": [...]}
  roundtrip --topic T --count N --group G [--partitions P]
                                create topic, produce N keyed messages, consume them all back
                                in group G, list topics
  create-acls --acl SPEC ...    SPEC: PRINCIPAL,RESOURCE_TYPE,NAME,OPERATION[,PERMISSION[,PATTERN[,HOST]]]
                                e.g. User:alice,TOPIC,orders,WRITE (ALLOW, LITERAL, * by default)
  describe-acls [--acl FILTER]  FILTER like SPEC, "ANY"/"*"-style wildcards: ANY for enums, "" for
                                any name/principal/host. {"acls": [{...}]}
  delete-acls --acl FILTER ...  {"deleted": [{...}]}
  scram-upsert --name U --scram-mechanism M --scram-password P [--iterations I]
  scram-delete --name U --scram-mechanism M
  scram-describe [--name U ...] {"users": {"U": [{"mechanism": M, "iterations": I}]}}
"""
import argparse, json, re, sys, time
from confluent_kafka import Consumer, Producer, TopicPartition, KafkaException, KafkaError
from confluent_kafka.admin import (AdminClient, NewTopic, AclBinding, AclBindingFilter, ResourceType,
                                   ResourcePatternType, AclOperation, AclPermissionType,
                                   ScramMechanism, ScramCredentialInfo, UserScramCredentialUpsertion,
                                   UserScramCredentialDeletion)

ap = argparse.ArgumentParser()
ap.add_argument("op")
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--protocol", default="PLAINTEXT")
ap.add_argument("--mechanism", default="PLAIN")
ap.add_argument("--user")
ap.add_argument("--password")
ap.add_argument("--ca")
ap.add_argument("--cert")
ap.add_argument("--key")
ap.add_argument("--no-hostname-check", action="store_true")
ap.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
ap.add_argument("--debug")
ap.add_argument("--topic")
ap.add_argument("--partitions", type=int, default=1)
ap.add_argument("--count", type=int, default=0)
ap.add_argument("--prefix", default="m")
ap.add_argument("--spread", type=float, default=0.0, help="produce: spread the messages over S seconds")
ap.add_argument("--group")
ap.add_argument("--wait", type=float, default=20.0)
ap.add_argument("--acl", action="append", default=[])
ap.add_argument("--name", action="append", default=[])
ap.add_argument("--scram-mechanism", default="SCRAM-SHA-512")
ap.add_argument("--scram-password")
ap.add_argument("--iterations", type=int, default=8192)
a = ap.parse_args()

client_errors = []


def note_error(name, text):
    """Keeps each distinct client error once (without librdkafka's "(after Nms in state X)")."""
    e = f"{name}: {re.sub(r' [(]after [0-9]+ms in state [A-Z_]+[)]', '', text)}"
    if e not in client_errors and len(client_errors) < 20:
        client_errors.append(e)


def error_cb(err):
    note_error(err.name(), err.str())
    print(f"error_cb: {err.name()}: {err.str()}", file=sys.stderr, flush=True)


def conf(**extra):
    c = {"bootstrap.servers": a.bootstrap, "security.protocol": a.protocol, "error_cb": error_cb,
         "socket.timeout.ms": int(a.timeout * 1000), "socket.connection.setup.timeout.ms": int(a.timeout * 1000),
         "reconnect.backoff.max.ms": 1000}
    if a.protocol.startswith("SASL"):
        c["sasl.mechanism"] = a.mechanism
        if a.user is not None:
            c["sasl.username"] = a.user
        if a.password is not None:
            c["sasl.password"] = a.password
    if a.protocol.endswith("SSL"):
        if a.ca:
            c["ssl.ca.location"] = a.ca
        if a.cert:
            c["ssl.certificate.location"] = a.cert
        if a.key:
            c["ssl.key.location"] = a.key
        if a.no_hostname_check:
            c["ssl.endpoint.identification.algorithm"] = "none"
    if a.debug:
        c["debug"] = a.debug
    c.update(extra)
    return c


def out(d):
    d.setdefault("client_errors", client_errors)
    print(json.dumps(d), flush=True)


class Fail(Exception):
    def __init__(self, name, message):
        super().__init__(f"{name}: {message}")
        self.name, self.message = name, message


def kafka_error(e):
    """(name, text) of a KafkaException / KafkaError / other exception."""
    err = e.args[0] if isinstance(e, KafkaException) and e.args else e
    if isinstance(err, KafkaError):
        return err.name(), err.str()
    return type(e).__name__, str(e)


def terminal(err):
    """Errors that end an operation at once: authorization, authentication, TLS, fatal."""
    n = err.name()
    return ("AUTHORIZATION" in n or "AUTHENTICATION" in n or n in ("_SSL", "UNSUPPORTED_SASL_MECHANISM",
                                                                    "ILLEGAL_SASL_STATE")
            or err.fatal())


def wait_for_client_error(client, seconds=2.0):
    """Serves error_cb for a while so errors raised during a failed call are reported."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        client.poll(0.1)


def admin():
    return AdminClient(conf())


def list_topics(client):
    md = client.list_topics(timeout=a.timeout)
    return sorted(t for t in md.topics if not t.startswith("__")), md


def op_connect():
    ad = admin()
    deadline = time.time() + a.wait
    last = None
    while time.time() < deadline:
        try:
            md = ad.list_topics(timeout=1.0)
            topics = sorted(t for t in md.topics if not t.startswith("__"))
            return {"ok": True, "topics": topics, "brokers": len(md.brokers)}
        except KafkaException as e:
            last = e
        wait_for_client_error(ad, 0.3)
        if any(x.split(":")[0] in ("_AUTHENTICATION", "_SSL") for x in client_errors):
            break
    wait_for_client_error(ad, 0.5)
    n, m = kafka_error(last) if last else ("_TIMED_OUT", "no metadata")
    # The cause is what error_cb saw; list_topics only times out.
    for x in client_errors:
        if x.split(":")[0] in ("_AUTHENTICATION", "_SSL"):
            n = x.split(":")[0]
            break
    raise Fail(n, m)


def op_topics():
    ad = admin()
    try:
        topics, md = list_topics(ad)
    except KafkaException as e:
        wait_for_client_error(ad, 1)
        raise Fail(*kafka_error(e))
    # Topics the principal may not describe must not be listed; errors per topic are reported.
    errs = {t: md.topics[t].error.name() for t in md.topics if md.topics[t].error is not None}
    return {"ok": True, "topics": topics, "topic_errors": errs}


def op_create_topic():
    ad = admin()
    try:
        ad.create_topics([NewTopic(a.topic, a.partitions, 1)])[a.topic].result(a.timeout)
    except KafkaException as e:
        raise Fail(*kafka_error(e))
    return {"ok": True}


def produce(topic, count, prefix):
    p = Producer(conf(**{"acks": "all", "enable.idempotence": False, "linger.ms": 5,
                         "message.timeout.ms": int(a.timeout * 1000),
                         "topic.metadata.refresh.interval.ms": 1000}))
    acked, errors = [], []

    def cb(err, msg):
        if err:
            errors.append(err)
        else:
            acked.append((msg.partition(), msg.offset()))

    start = time.time()
    for i in range(count):
        if a.spread:
            # Paced: message i goes out at start + i * spread / count (one connection throughout).
            while time.time() < start + i * a.spread / count:
                p.poll(0.05)
        p.produce(topic, key=f"{prefix}-k{i % 7}".encode(), value=f"{prefix}-{i}".encode(), on_delivery=cb)
        p.poll(0)
    left = p.flush(a.timeout + 5)
    if errors:
        raise Fail(errors[0].name(), errors[0].str() + f" ({len(errors)} of {count} failed, {len(acked)} acked)")
    if left:
        raise Fail("_TIMED_OUT", f"{left} messages not delivered")
    return len(acked)


def op_produce():
    n = produce(a.topic, a.count, a.prefix)
    if client_errors:
        raise Fail("CLIENT_ERRORS", f"{n} delivered, but the client reported errors")
    return {"ok": True, "produced": n}


def consume_group(topic, group, count, wait):
    c = Consumer(conf(**{"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                         "topic.metadata.refresh.interval.ms": 1000}))
    c.subscribe([topic])
    values, keys, seen = [], [], set()
    deadline = time.time() + wait
    try:
        while len(values) < count and time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                err = m.error()
                note_error(err.name(), err.str())
                if terminal(err):
                    raise Fail(err.name(), err.str())
                continue
            k = (m.partition(), m.offset())
            if k in seen:
                raise Fail("DUPLICATE", f"{k} delivered twice")
            seen.add(k)
            values.append(m.value().decode())
            keys.append(m.key().decode() if m.key() is not None else None)
        if values:
            c.commit(asynchronous=False)
    finally:
        c.close()
    if len(values) < count:
        raise Fail("_TIMED_OUT", f"consumed {len(values)} of {count} in {wait} s")
    return values, keys


def consume_all(topic):
    c = Consumer(conf(**{"group.id": "security-dump", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"}))
    try:
        md = c.list_topics(topic, timeout=a.timeout).topics[topic]
        if md.error is not None:
            raise Fail(md.error.name(), md.error.str())
        parts = sorted(md.partitions)
        marks = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=a.timeout) for p in parts}
        todo = {p: hi for p, (lo, hi) in marks.items() if hi > lo}
        pos = {p: marks[p][0] for p in parts}
        c.assign([TopicPartition(topic, p, marks[p][0]) for p in parts])
        values, keys = [], []
        deadline = time.time() + a.wait
        while any(pos[p] < todo[p] for p in todo) and time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if terminal(m.error()):
                    raise Fail(m.error().name(), m.error().str())
                note_error(m.error().name(), m.error().str())
                continue
            values.append(m.value().decode())
            keys.append(m.key().decode() if m.key() is not None else None)
            pos[m.partition()] = m.offset() + 1
        if any(pos[p] < todo[p] for p in todo):
            raise Fail("_TIMED_OUT", f"read {pos} of {todo}")
        return values, keys, {p: list(v) for p, v in marks.items()}
    except KafkaException as e:
        raise Fail(*kafka_error(e))
    finally:
        c.close()


def op_consume():
    if a.group:
        values, keys = consume_group(a.topic, a.group, a.count, a.wait)
        return {"ok": True, "values": values, "keys": keys}
    values, keys, marks = consume_all(a.topic)
    return {"ok": True, "values": values, "keys": keys, "watermarks": marks}


def op_roundtrip():
    ad = admin()
    try:
        ad.create_topics([NewTopic(a.topic, a.partitions, 1)])[a.topic].result(a.timeout)
    except KafkaException as e:
        raise Fail(*kafka_error(e))
    produced = produce(a.topic, a.count, a.prefix)
    values, keys = consume_group(a.topic, a.group, a.count, a.wait)
    want = {f"{a.prefix}-{i}" for i in range(a.count)}
    if set(values) != want or len(values) != a.count:
        raise Fail("MISMATCH", f"consumed {len(values)} values, missing {sorted(want - set(values))[:5]}")
    for k, v in zip(keys, values):
        i = int(v.rsplit("-", 1)[1])
        if k != f"{a.prefix}-k{i % 7}":
            raise Fail("MISMATCH", f"key {k} for value {v}")
    topics, _ = list_topics(ad)
    return {"ok": True, "produced": produced, "consumed": len(values), "topics": topics}


def enum(cls, name):
    return getattr(cls, name.upper())


def acl_binding(spec, as_filter):
    f = spec.split(",")
    if len(f) < 4:
        raise SystemExit(f"bad --acl {spec!r}")
    principal, rtype, name, op = f[:4]
    perm = f[4] if len(f) > 4 and f[4] else ("ANY" if as_filter else "ALLOW")
    pattern = f[5] if len(f) > 5 and f[5] else ("ANY" if as_filter else "LITERAL")
    host = f[6] if len(f) > 6 else ("" if as_filter else "*")
    cls = AclBindingFilter if as_filter else AclBinding
    none = (lambda v: v or None) if as_filter else (lambda v: v)
    return cls(enum(ResourceType, rtype), none(name), enum(ResourcePatternType, pattern), none(principal),
               none(host), enum(AclOperation, op), enum(AclPermissionType, perm))


def acl_json(b):
    return {"principal": b.principal, "resource_type": b.restype.name, "name": b.name,
            "pattern": b.resource_pattern_type.name, "operation": b.operation.name,
            "permission": b.permission_type.name, "host": b.host}


def op_create_acls():
    ad = admin()
    bindings = [acl_binding(s, False) for s in a.acl]
    futs = ad.create_acls(bindings)
    for b in bindings:
        try:
            futs[b].result(a.timeout)
        except KafkaException as e:
            raise Fail(*kafka_error(e))
    return {"ok": True, "created": len(bindings)}


def op_describe_acls():
    ad = admin()
    spec = a.acl[0] if a.acl else ",ANY,,ANY"
    try:
        got = ad.describe_acls(acl_binding(spec, True), request_timeout=a.timeout).result(a.timeout)
    except KafkaException as e:
        raise Fail(*kafka_error(e))
    return {"ok": True, "acls": sorted((acl_json(b) for b in got), key=json.dumps)}


def op_delete_acls():
    ad = admin()
    filters = [acl_binding(s, True) for s in a.acl]
    futs = ad.delete_acls(filters, request_timeout=a.timeout)
    deleted = []
    for f in filters:
        try:
            deleted += [acl_json(b) for b in futs[f].result(a.timeout)]
        except KafkaException as e:
            raise Fail(*kafka_error(e))
    return {"ok": True, "deleted": sorted(deleted, key=json.dumps)}


def scram_mech(name):
    return {"SCRAM-SHA-256": ScramMechanism.SCRAM_SHA_256, "SCRAM-SHA-512": ScramMechanism.SCRAM_SHA_512}[name]


def op_scram_alter(alterations):
    ad = admin()
    futs = ad.alter_user_scram_credentials(alterations, request_timeout=a.timeout)
    for user, f in futs.items():
        try:
            f.result(a.timeout)
        except KafkaException as e:
            raise Fail(*kafka_error(e))
    return {"ok": True}


def op_scram_upsert():
    info = ScramCredentialInfo(scram_mech(a.scram_mechanism), a.iterations)
    return op_scram_alter([UserScramCredentialUpsertion(n, info, a.scram_password.encode()) for n in a.name])


def op_scram_delete():
    return op_scram_alter([UserScramCredentialDeletion(n, scram_mech(a.scram_mechanism)) for n in a.name])


def op_scram_describe():
    ad = admin()
    users = {}
    try:
        res = ad.describe_user_scram_credentials(a.name or None, request_timeout=a.timeout)
        if isinstance(res, dict):
            items = [(u, f.result(a.timeout)) for u, f in res.items()]
        else:
            items = list(res.result(a.timeout).items())
    except KafkaException as e:
        raise Fail(*kafka_error(e))
    for user, desc in items:
        users[user] = [{"mechanism": {ScramMechanism.SCRAM_SHA_256: "SCRAM-SHA-256",
                                      ScramMechanism.SCRAM_SHA_512: "SCRAM-SHA-512"}.get(i.mechanism, str(i.mechanism)),
                        "iterations": i.iterations} for i in desc.scram_credential_infos]
    return {"ok": True, "users": users}


OPS = {"connect": op_connect, "topics": op_topics, "create-topic": op_create_topic, "produce": op_produce,
       "consume": op_consume, "roundtrip": op_roundtrip, "create-acls": op_create_acls,
       "describe-acls": op_describe_acls, "delete-acls": op_delete_acls, "scram-upsert": op_scram_upsert,
       "scram-delete": op_scram_delete, "scram-describe": op_scram_describe}

if a.op not in OPS:
    raise SystemExit(f"unknown op {a.op}; one of {sorted(OPS)}")
try:
    out(OPS[a.op]())
except Fail as f:
    out({"ok": False, "error": f.name, "message": f.message})
