#!/usr/bin/env bash
# Runs the benchmarks against both runtime builds of sluice.
#   bench/run.sh                 # tokio and smol release builds, 1,000,000 x 100 B and 10 KiB
# Needs: confluent-kafka (pip, see tests/requirements.txt), librdkafka-dev and a C compiler for
# the native client. Results are JSON lines on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES=${MESSAGES:-1000000}
cargo build --release -p sluice-server
cargo build --release -p sluice-server --no-default-features --features runtime-smol --target-dir target/smol
cc -O2 -Wall -o target/release/native-bench bench/native.c -lrdkafka
for bin in target/release/sluice target/smol/release/sluice; do
  echo "== $bin: confluent-kafka (Python) client"
  python3 bench/bench.py --bin "$bin" --messages "$MESSAGES"
  echo "== $bin: librdkafka C client"
  dir=$(mktemp -d)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$bin" --kafka-addr "127.0.0.1:$port" --data-dir "$dir/data" 2>"$dir/log" &
  pid=$!
  for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  target/release/native-bench "127.0.0.1:$port" native-100 "$MESSAGES" 100
  target/release/native-bench "127.0.0.1:$port" native-10k $((MESSAGES / 20)) 10240
  echo "{\"broker_rss_peak_kib\": $(awk '/VmHWM/{print $2}' /proc/$pid/status)}"
  kill -TERM $pid; wait $pid || true
  rm -rf "$dir"
done
