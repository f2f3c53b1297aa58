//! The small traits the pipeline runs over, and the records that cross them.
//!
//! The receiver needs a [`Ledger`] (idempotency record + raw archive) and a [`Queue`] (or one
//! [`Intake`] that is both and writes a new event to both at once); the
//! processor and the read API need a [`StateStore`]. The embedded SQLite store implements all
//! three, and the [`ChangeFeed`] of its outbox; the AWS adapters implement them on DynamoDB and
//! SQS.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::contact_page::{MessagePage, Position};
use crate::erasure::{ContactIdentifiers, Erased};
use crate::message::MessageRecord;
use crate::message_items::Contradiction;
use crate::session::ContactView;

/// Why a store could not do what was asked. The pipeline only needs to know that it failed and
/// whether retrying may help; the cause is kept for logs.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{operation} failed: {reason}")]
    Unavailable {
        operation: &'static str,
        reason: String,
    },
    #[error("{operation} found a corrupt record: {reason}")]
    Corrupt {
        operation: &'static str,
        reason: String,
    },
}

impl StoreError {
    pub fn unavailable(operation: &'static str, reason: impl ToString) -> Self {
        StoreError::Unavailable {
            operation,
            reason: reason.to_string(),
        }
    }
}

/// An accepted event's idempotency record, holding the raw body as the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub key: String,
    pub event_type: String,
    pub body: Vec<u8>,
    pub received_at: i64,
    /// After this instant the key may be accepted again; must outlive Wati's ~24 h of retries.
    pub expires_at: i64,
}

/// What recording a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    New,
    /// Seen before: when it was first received, and the body it was first received with.
    Existing {
        received_at: i64,
        body: Vec<u8>,
    },
}

/// A body that can never become an event, kept for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineEntry {
    pub key: String,
    pub reason: String,
    pub body: Vec<u8>,
    pub received_at: i64,
}

#[async_trait]
pub trait Ledger: Send + Sync {
    /// Records the entry unless its key is already recorded and unexpired. One conditional write.
    async fn record(&self, entry: &LedgerEntry) -> Result<Recorded, StoreError>;
    /// Marks a recorded key whose enqueue failed, so the sweeper re-sends it. Until the mark is
    /// cleared the entry is held: it does not expire, and [`Ledger::record`] counts its key as
    /// recorded even past `expires_at` (a new event must not overwrite one never delivered).
    async fn mark_for_redrive(&self, key: &str, at: i64) -> Result<(), StoreError>;
    async fn quarantine(&self, entry: &QuarantineEntry) -> Result<(), StoreError>;
    /// The next marks after `after` (`None`: from the start): at most `limit` from each
    /// partition of marks (one in SQLite, the index shards on DynamoDB), oldest mark first
    /// within a partition, and where the listing goes on from.
    async fn marked_for_redrive(
        &self,
        after: Option<&MarkCursor>,
        limit: u32,
    ) -> Result<MarkedPage, StoreError>;
    /// When the oldest remaining mark was made (unix seconds), if any mark remains.
    async fn oldest_mark(&self) -> Result<Option<i64>, StoreError>;
    /// Clears the redrive mark once the event is back on the queue; the entry expires again at
    /// its `expires_at`.
    async fn clear_redrive(&self, key: &str) -> Result<(), StoreError>;
    /// The archived event under `key`, if the ledger still holds it.
    async fn archived(&self, key: &str) -> Result<Option<QueuedEvent>, StoreError>;
    /// Every archived event first received in `since..=until` (unix seconds), oldest first;
    /// quarantined bodies excluded. For replays.
    async fn archived_between(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<QueuedEvent>, StoreError>;
}

/// An event waiting for the sweeper, and when its enqueue failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marked {
    pub event: QueuedEvent,
    pub marked_at: i64,
}

/// One page of redrive marks, and where the next page starts (`None`: no marks follow).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MarkedPage {
    pub marks: Vec<Marked>,
    pub next: Option<MarkCursor>,
}

/// Where a listing of redrive marks goes on from: for each partition of marks read so far, the
/// last mark read from it, or that it has no more. Partitions not named have not been read yet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MarkCursor {
    pub partitions: BTreeMap<String, PartitionCursor>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionCursor {
    /// Marks after this one (by mark time, then key) come next.
    After {
        marked_at: i64,
        key: String,
    },
    Exhausted,
}

impl MarkCursor {
    /// Where `partition` goes on from: `None` to start at its beginning, `Some(None)` when it is
    /// exhausted, `Some(Some((marked_at, key)))` to go on after that mark.
    pub fn position(&self, partition: &str) -> Option<Option<(i64, &str)>> {
        match self.partitions.get(partition)? {
            PartitionCursor::After { marked_at, key } => Some(Some((*marked_at, key.as_str()))),
            PartitionCursor::Exhausted => Some(None),
        }
    }
}

/// What travels on the queue from the receiver to the processor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedEvent {
    pub key: String,
    pub received_at: i64,
    /// The raw body, as Wati sent it.
    pub body: String,
    /// The receiver's ledger write failed and it enqueued the event anyway: the processor
    /// records the body in the ledger itself, so that every accepted event ends up archived.
    /// Left out of the message when false, so messages queued before it existed decode as
    /// archived, and archived events are sent as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unarchived: bool,
}

impl QueuedEvent {
    /// An event whose body the ledger holds.
    pub fn archived(key: impl Into<String>, received_at: i64, body: impl Into<String>) -> Self {
        QueuedEvent {
            key: key.into(),
            received_at,
            body: body.into(),
            unarchived: false,
        }
    }
}

#[async_trait]
pub trait Queue: Send + Sync {
    async fn send(&self, event: &QueuedEvent) -> Result<(), StoreError>;

    /// Sends several events; one result per event, in order, so one refused event fails alone.
    /// One by one unless the queue can do better (SQS: `SendMessageBatch`).
    async fn send_batch(&self, events: &[QueuedEvent]) -> Vec<Result<(), StoreError>> {
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            results.push(self.send(event).await);
        }
        results
    }
}

/// A store that is both the ledger and the queue, and can record a new event and enqueue it in
/// one durable write (the embedded store: one transaction, one fsync instead of two).
#[async_trait]
pub trait Intake: Ledger + Queue {
    /// [`Ledger::record`], and when the entry is new, [`Queue::send`] of `event` in the same
    /// write; nothing is enqueued for an existing key.
    async fn record_and_send(
        &self,
        entry: &LedgerEntry,
        event: &QueuedEvent,
    ) -> Result<Recorded, StoreError>;
}

/// What merging one event's facts did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    Merged,
    /// The event contradicts an id or contact name stored for its message: nothing of it was
    /// written (the processor quarantines it).
    Refused(Contradiction),
}

#[async_trait]
pub trait StateStore: Send + Sync {
    /// Merges one event's facts into its message, all or nothing. Idempotent and
    /// order-independent; an event that contradicts stored ids or contact names is refused.
    /// `caused_by`: the correlation id of the webhook that stated the facts, for the change
    /// documents the write announces.
    async fn apply(
        &self,
        facts: &MessageRecord,
        caused_by: Option<&str>,
    ) -> Result<MergeOutcome, StoreError>;
    /// Keeps an event that was accepted but can never be applied, with its body, under its key;
    /// when the key already holds another body (a v1/v2 twin, sent under the key its body names),
    /// under [`crate::event::variant_key`] of it. Idempotent: the same body lands on one record.
    async fn quarantine(&self, event: &QueuedEvent, reason: &str) -> Result<(), StoreError>;
    /// What [`StateStore::quarantine`] kept under `key`, body included.
    async fn quarantined(&self, key: &str) -> Result<Option<QuarantineEntry>, StoreError>;
    /// A message by Wati's id, the `whatsappMessageId` or the `localMessageId`.
    async fn message(&self, id: &str) -> Result<Option<MessageRecord>, StoreError>;
    /// A contact by phone number or BSUID, as seen at `now`.
    async fn contact(&self, contact: &str, now: i64) -> Result<Option<ContactView>, StoreError>;
    /// A page of a contact's messages (by either name), newest sent first, after `before`
    /// ([`crate::contact_page`]).
    async fn contact_messages_page(
        &self,
        contact: &str,
        before: Option<&Position>,
        limit: usize,
    ) -> Result<MessagePage, StoreError>;
    /// Whether the store can take writes now (the embedded store: a real write in each of its
    /// databases, the ledger and queue tables included; DynamoDB: the state table answers).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Which stage kept a quarantined body: the receiver (it never parsed as an event; the ledger
/// holds it under a `quarantine:` key) or the processor (accepted, archived, never applicable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineStage {
    Receiver,
    Processor,
}

impl QuarantineStage {
    pub fn name(self) -> &'static str {
        match self {
            QuarantineStage::Receiver => "receiver",
            QuarantineStage::Processor => "processor",
        }
    }
}

/// A quarantined body and the stage that kept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedBody {
    pub stage: QuarantineStage,
    pub entry: QuarantineEntry,
}

/// The operator's view of both quarantines (`wati-ingest inspect`, `quarantine`, `replay
/// --include-quarantined`). Not on any request path.
#[async_trait]
pub trait QuarantineArchive: Send + Sync {
    /// Everything either stage kept under `key`.
    async fn quarantined_under(&self, key: &str) -> Result<Vec<QuarantinedBody>, StoreError>;
    /// The newest `limit` quarantined bodies of both stages, newest first.
    async fn recent_quarantined(&self, limit: usize) -> Result<Vec<QuarantinedBody>, StoreError>;
    /// The bodies the receiver quarantined in `since..=until` (unix seconds), oldest first, as
    /// events to replay under their quarantine keys (the processor's quarantined events are in
    /// the ledger's archive already).
    async fn receiver_quarantined_between(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<QueuedEvent>, StoreError>;
}

/// An event the processor gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub key: String,
    pub received_at: i64,
    /// How many times it was tried.
    pub attempts: i64,
    /// Why: the last error locally; on SQS (which keeps none) where to read it.
    pub reason: String,
}

/// The dead-letter queue, for the operator (`dead-letters`, `redrive-dlq`).
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// At most `limit` dead letters (all of them when there are fewer), without consuming them.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;
    /// Moves the dead letters under `key` (`None`: all) back to the queue; returns how many.
    async fn redrive(&self, key: Option<&str>) -> Result<usize, StoreError>;
}

/// One change document as the feed serves it: its place in the feed and its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    pub seq: i64,
    pub document: String,
}

/// The pull feed of change documents (`GET /v1/changes`): the embedded store's outbox. On AWS
/// changes go out through EventBridge instead (`docs/changes.md`).
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// Up to `limit` documents recorded after `after` (0: from the beginning), oldest first.
    async fn changes_after(&self, after: i64, limit: usize) -> Result<Vec<FeedEntry>, StoreError>;
    /// The position of the last document recorded (0: none yet), for a reader that wants only
    /// what comes next.
    async fn last_seq(&self) -> Result<i64, StoreError>;
}

/// Erasing one contact ([`crate::erasure`]): the operator's `erase-contact`.
#[async_trait]
pub trait Erasure: Send + Sync {
    /// The contact's names (linked phone number and BSUIDs) and its messages' ids, from state.
    async fn identify(&self, contact: &str) -> Result<ContactIdentifiers, StoreError>;
    /// Deletes every archived, quarantined, queued or dead-lettered body that mentions them.
    async fn erase_bodies(&self, ids: &ContactIdentifiers) -> Result<Erased, StoreError>;
    /// Deletes the contact's state: message items, id aliases, contact links, window timers and
    /// (locally) the change documents about it.
    async fn erase_state(&self, ids: &ContactIdentifiers) -> Result<Erased, StoreError>;
}

/// How many events of each type were received since a time (the console's "today").
#[async_trait]
pub trait EventCounts: Send + Sync {
    /// `(eventType label, count)` of the events first received at or after `since`, by label.
    async fn counts_since(&self, since: i64) -> Result<Vec<(String, u64)>, StoreError>;
}

/// What the console's intake view reads: the quarantines and the counts.
pub trait IntakeView: QuarantineArchive + EventCounts {}

impl<T: QuarantineArchive + EventCounts> IntakeView for T {}
