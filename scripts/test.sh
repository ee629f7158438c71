#!/usr/bin/env bash
# Runs every test of the project: the README's test command, and what .ci/run calls.
#
# 1. builds the release binary once (tests reuse that build);
# 2. starts LocalStack with the project's own script (installs it into localstack/.venv on first
#    use) unless one already answers, and stops it on exit if this script started it;
# 3. runs the whole workspace test suite, then the public EventBridge conformance vectors
#    against the binary.
set -euo pipefail
cd "$(dirname "$0")/.."

shared="${VELTRIX_SHARED:-../shared}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== build (release, once)"
cargo build --release --locked --workspace --bins --tests

echo "== LocalStack"
if curl -fsS --max-time 2 http://127.0.0.1:4566/_localstack/health >/dev/null 2>&1; then
  echo "LocalStack already running on 127.0.0.1:4566: using it, leaving it running"
else
  trap 'localstack/stop.sh' EXIT
  localstack/start.sh
fi

echo "== workspace tests"
cargo test --release --locked --workspace

echo "== EventBridge conformance vectors"
if [ -f "$shared/conformance/run.py" ]; then
  python3 "$shared/conformance/run.py" target/release/veltrix
else
  echo "conformance vectors not found at $shared/conformance (set VELTRIX_SHARED): skipped"
fi
