#!/usr/bin/env bash
# The project's test command (README quick start and CI both call this). Installs what the
# tests need when missing: system packages, the real model, the Kafka-protocol broker (tansu)
# and the S3-protocol server its restart test stores in (moto).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/fetch-smollm2.sh
bash scripts/fetch-tansu.sh
bash scripts/fetch-s3-server.sh
cargo test --workspace --release
