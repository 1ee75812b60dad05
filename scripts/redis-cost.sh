#!/usr/bin/env bash
# What each gateway operation costs Redis: commands, bytes each way and
# Redis CPU per publication, session event, routed call, connection and
# subscription; Redis memory per idle connection and per logged publication;
# a check of the per-operation figures against two `switchyard bench` runs;
# the Redis server's own capacity (redis-benchmark). docs/scaling.md
# explains the figures and the scale model built on them.
#
#   scripts/redis-cost.sh      one JSON line per result, then a Markdown table
#
# Starts its own redis-server (no persistence) and two release instances, A
# and B, on free loopback ports (never 6379), and stops them on exit. The
# measuring itself is scripts/redis_cost.py with scripts/redis_cost_meter.py
# (Python 3 with `websockets`).
# Settings (environment):
#   SWITCHYARD_BIN     binary (default ${CARGO_TARGET_DIR:-target}/release/switchyard;
#                      not built here: `cargo build --release` first)
#   PYTHON             interpreter with `websockets` >= 13 (default .venv/bin/python3
#                      when present, else python3)
#   N                  operations per measurement            (default 2000)
#   CONNECT_N          connections per connection measurement (default 500)
#   IDLE_CONNECTIONS   idle connections for memory per connection (default 2000)
#   IDLE_SECONDS       window for their steady cost (default 60: each instance's
#                      reaper reads every presence entry about once a minute)
#   HISTORY_ENTRIES    publications logged for memory per entry (default 5000)
#   CHECK              0 skips the bench check               (default 1)
#   SHARD_REQUESTS     redis-benchmark requests per command, 0 skips (default 200000)
#   TRACE              k > 0: before each measurement, k more operations under
#                      Redis MONITOR, printed to stderr (which command, which key)
# As in scripts/bench.sh, the limits that protect a public gateway from one
# address and one identity are lifted; everything else is the default
# configuration (channel presence on, presence tick 5 s), with two channel
# rules in front of the default ones: `audit:` (history 100) and `mem:`
# (history 10 000).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"

bin=${SWITCHYARD_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/switchyard}
[[ -x $bin ]] || die "no binary at $bin (cargo build --release, or set SWITCHYARD_BIN)"
command -v redis-server >/dev/null || die "redis-server is not on PATH"
command -v redis-cli >/dev/null || die "redis-cli is not on PATH"
python=${PYTHON:-}
if [[ -z $python ]]; then
  python=python3
  [[ -x $repo/.venv/bin/python3 ]] && python=$repo/.venv/bin/python3
fi
"$python" -c 'from websockets.asyncio.client import connect' 2>/dev/null ||
  die "$python lacks websockets >= 13 (pip install 'websockets>=13', or set PYTHON)"

state=$(mktemp -d)
pids=()
cleanup() {
  local pid deadline
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  deadline=$((SECONDS + 15))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$state"
}
trap cleanup EXIT
# Interrupted: exit, so the EXIT trap stops everything started (the
# measurer included: it runs in the background for that reason).
trap 'exit 130' INT TERM

base=$((20000 + RANDOM % 20000))
redis_port=$(free_port "$base")
port_a=$(free_port $((redis_port + 1)))
port_b=$(free_port $((port_a + 1)))
token=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
jwt_secret=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')

# The default channel rules, with two rules that keep history in front.
cat >"$state/switchyard.toml" <<'EOF'
[[channels.rules]]
prefix = "audit:"
subscribe = "authenticated"
publish = "write"
history = 100

[[channels.rules]]
prefix = "mem:"
subscribe = "authenticated"
publish = "write"
history = 10000

[[channels.rules]]
prefix = "public:"
subscribe = "authenticated"
publish = "write"
presence = true

[[channels.rules]]
prefix = "user:"
subscribe = "owner"
publish = "admin"
presence = false

[[channels.rules]]
prefix = "conn:"
subscribe = "owner"
publish = "admin"
presence = false

[[channels.rules]]
prefix = "private:"
subscribe = "claim"
publish = "claim"
presence = true

[[channels.rules]]
prefix = "global"
subscribe = "authenticated"
publish = "admin"
presence = false

[[channels.rules]]
prefix = "approval"
subscribe = "approvals"
publish = "admin"
presence = false
EOF

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  --protected-mode yes >"$state/redis.log" 2>&1 &
pids+=($!)
wait_for "redis-server" 10 redis_up

for name in A B; do
  if [[ $name == A ]]; then port=$port_a; else port=$port_b; fi
  env -u SWITCHYARD_BIN \
    SWITCHYARD_CONFIG="$state/switchyard.toml" \
    SWITCHYARD_LOG="${SWITCHYARD_LOG:-warn}" \
    SWITCHYARD_PORT="$port" \
    SWITCHYARD_BIND=loopback \
    SWITCHYARD_INSTANCE_ID="cost-$name" \
    SWITCHYARD_REDIS_URL="redis://127.0.0.1:$redis_port" \
    SWITCHYARD_TOKENS="dev:$token:operator.admin" \
    SWITCHYARD_JWT_SECRET="$jwt_secret" \
    SWITCHYARD_RATE_LIMITS__CONNECT_PER_IP__LIMIT=100000000 \
    SWITCHYARD_RATE_LIMITS__AUTH_FAILURES_PER_IP__LIMIT=100000000 \
    SWITCHYARD_RATE_LIMITS__MESSAGES_PER_CONN__LIMIT=100000000 \
    SWITCHYARD_RATE_LIMITS__MESSAGES_PER_IDENTITY__LIMIT=100000000 \
    SWITCHYARD_LIMITS__MAX_CONNECTIONS_PER_IP=1000000 \
    SWITCHYARD_LIMITS__MAX_PENDING_HANDSHAKES=1000000 \
    "$bin" >"$state/$name.log" 2>&1 </dev/null &
  pids+=($!)
done
wait_for "instance A on port $port_a" 20 instance_up "$port_a"
wait_for "instance B on port $port_b" 20 instance_up "$port_b"

echo "# $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# redis $(redis-server --version | awk '{print $3}' | cut -d= -f2), switchyard $("$bin" --version 2>/dev/null | awk '{print $2}')"
timeout "${REDIS_COST_TIMEOUT:-900}" "$python" "$repo/scripts/redis_cost.py" \
  --redis-port "$redis_port" \
  --url-a "ws://127.0.0.1:$port_a/ws" \
  --url-b "ws://127.0.0.1:$port_b/ws" \
  --token "$token" \
  --jwt-secret "$jwt_secret" \
  --bin "$bin" \
  --n "${N:-2000}" \
  --connect-n "${CONNECT_N:-500}" \
  --idle-connections "${IDLE_CONNECTIONS:-2000}" \
  --idle-seconds "${IDLE_SECONDS:-60}" \
  --history-entries "${HISTORY_ENTRIES:-5000}" \
  --check "${CHECK:-1}" \
  --shard-requests "${SHARD_REQUESTS:-200000}" \
  --trace "${TRACE:-0}" &
measurer=$!
pids+=("$measurer")
wait "$measurer"
