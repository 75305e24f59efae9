#!/usr/bin/env bash
# weir's benchmark: builds weir and the bench tools, starts fake upstreams and weir, runs every
# scenario direct and through weir (and LiteLLM with --peer litellm), and writes
# bench/results/<timestamp>.md and .json. See bench/README.md.
#
#   ./bench/run.sh                      # full run (about 10 minutes on 2 cores)
#   ./bench/run.sh --quick              # short runs, c=1 and 64 only (about 4 minutes)
#   ./bench/run.sh --peer litellm       # also LiteLLM's proxy, installed in bench/.venv-litellm
#   ./bench/run.sh --scenarios bare,full,stream --levels 1,64 --duration 5
#   ./bench/run.sh --soak 600           # adds a 10-minute soak sampling RSS every 10 s
#   ./bench/run.sh --help               # every option
#
# Environment: CARGO_TARGET_DIR (default: the repo's target/), BENCH_NO_BUILD=1 to skip the
# build, BENCH_NO_INSTALL=1 to install nothing (wrk, redis-server, LiteLLM).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
VENV="$ROOT/bench/.venv-litellm"
ARGS=("$@")
PEER=""
for ((i = 0; i < ${#ARGS[@]}; i++)); do
  case "${ARGS[$i]}" in
    --peer) PEER="${ARGS[$((i + 1))]:-}" ;;
    --peer=*) PEER="${ARGS[$i]#--peer=}" ;;
    -h|--help) exec python3 bench/harness/bench.py --bin-dir "$TARGET/release" --help ;;
  esac
done

say() { printf '==> %s\n' "$*" >&2; }

# Install a Debian package when we may (root, or sudo without a password).
apt_install() {
  [ "${BENCH_NO_INSTALL:-0}" = 1 ] && return 1
  local run=()
  if [ "$(id -u)" = 0 ]; then run=(); elif sudo -n true 2>/dev/null; then run=(sudo -n); else return 1; fi
  say "installing $* (apt-get)"
  "${run[@]}" apt-get install -y -qq "$@" >/dev/null 2>&1 ||
    { "${run[@]}" apt-get update -qq >/dev/null 2>&1 && "${run[@]}" apt-get install -y -qq "$@" >/dev/null 2>&1; }
}

if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
  say "building weir and weir-bench (release, target dir $TARGET)"
  cargo build --release -q -p weir-cli -p weir-bench
fi
for b in weir fake-upstream weir-load; do
  [ -x "$TARGET/release/$b" ] || { echo "missing $TARGET/release/$b: build first" >&2; exit 1; }
done

# The cross-check load tool: oha if present, else wrk from Debian.
if ! command -v oha >/dev/null && ! command -v wrk >/dev/null; then
  apt_install wrk || say "wrk not installed: the cross-check is skipped"
fi
# Redis for the Redis cache-hit scenario.
if ! command -v redis-server >/dev/null; then
  apt_install redis-server || say "redis-server not installed: cache-redis is skipped"
fi

if [ "$PEER" = litellm ] && [ ! -x "$VENV/bin/litellm" ]; then
  if [ "${BENCH_NO_INSTALL:-0}" = 1 ]; then
    say "LiteLLM is not installed in $VENV and BENCH_NO_INSTALL=1"
  else
    say "installing LiteLLM's proxy from PyPI into $VENV"
    python3 -m venv "$VENV" && "$VENV/bin/pip" install -q --upgrade pip &&
      "$VENV/bin/pip" install -q 'litellm[proxy]' ||
      say "installing LiteLLM failed: the peer columns will be missing"
  fi
fi

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 bench/harness/bench.py --bin-dir "$TARGET/release" "${ARGS[@]}"
