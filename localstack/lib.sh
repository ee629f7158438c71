# Shared process handling for the emulator scripts in this directory (sourced, not run).
#
# The start scripts launch each emulator under setsid, so its pid is its process group id and
# a stop can signal the whole group (the server and any children it spawned).

# stop_process_group NAME PIDFILE CMDLINE-PATTERN GRACE-SECONDS
#
# Stops the process recorded in PIDFILE if it is alive and its command line matches
# CMDLINE-PATTERN (a stale pid file naming a reused pid kills nothing): SIGTERM to its process
# group (or to the pid alone if it does not lead a group), SIGKILL after GRACE-SECONDS.
# Returns 0 when nothing of it is left running, 1 if it survived SIGKILL.
stop_process_group() {
  local name="$1" pidfile="$2" pattern="$3" grace="$4" pid pgid target i
  say() { printf '%s: %s\n' "$name" "$*"; }

  if [[ ! -f "$pidfile" ]]; then
    say "not running (no pid file)"
    return 0
  fi
  pid="$(cat "$pidfile")"
  if ! kill -0 "$pid" 2>/dev/null; then
    say "not running (stale pid file for pid $pid, removed)"
    rm -f "$pidfile"
    return 0
  fi
  if [[ "$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" != *$pattern* ]]; then
    say "pid $pid is not $name (pid reused?); removing the stale pid file, killing nothing"
    rm -f "$pidfile"
    return 0
  fi

  pgid="$(ps -o pgid= -p "$pid" | tr -d ' ')"
  if [[ "$pgid" == "$pid" ]]; then
    target="-$pgid"
    say "stopping pid $pid (process group $pgid)"
  else
    # Not a group leader (started some other way): never signal a group we do not own.
    target="$pid"
    say "stopping pid $pid (not a process group leader: signalling the pid only)"
  fi
  kill -TERM -- "$target" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 -- "$target" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 -- "$target" 2>/dev/null; then
    say "still running after ${grace}s, sending SIGKILL"
    kill -KILL -- "$target" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      kill -0 -- "$target" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$pidfile"
  if kill -0 -- "$target" 2>/dev/null; then
    say "error: $target survived SIGKILL" >&2
    return 1
  fi
  say "stopped"
}

# --- for scripts that need the emulators for one run (scripts/test.sh, benches/run.sh) --------
# `ensure_localstack` / `ensure_pubsub` use an emulator that already answers (and leave it
# running), or start one with the project's script and remember to stop it; the caller sets
# `trap stop_started_emulators EXIT`.

LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STARTED_EMULATORS=()

stop_started_emulators() {
  local stop
  for stop in "${STARTED_EMULATORS[@]}"; do
    "$stop" || true
  done
}

ensure_localstack() {
  if curl -fsS --max-time 2 http://127.0.0.1:4566/_localstack/health >/dev/null 2>&1; then
    echo "LocalStack already running on 127.0.0.1:4566: using it, leaving it running"
  else
    STARTED_EMULATORS+=("$LIB_DIR/stop.sh")
    "$LIB_DIR/start.sh"
  fi
}

ensure_pubsub() {
  if curl -fsS --max-time 2 -o /dev/null http://127.0.0.1:8085/v1/projects/veltrix-local/topics 2>/dev/null; then
    echo "Pub/Sub emulator already running on 127.0.0.1:8085: using it, leaving it running"
  else
    STARTED_EMULATORS+=("$LIB_DIR/pubsub-stop.sh")
    "$LIB_DIR/pubsub-start.sh"
  fi
  export PUBSUB_EMULATOR_HOST=127.0.0.1:8085
}
