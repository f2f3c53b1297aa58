//! What the local-server benches share (`load_local`, `broadcast`): the server started in this
//! process as `make run` starts it, a wrk-style HTTP/1.1 client, the open loop and the wait for
//! the processor. Included by path (`#[path = "common/local.rs"] mod local;`), not from
//! `common/mod.rs`: `load_aws` has no local server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wati_ingest::local::{bind, ForwardConfig, LocalConfig, LocalPipeline, SecretSource};
use wati_ingest::store::embedded::EmbeddedStore;

/// The webhook secret, and the read API's token.
pub const SECRET: &str = "load-test-webhook-secret-0123456789";

/// The local server, serving on `address` from a temporary `DATA_DIR`, processor running.
pub struct LocalServer {
    pub store: EmbeddedStore,
    pub address: SocketAddr,
    /// Removed when the server is dropped.
    _dir: tempfile::TempDir,
}

impl LocalServer {
    /// Starts the pipeline as `make run` does (processor, forwarder when `forward` is set; no
    /// window timer), durable writes included, on a free port.
    pub async fn start(forward: Option<ForwardConfig>) -> LocalServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = LocalConfig {
            bind: std::net::Ipv4Addr::LOCALHOST.into(),
            port: 0,
            data_dir: dir.path().to_owned(),
            webhook_secret: SECRET.into(),
            webhook_secret_source: SecretSource::Environment,
            api_token: SECRET.into(),
            api_token_source: SecretSource::Environment,
            dedup_ttl_days: 7,
            max_body_bytes: 256 * 1024,
            window_closing_lead_minutes: 60,
            quarantine_retention_days: 30,
            forward,
        };
        let pipeline = LocalPipeline::open(&config).expect("pipeline");
        let store = pipeline.store.clone();
        pipeline.spawn_processor();
        pipeline.spawn_forwarder();
        let (listener, address) = bind(0).await.expect("bind");
        tokio::spawn(pipeline.serve(listener, std::future::pending()));
        LocalServer {
            store,
            address,
            _dir: dir,
        }
    }

    /// The bytes of a webhook `POST` of `body`.
    pub fn webhook(&self, body: &[u8]) -> Vec<u8> {
        request_bytes(self.address, &format!("/webhook/{SECRET}"), body)
    }

    /// Waits until the processor has emptied the queue, polling every `every`, for at most
    /// `limit`; whether it did.
    pub async fn drain(&self, every: Duration, limit: Duration) -> bool {
        let started = Instant::now();
        while self.store.counts().await.map(|c| c.queued).unwrap_or(1) > 0 {
            if started.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(every).await;
        }
        true
    }
}

/// `write_bytes` of /proc/self/io: what this process caused to be written to storage.
pub fn disk_bytes_written() -> u64 {
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
pub struct Http1Client {
    address: SocketAddr,
    idle: Mutex<Vec<TcpStream>>,
}

impl Http1Client {
    pub fn new(address: SocketAddr) -> Self {
        Http1Client {
            address,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends one prepared request; whether it was answered `200`.
    pub async fn post(&self, request: &[u8]) -> bool {
        matches!(self.send(request).await, Some((200, _)))
    }

    /// Sends one prepared request: the response's status and body (`None` when none came).
    pub async fn send(&self, request: &[u8]) -> Option<(u16, Vec<u8>)> {
        let idle = self.idle.lock().expect("pool lock").pop();
        let mut connection = match idle {
            Some(connection) => connection,
            None => match TcpStream::connect(self.address).await {
                Ok(connection) if connection.set_nodelay(true).is_ok() => connection,
                _ => return None,
            },
        };
        let (status, keep_alive, body) = exchange(&mut connection, request).await.ok()?;
        if keep_alive {
            self.idle.lock().expect("pool lock").push(connection);
        }
        Some((status, body))
    }
}

/// Writes `request` and reads one response: its status, whether the connection stays open, and
/// its body.
async fn exchange(
    connection: &mut TcpStream,
    request: &[u8],
) -> std::io::Result<(u16, bool, Vec<u8>)> {
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
    while response.len() - head_end < length {
        let read = read_some(&mut chunk).await?;
        response.extend_from_slice(&chunk[..read]);
    }
    if response.len() - head_end > length {
        return Err(malformed("more bytes than one response"));
    }
    Ok((status, keep_alive, response.split_off(head_end)))
}

/// The bytes of a `POST` of `body` to `path`.
pub fn request_bytes(address: SocketAddr, path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// One request answered `200`: which, its latency, and when the answer was read.
pub struct Answer {
    pub n: usize,
    pub latency: Duration,
    pub at: Instant,
}

/// Request `n` starts at `n / rate` seconds, answered or not; latency counts from that moment.
/// `answered(n, at)` is called as soon as request `n`'s `200` is read (at `at`).
pub async fn open_loop(
    client: &Arc<Http1Client>,
    prepared: &Arc<Vec<Vec<u8>>>,
    rate: usize,
    max_in_flight: usize,
    answered: impl Fn(usize, Instant) + Send + Sync + 'static,
) -> (Vec<Answer>, usize) {
    let answered = Arc::new(answered);
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
        let (client, prepared, answered) = (client.clone(), prepared.clone(), answered.clone());
        requests.spawn(async move {
            let ok = client.post(&prepared[n]).await;
            drop(permit);
            if ok {
                let at = Instant::now();
                answered(n, at);
                let latency = at - scheduled;
                (vec![Answer { n, latency, at }], 0)
            } else {
                (Vec::new(), 1)
            }
        });
    }
    collect(requests).await
}

pub async fn collect(
    mut tasks: tokio::task::JoinSet<(Vec<Answer>, usize)>,
) -> (Vec<Answer>, usize) {
    let mut answers = Vec::new();
    let mut failures = 0;
    while let Some(result) = tasks.join_next().await {
        let (mut answered, failed) = result.expect("load task");
        answers.append(&mut answered);
        failures += failed;
    }
    (answers, failures)
}
