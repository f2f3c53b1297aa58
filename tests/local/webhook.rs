//! `POST /webhook/{secret}`: what Wati sees for every kind of request.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{fixture, fixtures, spawn_app, WEBHOOK_SECRET};

/// Fixtures that repeat an earlier v1 event as its v2 (or bsuid v2) twin.
const V2_TWINS: [&str; 6] = ["04-", "06-", "08-", "10-", "12-", "21-"];

/// Every Wati event type is taken with 200; v2 twins of a v1 event are reported as duplicates.
#[tokio::test]
async fn every_event_type_is_accepted() {
    let app = spawn_app().await;
    let mut accepted = 0;
    for event in fixtures() {
        let (status, body) = app.post_webhook(event.body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{}: {body}", event.name);
        let expected = if V2_TWINS.iter().any(|p| event.name.starts_with(p)) {
            "duplicate"
        } else {
            accepted += 1;
            "accepted"
        };
        assert_eq!(body["status"], expected, "{}: {body}", event.name);
        assert!(
            body["key"].as_str().is_some_and(|k| !k.is_empty()),
            "{body}"
        );
    }
    app.wait_until_applied().await;
    let counts = app.counts().await;
    assert_eq!(counts.ledger, accepted);
    assert_eq!(counts.quarantined, 0);
    assert_eq!(counts.dead_letters, 0);
}

/// Wati retrying the same payload gets "duplicate" with the same key, and nothing is stored twice.
#[tokio::test]
async fn a_retried_payload_is_a_duplicate() {
    let app = spawn_app().await;
    let event = fixture("07-");
    let (_, first) = app.post_webhook(event.body.clone()).await;
    let (status, second) = app.post_webhook(event.body.clone()).await;
    assert_eq!(first["status"], "accepted");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(second["status"], "duplicate");
    assert_eq!(first["key"], second["key"]);
    app.wait_until_applied().await;
    assert_eq!(app.counts().await.ledger, 1);
}

/// A wrong or missing secret is 401 and touches nothing.
#[tokio::test]
async fn wrong_or_missing_secret_is_rejected_without_storing() {
    let app = spawn_app().await;
    let body = fixture("01-").body;
    let wrong_length = format!("/webhook/{}", &WEBHOOK_SECRET[..10]);
    let longer = format!("/webhook/{WEBHOOK_SECRET}x");
    let encoded = format!("/webhook/{}%2F", WEBHOOK_SECRET);
    for path in [
        "/webhook/nope",
        "/webhook",
        "/webhook/",
        wrong_length.as_str(),
        longer.as_str(),
        encoded.as_str(),
    ] {
        let (status, _) = app.post_to(path, body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let counts = app.counts().await;
    assert_eq!(
        (counts.ledger, counts.quarantined, counts.queued),
        (0, 0, 0)
    );
}

/// Bodies over the limit are 413 and not stored, whether the length is declared or streamed.
#[tokio::test]
async fn oversize_bodies_are_refused() {
    let app = spawn_app().await;
    let mut huge = br#"{"eventType":"message","text":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'a', 256 * 1024));
    huge.extend(br#""}"#);
    let (status, _) = app.post_webhook(huge.clone()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let chunks = futures_stream(huge);
    let (status, _) = app.post_webhook(reqwest::Body::wrap_stream(chunks)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let counts = app.counts().await;
    assert_eq!((counts.ledger, counts.quarantined), (0, 0));
}

fn futures_stream(
    body: Vec<u8>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    struct Chunks(std::vec::IntoIter<Vec<u8>>);
    impl futures_core::Stream for Chunks {
        type Item = Result<Vec<u8>, std::io::Error>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next().map(Ok))
        }
    }
    Chunks(
        body.chunks(8192)
            .map(<[u8]>::to_vec)
            .collect::<Vec<_>>()
            .into_iter(),
    )
}

/// Authentic but unusable bodies get 200 "quarantined" (Wati must not retry them) and are kept.
#[tokio::test]
async fn unusable_bodies_are_quarantined_and_kept() {
    let app = spawn_app().await;
    let bodies: [&[u8]; 6] = [
        b"not json at all",
        b"[1,2,3]",
        br#"{"id":"6734a1b2c3d4e5f601000099"}"#,
        br#"{"eventType":42}"#,
        b"\xff\xfe\xfd",
        b"",
    ];
    for body in bodies {
        let (status, response) = app.post_webhook(body.to_vec()).await;
        assert_eq!(status, StatusCode::OK, "{body:?}");
        assert_eq!(response["status"], "quarantined", "{body:?}");
        let key = response["key"].as_str().expect("quarantine key");
        let kept = app.store.quarantined_body(key).await.unwrap();
        assert_eq!(kept.as_deref(), Some(body), "raw body kept");
    }
    let counts = app.counts().await;
    assert_eq!(
        (counts.quarantined, counts.ledger),
        (bodies.len() as u64, 0)
    );
}

/// Deeply nested JSON is unusable, not a crash.
#[tokio::test]
async fn deeply_nested_json_is_quarantined() {
    let app = spawn_app().await;
    let body = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, response) = app.post_webhook(body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response["status"], "quarantined");
}

/// Odd types in fields other than eventType are tolerated, never a reason to quarantine.
#[tokio::test]
async fn odd_field_types_are_accepted() {
    let app = spawn_app().await;
    let body = br#"{"eventType":"message","id":6734,"waId":14155550199,"timestamp":1764238453,
        "owner":"false","sourceType":"WEB","data":"https://x/y.jpg","text":{"odd":true},
        "replyContextId":"","statusString":7,"whatsappMessageId":null}"#;
    let (status, response) = app.post_webhook(body.to_vec()).await;
    assert_eq!(
        (status, response["status"].clone()),
        (StatusCode::OK, Value::from("accepted"))
    );
    app.wait_until_applied().await;
    let (status, message) = app.get("/v1/messages/6734").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(message["wa_id"], "14155550199");
    assert_eq!(message["status"], "received");
}

/// An event type nobody knows is accepted and archived, never dropped.
#[tokio::test]
async fn unknown_event_types_are_accepted_and_kept() {
    let app = spawn_app().await;
    let (status, response) = app.post_webhook(fixture("23-").body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response["status"], "accepted");
    assert!(response["key"]
        .as_str()
        .unwrap()
        .starts_with("paymentCaptured:"));
    app.wait_until_applied().await;
    let counts = app.counts().await;
    assert_eq!(
        (counts.ledger, counts.quarantined, counts.messages),
        (1, 0, 0)
    );
}
