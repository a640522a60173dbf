#!/usr/bin/env bash
# The chaos and soak runs at full size (R1, R2, R3, R11, R17, R16, R5's 10,000-case
# fuzz; R12 soak): real nats-server and rbot processes, SIGKILL/SIGTERM/SIGSTOP,
# 127.0.0.1 only, each test bounded in count and time.  Chaos-lite (R1 300 orders / 10 kills, R2 3
# restarts, R11 6 kills, R3 escalation, R4) runs in the default suite (scripts/test.sh).
#
# Every test prints its figures; this script collects them as Markdown tables in
# tests/chaos/RESULTS.md (the soak: tests/chaos/SOAK.md) with the date, the commit
# and the outcome.
#
#   scripts/chaos.sh              full sizes (about 13 minutes on 2 cores)
#   scripts/chaos.sh --soak       R12 only, 30 minutes (RBOT_SOAK_S=1800 unless set)
#   scripts/chaos.sh -k r11       extra arguments go to pytest
#
# Sizes from the environment, never below the floors the tests assert:
# RBOT_R1_ORDERS (1000), RBOT_R1_KILLS (20), RBOT_R2_RESTARTS (10),
# RBOT_R11_ORDERS (120), RBOT_R11_KILLS (10), RBOT_R17_RESTARTS (30), RBOT_SOAK_S (180).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh test
args=(-m chaos -q -s tests/chaos tests/cluster tests/integration/test_fuzz_api.py)
what="full chaos run"
results=tests/chaos/RESULTS.md
if [ "${1:-}" = "--soak" ]; then
  shift
  export RBOT_SOAK_S="${RBOT_SOAK_S:-1800}"
  args=(-m chaos -q -s tests/chaos/test_r12_soak.py)
  what="soak (${RBOT_SOAK_S} s)"
  results=tests/chaos/SOAK.md  # its own record: a full run does not overwrite it
fi
tables="$(mktemp)"
trap 'rm -f "$tables"' EXIT
started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
set +e
RBOT_CHAOS_RESULTS="$tables" .venv/bin/pytest "${args[@]}" "$@"
rc=$?
set -e
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!tests/chaos/RESULTS.md' ':!tests/chaos/SOAK.md' || echo '+dirty')"
{
  echo "# Chaos results (the last recorded run)"
  echo
  echo "Written by \`scripts/chaos.sh\`; do not edit by hand."
  echo
  echo "- run: $what, \`pytest ${args[*]} $*\`"
  echo "- started: $started, finished: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- commit: $commit"
  echo "- machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- outcome: $([ $rc = 0 ] && echo passed || echo "FAILED (pytest exit $rc)")"
  cat "$tables"
} >"$results"
echo "figures written to $results"
exit $rc
