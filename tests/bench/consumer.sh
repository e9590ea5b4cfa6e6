#!/usr/bin/env bash
# Consumer throughput benchmark, one command:
#
#   bash tests/bench/consumer.sh                 # 1,000,000 tweets of ~1 KB
#   bash tests/bench/consumer.sh --tweets 300000
#
# Starts the test environment if needed (tests/env/up), builds release
# binaries, pre-loads the tweets (X API v2 shape: up to 280 characters of
# text, entities with hashtags, a mention and a link) into a fresh
# 3-partition topic, then times `kcat -C -e -o beginning -q` (median of three
# runs) and one twitterstream-consumer replica (full pipeline, exactly-once
# output) over the same topic, and prints both rates,
# their ratio (target >= 0.8x) and the window-close-to-emit latency p50/p99.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
env_exports=$(tests/env/up) # an assignment, so a failed start stops the script (eval "$(...)" would not)
eval "$env_exports"
target=${CARGO_TARGET_DIR:-target}
cargo build --release -p twitterstream-workers --bin twitterstream-consumer
cargo build --release -p twitterstream-tests --bin consumer-bench
exec "$target/release/consumer-bench" --consumer "$target/release/twitterstream-consumer" "$@"
