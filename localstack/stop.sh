#!/usr/bin/env bash
# Stop the LocalStack that start.sh launched (found through localstack/.state/localstack.pid).
# Exit 0 if it is not running. SIGTERM to the whole process group, SIGKILL after ~10 s
# (LOCALSTACK_STOP_GRACE); exits 1 only if it survives SIGKILL.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$HERE/lib.sh"

stop_process_group localstack "$HERE/.state/localstack.pid" localstack.runtime.main "${LOCALSTACK_STOP_GRACE:-10}"
