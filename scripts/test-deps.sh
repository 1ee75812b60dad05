#!/usr/bin/env bash
# What the test suite needs, installed when missing (sourced by
# scripts/test.sh and scripts/soak.sh; also runs on its own):
#   - programs the tests start or call: redis-server and redis-cli (their
#     own Redis on free ports), curl and openssl (TLS tests), kill and
#     pgrep (process tests, the silent-test watchdog of scripts/test.sh) —
#     from Debian's packages, as root or through `sudo -n`;
#   - a project-local Python virtualenv, `.venv`, with the official clients
#     the tests drive (scripts/requirements-test.txt); its `bin` is put
#     first on PATH, so `python3` in the tests is the virtualenv's;
#   - the Node packages of the test folders that have a package-lock.json
#     (`npm ci`: the official MCP TypeScript SDK in tests/mcp, Playwright
#     in ui), when node and npm are on the machine (Node >= 20).
# Nothing is installed system-wide for Python, so Debian's
# externally-managed Python is left alone.
set -euo pipefail
deps_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

apt_install() {
  local runner=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      runner=(sudo -n)
    else
      echo "test-deps: missing $*; install them (apt-get install $*) or run as root" >&2
      return 1
    fi
  fi
  echo "test-deps: installing $* (apt)"
  "${runner[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${runner[@]}" apt-get install -y -qq "$@" >/dev/null
}

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
{ type -P kill && command -v pgrep; } >/dev/null 2>&1 || need_apt+=(procps)
# The control UI's browser tests drive Debian's Chromium (headless).
[ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
# The allocator (jemalloc) is built from its C sources by its -sys crate.
command -v make >/dev/null 2>&1 || need_apt+=(make)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt_install "${need_apt[@]}"
fi

venv="$deps_repo/.venv"
requirements="$deps_repo/scripts/requirements-test.txt"
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python3" ]; then
  if ! python3 -m venv "$venv" >/dev/null 2>&1; then
    # Debian keeps venv (ensurepip) in a package of its own.
    rm -rf "$venv"
    py=$(python3 -c 'import sys; print(f"python3.{sys.version_info.minor}")')
    apt_install python3-venv "$py-venv" || apt_install python3-venv
    python3 -m venv "$venv"
  fi
fi
if ! cmp -s "$requirements" "$stamp"; then
  echo "test-deps: installing $(tr '\n' ' ' <"$requirements")(pip, into .venv)"
  "$venv/bin/python3" -m pip install -q --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi
export PATH="$venv/bin:$PATH"

# Node packages, pinned by each folder's package-lock.json.
for dir in "$deps_repo/tests/mcp" "$deps_repo/ui"; do
  [ -f "$dir/package-lock.json" ] || continue
  if [ ! -d "$dir/node_modules" ] || ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.package-lock.stamp"; then
    if ! command -v npm >/dev/null 2>&1; then
      echo "test-deps: npm is missing (Node >= 20 is needed for $dir)" >&2
      return 1 2>/dev/null || exit 1
    fi
    echo "test-deps: npm ci in ${dir#"$deps_repo"/}"
    (cd "$dir" && npm ci --no-audit --no-fund --silent)
    cp "$dir/package-lock.json" "$dir/node_modules/.package-lock.stamp"
  fi
done
