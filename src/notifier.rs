//! The AWS notifier: the state table's stream in, change documents out on EventBridge.
//!
//! Each stream record of a message item (`pk = MSG#<key>, sk = MSG`) carries the item before and
//! after one write (`NEW_AND_OLD_IMAGES`). [`crate::changes::item_changes`] names the facts that
//! write changed, the same function the embedded store runs inside its transaction, so both
//! backends announce the same changes under the same ids. For a record with changes the notifier
//! reads the whole message with a strongly consistent read, builds one `message.updated` per fact
//! and one `contact.updated` for the message's (business number, contact) view, and puts them on
//! the bus (`PutEvents`, 10 entries a call, failed entries alone retried with backoff).
//!
//! Delivery is at least once: a record is acknowledged only once every document it produced is
//! on the bus; otherwise the batch answers `ReportBatchItemFailures` with the first such record's
//! sequence number and Lambda retries the shard from there. A redelivered record produces the
//! ids already sent (they are digests of what changed), so consumers deduplicate on `id`.
//! Records of other items (links, quarantine, the earlier model's aliases), `REMOVE`s and
//! records without a new image are ignored, never failed.
//!
//! - this file: configuration, the documents of one record, and one batch end to end.
//! - [`stream`]: stream records as message items, and which records are handled.
//! - [`bus`]: documents as `PutEvents` entries (size fallback) and publishing with retries.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use futures_util::StreamExt;

use crate::changes::{write_documents, ChangeDocument, FactChange};
use crate::message::{Direction, MessageRecord};
use crate::message_items::MessageItem;
use crate::metrics::{MetricLine, Unit};
use crate::ports::StoreError;
use crate::session::ContactView;
use crate::settings::{self, ConfigError};
use crate::store::dynamo_state::{DynamoState, Read};

mod bus;
mod stream;
#[cfg(test)]
mod tests;

pub use bus::*;
pub use stream::*;

/// The `Source` of every event this service puts on the bus.
pub const SOURCE: &str = "wati-ingest";
/// EventBridge's limit on one entry (`Source`, `DetailType`, `Detail`, ...): 256 KB.
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;
/// `PutEvents` takes at most this many entries a call.
pub const PUT_EVENTS_MAX_ENTRIES: usize = 10;
/// Stream records whose documents are built at once, at most.
pub const RECORD_CONCURRENCY: usize = 8;

/// The notifier's metrics (function dimension `notifier`); `template.yaml` and
/// `docs/runbook.md` name them.
pub const NOTIFIER_METRICS: [&str; 6] = [
    "Records",
    "RecordsIgnored",
    "ChangesPublished",
    "PutEventsFailures",
    "OversizedChanges",
    "RecordFailures",
];

/// The notifier's (and the window timer's) settings: `STATE_TABLE`, `CHANGE_BUS_NAME` and
/// `WINDOW_CLOSING_LEAD_MINUTES` (default 60).
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    pub state_table: String,
    pub bus_name: String,
    /// How long before a window's end its `contact.window_closing` falls due.
    pub window_lead_seconds: i64,
}

impl NotifierConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(NotifierConfig {
            state_table: settings::required("STATE_TABLE", var("STATE_TABLE").as_deref())?,
            bus_name: settings::required("CHANGE_BUS_NAME", var("CHANGE_BUS_NAME").as_deref())?,
            window_lead_seconds: settings::window_closing_lead_minutes(
                var("WINDOW_CLOSING_LEAD_MINUTES").as_deref(),
            )? * 60,
        })
    }
}

/// How hard one invocation tries to put its documents on the bus, and how early the windows it
/// records fall due.
#[derive(Debug, Clone)]
pub struct PublishSettings {
    /// Rounds of `PutEvents` for the entries still failed (the first included).
    pub attempts: u32,
    /// Wait before the second round; doubled before each next one.
    pub backoff: Duration,
    /// How long before a window's end its `contact.window_closing` falls due
    /// (`WINDOW_CLOSING_LEAD_MINUTES`): the `next_due` of the window items the notifier writes.
    pub window_lead_seconds: i64,
}

impl Default for PublishSettings {
    fn default() -> Self {
        PublishSettings {
            attempts: 4,
            backoff: Duration::from_millis(100),
            window_lead_seconds: 3_600,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Documents

/// What the notifier reads from the state.
#[async_trait]
pub trait ChangeState: Send + Sync {
    /// The whole message `key` names, every item read strongly consistent: it holds at least
    /// the write the stream record reports.
    async fn message_now(&self, key: &str) -> Result<Option<MessageRecord>, StoreError>;
    /// Every message of the contact (by either name); may miss or hold stale copies of recent
    /// writes (the indexes are eventually consistent).
    async fn contact_messages(&self, contact: &str) -> Result<Vec<MessageRecord>, StoreError>;
    /// Records that the window of `contact` on business number `channel` (`""`: the default)
    /// ends at `window_end` or later, its closing due `lead_seconds` before
    /// ([`crate::windows`]); an equal or newer end already recorded is kept.
    async fn track_window(
        &self,
        contact: &str,
        channel: &str,
        window_end: i64,
        lead_seconds: i64,
    ) -> Result<(), StoreError>;
}

#[async_trait]
impl ChangeState for DynamoState {
    async fn message_now(&self, key: &str) -> Result<Option<MessageRecord>, StoreError> {
        self.message_read(key, Read::Strong).await
    }

    async fn contact_messages(&self, contact: &str) -> Result<Vec<MessageRecord>, StoreError> {
        DynamoState::contact_messages(self, contact).await
    }

    async fn track_window(
        &self,
        contact: &str,
        channel: &str,
        window_end: i64,
        lead_seconds: i64,
    ) -> Result<(), StoreError> {
        DynamoState::track_window(self, contact, channel, window_end, lead_seconds).await
    }
}

/// The contact of `message` at `now`, every business number's view: the contact's messages as
/// the index found them, with `message` (read consistently) replacing any copy of it.
pub fn contact_view_of(
    message: &MessageRecord,
    mut contact_messages: Vec<MessageRecord>,
    now: i64,
) -> Option<ContactView> {
    contact_messages.retain(|m| !m.all_ids().any(|id| message.all_ids().any(|own| own == id)));
    contact_messages.push(message.clone());
    ContactView::from_messages(&contact_messages, now)
}

/// The documents of one message item's write: one `message.updated` per changed fact, and a
/// `contact.updated` for each of its contact's business numbers (none when the message names no
/// contact yet). A customer's message also records its contact's window end for the window
/// timer (`lead_seconds`: how early its closing falls due): only a customer's message moves a
/// window, and the view counts it (read consistently) whatever the indexes have seen.
pub async fn documents_for(
    state: &dyn ChangeState,
    after: &MessageItem,
    changes: &[FactChange],
    now: i64,
    lead_seconds: i64,
    caused_by: Option<&str>,
) -> Result<Vec<ChangeDocument>, StoreError> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let message = state
        .message_now(&after.key)
        .await?
        .unwrap_or_else(|| after.record.clone());
    let contact = match message.contact() {
        Some(name) => contact_view_of(&message, state.contact_messages(name).await?, now),
        None => None,
    };
    // Only a customer's message moves a window: record its new end for the window timer.
    if let Some(view) = contact.as_ref().and_then(|c| c.view_of(&message)) {
        let name = view.wa_id.as_deref().or(view.bsuid.as_deref());
        if let (Some(Direction::Inbound), Some(name), Some(end)) =
            (message.direction, name, view.window_expires_at.0)
        {
            let channel = view.channel_id.as_deref().unwrap_or_default();
            state.track_window(name, channel, end, lead_seconds).await?;
        }
    }
    Ok(write_documents(
        &after.key,
        changes,
        &message,
        contact.as_ref(),
        now,
        caused_by,
    ))
}

/// The documents of one stream record (none for a record of another item).
async fn record_documents(
    state: &dyn ChangeState,
    change: &StreamChange,
    now: i64,
    lead_seconds: i64,
) -> Result<Vec<ChangeDocument>, StoreError> {
    match change {
        StreamChange::Message {
            after, caused_by, ..
        } => {
            let changes = change.changes();
            documents_for(
                state,
                after,
                &changes,
                now,
                lead_seconds,
                caused_by.as_deref(),
            )
            .await
        }
        StreamChange::Ignored(_) => Ok(Vec::new()),
    }
}

// ---------------------------------------------------------------------------------------------
// One batch

/// What one stream batch did: the answer for Lambda, its metrics, and the ids put on the bus.
#[derive(Debug)]
pub struct NotifierReport {
    pub response: DynamoDbEventResponse,
    pub metrics: MetricLine,
    pub published_ids: Vec<String>,
}

/// Handles one DynamoDB stream batch: documents for every message item's write, on the bus, and
/// `ReportBatchItemFailures` naming the first record whose documents could not all be built or
/// put (Lambda retries the shard from there; records before it are done).
pub async fn handle_stream_batch(
    state: &dyn ChangeState,
    bus: &dyn ChangeBus,
    event: Event,
    settings: &PublishSettings,
    now: i64,
) -> NotifierReport {
    let records = event.records;
    let changes: Vec<StreamChange> = records.iter().map(classify).collect();
    let ignored = changes
        .iter()
        .filter(|c| matches!(c, StreamChange::Ignored(_)))
        .count();
    // Collected first: a stream over a closure is not `Send` for every lifetime (rustc), and a
    // batch's future must be spawnable.
    let reads: Vec<_> = changes
        .iter()
        .map(|change| record_documents(state, change, now, settings.window_lead_seconds))
        .collect();
    let built: Vec<Result<Vec<ChangeDocument>, StoreError>> = futures_util::stream::iter(reads)
        .buffered(RECORD_CONCURRENCY)
        .collect()
        .await;
    // Up to the first record that could not be read: later ones are retried with it.
    let mut first_failed: Option<usize> = None;
    let mut owners: BTreeMap<String, usize> = BTreeMap::new();
    let mut entries: Vec<BusEntry> = Vec::new();
    let mut oversized = 0usize;
    for (n, documents) in built.into_iter().enumerate() {
        let documents = match documents {
            Ok(documents) => documents,
            Err(error) => {
                tracing::warn!(%error, record = n, "cannot read the state for a stream record");
                first_failed = Some(n);
                break;
            }
        };
        for document in documents {
            // One entry per id in a batch: the earliest record owns it.
            if owners.contains_key(&document.id) {
                continue;
            }
            owners.insert(document.id.clone(), n);
            let (entry, slimmed) = entry_for(&document);
            if slimmed {
                oversized += 1;
                tracing::warn!(id = %entry.id, "change document over 256 KB: sent with an href");
            }
            entries.push(entry);
        }
    }
    let published = publish(bus, &entries, settings).await;
    let unpublished = published
        .failed
        .iter()
        .map(|&n| owners[&entries[n].id])
        .min();
    let first_failed = match (first_failed, unpublished) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let failed_ids: std::collections::BTreeSet<usize> = published.failed.iter().copied().collect();
    let published_ids: Vec<String> = entries
        .iter()
        .enumerate()
        .filter(|(n, _)| !failed_ids.contains(n))
        .map(|(_, e)| e.id.clone())
        .collect();
    let mut response = DynamoDbEventResponse::default();
    if let Some(n) = first_failed {
        let mut failure = DynamoDbBatchItemFailure::default();
        // No sequence number (never seen): an empty identifier fails the whole batch, which
        // keeps the record.
        failure.item_identifier = Some(
            records[n]
                .change
                .sequence_number
                .clone()
                .unwrap_or_default(),
        );
        response.batch_item_failures.push(failure);
    }
    let [records_metric, ignored_metric, published_metric, failures_metric, oversized_metric, record_failures] =
        NOTIFIER_METRICS;
    let metrics = MetricLine::new("notifier")
        .metric(records_metric, Unit::Count, records.len() as f64)
        .metric(ignored_metric, Unit::Count, ignored as f64)
        .metric(published_metric, Unit::Count, published.published as f64)
        .metric(
            failures_metric,
            Unit::Count,
            published.entry_failures as f64,
        )
        .metric(oversized_metric, Unit::Count, oversized as f64)
        .metric(
            record_failures,
            Unit::Count,
            first_failed.map_or(0, |n| records.len() - n) as f64,
        );
    NotifierReport {
        response,
        metrics,
        published_ids,
    }
}
