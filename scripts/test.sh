#!/usr/bin/env bash
# Runs every test of the project: the README's test command, and what .ci/run calls.
#
# Builds the release binary once, runs the whole workspace test suite against that build, then
# runs the public EventBridge conformance vectors against the binary. Emulator-backed suites
# (LocalStack, the Pub/Sub emulator) are started here and stopped on exit once they exist.
set -euo pipefail
cd "$(dirname "$0")/.."

shared="${VELTRIX_SHARED:-../shared}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== build (release, once)"
cargo build --release --locked --bins

echo "== workspace tests"
cargo test --release --locked --workspace

echo "== EventBridge conformance vectors"
if [ -f "$shared/conformance/run.py" ]; then
  python3 "$shared/conformance/run.py" target/release/veltrix
else
  echo "conformance vectors not found at $shared/conformance (set VELTRIX_SHARED): skipped"
fi
