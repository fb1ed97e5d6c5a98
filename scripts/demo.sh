#!/usr/bin/env bash
# Runs the demo station on this machine: installs ffmpeg (Debian's package)
# if it is missing, builds the web app and onair, and runs `onair demo`.
# Extra arguments go to `onair demo` (e.g. --http 0.0.0.0:8080).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v ffmpeg >/dev/null 2>&1; then
  echo "==> installing ffmpeg"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
fi

# The binary embeds the web app (npm packages from web/package-lock.json).
scripts/build-web.sh

exec cargo run --release -p onair -- demo "$@"
