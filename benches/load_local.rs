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
//! `make load` runs it. Settings: `LOAD_REQUESTS` (default 20000), `LOAD_CONCURRENCY`,
//! `LOAD_RATE`. The server runs in this process on the same 2 cores as the client, so figures are
//! a floor; the client is a bounded HTTP/1.1 keep-alive client in the style of wrk
//! ([`Http1Client`]) so that it takes as little of them as it can.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{percentile, setting};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wati_ingest::local::{bind, LocalConfig, LocalPipeline, SecretSource};

const SECRET: &str = "load-test-webhook-secret-0123456789";

fn body(n: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "eventType": if n % 3 == 0 { "templateMessageSent" } else { "sentMessageDELIVERED_v2" },
        "id": format!("{n:024x}"),
        "whatsappMessageId": format!("wamid.LOAD{n:012}"),
        "localMessageId": format!("local-{n}"),
        "waId": "14155550101",
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = LocalConfig {
            port: 0,
            data_dir: dir.path().to_owned(),
            webhook_secret: SECRET.into(),
            webhook_secret_source: SecretSource::Environment,
            api_token: SECRET.into(),
            api_token_source: SecretSource::Environment,
            dedup_ttl_days: 7,
            max_body_bytes: 256 * 1024,
            window_closing_lead_minutes: 60,
            forward: None,
        };
        let pipeline = LocalPipeline::open(&config).expect("pipeline");
        let store = pipeline.store.clone();
        pipeline.spawn_processor();
        let (listener, address) = bind(0).await.expect("bind");
        tokio::spawn(pipeline.serve(listener, std::future::pending()));
        let path = format!("/webhook/{SECRET}");
        let prepared: Arc<Vec<Vec<u8>>> = Arc::new(
            (0..requests)
                .map(|n| request_bytes(address, &path, &body(n)))
                .collect(),
        );
        let client = Arc::new(Http1Client::new(address));
        let written_before = disk_bytes_written();
        let started = Instant::now();
        let (mut latencies, failures) = if rate > 0 {
            open_loop(&client, &prepared, rate, concurrency).await
        } else {
            closed_loop(&client, &prepared, concurrency).await
        };
        let elapsed = started.elapsed();
        latencies.sort_unstable();
        let drained = Instant::now();
        while store.counts().await.map(|c| c.queued).unwrap_or(1) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let counts = store.counts().await.expect("counts");
        // Bytes this process sent to the disk (WAL, checkpoints) per accepted webhook, processing
        // included; 0 where /proc/self/io is unavailable.
        let written_per_event = disk_bytes_written().saturating_sub(written_before) as f64
            / latencies.len().max(1) as f64;
        println!("| metric | value |");
        println!("|---|---|");
        let mode = if rate > 0 {
            format!("open loop at {rate}/s, at most {concurrency} in flight")
        } else {
            format!("closed loop, concurrency {concurrency}")
        };
        println!("| requests | {requests} ({mode}) |");
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
            drained.elapsed().as_secs_f64()
        );
        println!("| messages applied | {} |", counts.messages);
        println!(
            "| disk bytes written per webhook | {:.0} |",
            written_per_event
        );
        // One machine-readable line for scripts/performance-report.py (`make bench`).
        println!(
            "RESULT bench=load_local requests={requests} concurrency={concurrency} rate={rate} accepted={} \
             failed={failures} accepted_per_s={:.1} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} \
             drain_s={:.3} applied={} disk_bytes_per_event={:.0}",
            latencies.len(),
            latencies.len() as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            drained.elapsed().as_secs_f64(),
            counts.messages,
            written_per_event
        );
    });
}

/// `write_bytes` of /proc/self/io: what this process caused to be written to storage.
fn disk_bytes_written() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|line| line.strip_prefix("write_bytes:"))
                .and_then(|value| value.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A bounded HTTP/1.1 keep-alive client, like wrk's: each request's bytes are built before the
/// clock starts, and a response is read up to its `Content-Length` and judged by its status line.
/// reqwest builds a request (URL parse, header map, pool checkout) per call; this leaves the shared
/// 2 cores to the server under test. Connections are reused; at most one request per connection.
struct Http1Client {
    address: SocketAddr,
    idle: Mutex<Vec<TcpStream>>,
}

impl Http1Client {
    fn new(address: SocketAddr) -> Self {
        Http1Client {
            address,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends one prepared request; whether it was answered `200`.
    async fn post(&self, request: &[u8]) -> bool {
        let idle = self.idle.lock().expect("pool lock").pop();
        let mut connection = match idle {
            Some(connection) => connection,
            None => match TcpStream::connect(self.address).await {
                Ok(connection) if connection.set_nodelay(true).is_ok() => connection,
                _ => return false,
            },
        };
        match exchange(&mut connection, request).await {
            Ok((status, keep_alive)) => {
                if keep_alive {
                    self.idle.lock().expect("pool lock").push(connection);
                }
                status == 200
            }
            Err(_) => false,
        }
    }
}

/// Writes `request` and reads one response: its status and whether the connection stays open.
async fn exchange(connection: &mut TcpStream, request: &[u8]) -> std::io::Result<(u16, bool)> {
    let malformed =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    connection.write_all(request).await?;
    let mut response = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    // A read of 0 bytes is the server closing mid-response.
    let mut read_some = async |chunk: &mut [u8]| match connection.read(chunk).await? {
        0 => Err(malformed("closed inside the response")),
        read => Ok(read),
    };
    let head_end = loop {
        let read = read_some(&mut chunk).await?;
        response.extend_from_slice(&chunk[..read]);
        if let Some(at) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head =
        std::str::from_utf8(&response[..head_end]).map_err(|_| malformed("head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.strip_prefix("HTTP/1.1 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| malformed("no HTTP/1.1 status line"))?;
    let mut content_length = None;
    let mut keep_alive = true;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            keep_alive = false;
        }
    }
    // Chunked or unsized bodies never come from this server; treat one as a failure, not a guess.
    let length = content_length.ok_or_else(|| malformed("no Content-Length"))?;
    let mut body_read = response.len() - head_end;
    while body_read < length {
        body_read += read_some(&mut chunk).await?;
    }
    if body_read > length {
        return Err(malformed("more bytes than one response"));
    }
    Ok((status, keep_alive))
}

/// The bytes of a `POST` of `body` to `path`.
fn request_bytes(address: SocketAddr, path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// `concurrency` clients, each sending its next request when the last was answered.
async fn closed_loop(
    client: &Arc<Http1Client>,
    prepared: &Arc<Vec<Vec<u8>>>,
    concurrency: usize,
) -> (Vec<Duration>, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, prepared, next) = (client.clone(), prepared.clone(), next.clone());
        workers.spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0usize;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(request) = prepared.get(n) else {
                    break;
                };
                let sent = Instant::now();
                if client.post(request).await {
                    latencies.push(sent.elapsed());
                } else {
                    failures += 1;
                }
            }
            (latencies, failures)
        });
    }
    collect(workers).await
}

/// Request `n` starts at `n / rate` seconds, answered or not; latency counts from that moment.
async fn open_loop(
    client: &Arc<Http1Client>,
    prepared: &Arc<Vec<Vec<u8>>>,
    rate: usize,
    max_in_flight: usize,
) -> (Vec<Duration>, usize) {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for n in 0..prepared.len() {
        let scheduled = start + interval * n as u32;
        // The timer wheel ticks in milliseconds: requests due within the same tick leave together.
        tokio::time::sleep_until(scheduled.into()).await;
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open");
        let (client, prepared) = (client.clone(), prepared.clone());
        requests.spawn(async move {
            let answered = client.post(&prepared[n]).await;
            drop(permit);
            if answered {
                (vec![scheduled.elapsed()], 0)
            } else {
                (Vec::new(), 1)
            }
        });
    }
    collect(requests).await
}

async fn collect(
    mut tasks: tokio::task::JoinSet<(Vec<Duration>, usize)>,
) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::new();
    let mut failures = 0;
    while let Some(result) = tasks.join_next().await {
        let (mut answered, failed) = result.expect("load task");
        latencies.append(&mut answered);
        failures += failed;
    }
    (latencies, failures)
}
