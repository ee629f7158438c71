#!/usr/bin/env bash
# Runs every benchmark and prints the lines BENCHMARKS.md quotes (also saved, with the machine
# and the date, to target/bench-report.txt). Starts LocalStack for the SQS benchmarks and the
# Pub/Sub emulator for the Pub/Sub one (and stops them after) unless they already run. Takes
# about 50 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target
exec > >(tee target/bench-report.txt) 2>&1

echo "== machine ($(date -u +%Y-%m-%dT%H:%MZ))"
grep -m1 "model name" /proc/cpuinfo || true
echo "cores: $(nproc)"
rustc --version

echo "== matcher: parse + match, veltrix vs quamina (criterion)"
cargo bench --locked --bench matcher 2>&1 | grep -E "^parse|thrpt|matching rules per event" | grep -v "%"

echo "== pipeline on the memory backend"
cargo bench --locked --bench pipeline

echo "== transform sandbox: cost per transform and on the pipeline"
cargo bench --locked --bench sandbox

source localstack/lib.sh
trap stop_started_emulators EXIT
ensure_localstack

echo "== peak RSS with 1,000 messages in flight (memory backend, then SQS on LocalStack)"
cargo bench --locked --bench memory

echo "== SQS on LocalStack: worker vs bare aws-sdk-sqs loop"
cargo bench --locked --bench sqs

echo "== SQS forwarding mix on LocalStack: worker defaults vs a bare aws-sdk-sqs router and sqs-consumer"
benches/peers/install.sh
cargo bench --locked --bench router

echo "== end-to-end latency on LocalStack: send → worker → target queue → receive"
cargo bench --locked --bench latency

echo "== Pub/Sub on the emulator: worker vs bare google-cloud-pubsub streaming pull"
ensure_pubsub
cargo bench --locked --bench pubsub

echo "== Pub/Sub forwarding mix on the emulator: worker defaults vs a bare streaming-pull router"
cargo bench --locked --bench pubsub_router

echo "== fleet: 1, 2 and 3 worker containers under podman (queue to queue, and a slow HTTP handler)"
source deploy/podman/lib.sh
trap 'stop_podman_service; stop_started_emulators' EXIT
ensure_podman
ensure_podman_service
VELTRIX_IMAGE="$(deploy/build-image.sh | tail -n 1)"
export VELTRIX_IMAGE
cargo bench --locked --bench fleet -- queue
cargo bench --locked --bench fleet -- slow rounds=3
