#!/usr/bin/env bash
# Search throughput through 1, 2 and 3 `arcface serve` replicas sharing one PostgreSQL gallery
# (docs/scaling.md): a throwaway cluster (initdb/pg_ctl; as root the server runs as `postgres`),
# FACES random 512-d faces (face-load populate), then for each replica count `face-load search`
# with CLIENTS clients spread over the replicas for SECONDS. Prints one JSON line per count.
#
#   cargo build --release -p arcface-cli -p face-serve --bin arcface --bin face-load
#   tools/bench_replicas.sh [FACES=100000] [CLIENTS=6] [SECONDS=10]
#   PIN=1 tools/bench_replicas.sh ...   # replica i on core (i - 1) mod nproc, one search thread each
set -euo pipefail
faces=${1:-100000}; clients=${2:-6}; seconds=${3:-10}
repo="$(cd "$(dirname "$0")/.." && pwd)"
bin="$repo/target/release"
[[ -x $bin/arcface && -x $bin/face-load ]] || { echo "build the release binaries first (see the header)" >&2; exit 2; }
model="$repo/datasets/cache/models/w600k_mbf.onnx"
[[ -f $model ]] || { echo "$model missing: run python3 datasets/fetch_real.py" >&2; exit 2; }

pgbin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort | tail -1)")
work=$(mktemp -d /tmp/arcface-replicas.XXXXXX)
as_pg=()
if [[ $(id -u) == 0 ]]; then chown postgres "$work"; as_pg=(runuser -u postgres --); fi
port=$((20000 + RANDOM % 20000))
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    "${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
"${as_pg[@]}" "$pgbin/initdb" -D "$work/data" -U arcface --auth=trust -E UTF8 --no-sync >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$work/data" -l "$work/data/server.log" -w \
    -o "-p $port -k $work -c listen_addresses=127.0.0.1" start >/dev/null
url="postgres://arcface@127.0.0.1:$port/postgres"

"$bin/arcface" import --arch mbf --from "$model" --out "$work/mbf.arcface" >/dev/null
"$bin/face-load" populate --gallery "$url" --faces "$faces" --dim 512 >&2

start_replica() {  # $1: port, $2: replica number; waits until it listens
    local pin=()
    if [[ ${PIN:-0} == 1 ]]; then pin=(env RAYON_NUM_THREADS=1 taskset -c $((($2 - 1) % $(nproc)))); fi
    "${pin[@]}" "$bin/arcface" serve --model "$work/mbf.arcface" --gallery "$url" --addr "127.0.0.1:$1" 2>"$work/serve-$1.log" &
    pids+=($!)
    for _ in $(seq 600); do grep -q "listening on" "$work/serve-$1.log" && return; sleep 0.1; done
    cat "$work/serve-$1.log" >&2; exit 1
}
addrs=()
for n in 1 2 3; do
    p=$((port + n)); start_replica "$p" "$n"; addrs+=("127.0.0.1:$p")
    list=$(IFS=,; echo "${addrs[*]}")
    "$bin/face-load" search --addr "$list" --dim 512 --clients "$clients" --seconds "$seconds" --json
done
