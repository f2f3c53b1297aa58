//! The ledger in the intake database: one row per idempotency key (dedup window, the archived
//! body, redrive marks), [`Ledger`] for the store, and the receiver's quarantine.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::EmbeddedStore;
use crate::ports::{
    Ledger, LedgerEntry, MarkCursor, Marked, MarkedPage, PartitionCursor, QuarantineEntry,
    QueuedEvent, Recorded, StoreError,
};

/// The one partition of redrive marks (the `ledger_by_redrive` index).
const MARK_PARTITION: &str = "ledger";

/// When a ledger row's key may be taken by a new event: its `expires_at`, or never (NULL) while
/// the row is marked for redrive, since it holds an event not yet delivered. The rule
/// [`EmbeddedStore::prune`](super::retention) follows, and the TTL's on DynamoDB.
const LEDGER_EXPIRY: &str = "CASE WHEN redrive_at IS NULL THEN expires_at END";

impl EmbeddedStore {
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

/// Records `entry` unless its key is held and unexpired (see [`Ledger::record`]).
pub(super) fn record_in(conn: &Connection, entry: &LedgerEntry) -> rusqlite::Result<Recorded> {
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

/// A ledger row (`key, received_at, body`) as the event it archives.
fn queued_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<QueuedEvent> {
    let body: Vec<u8> = row.get(2)?;
    Ok(QueuedEvent::archived(
        row.get::<_, String>(0)?,
        row.get(1)?,
        String::from_utf8_lossy(&body),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::tests::entry;
    use super::super::EmbeddedStore;
    use crate::ports::{Intake, Recorded};

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
        assert_eq!(store.redrive_dead_letters(None).await.unwrap(), 2);
        let redriven = store.receive(10, 60_000).await.unwrap();
        let bodies: Vec<_> = redriven.into_iter().map(|d| d.event).collect();
        assert_eq!(bodies, vec![first, second]);
    }
}
