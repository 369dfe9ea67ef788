"""Cluster security through real clients (confluent-kafka / librdkafka): an admin creates a
SCRAM user, a topic and an ACL through one node; the user is then served, and refused, by
another node. Prints one JSON line."""
import argparse, json, sys, time
from confluent_kafka import Producer, KafkaError
from confluent_kafka.admin import (AdminClient, NewTopic, AclBinding, ResourceType,
                                   ResourcePatternType, AclOperation, AclPermissionType,
                                   UserScramCredentialUpsertion, ScramCredentialInfo, AclBindingFilter,
                                   ScramMechanism)

ap = argparse.ArgumentParser()
ap.add_argument("--admin-bootstrap", required=True)
ap.add_argument("--user-bootstrap", required=True)
ap.add_argument("--admin-password", required=True)
args = ap.parse_args()


def conf(bootstrap, user, password):
    return {"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user, "sasl.password": password,
            "socket.timeout.ms": 10000}


out = {}
admin = AdminClient(conf(args.admin_bootstrap, "admin", args.admin_password))
# The admin exists only in node 1's data dir until it is imported into __meta: retry.
deadline = time.time() + 30
while True:
    try:
        fs = admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
            "alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"alice-pw")])
        for f in fs.values():
            f.result()
        break
    except Exception as e:  # noqa: BLE001
        if time.time() > deadline:
            raise
        time.sleep(0.5)
out["alice_created"] = True
for f in admin.create_topics([NewTopic("orders", 3, 3), NewTopic("other", 1, 3)]).values():
    f.result()
acl = AclBinding(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL, "User:alice", "*",
                 AclOperation.WRITE, AclPermissionType.ALLOW)
for f in admin.create_acls([acl]).values():
    f.result()
out["acl_created"] = True

# Through the other node: the credential and the ACL apply there once __meta has them.
results = {}


def produce(topic):
    p = Producer({**conf(args.user_bootstrap, "alice", "alice-pw"), "acks": "all",
                  "message.timeout.ms": 10000})
    got = []
    p.produce(topic, value=b"hello", on_delivery=lambda err, msg: got.append(err))
    p.flush(15)
    return got[0] if got else "no delivery report"


deadline = time.time() + 30
while True:
    err = produce("orders")
    if err is None or time.time() > deadline:
        break
    time.sleep(0.5)
out["orders"] = "ok" if err is None else str(err)
err = produce("other")
out["other"] = err.name() if isinstance(err, KafkaError) else str(err)

admin3 = AdminClient(conf(args.user_bootstrap, "admin", args.admin_password))
described = admin3.describe_user_scram_credentials().result()
out["users_seen_on_other_node"] = sorted(described.keys())
out["alice_mechanisms"] = [str(c.mechanism) for c in described["alice"].scram_credential_infos]
acls = admin3.describe_acls(AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                       AclOperation.ANY, AclPermissionType.ANY)).result()
out["acls_seen_on_other_node"] = len(acls)
print(json.dumps(out))
