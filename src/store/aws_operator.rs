//! The operator's view of a deployed stack (`wati-ingest ... --aws`): both quarantines (the
//! receiver's in the ledger table under `quarantine:` keys, the processor's in the state table
//! under `QUARANTINE#` items) and the SQS dead-letter queue.
//!
//! Listing a quarantine scans both tables whole (no index holds quarantined items), then keeps
//! the newest `--limit`: `--limit` does not shorten the scan. An operator's command, billed like
//! any scan; its time grows with the tables (an estimate: a 7-day ledger at 100 callbacks/s holds
//! ~60 M items, some 30 GB, tens of thousands of 1 MB scan pages one after the other: an hour or
//! more). Nothing here is on a request path.
//!
//! The dead-letter queue is read page by page (10 messages a receive, long polls): a redrive of
//! everything moves each page as it is received (`SendMessageBatch`, then `DeleteMessageBatch`
//! with that receive's handles); a listing or a `--key` redrive holds what it has seen hidden
//! (see [`HOLD_SECONDS`]) so that one pass sees each message once, and releases it at the end,
//! also when a step failed.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::{ChangeMessageVisibilityBatchRequestEntry, QueueAttributeName};

use crate::event::log_key;
use crate::ports::{
    DeadLetter, DeadLetters, QuarantineArchive, QuarantineEntry, QuarantineStage, QuarantinedBody,
    QueuedEvent, StoreError,
};
use crate::store::aws::{bytes, n, number, s, sqs_batches, text, unavailable};
use crate::store::sqs_envelope::decode_queued;

/// Both quarantines of a stack.
#[derive(Clone, Debug)]
pub struct AwsQuarantine {
    pub client: aws_sdk_dynamodb::Client,
    pub ledger_table: String,
    pub state_table: String,
}

pub(crate) const STATE_QUARANTINE_PREFIX: &str = "QUARANTINE#";

fn entry(item: &HashMap<String, AttributeValue>, key: String) -> QuarantineEntry {
    QuarantineEntry {
        key,
        reason: text(item, "reason").unwrap_or_default(),
        body: bytes(item, "body").unwrap_or_default(),
        received_at: number(item, "received_at").unwrap_or(0),
    }
}

/// Every item of `table` the filter keeps (a full scan, page by page).
pub(crate) async fn scan_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    filter: &str,
    values: Vec<(&str, AttributeValue)>,
) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let mut scan = client
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
            .map_err(|e| unavailable("scan a table", e))?;
        items.extend(output.items().iter().cloned());
        start = output.last_evaluated_key().cloned();
        if start.is_none() {
            return Ok(items);
        }
    }
}

impl AwsQuarantine {
    async fn scan(
        &self,
        table: &str,
        filter: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        scan_table(&self.client, table, filter, values).await
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

/// How long the messages a listing or a `--key` redrive has looked at stay hidden from other
/// readers, so that one pass sees each once; they are made visible again when it ends (or when
/// this runs out, if it dies). At ~10 messages per 100 ms receive, 5 minutes is one pass over
/// ~30,000 messages; a message seen again ends the pass (see [`Pass`]).
const HOLD_SECONDS: i32 = 300;
/// A receive waits this long for messages: an empty short poll does not mean an empty queue
/// (SQS samples a subset of its servers), a long poll asks all of them.
const POLL_SECONDS: i32 = 2;
/// Empty long polls in a row after which the DLQ counts as read, whatever its approximate count.
const MAX_EMPTY_POLLS: u32 = 5;

/// A message received from the DLQ: what it holds, and the handle of its latest receive.
struct Held {
    id: String,
    event: Option<QueuedEvent>,
    body: String,
    receive_count: i64,
    handle: String,
}

/// One pass over the DLQ: the messages seen (each once, with its latest handle), and whether
/// the pass is over.
#[derive(Default)]
struct Pass {
    seen: HashMap<String, usize>,
    held: Vec<Held>,
    empty_polls: u32,
}

impl SqsDeadLetters {
    /// One receive of up to 10 messages, hidden for `hold` seconds.
    async fn receive(&self, hold: i32) -> Result<Vec<Held>, StoreError> {
        let count_name = aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount;
        let output = self
            .client
            .receive_message()
            .queue_url(&self.dlq_url)
            .max_number_of_messages(10)
            .wait_time_seconds(POLL_SECONDS)
            .visibility_timeout(hold)
            .message_system_attribute_names(count_name.clone())
            .send()
            .await
            .map_err(|e| unavailable("receive from the DLQ", e))?;
        Ok(output
            .messages()
            .iter()
            .map(|message| {
                let body = message.body().unwrap_or_default().to_owned();
                Held {
                    id: message.message_id().unwrap_or_default().to_owned(),
                    event: decode_queued(&body).ok(),
                    receive_count: message
                        .attributes()
                        .and_then(|attributes| attributes.get(&count_name))
                        .and_then(|count| count.parse().ok())
                        .unwrap_or(0),
                    handle: message.receipt_handle().unwrap_or_default().to_owned(),
                    body,
                }
            })
            .collect())
    }

    /// Whether a pass that just received `page` is over: after an empty long poll when the
    /// queue shows no visible message (or after [`MAX_EMPTY_POLLS`] of them: SQS's count is
    /// approximate), or when a whole page was seen before (the pass has come round).
    async fn pass_over(&self, pass: &mut Pass, page: &[Held]) -> Result<bool, StoreError> {
        if page.is_empty() {
            pass.empty_polls += 1;
            return Ok(pass.empty_polls >= MAX_EMPTY_POLLS || self.visible().await? == 0);
        }
        pass.empty_polls = 0;
        Ok(page
            .iter()
            .all(|message| pass.seen.contains_key(&message.id)))
    }

    /// Adds a page to the pass; a message seen again keeps only its newest handle (deleting or
    /// releasing with an older one may do nothing).
    fn add(pass: &mut Pass, page: Vec<Held>) {
        for message in page {
            match pass.seen.get(&message.id) {
                Some(&at) => pass.held[at].handle = message.handle,
                None => {
                    pass.seen.insert(message.id.clone(), pass.held.len());
                    pass.held.push(message);
                }
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

    /// Makes held messages visible again at once; entries SQS refuses (a hold already over, a
    /// stale handle) are logged: they come back when their hold ends.
    async fn release<'a>(
        &self,
        held: impl IntoIterator<Item = &'a Held>,
    ) -> Result<(), StoreError> {
        let held: Vec<&Held> = held.into_iter().collect();
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
            let output = self
                .client
                .change_message_visibility_batch()
                .queue_url(&self.dlq_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| unavailable("release dead letters", e))?;
            for failed in output.failed() {
                tracing::warn!(
                    code = failed.code(),
                    "a dead letter stays hidden until its hold ends ({HOLD_SECONDS} s)"
                );
            }
        }
        Ok(())
    }

    /// Moves one page of messages to the queue, in the `SendMessageBatch` requests
    /// [`sqs_batches`] cuts it into (10 dead letters of half a MiB each would exceed SQS's
    /// request size; moto does not check it): send, then `DeleteMessageBatch` of those sent,
    /// with the handles of the receive that got them. Returns how many left the DLQ; an entry
    /// that failed either step stays (or is sent again by the next redrive: applying is
    /// idempotent).
    async fn move_page(&self, page: &[&Held]) -> Result<usize, StoreError> {
        let sizes: Vec<usize> = page.iter().map(|message| message.body.len()).collect();
        let mut moved = 0;
        for range in sqs_batches(&sizes) {
            moved += self.move_batch(&page[range]).await?;
        }
        Ok(moved)
    }

    async fn move_batch(&self, page: &[&Held]) -> Result<usize, StoreError> {
        if page.is_empty() {
            return Ok(0);
        }
        let entries = page
            .iter()
            .enumerate()
            .map(|(index, message)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    // The body as it came: it is already an envelope SQS took.
                    .message_body(&message.body)
                    .build()
                    .map_err(|e| StoreError::unavailable("redrive a dead letter", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let sent = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| unavailable("send to the queue", e))?;
        let deletes = sent
            .successful()
            .iter()
            .filter_map(|ok| page.get(ok.id().parse::<usize>().ok()?))
            .enumerate()
            .map(|(index, message)| {
                aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(&message.handle)
                    .build()
                    .map_err(|e| StoreError::unavailable("delete a dead letter", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for failed in sent.failed() {
            tracing::warn!(
                code = failed.code(),
                "a dead letter could not be sent; it stays"
            );
        }
        if deletes.is_empty() {
            return Ok(0);
        }
        let deleted = self
            .client
            .delete_message_batch()
            .queue_url(&self.dlq_url)
            .set_entries(Some(deletes))
            .send()
            .await
            .map_err(|e| unavailable("delete from the DLQ", e))?;
        for failed in deleted.failed() {
            tracing::warn!(
                code = failed.code(),
                "a dead letter was sent but not deleted; a later redrive sends it again"
            );
        }
        Ok(deleted.successful().len())
    }

    /// `--key`: one pass holding every message, moving those under `key` page by page; the rest
    /// are released at the end, also when a step fails.
    async fn redrive_key(&self, key: &str) -> Result<usize, StoreError> {
        let mut pass = Pass::default();
        let mut moved = 0;
        let outcome = async {
            loop {
                let page = self.receive(HOLD_SECONDS).await?;
                let over = self.pass_over(&mut pass, &page).await?;
                let chosen: Vec<&Held> = page
                    .iter()
                    .filter(|m| m.event.as_ref().is_some_and(|e| e.key == key))
                    .collect();
                moved += self.move_page(&chosen).await?;
                let others = page
                    .into_iter()
                    .filter(|m| !m.event.as_ref().is_some_and(|e| e.key == key))
                    .collect();
                // Added even when the pass is over: their newest handles release them.
                Self::add(&mut pass, others);
                if over {
                    return Ok(());
                }
            }
        }
        .await;
        self.release(&pass.held).await?;
        outcome.map(|()| moved)
    }

    /// All: page by page, each page moved as soon as it is received (nothing held), until the
    /// queue is empty.
    async fn redrive_all(&self) -> Result<usize, StoreError> {
        let mut pass = Pass::default();
        let mut moved = 0;
        loop {
            let page = self.receive(HOLD_SECONDS).await?;
            // Nothing is added to the pass (each page leaves the DLQ), so only empty polls end it.
            if self.pass_over(&mut pass, &page).await? {
                return Ok(moved);
            }
            let page: Vec<&Held> = page.iter().collect();
            let moved_now = self.move_page(&page).await;
            match moved_now {
                Ok(count) => moved += count,
                Err(error) => {
                    // What this page could not move is visible again at once.
                    self.release(page).await?;
                    return Err(error);
                }
            }
        }
    }
}

#[async_trait]
impl DeadLetters for SqsDeadLetters {
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let mut pass = Pass::default();
        let outcome = async {
            while pass.held.len() < limit {
                let page = self.receive(HOLD_SECONDS).await?;
                let over = self.pass_over(&mut pass, &page).await?;
                Self::add(&mut pass, page);
                if over {
                    break;
                }
            }
            Ok::<(), StoreError>(())
        }
        .await;
        self.release(&pass.held).await?;
        outcome?;
        Ok(pass
            .held
            .iter()
            .take(limit)
            .map(|message| match &message.event {
                Some(event) => DeadLetter {
                    key: event.key.clone(),
                    received_at: event.received_at,
                    attempts: message.receive_count,
                    reason: format!(
                        "received {} times (the processor's attempts, and listings like this \
                         one); the processor's log lines for key {} say why it failed",
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
        match key {
            Some(key) => self.redrive_key(key).await,
            None => self.redrive_all().await,
        }
    }
}
