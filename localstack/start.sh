#!/usr/bin/env bash
# Start LocalStack (SQS, plus the STS/IAM that SDKs and Terraform touch) as a plain local
# process, without Docker. Idempotent: if it already answers, say so and exit 0.
#
#   localstack/start.sh            # from any directory
#   LOCALSTACK_PORT=4567 localstack/start.sh
#
# First run creates localstack/.venv (Python 3.13) and installs the pinned LocalStack into it.
# State, log and pid live in localstack/.state/, wiped on every fresh start.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
STATE="$HERE/.state"
LOG="$STATE/localstack.log"
PIDFILE="$STATE/localstack.pid"
PORTFILE="$STATE/localstack.port"
CONSTRAINTS="$HERE/constraints.txt"
STAMP="$VENV/.veltrix-install-stamp"

LOCALSTACK_SPEC='localstack-core[runtime]==2026.3.0'
# twisted needs service_identity but nothing declares it; a constraint alone never installs a
# package, so it is named here (its version still comes from constraints.txt).
EXTRA_PACKAGES=(service-identity)

HOST=127.0.0.1
PORT="${LOCALSTACK_PORT:-4566}"
ENDPOINT="http://$HOST:$PORT"
READY_TIMEOUT="${LOCALSTACK_READY_TIMEOUT:-60}"

log() { printf 'localstack: %s\n' "$*"; }
die() { printf 'localstack: error: %s\n' "$*" >&2; exit 1; }

# --- probes (curl only, so they work before the venv exists) --------------------------------

# /_localstack/health lists each service as "available" (enabled, not yet used) or "running".
# (Body captured first: with pipefail, `curl | grep -q` can fail when grep exits early.)
health_ok() {
  local body
  body="$(curl -fsS --max-time 2 "$ENDPOINT/_localstack/health" 2>/dev/null)" || return 1
  grep -Eq '"sqs": *"(available|running)"' <<<"$body"
}

# /health can be green before the SQS provider serves requests, so also make a real SQS call.
# This uses the JSON protocol, as the Rust aws-sdk-sqs does. LocalStack does not check the
# signature, but reads the access key and region from the Authorization header.
sqs_ok() {
  local code
  code="$(curl -sS --max-time 3 -o /dev/null -w '%{http_code}' -X POST "$ENDPOINT/" \
    -H 'Content-Type: application/x-amz-json-1.0' \
    -H 'X-Amz-Target: AmazonSQS.ListQueues' \
    -H 'Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0' \
    -d '{}' 2>/dev/null)" || return 1
  [[ "$code" == 200 ]]
}

port_in_use() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

# Alive *and* still our LocalStack (a stale pid file may name a reused pid).
pid_alive() {
  [[ -f "$PIDFILE" ]] &&
    [[ "$(tr '\0' ' ' 2>/dev/null <"/proc/$(cat "$PIDFILE")/cmdline")" == *localstack.runtime.main* ]]
}

print_env_hint() {
  log "ready at $ENDPOINT"
  cat <<EOF
  export AWS_ENDPOINT_URL=$ENDPOINT AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
EOF
}

# Two start.sh at once (e.g. parallel test jobs) must not both launch a server: serialise them
# with a lock on this script file itself (no extra lock file to clean up). The second one waits
# here, then finds the first one's LocalStack running and exits 0.
exec 9<"${BASH_SOURCE[0]}"
flock -w 600 9 || die "another start.sh has held the lock for 10 minutes"

# --- 1. already running? --------------------------------------------------------------------
# Checked before touching the venv, so a second start never reinstalls under a live process.
if health_ok && sqs_ok; then
  log "already running at $ENDPOINT (sqs answers), nothing to do"
  print_env_hint
  exit 0
fi

if pid_alive; then
  # Our own process exists but does not answer: an earlier start.sh was interrupted while it
  # waited, or the server hangs. One checkout has one state dir, so one server at a time.
  running_port="$(cat "$PORTFILE" 2>/dev/null || echo '?')"
  if [[ "$running_port" != "$PORT" ]]; then
    die "LocalStack from this checkout already runs on port $running_port (pid $(cat "$PIDFILE")); run localstack/stop.sh first"
  fi
  log "pid $(cat "$PIDFILE") from a previous start is alive but not ready; waiting for it"
  ALREADY_STARTED=1
else
  ALREADY_STARTED=0
  rm -f "$PIDFILE"
  if port_in_use; then
    die "something else listens on $HOST:$PORT and it is not a working LocalStack; free the port or set LOCALSTACK_PORT"
  fi
fi

if [[ "$ALREADY_STARTED" == 0 ]]; then
  # --- 2. Python 3.13 and the venv --------------------------------------------------------
  # LocalStack 2026.3.0 uses Python 3.12+ syntax (3.11 fails with a SyntaxError), and the pins
  # were verified on 3.13, so insist on 3.13 (find_python313, scripts/python313.sh).
  source "$HERE/../scripts/python313.sh"

  # The stamp holds the hash of constraints.txt plus the LocalStack spec, so editing a pin (or
  # the version above) rebuilds the venv from scratch instead of layering onto an old one.
  want_stamp="$(cat "$CONSTRAINTS" <(printf '%s %s\n' "$LOCALSTACK_SPEC" "${EXTRA_PACKAGES[*]}") | sha256sum | cut -d' ' -f1)"
  if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$want_stamp" ]] || ! is_python313 "$VENV/bin/python"; then
    PY="$(find_python313)" || die "no Python 3.13 for the LocalStack venv (see above)"
    log "installing $LOCALSTACK_SPEC into $VENV (using $PY; takes a minute or two)"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    # -q hides progress but pip still prints warnings and errors; set -e stops on failure and
    # the stamp is not written, so the next run starts over with a clean venv.
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -q \
      "$LOCALSTACK_SPEC" "${EXTRA_PACKAGES[@]}" -c "$CONSTRAINTS" ||
      die "pip install failed (see above); fix it and run start.sh again"
    echo "$want_stamp" >"$STAMP"
    log "install done"
  fi

  # --- 3. start ---------------------------------------------------------------------------
  # A fresh FILESYSTEM_ROOT per start: no queues or messages survive from an earlier run.
  rm -rf "$STATE"
  mkdir -p "$STATE"

  # setsid puts LocalStack in its own session and process group (pgid == its pid), so it is
  # not tied to this terminal and stop.sh can signal the whole group, children included.
  # `9<&-`: the server must not inherit the lock, or every later start.sh would block on it.
  # SQS_ENDPOINT_STRATEGY=off gives queue URLs like http://127.0.0.1:4566/000000000000/name
  # (the "path" strategy breaks Terraform). DISABLE_EVENTS and SKIP_SSL_CERT_DOWNLOAD stop it
  # from calling out to the internet, which is not reachable on CI. DNS_ADDRESS=0 (not in
  # emulators.md) turns off LocalStack's own DNS server, which otherwise tries to bind port 53
  # on all interfaces and to look up localstack.cloud at startup; SQS does not need it.
  # Note: GATEWAY_LISTEN's host is ignored by LocalStack's default (twisted) gateway for IPv4,
  # so it listens on 0.0.0.0:$PORT even though clients should use 127.0.0.1 (see README).
  env \
    OVERRIDE_IN_DOCKER=0 \
    FILESYSTEM_ROOT="$STATE" \
    GATEWAY_LISTEN="$HOST:$PORT" \
    LOCALSTACK_HOST="$HOST:$PORT" \
    SERVICES=sqs,sts,iam \
    DISABLE_EVENTS=1 \
    SKIP_SSL_CERT_DOWNLOAD=1 \
    SQS_ENDPOINT_STRATEGY=off \
    DNS_ADDRESS=0 \
    setsid "$VENV/bin/python" -m localstack.runtime.main </dev/null >"$LOG" 2>&1 9<&- &
  echo $! >"$PIDFILE"
  echo "$PORT" >"$PORTFILE"
  log "started pid $(cat "$PIDFILE"), log: $LOG"
fi

# --- 4. wait until SQS really answers -------------------------------------------------------
start_ms=$(date +%s%3N)
deadline=$((SECONDS + READY_TIMEOUT))
while ! { health_ok && sqs_ok; }; do
  if ! pid_alive; then
    log "LocalStack exited during startup; last 40 log lines:" >&2
    tail -n 40 "$LOG" >&2 || true
    rm -f "$PIDFILE"
    exit 1
  fi
  if ((SECONDS >= deadline)); then
    log "not ready after ${READY_TIMEOUT}s; last 40 log lines:" >&2
    tail -n 40 "$LOG" >&2 || true
    # Do not leave a half-started process holding the port (CI would trip over it next).
    "$HERE/stop.sh" >&2 || true
    exit 1
  fi
  sleep 0.5
done
elapsed_ms=$(($(date +%s%3N) - start_ms))
log "sqs answered after $((elapsed_ms / 1000)).$(printf '%03d' $((elapsed_ms % 1000)))s"
print_env_hint
