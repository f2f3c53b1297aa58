//! The log never holds the webhook secret, the API token, phone numbers (in clear or in base64,
//! as wamids carry them) or message text.

#[path = "../common/log_search.rs"]
mod log_search;

use std::time::{Duration, Instant};

use log_search::{assert_captured, assert_search_finds_a_wamid, phone_leaks};

use crate::helpers::{fixtures, Server, API_TOKEN, WEBHOOK_SECRET};

/// Running every fixture (and rejected requests, and a webhook while the ledger is broken)
/// through the real binary at `info` leaves a log with one line per webhook, the processor's
/// lines and the loud bypass, and none of the sensitive values the fixtures contain: not in
/// clear, not in base64.
#[tokio::test]
async fn info_logs_hold_no_secrets_phone_numbers_or_text() {
    assert_search_finds_a_wamid();
    let data_dir = tempfile::tempdir().unwrap();
    let log_path = data_dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server = Server::start_logging(data_dir.path(), "info", log);
    let client = reqwest::Client::new();
    let events = fixtures();
    for event in &events {
        let response = client
            .post(format!("{}/webhook/{WEBHOOK_SECRET}", server.address))
            .body(event.body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let wrong = client
        .post(format!("{}/webhook/{WEBHOOK_SECRET}-wrong", server.address))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    for path in ["/v1/contacts/14155550101", "/v1/messages/local-0003"] {
        let read = client
            .get(format!("{}{path}", server.address))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap();
        assert!(read.status() == 200 || read.status() == 404);
    }
    // The first fixture (its wamid holds the phone number in base64) again, through a broken
    // ledger: logged at ERROR with its key, and archived by the processor once the ledger is back.
    let intake = rusqlite::Connection::open(data_dir.path().join("wati-ingest.db")).unwrap();
    intake.busy_timeout(Duration::from_secs(5)).unwrap();
    intake
        .execute_batch("ALTER TABLE ledger RENAME TO ledger_broken")
        .unwrap();
    let bypassed = client
        .post(format!("{}/webhook/{WEBHOOK_SECRET}", server.address))
        .body(events[0].body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(bypassed.status(), 200);
    intake
        .execute_batch("ALTER TABLE ledger_broken RENAME TO ledger")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log_path)
        .unwrap()
        .contains("archived an event the receiver could not record")
    {
        assert!(
            Instant::now() < deadline,
            "the bypassed event was not archived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // let the processor log its lines
    let feed: serde_json::Value = client
        .get(format!("{}/v1/changes?limit=1000", server.address))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    server.kill();

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_captured(
        &log,
        &[
            ("webhook", events.len() + 2),
            ("processed", events.len()),
            ("ledger unavailable; enqueueing without it", 1),
        ],
    );
    // The key in its log form is the correlation id: every webhook the receiver accepted is
    // found again, under the same value, in a line of the processor's.
    let keys_of = |message: &str, outcome: &str| -> std::collections::HashSet<String> {
        log.lines()
            .filter(|line| line.contains(message) && line.contains(outcome))
            .filter_map(|line| {
                let key = line.split(" key=").nth(1)?.split(' ').next()?;
                Some(key.trim_matches('"').to_owned())
            })
            .collect()
    };
    let accepted = keys_of(" webhook", "outcome=\"accepted\"");
    let processed = keys_of(" processed", "outcome=");
    assert!(accepted.len() >= events.len() / 2, "{accepted:?}");
    let unmatched: Vec<&String> = accepted.difference(&processed).collect();
    assert!(
        unmatched.is_empty(),
        "accepted, never in a processor line: {unmatched:?}\n{log}"
    );
    // ... and in the change documents its write announced.
    let changes = feed["changes"].as_array().unwrap();
    assert!(changes.len() >= events.len() / 2, "{feed}");
    for change in changes {
        let cause = change["caused_by"].as_str().unwrap_or_default();
        assert!(
            accepted.contains(cause),
            "caused_by {cause:?} is no accepted webhook's correlation id: {change}"
        );
    }
    for phone in [
        "14155550101",
        "14155550102",
        "14155550104",
        "14155550000",
        "14155550200",
    ] {
        let leaks = phone_leaks(&log, phone);
        assert!(leaks.is_empty(), "the log leaks {phone}: {leaks:#?}");
    }
    let sensitive = [
        WEBHOOK_SECRET,
        API_TOKEN,
        "14155550101",
        "14155550102",
        "14155550104",
        "Hi, where is my order?",
        "It ships today.",
        "Alice",
    ];
    for value in sensitive {
        assert!(!log.contains(value), "log leaks {value:?}:\n{log}");
    }
}
