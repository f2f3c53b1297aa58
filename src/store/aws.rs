//! The AWS adapters: the ledger on DynamoDB, the queue on SQS.
//!
//! Ledger items (table `LEDGER_TABLE`, see `template.yaml` and `infra/README.md`):
//! `pk` (idempotency key), `event_type`, `body` (binary, the raw webhook), `received_at`,
//! `expires_at` (TTL). Quarantined bodies are items whose `pk` starts with `quarantine:`; they
//! expire `QUARANTINE_RETENTION_DAYS` (30) after their receipt.
//!
//! While an event waits for the sweeper (its enqueue failed), its item also has `redrive_shard` +
//! `redrive_at`, which form the sparse `redrive` index, and its `expires_at` is moved to
//! `held_expires_at`: without the TTL attribute DynamoDB never deletes it, and `record`'s
//! condition counts it as recorded. Clearing the mark moves the expiry back. Marks are spread
//! over [`REDRIVE_SHARDS`] index partitions by key hash (`redrive#0`..`redrive#15`), so a burst of
//! marks is not held to one partition's write limit; marks written before the shards, under
//! `redrive`, are still listed.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use async_trait::async_trait;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use sha2::{Digest, Sha256};

pub use super::sqs_envelope::decode_queued;
use super::sqs_envelope::{encode_queued, SQS_MAX_MESSAGE_BYTES};
use crate::ports::{
    Ledger, LedgerEntry, MarkCursor, Marked, MarkedPage, PartitionCursor, QuarantineEntry, Queue,
    QueuedEvent, Recorded, StoreError,
};
use crate::settings::{DEFAULT_QUARANTINE_RETENTION_DAYS, SECONDS_PER_DAY};

const REDRIVE_INDEX: &str = "redrive";
/// Index partitions of the marks: `redrive#<n>`, n from the key's hash.
pub const REDRIVE_SHARDS: u8 = 16;
/// The one partition marks were written to before they were sharded; still listed, so marks
/// made by an older release are re-sent (and re-marked into a shard if they fail again).
const LEGACY_REDRIVE_SHARD: &str = "redrive";
/// Entries per `SendMessageBatch`, SQS's maximum.
pub const SQS_BATCH_ENTRIES: usize = 10;

/// The index partition `key`'s mark goes to.
pub fn redrive_shard(key: &str) -> String {
    let hash = Sha256::digest(key.as_bytes());
    format!("redrive#{}", hash[0] % REDRIVE_SHARDS)
}

/// Every index partition a mark can be in, the legacy one first.
pub fn redrive_partitions() -> Vec<String> {
    std::iter::once(LEGACY_REDRIVE_SHARD.to_owned())
        .chain((0..REDRIVE_SHARDS).map(|n| format!("redrive#{n}")))
        .collect()
}

#[derive(Clone, Debug)]
pub struct DynamoLedger {
    client: aws_sdk_dynamodb::Client,
    table: String,
    quarantine_retention_seconds: i64,
}

impl DynamoLedger {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoLedger {
            client,
            table: table.into(),
            quarantine_retention_seconds: DEFAULT_QUARANTINE_RETENTION_DAYS * SECONDS_PER_DAY,
        }
    }

    /// Quarantined bodies expire (the table's TTL) `days` after their receipt.
    pub fn with_quarantine_retention_days(mut self, days: i64) -> Self {
        self.quarantine_retention_seconds = days.max(1) * SECONDS_PER_DAY;
        self
    }

    /// One conditional `UpdateItem` of `key`; a failed condition is an answer (with the item
    /// as it was, if any), not an error.
    async fn update_if(
        &self,
        key: &str,
        update: &'static str,
        condition: &'static str,
        values: impl FnOnce(UpdateItemFluentBuilder) -> UpdateItemFluentBuilder,
    ) -> Result<Conditional, SdkError<UpdateItemError, HttpResponse>> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(key))
            .update_expression(update)
            .condition_expression(condition)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match values(request).send().await {
            Ok(_) => Ok(Conditional::Updated),
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    Ok(Conditional::Failed(failed.item().cloned()))
                }
                _ => Err(error),
            },
        }
    }

    /// Up to `limit` marks of one index partition, oldest first, after `start` (mark time and
    /// key); and where that partition goes on from.
    async fn marks_in(
        &self,
        partition: String,
        start: Option<(i64, String)>,
        limit: u32,
    ) -> Result<(String, Vec<Marked>, PartitionCursor), StoreError> {
        let start_key = start.map(|(at, key)| {
            HashMap::from([
                ("redrive_shard".to_owned(), s(&partition)),
                ("redrive_at".to_owned(), n(at)),
                ("pk".to_owned(), s(key)),
            ])
        });
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(REDRIVE_INDEX)
            .key_condition_expression("redrive_shard = :shard")
            .expression_attribute_values(":shard", s(&partition))
            .set_exclusive_start_key(start_key)
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(|e| unavailable("list redrive marks", e))?;
        let marks = output.items().iter().filter_map(marked_from_item).collect();
        let position = match output.last_evaluated_key() {
            None => PartitionCursor::Exhausted,
            Some(last) => match (number(last, "redrive_at"), text(last, "pk")) {
                (Some(marked_at), Some(key)) => PartitionCursor::After { marked_at, key },
                _ => {
                    return Err(StoreError::Corrupt {
                        operation: "list redrive marks",
                        reason: "the page's last key has no redrive_at or pk".into(),
                    })
                }
            },
        };
        Ok((partition, marks, position))
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

/// What a conditional update did.
enum Conditional {
    Updated,
    /// The condition failed; the item as it was (`None`: there is none).
    Failed(Option<HashMap<String, AttributeValue>>),
}

/// A marked ledger item from the `redrive` index.
fn marked_from_item(item: &HashMap<String, AttributeValue>) -> Option<Marked> {
    Some(Marked {
        event: queued_from_item(item)?,
        marked_at: number(item, "redrive_at")?,
    })
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
            // A marked item is held (it has no `expires_at`, and older marks are excluded by
            // name): overwriting it would lose an event never delivered.
            .condition_expression(
                "attribute_not_exists(pk) OR (expires_at <= :now AND attribute_not_exists(redrive_at))",
            )
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
        let marked = |update: &'static str, condition: &'static str| {
            self.update_if(key, update, condition, |update| {
                update
                    .expression_attribute_values(":shard", s(redrive_shard(key)))
                    .expression_attribute_values(":at", n(at))
            })
        };
        // The expiry is held aside so TTL cannot delete the event before the sweeper sends it.
        let first = marked(
            "SET redrive_shard = :shard, redrive_at = :at, held_expires_at = expires_at \
             REMOVE expires_at",
            "attribute_exists(expires_at)",
        );
        match first
            .await
            .map_err(|e| unavailable("mark for redrive", e))?
        {
            Conditional::Updated => Ok(()),
            // Marked already (another failed send): the held expiry stays as it is.
            Conditional::Failed(Some(old)) if old.contains_key("held_expires_at") => {
                match marked(
                    "SET redrive_shard = :shard, redrive_at = :at",
                    "attribute_exists(held_expires_at)",
                )
                .await
                .map_err(|e| unavailable("mark for redrive", e))?
                {
                    Conditional::Updated => Ok(()),
                    Conditional::Failed(_) => Err(StoreError::unavailable(
                        "mark for redrive",
                        "the item changed while it was marked",
                    )),
                }
            }
            Conditional::Failed(_) => Err(StoreError::unavailable(
                "mark for redrive",
                "no ledger item with an expiry under this key",
            )),
        }
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
            .item(
                "expires_at",
                n(entry
                    .received_at
                    .saturating_add(self.quarantine_retention_seconds)),
            )
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

    async fn marked_for_redrive(
        &self,
        after: Option<&MarkCursor>,
        limit: u32,
    ) -> Result<MarkedPage, StoreError> {
        // Partitions not yet read start at their beginning; exhausted ones are skipped.
        let pending: Vec<(String, Option<(i64, String)>)> = redrive_partitions()
            .into_iter()
            .filter_map(
                |partition| match after.and_then(|cursor| cursor.position(&partition)) {
                    None => Some((partition, None)),
                    Some(None) => None,
                    Some(Some((at, key))) => Some((partition, Some((at, key.to_owned())))),
                },
            )
            .collect();
        let pages = futures_util::future::try_join_all(
            pending
                .into_iter()
                .map(|(partition, start)| self.marks_in(partition, start, limit)),
        )
        .await?;
        let mut cursor = after.cloned().unwrap_or_default();
        let mut marks = Vec::new();
        for (partition, page, position) in pages {
            marks.extend(page);
            cursor.partitions.insert(partition, position);
        }
        marks.sort_by(|a, b| (a.marked_at, &a.event.key).cmp(&(b.marked_at, &b.event.key)));
        let exhausted = redrive_partitions()
            .iter()
            .all(|p| cursor.partitions.get(p) == Some(&PartitionCursor::Exhausted));
        Ok(MarkedPage {
            marks,
            next: (!exhausted).then_some(cursor),
        })
    }

    async fn oldest_mark(&self) -> Result<Option<i64>, StoreError> {
        let firsts = futures_util::future::try_join_all(
            redrive_partitions()
                .into_iter()
                .map(|partition| self.marks_in(partition, None, 1)),
        )
        .await?;
        Ok(firsts
            .iter()
            .flat_map(|(_, page, _)| page.iter().map(|mark| mark.marked_at))
            .min())
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
        // A quarantined body is not an archived event (it is not replayed as one either).
        Ok(output
            .item()
            .filter(|item| text(item, "event_type").as_deref() != Some("quarantine"))
            .and_then(queued_from_item))
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
        // The held expiry comes back, so TTL applies again.
        let restored = self.update_if(
            key,
            "SET expires_at = held_expires_at REMOVE redrive_shard, redrive_at, held_expires_at",
            "attribute_exists(held_expires_at)",
            |update| update,
        );
        match restored
            .await
            .map_err(|e| unavailable("clear redrive mark", e))?
        {
            Conditional::Updated => Ok(()),
            // A mark made before expiries were held (it kept its `expires_at`), or no mark.
            Conditional::Failed(Some(_)) => {
                match self
                    .update_if(
                        key,
                        "REMOVE redrive_shard, redrive_at",
                        "attribute_exists(pk)",
                        |update| update,
                    )
                    .await
                    .map_err(|e| unavailable("clear redrive mark", e))?
                {
                    Conditional::Updated => Ok(()),
                    Conditional::Failed(_) => Err(StoreError::unavailable(
                        "clear redrive mark",
                        "the item went away",
                    )),
                }
            }
            Conditional::Failed(None) => Err(StoreError::unavailable(
                "clear redrive mark",
                "no ledger item under this key",
            )),
        }
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
        let body =
            encode_queued(event).map_err(|e| StoreError::unavailable("encode queued event", e))?;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| unavailable("send to queue", e))
    }

    /// `SendMessageBatch` requests of up to 10 entries and 1 MiB; an entry SQS fails, or one
    /// that cannot be encoded, fails alone.
    async fn send_batch(&self, events: &[QueuedEvent]) -> Vec<Result<(), StoreError>> {
        let mut results: Vec<Result<(), StoreError>> = Vec::with_capacity(events.len());
        let mut encoded: Vec<(usize, String)> = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            match encode_queued(event) {
                Ok(body) => {
                    encoded.push((index, body));
                    results.push(Ok(()));
                }
                Err(error) => {
                    results.push(Err(StoreError::unavailable("encode queued event", error)))
                }
            }
        }
        let sizes: Vec<usize> = encoded.iter().map(|(_, body)| body.len()).collect();
        for range in sqs_batches(&sizes) {
            let batch = &encoded[range];
            for (index, outcome) in self.send_one_batch(batch).await {
                results[index] = outcome;
            }
        }
        results
    }
}

impl SqsQueue {
    /// One `SendMessageBatch` of `(index, encoded body)` entries: each entry's outcome by index.
    async fn send_one_batch(
        &self,
        batch: &[(usize, String)],
    ) -> Vec<(usize, Result<(), StoreError>)> {
        let all_failed = |error: StoreError| {
            batch
                .iter()
                .map(|(index, _)| (*index, Err(error.clone())))
                .collect()
        };
        let entries: Result<Vec<SendMessageBatchRequestEntry>, _> = batch
            .iter()
            .map(|(index, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message_body(body)
                    .build()
            })
            .collect();
        let entries = match entries {
            Ok(entries) => entries,
            Err(error) => return all_failed(StoreError::unavailable("build batch entry", error)),
        };
        match self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(output) => {
                let succeeded: HashSet<&str> =
                    output.successful().iter().map(|entry| entry.id()).collect();
                let failed: HashMap<&str, String> = output
                    .failed()
                    .iter()
                    .map(|entry| {
                        let reason = format!(
                            "{}: {} (sender fault: {})",
                            entry.code(),
                            entry.message().unwrap_or_default(),
                            entry.sender_fault()
                        );
                        (entry.id(), reason)
                    })
                    .collect();
                let indices: Vec<usize> = batch.iter().map(|(index, _)| *index).collect();
                batch_entry_outcomes(&indices, &succeeded, &failed)
            }
            Err(error) => all_failed(unavailable("send batch to queue", error)),
        }
    }
}

/// Splits entries of these encoded sizes, in order, into `SendMessageBatch` requests: at most
/// [`SQS_BATCH_ENTRIES`] entries and [`SQS_MAX_MESSAGE_BYTES`] in all per request (each entry is
/// at most that already: [`encode_queued`] refuses larger ones).
pub fn sqs_batches(sizes: &[usize]) -> Vec<Range<usize>> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, &size) in sizes.iter().enumerate() {
        let full = index - start == SQS_BATCH_ENTRIES || bytes + size > SQS_MAX_MESSAGE_BYTES;
        if full && index > start {
            batches.push(start..index);
            (start, bytes) = (index, 0);
        }
        bytes += size;
    }
    if start < sizes.len() {
        batches.push(start..sizes.len());
    }
    batches
}

/// Each entry's outcome from a `SendMessageBatch` answer: failed if SQS listed it as failed (with
/// its reason), or did not list it at all.
fn batch_entry_outcomes(
    indices: &[usize],
    succeeded: &HashSet<&str>,
    failed: &HashMap<&str, String>,
) -> Vec<(usize, Result<(), StoreError>)> {
    indices
        .iter()
        .map(|&index| {
            let id = index.to_string();
            let outcome = match failed.get(id.as_str()) {
                Some(reason) => Err(StoreError::unavailable("send batch entry", reason)),
                None if succeeded.contains(id.as_str()) => Ok(()),
                None => Err(StoreError::unavailable(
                    "send batch entry",
                    "missing from SendMessageBatch's answer",
                )),
            };
            (index, outcome)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batches hold at most 10 entries and 1 MiB, keep the entries' order, and leave none out.
    #[test]
    fn batches_respect_the_entry_and_byte_limits() {
        assert!(sqs_batches(&[]).is_empty());
        assert_eq!(sqs_batches(&[100; 25]), vec![0..10, 10..20, 20..25]);
        let big = SQS_MAX_MESSAGE_BYTES / 3;
        assert_eq!(sqs_batches(&[big; 7]), vec![0..3, 3..6, 6..7]);
        assert_eq!(
            sqs_batches(&[SQS_MAX_MESSAGE_BYTES, 1, SQS_MAX_MESSAGE_BYTES]),
            vec![0..1, 1..2, 2..3]
        );
        let sizes: Vec<usize> = (0..200).map(|n| (n * 7_919) % 300_000 + 1).collect();
        let batches = sqs_batches(&sizes);
        let mut next = 0;
        for batch in batches {
            assert_eq!(batch.start, next, "in order, none left out");
            assert!(!batch.is_empty() && batch.len() <= SQS_BATCH_ENTRIES);
            assert!(sizes[batch.clone()].iter().sum::<usize>() <= SQS_MAX_MESSAGE_BYTES);
            next = batch.end;
        }
        assert_eq!(next, sizes.len());
    }

    /// Only the entries SQS failed (or left out of its answer) fail.
    #[test]
    fn only_failed_batch_entries_fail() {
        let succeeded = HashSet::from(["3", "5"]);
        let failed = HashMap::from([("4", "InvalidMessageContents: bad".to_owned())]);
        let outcomes = batch_entry_outcomes(&[3, 4, 5, 6], &succeeded, &failed);
        let verdicts: Vec<(usize, bool)> = outcomes
            .iter()
            .map(|(index, outcome)| (*index, outcome.is_ok()))
            .collect();
        assert_eq!(verdicts, vec![(3, true), (4, false), (5, true), (6, false)]);
        let reason = outcomes[1].1.as_ref().unwrap_err().to_string();
        assert!(reason.contains("InvalidMessageContents"), "{reason}");
    }

    /// Marks spread over the 16 shards, and every shard is listed (with the legacy partition).
    #[test]
    fn marks_spread_over_listed_shards() {
        let partitions = redrive_partitions();
        assert_eq!(partitions.len(), 1 + REDRIVE_SHARDS as usize);
        assert_eq!(partitions[0], "redrive");
        let used: HashSet<String> = (0..1_000)
            .map(|n| redrive_shard(&format!("sentMessageREAD:wamid.{n}")))
            .collect();
        assert_eq!(used.len(), REDRIVE_SHARDS as usize);
        assert!(used.iter().all(|shard| partitions.contains(shard)));
        assert_eq!(redrive_shard("k"), redrive_shard("k"), "stable");
    }
}
