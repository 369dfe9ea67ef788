#!/usr/bin/env bash
# Partition failover in a 3-node cluster on 127.0.0.1, measured RUNS times on fresh clusters.
# Each run launches the three nodes together and records the term of the first `__meta` leader
# and the time from process start to its election (the log's elapsed_ms), creates an RF=3 topic,
# runs an idempotent acks=all producer at RATE msg/s (tests/clients/cluster_producer.py: one
# line per acknowledged message with the wall-clock time of its delivery report), SIGKILLs the
# leader of partition 0 after WARMUP_S seconds, keeps producing for AFTER_S seconds and reports,
# for partition 0:
#   window_ms  the unavailability window: first ack after the kill minus the last ack before it
#              (the longest pause between two consecutive acks that ends after the kill, so
#              delivery reports the client already held when the node died do not count)
#   resume_ms  first ack after that pause minus the moment of the kill
# then p50/p90/max over the runs.
#   bench/cluster_failover.sh                                  # 20 runs, target/debug/sluice
#   RUNS=5 RATE=5000 SLUICE_BIN=target/release/sluice bench/cluster_failover.sh
# Needs the Python clients (scripts/setup). KEEP=1 keeps the logs and ack files of every run.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-20}
RATE=${RATE:-2000}
PARTITIONS=${PARTITIONS:-1}
WARMUP_S=${WARMUP_S:-3}
AFTER_S=${AFTER_S:-6}
BIN=${SLUICE_BIN:-target/debug/sluice}
CLIENTS=tests/clients
[ -x "$BIN" ] || { echo "$BIN not built: cargo build -p sluice-server" >&2; exit 1; }
work=$(mktemp -d)
cleanup() {
  kill -9 $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" = 1 ]; then echo "runs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
"$BIN" certs --nodes 1,2,3 --out "$work/certs" >/dev/null
: >"$work/results"
# Three TCP ports (Kafka) and three UDP ports (Raft), free right now.
ports() { python3 -c 'import socket
t=[socket.socket() for _ in range(3)]; u=[socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
[s.bind(("127.0.0.1", 0)) for s in t + u]; print(" ".join(str(s.getsockname()[1]) for s in t + u))'; }
field() { sed -e 's/\x1b\[[0-9;]*m//g' | grep -o " $1=[^ ]*" | head -1 | cut -d= -f2 | tr -d '"'; }
now_ms() { date +%s%3N; }

for run in $(seq "$RUNS"); do
  read -r k1 k2 k3 r1 r2 r3 <<<"$(ports)"
  kafka=(x "127.0.0.1:$k1" "127.0.0.1:$k2" "127.0.0.1:$k3")
  peers="1@127.0.0.1:$r1,2@127.0.0.1:$r2,3@127.0.0.1:$r3"
  all="${kafka[1]},${kafka[2]},${kafka[3]}"
  dir="$work/run$run"; mkdir -p "$dir"
  pids=(x)
  for id in 1 2 3; do
    RUST_LOG=info "$BIN" --node-id $id --kafka-addr "${kafka[$id]}" --data-dir "$dir/d$id" \
      raft-cluster --peers "$peers" --tls-dir "$work/certs" 2>"$dir/log$id" &
    pids+=($!)
  done
  stop_nodes() { kill -9 "${pids[@]:1}" 2>/dev/null || true; wait "${pids[@]:1}" 2>/dev/null || true; }
  fail() { echo "{\"run\": $run, \"error\": \"$1\"}" | tee -a "$work/results"; stop_nodes; }

  ok=0
  for _ in $(seq 300); do
    [ "$(grep -l "meta leader elected" "$dir"/log? 2>/dev/null | wc -l)" = 3 ] && { ok=1; break; }
    sleep 0.05
  done
  [ $ok = 1 ] || { fail "no meta leader within 15 s"; continue; }
  meta_term=""; meta_ms=""
  for id in 1 2 3; do
    line=$(grep "meta leader elected" "$dir/log$id" | head -1)
    [ "$(field is_leader <<<"$line")" = true ] && meta_ms=$(field elapsed_ms <<<"$line")
    [ -z "$meta_term" ] && meta_term=$(field term <<<"$line")
  done

  if ! python3 "$CLIENTS/cluster_admin.py" --bootstrap "$all" create bench \
        --partitions "$PARTITIONS" --rf 3 >"$dir/create.out" 2>&1; then
    fail "create topic: $(tail -1 "$dir/create.out" | tr -d '"')"; continue
  fi
  python3 "$CLIENTS/cluster_producer.py" --bootstrap "$all" --topic bench \
    --partitions "$PARTITIONS" --rate "$RATE" >"$dir/acks" 2>"$dir/producer.err" &
  producer=$!
  sleep "$WARMUP_S"
  leader=$(python3 "$CLIENTS/cluster_admin.py" --bootstrap "$all" describe bench 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["partitions"]["0"]["leader"])' || true)
  if ! [[ "$leader" =~ ^[123]$ ]]; then
    kill -9 $producer 2>/dev/null || true; wait $producer 2>/dev/null || true
    fail "no leader for partition 0: $leader"; continue
  fi
  kill -9 "${pids[$leader]}"
  killed_ms=$(now_ms)
  wait "${pids[$leader]}" 2>/dev/null || true
  sleep "$AFTER_S"
  kill -TERM $producer 2>/dev/null || true
  wait $producer 2>/dev/null || true
  stop_nodes

  python3 - "$dir/acks" "$run" "$killed_ms" "$leader" "$meta_term" "${meta_ms:-null}" "$dir" \
    <<'EOF' | tee -a "$work/results"
import glob, json, re, sys
path, run, killed, victim, meta_term, meta_ms, d = sys.argv[1:]
killed = int(killed)
times, failed, summary = [], 0, {}
for line in open(path):
    f = line.split()
    if f and f[0] == "ACK" and f[1] == "0":
        times.append(int(f[4]))
    elif f and f[0] == "ERR":
        failed += 1
    elif line.startswith("{"):
        summary = json.loads(line)
times.sort()
gaps = [(b - a, b) for a, b in zip(times, times[1:]) if b > killed]
out = {"run": int(run), "meta_term": int(meta_term),
       "meta_leader_ms": None if meta_ms == "null" else int(meta_ms), "killed_node": int(victim)}
# The term of the new leader of partition 0, if the nodes log it.
terms = []
for log in glob.glob(f"{d}/log?"):
    for l in open(log, errors="replace"):
        l = re.sub(r"\x1b\[[0-9;]*m", "", l)
        if ("partition leader elected" in l and re.search(r' topic="?bench"? ', l)
                and re.search(r' partition="?0"? ', l)):
            m = re.search(r" term=(\d+)", l)
            if m:
                terms.append(int(m.group(1)))
out["partition_term"] = max(terms) if terms else None
if not gaps:
    out["error"] = "no ack of partition 0 after the kill"
else:
    gap, resumed = max(gaps)
    out.update(window_ms=gap, resume_ms=resumed - killed)
out.update(acked=summary.get("acked"), failed=failed, unflushed=summary.get("unflushed"))
print(json.dumps(out))
EOF
done

python3 - "$work/results" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
ok = [r for r in rows if "error" not in r]
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * len(v)))]
print(f"runs: {len(rows)}, measured: {len(ok)}, failed: {len(rows) - len(ok)}")
for key in ("window_ms", "resume_ms", "meta_leader_ms"):
    v = [r[key] for r in ok if r.get(key) is not None]
    if v:
        print(f"{key}: n={len(v)} min={min(v)} p50={pct(v, .5)} p90={pct(v, .9)} max={max(v)}")
terms = {}
for r in rows:
    if "meta_term" in r:
        terms[r["meta_term"]] = terms.get(r["meta_term"], 0) + 1
print("term at first meta leader:", dict(sorted(terms.items())))
lost = sum(1 for r in ok if r.get("failed") or r.get("unflushed"))
print(f"runs with failed or unflushed messages: {lost}")
EOF
