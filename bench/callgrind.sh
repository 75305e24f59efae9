#!/usr/bin/env bash
# Instructions per proxied request through weir, counted by valgrind's callgrind: a steadier
# measure than wall-clock CPU time on a shared 2-core machine.
#
#   bench/callgrind.sh [--weir PATH] [--tools DIR] [--requests N] [--keep DIR] [bare|full ...]
#
# Defaults: weir = target/release/weir, tools (fake-upstream, weir-load) = target/release
# (target/ is $CARGO_TARGET_DIR when set), N = 2000, configs bare and full (also: ledger, keyed,
# long, messages). The configs, request bodies and headers are the bench harness's own
# (bench/harness), so the figures describe the same requests as the bench's c=1 rows (for
# keyed, the key the requests present is created through weir's admin API once it is up, as
# the bench does). --keep DIR keeps the callgrind dumps (for callgrind_annotate). Prints one
# line per config; writes nothing into the repo.
#
# Method: weir runs under callgrind, warms up, then its counters are zeroed, a closed loop at
# concurrency 1 sends about N requests, and the counters are dumped. The figure is the dump's
# total over every thread divided by the exact count the load tool completed. Zero and dump
# bracket the load inside one process, so start-up, translation and the warm-up stay out.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
weir="$TARGET/release/weir" tools="$TARGET/release" requests=2000 keep="" configs=()

die() { echo "callgrind.sh: $*" >&2; exit 1; }
while (($#)); do
  case "$1" in
    --weir) weir="${2:?--weir needs a path}"; shift 2 ;;
    --tools) tools="${2:?--tools needs a directory}"; shift 2 ;;
    --requests) requests="${2:?--requests needs a number}"; shift 2 ;;
    --keep) keep="${2:?--keep needs a directory}"; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) configs+=("$1"); shift ;;
  esac
done
((${#configs[@]})) || configs=(bare full)
[[ "$requests" =~ ^[1-9][0-9]*$ ]] || die "--requests must be a positive integer"
for t in valgrind callgrind_control curl python3; do
  command -v "$t" >/dev/null || die "$t not found on PATH"
done
[ -x "$weir" ] || die "no weir binary at $weir (cargo build --release -p weir-cli)"
for b in fake-upstream weir-load; do
  [ -x "$tools/$b" ] || die "no $b in $tools (cargo build --release -p weir-bench)"
done

tmp="$(mktemp -d "${TMPDIR:-/tmp}/weir-callgrind.XXXXXX")"
pids=()
# SIGTERM lets weir shut down (valgrind then writes its final file); SIGKILL if it hangs.
stop() {
  local p i
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || continue
    for ((i = 0; i < 100; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  pids=()
}
# On a failure the logs and configs the messages name are kept.
cleanup() {
  local rc=$?
  stop
  if ((rc == 0 || rc == 130)); then rm -rf "$tmp"; else echo "callgrind.sh: files kept in $tmp" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Fields of weir-load's JSON report; the fake upstream's count of the calls it answered.
field() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(*(r.get(k,0) for k in sys.argv[2:]))' "$@"; }
served() {
  curl -fsS "http://127.0.0.1:$1/__bench/stats" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["served"])' ||
    die "cannot read the fake upstream's stats on port $1"
}

measure() {
  local name="$1" dir="$tmp/$1" up upid wport wpid body kind path i total errors dur rate s0 s1 ir
  mkdir -p "$dir"

  # Port 0: the fake upstream picks a free port and prints it, so there is no race.
  : >"$dir/upstream.log"
  "$tools/fake-upstream" --listen 127.0.0.1:0 >>"$dir/upstream.log" 2>&1 &
  upid=$!; pids+=("$upid")
  for ((i = 0; i < 100; i++)); do
    up="$(sed -n 's|^listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$dir/upstream.log")"
    [ -n "$up" ] && break
    kill -0 "$upid" 2>/dev/null || die "fake-upstream exited: $(cat "$dir/upstream.log")"
    sleep 0.05
  done
  [ -n "$up" ] || die "fake-upstream did not start"

  # The harness writes the config and gives the scenario's path, body and instance. weir's
  # port is found by binding port 0 and releasing it: weir needs it in its config. The
  # paced and hold providers of the full config get no traffic here, so they share the
  # instant upstream.
  wport="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  { read -r path; read -r body; read -r kind; } < <(python3 - "$ROOT/bench/harness" "$name" "$wport" "$up" "$dir" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import configs, scenarios
name, wport, up, d = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
s = next((s for s in scenarios.all_scenarios([1], [1], 1000)
          if s.name == name and s.mode == "closed" and not s.prime), None)
if s is None:
    sys.exit(f"callgrind.sh: unknown config {name!r} (bare, full; also ledger, keyed, long, messages)")
with open(f"{d}/weir.yaml", "w") as f:
    f.write(configs.weir_config(s.instance, wport, dict.fromkeys(("instant", "paced", "hold"), up), d))
print(s.path)
print(s.body(s.weir_model))
print(s.instance)
EOF
  ) || die "cannot write the $name config"

  # As the bench does: quiet logs, no persistent cache tier, no key store in the data dir
  # (only the keyed config names one), no provider keys from the caller's environment.
  local unset=()
  for v in $(compgen -e); do
    [[ "$v" == WEIR_* || "$v" == LLM_* || "$v" == *_API_KEY ]] && unset+=(-u "$v")
  done
  env "${unset[@]}" WEIR_LOG=warn WEIR_CACHE_DIR=off WEIR_DATA_DIR=off \
    valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
    "$weir" --config "$dir/weir.yaml" serve >"$dir/weir.log" 2>&1 &
  wpid=$!; pids+=("$wpid")
  for ((i = 0; ; i++)); do
    curl -fs -o /dev/null "http://127.0.0.1:$wport/ready" && break
    kill -0 "$wpid" 2>/dev/null || die "weir exited under valgrind: $(tail -n 20 "$dir/weir.log")"
    ((i < 1200)) || die "weir not ready after 120 s ($dir/weir.log)"
    sleep 0.1
  done

  # The request headers, one a line; for keyed this creates the stored key they present.
  local headers=() h lines
  lines="$(python3 - "$ROOT/bench/harness" "$kind" "$wport" <<'EOF'
import sys
sys.path.insert(0, sys.argv[1])
import configs, procs
kind, port = sys.argv[2], int(sys.argv[3])
key = procs.create_key(port, configs.STORED_KEY_SPEC) if configs.needs_stored_key(kind) else None
print("\n".join(configs.request_headers(kind, key)))
EOF
  )" || die "cannot prepare the $name request headers"
  [ -n "$lines" ] && mapfile -t headers <<<"$lines"
  local load=("$tools/weir-load" --url "http://127.0.0.1:$wport$path" --mode closed
              --concurrency 1 --warmup 0 --body "$body")
  for h in "${headers[@]}"; do [ -n "$h" ] && load+=(--header "$h"); done

  # Warm-up: valgrind translates code on first use and weir fills its pools and caches; it
  # also gives the rate under callgrind, which sizes the measured run to about N requests
  # (the load tool runs for a duration, not a count).
  "${load[@]}" --duration 3 >"$dir/warmup.json" || die "weir-load failed in the warm-up"
  read -r total errors < <(field "$dir/warmup.json" requests_total errors) || die "bad report $dir/warmup.json"
  ((total > 0 && errors == 0)) || die "$name warm-up: $total requests, $errors errors ($dir/warmup.json)"
  rate="$(python3 -c "print($total / 3)")"
  dur="$(python3 -c "print(max(1.0, round($requests / $rate, 2)))")"

  s0="$(served "$up")"
  callgrind_control -z "$wpid" >"$dir/zero.log" 2>&1 && grep -q OK "$dir/zero.log" ||
    die "callgrind_control cannot zero pid $wpid (ptrace allowed?): $(cat "$dir/zero.log")"
  "${load[@]}" --duration "$dur" >"$dir/load.json" || die "weir-load failed"
  callgrind_control -d "$wpid" >"$dir/dump.log" 2>&1 && grep -q OK "$dir/dump.log" ||
    die "callgrind_control cannot dump pid $wpid: $(cat "$dir/dump.log")"
  s1="$(served "$up")"

  # Every request answered 200 and reached the upstream once: a real proxied call (for full,
  # a cache miss with no retry).
  read -r total errors < <(field "$dir/load.json" requests_total errors) || die "bad report $dir/load.json"
  ((errors == 0 && total > 0)) || die "$name: $errors errors in $total requests ($dir/load.json)"
  ((s1 - s0 == total)) || die "$name: the upstream served $((s1 - s0)) calls for $total requests"

  # One file for every thread (no --separate-threads). `summary:` is what callgrind_annotate
  # prints as the program total.
  ir="$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$dir/callgrind.out.1")"
  [ -n "$ir" ] || die "no summary line in $dir/callgrind.out.1"
  echo "$name: $(python3 -c "print(round($ir / $total))") instructions per request"
  echo "$name: $ir instructions over $total requests" >&2

  stop
  if [ -n "$keep" ]; then mkdir -p "$keep" && cp "$dir/callgrind.out.1" "$keep/callgrind.$name.out"; fi
}

for c in "${configs[@]}"; do measure "$c"; done
