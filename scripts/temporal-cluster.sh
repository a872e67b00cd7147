#!/usr/bin/env bash
# A Temporal server with the production topology, natively: the real server binary (frontend,
# history, matching and worker services in one process) on PostgreSQL persistence with SQL
# visibility, namespace `default` registered. Prints the frontend address (host:port) on stdout.
#
#   scripts/temporal-cluster.sh [start]   build once (cached), migrate, start, wait until it serves
#   scripts/temporal-cluster.sh status    print the address if it runs; exit 1 if not
#   scripts/temporal-cluster.sh stop      stop the server this script started (its pid file), nothing else
#   scripts/temporal-cluster.sh destroy   stop it, then drop its two databases and the files it wrote
#   scripts/temporal-cluster.sh api-key   (TEMPORAL_CLUSTER_AUTH=jwt) print a new API key for namespace default
#
# Idempotent: `start` on a running cluster prints its address; schemas are only ever migrated forward.
# Settings (environment):
#   TEMPORAL_CLUSTER_PG_HOST/_PG_PORT/_PG_USER/_PG_PASSWORD  default 127.0.0.1 5432 postgres (none)
#   TEMPORAL_CLUSTER_DB, TEMPORAL_CLUSTER_VISIBILITY_DB      default temporal, temporal_visibility
#   TEMPORAL_CLUSTER_PORT           frontend gRPC port; default the previous one if free, else a free one
#   TEMPORAL_CLUSTER_SHARDS         history shards, fixed when the databases are first used (default 4)
#   TEMPORAL_CLUSTER_RETENTION      retention of namespace `default` when it is created (default 72h)
#   TEMPORAL_CLUSTER_MAX_CONNS      each pool's limit to the main database (default 20; visibility's half);
#                                   the services open several pools: 20 held 46 connections here, 4 held 17
#   TEMPORAL_CLUSTER_DIR            config, pid and log (default per database, under $XDG_STATE_HOME)
#   TEMPORAL_CLUSTER_TLS            empty (default): plain gRPC. `mtls`: the frontend serves TLS and requires
#                                   a client certificate signed by a throw-away CA made with openssl in
#                                   $TEMPORAL_CLUSTER_DIR/tls (kept across restarts, removed by destroy); the
#                                   server's own worker service connects with a certificate of its own.
#                                   `server`: the frontend serves TLS, no client certificate (API keys, as
#                                   on Temporal Cloud). Either way the services' own gRPC (history, matching,
#                                   worker, internal-frontend: global.tls.internode) is mutual TLS with a
#                                   second CA, whose certificate no client is given. The client's settings
#                                   (TEMPORAL_TLS_*, TEMPORAL_API_KEY) are printed on stderr and written to
#                                   tls/client.env. Membership gossip (ringpop) is not TLS: bind it locally.
#   TEMPORAL_CLUSTER_TLS_SERVER_NAME  the name in the server certificate (default temporal-cluster.test,
#                                   and localhost): what a client sets as TEMPORAL_TLS_SERVER_NAME
#   TEMPORAL_CLUSTER_AUTH           empty (default): no authorizer. `jwt` (needs TEMPORAL_CLUSTER_TLS and node):
#                                   the frontend checks `Authorization: Bearer <JWT>` (TEMPORAL_API_KEY) with
#                                   the default authorizer and claim mapper against the JWKS of a throw-away
#                                   RS256 key (scripts/temporal-cluster-jwt.mjs, in $TEMPORAL_CLUSTER_DIR/jwt),
#                                   served on 127.0.0.1 by a small process this script starts and stops with
#                                   the server; the server's own workers use the internal-frontend service.
#   TEMPORAL_CLUSTER_API_KEY_TTL    seconds a printed API key is valid (default 86400)
#   TEMPORAL_CLUSTER_JWKS_REFRESH   how often the server reloads the JWKS (default 1m)
# Every port is below 32768: the server stores membership ports in a smallint column.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${TEMPORAL_SERVER_VERSION:-v1.29.1}"
CACHE_ROOT="${BALANCE_SYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/balance-sync}"
BIN_DIR="$CACHE_ROOT/temporal-server-$VERSION"
SERVER="$BIN_DIR/temporal-server"
SQL_TOOL="$BIN_DIR/temporal-sql-tool"

PG_HOST="${TEMPORAL_CLUSTER_PG_HOST:-127.0.0.1}"
PG_PORT="${TEMPORAL_CLUSTER_PG_PORT:-5432}"
PG_USER="${TEMPORAL_CLUSTER_PG_USER:-postgres}"
PG_PASSWORD="${TEMPORAL_CLUSTER_PG_PASSWORD:-}"
DB="${TEMPORAL_CLUSTER_DB:-temporal}"
VISIBILITY_DB="${TEMPORAL_CLUSTER_VISIBILITY_DB:-temporal_visibility}"
SHARDS="${TEMPORAL_CLUSTER_SHARDS:-4}"
RETENTION="${TEMPORAL_CLUSTER_RETENTION:-72h}"
MAX_CONNS="${TEMPORAL_CLUSTER_MAX_CONNS:-20}"
STATE_DIR="${TEMPORAL_CLUSTER_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/balance-sync/temporal-cluster-${DB}@${PG_HOST}_${PG_PORT}}"
PID_FILE="$STATE_DIR/server.pid"
LOG_FILE="$STATE_DIR/server.log"
PORTS_FILE="$STATE_DIR/ports.env"
TLS="${TEMPORAL_CLUSTER_TLS:-}"
AUTH="${TEMPORAL_CLUSTER_AUTH:-}"
TLS_DIR="$STATE_DIR/tls"
TLS_SERVER_NAME="${TEMPORAL_CLUSTER_TLS_SERVER_NAME:-temporal-cluster.test}"
# The name in the internode certificate: the services check it on each other, no client ever sees it.
INTERNODE_NAME=internode.temporal-cluster.test
JWT_DIR="$STATE_DIR/jwt"
JWT_TOOL=scripts/temporal-cluster-jwt.mjs
JWKS_PID_FILE="$STATE_DIR/jwks.pid"
JWKS_LOG="$STATE_DIR/jwks.log"
API_KEY_TTL="${TEMPORAL_CLUSTER_API_KEY_TTL:-86400}"
JWKS_REFRESH="${TEMPORAL_CLUSTER_JWKS_REFRESH:-1m}"

say() { echo "temporal-cluster: $*" >&2; }
die() { say "$*"; exit 1; }
usage() { say "$*"; exit 2; }

[[ -z "$TLS" || "$TLS" == mtls || "$TLS" == server ]] || usage "TEMPORAL_CLUSTER_TLS must be empty, server or mtls, not $TLS"
[[ -z "$AUTH" || "$AUTH" == jwt ]] || usage "TEMPORAL_CLUSTER_AUTH must be empty or jwt, not $AUTH"
[[ -z "$AUTH" || -n "$TLS" ]] ||
  usage "TEMPORAL_CLUSTER_AUTH=jwt needs TEMPORAL_CLUSTER_TLS=server or mtls: a bearer token in plain text is anyone's on the way"
[[ "$API_KEY_TTL" =~ ^[0-9]+$ ]] || usage "TEMPORAL_CLUSTER_API_KEY_TTL must be a number of seconds, not $API_KEY_TTL"

# The pid in a pid file, if that process still runs with the given words in its command line (a pid
# can be reused).
live_pid() { # pid file, words
  [[ -f "$1" ]] || return 1
  local pid; pid=$(cat "$1")
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2" || return 1
  echo "$pid"
}
running_pid() { live_pid "$PID_FILE" "--root $STATE_DIR "; } # this cluster's server
jwks_pid() { live_pid "$JWKS_PID_FILE" "serve $JWT_DIR "; }   # the server of its JWKS

# A token signed with the throw-away key: seconds valid, subject, permissions (`<namespace>:<role>`).
jwt_sign() { node "$JWT_TOOL" sign "$JWT_DIR" "$@" || die "cannot sign a token with $JWT_DIR/signing.key"; }

frontend_address() { (source "$PORTS_FILE" && echo "127.0.0.1:$FRONTEND_PORT"); }

ADMIN_KEY=
cli() { # the Temporal CLI of scripts/ensure-temporal.sh (also what the dev-server tests use)
  local path; path=$(bash scripts/ensure-temporal.sh) || die "no Temporal CLI (scripts/ensure-temporal.sh)"
  local tls=()
  [[ -z "$TLS" ]] || tls=(--tls-ca-path "$TLS_DIR/ca.pem" --tls-server-name "$TLS_SERVER_NAME")
  [[ "$TLS" != mtls ]] || tls+=(--tls-cert-path "$TLS_DIR/client.pem" --tls-key-path "$TLS_DIR/client.key")
  # The script's own calls (health, namespace) as a system admin; in the environment, not in `ps`.
  if [[ -n "$AUTH" && -z "$ADMIN_KEY" ]]; then ADMIN_KEY=$(jwt_sign 3600 temporal-cluster.sh temporal-system:admin); fi
  TEMPORAL_API_KEY="$ADMIN_KEY" "$path" "$@" "${tls[@]}"
}

# A self-signed CA: name, subject CN.
make_ca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 -sha256 \
    -subj "/CN=$2" -keyout "$TLS_DIR/$1.key" -out "$TLS_DIR/$1.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null ||
    die "openssl: cannot make the CA $1"
}

# A certificate: name, signing CA's name, subject CN, extendedKeyUsage, subjectAltName (may be empty).
issue() {
  local name=$1 ca=$2 cn=$3 usage=$4 san=$5
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$cn" \
    -keyout "$TLS_DIR/$name.key" -out "$TLS_DIR/$name.csr" 2>/dev/null || die "openssl: cannot make the $name key"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$usage"
    [[ -z "$san" ]] || echo "subjectAltName=$san"
  } >"$TLS_DIR/$name.ext"
  openssl x509 -req -in "$TLS_DIR/$name.csr" -CA "$TLS_DIR/$ca.pem" -CAkey "$TLS_DIR/$ca.key" -CAcreateserial \
    -days 30 -sha256 -extfile "$TLS_DIR/$name.ext" -out "$TLS_DIR/$name.pem" 2>/dev/null ||
    die "openssl: cannot sign the $name certificate"
  rm -f "$TLS_DIR/$name.csr" "$TLS_DIR/$name.ext"
}

# Two throw-away CAs: one for the frontend's certificate and its clients' (the app's, the system
# worker's), one for the services' certificate among themselves, so no client certificate opens the
# internal ports. Made once per state directory (a restarted cluster keeps them, so its clients keep
# working); what is missing is made.
make_certificates() {
  local made=()
  command -v openssl >/dev/null 2>&1 || die "TEMPORAL_CLUSTER_TLS=$TLS needs openssl"
  if [[ ! -f "$TLS_DIR/ca.pem" ]]; then # a new CA: every certificate of the old one goes
    rm -rf "$TLS_DIR"
    mkdir -p "$TLS_DIR"
    chmod 700 "$TLS_DIR"
    make_ca ca "balance-sync throw-away Temporal CA"
    made+=(ca)
  fi
  if [[ ! -f "$TLS_DIR/internode-ca.pem" ]]; then
    rm -f "$TLS_DIR"/internode.*
    make_ca internode-ca "balance-sync throw-away Temporal internode CA"
    made+=(internode-ca)
  fi
  [[ -f "$TLS_DIR/server.pem" ]] || { issue server ca "$TLS_SERVER_NAME" serverAuth "DNS:$TLS_SERVER_NAME,DNS:localhost"; made+=(server); }
  [[ -f "$TLS_DIR/client.pem" ]] || { issue client ca balance-sync clientAuth ""; made+=(client); }
  [[ -f "$TLS_DIR/worker.pem" ]] || { issue worker ca temporal-system-worker clientAuth ""; made+=(worker); }
  # Each service presents it both ways: as the server called and as the client calling (Temporal's
  # internode client sends the internode server certificate).
  [[ -f "$TLS_DIR/internode.pem" ]] ||
    { issue internode internode-ca "$INTERNODE_NAME" serverAuth,clientAuth "DNS:$INTERNODE_NAME"; made+=(internode); }
  ((${#made[@]} == 0)) || say "made throw-away certificates in $TLS_DIR: ${made[*]}"
}

# What a client of this cluster sets (the app, its CLIs, the Temporal CLI read the same variables).
client_env() {
  echo "TEMPORAL_ADDRESS=$(frontend_address)"
  if [[ "$TLS" == mtls ]]; then
    echo "TEMPORAL_TLS_CLIENT_CERT_PATH=$TLS_DIR/client.pem"
    echo "TEMPORAL_TLS_CLIENT_KEY_PATH=$TLS_DIR/client.key"
  fi
  echo "TEMPORAL_TLS_SERVER_CA_CERT_PATH=$TLS_DIR/ca.pem"
  echo "TEMPORAL_TLS_SERVER_NAME=$TLS_SERVER_NAME"
  [[ -z "$AUTH" ]] || echo "TEMPORAL_API_KEY=$(api_key)"
}

# An API key for the app: namespace default, write (start, signal, schedule, poll; not admin).
api_key() { jwt_sign "$API_KEY_TTL" balance-sync default:write; }

# TERM, then KILL after 30 s: pid, what it is.
end_process() {
  say "stopping $2 (pid $1)"
  kill -TERM "$1"
  for _ in $(seq 1 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$1" 2>/dev/null; then say "$2 (pid $1) still up after 30 s: SIGKILL"; kill -KILL "$1"; fi
}

stop() {
  local pid
  if pid=$(running_pid); then end_process "$pid" server; else say "not running ($STATE_DIR)"; fi
  rm -f "$PID_FILE"
  if pid=$(jwks_pid); then end_process "$pid" "JWKS server"; fi
  rm -f "$JWKS_PID_FILE"
}

# For a cluster of one run's own (the fault suite's): nothing of it is left, not even its data.
destroy() {
  stop
  [[ -x "$SQL_TOOL" ]] || die "no $SQL_TOOL to drop $DB and $VISIBILITY_DB with"
  local db
  for db in "$DB" "$VISIBILITY_DB"; do
    SQL_PASSWORD="$PG_PASSWORD" "$SQL_TOOL" --plugin postgres12 --ep "$PG_HOST" -p "$PG_PORT" -u "$PG_USER" \
      --db "$db" drop-database --force >&2 || die "cannot drop database $db on $PG_HOST:$PG_PORT"
  done
  # Only what start wrote, never the directory's other contents (TEMPORAL_CLUSTER_DIR may be anywhere).
  rm -rf "$STATE_DIR/config" "$TLS_DIR" "$JWT_DIR"
  rm -f "$PORTS_FILE" "$LOG_FILE" "$JWKS_LOG" "$STATE_DIR/migrate-$DB.log" "$STATE_DIR/migrate-$VISIBILITY_DB.log"
  rmdir "$STATE_DIR" 2>/dev/null || true
  say "dropped $DB and $VISIBILITY_DB on $PG_HOST:$PG_PORT"
}

build() {
  [[ -x "$SERVER" && -x "$SQL_TOOL" ]] && return 0
  command -v go >/dev/null 2>&1 || die "no Go toolchain to build the Temporal server $VERSION (see docs/OPERATIONS.md 'In production')"
  mkdir -p "$BIN_DIR"
  # One build at a time: a second caller (the TLS test, the fault suite) waits for the first's binaries.
  exec 8>"$BIN_DIR/.lock"
  if command -v flock >/dev/null; then flock 8; fi
  [[ -x "$SERVER" && -x "$SQL_TOOL" ]] && { exec 8>&-; return 0; }
  say "building temporal-server and temporal-sql-tool $VERSION into $BIN_DIR (about 5-10 minutes, once per machine)"
  # Into a temporary GOBIN, then renamed: an interrupted build never leaves a half binary in the cache.
  local tmp; tmp=$(mktemp -d "$BIN_DIR/build.XXXXXX")
  CGO_ENABLED=0 GOBIN="$tmp" go install "go.temporal.io/server/cmd/server@$VERSION" \
    "go.temporal.io/server/cmd/tools/sql@$VERSION" >&2
  mv "$tmp/sql" "$SQL_TOOL"
  mv "$tmp/server" "$SERVER"
  rmdir "$tmp"
  exec 8>&-
}

# Creates the database if missing, then migrates it forward with the schema embedded in the tool.
migrate() { # database, schema name (postgresql/v12/temporal or …/visibility)
  local db=$1 schema=$2 out
  local sql=("$SQL_TOOL" --plugin postgres12 --ep "$PG_HOST" -p "$PG_PORT" -u "$PG_USER" --db "$db")
  if ! out=$(SQL_PASSWORD="$PG_PASSWORD" "${sql[@]}" create-database 2>&1); then
    grep -q 'already exists' <<<"$out" || die "cannot create database $db on $PG_HOST:$PG_PORT: $out"
  fi
  SQL_PASSWORD="$PG_PASSWORD" "${sql[@]}" setup-schema -v 0.0 >/dev/null 2>&1 ||
    die "cannot set up the schema version tables in $db: $(SQL_PASSWORD="$PG_PASSWORD" "${sql[@]}" setup-schema -v 0.0 2>&1 | tail -3)"
  SQL_PASSWORD="$PG_PASSWORD" "${sql[@]}" update-schema --schema-name "$schema" >"$STATE_DIR/migrate-$db.log" 2>&1 ||
    die "cannot migrate $db to $schema: $(tail -5 "$STATE_DIR/migrate-$db.log")"
}

# Sets PICKED to a port below 32768 that nothing listens on and this run has not handed out yet.
taken=" "
pick_port() { # preferred (may be empty)
  local port=${1:-} listening
  listening=" $(ss -Htln | awk '{print $4}' | sed 's/.*://' | sort -u | tr '\n' ' ') "
  for _ in $(seq 1 200); do
    if [[ -n "$port" && "$listening" != *" $port "* && "$taken" != *" $port "* ]]; then
      taken+="$port "; PICKED=$port; return
    fi
    port=$((20000 + RANDOM % 12768))
  done
  die "no free port below 32768"
}

# global.tls for TEMPORAL_CLUSTER_TLS: the services call each other (and serve) with the internode
# certificate and accept only that CA's; the frontend serves its own certificate and, for mtls, requires
# a client certificate from the other CA; the worker service (schedules, system workflows) reaches the
# frontend with a certificate of its own, or, with an authorizer, the internal-frontend over internode TLS.
tls_config() {
  [[ -n "$TLS" ]] || return 0
  cat <<YAML
  tls:
    internode:
      server:
        certFile: "$TLS_DIR/internode.pem"
        keyFile: "$TLS_DIR/internode.key"
        requireClientAuth: true
        clientCaFiles: ["$TLS_DIR/internode-ca.pem"]
      client:
        serverName: "$INTERNODE_NAME"
        rootCaFiles: ["$TLS_DIR/internode-ca.pem"]
    frontend:
      server:
        certFile: "$TLS_DIR/server.pem"
        keyFile: "$TLS_DIR/server.key"
YAML
  if [[ "$TLS" == mtls ]]; then
    cat <<YAML
        requireClientAuth: true
        clientCaFiles: ["$TLS_DIR/ca.pem"]
YAML
  fi
  cat <<YAML
    systemWorker:
      certFile: "$TLS_DIR/worker.pem"
      keyFile: "$TLS_DIR/worker.key"
      client:
        serverName: "$TLS_SERVER_NAME"
        rootCaFiles: ["$TLS_DIR/ca.pem"]
YAML
}

# global.authorization for TEMPORAL_CLUSTER_AUTH=jwt: the server's default claim mapper reads the
# bearer token's `permissions` (`<namespace>:<role>`, `temporal-system:admin`), its default authorizer
# checks them. The internal-frontend the system workers use maps every caller to admin: internode TLS
# is what keeps others out of it.
auth_config() {
  [[ -n "$AUTH" ]] || return 0
  cat <<YAML
  authorization:
    jwtKeyProvider:
      keySourceURIs: ["$(jwks_url)"]
      refreshInterval: $JWKS_REFRESH
    permissionsClaimName: permissions
    authorizer: default
    claimMapper: default
YAML
}

jwks_url() { (source "$PORTS_FILE" && echo "http://127.0.0.1:$JWKS_PORT/jwks.json"); }

# The throw-away signing key (made once) and the server of its JWKS, which the Temporal server reads at
# start: up and answering before the server starts.
start_jwks() {
  command -v node >/dev/null 2>&1 || die "TEMPORAL_CLUSTER_AUTH=jwt needs node (keys, tokens and the JWKS)"
  node "$JWT_TOOL" keys "$JWT_DIR" || die "cannot make the signing key in $JWT_DIR"
  local port; port=$(source "$PORTS_FILE" && echo "$JWKS_PORT")
  echo "--- $(date -Is) start on 127.0.0.1:$port" >>"$JWKS_LOG"
  setsid node "$JWT_TOOL" serve "$JWT_DIR" "$port" </dev/null >>"$JWKS_LOG" 2>&1 &
  local pid=$!
  echo "$pid" >"$JWKS_PID_FILE"
  local deadline=$((SECONDS + 20))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || die "the JWKS server exited; see $JWKS_LOG: $(tail -3 "$JWKS_LOG")"
    ((SECONDS < deadline)) ||
      { end_process "$pid" "JWKS server"; die "the JWKS server does not answer on 127.0.0.1:$port after 20 s; see $JWKS_LOG"; }
    sleep 0.1
  done
}

write_config() {
  local names=(FRONTEND_PORT FRONTEND_HTTP_PORT FRONTEND_MEMBERSHIP_PORT HISTORY_PORT HISTORY_MEMBERSHIP_PORT
    MATCHING_PORT MATCHING_MEMBERSHIP_PORT WORKER_PORT WORKER_MEMBERSHIP_PORT METRICS_PORT
    INTERNAL_FRONTEND_PORT INTERNAL_FRONTEND_HTTP_PORT INTERNAL_FRONTEND_MEMBERSHIP_PORT JWKS_PORT)
  declare -A previous=()
  if [[ -f "$PORTS_FILE" ]]; then
    while IFS='=' read -r key value; do previous[$key]=$value; done <"$PORTS_FILE"
  fi
  [[ -z "${TEMPORAL_CLUSTER_PORT:-}" ]] || previous[FRONTEND_PORT]=$TEMPORAL_CLUSTER_PORT
  [[ -z "${TEMPORAL_CLUSTER_PORT:-}" || "$TEMPORAL_CLUSTER_PORT" -lt 32768 ]] || die "TEMPORAL_CLUSTER_PORT must be below 32768"
  : >"$PORTS_FILE.new"
  declare -A port=()
  for name in "${names[@]}"; do
    pick_port "${previous[$name]:-}"
    port[$name]=$PICKED
    echo "$name=${port[$name]}" >>"$PORTS_FILE.new"
  done
  if [[ -n "${TEMPORAL_CLUSTER_PORT:-}" && "${port[FRONTEND_PORT]}" != "$TEMPORAL_CLUSTER_PORT" ]]; then
    die "TEMPORAL_CLUSTER_PORT $TEMPORAL_CLUSTER_PORT is in use"
  fi
  mv "$PORTS_FILE.new" "$PORTS_FILE"
  mkdir -p "$STATE_DIR/config/dynamicconfig"
  # Nothing overridden: the server's defaults are what a production cluster starts from.
  echo '{}' >"$STATE_DIR/config/dynamicconfig/cluster.yaml"
  datastore() { # name, database, max connections
    cat <<YAML
    $1:
      sql:
        pluginName: postgres12
        databaseName: $2
        connectAddr: "$PG_HOST:$PG_PORT"
        connectProtocol: tcp
        user: "$PG_USER"
        password: "$PG_PASSWORD"
        maxConns: $3
        maxIdleConns: $3
        maxConnLifetime: 1h
YAML
  }
  local internal_frontend=""
  [[ -z "$AUTH" ]] ||
    internal_frontend="  internal-frontend:
    rpc: { grpcPort: ${port[INTERNAL_FRONTEND_PORT]}, membershipPort: ${port[INTERNAL_FRONTEND_MEMBERSHIP_PORT]}, httpPort: ${port[INTERNAL_FRONTEND_HTTP_PORT]}, bindOnLocalHost: true }"
  cat >"$STATE_DIR/config/cluster.yaml" <<YAML
# Written by scripts/temporal-cluster.sh; rewritten at every start (ports in ports.env).
$(mode_line)
log:
  stdout: true
  level: info
persistence:
  defaultStore: default
  visibilityStore: visibility
  numHistoryShards: $SHARDS
  datastores:
$(datastore default "$DB" "$MAX_CONNS")
$(datastore visibility "$VISIBILITY_DB" $(((MAX_CONNS + 1) / 2)))
global:
$(tls_config)
$(auth_config)
  membership:
    maxJoinDuration: 30s
    broadcastAddress: 127.0.0.1
  metrics:
    prometheus:
      framework: tally
      timerType: histogram
      listenAddress: "127.0.0.1:${port[METRICS_PORT]}"
services:
  frontend:
    rpc: { grpcPort: ${port[FRONTEND_PORT]}, membershipPort: ${port[FRONTEND_MEMBERSHIP_PORT]}, httpPort: ${port[FRONTEND_HTTP_PORT]}, bindOnLocalHost: true }
  history:
    rpc: { grpcPort: ${port[HISTORY_PORT]}, membershipPort: ${port[HISTORY_MEMBERSHIP_PORT]}, bindOnLocalHost: true }
  matching:
    rpc: { grpcPort: ${port[MATCHING_PORT]}, membershipPort: ${port[MATCHING_MEMBERSHIP_PORT]}, bindOnLocalHost: true }
  worker:
    rpc: { grpcPort: ${port[WORKER_PORT]}, membershipPort: ${port[WORKER_MEMBERSHIP_PORT]}, bindOnLocalHost: true }
$internal_frontend
clusterMetadata:
  enableGlobalNamespace: false
  failoverVersionIncrement: 10
  masterClusterName: active
  currentClusterName: active
  clusterInformation:
    active:
      enabled: true
      initialFailoverVersion: 1
      rpcName: frontend
      rpcAddress: "127.0.0.1:${port[FRONTEND_PORT]}"
dcRedirectionPolicy:
  policy: noop
dynamicConfigClient:
  filepath: "$STATE_DIR/config/dynamicconfig/cluster.yaml"
  pollInterval: 10s
YAML
}

# What the config says the server was started with: a client given other settings would fail.
mode_line() { echo "# mode: tls=${TLS:-none} auth=${AUTH:-none}"; }

print_client_env() {
  client_env >"$TLS_DIR/client.env"
  say "TLS ($TLS$([[ -z "$AUTH" ]] || echo ", API keys")): a client needs these settings (also in $TLS_DIR/client.env):"
  sed 's/^/  /' "$TLS_DIR/client.env" >&2
}

start() {
  mkdir -p "$STATE_DIR"
  local pid address
  if pid=$(running_pid); then
    address=$(frontend_address)
    local running; running=$(grep '^# mode: ' "$STATE_DIR/config/cluster.yaml") ||
      # A config of this script before its modes were written down: TLS meant mtls, no authorizer.
      running="# mode: tls=$(grep -q '^  tls:' "$STATE_DIR/config/cluster.yaml" && echo mtls || echo none) auth=none"
    [[ "$running" == "$(mode_line)" ]] ||
      die "already running (pid $pid) with ${running#\# mode: }, not $(mode_line | sed 's/^# mode: //'); stop it first ($0 stop)"
    [[ -z "$AUTH" ]] || jwks_pid >/dev/null || die "already running (pid $pid) but its JWKS server is not; $0 stop, then start"
    say "already running (pid $pid) on $address; log $LOG_FILE"
    [[ -z "$TLS" ]] || print_client_env
    echo "$address"
    return 0
  fi
  build
  local started=$SECONDS
  command -v ss >/dev/null 2>&1 || die "needs ss (iproute2) to find free ports"
  migrate "$DB" postgresql/v12/temporal
  migrate "$VISIBILITY_DB" postgresql/v12/visibility
  say "databases $DB and $VISIBILITY_DB on $PG_HOST:$PG_PORT migrated ($((SECONDS - started)) s)"
  [[ -z "$TLS" ]] || make_certificates
  # A JWKS server left by a server that died would hold its port: it starts anew with the config.
  if pid=$(jwks_pid); then end_process "$pid" "JWKS server"; fi
  write_config
  [[ -z "$AUTH" ]] || start_jwks
  address=$(frontend_address)
  local services=(--service frontend --service history --service matching --service worker)
  [[ -z "$AUTH" ]] || services+=(--service internal-frontend)
  echo "--- $(date -Is) start on $address" >>"$LOG_FILE"
  # Its own session: the server outlives this script and the terminal or CI step that ran it.
  setsid "$SERVER" --root "$STATE_DIR" --config config --env cluster --allow-no-auth start "${services[@]}" \
    </dev/null >>"$LOG_FILE" 2>&1 &
  pid=$!
  echo "$pid" >"$PID_FILE"
  local deadline=$((SECONDS + 120))
  until cli operator cluster health --address "$address" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || die "the server exited; last lines of $LOG_FILE:
$(grep -E '"level":"(error|fatal)"|panic|Error' "$LOG_FILE" | tail -5)"
    ((SECONDS < deadline)) || { stop; die "not serving on $address after 120 s; see $LOG_FILE"; }
    sleep 0.5
  done
  if ! cli operator namespace describe --address "$address" --namespace default >/dev/null 2>&1; then
    cli operator namespace create --address "$address" --retention "$RETENTION" --namespace default >&2 ||
      { stop; die "cannot register namespace default"; }
  fi
  # The namespace is usable once a read in it succeeds (the frontend caches namespaces).
  until cli workflow count --address "$address" --namespace default >/dev/null 2>&1; do
    ((SECONDS < deadline)) || { stop; die "namespace default not usable after 120 s; see $LOG_FILE"; }
    sleep 0.5
  done
  say "serving on $address (pid $pid, $((SECONDS - started)) s; log $LOG_FILE; stop: $0 stop)"
  [[ -z "$TLS" ]] || print_client_env
  echo "$address"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  destroy) destroy ;;
  status)
    if pid=$(running_pid); then frontend_address; else say "not running ($STATE_DIR)"; exit 1; fi ;;
  api-key)
    [[ -n "$AUTH" ]] || usage "api-key: only with TEMPORAL_CLUSTER_AUTH=jwt"
    [[ -f "$JWT_DIR/signing.key" ]] || die "no signing key in $JWT_DIR: start the cluster first"
    api_key ;;
  *) usage "usage: $0 [start|status|stop|destroy|api-key]" ;;
esac
