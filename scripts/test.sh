#!/usr/bin/env bash
# weir's test command: ./scripts/test.sh
#
# Idempotent. Installs what the tests need when it is missing, then runs, against ONE debug
# build shared by every stage:
#   1. cargo build --workspace --all-targets --locked, and a check that the library builds
#      without its default features (cargo check -p weir --no-default-features)
#   2. cargo test --workspace --locked            (unit, integration and doc tests; the Redis and
#      Postgres tests start their own throwaway servers on free loopback ports)
#   3. the Python SDK suite (tests/sdk/python, official openai + anthropic SDKs, pytest)
#   4. the Node SDK suite   (tests/sdk/node, official openai SDK, node --test)
# The SDK suites start `target/debug/weir serve` themselves on free loopback ports.
#
# Environment:
#   WEIR_TEST_STAGES  stages to run, space-separated (default: "build rust python node")
#   WEIR_TEST_VENV    the Python venv (default: .venv-test at the repo root)
#   PYTEST_ARGS       extra arguments for pytest (e.g. "-k anthropic -x")
#   WEIR_BIN          the gateway binary the SDK suites run (default: target/debug/weir)
#   WEIR_POSTGRES_BIN_DIR  where initdb and postgres are (default: initdb's directory on PATH,
#                     else the newest /usr/lib/postgresql/*/bin)
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

STAGES="${WEIR_TEST_STAGES:-build rust python node}"

# Debian packages any stage needs (cargo tests included), installed with apt-get when missing.
# Each entry is PACKAGE, or COMMAND:PACKAGE to install PACKAGE only when COMMAND is not on PATH
# (and to check afterwards that it is). redis-server: the Redis tests start their own servers;
# the rust stage sets WEIR_REQUIRE_REDIS=1 so they fail, never skip, when it is missing.
# postgresql: the store tests run initdb and postgres into temporary directories (as the
# package's `postgres` user when run as root); Debian keeps those binaries off PATH, in
# /usr/lib/postgresql/NN/bin, so the entry names the package alone and the tests find them.
# The rust stage sets WEIR_REQUIRE_POSTGRES=1 likewise.
# The dashboard's browser test (tests/sdk/python/test_dashboard.py) drives Debian's chromium;
# the python stage sets WEIR_REQUIRE_CHROMIUM=1 so it fails, never skips, when it is missing.
SYSTEM_PACKAGES=(redis-server:redis-server postgresql chromium:chromium)
VENV="${WEIR_TEST_VENV:-$ROOT/.venv-test}"
PY_REQS="$ROOT/tests/sdk/python/requirements.txt"
NODE_DIR="$ROOT/tests/sdk/node"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-auto}"

# ---------------------------------------------------------------------------------------------
# output helpers
# ---------------------------------------------------------------------------------------------

T_START=$SECONDS
SUMMARY=()
CURRENT_STAGE=""
STAGE_START=0

# Colour only on a terminal: a CI log or a file gets plain text.
if [[ -t 1 ]]; then BOLD=$'\033[1m' RED=$'\033[1;31m' RESET=$'\033[0m'; else BOLD='' RED='' RESET=''; fi
banner() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$RESET"; }
note() { printf '    %s\n' "$*"; }
die() {
  printf '\n%sFAILED%s: %s\n' "$RED" "$RESET" "$*" >&2
  exit 1
}

stage_begin() {
  CURRENT_STAGE="$1"
  STAGE_START=$SECONDS
  banner "[$1] $2"
}

stage_end() {
  local took=$((SECONDS - STAGE_START))
  SUMMARY+=("$(printf '%-8s %4ss' "$CURRENT_STAGE" "$took")")
  note "[$CURRENT_STAGE] ok in ${took}s"
  CURRENT_STAGE=""
}

on_exit() {
  local code=$?
  if [[ $code -ne 0 && -n "$CURRENT_STAGE" ]]; then
    printf '\n%sFAILED%s in stage [%s] after %ss (exit %s)\n' "$RED" "$RESET" \
      "$CURRENT_STAGE" "$((SECONDS - STAGE_START))" "$code" >&2
  fi
  if [[ ${#SUMMARY[@]} -gt 0 ]]; then
    printf '\nstage timings:\n' >&2
    printf '  %s\n' "${SUMMARY[@]}" >&2
    printf '  %-8s %4ss\n' total "$((SECONDS - T_START))" >&2
  fi
}
trap on_exit EXIT

want() { [[ " $STAGES " == *" $1 "* ]]; }

have() { command -v "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------------------------
# installers (each one a no-op when its thing is already there)
# ---------------------------------------------------------------------------------------------

APT_UPDATED=0

# ensure_system_packages PKG...: install Debian packages that are not installed yet, with
# apt-get (as root, or through sudo). Used for tools the tests need (redis-server, postgresql).
ensure_system_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$pkg")
    fi
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  have apt-get || die "system packages missing (${missing[*]}) and apt-get is not available: install them by hand"
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    have sudo || die "system packages missing (${missing[*]}): run as root or install them by hand"
    sudo=(sudo)
  fi
  note "installing system packages: ${missing[*]}"
  if [[ $APT_UPDATED -eq 0 ]]; then
    "${sudo[@]}" apt-get update -qq || die "apt-get update failed"
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    || die "apt-get install ${missing[*]} failed"
}

# ensure_system_tools ENTRY...: ENTRY is PACKAGE or COMMAND:PACKAGE (see SYSTEM_PACKAGES).
ensure_system_tools() {
  local entry pkgs=() cmds=()
  for entry in "$@"; do
    if [[ $entry == *:* ]]; then
      have "${entry%%:*}" && continue
      cmds+=("${entry%%:*}")
      pkgs+=("${entry#*:}")
    else
      pkgs+=("$entry")
    fi
  done
  [[ ${#pkgs[@]} -eq 0 ]] && return 0
  ensure_system_packages "${pkgs[@]}"
  for entry in "${cmds[@]}"; do
    have "$entry" || die "$entry is still not on PATH after installing its package (PATH=$PATH)"
  done
}

PY_ENV_READY=0
ensure_python_env() {
  [[ $PY_ENV_READY -eq 1 ]] && return 0
  have python3 || die "python3 not found: the SDK tests need Python 3.11+"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
    || die "python3 is $(python3 -V 2>&1); the SDK tests need Python 3.9+ (3.11 recommended)"
  local stamp="$VENV/.requirements.sha256" want_hash
  want_hash="$(sha256sum "$PY_REQS" | cut -d' ' -f1)"
  if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want_hash" ]] \
    && "$VENV/bin/python" -c 'import importlib.util as u, sys
sys.exit(not all(u.find_spec(m) for m in ("openai", "anthropic", "pytest", "httpx", "prometheus_client")))' 2>/dev/null; then
    note "python venv up to date ($VENV)"
    PY_ENV_READY=1
    return 0
  fi
  if [[ ! -x "$VENV/bin/python" ]]; then
    note "creating python venv at $VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
      # Debian's python3 lacks ensurepip until python3-venv is installed.
      rm -rf "$VENV"
      ensure_system_packages python3-venv
      python3 -m venv "$VENV" || die "cannot create a venv at $VENV"
    fi
  fi
  note "installing pinned SDK test dependencies from ${PY_REQS#"$ROOT"/}"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$PY_REQS" \
    || die "pip install -r $PY_REQS failed"
  echo "$want_hash" >"$stamp"
  PY_ENV_READY=1
}

ensure_node_env() {
  have node || die "node not found: the Node SDK tests need Node.js 20+ and npm"
  have npm || die "npm not found: the Node SDK tests need npm"
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  [[ "$major" -ge 20 ]] || die "node is $(node --version); the Node SDK tests need Node.js 20+"
  local stamp="$NODE_DIR/node_modules/.weir-lock.sha256" want_hash
  want_hash="$(sha256sum "$NODE_DIR/package-lock.json" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want_hash" && -d "$NODE_DIR/node_modules/openai" ]]; then
    note "node_modules up to date (${NODE_DIR#"$ROOT"/})"
    return 0
  fi
  note "npm ci in ${NODE_DIR#"$ROOT"/}"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in $NODE_DIR failed"
  echo "$want_hash" >"$stamp"
}

# ---------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------

have cargo || die "cargo not found: install the Rust toolchain (rust-version in Cargo.toml)"

stage_begin setup "test dependencies"
if [[ ${#SYSTEM_PACKAGES[@]} -gt 0 ]]; then
  ensure_system_tools "${SYSTEM_PACKAGES[@]}"
fi
if want python || want node; then
  ensure_python_env # the Node runner uses tests/sdk/harness.py too
fi
if want node; then
  ensure_node_env
fi
stage_end

if want build; then
  stage_begin build "cargo build --workspace --all-targets --locked; weir without default features"
  cargo build --workspace --all-targets --locked || die "cargo build failed"
  # The optional backends (redis, sqlite, tokenizer) must stay optional.
  cargo check -p weir --no-default-features --locked || die "weir without default features does not build"
  stage_end
fi

if want rust; then
  stage_begin rust "cargo test --workspace --locked"
  # Tests needing redis-server or Postgres fail instead of skipping when it is absent.
  export WEIR_REQUIRE_REDIS=1
  export WEIR_REQUIRE_POSTGRES=1
  cargo test --workspace --locked || die "cargo test failed"
  # The library's middleware example asserts what it shows; it runs offline on the mock.
  cargo run --locked -q -p weir --example middleware || die "the middleware example failed"
  stage_end
fi

WEIR_BIN="${WEIR_BIN:-$ROOT/target/debug/weir}"
export WEIR_BIN
if want python || want node; then
  [[ -x "$WEIR_BIN" ]] || die "gateway binary $WEIR_BIN not found: run the build stage (cargo build -p weir-cli)"
fi

if want python; then
  stage_begin python "Python SDK suite (pytest tests/sdk/python)"
  # The dashboard's browser test fails instead of skipping when chromium is absent.
  export WEIR_REQUIRE_CHROMIUM=1
  # shellcheck disable=SC2086 # PYTEST_ARGS is word-split on purpose
  (cd "$ROOT/tests/sdk/python" && "$VENV/bin/python" -m pytest -q -p no:cacheprovider ${PYTEST_ARGS:-}) \
    || die "Python SDK tests failed (the gateway log is printed above the pytest summary)"
  stage_end
fi

if want node; then
  stage_begin node "Node SDK suite (node --test tests/sdk/node)"
  (cd "$NODE_DIR" && "$VENV/bin/python" "$ROOT/tests/sdk/harness.py" with-gateway -- node --test test/*.test.mjs) \
    || die "Node SDK tests failed"
  stage_end
fi

banner "all stages passed: $STAGES"
