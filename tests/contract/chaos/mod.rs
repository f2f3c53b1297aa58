//! The chaos test: a generated history of thousands of Wati callbacks, delivered the way Wati
//! delivers them (late, out of order, two to five times, retries bunched on its 10-minute retry
//! job), through faults injected around the real adapters, on both backends. It ends when the
//! pipeline has settled, then reads every message by each of its ids and every contact by each
//! of its names through the read API, and compares them with the oracle (`oracle.rs`), which
//! knows the README's rules and nothing of the crate's code.
//!
//! Size: `CHAOS_CONTACTS` (embedded) and `CHAOS_AWS_CONTACTS` (the emulators are far slower),
//! defaulting to a CI-sized run; `CHAOS_SEED`. `make chaos` runs the large size. Each run prints
//! one `chaos[...]` line and writes it to `target/chaos/<backend>.json`. Fault decisions are pure
//! functions of the seed and the call's place, so a failing seed replays its faults.

mod aws;
mod aws_changes;
mod changes;
mod faults;
mod history;
mod oracle;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use wati_ingest::auth::SecretSet;
use wati_ingest::forward::{self, ForwardSchedule, ForwardTarget};
use wati_ingest::http::{
    read_routes, webhook_routes, ReadService, WebhookService, DEFAULT_MAX_BODY_BYTES,
};
use wati_ingest::metrics::MetricsSink;
use wati_ingest::ports::{ChangeFeed, Ledger, Queue, StateStore};
use wati_ingest::processor::{run_local, LocalProcessorSettings};
use wati_ingest::receiver::{sweep, Receiver, ReceiverSettings};
use wati_ingest::store::embedded::EmbeddedStore;
use wati_ingest::time::{now_unix, Clock};

use faults::{Call, CallLog, FaultPlan, Faults, FaultyLedger, FaultyQueue, FaultyState, DELIVERY};
use history::{History, Rng, Scale};
use oracle::{Name, CONTACT_FIELDS, MESSAGE_FIELDS};

const SECRET: &str = "chaos-webhook-secret-0123456789abcdef";
const TOKEN: &str = "chaos-api-token-0123456789abcdef";
/// Wati's retry job runs every 10 minutes.
const RETRY_TICK: i64 = 600;
/// Wati gives up after 144 retries (about 24 hours).
const MAX_ATTEMPTS: u32 = 145;
/// Webhooks in flight at once.
const CONCURRENCY: usize = 16;
/// Every webhook must be answered within this, whatever hangs behind it: stricter than the
/// receiver's Lambda timeout (15 s, `template.yaml`). The SDK's operation timeout is 3 s, and a
/// webhook waits for at most four in a row (record and send at once, then a second send or a
/// variant's record, then a redrive mark and, for a key marked already, its second write): 12 s
/// only when every one of them is slow yet succeeds, which the faults here do not make.
const RECEIVER_TIMEOUT: Duration = Duration::from_secs(10);

/// The faults of a run: a few percent of every call on the receive and apply paths.
const PLAN: FaultPlan = FaultPlan {
    record: 0.03,
    send: 0.04,
    mark: 0.25,
    quarantine: 0.1,
    crash: 0.01,
    apply: 0.03,
    apply_answer_lost: 0.02,
    second_write: 0.05,
};

/// Contacts from the variable `name`, else the CI-sized default.
fn scale(name: &str, default_contacts: usize) -> Scale {
    let contacts = std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_contacts);
    Scale { contacts, days: 3 }
}

fn seed() -> u64 {
    std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_261_126)
}

/// One webhook delivery: which callback, and which of Wati's attempts it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Delivery {
    callback: usize,
    attempt: u32,
}

/// How Wati delivers the history: each callback a little late (now and then very late, so
/// statuses overtake their message, and some held back hours by the generator), a share of them
/// again on later runs of the retry job. Keyed by the retry-job tick (10-minute slot) the
/// delivery falls in.
fn schedule(history: &History, rng: &mut Rng) -> BTreeMap<i64, Vec<Delivery>> {
    let mut due: BTreeMap<i64, Vec<Delivery>> = BTreeMap::new();
    for (callback, emitted) in history.callbacks.iter().enumerate() {
        let lag = match rng.between(0, 99) {
            0..=69 => rng.between(0, 5),
            70..=89 => rng.between(5, 120),
            _ => rng.between(120, 30 * 60),
        };
        let first = emitted.at + emitted.held + lag;
        let copies = match rng.between(0, 99) {
            0..=49 => 0,
            50..=74 => 1,
            75..=87 => 2,
            88..=95 => 3,
            _ => 4,
        };
        let mut at = first;
        for attempt in 0..=copies {
            due.entry(at.div_euclid(RETRY_TICK))
                .or_default()
                .push(Delivery { callback, attempt });
            // Copies come on the retry job's next runs, bunched with everyone else's.
            at = (at.div_euclid(RETRY_TICK) + 1 + rng.between(0, 2)) * RETRY_TICK
                + rng.between(0, 3);
        }
    }
    due
}

/// Where the delivery of the history is, for faults that strike while webhooks are in flight.
#[derive(Debug, Default)]
pub struct Flight {
    in_flight: AtomicUsize,
    ticks_done: AtomicUsize,
    ticks_total: AtomicUsize,
    finished: AtomicBool,
}

impl Flight {
    pub fn progress(&self) -> f64 {
        self.ticks_done.load(Ordering::SeqCst) as f64
            / self.ticks_total.load(Ordering::SeqCst).max(1) as f64
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::SeqCst)
    }
}

/// One delivery as it happened, for the faults that struck while it was in flight.
#[derive(Debug, Clone)]
struct Trace {
    started: Instant,
    finished: Instant,
    answer: String,
    real_failures: usize,
    /// The send, or the ledger record, failed for real (an emulator down or hung).
    send_failed: bool,
    record_failed: bool,
    marked: bool,
    /// A `503` whose calls explain it (a send failed, and so did the write that could replace it).
    unavailable_explained: bool,
}

/// What the deliveries saw.
#[derive(Debug, Default, Serialize)]
struct Played {
    callbacks: usize,
    deliveries: usize,
    /// Deliveries beyond the first of each callback (Wati's duplicates and retries).
    duplicates: usize,
    answers: BTreeMap<String, usize>,
    /// Crashes between the ledger write and the send (no answer; Wati retried).
    crashes: usize,
    /// `503`s the failed calls of their delivery explain.
    unavailable_explained: usize,
    /// `503`s nothing explains, or explained failures answered otherwise: must be 0.
    unavailable_unexplained: usize,
    /// `200`s without a durable write behind them: must be 0.
    ok_without_durable_write: usize,
    /// Malformed bodies not quarantined, or events quarantined: must be 0.
    misclassified: usize,
    /// Callbacks Wati gave up on (144 retries failed): must be 0.
    abandoned: usize,
    /// The slowest answer, and answers slower than the receiver's timeout (must be 0).
    max_answer_ms: u128,
    answers_over_timeout: usize,
    /// When each callback was first received (the receiver's clock), for the oracle.
    #[serde(skip)]
    receipts: Vec<Option<i64>>,
    #[serde(skip)]
    traces: Vec<Trace>,
}

/// Delivers the whole history through `webhook`, moving `clock` along Wati's timeline, keeping
/// `flight` up to date. `on_tick` runs after every retry-job tick, with the share of the run done.
async fn play(
    history: &History,
    webhook: &Router,
    clock: &Clock,
    rng: &mut Rng,
    flight: &Arc<Flight>,
    mut on_tick: impl FnMut(f64),
) -> Played {
    let mut due = schedule(history, rng);
    flight.ticks_total.store(due.len(), Ordering::SeqCst);
    let mut played = Played {
        callbacks: history.callbacks.len(),
        receipts: vec![None; history.callbacks.len()],
        ..Played::default()
    };
    let mut ticks = 0;
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    while let Some((tick, mut batch)) = due.pop_first() {
        // Retries join in the order their deliveries ended; sorted first, the shuffle depends on
        // the seed alone.
        batch.sort_unstable();
        rng.shuffle(&mut batch);
        // The receiver's clock reads the end of the retry job's slot: no callback is received
        // before it happened.
        let now = tick * RETRY_TICK + RETRY_TICK - 1;
        clock.set(now);
        let mut running = tokio::task::JoinSet::new();
        for delivery in batch {
            let permit = Arc::clone(&permits).acquire_owned().await.expect("open");
            played.receipts[delivery.callback].get_or_insert(now);
            let body = history.callbacks[delivery.callback].body.clone();
            let webhook = webhook.clone();
            // Its faults come from which callback and attempt it is, not from the deliveries
            // before it, so one delivery answered otherwise leaves the others' faults alone.
            let number = history::hash(&[delivery.callback as u64, u64::from(delivery.attempt)]);
            let log = Arc::new(CallLog::new(number));
            let flight = Arc::clone(flight);
            running.spawn(async move {
                let _permit = permit;
                flight.in_flight.fetch_add(1, Ordering::SeqCst);
                let started = Instant::now();
                let answer = deliver(&webhook, body, Arc::clone(&log)).await;
                flight.in_flight.fetch_sub(1, Ordering::SeqCst);
                (delivery, answer, log, started, Instant::now())
            });
        }
        while let Some(done) = running.join_next().await {
            let (delivery, answer, log, started, finished) = done.expect("delivery task");
            played.deliveries += 1;
            if delivery.attempt > 0 {
                played.duplicates += 1;
            }
            let took = finished - started;
            played.max_answer_ms = played.max_answer_ms.max(took.as_millis());
            if took > RECEIVER_TIMEOUT && !matches!(answer, Answer::Crashed) {
                played.answers_over_timeout += 1;
            }
            let malformed = history.callbacks[delivery.callback].malformed;
            let retry = match &answer {
                Answer::Crashed => {
                    played.crashes += 1;
                    true
                }
                Answer::Status(503, _) => {
                    if log.explains_unavailable() {
                        played.unavailable_explained += 1;
                    } else {
                        played.unavailable_unexplained += 1;
                    }
                    true
                }
                Answer::Status(200, status) => {
                    if !log.durably_written() {
                        played.ok_without_durable_write += 1;
                    }
                    if log.explains_unavailable() {
                        played.unavailable_unexplained += 1;
                    }
                    if malformed != (status == "quarantined") {
                        played.misclassified += 1;
                    }
                    false
                }
                Answer::Status(other, body) => panic!("unexpected answer {other}: {body}"),
            };
            played.traces.push(Trace {
                started,
                finished,
                answer: answer.label(),
                real_failures: log.real_failures(),
                send_failed: log.failed_for_real(Call::Send),
                record_failed: log.failed_for_real(Call::Record),
                marked: log.succeeded(Call::Mark),
                unavailable_explained: log.explains_unavailable(),
            });
            *played.answers.entry(answer.label()).or_default() += 1;
            if retry {
                if delivery.attempt + 1 >= MAX_ATTEMPTS {
                    played.abandoned += 1;
                    continue;
                }
                let next = Delivery {
                    attempt: delivery.attempt + 1,
                    ..delivery
                };
                due.entry(tick + 1).or_default().push(next);
            }
        }
        ticks += 1;
        flight
            .ticks_total
            .store(ticks + due.len(), Ordering::SeqCst);
        flight.ticks_done.store(ticks, Ordering::SeqCst);
        on_tick(flight.progress());
    }
    flight.finished.store(true, Ordering::SeqCst);
    played
}

#[derive(Debug)]
enum Answer {
    Status(u16, String),
    Crashed,
}

impl Answer {
    fn label(&self) -> String {
        match self {
            Answer::Status(200, status) => status.clone(),
            Answer::Status(code, _) => code.to_string(),
            Answer::Crashed => "crashed".into(),
        }
    }
}

/// One webhook through the real router, in-process; a crash drops the request mid-flight.
async fn deliver(webhook: &Router, body: Vec<u8>, log: Arc<CallLog>) -> Answer {
    let request = Request::post(format!("/webhook/{SECRET}"))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("request");
    let call = DELIVERY.scope(Arc::clone(&log), webhook.clone().oneshot(request));
    tokio::select! {
        response = call => {
            let response = response.expect("infallible");
            let code = response.status().as_u16();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
            let status = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v["status"].as_str().map(str::to_owned))
                .unwrap_or_default();
            Answer::Status(code, status)
        }
        _ = log.crashed.notified() => Answer::Crashed,
    }
}

/// How the read API's answers compare with the oracle, reading every message by each of its
/// ids and every contact by each of its names, and a sample of contacts with one business
/// number (`?channel=`).
#[derive(Debug, Default, Serialize)]
struct Verified {
    messages: usize,
    contacts: usize,
    /// Reads made, by the kind of name read by (`…?channel=` for one number's view).
    reads: BTreeMap<String, usize>,
    /// Messages some id of which the read API does not know: events lost. Must be 0.
    messages_lost: usize,
    /// Messages that differ from the oracle when read by some id. Must be 0.
    messages_mismatched: usize,
    contacts_lost: usize,
    contacts_mismatched: usize,
    /// Ids and contact names some callback carries that the oracle does not know. Must be 0.
    unknown_to_oracle: usize,
    /// Failed reads, by the kind of name read by, and the fields that differed
    /// (`channels[].…` for an entry of `channels`, `status` for a `?channel=` read answered
    /// otherwise than the oracle's 200 or 404).
    lost_reads: BTreeMap<String, usize>,
    mismatched_reads: BTreeMap<String, usize>,
    mismatched_fields: BTreeMap<String, usize>,
    /// The business-number cases the rules turn on, as they occurred (from the oracle).
    observed: BTreeMap<&'static str, usize>,
    #[serde(skip)]
    examples: Vec<String>,
}

impl Verified {
    fn mismatches(&self) -> usize {
        self.messages_lost
            + self.messages_mismatched
            + self.contacts_lost
            + self.contacts_mismatched
            + self.unknown_to_oracle
    }
}

/// One read of the verification and what the oracle expects of it.
struct Read {
    is_message: bool,
    /// Which message or contact (its place in the oracle's list).
    n: usize,
    kind: String,
    path: String,
    /// 200, or 404 for a `?channel=` the contact never talked to.
    status: u16,
    expected: Value,
    paths: Vec<String>,
}

/// The business numbers a sample of contacts is read with (`?channel=`): every fourth contact
/// with the second number, every eighth (another quarter) with the default one.
fn channel_reads(n: usize) -> Option<(&'static str, &'static str)> {
    match n % 8 {
        0 | 4 => Some(("second", history::SECOND_NUMBER)),
        2 => Some(("default", history::DEFAULT_NUMBER)),
        _ => None,
    }
}

async fn verify(history: &History, receipts: &[Option<i64>], read: &Router) -> Verified {
    let now = now_unix();
    let expected = oracle::expect(&history.callbacks, receipts, now);
    let mut verified = Verified {
        messages: expected.messages.len(),
        contacts: expected.contacts.len(),
        observed: expected.observed.clone(),
        ..Verified::default()
    };
    let known: std::collections::BTreeSet<(Name, String)> = expected
        .messages
        .iter()
        .chain(&expected.contacts)
        .flat_map(|e| e.names.iter().cloned())
        .collect();
    for (name, value) in oracle::named_in_bodies(&history.callbacks) {
        if !known.contains(&(name, value.clone())) {
            verified.unknown_to_oracle += 1;
            if verified.examples.len() < 8 {
                verified.examples.push(format!(
                    "{name:?} {value}: in a callback, unknown to the oracle"
                ));
            }
        }
    }
    let message_paths: Vec<String> = MESSAGE_FIELDS.iter().map(|f| (*f).to_owned()).collect();
    let mut reads = Vec::new();
    for (n, one) in expected.messages.iter().enumerate() {
        for (name, value) in &one.names {
            reads.push(Read {
                is_message: true,
                n,
                kind: format!("{name:?}"),
                path: format!("/v1/messages/{value}"),
                status: 200,
                expected: one.view.clone(),
                paths: message_paths.clone(),
            });
        }
    }
    for (n, one) in expected.contacts.iter().enumerate() {
        let paths = oracle::contact_paths(&one.view);
        for (name, value) in &one.names {
            reads.push(Read {
                is_message: false,
                n,
                kind: format!("{name:?}"),
                path: format!("/v1/contacts/{value}"),
                status: 200,
                expected: one.view.clone(),
                paths: paths.clone(),
            });
        }
        // One number's view: the entry of `channels` with that phone (no `channels` of its
        // own), or 404 when the contact has none.
        if let (Some((label, number)), Some((name, value))) = (channel_reads(n), one.names.first())
        {
            let entry = one.view["channels"].as_array().and_then(|entries| {
                entries
                    .iter()
                    .find(|e| e["channel_phone_number"].as_str() == Some(number))
            });
            let mut paths: Vec<String> = CONTACT_FIELDS.iter().map(|f| (*f).to_owned()).collect();
            paths.push("channels".to_owned());
            reads.push(Read {
                is_message: false,
                n,
                kind: format!(
                    "{name:?}?channel={label}{}",
                    if entry.is_some() { "" } else { " (404)" }
                ),
                path: format!("/v1/contacts/{value}?channel={number}"),
                status: if entry.is_some() { 200 } else { 404 },
                expected: entry.cloned().unwrap_or(Value::Null),
                paths,
            });
        }
    }
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut running = tokio::task::JoinSet::new();
    for one in reads {
        let permit = Arc::clone(&permits).acquire_owned().await.expect("open");
        let read = read.clone();
        running.spawn(async move {
            let _permit = permit;
            let request = Request::get(&one.path)
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(Body::empty())
                .expect("request");
            let response = read.oneshot(request).await.expect("infallible");
            let status = response.status().as_u16();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("body");
            let actual: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            (one, status, actual)
        });
    }
    let mut lost = std::collections::BTreeSet::new();
    let mut mismatched = std::collections::BTreeSet::new();
    while let Some(done) = running.join_next().await {
        let (one, status, actual) = done.expect("read task");
        *verified.reads.entry(one.kind.clone()).or_default() += 1;
        let key = (one.is_message, one.n);
        let differ = if status == 200 && one.status == 200 {
            oracle::differences(&one.paths, &one.expected, &actual)
        } else if status == one.status {
            Vec::new()
        } else if one.status == 200 {
            lost.insert(key);
            *verified.lost_reads.entry(one.kind.clone()).or_default() += 1;
            Vec::new()
        } else {
            vec!["status".to_owned()]
        };
        let this_lost = status != one.status && one.status == 200;
        if differ.is_empty() && !this_lost {
            continue;
        }
        if !differ.is_empty() {
            mismatched.insert(key);
            *verified
                .mismatched_reads
                .entry(one.kind.clone())
                .or_default() += 1;
            for path in &differ {
                *verified
                    .mismatched_fields
                    .entry(field_of(path))
                    .or_default() += 1;
            }
        }
        if verified.examples.len() < 8 {
            // The differing fields; an entry of `channels` one side lacks, whole (`channels.1`).
            let shown_paths: std::collections::BTreeSet<String> = differ
                .iter()
                .map(|path| match path.split('.').collect::<Vec<_>>()[..] {
                    ["channels", index, _, ..]
                        if [&actual, &one.expected].iter().any(|side| {
                            oracle::at(side, &format!("channels.{index}")).is_none()
                        }) =>
                    {
                        format!("channels.{index}")
                    }
                    _ => path.clone(),
                })
                .collect();
            let pick = |value: &Value| {
                let shown: BTreeMap<&str, Value> = shown_paths
                    .iter()
                    .map(|path| {
                        let value = oracle::at(value, path).unwrap_or(Value::Null);
                        (path.as_str(), value)
                    })
                    .collect();
                serde_json::to_string(&shown).expect("serialises")
            };
            let (got, wanted) = if status == 200 && one.status == 200 {
                (pick(&actual), pick(&one.expected))
            } else {
                (
                    actual.to_string(),
                    format!("{} {}", one.status, one.expected),
                )
            };
            verified.examples.push(format!(
                "{} (by {}): {status}\n  got      {got}\n  expected {wanted}",
                one.path, one.kind
            ));
        }
    }
    for (is_message, _) in &lost {
        if *is_message {
            verified.messages_lost += 1;
        } else {
            verified.contacts_lost += 1;
        }
    }
    for key in mismatched.difference(&lost) {
        if key.0 {
            verified.messages_mismatched += 1;
        } else {
            verified.contacts_mismatched += 1;
        }
    }
    verified
}

/// A compared path as counted: an entry of `channels` by `channels[]`, whichever entry it is.
fn field_of(path: &str) -> String {
    path.split('.')
        .map(|key| {
            if key.parse::<usize>().is_ok() {
                "[]"
            } else {
                key
            }
        })
        .collect::<Vec<_>>()
        .join(".")
        .replace(".[]", "[]")
}

/// The figures of one run.
#[derive(Debug, Serialize)]
struct Report {
    backend: &'static str,
    seed: u64,
    contacts: usize,
    messages: usize,
    /// How often the history's hard cases occur.
    cases: BTreeMap<&'static str, usize>,
    played: Played,
    faults_injected: BTreeMap<String, usize>,
    real_failures: BTreeMap<String, usize>,
    /// The first few distinct errors of the real failures.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    real_errors: BTreeMap<String, Vec<String>>,
    /// Emulator faults that struck while webhooks were in flight (AWS).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    emulator_faults: Vec<Value>,
    /// What the pipeline did to settle after the faults stopped.
    settled: BTreeMap<String, usize>,
    verified: Verified,
    /// The change path: documents delivered against the pipeline's announcements and the rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    changes: Option<changes::ChangesVerified>,
    /// Wall seconds of delivering the history, settling, and reading everything back.
    phases: BTreeMap<&'static str, f64>,
    seconds: f64,
}

impl Report {
    /// Prints the run, keeps it in `target/chaos/`, and fails on any lost or wrong state.
    fn finish(self) {
        let json = serde_json::to_string(&self).expect("report serialises");
        eprintln!("chaos[{}]: {json}", self.backend);
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/chaos");
        if std::fs::create_dir_all(&dir).is_ok() {
            let _ = std::fs::write(dir.join(format!("{}.json", self.backend)), &json);
        }
        let played = &self.played;
        let verified = &self.verified;
        let replay = format!(
            "chaos seed {seed} on {backend} (replay: CHAOS_SEED={seed})",
            seed = self.seed,
            backend = self.backend
        );
        assert_eq!(
            self.settled.get("unsettled"),
            None,
            "{replay}: the pipeline settled: {json}"
        );
        assert!(
            played.deliveries > played.callbacks,
            "{replay}: duplicates were delivered"
        );
        assert!(
            played.crashes > 0 && self.faults_injected.len() >= 6,
            "{replay}: faults were injected: {json}"
        );
        assert_eq!(
            played.unavailable_unexplained, 0,
            "{replay}: every 503 explained: {json}"
        );
        assert_eq!(
            played.ok_without_durable_write, 0,
            "{replay}: every 200 durable: {json}"
        );
        assert_eq!(played.misclassified, 0, "{replay}: {json}");
        assert_eq!(played.abandoned, 0, "{replay}: {json}");
        assert_eq!(
            played.answers_over_timeout, 0,
            "{replay}: every webhook answered within {RECEIVER_TIMEOUT:?}: {json}"
        );
        assert_eq!(
            verified.mismatches(),
            0,
            "{replay}: {} messages lost, {} mismatched, {} contacts lost, {} mismatched, {} ids \
             unknown to the oracle\n{}",
            verified.messages_lost,
            verified.messages_mismatched,
            verified.contacts_lost,
            verified.contacts_mismatched,
            verified.unknown_to_oracle,
            verified.examples.join("\n")
        );
        let Some(changes) = &self.changes else {
            return;
        };
        assert!(
            changes.deliveries > changes.distinct && changes.transport.values().sum::<usize>() > 0,
            "{replay}: the change path was faulted and delivered repeats: {json}"
        );
        assert_eq!(
            changes.mismatches(),
            0,
            "{replay}: the change path: {json}\n{}",
            changes.examples.join("\n")
        );
    }
}

/// Wall time of a run's phases.
struct Phases {
    since: Instant,
    laps: BTreeMap<&'static str, f64>,
}

impl Phases {
    fn start() -> Phases {
        Phases {
            since: Instant::now(),
            laps: BTreeMap::new(),
        }
    }

    fn lap(&mut self, phase: &'static str) {
        let now = Instant::now();
        let seconds = (now - self.since).as_secs_f64();
        self.laps.insert(phase, (seconds * 10.0).round() / 10.0);
        self.since = now;
    }
}

fn named<K: std::fmt::Debug, V>(counts: BTreeMap<K, V>) -> BTreeMap<String, V> {
    counts
        .into_iter()
        .map(|(k, v)| (format!("{k:?}"), v))
        .collect()
}

fn webhook_router(ledger: Arc<dyn Ledger>, queue: Arc<dyn Queue>, clock: &Clock) -> Router {
    webhook_routes(Arc::new(WebhookService {
        receiver: Receiver::new(
            ledger,
            queue,
            ReceiverSettings {
                clock: clock.clone(),
                ..ReceiverSettings::default()
            },
        ),
        secrets: SecretSet::new([SECRET]).expect("secret").into(),
        max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        metrics: MetricsSink::Off,
    }))
}

fn read_router(state: Arc<dyn StateStore>) -> Router {
    read_routes(Arc::new(ReadService {
        state,
        tokens: SecretSet::new([TOKEN]).expect("token").into(),
        changes: None,
        intake: None,
    }))
}

/// The embedded backend: the local processor crashes (its task aborted mid-batch) and restarts
/// now and then; events it held reappear after the visibility timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_on_the_embedded_store() {
    let started = Instant::now();
    let scale = scale("CHAOS_CONTACTS", 120);
    let seed = seed();
    let history = History::generate(scale, seed, now_unix());
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(&dir.path().join("chaos.db")).expect("open");
    let faults = Faults::new(PLAN, seed ^ 1);
    let clock = Clock::manual(0);
    let webhook = webhook_router(
        Arc::new(FaultyLedger {
            inner: Arc::new(store.clone()),
            faults: Arc::clone(&faults),
        }),
        Arc::new(FaultyQueue {
            inner: Arc::new(store.clone()),
            faults: Arc::clone(&faults),
        }),
        &clock,
    );
    let state: Arc<dyn StateStore> = Arc::new(FaultyState {
        inner: Arc::new(store.clone()),
        faults: Arc::clone(&faults),
    });
    let settings = LocalProcessorSettings {
        visibility_ms: 500,
        idle_poll: Duration::from_millis(20),
        sweep_every: Duration::from_millis(500),
        ..LocalProcessorSettings::default()
    };
    let spawn = || {
        tokio::spawn(run_local(
            store.clone(),
            Arc::clone(&state),
            settings.clone(),
        ))
    };
    let processor = std::sync::Mutex::new(spawn());
    let mut processor_crashes = 0;
    // The change path: the outbox forwarded to a target that fails and hangs; the forwarder
    // crashes now and then too.
    let target = changes::FlakyTarget::start(seed ^ 4, FORWARD_HANG).await;
    let forward_target =
        ForwardTarget::new(&target.url(), FORWARD_SECRET, FORWARD_TIMEOUT).expect("forward target");
    let spawn_forwarder = || {
        tokio::spawn(forward::run(
            store.clone(),
            forward_target.clone(),
            FORWARD_SCHEDULE,
        ))
    };
    let forwarder = std::sync::Mutex::new(spawn_forwarder());
    let mut forwarder_crashes = 0;
    let mut rng = Rng::new(seed ^ 2);
    let mut crash_rng = Rng::new(seed ^ 3);
    let flight = Arc::new(Flight::default());
    let mut phases = Phases::start();
    let played = play(&history, &webhook, &clock, &mut rng, &flight, |_| {
        // The processor crashes now and then, whatever it is doing.
        if crash_rng.chance(0.05) {
            processor_crashes += 1;
            let mut running = processor.lock().unwrap();
            running.abort();
            *running = spawn();
        }
        if crash_rng.chance(0.05) {
            forwarder_crashes += 1;
            let mut running = forwarder.lock().unwrap();
            running.abort();
            *running = spawn_forwarder();
        }
    })
    .await;
    phases.lap("play");

    faults.heal();
    let mut settled = BTreeMap::new();
    settled.insert("processor_crashes".to_owned(), processor_crashes);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let swept = sweep(&store, &store, 1000).await.expect("sweep").redriven;
        *settled.entry("swept".into()).or_default() += swept;
        let counts = store.counts().await.expect("counts");
        if counts.dead_letters > 0 {
            let moved = store.redrive_dead_letters(None).await.expect("redrive");
            *settled.entry("dead_letters_redriven".into()).or_default() += moved;
        }
        let marked = store.oldest_mark().await.expect("marks");
        if counts.queued == 0 && counts.dead_letters == 0 && marked.is_none() {
            break;
        }
        if Instant::now() > deadline {
            settled.insert(
                "unsettled".into(),
                counts.queued as usize + counts.dead_letters as usize,
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    processor.lock().unwrap().abort();
    settled.insert("forwarder_crashes".to_owned(), forwarder_crashes);
    // The window timer, once, after the history: every window due now.
    let timer_now = now_unix();
    let windows = store
        .announce_due_windows(timer_now, WINDOW_LEAD)
        .await
        .expect("window timer");
    settled.insert("windows_announced".to_owned(), windows);
    phases.lap("settle");
    let announced = announced_changes(&store).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !delivered_all(&target, &announced) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    forwarder.lock().unwrap().abort();
    let dead = store.forward_counts().await.expect("forward counts").dead;
    settled.insert("forwards_dead_lettered".to_owned(), dead);
    phases.lap("forward");

    let verified = verify(
        &history,
        &played.receipts,
        &read_router(Arc::new(store.clone())),
    )
    .await;
    let mut changes = changes::verify_changes(
        &history.callbacks,
        &played.receipts,
        &target.received(),
        &announced,
        timer_now,
        WINDOW_LEAD,
    );
    changes.transport = target.faults();
    phases.lap("verify");
    Report {
        backend: "embedded",
        seed,
        contacts: scale.contacts,
        messages: history.messages,
        cases: history.cases.clone(),
        played,
        faults_injected: named(faults.injected()),
        real_failures: named(faults.real_failures()),
        real_errors: named(faults.real_errors()),
        emulator_faults: Vec::new(),
        settled,
        verified,
        changes: Some(changes),
        phases: phases.laps,
        seconds: started.elapsed().as_secs_f64(),
    }
    .finish();
}

/// How long before a window's end its closing falls due (the default).
const WINDOW_LEAD: i64 = 3_600;
const FORWARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The forwarder gives an attempt this long; a hanging target answers after `FORWARD_HANG`.
const FORWARD_TIMEOUT: Duration = Duration::from_millis(400);
const FORWARD_HANG: Duration = Duration::from_millis(1_500);
const FORWARD_SCHEDULE: ForwardSchedule = ForwardSchedule {
    first_retry: Duration::from_millis(20),
    max_retry: Duration::from_millis(200),
    horizon: Duration::from_secs(3_600),
    timeout: FORWARD_TIMEOUT,
    concurrency: 16,
    poll: Duration::from_millis(20),
};

/// Every change id the outbox holds.
async fn announced_changes(store: &EmbeddedStore) -> std::collections::BTreeSet<String> {
    let mut ids = std::collections::BTreeSet::new();
    let mut after = 0;
    loop {
        let page = store.changes_after(after, 1000).await.expect("feed");
        let Some(last) = page.last() else { break };
        after = last.seq;
        for entry in &page {
            let document: Value = serde_json::from_str(&entry.document).expect("a document");
            ids.insert(document["id"].as_str().expect("an id").to_owned());
        }
    }
    ids
}

fn delivered_all(
    target: &changes::FlakyTarget,
    announced: &std::collections::BTreeSet<String>,
) -> bool {
    let delivered: std::collections::BTreeSet<String> = target
        .received()
        .iter()
        .filter_map(|d| d["id"].as_str().map(str::to_owned))
        .collect();
    announced.is_subset(&delivered)
}
