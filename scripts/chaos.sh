#!/usr/bin/env bash
# The chaos and soak runs (R1, R2, R11, R12; R4 also runs in the default suite):
# real nats-server and rbot processes, SIGKILL/SIGTERM/SIGSTOP, 127.0.0.1 only,
# each test bounded in count and time and printing the figures it measured.
# Sizes from the environment, e.g. RBOT_SOAK_S=600 scripts/chaos.sh
# (RBOT_R1_ORDERS, RBOT_R1_KILLS, RBOT_R2_RESTARTS, RBOT_R11_KILLS, RBOT_SOAK_S).
# Extra arguments go to pytest, e.g. scripts/chaos.sh -k r11
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh test
exec .venv/bin/pytest -m chaos -q -s tests/chaos "$@"
