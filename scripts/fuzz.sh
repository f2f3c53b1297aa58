#!/usr/bin/env bash
# Fuzzes the event parser, the webhook router and the Lambda entry points with cargo-fuzz
# (libFuzzer) for a bounded time each, then prints one line per target: seconds, total execs,
# exec/s, corpus size and crashes. Exits non-zero if any target crashed.
#
#   FUZZ_SECONDS=60                          seconds per target (libFuzzer -max_total_time)
#   FUZZ_TARGETS="parse_event webhook lambda_event"
#   FUZZ_SANITIZER=none                      or address (built with RUSTC_BOOTSTRAP=1 on stable)
#   FUZZ_ARGS=                               extra libFuzzer flags, e.g. "-max_len=8192"
#
# The seed corpora come from tests/fixtures/events/ and live in fuzz/corpus/<target>/ (not
# checked in; they grow from run to run). Crashing inputs land in fuzz/artifacts/<target>/;
# replay one with `cargo fuzz run <target> fuzz/artifacts/<target>/<file>`.
# CARGO may name a toolchain ("cargo +nightly"), so it is split into words on purpose.
# shellcheck disable=SC2086
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO=${CARGO:-cargo}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_TARGETS=${FUZZ_TARGETS:-parse_event webhook lambda_event}
FUZZ_SANITIZER=${FUZZ_SANITIZER:-none}
FUZZ_ARGS=${FUZZ_ARGS:-}
FIXTURES=tests/fixtures/events
LOGS=fuzz/logs

# An exact version, installed over any other (`cargo fuzz --version` prints "cargo-fuzz 0.13.2").
cargo_fuzz_version=0.13.2
if [[ "$($CARGO fuzz --version 2>/dev/null)" != *" $cargo_fuzz_version" ]]; then
  echo "fuzz: installing cargo-fuzz $cargo_fuzz_version" >&2
  $CARGO install cargo-fuzz --version "$cargo_fuzz_version" --locked --force
fi

# Without a sanitizer (the default: the crate is safe Rust, and a panic is what we look for) the
# instrumentation needs only stable rustc flags. A sanitizer needs -Zsanitizer, which the stable
# compiler accepts with RUSTC_BOOTSTRAP=1 (its runtimes ship with stable too); a nightly is used
# only if asked for, e.g. CARGO="cargo +nightly". 16 codegen units: the AWS SDK crates take
# minutes at 1, and the fuzzing speed barely changes.
if [ "$FUZZ_SANITIZER" != none ]; then
  export RUSTC_BOOTSTRAP=1
fi
build_flags=(--sanitizer "$FUZZ_SANITIZER" --codegen-units 16)

seed() {
  local dir=fuzz/corpus/$1
  mkdir -p "$dir"
  case $1 in
    parse_event)
      for f in "$FIXTURES"/*.json; do cp "$f" "$dir/seed-$(basename "$f")"; done
      printf 'not json' >"$dir/seed-not-json"
      printf '{"eventType":7}' >"$dir/seed-no-event-type"
      ;;
    webhook)
      # Byte 0 = 0: an empty control block (POST to the right secret, JSON, one request).
      # Then a second request with the same body (a retry), or with one more field (a variant
      # under the same key): byte 0 = 77, the control block is zeros but for `more_count` = 1
      # (offset 38) and the second request's body choice (offsets 73-76: 0 = Again, 0x40000040
      # = Variant; `arbitrary` reads enum tags as little-endian u32).
      for f in "$FIXTURES"/*.json; do
        local name
        name=$(basename "$f")
        { printf '\0'; cat "$f"; } >"$dir/seed-$name"
        { printf '\115'; head -c 38 /dev/zero; printf '\001'; head -c 38 /dev/zero; cat "$f"; } \
          >"$dir/seed-retry-$name"
        { printf '\115'; head -c 38 /dev/zero; printf '\001'; head -c 34 /dev/zero
          printf '\100\000\000\100'; cat "$f"; } >"$dir/seed-variant-$name"
      done
      ;;
    lambda_event)
      for f in "$FIXTURES"/*.json; do
        local name
        name=$(basename "$f" .json)
        # Mode 1: wrapped in an HTTP API event (flags 0) or a base64 Function URL event (flags 3).
        { printf '\001\000'; cat "$f"; } >"$dir/seed-http-$name"
        { printf '\001\003'; cat "$f"; } >"$dir/seed-url64-$name"
        # Mode 2: wrapped in the queued-event JSON the receiver sends to SQS.
        { printf '\002'; cat "$f"; } >"$dir/seed-sqs-$name"
      done
      # Mode 0: a raw payload-2.0 event; mode 3: a raw SQS record body; mode 4: an SQS event.
      local body
      body=$(base64 <"$FIXTURES/07-sentMessageDELIVERED.json" | tr -d '\n')
      printf '\000{"version":"2.0","routeKey":"$default","rawPath":"/webhook/fuzz-secret-0123456789abcdef0123456789","rawQueryString":"","headers":{"content-type":"application/json","host":"x.lambda-url.us-east-1.on.aws"},"requestContext":{"accountId":"1","apiId":"x","domainName":"x.lambda-url.us-east-1.on.aws","domainPrefix":"x","http":{"method":"POST","path":"/webhook/fuzz-secret-0123456789abcdef0123456789","protocol":"HTTP/1.1","sourceIp":"203.0.113.7","userAgent":"Wati"},"requestId":"r","routeKey":"$default","stage":"$default","time":"26/Nov/2026:10:00:00 +0000","timeEpoch":1795600000000},"body":"%s","isBase64Encoded":true}' \
        "$body" >"$dir/seed-raw-http"
      printf '\003{"key":"k","received_at":1764238453,"body":"{\\"eventType\\":\\"sentMessageREAD\\",\\"id\\":\\"a1\\"}"}' \
        >"$dir/seed-record"
      printf '\004{"Records":[{"messageId":"m1","body":"not ours"},{"messageId":"m2","body":"{\\"key\\":\\"k\\",\\"received_at\\":1764238453,\\"body\\":\\"{\\\\\\"eventType\\\\\\":\\\\\\"message\\\\\\",\\\\\\"id\\\\\\":\\\\\\"1\\\\\\"}\\"}"}]}' \
        >"$dir/seed-sqs-event"
      ;;
  esac
}

# The last value of `key` in libFuzzer's output (`stat::key: value` or `key: value` on a status
# line), or "?" when the run ended before printing it.
fuzz_stat() {
  local value
  value=$(grep -oE "$2:? *[0-9]+" "$1" | tail -n1 | grep -oE '[0-9]+$' || true)
  echo "${value:-?}"
}

echo "fuzz: building ${FUZZ_TARGETS// /, } (sanitizer: $FUZZ_SANITIZER)" >&2
$CARGO fuzz build "${build_flags[@]}" >&2

mkdir -p "$LOGS"
summary=()
failed=0
for target in $FUZZ_TARGETS; do
  seed "$target"
  mkdir -p "fuzz/artifacts/$target"
  marker=$(mktemp)
  log=$LOGS/$target.log
  echo "fuzz: $target for ${FUZZ_SECONDS}s (log: $log)" >&2
  rc=0
  # FUZZ_ARGS is a list of flags, split into words too.
  $CARGO fuzz run "${build_flags[@]}" "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    $FUZZ_ARGS >"$log" 2>&1 || rc=$?
  execs=$(fuzz_stat "$log" 'stat::number_of_executed_units')
  [ "$execs" = "?" ] && execs=$(grep -oE 'Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' | tail -n1 || true)
  rate=$(fuzz_stat "$log" 'stat::average_exec_per_sec')
  [ "$rate" = "?" ] && rate=$(fuzz_stat "$log" 'exec/s')
  seconds=$(grep -oE 'runs in [0-9]+ second' "$log" | grep -oE '[0-9]+' | tail -n1 || true)
  # libFuzzer's corpus (inputs that add coverage), and the files kept on disk across runs.
  units=$(grep -oE 'DONE .* corp: [0-9]+' "$log" | grep -oE '[0-9]+$' | tail -n1 || true)
  files=$(find "fuzz/corpus/$target" -type f | wc -l)
  corpus="${units:-?} (${files} files)"
  crashes=$(find "fuzz/artifacts/$target" -type f -newer "$marker" | wc -l)
  rm -f "$marker"
  # Panics inside lambda_http on events only the Lambda service writes: skipped, listed here.
  deps=$(grep -c 'dependency panic' "$log" || true)
  grep 'dependency panic' "$log" | sed "s/^/fuzz: /" >&2 || true
  grep -E 'DONE|Done [0-9]+ runs' "$log" | tail -n2 | sed "s/^/fuzz: $target: /" >&2 || true
  if grep -q 'failed to build fuzz script' "$log"; then
    # `cargo fuzz run` rebuilds when the sources changed since the build above.
    crashes="build failed"
    failed=1
    echo "fuzz: $target did not build; the end of $log:" >&2
    tail -n 40 "$log" >&2
  elif [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    failed=1
    echo "fuzz: $target FAILED (exit $rc); the end of $log:" >&2
    tail -n 40 "$log" >&2
  fi
  summary+=("$(printf '%-13s %5ss  %12s execs  %8s exec/s  corpus %s  crashes %s  dependency panics %s' \
    "$target" "${seconds:-$FUZZ_SECONDS}" "${execs:-?}" "$rate" "$corpus" "$crashes" "$deps")")
done

echo
printf '%s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
  echo "fuzz: a target crashed or did not build; crashing inputs are in fuzz/artifacts/<target>/" >&2
  exit 1
fi
