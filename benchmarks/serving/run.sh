#!/usr/bin/env bash
# Serving benchmark: our service vs `mlflow models serve --env-manager local`, same model, same machine.
# Usage: benchmarks/serving/run.sh [--duration 10] [--connections 1,8,32] [--workers 1,2]
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk (Debian package)"
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
exec .venv/bin/python benchmarks/serving/bench.py "$@"
