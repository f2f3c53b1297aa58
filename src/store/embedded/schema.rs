//! What the two databases hold and how a file is opened: the intake schema (ledger, queue,
//! quarantine, dead letters) and the health row of both (the state's own schema is in
//! [`message_state`](super::message_state)), the migrations that bring an older data directory up
//! to it, and [`connect`], through which every connection is opened.

use std::path::Path;

use rusqlite::Connection;

use crate::ports::StoreError;

pub(super) const INTAKE_SCHEMA: &str = r#"
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
CREATE INDEX IF NOT EXISTS ledger_by_expiry ON ledger(expires_at);
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
/// `body` is NULL when the ledger row with the same key holds it (see
/// [`QUEUED_BODY`](super::queue::QUEUED_BODY)). `unarchived` is
/// [`QueuedEvent::unarchived`](crate::ports::QueuedEvent::unarchived) (also kept by dead letters).
pub(super) const QUEUE_TABLE: &str = r#"
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
pub(super) const HEALTH_TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS health (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    probed_at INTEGER NOT NULL
);
"#;

/// Makes the database at `path` (created empty if missing) and its `-wal` and `-shm` files
/// readable and writable by their owner only, like the secret files beside them: they hold every
/// raw body and every customer's phone number. (SQLite gives `-wal` and `-shm` the database's
/// mode when it creates them; existing ones from older data directories are narrowed here.)
pub(super) fn restrict_to_owner(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let failed = |e: std::io::Error| StoreError::unavailable("restrict the database's mode", e);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(failed)?;
        let mut names = vec![path.as_os_str().to_owned()];
        for suffix in ["-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            names.push(name);
        }
        for name in names {
            match std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(failed(e)),
            }
        }
    }
    Ok(())
}

/// Every connection the store opens (writer, reader, checkpointer) comes from here, and refuses to
/// run unless SQLite confirms WAL and `synchronous=FULL`: a `200` rests on both, and WAL can be
/// refused (an in-memory database, some network filesystems) without an error.
pub(super) fn connect(path: &Path) -> Result<Connection, StoreError> {
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

/// Stores made before queue rows could refer to their ledger row have `queue.body NOT NULL`:
/// SQLite cannot drop a constraint, so the table is rebuilt (rows, seqs and the seq counter kept).
pub(super) fn let_queue_bodies_be_null(intake: &Connection) -> rusqlite::Result<()> {
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

/// Stores made before [`QueuedEvent::unarchived`](crate::ports::QueuedEvent::unarchived) lack its
/// column in the queue and the dead letters; what they hold was archived (or predates the flag),
/// which the default says.
pub(super) fn add_unarchived_columns(intake: &Connection) -> rusqlite::Result<()> {
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

/// Whether `query` returns a row: the schema checks of the migrations here and in
/// [`message_state`](super::message_state).
pub(super) fn returns_a_row(conn: &Connection, query: &str) -> rusqlite::Result<bool> {
    conn.query_row(&format!("SELECT EXISTS ({query})"), [], |row| row.get(0))
}

/// SQLite's plan for `query` with `params`, its steps joined by "; " (the tests that hold a hot
/// query to its index).
#[cfg(test)]
pub(super) fn query_plan(conn: &Connection, query: &str, params: impl rusqlite::Params) -> String {
    let steps: Vec<String> = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
        .expect("plan")
        .query_map(params, |row| row.get::<_, String>(3))
        .expect("plan rows")
        .collect::<rusqlite::Result<_>>()
        .expect("plan rows");
    steps.join("; ")
}

/// Stores made before the split kept messages in the intake database: copy them to the state
/// database, then drop them. Re-running after a crash between the two steps copies nothing twice
/// (`OR IGNORE`) and keeps any newer state already applied.
pub(super) fn move_state_out_of_intake(
    intake: &Connection,
    state_path: &Path,
) -> rusqlite::Result<()> {
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
         INSERT OR IGNORE INTO state.messages (id, wa_id, bsuid, record, sent_at, direction)
             SELECT id, wa_id, bsuid, record, json_extract(record, '$.sent_at'),
                 coalesce(json_extract(record, '$.direction'), 'outbound')
             FROM main.messages;
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

#[cfg(test)]
mod tests {
    use super::super::queue::enqueue_in;
    use super::super::tests::entry;
    use super::super::EmbeddedStore;
    use super::*;
    use crate::message::MessageRecord;
    use crate::ports::{Intake, Queue, QueuedEvent, StateStore};

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
        assert_eq!(store.redrive_dead_letters(None).await.unwrap(), 2);
        let redriven: Vec<_> = store
            .receive(10, 60_000)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.event)
            .collect();
        assert_eq!(redriven, vec![old_event, bypassed]);
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
}
