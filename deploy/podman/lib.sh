# podman for the project's scripts (sourced, not run): deploy/build-image.sh and scripts/test.sh.
# Facts behind the settings: ../shared/containers.md and containers.conf here.

PODMAN_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# stop_process_group, shared with the emulator scripts.
declare -F stop_process_group >/dev/null || source "$PODMAN_LIB_DIR/../../localstack/lib.sh"
# The project's podman settings (runc, fixed ulimits) replace the machine's containers.conf for
# every podman this shell starts, including the API service the container tests talk to.
export CONTAINERS_CONF="$PODMAN_LIB_DIR/containers.conf"
# The Docker-compatible API socket the container tests reach through the testcontainers crate.
VELTRIX_PODMAN_SOCKET="${VELTRIX_PODMAN_SOCKET:-/run/veltrix-podman/podman.sock}"

# ensure_podman: podman and runc on PATH, installed from Debian's packages when missing (as root).
ensure_podman() {
  if command -v podman >/dev/null && command -v runc >/dev/null; then
    return 0
  fi
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    echo "error: podman and runc are needed (the container tests run the real image)." >&2
    echo "       Install them: sudo apt-get install -y podman runc" >&2
    return 1
  fi
  echo "installing podman and runc from Debian's packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman runc >/dev/null
}

PODMAN_SERVICE_PID=""
# The pid of the service this shell started, for stop_process_group.
PODMAN_SERVICE_PIDFILE="$(dirname "$VELTRIX_PODMAN_SOCKET")/podman-service.pid"

# ensure_podman_service: serves podman's Docker-compatible API on $VELTRIX_PODMAN_SOCKET (started
# here unless it already answers) and exports DOCKER_HOST for the testcontainers crate. The caller
# stops what was started with stop_podman_service (e.g. from an EXIT trap).
ensure_podman_service() {
  export DOCKER_HOST="unix://$VELTRIX_PODMAN_SOCKET"
  if curl -fsS --max-time 2 --unix-socket "$VELTRIX_PODMAN_SOCKET" http://d/_ping >/dev/null 2>&1; then
    echo "podman API already serving on $VELTRIX_PODMAN_SOCKET: using it, leaving it running"
    return 0
  fi
  mkdir -p "$(dirname "$VELTRIX_PODMAN_SOCKET")"
  rm -f "$VELTRIX_PODMAN_SOCKET"
  setsid podman system service --time=0 "unix://$VELTRIX_PODMAN_SOCKET" \
    >"${TMPDIR:-/tmp}/veltrix-podman-service.log" 2>&1 &
  PODMAN_SERVICE_PID=$!
  echo "$PODMAN_SERVICE_PID" >"$PODMAN_SERVICE_PIDFILE"
  local i
  for ((i = 0; i < 100; i++)); do
    if curl -fsS --max-time 2 --unix-socket "$VELTRIX_PODMAN_SOCKET" http://d/_ping >/dev/null 2>&1; then
      echo "podman API serving on $VELTRIX_PODMAN_SOCKET (pid $PODMAN_SERVICE_PID)"
      return 0
    fi
    if ! kill -0 "$PODMAN_SERVICE_PID" 2>/dev/null; then
      break
    fi
    sleep 0.1
  done
  echo "error: podman system service did not answer on $VELTRIX_PODMAN_SOCKET:" >&2
  cat "${TMPDIR:-/tmp}/veltrix-podman-service.log" >&2 || true
  return 1
}

stop_podman_service() {
  if [[ -n "$PODMAN_SERVICE_PID" ]]; then
    stop_process_group "podman API" "$PODMAN_SERVICE_PIDFILE" "podman system service" 10
  fi
  PODMAN_SERVICE_PID=""
}

# remove_test_containers: whatever tests/container.rs left behind (its containers carry the
# label veltrix-test), e.g. after a test panicked before removing its containers.
remove_test_containers() {
  command -v podman >/dev/null || return 0
  local ids
  ids="$(podman ps -aq --filter label=veltrix-test 2>/dev/null || true)"
  if [[ -n "$ids" ]]; then
    echo "removing leftover test containers: $(echo $ids)"
    # shellcheck disable=SC2086
    podman rm -f $ids >/dev/null 2>&1 || true
  fi
}
