//! Load test of the local server: distinct webhooks at a fixed concurrency, measuring accepted
//! webhooks per second and accept latency (request to `200`), with durable (fsync) writes.
//!
//! Two ways to load it:
//! - closed loop (default): `LOAD_CONCURRENCY` clients (64) each send their next request when the
//!   last one is answered: the peak accept rate, with latency that grows with the queue;
//! - open loop (`LOAD_RATE` set, requests per second): requests start on a fixed schedule whether
//!   or not earlier ones were answered, and each latency counts from its scheduled start, so a
//!   server that falls behind shows it (no coordinated omission). This is the "sustained rate
//!   with p99 accept latency" figure. At most `LOAD_CONCURRENCY` (here default 1024) in flight.
//!
//! With `LOAD_FORWARD=1` the server also forwards every change document (`FORWARD_URL`, the
//! default [`ForwardSchedule`]) to an HTTP receiver in this process ([`ChangeReceiver`]: answers
//! `204`, records when each document arrived). The change lag of a webhook is the arrival of the
//! first document announcing its message minus the instant its `200` reached the client. After the
//! load the bench waits up to `LOAD_FORWARD_DRAIN_SECONDS` (60) for every change to be delivered
//! and reports the messages whose change never arrived.
//!
//! Each webhook names a new message; `LOAD_MESSAGES_PER_CONTACT` (10) consecutive ones share a
//! contact (every change announces its contact's view, built from all of the contact's messages).
//!
//! `make load` runs it. Settings: `LOAD_REQUESTS` (default 20000), `LOAD_CONCURRENCY`,
//! `LOAD_RATE`, `LOAD_MESSAGES_PER_CONTACT`, `LOAD_DRAIN_SECONDS` (300: the longest wait for the
//! processor after the load), `LOAD_FORWARD`, `LOAD_FORWARD_DRAIN_SECONDS`. The server (and the
//! forward receiver) runs in this process on the same 2 cores as the client, so figures are a
//! floor; the client is a bounded HTTP/1.1 keep-alive client in the style of wrk
//! ([`Http1Client`]) so that it takes as little of them as it can.

mod common;
#[path = "common/local.rs"]
mod local;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::{percentile, setting};
use local::{collect, disk_bytes_written, open_loop, Answer, Http1Client, LocalServer};
use tokio::net::TcpListener;
use wati_ingest::forward::ForwardSchedule;
use wati_ingest::local::{ForwardConfig, SecretSource};
/// Signs the forwarded changes (the receiver does not check: the forward tests do).
const FORWARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Wati's id of the message webhook `n` is about: what its change documents carry as
/// `message.id`.
fn message_id(n: usize) -> String {
    format!("{n:024x}")
}

/// The contact of webhook `n`: `per_contact` consecutive messages each. Every change of a message
/// announces its contact's whole view, which the local store builds from all of the contact's
/// messages: one contact for every webhook would make the processor's work grow with the run.
fn wa_id(n: usize, per_contact: usize) -> String {
    format!("1415{:07}", n / per_contact.max(1))
}

fn body(n: usize, per_contact: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "eventType": if n % 3 == 0 { "templateMessageSent" } else { "sentMessageDELIVERED_v2" },
        "id": message_id(n),
        "whatsappMessageId": format!("wamid.LOAD{n:012}"),
        "localMessageId": format!("local-{n}"),
        "waId": wa_id(n, per_contact),
        "timestamp": "1764238453",
        "statusString": "Delivered",
        "text": "Your order #1039 has shipped and will arrive on Friday.",
        "type": "text",
        "data": null,
        "owner": true,
        "channelPhoneNumber": "14155550000",
    }))
    .expect("serialise")
}

fn main() {
    let requests = setting("LOAD_REQUESTS", 20_000);
    let rate = setting("LOAD_RATE", 0);
    let concurrency = setting("LOAD_CONCURRENCY", if rate > 0 { 1024 } else { 64 });
    let per_contact = setting("LOAD_MESSAGES_PER_CONTACT", 10);
    let forward = setting("LOAD_FORWARD", 0) > 0;
    let forward_drain = Duration::from_secs(setting("LOAD_FORWARD_DRAIN_SECONDS", 60) as u64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let receiver = if forward {
            Some(ChangeReceiver::start().await)
        } else {
            None
        };
        // What `make run` does with FORWARD_URL set: the documented schedule.
        let server = LocalServer::start(receiver.as_ref().map(|receiver| ForwardConfig {
            url: receiver.url.clone(),
            secret: FORWARD_SECRET.into(),
            secret_source: SecretSource::Environment,
            schedule: ForwardSchedule::default(),
        }))
        .await;
        let (store, address) = (server.store.clone(), server.address);
        let prepared: Arc<Vec<Vec<u8>>> = Arc::new(
            (0..requests)
                .map(|n| server.webhook(&body(n, per_contact)))
                .collect(),
        );
        let client = Arc::new(Http1Client::new(address));
        let written_before = disk_bytes_written();
        let started = Instant::now();
        let (answers, failures) = if rate > 0 {
            open_loop(&client, &prepared, rate, concurrency, |_, _| {}).await
        } else {
            closed_loop(&client, &prepared, concurrency).await
        };
        let elapsed = started.elapsed();
        let last_answer = Instant::now();
        let mut latencies: Vec<Duration> = answers.iter().map(|a| a.latency).collect();
        latencies.sort_unstable();
        // The processor catches up after the load; a run never waits more than LOAD_DRAIN_SECONDS.
        let drain_limit = Duration::from_secs(setting("LOAD_DRAIN_SECONDS", 300) as u64);
        if !server.drain(Duration::from_millis(10), drain_limit).await {
            eprintln!("load_local: the queue not drained {drain_limit:?} after the load");
        }
        let processor_drain = last_answer.elapsed();
        let counts = store.counts().await.expect("counts");
        // Bytes this process sent to the disk (WAL, checkpoints) per accepted webhook, processing
        // included; 0 where /proc/self/io is unavailable.
        let written_per_event = disk_bytes_written().saturating_sub(written_before) as f64
            / latencies.len().max(1) as f64;
        let forwarded = match &receiver {
            Some(receiver) => Some(
                wait_for_forwards(&store, receiver, &answers, started, forward_drain).await,
            ),
            None => None,
        };
        println!("| metric | value |");
        println!("|---|---|");
        let mode = if rate > 0 {
            format!("open loop at {rate}/s, at most {concurrency} in flight")
        } else {
            format!("closed loop, concurrency {concurrency}")
        };
        let mode = if forward {
            format!("{mode}, forwarding every change to a receiver in this process")
        } else {
            mode
        };
        println!("| requests | {requests} ({mode}; {per_contact} messages per contact) |");
        println!("| accepted (200) | {} |", latencies.len());
        println!("| failed | {failures} |");
        println!(
            "| accepted per second | {:.0} |",
            latencies.len() as f64 / elapsed.as_secs_f64()
        );
        println!(
            "| accept latency p50 | {:.2} ms |",
            percentile(&latencies, 0.50).as_secs_f64() * 1e3
        );
        println!(
            "| accept latency p99 | {:.2} ms |",
            percentile(&latencies, 0.99).as_secs_f64() * 1e3
        );
        println!(
            "| accept latency max | {:.2} ms |",
            latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
        );
        println!(
            "| processor drain after last accept | {:.2} s |",
            processor_drain.as_secs_f64()
        );
        println!(
            "| messages applied | {} ({} still queued) |",
            counts.messages, counts.queued
        );
        println!(
            "| disk bytes written per webhook | {:.0} |",
            written_per_event
        );
        if let Some(forwarded) = &forwarded {
            forwarded.print_rows();
        }
        // One machine-readable line for scripts/performance-report.py (`make bench`).
        println!(
            "RESULT bench=load_local requests={requests} concurrency={concurrency} rate={rate} accepted={} \
             failed={failures} accepted_per_s={:.1} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} \
             drain_s={:.3} applied={} queued={} per_contact={per_contact} \
             disk_bytes_per_event={:.0} forward={}{}",
            latencies.len(),
            latencies.len() as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            processor_drain.as_secs_f64(),
            counts.messages,
            counts.queued,
            written_per_event,
            u8::from(forward),
            forwarded.map(|f| f.result_fields()).unwrap_or_default(),
        );
    });
}

// ---------------------------------------------------------------------------------------------
// Forwarding: the receiver and the change lag

/// What the forward receiver saw.
#[derive(Default)]
struct Arrivals {
    /// Requests received (a change sent twice counts twice).
    documents: usize,
    /// Distinct `webhook-id`s (change ids).
    change_ids: HashSet<String>,
    /// Per `message.id`: when the first document announcing that message arrived.
    first_by_message: HashMap<String, Instant>,
}

/// The forward target: `POST /changes` answered `204` at once, each arrival recorded.
struct ChangeReceiver {
    url: String,
    arrivals: Arc<Mutex<Arrivals>>,
}

/// The part of a change document the receiver reads: a `message.updated` names its message.
#[derive(serde::Deserialize)]
struct Document {
    message: Option<DocumentMessage>,
}

#[derive(serde::Deserialize)]
struct DocumentMessage {
    id: Option<String>,
}

async fn arrive(
    State(arrivals): State<Arc<Mutex<Arrivals>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let at = Instant::now();
    let change_id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let message = serde_json::from_slice::<Document>(&body)
        .ok()
        .and_then(|document| document.message)
        .and_then(|message| message.id);
    let mut arrivals = arrivals.lock().expect("arrivals lock");
    arrivals.documents += 1;
    if let Some(change_id) = change_id {
        arrivals.change_ids.insert(change_id);
    }
    if let Some(message) = message {
        arrivals.first_by_message.entry(message).or_insert(at);
    }
    StatusCode::NO_CONTENT
}

impl ChangeReceiver {
    async fn start() -> ChangeReceiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!(
            "http://{}/changes",
            listener.local_addr().expect("receiver address")
        );
        let arrivals = Arc::new(Mutex::new(Arrivals::default()));
        let router = axum::Router::new()
            .route("/changes", axum::routing::post(arrive))
            .with_state(arrivals.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        ChangeReceiver { url, arrivals }
    }

    /// The lag of each of the `answers`' messages, sorted: [`NEVER`] for a message whose change
    /// has not arrived; and how many have not.
    fn lags(&self, answers: &[Answer]) -> (Vec<Duration>, usize) {
        let arrivals = self.arrivals.lock().expect("arrivals lock");
        let mut lags = Vec::with_capacity(answers.len());
        let mut missing = 0;
        for answer in answers {
            match arrivals.first_by_message.get(&message_id(answer.n)) {
                // A change can reach the receiver before the client task reads its 200.
                Some(arrived) => lags.push(arrived.saturating_duration_since(answer.at)),
                None => {
                    missing += 1;
                    lags.push(NEVER);
                }
            }
        }
        lags.sort_unstable();
        (lags, missing)
    }
}

/// The lag of a message whose change never arrived: percentiles count it as longer than any.
const NEVER: Duration = Duration::MAX;

/// What forwarding did in one run.
struct Forwarded {
    /// Messages accepted (one per accepted webhook here: every body names a new message).
    messages: usize,
    missing: usize,
    lags: Vec<Duration>,
    /// Changes the outbox holds, and those the forwarder recorded as delivered or dead.
    outbox: i64,
    delivered: usize,
    dead: usize,
    /// Requests the receiver got, and distinct change ids among them.
    documents: usize,
    distinct: usize,
    /// From the last accept until every change was delivered (or the wait ended).
    drain: Duration,
    drained: bool,
    /// From the first request until every change was delivered (or the wait ended).
    since_start: Duration,
}

/// Waits (up to `wait`) until every message accepted has its change at the receiver and the
/// forwarder has delivered the whole outbox; then the figures.
async fn wait_for_forwards(
    store: &wati_ingest::store::embedded::EmbeddedStore,
    receiver: &ChangeReceiver,
    answers: &[Answer],
    started: Instant,
    wait: Duration,
) -> Forwarded {
    let last_answer = answers.iter().map(|a| a.at).max().unwrap_or(started);
    // The wait starts once the processor has drained the queue.
    let deadline = Instant::now() + wait;
    let drained = loop {
        // Every body names a new message: the whole check only once as many have arrived.
        let arrived = receiver
            .arrivals
            .lock()
            .expect("arrivals lock")
            .first_by_message
            .len();
        if arrived >= answers.len() && receiver.lags(answers).1 == 0 {
            // (`seq` has gaps: the outbox's size is what was delivered plus what is left.)
            let counts = store.forward_counts().await.unwrap_or_default();
            if counts.delivered + counts.dead > 0 && counts.backlog() == 0 {
                break true;
            }
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let drain = last_answer.elapsed();
    let since_start = started.elapsed();
    let (lags, missing) = receiver.lags(answers);
    let counts = store.forward_counts().await.unwrap_or_default();
    let outbox = (counts.delivered + counts.dead + counts.backlog()) as i64;
    let arrivals = receiver.arrivals.lock().expect("arrivals lock");
    Forwarded {
        messages: answers.len(),
        missing,
        lags,
        outbox,
        delivered: counts.delivered,
        dead: counts.dead,
        documents: arrivals.documents,
        distinct: arrivals.change_ids.len(),
        drain,
        drained,
        since_start,
    }
}

impl Forwarded {
    /// The `p` quantile of the lags in ms, over every message accepted: infinite when it falls
    /// among the messages whose change never arrived.
    fn lag_ms(&self, p: f64) -> f64 {
        match self.lags.is_empty() {
            true => f64::NAN,
            false => match percentile(&self.lags, p) {
                NEVER => f64::INFINITY,
                lag => lag.as_secs_f64() * 1e3,
            },
        }
    }

    /// The longest lag of a change that arrived.
    fn max_lag_ms(&self) -> f64 {
        self.lags
            .iter()
            .rev()
            .find(|lag| **lag != NEVER)
            .map_or(f64::NAN, |lag| lag.as_secs_f64() * 1e3)
    }

    /// Changes delivered per second, from the first request until the last was (or the wait
    /// ended).
    fn delivered_per_s(&self) -> f64 {
        self.delivered as f64 / self.since_start.as_secs_f64()
    }

    fn print_rows(&self) {
        println!(
            "| changes in the outbox | {} ({} delivered, {} dead; {:.0} delivered/s) |",
            self.outbox,
            self.delivered,
            self.dead,
            self.delivered_per_s()
        );
        println!(
            "| forward requests received | {} ({} distinct change ids) |",
            self.documents, self.distinct
        );
        println!(
            "| messages whose change arrived | {} of {} ({} missing) |",
            self.messages - self.missing,
            self.messages,
            self.missing
        );
        for (name, p) in [("p50", 0.50), ("p95", 0.95), ("p99", 0.99)] {
            let lag = self.lag_ms(p);
            if lag.is_finite() {
                println!("| change lag {name} (200 to first document) | {lag:.1} ms |");
            } else {
                println!("| change lag {name} (200 to first document) | never arrived |");
            }
        }
        println!(
            "| change lag max (of the changes that arrived) | {:.1} ms |",
            self.max_lag_ms()
        );
        println!(
            "| forward drain after last accept | {:.2} s{} |",
            self.drain.as_secs_f64(),
            if self.drained { "" } else { " (gave up)" }
        );
    }

    /// The forwarding fields of the `RESULT` line (each with its leading space).
    fn result_fields(&self) -> String {
        format!(
            " messages={} missing={} outbox={} delivered={} dead={} documents={} distinct={} \
             lag_p50_ms={:.3} lag_p95_ms={:.3} lag_p99_ms={:.3} lag_max_ms={:.3} \
             forward_drain_s={:.3} forward_drained={} delivered_per_s={:.1}",
            self.messages,
            self.missing,
            self.outbox,
            self.delivered,
            self.dead,
            self.documents,
            self.distinct,
            self.lag_ms(0.50),
            self.lag_ms(0.95),
            self.lag_ms(0.99),
            self.max_lag_ms(),
            self.drain.as_secs_f64(),
            u8::from(self.drained),
            self.delivered_per_s(),
        )
    }
}

/// `concurrency` clients, each sending its next request when the last was answered.
async fn closed_loop(
    client: &Arc<Http1Client>,
    prepared: &Arc<Vec<Vec<u8>>>,
    concurrency: usize,
) -> (Vec<Answer>, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, prepared, next) = (client.clone(), prepared.clone(), next.clone());
        workers.spawn(async move {
            let mut answers = Vec::new();
            let mut failures = 0usize;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(request) = prepared.get(n) else {
                    break;
                };
                let sent = Instant::now();
                if client.post(request).await {
                    let at = Instant::now();
                    answers.push(Answer {
                        n,
                        latency: at - sent,
                        at,
                    });
                } else {
                    failures += 1;
                }
            }
            (answers, failures)
        });
    }
    collect(workers).await
}
