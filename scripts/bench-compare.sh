#!/usr/bin/env bash
# `scripts/bench.sh compare`: the same scenarios against three targets in
# one run, so Switchyard's figures sit next to a ceiling measured on the
# same machine at the same hour:
#   reference   `switchyard bench reference`: a bare tokio-tungstenite
#               JSON-RPC server (ping, subscribe, publish; no features)
#   standalone  one Switchyard instance, in-memory backend (no Redis)
#   cluster     two Switchyard instances + redis-server (scripts/cluster.sh)
# Every cell runs RUNS times; within a run the targets take turns, the
# order rotating from run to run. One JSON line per run (the bench's own,
# with "target" and "run" added), then a table of medians
# (scripts/bench-summary.py). Run through scripts/bench.sh, which builds
# the release binary, lifts the per-IP limits and raises `ulimit -n`.
#
# Settings (environment):
#   RUNS                repetitions of each cell            (default 3)
#   PING_CONNECTIONS    ping: connections                   (default 50)
#   PING_SECONDS        ping: seconds                       (default 10)
#   FANOUT_SUBSCRIBERS  fan-out: subscribers                (default 1000)
#   FANOUT_RATES        fan-out: publish rates, msg/s       (default "500 100")
#   FANOUT_SECONDS      fan-out: seconds of publishing      (default 5)
#   IDLE_CONNECTIONS    idle, one after another             (default 20000, capped by ulimit -n)
#   STORM_CONNECTIONS   idle --storm                        (default 20000, capped by ulimit -n)
#   STORM_CONCURRENCY   idle --storm: handshakes in flight  (default 512)
#   HOLD_SECONDS        idle --storm: hold                  (default 10)
#   SCENARIOS           cells to run  (default "ping fanout idle storm")
#   TARGETS             targets       (default "reference standalone cluster")
#   REF_PORT, SOLO_PORT ports of the reference and the standalone instance
#                       (defaults 28800, 28801); the cluster takes the first
#                       two of SY_PORTS and SY_REDIS_PORT.
#   RESULTS             file collecting the JSON lines (default: in SY_CLUSTER_DIR)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$repo/scripts/lib.sh"
: "${SWITCHYARD_BIN:?run through scripts/bench.sh compare}"
: "${SY_CLUSTER_DIR:?run through scripts/bench.sh compare}"
bin=$SWITCHYARD_BIN
state=$SY_CLUSTER_DIR

runs=${RUNS:-3}
ping_connections=${PING_CONNECTIONS:-50}
ping_seconds=${PING_SECONDS:-10}
fanout_subscribers=${FANOUT_SUBSCRIBERS:-1000}
read -r -a fanout_rates <<<"${FANOUT_RATES:-500 100}"
fanout_seconds=${FANOUT_SECONDS:-5}
# One process may hold $(ulimit -n) descriptors, the generator as much as
# the server: stay under it.
fd_cap=$(( $(ulimit -n) - 500 ))
cap() { local n=$1; (( n > fd_cap )) && n=$fd_cap; echo "$n"; }
idle_connections=$(cap "${IDLE_CONNECTIONS:-20000}")
storm_connections=$(cap "${STORM_CONNECTIONS:-20000}")
storm_concurrency=${STORM_CONCURRENCY:-512}
hold_seconds=${HOLD_SECONDS:-10}
read -r -a scenarios <<<"${SCENARIOS:-ping fanout idle storm}"
read -r -a targets <<<"${TARGETS:-reference standalone cluster}"
ref_port=${REF_PORT:-28800}
solo_port=${SOLO_PORT:-28801}
read -r -a sy_ports <<<"$SY_PORTS"
export SY_PORTS="${sy_ports[0]} ${sy_ports[1]}"
results=${RESULTS:-$state/compare.jsonl}
: >"$results"

# SIGTERM, then SIGKILL after $2 s.
stop_pid() {
  local pid=$1 grace=$2 deadline
  kill -TERM "$pid" 2>/dev/null || return 0
  deadline=$((SECONDS + grace))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# The token every target is given (the reference takes any).
mkdir -p "$state"
if [[ ! -s $state/token ]]; then
  (umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$state/token")
fi
token=$(<"$state/token")

ref_pid='' solo_pid=''
start_target() {
  case $1 in
  reference)
    port_free "$ref_port" || die "port $ref_port is in use (set REF_PORT)"
    "$bin" bench reference --listen "127.0.0.1:$ref_port" >"$state/reference.log" 2>&1 </dev/null &
    ref_pid=$!
    wait_for reference 10 port_taken "$ref_port"
    ;;
  standalone)
    port_free "$solo_port" || die "port $solo_port is in use (set SOLO_PORT)"
    env -u SWITCHYARD_BIN SWITCHYARD_PORT="$solo_port" SWITCHYARD_BIND=loopback \
      SWITCHYARD_INSTANCE_ID=solo SWITCHYARD_TOKENS="dev:$token:operator.admin" \
      "$bin" >"$state/standalone.log" 2>&1 </dev/null &
    solo_pid=$!
    wait_for standalone 20 instance_up "$solo_port"
    ;;
  cluster) "$repo/scripts/cluster.sh" start >/dev/null ;;
  esac
}
stop_target() {
  case $1 in
  reference) [[ -n $ref_pid ]] && stop_pid "$ref_pid" 5; ref_pid='' ;;
  standalone) [[ -n $solo_pid ]] && stop_pid "$solo_pid" 15; solo_pid='' ;;
  cluster) "$repo/scripts/cluster.sh" stop >/dev/null ;;
  esac
}
stop_all() { for t in "${targets[@]}"; do stop_target "$t" || true; done; }
trap stop_all EXIT

# The URLs of a target (comma separated) and the pid of its first process.
urls_of() {
  case $1 in
  reference) echo "ws://127.0.0.1:$ref_port/ws" ;;
  standalone) echo "ws://127.0.0.1:$solo_port/ws" ;;
  cluster) echo "ws://127.0.0.1:${sy_ports[0]}/ws,ws://127.0.0.1:${sy_ports[1]}/ws" ;;
  esac
}
pid_of() {
  case $1 in
  reference) echo "$ref_pid" ;;
  standalone) echo "$solo_pid" ;;
  cluster) cat "$state/sy-1.pid" ;;
  esac
}

# The targets in the order of run $1: rotated by one each run.
order() {
  local r=$1 n=${#targets[@]} i
  for ((i = 0; i < n; i++)); do echo "${targets[$(((i + r - 1) % n))]}"; done
}

# Run the bench (bounded by $1 seconds) and record its line for target
# $2, run $3.
record() {
  local limit=$1 target=$2 r=$3 line
  shift 3
  if line=$(timeout --kill-after=10 "$limit" "$bin" bench --token "$token" "$@"); then
    line="{\"target\":\"$target\",\"run\":$r,${line#\{}"
  else
    line="{\"target\":\"$target\",\"run\":$r,\"error\":\"bench failed: $*\"}"
  fi
  echo "$line" | tee -a "$results"
}

# Throughput cells: every target up for all of them.
throughput() {
  local cell=$1 r target urls rate
  for ((r = 1; r <= runs; r++)); do
    for target in $(order "$r"); do
      urls=$(urls_of "$target")
      case $cell in
      ping)
        record $((ping_seconds + 60)) "$target" "$r" --urls "${urls%%,*}" \
          ping --connections "$ping_connections" --seconds "$ping_seconds" ;;
      fanout)
        for rate in "${fanout_rates[@]}"; do
          record 180 "$target" "$r" --urls "$urls" fanout --subscribers "$fanout_subscribers" \
            --messages $((rate * fanout_seconds)) --rate "$rate"
        done ;;
      esac
    done
  done
}

# Memory cells: a fresh process for every run (one that served other
# runs keeps their heap).
memory() {
  local cell=$1 r target urls
  for ((r = 1; r <= runs; r++)); do
    for target in $(order "$r"); do
      start_target "$target"
      urls=$(urls_of "$target")
      case $cell in
      idle)
        record 900 "$target" "$r" --urls "${urls%%,*}" \
          idle --connections "$idle_connections" --pid "$(pid_of "$target")" ;;
      storm)
        record 900 "$target" "$r" --urls "${urls%%,*}" \
          idle --storm --connections "$storm_connections" --concurrency "$storm_concurrency" \
          --hold-seconds "$hold_seconds" --pid "$(pid_of "$target")" ;;
      esac
      stop_target "$target"
    done
  done
}

echo "# compare: ${targets[*]}; $runs runs per cell; ping $ping_connections × ${ping_seconds}s;" \
  "fan-out $fanout_subscribers subscribers at ${fanout_rates[*]} msg/s for ${fanout_seconds}s;" \
  "idle $idle_connections; storm $storm_connections ($storm_concurrency in flight, hold ${hold_seconds}s)"
want() { [[ " ${scenarios[*]} " == *" $1 "* ]]; }
if want ping || want fanout; then
  for target in "${targets[@]}"; do start_target "$target"; done
  want ping && throughput ping
  want fanout && throughput fanout
  stop_all
fi
want idle && memory idle
want storm && memory storm
echo
python3 "$repo/scripts/bench-summary.py" "$results"
