//! The operator's commands on the local store, through the real binary.

use std::process::Command;

use serde_json::Value;

use crate::helpers::{
    fixtures, message_id, spawn_app, spawn_receiver_only, API_TOKEN, WEBHOOK_SECRET,
};

pub fn wati_ingest(data_dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let (status, out, _) = run_with(data_dir, args, &[]);
    (status == Some(0), out)
}

/// The binary's exit code, stdout and stderr, with `DATA_DIR` and the extra variables set (and no
/// server setting: a command must not need them).
fn run_with(
    data_dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wati-ingest"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATA_DIR", data_dir)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run wati-ingest");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
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

    // By the key Wati was answered with: the archived event, and the message it is about.
    let key = "sentMessageREAD:wamid.OUT000000000000000000000003";
    let (ok, out) = wati_ingest(app.data_dir.path(), &["inspect", key]);
    assert!(ok, "{out}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert!(shown["ledger"]["body"]
        .as_str()
        .unwrap()
        .contains("sentMessageREAD"));
    assert_eq!(shown["message"]["id"], message_id(3));
    assert_eq!(shown["quarantine"], serde_json::json!([]));
    let log_key = shown["log_key"].as_str().unwrap();
    assert!(
        log_key.starts_with("sentMessageREAD:#") && !log_key.contains("wamid"),
        "the form logs show: {log_key}"
    );
}

/// `--help` (per command) and `--version` answer on stdout with 0; usage errors exit 2 on
/// stderr; `--aws` alone is an error, not a local server; nothing found exits 3.
#[tokio::test]
async fn the_command_line_answers_like_a_tool() {
    let app = spawn_receiver_only().await;
    app.post_all(&fixtures()[..3]).await;
    let dir = app.data_dir.path();
    let (code, out, _) = run_with(dir, &["inspect", "--help"], &[]);
    assert_eq!(code, Some(0));
    assert!(out.contains("Usage: wati-ingest inspect"), "{out}");
    let (code, out, _) = run_with(dir, &["--version"], &[]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out.trim(),
        format!("wati-ingest {}", env!("CARGO_PKG_VERSION"))
    );
    for usage_error in [
        &["--aws"][..],
        &["inspect"],
        &["replay", "--since", "x"],
        &["nope"],
    ] {
        let (code, out, err) = run_with(dir, usage_error, &[]);
        assert_eq!(code, Some(2), "{usage_error:?}: {err}");
        assert!(
            out.is_empty() && err.starts_with("error:"),
            "{usage_error:?}: {err}"
        );
    }
    let (code, out, err) = run_with(dir, &["inspect", "no-such-id"], &[]);
    assert_eq!(code, Some(3), "{out}{err}");
    assert!(err.contains("nothing kept under \"no-such-id\""), "{err}");
    // The server's settings, even broken ones, are not a command's business: it gets as far as
    // the store (and finds nothing).
    let (code, out, err) = run_with(
        dir,
        &["inspect", "no-such-id"],
        &[
            ("PORT", "not-a-port"),
            ("WEBHOOK_SECRET", "short"),
            ("API_TOKEN", "x"),
        ],
    );
    assert_eq!(code, Some(3), "{out}{err}");
}

/// A `DATA_DIR` without a store is refused, named, and left as it was: no new store, no new
/// secrets, no "null" that looks like an answer.
#[test]
fn a_wrong_data_dir_is_refused_not_created() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("typo");
    for args in [
        &["inspect", "x"][..],
        &["dead-letters"],
        &["quarantine"],
        &["tail"],
    ] {
        let (code, out, err) = run_with(&missing, args, &[]);
        assert_eq!(code, Some(1), "{args:?}: {out}{err}");
        assert!(
            err.contains("holds no wati-ingest store") && err.contains("DATA_DIR"),
            "{err}"
        );
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
    }
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = run_with(
        empty.path(),
        &["replay", "--since", "0", "--until", "1"],
        &[],
    );
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        std::fs::read_dir(empty.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

/// `quarantine` lists what the receiver could not parse, `inspect` shows it by its key, and
/// `replay --include-quarantined` puts it back on the queue (after a parser fix, the recovery
/// path); `dead-letters` and `redrive-dlq --key` work on one dead letter.
#[tokio::test]
async fn quarantine_and_dead_letters_from_the_command_line() {
    let app = spawn_receiver_only().await;
    let (status, answer) = app.post_webhook("{not json").await;
    assert_eq!(status, 200, "{answer}");
    let dir = app.data_dir.path();
    let (ok, listed) = wati_ingest(dir, &["quarantine"]);
    assert!(ok, "{listed}");
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 1, "{listed}");
    assert!(
        lines[0].contains(" receiver quarantine:#") && lines[0].contains("bytes=9"),
        "{listed}"
    );
    let key = lines[0]
        .split(" key=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap();
    let (ok, out) = wati_ingest(dir, &["inspect", key]);
    assert!(ok, "{out}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["quarantine"][0]["stage"], "receiver");
    assert_eq!(shown["quarantine"][0]["body"], "{not json");
    assert_eq!(shown["ledger"], Value::Null);

    let queued = app.counts().await.queued;
    let (ok, out) = wati_ingest(dir, &["replay", "--since", "0", "--until", "99999999999"]);
    assert!(ok && out.starts_with("replayed 0 "), "{out}");
    let (ok, out) = wati_ingest(
        dir,
        &[
            "replay",
            "--since",
            "0",
            "--until",
            "99999999999",
            "--include-quarantined",
        ],
    );
    assert!(ok && out.starts_with("replayed 1 "), "{out}");
    assert_eq!(app.counts().await.queued, queued + 1);

    let (ok, out) = wati_ingest(dir, &["dead-letters"]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "no dead letters");
    let (code, out, _) = run_with(dir, &["redrive-dlq", "--key", "k:none"], &[]);
    assert_eq!(
        (code, out.trim()),
        (Some(3), "redrove 0 dead-lettered events")
    );
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

/// `erase-contact` asks for `--yes`, erases a contact's messages and archived bodies (so
/// `inspect` finds nothing by their ids), and exits 3 when nothing is left to erase.
#[tokio::test]
async fn erase_contact_from_the_command_line() {
    let app = spawn_app().await;
    app.post_all(&fixtures()).await;
    app.wait_until_applied().await;
    let dir = app.data_dir.path();
    let message = "6734a1b2c3d4e5f601000010";
    assert!(wati_ingest(dir, &["inspect", message]).0);

    let (code, _, err) = run_with(dir, &["erase-contact", "14155550104"], &[]);
    assert_eq!(code, Some(2), "no --yes: {err}");
    assert!(err.contains("--yes"), "{err}");

    let (code, out, err) = run_with(dir, &["erase-contact", "14155550104", "--yes"], &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert!(report["erased"]["messages"].as_u64().unwrap() >= 3, "{out}");
    assert!(report["erased"]["ledger"].as_u64().unwrap() >= 1, "{out}");
    let (code, _, _) = run_with(dir, &["inspect", message], &[]);
    assert_eq!(code, Some(3), "the erased message is gone");
    let (code, _, _) = run_with(dir, &["inspect", "local-0010"], &[]);
    assert_eq!(code, Some(3), "by its local id too");

    let (code, _, err) = run_with(dir, &["erase-contact", "14155550104", "--yes"], &[]);
    assert_eq!(code, Some(3), "nothing left: {err}");
}
