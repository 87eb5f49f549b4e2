#!/usr/bin/env bash
# Int8 side by side for docs/performance.md: `arcface quantize` (our f32 Burn model, our f32 engine,
# our int8 engine) and ONNX Runtime's static int8 on the same models and the same real faces, in one
# run, on an otherwise idle machine.
# Usage: PEER_PYTHON=/path/to/venv/bin/python tools/bench_int8.sh
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-target/bench_int8}
CALIB=${CALIB:-20}
mkdir -p "$WORK"
python3 datasets/fetch_real.py >/dev/null
cargo build --release -p arcface-cli
A=target/release/arcface
# Real faces: every face of the registry photos, detected and aligned (as the real-face tests do).
$A align --in datasets/cache/decoded --out "$WORK/faces" --min-size 40 --min-sharpness 0 >/dev/null
"${PEER_PYTHON:-python3}" tools/bench_peers_int8.py "$WORK/faces" "$WORK" "$CALIB" > "$WORK/ort.json"
$A import --from "$WORK/r50.pth" --arch r50 --out "$WORK/r50.arcface" >/dev/null
$A import --from datasets/cache/models/w600k_mbf.onnx --out "$WORK/mbf.arcface" >/dev/null
for m in r50 mbf; do
  $A quantize --model "$WORK/$m.arcface" --calib "$WORK/faces" --calib-faces "$CALIB" --check-faces 100 \
    --out "$WORK/$m.aq8" --runs 20
done
cat "$WORK/ort.json"
