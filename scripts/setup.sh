#!/usr/bin/env bash
# Everything a fresh machine needs before the first run: system packages, then the real model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/fetch-smollm2.sh
