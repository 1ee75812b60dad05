#!/usr/bin/env bash
# Soak (bounded, not part of CI): Redis and three release instances under
# steady traffic with random SIGKILL / SIGTERM of instances and empty Redis
# restarts, invariants checked as it runs (see scripts/soak.py).
#
#   scripts/soak.sh               five minutes
#   SOAK_SECONDS=600 scripts/soak.sh
#
# Needs redis-server, redis-cli and python3; installs the `websockets`
# package when it is missing. Exit 0: no invariant broken.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c 'import websockets' 2>/dev/null; then
  python3 -m pip install -q websockets
fi
if [[ -z ${SWITCHYARD_BIN:-} ]]; then
  cargo build --release --quiet
  export SWITCHYARD_BIN=${CARGO_TARGET_DIR:-target}/release/switchyard
fi
exec python3 scripts/soak.py
