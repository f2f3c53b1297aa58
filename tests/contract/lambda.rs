//! The receiver Lambda's router fed real API Gateway HTTP API and Function URL events, over
//! DynamoDB Local and the SQS emulator.

use serde_json::{json, Value};
use tower::ServiceExt;
use wati_ingest::auth::SecretSet;
use wati_ingest::lambda::{receiver_router, ReceiverConfig};

use crate::support::Backend;

const SECRET: &str = "lambda-test-secret-0123456789abcdef";

/// A payload-format-2.0 event as API Gateway's HTTP API (`function_url: false`) or a Lambda
/// Function URL (`true`) sends it.
pub(crate) fn event(secret: &str, body: &[u8], function_url: bool, base64: bool) -> String {
    use base64_body::encode;
    let path = format!("/webhook/{secret}");
    let (route_key, domain) = if function_url {
        (
            "$default",
            "abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws",
        )
    } else {
        (
            "POST /webhook/{secret}",
            "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
        )
    };
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": domain, "user-agent": "Wati"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "a1b2c3d4e5",
            "domainName": domain,
            "domainPrefix": domain.split('.').next().unwrap(),
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.7", "userAgent": "Wati"},
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": route_key,
            "stage": "$default",
            "time": "26/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1_795_600_000_000u64
        },
        "body": if base64 { encode(body) } else { String::from_utf8_lossy(body).into_owned() },
        "isBase64Encoded": base64
    });
    if !function_url {
        event["pathParameters"] = json!({ "secret": secret });
    }
    event.to_string()
}

mod base64_body {
    pub fn encode(bytes: &[u8]) -> String {
        const TABLE: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

pub(crate) async fn invoke(router: &axum::Router, event: String) -> (u16, Value) {
    let request = lambda_http::request::from_str(&event).expect("a valid Lambda event");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Both event shapes reach the webhook route: a wrong secret is 401 and stores nothing, an
/// authentic event is recorded in DynamoDB and sent to SQS, a retry is a duplicate (sent again).
#[tokio::test]
async fn api_gateway_and_function_url_events_are_received() {
    let backend = Backend::aws().await;
    let Backend::Aws { ledger, queue, .. } = &backend else {
        unreachable!()
    };
    let config = ReceiverConfig {
        ledger_table: String::new(),
        queue_url: queue.url().to_owned(),
        secret_arn: String::new(),
        dedup_ttl_days: 7,
        max_body_bytes: 256 * 1024,
        quarantine_retention_days: 30,
    };
    let router = receiver_router(
        &config,
        SecretSet::new([SECRET]).unwrap().into(),
        ledger.clone(),
        queue.clone(),
    );
    let delivered = br#"{"eventType":"sentMessageDELIVERED","id":"6734a1b2c3d4e5f601000003","timestamp":"1764238518"}"#;
    let read = br#"{"eventType":"sentMessageREAD","id":"6734a1b2c3d4e5f601000003","timestamp":"1764238543"}"#;

    for function_url in [false, true] {
        let (status, _) = invoke(
            &router,
            event("wrong-secret-0123456789", delivered, function_url, false),
        )
        .await;
        assert_eq!(status, 401, "function_url={function_url}");
    }
    assert!(
        backend.drain_queue().await.is_empty(),
        "a rejected request sends nothing"
    );

    let (status, body) = invoke(&router, event(SECRET, delivered, false, false)).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("accepted")),
        "{body}"
    );
    let (status, body) = invoke(&router, event(SECRET, read, true, true)).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("accepted")),
        "{body}"
    );
    let (status, body) = invoke(&router, event(SECRET, delivered, true, false)).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("duplicate")),
        "{body}"
    );

    let mut sent: Vec<String> = backend
        .drain_queue()
        .await
        .into_iter()
        .map(|e| e.body)
        .collect();
    sent.sort();
    // The retry is sent again (its first send may have been lost to a crash).
    let mut expected = vec![
        String::from_utf8(delivered.to_vec()).unwrap(),
        String::from_utf8(delivered.to_vec()).unwrap(),
        String::from_utf8(read.to_vec()).unwrap(),
    ];
    expected.sort();
    assert_eq!(sent, expected);
}

/// A GET of the read API as API Gateway's HTTP API sends it (the query string only in
/// `rawQueryString`, as `lambda_http` must pass it on).
fn read_event(token: &str, path: &str, query: &str) -> String {
    json!({
        "version": "2.0",
        "routeKey": "GET /v1/{proxy+}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {"authorization": format!("Bearer {token}"),
                    "host": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "a1b2c3d4e5",
            "domainName": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "a1b2c3d4e5",
            "http": {"method": "GET", "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.7", "userAgent": "curl"},
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": "GET /v1/{proxy+}",
            "stage": "$default",
            "time": "26/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1_795_600_000_000u64
        },
        "isBase64Encoded": false
    })
    .to_string()
}

/// `?channel=` reaches the api Lambda's router through a real HTTP API event: one number's
/// entry, 404 for a number the contact never talked to, 400 for a malformed one.
#[tokio::test]
async fn the_read_api_lambda_takes_the_channel_query() {
    let backend = Backend::aws().await;
    let Backend::Aws { state, .. } = &backend else {
        unreachable!()
    };
    for body in crate::fixtures() {
        let event = wati_ingest::event::WatiEvent::parse(&body).unwrap();
        if let Some(facts) = wati_ingest::message::MessageRecord::from_event(&event, 1_764_238_453)
        {
            backend.state().apply(&facts, None).await.unwrap();
        }
    }
    const TOKEN: &str = "lambda-read-token-0123456789abcdef";
    let router = wati_ingest::lambda::read_api_router(
        SecretSet::new([TOKEN]).unwrap().into(),
        state.clone(),
    );
    let path = "/v1/contacts/14155550101";
    let (status, all) = invoke(&router, read_event(TOKEN, path, "")).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["channels"].as_array().map(Vec::len), Some(2), "{all}");
    let (status, second) = invoke(&router, read_event(TOKEN, path, "channel=%2B14155550200")).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second, all["channels"][1]);
    assert_eq!(second["channel_id"], "6734a09f1c2b3a4d5e6f7c02");
    let (status, _) = invoke(&router, read_event(TOKEN, path, "channel=14155550999")).await;
    assert_eq!(status, 404);
    let (status, _) = invoke(&router, read_event(TOKEN, path, "channel=returns-desk")).await;
    assert_eq!(status, 400);
}
