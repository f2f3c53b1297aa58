//! The operator's view of the intake database: both quarantines (one table, a `stage` column)
//! and the dead letters, for `wati-ingest inspect`, `quarantine`, `dead-letters`, `redrive-dlq`
//! and `replay --include-quarantined`.

use async_trait::async_trait;
use rusqlite::params;

use super::EmbeddedStore;
use crate::ports::{
    DeadLetter, DeadLetters, EventCounts, QuarantineArchive, QuarantineEntry, QuarantineStage,
    QuarantinedBody, QueuedEvent, StoreError,
};

const QUARANTINE_COLUMNS: &str = "key, reason, body, received_at, stage";

fn quarantined_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<QuarantinedBody> {
    let stage: String = row.get(4)?;
    Ok(QuarantinedBody {
        stage: if stage == "receiver" {
            QuarantineStage::Receiver
        } else {
            QuarantineStage::Processor
        },
        entry: QuarantineEntry {
            key: row.get(0)?,
            reason: row.get(1)?,
            body: row.get::<_, Option<Vec<u8>>>(2)?.unwrap_or_default(),
            received_at: row.get(3)?,
        },
    })
}

#[async_trait]
impl QuarantineArchive for EmbeddedStore {
    async fn quarantined_under(&self, key: &str) -> Result<Vec<QuarantinedBody>, StoreError> {
        let key = key.to_owned();
        self.intake()
            .read("read quarantine", move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE key = ?1"
                ))?
                .query_map([key], quarantined_from_row)?
                .collect()
            })
            .await
    }

    async fn recent_quarantined(&self, limit: usize) -> Result<Vec<QuarantinedBody>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.intake()
            .read("list quarantine", move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {QUARANTINE_COLUMNS} FROM quarantine
                     ORDER BY received_at DESC, key LIMIT ?1"
                ))?
                .query_map([limit], quarantined_from_row)?
                .collect()
            })
            .await
    }

    async fn receiver_quarantined_between(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<QueuedEvent>, StoreError> {
        self.intake()
            .read("scan quarantine", move |conn| {
                conn.prepare_cached(
                    "SELECT key, received_at, body FROM quarantine
                     WHERE stage = 'receiver' AND received_at BETWEEN ?1 AND ?2
                     ORDER BY received_at, key",
                )?
                .query_map(params![since, until], |row| {
                    let body: Option<Vec<u8>> = row.get(2)?;
                    Ok(QueuedEvent::archived(
                        row.get::<_, String>(0)?,
                        row.get(1)?,
                        String::from_utf8_lossy(&body.unwrap_or_default()),
                    ))
                })?
                .collect()
            })
            .await
    }
}

#[async_trait]
impl DeadLetters for EmbeddedStore {
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.intake()
            .read("list dead letters", move |conn| {
                conn.prepare_cached(
                    "SELECT key, received_at, attempts, error FROM dead_letters
                     ORDER BY seq LIMIT ?1",
                )?
                .query_map([limit], |row| {
                    Ok(DeadLetter {
                        key: row.get(0)?,
                        received_at: row.get(1)?,
                        attempts: row.get(2)?,
                        reason: row.get(3)?,
                    })
                })?
                .collect()
            })
            .await
    }

    async fn redrive(&self, key: Option<&str>) -> Result<usize, StoreError> {
        self.redrive_dead_letters(key).await
    }
}

#[async_trait]
impl EventCounts for EmbeddedStore {
    /// From the ledger (its rows live for the dedup window, days: today is always there).
    async fn counts_since(&self, since: i64) -> Result<Vec<(String, u64)>, StoreError> {
        self.intake()
            .read("count events", move |conn| {
                conn.prepare_cached(
                    "SELECT event_type, COUNT(*) FROM ledger WHERE received_at >= ?1
                     GROUP BY event_type ORDER BY event_type",
                )?
                .query_map([since], |row| {
                    Ok((row.get(0)?, row.get::<_, i64>(1)?.max(0) as u64))
                })?
                .collect()
            })
            .await
    }
}
