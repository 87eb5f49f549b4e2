#!/usr/bin/env bash
# Memory per face and start time of `arcface serve` (docs/scaling.md): a SQLite gallery of FACES
# random 512-d faces (face-load populate), then for each index precision the server's resident
# memory once listening, with that gallery and with an empty one, and the time it took to listen.
# With a PostgreSQL URL, the same for an f32 replica over FACES faces written there.
#
#   cargo build --release -p arcface-cli -p face-serve --bin arcface --bin face-load
#   tools/gallery_memory.sh [FACES=200000] [postgres://USER@HOST:PORT/DB]
set -euo pipefail
faces=${1:-200000}; url=${2:-}
repo="$(cd "$(dirname "$0")/.." && pwd)"
bin="$repo/target/release"
work=$(mktemp -d /tmp/arcface-memory.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$bin/arcface" import --arch mbf --from "$repo/datasets/cache/models/w600k_mbf.onnx" --out "$work/mbf.arcface" >/dev/null
"$bin/face-load" populate --gallery "$work/empty.db" --faces 0 --dim 512 >/dev/null 2>&1
"$bin/face-load" populate --gallery "$work/full.db" --faces "$faces" --dim 512 >/dev/null 2>&1

serve() {  # $1 gallery, $2 precision: prints "seconds-to-listen resident-kB"
    local start end pid
    start=$(date +%s.%N)
    "$bin/arcface" serve --model "$work/mbf.arcface" --gallery "$1" --precision "$2" --addr 127.0.0.1:0 2>"$work/serve.log" &
    pid=$!
    until grep -q "listening on" "$work/serve.log"; do
        kill -0 "$pid" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
        sleep 0.02
    done
    end=$(date +%s.%N)
    echo "$(echo "$end - $start" | bc) $(awk '/VmRSS/ {print $2}' /proc/$pid/status)"
    kill "$pid"; wait "$pid" 2>/dev/null || true
}

report() {  # $1 label, $2 precision, $3 full gallery
    read -r t0 m0 < <(serve "$work/empty.db" "$2")
    read -r t1 m1 < <(serve "$3" "$2")
    echo "{\"gallery\":\"$1\",\"precision\":\"$2\",\"faces\":$faces,\"bytes_per_face\":$(( (m1 - m0) * 1024 / faces )),\"seconds_to_listen\":$t1,\"empty_seconds\":$t0}"
}
for p in f32 f16 int8 sq4; do report sqlite "$p" "$work/full.db"; done
if [[ -n $url ]]; then
    "$bin/face-load" populate --gallery "$url" --faces "$faces" --dim 512 >/dev/null 2>&1
    report postgres f32 "$url"
fi
