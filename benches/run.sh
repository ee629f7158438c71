#!/usr/bin/env bash
# Runs every benchmark and prints the lines BENCHMARKS.md quotes. Starts LocalStack for the SQS
# benchmark (and stops it after) unless one already runs. Takes about 10 minutes.
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
if ! curl -fsS --max-time 2 http://127.0.0.1:4566/_localstack/health >/dev/null 2>&1; then
  trap 'localstack/stop.sh' EXIT
  localstack/start.sh
fi
cargo bench --locked --bench sqs
