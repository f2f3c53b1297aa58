//! The in-process work per webhook, without any I/O: authenticate the URL secret, parse the body,
//! derive the idempotency key and build the ledger record and the queued event; and the
//! processor's pure work per event (its facts, merged into the message's stored state).
//!
//! Every benchmark runs over the whole fixture set (`tests/fixtures/events/*.json`, one
//! realistic body per Wati event type) in one iteration, with `Throughput::Elements` set to the
//! number of fixtures: the time per event is criterion's time divided by that number
//! (`scripts/performance-report.py` reads `target/criterion/in_process/<bench>/new/estimates.json`
//! and does the division). `make bench` runs it; alone:
//! `cargo bench --locked --bench in_process -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use wati_ingest::auth::SecretSet;
use wati_ingest::event::{idempotency_key, WatiEvent};
use wati_ingest::message::MessageRecord;
use wati_ingest::ports::{LedgerEntry, QueuedEvent};
use wati_ingest::receiver::intake_records;
use wati_ingest::time::Clock;

/// The URL secret as the receiver sees it: 64 hex characters, as `make run` generates.
const SECRET: &str = "6f1c0e4b9a2d7c3e8f105a6b4c2d9e7f0a1b3c5d7e9f20416283a4b5c6d7e8f9";
/// The receiver's default key lifetime (`DEDUP_TTL_DAYS` = 7).
const DEDUP_TTL_SECONDS: i64 = 7 * 24 * 60 * 60;

/// Every fixture body, in file-name order.
fn fixtures() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/events")
        .map(|entry| entry.expect("fixture entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no fixtures in {}", dir.display());
    paths
        .iter()
        .map(|path| std::fs::read(path).expect("fixture"))
        .collect()
}

/// The records the receiver hands to the ledger and the queue for one parsed body.
fn build_records(
    event: &WatiEvent,
    key: String,
    body: &[u8],
    received_at: i64,
) -> (QueuedEvent, LedgerEntry) {
    let text = std::str::from_utf8(body).expect("fixtures are UTF-8");
    intake_records(event, key, text, received_at, DEDUP_TTL_SECONDS)
}

fn in_process(c: &mut Criterion) {
    let bodies = fixtures();
    let secrets = SecretSet::new([SECRET]).expect("secret");
    let clock = Clock::System;
    let events: Vec<WatiEvent> = bodies
        .iter()
        .map(|body| WatiEvent::parse(body).expect("fixtures are usable events"))
        .collect();
    let keys: Vec<String> = events
        .iter()
        .zip(&bodies)
        .map(|(event, body)| idempotency_key(event, body))
        .collect();

    let mut group = c.benchmark_group("in_process");
    group.throughput(Throughput::Elements(bodies.len() as u64));

    // Everything the receiver does per webhook before its two store calls.
    group.bench_function("per_webhook_all_fixtures", |b| {
        b.iter(|| {
            for body in &bodies {
                assert!(secrets.matches(black_box(SECRET)));
                let received_at = clock.now();
                let event = WatiEvent::parse(black_box(body)).expect("usable");
                let key = idempotency_key(&event, body);
                black_box(build_records(&event, key, body, received_at));
            }
        })
    });

    group.bench_function("auth", |b| {
        b.iter(|| {
            for _ in &bodies {
                black_box(secrets.matches(black_box(SECRET)));
            }
        })
    });

    group.bench_function("parse", |b| {
        b.iter(|| {
            for body in &bodies {
                black_box(WatiEvent::parse(black_box(body)).expect("usable"));
            }
        })
    });

    group.bench_function("key", |b| {
        b.iter(|| {
            for (event, body) in events.iter().zip(&bodies) {
                black_box(idempotency_key(black_box(event), black_box(body)));
            }
        })
    });

    // Includes the receipt-time read (the wall clock), as `receive` does once per webhook.
    group.bench_function("record_build", |b| {
        b.iter(|| {
            for ((event, key), body) in events.iter().zip(&keys).zip(&bodies) {
                let received_at = clock.now();
                black_box(build_records(
                    black_box(event),
                    key.clone(),
                    black_box(body),
                    received_at,
                ));
            }
        })
    });

    // The processor's pure work per event: the event's facts, the oversized-id check, and the
    // merge into its message's stored state (every fixture's facts about that message already
    // merged, as in steady state). Events about no message (template lifecycle, unknown types)
    // only pay for `from_event`. Cloning the states is setup, outside the measurement.
    let now = clock.now();
    let facts: Vec<Option<MessageRecord>> = events
        .iter()
        .map(|event| MessageRecord::from_event(event, now))
        .collect();
    let stored: Vec<MessageRecord> = facts
        .iter()
        .map(|own| {
            let mut state = MessageRecord::default();
            if let Some(own) = own {
                for other in facts.iter().flatten() {
                    if other.primary_id() == own.primary_id() {
                        state.merge(other);
                    }
                }
            }
            state
        })
        .collect();
    group.bench_function("processor_from_event_merge", |b| {
        b.iter_batched_ref(
            || stored.clone(),
            |states| {
                for (event, state) in events.iter().zip(states.iter_mut()) {
                    if let Some(facts) = MessageRecord::from_event(black_box(event), now) {
                        if facts.oversized_id().is_none() {
                            state.merge(&facts);
                        }
                    }
                }
            },
            BatchSize::SmallInput,
        )
    });

    group.finish();
}

criterion_group!(benches, in_process);
criterion_main!(benches);
