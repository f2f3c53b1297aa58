//! The embedded store: ledger, queue and state in two SQLite databases (WAL, `synchronous=FULL`).
//!
//! The intake database (`<name>.db`: ledger, queue, quarantine, dead letters) takes what the
//! receiver must make durable before its `200`; the state database (`<name>.state.db`: messages and
//! their ids) takes the processor's updates. Apart, a webhook's `200` waits only for intake pages
//! (about one random index page per event, against five more for the state's indexes), and the
//! intake WAL fills slowly enough that its restarts (below) are rare and short. Nothing needs both
//! at once: the processor applies, then acknowledges, and applying twice is harmless. A queue row
//! written with its ledger row refers to the ledger's copy of the body rather than holding a
//! second one (about 1 KiB less per event in the commit a `200` waits for).
//!
//! Each database's writes go through one writer thread that commits whatever is pending as one
//! transaction (group commit): each caller's work runs in its own savepoint, and its reply is sent
//! only after the commit is on disk. So every `200` the receiver gives is backed by a durable
//! write, and the fsync cost is shared by concurrent requests. Reads use their own connection (WAL
//! lets them run beside the writer).
//!
//! WAL pages are copied back into the database by a checkpointer thread on a third connection,
//! not by the committing writer: SQLite's automatic checkpoint runs inside a commit and holds
//! every waiting request for its copy and fsync (p99 132 ms at 5,000 webhooks/s with it, 6 ms
//! without).
//!
//! # Module map
//!
//! - this file: [`EmbeddedStore`] and [`EmbeddedStore::open`] (both databases, their schemas and
//!   migrations, in order), and the small helpers the files below share.
//! - [`schema`]: what each database holds (tables, indexes), the migrations of older data
//!   directories, and [`connect`](schema::connect), the one way a connection is opened (WAL,
//!   `synchronous=FULL`, checked).
//! - [`writer`]: one database file as the store uses it: the writer thread and its group commit,
//!   the reader connection, the checkpointer thread.
//! - [`ledger`]: the ledger (dedup, archive, redrive marks) and the receiver's quarantine:
//!   [`Ledger`](crate::ports::Ledger) for the store.
//! - [`queue`]: the local queue (receive, acknowledge, retry, dead letters, redrive), and
//!   [`Queue`](crate::ports::Queue) and [`Intake`](crate::ports::Intake) (ledger row and queue row
//!   in one commit).
//! - [`health`]: the `/healthz` probe's writes and the row [`Counts`].
//! - [`retention`]: the ledger's expired rows and old quarantined bodies deleted, as DynamoDB's
//!   TTL does on AWS ([`EmbeddedStore::prune`]).
//! - [`operator`]: both quarantines and the dead letters as the operator's commands read them
//!   ([`QuarantineArchive`](crate::ports::QuarantineArchive),
//!   [`DeadLetters`](crate::ports::DeadLetters)).
//! - [`message_state`]: the state database's messages and contacts:
//!   [`StateStore`](crate::ports::StateStore) for the store. What else the state database gets
//!   in the same transaction as a state change belongs in a file beside it:
//! - [`summary`]: each message's snapshot for contact reads ([`crate::contact_summary`]).
//! - [`outbox`]: the change documents written with the state change they describe, the change
//!   feed ([`ChangeFeed`](crate::ports::ChangeFeed)) and the window timer's table.
//! - [`forwards`]: the forwarder's progress through the outbox ([`crate::forward`]): its cursor,
//!   each change's attempts and status, dead letters and resend.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use crate::message::MessageRecord;
use crate::ports::StoreError;

mod erasure;
mod forwards;
mod health;
mod ledger;
mod message_state;
mod operator;
mod outbox;
mod queue;
mod retention;
mod schema;
mod summary;
mod writer;

pub use forwards::{DeadForward, DueForward, ForwardCounts, ForwardOutcome};
pub use health::Counts;
pub use queue::Delivery;
pub use retention::Pruned;

use forwards::FORWARDS_SCHEMA;
use message_state::STATE_SCHEMA;
use outbox::OUTBOX_SCHEMA;
use schema::{
    add_unarchived_columns, let_queue_bodies_be_null, move_state_out_of_intake, HEALTH_TABLE,
    INTAKE_SCHEMA, QUEUE_TABLE,
};
use writer::Database;

#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    intake: Database,
    state: Database,
    /// Woken after each enqueue so the local processor does not poll.
    queue_ready: Notify,
    /// Whether the last receive from the queue took all it asked for: the processor is behind.
    backlogged: AtomicBool,
}

impl EmbeddedStore {
    /// Opens (or creates) the intake database at `path` and the state database beside it, and
    /// starts their threads. Events that were in flight when a previous process died become
    /// visible again at once.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let state_path = path.with_extension("state.db");
        let state_schema = format!("{STATE_SCHEMA}{OUTBOX_SCHEMA}{FORWARDS_SCHEMA}{HEALTH_TABLE}");
        let state = Database::open(&state_path, &state_schema, |writer| {
            message_state::add_linked_column(writer)
                .map_err(|e| StoreError::unavailable("add linked column", e))?;
            message_state::add_sent_columns(writer)
                .map_err(|e| StoreError::unavailable("add sent columns", e))
        })?;
        let intake_schema = format!("{INTAKE_SCHEMA}{QUEUE_TABLE}{HEALTH_TABLE}");
        let intake = Database::open(path, &intake_schema, |writer| {
            move_state_out_of_intake(writer, &state_path)
                .map_err(|e| StoreError::unavailable("move state to its own database", e))?;
            let_queue_bodies_be_null(writer)
                .map_err(|e| StoreError::unavailable("migrate the queue table", e))?;
            add_unarchived_columns(writer)
                .map_err(|e| StoreError::unavailable("migrate the queue table", e))?;
            writer
                .execute("UPDATE queue SET visible_at = 0 WHERE visible_at > 0", [])
                .map_err(|e| StoreError::unavailable("reset in-flight events", e))?;
            Ok(())
        })?;
        message_state::edges_from_aliases(&state_path)?;
        summary::create_and_fill(&state_path)?;
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                intake,
                state,
                queue_ready: Notify::new(),
                backlogged: AtomicBool::new(false),
            }),
        })
    }

    /// Ledger, queue, quarantine and dead letters.
    fn intake(&self) -> &Database {
        &self.inner.intake
    }

    /// Messages and the ids that name them.
    fn state(&self) -> &Database {
        &self.inner.state
    }

    /// Waits until something may have been enqueued (or returns at once if it already was).
    pub async fn queue_ready(&self) {
        self.inner.queue_ready.notified().await
    }

    /// Whether the processor is behind: its last receive found a whole batch waiting (the
    /// forwarder steps back meanwhile, [`crate::forward`]).
    pub fn queue_backlogged(&self) -> bool {
        self.inner.backlogged.load(Ordering::Relaxed)
    }
}

/// A stored [`MessageRecord`] from its JSON.
fn decode(json: &str) -> Result<MessageRecord, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        operation: "decode message",
        reason: e.to_string(),
    })
}

/// An error of ours (JSON) as rusqlite carries it out of a read or write.
fn to_sql_error(error: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(error))
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{LedgerEntry, QueuedEvent};

    /// A record stored before business numbers were kept (no channel keys in its JSON) reads as
    /// on the default number.
    #[test]
    fn a_record_stored_before_numbers_is_on_the_default_number() {
        let before = r#"{"id":"m","whatsapp_message_id":null,"local_message_id":null,"wa_id":"1",
            "bsuid":null,"direction":"inbound","template_name":null,"sent_at":10,"delivered_at":null,
            "read_at":null,"replied_at":null,"failure":null}"#;
        let record = decode(before).unwrap();
        assert_eq!(record.channel(), (None, None));
        assert_eq!(record.sent_at, Some(10));
        let view = crate::session::ContactView::from_messages(&[record], 20).unwrap();
        assert_eq!(view.default.session.customer_messages, 1);
        assert_eq!(view.channels, vec![view.default.clone()]);
    }

    /// Both databases and their `-wal`/`-shm` files are the owner's only, new or older (0644).
    #[cfg(unix)]
    #[tokio::test]
    async fn database_files_are_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let intake = dir.path().join("w.db");
        let state = dir.path().join("w.state.db");
        // An older data directory's file, readable by everyone.
        std::fs::write(&state, b"").unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = EmbeddedStore::open(&intake).unwrap();
        let (entry, event) = entry("k", "{}", 1);
        crate::ports::Intake::record_and_send(&store, &entry, &event)
            .await
            .unwrap();
        let mut seen = 0;
        for file in std::fs::read_dir(dir.path()).unwrap() {
            let path = file.unwrap().path();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
            seen += 1;
        }
        assert!(seen >= 4, "the databases and their WAL files: {seen}");
    }

    pub(super) fn entry(key: &str, body: &str, received_at: i64) -> (LedgerEntry, QueuedEvent) {
        let entry = LedgerEntry {
            key: key.into(),
            event_type: "message".into(),
            body: body.as_bytes().to_vec(),
            received_at,
            expires_at: received_at + 100,
        };
        let event = QueuedEvent::archived(key, received_at, body);
        (entry, event)
    }
}
