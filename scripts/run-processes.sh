#!/usr/bin/env bash
# A private generation as four processes on this machine: dealer, provider worker, helper worker
# and client, every link encrypted and mutually authenticated (CURVE, allow-listed keys).
#   bash scripts/run-processes.sh [--prompt TEXT] [--max-new-tokens N] [model options...]
# Model options (--model, --lf, --n-public, --lora-rank, --lora-targets, --hm, --seed) go to the
# provider (which holds the model) and to the client (which runs the public prefix); they must
# agree, and the workers check that they do. Logs of the servers: target/processes/*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
prompt="The capital of France is"
tokens=8
model_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --prompt) prompt="$2"; shift 2 ;;
        --max-new-tokens) tokens="$2"; shift 2 ;;
        *) model_args+=("$1"); shift ;;
    esac
done
# MARILL_BIN: a binary already built (CI passes the one its tests built)
bin=${MARILL_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release -q
    bin=target/release/marill
fi
dir=target/processes
mkdir -p "$dir"
rm -rf "$dir/keys"
"$bin" keys generate --out "$dir/keys"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
d0="tcp://127.0.0.1:$(port)"; d1="tcp://127.0.0.1:$(port)"; peer="tcp://127.0.0.1:$(port)"
c0="tcp://127.0.0.1:$(port)"; c1="tcp://127.0.0.1:$(port)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
"$bin" dealer --keys "$dir/keys" --provider-endpoint "$d0" --helper-endpoint "$d1" \
    --idle-timeout-s 120 --exit-when-done 2> "$dir/dealer.log" & pids+=($!)
"$bin" worker --role provider --keys "$dir/keys" --client-endpoint "$c0" --peer-endpoint "$peer" \
    --dealer-endpoint "$d0" --idle-timeout-s 120 "${model_args[@]}" 2> "$dir/provider.log" & pids+=($!)
"$bin" worker --role helper --keys "$dir/keys" --client-endpoint "$c1" --peer-endpoint "$peer" \
    --dealer-endpoint "$d1" --idle-timeout-s 120 2> "$dir/helper.log" & pids+=($!)
"$bin" client generate --keys "$dir/keys" --provider "$c0" --helper "$c1" \
    --prompt "$prompt" --max-new-tokens "$tokens" --check "${model_args[@]}"
# the servers end by themselves once the client has said goodbye
for p in "${pids[@]}"; do wait "$p"; done
trap - EXIT
tail -n 1 "$dir/dealer.log"
