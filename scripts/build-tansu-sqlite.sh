#!/usr/bin/env bash
# tansu 0.6.0 built from crates.io with its SQLite (libsql) storage engine, for the broker
# restart fault test (tests/faults.rs::the_broker_restarted_mid_batch): unlike the prebuilt
# binary of scripts/fetch-tansu.sh (memory and S3 only), its log outlives a restart. Takes
# ~40 minutes on 2 cores, so CI does not run it. Idempotent. Then:
#   MARILL_TEST_TANSU=target/tools/tansu-sqlite/bin/tansu \
#   MARILL_TEST_TANSU_STORAGE=sqlite://target/tansu-restart.db \
#   cargo test --release --workspace --test faults -- --ignored the_broker_restarted
set -euo pipefail
cd "$(dirname "$0")/.."
root=target/tools/tansu-sqlite
if [ -x "$root/bin/tansu" ] && "$root/bin/tansu" --version | grep -q '0\.6\.0'; then
  exit 0
fi
cargo install tansu --version 0.6.0 --locked --features libsql --root "$root"
echo "built: $root/bin/tansu ($("$root/bin/tansu" --version))"
