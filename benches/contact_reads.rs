//! Contact reads by history length (issue 18 §2): a contact with `CONTACT_READS_MESSAGES`
//! (20,000) messages over 400 days (50 a day) against a contact with one, read through
//! `StateStore::contact` (the view: `src/recent.rs` says what it reads).
//!
//! - Locally: an `EmbeddedStore` in a temp dir (SQLite, WAL, `synchronous=FULL`), the whole
//!   history applied through `processor::apply`, `CONTACT_READS_CONCURRENCY` (32) at a time;
//!   then `CONTACT_READS_LOCAL_READS` (200) reads of each contact, alternating, after a warm-up.
//! - On DynamoDB Local (only with `AWS_ENDPOINT_URL_DYNAMODB` set, e.g. under
//!   `scripts/emulators.sh run -- ...`): the template's `StateTable`, `backfill_contact_index()`
//!   on the fresh table, then the same history, newest message first,
//!   `CONTACT_READS_AWS_CONCURRENCY` (64) applies at a time, until all is loaded or
//!   `CONTACT_READS_AWS_LOAD_SECONDS` (120) have passed (the size loaded is reported); then
//!   `CONTACT_READS_AWS_READS` (50) reads of each, and the items DynamoDB answered per read,
//!   counted on the wire (`Items`, `Item`, `Responses`).
//!
//! The history is the contract test's (`tests/contract/contact_reads.rs`): every fifth message
//! the customer's, the others template messages of the business delivered a minute later; none
//! of the customer's in the last 10 days, so its latest inbound lies far before the 48 hours a
//! view reads. Reports p50/p99 per contact, the ratio of the p50s (budget: ≤ 2) and items read
//! (budget: ≤ 100), as a markdown table and a `RESULT bench=contact_reads ...` line. No
//! assertions on timings; the views read are checked against the history's latest inbound and
//! outbound times. `make contact-reads` runs both parts.

mod common;
#[path = "../tests/common/contact_history.rs"]
#[allow(dead_code)]
mod contact_history;
#[path = "../tests/common/items_read.rs"]
mod items_read;
#[path = "../tests/contract/support.rs"]
#[allow(dead_code)]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{percentile, setting};
use contact_history::Message;
use futures_util::stream::{self, StreamExt};
use items_read::ItemsRead;
use serde_json::{json, Value};
use wati_ingest::ports::{QueuedEvent, StateStore};
use wati_ingest::store::dynamo_state::DynamoState;
use wati_ingest::store::embedded::EmbeddedStore;

const HOUR: i64 = 3_600;
const DAY: i64 = 24 * HOUR;
const DAYS: i64 = 400;
const START: i64 = 1_730_000_000;
const LONG: &str = "14155550900";
const SHORT: &str = "14155550901";

/// `count` messages of `wa_id` spread evenly over 400 days (`contact_history`).
fn history(wa_id: &str, count: i64) -> Vec<Message> {
    contact_history::history(wa_id, count, START, DAYS * DAY / count.max(1))
}

/// The latest inbound and outbound send among `messages`, as the view shows them.
fn latest(messages: &[Message]) -> (Value, Value) {
    let (last_in, last_out) = contact_history::latest(messages);
    (
        json!(wati_ingest::time::Rfc3339(last_in)),
        json!(wati_ingest::time::Rfc3339(last_out)),
    )
}

/// Applies `messages` newest first, `concurrency` events at a time, until all are applied or
/// `budget` has passed (checked before each message: a message's events are all applied).
/// Returns how many messages (from the newest) were applied and the time taken.
async fn load(
    state: &dyn StateStore,
    messages: &[Message],
    concurrency: usize,
    budget: Duration,
) -> (usize, Duration) {
    let started = Instant::now();
    let loaded = AtomicUsize::new(0);
    let loaded_ref = &loaded;
    stream::iter(messages.iter().rev())
        .take_while(|_| futures_util::future::ready(started.elapsed() < budget))
        .flat_map(|message| {
            loaded_ref.fetch_add(1, Ordering::Relaxed);
            stream::iter(message.events.iter().enumerate())
        })
        .for_each_concurrent(concurrency, |(n, (at, body))| async move {
            let key = format!(
                "{}-{n}",
                body["id"].as_str().expect("every event has an id")
            );
            let queued = QueuedEvent::archived(key, at + 1, body.to_string());
            wati_ingest::processor::apply(state, &queued)
                .await
                .expect("applied");
        })
        .await;
    (loaded.into_inner(), started.elapsed())
}

/// The reads of one contact: latencies (sorted) and the most items one read took (if counted).
struct Reads {
    latencies: Vec<Duration>,
    items: Option<usize>,
}

impl Reads {
    fn p50_ms(&self) -> f64 {
        ms(percentile(&self.latencies, 0.50))
    }

    fn p99_ms(&self) -> f64 {
        ms(percentile(&self.latencies, 0.99))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `warm_up` then `reads` reads of each contact, alternating (both see the same load), each
/// view checked against the history's latest sends.
async fn time_reads(
    state: &dyn StateStore,
    now: i64,
    checks: [(&str, &(Value, Value)); 2],
    warm_up: usize,
    reads: usize,
    items: Option<&ItemsRead>,
) -> [Reads; 2] {
    for _ in 0..warm_up {
        for (contact, _) in checks {
            state.contact(contact, now).await.expect("read");
        }
    }
    if let Some(items) = items {
        items.take();
    }
    let mut out = [(); 2].map(|()| Reads {
        latencies: Vec::with_capacity(reads),
        items: items.map(|_| 0),
    });
    for _ in 0..reads {
        for (slot, (contact, (last_in, last_out))) in out.iter_mut().zip(checks) {
            let started = Instant::now();
            let view = state.contact(contact, now).await.expect("read");
            slot.latencies.push(started.elapsed());
            if let (Some(items), Some(most)) = (items, slot.items.as_mut()) {
                *most = (*most).max(items.take());
            }
            let view = serde_json::to_value(view.expect("a view")).expect("json");
            assert_eq!(
                &view["last_inbound_at"], last_in,
                "{contact}: latest inbound"
            );
            assert_eq!(
                &view["last_outbound_at"], last_out,
                "{contact}: latest outbound"
            );
        }
    }
    for slot in &mut out {
        slot.latencies.sort();
    }
    out
}

/// One store's figures.
struct Run {
    store: &'static str,
    long_messages: usize,
    load: Duration,
    reads: [Reads; 2],
}

impl Run {
    fn ratio(&self) -> f64 {
        self.reads[0].p50_ms() / self.reads[1].p50_ms()
    }

    fn rows(&self) {
        for (reads, messages) in self.reads.iter().zip([self.long_messages, 1]) {
            println!(
                "| {} | {} | {} | {:.3} | {:.3} | {} |",
                self.store,
                messages,
                reads.latencies.len(),
                reads.p50_ms(),
                reads.p99_ms(),
                reads.items.map_or("-".to_owned(), |n| n.to_string()),
            );
        }
    }

    fn fields(&self, prefix: &str) -> String {
        let [long, short] = &self.reads;
        let mut fields = format!(
            "{prefix}_messages={} {prefix}_load_s={:.1} {prefix}_long_p50_ms={:.3} \
             {prefix}_long_p99_ms={:.3} {prefix}_short_p50_ms={:.3} {prefix}_short_p99_ms={:.3} \
             {prefix}_ratio={:.2}",
            self.long_messages,
            self.load.as_secs_f64(),
            long.p50_ms(),
            long.p99_ms(),
            short.p50_ms(),
            short.p99_ms(),
            self.ratio(),
        );
        if let (Some(a), Some(b)) = (long.items, short.items) {
            fields.push_str(&format!(
                " {prefix}_long_items={a} {prefix}_short_items={b}"
            ));
        }
        fields
    }
}

#[tokio::main]
async fn main() {
    let count = setting("CONTACT_READS_MESSAGES", 20_000).max(2) as i64;
    let long = history(LONG, count);
    let short = history(SHORT, 1);
    let now = long.last().expect("messages").at + HOUR;
    let short_latest = latest(&short);
    let mut runs = Vec::new();

    // Locally: the whole history.
    let dir = tempfile::tempdir().expect("temp dir");
    let embedded = EmbeddedStore::open(&dir.path().join("contact_reads.db")).expect("open");
    let concurrency = setting("CONTACT_READS_CONCURRENCY", 32);
    let (loaded, took) = load(&embedded, &long, concurrency, Duration::MAX).await;
    load(&embedded, &short, 1, Duration::MAX).await;
    eprintln!(
        "contact_reads: SQLite: {loaded} messages applied in {:.1} s ({:.0} messages/s)",
        took.as_secs_f64(),
        loaded as f64 / took.as_secs_f64()
    );
    let long_latest = latest(&long);
    let reads = setting("CONTACT_READS_LOCAL_READS", 200);
    runs.push(Run {
        store: "SQLite (embedded)",
        long_messages: loaded,
        load: took,
        reads: time_reads(
            &embedded,
            now,
            [(LONG, &long_latest), (SHORT, &short_latest)],
            20,
            reads,
            None,
        )
        .await,
    });
    drop(embedded);

    // On DynamoDB Local: as much of the history, newest first, as loads in the budget.
    if std::env::var("AWS_ENDPOINT_URL_DYNAMODB").is_ok() {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let items = ItemsRead::default();
        let client = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&config)
                .interceptor(items.clone())
                .build(),
        );
        let table = format!("StateTable-contact-reads-{}", std::process::id());
        support::create_template_table(&client, "StateTable", &table).await;
        let state = DynamoState::new(client, &table);
        state
            .backfill_contact_index()
            .await
            .expect("backfill the contact index of an empty table");
        let budget = Duration::from_secs(setting("CONTACT_READS_AWS_LOAD_SECONDS", 120) as u64);
        let concurrency = setting("CONTACT_READS_AWS_CONCURRENCY", 64);
        let (loaded, took) = load(&state, &long, concurrency, budget).await;
        load(&state, &short, 1, Duration::MAX).await;
        eprintln!(
            "contact_reads: DynamoDB Local: {loaded} of {count} messages (the newest) applied in \
             {:.1} s ({:.0} messages/s)",
            took.as_secs_f64(),
            loaded as f64 / took.as_secs_f64()
        );
        let long_latest = latest(&long[long.len() - loaded..]);
        let reads = setting("CONTACT_READS_AWS_READS", 50);
        runs.push(Run {
            store: "DynamoDB Local",
            long_messages: loaded,
            load: took,
            reads: time_reads(
                &state,
                now,
                [(LONG, &long_latest), (SHORT, &short_latest)],
                5,
                reads,
                Some(&items),
            )
            .await,
        });
    } else {
        eprintln!("contact_reads: AWS_ENDPOINT_URL_DYNAMODB not set: DynamoDB Local skipped");
    }

    println!();
    println!(
        "| store | contact's messages | reads | p50 ms | p99 ms | items read (most per read) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for run in &runs {
        run.rows();
    }
    println!();
    for run in &runs {
        println!(
            "{}: p50 of the {}-message contact / p50 of the 1-message contact = {:.2} (budget ≤ 2)",
            run.store,
            run.long_messages,
            run.ratio()
        );
    }
    let fields: Vec<String> = runs
        .iter()
        .zip(["local", "aws"])
        .map(|(run, prefix)| run.fields(prefix))
        .collect();
    println!("RESULT bench=contact_reads {}", fields.join(" "));
}
