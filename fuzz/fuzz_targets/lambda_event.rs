//! The Lambda entry points without AWS: API Gateway / Function URL events through `lambda_http`
//! into the webhook router, and SQS batches into `wati_ingest::lambda::process_sqs_batch`, all on
//! the in-memory store.
//!
//! Byte 0 picks the mode, the rest is its input:
//! - 0: a raw API Gateway (payload 2.0, REST, ALB...) event, as JSON text;
//! - 1: a webhook body, wrapped by this target into an authentic HTTP API / Function URL event
//!   (plain or base64, chosen by byte 1), which must arrive in the ledger byte for byte;
//! - 2: a webhook body, wrapped into the queued-event JSON the receiver sends to SQS;
//! - 3: the raw body of one SQS record;
//! - 4: a raw SQS event, as JSON.

#![no_main]

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use tower::ServiceExt;
use wati_ingest::auth::SecretSet;
use wati_ingest::event::{quarantine_key, WatiEvent};
use wati_ingest::http::{webhook_routes, WebhookService};
use wati_ingest::lambda::process_sqs_batch;
use wati_ingest::metrics::{validate, MetricsSink};
use wati_ingest::ports::QueuedEvent;
use wati_ingest::processor::Archive;
use wati_ingest::receiver::{Receiver, ReceiverSettings};
use wati_ingest_fuzz::{runtime, MemoryStore, PREVIOUS_SECRET, SECRET};

/// Small, so the fuzzer reaches the 413 path.
const MAX_BODY_BYTES: usize = 2048;
const NOW_MS: i64 = 1_764_238_453_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    runtime().block_on(async {
        match mode % 5 {
            0 => {
                if let Ok(text) = std::str::from_utf8(input) {
                    raw_http_event(text).await;
                }
            }
            1 => wrapped_http_event(input).await,
            2 => {
                let queued = QueuedEvent::archived(
                    "fuzz-key",
                    1_764_238_453,
                    String::from_utf8_lossy(input).into_owned(),
                );
                let body = serde_json::to_string(&queued).expect("a queued event serialises");
                sqs_batch(vec![record("m-0", body)]).await;
            }
            3 => {
                let body = String::from_utf8_lossy(input).into_owned();
                sqs_batch(vec![record("m-0", body)]).await;
            }
            _ => {
                if let Ok(event) = serde_json::from_slice::<SqsEvent>(input) {
                    if event.records.len() <= 64 {
                        sqs_batch(event.records).await;
                    }
                }
            }
        }
    });
});

fn router(store: &Arc<MemoryStore>) -> axum::Router {
    webhook_routes(Arc::new(WebhookService {
        receiver: Receiver::new(store.clone(), store.clone(), ReceiverSettings::default()),
        secrets: SecretSet::new([SECRET, PREVIOUS_SECRET]).expect("valid secrets"),
        max_body_bytes: MAX_BODY_BYTES,
        metrics: MetricsSink::Off,
    }))
}

/// Sends a Lambda event through the router; `None` when `lambda_http` does not take it.
async fn invoke(store: &Arc<MemoryStore>, event: &str) -> Option<(u16, serde_json::Value)> {
    let request = lambda_request(event)?;
    let response = router(store)
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a buffered response")
        .to_bytes();
    Some((
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    ))
}

/// `lambda_http` turns a Lambda event into a request with a few `expect`s and `unwrap`s of its own
/// (a body that claims base64 but is not, a `Host` or `x-forwarded-proto` that makes no URL).
/// Only the Lambda service writes these events, so such panics are dependency findings: each
/// distinct one is printed once (`lambda_event: dependency panic ...`, counted by
/// `scripts/fuzz.sh`) and the input is skipped. A panic anywhere else is a crash as usual.
fn lambda_request(event: &str) -> Option<lambda_http::Request> {
    thread_local! {
        static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    }
    static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| {
                info.payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
            })
            .unwrap_or_default();
        PANIC.with(|p| *p.borrow_mut() = Some(format!("{location}: {message}")));
    }));
    let converted = std::panic::catch_unwind(|| lambda_http::request::from_str(event));
    std::panic::set_hook(hook);
    match converted {
        Ok(converted) => converted.ok(),
        Err(payload) => {
            let what = PANIC.with(|p| p.borrow_mut().take()).unwrap_or_default();
            if !(what.contains("/lambda_http-") || what.contains("/aws_lambda_events-")) {
                std::panic::resume_unwind(payload);
            }
            let location = what.split(": ").next().unwrap_or_default().to_owned();
            if SEEN.lock().unwrap().insert(location) {
                eprintln!("lambda_event: dependency panic (input skipped) at {what}");
            }
            None
        }
    }
}

async fn raw_http_event(event: &str) {
    let store = Arc::new(MemoryStore::default());
    let Some((status, _)) = invoke(&store, event).await else {
        return;
    };
    match status {
        200 => assert!(store.calls() > 0, "200 without a store call"),
        400 | 401 | 404 | 405 | 413 => assert_eq!(store.calls(), 0, "{status} touched the store"),
        other => panic!("undocumented status {other} (no store faults here)"),
    }
}

async fn wrapped_http_event(input: &[u8]) {
    let Some((&flags, body)) = input.split_first() else {
        return;
    };
    let function_url = flags & 1 != 0;
    let base64 = flags & 2 != 0;
    let secret = if flags & 4 != 0 {
        PREVIOUS_SECRET
    } else {
        SECRET
    };
    // A plain (not base64) event body is JSON text: what arrives is its UTF-8 reading.
    let sent: Vec<u8> = if base64 {
        body.to_vec()
    } else {
        String::from_utf8_lossy(body).into_owned().into_bytes()
    };
    let event = http_event(secret, &sent, function_url, base64);
    let store = Arc::new(MemoryStore::default());
    let (status, answer) = invoke(&store, &event)
        .await
        .expect("lambda_http takes a well-formed HTTP API event");
    if sent.len() > MAX_BODY_BYTES {
        assert_eq!(status, 413);
        assert_eq!(store.calls(), 0);
        return;
    }
    assert_eq!(status, 200, "authentic event: {answer}");
    let key = answer["key"].as_str().expect("a key");
    let contents = store.snapshot();
    match answer["status"].as_str() {
        Some("accepted") => {
            assert!(WatiEvent::parse(&sent).is_ok());
            let row = contents.ledger.get(key).expect("recorded");
            assert!(
                row.entry.body == sent,
                "the body reaches the ledger verbatim"
            );
            assert_eq!(contents.sent.len(), 1);
        }
        Some("quarantined") => {
            assert!(WatiEvent::parse(&sent).is_err());
            assert_eq!(key, quarantine_key(&sent));
            let kept = contents.quarantined.get(key).expect("quarantined");
            assert!(kept.body == sent, "the body is quarantined verbatim");
        }
        other => panic!("unexpected outcome {other:?} for a first delivery"),
    }
}

/// A payload-format-2.0 event as API Gateway's HTTP API or a Lambda Function URL sends it.
fn http_event(secret: &str, body: &[u8], function_url: bool, base64: bool) -> String {
    let path = format!("/webhook/{secret}");
    let (route_key, domain) = if function_url {
        (
            "$default",
            "abcdefghij0123456789.lambda-url.us-east-1.on.aws",
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
            "domainPrefix": domain.split('.').next().unwrap_or_default(),
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.7", "userAgent": "Wati"},
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": route_key,
            "stage": "$default",
            "time": "26/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1_795_600_000_000u64
        },
        "body": if base64 {
            encode_base64(body)
        } else {
            String::from_utf8(body.to_vec()).expect("UTF-8 by construction")
        },
        "isBase64Encoded": base64
    });
    if !function_url {
        event["pathParameters"] = json!({ "secret": secret });
    }
    event.to_string()
}

fn encode_base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(TABLE[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn record(id: &str, body: String) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = Some(id.to_owned());
    record.body = Some(body);
    record
}

/// A batch on a store that never fails: nothing may be reported as failed, every record ends
/// applied, archived or quarantined, and every metric line is valid EMF.
async fn sqs_batch(records: Vec<SqsMessage>) {
    let store = Arc::new(MemoryStore::default());
    let count = records.len();
    let mut event = SqsEvent::default();
    event.records = records;
    let archive = Archive::new(store.clone(), 7 * 86_400);
    let report = process_sqs_batch(store.clone(), archive, event).await;
    assert!(
        report.response.batch_item_failures.is_empty(),
        "a batch on a healthy store reported failures"
    );
    for line in &report.metrics {
        let text = line.render(NOW_MS);
        if let Err(problem) = validate(&text) {
            panic!("invalid EMF line ({problem}): {text}");
        }
    }
    let batch: serde_json::Value =
        serde_json::from_str(&report.metrics.last().expect("a batch line").render(NOW_MS))
            .expect("JSON");
    assert_eq!(batch["Records"].as_f64(), Some(count as f64));
}
