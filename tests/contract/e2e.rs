//! End to end through the real AWS SDK: API Gateway / Function URL events -> receiver -> DynamoDB
//! Local + SQS emulator -> a poller that builds real `SqsEvent`s -> processor -> read API.
//! Faults are injected at the SDK level (an interceptor that fails chosen operations), and every
//! AWS call is counted by operation.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;
use wati_ingest::auth::SecretSet;
use wati_ingest::event::WatiEvent;
use wati_ingest::lambda::{process_sqs_batch, read_api_router, receiver_router, ReceiverConfig};
use wati_ingest::message::MessageRecord;
use wati_ingest::ports::{MergeOutcome, QuarantineEntry, QueuedEvent, StateStore, StoreError};
use wati_ingest::processor::Archive;
use wati_ingest::receiver::sweep;
use wati_ingest::session::ContactView;
use wati_ingest::store::aws::{DynamoLedger, SqsQueue};
use wati_ingest::store::dynamo_state::DynamoState;

use crate::lambda::{event, invoke};
use crate::state::{oracle_at, shuffle, CONTACTS};
use crate::support::Stack;

const SECRET: &str = "e2e-webhook-secret-0123456789abcdef";
const TOKEN: &str = "e2e-api-token-0123456789abcdef";

/// Counts AWS calls by operation and fails the operations it is told to.
#[derive(Debug, Default)]
struct Tap {
    calls: Mutex<BTreeMap<String, usize>>,
    failing: Mutex<HashSet<String>>,
}

#[derive(Debug, Clone, Default)]
struct TapHandle(Arc<Tap>);

impl TapHandle {
    fn fail(&self, operation: &str) {
        self.0.failing.lock().unwrap().insert(operation.to_owned());
    }
    fn heal(&self) {
        self.0.failing.lock().unwrap().clear();
    }
    fn calls(&self) -> BTreeMap<String, usize> {
        self.0.calls.lock().unwrap().clone()
    }
}

impl Intercept for TapHandle {
    fn name(&self) -> &'static str {
        "tap"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let operation = crate::support::operation_of(context.request());
        let mut calls = self.0.calls.lock().unwrap();
        *calls.entry(operation.clone()).or_default() += 1;
        let body = || -> Value {
            context
                .request()
                .body()
                .bytes()
                .and_then(|bytes| serde_json::from_slice(bytes).ok())
                .unwrap_or_default()
        };
        // A transaction is billed per item it writes (twice a plain write's units).
        if operation == "TransactWriteItems" {
            let items = body()["TransactItems"].as_array().map_or(0, Vec::len);
            *calls.entry("TransactItems".to_owned()).or_default() += items;
        }
        // A batched read is billed per key it asks for (found or not).
        if operation == "BatchGetItem" {
            let keys: usize = body()["RequestItems"].as_object().map_or(0, |tables| {
                tables
                    .values()
                    .filter_map(|table| table["Keys"].as_array())
                    .map(Vec::len)
                    .sum()
            });
            *calls.entry("BatchGetKeys".to_owned()).or_default() += keys;
        }
        drop(calls);
        if self.0.failing.lock().unwrap().contains(&operation) {
            return Err(format!("injected fault: {operation}").into());
        }
        Ok(())
    }
}

/// Fails `apply` for one message id, every time: a poison record.
struct PoisonFor {
    inner: DynamoState,
    id: &'static str,
}

#[async_trait]
impl StateStore for PoisonFor {
    async fn apply(
        &self,
        facts: &MessageRecord,
        caused_by: Option<&str>,
    ) -> Result<MergeOutcome, StoreError> {
        if facts.id.as_deref() == Some(self.id) {
            return Err(StoreError::unavailable("apply", "poisoned for the test"));
        }
        self.inner.apply(facts, caused_by).await
    }
    async fn quarantine(&self, event: &QueuedEvent, reason: &str) -> Result<(), StoreError> {
        self.inner.quarantine(event, reason).await
    }
    async fn quarantined(&self, key: &str) -> Result<Option<QuarantineEntry>, StoreError> {
        self.inner.quarantined(key).await
    }
    async fn message(&self, id: &str) -> Result<Option<MessageRecord>, StoreError> {
        self.inner.message(id).await
    }
    async fn contact(&self, contact: &str, now: i64) -> Result<Option<ContactView>, StoreError> {
        self.inner.contact(contact, now).await
    }
    async fn contact_messages_page(
        &self,
        contact: &str,
        before: Option<&wati_ingest::contact_page::Position>,
        limit: usize,
    ) -> Result<wati_ingest::contact_page::MessagePage, StoreError> {
        self.inner
            .contact_messages_page(contact, before, limit)
            .await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

/// The deployed shape on the emulators, each function with its own tapped clients.
struct Deployment {
    stack: Stack,
    receiver: axum::Router,
    receiver_tap: TapHandle,
    ledger: DynamoLedger,
    queue: SqsQueue,
    state: DynamoState,
    processor_tap: TapHandle,
    api: axum::Router,
    queue_url: String,
    dlq_url: String,
}

impl Deployment {
    async fn new() -> Deployment {
        let stack = Stack::create().await;
        let (receiver_tap, processor_tap) = (TapHandle::default(), TapHandle::default());
        let dynamodb = |tap: &TapHandle| {
            aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(&stack.config)
                    .interceptor(tap.clone())
                    .build(),
            )
        };
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::config::Builder::from(&stack.config)
                .interceptor(receiver_tap.clone())
                .build(),
        );
        let queue_url = stack.queue_url("EventQueue");
        let ledger = DynamoLedger::new(dynamodb(&receiver_tap), stack.table("LedgerTable"));
        let queue = SqsQueue::new(sqs, &queue_url);
        let config = ReceiverConfig {
            ledger_table: stack.table("LedgerTable"),
            queue_url: queue_url.clone(),
            secret_arn: String::new(),
            dedup_ttl_days: 7,
            max_body_bytes: 256 * 1024,
            quarantine_retention_days: 30,
        };
        let receiver = receiver_router(
            &config,
            SecretSet::new([SECRET]).unwrap().into(),
            ledger.clone(),
            queue.clone(),
        );
        let state = DynamoState::new(dynamodb(&processor_tap), stack.table("StateTable"));
        let api = read_api_router(
            SecretSet::new([TOKEN]).unwrap().into(),
            DynamoState::new(stack.dynamodb.clone(), stack.table("StateTable")),
        );
        let dlq_url = stack.queue_url("DeadLetterQueue");
        Deployment {
            stack,
            receiver,
            receiver_tap,
            ledger,
            queue,
            state,
            processor_tap,
            api,
            queue_url,
            dlq_url,
        }
    }

    /// One webhook as API Gateway (even n) or a Function URL (odd n) would deliver it.
    async fn webhook(&self, n: usize, body: &[u8]) -> (u16, Value) {
        invoke(&self.receiver, event(SECRET, body, n % 2 == 1, n % 3 == 0)).await
    }

    /// Plays the Lambda event source mapping: receive, build a real `SqsEvent`, call the
    /// processor, delete what succeeded, make what failed visible again. Returns records handled.
    async fn process_until_empty(&self, state: Arc<dyn StateStore>) -> usize {
        let mut handled = 0;
        loop {
            let output = self
                .stack
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
                .send()
                .await
                .expect("receive");
            let messages = output.messages();
            if messages.is_empty() {
                return handled;
            }
            let mut event = SqsEvent::default();
            for message in messages {
                let mut record = SqsMessage::default();
                record.message_id = message.message_id().map(str::to_owned);
                record.receipt_handle = message.receipt_handle().map(str::to_owned);
                record.body = message.body().map(str::to_owned);
                record.event_source = Some("aws:sqs".into());
                record.aws_region = Some("us-east-1".into());
                event.records.push(record);
            }
            let archive = Archive::new(Arc::new(self.ledger.clone()), 7 * 86_400);
            let response = process_sqs_batch(Arc::clone(&state), archive, event)
                .await
                .response;
            let failed: HashSet<String> = response
                .batch_item_failures
                .iter()
                .map(|f| f.item_identifier.clone())
                .collect();
            for message in messages {
                let handle = message.receipt_handle().unwrap_or_default();
                if failed.contains(message.message_id().unwrap_or_default()) {
                    self.stack
                        .sqs
                        .change_message_visibility()
                        .queue_url(&self.queue_url)
                        .receipt_handle(handle)
                        .visibility_timeout(0)
                        .send()
                        .await
                        .expect("release");
                } else {
                    handled += 1;
                    self.stack
                        .sqs
                        .delete_message()
                        .queue_url(&self.queue_url)
                        .receipt_handle(handle)
                        .send()
                        .await
                        .expect("delete");
                }
            }
        }
    }

    async fn read(&self, path: &str) -> (u16, Value) {
        let mut request = serde_json::from_str::<Value>(&event(SECRET, b"", false, false)).unwrap();
        request["rawPath"] = path.into();
        request["routeKey"] = "$default".into();
        request["requestContext"]["http"]["method"] = "GET".into();
        request["requestContext"]["http"]["path"] = path.into();
        request["headers"]["authorization"] = format!("Bearer {TOKEN}").into();
        request.as_object_mut().unwrap().remove("pathParameters");
        invoke(&self.api, request.to_string()).await
    }

    /// Every fixture message and contact as the read API shows them.
    async fn read_all(
        &self,
        ids: impl Iterator<Item = &String>,
    ) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
        let mut messages = BTreeMap::new();
        for id in ids {
            let (status, body) = self.read(&format!("/v1/messages/{id}")).await;
            assert_eq!(status, 200, "{id}: {body}");
            messages.insert(id.clone(), body);
        }
        let mut contacts = BTreeMap::new();
        for contact in CONTACTS {
            let (status, body) = self.read(&format!("/v1/contacts/{contact}")).await;
            assert_eq!(status, 200, "{contact}: {body}");
            contacts.insert(contact.to_owned(), body);
        }
        (messages, contacts)
    }

    async fn queue_depth(&self, url: &str) -> usize {
        let attributes = self
            .stack
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .expect("attributes");
        attributes
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// Every event type, shuffled and duplicated, through both event shapes: the read API ends
/// exactly where the pure model says, and the receiver made one ledger write and at most one
/// send per request, with no reads.
#[tokio::test]
async fn every_event_type_end_to_end() {
    let deployment = Deployment::new().await;
    let fixtures = crate::fixtures();
    let mut deliveries: Vec<Vec<u8>> = fixtures.clone();
    deliveries.extend(fixtures.iter().step_by(2).cloned());
    shuffle(&mut deliveries, 2026);

    let started = Instant::now();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for (n, body) in deliveries.iter().enumerate() {
        let (status, response) = deployment.webhook(n, body).await;
        assert_eq!(status, 200, "{response}");
        *outcomes
            .entry(response["status"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let processed = deployment
        .process_until_empty(Arc::new(deployment.state.clone()))
        .await;
    let elapsed = started.elapsed();

    let facts: Vec<MessageRecord> = fixtures
        .iter()
        .filter_map(|b| {
            MessageRecord::from_event(&WatiEvent::parse(b).unwrap(), wati_ingest::time::now_unix())
        })
        .collect();
    let now = wati_ingest::time::now_unix();
    let (expected_messages, expected_contacts) = oracle_at(&facts, now);
    let (messages, contacts) = deployment.read_all(expected_messages.keys()).await;
    assert_eq!(messages, expected_messages);
    assert_eq!(contacts, expected_contacts);

    let receiver = deployment.receiver_tap.calls();
    let requests = deliveries.len();
    assert_eq!(
        receiver.get("PutItem").copied(),
        Some(requests),
        "{receiver:?}"
    );
    assert!(
        receiver.get("SendMessage").copied().unwrap_or(0) <= requests,
        "{receiver:?}"
    );
    assert!(
        !receiver.contains_key("GetItem") && !receiver.contains_key("Query"),
        "{receiver:?}"
    );
    let processor = deployment.processor_tap.calls();
    eprintln!(
        "e2e: {requests} webhooks ({outcomes:?}), {processed} queue records applied in {:.2} s \
         ({:.0} webhooks/s end to end); receiver calls {receiver:?}; processor calls {processor:?}",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64()
    );
}

/// SQS down: webhooks still get 200 (the ledger holds them, marked), the sweeper re-sends them
/// once SQS is back, and they are applied. Ledger and queue both down: 503.
#[tokio::test]
async fn queue_outage_is_absorbed_by_the_ledger_and_the_sweeper() {
    let deployment = Deployment::new().await;
    let fixtures = crate::fixtures();
    deployment.receiver_tap.fail("SendMessage");
    for (n, body) in fixtures.iter().enumerate().take(3) {
        let (status, response) = deployment.webhook(n, body).await;
        assert_eq!(
            (status, response["status"].as_str()),
            (200, Some("accepted")),
            "{response}"
        );
    }
    assert_eq!(deployment.queue_depth(&deployment.queue_url).await, 0);
    assert_eq!(deployment.ledger_marks().await, 3);

    deployment.receiver_tap.fail("PutItem");
    let (status, _) = deployment.webhook(3, &fixtures[3]).await;
    assert_eq!(status, 503, "nothing durable could be written");

    deployment.receiver_tap.heal();
    let report = sweep(&deployment.ledger, &deployment.queue, 100)
        .await
        .unwrap();
    assert_eq!((report.redriven, report.failed), (3, 0));
    assert_eq!(deployment.ledger_marks().await, 0);
    assert_eq!(
        deployment
            .process_until_empty(Arc::new(deployment.state.clone()))
            .await,
        3
    );
    let (status, message) = deployment
        .read("/v1/messages/6734a1b2c3d4e5f601000003")
        .await;
    assert_eq!(
        (status, message["status"].as_str()),
        (200, Some("sent")),
        "{message}"
    );
}

/// DynamoDB down for the receiver: the event is enqueued anyway (sent with the failed ledger
/// write, then a copy the processor archives) and applied.
#[tokio::test]
async fn ledger_outage_is_bypassed() {
    let deployment = Deployment::new().await;
    deployment.receiver_tap.fail("PutItem");
    let body = &crate::fixtures()[0];
    let (status, response) = deployment.webhook(0, body).await;
    assert_eq!(
        (status, response["status"].as_str()),
        (200, Some("accepted")),
        "{response}"
    );
    deployment.receiver_tap.heal();
    assert_eq!(
        deployment
            .process_until_empty(Arc::new(deployment.state.clone()))
            .await,
        2
    );
    let (status, message) = deployment
        .read("/v1/messages/6734a1b2c3d4e5f601000001")
        .await;
    assert_eq!(
        (status, message["status"].as_str()),
        (200, Some("received"))
    );
}

/// A record that always fails is reported alone (partial batch failure), its batch mates are
/// applied, and after maxReceiveCount it lands in the dead-letter queue. A record that is not a
/// queued event at all is quarantined and acknowledged, not retried.
#[tokio::test]
async fn a_poison_record_ends_in_the_dlq_and_its_batch_mates_apply() {
    let deployment = Deployment::new().await;
    let poison = br#"{"eventType":"sentMessageREAD","id":"poison-id","timestamp":"1764238500"}"#;
    for (n, body) in [
        &crate::fixtures()[0][..],
        &poison[..],
        &crate::fixtures()[1][..],
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(deployment.webhook(n, body).await.0, 200);
    }
    deployment
        .stack
        .sqs
        .send_message()
        .queue_url(&deployment.queue_url)
        .message_body("not a queued event")
        .send()
        .await
        .unwrap();
    let state = Arc::new(PoisonFor {
        inner: deployment.state.clone(),
        id: "poison-id",
    });
    deployment.process_until_empty(state).await;

    for id in ["6734a1b2c3d4e5f601000001", "6734a1b2c3d4e5f601000002"] {
        assert_eq!(
            deployment.read(&format!("/v1/messages/{id}")).await.0,
            200,
            "{id}"
        );
    }
    assert_eq!(deployment.read("/v1/messages/poison-id").await.0, 404);
    let dead = deployment
        .stack
        .sqs
        .receive_message()
        .queue_url(&deployment.dlq_url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let bodies: Vec<&str> = dead.messages().iter().filter_map(|m| m.body()).collect();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert!(bodies[0].contains("poison-id"));
    assert_eq!(deployment.queue_depth(&deployment.queue_url).await, 0);

    // Once the cause is fixed, `wati-ingest redrive-dlq --aws` moves it back and it applies.
    for message in dead.messages() {
        deployment
            .stack
            .sqs
            .change_message_visibility()
            .queue_url(&deployment.dlq_url)
            .receipt_handle(message.receipt_handle().unwrap_or_default())
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
    }
    let dead_letters = wati_ingest::store::aws_operator::SqsDeadLetters {
        client: deployment.stack.sqs.clone(),
        dlq_url: deployment.dlq_url.clone(),
        queue_url: deployment.queue_url.clone(),
    };
    let moved = wati_ingest::ports::DeadLetters::redrive(&dead_letters, None)
        .await
        .unwrap();
    assert_eq!(moved, 1);
    assert_eq!(
        deployment
            .process_until_empty(Arc::new(deployment.state.clone()))
            .await,
        1
    );
    assert_eq!(deployment.read("/v1/messages/poison-id").await.0, 200);
}

impl Deployment {
    async fn ledger_marks(&self) -> usize {
        self.ledger_marked().await.len()
    }

    async fn ledger_marked(&self) -> Vec<QueuedEvent> {
        use wati_ingest::ports::Ledger;
        DynamoLedger::new(self.stack.dynamodb.clone(), self.stack.table("LedgerTable"))
            .marked_for_redrive(None, 100)
            .await
            .unwrap()
            .marks
            .into_iter()
            .map(|mark| mark.event)
            .collect()
    }
}

/// The DynamoDB calls the processor makes for one event on each path, counted on the wire and
/// written to `target/bench/processor_calls.json` for docs/performance.md (`make bench`).
/// The fast path's update that fails its condition (the event's ids are not linked yet) still
/// counts: it is billed like one that succeeds. After the item writes, every applied event reads
/// its message back (strongly consistent `BatchGetItem`, a round per step of its edges) and,
/// when it names a contact, adds its snapshot to one bucket per contact name (`UpdateItem`).
#[tokio::test]
async fn aws_calls_per_processor_path() {
    let deployment = Deployment::new().await;
    let tap = &deployment.processor_tap;
    let mut table: Vec<(&str, BTreeMap<String, usize>)> = Vec::new();
    let mut path = async |name: &'static str, body: Value, expected: &[(&str, usize)]| {
        let queued = QueuedEvent::archived(name, 1_764_238_600, body.to_string());
        let applied = wati_ingest::processor::apply(&deployment.state, &queued).await;
        assert!(applied.is_ok(), "{name}: {applied:?}");
        let seen = std::mem::take(&mut *tap.0.calls.lock().unwrap());
        let expected: BTreeMap<String, usize> =
            expected.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        assert_eq!(seen, expected, "{name}");
        table.push((name, seen));
    };
    let sent = serde_json::json!({"eventType": "templateMessageSent", "id": "m1",
        "whatsappMessageId": "wamid.M1", "waId": "14155550101", "timestamp": "1764238500"});
    path(
        "first event of a message (Wati id, wamid, phone)",
        sent,
        &[
            ("UpdateItem", 2),
            ("BatchGetItem", 2),
            ("BatchGetKeys", 4),
            ("TransactWriteItems", 1),
            ("TransactItems", 2),
        ],
    )
    .await;
    let delivered = serde_json::json!({"eventType": "sentMessageDELIVERED_v2", "id": "m1",
        "whatsappMessageId": "wamid.M1", "localMessageId": "l1", "timestamp": "1764238510"});
    path(
        "next status, first to carry the sender's local id",
        delivered.clone(),
        &[
            ("UpdateItem", 2),
            ("BatchGetItem", 2),
            ("BatchGetKeys", 6),
            ("TransactWriteItems", 1),
            ("TransactItems", 3),
        ],
    )
    .await;
    path(
        "the same status again (a duplicate)",
        delivered,
        &[("UpdateItem", 2), ("BatchGetItem", 2), ("BatchGetKeys", 6)],
    )
    .await;
    let read = serde_json::json!({"eventType": "sentMessageREAD", "id": "m1",
        "whatsappMessageId": "wamid.M1", "timestamp": "1764238520"});
    path(
        "a later status of a known message",
        read,
        &[("UpdateItem", 2), ("BatchGetItem", 2), ("BatchGetKeys", 6)],
    )
    .await;
    let older = serde_json::json!({"eventType": "sentMessageDELIVERED", "id": "m1",
        "whatsappMessageId": "wamid.M1", "timestamp": "1764238505"});
    path(
        "an older time arriving late (added to its set, the earliest is read)",
        older,
        &[("UpdateItem", 2), ("BatchGetItem", 2), ("BatchGetKeys", 6)],
    )
    .await;
    let overtaking = serde_json::json!({"eventType": "sentMessageREAD", "id": "m2",
        "whatsappMessageId": "wamid.M2", "timestamp": "1764238530"});
    path(
        "a status before its message (READ first)",
        overtaking,
        &[
            ("UpdateItem", 1),
            ("BatchGetItem", 2),
            ("BatchGetKeys", 4),
            ("TransactWriteItems", 1),
            ("TransactItems", 2),
        ],
    )
    .await;
    let meta_only = serde_json::json!({"eventType": "sentMessageREPLIED",
        "whatsappMessageId": "wamid.M2", "timestamp": "1764238540"});
    path(
        "a status naming only Meta's id",
        meta_only,
        &[("UpdateItem", 1), ("BatchGetItem", 2), ("BatchGetKeys", 4)],
    )
    .await;
    let inbound = serde_json::json!({"eventType": "message", "id": "m3", "owner": false,
        "whatsappMessageId": "wamid.M3", "waId": "14155550102", "bsuid": "US.13491208655302741918",
        "timestamp": "1764238550"});
    // The wamid edge and the links between phone and BSUID, in one transaction.
    path(
        "an inbound message naming phone and BSUID",
        inbound,
        &[
            ("UpdateItem", 3),
            ("BatchGetItem", 2),
            ("BatchGetKeys", 4),
            ("TransactWriteItems", 1),
            ("TransactItems", 4),
        ],
    )
    .await;
    // A twin naming only one of them: the message names both, the link's two halves are
    // read (found).
    let phone_twin = serde_json::json!({"eventType": "message", "id": "m3", "owner": false,
        "waId": "14155550102", "timestamp": "1764238550"});
    path(
        "a twin of it naming only the phone (the link checked)",
        phone_twin,
        &[("UpdateItem", 3), ("BatchGetItem", 3), ("BatchGetKeys", 6)],
    )
    .await;
    let by_number = serde_json::json!({"eventType": "message", "id": "m4", "owner": false,
        "waId": "14155550103", "timestamp": "1764238555"});
    path(
        "an inbound message naming only the phone",
        by_number,
        &[("UpdateItem", 2), ("BatchGetItem", 1), ("BatchGetKeys", 2)],
    )
    .await;
    // Its v2 twin brings the BSUID: the link no event carried is written, both ways.
    let bsuid_twin = serde_json::json!({"eventType": "message", "id": "m4", "owner": false,
        "bsuid": "US.13491208655302741919", "timestamp": "1764238555"});
    path(
        "its twin naming only the BSUID (the link written)",
        bsuid_twin,
        &[
            ("UpdateItem", 3),
            ("PutItem", 2),
            ("BatchGetItem", 2),
            ("BatchGetKeys", 4),
        ],
    )
    .await;
    // A status names no contact: of a message naming both, it checks the link too.
    let both = serde_json::json!({"eventType": "templateMessageSent_v2", "id": "m5",
        "whatsappMessageId": "wamid.M5", "waId": "14155550104",
        "bsuid": "US.13491208655302741920", "timestamp": "1764238556"});
    path(
        "a business message naming phone and BSUID",
        both,
        &[
            ("UpdateItem", 3),
            ("BatchGetItem", 2),
            ("BatchGetKeys", 4),
            ("TransactWriteItems", 1),
            ("TransactItems", 4),
        ],
    )
    .await;
    let status = serde_json::json!({"eventType": "sentMessageDELIVERED", "id": "m5",
        "whatsappMessageId": "wamid.M5", "timestamp": "1764238557"});
    path(
        "a status of it (the link checked)",
        status,
        &[("UpdateItem", 3), ("BatchGetItem", 3), ("BatchGetKeys", 6)],
    )
    .await;
    let review = serde_json::json!({"eventType": "templateReviewed", "id": "t1",
        "newTemplateStatus": "APPROVED"});
    path("an event about no message (template review)", review, &[]).await;
    let unusable = serde_json::json!({"eventType": "sentMessageREAD", "timestamp": "1764238560"});
    path(
        "a message event naming no message (quarantined)",
        unusable,
        &[("PutItem", 1)],
    )
    .await;

    let rows: Vec<Value> = table
        .iter()
        .map(|(name, calls)| serde_json::json!({"path": name, "calls": calls}))
        .collect();
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("processor_calls.json"),
        serde_json::to_vec_pretty(&rows).unwrap(),
    )
    .unwrap();
}

/// The AWS calls each receive path makes, counted: the happy path is one conditional PutItem and
/// one SendMessage, a duplicate the same (its copy is re-sent), and the fallbacks add only what they need.
#[tokio::test]
async fn aws_calls_per_receive_path() {
    let deployment = Deployment::new().await;
    let tap = &deployment.receiver_tap;
    let fixtures = crate::fixtures();
    let calls = |expected: &[(&str, usize)]| {
        let expected: BTreeMap<String, usize> =
            expected.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let seen = tap.calls();
        tap.0.calls.lock().unwrap().clear();
        assert_eq!(seen, expected);
    };

    assert_eq!(
        deployment.webhook(0, &fixtures[0]).await.1["status"],
        "accepted"
    );
    calls(&[("PutItem", 1), ("SendMessage", 1)]);

    assert_eq!(
        deployment.webhook(1, &fixtures[0]).await.1["status"],
        "duplicate"
    );
    calls(&[("PutItem", 1), ("SendMessage", 1)]);

    tap.fail("SendMessage");
    assert_eq!(
        deployment.webhook(2, &fixtures[1]).await.1["status"],
        "accepted"
    );
    calls(&[("PutItem", 1), ("SendMessage", 1), ("UpdateItem", 1)]);
    tap.heal();

    // The send went out with the failed ledger write; a copy asks the processor to archive it.
    tap.fail("PutItem");
    assert_eq!(
        deployment.webhook(3, &fixtures[2]).await.1["status"],
        "accepted"
    );
    calls(&[("PutItem", 1), ("SendMessage", 2)]);
    tap.heal();

    // A crash after the ledger write lost the send: Wati's retry re-sends.
    let crashed = &fixtures[4];
    let key = wati_ingest::event::idempotency_key(&WatiEvent::parse(crashed).unwrap(), crashed);
    let old = wati_ingest::time::now_unix() - 600;
    use wati_ingest::ports::Ledger;
    deployment
        .ledger
        .record(&wati_ingest::ports::LedgerEntry {
            key,
            event_type: "templateMessageSent".into(),
            body: crashed.clone(),
            received_at: old,
            expires_at: old + 7 * 86_400,
        })
        .await
        .unwrap();
    tap.0.calls.lock().unwrap().clear();
    assert_eq!(
        deployment.webhook(4, crashed).await.1["status"],
        "duplicate"
    );
    calls(&[("PutItem", 1), ("SendMessage", 1)]);

    let applied = deployment
        .process_until_empty(Arc::new(deployment.state.clone()))
        .await;
    assert_eq!(
        applied, 5,
        "the ledger outage's two copies and the duplicate's copy are applied again; the event \
         marked for redrive waits for the sweeper"
    );
    let (status, template) = deployment
        .read("/v1/messages/6734a1b2c3d4e5f601000004")
        .await;
    assert_eq!(
        (status, template["status"].as_str()),
        (200, Some("sent")),
        "{template}"
    );
}

/// A moto server of this test's own, so stopping it does not disturb the other tests.
struct OwnSqs {
    child: std::process::Child,
    endpoint: String,
}

impl OwnSqs {
    async fn start(port: u16) -> OwnSqs {
        let binary = std::env::var("EMULATOR_MOTO_BIN")
            .expect("EMULATOR_MOTO_BIN: run the tests through scripts/emulators.sh (make test)");
        let mut child = std::process::Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto");
        let endpoint = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if reqwest::get(format!("{endpoint}/moto-api/")).await.is_ok() {
                return OwnSqs { child, endpoint };
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("moto did not start on {port}");
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnSqs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stopping the real SQS emulator mid-stream: webhooks keep getting 200 (marked in the ledger),
/// and once SQS is back the sweeper puts every one of them on the queue.
#[tokio::test]
async fn a_stopped_sqs_emulator_loses_nothing() {
    let stack = Stack::create().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sqs_server = OwnSqs::start(port).await;
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&stack.config)
            .endpoint_url(&sqs_server.endpoint)
            .build(),
    );
    let create_queue = || async {
        sqs.create_queue()
            .queue_name("stopped-emulator")
            .send()
            .await
            .expect("create queue")
            .queue_url()
            .unwrap()
            .to_owned()
    };
    let queue = SqsQueue::new(sqs.clone(), create_queue().await);
    let ledger = DynamoLedger::new(stack.dynamodb.clone(), stack.table("LedgerTable"));
    let config = ReceiverConfig {
        ledger_table: stack.table("LedgerTable"),
        queue_url: queue.url().to_owned(),
        secret_arn: String::new(),
        dedup_ttl_days: 7,
        max_body_bytes: 256 * 1024,
        quarantine_retention_days: 30,
    };
    let receiver = receiver_router(
        &config,
        SecretSet::new([SECRET]).unwrap().into(),
        ledger.clone(),
        queue.clone(),
    );
    let fixtures = crate::fixtures();
    let post = |n: usize| invoke(&receiver, event(SECRET, &fixtures[n], false, false));

    assert_eq!(post(0).await.1["status"], "accepted");
    sqs_server.stop();
    for n in [1, 2, 4] {
        let (status, body) = post(n).await;
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("accepted")),
            "{body}"
        );
    }
    use wati_ingest::ports::Ledger;
    assert_eq!(
        ledger
            .marked_for_redrive(None, 10)
            .await
            .unwrap()
            .marks
            .len(),
        3
    );

    let _restarted = OwnSqs::start(port).await; // in-memory: the queue must be made again
    let url = create_queue().await;
    assert_eq!(url, queue.url());
    assert_eq!(sweep(&ledger, &queue, 10).await.unwrap().redriven, 3);
    let received = sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    assert_eq!(received.messages().len(), 3);
}

/// `wati-ingest smoke` against the Lambda routers served over HTTP on the emulators, with the
/// processor running as the event source mapping would: every hop passes, the change hop is
/// skipped (on AWS changes go to EventBridge, not to a feed), and a wrong token is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smoke_check_passes_on_the_emulators() {
    use wati_ingest::smoke::{run_id, samples, smoke, Outcome, SmokeConfig};
    let deployment = Arc::new(Deployment::new().await);
    async fn serve(router: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{address}")
    }
    let webhook = serve(deployment.receiver.clone()).await;
    let api = serve(deployment.api.clone()).await;
    let pump = {
        let deployment = Arc::clone(&deployment);
        tokio::spawn(async move {
            loop {
                let state = Arc::new(deployment.state.clone());
                deployment.process_until_empty(state).await;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
    };
    let mut config = SmokeConfig {
        webhook_url: format!("{webhook}/webhook/{SECRET}"),
        api_url: format!("{api}/v1/"),
        token: TOKEN.into(),
        wait: std::time::Duration::from_secs(30),
    };
    let now = wati_ingest::time::now_unix();
    let report = smoke(&config, &samples(&run_id().unwrap(), now)).await;
    let lines = report.lines();
    assert!(report.passed(), "{lines:#?}");
    assert_eq!(report.hops.len(), 10, "{lines:#?}");
    let change = report.hops.last().unwrap();
    assert!(
        change.what.starts_with("change announced")
            && matches!(change.outcome, Outcome::Skipped(_)),
        "{lines:#?}"
    );
    eprintln!("{}", lines.join("\n"));

    config.token = "wrong-token-0123456789abcdef".into();
    let report = smoke(&config, &samples(&run_id().unwrap(), now)).await;
    pump.abort();
    assert!(!report.passed());
    assert!(
        matches!(&report.hops[0].outcome, Outcome::Failed(why) if why.contains("refused the token")),
        "{:#?}",
        report.lines()
    );
}
