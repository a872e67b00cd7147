#!/usr/bin/env bash
# Native alternative to compose: makes sure local Postgres, Redis (KeyDB protocol) and RabbitMQ are
# installed, running and provisioned like the original stack (user/password, database fxc), with
# RabbitMQ's management plugin (UI on http://localhost:15672, rabbitmqadmin). Also installs PgBouncer,
# which is not started here: test/integration/pgbouncer.test.ts starts its own, and faketime, with
# which test/integration/sync-clock-skew.test.ts runs the app on a clock of its own.
# Idempotent; safe to run before every test run.
#
# Missing servers are installed with apt-get on Debian and Ubuntu (as root, or through sudo); on
# any other system it prints what to install and exits 1.
# DEV_SERVICES_DRY_RUN=1 prints every command that would change the machine instead of running it
# (checks still run), and stops after the install step if something would be installed.
set -euo pipefail

dry_run="${DEV_SERVICES_DRY_RUN:-}"

say() { echo "dev-services: $*"; }
run() { # a command that changes the machine
  if [ -n "$dry_run" ]; then say "would run: $*"; else "$@"; fi
}
wait_for() { # name, command...
  local name=$1; shift
  if [ -n "$dry_run" ]; then return 0; fi
  for _ in $(seq 1 60); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  say "$name did not come up" >&2; return 1
}
as_postgres() { if [ "$(id -un)" = postgres ]; then "$@"; else su postgres -c "$(printf '%q ' "$@")"; fi; }
have() { command -v "$1" >/dev/null 2>&1; }

# ---- install what is missing --------------------------------------------------------------------
missing=()
{ have pg_ctlcluster || have pg_ctl; } && have pg_isready && have psql || missing+=(postgresql)
have redis-server && have redis-cli || missing+=(redis-server)
have rabbitmq-server && have rabbitmqctl && have rabbitmq-plugins || missing+=(rabbitmq-server)
have pgbouncer || missing+=(pgbouncer)
have faketime || missing+=(faketime)
if [ ${#missing[@]} -gt 0 ]; then
  if ! have apt-get; then
    say "missing: ${missing[*]}. This script installs them only with apt-get (Debian, Ubuntu)." >&2
    say "Install PostgreSQL (14 or later), Redis (or KeyDB) and RabbitMQ (3.x), and PgBouncer and faketime for their tests, with your" >&2
    say "package manager (e.g. brew install postgresql redis rabbitmq pgbouncer libfaketime), or use docker-compose.temporal.yml," >&2
    say "then run this again." >&2
    exit 1
  fi
  if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
  say "installing ${missing[*]} with apt-get"
  run "${sudo[@]}" apt-get update -qq
  run "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [ -n "$dry_run" ]; then say "would then start and provision postgres, redis and rabbitmq"; exit 0; fi
fi

# ---- Postgres -----------------------------------------------------------------------------------
if ! pg_isready -h 127.0.0.1 -q 2>/dev/null; then
  if have pg_ctlcluster; then
    run pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
  fi
fi
wait_for postgres pg_isready -h 127.0.0.1 -q
if [ -z "$dry_run" ] || pg_isready -h 127.0.0.1 -q 2>/dev/null; then
  as_postgres psql -qAt -c "SELECT 1 FROM pg_roles WHERE rolname='user'" | grep -q 1 ||
    run as_postgres psql -q -c "CREATE ROLE \"user\" LOGIN PASSWORD 'password' CREATEDB"
  as_postgres psql -qAt -c "SELECT 1 FROM pg_database WHERE datname='fxc'" | grep -q 1 ||
    run as_postgres psql -q -c "CREATE DATABASE fxc OWNER \"user\""
fi

# ---- Redis stands in for KeyDB (same protocol) --------------------------------------------------
if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  run mkdir -p /var/lib/redis /var/log/redis
  run redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for redis redis-cli -h 127.0.0.1 ping

# ---- RabbitMQ, with the management plugin (UI on :15672 and rabbitmqadmin) ----------------------
if ! rabbitmqctl -q status >/dev/null 2>&1; then
  run rabbitmq-server -detached || true
fi
wait_for rabbitmq rabbitmqctl -q await_startup
if ! rabbitmq-plugins -q is_enabled rabbitmq_management >/dev/null 2>&1; then
  run rabbitmq-plugins -q enable rabbitmq_management
fi
rabbitmqctl -q authenticate_user user password >/dev/null 2>&1 || {
  run rabbitmqctl -q delete_user user 2>/dev/null || true
  run rabbitmqctl -q add_user user password
  run rabbitmqctl -q set_user_tags user administrator
  run rabbitmqctl -q set_permissions -p / user '.*' '.*' '.*'
}
if [ -n "$dry_run" ]; then say "dry run: nothing was changed"; exit 0; fi
say "postgres, redis and rabbitmq ready (RabbitMQ management UI: http://localhost:15672, user/password)"
