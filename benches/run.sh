#!/usr/bin/env bash
# Runs every benchmark and prints the lines BENCHMARKS.md quotes. Starts LocalStack for the SQS
# benchmark and the Pub/Sub emulator for the Pub/Sub one (and stops them after) unless they
# already run. Takes about 15 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== machine"
grep -m1 "model name" /proc/cpuinfo || true
echo "cores: $(nproc)"
rustc --version

echo "== matcher: parse + match, veltrix vs quamina (criterion)"
cargo bench --locked --bench matcher 2>&1 | grep -E "^parse|thrpt|matching rules per event" | grep -v "%"

echo "== pipeline on the memory backend"
cargo bench --locked --bench pipeline

echo "== SQS on LocalStack: worker vs bare aws-sdk-sqs loop"
stop_on_exit=()
cleanup() {
  for script in "${stop_on_exit[@]}"; do
    "$script" || true
  done
}
trap cleanup EXIT
if ! curl -fsS --max-time 2 http://127.0.0.1:4566/_localstack/health >/dev/null 2>&1; then
  stop_on_exit+=(localstack/stop.sh)
  localstack/start.sh
fi
cargo bench --locked --bench sqs

echo "== Pub/Sub on the emulator: worker vs bare google-cloud-pubsub streaming pull"
if ! curl -fsS --max-time 2 -o /dev/null http://127.0.0.1:8085/v1/projects/veltrix-local/topics 2>/dev/null; then
  stop_on_exit+=(localstack/pubsub-stop.sh)
  localstack/pubsub-start.sh
fi
cargo bench --locked --bench pubsub
