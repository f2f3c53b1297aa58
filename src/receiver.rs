//! The receive algorithm: one ledger write and one send, issued together, on the happy path,
//! and an answer Wati will not needlessly retry on every other path.
//!
//! ```text
//! unusable body  -> quarantine (raw body kept)                        -> Quarantined | Unavailable
//! otherwise      -> ledger write || send (at once; one write with an Intake store), then by the
//!                   ledger's answer:
//!   new                -> sent: Accepted; send failed -> redrive mark -> Accepted | Unavailable
//!   seen, same body    -> Duplicate (sent again: a crash may have lost the first send; a fact
//!                         dated by its receipt is sent once more with the first receipt)
//!   seen, other body   -> Duplicate (v2 adds fields v1 lacks: applied too; if its send failed,
//!                         recorded under its variant key and marked)
//!   ledger unavailable -> sent: a copy marked unarchived (the processor archives it) -> Accepted;
//!                         either send failed -> Unavailable (Wati retries)
//! ```

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::event::{idempotency_key, log_key, quarantine_key, variant_key, WatiEvent};
use crate::message::fact_time;
use crate::ports::{
    Intake, Ledger, LedgerEntry, MarkCursor, Marked, QuarantineEntry, Queue, QueuedEvent, Recorded,
    StoreError,
};
use crate::time::Clock;

/// How the receiver answered one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipt {
    Accepted {
        key: String,
    },
    Duplicate {
        key: String,
    },
    Quarantined {
        key: String,
    },
    /// Nothing durable could be written: Wati must retry.
    Unavailable,
}

/// Which copy of an event the receive sent first, so that it sends no copy twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SentAs {
    /// As received (this receipt's time, archived).
    Received,
    /// Dated by the key's first receipt (a duplicate the intake already knew to be one).
    FirstReceipt,
    /// Marked for the processor to archive (the intake's write failed).
    Unarchived,
}

/// The path a receipt took, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Enqueued,
    MarkedForRedrive,
    LedgerBypassed,
    DuplicateResent,
    VariantEnqueued,
    Quarantined,
    Failed,
}

#[derive(Debug, Clone)]
pub struct ReceiverSettings {
    /// How long a key is remembered; must outlive Wati's ~24 h of retries.
    pub dedup_ttl_seconds: i64,
    /// Receipt times come from here.
    pub clock: Clock,
}

impl Default for ReceiverSettings {
    fn default() -> Self {
        ReceiverSettings {
            dedup_ttl_seconds: 7 * 24 * 60 * 60,
            clock: Clock::System,
        }
    }
}

pub struct Receiver {
    ledger: Arc<dyn Ledger>,
    queue: Arc<dyn Queue>,
    /// Set when ledger and queue are one store that writes a new event to both at once.
    intake: Option<Arc<dyn Intake>>,
    settings: ReceiverSettings,
}

impl Receiver {
    pub fn new(ledger: Arc<dyn Ledger>, queue: Arc<dyn Queue>, settings: ReceiverSettings) -> Self {
        Receiver {
            ledger,
            queue,
            intake: None,
            settings,
        }
    }

    /// Over one store that is ledger and queue: a new event costs one durable write, not two.
    pub fn over_intake<S: Intake + 'static>(store: Arc<S>, settings: ReceiverSettings) -> Self {
        Receiver {
            ledger: store.clone(),
            queue: store.clone(),
            intake: Some(store),
            settings,
        }
    }

    /// Takes one authenticated webhook body.
    pub async fn receive(&self, body: &[u8]) -> (Receipt, Path) {
        let received_at = self.settings.clock.now();
        let event = match WatiEvent::parse(body) {
            Ok(event) => event,
            Err(unusable) => {
                return self
                    .quarantine(body, unusable.to_string(), received_at)
                    .await
            }
        };
        let key = idempotency_key(&event, body);
        let Ok(text) = std::str::from_utf8(body) else {
            // Unreachable: a body that parsed as JSON is UTF-8. Kept as a quarantine, not a panic.
            return self
                .quarantine(body, "body is not UTF-8".into(), received_at)
                .await;
        };
        let (queued, entry) = intake_records(
            &event,
            key.clone(),
            text,
            received_at,
            self.settings.dedup_ttl_seconds,
        );
        // A fact without a credible timestamp is dated by the first receipt, as the ledger
        // archives it (so every copy and a replay agree): a duplicate of one goes out with the
        // first receipt.
        let dated_later = |first_received_at: i64| {
            fact_time(event.timestamp, first_received_at) != fact_time(event.timestamp, received_at)
        };
        // Every delivery is sent, a duplicate again: a crash after the first delivery's ledger
        // write could have lost its send. The ledger's answer decides what else it needs.
        let (recorded, sent, sent_as) = match &self.intake {
            // One store for both: one write records a new event and queues it. The ledger's
            // answer is known before the send, so the copy sent is already the right one.
            Some(intake) => match intake.record_and_send(&entry, &queued).await {
                Ok(Recorded::New) => return (Receipt::Accepted { key }, Path::Enqueued),
                Ok(Recorded::Existing {
                    received_at: first,
                    body: original,
                }) if original == body && dated_later(first) => {
                    let copy = QueuedEvent {
                        received_at: first,
                        ..queued.clone()
                    };
                    let sent = self.queue.send(&copy).await;
                    let existing = Recorded::Existing {
                        received_at: first,
                        body: original,
                    };
                    (Ok(existing), sent, SentAs::FirstReceipt)
                }
                Ok(existing) => (
                    Ok(existing),
                    self.queue.send(&queued).await,
                    SentAs::Received,
                ),
                Err(error) => {
                    let unarchived = QueuedEvent {
                        unarchived: true,
                        ..queued.clone()
                    };
                    let sent = self.queue.send(&unarchived).await;
                    (Err(error), sent, SentAs::Unarchived)
                }
            },
            // The ledger write and the send at once: the answer waits for the slower of the
            // two, not their sum.
            None => {
                let (recorded, sent) =
                    futures_util::join!(self.ledger.record(&entry), self.queue.send(&queued));
                (recorded, sent, SentAs::Received)
            }
        };
        match recorded {
            Ok(Recorded::New) => self.settle(sent, &key, Path::Enqueued, None).await,
            Ok(Recorded::Existing { body: original, .. }) if original != body => {
                // A twin with other fields (v1 and v2 of one change share a key, and
                // `localMessageId` is only in v2): applied like any event; if its send failed
                // it is recorded under its own key and marked.
                let variant = variant_entry(entry);
                let settled = self
                    .settle(sent, &variant.key, Path::VariantEnqueued, Some(&variant))
                    .await;
                duplicate(settled, &key)
            }
            Ok(Recorded::Existing {
                received_at: first_received_at,
                ..
            }) => {
                // Sent with its own receipt (the ledger's answer came with the send): one with
                // the first goes too (rare: Wati's events carry a timestamp).
                let sent = match sent {
                    Ok(()) if sent_as == SentAs::Received && dated_later(first_received_at) => {
                        let first = QueuedEvent {
                            received_at: first_received_at,
                            ..queued
                        };
                        self.queue.send(&first).await
                    }
                    other => other,
                };
                duplicate(
                    self.settle(sent, &key, Path::DuplicateResent, None).await,
                    &key,
                )
            }
            Err(error) => {
                // Loud: until the ledger is back, nothing is deduplicated and the processor has to
                // archive these bodies itself (the `LedgerBypass` metric counts them).
                tracing::error!(
                    key = %log_key(&key),
                    %error,
                    "ledger unavailable; enqueueing without it, to be archived by the processor"
                );
                let sent = match sent {
                    // The copy sent is not archived: one that says so makes the processor
                    // archive it. Without it Wati must retry, or the archive would miss it.
                    Ok(()) if sent_as != SentAs::Unarchived => {
                        let unarchived = QueuedEvent {
                            unarchived: true,
                            ..queued
                        };
                        self.queue.send(&unarchived).await
                    }
                    other => other,
                };
                match sent {
                    Ok(()) => (Receipt::Accepted { key }, Path::LedgerBypassed),
                    Err(error) => {
                        tracing::error!(key = %log_key(&key), %error, "ledger and queue both unavailable");
                        (Receipt::Unavailable, Path::Failed)
                    }
                }
            }
        }
    }

    /// The answer once the event's send is done: accepted when it was sent; else a redrive mark
    /// in the ledger for the sweeper (recording `unrecorded` first when the ledger does not hold
    /// this body yet), and unavailable when that fails too.
    async fn settle(
        &self,
        sent: Result<(), StoreError>,
        key: &str,
        path: Path,
        unrecorded: Option<&LedgerEntry>,
    ) -> (Receipt, Path) {
        let key = key.to_owned();
        let Err(error) = sent else {
            return (Receipt::Accepted { key }, path);
        };
        tracing::warn!(key = %log_key(&key), %error, "enqueue failed; marking for redrive");
        let recorded = match unrecorded {
            Some(entry) => self.ledger.record(entry).await.map(|_| ()),
            None => Ok(()),
        };
        let marked = match recorded {
            Ok(()) => {
                self.ledger
                    .mark_for_redrive(&key, self.settings.clock.now())
                    .await
            }
            Err(error) => Err(error),
        };
        match marked {
            Ok(()) => (Receipt::Accepted { key }, Path::MarkedForRedrive),
            Err(error) => {
                tracing::error!(key = %log_key(&key), %error, "could not mark for redrive");
                (Receipt::Unavailable, Path::Failed)
            }
        }
    }

    async fn quarantine(&self, body: &[u8], reason: String, received_at: i64) -> (Receipt, Path) {
        let entry = QuarantineEntry {
            key: quarantine_key(body),
            reason,
            body: body.to_vec(),
            received_at,
        };
        match self.ledger.quarantine(&entry).await {
            Ok(()) => (Receipt::Quarantined { key: entry.key }, Path::Quarantined),
            Err(error) => {
                tracing::error!(%error, "could not quarantine an unusable body");
                (Receipt::Unavailable, Path::Failed)
            }
        }
    }
}

/// An accepted answer for a delivery the ledger knew under `key`: `Duplicate`, by the same path.
fn duplicate((receipt, path): (Receipt, Path), key: &str) -> (Receipt, Path) {
    match receipt {
        Receipt::Accepted { .. } => (
            Receipt::Duplicate {
                key: key.to_owned(),
            },
            path,
        ),
        other => (other, path),
    }
}

/// What one parsed webhook becomes: the queued event, and its ledger entry (the raw body as the
/// archive, kept `dedup_ttl_seconds` past its receipt). No I/O.
pub fn intake_records(
    event: &WatiEvent,
    key: String,
    text: &str,
    received_at: i64,
    dedup_ttl_seconds: i64,
) -> (QueuedEvent, LedgerEntry) {
    let entry = LedgerEntry {
        key: key.clone(),
        event_type: event.kind.name().to_owned(),
        body: text.as_bytes().to_vec(),
        received_at,
        expires_at: received_at.saturating_add(dedup_ttl_seconds),
    };
    let queued = QueuedEvent::archived(key, received_at, text);
    (queued, entry)
}

/// The processor's half of "every accepted body is archived": records an event the receiver
/// enqueued without a ledger entry (its write failed) with the entry the receiver would have
/// written. Idempotent: an entry already there is success, and another body already under the
/// key (a v1/v2 twin) is kept under its variant key, as on receipt.
pub async fn archive_unrecorded(
    ledger: &dyn Ledger,
    event: &WatiEvent,
    queued: &QueuedEvent,
    dedup_ttl_seconds: i64,
) -> Result<(), StoreError> {
    let (_, entry) = intake_records(
        event,
        queued.key.clone(),
        &queued.body,
        queued.received_at,
        dedup_ttl_seconds,
    );
    match ledger.record(&entry).await? {
        Recorded::Existing { body, .. } if body != entry.body => {
            ledger.record(&variant_entry(entry)).await.map(|_| ())
        }
        Recorded::Existing { .. } | Recorded::New => Ok(()),
    }
}

/// Events per [`Queue::send_batch`] call of the sweeper (SQS's `SendMessageBatch` maximum).
pub const SWEEP_BATCH: usize = 10;

/// How much one sweep may do.
#[derive(Debug, Clone)]
pub struct SweepBudget {
    /// Marks handled (redriven or failed) at most.
    pub max_marks: usize,
    /// Marks listed per partition of marks and page.
    pub page_size: u32,
    /// No page or batch starts after this instant.
    pub deadline: Option<Instant>,
    /// Batches of [`SWEEP_BATCH`] events sent (and their marks cleared) at once.
    pub concurrency: usize,
}

impl SweepBudget {
    /// At most `max_marks`, no deadline, a few batches at once.
    pub fn marks(max_marks: usize) -> Self {
        SweepBudget {
            max_marks,
            page_size: max_marks.clamp(1, 1_000) as u32,
            deadline: None,
            concurrency: 4,
        }
    }

    fn past_deadline(&self) -> bool {
        self.deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
    }
}

/// Why a sweep stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SweepStop {
    /// Every mark there was when it listed them was tried.
    #[default]
    Done,
    Deadline,
    MaxMarks,
    /// A whole page failed (the queue is likely down): the next sweep tries again, rather than
    /// this one spending its time on sends that fail.
    NothingSucceeded,
}

/// The oldest mark still waiting after a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OldestMark {
    #[default]
    NoneLeft,
    /// Marked at this time (unix seconds).
    At(i64),
    /// The ledger could not tell.
    Unknown,
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SweepReport {
    /// Sent back to the queue, mark cleared.
    pub redriven: usize,
    /// Left marked because the send failed, or because the mark could not be cleared after the
    /// send (that event is sent again next time, a duplicate the processor ignores).
    pub failed: usize,
    pub oldest_mark: OldestMark,
    pub stopped: SweepStop,
}

/// The marks could not be listed; `partial` is what the sweep did before.
#[derive(Debug, thiserror::Error)]
#[error("listing redrive marks failed after {} redriven and {} failed: {source}", .partial.redriven, .partial.failed)]
pub struct SweepError {
    pub partial: SweepReport,
    pub source: StoreError,
}

/// The sweeper: re-sends up to `limit` events whose enqueue failed and clears their marks (see
/// [`sweep_within`]).
pub async fn sweep(
    ledger: &dyn Ledger,
    queue: &dyn Queue,
    limit: u32,
) -> Result<SweepReport, SweepError> {
    sweep_within(ledger, queue, &SweepBudget::marks(limit as usize)).await
}

/// Re-sends events whose enqueue failed, page after page of marks (oldest first within each
/// partition of marks), in batches, until the marks, the budget or the time run out, and clears
/// each mark once its event is back on the queue. An event that cannot be sent, or whose mark
/// cannot be cleared, is counted and stays marked for the next sweep; the others go on. Only a
/// failure to list the marks ends the sweep with an error.
pub async fn sweep_within(
    ledger: &dyn Ledger,
    queue: &dyn Queue,
    budget: &SweepBudget,
) -> Result<SweepReport, SweepError> {
    let mut report = SweepReport::default();
    let mut cursor: Option<MarkCursor> = None;
    report.stopped = loop {
        let handled = report.redriven + report.failed;
        if handled >= budget.max_marks {
            break SweepStop::MaxMarks;
        }
        if budget.past_deadline() {
            break SweepStop::Deadline;
        }
        let page = match ledger
            .marked_for_redrive(cursor.as_ref(), budget.page_size)
            .await
        {
            Ok(page) => page,
            Err(source) => {
                report.oldest_mark = oldest_mark(ledger).await;
                return Err(SweepError {
                    partial: report,
                    source,
                });
            }
        };
        let room = budget.max_marks - handled;
        let marks = &page.marks[..page.marks.len().min(room)];
        let (redriven, failed) = redrive_marks(ledger, queue, marks, budget).await;
        report.redriven += redriven;
        report.failed += failed;
        if redriven + failed < marks.len() {
            break SweepStop::Deadline;
        }
        if redriven == 0 && failed > 0 {
            break SweepStop::NothingSucceeded;
        }
        if marks.len() < page.marks.len() {
            break SweepStop::MaxMarks;
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break SweepStop::Done,
        }
    };
    report.oldest_mark = oldest_mark(ledger).await;
    Ok(report)
}

async fn oldest_mark(ledger: &dyn Ledger) -> OldestMark {
    match ledger.oldest_mark().await {
        Ok(Some(at)) => OldestMark::At(at),
        Ok(None) => OldestMark::NoneLeft,
        Err(error) => {
            tracing::warn!(%error, "cannot read the oldest redrive mark");
            OldestMark::Unknown
        }
    }
}

/// Sends `marks` in batches, `budget.concurrency` batches at once, none started past the
/// deadline; returns (redriven, failed) over the batches that ran.
async fn redrive_marks(
    ledger: &dyn Ledger,
    queue: &dyn Queue,
    marks: &[Marked],
    budget: &SweepBudget,
) -> (usize, usize) {
    let mut waiting = marks.chunks(SWEEP_BATCH);
    let mut running = FuturesUnordered::new();
    let (mut redriven, mut failed) = (0, 0);
    loop {
        while running.len() < budget.concurrency.max(1) && !budget.past_deadline() {
            match waiting.next() {
                Some(batch) => running.push(redrive_batch(ledger, queue, batch)),
                None => break,
            }
        }
        match running.next().await {
            Some((batch_redriven, batch_failed)) => {
                redriven += batch_redriven;
                failed += batch_failed;
            }
            None => return (redriven, failed),
        }
    }
}

/// Sends one batch and clears the marks of the events that went; returns (redriven, failed).
async fn redrive_batch(ledger: &dyn Ledger, queue: &dyn Queue, batch: &[Marked]) -> (usize, usize) {
    let events: Vec<QueuedEvent> = batch.iter().map(|mark| mark.event.clone()).collect();
    let sent = queue.send_batch(&events).await;
    let cleared = join_all(
        batch
            .iter()
            .zip(sent)
            .map(|(mark, sent)| clear_if_sent(ledger, mark, sent)),
    )
    .await;
    let redriven = cleared.iter().filter(|&&done| done).count();
    (redriven, cleared.len() - redriven)
}

/// Clears the mark of an event that was sent; whether it is redriven for good.
async fn clear_if_sent(ledger: &dyn Ledger, mark: &Marked, sent: Result<(), StoreError>) -> bool {
    let key = log_key(&mark.event.key);
    if let Err(error) = sent {
        tracing::warn!(%key, %error, "redrive failed; the mark stays for the next sweep");
        return false;
    }
    match ledger.clear_redrive(&mark.event.key).await {
        Ok(()) => {
            tracing::info!(%key, "redriven");
            true
        }
        Err(error) => {
            tracing::warn!(%key, %error, "redriven but the mark stays; it will be sent again");
            false
        }
    }
}

/// The ledger entry of a variant body under an existing key: its own key, derived from its body.
fn variant_entry(entry: LedgerEntry) -> LedgerEntry {
    LedgerEntry {
        key: variant_key(&entry.key, &entry.body),
        ..entry
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use crate::event::sha256_hex;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::event::WatiEvent;
    use crate::ports::{MarkedPage, PartitionCursor};
    use crate::time::now_unix;

    const DAY: i64 = 24 * 60 * 60;

    const RECORD: &str = "record";
    const MARK: &str = "mark_for_redrive";
    const QUARANTINE: &str = "quarantine";
    const LIST_MARKED: &str = "marked_for_redrive";
    const CLEAR: &str = "clear_redrive";
    const SEND: &str = "send";
    const OLDEST: &str = "oldest_mark";
    /// The fake's one partition of marks.
    const PARTITION: &str = "memory";

    /// A read-status callback (v1) and its v2 twin: same key, but v2 also carries `localMessageId`.
    /// v1 has spaces and a trailing newline, which must reach the ledger and the queue verbatim.
    const READ_V1: &[u8] = br#"{"eventType": "sentMessageREAD", "id": "a1", "whatsappMessageId": "wamid.X", "timestamp": "1764238453"}
"#;
    const READ_V2: &[u8] = br#"{"eventType":"sentMessageREAD_v2","id":"a1","whatsappMessageId":"wamid.X","localMessageId":"l1","timestamp":"1764238453"}"#;
    const READ_KEY: &str = "sentMessageREAD:wamid.X";
    const DELIVERED: &[u8] =
        br#"{"eventType":"sentMessageDELIVERED","id":"a1","whatsappMessageId":"wamid.X"}"#;
    const REPLIED: &[u8] =
        br#"{"eventType":"sentMessageREPLIED","id":"a1","whatsappMessageId":"wamid.X"}"#;

    /// One ledger row: the entry, and when it was marked for redrive (if it is).
    #[derive(Debug, Clone)]
    struct Row {
        entry: LedgerEntry,
        redrive_at: Option<i64>,
    }

    /// A tiny in-memory ledger and queue with the embedded store's semantics, a count of calls per
    /// operation, and faults that can be switched on per operation.
    #[derive(Default)]
    struct MemoryStore {
        ledger: Mutex<HashMap<String, Row>>,
        sent: Mutex<Vec<QueuedEvent>>,
        quarantined: Mutex<Vec<QuarantineEntry>>,
        /// Operation -> the first call number (1-based, counted over the store's life) that fails.
        failing: Mutex<HashMap<&'static str, usize>>,
        /// Keys whose sends always fail (a body the queue refuses).
        refused: Mutex<HashSet<String>>,
        /// The size of each `send_batch` call.
        batches: Mutex<Vec<usize>>,
        calls: Mutex<HashMap<&'static str, usize>>,
        /// Set: a ledger write and a send each wait (up to a second) for the other to start, and
        /// fail without: only the two issued together both succeed (either order one after the
        /// other fails the first).
        record_waits_for_send: std::sync::atomic::AtomicBool,
        send_started: tokio::sync::Notify,
        record_started: tokio::sync::Notify,
    }

    impl MemoryStore {
        fn new() -> Arc<MemoryStore> {
            Arc::new(MemoryStore::default())
        }

        /// Makes every call of `operation` from now on fail.
        fn fail(&self, operation: &'static str) {
            let next = self.calls(operation) + 1;
            self.fail_from_call(operation, next);
        }

        /// Makes `operation` fail from its `call`-th call on (1-based, over the store's life).
        fn fail_from_call(&self, operation: &'static str, call: usize) {
            self.failing.lock().unwrap().insert(operation, call);
        }

        /// Makes every send of `key` fail, and only those.
        fn refuse(&self, key: &str) {
            self.refused.lock().unwrap().insert(key.to_owned());
        }

        fn heal(&self, operation: &'static str) {
            self.failing.lock().unwrap().remove(operation);
        }

        fn calls(&self, operation: &'static str) -> usize {
            self.calls
                .lock()
                .unwrap()
                .get(operation)
                .copied()
                .unwrap_or(0)
        }

        fn total_calls(&self) -> usize {
            self.calls.lock().unwrap().values().sum()
        }

        /// Counts a call and fails it when a fault is switched on for it.
        fn enter(&self, operation: &'static str) -> Result<(), StoreError> {
            let mut calls = self.calls.lock().unwrap();
            let count = calls.entry(operation).or_insert(0);
            *count += 1;
            match self.failing.lock().unwrap().get(operation) {
                Some(&from) if *count >= from => {
                    Err(StoreError::unavailable(operation, "injected fault"))
                }
                _ => Ok(()),
            }
        }

        fn sent(&self) -> Vec<QueuedEvent> {
            self.sent.lock().unwrap().clone()
        }

        fn quarantined(&self) -> Vec<QuarantineEntry> {
            self.quarantined.lock().unwrap().clone()
        }

        fn row(&self, key: &str) -> Option<Row> {
            self.ledger.lock().unwrap().get(key).cloned()
        }

        fn ledger_keys(&self) -> HashSet<String> {
            self.ledger.lock().unwrap().keys().cloned().collect()
        }

        /// Puts an entry in the ledger directly, as an earlier receipt would have.
        /// A ledger row for `key` as a first receipt at `received_at` left it (7-day window).
        fn seed_received(&self, key: &str, event_type: &str, body: &[u8], received_at: i64) {
            self.seed(LedgerEntry {
                key: key.into(),
                event_type: event_type.into(),
                body: body.to_vec(),
                received_at,
                expires_at: received_at + 7 * DAY,
            });
        }

        fn seed(&self, entry: LedgerEntry) {
            let row = Row {
                entry: entry.clone(),
                redrive_at: None,
            };
            self.ledger.lock().unwrap().insert(entry.key, row);
        }
    }

    #[async_trait]
    impl Ledger for MemoryStore {
        async fn record(&self, entry: &LedgerEntry) -> Result<Recorded, StoreError> {
            if self
                .record_waits_for_send
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                self.record_started.notify_one();
                let started = self.send_started.notified();
                tokio::time::timeout(std::time::Duration::from_secs(1), started)
                    .await
                    .map_err(|_| StoreError::unavailable(RECORD, "no send started meanwhile"))?;
            }
            self.enter(RECORD)?;
            let mut ledger = self.ledger.lock().unwrap();
            match ledger.get(&entry.key) {
                // A marked row is held, whatever its expiry (as in the embedded store).
                Some(row)
                    if row.entry.expires_at > entry.received_at || row.redrive_at.is_some() =>
                {
                    Ok(Recorded::Existing {
                        received_at: row.entry.received_at,
                        body: row.entry.body.clone(),
                    })
                }
                _ => {
                    let row = Row {
                        entry: entry.clone(),
                        redrive_at: None,
                    };
                    ledger.insert(entry.key.clone(), row);
                    Ok(Recorded::New)
                }
            }
        }

        async fn mark_for_redrive(&self, key: &str, at: i64) -> Result<(), StoreError> {
            self.enter(MARK)?;
            // Like an SQL UPDATE: marking a key that was never recorded changes nothing.
            if let Some(row) = self.ledger.lock().unwrap().get_mut(key) {
                row.redrive_at = Some(at);
            }
            Ok(())
        }

        async fn quarantine(&self, entry: &QuarantineEntry) -> Result<(), StoreError> {
            self.enter(QUARANTINE)?;
            let mut quarantined = self.quarantined.lock().unwrap();
            if !quarantined.iter().any(|kept| kept.key == entry.key) {
                quarantined.push(entry.clone());
            }
            Ok(())
        }

        async fn marked_for_redrive(
            &self,
            after: Option<&MarkCursor>,
            limit: u32,
        ) -> Result<MarkedPage, StoreError> {
            self.enter(LIST_MARKED)?;
            let start = match after.and_then(|cursor| cursor.position(PARTITION)) {
                Some(None) => return Ok(MarkedPage::default()),
                Some(Some((at, key))) => Some((at, key.to_owned())),
                None => None,
            };
            let ledger = self.ledger.lock().unwrap();
            let mut marked: Vec<Marked> = ledger
                .values()
                .filter_map(|row| {
                    Some(Marked {
                        event: queued(&row.entry),
                        marked_at: row.redrive_at?,
                    })
                })
                .filter(|mark| match &start {
                    Some((at, key)) => (mark.marked_at, &mark.event.key) > (*at, key),
                    None => true,
                })
                .collect();
            marked.sort_by(|a, b| (a.marked_at, &a.event.key).cmp(&(b.marked_at, &b.event.key)));
            let more = marked.len() > limit as usize;
            marked.truncate(limit as usize);
            let next = match marked.last() {
                Some(last) if more => Some(MarkCursor {
                    partitions: [(
                        PARTITION.to_owned(),
                        PartitionCursor::After {
                            marked_at: last.marked_at,
                            key: last.event.key.clone(),
                        },
                    )]
                    .into(),
                }),
                _ => None,
            };
            Ok(MarkedPage {
                marks: marked,
                next,
            })
        }

        async fn oldest_mark(&self) -> Result<Option<i64>, StoreError> {
            self.enter(OLDEST)?;
            let ledger = self.ledger.lock().unwrap();
            Ok(ledger.values().filter_map(|row| row.redrive_at).min())
        }

        async fn archived(&self, key: &str) -> Result<Option<QueuedEvent>, StoreError> {
            Ok(self.row(key).map(|row| queued(&row.entry)))
        }

        async fn archived_between(
            &self,
            since: i64,
            until: i64,
        ) -> Result<Vec<QueuedEvent>, StoreError> {
            let ledger = self.ledger.lock().unwrap();
            Ok(ledger
                .values()
                .filter(|row| (since..=until).contains(&row.entry.received_at))
                .map(|row| queued(&row.entry))
                .collect())
        }

        async fn clear_redrive(&self, key: &str) -> Result<(), StoreError> {
            self.enter(CLEAR)?;
            if let Some(row) = self.ledger.lock().unwrap().get_mut(key) {
                row.redrive_at = None;
            }
            Ok(())
        }
    }

    fn queued(entry: &LedgerEntry) -> QueuedEvent {
        QueuedEvent::archived(
            entry.key.clone(),
            entry.received_at,
            String::from_utf8_lossy(&entry.body),
        )
    }

    #[async_trait]
    impl Queue for MemoryStore {
        async fn send(&self, event: &QueuedEvent) -> Result<(), StoreError> {
            if self
                .record_waits_for_send
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                self.send_started.notify_one();
                let started = self.record_started.notified();
                tokio::time::timeout(std::time::Duration::from_secs(1), started)
                    .await
                    .map_err(|_| {
                        StoreError::unavailable(SEND, "no ledger write started meanwhile")
                    })?;
            }
            self.enter(SEND)?;
            if self.refused.lock().unwrap().contains(&event.key) {
                return Err(StoreError::unavailable(SEND, "refused"));
            }
            self.sent.lock().unwrap().push(event.clone());
            Ok(())
        }

        async fn send_batch(&self, events: &[QueuedEvent]) -> Vec<Result<(), StoreError>> {
            self.batches.lock().unwrap().push(events.len());
            let mut results = Vec::new();
            for event in events {
                results.push(self.send(event).await);
            }
            results
        }
    }

    fn receiver(store: &Arc<MemoryStore>) -> Receiver {
        Receiver::new(store.clone(), store.clone(), ReceiverSettings::default())
    }

    /// As the embedded store is one: ledger write and send in one call (not atomic here; the
    /// tests below only count what is sent).
    #[async_trait]
    impl crate::ports::Intake for MemoryStore {
        async fn record_and_send(
            &self,
            entry: &LedgerEntry,
            event: &QueuedEvent,
        ) -> Result<Recorded, StoreError> {
            let recorded = self.record(entry).await?;
            if recorded == Recorded::New {
                self.send(event).await?;
            }
            Ok(recorded)
        }
    }

    fn text(body: &[u8]) -> String {
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// How many events a sweep of at most `limit` marks redrove.
    async fn redriven(store: &Arc<MemoryStore>, limit: u32) -> usize {
        sweep(&**store, &**store, limit).await.unwrap().redriven
    }

    fn is_marked(store: &MemoryStore, key: &str) -> bool {
        store
            .row(key)
            .expect("key is in the ledger")
            .redrive_at
            .is_some()
    }

    /// A new event costs exactly one ledger write and one send; the ledger archives the raw body
    /// for the dedup window and the queue carries the body as Wati sent it.
    #[tokio::test]
    async fn new_event_is_recorded_once_and_sent_once() {
        let store = MemoryStore::new();
        let before = now_unix();
        let (receipt, path) = receiver(&store).receive(READ_V1).await;
        let after = now_unix();

        let key = idempotency_key(&WatiEvent::parse(READ_V1).unwrap(), READ_V1);
        assert_eq!(key, READ_KEY);
        assert_eq!(receipt, Receipt::Accepted { key: key.clone() });
        assert_eq!(path, Path::Enqueued);
        assert_eq!(store.calls(RECORD), 1);
        assert_eq!(store.calls(SEND), 1);
        assert_eq!(store.total_calls(), 2, "nothing but one write and one send");

        let row = store.row(&key).expect("recorded");
        assert_eq!(row.entry.body, READ_V1);
        assert_eq!(row.entry.event_type, "sentMessageREAD");
        assert!((before..=after).contains(&row.entry.received_at));
        assert_eq!(row.entry.expires_at, row.entry.received_at + 7 * DAY);
        assert_eq!(row.redrive_at, None);
        assert_eq!(
            store.sent(),
            vec![QueuedEvent::archived(
                key,
                row.entry.received_at,
                text(READ_V1)
            )]
        );
    }

    /// Wati's immediate retry of the same body is answered Duplicate and sent again: the first
    /// call may have crashed between its ledger write and its send.
    #[tokio::test]
    async fn an_immediate_duplicate_is_sent_again() {
        let store = MemoryStore::new();
        let receiver = receiver(&store);
        receiver.receive(READ_V1).await;
        let (receipt, path) = receiver.receive(READ_V1).await;

        assert_eq!(
            receipt,
            Receipt::Duplicate {
                key: READ_KEY.into()
            }
        );
        assert_eq!(path, Path::DuplicateResent);
        assert_eq!(store.sent().len(), 2);
        assert_eq!(store.sent()[1].body, text(READ_V1));
    }

    /// A crash after the ledger write lost the first send: the retry, however soon, re-sends.
    #[tokio::test]
    async fn a_duplicate_of_a_lost_send_is_sent_again() {
        let store = MemoryStore::new();
        let first = now_unix() - 3600;
        store.seed_received(READ_KEY, "sentMessageREAD", READ_V1, first);
        let (receipt, path) = receiver(&store).receive(READ_V1).await;

        assert_eq!(
            receipt,
            Receipt::Duplicate {
                key: READ_KEY.into()
            }
        );
        assert_eq!(path, Path::DuplicateResent);
        let sent = store.sent();
        assert_eq!(sent.len(), 1, "its timestamp dates it: one copy");
        assert_eq!(sent[0].key, READ_KEY);
        assert_eq!(sent[0].body, text(READ_V1));
    }

    /// A duplicate whose fact the receipt dates (no credible timestamp) also goes out with the
    /// first receipt, as the ledger archived it, so a replay and every copy agree on its time.
    #[tokio::test]
    async fn a_duplicate_dated_by_its_receipt_is_sent_with_the_first() {
        let store = MemoryStore::new();
        let first = now_unix() - 3600;
        let key = "sentMessageDELIVERED:wamid.X";
        store.seed_received(key, "sentMessageDELIVERED", DELIVERED, first);
        let (receipt, _) = receiver(&store).receive(DELIVERED).await;

        assert_eq!(receipt, Receipt::Duplicate { key: key.into() });
        let times: Vec<i64> = store.sent().iter().map(|q| q.received_at).collect();
        assert_eq!(times.len(), 2, "{times:?}");
        assert_eq!(times[1], first, "the last copy dated by the first receipt");
    }

    /// Through one intake store the ledger's answer comes before the send: a duplicate dated by
    /// its receipt goes out once, with the first receipt (not once with its own and once more).
    #[tokio::test]
    async fn an_intake_sends_a_receipt_dated_duplicate_once() {
        let store = MemoryStore::new();
        let first = now_unix() - 3600;
        let key = "sentMessageDELIVERED:wamid.X";
        store.seed_received(key, "sentMessageDELIVERED", DELIVERED, first);
        let receiver = Receiver::over_intake(store.clone(), ReceiverSettings::default());
        let (receipt, path) = receiver.receive(DELIVERED).await;

        assert_eq!(receipt, Receipt::Duplicate { key: key.into() });
        assert_eq!(path, Path::DuplicateResent);
        let times: Vec<i64> = store.sent().iter().map(|q| q.received_at).collect();
        assert_eq!(times, vec![first], "one copy, dated by the first receipt");
        // One dated by its timestamp: one copy as received.
        let store = MemoryStore::new();
        let receiver = Receiver::over_intake(store.clone(), ReceiverSettings::default());
        receiver.receive(READ_V1).await;
        receiver.receive(READ_V1).await;
        assert_eq!(
            store.sent().len(),
            2,
            "the first delivery and the duplicate's one copy"
        );
    }

    /// The v2 twin of a received v1 callback shares its key but adds fields: it is answered
    /// Duplicate (under the original key) and still sent, under its own variant key.
    #[tokio::test]
    async fn v2_variant_is_sent_under_its_own_key() {
        let store = MemoryStore::new();
        let receiver = receiver(&store);
        receiver.receive(READ_V1).await;
        let (receipt, path) = receiver.receive(READ_V2).await;

        assert_eq!(
            receipt,
            Receipt::Duplicate {
                key: READ_KEY.into()
            }
        );
        assert_eq!(path, Path::VariantEnqueued);
        let sent = store.sent();
        assert_eq!(sent.len(), 2);
        // Sent at once with the ledger write, before the ledger says it is a twin: under the
        // key it names (the processor uses a key for logs only).
        assert_eq!(sent[1].key, READ_KEY);
        assert_eq!(sent[1].body, text(READ_V2));
        assert_eq!(
            store.row(READ_KEY).unwrap().entry.body,
            READ_V1,
            "the original stays archived under its key"
        );
    }

    /// When the queue is down the event is still Accepted: the ledger entry is marked, and the
    /// sweeper sends it once the queue is back, clears the mark, and does not send it twice.
    #[tokio::test]
    async fn failed_send_is_marked_then_swept() {
        let store = MemoryStore::new();
        store.fail(SEND);
        let (receipt, path) = receiver(&store).receive(READ_V1).await;

        assert_eq!(
            receipt,
            Receipt::Accepted {
                key: READ_KEY.into()
            }
        );
        assert_eq!(path, Path::MarkedForRedrive);
        assert!(store.sent().is_empty());
        assert!(is_marked(&store, READ_KEY));

        store.heal(SEND);
        assert_eq!(redriven(&store, 10).await, 1);
        let received_at = store.row(READ_KEY).unwrap().entry.received_at;
        assert_eq!(
            store.sent(),
            vec![QueuedEvent::archived(READ_KEY, received_at, text(READ_V1))]
        );
        assert!(!is_marked(&store, READ_KEY));
        assert_eq!(redriven(&store, 10).await, 0);
        assert_eq!(store.sent().len(), 1);
    }

    /// If the send fails and the redrive mark cannot be written either, nothing durable promises
    /// delivery, so Wati is told to retry.
    #[tokio::test]
    async fn failed_send_and_failed_mark_is_unavailable() {
        let store = MemoryStore::new();
        store.fail(SEND);
        store.fail(MARK);
        let (receipt, path) = receiver(&store).receive(READ_V1).await;

        assert_eq!(receipt, Receipt::Unavailable);
        assert_eq!(path, Path::Failed);
        assert!(store.sent().is_empty());
        assert_eq!(store.calls(MARK), 1);
    }

    /// A ledger outage does not stop events: they are sent without dedup (the processor is
    /// idempotent) and Accepted.
    #[tokio::test]
    async fn ledger_outage_is_bypassed() {
        let store = MemoryStore::new();
        store.fail(RECORD);
        let (receipt, path) = receiver(&store).receive(READ_V1).await;

        assert_eq!(
            receipt,
            Receipt::Accepted {
                key: READ_KEY.into()
            }
        );
        assert_eq!(path, Path::LedgerBypassed);
        let sent = store.sent();
        // Sent at once with the failed ledger write, then a copy that asks to be archived.
        assert_eq!(sent.len(), 2);
        assert!(sent
            .iter()
            .all(|q| q.key == READ_KEY && q.body == text(READ_V1)));
        assert!(!sent[0].unarchived);
        assert!(sent[1].unarchived, "the processor must archive it");
        assert!(store.ledger_keys().is_empty());
    }

    /// The ledger write and the send are in flight together: a ledger that answers only once a
    /// send has started still sees a new event accepted (a receiver that waited for the ledger
    /// before sending would find it unavailable and bypass it).
    #[tokio::test]
    async fn the_ledger_write_and_the_send_are_issued_together() {
        let store = MemoryStore::new();
        store
            .record_waits_for_send
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let (receipt, path) = receiver(&store).receive(READ_V1).await;

        assert_eq!(
            receipt,
            Receipt::Accepted {
                key: READ_KEY.into()
            }
        );
        assert_eq!(path, Path::Enqueued);
        assert_eq!(store.sent().len(), 1);
        assert!(store.ledger_keys().contains(READ_KEY));
    }

    /// What the receiver could not record, the processor records with the very entry the receiver
    /// would have written; again is a no-op, and a twin's other body goes under its variant key.
    #[tokio::test]
    async fn a_bypassed_event_is_archived_as_the_receiver_would_have() {
        let store = MemoryStore::new();
        store.fail(RECORD);
        let receiver = receiver(&store);
        receiver.receive(READ_V1).await;
        receiver.receive(READ_V2).await;
        store.heal(RECORD);
        let sent: Vec<QueuedEvent> = store.sent().into_iter().filter(|q| q.unarchived).collect();
        assert_eq!(sent.len(), 2, "one copy to archive each");

        for queued in &sent {
            let event = WatiEvent::parse(queued.body.as_bytes()).unwrap();
            for _ in 0..2 {
                archive_unrecorded(&*store, &event, queued, 7 * DAY)
                    .await
                    .unwrap();
            }
        }
        let row = store.row(READ_KEY).expect("archived under its key");
        let (expected_queued, expected) = intake_records(
            &WatiEvent::parse(READ_V1).unwrap(),
            READ_KEY.into(),
            &text(READ_V1),
            sent[0].received_at,
            7 * DAY,
        );
        assert_eq!(row.entry, expected);
        assert_eq!(expected_queued.body, sent[0].body);
        let variant = store
            .row(&variant_key(READ_KEY, READ_V2))
            .expect("the v2 body under its variant key");
        assert_eq!(variant.entry.body, READ_V2);
        assert_eq!(store.ledger_keys().len(), 2);
    }

    /// Messages queued before the flag existed decode as archived; an archived event's message
    /// is what it was before the flag.
    #[test]
    fn the_archive_flag_is_backward_compatible() {
        let old: QueuedEvent =
            serde_json::from_str(r#"{"key":"k","received_at":1,"body":"{}"}"#).unwrap();
        assert_eq!(old, QueuedEvent::archived("k", 1, "{}"));
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"key":"k","received_at":1,"body":"{}"}"#
        );
        let bypassed = QueuedEvent {
            unarchived: true,
            ..old
        };
        let text = serde_json::to_string(&bypassed).unwrap();
        assert!(text.contains(r#""unarchived":true"#), "{text}");
        assert_eq!(
            serde_json::from_str::<QueuedEvent>(&text).unwrap(),
            bypassed
        );
    }

    /// With both the ledger and the queue down nothing is stored anywhere, so Wati must retry.
    #[tokio::test]
    async fn ledger_and_queue_outage_is_unavailable() {
        let store = MemoryStore::new();
        store.fail(RECORD);
        store.fail(SEND);
        let (receipt, path) = receiver(&store).receive(READ_V1).await;

        assert_eq!(receipt, Receipt::Unavailable);
        assert_eq!(path, Path::Failed);
        assert!(store.sent().is_empty());
        assert_eq!(store.calls(SEND), 1, "the queue was tried");
    }

    /// A v2 variant that cannot be sent is recorded under its variant key and marked, answered
    /// Duplicate, and the sweeper later sends the v2 body.
    #[tokio::test]
    async fn variant_with_queue_down_is_recorded_marked_and_swept() {
        let store = MemoryStore::new();
        let receiver = receiver(&store);
        receiver.receive(READ_V1).await;
        store.fail(SEND);
        let (receipt, path) = receiver.receive(READ_V2).await;

        assert_eq!(
            receipt,
            Receipt::Duplicate {
                key: READ_KEY.into()
            }
        );
        assert_eq!(path, Path::MarkedForRedrive);
        let variant = variant_key(READ_KEY, READ_V2);
        let row = store
            .row(&variant)
            .expect("variant recorded under its own key");
        assert_eq!(row.entry.body, READ_V2);
        assert!(row.redrive_at.is_some());
        assert_eq!(store.row(READ_KEY).unwrap().entry.body, READ_V1);
        assert!(
            !is_marked(&store, READ_KEY),
            "the original was sent; only the variant is marked"
        );

        store.heal(SEND);
        assert_eq!(redriven(&store, 10).await, 1);
        let sent = store.sent();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].key, variant);
        assert_eq!(sent[1].body, text(READ_V2));
        assert!(!is_marked(&store, &variant));
        assert_eq!(redriven(&store, 10).await, 0);
    }

    /// A variant that can be neither sent nor parked in the ledger (its record or its mark fails)
    /// is Unavailable, so Wati retries it.
    #[tokio::test]
    async fn variant_that_cannot_be_parked_is_unavailable() {
        // The variant's own ledger record fails (the 3rd record call; the 2nd finds the original).
        let store = MemoryStore::new();
        let receiver_a = receiver(&store);
        receiver_a.receive(READ_V1).await;
        store.fail(SEND);
        store.fail_from_call(RECORD, 3);
        assert_eq!(
            receiver_a.receive(READ_V2).await,
            (Receipt::Unavailable, Path::Failed)
        );
        assert_eq!(store.calls(RECORD), 3);
        assert_eq!(store.calls(MARK), 0);
        assert!(store.row(&variant_key(READ_KEY, READ_V2)).is_none());

        // The variant is recorded but its mark fails.
        let store = MemoryStore::new();
        let receiver_b = receiver(&store);
        receiver_b.receive(READ_V1).await;
        store.fail(SEND);
        store.fail(MARK);
        assert_eq!(
            receiver_b.receive(READ_V2).await,
            (Receipt::Unavailable, Path::Failed)
        );
        assert_eq!(store.sent().len(), 1, "only v1 was ever sent");
    }

    /// A duplicate that cannot be re-sent is marked for the sweeper and still answered Duplicate.
    #[tokio::test]
    async fn a_duplicate_with_queue_down_is_marked_then_swept() {
        let store = MemoryStore::new();
        let first = now_unix() - 3600;
        store.seed_received(READ_KEY, "sentMessageREAD", READ_V1, first);
        store.fail(SEND);
        let (receipt, path) = receiver(&store).receive(READ_V1).await;

        assert_eq!(
            receipt,
            Receipt::Duplicate {
                key: READ_KEY.into()
            }
        );
        assert_eq!(path, Path::MarkedForRedrive);
        assert!(is_marked(&store, READ_KEY));
        store.heal(SEND);
        assert_eq!(redriven(&store, 10).await, 1);
        assert_eq!(store.sent()[0].body, text(READ_V1));
    }

    /// Bodies that can never be events are Quarantined with their raw bytes, never recorded or
    /// sent; a retried unusable body lands on the same quarantine key.
    #[tokio::test]
    async fn unusable_bodies_are_quarantined_once() {
        let mut keys = HashSet::new();
        for body in [&b"not json"[..], b"[1]", br#"{"no":"type"}"#] {
            let store = MemoryStore::new();
            let receiver = receiver(&store);
            let (receipt, path) = receiver.receive(body).await;

            let key = quarantine_key(body);
            assert_eq!(receipt, Receipt::Quarantined { key: key.clone() });
            assert_eq!(path, Path::Quarantined);
            let kept = store.quarantined();
            assert_eq!(kept.len(), 1);
            assert_eq!(kept[0].key, key);
            assert_eq!(kept[0].body, body);
            assert!(!kept[0].reason.is_empty());
            assert!(store.ledger_keys().is_empty());
            assert!(store.sent().is_empty());
            assert_eq!(store.calls(RECORD) + store.calls(SEND), 0);

            let again = receiver.receive(body).await;
            assert_eq!(again, (receipt, Path::Quarantined), "same body, same key");
            assert_eq!(store.calls(QUARANTINE), 2);
            assert_eq!(store.quarantined().len(), 1);
            keys.insert(key);
        }
        assert_eq!(keys.len(), 3, "different bodies, different quarantine keys");
    }

    /// If an unusable body cannot even be quarantined, Wati is told to retry.
    #[tokio::test]
    async fn failed_quarantine_is_unavailable() {
        let store = MemoryStore::new();
        store.fail(QUARANTINE);
        let (receipt, path) = receiver(&store).receive(b"not json").await;

        assert_eq!(receipt, Receipt::Unavailable);
        assert_eq!(path, Path::Failed);
        assert!(store.quarantined().is_empty());
        assert_eq!(store.calls(QUARANTINE), 1);
    }

    /// An event type we do not know is Accepted, recorded and sent: never dropped.
    #[tokio::test]
    async fn unknown_event_type_is_accepted_and_sent() {
        let store = MemoryStore::new();
        let body: &[u8] = br#"{"eventType":"paymentCaptured","amount":5}"#;
        let (receipt, path) = receiver(&store).receive(body).await;

        let key = format!("paymentCaptured:body-sha256:{}", sha256_hex(body));
        assert_eq!(receipt, Receipt::Accepted { key: key.clone() });
        assert_eq!(path, Path::Enqueued);
        assert_eq!(store.row(&key).unwrap().entry.event_type, "paymentCaptured");
        let sent = store.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].key, key);
        assert_eq!(sent[0].body, text(body));
    }

    /// The sweeper sends at most `limit` events per run and leaves the rest marked.
    #[tokio::test]
    async fn sweep_respects_its_limit() {
        let store = MemoryStore::new();
        let receiver = receiver(&store);
        store.fail(SEND);
        for body in [READ_V1, DELIVERED, REPLIED] {
            receiver.receive(body).await;
        }
        store.heal(SEND);

        assert_eq!(redriven(&store, 2).await, 2);
        assert_eq!(store.sent().len(), 2);
        assert_eq!(redriven(&store, 2).await, 1);
        assert_eq!(redriven(&store, 2).await, 0);
        let sent: HashSet<String> = store.sent().into_iter().map(|e| e.body).collect();
        let expected: HashSet<String> = [READ_V1, DELIVERED, REPLIED].map(text).into();
        assert_eq!(sent, expected);
    }

    /// A failing sweep keeps every mark it did not clear, so nothing is lost: an event sent but
    /// not cleared is sent again next time (at least once). Only a listing failure is an error.
    #[tokio::test]
    async fn failing_sweep_keeps_marks() {
        let store = MemoryStore::new();
        let receiver = receiver(&store);
        store.fail(SEND);
        receiver.receive(READ_V1).await;
        receiver.receive(DELIVERED).await;
        let delivered_key = "sentMessageDELIVERED:wamid.X";

        // Queue still down: nothing sent, both counted as failed and still marked.
        let report = sweep(&*store, &*store, 10).await.unwrap();
        assert_eq!((report.redriven, report.failed), (0, 2));
        assert_eq!(report.stopped, SweepStop::NothingSucceeded);
        assert!(store.sent().is_empty());
        assert!(is_marked(&store, READ_KEY) && is_marked(&store, delivered_key));

        // The marks cannot be listed: an error, nothing sent.
        store.heal(SEND);
        store.fail(LIST_MARKED);
        let error = sweep(&*store, &*store, 10).await.unwrap_err();
        assert_eq!((error.partial.redriven, error.partial.failed), (0, 0));
        assert!(store.sent().is_empty());
        store.heal(LIST_MARKED);

        // Sent but the marks cannot be cleared: both stay marked, counted as failed.
        store.fail(CLEAR);
        let report = sweep(&*store, &*store, 10).await.unwrap();
        assert_eq!((report.redriven, report.failed), (0, 2));
        assert_eq!(store.sent().len(), 2);
        assert!(is_marked(&store, READ_KEY) && is_marked(&store, delivered_key));

        store.heal(CLEAR);
        assert_eq!(redriven(&store, 10).await, 2);
        assert!(!is_marked(&store, READ_KEY) && !is_marked(&store, delivered_key));
        let sent: Vec<String> = store.sent().into_iter().map(|e| e.key).collect();
        assert_eq!(sent.len(), 4, "sent again: at least once");
        assert_eq!(
            sent.into_iter().collect::<HashSet<_>>(),
            HashSet::from([READ_KEY.to_owned(), delivered_key.to_owned()])
        );
    }

    /// Marks `bodies` in order, one second apart from `first_mark`, as failed sends would.
    async fn marked_events(
        store: &Arc<MemoryStore>,
        bodies: &[&[u8]],
        first_mark: i64,
    ) -> Vec<String> {
        let receiver = receiver(store);
        store.fail(SEND);
        let mut keys = Vec::new();
        for body in bodies {
            let (receipt, path) = receiver.receive(body).await;
            assert_eq!(path, Path::MarkedForRedrive);
            let Receipt::Accepted { key } = receipt else {
                panic!("{receipt:?}")
            };
            keys.push(key);
        }
        store.heal(SEND);
        for (n, key) in keys.iter().enumerate() {
            store
                .ledger
                .lock()
                .unwrap()
                .get_mut(key)
                .unwrap()
                .redrive_at = Some(first_mark + n as i64);
        }
        keys
    }

    /// One event the queue refuses is counted and skipped: the others go, and the report names
    /// the refused one as the oldest mark left.
    #[tokio::test]
    async fn a_refused_event_is_skipped_and_the_sweep_goes_on() {
        let store = MemoryStore::new();
        let keys = marked_events(&store, &[READ_V1, DELIVERED, REPLIED], 1_000).await;
        store.refuse(&keys[0]);

        let report = sweep(&*store, &*store, 10).await.unwrap();
        assert_eq!(
            report,
            SweepReport {
                redriven: 2,
                failed: 1,
                oldest_mark: OldestMark::At(1_000),
                stopped: SweepStop::Done,
            }
        );
        assert!(is_marked(&store, &keys[0]));
        assert!(!is_marked(&store, &keys[1]) && !is_marked(&store, &keys[2]));
        let sent: HashSet<String> = store.sent().into_iter().map(|e| e.key).collect();
        assert_eq!(sent, HashSet::from([keys[1].clone(), keys[2].clone()]));
    }

    /// A mark that cannot be cleared after its send is counted as failed; the others are
    /// cleared.
    #[tokio::test]
    async fn an_uncleared_mark_is_counted_and_the_others_are_cleared() {
        let store = MemoryStore::new();
        let keys = marked_events(&store, &[READ_V1, DELIVERED, REPLIED], 1_000).await;
        store.fail_from_call(CLEAR, 3);

        let report = sweep(&*store, &*store, 10).await.unwrap();
        assert_eq!((report.redriven, report.failed), (2, 1));
        assert_eq!(store.sent().len(), 3, "all three were sent");
        assert!(is_marked(&store, &keys[2]), "the third clear failed");
        assert_eq!(report.oldest_mark, OldestMark::At(1_002));
    }

    /// Read statuses of distinct messages (`wamid.<n>`), one body each.
    fn read_statuses(range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
        range
            .map(|n| {
                format!(r#"{{"eventType":"sentMessageREAD","whatsappMessageId":"wamid.{n}"}}"#)
                    .into_bytes()
            })
            .collect()
    }

    /// Pages go on past the failures of earlier pages (a cursor, not the head of the list
    /// again), oldest first, and the sweep ends when the marks do.
    #[tokio::test]
    async fn the_sweep_pages_past_failures() {
        let store = MemoryStore::new();
        let bodies = read_statuses(0..7);
        let bodies: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        let keys = marked_events(&store, &bodies, 1_000).await;
        for refused in [&keys[0], &keys[2], &keys[4]] {
            store.refuse(refused);
        }
        let budget = SweepBudget {
            max_marks: 100,
            page_size: 2,
            deadline: None,
            concurrency: 2,
        };

        let report = sweep_within(&*store, &*store, &budget).await.unwrap();
        assert_eq!((report.redriven, report.failed), (4, 3));
        assert_eq!(report.stopped, SweepStop::Done);
        assert_eq!(report.oldest_mark, OldestMark::At(1_000));
        assert_eq!(store.calls(LIST_MARKED), 4, "pages of 2, 2, 2 and 1");
        let sent: Vec<String> = store.sent().into_iter().map(|e| e.key).collect();
        assert_eq!(
            sent,
            vec![
                keys[1].clone(),
                keys[3].clone(),
                keys[5].clone(),
                keys[6].clone()
            ]
        );
    }

    /// When a whole page fails the queue is likely down: the sweep stops rather than spend its
    /// time on sends that fail, and the next one tries again.
    #[tokio::test]
    async fn a_page_that_wholly_fails_stops_the_sweep() {
        let store = MemoryStore::new();
        let bodies = read_statuses(0..6);
        let bodies: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        marked_events(&store, &bodies, 1_000).await;
        store.fail(SEND);
        let budget = SweepBudget {
            page_size: 2,
            ..SweepBudget::marks(100)
        };

        let report = sweep_within(&*store, &*store, &budget).await.unwrap();
        assert_eq!((report.redriven, report.failed), (0, 2));
        assert_eq!(report.stopped, SweepStop::NothingSucceeded);
        assert_eq!(store.calls(LIST_MARKED), 1);
        assert_eq!(report.oldest_mark, OldestMark::At(1_000));
    }

    /// No batch starts past the deadline; the marks stay for the next sweep.
    #[tokio::test]
    async fn the_sweep_stops_at_its_deadline() {
        let store = MemoryStore::new();
        marked_events(&store, &[READ_V1, DELIVERED], 1_000).await;
        let budget = SweepBudget {
            deadline: Some(Instant::now()),
            ..SweepBudget::marks(100)
        };

        let report = sweep_within(&*store, &*store, &budget).await.unwrap();
        assert_eq!((report.redriven, report.failed), (0, 0));
        assert_eq!(report.stopped, SweepStop::Deadline);
        assert_eq!(store.calls(SEND), 2, "only the two sends that marked them");
        assert_eq!(report.oldest_mark, OldestMark::At(1_000));
    }

    /// The sweep batches its sends (the queue's `send_batch`) in groups of `SWEEP_BATCH`.
    #[tokio::test]
    async fn the_sweep_sends_in_batches() {
        let store = MemoryStore::new();
        let bodies = read_statuses(0..23);
        let bodies: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        marked_events(&store, &bodies, 1_000).await;
        let report = sweep(&*store, &*store, 100).await.unwrap();
        assert_eq!((report.redriven, report.failed), (23, 0));
        assert_eq!(report.oldest_mark, OldestMark::NoneLeft);
        assert_eq!(*store.batches.lock().unwrap(), vec![10, 10, 3]);
    }

    /// A marked entry is held past its dedup window: a new receipt of its key must not overwrite
    /// the event still waiting to be sent.
    #[tokio::test]
    async fn a_marked_entry_is_not_overwritten_after_its_window() {
        let store = MemoryStore::new();
        let old = now_unix() - 30 * DAY;
        store.seed_received(READ_KEY, "sentMessageREAD", READ_V2, old);
        store
            .ledger
            .lock()
            .unwrap()
            .get_mut(READ_KEY)
            .unwrap()
            .redrive_at = Some(old + 1);

        let (receipt, path) = receiver(&store).receive(READ_V1).await;
        assert_eq!(
            receipt,
            Receipt::Duplicate {
                key: READ_KEY.into()
            }
        );
        assert_eq!(
            path,
            Path::VariantEnqueued,
            "the new body goes under its own key"
        );
        let row = store.row(READ_KEY).unwrap();
        assert_eq!(
            (row.entry.body.as_slice(), row.redrive_at),
            (READ_V2, Some(old + 1))
        );
        assert_eq!(redriven(&store, 10).await, 1);
        assert_eq!(store.sent().last().unwrap().body, text(READ_V2));
    }
}
