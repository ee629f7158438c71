# find_python313 (sourced, not run): prints a working Python 3.13 interpreter, or prints why
# there is none to stderr and returns 1. The project's pinned PyPI tools (LocalStack in
# localstack/.venv, checkov and kubernetes-validate in deploy/tools/.venv) were verified on 3.13.
# VELTRIX_PYTHON, when set, must be one.
is_python313() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1; }

find_python313() {
  if [[ -n "${VELTRIX_PYTHON:-}" ]]; then
    is_python313 "$VELTRIX_PYTHON" && { echo "$VELTRIX_PYTHON"; return 0; }
    echo "error: VELTRIX_PYTHON=$VELTRIX_PYTHON is not a working Python 3.13" >&2
    return 1
  fi
  # `python3.13` on PATH may be a pyenv shim that exists but refuses to run when 3.13 is not
  # the selected version, hence running each candidate instead of `command -v` alone.
  local c
  for c in python3.13 /root/.pyenv/versions/3.13.0/bin/python; do
    if command -v "$c" >/dev/null 2>&1 && is_python313 "$c"; then
      echo "$c"
      return 0
    fi
  done
  echo "error: no Python 3.13 found (tried \$VELTRIX_PYTHON (unset), python3.13 on PATH, /root/.pyenv/versions/3.13.0/bin/python). Install Python 3.13 and set VELTRIX_PYTHON=/path/to/python3.13" >&2
  return 1
}
