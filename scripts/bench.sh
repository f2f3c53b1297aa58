#!/usr/bin/env bash
# `make bench`: every performance figure against its budget, written to docs/performance.md.
#   1. benches/in_process.rs (criterion): the in-process work per webhook and per processed event;
#   2. benches/load_local.rs: LOAD_RATE_RUNS (5) open loops at LOAD_RATE (default 5000/s) for
#      LOAD_RATE_SECONDS (10) each, then closed loops at concurrency 16 and 64 (LOAD_REQUESTS,
#      default 20000);
#   3. benches/load_local.rs with forwarding on (LOAD_FORWARD=1: every change POSTed to a
#      receiver in the bench): an open loop at LOAD_FORWARD_RATE (1000/s) for LOAD_RATE_SECONDS
#      measuring the change lag, then one open loop at LOAD_RATE for the accept budgets;
#   4. benches/broadcast.rs: a broadcast replayed on the local server (BROADCAST_CONTACTS,
#      default 50,000 contacts, at BROADCAST_RATE, default 2000/s): accept p99, apply lag p99,
#      time to drain;
#   5. on the emulators: benches/load_aws.rs (LOAD_AWS_REQUESTS, default 2000), the same with
#      the broadcast profile at BROADCAST_AWS_CONTACTS (150) contacts (processor events/s), the
#      DynamoDB calls per processor path (the contract test that asserts them writes
#      target/bench/processor_calls.json), the notifier's calls per change (its end-to-end test
#      writes target/bench/notifier_calls.json), then the cold start of the x86_64 receiver and
#      processor zips (scripts/measure-init.py), if built;
#   6. benches/contact_reads.rs under the emulators: a contact with 20,000 messages against one
#      with one, on SQLite and on DynamoDB Local (read p50/p99, ratio, items read per read);
#   7. scripts/performance-report.py writes docs/performance.md; the broadcast replay's and the
#      contact reads' tables (which it does not read) are appended to it here.
# Raw outputs go to target/bench/. A stage that fails is reported in the page, and the script
# then exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

# The broadcast replay's section of docs/performance.md: the method, and the tables both runs
# printed (scripts/performance-report.py does not read them).
broadcast_section() {
  echo
  cat <<'EOF'

## Broadcast replay

Method (`benches/broadcast.rs`, `benches/common/broadcast.rs`; `make broadcast`): one template
message to each of `BROADCAST_CONTACTS` contacts and the callbacks Wati would post for it, v1 and
v2 of each: sent (the only ones naming the contact), 95% delivered, 60% read, 10% a reply (the
contact's `message` and `sentMessageREPLIED`), with the field sets of `tests/fixtures/events/`;
the sends first, then deliveries, reads and replies interleaved as their times fall (seeded).
Offered to the local server (in the bench's process, as `load_local`) in an open loop at
`BROADCAST_RATE`, at most 1024 in flight; accept latency counts from each callback's scheduled
start. **Apply lag**: for every 100th callback whose fact is new (the first of its v1/v2 pair),
from its `200` to the first `GET /v1/messages/{id}` that shows the fact (`sent_at`,
`delivered_at`, `read_at`, `replied_at`, or the reply itself), read every max(2 ms, lag so far /
10): at most 10% (or 2 ms) high. **Drain**: from the last `200` to an empty queue. **Events
applied per second**: every callback, over the time from the first request to the empty queue.
On the emulators (`LOAD_PROFILE=broadcast` of `benches/load_aws.rs`): the same profile at
`BROADCAST_AWS_CONTACTS` contacts through the receiver's router (concurrency 16, in arrival
order), then 4 pollers draining the queue through `process_sqs_batch` in batches of 10 (as 4
concurrent Lambda batches): processor events/s includes SQS receive and delete.

EOF
  printf 'Local server (`%s/broadcast.txt`):\n\n' "$raw"
  grep '^|' "$raw/broadcast.txt" || echo "(no result)"
  printf '\nAWS receiver and processor on the emulators (`%s/load_aws_broadcast.txt`):\n\n' "$raw"
  grep '^|' "$raw/load_aws_broadcast.txt" || echo "(no result)"
}
# The contact reads' section of docs/performance.md: the method, and what the run printed.
contact_reads_section() {
  cat <<'EOF'

## Contact reads by history length

Method (`benches/contact_reads.rs`, `make contact-reads`; issue 18 §2: a contact with 20,000
messages reads within 2× of a contact with one, ≤ 100 items read per contact read): contact A has
`CONTACT_READS_MESSAGES` (20,000) messages over 400 days (50 a day; every fifth the customer's,
none in its last 10 days; the others template messages delivered a minute later), contact B one.
Applied through `processor::apply` newest message first (32 at a time on SQLite, 64 on DynamoDB
Local), then `StateStore::contact` read alternately for A and B after a warm-up (200 reads each on
SQLite, 50 on DynamoDB Local), each view checked. On DynamoDB Local: the template's `StateTable`,
`backfill_contact_index()` on it while empty (it writes the contact index's and the contact
summary's markers), and only as much of A's history (the newest) as
loads in `CONTACT_READS_AWS_LOAD_SECONDS` (120); items read counted on the wire (`Items`, `Item`,
`Responses`), the most for one read.

EOF
  printf 'Run (`%s/contact_reads.txt`):\n\n' "$raw"
  grep -E '^\||budget ≤ 2|^RESULT' "$raw/contact_reads.txt" || echo "(no result)"
}
CARGO="${CARGO:-cargo}"
raw="target/bench"
started=$(date +%s)
failed=()
rm -rf "$raw" && mkdir -p "$raw"

echo "bench: in-process (criterion)" >&2
if ! $CARGO bench --locked --bench in_process -- --warm-up-time 1 --measurement-time 3 \
  | tee "$raw/in_process.txt"; then
  failed+=(in_process)
fi

rate="${LOAD_RATE:-5000}"
# Several runs: on a shared 2-core VM one run's tail says as much about its neighbours as about
# the server. The page judges the median run and lists every run.
for run in $(seq 1 "${LOAD_RATE_RUNS:-5}"); do
  echo "bench: local server, open loop at $rate/s, run $run" >&2
  if ! LOAD_REQUESTS=$((rate * ${LOAD_RATE_SECONDS:-10})) LOAD_RATE="$rate" \
    $CARGO bench --locked --bench load_local | tee "$raw/load_local_rate_$run.txt"; then
    failed+=("load_local_rate_$run")
  fi
done

for concurrency in 16 64; do
  echo "bench: local server, concurrency $concurrency" >&2
  if ! LOAD_RATE=0 LOAD_REQUESTS="${LOAD_REQUESTS:-20000}" LOAD_CONCURRENCY="$concurrency" \
    $CARGO bench --locked --bench load_local | tee "$raw/load_local_c$concurrency.txt"; then
    failed+=("load_local_c$concurrency")
  fi
done

forward_rate="${LOAD_FORWARD_RATE:-1000}"
echo "bench: local server forwarding every change, open loop at $forward_rate/s (change lag)" >&2
if ! LOAD_FORWARD=1 LOAD_REQUESTS=$((forward_rate * ${LOAD_RATE_SECONDS:-10})) \
  LOAD_RATE="$forward_rate" $CARGO bench --locked --bench load_local \
  | tee "$raw/load_local_forward_lag.txt"; then
  failed+=(load_local_forward_lag)
fi
# The accept budgets with forwarding on; the forwards are not waited for long (not judged here).
echo "bench: local server forwarding every change, open loop at $rate/s (accept)" >&2
if ! LOAD_FORWARD=1 LOAD_FORWARD_DRAIN_SECONDS=10 LOAD_REQUESTS=$((rate * ${LOAD_RATE_SECONDS:-10})) \
  LOAD_RATE="$rate" $CARGO bench --locked --bench load_local \
  | tee "$raw/load_local_forward_accept.txt"; then
  failed+=(load_local_forward_accept)
fi

echo "bench: broadcast replay on the local server" >&2
if ! $CARGO bench --locked --bench broadcast | tee "$raw/broadcast.txt"; then
  failed+=(broadcast)
fi

echo "bench: AWS path on the emulators, then cold start" >&2
# One emulator session for both; the cold start does not fail the run (its rows say why).
# shellcheck disable=SC2016  # expanded by the inner shell
if ! LOAD_REQUESTS="${LOAD_AWS_REQUESTS:-2000}" CARGO="$CARGO" RAW="$raw" \
  BROADCAST_AWS_CONTACTS="${BROADCAST_AWS_CONTACTS:-150}" \
  scripts/emulators.sh run -- bash -c '
    set -o pipefail
    # The receiver prints one metric (EMF JSON) line per request: kept in the file, not shown.
    $CARGO bench --locked --bench load_aws | tee "$RAW/load_aws.txt" | { grep -v "^{" || true; }
    status=$?
    # The broadcast profile through the receiver and the processor (processor events/s).
    LOAD_PROFILE=broadcast BROADCAST_CONTACTS="$BROADCAST_AWS_CONTACTS" \
      $CARGO bench --locked --bench load_aws | tee "$RAW/load_aws_broadcast.txt" \
      | { grep -v "^{" || true; } || status=1
    # The DynamoDB calls per processor path, counted by the contract test that asserts them.
    $CARGO test --locked --test contract -- --exact \
      e2e::aws_calls_per_processor_path >"$RAW/processor_calls.txt" 2>&1 || status=1
    # The notifier calls per change, counted by its end-to-end test.
    $CARGO test --locked --test contract -- --exact \
      notifier::notifier_announces_every_change_once_per_id >"$RAW/notifier_calls.txt" 2>&1 \
      || status=1
    python3 scripts/performance-report.py cold-start "$RAW/cold_start.json" || true
    exit $status'; then
  failed+=(load_aws)
fi

echo "bench: contact reads by history length (SQLite, then DynamoDB Local)" >&2
if ! scripts/emulators.sh run -- $CARGO bench --locked --bench contact_reads \
  | tee "$raw/contact_reads.txt"; then
  failed+=(contact_reads)
fi

seconds=$(($(date +%s) - started))
python3 scripts/performance-report.py report "$raw" --seconds "$seconds" --failed "${failed[@]}"
broadcast_section >>docs/performance.md
contact_reads_section >>docs/performance.md
if [ ${#failed[@]} -gt 0 ]; then
  echo "bench: failed stages: ${failed[*]}" >&2
  exit 1
fi
