#!/usr/bin/env bash
# The cluster as separate processes on this machine, then one private generation through it:
# a Kafka-protocol broker (tansu), one dealer per worker pair, PAIRS provider/helper worker
# pairs, the coordinator, and the client (`marill client generate --brokers`). Shares travel
# sealed to the provider's and the helper's trust-domain keys; every zeromq link is CURVE.
#   bash scripts/run-cluster.sh [--pairs N] [--prompt TEXT] [--max-new-tokens N] [--serve ADDR] [model options...]
# With --serve ADDR the client is `marill gateway --listen ADDR` instead (the OpenAI API in front
# of the cluster, until Ctrl-C).
# Model options go to the workers and the client (they must agree). Logs: target/cluster/*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
prompt="The capital of France is"
tokens=8
pairs=1
serve=""
model_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --prompt) prompt="$2"; shift 2 ;;
        --max-new-tokens) tokens="$2"; shift 2 ;;
        --pairs) pairs="$2"; shift 2 ;;
        --serve) serve="$2"; shift 2 ;;
        *) model_args+=("$1"); shift ;;
    esac
done
bash scripts/fetch-tansu.sh
cargo build --release -q
bin=target/release/marill
dir=target/cluster
mkdir -p "$dir"
rm -rf "$dir/keys"
"$bin" keys generate --out "$dir/keys"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
kport=$(port)
target/tools/tansu broker --listener-url "tcp://127.0.0.1:$kport" \
    --advertised-listener-url "tcp://127.0.0.1:$kport" --storage-engine memory://tansu/ \
    > "$dir/tansu.log" 2>&1 & pids+=($!)
fast=(--kafka-set session.timeout.ms=1000 --kafka-set heartbeat.interval.ms=300)
pair_args=()
for i in $(seq 1 "$pairs"); do
    d0="tcp://127.0.0.1:$(port)"; d1="tcp://127.0.0.1:$(port)"; peer="tcp://127.0.0.1:$(port)"
    c0="tcp://127.0.0.1:$(port)"; c1="tcp://127.0.0.1:$(port)"
    "$bin" dealer --keys "$dir/keys" --provider-endpoint "$d0" --helper-endpoint "$d1" \
        2> "$dir/dealer-$i.log" & pids+=($!)
    "$bin" worker --role provider --keys "$dir/keys" --control-endpoint "$c0" --peer-endpoint "$peer" \
        --dealer-endpoint "$d0" "${model_args[@]}" 2> "$dir/provider-$i.log" & pids+=($!)
    "$bin" worker --role helper --keys "$dir/keys" --control-endpoint "$c1" --peer-endpoint "$peer" \
        --dealer-endpoint "$d1" "${model_args[@]}" 2> "$dir/helper-$i.log" & pids+=($!)
    pair_args+=(--pair "$c0,$c1")
done
"$bin" coordinator --brokers "127.0.0.1:$kport" --keys "$dir/keys" "${pair_args[@]}" "${fast[@]}" \
    2> "$dir/coordinator.log" & pids+=($!)
if [ -n "$serve" ]; then
    "$bin" gateway --listen "$serve" --brokers "127.0.0.1:$kport" --keys "$dir/keys" "${fast[@]}" \
        "${model_args[@]}"
    exit
fi
"$bin" client generate --brokers "127.0.0.1:$kport" --keys "$dir/keys" "${fast[@]}" \
    --prompt "$prompt" --max-new-tokens "$tokens" --check "${model_args[@]}"
