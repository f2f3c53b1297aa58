//! `wati-ingest smoke` against the real local server, through the real binary: every hop passes
//! on a working pipeline, and each way it can be broken is named.

use std::process::Command;

use crate::helpers::{spawn_app, spawn_receiver_only, TestApp, API_TOKEN, WEBHOOK_SECRET};

/// Runs `smoke` against `app` with the given secret and token; exit code and stdout. (It blocks
/// its thread: the tests run multi-threaded so that the server goes on answering.)
fn smoke(app: &TestApp, secret: &str, token: &str, wait: &str) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wati-ingest"))
        .args([
            "smoke",
            "--webhook-url",
            &format!("{}/webhook/{secret}", app.address),
            "--api-url",
            &app.address,
            "--wait",
            wait,
        ])
        .env_clear()
        .env("API_TOKEN", token)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run wati-ingest smoke");
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        !out.contains(secret) && !out.contains(token),
        "a secret was printed:\n{out}"
    );
    (output.status.code(), out)
}

fn line<'a>(out: &'a str, what: &str) -> &'a str {
    out.lines()
        .find(|line| line.contains(what))
        .unwrap_or_else(|| panic!("no line about {what:?} in:\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_working_pipeline_passes_every_hop() {
    let app = spawn_app().await;
    let (code, out) = smoke(&app, WEBHOOK_SECRET, API_TOKEN, "30");
    assert_eq!(code, Some(0), "{out}");
    for hop in [
        "webhook message -> 200",
        "webhook sessionMessageSent -> 200",
        "webhook sentMessageDELIVERED -> 200",
        "webhook sentMessageREAD -> 200",
        "webhook templateMessageFailed -> 200",
        "outbound message applied (read)",
        "inbound message applied",
        "failed template applied (failed)",
        "contact's window open",
        "change announced (message.updated read)",
    ] {
        let shown = line(&out, hop);
        assert!(
            shown.starts_with("ok ") && shown.ends_with(" ms"),
            "{shown}"
        );
    }
    assert!(out.trim_end().ends_with("smoke passed"), "{out}");
    // A second run is a new sample: nothing it posts is a duplicate of the first's.
    let (code, again) = smoke(&app, WEBHOOK_SECRET, API_TOKEN, "30");
    assert_eq!(code, Some(0), "{again}");
    assert_ne!(line(&out, "smoke run"), line(&again, "smoke run"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_or_token_is_named() {
    let app = spawn_app().await;
    let (code, out) = smoke(&app, "wrong-secret-0123456789abcdef", API_TOKEN, "2");
    assert_eq!(code, Some(1), "{out}");
    let shown = line(&out, "webhook message -> 200");
    assert!(
        shown.starts_with("FAIL") && shown.contains("401: the secret in the webhook URL"),
        "{shown}"
    );
    assert!(!out.contains("applied"), "nothing to wait for:\n{out}");

    let (code, out) = smoke(&app, WEBHOOK_SECRET, "wrong-token-0123456789abcdef", "2");
    assert_eq!(code, Some(1), "{out}");
    let shown = line(&out, "read API");
    assert!(
        shown.starts_with("FAIL") && shown.contains("refused the token"),
        "{shown}"
    );
    assert!(
        line(&out, "webhook message -> 200").starts_with("ok "),
        "{out}"
    );
}

/// Accepted but never applied (no processor): the hop says where to look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_but_never_applied_points_at_the_processor() {
    let app = spawn_receiver_only().await;
    let (code, out) = smoke(&app, WEBHOOK_SECRET, API_TOKEN, "1");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        line(&out, "webhook sentMessageREAD -> 200").starts_with("ok "),
        "{out}"
    );
    let shown = line(&out, "outbound message applied");
    assert!(
        shown.starts_with("FAIL")
            && shown.contains("accepted but not applied")
            && shown.contains("dead-letters"),
        "{shown}"
    );
}
