#!/usr/bin/env bash
# Runs every test of the project: the README's test command, and what .ci/run calls.
#
# 1. builds the release binary once (tests reuse that build);
# 2. starts LocalStack (installed into localstack/.venv on first use) and the Google Pub/Sub
#    emulator with the project's own scripts unless they already answer, and stops the ones it
#    started on exit;
# 3. runs the whole workspace test suite, then the public EventBridge conformance vectors
#    against the binary.
set -euo pipefail
cd "$(dirname "$0")/.."

shared="${VELTRIX_SHARED:-../shared}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== build (release, once)"
cargo build --release --locked --workspace --bins --tests

# Emulators this script starts are stopped on exit, whatever happens; ones already running
# are used and left running.
stop_on_exit=()
cleanup() {
  for script in "${stop_on_exit[@]}"; do
    "$script" || true
  done
}
trap cleanup EXIT

echo "== LocalStack (SQS)"
if curl -fsS --max-time 2 http://127.0.0.1:4566/_localstack/health >/dev/null 2>&1; then
  echo "LocalStack already running on 127.0.0.1:4566: using it, leaving it running"
else
  stop_on_exit+=(localstack/stop.sh)
  localstack/start.sh
fi

echo "== Google Pub/Sub emulator"
if curl -fsS --max-time 2 -o /dev/null http://127.0.0.1:8085/v1/projects/veltrix-local/topics 2>/dev/null; then
  echo "Pub/Sub emulator already running on 127.0.0.1:8085: using it, leaving it running"
  echo "(tests/pubsub_restart.rs restarts it, which needs it to have been started by localstack/pubsub-start.sh)"
else
  stop_on_exit+=(localstack/pubsub-stop.sh)
  localstack/pubsub-start.sh
fi
export PUBSUB_EMULATOR_HOST=127.0.0.1:8085

echo "== workspace tests"
cargo test --release --locked --workspace

echo "== EventBridge conformance vectors"
if [ -f "$shared/conformance/run.py" ]; then
  python3 "$shared/conformance/run.py" target/release/veltrix
else
  echo "conformance vectors not found at $shared/conformance (set VELTRIX_SHARED): skipped"
fi
