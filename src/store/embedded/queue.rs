//! The local queue in the intake database: what the local processor receives, acknowledges,
//! retries and dead-letters (like SQS with a redrive), and [`Queue`] and [`Intake`] for the
//! store. A queue row written with its ledger row refers to the ledger's copy of the body.

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use rusqlite::{params, Connection};

use super::ledger::record_in;
use super::{now_ms, EmbeddedStore};
use crate::ports::{Intake, LedgerEntry, Queue, QueuedEvent, Recorded, StoreError};

/// A queue row's body: its own, or else its ledger row's. The pruner keeps a ledger row a queue
/// row refers to ([`super::retention`]) and a reused key copies its old body into the queue first
/// (`record_in`), so the ledger's is the one enqueued; `''` (quarantined by the processor as unparseable) only if a row was deleted by hand.
const QUEUED_BODY: &str = "COALESCE(queue.body, \
     (SELECT CAST(ledger.body AS TEXT) FROM ledger WHERE ledger.key = queue.key), '')";

/// One queued event handed to the local processor.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub seq: i64,
    pub attempts: u32,
    pub event: QueuedEvent,
}

impl EmbeddedStore {
    /// Takes up to `limit` visible events and hides them for `visibility_ms`, like an SQS receive.
    pub async fn receive(
        &self,
        limit: u32,
        visibility_ms: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let received = self
            .intake()
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
            .await;
        // A failed receive says nothing about a backlog: not behind, so forwarding is not held
        // back for as long as receives fail.
        let full = received.as_ref().is_ok_and(|received| {
            u32::try_from(received.len()).is_ok_and(|taken| taken >= limit.max(1))
        });
        self.inner.backlogged.store(full, Ordering::Relaxed);
        received
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

    /// Moves the dead-lettered events under `key` (`None`: every one) back onto the queue;
    /// returns how many.
    pub async fn redrive_dead_letters(&self, key: Option<&str>) -> Result<usize, StoreError> {
        let key = key.map(str::to_owned);
        let moved = self
            .intake()
            .write("redrive dead letters", move |conn| {
                // `?1 IS NULL`: every dead letter.
                let moved = conn.execute(
                    "INSERT INTO queue (key, received_at, body, attempts, visible_at, unarchived)
                     SELECT key, received_at, body, 0, 0, unarchived FROM dead_letters
                     WHERE ?1 IS NULL OR key = ?1 ORDER BY seq",
                    [&key],
                )?;
                conn.execute(
                    "DELETE FROM dead_letters WHERE ?1 IS NULL OR key = ?1",
                    [&key],
                )?;
                Ok(moved)
            })
            .await?;
        self.inner.queue_ready.notify_one();
        Ok(moved)
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

pub(super) fn enqueue_in(conn: &Connection, event: &QueuedEvent) -> rusqlite::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

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

        assert_eq!(store.redrive_dead_letters(None).await.unwrap(), 1);
        let counts = store.counts().await.unwrap();
        assert_eq!((counts.dead_letters, counts.queued), (0, 1));
        let again = store.receive(10, 60_000).await.unwrap();
        assert_eq!(again[0].event, event);
        assert_eq!(again[0].attempts, 1);
    }
}
