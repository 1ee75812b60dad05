#!/usr/bin/env bash
# The whole test suite: unit tests and the black-box integration tests
# (real servers on free ports, real WebSocket clients).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --all-targets "$@" 2>&1 | tee /tmp/switchyard-test.log
echo
echo "=== summary ==="
grep -E "^test result:|Running " /tmp/switchyard-test.log | sed 's/^ *//' || true
