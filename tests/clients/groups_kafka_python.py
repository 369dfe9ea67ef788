"""Consumer groups and the idempotent producer with kafka-python, an implementation independent of
librdkafka: two members share a topic's partitions disjointly, every message produced by an
idempotent producer (kafka-python's default) is consumed exactly once, commits are honoured by a
later member of the same group. Prints a JSON summary; exits non-zero on any mismatch."""
import argparse, json, sys, time
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("--topic", default="kp-groups")
ap.add_argument("--group", default="kp-group")
ap.add_argument("--count", type=int, default=400)
a = ap.parse_args()
PARTS = 4

KafkaAdminClient(bootstrap_servers=a.bootstrap).create_topics([NewTopic(a.topic, PARTS, 1)])

def member():
    return KafkaConsumer(a.topic, bootstrap_servers=a.bootstrap, group_id=a.group,
                         enable_auto_commit=False, auto_offset_reset="earliest",
                         session_timeout_ms=10000, heartbeat_interval_ms=500)

c1, c2 = member(), member()
deadline = time.time() + 60
while True:
    for c in (c1, c2):
        c.poll(timeout_ms=100)
    s1, s2 = c1.assignment(), c2.assignment()
    if s1 and s2 and not (s1 & s2) and len(s1 | s2) == PARTS:
        break
    assert time.time() < deadline, f"no stable assignment: {s1} {s2}"

p = KafkaProducer(bootstrap_servers=a.bootstrap, acks="all", enable_idempotence=True)
futs = [p.send(a.topic, key=str(i).encode(), value=f"kp-{i}".encode()) for i in range(a.count)]
p.flush(30)
offsets = [f.get(timeout=30) for f in futs]
p.close()

seen = {}
deadline = time.time() + 60
while len(seen) < a.count:
    assert time.time() < deadline, f"consumed {len(seen)} of {a.count}"
    for name, c in (("c1", c1), ("c2", c2)):
        for tp, msgs in c.poll(timeout_ms=100).items():
            assert tp in c.assignment(), f"{name} got {tp} outside its assignment"
            for m in msgs:
                v = m.value.decode()
                assert v not in seen, f"{v} consumed twice"
                seen[v] = (name, m.partition, m.offset)
assert set(seen) == {f"kp-{i}" for i in range(a.count)}
by_member = {n: sum(1 for v in seen.values() if v[0] == n) for n in ("c1", "c2")}
assert all(by_member.values()), by_member
c1.commit()
c2.commit()
c1.close()
c2.close()

# A later member of the group starts from the committed offsets: nothing left to read.
c3 = member()
deadline = time.time() + 30
while not c3.assignment():
    c3.poll(timeout_ms=200)
    assert time.time() < deadline, "c3 got no assignment"
extra = sum(len(msgs) for _ in range(10) for msgs in c3.poll(timeout_ms=200).values())
committed = sum(c3.committed(TopicPartition(a.topic, q)) or 0 for q in range(PARTS))
c3.close()
assert extra == 0, f"{extra} messages re-delivered after commit"
assert committed == a.count, committed

# Group administration: ListGroups, DescribeGroups, OffsetFetch via admin, OffsetDelete,
# DeleteGroups.
admin = KafkaAdminClient(bootstrap_servers=a.bootstrap)
print("list_groups:", admin.list_groups(), file=sys.stderr)
assert a.group in json.dumps(admin.list_groups(), default=str)
desc = admin.describe_groups([a.group])
print("describe_groups:", desc, file=sys.stderr)
assert "Empty" in json.dumps(desc, default=str), desc
offs = admin.list_group_offsets(a.group)[a.group]
assert sum(o.offset for o in offs.values()) == a.count, offs
admin.delete_group_offsets(a.group, [TopicPartition(a.topic, 0)])
offs = admin.list_group_offsets(a.group)[a.group]
print("after OffsetDelete:", offs, file=sys.stderr)
p0 = offs.get(TopicPartition(a.topic, 0))
assert p0 is None or p0.offset == -1, offs
assert sum(o.offset for o in offs.values() if o.offset >= 0) < a.count
admin.delete_groups([a.group])
listed = json.dumps(admin.list_groups(), default=str)
assert a.group not in listed, listed
print(json.dumps({"consumed": len(seen), "by_member": by_member, "committed": committed, "admin": "ok"}))
