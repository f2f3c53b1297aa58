//! Bad input against the real local server: the shared table (`tests/common/bad_inputs.rs`) of
//! wrong secrets, odd paths and methods, oversize, odd content types, unusable bodies, odd event
//! types and timestamps, bad tokens and ids; and the wrong-types sweep over every fixture field.
//! Each answer is README.md's, and storage holds exactly what the answer says.

#[path = "../common/bad_inputs.rs"]
mod table;

use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wati_ingest::ports::Ledger;
use wati_ingest::store::embedded::Counts;

use crate::helpers::{spawn_app, spawn_receiver_only, TestApp, API_TOKEN, WEBHOOK_SECRET};
use table::{Backend, Case, Setup, Stored, Target};

fn setup() -> Setup<'static> {
    Setup {
        webhook_secret: WEBHOOK_SECRET,
        api_token: API_TOKEN,
        max_body_bytes: 256 * 1024,
    }
}

/// Sends a case as it is written: through reqwest when the URL survives reqwest's parsing
/// unchanged (and always for large bodies), else as raw HTTP/1.1 on a socket, so that dot
/// segments and odd encodings reach the server exactly as an attacker would send them.
async fn send(app: &TestApp, case: &Case) -> (u16, Value) {
    let url = reqwest::Url::parse(&format!("{}{}", app.address, case.path)).expect("url");
    let on_the_wire = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    if on_the_wire == case.path || case.body.len() > 64 * 1024 {
        assert_eq!(
            on_the_wire, case.path,
            "{case}: reqwest would rewrite the path"
        );
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap();
        let mut request = app.client.request(method, url).body(case.body.clone());
        for (name, value) in &case.headers {
            request = request.header(
                *name,
                reqwest::header::HeaderValue::from_bytes(value).expect("header value"),
            );
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap_or_default();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    } else {
        raw(app, case).await
    }
}

async fn raw(app: &TestApp, case: &Case) -> (u16, Value) {
    let host = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let mut request = format!(
        "{} {} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\ncontent-length: {}\r\n",
        case.method,
        case.path,
        case.body.len()
    )
    .into_bytes();
    for (name, value) in &case.headers {
        request.extend(name.as_bytes());
        request.extend(b": ");
        request.extend(value);
        request.extend(b"\r\n");
    }
    request.extend(b"\r\n");
    request.extend(&case.body);
    // The server may answer (401) without reading the body and close: keep what it sent.
    let _ = stream.write_all(&request).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{case}: no HTTP answer: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The problems with one case's answer and what it stored, if any.
async fn check(app: &TestApp, case: &Case, before: &Counts, must_be_empty: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let (status, answer) = send(app, case).await;
    if !case.statuses.contains(&status) {
        problems.push(format!(
            "status {status}, documented {:?}: {answer}",
            case.statuses
        ));
    }
    if let Some(outcome) = case.outcome {
        if answer["status"] != outcome {
            problems.push(format!("answer {answer}, documented status {outcome:?}"));
        }
    }
    if case.target == Target::Read {
        for field in ["id", "wa_id", "window_open", "session"] {
            if answer.get(field).is_some() {
                problems.push(format!("answered with an item: {answer}"));
                break;
            }
        }
    }
    let after = app.counts().await;
    let delta = (
        after.ledger - before.ledger,
        after.quarantined - before.quarantined,
        after.queued - before.queued,
    );
    let expected = match case.stored {
        Stored::Nothing => (0, 0, 0),
        Stored::Quarantined => (0, 1, 0),
        Stored::Accepted => (1, 0, 1),
    };
    if delta != expected {
        problems.push(format!(
            "stored (ledger, quarantine, queue) +{delta:?}, expected +{expected:?}"
        ));
    }
    if must_be_empty && (after.ledger, after.quarantined, after.queued) != (0, 0, 0) {
        problems.push(format!("storage is not empty: {after:?}"));
    }
    let key = answer["key"].as_str().unwrap_or_default();
    let kept = match case.stored {
        Stored::Nothing => None,
        Stored::Quarantined => Some(app.store.quarantined_body(key).await.unwrap()),
        Stored::Accepted => Some(
            app.store
                .archived(key)
                .await
                .unwrap()
                .map(|e| e.body.into_bytes()),
        ),
    };
    if let Some(kept) = kept {
        if kept.as_deref() != Some(case.body.as_slice()) {
            problems.push(format!("the raw body is not kept under {key:?}"));
        }
    }
    problems
}

/// Runs `cases` in table order, those that store nothing first (on empty storage when `from_empty`,
/// which is then checked after each of them); panics with every failing case at once.
async fn run_table(app: &TestApp, cases: &[&Case], from_empty: bool) {
    let (nothing, rest): (Vec<&Case>, Vec<&Case>) =
        cases.iter().partition(|c| c.stored == Stored::Nothing);
    if from_empty {
        let counts = app.counts().await;
        assert_eq!(
            (counts.ledger, counts.quarantined, counts.queued),
            (0, 0, 0)
        );
    }
    let mut failures = Vec::new();
    for (n, case) in nothing.iter().chain(rest.iter()).enumerate() {
        let before = app.counts().await;
        let must_be_empty = from_empty && n < nothing.len();
        let problems = check(app, case, &before, must_be_empty).await;
        if !problems.is_empty() {
            failures.push(format!("{case}\n    {}", problems.join("\n    ")));
        }
    }
    let health = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "the server stopped serving");
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from the documented answer:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

fn local_cases(cases: &[Case]) -> Vec<&Case> {
    cases
        .iter()
        .filter(|c| c.covered_locally_by.is_none() && c.runs_on(Backend::Local))
        .collect()
}

/// Every webhook case of the table gets README's answer and stores exactly that. The processor
/// is off so that what was queued can be counted.
#[tokio::test]
async fn webhook_bad_inputs_get_the_documented_answer() {
    let app = spawn_receiver_only().await;
    let cases = table::webhook_cases(&setup());
    let cases = local_cases(&cases);
    assert!(cases.len() >= 60, "{}", cases.len());
    run_table(&app, &cases, true).await;
}

/// Every read case: 401 without the exact token, 404 (or 400) for ids that try to reach another
/// item or leave the route, never a 5xx, never an item.
#[tokio::test]
async fn read_api_bad_inputs_get_the_documented_answer() {
    let app = spawn_app().await;
    let cases = table::read_cases(&setup());
    let cases = local_cases(&cases);
    assert!(cases.len() >= 50, "{}", cases.len());
    for prefix in table::SEED_FIXTURES {
        let (status, _) = app.post_webhook(table::fixture(prefix)).await;
        assert_eq!(status, 200);
    }
    app.wait_until_applied().await;
    let seeded = format!("/v1/messages/{}", table::SEEDED_MESSAGE);
    assert_eq!(app.get(&seeded).await.0, 200, "seeded");
    run_table(&app, &cases, false).await;
}

/// Concurrent senders in the wrong-types sweep (the store commits them together).
const LANES: usize = 8;

/// Wrong types in every field of every fixture: always 200; quarantined only when `eventType`
/// is not a string (README), else accepted (or a duplicate of another mutation of the same
/// message) and archived byte for byte; the ledger holds exactly one entry per "accepted". The
/// processor applies or archives each accepted body without dead-lettering any, and the server
/// keeps serving.
#[tokio::test]
async fn wrong_types_in_every_field_are_tolerated() {
    let app = spawn_app().await;
    let mutations = Arc::new(table::wrong_type_mutations(&[], true));
    let url = format!("{}/webhook/{WEBHOOK_SECRET}", app.address);
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..LANES {
        let (mutations, url) = (Arc::clone(&mutations), url.clone());
        let (client, store) = (app.client.clone(), app.store.clone());
        lanes.spawn(async move {
            let mut results = Vec::new();
            for mutation in mutations.iter().skip(lane).step_by(LANES) {
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(mutation.body.clone())
                    .send()
                    .await
                    .expect("post");
                let status = response.status().as_u16();
                let answer: Value = response.json().await.unwrap_or(Value::Null);
                let outcome = answer["status"].as_str().unwrap_or_default().to_owned();
                let key = answer["key"].as_str().unwrap_or_default();
                let ok = match (status, outcome.as_str(), mutation.quarantined) {
                    (200, "quarantined", true) => {
                        store.quarantined_body(key).await.unwrap().as_deref()
                            == Some(mutation.body.as_slice())
                    }
                    (200, "accepted", false) => store
                        .archived(key)
                        .await
                        .unwrap()
                        .is_some_and(|e| e.body.as_bytes() == mutation.body),
                    (200, "duplicate", false) => store.archived(key).await.unwrap().is_some(),
                    _ => false,
                };
                let failure = (!ok).then(|| format!("{}: {status} {answer}", mutation.name));
                results.push((outcome, failure));
            }
            results
        });
    }
    let results: Vec<(String, Option<String>)> =
        lanes.join_all().await.into_iter().flatten().collect();
    let count = |outcome: &str| results.iter().filter(|(o, _)| o == outcome).count() as u64;
    let failures: Vec<&String> = results.iter().filter_map(|(_, f)| f.as_ref()).collect();
    app.wait_until_applied().await;
    let counts = app.counts().await;
    let health = app
        .client
        .get(format!("{}/healthz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "the server stopped serving");
    let (status, message) = app.get("/v1/messages/6734a1b2c3d4e5f601000001").await;
    assert_eq!(status, 200, "{message}");
    eprintln!(
        "wrong types: {} bodies: {} accepted, {} duplicates, {} quarantined; after processing \
         {counts:?}",
        mutations.len(),
        count("accepted"),
        count("duplicate"),
        count("quarantined"),
    );
    assert!(
        failures.is_empty(),
        "{} mutations:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|f| f.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        counts.ledger,
        count("accepted"),
        "one ledger entry per accepted body"
    );
    assert_eq!(
        counts.dead_letters, 0,
        "the processor dead-lettered a body: {counts:?}"
    );
}

/// An event whose timestamp cannot be a time is dated by its receipt (README), not by 1970 or a
/// year past 9999.
#[tokio::test]
async fn an_unusable_timestamp_dates_the_event_by_its_receipt() {
    let app = spawn_app().await;
    let values = [
        Value::from("-1"),
        Value::from("99999999999999"),
        Value::from(u64::MAX),
        Value::from(1e300),
        Value::from("soon"),
        Value::from(""),
    ];
    for (n, timestamp) in values.iter().enumerate() {
        let body = serde_json::json!({
            "eventType": "templateMessageSent",
            "id": format!("bad-ts-{n}"),
            "waId": "14155550199",
            "timestamp": timestamp,
        });
        let started = wati_ingest::time::now_unix();
        let (status, answer) = app.post_webhook(serde_json::to_vec(&body).unwrap()).await;
        assert_eq!(
            (status.as_u16(), answer["status"].as_str()),
            (200, Some("accepted"))
        );
        app.wait_until_applied().await;
        let (status, message) = app.get(&format!("/v1/messages/bad-ts-{n}")).await;
        assert_eq!(status, 200, "{message}");
        let sent_at = message["sent_at"].as_str().expect("sent_at");
        let sent_at =
            time::OffsetDateTime::parse(sent_at, &time::format_description::well_known::Rfc3339)
                .unwrap()
                .unix_timestamp();
        assert!(
            (started - 1..=started + 5).contains(&sent_at),
            "timestamp {timestamp}: sent_at {message}"
        );
    }
}
