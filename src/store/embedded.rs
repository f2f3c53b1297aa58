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

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{oneshot, Notify};

use crate::message::MessageRecord;
use crate::ports::{
    Intake, Ledger, LedgerEntry, MarkCursor, Marked, MarkedPage, PartitionCursor, QuarantineEntry,
    Queue, QueuedEvent, Recorded, StoreError,
};

mod message_state;

use message_state::STATE_SCHEMA;

/// The one partition of redrive marks (the `ledger_by_redrive` index).
const MARK_PARTITION: &str = "ledger";

/// When a ledger row's key may be taken by a new event: its `expires_at`, or never (NULL) while
/// the row is marked for redrive, since it holds an event not yet delivered. The ledger is never
/// pruned here; this is the rule a pruner would follow, the TTL's rule on DynamoDB.
const LEDGER_EXPIRY: &str = "CASE WHEN redrive_at IS NULL THEN expires_at END";

/// Most jobs committed in one transaction.
const MAX_GROUP: usize = 512;

/// How often the checkpointer copies committed WAL pages into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// WAL size (pages of 4 KiB: 16 MiB) past which the writer checkpoints the last few pages itself.
/// SQLite restarts the WAL from its beginning only when every page was copied, which a
/// checkpointer running beside a writer that never pauses cannot achieve on its own.
const WAL_RESTART_PAGES: i64 = 4_096;

const INTAKE_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS ledger (
    key         TEXT PRIMARY KEY,
    event_type  TEXT NOT NULL,
    body        BLOB NOT NULL,
    received_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    redrive_at  INTEGER
);
CREATE INDEX IF NOT EXISTS ledger_by_redrive ON ledger(redrive_at) WHERE redrive_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS ledger_by_received ON ledger(received_at);
CREATE TABLE IF NOT EXISTS quarantine (
    key         TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,
    body        BLOB,
    received_at INTEGER NOT NULL,
    stage       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq         INTEGER PRIMARY KEY,
    key         TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    body        TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    error       TEXT NOT NULL,
    unarchived  INTEGER NOT NULL DEFAULT 0
);
"#;

/// Part of the intake schema; apart so that [`let_queue_bodies_be_null`] can create it anew.
/// `body` is NULL when the ledger row with the same key holds it (see [`QUEUED_BODY`]).
/// `unarchived` is [`QueuedEvent::unarchived`] (also kept by dead letters).
const QUEUE_TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS queue (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    key         TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    body        TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    visible_at  INTEGER NOT NULL,
    unarchived  INTEGER NOT NULL DEFAULT 0
);
"#;

/// In both databases: the one row the health probe rewrites, so that `/healthz` commits a real
/// write (an empty transaction touches no disk and passes on a full one).
const HEALTH_TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS health (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    probed_at INTEGER NOT NULL
);
"#;

/// The ledger and queue key of the health probe's rows, which never outlive the probe's savepoint.
/// No event's key can be it: every idempotency key holds a `:`.
const PROBE_KEY: &str = "health-probe";

/// A queue row's body: its own, or else its ledger row's. The ledger is never pruned here and a
/// reused key copies its old body into the queue first (`record_in`), so the ledger's is the one
/// enqueued; `''` (quarantined by the processor as unparseable) only if a row was deleted by hand.
const QUEUED_BODY: &str = "COALESCE(queue.body, \
     (SELECT CAST(ledger.body AS TEXT) FROM ledger WHERE ledger.key = queue.key), '')";

/// One queued event handed to the local processor.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub seq: i64,
    pub attempts: u32,
    pub event: QueuedEvent,
}

/// Counts of what the database holds, for tests and `healthz`-style introspection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub ledger: u64,
    pub queued: u64,
    pub quarantined: u64,
    pub dead_letters: u64,
    pub messages: u64,
}

#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    intake: Database,
    state: Database,
    /// Woken after each enqueue so the local processor does not poll.
    queue_ready: Notify,
}

/// One SQLite file: a writer thread committing in groups, a reader connection and a checkpointer.
struct Database {
    jobs: Mutex<mpsc::Sender<Box<dyn WriteJob>>>,
    reader: Arc<Mutex<Connection>>,
    /// Dropped with the database: tells the checkpointer thread to finish.
    _stop_checkpointer: mpsc::Sender<()>,
}

impl EmbeddedStore {
    /// Opens (or creates) the intake database at `path` and the state database beside it, and
    /// starts their threads. Events that were in flight when a previous process died become
    /// visible again at once.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let state_path = path.with_extension("state.db");
        let state_schema = format!("{STATE_SCHEMA}{HEALTH_TABLE}");
        let state = Database::open(&state_path, &state_schema, |writer| {
            message_state::add_linked_column(writer)
                .map_err(|e| StoreError::unavailable("add linked column", e))
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
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                intake,
                state,
                queue_ready: Notify::new(),
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

    /// Takes up to `limit` visible events and hides them for `visibility_ms`, like an SQS receive.
    pub async fn receive(
        &self,
        limit: u32,
        visibility_ms: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.intake()
            .write("receive from queue", move |conn| {
                let now = now_ms();
                let mut statement = conn.prepare_cached(&format!(
                    "UPDATE queue SET visible_at = ?1, attempts = attempts + 1
                 WHERE seq IN (SELECT seq FROM queue WHERE visible_at <= ?2 ORDER BY seq LIMIT ?3)
                 RETURNING seq, attempts, key, received_at, {QUEUED_BODY}, unarchived"
                ))?;
                let rows =
                    statement.query_map(params![now + visibility_ms, now, limit], |row| {
                        Ok(Delivery {
                            seq: row.get(0)?,
                            attempts: row.get(1)?,
                            event: QueuedEvent {
                                key: row.get(2)?,
                                received_at: row.get(3)?,
                                body: row.get(4)?,
                                unarchived: row.get(5)?,
                            },
                        })
                    })?;
                let mut deliveries = rows.collect::<rusqlite::Result<Vec<_>>>()?;
                deliveries.sort_by_key(|d| d.seq);
                Ok(deliveries)
            })
            .await
    }

    /// Removes processed events from the queue.
    pub async fn acknowledge(&self, seqs: Vec<i64>) -> Result<(), StoreError> {
        self.intake()
            .write("acknowledge", move |conn| {
                let mut statement = conn.prepare_cached("DELETE FROM queue WHERE seq = ?1")?;
                for seq in seqs {
                    statement.execute([seq])?;
                }
                Ok(())
            })
            .await
    }

    /// Makes a failed event visible again after `delay_ms`.
    pub async fn retry_later(&self, seq: i64, delay_ms: i64) -> Result<(), StoreError> {
        self.intake()
            .write("retry later", move |conn| {
                conn.execute(
                    "UPDATE queue SET visible_at = ?1 WHERE seq = ?2",
                    params![now_ms() + delay_ms, seq],
                )?;
                Ok(())
            })
            .await
    }

    /// Moves an event that kept failing to the dead-letter table.
    pub async fn dead_letter(&self, seq: i64, error: String) -> Result<(), StoreError> {
        self.intake()
            .write("dead-letter", move |conn| {
                conn.execute(
                    &format!(
                        "INSERT OR REPLACE INTO dead_letters
                             (seq, key, received_at, body, attempts, error, unarchived)
                         SELECT seq, key, received_at, {QUEUED_BODY}, attempts, ?2, unarchived
                         FROM queue WHERE seq = ?1"
                    ),
                    params![seq, error],
                )?;
                conn.execute("DELETE FROM queue WHERE seq = ?1", [seq])?;
                Ok(())
            })
            .await
    }

    pub async fn counts(&self) -> Result<Counts, StoreError> {
        let (ledger, queued, quarantined, dead_letters) = self
            .intake()
            .read("count", |conn| {
                Ok((
                    count_rows(conn, "ledger")?,
                    count_rows(conn, "queue")?,
                    count_rows(conn, "quarantine")?,
                    count_rows(conn, "dead_letters")?,
                ))
            })
            .await?;
        let messages = self
            .state()
            .read("count", |conn| count_rows(conn, "messages"))
            .await?;
        Ok(Counts {
            ledger,
            queued,
            quarantined,
            dead_letters,
            messages,
        })
    }

    /// Moves every dead-lettered event back onto the queue; returns how many.
    pub async fn redrive_dead_letters(&self) -> Result<usize, StoreError> {
        let moved = self
            .intake()
            .write("redrive dead letters", |conn| {
                let moved = conn.execute(
                    "INSERT INTO queue (key, received_at, body, attempts, visible_at, unarchived)
                     SELECT key, received_at, body, 0, 0, unarchived FROM dead_letters
                     ORDER BY seq",
                    [],
                )?;
                conn.execute("DELETE FROM dead_letters", [])?;
                Ok(moved)
            })
            .await?;
        self.inner.queue_ready.notify_one();
        Ok(moved)
    }

    /// The raw body kept for a quarantined key, if any.
    pub async fn quarantined_body(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_owned();
        self.intake()
            .read("read quarantine", move |conn| {
                conn.query_row("SELECT body FROM quarantine WHERE key = ?1", [key], |row| {
                    row.get(0)
                })
                .optional()
            })
            .await
    }

    /// When the ledger row of `key` may be taken by a new event (`None`: never, while it is
    /// marked for redrive); `Ok(None)` also when there is no such row. See [`LEDGER_EXPIRY`].
    pub async fn ledger_expiry(&self, key: &str) -> Result<Option<i64>, StoreError> {
        let key = key.to_owned();
        self.intake()
            .read("read ledger expiry", move |conn| {
                conn.query_row(
                    &format!("SELECT {LEDGER_EXPIRY} FROM ledger WHERE key = ?1"),
                    [key],
                    |row| row.get(0),
                )
                .optional()
                .map(Option::flatten)
            })
            .await
    }
}

impl Database {
    /// Opens `path`, creates `schema`, runs `prepare` on the writer connection before any other
    /// connection exists, then starts the writer and checkpointer threads.
    fn open(
        path: &Path,
        schema: &str,
        prepare: impl FnOnce(&Connection) -> Result<(), StoreError>,
    ) -> Result<Self, StoreError> {
        let writer = connect(path)?;
        writer
            .execute_batch(schema)
            .map_err(|e| StoreError::unavailable("create schema", e))?;
        prepare(&writer)?;
        let reader = connect(path)?;
        let checkpointer = connect(path)?;
        let restart_wanted = Arc::new(AtomicBool::new(false));
        let restart_request = Arc::clone(&restart_wanted);
        let (jobs, pending) = mpsc::channel::<Box<dyn WriteJob>>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(writer, pending, restart_wanted))
            .map_err(|e| StoreError::unavailable("start writer thread", e))?;
        let (stop_checkpointer, stop) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, stop, restart_request))
            .map_err(|e| StoreError::unavailable("start checkpoint thread", e))?;
        Ok(Database {
            jobs: Mutex::new(jobs),
            reader: Arc::new(Mutex::new(reader)),
            _stop_checkpointer: stop_checkpointer,
        })
    }

    /// Runs `work` in the next group commit; resolves once it is durable.
    async fn write<R, F>(&self, operation: &'static str, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let (reply, outcome) = oneshot::channel();
        let job = Box::new(PendingWrite {
            operation,
            work: Some(work),
            result: None,
            reply,
        });
        self.jobs
            .lock()
            .map_err(|_| StoreError::unavailable(operation, "writer lock poisoned"))?
            .send(job)
            .map_err(|_| StoreError::unavailable(operation, "writer thread stopped"))?;
        outcome
            .await
            .map_err(|_| StoreError::unavailable(operation, "writer thread stopped"))?
    }

    async fn read<R, F>(&self, operation: &'static str, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
    {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            let conn = reader
                .lock()
                .map_err(|_| StoreError::unavailable(operation, "reader lock poisoned"))?;
            work(&conn).map_err(|e| StoreError::unavailable(operation, e))
        })
        .await
        .map_err(|e| StoreError::unavailable(operation, e))?
    }
}

/// Stores made before queue rows could refer to their ledger row have `queue.body NOT NULL`:
/// SQLite cannot drop a constraint, so the table is rebuilt (rows, seqs and the seq counter kept).
fn let_queue_bodies_be_null(intake: &Connection) -> rusqlite::Result<()> {
    if !returns_a_row(
        intake,
        "SELECT 1 FROM pragma_table_info('queue') WHERE name = 'body' AND \"notnull\"",
    )? {
        return Ok(());
    }
    intake.execute_batch(&format!(
        "BEGIN;
         ALTER TABLE queue RENAME TO queue_before_references;
         {QUEUE_TABLE}
         INSERT INTO queue (seq, key, received_at, body, attempts, visible_at)
             SELECT seq, key, received_at, body, attempts, visible_at FROM queue_before_references;
         -- Seqs name dead letters too: never hand out one the old table used.
         DELETE FROM sqlite_sequence WHERE name = 'queue';
         INSERT INTO sqlite_sequence (name, seq)
             SELECT 'queue', seq FROM sqlite_sequence WHERE name = 'queue_before_references';
         DROP TABLE queue_before_references;
         COMMIT;"
    ))
}

/// Stores made before [`QueuedEvent::unarchived`] lack its column in the queue and the dead
/// letters; what they hold was archived (or predates the flag), which the default says.
fn add_unarchived_columns(intake: &Connection) -> rusqlite::Result<()> {
    for table in ["queue", "dead_letters"] {
        let has_it = returns_a_row(
            intake,
            &format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = 'unarchived'"),
        )?;
        if !has_it {
            intake.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN unarchived INTEGER NOT NULL DEFAULT 0"
            ))?;
        }
    }
    Ok(())
}

/// Whether `query` returns a row: the schema checks of the migrations above and below.
fn returns_a_row(conn: &Connection, query: &str) -> rusqlite::Result<bool> {
    conn.query_row(&format!("SELECT EXISTS ({query})"), [], |row| row.get(0))
}

/// Stores made before the split kept messages in the intake database: copy them to the state
/// database, then drop them. Re-running after a crash between the two steps copies nothing twice
/// (`OR IGNORE`) and keeps any newer state already applied.
fn move_state_out_of_intake(intake: &Connection, state_path: &Path) -> rusqlite::Result<()> {
    if !returns_a_row(
        intake,
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'messages'",
    )? {
        return Ok(());
    }
    intake.execute(
        "ATTACH DATABASE ?1 AS state",
        [state_path.to_string_lossy()],
    )?;
    let moved = intake.execute_batch(
        "BEGIN;
         INSERT OR IGNORE INTO state.messages (id, wa_id, bsuid, record)
             SELECT id, wa_id, bsuid, record FROM main.messages;
         INSERT OR IGNORE INTO state.message_ids (alias, id) SELECT alias, id FROM main.message_ids;
         INSERT OR IGNORE INTO state.contact_ids (bsuid, wa_id)
             SELECT bsuid, wa_id FROM main.contact_ids;
         COMMIT;",
    );
    let detached = intake.execute_batch("DETACH DATABASE state");
    moved?;
    detached?;
    intake.execute_batch(
        "BEGIN;
         DROP TABLE main.messages;
         DROP TABLE main.message_ids;
         DROP TABLE main.contact_ids;
         COMMIT;",
    )
}

#[async_trait]
impl Ledger for EmbeddedStore {
    async fn record(&self, entry: &LedgerEntry) -> Result<Recorded, StoreError> {
        let entry = entry.clone();
        self.intake()
            .write("record in ledger", move |conn| record_in(conn, &entry))
            .await
    }

    async fn mark_for_redrive(&self, key: &str, at: i64) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.intake()
            .write("mark for redrive", move |conn| {
                conn.execute(
                    "UPDATE ledger SET redrive_at = ?2 WHERE key = ?1",
                    params![key, at],
                )?;
                Ok(())
            })
            .await
    }

    async fn marked_for_redrive(
        &self,
        after: Option<&MarkCursor>,
        limit: u32,
    ) -> Result<MarkedPage, StoreError> {
        let start = match after.and_then(|cursor| cursor.position(MARK_PARTITION)) {
            None => None,
            Some(None) => return Ok(MarkedPage::default()),
            Some(Some((at, key))) => Some((at, key.to_owned())),
        };
        let marks: Vec<Marked> = self
            .intake()
            .read("list redrive marks", move |conn| {
                // (i64::MIN, "") sorts before every mark.
                let (at, key) = start.unwrap_or((i64::MIN, String::new()));
                conn.prepare_cached(
                    "SELECT key, received_at, body, redrive_at FROM ledger
                     WHERE redrive_at IS NOT NULL
                       AND (redrive_at > ?1 OR (redrive_at = ?1 AND key > ?2))
                     ORDER BY redrive_at, key LIMIT ?3",
                )?
                .query_map(params![at, key, limit], |row| {
                    Ok(Marked {
                        event: queued_from_row(row)?,
                        marked_at: row.get(3)?,
                    })
                })?
                .collect()
            })
            .await?;
        let position = match marks.last() {
            Some(last) if marks.len() >= limit as usize => PartitionCursor::After {
                marked_at: last.marked_at,
                key: last.event.key.clone(),
            },
            _ => PartitionCursor::Exhausted,
        };
        let next = match position {
            PartitionCursor::Exhausted => None,
            position => Some(MarkCursor {
                partitions: [(MARK_PARTITION.to_owned(), position)].into(),
            }),
        };
        Ok(MarkedPage { marks, next })
    }

    async fn oldest_mark(&self) -> Result<Option<i64>, StoreError> {
        self.intake()
            .read("oldest redrive mark", |conn| {
                conn.query_row(
                    "SELECT MIN(redrive_at) FROM ledger WHERE redrive_at IS NOT NULL",
                    [],
                    |row| row.get(0),
                )
            })
            .await
    }

    async fn archived(&self, key: &str) -> Result<Option<QueuedEvent>, StoreError> {
        let key = key.to_owned();
        self.intake()
            .read("read ledger", move |conn| {
                conn.query_row(
                    "SELECT key, received_at, body FROM ledger WHERE key = ?1",
                    [key],
                    queued_from_row,
                )
                .optional()
            })
            .await
    }

    async fn archived_between(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<QueuedEvent>, StoreError> {
        self.intake()
            .read("scan ledger", move |conn| {
                conn.prepare_cached(
                    "SELECT key, received_at, body FROM ledger
                 WHERE received_at BETWEEN ?1 AND ?2 ORDER BY received_at, key",
                )?
                .query_map(params![since, until], queued_from_row)?
                .collect()
            })
            .await
    }

    async fn clear_redrive(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.intake()
            .write("clear redrive mark", move |conn| {
                conn.execute("UPDATE ledger SET redrive_at = NULL WHERE key = ?1", [key])?;
                Ok(())
            })
            .await
    }

    async fn quarantine(&self, entry: &QuarantineEntry) -> Result<(), StoreError> {
        let entry = entry.clone();
        self.intake()
            .write("quarantine", move |conn| {
                conn.execute(
                    "INSERT INTO quarantine (key, reason, body, received_at, stage)
                 VALUES (?1, ?2, ?3, ?4, 'receiver') ON CONFLICT (key) DO NOTHING",
                    params![entry.key, entry.reason, entry.body, entry.received_at],
                )?;
                Ok(())
            })
            .await
    }
}

#[async_trait]
impl Queue for EmbeddedStore {
    async fn send(&self, event: &QueuedEvent) -> Result<(), StoreError> {
        let event = event.clone();
        self.intake()
            .write("enqueue", move |conn| enqueue_in(conn, &event))
            .await?;
        self.inner.queue_ready.notify_one();
        Ok(())
    }
}

#[async_trait]
impl Intake for EmbeddedStore {
    async fn record_and_send(
        &self,
        entry: &LedgerEntry,
        event: &QueuedEvent,
    ) -> Result<Recorded, StoreError> {
        let (entry, event) = (entry.clone(), event.clone());
        let recorded = self
            .intake()
            .write("record and enqueue", move |conn| {
                let recorded = record_in(conn, &entry)?;
                if recorded == Recorded::New {
                    if event.key == entry.key && event.body.as_bytes() == entry.body {
                        // The ledger row just written holds the body: ~1 KiB less per event
                        // in the commit every `200` waits for.
                        conn.prepare_cached(
                            "INSERT INTO queue (key, received_at, visible_at) VALUES (?1, ?2, 0)",
                        )?
                        .execute(params![event.key, event.received_at])?;
                    } else {
                        enqueue_in(conn, &event)?;
                    }
                }
                Ok(recorded)
            })
            .await?;
        if recorded == Recorded::New {
            self.inner.queue_ready.notify_one();
        }
        Ok(recorded)
    }
}

fn count_rows(conn: &Connection, table: &str) -> rusqlite::Result<u64> {
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
        row.get(0)
    })
}

/// A ledger row (`key, received_at, body`) as the event it archives.
fn queued_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<QueuedEvent> {
    let body: Vec<u8> = row.get(2)?;
    Ok(QueuedEvent::archived(
        row.get::<_, String>(0)?,
        row.get(1)?,
        String::from_utf8_lossy(&body),
    ))
}

fn decode(json: &str) -> Result<MessageRecord, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        operation: "decode message",
        reason: e.to_string(),
    })
}

fn to_sql_error(error: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(error))
}

/// Every connection the store opens (writer, reader, checkpointer) comes from here, and refuses to
/// run unless SQLite confirms WAL and `synchronous=FULL`: a `200` rests on both, and WAL can be
/// refused (an in-memory database, some network filesystems) without an error.
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|e| StoreError::unavailable("open database", e))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA busy_timeout = 5000;
         PRAGMA foreign_keys = OFF;
         -- checkpoint_loop does it, outside the commits requests wait on
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA journal_size_limit = 67108864;",
    )
    .map_err(|e| StoreError::unavailable("configure database", e))?;
    let (journal_mode, synchronous) =
        durability(&conn).map_err(|e| StoreError::unavailable("configure database", e))?;
    if journal_mode != "wal" || synchronous != SYNCHRONOUS_FULL {
        return Err(StoreError::unavailable(
            "configure database",
            format!(
                "{}: journal_mode {journal_mode} and synchronous {synchronous}, not wal and \
                 {SYNCHRONOUS_FULL} (FULL)",
                path.display()
            ),
        ));
    }
    Ok(conn)
}

/// `PRAGMA synchronous` reads 2 for FULL.
const SYNCHRONOUS_FULL: i64 = 2;

/// What a connection reports of the two settings durability rests on: the journal mode (lower
/// case) and `synchronous`.
fn durability(conn: &Connection) -> rusqlite::Result<(String, i64)> {
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0))?;
    let synchronous = conn.query_row("PRAGMA synchronous", [], |row| row.get(0))?;
    Ok((mode.to_ascii_lowercase(), synchronous))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// A unit of work for the writer thread: run inside the transaction, then told how the commit went.
trait WriteJob: Send {
    fn run(&mut self, conn: &Connection);
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

struct PendingWrite<R, F> {
    operation: &'static str,
    work: Option<F>,
    result: Option<rusqlite::Result<R>>,
    reply: oneshot::Sender<Result<R, StoreError>>,
}

impl<R, F> WriteJob for PendingWrite<R, F>
where
    R: Send + 'static,
    F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) {
        if let Some(work) = self.work.take() {
            self.result = Some(in_savepoint(conn, work));
        }
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let operation = self.operation;
        let outcome = match (committed, self.result) {
            (Err(error), _) => Err(error),
            (Ok(()), Some(Ok(value))) => Ok(value),
            (Ok(()), Some(Err(error))) => Err(StoreError::unavailable(operation, error)),
            (Ok(()), None) => Err(StoreError::unavailable(operation, "not run")),
        };
        // The caller may have gone away (request cancelled); the write stands either way.
        let _ = self.reply.send(outcome);
    }
}

/// Runs `work` so that its failure undoes only its own changes, not the whole group.
fn in_savepoint<R>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> rusqlite::Result<R>,
) -> rusqlite::Result<R> {
    // Cached statements: parsing these two for every job cost more than running them.
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    match work(conn) {
        Ok(value) => {
            conn.prepare_cached("RELEASE job")?.execute([])?;
            Ok(value)
        }
        Err(error) => {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
            Err(error)
        }
    }
}

fn write_loop(
    conn: Connection,
    pending: mpsc::Receiver<Box<dyn WriteJob>>,
    restart_wanted: Arc<AtomicBool>,
) {
    while let Ok(first) = pending.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match pending.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let committed = commit_group(&conn, &mut group);
        for job in group {
            job.finish(committed.clone());
        }
        // After the replies: only the next group waits, for the pages written since the
        // checkpointer's last pass.
        if restart_wanted.swap(false, Ordering::Relaxed) {
            checkpoint(&conn, "PASSIVE");
        }
    }
}

/// Checkpoints the WAL every [`CHECKPOINT_EVERY`] until the store is dropped. A passive checkpoint
/// never blocks the writer; a failed one is retried on the next tick (the WAL only grows).
fn checkpoint_loop(conn: Connection, stop: mpsc::Receiver<()>, restart_wanted: Arc<AtomicBool>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        let wal_pages = checkpoint(&conn, "PASSIVE");
        if wal_pages.is_some_and(|pages| pages > WAL_RESTART_PAGES) {
            restart_wanted.store(true, Ordering::Relaxed);
        }
    }
    // The last connection to close checkpoints and removes the WAL itself.
}

/// Runs `PRAGMA wal_checkpoint(mode)`; the WAL's size in pages, if the pragma ran.
fn checkpoint(conn: &Connection, mode: &str) -> Option<i64> {
    let outcome = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
        row.get::<_, i64>(1)
    });
    match outcome {
        Ok(pages) => Some(pages),
        Err(error) => {
            tracing::warn!(mode, %error, "WAL checkpoint failed; retried on the next tick");
            None
        }
    }
}

fn commit_group(conn: &Connection, group: &mut [Box<dyn WriteJob>]) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| StoreError::unavailable("begin transaction", e))?;
    for job in group.iter_mut() {
        job.run(conn);
    }
    conn.execute_batch("COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        StoreError::unavailable("commit", e)
    })
}

/// Records `entry` unless its key is held and unexpired (see [`Ledger::record`]).
fn record_in(conn: &Connection, entry: &LedgerEntry) -> rusqlite::Result<Recorded> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO ledger (key, event_type, body, received_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (key) DO NOTHING",
        )?
        .execute(params![
            entry.key,
            entry.event_type,
            entry.body,
            entry.received_at,
            entry.expires_at
        ])?;
    if inserted == 1 {
        return Ok(Recorded::New);
    }
    let (received_at, expiry, body): (i64, Option<i64>, Vec<u8>) = conn
        .prepare_cached(&format!(
            "SELECT received_at, {LEDGER_EXPIRY}, body FROM ledger WHERE key = ?1"
        ))?
        .query_row([&entry.key], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
    // A marked row never expires (see LEDGER_EXPIRY).
    if !matches!(expiry, Some(expires_at) if expires_at <= entry.received_at) {
        return Ok(Recorded::Existing { received_at, body });
    }
    // The dedup window has passed: this is a new event that happens to share the key. An older
    // event still queued under it keeps its own body. (A scan, but only of what is queued, and
    // only once per key and dedup window.)
    conn.prepare_cached(
        "UPDATE queue SET body = (SELECT CAST(body AS TEXT) FROM ledger WHERE key = ?1)
         WHERE key = ?1 AND body IS NULL",
    )?
    .execute([&entry.key])?;
    conn.prepare_cached(
        "UPDATE ledger SET event_type = ?2, body = ?3, received_at = ?4, expires_at = ?5,
         redrive_at = NULL WHERE key = ?1",
    )?
    .execute(params![
        entry.key,
        entry.event_type,
        entry.body,
        entry.received_at,
        entry.expires_at
    ])?;
    Ok(Recorded::New)
}

fn enqueue_in(conn: &Connection, event: &QueuedEvent) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO queue (key, received_at, body, visible_at, unarchived)
         VALUES (?1, ?2, ?3, 0, ?4)",
    )?
    .execute(params![
        event.key,
        event.received_at,
        event.body,
        event.unarchived
    ])?;
    Ok(())
}

/// Rewrites the health row: a page written and synced at the commit.
fn probe(conn: &Connection, at: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO health (id, probed_at) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
    )?
    .execute([at])?;
    Ok(())
}

/// [`probe`], plus a ledger row and a queue row written and removed in the same savepoint: the
/// tables (and indexes) a webhook writes must take a write too.
fn probe_intake(conn: &Connection, at: i64) -> rusqlite::Result<()> {
    probe(conn, at)?;
    conn.prepare_cached(
        "INSERT INTO ledger (key, event_type, body, received_at, expires_at)
         VALUES (?1, 'health', x'', ?2, ?2)",
    )?
    .execute(params![PROBE_KEY, at])?;
    conn.prepare_cached("DELETE FROM ledger WHERE key = ?1")?
        .execute([PROBE_KEY])?;
    // Never visible to a receive: the row is gone before this job's savepoint is released.
    conn.prepare_cached(
        "INSERT INTO queue (key, received_at, body, visible_at) VALUES (?1, ?2, '', ?3)",
    )?
    .execute(params![PROBE_KEY, at, i64::MAX])?;
    // By seq: the queue has no index on its keys.
    conn.prepare_cached("DELETE FROM queue WHERE seq = last_insert_rowid()")?
        .execute([])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::StateStore;

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

    /// A new event is in the ledger and on the queue after one write; a seen key enqueues nothing.
    #[tokio::test]
    async fn record_and_send_writes_a_new_event_to_both_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("t.db")).unwrap();
        let entry = LedgerEntry {
            key: "k".into(),
            event_type: "message".into(),
            body: b"{}".to_vec(),
            received_at: 10,
            expires_at: 100,
        };
        let event = QueuedEvent::archived("k", 10, "{}");
        assert_eq!(
            store.record_and_send(&entry, &event).await.unwrap(),
            Recorded::New
        );
        assert!(matches!(
            store.record_and_send(&entry, &event).await.unwrap(),
            Recorded::Existing {
                received_at: 10,
                ..
            }
        ));
        let counts = store.counts().await.unwrap();
        assert_eq!((counts.ledger, counts.queued), (1, 1));
        assert_eq!(store.receive(10, 60_000).await.unwrap()[0].event, event);
    }

    fn entry(key: &str, body: &str, received_at: i64) -> (LedgerEntry, QueuedEvent) {
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

    /// Queue rows refer to their ledger row's body. When a key is accepted again after its dedup
    /// window, the ledger row is overwritten; the older event still queued must keep its body,
    /// also when it ends in the dead-letter table.
    #[tokio::test]
    async fn a_queued_event_keeps_its_body_when_its_key_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("t.db")).unwrap();
        let (first_entry, first) = entry("k", r#"{"n":1}"#, 10);
        let (second_entry, second) = entry("k", r#"{"n":2}"#, 500);
        store.record_and_send(&first_entry, &first).await.unwrap();
        assert_eq!(
            store.record_and_send(&second_entry, &second).await.unwrap(),
            Recorded::New
        );

        let deliveries = store.receive(10, 60_000).await.unwrap();
        let bodies: Vec<_> = deliveries.iter().map(|d| d.event.clone()).collect();
        assert_eq!(bodies, vec![first.clone(), second.clone()]);

        for delivery in deliveries {
            store
                .dead_letter(delivery.seq, "boom".into())
                .await
                .unwrap();
        }
        assert_eq!(store.redrive_dead_letters().await.unwrap(), 2);
        let redriven = store.receive(10, 60_000).await.unwrap();
        let bodies: Vec<_> = redriven.into_iter().map(|d| d.event).collect();
        assert_eq!(bodies, vec![first, second]);
    }

    /// A data directory whose queue table required a body keeps its queued events, and new
    /// events never reuse a seq the old table handed out (seqs also name dead letters).
    #[tokio::test]
    async fn a_queue_from_before_body_references_is_migrated_with_its_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let (_, waiting) = entry("old", r#"{"n":1}"#, 10);
        {
            let old = connect(&path).unwrap();
            old.execute_batch(INTAKE_SCHEMA).unwrap();
            old.execute_batch(&QUEUE_TABLE.replace("body        TEXT,", "body TEXT NOT NULL,"))
                .unwrap();
            enqueue_in(&old, &waiting).unwrap();
            for n in 0..5 {
                enqueue_in(&old, &entry(&format!("acked{n}"), "{}", 10).1).unwrap();
            }
            old.execute("DELETE FROM queue WHERE key LIKE 'acked%'", [])
                .unwrap();
        }

        let store = EmbeddedStore::open(&path).unwrap();
        let (new_entry, new) = entry("new", r#"{"n":2}"#, 20);
        store.record_and_send(&new_entry, &new).await.unwrap();
        let deliveries = store.receive(10, 60_000).await.unwrap();
        let seqs: Vec<_> = deliveries.iter().map(|d| d.seq).collect();
        let events: Vec<_> = deliveries.into_iter().map(|d| d.event).collect();
        assert_eq!(events, vec![waiting, new]);
        assert_eq!(seqs, vec![1, 7]);
    }

    /// A store from before the archive flag gets its column in the queue and the dead letters;
    /// what it held counts as archived, and a flag set from then on survives dead-lettering and
    /// redrive.
    #[tokio::test]
    async fn the_archive_flag_is_added_to_an_older_store_and_kept_through_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let old_event = QueuedEvent::archived("old", 10, r#"{"n":1}"#);
        {
            let old = connect(&path).unwrap();
            old.execute_batch(
                &INTAKE_SCHEMA.replace(",\n    unarchived  INTEGER NOT NULL DEFAULT 0", ""),
            )
            .unwrap();
            old.execute_batch(
                &QUEUE_TABLE.replace(",\n    unarchived  INTEGER NOT NULL DEFAULT 0", ""),
            )
            .unwrap();
            for table in ["queue", "dead_letters"] {
                assert!(!returns_a_row(
                    &old,
                    &format!(
                        "SELECT 1 FROM pragma_table_info('{table}') WHERE name = 'unarchived'"
                    )
                )
                .unwrap());
            }
            old.execute(
                "INSERT INTO queue (key, received_at, body, visible_at) VALUES ('old', 10, ?1, 0)",
                [&old_event.body],
            )
            .unwrap();
        }
        let store = EmbeddedStore::open(&path).unwrap();
        let bypassed = QueuedEvent {
            unarchived: true,
            ..QueuedEvent::archived("new", 20, r#"{"n":2}"#)
        };
        store.send(&bypassed).await.unwrap();
        let deliveries = store.receive(10, 60_000).await.unwrap();
        let events: Vec<_> = deliveries.iter().map(|d| d.event.clone()).collect();
        assert_eq!(events, vec![old_event.clone(), bypassed.clone()]);
        for delivery in deliveries {
            store
                .dead_letter(delivery.seq, "boom".into())
                .await
                .unwrap();
        }
        assert_eq!(store.redrive_dead_letters().await.unwrap(), 2);
        let redriven: Vec<_> = store
            .receive(10, 60_000)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.event)
            .collect();
        assert_eq!(redriven, vec![old_event, bypassed]);
    }

    /// An event that exhausted its attempts sits in the dead-letter table until redriven, then
    /// is back on the queue with fresh attempts.
    #[tokio::test]
    async fn dead_letters_can_be_redriven() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("t.db")).unwrap();
        let event = QueuedEvent::archived("k", 1, "{}");
        store.send(&event).await.unwrap();
        let delivery = store.receive(10, 60_000).await.unwrap().remove(0);
        store
            .dead_letter(delivery.seq, "boom".into())
            .await
            .unwrap();
        assert_eq!(store.counts().await.unwrap().dead_letters, 1);
        assert!(store.receive(10, 0).await.unwrap().is_empty());

        assert_eq!(store.redrive_dead_letters().await.unwrap(), 1);
        let counts = store.counts().await.unwrap();
        assert_eq!((counts.dead_letters, counts.queued), (0, 1));
        let again = store.receive(10, 60_000).await.unwrap();
        assert_eq!(again[0].event, event);
        assert_eq!(again[0].attempts, 1);
    }

    /// A data directory written before state had its own file, and before messages were items,
    /// keeps its messages: opening it moves them to the state database, drops them from the
    /// intake one, and turns the alias rows into edge items (every id still finds the message).
    #[tokio::test]
    async fn messages_stored_before_the_split_and_before_items_read_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let body = r#"{"eventType":"message","id":"w1","whatsappMessageId":"m1","waId":"4917"}"#;
        let event = crate::event::WatiEvent::parse(body.as_bytes()).unwrap();
        let facts = MessageRecord::from_event(&event, 5).unwrap();
        {
            // The old layout: every table in one file, one merged record per message under its
            // primary id and an alias row per id.
            let old = connect(&path).unwrap();
            old.execute_batch(INTAKE_SCHEMA).unwrap();
            old.execute_batch(
                "CREATE TABLE messages (id TEXT PRIMARY KEY, wa_id TEXT, bsuid TEXT,
                     record TEXT NOT NULL);
                 CREATE TABLE message_ids (alias TEXT PRIMARY KEY, id TEXT NOT NULL);
                 CREATE TABLE contact_ids (bsuid TEXT NOT NULL, wa_id TEXT NOT NULL,
                     PRIMARY KEY (bsuid, wa_id));",
            )
            .unwrap();
            old.execute(
                "INSERT INTO messages (id, wa_id, bsuid, record) VALUES ('w1', '4917', NULL, ?1)",
                [serde_json::to_string(&facts).unwrap()],
            )
            .unwrap();
            old.execute_batch(
                "INSERT INTO message_ids (alias, id) VALUES ('w1', 'w1'), ('m1', 'w1');",
            )
            .unwrap();
        }

        let store = EmbeddedStore::open(&path).unwrap();
        for id in ["w1", "m1"] {
            assert_eq!(
                store.message(id).await.unwrap().as_ref(),
                Some(&facts),
                "by {id}"
            );
        }
        let view = store.contact("4917", 10).await.unwrap().unwrap();
        assert_eq!(view.default.wa_id.as_deref(), Some("4917"));
        let left_behind: bool = connect(&path)
            .unwrap()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'messages')",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert!(
            !left_behind,
            "the intake database still has a messages table"
        );
    }

    /// `/healthz`'s probe writes for real (the health row changes in both files) and fails as
    /// soon as the ledger cannot take a write, although the database itself still opens, reads
    /// and commits; it passes again once the ledger is back.
    #[tokio::test]
    async fn the_health_probe_writes_and_fails_on_a_broken_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = EmbeddedStore::open(&path).unwrap();
        let probed_at = |path: &Path| -> i64 {
            connect(path)
                .unwrap()
                .query_row("SELECT probed_at FROM health", [], |row| row.get(0))
                .unwrap()
        };
        store.ping().await.unwrap();
        let first = probed_at(&path);
        std::thread::sleep(Duration::from_millis(5));
        store.ping().await.unwrap();
        assert!(probed_at(&path) > first, "the probe did not write");
        assert!(probed_at(&path.with_extension("state.db")) > first);
        let counts = store.counts().await.unwrap();
        assert_eq!((counts.ledger, counts.queued), (0, 0), "probe rows left");

        let outside = connect(&path).unwrap();
        outside
            .execute_batch("ALTER TABLE ledger RENAME TO ledger_broken")
            .unwrap();
        let error = store.ping().await.unwrap_err().to_string();
        assert!(error.contains("ledger"), "{error}");
        outside
            .execute_batch("ALTER TABLE ledger_broken RENAME TO ledger")
            .unwrap();
        store.ping().await.unwrap();

        // The state database's probe counts as much as the intake's.
        let state = connect(&path.with_extension("state.db")).unwrap();
        state.execute_batch("DROP TABLE health").unwrap();
        assert!(store.ping().await.is_err());
    }

    /// Every connection the store opens comes from `connect`, which refuses to return one that
    /// does not run WAL with `synchronous=FULL` (2); the reader and writer of both databases
    /// report exactly that.
    #[tokio::test]
    async fn every_connection_runs_wal_with_synchronous_full() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("t.db")).unwrap();
        let expected = ("wal".to_owned(), SYNCHRONOUS_FULL);
        for database in [store.intake(), store.state()] {
            let read = database.read("pragmas", durability).await.unwrap();
            let written = database.write("pragmas", durability).await.unwrap();
            assert_eq!((read, written), (expected.clone(), expected.clone()));
        }
        assert_eq!(SYNCHRONOUS_FULL, 2);
        // Where SQLite will not run WAL, no connection is handed out.
        let error = connect(Path::new(":memory:")).unwrap_err().to_string();
        assert!(error.contains("journal_mode memory"), "{error}");
    }

    /// Commits only append to the WAL (no automatic checkpoint inside a commit); the checkpointer
    /// thread must still move them into the database file, or the WAL would grow forever and a
    /// restart would replay all of it.
    #[tokio::test]
    async fn committed_writes_reach_the_database_file_without_a_checkpoint_in_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = EmbeddedStore::open(&path).unwrap();
        let empty = std::fs::metadata(&path).unwrap().len();
        for n in 0..200 {
            let event = QueuedEvent::archived(format!("k{n}"), 1, "x".repeat(1_000));
            store.send(&event).await.unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&path).unwrap().len() < empty + 200_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file stayed at {} bytes",
                std::fs::metadata(&path).unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
