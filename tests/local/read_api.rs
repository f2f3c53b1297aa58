//! The read API's access rules and answers for what it does not know.

use reqwest::StatusCode;

use crate::helpers::{fixture, spawn_app};

/// Without the right bearer token nothing is readable, and the answer says how to authenticate.
#[tokio::test]
async fn reads_need_the_bearer_token() {
    let app = spawn_app().await;
    app.post_all(&[fixture("01-")]).await;
    app.wait_until_applied().await;
    for path in [
        "/v1/messages/6734a1b2c3d4e5f601000001",
        "/v1/contacts/14155550101",
    ] {
        for token in [None, Some("wrong-token-0123456789"), Some("")] {
            let (status, body) = app.get_with_token(path, token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} {token:?}");
            assert!(body.get("wa_id").is_none());
        }
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .header("authorization", "Basic dXNlcjpwYXNz")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let (status, _) = app.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
}

/// Unknown ids are 404, including ids that try to climb out of the path.
#[tokio::test]
async fn unknown_ids_are_not_found() {
    let app = spawn_app().await;
    for path in [
        "/v1/messages/6734a1b2c3d4e5f6010000ff",
        "/v1/contacts/19999999999",
        "/v1/messages/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/v1/messages/a/b/c",
        "/v1/contacts/'%20OR%201=1--",
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
}

/// Health is 200 while the store answers.
#[tokio::test]
async fn health_reports_ok() {
    let app = spawn_app().await;
    let response = reqwest::get(format!("{}/healthz", app.address))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
