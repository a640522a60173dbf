#!/usr/bin/env bash
# Install what the tests need (venv, packages, Debian's chromium) and run them:
# lint (ruff), types (mypy --strict on actors/ bus/ api/), then pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -m chaos
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh test
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; browser tests will be skipped" >&2
  else
    echo "warning: /usr/bin/chromium missing (sudo apt-get install chromium); browser tests skip" >&2
  fi
fi
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy --strict (actors, bus, api)"
.venv/bin/mypy -p rbot.actors -p rbot.bus -p rbot.api
echo "== pytest"
exec .venv/bin/pytest -q "$@"
