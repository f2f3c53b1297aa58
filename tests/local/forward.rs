//! Push forwarding (`FORWARD_URL`): the real local pipeline forwards every change of the feed to
//! a receiver in the test, signed so that the reference Standard Webhooks verifier (PyPI
//! `standardwebhooks`, a venv `make test` installs) accepts it; faults lose nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use tokio::net::TcpListener;
use wati_ingest::forward::ForwardSchedule;
use wati_ingest::local::{ForwardConfig, LocalConfig, SecretSource};

use crate::cli::wati_ingest;
use crate::helpers::{fixtures, message_id, respawn, spawn_app_with, TestApp};

/// How the test's receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Ok,
    Status(u16),
    /// The first request for each change id gets this status, the next ones 200.
    FailFirst(u16),
    /// Never answers.
    Hang,
}

#[derive(Debug, Clone)]
struct Received {
    uri: String,
    headers: BTreeMap<String, String>,
    body: String,
    /// `None`: left hanging.
    answered: Option<u16>,
}

impl Received {
    fn id(&self) -> String {
        self.headers.get("webhook-id").cloned().unwrap_or_default()
    }
}

#[derive(Default)]
struct Shared {
    behaviour: Mutex<Option<Behaviour>>,
    received: Mutex<Vec<Received>>,
    seen: Mutex<HashSet<String>>,
}

/// A forward target on 127.0.0.1 that records every request.
struct Target {
    address: String,
    shared: Arc<Shared>,
}

async fn hook(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let headers: BTreeMap<String, String> = headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or("<not text>").to_owned(),
            )
        })
        .collect();
    let id = headers.get("webhook-id").cloned().unwrap_or_default();
    let behaviour = shared.behaviour.lock().unwrap().unwrap_or(Behaviour::Ok);
    let answer = match behaviour {
        Behaviour::Ok => Some(200),
        Behaviour::Status(code) => Some(code),
        Behaviour::FailFirst(code) => Some(if shared.seen.lock().unwrap().insert(id) {
            code
        } else {
            200
        }),
        Behaviour::Hang => None,
    };
    shared.received.lock().unwrap().push(Received {
        uri: uri.to_string(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        answered: answer,
    });
    match answer {
        Some(code) => StatusCode::from_u16(code).unwrap(),
        None => std::future::pending().await,
    }
}

impl Target {
    async fn start(behaviour: Behaviour) -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Target::start_on(listener, behaviour)
    }

    fn start_on(listener: TcpListener, behaviour: Behaviour) -> Target {
        let address = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared::default());
        *shared.behaviour.lock().unwrap() = Some(behaviour);
        let router = Router::new()
            .route("/hooks", post(hook))
            .with_state(Arc::clone(&shared));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Target { address, shared }
    }

    /// The URL the pipeline forwards to; its query stands for a token that must not be logged.
    fn url(&self) -> String {
        format!("{}/hooks?token=target-token-42", self.address)
    }

    fn set(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = Some(behaviour);
    }

    fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The change ids the target acknowledged with a 2xx.
    fn delivered(&self) -> HashSet<String> {
        self.received()
            .iter()
            .filter(|r| r.answered.is_some_and(|code| (200..300).contains(&code)))
            .map(Received::id)
            .collect()
    }
}

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Short delays for tests; the defaults are in `ForwardSchedule::default` (documented).
fn fast() -> ForwardSchedule {
    ForwardSchedule {
        first_retry: Duration::from_millis(20),
        max_retry: Duration::from_millis(100),
        horizon: Duration::from_secs(3_600),
        timeout: Duration::from_secs(2),
        concurrency: 8,
        poll: Duration::from_millis(20),
    }
}

fn forwarding_to(
    url: String,
    secret: &str,
    schedule: ForwardSchedule,
) -> impl FnOnce(&mut LocalConfig) {
    let secret = secret.to_owned();
    move |config: &mut LocalConfig| {
        config.forward = Some(ForwardConfig {
            url,
            secret,
            secret_source: SecretSource::Environment,
            schedule,
        })
    }
}

/// Every change id the feed lists (after the processor has applied everything posted).
async fn feed_ids(app: &TestApp) -> HashSet<String> {
    app.wait_until_applied().await;
    let (status, page) = app.get("/v1/changes?limit=1000").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let ids: HashSet<String> = page["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.len() > 20, "the fixtures make many changes: {ids:?}");
    ids
}

/// Waits up to `seconds` for `done`, polling.
async fn wait_for(what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_until_delivered(target: &Target, ids: &HashSet<String>, seconds: u64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        let delivered = target.delivered();
        let missing: Vec<&String> = ids.difference(&delivered).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} changes never acknowledged by the target: {missing:?}",
            missing.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the forwarder has recorded `count` deliveries (the target counts a change as
/// delivered a moment before the forwarder hears its answer), and nothing else.
async fn wait_until_recorded_delivered(app: &TestApp, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let counts = app.store.forward_counts().await.unwrap();
        if counts.delivered == count {
            assert_eq!((counts.pending, counts.dead), (0, 0), "{counts:?}");
            return;
        }
        assert!(Instant::now() < deadline, "{counts:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The reference verifier's venv: `scripts/tools.sh verifier` installs it (`make test` does).
fn verifier_python() -> PathBuf {
    let venv = std::env::var_os("VERIFIER_VENV").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/verifier/venv"),
        PathBuf::from,
    );
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "the Standard Webhooks reference verifier is not installed at {}: run \
         `scripts/tools.sh verifier` (make test does)",
        venv.display()
    );
    python
}

const VERIFY_PY: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
cases = json.load(sys.stdin)
results = []
for case in cases:
    try:
        Webhook(case["secret"]).verify(case["body"], case["headers"])
        results.append("ok")
    except Exception as error:
        results.append("refused: %s %s" % (type(error).__name__, error))
print(json.dumps(results))
"#;

/// Each `(secret, body, headers)` as the reference implementation judges it: `"ok"` or why not.
fn reference_verdicts(cases: &[(String, String, BTreeMap<String, String>)]) -> Vec<String> {
    use std::io::Write;
    let input: Vec<Value> = cases
        .iter()
        .map(|(secret, body, headers)| {
            serde_json::json!({"secret": secret, "body": body, "headers": headers})
        })
        .collect();
    let mut child = std::process::Command::new(verifier_python())
        .args(["-c", VERIFY_PY])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the reference verifier");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(&input).unwrap())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "reference verifier failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn signed_headers(received: &Received) -> BTreeMap<String, String> {
    received
        .headers
        .iter()
        .filter(|(name, _)| name.starts_with("webhook-"))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// Every change the feed lists reaches the target once, as its JSON, with Standard Webhooks
/// headers that the reference implementation verifies; a tampered body, another id or another
/// secret is refused by it.
#[tokio::test]
async fn every_change_reaches_the_target_signed() {
    let target = Target::start(Behaviour::Ok).await;
    let secret = wati_ingest::forward::generate_secret().unwrap();
    let app = spawn_app_with(forwarding_to(target.url(), &secret, fast())).await;
    app.post_all(&fixtures()).await;
    let ids = feed_ids(&app).await;
    wait_until_delivered(&target, &ids, 30).await;

    let received = target.received();
    let mut seen = HashMap::new();
    let now = wati_ingest::time::now_unix();
    let mut cases = Vec::new();
    for request in &received {
        *seen.entry(request.id()).or_insert(0) += 1;
        assert_eq!(request.uri, "/hooks?token=target-token-42");
        assert_eq!(request.headers["content-type"], "application/json");
        let document: Value = serde_json::from_str(&request.body).expect("a JSON body");
        assert_eq!(document["id"].as_str(), Some(request.id().as_str()));
        let timestamp: i64 = request.headers["webhook-timestamp"].parse().unwrap();
        assert!((now - 120..=now + 5).contains(&timestamp), "{timestamp}");
        assert!(request.headers["webhook-signature"].starts_with("v1,"));
        cases.push((
            secret.clone(),
            request.body.clone(),
            signed_headers(request),
        ));
    }
    assert_eq!(
        seen.keys().cloned().collect::<HashSet<_>>(),
        ids,
        "exactly the feed's changes"
    );
    assert!(
        seen.values().all(|count| *count == 1),
        "a target that acknowledges gets each change once: {seen:?}"
    );
    wait_until_recorded_delivered(&app, ids.len()).await;

    let verdicts = reference_verdicts(&cases);
    assert!(
        verdicts.iter().all(|v| v == "ok"),
        "the reference verifier refused: {verdicts:?}"
    );
    // The same verifier refuses what was not signed so.
    let (_, body, headers) = cases[0].clone();
    let mut other_id = headers.clone();
    other_id.insert("webhook-id".into(), "chg_someone_else".into());
    let other_secret = wati_ingest::forward::generate_secret().unwrap();
    let forged = [
        (secret.clone(), body.replacen('{', "{ ", 1), headers.clone()),
        (secret.clone(), body.clone(), other_id),
        (other_secret, body, headers),
    ];
    let verdicts = reference_verdicts(&forged);
    assert!(
        verdicts.iter().all(|v| v.starts_with("refused")),
        "{verdicts:?}"
    );
}

/// A target answering 500 to each change's first attempt gets it again, until it acknowledges.
#[tokio::test]
async fn a_failing_target_gets_each_change_again_until_it_acknowledges() {
    let target = Target::start(Behaviour::FailFirst(500)).await;
    let app = spawn_app_with(forwarding_to(target.url(), SECRET, fast())).await;
    app.post_all(&fixtures()).await;
    let ids = feed_ids(&app).await;
    wait_until_delivered(&target, &ids, 30).await;
    let received = target.received();
    for id in &ids {
        let answers: Vec<Option<u16>> = received
            .iter()
            .filter(|r| &r.id() == id)
            .map(|r| r.answered)
            .collect();
        assert_eq!(answers[0], Some(500), "{id}: {answers:?}");
        assert!(answers[1..].contains(&Some(200)), "{id}: {answers:?}");
    }
    wait_until_recorded_delivered(&app, ids.len()).await;
}

/// A target that hangs is given up on after the per-attempt timeout and tried again; once it
/// answers, every change arrives.
#[tokio::test]
async fn a_hanging_target_times_out_and_gets_everything_once_it_answers() {
    let target = Target::start(Behaviour::Hang).await;
    let schedule = ForwardSchedule {
        timeout: Duration::from_millis(300),
        ..fast()
    };
    let app = spawn_app_with(forwarding_to(target.url(), SECRET, schedule)).await;
    app.post_all(&fixtures()).await;
    let ids = feed_ids(&app).await;
    // Enough hung attempts that some were retried after their timeout.
    wait_for("retries after timeouts", 20, || {
        let received = target.received();
        let distinct: HashSet<String> = received.iter().map(Received::id).collect();
        received.len() > distinct.len()
    })
    .await;
    assert!(target.delivered().is_empty());
    target.set(Behaviour::Ok);
    wait_until_delivered(&target, &ids, 30).await;
}

/// Webhooks are answered, and applied, while the forward target hangs: ingestion never waits
/// for it (the per-attempt timeout here is far longer than the client's patience).
#[tokio::test]
async fn webhooks_are_answered_while_the_target_hangs() {
    let target = Target::start(Behaviour::Hang).await;
    let schedule = ForwardSchedule {
        timeout: Duration::from_secs(120),
        ..fast()
    };
    let app = spawn_app_with(forwarding_to(target.url(), SECRET, schedule)).await;
    let all = fixtures();
    let (first, rest) = all.split_at(3);
    app.post_all(first).await;
    wait_for("the target to hold a request", 20, || {
        !target.received().is_empty()
    })
    .await;
    let patient = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    for fixture in rest {
        let response = patient
            .post(format!(
                "{}/webhook/{}",
                app.address,
                crate::helpers::WEBHOOK_SECRET
            ))
            .body(fixture.body.clone())
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!("{} not answered while the target hangs: {e}", fixture.name)
            });
        assert_eq!(response.status(), StatusCode::OK, "{}", fixture.name);
    }
    app.wait_until_applied().await;
    let (status, message) = app.get(&format!("/v1/messages/{}", message_id(3))).await;
    assert_eq!(status, StatusCode::OK, "{message}");
    assert!(
        target.received().iter().all(|r| r.answered.is_none()),
        "the target was hanging throughout"
    );
}

/// Connections refused (nothing listens on the port yet): retried until a target listens there,
/// then every change arrives; the URL's query (a token) is in no recorded error.
#[tokio::test]
async fn refused_connections_are_retried_until_the_target_listens() {
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = reserved.local_addr().unwrap();
    drop(reserved);
    let url = format!("http://{address}/hooks?token=target-token-42");
    let app = spawn_app_with(forwarding_to(url, SECRET, fast())).await;
    app.post_all(&fixtures()).await;
    let ids = feed_ids(&app).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = app.store.forward_counts().await.unwrap();
    assert_eq!((counts.delivered, counts.dead), (0, 0), "{counts:?}");
    assert_eq!(counts.pending, ids.len());
    let target = Target::start_on(TcpListener::bind(address).await.unwrap(), Behaviour::Ok);
    wait_until_delivered(&target, &ids, 30).await;
}

/// `410 Gone`: that change is dead-lettered with reason "410 Gone" and forwarding pauses until
/// restart; after a restart the rest arrive (progress survived), the dead one only once resent.
#[tokio::test]
async fn gone_dead_letters_and_pauses_until_restart() {
    let target = Target::start(Behaviour::Status(410)).await;
    let mut app = spawn_app_with(forwarding_to(target.url(), SECRET, fast())).await;
    app.post_all(&fixtures()).await;
    let ids = feed_ids(&app).await;
    wait_for("a 410", 20, || !target.received().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = target.received().len();
    assert!(
        (1..=fast().concurrency).contains(&asked),
        "only the attempts in flight when the first 410 came: {asked}"
    );
    target.set(Behaviour::Ok);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(target.received().len(), asked, "paused until restart");
    let gone: HashSet<String> = target.received().iter().map(Received::id).collect();
    let (ok, listed) = wati_ingest(app.data_dir.path(), &["forwards"]);
    assert!(ok, "{listed}");
    for id in &gone {
        let line = listed
            .lines()
            .find(|line| line.starts_with(id.as_str()))
            .unwrap_or_else(|| panic!("{id} not listed: {listed}"));
        assert!(line.ends_with("reason: 410 Gone"), "{line}");
    }

    app.stop().await;
    let data_dir = std::mem::replace(&mut app.data_dir, tempfile::tempdir().unwrap());
    let app = respawn(data_dir, forwarding_to(target.url(), SECRET, fast())).await;
    let rest: HashSet<String> = ids.difference(&gone).cloned().collect();
    wait_until_delivered(&target, &rest, 30).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        target.delivered().is_disjoint(&gone),
        "dead-lettered changes wait for a resend"
    );
    let (ok, out) = wati_ingest(app.data_dir.path(), &["forwards", "resend", "--all"]);
    assert!(ok, "{out}");
    assert_eq!(
        out.trim(),
        format!("{} dead-lettered forwards pending again", gone.len())
    );
    wait_until_delivered(&target, &ids, 30).await;
}

/// Past the retry horizon a change is dead-lettered with its last error; `forwards` lists it,
/// `forwards resend <id>` delivers that one, `forwards resend --all` the rest.
#[tokio::test]
async fn dead_letters_are_listed_and_resent() {
    let target = Target::start(Behaviour::Status(500)).await;
    let schedule = ForwardSchedule {
        horizon: Duration::from_millis(200),
        ..fast()
    };
    let app = spawn_app_with(forwarding_to(target.url(), SECRET, schedule)).await;
    app.post_all(&fixtures()).await;
    let ids = feed_ids(&app).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.store.forward_counts().await.unwrap().dead < ids.len() {
        assert!(Instant::now() < deadline, "not all dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ok, listed) = wati_ingest(app.data_dir.path(), &["forwards"]);
    assert!(ok, "{listed}");
    assert_eq!(listed.lines().count(), ids.len(), "{listed}");
    for line in listed.lines() {
        assert!(line.contains(": HTTP 500"), "{line}");
        assert!(!line.contains("token"), "{line}");
    }
    target.set(Behaviour::Ok);
    let one = ids.iter().next().unwrap().clone();
    let (ok, out) = wati_ingest(app.data_dir.path(), &["forwards", "resend", &one]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "1 dead-lettered forwards pending again");
    wait_until_delivered(&target, &HashSet::from([one.clone()]), 20).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        target.delivered(),
        HashSet::from([one.clone()]),
        "only the one resent"
    );
    let (ok, _) = wati_ingest(app.data_dir.path(), &["forwards", "resend", &one]);
    assert!(!ok, "not dead any more");
    let (ok, out) = wati_ingest(app.data_dir.path(), &["forwards", "resend", "--all"]);
    assert!(ok, "{out}");
    wait_until_delivered(&target, &ids, 30).await;
    let (ok, listed) = wati_ingest(app.data_dir.path(), &["forwards"]);
    assert!(ok);
    assert_eq!(listed.trim(), "no dead-lettered forwards");
}

/// Ingestion first: while the processor is behind (its last receive took a whole batch) the
/// forwarder starts one round of attempts every 2 s, not more; once it has caught up, the rest go
/// out at once.
#[tokio::test]
async fn the_forwarder_steps_back_while_the_processor_is_behind() {
    use wati_ingest::event::WatiEvent;
    use wati_ingest::forward::ForwardTarget;
    use wati_ingest::message::MessageRecord;
    use wati_ingest::ports::{Queue, QueuedEvent, StateStore};
    use wati_ingest::store::embedded::EmbeddedStore;

    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("wati.db")).unwrap();
    // Changes to forward: the fixtures applied straight to the state.
    for fixture in fixtures() {
        let Ok(event) = WatiEvent::parse(&fixture.body) else {
            continue;
        };
        if let Some(facts) = MessageRecord::from_event(&event, 1_764_238_000) {
            store.apply(&facts, None).await.unwrap();
        }
    }
    // Two events waiting; a receive of one takes a whole batch: the processor is behind.
    for n in 0..2 {
        let queued = QueuedEvent {
            key: format!("k-{n}"),
            received_at: 1_764_238_000,
            body: r#"{"eventType":"paymentCaptured"}"#.into(),
            ..Default::default()
        };
        store.send(&queued).await.unwrap();
    }
    assert_eq!(store.receive(1, 60_000).await.unwrap().len(), 1);
    assert!(store.queue_backlogged());

    let target = Target::start(Behaviour::Ok).await;
    let schedule = fast();
    let forward = ForwardTarget::new(&target.url(), SECRET, schedule.timeout).unwrap();
    let forwarder = tokio::spawn(wati_ingest::forward::run(store.clone(), forward, schedule));
    wait_for("a first round", 10, || !target.received().is_empty()).await;
    // The next round may start 2 s after the first: look before that.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let while_behind = target.received().len();
    assert!(
        (1..=schedule.concurrency).contains(&while_behind),
        "one round while behind: {while_behind}"
    );

    // The processor catches up: a receive finds less than it asked for; the rest go out.
    assert_eq!(store.receive(64, 60_000).await.unwrap().len(), 1);
    assert!(!store.queue_backlogged());
    wait_for("every change forwarded", 10, || {
        target.delivered().len() > schedule.concurrency
    })
    .await;
    let started = Instant::now();
    loop {
        let counts = store.forward_counts().await.unwrap();
        if counts.backlog() == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{counts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    forwarder.abort();
}
