#!/usr/bin/env bash
# `npm audit --omit=dev` must show no high or critical finding. When the registry's audit endpoint
# cannot be reached (offline machines), say so and pass: the endpoint alone never fails CI.
set -uo pipefail
out=$(npm audit --omit=dev --audit-level=high --json 2>/dev/null)
status=$?
if [ $status -eq 0 ]; then echo "npm audit: no high or critical findings"; exit 0; fi
if echo "$out" | grep -q '"vulnerabilities"'; then
  echo "$out" | node -e 'const r=JSON.parse(require("fs").readFileSync(0,"utf8"));const v=r.metadata?.vulnerabilities??{};console.log("npm audit:",JSON.stringify(v))'
  exit 1
fi
echo "npm audit: audit endpoint not reachable here; skipped (${out:0:120})"
exit 0
