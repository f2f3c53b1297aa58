//! `spawn_app()` starts the whole local pipeline on port 0 with its own fresh data directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use wati_ingest::local::{bind, LocalConfig, LocalPipeline, SecretSource};
use wati_ingest::store::embedded::{Counts, EmbeddedStore};

pub const WEBHOOK_SECRET: &str = "test-webhook-secret-0123456789abcdef";
pub const API_TOKEN: &str = "test-api-token-0123456789abcdef";
/// The fixtures' base time (see tests/fixtures/README.md).
pub const T0: i64 = 1_764_238_453;

pub struct TestApp {
    pub address: String,
    pub store: EmbeddedStore,
    pub client: reqwest::Client,
    pub data_dir: tempfile::TempDir,
    /// Ends the server (and so its lock on the data directory); see [`TestApp::stop`].
    stop: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
    /// The forwarder's task, ended by [`TestApp::stop`] (as a process exit would end it).
    forwarder: Option<tokio::task::JoinHandle<()>>,
}

pub fn config(data_dir: &Path) -> LocalConfig {
    LocalConfig {
        bind: std::net::Ipv4Addr::LOCALHOST.into(),
        port: 0,
        data_dir: data_dir.to_owned(),
        webhook_secret: WEBHOOK_SECRET.into(),
        webhook_secret_source: SecretSource::Environment,
        api_token: API_TOKEN.into(),
        api_token_source: SecretSource::Environment,
        dedup_ttl_days: 7,
        max_body_bytes: 256 * 1024,
        window_closing_lead_minutes: 60,
        quarantine_retention_days: 30,
        forward: None,
    }
}

/// The whole pipeline: receiver, durable queue, processor, read API.
pub async fn spawn_app() -> TestApp {
    spawn_with(true).await
}

/// The receiver and read API without the processor: events are accepted and stay queued.
pub async fn spawn_receiver_only() -> TestApp {
    spawn_with(false).await
}

async fn spawn_with(processor: bool) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let config = config(data_dir.path());
    spawn_on(data_dir, &config, processor).await
}

/// The whole pipeline on a fresh data directory, with [`config`] as `edit` changes it (the
/// forwarder runs when `config.forward` is set).
pub async fn spawn_app_with(edit: impl FnOnce(&mut LocalConfig)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(data_dir.path());
    edit(&mut config);
    spawn_on(data_dir, &config, true).await
}

/// The whole pipeline again on a data directory a stopped [`TestApp`] left (a restart).
pub async fn respawn(data_dir: tempfile::TempDir, edit: impl FnOnce(&mut LocalConfig)) -> TestApp {
    let mut config = config(data_dir.path());
    edit(&mut config);
    spawn_on(data_dir, &config, true).await
}

async fn spawn_on(data_dir: tempfile::TempDir, config: &LocalConfig, processor: bool) -> TestApp {
    let pipeline = LocalPipeline::open(config).expect("open pipeline");
    let store = pipeline.store.clone();
    if processor {
        pipeline.spawn_processor();
    }
    let forwarder = pipeline.spawn_forwarder();
    let (listener, address) = bind(0).await.expect("bind");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        pipeline.serve(listener, shutdown).await.expect("serve");
    });
    TestApp {
        address: format!("http://{address}"),
        store,
        client: reqwest::Client::new(),
        data_dir,
        stop: Some((stop, serving)),
        forwarder,
    }
}

impl TestApp {
    /// Stops serving and releases the data directory's lock, so that another server (the real
    /// binary) may take it over; the store stays open for reading.
    pub async fn stop(&mut self) {
        if let Some((stop, serving)) = self.stop.take() {
            let _ = stop.send(());
            serving.await.expect("server task");
        }
        if let Some(forwarder) = self.forwarder.take() {
            forwarder.abort();
            let _ = forwarder.await;
        }
    }

    pub async fn post_webhook(&self, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        self.post_to(&format!("/webhook/{WEBHOOK_SECRET}"), body)
            .await
    }

    pub async fn post_to(&self, path: &str, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.address))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        let status = response.status();
        let json = response.json().await.unwrap_or(Value::Null);
        (status, json)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.get_with_token(path, Some(API_TOKEN)).await
    }

    pub async fn get_with_token(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.client.get(format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("get");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn counts(&self) -> Counts {
        self.store.counts().await.expect("counts")
    }

    /// Waits until the processor has emptied the queue.
    pub async fn wait_until_applied(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.counts().await.queued == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "queue not drained: {:?}",
                self.counts().await
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Posts every fixture in `order` and checks each was taken (accepted or duplicate).
    pub async fn post_all(&self, events: &[Fixture]) {
        for fixture in events {
            let (status, body) = self.post_webhook(fixture.body.clone()).await;
            assert_eq!(status, StatusCode::OK, "{}: {body}", fixture.name);
            let outcome = body["status"].as_str().unwrap_or_default();
            assert!(
                matches!(outcome, "accepted" | "duplicate"),
                "{}: {body}",
                fixture.name
            );
        }
    }
}

#[derive(Debug, Clone)]
pub struct Fixture {
    pub name: String,
    pub body: Vec<u8>,
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events")
}

/// Every fixture, in file order.
pub fn fixtures() -> Vec<Fixture> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|path| Fixture {
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            body: std::fs::read(&path).expect("read fixture"),
        })
        .collect()
}

pub fn fixture(prefix: &str) -> Fixture {
    fixtures()
        .into_iter()
        .find(|f| f.name.starts_with(prefix))
        .unwrap_or_else(|| panic!("no fixture {prefix}"))
}

/// The fixture with its `timestamp` moved so that T0 becomes `new_t0`.
pub fn shifted(fixture: &Fixture, new_t0: i64) -> Fixture {
    let mut json: Value = serde_json::from_slice(&fixture.body).expect("fixture json");
    if let Some(ts) = json["timestamp"]
        .as_str()
        .and_then(|t| t.parse::<i64>().ok())
    {
        json["timestamp"] = Value::String((ts - T0 + new_t0).to_string());
    }
    Fixture {
        name: fixture.name.clone(),
        body: serde_json::to_vec(&json).expect("serialise"),
    }
}

pub fn rfc3339(offset_from_t0: i64) -> String {
    wati_ingest::time::Rfc3339(Some(T0 + offset_from_t0))
        .render()
        .expect("in range")
}

pub fn message_id(n: u32) -> String {
    format!("6734a1b2c3d4e5f6010000{n:02}")
}

/// The real `wati-ingest` binary on `data_dir`, and the address it printed.
pub struct Server {
    child: Child,
    pub address: String,
}

impl Server {
    pub fn start(data_dir: &Path) -> Server {
        Server::start_logging(data_dir, "warn", Stdio::null())
    }

    /// Starts the binary with `RUST_LOG=filter`, its log (stderr) going to `log`.
    pub fn start_logging(data_dir: &Path, filter: &str, log: impl Into<Stdio>) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wati-ingest"))
            .env("PORT", "0")
            .env("DATA_DIR", data_dir)
            .env("WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("API_TOKEN", API_TOKEN)
            .env("RUST_LOG", filter)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start wati-ingest");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().expect("a line").expect("utf-8");
        let address = first
            .strip_prefix("wati-ingest listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_owned();
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server { child, address }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the real binary with only `env` set (and `RUST_LOG=warn`), expecting it to refuse to
/// start: returns its stderr once it has exited with a failure. Fails if it starts serving
/// (prints its address) or is still running after 20 s.
pub fn refused_start(args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wati-ingest"));
    command
        .args(args)
        .env_clear()
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("start wati-ingest");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wati-ingest {args:?} with {env:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !status.success() && !stdout.contains("listening"),
        "{args:?} with {env:?} should have been refused: {status}\n{stdout}\n{stderr}"
    );
    stderr
}

/// `GET {address}{path}` with the API token, retried until it answers 200 (the processor is
/// asynchronous) or 20 s have passed; the last answer.
pub async fn read_until_found(client: &reqwest::Client, address: &str, path: &str) -> StatusCode {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = client
            .get(format!("{address}{path}"))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("get")
            .status();
        if status == StatusCode::OK || Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `GET /healthz` on `address`: its status code.
pub async fn healthz(address: &str) -> StatusCode {
    reqwest::get(format!("{address}/healthz"))
        .await
        .expect("healthz")
        .status()
}
