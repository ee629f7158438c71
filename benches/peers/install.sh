#!/usr/bin/env bash
# Installs the peers that benches/router.rs races against, exactly as pinned by their lock files
# (npm ci). Needs Node.js 20 or later and npm (installed from Debian's packages when missing and
# run as root); fails loudly without them.
set -euo pipefail
cd "$(dirname "$0")"
if { ! command -v node || ! command -v npm; } >/dev/null && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
  echo "benches/peers: installing Node.js and npm from Debian's packages"
  apt-get update -q >/dev/null && apt-get install -y -q nodejs npm >/dev/null
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "benches/peers: Node.js 20+ and npm are needed for the sqs-consumer peer (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if (( major < 20 )); then
  echo "benches/peers: Node.js $(node --version) is too old; sqs-consumer 14 needs 20 or later" >&2
  exit 1
fi
(cd sqs-consumer && npm ci --no-audit --no-fund --loglevel=error)
echo "benches/peers: sqs-consumer $(node -p 'require("./sqs-consumer/node_modules/sqs-consumer/package.json").version') installed"
