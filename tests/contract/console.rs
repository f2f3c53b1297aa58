//! `/console` through the `api` Lambda's router, fed API Gateway HTTP API events, over DynamoDB
//! Local: it signs in and answers each search like the local server's console over the embedded
//! store holding the same messages (the same contacts, windows, messages in the same order with
//! the same statuses and explanations).

use std::sync::Arc;

use serde_json::json;
use tower::ServiceExt;
use wati_ingest::auth::SecretSet;
use wati_ingest::event::WatiEvent;
use wati_ingest::http::ReadService;
use wati_ingest::message::MessageRecord;
use wati_ingest::store::embedded::EmbeddedStore;

use crate::support::Backend;

const TOKEN: &str = "console-lambda-token-0123456789abcdef";
const T0: i64 = 1_764_238_453;

/// An HTTP API (payload 2.0) request to the console.
fn console_event(
    method: &str,
    path: &str,
    query: &str,
    cookie: Option<&str>,
    body: &str,
) -> String {
    let mut headers = json!({
        "host": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
        "x-forwarded-proto": "https",
    });
    if let Some(cookie) = cookie {
        headers["cookie"] = cookie.into();
    }
    if method == "POST" {
        headers["content-type"] = "application/x-www-form-urlencoded".into();
    }
    let route = format!("{method} {path}");
    json!({
        "version": "2.0",
        "routeKey": route,
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "a1b2c3d4e5",
            "domainName": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "a1b2c3d4e5",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.7", "userAgent": "Mozilla/5.0"},
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": route,
            "stage": "$default",
            "time": "26/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1_795_600_000_000u64
        },
        "body": body,
        "isBase64Encoded": false
    })
    .to_string()
}

/// Status, `Set-Cookie` and text of one request through `router`.
async fn send(router: &axum::Router, event: String) -> (u16, Option<String>, String) {
    let request = lambda_http::request::from_str(&event).expect("a valid Lambda event");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status().as_u16();
    let cookie = response
        .headers()
        .get("set-cookie")
        .map(|value| value.to_str().unwrap().to_owned());
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, cookie, String::from_utf8_lossy(&bytes).into_owned())
}

/// What a contact's page shows, without the parts that move with the clock: the window lines'
/// kind and, per message, its status class and id.
fn shown(page: &str) -> Vec<String> {
    let mut shown = Vec::new();
    for part in page.split("<p class=\"").skip(1) {
        let class = part.split('"').next().unwrap_or_default();
        if class == "open" || class == "closed" {
            shown.push(class.to_owned());
        }
    }
    for item in page.split("<li class=\"message ").skip(1) {
        let status = item.split('"').next().unwrap_or_default();
        let id = item
            .split("<p class=\"id\">")
            .nth(1)
            .and_then(|rest| rest.split('<').next())
            .unwrap_or_default();
        let reason = item
            .split("<summary>")
            .nth(1)
            .and_then(|rest| rest.split('<').next())
            .unwrap_or_default();
        shown.push(format!("{status} {id} {reason}"));
    }
    shown
}

#[tokio::test]
async fn the_api_lambda_serves_the_console_like_the_local_server() {
    let backend = Backend::aws().await;
    let Backend::Aws { state, .. } = &backend else {
        unreachable!()
    };
    let dir = tempfile::tempdir().unwrap();
    let local = EmbeddedStore::open(&dir.path().join("console.db")).unwrap();
    let now = wati_ingest::time::now_unix();
    for body in crate::fixtures() {
        // An hour ago: the windows are open.
        let mut json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if let Some(at) = json["timestamp"]
            .as_str()
            .and_then(|t| t.parse::<i64>().ok())
        {
            json["timestamp"] = (at - T0 + now - 3600).to_string().into();
        }
        let body = serde_json::to_vec(&json).unwrap();
        let event = WatiEvent::parse(&body).unwrap();
        if let Some(facts) = MessageRecord::from_event(&event, now - 3600) {
            backend.state().apply(&facts, None).await.unwrap();
            wati_ingest::ports::StateStore::apply(&local, &facts, None)
                .await
                .unwrap();
        }
    }
    let tokens = || SecretSet::new([TOKEN]).unwrap().into();
    let lambda = wati_ingest::lambda::read_api_router(tokens(), state.clone());
    let local = wati_ingest::console::console_routes(Arc::new(ReadService {
        state: Arc::new(local),
        tokens: tokens(),
        changes: None,
        intake: None,
    }));

    let (status, _, page) = send(&lambda, console_event("GET", "/console", "", None, "")).await;
    assert_eq!(status, 200);
    assert!(page.contains("Sign in"));
    let (status, refused, _) = send(
        &lambda,
        console_event(
            "POST",
            "/console/sign-in",
            "",
            None,
            "token=wrong-token-0123456789",
        ),
    )
    .await;
    assert_eq!((status, refused), (401, None));
    let (status, set_cookie, _) = send(
        &lambda,
        console_event(
            "POST",
            "/console/sign-in",
            "",
            None,
            &format!("token={TOKEN}"),
        ),
    )
    .await;
    assert_eq!(status, 303);
    let set_cookie = set_cookie.expect("a session");
    assert!(
        set_cookie.ends_with("; Secure"),
        "over API Gateway's HTTPS: {set_cookie}"
    );
    let session = set_cookie.split(';').next().unwrap().to_owned();

    for query in [
        "q=14155550101",
        "q=14155550102",
        "q=local-0005",
        "q=US.13491208655302741918",
    ] {
        let event = console_event("GET", "/console", query, Some(&session), "");
        let (status, _, on_aws) = send(&lambda, event.clone()).await;
        let (local_status, _, here) = send(&local, event).await;
        assert_eq!(status, 200, "{query}: {on_aws}");
        assert_eq!(status, local_status, "{query}");
        assert!(!shown(&on_aws).is_empty(), "{query}: {on_aws}");
        assert_eq!(shown(&on_aws), shown(&here), "{query}");
    }
    let missing = console_event("GET", "/console", "q=nobody-0000", Some(&session), "");
    assert_eq!(send(&lambda, missing.clone()).await.0, 404);
    assert_eq!(send(&local, missing).await.0, 404);
}
