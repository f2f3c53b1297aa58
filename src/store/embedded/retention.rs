//! Retention in the intake database, as DynamoDB's TTL does it on AWS: ledger rows past their
//! dedup window (`expires_at`), and quarantined bodies older than the quarantine retention, are
//! deleted by [`EmbeddedStore::prune`], which the local pipeline runs every hour.
//!
//! Kept whatever their age: a ledger row marked for redrive (its event was never delivered), and
//! one whose body a queued event still refers to (a queue row keeps `body` NULL while the ledger
//! holds it). Deletes go in batches, so that the writer is never held for long.

use rusqlite::params;

use super::EmbeddedStore;
use crate::ports::StoreError;

/// Rows deleted per write (one transaction each).
const BATCH: i64 = 5_000;

/// What one prune deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub ledger: usize,
    pub quarantine: usize,
}

impl EmbeddedStore {
    /// Deletes the ledger rows expired at `now` and the quarantined bodies received more than
    /// `quarantine_retention_seconds` before it; returns how many of each.
    pub async fn prune(
        &self,
        now: i64,
        quarantine_retention_seconds: i64,
    ) -> Result<Pruned, StoreError> {
        let ledger = self
            .delete_in_batches(
                "prune the ledger",
                "DELETE FROM ledger WHERE key IN (
                     SELECT key FROM ledger
                     WHERE expires_at <= ?1 AND redrive_at IS NULL
                       AND key NOT IN (SELECT key FROM queue WHERE body IS NULL)
                     LIMIT ?2)",
                now,
            )
            .await?;
        let quarantine = self
            .delete_in_batches(
                "prune the quarantine",
                "DELETE FROM quarantine WHERE key IN (
                     SELECT key FROM quarantine WHERE received_at < ?1 LIMIT ?2)",
                now.saturating_sub(quarantine_retention_seconds),
            )
            .await?;
        Ok(Pruned { ledger, quarantine })
    }

    /// Runs `delete` (`?1`: `bound`, `?2`: the batch size) until a batch deletes fewer than
    /// [`BATCH`] rows; returns how many it deleted in all.
    async fn delete_in_batches(
        &self,
        operation: &'static str,
        delete: &'static str,
        bound: i64,
    ) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let deleted = self
                .intake()
                .write(operation, move |conn| {
                    conn.execute(delete, params![bound, BATCH])
                })
                .await?;
            total += deleted;
            if (deleted as i64) < BATCH {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{Intake, Ledger, LedgerEntry, QuarantineEntry, QueuedEvent, Recorded};

    fn entry(key: &str, received_at: i64, expires_at: i64) -> (LedgerEntry, QueuedEvent) {
        let body = format!(r#"{{"k":"{key}"}}"#);
        (
            LedgerEntry {
                key: key.into(),
                event_type: "message".into(),
                body: body.clone().into_bytes(),
                received_at,
                expires_at,
            },
            QueuedEvent::archived(key, received_at, body),
        )
    }

    /// Expired and unreferenced rows go; a marked row, a row a queued event still reads its body
    /// from, and an unexpired row stay; old quarantined bodies go, recent ones stay. A pruned
    /// key is accepted anew.
    #[tokio::test]
    async fn prune_deletes_what_ttl_would_and_nothing_still_needed() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("t.db")).unwrap();
        let now = 1_000_000;
        let (expired, _) = entry("expired", 10, now - 1);
        let (exact, _) = entry("expires-now", 10, now);
        let (fresh, _) = entry("fresh", now - 5, now + 100);
        let (marked, _) = entry("marked", 10, now - 1);
        let (queued_entry, queued) = entry("still-queued", 10, now - 1);
        for kept in [&expired, &exact, &fresh, &marked] {
            assert_eq!(store.record(kept).await.unwrap(), Recorded::New);
        }
        store.mark_for_redrive("marked", 20).await.unwrap();
        store.record_and_send(&queued_entry, &queued).await.unwrap();
        for (key, received_at) in [
            ("quarantine:old", now - 31 * 86_400),
            ("quarantine:new", now - 86_400),
        ] {
            store
                .quarantine(&QuarantineEntry {
                    key: key.into(),
                    reason: "not JSON".into(),
                    body: b"<".to_vec(),
                    received_at,
                })
                .await
                .unwrap();
        }

        let pruned = store.prune(now, 30 * 86_400).await.unwrap();
        assert_eq!(
            pruned,
            Pruned {
                ledger: 2,
                quarantine: 1
            }
        );
        for (key, kept) in [
            ("expired", false),
            ("expires-now", false),
            ("fresh", true),
            ("marked", true),
            ("still-queued", true),
        ] {
            assert_eq!(store.archived(key).await.unwrap().is_some(), kept, "{key}");
        }
        assert_eq!(
            store.quarantined_body("quarantine:old").await.unwrap(),
            None
        );
        assert!(store
            .quarantined_body("quarantine:new")
            .await
            .unwrap()
            .is_some());
        let delivery = store.receive(1, 60_000).await.unwrap();
        assert_eq!(
            delivery[0].event, queued,
            "the queued event still has its body"
        );
        assert_eq!(
            store.prune(now, 30 * 86_400).await.unwrap(),
            Pruned::default()
        );
        assert_eq!(store.record(&expired).await.unwrap(), Recorded::New);
    }
}
