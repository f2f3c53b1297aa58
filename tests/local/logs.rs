//! The log never holds the webhook secret, the API token, phone numbers or message text.

use std::time::Duration;

use crate::helpers::{fixtures, Server, API_TOKEN, WEBHOOK_SECRET};

/// Running every fixture (and rejected requests) through the real binary at `info` leaves a log
/// with one line per webhook and none of the sensitive values the fixtures contain.
#[tokio::test]
async fn info_logs_hold_no_secrets_phone_numbers_or_text() {
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
    tokio::time::sleep(Duration::from_millis(500)).await; // let the processor log its lines
    server.kill();

    let log = std::fs::read_to_string(&log_path).unwrap();
    let webhook_lines = log.lines().filter(|l| l.contains("webhook")).count();
    assert!(
        webhook_lines > events.len(),
        "expected a line per webhook:\n{log}"
    );
    assert!(log.contains("applied"), "expected processor lines:\n{log}");
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
