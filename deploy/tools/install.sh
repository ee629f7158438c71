#!/usr/bin/env bash
# Installs the linters tests/deploy.rs runs on deploy/ and terraform/, exactly as pinned:
#   - checkov and kubernetes-validate from PyPI into deploy/tools/.venv (Python 3.13;
#     requirements.txt names them, constraints.txt pins every package);
#   - the KEDA CRD models (@kubernetes-models/keda, with the `yaml` parser) from npm into
#     deploy/tools/node_modules (npm ci, package-lock.json), for validate-keda.mjs.
# Idempotent: reinstalls only when a pin changed. scripts/test.sh runs it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
source "$HERE/../../scripts/python313.sh"

VENV="$HERE/.venv"
STAMP="$VENV/.veltrix-install-stamp"
want="$(cat requirements.txt constraints.txt | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$want" ]] || ! is_python313 "$VENV/bin/python"; then
  PY="$(find_python313)"
  echo "deploy/tools: installing checkov and kubernetes-validate into $VENV (using $PY)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -q -r requirements.txt -c constraints.txt
  echo "$want" >"$STAMP"
fi
echo "deploy/tools: checkov $("$VENV/bin/checkov" --version), kubernetes-validate $("$VENV/bin/kubernetes-validate" --version | awk '{print $NF}')"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "deploy/tools: Node.js and npm are needed for the KEDA CRD validation (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
lock_hash="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ ! -f node_modules/.veltrix-lock-hash || "$(cat node_modules/.veltrix-lock-hash)" != "$lock_hash" ]]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_hash" >node_modules/.veltrix-lock-hash
fi
echo "deploy/tools: @kubernetes-models/keda $(node -p 'require("./node_modules/@kubernetes-models/keda/package.json").version')"
