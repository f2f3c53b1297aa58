//! The operator's view of a deployed stack (`wati-ingest ... --aws`): both quarantines (the
//! receiver's in the ledger table under `quarantine:` keys, the processor's in the state table
//! under `QUARANTINE#` items) and the SQS dead-letter queue.
//!
//! Listing a quarantine scans its table (no index holds quarantined items): an operator's
//! command, billed like any scan (a ledger of 7 days at 100 callbacks/s, ~60 M items, is a long
//! one: pass `--limit` and expect minutes). Nothing here is on a request path.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, QueueAttributeName};

use crate::event::log_key;
use crate::ports::{
    DeadLetter, DeadLetters, QuarantineArchive, QuarantineEntry, QuarantineStage, QuarantinedBody,
    QueuedEvent, StoreError,
};
use crate::store::aws::{bytes, n, number, s, text, unavailable};
use crate::store::sqs_envelope::decode_queued;

/// Both quarantines of a stack.
#[derive(Clone, Debug)]
pub struct AwsQuarantine {
    pub client: aws_sdk_dynamodb::Client,
    pub ledger_table: String,
    pub state_table: String,
}

const STATE_QUARANTINE_PREFIX: &str = "QUARANTINE#";

fn entry(item: &HashMap<String, AttributeValue>, key: String) -> QuarantineEntry {
    QuarantineEntry {
        key,
        reason: text(item, "reason").unwrap_or_default(),
        body: bytes(item, "body").unwrap_or_default(),
        received_at: number(item, "received_at").unwrap_or(0),
    }
}

impl AwsQuarantine {
    /// Every item of `table` the filter keeps (a full scan, page by page).
    async fn scan(
        &self,
        table: &str,
        filter: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let mut scan = self
                .client
                .scan()
                .table_name(table)
                .filter_expression(filter)
                .set_exclusive_start_key(start);
            for (name, value) in &values {
                scan = scan.expression_attribute_values(*name, value.clone());
            }
            let output = scan
                .send()
                .await
                .map_err(|e| unavailable("scan for quarantined bodies", e))?;
            items.extend(output.items().iter().cloned());
            start = output.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    async fn receiver_items(
        &self,
        range: Option<(i64, i64)>,
    ) -> Result<Vec<QuarantineEntry>, StoreError> {
        let mut values = vec![(":q", s("quarantine"))];
        let filter = match range {
            None => "event_type = :q",
            Some((since, until)) => {
                values.push((":since", n(since)));
                values.push((":until", n(until)));
                "event_type = :q AND received_at BETWEEN :since AND :until"
            }
        };
        Ok(self
            .scan(&self.ledger_table, filter, values)
            .await?
            .iter()
            .filter_map(|item| Some(entry(item, text(item, "pk")?)))
            .collect())
    }

    async fn processor_items(&self) -> Result<Vec<QuarantineEntry>, StoreError> {
        Ok(self
            .scan(
                &self.state_table,
                "begins_with(pk, :prefix) AND sk = :sk",
                vec![
                    (":prefix", s(STATE_QUARANTINE_PREFIX)),
                    (":sk", s("QUARANTINE")),
                ],
            )
            .await?
            .iter()
            .filter_map(|item| {
                let key = text(item, "pk")?
                    .strip_prefix(STATE_QUARANTINE_PREFIX)?
                    .to_owned();
                Some(entry(item, key))
            })
            .collect())
    }
}

#[async_trait]
impl QuarantineArchive for AwsQuarantine {
    async fn quarantined_under(&self, key: &str) -> Result<Vec<QuarantinedBody>, StoreError> {
        let (receiver, processor) = futures_util::join!(
            self.client
                .get_item()
                .table_name(&self.ledger_table)
                .key("pk", s(key))
                .send(),
            self.client
                .get_item()
                .table_name(&self.state_table)
                .key("pk", s(format!("{STATE_QUARANTINE_PREFIX}{key}")))
                .key("sk", s("QUARANTINE"))
                .send(),
        );
        let mut found = Vec::new();
        let receiver = receiver.map_err(|e| unavailable("read ledger", e))?;
        if let Some(item) = receiver.item() {
            if text(item, "event_type").as_deref() == Some("quarantine") {
                found.push(QuarantinedBody {
                    stage: QuarantineStage::Receiver,
                    entry: entry(item, key.to_owned()),
                });
            }
        }
        let processor = processor.map_err(|e| unavailable("read quarantine", e))?;
        if let Some(item) = processor.item() {
            found.push(QuarantinedBody {
                stage: QuarantineStage::Processor,
                entry: entry(item, key.to_owned()),
            });
        }
        Ok(found)
    }

    async fn recent_quarantined(&self, limit: usize) -> Result<Vec<QuarantinedBody>, StoreError> {
        let (receiver, processor) =
            futures_util::join!(self.receiver_items(None), self.processor_items());
        let tagged = |stage, entries: Vec<QuarantineEntry>| {
            entries
                .into_iter()
                .map(move |entry| QuarantinedBody { stage, entry })
        };
        let mut all: Vec<QuarantinedBody> = tagged(QuarantineStage::Receiver, receiver?)
            .chain(tagged(QuarantineStage::Processor, processor?))
            .collect();
        all.sort_by(|a, b| {
            (b.entry.received_at, &a.entry.key).cmp(&(a.entry.received_at, &b.entry.key))
        });
        all.truncate(limit);
        Ok(all)
    }

    async fn receiver_quarantined_between(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<QueuedEvent>, StoreError> {
        let mut events: Vec<QueuedEvent> = self
            .receiver_items(Some((since, until)))
            .await?
            .into_iter()
            .map(|entry| {
                QueuedEvent::archived(
                    entry.key,
                    entry.received_at,
                    String::from_utf8_lossy(&entry.body),
                )
            })
            .collect();
        events.sort_by(|a, b| (a.received_at, &a.key).cmp(&(b.received_at, &b.key)));
        Ok(events)
    }
}

/// The processor queue's dead-letter queue, and the queue it redrives to.
#[derive(Clone, Debug)]
pub struct SqsDeadLetters {
    pub client: aws_sdk_sqs::Client,
    pub dlq_url: String,
    pub queue_url: String,
}

/// How long a listing or a redrive keeps the messages it has seen hidden; they are made visible
/// again when it ends (or when this runs out, if it dies).
const HOLD_SECONDS: i32 = 60;
/// A receive waits this long for messages: an empty short poll does not mean an empty queue
/// (SQS samples a subset of its servers), a long poll asks all of them.
const POLL_SECONDS: i32 = 2;

/// Empty long polls in a row after which the DLQ counts as read, whatever its approximate count.
const MAX_EMPTY_POLLS: u32 = 5;

/// A message received from the DLQ: what it holds, and the handle to delete or release it.
struct Held {
    event: Option<QueuedEvent>,
    body: String,
    receive_count: i64,
    handle: String,
}

impl SqsDeadLetters {
    /// Receives until the queue shows no visible message and a long poll comes back empty,
    /// or until `enough` holds; every message seen stays hidden until [`Self::release`].
    async fn receive_all(&self, enough: impl Fn(&[Held]) -> bool) -> Result<Vec<Held>, StoreError> {
        let mut held: Vec<Held> = Vec::new();
        let mut seen = HashSet::new();
        let mut empty_polls = 0;
        loop {
            if enough(&held) {
                return Ok(held);
            }
            let output = self
                .client
                .receive_message()
                .queue_url(&self.dlq_url)
                .max_number_of_messages(10)
                .wait_time_seconds(POLL_SECONDS)
                .visibility_timeout(HOLD_SECONDS)
                .message_system_attribute_names(
                    aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
                )
                .send()
                .await
                .map_err(|e| unavailable("receive from the DLQ", e))?;
            if output.messages().is_empty() {
                empty_polls += 1;
                // SQS's count is approximate: it may lag the receives that came back empty.
                if empty_polls >= MAX_EMPTY_POLLS || self.visible().await? == 0 {
                    return Ok(held);
                }
                continue;
            }
            empty_polls = 0;
            for message in output.messages() {
                let id = message.message_id().unwrap_or_default().to_owned();
                let handle = message.receipt_handle().unwrap_or_default().to_owned();
                let body = message.body().unwrap_or_default().to_owned();
                if !seen.insert(id) {
                    continue;
                }
                let receive_count = message
                    .attributes()
                    .and_then(|attributes| {
                        attributes.get(
                            &aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
                        )
                    })
                    .and_then(|count| count.parse().ok())
                    .unwrap_or(0);
                held.push(Held {
                    event: decode_queued(&body).ok(),
                    body,
                    receive_count,
                    handle,
                });
            }
        }
    }

    /// How many messages the DLQ shows as visible (approximate, as SQS counts).
    async fn visible(&self) -> Result<i64, StoreError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.dlq_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| unavailable("read the DLQ's attributes", e))?;
        Ok(output
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|count| count.parse().ok())
            .unwrap_or(0))
    }

    /// Makes held messages visible again at once.
    async fn release(&self, held: &[&Held]) -> Result<(), StoreError> {
        for chunk in held.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(index, message)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(index.to_string())
                        .receipt_handle(&message.handle)
                        .visibility_timeout(0)
                        .build()
                        .map_err(|e| StoreError::unavailable("release a dead letter", e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.client
                .change_message_visibility_batch()
                .queue_url(&self.dlq_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| unavailable("release dead letters", e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl DeadLetters for SqsDeadLetters {
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let held = self.receive_all(|held| held.len() >= limit).await?;
        self.release(&held.iter().collect::<Vec<_>>()).await?;
        Ok(held
            .iter()
            .take(limit)
            .map(|message| match &message.event {
                Some(event) => DeadLetter {
                    key: event.key.clone(),
                    received_at: event.received_at,
                    attempts: message.receive_count,
                    reason: format!(
                        "the processor failed it {} times: its log lines for key {} say why",
                        message.receive_count,
                        log_key(&event.key)
                    ),
                },
                None => DeadLetter {
                    key: String::new(),
                    received_at: 0,
                    attempts: message.receive_count,
                    reason: format!(
                        "not a queued event ({} bytes): not ours, or damaged",
                        message.body.len()
                    ),
                },
            })
            .collect())
    }

    async fn redrive(&self, key: Option<&str>) -> Result<usize, StoreError> {
        let held = self.receive_all(|_| false).await?;
        let (chosen, others): (Vec<&Held>, Vec<&Held>) =
            held.iter().partition(|message| match key {
                None => true,
                Some(key) => message.event.as_ref().is_some_and(|e| e.key == key),
            });
        let mut moved = 0;
        for message in &chosen {
            // The body as it came: it is already an envelope SQS took.
            self.client
                .send_message()
                .queue_url(&self.queue_url)
                .message_body(&message.body)
                .send()
                .await
                .map_err(|e| unavailable("send to the queue", e))?;
            self.client
                .delete_message()
                .queue_url(&self.dlq_url)
                .receipt_handle(&message.handle)
                .send()
                .await
                .map_err(|e| unavailable("delete from the DLQ", e))?;
            moved += 1;
        }
        self.release(&others).await?;
        Ok(moved)
    }
}
