//! A broadcast replayed on the local server (issue 18 §3): `BROADCAST_CONTACTS` (50,000) template
//! messages and their callbacks as Wati would post them (sent, then delivered, read and replies
//! interleaved, v1 and v2: `common/broadcast.rs`), offered in an open loop at `BROADCAST_RATE`
//! (2,000/s) with at most `BROADCAST_IN_FLIGHT` (1024) in flight. The server runs in this process
//! as in `load_local` (SQLite, fsync'd writes, the processor applying at the same time).
//!
//! Reports:
//! - accept latency (from each callback's scheduled start to its `200`: no coordinated
//!   omission) and the rate sustained;
//! - apply lag: for a sample of callbacks (every `BROADCAST_LAG_SAMPLE`th (100) of those whose
//!   fact is new, i.e. the first of a v1/v2 pair), from its `200` to the first
//!   `GET /v1/messages/{id}` whose answer shows its fact (`sent_at`, `delivered_at`, `read_at`,
//!   `replied_at` non-null; the reply found at all). Each sample is read again every
//!   max(2 ms, lag so far / 10), at most 1 s apart: a lag is overstated by at most 10% (or 2 ms),
//!   and the reads add about 10 requests per sample;
//! - the time to drain the queue after the last accept, and events applied per second (every
//!   callback accepted, from the first request until the queue was empty);
//! - the deepest queue seen (sampled every second while offering).
//!
//! `make broadcast` runs it; `make bench` too. Settings: `BROADCAST_CONTACTS`, `BROADCAST_RATE`,
//! `BROADCAST_IN_FLIGHT`, `BROADCAST_LAG_SAMPLE`, `BROADCAST_SEED` (18),
//! `BROADCAST_DRAIN_SECONDS` (600: the longest wait for the processor, and for a sample's fact).

mod common;
#[path = "common/local.rs"]
mod local;
#[path = "common/broadcast.rs"]
mod profile;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{percentile, setting};
use local::{disk_bytes_written, open_loop, Http1Client, LocalServer, SECRET};

/// A sampled callback: the read that shows its fact, and which field does.
struct Probe {
    request: Vec<u8>,
    field: &'static str,
}

/// What one replay measured.
struct Figures {
    contacts: usize,
    callbacks: usize,
    rate: usize,
    in_flight: usize,
    seed: u64,
    /// Accept latencies, sorted.
    latencies: Vec<Duration>,
    failures: usize,
    /// From the first request to the last `200`.
    offered_for: Duration,
    /// Lags of the samples whose fact was seen, sorted; samples never seen.
    lags: Vec<Duration>,
    lag_missing: usize,
    /// From the last `200` to an empty queue (or the wait's end).
    drain: Duration,
    drained: bool,
    /// From the first request to an empty queue.
    applying: Duration,
    deepest_queue: u64,
    counts: wati_ingest::store::embedded::Counts,
    disk_bytes: u64,
}

fn main() {
    let contacts = setting("BROADCAST_CONTACTS", 50_000);
    let rate = setting("BROADCAST_RATE", 2_000);
    let in_flight = setting("BROADCAST_IN_FLIGHT", 1024);
    let sample_every = setting("BROADCAST_LAG_SAMPLE", 100).max(1);
    let seed = setting("BROADCAST_SEED", 18) as u64;
    let wait_limit = Duration::from_secs(setting("BROADCAST_DRAIN_SECONDS", 600) as u64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let figures = runtime.block_on(async move {
        let server = LocalServer::start(None).await;
        let callbacks = profile::broadcast(contacts, seed);
        let mut prepared = Vec::with_capacity(callbacks.len());
        let mut probes = Vec::with_capacity(callbacks.len());
        let mut new_facts = 0usize;
        for callback in callbacks {
            prepared.push(server.webhook(&callback.body));
            let mut sampled = false;
            if callback.first {
                sampled = new_facts % sample_every == 0;
                new_facts += 1;
            }
            let path = format!("/v1/messages/{}", callback.fact.message);
            probes.push(sampled.then(|| Probe {
                request: get_bytes(server.address, &path),
                field: callback.fact.field,
            }));
        }
        let (prepared, probes) = (Arc::new(prepared), Arc::new(probes));

        // Apply lag: each sampled callback, once answered, is read until its fact shows.
        let reader = Arc::new(Http1Client::new(server.address));
        let lags: Arc<Mutex<Vec<Option<Duration>>>> = Arc::default();
        let on_answer = {
            let (probes, lags) = (probes.clone(), lags.clone());
            move |n: usize, answered: Instant| {
                if probes[n].is_none() {
                    return;
                }
                let (probes, lags, reader) = (probes.clone(), lags.clone(), reader.clone());
                tokio::spawn(async move {
                    let probe = probes[n].as_ref().expect("sampled");
                    let lag = visible_after(&reader, probe, answered, wait_limit).await;
                    lags.lock().expect("lags lock").push(lag);
                });
            }
        };
        // The queue's depth while offering.
        let deepest = Arc::new(AtomicU64::new(0));
        let sampler = {
            let (store, deepest) = (server.store.clone(), deepest.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if let Ok(counts) = store.counts().await {
                        deepest.fetch_max(counts.queued, Ordering::Relaxed);
                    }
                }
            })
        };

        let client = Arc::new(Http1Client::new(server.address));
        let written_before = disk_bytes_written();
        let started = Instant::now();
        let (answers, failures) = open_loop(&client, &prepared, rate, in_flight, on_answer).await;
        let last_answer = answers.iter().map(|a| a.at).max().unwrap_or(started);
        sampler.abort();
        let drained = server.drain(Duration::from_millis(100), wait_limit).await;
        let (drain, applying) = (last_answer.elapsed(), started.elapsed());
        let sampled = answers.iter().filter(|a| probes[a.n].is_some()).count();
        // The last reads come at most 1 s after their fact shows.
        let deadline = Instant::now() + wait_limit;
        while lags.lock().expect("lags lock").len() < sampled && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut latencies: Vec<Duration> = answers.iter().map(|a| a.latency).collect();
        latencies.sort_unstable();
        let mut seen: Vec<Duration> = lags
            .lock()
            .expect("lags lock")
            .iter()
            .flatten()
            .copied()
            .collect();
        seen.sort_unstable();
        Figures {
            contacts,
            callbacks: prepared.len(),
            rate,
            in_flight,
            seed,
            latencies,
            failures,
            offered_for: last_answer - started,
            lag_missing: sampled - seen.len(),
            lags: seen,
            drain,
            drained,
            applying,
            deepest_queue: deepest.load(Ordering::Relaxed),
            counts: server.store.counts().await.expect("counts"),
            disk_bytes: disk_bytes_written().saturating_sub(written_before),
        }
    });
    figures.print();
}

impl Figures {
    fn print(&self) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let quantile = |sorted: &[Duration], p: f64| match sorted.is_empty() {
            true => f64::NAN,
            false => ms(percentile(sorted, p)),
        };
        let longest = |sorted: &[Duration]| sorted.last().map_or(f64::NAN, |d| ms(*d));
        let accepted = self.latencies.len();
        let accepted_per_s = accepted as f64 / self.offered_for.as_secs_f64();
        let applied_per_s = accepted as f64 / self.applying.as_secs_f64();
        let (p50, p99) = (
            quantile(&self.latencies, 0.50),
            quantile(&self.latencies, 0.99),
        );
        let max = longest(&self.latencies);
        let (lag_p50, lag_p99) = (quantile(&self.lags, 0.50), quantile(&self.lags, 0.99));
        let lag_max = longest(&self.lags);
        let disk_per_callback = self.disk_bytes as f64 / accepted.max(1) as f64;
        let (c, rate) = (&self.counts, self.rate);
        let rows = [
            (
                "broadcast".to_owned(),
                format!(
                    "{} contacts: {} callbacks (v1 + v2), seed {}",
                    self.contacts, self.callbacks, self.seed
                ),
            ),
            (
                "offered".to_owned(),
                format!(
                    "open loop at {rate}/s, at most {} in flight; last answer after {:.1} s \
                     (schedule {:.1} s)",
                    self.in_flight,
                    self.offered_for.as_secs_f64(),
                    self.callbacks as f64 / rate as f64
                ),
            ),
            (
                "accepted (200)".to_owned(),
                format!("{accepted} ({accepted_per_s:.0}/s)"),
            ),
            ("failed".to_owned(), self.failures.to_string()),
            (
                "accept latency p50 / p99 / max".to_owned(),
                format!("{p50:.2} / {p99:.2} / {max:.2} ms"),
            ),
            (
                format!(
                    "apply lag p50 / p99 / max (200 to fact readable; {} samples, {} never seen)",
                    self.lags.len(),
                    self.lag_missing
                ),
                format!("{lag_p50:.1} / {lag_p99:.1} / {lag_max:.1} ms"),
            ),
            (
                "queue drained after the last accept".to_owned(),
                format!(
                    "{:.2} s{}",
                    self.drain.as_secs_f64(),
                    if self.drained { "" } else { " (gave up)" }
                ),
            ),
            (
                "events applied per second (first request to empty queue)".to_owned(),
                format!("{applied_per_s:.0}"),
            ),
            (
                "deepest queue (sampled each second)".to_owned(),
                self.deepest_queue.to_string(),
            ),
            (
                "message rows / quarantined / dead letters / still queued".to_owned(),
                format!(
                    "{} / {} / {} / {}",
                    c.messages, c.quarantined, c.dead_letters, c.queued
                ),
            ),
            (
                "disk bytes written per callback".to_owned(),
                format!("{disk_per_callback:.0}"),
            ),
        ];
        println!("| metric | value |");
        println!("|---|---|");
        for (name, value) in rows {
            println!("| {name} | {value} |");
        }
        // One machine-readable line for scripts (`make bench`).
        println!(
            "RESULT bench=broadcast contacts={} callbacks={} rate={rate} in_flight={} \
             accepted={accepted} failed={} accepted_per_s={accepted_per_s:.1} offered_s={:.3} \
             p50_ms={p50:.3} p99_ms={p99:.3} max_ms={max:.3} lag_samples={} lag_missing={} \
             lag_p50_ms={lag_p50:.3} lag_p99_ms={lag_p99:.3} lag_max_ms={lag_max:.3} \
             drain_s={:.3} drained={} applied_per_s={applied_per_s:.1} deepest_queue={} \
             messages={} quarantined={} dead_letters={} queued={} \
             disk_bytes_per_callback={disk_per_callback:.0}",
            self.contacts,
            self.callbacks,
            self.in_flight,
            self.failures,
            self.offered_for.as_secs_f64(),
            self.lags.len(),
            self.lag_missing,
            self.drain.as_secs_f64(),
            u8::from(self.drained),
            self.deepest_queue,
            c.messages,
            c.quarantined,
            c.dead_letters,
            c.queued,
        );
    }
}

/// The bytes of a `GET` of `path` with the read API's bearer token.
fn get_bytes(address: std::net::SocketAddr, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {SECRET}\r\n\r\n")
        .into_bytes()
}

/// From `answered` until a read shows the probe's fact (at that read's answer); `None` if none
/// did within `limit`. Reads every max(2 ms, lag so far / 10), at most 1 s apart.
async fn visible_after(
    reader: &Http1Client,
    probe: &Probe,
    answered: Instant,
    limit: Duration,
) -> Option<Duration> {
    loop {
        if let Some((200, body)) = reader.send(&probe.request).await {
            let shown = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|view| view.get(probe.field).cloned())
                .is_some_and(|value| !value.is_null());
            if shown {
                return Some(answered.elapsed());
            }
        }
        let so_far = answered.elapsed();
        if so_far > limit {
            return None;
        }
        let pause = (so_far / 10).clamp(Duration::from_millis(2), Duration::from_secs(1));
        tokio::time::sleep(pause).await;
    }
}
