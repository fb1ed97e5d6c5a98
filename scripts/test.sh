#!/usr/bin/env bash
# Runs onair's whole test suite on this machine: installs the system packages
# the tests use, makes sure PostgreSQL, Redis and NATS answer (starting them if
# they are installed but stopped), then checks formatting and lints and runs
# every test. This is the test command the README gives.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# System packages: promtool (from Debian's prometheus) checks /metrics;
# tv_validate_file (from xmltv-util) checks /iptv/epg.xml; ffmpeg transcodes,
# encodes the live pushes and decodes the channels in the video tests;
# chromium runs the web app in the browser tests.
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v tv_validate_file >/dev/null 2>&1 || missing+=(xmltv-util)
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
# Chromium runs the web app's browser tests (driven by playwright-core).
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python tools the tests call: openapi-spec-validator checks /openapi.json.
if ! python3 -c "import openapi_spec_validator" >/dev/null 2>&1; then
  log "installing openapi-spec-validator"
  python3 -m pip install --quiet openapi-spec-validator
fi
# schemathesis fuzzes the REST surface from /openapi.json.
if ! command -v schemathesis >/dev/null 2>&1; then
  log "installing schemathesis"
  python3 -m pip install --quiet schemathesis
fi

answers() { timeout 2 bash -c "echo > /dev/tcp/127.0.0.1/$1" 2>/dev/null; }

wait_for() {
  local name=$1 port=$2
  for _ in $(seq 1 50); do
    answers "$port" && return 0
    sleep 0.2
  done
  echo "error: $name does not answer on 127.0.0.1:$port" >&2
  return 1
}

if ! answers 5432; then
  log "starting PostgreSQL"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
fi
wait_for PostgreSQL 5432

if ! answers 6379; then
  log "starting Redis"
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
wait_for Redis 6379

if ! answers 4222; then
  log "starting NATS"
  as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || true
fi
wait_for NATS 4222

export ONAIR_TEST_DATABASE_URL="${ONAIR_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export ONAIR_TEST_NATS_URL="${ONAIR_TEST_NATS_URL:-nats://127.0.0.1:4222}"
export ONAIR_TEST_REDIS_URL="${ONAIR_TEST_REDIS_URL:-redis://127.0.0.1:6379}"

# The binary embeds the web app: build it (npm packages from the lockfile).
scripts/build-web.sh

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo test"
cargo test --workspace --locked --no-fail-fast
