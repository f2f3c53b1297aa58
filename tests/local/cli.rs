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

/// Lines a child prints on `stream`, as they come.
fn lines_of(
    stream: impl std::io::Read + Send + 'static,
) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    use std::io::BufRead;
    let (send, receive) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if send.send(line).is_err() {
                return;
            }
        }
    });
    receive
}

async fn next_line(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>, what: &str) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(20), lines.recv())
        .await
        .unwrap_or_else(|_| panic!("no line from {what} in 20 s"))
        .unwrap_or_else(|| panic!("{what} closed its output"))
}

fn start_tail(data_dir: &std::path::Path, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_wati-ingest"))
        .arg("tail")
        .args(args)
        .env("DATA_DIR", data_dir)
        .env("WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("API_TOKEN", API_TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start wati-ingest tail")
}

/// `tail` follows the feed from now in human lines, `tail --json --from-start` from the start
/// as one document a line; Ctrl-C (SIGINT) ends both, successfully.
#[tokio::test]
async fn tail_follows_the_feed() {
    let app = spawn_app().await;
    let all = fixtures();
    let (first, rest) = all.split_at(5);
    app.post_all(first).await;
    app.wait_until_applied().await;
    let (_, page) = app.get("/v1/changes?limit=1000").await;
    let before = page["changes"].as_array().unwrap().len();
    assert!(before > 0);

    let mut human = start_tail(app.data_dir.path(), &[]);
    let mut human_lines = lines_of(human.stdout.take().unwrap());
    let mut human_said = lines_of(human.stderr.take().unwrap());
    let started = next_line(&mut human_said, "tail's start").await;
    assert!(started.contains("from now"), "{started}");
    let mut json = start_tail(app.data_dir.path(), &["--json", "--from-start"]);
    let mut json_lines = lines_of(json.stdout.take().unwrap());

    app.post_all(rest).await;
    app.wait_until_applied().await;
    let (_, page) = app.get("/v1/changes?limit=1000").await;
    let feed: Vec<Value> = page["changes"].as_array().unwrap().clone();

    for expected in &feed {
        let line = next_line(&mut json_lines, "tail --json").await;
        let document: Value = serde_json::from_str(&line).expect("one JSON document a line");
        assert_eq!(&document, expected);
    }
    let mut shown = Vec::new();
    for _ in before..feed.len() {
        shown.push(next_line(&mut human_lines, "tail").await);
    }
    let delivered = shown
        .iter()
        .find(|line| line.contains(" message.updated delivered "))
        .unwrap_or_else(|| panic!("{shown:#?}"));
    assert!(
        delivered.ends_with(&format!(
            "Z message.updated delivered {} (wa_id 14155550101)",
            message_id(3)
        )),
        "{delivered}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        human_lines.try_recv().is_err(),
        "nothing from before it started"
    );

    for child in [&mut human, &mut json] {
        // SAFETY: kill only sends a signal to our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let status = child.wait().unwrap();
        assert!(status.success(), "Ctrl-C ends tail cleanly: {status}");
    }
}
