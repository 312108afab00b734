#!/usr/bin/env bash
# Durable storage for the broker-restart test: an S3-protocol server on 127.0.0.1 that the
# prebuilt tansu (scripts/fetch-tansu.sh: memory:// and s3:// engines only) keeps its log in, so
# a broker killed with -9 comes back with its topics, offsets and consumer groups. The server is
# moto's (`moto[server]` from PyPI, pinned), installed into its own virtual environment under
# target/tools/moto; the test starts it on a free port. Idempotent; ~1.5 min the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/tools/moto
pkg="moto[server]==5.2.5"
if [ -x "$out/bin/moto_server" ] && [ "$(cat "$out/.installed" 2>/dev/null)" = "$pkg" ]; then
  exit 0
fi
rm -rf "$out"
mkdir -p target/tools
python3 -m venv "$out"
"$out/bin/pip" install --quiet --disable-pip-version-check "$pkg"
echo "$pkg" > "$out/.installed"
echo "installed: $out/bin/moto_server ($pkg)"
