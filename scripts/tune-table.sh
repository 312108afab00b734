#!/usr/bin/env bash
# The tuning table of docs/tuning.md: SmolLM2-135M fine-tuned on the State of the Union corpus
# (scripts/fetch-corpus.sh) for each (LF, HM) and for head pruning at the same head count, one
# run after another, each with its held-out perplexity before and after and its wall time.
# Results: $OUT/<run>/result.json (+ export), logs in $OUT/<run>.log, the table in $OUT/table.md;
# a run whose result.json exists is not repeated.
#
# Usage: bash scripts/tune-table.sh [OUT] ; env: MARILL (binary), STEPS, ACCUM, SEQ, LR,
# EVAL_WINDOWS, RUNS (space-separated "lf:hm:prune" triples), DEADLINE (epoch seconds: no run
# starts after it, so the script ends by itself on a shared machine).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-target/tune}"
MARILL="${MARILL:-target/release/marill}"
STEPS="${STEPS:-30}"; ACCUM="${ACCUM:-2}"; SEQ="${SEQ:-64}"; LR="${LR:-2e-3}"
EVAL_WINDOWS="${EVAL_WINDOWS:-32}"
# SmolLM2-135M has 9 heads: head merging/pruning by 3 and 9 (2 and 4 do not divide 9).
RUNS="${RUNS:-0.5:1:1 0.5:3:1 0.5:9:1 0.5:1:3 0.5:1:9 0.75:1:1 0.75:3:1 0.75:9:1 0.75:1:3 0.75:1:9 0.25:1:1 0.25:3:1 0.25:9:1 0:1:1 0:3:1 0:9:1}"
DEADLINE="${DEADLINE:-0}"
bash scripts/fetch-smollm2.sh >/dev/null
bash scripts/fetch-corpus.sh >/dev/null
mkdir -p "$OUT"
for run in $RUNS; do
    IFS=: read -r lf hm prune <<<"$run"
    name="lf${lf}-hm${hm}-prune${prune}"
    if [ -s "$OUT/$name/result.json" ]; then continue; fi
    if [ "$DEADLINE" != 0 ] && [ "$(date +%s)" -ge "$DEADLINE" ]; then
        echo "deadline reached, not starting $name" >>"$OUT/skipped.txt"
        continue
    fi
    start=$(date +%s)
    nice -n 10 "$MARILL" tune train --lf "$lf" --hm "$hm" --prune "$prune" \
        --data target/corpus/train.txt --heldout target/corpus/heldout.txt \
        --eval-windows "$EVAL_WINDOWS" --steps "$STEPS" --accum "$ACCUM" --seq-len "$SEQ" \
        --lr "$LR" --checkpoint-every 10 --out "$OUT/$name" >"$OUT/$name.log" 2>&1 || {
        echo "$name failed (see $OUT/$name.log)" >>"$OUT/skipped.txt"; continue; }
    echo "$name $(( $(date +%s) - start ))" >>"$OUT/wall.txt"
done
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
wall = {}
if os.path.exists(os.path.join(out, "wall.txt")):
    for line in open(os.path.join(out, "wall.txt")):
        n, s = line.split(); wall[n] = int(s)
rows = []
for n in sorted(os.listdir(out)):
    p = os.path.join(out, n, "result.json")
    if os.path.isfile(p):
        r = json.load(open(p))
        r["losses"] = json.load(open(os.path.join(out, n, "marill.json")))["training"]["losses"]
        rows.append((n, r))
lines = [
    "| LF (public/total) | private attention | heads per private layer | held-out ppl before | ppl after | next-token acc before | acc after | train loss, mean of steps 1-5 → last 5 | train s | wall s |",
    "|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
]
key = lambda x: (x[1]["lf"], x[1]["heads_per_private_layer"] * -1, x[1]["head_prune"] > 1)
for n, r in sorted(rows, key=key):
    method = f"pruned, m={r['head_prune']}" if r["head_prune"] > 1 else (f"merged, HM={r['head_merge']}" if r["head_merge"] > 1 else "HM=1 (base heads)")
    l = r["losses"]
    first, last = sum(l[:5]) / 5, sum(l[-5:]) / 5
    lines.append(f"| {r['lf']:.2f} ({r['n_public']}/{r['n_layers']}) | {method} | {r['heads_per_private_layer']} | {r['ppl_before']:.2f} | **{r['ppl_after']:.2f}** | {r['acc_before']:.4f} | {r['acc_after']:.4f} | {first:.3f} → {last:.3f} | {r['train_s']:.0f} | {wall.get(n, '')} |")
open(os.path.join(out, "table.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
