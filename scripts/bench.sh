#!/usr/bin/env bash
# Reproduce the figures of BENCHMARKS.md: a local cluster (redis-server + 3
# release instances on loopback, via scripts/cluster.sh) and the
# `switchyard bench` scenarios against it. Prints one JSON line per run.
#
#   scripts/bench.sh            all scenarios
#   scripts/bench.sh latency    one of: latency fanout ping invoke idle
#   scripts/bench.sh compare    ping, fan-out, idle and an idle storm against
#                               the bare reference server, a standalone
#                               instance and a 2-instance cluster, RUNS
#                               times each, then a table of medians
#                               (scripts/bench-compare.sh says more)
#
# Limits that exist to protect a public gateway are lifted for the load
# generator's single IP and identity; everything else is the default.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
only=${1:-all}

export SY_CLUSTER_DIR=${SY_CLUSTER_DIR:-$(mktemp -d)}
export SY_REDIS_PORT=${SY_REDIS_PORT:-26379}
export SY_PORTS=${SY_PORTS:-"28791 28792 28793"}
export SY_LB_PORT=${SY_LB_PORT:-28789}
export SWITCHYARD_LOG=${SWITCHYARD_LOG:-warn}
export SWITCHYARD_RATE_LIMITS__CONNECT_PER_IP__LIMIT=100000000
# Every credential check holds a slot of the IP's failed-auth window while
# it runs, so concurrent handshakes from one IP count against it.
export SWITCHYARD_RATE_LIMITS__AUTH_FAILURES_PER_IP__LIMIT=100000000
export SWITCHYARD_RATE_LIMITS__MESSAGES_PER_CONN__LIMIT=100000000
export SWITCHYARD_RATE_LIMITS__MESSAGES_PER_IDENTITY__LIMIT=100000000
export SWITCHYARD_LIMITS__MAX_CONNECTIONS_PER_IP=1000000
# The idle scenario opens thousands of connections at once from one host.
export SWITCHYARD_LIMITS__MAX_PENDING_HANDSHAKES=1000000
export SWITCHYARD_LIMITS__PRESENCE_TICK_MS=60000
# Fan-out is measured without presence: with it every subscribe would also
# announce presence.join to all earlier subscribers (N²/2 deliveries).
export SWITCHYARD_CHANNELS__PRESENCE=false

bin=${SWITCHYARD_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/switchyard}
if [[ -z ${SWITCHYARD_BIN:-} ]]; then
  (cd "$repo" && cargo build --release --quiet)
fi
export SWITCHYARD_BIN=$bin

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [[ $only == compare ]]; then
  exec "$repo/scripts/bench-compare.sh"
fi
"$repo/scripts/cluster.sh" start >/dev/null
trap '"$repo/scripts/cluster.sh" stop >/dev/null' EXIT
token=$(<"$SY_CLUSTER_DIR/token")
read -r -a ports <<<"$SY_PORTS"
urls=$(printf 'ws://127.0.0.1:%s/ws,' "${ports[@]}")
urls=${urls%,}
first="ws://127.0.0.1:${ports[0]}/ws"
cross="ws://127.0.0.1:${ports[0]}/ws,ws://127.0.0.1:${ports[1]}/ws"
run() { "$bin" bench --token "$token" "$@"; }

echo "# $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# redis $(redis-server --version | awk '{print $3}'), fd limit $(ulimit -n)"
case $only in all | latency)
  run --urls "$cross" latency --rate 1000 --seconds 10
  run --urls "$cross" latency --rate 10000 --seconds 10 --publishers 8
esac
case $only in all | fanout)
  run --urls "$urls" fanout --subscribers 10000 --messages 50 --rate 100
  # Sustained: six times the messages, so the first message's cold start
  # (every socket's first write) weighs less in the rate.
  run --urls "$urls" fanout --subscribers 10000 --messages 300 --rate 100
esac
case $only in all | ping)
  run --urls "$first" ping --connections 100 --seconds 10
esac
case $only in all | invoke)
  run --urls "$cross" invoke --connections 20 --seconds 10
  run --urls "$first" invoke --connections 20 --seconds 10
esac
case $only in all | idle)
  # Memory per connection is only meaningful on a fresh process: one that
  # served the runs above keeps their heap.
  "$repo/scripts/cluster.sh" stop >/dev/null
  "$repo/scripts/cluster.sh" start >/dev/null
  # One process may hold $(ulimit -n) descriptors; the server needs a few
  # beyond its sockets, so stay under the limit.
  n=$(( $(ulimit -n) - 500 ))
  (( n > 20000 )) && n=20000
  [[ -n ${IDLE_CONNECTIONS:-} ]] && n=$IDLE_CONNECTIONS
  run --urls "$first" idle --connections "$n" --pid "$(<"$SY_CLUSTER_DIR/sy-1.pid")"
esac
