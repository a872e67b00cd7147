#!/usr/bin/env bash
# Native alternative to compose: makes sure local Postgres, Redis (KeyDB protocol) and RabbitMQ
# are running and provisioned like the original stack (user/password, database fxc).
# Idempotent; safe to run before every test run.
set -euo pipefail

wait_for() { # name, command...
  local name=$1; shift
  for _ in $(seq 1 60); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "dev-services: $name did not come up" >&2; return 1
}
as_postgres() { if [ "$(id -un)" = postgres ]; then "$@"; else su postgres -c "$(printf '%q ' "$@")"; fi; }

# Postgres
if ! pg_isready -h 127.0.0.1 -q 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
  fi
fi
wait_for postgres pg_isready -h 127.0.0.1 -q
as_postgres psql -qAt -c "SELECT 1 FROM pg_roles WHERE rolname='user'" | grep -q 1 ||
  as_postgres psql -q -c "CREATE ROLE \"user\" LOGIN PASSWORD 'password' CREATEDB"
as_postgres psql -qAt -c "SELECT 1 FROM pg_database WHERE datname='fxc'" | grep -q 1 ||
  as_postgres psql -q -c "CREATE DATABASE fxc OWNER \"user\""

# Redis stands in for KeyDB (same protocol)
if ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for redis redis-cli -h 127.0.0.1 ping

# RabbitMQ
if ! rabbitmqctl -q status >/dev/null 2>&1; then
  rabbitmq-server -detached || true
fi
wait_for rabbitmq rabbitmqctl -q await_startup
rabbitmqctl -q authenticate_user user password >/dev/null 2>&1 || {
  rabbitmqctl -q delete_user user >/dev/null 2>&1 || true
  rabbitmqctl -q add_user user password
  rabbitmqctl -q set_user_tags user administrator
  rabbitmqctl -q set_permissions -p / user '.*' '.*' '.*'
}
echo "dev-services: postgres, redis and rabbitmq ready"
