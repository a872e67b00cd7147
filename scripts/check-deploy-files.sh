#!/usr/bin/env bash
# Validates docker-compose.temporal.yml and the Dockerfile without a Docker engine.
set -euo pipefail
echo "check-deploy-files: not yet written"
