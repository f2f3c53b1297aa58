//! Bad input through the Lambda routers on the emulators: the table shared with the local suite
//! (`tests/common/bad_inputs.rs`), sent as API Gateway HTTP API and Function URL events to the
//! receiver router (DynamoDB ledger + SQS) and the read API router (DynamoDB state), and the
//! wrong-types sweep through receiver, queue and processor. Storage is read back after each case:
//! the ledger table by scan, the queue by draining it.

#[path = "../common/bad_inputs.rs"]
mod table;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{json, Value};
use wati_ingest::auth::SecretSet;
use wati_ingest::lambda::{process_sqs_batch, read_api_router, receiver_router, ReceiverConfig};
use wati_ingest::ports::StateStore;
use wati_ingest::processor::Archive;
use wati_ingest::store::aws::{decode_queued, DynamoLedger, SqsQueue};
use wati_ingest::store::dynamo_state::DynamoState;

use crate::lambda::{event, invoke};
use crate::support::Stack;
use table::{Backend, Case, Setup, Stored, Target};

const SECRET: &str = "bad-input-webhook-secret-0123456789abcdef";
const TOKEN: &str = "bad-input-api-token-0123456789abcdef";
const MAX_BODY_BYTES: usize = 256 * 1024;

fn setup() -> Setup<'static> {
    Setup {
        webhook_secret: SECRET,
        api_token: TOKEN,
        max_body_bytes: MAX_BODY_BYTES,
    }
}

/// The template's tables and queues on the emulators, through clients with generous timeouts:
/// the emulators are slow under the suite's load (a table creation that outlives the functions'
/// 1.5 s attempt timeout is retried into "preexisting table"), and the fallbacks that short
/// timeouts trigger are tested in e2e.rs.
pub(crate) async fn patient_stack() -> Stack {
    assert!(
        std::env::var("AWS_ENDPOINT_URL_DYNAMODB").is_ok()
            && std::env::var("AWS_ENDPOINT_URL_SQS").is_ok(),
        "the AWS contract tests need the emulators: run `scripts/emulators.sh run -- cargo test`"
    );
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_timeout(Duration::from_secs(60))
        .operation_attempt_timeout(Duration::from_secs(60))
        .build();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts)
        .load()
        .await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    Stack::create_on(config, dynamodb, sqs).await
}

/// The receiver and read API routers as deployed, on a fresh [`patient_stack`].
#[derive(Clone)]
struct Aws {
    dynamodb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    receiver: axum::Router,
    api: axum::Router,
    state: DynamoState,
    ledger_table: String,
    queue_url: String,
}

impl Aws {
    async fn new() -> Aws {
        let stack = patient_stack().await;
        let (dynamodb, sqs) = (stack.dynamodb.clone(), stack.sqs.clone());
        let ledger_table = stack.table("LedgerTable");
        let queue_url = stack.queue_url("EventQueue");
        let config = ReceiverConfig {
            ledger_table: ledger_table.clone(),
            queue_url: queue_url.clone(),
            secret_arn: String::new(),
            dedup_ttl_days: 7,
            max_body_bytes: MAX_BODY_BYTES,
            quarantine_retention_days: 30,
        };
        let receiver = receiver_router(
            &config,
            SecretSet::new([SECRET]).unwrap().into(),
            DynamoLedger::new(dynamodb.clone(), &ledger_table),
            SqsQueue::new(sqs.clone(), &queue_url),
        );
        let state = DynamoState::new(dynamodb.clone(), stack.table("StateTable"));
        let api = read_api_router(SecretSet::new([TOKEN]).unwrap().into(), state.clone());
        Aws {
            dynamodb,
            sqs,
            receiver,
            api,
            state,
            ledger_table,
            queue_url,
        }
    }

    /// The case as API Gateway's HTTP API (or a Function URL) hands it to the function.
    fn lambda_event(case: &Case, function_url: bool) -> String {
        let mut request: Value =
            serde_json::from_str(&event(SECRET, b"", function_url, false)).unwrap();
        let (path, query) = case.path.split_once('?').unwrap_or((&case.path, ""));
        request["rawPath"] = path.into();
        request["rawQueryString"] = query.into();
        request["requestContext"]["http"]["method"] = case.method.into();
        request["requestContext"]["http"]["path"] = path.into();
        let route_key = match (function_url, case.target) {
            (true, _) => "$default".to_owned(),
            (false, Target::Webhook) => "POST /webhook/{secret}".to_owned(),
            (false, Target::Read) => "GET /v1/{proxy+}".to_owned(),
        };
        request["routeKey"] = route_key.clone().into();
        request["requestContext"]["routeKey"] = route_key.into();
        let object = request.as_object_mut().unwrap();
        object.remove("pathParameters");
        if !function_url {
            let (name, prefix) = match case.target {
                Target::Webhook => ("secret", "/webhook/"),
                Target::Read => ("proxy", "/v1/"),
            };
            if let Some(value) = path.strip_prefix(prefix) {
                object.insert("pathParameters".into(), json!({ name: value }));
            }
        }
        let host = request["headers"]["host"].clone();
        let mut headers = json!({"host": host, "user-agent": "Wati"});
        for (name, value) in &case.headers {
            headers[name.to_ascii_lowercase()] = String::from_utf8_lossy(value).into();
        }
        request["headers"] = headers;
        if case.body.is_empty() {
            let object = request.as_object_mut().unwrap();
            object.remove("body");
            object.insert("isBase64Encoded".into(), false.into());
        } else {
            // Function URLs base64-encode bodies; API Gateway must for bytes that are not UTF-8.
            let base64 = function_url || std::str::from_utf8(&case.body).is_err();
            let encoded: Value = serde_json::from_str(&event(SECRET, &case.body, false, base64))
                .expect("event json");
            request["body"] = encoded["body"].clone();
            request["isBase64Encoded"] = base64.into();
        }
        request.to_string()
    }

    async fn send(&self, case: &Case, function_url: bool) -> (u16, Value) {
        let router = match case.target {
            Target::Webhook => &self.receiver,
            Target::Read => &self.api,
        };
        invoke(router, Self::lambda_event(case, function_url)).await
    }

    /// (ledger items that are events, ledger items that are quarantined bodies), by scan.
    async fn ledger_counts(&self) -> (u64, u64) {
        let (mut events, mut quarantined) = (0, 0);
        let mut start = None;
        loop {
            let output = self
                .dynamodb
                .scan()
                .table_name(&self.ledger_table)
                .projection_expression("pk, event_type")
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("scan ledger");
            for item in output.items() {
                match item.get("event_type").and_then(|t| t.as_s().ok()) {
                    Some(kind) if kind == "quarantine" => quarantined += 1,
                    _ => events += 1,
                }
            }
            start = output.last_evaluated_key().cloned();
            if start.is_none() {
                return (events, quarantined);
            }
        }
    }

    /// The raw body the ledger keeps under `key`.
    async fn kept_body(&self, key: &str) -> Option<Vec<u8>> {
        let output = self
            .dynamodb
            .get_item()
            .table_name(&self.ledger_table)
            .key("pk", AttributeValue::S(key.to_owned()))
            .send()
            .await
            .expect("get ledger item");
        Some(output.item()?.get("body")?.as_b().ok()?.as_ref().to_vec())
    }

    /// Every message on the queue, taken off it, as the records Lambda would be given.
    async fn take_queue(&self) -> Vec<SqsMessage> {
        let mut records = Vec::new();
        loop {
            let output = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await
                .expect("receive");
            if output.messages().is_empty() {
                return records;
            }
            let mut delete = self.sqs.delete_message_batch().queue_url(&self.queue_url);
            for (n, message) in output.messages().iter().enumerate() {
                let mut record = SqsMessage::default();
                record.message_id = message.message_id().map(str::to_owned);
                record.body = message.body().map(str::to_owned);
                record.event_source = Some("aws:sqs".into());
                records.push(record);
                delete = delete.entries(
                    aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                        .id(n.to_string())
                        .receipt_handle(message.receipt_handle().unwrap_or_default())
                        .build()
                        .expect("entry"),
                );
            }
            let deleted = delete.send().await.expect("delete");
            assert!(deleted.failed().is_empty(), "{:?}", deleted.failed());
        }
    }

    /// Runs `records` through the processor in batches of 10; returns the failed records' ids.
    async fn process(&self, records: Vec<SqsMessage>) -> Vec<String> {
        let state: Arc<dyn wati_ingest::ports::StateStore> = Arc::new(self.state.clone());
        let ledger = DynamoLedger::new(self.dynamodb.clone(), &self.ledger_table);
        let archive = Archive::new(Arc::new(ledger), 7 * 86_400);
        let mut failed = Vec::new();
        for batch in records.chunks(10) {
            let mut event = SqsEvent::default();
            event.records = batch.to_vec();
            let report = process_sqs_batch(Arc::clone(&state), archive.clone(), event).await;
            failed.extend(
                report
                    .response
                    .batch_item_failures
                    .into_iter()
                    .map(|f| f.item_identifier),
            );
        }
        failed
    }

    /// The problems with one case's answer and what it stored, if any.
    async fn check(&self, case: &Case, function_url: bool, must_be_empty: bool) -> Vec<String> {
        let mut problems = Vec::new();
        let before = self.ledger_counts().await;
        let (status, answer) = self.send(case, function_url).await;
        if !case.statuses.contains(&status) {
            problems.push(format!(
                "status {status}, documented {:?}: {answer}",
                case.statuses
            ));
        }
        if let Some(outcome) = case.outcome {
            if answer["status"] != outcome {
                problems.push(format!("answer {answer}, documented status {outcome:?}"));
            }
        }
        if case.target == Target::Read
            && ["id", "wa_id", "window_open", "session"]
                .iter()
                .any(|field| answer.get(field).is_some())
        {
            problems.push(format!("answered with an item: {answer}"));
        }
        let after = self.ledger_counts().await;
        let queued = self.take_queue().await.len() as u64;
        let delta = (after.0 - before.0, after.1 - before.1, queued);
        let expected = match case.stored {
            Stored::Nothing => (0, 0, 0),
            Stored::Quarantined => (0, 1, 0),
            Stored::Accepted => (1, 0, 1),
        };
        if delta != expected {
            problems.push(format!(
                "stored (ledger, quarantine, queue) +{delta:?}, expected +{expected:?}"
            ));
        }
        if must_be_empty && (after.0, after.1, queued) != (0, 0, 0) {
            problems.push(format!(
                "storage is not empty: ledger {after:?}, queue {queued}"
            ));
        }
        if case.stored != Stored::Nothing {
            let key = answer["key"].as_str().unwrap_or_default();
            if self.kept_body(key).await.as_deref() != Some(case.body.as_slice()) {
                problems.push(format!("the raw body is not kept under {key:?}"));
            }
        }
        problems
    }

    /// Runs `cases`, those that store nothing first (each in both event shapes, on empty
    /// storage when `from_empty`); panics with every failing case at once.
    async fn run_table(&self, cases: &[&Case], from_empty: bool) {
        let (nothing, rest): (Vec<&Case>, Vec<&Case>) =
            cases.iter().partition(|c| c.stored == Stored::Nothing);
        let mut failures = Vec::new();
        let mut runs = Vec::new();
        for case in &nothing {
            runs.push((*case, false, from_empty));
            runs.push((*case, true, from_empty));
        }
        for (n, case) in rest.iter().enumerate() {
            runs.push((*case, n % 2 == 1, false));
        }
        for (case, function_url, must_be_empty) in runs {
            let problems = self.check(case, function_url, must_be_empty).await;
            if !problems.is_empty() {
                let shape = if function_url {
                    "Function URL"
                } else {
                    "API Gateway"
                };
                failures.push(format!("{case} ({shape})\n    {}", problems.join("\n    ")));
            }
        }
        assert!(
            failures.is_empty(),
            "{} runs of {} cases differ from the documented answer:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    /// Stores and applies the fixtures the read cases look for.
    async fn seed(&self) {
        for prefix in table::SEED_FIXTURES {
            let case = webhook(table::fixture(prefix));
            let (status, answer) = self.send(&case, false).await;
            assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")));
        }
        let records = self.take_queue().await;
        assert!(self.process(records).await.is_empty());
    }
}

/// An authentic `POST /webhook/{secret}` of `body`.
fn webhook(body: Vec<u8>) -> Case {
    Case::post("webhook", format!("/webhook/{SECRET}"), body)
}

fn cases_for(cases: &[Case], bugs: bool) -> Vec<&Case> {
    cases
        .iter()
        .filter(|c| c.runs_on(Backend::Aws) != bugs)
        .collect()
}

/// Every webhook case of the table through the receiver Lambda's router: README's answer, and
/// exactly that stored in the DynamoDB ledger and on SQS; nothing at all for a request that is
/// not authenticated.
#[tokio::test]
async fn webhook_bad_inputs_get_the_documented_answer() {
    let aws = Aws::new().await;
    let cases = table::webhook_cases(&setup());
    let cases = cases_for(&cases, false);
    assert!(cases.len() >= 70, "{}", cases.len());
    aws.run_table(&cases, true).await;
}

/// Every read case through the read API Lambda's router on DynamoDB, with the items the cases
/// look for stored: 401 without the exact token, 404 or 400 for bad ids, never an item.
#[tokio::test]
async fn read_api_bad_inputs_get_the_documented_answer() {
    let aws = Aws::new().await;
    aws.seed().await;
    let cases = table::read_cases(&setup());
    let cases = cases_for(&cases, false);
    assert!(cases.len() >= 60, "{}", cases.len());
    aws.run_table(&cases, false).await;
}

/// The table's cases that show a known bug on AWS, held to the documented answer.
#[tokio::test]
async fn known_aws_bugs() {
    let aws = Aws::new().await;
    aws.seed().await;
    let mut cases = table::webhook_cases(&setup());
    cases.extend(table::read_cases(&setup()));
    let bugs = cases_for(&cases, true);
    assert!(!bugs.is_empty());
    aws.run_table(&bugs, false).await;
}

/// Fixtures of each kind of event for the sweep (message, session and template sends, a status,
/// a failure, a bsuid contact, a template event, an unknown type).
const SWEEP_FIXTURES: [&str; 7] = ["01-", "03-", "07-", "14-", "16-", "19-", "23-"];

/// Whether the processor's DynamoDB keys hold this field's value: a value past DynamoDB's 2 KiB
/// key limit there is a known bug (see `very_long_ids_are_quarantined_not_retried`).
fn long_key_value(mutation: &table::Mutation) -> bool {
    mutation.value_name == "very long string"
        && ["id", "whatsappMessageId", "localMessageId", "waId", "bsuid"]
            .contains(&mutation.field.as_str())
}

/// Concurrent senders in the sweep.
const LANES: usize = 4;

/// Sends the sweep's mutations, `LANES` at a time; returns what differs from the documented
/// answer.
async fn sweep(aws: &Aws, mutations: &[table::Mutation]) -> Vec<String> {
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..LANES {
        let aws = aws.clone();
        let work: Vec<(usize, String, Vec<u8>, bool)> = mutations
            .iter()
            .enumerate()
            .skip(lane)
            .step_by(LANES)
            .map(|(n, m)| (n, m.name.clone(), m.body.clone(), m.quarantined))
            .collect();
        lanes.spawn(async move {
            let mut failures = Vec::new();
            for (n, name, body, quarantined) in work {
                let (status, answer) = aws.send(&webhook(body.clone()), n % 2 == 1).await;
                let outcome = answer["status"].as_str().unwrap_or_default();
                let kept = aws
                    .kept_body(answer["key"].as_str().unwrap_or_default())
                    .await;
                let ok = match (status, outcome, quarantined) {
                    (200, "quarantined", true) | (200, "accepted", false) => {
                        kept.as_deref() == Some(body.as_slice())
                    }
                    (200, "duplicate", false) => kept.is_some(),
                    _ => false,
                };
                if !ok {
                    failures.push(format!("{name}: {status} {answer}"));
                }
            }
            failures
        });
    }
    lanes.join_all().await.into_iter().flatten().collect()
}

/// Runs `records` through the processor; names the mutation of each record that failed.
async fn process_named(
    aws: &Aws,
    records: Vec<SqsMessage>,
    mutations: &[table::Mutation],
) -> Vec<String> {
    let names: HashMap<String, String> = records
        .iter()
        .map(|record| {
            let body = decode_queued(record.body.as_deref().unwrap_or_default())
                .expect("a queued event")
                .body;
            let name = mutations
                .iter()
                .find(|m| m.body == body.as_bytes())
                .map_or("?".to_owned(), |m| m.name.clone());
            (record.message_id.clone().unwrap_or_default(), name)
        })
        .collect();
    aws.process(records)
        .await
        .into_iter()
        .map(|id| format!("the processor failed (will retry, then DLQ) {}", names[&id]))
        .collect()
}

/// Wrong types in every field the parser reads (and two it ignores) of one fixture of each
/// kind: always 200, quarantined only for a non-string `eventType`, else accepted (or a
/// duplicate of an earlier mutation of the same message) and archived byte for byte; then the
/// processor applies every queued record without a batch failure.
#[tokio::test]
async fn wrong_types_in_every_field_are_tolerated() {
    let aws = Aws::new().await;
    let mutations: Vec<table::Mutation> = table::wrong_type_mutations(&SWEEP_FIXTURES, false)
        .into_iter()
        .filter(|m| !long_key_value(m))
        .collect();
    let mut failures = sweep(&aws, &mutations).await;
    let records = aws.take_queue().await;
    let queued = records.len();
    failures.extend(process_named(&aws, records, &mutations).await);
    let (status, _) = aws
        .send(&Case::get("health", "/healthz", None), false)
        .await;
    assert_eq!(status, 200, "the read API stopped serving");
    eprintln!(
        "wrong types on AWS: {} bodies, {queued} queued records applied",
        mutations.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// An id, wamid, local id, waId or bsuid longer than DynamoDB's 2 KiB key limit is accepted by
/// the receiver (its ledger key is hashed), but the processor uses it as a state key: the write
/// fails validation, is reported as a transient batch failure, and after maxReceiveCount the
/// event sits in the DLQ. It should be quarantined (and acknowledged) like any event that can
/// never be applied.
#[tokio::test]
async fn very_long_ids_are_quarantined_not_retried() {
    let aws = Aws::new().await;
    let mutations: Vec<table::Mutation> = table::wrong_type_mutations(&SWEEP_FIXTURES, false)
        .into_iter()
        .filter(long_key_value)
        .collect();
    let mut failures = sweep(&aws, &mutations).await;
    let records = aws.take_queue().await;
    let queued: Vec<_> = records
        .iter()
        .map(|record| decode_queued(record.body.as_deref().unwrap_or_default()).expect("queued"))
        .collect();
    failures.extend(process_named(&aws, records, &mutations).await);
    // Each message event is kept in quarantine with its body, byte for byte, and why (events
    // about no message are only archived: their ids are never keys).
    let message_events: Vec<_> = queued
        .iter()
        .filter(|event| {
            wati_ingest::event::WatiEvent::parse(event.body.as_bytes())
                .is_ok_and(|parsed| parsed.kind.is_message_event())
        })
        .collect();
    assert!(!message_events.is_empty(), "no message event to check");
    for event in message_events {
        // A v1/v2 twin shares its key with its twin: the second body quarantined under the key
        // is kept under its variant key.
        let mut kept = aws.state.quarantined(&event.key).await.unwrap();
        if kept
            .as_ref()
            .is_some_and(|k| k.body != event.body.as_bytes())
        {
            let variant = wati_ingest::event::variant_key(&event.key, event.body.as_bytes());
            kept = aws.state.quarantined(&variant).await.unwrap();
        }
        match kept {
            Some(kept) if kept.body == event.body.as_bytes() && kept.reason.contains("longer") => {}
            other => failures.push(format!("{}: quarantined as {other:?}", event.key)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
