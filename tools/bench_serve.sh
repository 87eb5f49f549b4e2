#!/usr/bin/env bash
# The face service under load on loopback (docs/performance.md, "The face service"):
#   1. Embed: one 640x480 photo with one face (Gauss's portrait, scaled and padded), detect + align +
#      embed with int8 w600k_mbf, N clients for T seconds.
#   2. Search: a 1,000,000-face gallery (random 512-d faces, `face-load populate`), exact search, top-10.
# Usage: tools/bench_serve.sh [clients] [seconds]     (run on an otherwise idle machine)
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-4}
SECONDS_=${2:-20}
WORK=${WORK:-target/bench_serve}
mkdir -p "$WORK"
python3 datasets/fetch_real.py >/dev/null
cargo build --release -p arcface-cli
cargo build --release -p face-serve --bin face-load
A=target/release/arcface
L=target/release/face-load
[ -f "$WORK/mbf.aq8" ] || {
  $A import --from datasets/cache/models/w600k_mbf.onnx --out "$WORK/mbf.arcface" >/dev/null
  $A align --in datasets/cache/decoded --out "$WORK/faces" --min-size 40 --min-sharpness 0 >/dev/null
  $A quantize --model "$WORK/mbf.arcface" --calib "$WORK/faces" --calib-faces 20 --out "$WORK/mbf.aq8" >/dev/null
}
wait_up() { for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.5; done; return 1; }

rm -f "$WORK"/small.db*
$A serve --model "$WORK/mbf.aq8" --gallery "$WORK/small.db" --addr 127.0.0.1:50061 2>"$WORK/serve_small.log" &
PID=$!
wait_up 50061
$L embed --addr 127.0.0.1:50061 --image datasets/cache/photos/gauss.png --fit 640x480 \
  --clients 1 --seconds "$SECONDS_" --json
$L embed --addr 127.0.0.1:50061 --image datasets/cache/photos/gauss.png --fit 640x480 \
  --clients "$CLIENTS" --seconds "$SECONDS_" --json
kill -TERM $PID; wait $PID || true

[ -f "$WORK/big.db" ] || $L populate --gallery "$WORK/big.db" --faces 1000000 --dim 512 >&2
for precision in f32 int8; do
  $A serve --model "$WORK/mbf.aq8" --gallery "$WORK/big.db" --precision $precision --addr 127.0.0.1:50062 2>"$WORK/serve_big.log" &
  PID=$!
  wait_up 50062
  $L search --addr 127.0.0.1:50062 --clients 1 --seconds "$SECONDS_" --json | sed "s/^{/{\"precision\":\"$precision\",/"
  $L search --addr 127.0.0.1:50062 --clients "$CLIENTS" --seconds "$SECONDS_" --json | sed "s/^{/{\"precision\":\"$precision\",/"
  kill -TERM $PID; wait $PID || true
done
