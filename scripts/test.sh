#!/usr/bin/env bash
# Runs every test of the project: the README's test command, and what .ci/run calls.
#
# 1. builds the release binary once (tests reuse that build);
# 2. starts LocalStack (installed into localstack/.venv on first use) and the Google Pub/Sub
#    emulator with the project's own scripts unless they already answer, and stops the ones it
#    started on exit;
# 3. installs podman and runc from Debian's packages when missing, serves podman's
#    Docker-compatible API on a unix socket (DOCKER_HOST, for the testcontainers crate) and builds
#    the worker image with deploy/build-image.sh, for tests/container.rs;
# 4. installs the pinned linters tests/deploy.rs runs on deploy/ and terraform/ (checkov and
#    kubernetes-validate from PyPI, the KEDA CRD models from npm: deploy/tools/install.sh);
# 5. installs Debian's chromium and the pinned playwright-core (tests/browser/install.sh) for the
#    rule playground's browser test in tests/cli.rs;
# 6. runs the whole workspace test suite (the EventBridge conformance vectors, kept in
#    tests/data/, run against the matcher and through the binary in tests/pattern_conformance.rs);
# 7. runs the benchmarks in their short smoke mode, so they keep building and their own checks
#    (the matcher agreeing with quamina on every event, the router mix arriving whole) run;
#    the router races the pinned sqs-consumer peer, installed first by benches/peers/install.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Nothing a test starts may probe the instance metadata address or find real credentials: the
# emulators take `test`/`test` (tests that check the credential chain clear the environment of
# the process they start).
export AWS_EC2_METADATA_DISABLED=true AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1

# Each stage's heading carries the seconds since this script started, so a CI log shows where
# the time went.
stage() { echo "== $1 (at ${SECONDS} s)"; }

stage "build (release, once)"
cargo build --release --locked --workspace --bins --tests --benches

# Emulators this script starts are stopped on exit, whatever happens; ones already running are
# used and left running (tests/pubsub_restart.rs restarts the Pub/Sub emulator, which needs it to
# have been started by localstack/pubsub-start.sh).
source localstack/lib.sh
source deploy/podman/lib.sh
cleanup() {
  remove_test_containers
  stop_podman_service
  stop_started_emulators
}
trap cleanup EXIT

stage "LocalStack (SQS)"
ensure_localstack

stage "Google Pub/Sub emulator"
ensure_pubsub

stage "container image (podman)"
ensure_podman
ensure_podman_service
# The binary the build above made (a `--bin veltrix` build alone would compile most crates again).
VELTRIX_IMAGE="$(VELTRIX_BINARY=target/release/veltrix deploy/build-image.sh | tail -n 1)"
export VELTRIX_IMAGE

stage "deploy linters (checkov, kubernetes-validate, KEDA CRD schemas)"
deploy/tools/install.sh

stage "browser test tools (Debian chromium, playwright-core)"
tests/browser/install.sh

stage "workspace tests"
cargo test --release --locked --workspace

stage "benchmark peers"
benches/peers/install.sh

stage "benchmark smoke runs"
# Criterion benches run each case once without --bench; the others take `quick`.
cargo test --release --locked --bench matcher
cargo test --release --locked --bench pipeline -- quick
cargo test --release --locked --bench router -- quick
cargo test --release --locked --bench pubsub_router -- quick
cargo test --release --locked --bench fleet -- quick

stage "done"
