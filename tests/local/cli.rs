//! The operator's commands on the local store, through the real binary.

use std::process::Command;

use serde_json::Value;

use crate::helpers::{
    fixtures, message_id, spawn_app, spawn_receiver_only, API_TOKEN, WEBHOOK_SECRET,
};

pub fn wati_ingest(data_dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wati-ingest"))
        .args(args)
        .env("DATA_DIR", data_dir)
        .env("WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("API_TOKEN", API_TOKEN)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run wati-ingest");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success(), text)
}

/// `inspect` shows a message by any id, and an archived event by its key.
#[tokio::test]
async fn inspect_shows_state_and_archive() {
    let app = spawn_app().await;
    app.post_all(&fixtures()).await;
    app.wait_until_applied().await;
    let (ok, out) = wati_ingest(app.data_dir.path(), &["inspect", "local-0003"]);
    assert!(ok, "{out}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["message"]["status"], "replied");
    assert_eq!(shown["message"]["id"], message_id(3));

    let key = "sentMessageREAD:wamid.OUT000000000000000000000003";
    let (ok, out) = wati_ingest(app.data_dir.path(), &["inspect", key]);
    assert!(ok, "{out}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert!(shown["ledger"]["body"]
        .as_str()
        .unwrap()
        .contains("sentMessageREAD"));
    assert_eq!(shown["message"], Value::Null);
}

/// `replay` puts a time range of archived events back on the durable queue; `redrive-dlq` says
/// how many dead letters it moved; bad arguments exit non-zero with the usage.
#[tokio::test]
async fn replay_and_redrive_from_the_command_line() {
    let app = spawn_receiver_only().await;
    app.post_all(&fixtures()).await;
    let before = app.counts().await;
    let (ok, out) = wati_ingest(
        app.data_dir.path(),
        &["replay", "--since", "0", "--until", "99999999999"],
    );
    assert!(ok, "{out}");
    assert_eq!(
        out.trim(),
        format!(
            "replayed {} events received between 0 and 99999999999",
            before.ledger
        )
    );
    assert_eq!(app.counts().await.queued, before.queued + before.ledger);

    let (ok, out) = wati_ingest(app.data_dir.path(), &["redrive-dlq"]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "redrove 0 dead-lettered events");

    let (ok, _) = wati_ingest(app.data_dir.path(), &["replay", "--since", "tomorrow"]);
    assert!(!ok);
}
