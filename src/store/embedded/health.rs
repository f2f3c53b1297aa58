//! What `/healthz` and tests look at: the probe's writes (the health row in both databases, and a
//! ledger row and a queue row written and removed) and the row [`Counts`].

use rusqlite::{params, Connection};

use super::EmbeddedStore;
use crate::ports::StoreError;

/// The ledger and queue key of the health probe's rows, which never outlive the probe's savepoint.
/// No event's key can be it: every idempotency key holds a `:`.
const PROBE_KEY: &str = "health-probe";

/// Counts of what the database holds, for tests and `healthz`-style introspection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub ledger: u64,
    pub queued: u64,
    pub quarantined: u64,
    pub dead_letters: u64,
    pub messages: u64,
}

impl EmbeddedStore {
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
}

fn count_rows(conn: &Connection, table: &str) -> rusqlite::Result<u64> {
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
        row.get(0)
    })
}

/// Rewrites the health row: a page written and synced at the commit.
pub(super) fn probe(conn: &Connection, at: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO health (id, probed_at) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
    )?
    .execute([at])?;
    Ok(())
}

/// [`probe`], plus a ledger row and a queue row written and removed in the same savepoint: the
/// tables (and indexes) a webhook writes must take a write too.
pub(super) fn probe_intake(conn: &Connection, at: i64) -> rusqlite::Result<()> {
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
    use std::path::Path;
    use std::time::Duration;

    use super::super::schema::connect;
    use super::*;
    use crate::ports::StateStore;

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
}
