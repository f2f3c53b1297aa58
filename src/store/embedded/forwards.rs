//! The forwarder's progress ([`crate::forward`]), in the state database beside the outbox it reads:
//! a cursor into `changes` and one row per change taken from it, so that a restart resumes
//! without losing or skipping a change.
//!
//! Table `forward_cursor`: the `seq` of the last change taken. Table `forwards`: per change, its
//! `status` (`pending`, `delivered`, `dead`), `attempts`, `first_attempt_at`, `last_attempt_at`
//! and `next_attempt_at` (milliseconds since the epoch) and `last_error` (a dead change's reason).
//! Changes are taken and the cursor moved in one transaction; a change is `pending` until an
//! attempt's outcome is recorded, so one in flight when the process dies is sent again (at least
//! once: its `webhook-id` is the change's stable id).

use rusqlite::{params, Connection, OptionalExtension};

use super::EmbeddedStore;
use crate::ports::StoreError;

pub(super) const FORWARDS_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS forward_cursor (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS forwards (
    change_id        TEXT PRIMARY KEY,
    seq              INTEGER NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    first_attempt_at INTEGER,
    last_attempt_at  INTEGER,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT
);
-- The due query's order: with every new change due at 0, an index on the time alone left SQLite
-- sorting every pending row by seq for each pass (80 ms at 40,000 pending).
DROP INDEX IF EXISTS forwards_due;
CREATE INDEX IF NOT EXISTS forwards_due_in_order ON forwards(next_attempt_at, seq)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS forwards_dead ON forwards(seq) WHERE status = 'dead';
"#;

/// A pending change whose next attempt is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueForward {
    pub change_id: String,
    /// The change document, as the outbox holds it (the body to send).
    pub document: String,
    pub attempts: u32,
    /// Milliseconds since the epoch; `None` before the first attempt.
    pub first_attempt_at: Option<i64>,
}

/// How an attempt ended, as recorded (times in milliseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardOutcome {
    Delivered,
    /// Failed; tried again at `next_attempt_at`.
    Retry {
        next_attempt_at: i64,
        error: String,
    },
    /// Not tried again until resent (`wati-ingest forwards resend`).
    Dead {
        reason: String,
    },
}

/// A dead-lettered change, as `wati-ingest forwards` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadForward {
    pub change_id: String,
    pub change_type: String,
    pub attempts: u32,
    pub reason: String,
    pub first_attempt_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
}

/// How many changes the forwarder holds in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardCounts {
    pub pending: usize,
    pub delivered: usize,
    pub dead: usize,
    /// Changes in the outbox the forwarder has not taken yet.
    pub not_taken: usize,
}

impl ForwardCounts {
    /// Changes not yet delivered or dead-lettered.
    pub fn backlog(&self) -> usize {
        self.pending + self.not_taken
    }
}

fn cursor(conn: &Connection) -> rusqlite::Result<i64> {
    Ok(conn
        .prepare_cached("SELECT seq FROM forward_cursor WHERE id = 1")?
        .query_row([], |row| row.get(0))
        .optional()?
        .unwrap_or(0))
}

/// The outbox's last `seq` (0 when empty).
fn last_seq(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT coalesce(max(seq), 0) FROM changes")?
        .query_row([], |row| row.get(0))
}

/// Takes up to `limit` changes after the cursor as pending (due now) and moves the cursor past
/// them; returns how many.
pub(super) fn take_changes(conn: &Connection, limit: usize) -> rusqlite::Result<usize> {
    let after = cursor(conn)?;
    let last: Option<i64> = conn
        .prepare_cached(
            "SELECT max(seq) FROM (SELECT seq FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2)",
        )?
        .query_row(params![after, limit as i64], |row| row.get(0))?;
    let Some(last) = last else {
        return Ok(0);
    };
    let taken = conn
        .prepare_cached(
            "INSERT INTO forwards (change_id, seq, status, next_attempt_at)
             SELECT id, seq, 'pending', 0 FROM changes WHERE seq > ?1 AND seq <= ?2
             ON CONFLICT (change_id) DO NOTHING",
        )?
        .execute(params![after, last])?;
    conn.prepare_cached(
        "INSERT INTO forward_cursor (id, seq) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET seq = excluded.seq",
    )?
    .execute(params![last])?;
    Ok(taken)
}

/// Pending changes due at `?1`, the longest due first, at most `?2`.
const DUE: &str = "SELECT f.change_id, c.document, f.attempts, f.first_attempt_at
    FROM forwards f JOIN changes c ON c.id = f.change_id
    WHERE f.status = 'pending' AND f.next_attempt_at <= ?1
    ORDER BY f.next_attempt_at, f.seq LIMIT ?2";

pub(super) fn due(
    conn: &Connection,
    now_ms: i64,
    limit: usize,
) -> rusqlite::Result<Vec<DueForward>> {
    conn.prepare_cached(DUE)?
        .query_map(params![now_ms, limit as i64], |row| {
            Ok(DueForward {
                change_id: row.get(0)?,
                document: row.get(1)?,
                attempts: row.get(2)?,
                first_attempt_at: row.get(3)?,
            })
        })?
        .collect()
}

/// Records the outcome of an attempt started at `started_ms`.
pub(super) fn record(
    conn: &Connection,
    change_id: &str,
    started_ms: i64,
    outcome: &ForwardOutcome,
) -> rusqlite::Result<()> {
    let (status, next, error) = match outcome {
        ForwardOutcome::Delivered => ("delivered", 0, None),
        ForwardOutcome::Retry {
            next_attempt_at,
            error,
        } => ("pending", *next_attempt_at, Some(error.as_str())),
        ForwardOutcome::Dead { reason } => ("dead", 0, Some(reason.as_str())),
    };
    conn.prepare_cached(
        "UPDATE forwards SET status = ?2, attempts = attempts + 1,
             first_attempt_at = coalesce(first_attempt_at, ?3), last_attempt_at = ?3,
             next_attempt_at = ?4, last_error = ?5
         WHERE change_id = ?1 AND status = 'pending'",
    )?
    .execute(params![change_id, status, started_ms, next, error])?;
    Ok(())
}

pub(super) fn dead(conn: &Connection) -> rusqlite::Result<Vec<DeadForward>> {
    conn.prepare_cached(
        "SELECT f.change_id, coalesce(c.type, ''), f.attempts, coalesce(f.last_error, ''),
                f.first_attempt_at, f.last_attempt_at
         FROM forwards f LEFT JOIN changes c ON c.id = f.change_id
         WHERE f.status = 'dead' ORDER BY f.seq",
    )?
    .query_map([], |row| {
        Ok(DeadForward {
            change_id: row.get(0)?,
            change_type: row.get(1)?,
            attempts: row.get(2)?,
            reason: row.get(3)?,
            first_attempt_at: row.get(4)?,
            last_attempt_at: row.get(5)?,
        })
    })?
    .collect()
}

/// Makes dead changes pending again, due now, with a fresh retry horizon: the one named
/// `change_id`, or all of them; returns how many.
pub(super) fn resend(conn: &Connection, change_id: Option<&str>) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "UPDATE forwards SET status = 'pending', attempts = 0, first_attempt_at = NULL,
             next_attempt_at = 0, last_error = NULL
         WHERE status = 'dead' AND (?1 IS NULL OR change_id = ?1)",
    )?
    .execute(params![change_id])
}

impl EmbeddedStore {
    /// Takes the changes the outbox gained since the last call (up to `limit`) for forwarding;
    /// writes only when there are some.
    pub async fn take_changes_to_forward(&self, limit: usize) -> Result<usize, StoreError> {
        let behind = self
            .state()
            .read("read the forward cursor", |conn| {
                Ok(last_seq(conn)? > cursor(conn)?)
            })
            .await?;
        if !behind {
            return Ok(0);
        }
        self.state()
            .write("take changes to forward", move |conn| {
                take_changes(conn, limit)
            })
            .await
    }

    /// Up to `limit` pending changes due at `now_ms`, the longest due first.
    pub async fn due_forwards(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueForward>, StoreError> {
        self.state()
            .read("read due forwards", move |conn| due(conn, now_ms, limit))
            .await
    }

    /// Records how attempts ended, `(change_id, started_ms, outcome)` each, and takes up to
    /// `take` new changes for forwarding, in one transaction: the forwarder records every attempt
    /// that ended together, so its writes do not grow with the rate of attempts. Returns how many
    /// changes it took.
    pub async fn record_forwards(
        &self,
        outcomes: Vec<(String, i64, ForwardOutcome)>,
        take: usize,
    ) -> Result<usize, StoreError> {
        self.state()
            .write("record forwards", move |conn| {
                for (change_id, started_ms, outcome) in &outcomes {
                    record(conn, change_id, *started_ms, outcome)?;
                }
                if take == 0 || last_seq(conn)? <= cursor(conn)? {
                    return Ok(0);
                }
                take_changes(conn, take)
            })
            .await
    }

    /// The dead-lettered changes, oldest first.
    pub async fn dead_forwards(&self) -> Result<Vec<DeadForward>, StoreError> {
        self.state().read("read dead forwards", dead).await
    }

    /// Makes the dead change `change_id` (or every dead change) pending again; returns how many.
    pub async fn resend_forwards(&self, change_id: Option<String>) -> Result<usize, StoreError> {
        self.state()
            .write("resend forwards", move |conn| {
                resend(conn, change_id.as_deref())
            })
            .await
    }

    pub async fn forward_counts(&self) -> Result<ForwardCounts, StoreError> {
        self.state()
            .read("count forwards", |conn| {
                let mut counts = ForwardCounts::default();
                let mut query =
                    conn.prepare_cached("SELECT status, count(*) FROM forwards GROUP BY status")?;
                let rows = query.query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })?;
                for row in rows {
                    let (status, count) = row?;
                    let count = count as usize;
                    match status.as_str() {
                        "pending" => counts.pending = count,
                        "delivered" => counts.delivered = count,
                        _ => counts.dead += count,
                    }
                }
                counts.not_taken = conn
                    .prepare_cached("SELECT count(*) FROM changes WHERE seq > ?1")?
                    .query_row([cursor(conn)?], |row| row.get::<_, i64>(0))?
                    as usize;
                Ok(counts)
            })
            .await
    }

    /// The outbox's last position (`seq`; 0 when empty): where `wati-ingest tail` starts.
    pub async fn last_change_seq(&self) -> Result<i64, StoreError> {
        self.state().read("read the last change", last_seq).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("t.db")).unwrap();
        drop(store);
        let conn = super::super::schema::connect(&dir.path().join("t.state.db")).unwrap();
        (dir, conn)
    }

    fn add_change(conn: &Connection, id: &str) {
        conn.execute(
            "INSERT INTO changes (id, type, document, recorded_at) VALUES (?1, 'message.updated', ?2, 0)",
            params![id, format!(r#"{{"id":"{id}"}}"#)],
        )
        .unwrap();
    }

    fn ids(due: &[DueForward]) -> Vec<&str> {
        due.iter().map(|d| d.change_id.as_str()).collect()
    }

    /// Each change is taken once, in order, however the takes and new changes interleave; an
    /// outcome moves it out of (or later in) the due list; resend brings a dead one back.
    #[test]
    fn changes_are_taken_once_and_retried_until_an_outcome() {
        let (_dir, conn) = open();
        add_change(&conn, "a");
        add_change(&conn, "b");
        add_change(&conn, "c");
        assert_eq!(take_changes(&conn, 2).unwrap(), 2);
        add_change(&conn, "d");
        assert_eq!(take_changes(&conn, 10).unwrap(), 2);
        assert_eq!(take_changes(&conn, 10).unwrap(), 0);
        assert_eq!(
            ids(&due(&conn, 1_000, 10).unwrap()),
            ["a", "b", "c", "d"],
            "none lost, none twice"
        );
        record(&conn, "a", 1_000, &ForwardOutcome::Delivered).unwrap();
        let retry = ForwardOutcome::Retry {
            next_attempt_at: 5_000,
            error: "HTTP 500".into(),
        };
        record(&conn, "b", 1_000, &retry).unwrap();
        let gone = ForwardOutcome::Dead {
            reason: "410 Gone".into(),
        };
        record(&conn, "c", 1_000, &gone).unwrap();
        assert_eq!(ids(&due(&conn, 1_000, 10).unwrap()), ["d"]);
        let later = due(&conn, 5_000, 10).unwrap();
        assert_eq!(ids(&later), ["d", "b"], "the longest due first");
        assert_eq!(
            (later[1].attempts, later[1].first_attempt_at),
            (1, Some(1_000))
        );
        // An outcome recorded twice (a late answer) does not revive a delivered change.
        record(&conn, "a", 2_000, &retry).unwrap();
        assert_eq!(ids(&due(&conn, 9_000, 10).unwrap()), ["d", "b"]);

        let dead_now = dead(&conn).unwrap();
        assert_eq!(dead_now.len(), 1);
        assert_eq!(
            (dead_now[0].change_id.as_str(), dead_now[0].reason.as_str()),
            ("c", "410 Gone")
        );
        assert_eq!(resend(&conn, Some("nope")).unwrap(), 0);
        assert_eq!(resend(&conn, Some("c")).unwrap(), 1);
        assert!(dead(&conn).unwrap().is_empty());
        let again = due(&conn, 1_000, 10).unwrap();
        assert_eq!(ids(&again), ["c", "d"]);
        assert_eq!((again[0].attempts, again[0].first_attempt_at), (0, None));
    }

    /// The forwarder asks for due changes on every pass: the index gives them in order, so the
    /// pass does not sort every pending change (SQLite's plan says so).
    #[test]
    fn due_changes_come_from_the_index_in_order() {
        let (_dir, conn) = open();
        let plan = super::super::schema::query_plan(&conn, DUE, params![1, 8]);
        assert!(plan.contains("forwards_due_in_order"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }
}
