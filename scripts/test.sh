#!/usr/bin/env bash
# The project's test command (README quick start and CI both call this). Installs what the
# tests need when missing: system packages, the real model, the Kafka-protocol broker (tansu).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/fetch-smollm2.sh
bash scripts/fetch-tansu.sh
cargo test --workspace --release
