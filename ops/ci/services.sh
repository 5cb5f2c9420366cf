#!/usr/bin/env bash
# Make sure redis-server and PostgreSQL run on loopback for the test suite and benchmarks.
# Installs the Debian packages when they are missing and starts whichever is not running.
# Safe to run again: it only acts on what is missing.
set -euo pipefail

log() { printf 'services: %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    log "need root to run: $*"; return 1; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then
    as_root apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

wait_for() {  # wait_for <what> <seconds> <command...>
  local what=$1 seconds=$2; shift 2
  for _ in $(seq 1 "$((seconds * 5))"); do
    if "$@" >/dev/null 2>&1; then log "$what is up"; return 0; fi
    sleep 0.2
  done
  log "$what did not come up within ${seconds}s"; return 1
}

# --- redis-server on 127.0.0.1:6379 ----------------------------------------------------
if ! command -v redis-server >/dev/null 2>&1; then
  log "installing redis-server"
  apt_install redis-server
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting redis-server on 127.0.0.1:6379"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for "redis-server" 15 redis-cli -h 127.0.0.1 -p 6379 ping
else
  log "redis-server already running"
fi

# --- PostgreSQL on 127.0.0.1:5432 ------------------------------------------------------
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  log "installing postgresql"
  apt_install postgresql
fi
if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  log "starting PostgreSQL $version (cluster main, listens on localhost only)"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
  wait_for "PostgreSQL" 30 pg_isready -h 127.0.0.1 -p 5432
else
  log "PostgreSQL already running"
fi

# A role and database of our own for the tests (password auth works whatever pg_hba says
# for 127.0.0.1: trust ignores the password, scram checks it).
psql_admin() { as_root runuser -u postgres -- psql -v ON_ERROR_STOP=1 -tAq "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'jetledger'")" != "1" ]; then
  log "creating PostgreSQL role jetledger"
  psql_admin -c "CREATE ROLE jetledger LOGIN PASSWORD 'jetledger'"
fi
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'jetledger_test'")" != "1" ]; then
  log "creating PostgreSQL database jetledger_test"
  psql_admin -c "CREATE DATABASE jetledger_test OWNER jetledger"
fi
