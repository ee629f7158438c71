#!/usr/bin/env bash
# Stop the LocalStack that start.sh launched (found through localstack/.state/localstack.pid).
# Exit 0 if it is not running. SIGTERM to the whole process group, SIGKILL after ~10 s.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PIDFILE="$HERE/.state/localstack.pid"
GRACE_SECONDS="${LOCALSTACK_STOP_GRACE:-10}"

log() { printf 'localstack: %s\n' "$*"; }

if [[ ! -f "$PIDFILE" ]]; then
  log "not running (no pid file)"
  exit 0
fi
pid="$(cat "$PIDFILE")"

if ! kill -0 "$pid" 2>/dev/null; then
  log "not running (stale pid file for pid $pid, removed)"
  rm -f "$PIDFILE"
  exit 0
fi

# Guard against pid reuse: only signal the process if it really is our LocalStack.
if [[ "$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" != *localstack.runtime.main* ]]; then
  log "pid $pid is not LocalStack (pid reused?); removing the stale pid file, killing nothing"
  rm -f "$PIDFILE"
  exit 0
fi

# start.sh runs LocalStack under setsid, so its process group id is its pid; signalling the
# group (negative id) also reaches any child processes it spawned.
pgid="$(ps -o pgid= -p "$pid" | tr -d ' ')"
group_alive() { kill -0 -- "-$pgid" 2>/dev/null; }

log "stopping pid $pid (process group $pgid)"
kill -TERM -- "-$pgid" 2>/dev/null || true

for ((i = 0; i < GRACE_SECONDS * 10; i++)); do
  group_alive || break
  sleep 0.1
done

if group_alive; then
  log "still running after ${GRACE_SECONDS}s, sending SIGKILL"
  kill -KILL -- "-$pgid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    group_alive || break
    sleep 0.1
  done
fi

rm -f "$PIDFILE"
if group_alive; then
  log "error: process group $pgid survived SIGKILL" >&2
  exit 1
fi
log "stopped"
