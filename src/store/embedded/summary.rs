//! The embedded store's contact summary ([`crate::contact_summary`]): table `contact_recent`, one
//! row per message and contact name holding the message's [`Snapshot`], replaced in the
//! transaction that applies each event. A contact read takes, for each of the contact's names,
//! the latest row of each direction and the rows sent since the horizon: no message items.

use std::collections::BTreeSet;
use std::path::Path;

use rusqlite::{params, Connection};

use super::message_state::{load_item, names_of, resolve_all};
use super::schema::{connect, returns_a_row};
use crate::contact_summary::{join, Snapshot};
use crate::message::{Direction, MessageRecord};
use crate::message_items::Resolution;
use crate::ports::StoreError;
use crate::recent::Horizon;

const SUMMARY_SCHEMA: &str = "
CREATE TABLE contact_recent (
    name      TEXT NOT NULL,
    message   TEXT NOT NULL,
    direction TEXT NOT NULL,
    sent_at   INTEGER NOT NULL,
    snapshot  TEXT NOT NULL,
    PRIMARY KEY (name, message)
);
CREATE INDEX contact_recent_by_sent ON contact_recent(name, direction, sent_at);
CREATE INDEX contact_recent_by_message ON contact_recent(message);
";

fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

/// Replaces the snapshot of the message whose items are under `keys` (every key its resolution
/// reached: an earlier snapshot, taken before some of them were linked, is filed under one).
pub(super) fn file(
    conn: &Connection,
    keys: &[String],
    message: &MessageRecord,
) -> rusqlite::Result<()> {
    for key in keys {
        conn.prepare_cached("DELETE FROM contact_recent WHERE message = ?1")?
            .execute([key])?;
    }
    let Some(snapshot) = Snapshot::of(keys.iter().cloned(), message) else {
        return Ok(());
    };
    let (Some(message_key), Some(sent_at)) = (keys.iter().min(), snapshot.record.sent_at) else {
        return Ok(());
    };
    let encoded = snapshot.encode();
    for name in snapshot.names() {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO contact_recent (name, message, direction, sent_at, snapshot)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            name,
            message_key,
            direction_name(snapshot.record.direction()),
            sent_at,
            encoded
        ])?;
    }
    Ok(())
}

/// The messages of a contact (by either of its names) that its view reads, and maybe a few
/// more: for each name, the latest of each direction, then every one sent since the horizon.
pub(super) fn recent_messages(
    conn: &Connection,
    contact: &str,
) -> rusqlite::Result<Vec<MessageRecord>> {
    let names = names_of(conn, contact)?;
    let mut snapshots = Vec::new();
    let mut latest: [Option<i64>; 2] = [None, None];
    for name in &names {
        for (slot, direction) in [Direction::Inbound, Direction::Outbound]
            .into_iter()
            .enumerate()
        {
            let row = conn
                .prepare_cached(
                    "SELECT snapshot FROM contact_recent WHERE name = ?1 AND direction = ?2
                     ORDER BY sent_at DESC LIMIT 1",
                )?
                .query_map(params![name, direction_name(direction)], |row| {
                    row.get::<_, String>(0)
                })?
                .next()
                .transpose()?;
            if let Some(snapshot) = row.as_deref().and_then(Snapshot::decode) {
                latest[slot] = latest[slot].max(snapshot.record.sent_at);
                snapshots.push(snapshot);
            }
        }
    }
    let Some(horizon) = Horizon::new(latest[0], latest[1]) else {
        return Ok(Vec::new());
    };
    for name in &names {
        for direction in [Direction::Inbound, Direction::Outbound] {
            let mut query = conn.prepare_cached(
                "SELECT snapshot FROM contact_recent
                 WHERE name = ?1 AND direction = ?2 AND sent_at >= ?3",
            )?;
            let rows = query.query_map(
                params![name, direction_name(direction), horizon.from],
                |row| row.get::<_, String>(0),
            )?;
            for row in rows {
                snapshots.extend(Snapshot::decode(&row?));
            }
        }
    }
    // A message that names both of the contact's names is filed under each.
    Ok(join(snapshots))
}

/// Stores made before the summary: create it and file every message that names a contact and
/// reports a send, in one transaction at start-up (after the other migrations).
pub(super) fn create_and_fill(state_path: &Path) -> Result<(), StoreError> {
    let conn = connect(state_path)?;
    let exists = returns_a_row(
        &conn,
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'contact_recent'",
    )
    .map_err(|e| StoreError::unavailable("look for the contact summary", e))?;
    if exists {
        return Ok(());
    }
    let migrate = || -> rusqlite::Result<()> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        conn.execute_batch(SUMMARY_SCHEMA)?;
        let homes: Vec<String> = conn
            .prepare(
                "SELECT id FROM messages WHERE sent_at IS NOT NULL
                 AND (wa_id IS NOT NULL OR bsuid IS NOT NULL)",
            )?
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut filed: BTreeSet<String> = BTreeSet::new();
        for home in homes {
            if filed.contains(&home) {
                continue;
            }
            let Some(item) = load_item(&conn, &home)? else {
                continue;
            };
            let mut resolution = [Resolution::from_home(item)];
            resolve_all(&conn, &mut resolution)?;
            let [resolution] = resolution;
            let keys = resolution.keys();
            if let Some(message) = resolution.message() {
                file(&conn, &keys, &message)?;
            }
            filed.extend(keys);
        }
        conn.execute_batch("COMMIT")
    };
    migrate().map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        StoreError::unavailable("fill the contact summary", e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A contact read must not scan the table or sort: SQLite's plan says so.
    #[test]
    fn contact_reads_are_served_by_the_sent_index() {
        let conn = Connection::open_in_memory().expect("memory db");
        conn.execute_batch(SUMMARY_SCHEMA).expect("schema");
        for (query, parameters) in [
            (
                "SELECT snapshot FROM contact_recent WHERE name = ?1 AND direction = ?2
                 ORDER BY sent_at DESC LIMIT 1",
                2,
            ),
            (
                "SELECT snapshot FROM contact_recent
                 WHERE name = ?1 AND direction = ?2 AND sent_at >= ?3",
                3,
            ),
            ("DELETE FROM contact_recent WHERE message = ?1", 1),
        ] {
            let values = ["a", "inbound", "0"];
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
                .expect("plan")
                .query_map(rusqlite::params_from_iter(&values[..parameters]), |row| {
                    row.get::<_, String>(3)
                })
                .expect("rows")
                .collect::<rusqlite::Result<_>>()
                .expect("plan rows");
            let plan = plan.join("; ");
            assert!(plan.contains("USING INDEX"), "{query}: {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{query}: {plan}");
        }
    }
}
