#!/usr/bin/env bash
# Installs what the browser test of the rule playground needs (tests/cli.rs runs playground.mjs):
#   - Debian's chromium (headless), from Debian's packages when missing (as root);
#   - playwright-core from npm into tests/browser/node_modules (npm ci, package-lock.json),
#     which drives that Chromium through executablePath (it downloads no browser).
# Idempotent: reinstalls node_modules only when the lock changed. scripts/test.sh runs it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

if ! command -v chromium >/dev/null; then
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    echo "error: Debian's chromium is needed for the playground's browser test." >&2
    echo "       Install it: sudo apt-get install -y chromium" >&2
    exit 1
  fi
  echo "tests/browser: installing chromium from Debian's packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "error: Node.js and npm are needed for the playground's browser test (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
lock_hash="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ ! -f node_modules/.veltrix-lock-hash || "$(cat node_modules/.veltrix-lock-hash)" != "$lock_hash" ]]; then
  # playwright-core never downloads browsers; say so anyway.
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_hash" >node_modules/.veltrix-lock-hash
fi
echo "tests/browser: $(chromium --version 2>/dev/null | head -n 1), playwright-core $(node -p 'require("./node_modules/playwright-core/package.json").version')"
