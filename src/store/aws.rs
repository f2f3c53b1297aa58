//! The AWS adapters: the ledger on DynamoDB, the queue on SQS.
//!
//! Ledger items (table `LEDGER_TABLE`, see `template.yaml` and `infra/README.md`):
//! `pk` (idempotency key), `event_type`, `body` (binary, the raw webhook), `received_at`,
//! `expires_at` (TTL). `redrive_shard` + `redrive_at` exist only while an event waits for the
//! sweeper; they form the sparse `redrive` index. Quarantined bodies are items whose `pk` starts
//! with `quarantine:` and which never expire.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use crate::ports::{
    Ledger, LedgerEntry, QuarantineEntry, Queue, QueuedEvent, Recorded, StoreError,
};

/// Partition of the sparse redrive index: every marked event sits in this one partition, which
/// stays small because marks exist only while the queue is failing.
const REDRIVE_SHARD: &str = "redrive";
const REDRIVE_INDEX: &str = "redrive";

#[derive(Clone, Debug)]
pub struct DynamoLedger {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoLedger {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoLedger {
            client,
            table: table.into(),
        }
    }

    /// Opens the HTTPS connection (and loads credentials) before the first request needs it.
    pub async fn warm_up(&self) -> Result<(), StoreError> {
        self.client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| unavailable("describe ledger table", e))
    }
}

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(crate) fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

pub(crate) fn bytes(item: &HashMap<String, AttributeValue>, name: &str) -> Option<Vec<u8>> {
    Some(item.get(name)?.as_b().ok()?.as_ref().to_vec())
}

pub(crate) fn text(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name)?.as_s().ok().cloned()
}

/// The error's code and message, for logs; the SDK's own Display says only "service error".
pub(crate) fn unavailable<E: ProvideErrorMetadata + std::fmt::Debug>(
    operation: &'static str,
    error: E,
) -> StoreError {
    let reason = match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => format!("{error:?}"),
    };
    StoreError::unavailable(operation, reason)
}

/// A ledger item as the event it archives.
fn queued_from_item(item: &HashMap<String, AttributeValue>) -> Option<QueuedEvent> {
    Some(QueuedEvent::archived(
        text(item, "pk")?,
        number(item, "received_at")?,
        String::from_utf8_lossy(&bytes(item, "body")?),
    ))
}

#[async_trait]
impl Ledger for DynamoLedger {
    async fn record(&self, entry: &LedgerEntry) -> Result<Recorded, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&entry.key))
            .item("event_type", s(&entry.event_type))
            .item("body", AttributeValue::B(Blob::new(entry.body.clone())))
            .item("received_at", n(entry.received_at))
            .item("expires_at", n(entry.expires_at))
            // TTL deletion is lazy (up to days): an expired item must not count as a duplicate.
            .condition_expression("attribute_not_exists(pk) OR expires_at <= :now")
            .expression_attribute_values(":now", n(entry.received_at))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Recorded::New),
            Err(error) => {
                let existing = match error.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(existing)) => Some(existing),
                    _ => None,
                };
                match existing {
                    Some(existing) => {
                        let item = existing.item().cloned().unwrap_or_default();
                        Ok(Recorded::Existing {
                            received_at: number(&item, "received_at").unwrap_or(0),
                            body: bytes(&item, "body").unwrap_or_default(),
                        })
                    }
                    None => Err(unavailable("record in ledger", error)),
                }
            }
        }
    }

    async fn mark_for_redrive(&self, key: &str, at: i64) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(key))
            .update_expression("SET redrive_shard = :shard, redrive_at = :at")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":shard", s(REDRIVE_SHARD))
            .expression_attribute_values(":at", n(at))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| unavailable("mark for redrive", e))
    }

    async fn quarantine(&self, entry: &QuarantineEntry) -> Result<(), StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&entry.key))
            .item("event_type", s("quarantine"))
            .item("reason", s(&entry.reason))
            .item("body", AttributeValue::B(Blob::new(entry.body.clone())))
            .item("received_at", n(entry.received_at))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Already kept: the same unusable body arrived before.
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(error) => Err(unavailable("quarantine", error)),
        }
    }

    async fn marked_for_redrive(&self, limit: u32) -> Result<Vec<QueuedEvent>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(REDRIVE_INDEX)
            .key_condition_expression("redrive_shard = :shard")
            .expression_attribute_values(":shard", s(REDRIVE_SHARD))
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(|e| unavailable("list redrive marks", e))?;
        Ok(output.items().iter().filter_map(queued_from_item).collect())
    }

    async fn archived(&self, key: &str) -> Result<Option<QueuedEvent>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(key))
            .send()
            .await
            .map_err(|e| unavailable("read ledger", e))?;
        Ok(output.item().and_then(queued_from_item))
    }

    async fn archived_between(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<QueuedEvent>, StoreError> {
        let mut events = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("received_at BETWEEN :since AND :until AND event_type <> :q")
                .expression_attribute_values(":since", n(since))
                .expression_attribute_values(":until", n(until))
                .expression_attribute_values(":q", s("quarantine"))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("scan ledger", e))?;
            events.extend(output.items().iter().filter_map(queued_from_item));
            start = output.last_evaluated_key().cloned();
            if start.is_none() {
                events.sort_by(|a, b| (a.received_at, &a.key).cmp(&(b.received_at, &b.key)));
                return Ok(events);
            }
        }
    }

    async fn clear_redrive(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(key))
            .update_expression("REMOVE redrive_shard, redrive_at")
            .condition_expression("attribute_exists(pk)")
            .send()
            .await
            .map(|_| ())
            .map_err(|e| unavailable("clear redrive mark", e))
    }
}

#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        SqsQueue {
            client,
            url: url.into(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens the HTTPS connection before the first request needs it.
    pub async fn warm_up(&self) -> Result<(), StoreError> {
        self.client
            .get_queue_attributes()
            .queue_url(&self.url)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| unavailable("get queue attributes", e))
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, event: &QueuedEvent) -> Result<(), StoreError> {
        let body = serde_json::to_string(event)
            .map_err(|e| StoreError::unavailable("encode queued event", e))?;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| unavailable("send to queue", e))
    }
}

/// Moves every message of the dead-letter queue back to the event queue; returns how many.
pub async fn redrive_dlq(
    client: &aws_sdk_sqs::Client,
    dlq_url: &str,
    queue_url: &str,
) -> Result<usize, StoreError> {
    let mut moved = 0;
    loop {
        let output = client
            .receive_message()
            .queue_url(dlq_url)
            .max_number_of_messages(10)
            .send()
            .await
            .map_err(|e| unavailable("receive from DLQ", e))?;
        if output.messages().is_empty() {
            return Ok(moved);
        }
        for message in output.messages() {
            client
                .send_message()
                .queue_url(queue_url)
                .message_body(message.body().unwrap_or_default())
                .send()
                .await
                .map_err(|e| unavailable("send to queue", e))?;
            client
                .delete_message()
                .queue_url(dlq_url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await
                .map_err(|e| unavailable("delete from DLQ", e))?;
            moved += 1;
        }
    }
}

/// Decodes an SQS message body written by [`SqsQueue::send`].
pub fn decode_queued(body: &str) -> Result<QueuedEvent, serde_json::Error> {
    serde_json::from_str(body)
}
