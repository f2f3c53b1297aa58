//! Applying queued events to the state store, and the local queue consumer that drives it.

use std::sync::Arc;
use std::time::Duration;

use crate::event::{log_key, WatiEvent};
use crate::message::{MessageRecord, MAX_ID_BYTES};
use crate::ports::{Ledger, MergeOutcome, QueuedEvent, StateStore, StoreError};
use crate::receiver::{archive_unrecorded, sweep};
use crate::store::embedded::{Delivery, EmbeddedStore};

/// What applying one queued event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The event's facts were merged into its message.
    Message { kind: String },
    /// Not about a message (template lifecycle, unknown types): the ledger's archive is its record.
    Archived { kind: String },
    /// Can never be applied; recorded and acknowledged rather than retried forever.
    Quarantined { reason: String },
}

/// Why processing one event failed; either way it is retried.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    State(StoreError),
    /// The receiver could not record it, and neither could the processor yet.
    #[error("cannot archive an event the receiver could not record: {0}")]
    Archive(StoreError),
}

/// The ledger the processor archives into: where events the receiver enqueued without recording
/// (its ledger write failed) get the entry the receiver would have written.
#[derive(Clone)]
pub struct Archive {
    ledger: Arc<dyn Ledger>,
    dedup_ttl_seconds: i64,
}

impl Archive {
    pub fn new(ledger: Arc<dyn Ledger>, dedup_ttl_seconds: i64) -> Self {
        Archive {
            ledger,
            dedup_ttl_seconds,
        }
    }
}

/// Processes one queued event: applies it to `state` and, when the receiver could not record it,
/// records it in the ledger, so that every accepted event's body is archived (for `inspect` and
/// `replay`) whatever its kind. Archiving comes after applying: a ledger that stays broken delays
/// the archive, not the state. `Err` means a transient failure worth retrying.
pub async fn process(
    state: &dyn StateStore,
    archive: &Archive,
    queued: &QueuedEvent,
) -> Result<Applied, ProcessError> {
    let event = match WatiEvent::parse(queued.body.as_bytes()) {
        Ok(event) => event,
        // Unreachable for what the receiver accepted; the quarantine keeps the body.
        Err(unusable) => {
            return quarantine(state, queued, unusable.to_string())
                .await
                .map_err(ProcessError::State)
        }
    };
    let applied = apply_event(state, queued, &event)
        .await
        .map_err(ProcessError::State)?;
    if queued.unarchived {
        let key = log_key(&queued.key);
        let archived = archive_unrecorded(
            archive.ledger.as_ref(),
            &event,
            queued,
            archive.dedup_ttl_seconds,
        )
        .await;
        if let Err(error) = archived {
            // Loud: the event is applied but still not archived; it is retried until it is.
            tracing::error!(
                %key,
                %error,
                "cannot archive an event the receiver could not record; will be retried"
            );
            return Err(ProcessError::Archive(error));
        }
        tracing::info!(%key, "archived an event the receiver could not record");
    }
    Ok(applied)
}

/// Applies one queued event to the state (no archiving: see [`process`]). `Err` means a
/// transient failure worth retrying.
pub async fn apply(state: &dyn StateStore, queued: &QueuedEvent) -> Result<Applied, StoreError> {
    match WatiEvent::parse(queued.body.as_bytes()) {
        Ok(event) => apply_event(state, queued, &event).await,
        Err(unusable) => quarantine(state, queued, unusable.to_string()).await,
    }
}

async fn apply_event(
    state: &dyn StateStore,
    queued: &QueuedEvent,
    event: &WatiEvent,
) -> Result<Applied, StoreError> {
    let kind = event.kind.label().to_owned();
    match MessageRecord::from_event(event, queued.received_at) {
        Some(facts) if facts.oversized_id().is_some() => {
            let reason = format!("{kind} has an id longer than {MAX_ID_BYTES} bytes");
            quarantine(state, queued, reason).await
        }
        Some(facts) => match state.apply(&facts, Some(&log_key(&queued.key))).await? {
            MergeOutcome::Merged => Ok(Applied::Message { kind }),
            MergeOutcome::Refused(contradiction) => {
                let reason = format!("{kind} contradicts the stored message: {contradiction}");
                quarantine(state, queued, reason).await
            }
        },
        None if event.kind.is_message_event() => {
            quarantine(state, queued, format!("{kind} names no message id")).await
        }
        None => Ok(Applied::Archived { kind }),
    }
}

async fn quarantine(
    state: &dyn StateStore,
    queued: &QueuedEvent,
    reason: String,
) -> Result<Applied, StoreError> {
    state.quarantine(queued, &reason).await?;
    Ok(Applied::Quarantined { reason })
}

/// What processing one queued event came to, as every consumer (the local queue, the SQS batch)
/// acts on it, logs it and counts it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Applied {
        kind: String,
        /// Seconds from the event's first receipt to now.
        lag_s: i64,
    },
    Archived {
        kind: String,
    },
    Quarantined,
    /// A transient failure: the event is retried (and dead-lettered after too many attempts).
    Failed {
        error: String,
    },
    /// Applied, but the receiver could not record it and neither could the processor: retried.
    ArchiveFailed {
        error: String,
    },
}

impl Outcome {
    pub fn failed(&self) -> bool {
        matches!(self, Outcome::Failed { .. } | Outcome::ArchiveFailed { .. })
    }
}

/// Processes one queued event ([`process`]) and logs the outcome, one line in one shape for
/// every consumer.
pub async fn process_and_log(
    state: &dyn StateStore,
    archive: &Archive,
    queued: &QueuedEvent,
) -> Outcome {
    let started = std::time::Instant::now();
    let outcome = process(state, archive, queued).await;
    let latency_us = started.elapsed().as_micros() as u64;
    let lag_s = crate::time::now_unix().saturating_sub(queued.received_at);
    let key = log_key(&queued.key);
    let key = key.as_str();
    match outcome {
        Ok(Applied::Message { kind }) => {
            tracing::info!(
                key,
                kind,
                outcome = "applied",
                latency_us,
                lag_s,
                "processed"
            );
            Outcome::Applied { kind, lag_s }
        }
        Ok(Applied::Archived { kind }) => {
            tracing::info!(key, kind, outcome = "archived", latency_us, "processed");
            Outcome::Archived { kind }
        }
        Ok(Applied::Quarantined { reason }) => {
            tracing::warn!(key, reason, outcome = "quarantined", "processed");
            Outcome::Quarantined
        }
        // Logged by `process`.
        Err(ProcessError::Archive(error)) => Outcome::ArchiveFailed {
            error: error.to_string(),
        },
        Err(ProcessError::State(error)) => {
            tracing::warn!(key, %error, latency_us, "apply failed; will be retried");
            Outcome::Failed {
                error: error.to_string(),
            }
        }
    }
}

/// How the local processor treats failures, mirroring an SQS queue with a redrive policy.
#[derive(Debug, Clone)]
pub struct LocalProcessorSettings {
    pub batch_size: u32,
    /// How long a received event stays hidden before another receive may take it.
    pub visibility_ms: i64,
    /// Attempts before an event moves to the dead-letter table (SQS's `maxReceiveCount`).
    pub max_attempts: u32,
    /// How often to look at the queue when nothing woke us.
    pub idle_poll: Duration,
    /// How often to re-send events whose enqueue failed (the sweeper).
    pub sweep_every: Duration,
    /// The dedup window of the entries the processor archives (the receiver's).
    pub dedup_ttl_seconds: i64,
}

impl Default for LocalProcessorSettings {
    fn default() -> Self {
        LocalProcessorSettings {
            batch_size: 64,
            visibility_ms: 30_000,
            max_attempts: 8,
            idle_poll: Duration::from_millis(500),
            sweep_every: Duration::from_secs(5),
            dedup_ttl_seconds: crate::settings::DEFAULT_DEDUP_TTL_DAYS
                * crate::settings::SECONDS_PER_DAY,
        }
    }
}

/// Consumes the embedded queue forever: receive a batch, process its events on `state` (the store
/// itself, or a wrapper around it) and the store's ledger concurrently, acknowledge the ones
/// processed, back off or dead-letter the ones that failed.
pub async fn run_local(
    store: EmbeddedStore,
    state: Arc<dyn StateStore>,
    settings: LocalProcessorSettings,
) {
    let archive = Archive::new(Arc::new(store.clone()), settings.dedup_ttl_seconds);
    let mut last_sweep = std::time::Instant::now();
    loop {
        if last_sweep.elapsed() >= settings.sweep_every {
            last_sweep = std::time::Instant::now();
            if let Err(error) = sweep(&store, &store, 100).await {
                tracing::error!(%error, "sweeper failed; will retry");
            }
        }
        let batch = match store
            .receive(settings.batch_size, settings.visibility_ms)
            .await
        {
            Ok(batch) => batch,
            Err(error) => {
                tracing::error!(%error, "cannot read the local queue");
                tokio::time::sleep(settings.idle_poll).await;
                continue;
            }
        };
        if batch.is_empty() {
            let _ = tokio::time::timeout(settings.idle_poll, store.queue_ready()).await;
            continue;
        }
        process_batch(&store, &state, &archive, batch, &settings).await;
    }
}

async fn process_batch(
    store: &EmbeddedStore,
    state: &Arc<dyn StateStore>,
    archive: &Archive,
    batch: Vec<Delivery>,
    settings: &LocalProcessorSettings,
) {
    let mut running = tokio::task::JoinSet::new();
    for delivery in batch {
        let (state, archive) = (Arc::clone(state), archive.clone());
        running.spawn(async move {
            let outcome = process_and_log(state.as_ref(), &archive, &delivery.event).await;
            (delivery, outcome)
        });
    }
    let mut done = Vec::new();
    while let Some(joined) = running.join_next().await {
        let Ok((delivery, outcome)) = joined else {
            continue; // A panicked task leaves its event hidden; it is retried after the timeout.
        };
        let key = log_key(&delivery.event.key);
        let key = key.as_str();
        match outcome {
            Outcome::Failed { error } | Outcome::ArchiveFailed { error }
                if delivery.attempts >= settings.max_attempts =>
            {
                tracing::error!(key, %error, attempts = delivery.attempts, "dead-lettered");
                if let Err(error) = store.dead_letter(delivery.seq, error).await {
                    tracing::error!(key, %error, "cannot dead-letter");
                }
            }
            Outcome::Failed { .. } | Outcome::ArchiveFailed { .. } => {
                let delay_ms = 100i64 << delivery.attempts.min(9);
                if let Err(error) = store.retry_later(delivery.seq, delay_ms).await {
                    tracing::error!(key, %error, "cannot schedule retry");
                }
            }
            Outcome::Applied { .. } | Outcome::Archived { .. } | Outcome::Quarantined => {
                done.push(delivery.seq)
            }
        }
    }
    if let Err(error) = store.acknowledge(done).await {
        // Not lost: the events reappear after the visibility timeout and apply idempotently.
        tracing::error!(%error, "cannot acknowledge applied events");
    }
}
