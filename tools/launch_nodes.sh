#!/usr/bin/env bash
# Starts N `arcface train` processes on this host as one multi-node run (docs/training.md,
# "Several machines"): rank 0 runs the rendezvous at 127.0.0.1:PORT and writes into --out, rank
# R > 0 into OUT/node-R. Each process's log goes to OUT-logs/node-R.log (rank 0's progress bar
# stays on this terminal). If one process fails, the others are stopped; the exit status is the
# first failure's.
#
#   tools/launch_nodes.sh 2 -- --config my.toml --out runs/two
#   tools/launch_nodes.sh 2 --port 29600 -- --resume runs/two       # continue after a failure
#   ARCFACE=target/release/arcface tools/launch_nodes.sh 4 -- --config my.toml --out runs/four
#
# Several machines: run `arcface train ... --nodes N --node-rank R --coordinator HOST0:PORT
# --node-address THIS_HOST:PORT2` on each instead (same config, same N and coordinator).
set -euo pipefail

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
[[ $# -ge 1 && ( $1 == -h || $1 == --help ) ]] && usage
[[ $# -ge 2 ]] || usage 2
nodes=$1; shift
[[ $nodes =~ ^[1-9][0-9]*$ ]] || { echo "N must be a positive number, got '$nodes'" >&2; exit 2; }
port=29500
if [[ ${1:-} == --port ]]; then port=$2; shift 2; fi
[[ ${1:-} == -- ]] || usage 2
shift
args=("$@")

# Where rank 0 writes (for the logs folder beside it).
out=runs/default
for ((i = 0; i < ${#args[@]}; i++)); do
    [[ ${args[i]} == --out || ${args[i]} == --resume ]] && out=${args[i + 1]}
done
logs="${out%/}-logs"
mkdir -p "$logs"

repo="$(cd "$(dirname "$0")/.." && pwd)"
arcface=${ARCFACE:-}
if [[ -z $arcface ]]; then
    cargo build --quiet --manifest-path "$repo/Cargo.toml" -p arcface-cli
    arcface="$repo/target/debug/arcface"
fi

pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap stop_all INT TERM

for ((rank = nodes - 1; rank >= 0; rank--)); do
    cmd=("$arcface" train "${args[@]}" --nodes "$nodes" --node-rank "$rank" --coordinator "127.0.0.1:$port")
    if ((rank == 0)); then
        "${cmd[@]}" 2> >(tee "$logs/node-0.log" >&2) &
    else
        "${cmd[@]}" >"$logs/node-$rank.log" 2>&1 &
    fi
    pids[rank]=$!
done

status=0
for ((done = 0; done < nodes; done++)); do
    code=0
    wait -n || code=$?
    if ((code != 0 && status == 0)); then
        status=$code
        echo "a node failed (exit $code): stopping the others; logs in $logs/" >&2
        stop_all
    fi
done
exit "$status"
