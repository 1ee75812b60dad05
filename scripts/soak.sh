#!/usr/bin/env bash
# Soak (bounded, not part of CI): Redis and three release instances under
# steady traffic with random SIGKILL / SIGTERM of instances and empty Redis
# restarts, invariants checked as it runs (see scripts/soak.py).
#
#   scripts/soak.sh               five minutes
#   SOAK_SECONDS=600 scripts/soak.sh
#
# Installs what it lacks like the test suite (scripts/test-deps.sh:
# redis, and `websockets` in the project's .venv). Exit 0: no invariant
# broken.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/test-deps.sh
if [[ -z ${SWITCHYARD_BIN:-} ]]; then
  cargo build --release --quiet
  export SWITCHYARD_BIN=${CARGO_TARGET_DIR:-target}/release/switchyard
fi
exec python3 scripts/soak.py
