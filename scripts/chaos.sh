#!/usr/bin/env bash
# Chaos (bounded, not part of CI): the soak of scripts/soak.py with Redis
# keeping an append-only file (appendfsync everysec, as docker-compose and
# the chart run it): under steady traffic, instances are SIGKILLed or
# SIGTERMed and restarted and Redis is SIGKILLed and restarted from its
# file, and the invariants are checked as it runs — sessions lose nothing
# silently, every approval has exactly one winner, and every acknowledged
# decision reads back unchanged after each Redis crash (docs/durability.md).
#
#   scripts/chaos.sh                five minutes
#   SOAK_SECONDS=600 scripts/chaos.sh   (at most ten)
#
# Exit 0: no invariant broken; the summary prints the counts.
set -euo pipefail
cd "$(dirname "$0")/.."
export SOAK_REDIS=aof
exec bash scripts/soak.sh
