#!/usr/bin/env bash
# Install (first time) and run everything: embedded NATS, actors, API on :8787.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/rbot up "$@"
