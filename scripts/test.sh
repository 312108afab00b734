#!/usr/bin/env bash
# The project's test command (README quick start and CI both call this).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
cargo test --workspace --release
