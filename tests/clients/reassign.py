"""Partition reassignment through kafka-python's KafkaAdminClient (AlterPartitionReassignments,
ListPartitionReassignments) and Metadata. Prints one JSON line.

  alter --topic T --partition P --replicas 2,3   {"error": name or null}
  cancel --topic T --partition P                 {"error": name or null}
  list                                           {"T-P": {"replicas": [...], "adding": [...], "removing": [...]}}
  wait --topic T --partition P --replicas 2,3    waits (--timeout s) until no move of T-P is in
                                                 progress and Metadata lists exactly those
                                                 replicas, all in sync: {"replicas", "isr", "leader"}
"""
import argparse, json, sys, time

from kafka import TopicPartition
from kafka.admin import KafkaAdminClient

ap = argparse.ArgumentParser()
ap.add_argument("--bootstrap", required=True)
ap.add_argument("command", choices=["alter", "cancel", "list", "wait"])
ap.add_argument("--topic")
ap.add_argument("--partition", type=int, default=0)
ap.add_argument("--replicas", default="")
ap.add_argument("--timeout", type=float, default=60)
a = ap.parse_args()

admin = KafkaAdminClient(bootstrap_servers=a.bootstrap, request_timeout_ms=30000)
tp = TopicPartition(a.topic, a.partition) if a.topic else None
replicas = [int(r) for r in a.replicas.split(",") if r]


def name(err):
    return None if err is None else getattr(err, "__name__", str(err))


def ongoing():
    out = {}
    for p, r in admin.list_partition_reassignments().items():
        out[f"{p.topic}-{p.partition}"] = {
            "replicas": r["replicas"],
            "adding": r["adding_replicas"],
            "removing": r["removing_replicas"],
        }
    return out


def partition_metadata():
    topics = admin.describe_topics([a.topic])
    for p in topics[0]["partitions"]:
        if p["partition_index"] == a.partition:
            return {"replicas": p["replica_nodes"], "isr": p["isr_nodes"], "leader": p["leader_id"]}
    return None


if a.command in ("alter", "cancel"):
    result = admin.alter_partition_reassignments(
        {tp: replicas if a.command == "alter" else None}, timeout_ms=30000
    )
    print(json.dumps({"error": name(result.get(tp))}), flush=True)
elif a.command == "list":
    print(json.dumps(ongoing()), flush=True)
else:
    deadline = time.time() + a.timeout
    last = None
    while True:
        moving = ongoing().get(f"{a.topic}-{a.partition}")
        p = partition_metadata()
        last = {"moving": moving, "metadata": p}
        if (
            moving is None
            and p is not None
            and p["replicas"] == replicas
            and sorted(p["isr"]) == sorted(replicas)
            and p["leader"] in replicas
        ):
            print(json.dumps({"replicas": p["replicas"], "isr": p["isr"], "leader": p["leader"]}), flush=True)
            break
        if time.time() > deadline:
            print(f"not moved within {a.timeout}s: {last}", file=sys.stderr, flush=True)
            sys.exit(1)
        time.sleep(0.3)
