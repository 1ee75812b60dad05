#!/usr/bin/env bash
# The commands README.md and docs/agents.md give a new user, run as
# written, with what they show checked (scripts/check_docs.py): the run
# command and its development token file, the first-session transcript,
# the command-line calls, and the echo agent example. Needs port 18789 (the
# documented one) free; builds the release binaries first, as the
# documented `cargo run --release` does.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/test-deps.sh
# What the documented `cargo run --release` and `cargo run --release
# --example …` build: two builds, since an example also brings in the
# dev-dependencies (which can change dependency features).
cargo build --release
cargo build --release --examples
exec python3 scripts/check_docs.py
