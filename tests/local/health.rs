//! `/healthz` answers for the intake too, and a ledger that cannot be written is loud; what was
//! accepted around it still ends up archived.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rusqlite::{Connection, OptionalExtension};

use crate::helpers::{fixture, healthz, Server, WEBHOOK_SECRET};

/// A connection of the test's own to the server's intake database.
fn intake(data_dir: &std::path::Path) -> Connection {
    let conn = Connection::open(data_dir.join("wati-ingest.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

/// With the ledger table gone (renamed from outside, as a corrupt table would be), the server
/// still opens, reads and commits, but `/healthz` answers 503; a webhook is still accepted (the
/// receiver bypasses the ledger) and logged at ERROR. Once the ledger is back, health returns and
/// the processor archives the event the receiver could not record, although it names no message.
#[tokio::test]
async fn a_broken_ledger_fails_healthz_is_logged_and_its_events_are_archived_later() {
    let data_dir = tempfile::tempdir().unwrap();
    let log_path = data_dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server = Server::start_logging(data_dir.path(), "info", log);
    assert_eq!(healthz(&server.address).await, StatusCode::OK);

    let outside = intake(data_dir.path());
    outside
        .execute_batch("ALTER TABLE ledger RENAME TO ledger_broken")
        .unwrap();
    assert_eq!(
        healthz(&server.address).await,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let reviewed = fixture("16-templateReviewed");
    let response = reqwest::Client::new()
        .post(format!("{}/webhook/{WEBHOOK_SECRET}", server.address))
        .body(reviewed.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["status"], "accepted", "{answer}");
    let key = answer["key"].as_str().unwrap().to_owned();

    outside
        .execute_batch("ALTER TABLE ledger_broken RENAME TO ledger")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let archived = loop {
        let body: Option<Vec<u8>> = outside
            .query_row("SELECT body FROM ledger WHERE key = ?1", [&key], |row| {
                row.get(0)
            })
            .optional()
            .unwrap();
        if let Some(body) = body {
            break body;
        }
        assert!(Instant::now() < deadline, "{key} never archived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(archived, reviewed.body, "the body as Wati sent it");
    assert_eq!(healthz(&server.address).await, StatusCode::OK);
    server.kill();

    let log = std::fs::read_to_string(&log_path).unwrap();
    let loud = log
        .lines()
        .filter(|line| line.contains("ERROR") && line.contains("ledger unavailable"))
        .count();
    assert_eq!(loud, 1, "one ERROR line for the bypassed webhook:\n{log}");
    assert!(
        log.lines()
            .any(|line| line.contains("ERROR") && line.contains("health check")),
        "the failed health check is logged at ERROR:\n{log}"
    );
    assert!(
        log.contains("archived an event the receiver could not record"),
        "{log}"
    );
}
