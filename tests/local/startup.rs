//! What the real binary refuses at start-up, and that it refuses before it touches the disk: bad
//! settings, a second server on one data directory, an intake database lost next to its state.

use std::ffi::OsStr;
use std::path::Path;

use reqwest::StatusCode;

use crate::helpers::{
    fixtures, healthz, read_until_found, refused_start, Server, API_TOKEN, WEBHOOK_SECRET,
};

/// Each bad value is refused with a message naming its variable, and nothing is created: not
/// the data directory, not a secret file.
#[test]
fn bad_settings_are_refused_before_the_data_dir_is_created() {
    let parent = tempfile::tempdir().unwrap();
    let data_dir = parent.path().join("data");
    let cases = [
        ("DEDUP_TTL_DAYS", "106751991167301"),
        ("DEDUP_TTL_DAYS", "1"),
        ("DEDUP_TTL_DAYS", "3651"),
        ("MAX_BODY_BYTES", "0"),
        ("MAX_BODY_BYTES", "-1"),
        ("WEBHOOK_SECRET", "   "),
        ("WEBHOOK_SECRET", "short-secret"),
        ("API_TOKEN", " \t "),
        ("API_TOKEN", "short-token"),
        ("PORT", "70000"),
        ("DATA_DIR", "  "),
    ];
    for (name, value) in cases {
        let mut env = vec![
            ("DATA_DIR", data_dir.as_os_str()),
            ("PORT", OsStr::new("0")),
        ];
        env.retain(|(n, _)| *n != name);
        env.push((name, OsStr::new(value)));
        let stderr = refused_start(&[], &env);
        assert!(
            stderr.contains(name),
            "{name}={value:?}: the refusal does not name it:\n{stderr}"
        );
        assert!(
            !data_dir.exists(),
            "{name}={value:?}: {} was created before the refusal",
            data_dir.display()
        );
    }
    // The operator's commands read only DATA_DIR (a bad server setting is not theirs to refuse),
    // and refuse a directory without a store rather than create one.
    let stderr = refused_start(
        &["inspect", "some-key"],
        &[
            ("DATA_DIR", data_dir.as_os_str()),
            ("DEDUP_TTL_DAYS", OsStr::new("106751991167301")),
        ],
    );
    assert!(
        stderr.contains("holds no wati-ingest store") && !stderr.contains("DEDUP_TTL_DAYS"),
        "{stderr}"
    );
    assert!(!data_dir.exists());
}

/// A second server on a data directory that one is serving is refused, naming the directory
/// and the first one's pid; the first keeps serving, and once it is gone (even by `kill -9`)
/// the directory can be served again.
#[tokio::test]
async fn a_second_server_on_one_data_dir_is_refused() {
    let data_dir = tempfile::tempdir().unwrap();
    let first = Server::start(data_dir.path());
    let env = [
        ("DATA_DIR", data_dir.path().as_os_str()),
        ("PORT", OsStr::new("0")),
        ("WEBHOOK_SECRET", OsStr::new(WEBHOOK_SECRET)),
        ("API_TOKEN", OsStr::new(API_TOKEN)),
    ];
    let stderr = refused_start(&[], &env);
    assert!(
        stderr.contains("in use by another wati-ingest")
            && stderr.contains(&data_dir.path().display().to_string())
            && stderr.contains(&format!("pid {}", first.pid())),
        "{stderr}"
    );
    assert_eq!(healthz(&first.address).await, StatusCode::OK);

    // The operator's commands take no lock: they run beside the server.
    let inspect = std::process::Command::new(env!("CARGO_BIN_EXE_wati-ingest"))
        .args(["inspect", "no-such-key"])
        .envs(env)
        .output()
        .unwrap();
    assert_eq!(
        inspect.status.code(),
        Some(3),
        "ran, found nothing: {inspect:?}"
    );

    first.kill();
    let again = Server::start(data_dir.path());
    assert_eq!(healthz(&again.address).await, StatusCode::OK);
}

/// Serves every fixture to completion, so that the state database holds messages, then stops
/// the server with `kill -9`.
async fn data_dir_with_state() -> tempfile::TempDir {
    let data_dir = tempfile::tempdir().unwrap();
    let server = Server::start(data_dir.path());
    let client = reqwest::Client::new();
    for fixture in fixtures() {
        let response = client
            .post(format!("{}/webhook/{WEBHOOK_SECRET}", server.address))
            .body(fixture.body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let status = read_until_found(&client, &server.address, "/v1/contacts/14155550101").await;
    assert_eq!(status, StatusCode::OK, "the state holds the contact");
    server.kill();
    data_dir
}

fn env_for(data_dir: &Path) -> Vec<(&'static str, &OsStr)> {
    vec![
        ("DATA_DIR", data_dir.as_os_str()),
        ("PORT", OsStr::new("0")),
        ("WEBHOOK_SECRET", OsStr::new(WEBHOOK_SECRET)),
        ("API_TOKEN", OsStr::new(API_TOKEN)),
    ]
}

/// An intake database emptied (or deleted) next to a state database is refused, by the server
/// and by the operator's commands, naming the file and the way back; the empty file is left as
/// it was. Creating `accept-empty-intake` lets one start through, which removes it.
#[tokio::test]
async fn an_intake_database_lost_next_to_its_state_is_refused() {
    let data_dir = data_dir_with_state().await;
    let intake = data_dir.path().join("wati-ingest.db");
    let accept = data_dir.path().join("accept-empty-intake");
    let env = env_for(data_dir.path());

    // Emptied, as a failed copy or a full disk's truncation leaves it.
    std::fs::File::create(&intake).unwrap();
    for args in [&[][..], &["inspect", "some-key"][..]] {
        let stderr = refused_start(args, &env);
        assert!(
            stderr.contains(&format!("{} is empty", intake.display()))
                && stderr.contains("wati-ingest.state.db")
                && stderr.contains("from a backup")
                && stderr.contains(&accept.display().to_string()),
            "{args:?}: {stderr}"
        );
        assert_eq!(std::fs::metadata(&intake).unwrap().len(), 0, "touched");
    }

    // Deleted, with its WAL.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", intake.display()));
    }
    let stderr = refused_start(&[], &env);
    assert!(
        stderr.contains(&format!("{} is missing", intake.display())),
        "{stderr}"
    );

    // The operator accepts the loss once: the state is served, the acceptance is used up.
    std::fs::File::create(&accept).unwrap();
    let server = Server::start(data_dir.path());
    let client = reqwest::Client::new();
    let status = read_until_found(&client, &server.address, "/v1/contacts/14155550101").await;
    assert_eq!(status, StatusCode::OK, "the state was kept");
    assert!(!accept.exists(), "the acceptance must be used up");
    server.kill();
    assert!(std::fs::metadata(&intake).unwrap().len() > 0);
    let again = Server::start(data_dir.path());
    assert_eq!(healthz(&again.address).await, StatusCode::OK);
}

/// The first lines a fresh `wati-ingest` prints with only `DATA_DIR`, `PORT=0` and `extra` set.
fn first_lines(data_dir: &std::path::Path, extra: &[(&str, &str)]) -> Vec<String> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wati-ingest"))
        .env_clear()
        .env("DATA_DIR", data_dir)
        .env("PORT", "0")
        .env("RUST_LOG", "warn")
        .envs(extra.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .take(3)
        .map(Result::unwrap)
        .collect();
    child.kill().unwrap();
    child.wait().unwrap();
    lines
}

/// A generated webhook secret is printed in full once, when it is made; later starts print
/// where it is kept (stdout ends up in systemd's or a container's logs). `BIND` sets the address.
#[test]
fn a_generated_secret_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let first = first_lines(dir.path(), &[("BIND", "0.0.0.0")]);
    assert!(
        first[0].starts_with("wati-ingest listening on http://0.0.0.0:"),
        "{first:?}"
    );
    let secret = std::fs::read_to_string(dir.path().join("webhook_secret")).unwrap();
    let secret = secret.trim();
    assert_eq!(secret.len(), 64);
    assert!(
        first[1].ends_with(&format!("/webhook/{secret}")),
        "{first:?}"
    );
    let again = first_lines(dir.path(), &[]);
    assert!(
        again[0].starts_with("wati-ingest listening on http://127.0.0.1:"),
        "{again:?}"
    );
    assert!(
        again.iter().all(|line| !line.contains(secret)),
        "printed again: {again:?}"
    );
    assert!(again[1].contains("<the secret in "), "{again:?}");
}
