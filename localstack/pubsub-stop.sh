#!/usr/bin/env bash
# Stop the Pub/Sub emulator that pubsub-start.sh launched (found through
# localstack/.pubsub-state/pubsub.pid). Exit 0 if it is not running. SIGTERM to the whole
# process group, SIGKILL after ~10 s; exits 1 only if the JVM survives SIGKILL.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PIDFILE="$HERE/.pubsub-state/pubsub.pid"
GRACE_SECONDS="${PUBSUB_STOP_GRACE:-10}"

log() { printf 'pubsub: %s\n' "$*"; }

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

# Guard against pid reuse: only signal the process if it really is our emulator (the launcher
# script execs java with the emulator jar, so either command line names it).
if [[ "$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" != *cloud-pubsub-emulator* ]]; then
  log "pid $pid is not the Pub/Sub emulator (pid reused?); removing the stale pid file, killing nothing"
  rm -f "$PIDFILE"
  exit 0
fi

# pubsub-start.sh runs the emulator under setsid, so its process group id is its pid;
# signalling the group (negative id) reaches every process in it.
pgid="$(ps -o pgid= -p "$pid" | tr -d ' ')"
if [[ "$pgid" != "$pid" ]]; then
  # Not a group leader (started some other way): never signal a group we do not own.
  log "pid $pid is not a process group leader (pgid $pgid); signalling the pid only"
  pgid=""
fi
target() { if [[ -n "$pgid" ]]; then echo "-$pgid"; else echo "$pid"; fi; }
group_alive() { kill -0 -- "$(target)" 2>/dev/null; }

log "stopping pid $pid${pgid:+ (process group $pgid)}"
kill -TERM -- "$(target)" 2>/dev/null || true

for ((i = 0; i < GRACE_SECONDS * 10; i++)); do
  group_alive || break
  sleep 0.1
done

if group_alive; then
  log "still running after ${GRACE_SECONDS}s, sending SIGKILL"
  kill -KILL -- "$(target)" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    group_alive || break
    sleep 0.1
  done
fi

rm -f "$PIDFILE"
if group_alive; then
  log "error: $(target) survived SIGKILL" >&2
  exit 1
fi
log "stopped"
