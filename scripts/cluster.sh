#!/usr/bin/env bash
# A 3-node NATS cluster (JetStream R3, mutual TLS on routes, TLS clients, the bus
# identities) with `rbot api` x2 and `rbot actors` x3 on this machine, each seeded
# at a different node.  Everything on 127.0.0.1; state, logs and pids in var/cluster.
#   bash scripts/cluster.sh up      # prints the API URLs
#   bash scripts/cluster.sh down    # stops what `up` started (by pid), keeps the data
#   bash scripts/cluster.sh clean   # down, then removes var/cluster
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="$PWD/var/cluster"
RBOT="$PWD/.venv/bin/rbot"
NATS="$PWD/.venv/bin/nats-server"

wait_line() {  # wait_line FILE REGEX SECONDS: until the log shows the line (printed)
  timeout "$3" grep -m1 -E "$2" <(tail -n +1 -F --pid=$$ "$1" 2>/dev/null) || {
    echo "no '$2' in $1 within $3 s:" >&2; tail -20 "$1" >&2; return 1; }
}

start() {  # start NAME CMD...: background, log and pid in $DIR
  local name=$1; shift
  nohup "$@" >"$DIR/log/$name.log" 2>&1 &
  echo $! >"$DIR/pid/$name"
}

up() {
  [ -x "$RBOT" ] || bash scripts/bootstrap.sh
  mkdir -p "$DIR/log" "$DIR/pid"
  if [ ! -f "$DIR/cluster.env" ]; then
    "$RBOT" cluster-config "$DIR" --loopback --make-ca >/dev/null
    umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(48))' >"$DIR/secret.key"
  fi
  set -a; . "$DIR/cluster.env"; set +a
  for i in 1 2 3; do start "nats$i" "$NATS" -c "$DIR/node$i.conf"; done
  for i in 1 2 3; do wait_line "$DIR/log/nats$i.log" "Server is ready" 30 >/dev/null; done
  # JetStream answers once the nodes elected a metadata leader (rbot provisions at start)
  for i in 1 2 3; do wait_line "$DIR/log/nats$i.log" "metadata leader" 30 >/dev/null; done
  export ARENA_SECRET_KEY; ARENA_SECRET_KEY=$(cat "$DIR/secret.key")
  export RBOT_API_PORT=0 RBOT_OPEN_REGISTRATION=trader PYTHONUNBUFFERED=1
  local urls=("$NATS_URL_1" "$NATS_URL_2" "$NATS_URL_3")
  # the first one provisions the streams and buckets (R3) alone, then the rest join
  for i in 0 1 2; do
    NATS_URL=${urls[$i]} RBOT_INSTANCE="actors-$((i + 1))" start "actors$((i + 1))" "$RBOT" actors
    [ "$i" != 0 ] || wait_line "$DIR/log/actors1.log" "actors running" 120 >/dev/null
  done
  for i in 0 1; do
    NATS_URL=${urls[$(((i + 1) % 3))]} RBOT_INSTANCE="api-$((i + 1))" start "api$((i + 1))" "$RBOT" api
  done
  for i in 1 2 3; do wait_line "$DIR/log/actors$i.log" "actors running" 90 >/dev/null; done
  echo "NATS: ${NATS_URL_1}  (monitoring http://127.0.0.1:$NATS_MONITOR_1/ ...)"
  for i in 1 2; do
    wait_line "$DIR/log/api$i.log" "API on http://" 90 | grep -oE "http://[0-9.]+:[0-9]+/"
  done
  echo "logs: $DIR/log   stop: bash scripts/cluster.sh down"
}

down() {
  [ -d "$DIR/pid" ] || return 0
  for name in api1 api2 actors1 actors2 actors3 nats1 nats2 nats3; do
    f="$DIR/pid/$name"
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      timeout 30 tail --pid="$pid" -f /dev/null || kill -KILL "$pid"
    fi
    rm -f "$f"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  clean) down; rm -rf "$DIR" ;;
  *) echo "usage: $0 up|down|clean" >&2; exit 2 ;;
esac
