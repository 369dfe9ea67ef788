#!/usr/bin/env bash
# Starts a fresh 3-node cluster (`sluice raft-cluster` on 127.0.0.1) RUNS times, all three
# processes launched together, and reports for each start the term of the first `__meta`
# leader and the time from process start to "meta leader elected" (the log's elapsed_ms:
# on the elected leader, and the slowest node to learn of it).
#   bench/cluster_start.sh                      # 20 runs, target/debug/sluice
#   RUNS=50 SLUICE_BIN=target/release/sluice bench/cluster_start.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-20}
BIN=${SLUICE_BIN:-target/debug/sluice}
[ -x "$BIN" ] || { echo "$BIN not built: cargo build -p sluice-server" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
"$BIN" certs --nodes 1,2,3 --out "$work/certs" >/dev/null
# Three UDP ports (Raft) and three TCP ports (Kafka: every cluster node serves it), free now.
ports() { python3 -c 'import socket
s=[socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)] + [socket.socket() for _ in range(3)]
[x.bind(("127.0.0.1",0)) for x in s]; print(" ".join(str(x.getsockname()[1]) for x in s))'; }
field() { sed -e 's/\x1b\[[0-9;]*m//g' | grep -o " $1=[^ ]*" | head -1 | cut -d= -f2; }
results=()
for run in $(seq "$RUNS"); do
  read -r p1 p2 p3 k1 k2 k3 <<<"$(ports)"
  kafka=(x $k1 $k2 $k3)
  peers="1@127.0.0.1:$p1,2@127.0.0.1:$p2,3@127.0.0.1:$p3"
  dir="$work/run$run"; mkdir -p "$dir"
  pids=()
  for id in 1 2 3; do
    RUST_LOG=info "$BIN" --node-id $id --data-dir "$dir/d$id" --kafka-addr "127.0.0.1:${kafka[$id]}" raft-cluster \
      --peers "$peers" --tls-dir "$work/certs" 2>"$dir/log$id" &
    pids+=($!)
  done
  ok=0
  for _ in $(seq 300); do
    if grep -q "meta leader elected" "$dir/log1" "$dir/log2" "$dir/log3" 2>/dev/null &&
       [ "$(grep -l "meta leader elected" "$dir"/log? | wc -l)" = 3 ]; then ok=1; break; fi
    sleep 0.05
  done
  kill -9 "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null || true
  if [ $ok = 0 ]; then echo "{\"run\": $run, \"error\": \"no leader within 15 s\"}"; continue; fi
  leader_ms=""; slowest_ms=0; term=""
  for id in 1 2 3; do
    line=$(grep "meta leader elected" "$dir/log$id" | head -1)
    ms=$(field elapsed_ms <<<"$line"); t=$(field term <<<"$line")
    [ "$(field is_leader <<<"$line")" = true ] && leader_ms=$ms && term=$t
    [ "$ms" -gt "$slowest_ms" ] && slowest_ms=$ms
    [ -z "$term" ] && term=$t
  done
  echo "{\"run\": $run, \"term\": $term, \"leader_elected_ms\": ${leader_ms:-null}, \"all_know_ms\": $slowest_ms}"
  results+=("$term ${leader_ms:-$slowest_ms} $slowest_ms")
done
printf '%s\n' "${results[@]}" | python3 -c '
import sys
rows=[list(map(int,l.split())) for l in sys.stdin if l.strip()]
def pct(v,p): v=sorted(v); return v[min(len(v)-1,int(p*len(v)))]
terms={}
for t,_,_ in rows: terms[t]=terms.get(t,0)+1
for name,i in (("leader_elected_ms",1),("all_know_ms",2)):
  v=[r[i] for r in rows]
  print(f"{name}: n={len(v)} min={min(v)} p50={pct(v,.5)} p90={pct(v,.9)} max={max(v)}")
print("term at first leader:", dict(sorted(terms.items())))
'
