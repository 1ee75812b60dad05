#!/usr/bin/env bash
# The whole test suite:
#   1. unit tests and every integration test (behaviour suite on the
#      in-process memory backend, backend contract on memory and Redis,
#      cluster tests, real processes, Redis over TLS with ACL users);
#   2. the behaviour suite again on the Redis backend (each test starts its
#      own redis-server on a free port);
#   3. the backend contract, the cross-instance tests and the channel and
#      session behaviour on a Redis Cluster of three masters (sharded
#      pub/sub), each test building its own cluster;
#   4. the backend contract and the cross-instance tests through a Redis
#      Sentinel (a master and a sentinel per test).
# The client libraries' suites (clients/python, clients/js), the control
# UI in headless Chromium (ui/test; screenshots in target/ui-screenshots)
# and the official MCP SDKs run in stage 1 (tests/clients.rs,
# tests/mcp_clients.rs).
# Installs what it lacks first (scripts/test-deps.sh): redis-server and
# redis-cli (Debian's are built with TLS), openssl, chromium and the other
# programs the tests start, the official Python clients the tests drive in
# a project-local .venv, and the pinned Node packages (npm ci).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/test-deps.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT

behaviour=()
for f in tests/*.rs; do
  name=$(basename "$f" .rs)
  # Files that are not backend-agnostic behaviour tests.
  case "$name" in backend|device_store|cluster|cluster_process|cluster_failover|agents_cluster|process|telemetry|tls|fuzz|hostile|redis_secure|durability|failover|cron_process|bench_reference|clients|mcp_clients|a2a) continue ;; esac
  behaviour+=(--test "$name")
done

# A test binary that prints nothing for this long is stuck (every wait in
# the tests is bounded far below it): what it and its children are doing
# is printed (threads' stacks when gdb is there) and it is killed, so the
# run goes on and reports it failed rather than hanging.
silent_limit=${SWITCHYARD_TEST_SILENT_LIMIT:-600}
process_tree() {
  local child
  ps -o pid=,etime=,args= -p "$1" 2>/dev/null || true
  for child in $(pgrep -P "$1" || true); do process_tree "$child"; done
}
stuck() {
  echo "!!! no output for ${silent_limit}s: dumping and killing the running test binaries"
  local pid
  # A test binary is the program itself (not a linker writing one).
  for pid in $(pgrep -f '^[^ ]*/debug/deps/[a-z_0-9]+-[0-9a-f]{16}( |$)' || true); do
    echo "--- $(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null)"
    process_tree "$pid"
    if command -v gdb >/dev/null 2>&1; then
      timeout 60 gdb -batch -p "$pid" -ex 'thread apply all bt 30' 2>/dev/null |
        grep -E '^(Thread|#)' | head -n 400
    fi
    kill -9 "$pid" 2>/dev/null || true
  done
}
# Copy stdin to stdout and the log, calling `stuck` after each silence.
watched() {
  local line rc
  while true; do
    if IFS= read -r -t "$silent_limit" line; then
      printf '%s\n' "$line"
    else
      rc=$?
      [ -n "$line" ] && printf '%s' "$line"
      [ "$rc" -gt 128 ] || break
      stuck
    fi
  done | tee -a "$log"
}

status=0
echo "=== memory backend (and everything else) ==="
cargo test --no-fail-fast --all-targets 2>&1 | watched || status=1
echo "=== behaviour suite on the redis backend ==="
SWITCHYARD_TEST_BACKEND=redis cargo test --no-fail-fast "${behaviour[@]}" 2>&1 | watched || status=1
echo "=== on a redis cluster (3 masters) ==="
cluster_tests=(--test backend --test channels --test sessions --test agents)
cluster_tests+=(--test devices --test device_store)
[ -f tests/cluster.rs ] && cluster_tests+=(--test cluster)
[ -f tests/agents_cluster.rs ] && cluster_tests+=(--test agents_cluster)
[ -f tests/agent_definitions.rs ] && cluster_tests+=(--test agent_definitions)
[ -f tests/runtime_config.rs ] && cluster_tests+=(--test runtime_config)
[ -f tests/cron.rs ] && cluster_tests+=(--test cron)
SWITCHYARD_TEST_BACKEND=redis SWITCHYARD_TEST_REDIS=cluster \
  cargo test --no-fail-fast "${cluster_tests[@]}" 2>&1 | watched || status=1
echo "=== through a redis sentinel ==="
sentinel_tests=(--test backend)
[ -f tests/cluster.rs ] && sentinel_tests+=(--test cluster)
[ -f tests/agents_cluster.rs ] && sentinel_tests+=(--test agents_cluster)
SWITCHYARD_TEST_BACKEND=redis SWITCHYARD_TEST_REDIS=sentinel \
  cargo test --no-fail-fast "${sentinel_tests[@]}" 2>&1 | watched || status=1

echo "=== the documented commands, as written ==="
bash scripts/check-docs.sh 2>&1 | tee -a "$log" || status=1

echo
echo "=== summary ==="
grep -E "^test result:" "$log" | awk '
  { passed += $4; failed += $6; ignored += $8; print }
  END { printf "total: %d passed, %d failed, %d ignored\n", passed, failed, ignored }'
echo "control UI screenshots: $(pwd)/target/ui-screenshots"
exit $status
