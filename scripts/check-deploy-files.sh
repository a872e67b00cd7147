#!/usr/bin/env bash
# Validates docker-compose.temporal.yml, docker-compose.cluster.yml and the Dockerfile without a Docker engine:
#  1. compose: `docker-compose config` (Debian's docker-compose package, installed if missing) must
#     accept the file, then this project's rules are checked on the resolved config (including the
#     Prometheus service and the deploy/prometheus/prometheus.yml it loads); the same again for the
#     file with the cluster override on top (Temporal server, schema, namespace and UI services,
#     at the version and shard count of scripts/temporal-cluster.sh).
#  2. Dockerfile: this project's rules (pinned bases, multi-stage, production install, non-root,
#     the CMD of `npm start`), a short text check; `docker build --check` adds BuildKit's own lint
#     where an engine exists.
# Prints what it checked; exits non-zero if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
COMPOSE_FILE=docker-compose.temporal.yml
CACHE_ROOT="${BALANCE_SYNC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/balance-sync}"
failed=0

# ---------------------------------------------------------------------------------------------
if ! command -v docker-compose >/dev/null 2>&1; then
  echo "check-deploy-files: installing Debian's docker-compose (validation only; no engine needed)"
  if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi
  "${SUDO[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi
echo "using $(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose /')"

resolved=$(mktemp)
trap 'rm -f "$resolved"' EXIT
# What the compose override must agree with: the native cluster's defaults.
cluster_version=$(sed -n 's/^VERSION="${TEMPORAL_SERVER_VERSION:-v\(.*\)}".*/\1/p' scripts/temporal-cluster.sh)
cluster_shards=$(sed -n 's/^SHARDS="${TEMPORAL_CLUSTER_SHARDS:-\(.*\)}".*/\1/p' scripts/temporal-cluster.sh)

check_compose() { # mode (dev or cluster), compose files...
  local mode=$1; shift
  local files=(); for file in "$@"; do files+=(-f "$file"); done
  echo "== $*"
  # `config` resolves interpolation, env_file and merge keys, and validates against Compose's schema;
  # it never contacts a Docker engine. Run it with an empty environment for interpolation so that
  # the file's own defaults are what gets checked.
  if env -i PATH="$PATH" HOME="$HOME" docker-compose "${files[@]}" config >"$resolved"; then
    echo "ok   docker-compose config: valid"
    echo "     services: $(docker-compose "${files[@]}" config --services | sort | tr '\n' ' ')"
    echo "     volumes:  $(docker-compose "${files[@]}" config --volumes | sort | tr '\n' ' ')"
    python3 - "$resolved" "$mode" "$cluster_version" "$cluster_shards" <<'PY' || failed=1
import os, re, sys, yaml

config = yaml.safe_load(open(sys.argv[1]))
services = config.get("services", {})
named_volumes = set((config.get("volumes") or {}).keys())
problems = 0
# The one directory a service may bind-mount (read-only): configuration kept in the repository.
deploy_dir = os.path.abspath("deploy") + os.sep

def check(ok, what):
    global problems
    print(("ok   " if ok else "FAIL ") + what)
    problems += 0 if ok else 1

# One-shot services: those others wait for with `service_completed_successfully`.
one_shot = {
    name
    for service in services.values()
    for name, dep in (service.get("depends_on") or {}).items()
    if isinstance(dep, dict) and dep.get("condition") == "service_completed_successfully"
}

for name, service in sorted(services.items()):
    image = service.get("image", "")
    if "build" in service:
        check(bool(image), f"{name}: built from the repo Dockerfile and tagged ({image or 'no image name'})")
    else:
        pinned = bool(re.search(r"^[^@]+:[^:/@]+$|@sha256:[0-9a-f]{64}$", image)) and not image.endswith(":latest")
        check(pinned, f"{name}: image pinned to a version tag ({image})")
    if name in one_shot:
        print(f"ok   {name}: one-shot (others wait for it to complete); no healthcheck needed")
    else:
        test = (service.get("healthcheck") or {}).get("test")
        check(bool(test) and test != ["NONE"], f"{name}: has a healthcheck")
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        check(False, f"{name}: depends_on uses conditions (found a plain list)")
    for dep, spec in sorted(deps.items()):
        condition = (spec or {}).get("condition")
        check(
            condition in ("service_healthy", "service_completed_successfully"),
            f"{name}: waits for {dep} to be {condition or 'started (no condition)'}",
        )
    for volume in service.get("volumes") or []:
        source = volume.get("source") if isinstance(volume, dict) else str(volume).split(":")[0]
        kind = volume.get("type") if isinstance(volume, dict) else ("volume" if not source.startswith((".", "/")) else "bind")
        read_only = volume.get("read_only") is True if isinstance(volume, dict) else str(volume).endswith(":ro")
        if kind == "bind" and read_only and source.startswith(deploy_dir):
            print(f"ok   {name}: configuration from the repository, read-only ({os.path.relpath(source)})")
            continue
        check(kind == "volume" and source in named_volumes, f"{name}: data on the named volume {source}")

def command(service):
    value = service.get("command")
    return " ".join(value) if isinstance(value, list) else (value or "")

app = services.get("app", {})
check(app.get("command") is None, f"app: runs the image's CMD (no command override: {command(app)})")
check(app.get("stop_grace_period") == "30s", "app: stop_grace_period 30s (a graceful stop can outlast 10 s)")
def container_port(port):
    # "127.0.0.1:9464:9464/tcp" (Compose v1) or {"target": 9464, ...} (Compose v2)
    return str(port.get("target")) if isinstance(port, dict) else str(port).split("/")[0].split(":")[-1]

check("9464" in map(container_port, app.get("ports", [])), "app: publishes its HTTP port 9464 (/metrics, /healthz, /readyz)")
check("/readyz" in " ".join(map(str, (app.get("healthcheck") or {}).get("test", []))), "app: healthcheck is GET /readyz")
env = app.get("environment") or {}
check(str(env.get("HTTP_PORT")) == "9464",
      f"app: HTTP_PORT is pinned to 9464, the port its mapping and healthcheck use ({env.get('HTTP_PORT', 'from .env.template')})")
for key, host in [("DATABASE_URL", "postgres"), ("KEYDB_URL", "keydb"), ("RABBITMQ_URL", "rabbitmq"), ("TEMPORAL_ADDRESS", "temporal")]:
    check(host in str(env.get(key, "")), f"app: {key} points at the {host} service")
producer = services.get("producer", {})
check(command(producer) == "node dist/src/producer/main.js", f"producer: runs `node dist/src/producer/main.js` ({command(producer)})")
temporal = services.get("temporal", {})
mode, cluster_version, cluster_shards = sys.argv[2:5]
if mode == "dev":
    check(command(temporal).startswith("server start-dev") and "--db-filename" in command(temporal),
          f"temporal: `temporal server start-dev` with a persistent --db-filename ({command(temporal)})")
    # The SQLite settings that measured best and keep the data across a process crash (docs/BENCHMARKS.md).
    temporal_args = temporal.get("command") or []
    pragmas = [temporal_args[i + 1] for i, arg in enumerate(temporal_args[:-1]) if arg == "--sqlite-pragma"]
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL"):
        check(pragma in pragmas, f"temporal: --sqlite-pragma {pragma} ({', '.join(pragmas) or 'no pragmas'})")
else:
    # The topology of scripts/temporal-cluster.sh: same server version, shards, SQL persistence and visibility.
    server_env = temporal.get("environment") or {}
    check(temporal.get("image") == f"temporalio/server:{cluster_version}",
          f"temporal: temporalio/server at scripts/temporal-cluster.sh's version {cluster_version} ({temporal.get('image')})")
    check(server_env.get("DB") == "postgres12" and server_env.get("POSTGRES_SEEDS") == "temporal-postgres",
          f"temporal: persistence on the temporal-postgres service (DB={server_env.get('DB')}, POSTGRES_SEEDS={server_env.get('POSTGRES_SEEDS')})")
    check(str(server_env.get("ENABLE_ES", "false")).lower() != "true", "temporal: SQL visibility (no Elasticsearch)")
    check(str(server_env.get("NUM_HISTORY_SHARDS")) == cluster_shards,
          f"temporal: {cluster_shards} history shards, as scripts/temporal-cluster.sh ({server_env.get('NUM_HISTORY_SHARDS')})")
    for name in ("temporal-schema", "temporal-namespace"):
        image = services.get(name, {}).get("image", "")
        check(image.startswith(f"temporalio/admin-tools:{cluster_version}"),
              f"{name}: temporalio/admin-tools of the server's version ({image or 'missing'})")
    schema = command(services.get("temporal-schema", {}))
    check(all(s in schema for s in ("create-database", "setup-schema", "update-schema", "temporal_visibility", "postgresql/v12/")),
          "temporal-schema: creates and migrates temporal and temporal_visibility (postgresql/v12)")
    check((temporal.get("depends_on") or {}).get("temporal-schema", {}).get("condition") == "service_completed_successfully",
          "temporal: starts after the schema is migrated")
    check("namespace create" in command(services.get("temporal-namespace", {})), "temporal-namespace: registers the namespace")
    check((app.get("depends_on") or {}).get("temporal-namespace", {}).get("condition") == "service_completed_successfully",
          "app: starts after the namespace is registered")
    ui_env = services.get("temporal-ui", {}).get("environment") or {}
    check(ui_env.get("TEMPORAL_ADDRESS") == "temporal:7233", f"temporal-ui: points at temporal:7233 ({ui_env.get('TEMPORAL_ADDRESS')})")
prometheus = services.get("prometheus", {})
check("--config.file=/etc/prometheus/balance-sync/prometheus.yml" in command(prometheus),
      f"prometheus: loads deploy/prometheus/prometheus.yml ({command(prometheus)})")
scrape = yaml.safe_load(open("deploy/prometheus/prometheus.yml"))
jobs = {job["job_name"]: job for job in scrape.get("scrape_configs", [])}
targets = [t for c in jobs.get("balance-sync", {}).get("static_configs", []) for t in c.get("targets", [])]
check(targets == ["app:9464"], f"prometheus: job balance-sync (the name the alert rules use) scrapes app:9464 ({targets})")
check(scrape.get("rule_files") == ["alerts.yml"], "prometheus: loads the alert rules, deploy/prometheus/alerts.yml")
sys.exit(1 if problems else 0)
PY
  else
    echo "FAIL docker-compose config rejected ${files[*]}"
    failed=1
  fi
}

check_compose dev "$COMPOSE_FILE"
echo
check_compose cluster "$COMPOSE_FILE" docker-compose.cluster.yml
echo

# ---------------------------------------------------------------------------------------------
echo
echo "== Dockerfile"
# This project's rules, read from the Dockerfile's text (continuation lines joined): every base image
# pinned (global ARG defaults substituted), at least two stages, and a final stage that installs
# production dependencies with `npm ci --omit=dev`, copies its build from an earlier stage, runs as a
# non-root USER, has no ENTRYPOINT, and whose exec-form CMD is what `npm start` runs. `npm start` is
# `VAR=… exec node …` so that npm's forwarded SIGTERM reaches node; the image sets the same variables
# with ENV (test/unit/launch-settings.test.ts) and runs node directly.
start_cmd=$(node -p 'require("./package.json").scripts.start.replace(/^(\w+=\S+\s+)*(exec\s+)?/, "")')
python3 - Dockerfile "$start_cmd" <<'PY' || failed=1
import json, re, sys

text = re.sub(r"\\\n", " ", open(sys.argv[1]).read())
lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
problems = 0
def check(ok, what):
    global problems
    print(("ok   " if ok else "FAIL ") + what)
    problems += 0 if ok else 1

args, stages, names = {}, [], set()
for line in lines:
    word, _, rest = line.partition(" ")
    word = word.upper()
    if word == "ARG" and not stages:
        key, _, value = rest.partition("=")
        args[key.strip()] = value.strip().strip('"')
    elif word == "FROM":
        parts = [p for p in rest.split() if not p.startswith("--")]
        base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), parts[0])
        name = parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else ""
        if base.lower() not in names:
            pinned = re.fullmatch(r"[^@$]+:[^:/@]+|[^@$]+@sha256:[0-9a-f]{64}", base) and not base.endswith(":latest")
            check(bool(pinned), f"stage {name or len(stages)!r}: base image pinned to a tag or digest ({base})")
        names.add(name.lower())
        stages.append({"name": name or "final", "lines": []})
    elif stages:
        stages[-1]["lines"].append((word, rest))
check(len(stages) >= 2, f"multi-stage build ({len(stages)} stages)")
final = stages[-1] if stages else {"name": "final", "lines": []}
runs = [rest for word, rest in final["lines"] if word == "RUN"]
users = [rest for word, rest in final["lines"] if word == "USER"]
cmds = [rest for word, rest in final["lines"] if word == "CMD"]
name = final["name"]
check(any(re.search(r"\bnpm ci\b", r) and "--omit=dev" in r for r in runs),
      f"stage {name!r} installs production dependencies with `npm ci --omit=dev`")
check(any(word == "COPY" and "--from=" in rest for word, rest in final["lines"]),
      f"stage {name!r} copies its build output from an earlier stage")
user = users[-1] if users else ""
check(user.split(":")[0] not in ("", "root", "0"), f"stage {name!r} runs as a non-root USER (USER {user or '<none>'})")
check(not any(word == "ENTRYPOINT" for word, _ in final["lines"]), f"stage {name!r} has no ENTRYPOINT (CMD is the whole command)")
try:
    cmd = " ".join(json.loads(cmds[-1])) if cmds else ""
except ValueError:
    cmd = ""
check(cmd == sys.argv[2], f"stage {name!r} CMD is the exec form of `{sys.argv[2]}` (CMD {cmds[-1] if cmds else '<none>'})")
sys.exit(1 if problems else 0)
PY

if [ -f .dockerignore ]; then
  for entry in node_modules dist .env .git; do
    if grep -qx "$entry" .dockerignore; then echo "ok   .dockerignore excludes $entry"; else
      echo "FAIL .dockerignore does not exclude $entry"; failed=1; fi
  done
else
  echo "FAIL no .dockerignore"
  failed=1
fi

echo
if [ "$failed" -ne 0 ]; then echo "check-deploy-files: FAILED"; exit 1; fi
echo "check-deploy-files: all checks passed"
