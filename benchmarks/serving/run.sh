#!/usr/bin/env bash
# Serving benchmark: our service vs `mlflow models serve --env-manager local`, same model, same machine.
# Usage: benchmarks/serving/run.sh [--duration 8] [--connections 1,8] [--rows 1,100] [--repeats 2] [--baseline 0c51799] (bench.py -h)
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk (Debian package)"
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi
exec .venv/bin/python benchmarks/serving/bench.py "$@"
