//! The sweeper on the emulators, beyond the two-backend contract: a `SendMessageBatch` entry that
//! SQS refuses fails alone, and marks written before the index was sharded are still swept.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
};
use aws_sdk_sqs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use wati_ingest::ports::{Ledger, QueuedEvent};
use wati_ingest::receiver::{sweep, OldestMark, SweepStop};
use wati_ingest::store::aws::{DynamoLedger, SqsQueue};

use crate::support::{Backend, Stack};

/// Bodies holding this are refused by [`RefuseMarkedEntries`].
const REFUSE: &str = "refuse-me";

/// Plays SQS refusing the `SendMessageBatch` entries whose body holds [`REFUSE`]: they are taken
/// out of the request (the emulator enqueues the others), and the answer lists them under
/// `Failed` with a sender fault, the rest under `Successful`, as SQS answers. (moto can fail an
/// entry itself, but writes `SenderFault` as a string, which the SDK cannot read.)
#[derive(Debug)]
struct RefuseMarkedEntries;

/// The entry ids of one batch request, and whether each was refused.
#[derive(Debug, Clone)]
struct BatchIds(Vec<(String, bool)>);

impl Storable for BatchIds {
    type Storer = StoreReplace<BatchIds>;
}

impl Intercept for RefuseMarkedEntries {
    fn name(&self) -> &'static str {
        "refuse-marked-entries"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_sqs::error::BoxError> {
        let request = context.request_mut();
        if request.headers().get("x-amz-target") != Some("AmazonSQS.SendMessageBatch") {
            return Ok(());
        }
        let Some(bytes) = request.body().bytes() else {
            return Ok(());
        };
        let mut json: serde_json::Value = serde_json::from_slice(bytes)?;
        let entries = json["Entries"].as_array().cloned().unwrap_or_default();
        let refused = |entry: &serde_json::Value| {
            entry["MessageBody"]
                .as_str()
                .is_some_and(|body| body.contains(REFUSE))
        };
        let ids = entries
            .iter()
            .map(|entry| {
                (
                    entry["Id"].as_str().unwrap_or("").to_owned(),
                    refused(entry),
                )
            })
            .collect();
        cfg.interceptor_state().store_put(BatchIds(ids));
        json["Entries"] = entries.into_iter().filter(|e| !refused(e)).collect();
        let body = serde_json::to_vec(&json)?;
        request
            .headers_mut()
            .insert("content-length", body.len().to_string());
        *request.body_mut() = SdkBody::from(body);
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_sqs::error::BoxError> {
        let Some(BatchIds(ids)) = cfg.load::<BatchIds>().cloned() else {
            return Ok(());
        };
        if context.response().status().as_u16() != 200 {
            return Ok(());
        }
        let (refused, sent): (Vec<_>, Vec<_>) = ids.into_iter().partition(|(_, refused)| *refused);
        let answer = serde_json::json!({
            "Successful": sent.iter().map(|(id, _)| serde_json::json!({
                "Id": id, "MessageId": format!("m-{id}"), "MD5OfMessageBody": "0".repeat(32),
            })).collect::<Vec<_>>(),
            "Failed": refused.iter().map(|(id, _)| serde_json::json!({
                "Id": id, "SenderFault": true, "Code": "InvalidMessageContents",
                "Message": "refused by the test",
            })).collect::<Vec<_>>(),
        });
        let response = axum::http::Response::builder()
            .status(200)
            .header("content-type", "application/x-amz-json-1.0")
            .body(SdkBody::from(answer.to_string()))
            .expect("valid response");
        *context.response_mut() = HttpResponse::try_from(response).expect("convertible response");
        Ok(())
    }
}

fn event(n: usize, text: &str) -> QueuedEvent {
    QueuedEvent::archived(
        format!("sentMessageREAD:wamid.sweep{n}"),
        1_000,
        format!(
            r#"{{"eventType":"sentMessageREAD","whatsappMessageId":"wamid.sweep{n}","text":"{text}"}}"#
        ),
    )
}

async fn record_marked(ledger: &DynamoLedger, event: &QueuedEvent, marked_at: i64) {
    let entry = wati_ingest::ports::LedgerEntry {
        key: event.key.clone(),
        event_type: "sentMessageREAD".into(),
        body: event.body.clone().into_bytes(),
        received_at: event.received_at,
        expires_at: event.received_at + 7 * 86_400,
    };
    ledger.record(&entry).await.unwrap();
    ledger
        .mark_for_redrive(&event.key, marked_at)
        .await
        .unwrap();
}

/// One entry of a batch refused by SQS: only it fails and stays marked; its batch-mates and the
/// other batches go on the queue and are cleared.
#[tokio::test]
async fn an_entry_sqs_refuses_fails_alone() {
    let stack = Stack::create().await;
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&stack.config)
            .interceptor(RefuseMarkedEntries)
            .build(),
    );
    let queue = SqsQueue::new(sqs, stack.queue_url("EventQueue"));
    let ledger = DynamoLedger::new(stack.dynamodb.clone(), stack.table("LedgerTable"));
    let events: Vec<QueuedEvent> = (0..14)
        .map(|n| event(n, if n == 3 { REFUSE } else { "fine" }))
        .collect();
    for (n, event) in events.iter().enumerate() {
        record_marked(&ledger, event, 2_000 + n as i64).await;
    }

    let report = sweep(&ledger, &queue, 100).await.unwrap();
    assert_eq!((report.redriven, report.failed), (13, 1));
    assert_eq!(report.stopped, SweepStop::Done);
    assert_eq!(report.oldest_mark, OldestMark::At(2_003));
    let left = ledger.marked_for_redrive(None, 100).await.unwrap().marks;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].event, events[3]);

    let backend = Backend::on_stack(&stack, queue.clone());
    let mut received = backend.drain_queue().await;
    received.sort_by(|a, b| a.key.cmp(&b.key));
    let mut expected: Vec<QueuedEvent> = events
        .iter()
        .filter(|e| !e.body.contains(REFUSE))
        .cloned()
        .collect();
    expected.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(received, expected);
}

/// A mark written by a release before the shards (partition `redrive`, `expires_at` kept) is
/// listed, swept and cleared, and its item keeps its expiry.
#[tokio::test]
async fn a_mark_from_before_the_shards_is_swept() {
    let stack = Stack::create().await;
    let table = stack.table("LedgerTable");
    let ledger = DynamoLedger::new(stack.dynamodb.clone(), &table);
    let queue = SqsQueue::new(stack.sqs.clone(), stack.queue_url("EventQueue"));
    let old = event(1, "marked by an older release");
    let item = HashMap::from([
        ("pk".to_owned(), AttributeValue::S(old.key.clone())),
        (
            "event_type".to_owned(),
            AttributeValue::S("sentMessageREAD".into()),
        ),
        (
            "body".to_owned(),
            AttributeValue::B(old.body.clone().into_bytes().into()),
        ),
        ("received_at".to_owned(), AttributeValue::N("1000".into())),
        ("expires_at".to_owned(), AttributeValue::N("605800".into())),
        (
            "redrive_shard".to_owned(),
            AttributeValue::S("redrive".into()),
        ),
        ("redrive_at".to_owned(), AttributeValue::N("1500".into())),
    ]);
    stack
        .dynamodb
        .put_item()
        .table_name(&table)
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
    let sharded = event(2, "marked now");
    record_marked(&ledger, &sharded, 1_600).await;

    assert_eq!(ledger.oldest_mark().await.unwrap(), Some(1_500));
    let report = sweep(&ledger, &queue, 100).await.unwrap();
    assert_eq!((report.redriven, report.failed), (2, 0));
    assert_eq!(report.oldest_mark, OldestMark::NoneLeft);
    let item = stack
        .dynamodb
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S(old.key.clone()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item()
        .cloned()
        .unwrap();
    assert_eq!(
        item.get("expires_at"),
        Some(&AttributeValue::N("605800".into()))
    );
    for gone in ["redrive_shard", "redrive_at", "held_expires_at"] {
        assert!(!item.contains_key(gone), "{gone} left on {item:?}");
    }
}
