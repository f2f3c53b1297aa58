//! The Lambda functions' logs hold no secret and no personal data: everything `tracing` emits
//! while the receiver's router takes every fixture (and wrong secrets, malformed and oversize
//! bodies), the read API answers (and refuses a wrong token), and `process_sqs_batch` applies,
//! quarantines and fails records, is captured and searched for the secrets, the tokens, phone
//! numbers, message text and the other personal fields of the fixtures.
//!
//! The capture is a JSON subscriber (the format `LoggingConfig: LogFormat: JSON` gives the
//! functions) at `info` for every crate, as deployed, and `trace` for this crate, so that no
//! level of our own logging can leak. It is installed for the current thread only, on a
//! current-thread runtime, so it sees every task the test spawns and nothing of other tests.

#[path = "../common/log_search.rs"]
mod log_search;

use std::sync::{Arc, Mutex};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use serde_json::Value;
use tracing_subscriber::EnvFilter;
use wati_ingest::auth::SecretSet;
use wati_ingest::lambda::{process_sqs_batch, read_api_router, receiver_router, ReceiverConfig};
use wati_ingest::ports::StateStore;
use wati_ingest::processor::Archive;
use wati_ingest::store::aws::{DynamoLedger, SqsQueue};
use wati_ingest::store::dynamo_state::DynamoState;

use crate::bad_input::patient_stack;
use crate::lambda::{event, invoke};
use log_search::{assert_captured, assert_search_finds_a_wamid, phone_leaks};

const SECRET: &str = "log-hygiene-webhook-secret-5f3a9c1e7b2d";
const WRONG_SECRET: &str = "wrong-secret-attempt-9f8e7d6c5b4a3210";
const TOKEN: &str = "log-hygiene-api-token-8c2e4a6b0d1f";
const WRONG_TOKEN: &str = "wrong-token-attempt-1a2b3c4d5e6f7a8b";

/// Phone numbers in the fixtures (customers' waIds and the business number).
const PHONE_NUMBERS: [&str; 4] = ["14155550101", "14155550102", "14155550104", "14155550000"];

/// Other personal data in the fixtures: message text, names, an email address, a media URL.
const PERSONAL: [&str; 6] = [
    "Hi, where is my order?",
    "It ships today.",
    "Alice",
    "Maya Patel",
    "maya.support@acme-store.example",
    "carol.kim",
];

/// Everything the subscriber writes, in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A read API request as API Gateway sends it.
pub(crate) fn read_event(path: &str, token: &str) -> String {
    let mut request: Value = serde_json::from_str(&event(SECRET, b"", false, false)).unwrap();
    request["rawPath"] = path.into();
    request["routeKey"] = "GET /v1/{proxy+}".into();
    request["requestContext"]["http"]["method"] = "GET".into();
    request["requestContext"]["http"]["path"] = path.into();
    request["headers"]["authorization"] = format!("Bearer {token}").into();
    request.as_object_mut().unwrap().remove("pathParameters");
    request.to_string()
}

/// Runs the whole AWS path with the capture installed; returns the captured log and the
/// processor's metric lines.
async fn run_everything() -> (String, Vec<String>) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::new("info,wati_ingest=trace"))
        .with_writer({
            let captured = captured.clone();
            move || captured.clone()
        })
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // tracing caches each callsite's interest for the whole process. While a single dispatcher is
    // registered it asks the calling thread's default, so a callsite first reached on another
    // test's thread would be cached as "never" and this capture would miss it. A second
    // registered dispatcher makes tracing ask every registered one instead.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    tracing::callsite::rebuild_interest_cache();

    let stack = patient_stack().await;
    let (dynamodb, sqs) = (stack.dynamodb.clone(), stack.sqs.clone());
    let queue_url = stack.queue_url("EventQueue");
    let config = ReceiverConfig {
        ledger_table: stack.table("LedgerTable"),
        queue_url: queue_url.clone(),
        secret_arn: String::new(),
        dedup_ttl_days: 7,
        max_body_bytes: 64 * 1024,
        quarantine_retention_days: 30,
    };
    let receiver = receiver_router(
        &config,
        SecretSet::new([SECRET]).unwrap().into(),
        DynamoLedger::new(dynamodb.clone(), stack.table("LedgerTable")),
        SqsQueue::new(sqs.clone(), &queue_url),
    );
    let state = DynamoState::new(dynamodb.clone(), stack.table("StateTable"));
    let api = read_api_router(SecretSet::new([TOKEN]).unwrap().into(), state.clone());

    // Every fixture with the right secret, in both event shapes, and a retry.
    let fixtures = crate::fixtures();
    for (n, body) in fixtures.iter().enumerate() {
        let (status, answer) = invoke(&receiver, event(SECRET, body, n % 2 == 1, n % 3 == 0)).await;
        assert_eq!(status, 200, "{answer}");
    }
    let (status, _) = invoke(&receiver, event(SECRET, &fixtures[0], false, false)).await;
    assert_eq!(status, 200);
    // Through a ledger that refuses writes: the receiver's loud bypass, and the processor's
    // archiving (failed, then done) of what it enqueued, all logged with the key.
    let bypassing = receiver_router(
        &config,
        SecretSet::new([SECRET]).unwrap().into(),
        DynamoLedger::new(dynamodb.clone(), "no-such-table"),
        SqsQueue::new(sqs.clone(), &queue_url),
    );
    for body in [&fixtures[0], &fixtures[15]] {
        let (status, answer) = invoke(&bypassing, event(SECRET, body, false, false)).await;
        assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")));
    }
    // A wrong secret, a malformed body and an oversize one, all full of personal data.
    for function_url in [false, true] {
        let (status, _) = invoke(
            &receiver,
            event(WRONG_SECRET, &fixtures[0], function_url, false),
        )
        .await;
        assert_eq!(status, 401);
    }
    let malformed = br#"{"eventType":"message","waId":"14155550101","senderName":"Alice","text":"Hi, where is my order?""#;
    let (status, answer) = invoke(&receiver, event(SECRET, malformed, false, false)).await;
    assert_eq!(
        (status, answer["status"].as_str()),
        (200, Some("quarantined"))
    );
    let mut oversize = fixtures[0].clone();
    oversize.extend(b" ".repeat(64 * 1024));
    let (status, _) = invoke(&receiver, event(SECRET, &oversize, true, true)).await;
    assert_eq!(status, 413);
    // A body whose waId is too long to keep: the processor quarantines it and says why.
    let mut long = serde_json::from_slice::<Value>(&fixtures[0]).unwrap();
    long["id"] = "log-hygiene-long-wa-id".into();
    long["waId"] = PHONE_NUMBERS[0].repeat(300).into();
    let long = serde_json::to_vec(&long).unwrap();
    assert_eq!(
        invoke(&receiver, event(SECRET, &long, false, false))
            .await
            .0,
        200
    );

    // The processor: every queued record, plus one that is not a queued event at all.
    let mut batch = Vec::new();
    loop {
        let output = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("receive");
        if output.messages().is_empty() {
            break;
        }
        for message in output.messages() {
            let mut record = SqsMessage::default();
            record.message_id = message.message_id().map(str::to_owned);
            record.body = message.body().map(str::to_owned);
            batch.push(record);
            sqs.delete_message()
                .queue_url(&queue_url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
    }
    let mut foreign = SqsMessage::default();
    foreign.message_id = Some("foreign-record".into());
    foreign.body = Some("not ours: 14155550101 Alice Hi, where is my order?".into());
    batch.push(foreign);
    assert!(batch.len() > fixtures.len() / 2, "{} records", batch.len());
    let state: Arc<dyn StateStore> = Arc::new(state);
    let mut metrics = Vec::new();
    // First against a table that does not exist: every write fails, and the SDK's errors are
    // logged.
    let missing: Arc<dyn StateStore> =
        Arc::new(DynamoState::new(dynamodb.clone(), "no-such-table"));
    let mut event = SqsEvent::default();
    event.records = batch[..batch.len().min(10)].to_vec();
    let nowhere = Archive::new(
        Arc::new(DynamoLedger::new(dynamodb.clone(), "no-such-table")),
        7 * 86_400,
    );
    process_sqs_batch(missing, nowhere.clone(), event).await;
    let mut event = SqsEvent::default();
    event.records = batch
        .iter()
        .filter(|record| {
            let body = record.body.as_deref().unwrap_or_default();
            body.contains(r#""unarchived":true"#)
        })
        .cloned()
        .collect();
    assert_eq!(event.records.len(), 2, "the bypassed events");
    process_sqs_batch(Arc::clone(&state), nowhere, event).await;
    let archive = Archive::new(
        Arc::new(DynamoLedger::new(
            dynamodb.clone(),
            stack.table("LedgerTable"),
        )),
        7 * 86_400,
    );
    for records in batch.chunks(10) {
        let mut event = SqsEvent::default();
        event.records = records.to_vec();
        let report = process_sqs_batch(Arc::clone(&state), archive.clone(), event).await;
        metrics.extend(report.metrics.iter().map(|line| line.render(0)));
    }

    // The read API, with the right token and a wrong one.
    for path in [
        "/v1/contacts/14155550101",
        "/v1/messages/local-0003",
        "/v1/messages/6734a1b2c3d4e5f601000001",
    ] {
        let (status, body) = invoke(&api, read_event(path, TOKEN)).await;
        assert_eq!(status, 200, "{path}: {body}");
        let (status, _) = invoke(&api, read_event(path, WRONG_TOKEN)).await;
        assert_eq!(status, 401);
    }
    (captured.text(), metrics)
}

/// What every run must have captured, whatever else it checks: a capture that saw nothing (a
/// subscriber on the wrong thread, a filter that drops our lines) must not pass as clean.
fn assert_captured_everything(log: &str) {
    let webhooks = crate::fixtures().len() + 6;
    assert_captured(
        log,
        &[
            (r#""message":"webhook""#, webhooks),
            (r#""outcome":"applied""#, 10),
            ("quarantined an undecodable record", 1),
            ("longer than 512 bytes", 1),
            ("apply failed; will be retried", 1),
            ("ledger unavailable; enqueueing without it", 2),
            ("cannot archive an event the receiver could not record", 2),
            ("archived an event the receiver could not record", 2),
        ],
    );
    let bypass = log
        .lines()
        .find(|line| line.contains("ledger unavailable"))
        .unwrap_or_default();
    assert!(bypass.contains(r#""level":"ERROR""#), "{bypass}");
}

/// No secret, token, phone number or message text in what the functions log, nor in the
/// processor's metric lines; and the capture did see the webhooks and the processor.
#[tokio::test(flavor = "current_thread")]
async fn lambda_logs_hold_no_secrets_phone_numbers_or_text() {
    let (log, metrics) = run_everything().await;
    assert_captured_everything(&log);
    let forbidden = [SECRET, WRONG_SECRET, TOKEN, WRONG_TOKEN]
        .into_iter()
        .chain(PHONE_NUMBERS)
        .chain(PERSONAL);
    let everything = format!("{log}\n{}", metrics.join("\n"));
    for value in forbidden {
        assert!(
            !everything.contains(value),
            "the logs leak {value:?}:\n{}",
            everything
                .lines()
                .filter(|l| l.contains(value))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Real wamids are base64 and carry the customer's phone number (`wamid.HBgLMTQxNTU1NTAxMDEV...`
/// decodes to `...14155550101...`), and idempotency keys, which are logged, are built from them:
/// the phone number is one base64 decode away in every webhook and processor line. The log is
/// searched for the number's base64 forms and for base64 tokens that decode to it, after checking
/// that it captured the lines that would carry a key.
#[tokio::test(flavor = "current_thread")]
async fn lambda_logs_hold_no_phone_numbers_in_base64() {
    assert_search_finds_a_wamid();
    let (log, metrics) = run_everything().await;
    assert_captured_everything(&log);
    let everything = format!("{log}\n{}", metrics.join("\n"));
    for phone in PHONE_NUMBERS {
        let leaks = phone_leaks(&everything, phone);
        assert!(leaks.is_empty(), "{phone} is in the log: {leaks:#?}");
    }
}
