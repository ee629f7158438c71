#!/usr/bin/env bash
# Start the Google Pub/Sub emulator (the Java one that ships with the Google Cloud CLI) as a
# plain local process, without Docker or the gcloud wrapper. Idempotent: if it already
# answers, say so and exit 0.
#
#   localstack/pubsub-start.sh          # from any directory
#   PUBSUB_PORT=8086 localstack/pubsub-start.sh
#
# The emulator keeps everything in memory (this build has no --data-dir option; the gcloud
# wrapper's --data-dir only holds the wrapper's own env.yaml), so every fresh start begins with
# no topics or subscriptions. Log and pid live in localstack/.pubsub-state/, wiped on every
# fresh start.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="$HERE/.pubsub-state"
LOG="$STATE/pubsub.log"
PIDFILE="$STATE/pubsub.pid"
PORTFILE="$STATE/pubsub.port"

EMULATOR="${PUBSUB_EMULATOR_BIN:-/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator}"
HOST=127.0.0.1
PORT="${PUBSUB_PORT:-8085}"
ENDPOINT="http://$HOST:$PORT"
PROJECT="${PUBSUB_PROJECT:-veltrix-local}"
READY_TIMEOUT="${PUBSUB_READY_TIMEOUT:-60}"

log() { printf 'pubsub: %s\n' "$*"; }
die() { printf 'pubsub: error: %s\n' "$*" >&2; exit 1; }

# --- probes -----------------------------------------------------------------------------------

# A real REST call: the emulator serves gRPC and REST (HTTP/1.1 JSON) on the same port, and
# answers 200 with `{}` (or a topic list) once it serves requests.
rest_ok() {
  local code
  code="$(curl -sS --max-time 3 -o /dev/null -w '%{http_code}' \
    "$ENDPOINT/v1/projects/$PROJECT/topics" 2>/dev/null)" || return 1
  [[ "$code" == 200 ]]
}

port_in_use() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

# Alive *and* still our emulator (a stale pid file may name a reused pid). The launcher script
# execs java, so the pid is the JVM's and its command line names the emulator jar.
pid_alive() {
  [[ -f "$PIDFILE" ]] &&
    [[ "$(tr '\0' ' ' 2>/dev/null <"/proc/$(cat "$PIDFILE")/cmdline")" == *cloud-pubsub-emulator* ]]
}

print_env_hint() {
  log "ready at $ENDPOINT (project $PROJECT; any project id is accepted)"
  cat <<EOF
  export PUBSUB_EMULATOR_HOST=$HOST:$PORT
EOF
}

[[ -x "$EMULATOR" ]] || die "$EMULATOR not found; install the Google Cloud CLI's pubsub emulator component (apt: google-cloud-cli-pubsub-emulator) or set PUBSUB_EMULATOR_BIN"
command -v java >/dev/null 2>&1 || [[ -n "${JAVA_HOME:-}" ]] || die "no java on PATH (the emulator needs Java 11+)"

# Two starts at once (e.g. parallel test jobs) must not both launch a server: serialise them
# with a lock on this script file itself. The second one waits, then finds the first one's
# emulator running and exits 0.
exec 9<"${BASH_SOURCE[0]}"
flock -w 600 9 || die "another pubsub-start.sh has held the lock for 10 minutes"

# --- 1. already running? ----------------------------------------------------------------------
if rest_ok; then
  log "already running at $ENDPOINT (REST answers), nothing to do"
  print_env_hint
  exit 0
fi

if pid_alive; then
  # Our own process exists but does not answer: an earlier start was interrupted while it
  # waited, or the JVM hangs. One checkout has one state dir, so one emulator at a time.
  running_port="$(cat "$PORTFILE" 2>/dev/null || echo '?')"
  if [[ "$running_port" != "$PORT" ]]; then
    die "the emulator from this checkout already runs on port $running_port (pid $(cat "$PIDFILE")); run localstack/pubsub-stop.sh first"
  fi
  log "pid $(cat "$PIDFILE") from a previous start is alive but not ready; waiting for it"
  ALREADY_STARTED=1
else
  ALREADY_STARTED=0
  rm -f "$PIDFILE"
  if port_in_use; then
    die "something else listens on $HOST:$PORT and it is not a working Pub/Sub emulator; free the port or set PUBSUB_PORT"
  fi
fi

# --- 2. start ---------------------------------------------------------------------------------
if [[ "$ALREADY_STARTED" == 0 ]]; then
  rm -rf "$STATE"
  mkdir -p "$STATE"

  # setsid: own session and process group (pgid == pid), so it is not tied to this terminal
  # and pubsub-stop.sh can signal the whole group. `9<&-`: the JVM must not inherit the lock.
  # cwd is the state dir, so nothing the JVM might write lands in the caller's directory.
  # JAVA_OPTS / CLOUD_PUBSUB_EMULATOR_OPTS from the environment reach the JVM (e.g. -Xmx).
  (cd "$STATE" && exec setsid "$EMULATOR" --host="$HOST" --port="$PORT" </dev/null >"$LOG" 2>&1 9<&-) &
  echo $! >"$PIDFILE"
  echo "$PORT" >"$PORTFILE"
  log "started pid $(cat "$PIDFILE"), log: $LOG"
fi

# --- 3. wait until REST really answers --------------------------------------------------------
start_ms=$(date +%s%3N)
deadline=$((SECONDS + READY_TIMEOUT))
while ! rest_ok; do
  if ! pid_alive; then
    # The launcher may not have exec'd java yet in the first few ms: give it a moment.
    sleep 0.2
    if ! pid_alive; then
      log "the emulator exited during startup; last 40 log lines:" >&2
      tail -n 40 "$LOG" >&2 || true
      rm -f "$PIDFILE"
      exit 1
    fi
  fi
  if ((SECONDS >= deadline)); then
    log "not ready after ${READY_TIMEOUT}s; last 40 log lines:" >&2
    tail -n 40 "$LOG" >&2 || true
    # Do not leave a half-started JVM holding the port (CI would trip over it next).
    "$HERE/pubsub-stop.sh" >&2 || true
    exit 1
  fi
  sleep 0.25
done
elapsed_ms=$(($(date +%s%3N) - start_ms))
log "REST answered after $((elapsed_ms / 1000)).$(printf '%03d' $((elapsed_ms % 1000)))s"
print_env_hint
