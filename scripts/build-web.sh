#!/usr/bin/env bash
# Builds onair's web app (web/) into web/dist, which the onair binary embeds:
# installs its npm packages from the lockfile when they are missing or stale,
# then bundles it. scripts/test.sh and scripts/demo.sh run this first.
set -euo pipefail
cd "$(dirname "$0")/../web"

if ! command -v npm >/dev/null 2>&1; then
  echo "error: npm is needed to build the web app (install Node.js 20 or later)" >&2
  exit 1
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "==> npm ci (web/)"
  npm ci --no-audit --no-fund --loglevel=error
fi
echo "==> building the web app"
node build.mjs
