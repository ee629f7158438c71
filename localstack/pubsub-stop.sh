#!/usr/bin/env bash
# Stop the Pub/Sub emulator that pubsub-start.sh launched (found through
# localstack/.pubsub-state/pubsub.pid). Exit 0 if it is not running. SIGTERM to the whole
# process group, SIGKILL after ~10 s (PUBSUB_STOP_GRACE); exits 1 only if the JVM survives
# SIGKILL. The launcher script execs java with the emulator jar, so either command line names
# cloud-pubsub-emulator.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

stop_process_group pubsub "$HERE/.pubsub-state/pubsub.pid" cloud-pubsub-emulator "${PUBSUB_STOP_GRACE:-10}"
