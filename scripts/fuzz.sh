#!/usr/bin/env bash
# Property-based fuzzing of the parsers and checks that read untrusted
# input (tests/fuzz.rs and the envelope parsers' properties in
# src/backend/redis/pubsub.rs), each target for a bounded time.
#
#   scripts/fuzz.sh            about 10 minutes in all
#   FUZZ_SECONDS=30 scripts/fuzz.sh
#
# Each target runs batches of cases (new random seeds every batch) until its
# share of the time is used; any failure stops the run with proptest's
# minimised input, which belongs in `past_failures` in tests/fuzz.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
total=${FUZZ_SECONDS:-600}
targets=(
  frame_parser_survives_any_text
  frame_parser_survives_rpc_shaped_frames
  credential_extraction_survives_any_headers
  random_credentials_never_authenticate
  jwt_shaped_garbage_never_authenticates
  in_band_credentials_survive_any_params
  merge_patch_is_idempotent
  config_from_any_environment_is_loaded_or_refused
)
cargo test --test fuzz --no-run --quiet
cargo test --lib pubsub --no-run --quiet
share=$(( total / (${#targets[@]} + 1) ))
run_for() {
  local seconds=$1 batches=0 cases=0
  shift
  local end=$(( $(date +%s) + seconds ))
  while (( $(date +%s) < end )); do
    PROPTEST_CASES=2000 "$@" >/dev/null 2>&1 || { echo "FAILED: $*"; "$@"; exit 1; }
    batches=$(( batches + 1 ))
    cases=$(( cases + 2000 ))
  done
  echo "  $cases cases in $batches batches, 0 failures"
}
for target in "${targets[@]}"; do
  echo "== $target (${share}s)"
  run_for "$share" cargo test --quiet --test fuzz "$target" -- --exact
done
echo "== redis envelope parsers (${share}s)"
run_for "$share" cargo test --quiet --lib envelope_parsers_survive_any_payload
echo "fuzzing done: 0 panics"
