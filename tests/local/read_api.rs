//! The read API's access rules and answers for what it does not know.

use reqwest::StatusCode;

use crate::helpers::{fixture, spawn_app, API_TOKEN};

/// Without the right bearer token nothing is readable, and the answer says how to authenticate.
#[tokio::test]
async fn reads_need_the_bearer_token() {
    let app = spawn_app().await;
    app.post_all(&[fixture("01-")]).await;
    app.wait_until_applied().await;
    for path in [
        "/v1/messages/6734a1b2c3d4e5f601000001",
        "/v1/contacts/14155550101",
        "/v1/contacts/14155550101/messages",
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

/// Every read answer (found, not found, unauthorized, a bad query) says `Cache-Control:
/// no-store`: customer data must not stay in a proxy's or a browser's cache.
#[tokio::test]
async fn read_answers_are_not_cached() {
    let app = spawn_app().await;
    app.post_all(&[fixture("01-")]).await;
    app.wait_until_applied().await;
    for (path, token, expected) in [
        (
            "/v1/messages/6734a1b2c3d4e5f601000001",
            Some(API_TOKEN),
            StatusCode::OK,
        ),
        ("/v1/contacts/14155550101", Some(API_TOKEN), StatusCode::OK),
        (
            "/v1/contacts/14155550101/messages",
            Some(API_TOKEN),
            StatusCode::OK,
        ),
        (
            "/v1/contacts/14155550101/messages?limit=0",
            Some(API_TOKEN),
            StatusCode::BAD_REQUEST,
        ),
        ("/v1/changes", Some(API_TOKEN), StatusCode::OK),
        (
            "/v1/messages/unknown-id",
            Some(API_TOKEN),
            StatusCode::NOT_FOUND,
        ),
        ("/v1/contacts/14155550101", None, StatusCode::UNAUTHORIZED),
    ] {
        let mut request = app.client.get(format!("{}{path}", app.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), expected, "{path}");
        assert_eq!(response.headers()["cache-control"], "no-store", "{path}");
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

/// A contact's message list pages newest first with an opaque cursor; a cursor it did not give
/// or a limit outside 1 to 100 is a 400, an unknown contact an empty list.
#[tokio::test]
async fn a_contacts_messages_are_listed_a_page_at_a_time() {
    let app = spawn_app().await;
    app.post_all(&crate::helpers::fixtures()).await;
    app.wait_until_applied().await;
    let mut listed = Vec::new();
    let mut path = "/v1/contacts/14155550101/messages?limit=2".to_owned();
    loop {
        let (status, body) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let messages = body["messages"].as_array().unwrap();
        assert!(messages.len() <= 2, "{body}");
        listed.extend(messages.iter().map(|m| {
            (
                m["sent_at"].as_str().unwrap_or_default().to_owned(),
                m["id"].clone(),
            )
        }));
        match body["next"].as_str() {
            Some(cursor) => {
                path = format!("/v1/contacts/14155550101/messages?limit=2&before={cursor}")
            }
            None => break,
        }
    }
    assert!(listed.len() >= 3, "{listed:?}");
    let mut newest_first = listed.clone();
    newest_first.sort_by(|a, b| b.0.cmp(&a.0));
    assert_eq!(
        listed.iter().map(|m| &m.0).collect::<Vec<_>>(),
        newest_first.iter().map(|m| &m.0).collect::<Vec<_>>()
    );
    let (_, whole) = app.get("/v1/contacts/14155550101/messages?limit=100").await;
    assert_eq!(whole["messages"].as_array().unwrap().len(), listed.len());
    assert_eq!(whole["next"], serde_json::Value::Null);

    for bad in [
        "limit=0",
        "limit=101",
        "limit=ten",
        "before=p1.!!",
        "before=c1.10",
        "before=",
        "channel=14155550000",
    ] {
        let (status, body) = app
            .get(&format!("/v1/contacts/14155550101/messages?{bad}"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, body) = app.get("/v1/contacts/19999999999/messages").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({"messages": [], "next": null}));
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
