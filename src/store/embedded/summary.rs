//! The embedded store's contact summary ([`crate::contact_summary`]), both tables kept in the
//! transaction that applies each event:
//! - `contact_recent`: one row per message and contact name holding the message's [`Snapshot`].
//!   A contact's messages are, for each of its names, the latest row of each direction and the
//!   rows sent since the horizon: no message items.
//! - `contact_folds`: per contact name, the [timeless fold](ContactFold::timeless) of those
//!   messages. A contact read is that one row, rendered at the reading time; only when an
//!   entry lies after the reading time (Wati's clock ahead of ours) is it folded again from
//!   `contact_recent`.

use std::collections::BTreeSet;
use std::path::Path;

use rusqlite::{params, Connection};

use super::message_state::{direction_name, link_and_file, load_item, names_of, resolve_all};
use super::schema::{connect, returns_a_row};
use super::to_sql_error;
use crate::contact_summary::{join, Snapshot};
use crate::message::{Direction, MessageRecord};
use crate::message_items::Resolution;
use crate::ports::StoreError;
use crate::recent::Horizon;
use crate::session::{ContactFold, ContactView};

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

const FOLDS_SCHEMA: &str = "
CREATE TABLE contact_folds (
    name TEXT PRIMARY KEY,
    fold TEXT NOT NULL
);
";

/// Replaces the snapshot of the message whose items are under `keys` (every key its resolution
/// reached: an earlier snapshot, taken before some of them were linked, is filed under one).
pub(super) fn file(
    conn: &Connection,
    keys: &[String],
    message: &MessageRecord,
) -> rusqlite::Result<()> {
    // Filed under its least key: (that key, the snapshot, its stored form).
    let filed = Snapshot::of(keys.iter().cloned(), message)
        .and_then(|snapshot| Some((keys.iter().min()?.clone(), snapshot.encode(), snapshot)));
    // Rows as they are and as they should be: (name, message key, snapshot). Most events (a read
    // after a delivery, a v2 twin) leave the snapshot as it was: nothing is written then.
    let mut stored: BTreeSet<(String, String, String)> = BTreeSet::new();
    for key in keys {
        let rows = conn
            .prepare_cached("SELECT name, snapshot FROM contact_recent WHERE message = ?1")?
            .query_map([key], |row| Ok((row.get(0)?, key.clone(), row.get(1)?)))?
            .collect::<rusqlite::Result<Vec<(String, String, String)>>>()?;
        stored.extend(rows);
    }
    let wanted: BTreeSet<(String, String, String)> = match &filed {
        Some((message_key, encoded, snapshot)) => snapshot
            .names()
            .map(|name| (name.to_owned(), message_key.clone(), encoded.clone()))
            .collect(),
        None => BTreeSet::new(),
    };
    if stored == wanted {
        return Ok(());
    }
    for key in keys {
        conn.prepare_cached("DELETE FROM contact_recent WHERE message = ?1")?
            .execute([key])?;
    }
    let Some((message_key, encoded, snapshot)) = filed else {
        return Ok(());
    };
    for name in snapshot.names() {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO contact_recent (name, message, direction, sent_at, snapshot)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            name,
            message_key,
            direction_name(snapshot.record.direction()),
            snapshot.record.sent_at,
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

/// Keeps the fold of every contact name whose view `message` is part of (its names and the
/// names linked to them), and returns the view at `now` of the name it is filed under.
pub(super) fn refold(
    conn: &Connection,
    message: &MessageRecord,
    now: i64,
) -> rusqlite::Result<Option<ContactView>> {
    let Some(own) = message.contact() else {
        return Ok(None);
    };
    let mut names: BTreeSet<String> = BTreeSet::new();
    for name in [&message.wa_id, &message.bsuid].into_iter().flatten() {
        names.extend(names_of(conn, name)?);
    }
    let mut view = None;
    for name in names {
        let messages = recent_messages(conn, &name)?;
        let fold = ContactFold::timeless(&messages);
        let json = fold
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(to_sql_error)?;
        if kept_fold(conn, &name)? != json {
            match &json {
                Some(json) => conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO contact_folds (name, fold) VALUES (?1, ?2)",
                    )?
                    .execute(params![name, json])?,
                None => conn
                    .prepare_cached("DELETE FROM contact_folds WHERE name = ?1")?
                    .execute([&name])?,
            };
        }
        if name == own {
            view = match fold {
                Some(fold) if fold.holds_at(now) => Some(fold.view(now)),
                _ => ContactView::from_messages(&messages, now),
            };
        }
    }
    Ok(view)
}

/// The view at `now` of the contact named `contact`: its kept fold, or (when an entry lies
/// after `now`) a fold of its messages at `now`.
pub(super) fn contact_view(
    conn: &Connection,
    contact: &str,
    now: i64,
) -> rusqlite::Result<Option<ContactView>> {
    let Some(kept) = kept_fold(conn, contact)? else {
        return Ok(None);
    };
    let fold: ContactFold = serde_json::from_str(&kept).map_err(to_sql_error)?;
    if fold.holds_at(now) {
        return Ok(Some(fold.view(now)));
    }
    Ok(ContactView::from_messages(
        &recent_messages(conn, contact)?,
        now,
    ))
}

/// The fold kept for `name`, as stored.
fn kept_fold(conn: &Connection, name: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT fold FROM contact_folds WHERE name = ?1")?
        .query_map([name], |row| row.get(0))?
        .next()
        .transpose()
}

/// Stores made before the summary: create its tables and fill them from every message that
/// names a contact and reports a send, each in one transaction at start-up (after the other
/// migrations).
pub(super) fn create_and_fill(state_path: &Path) -> Result<(), StoreError> {
    let conn = connect(state_path)?;
    in_transaction(
        &conn,
        "contact_recent",
        "fill the contact summary",
        fill_snapshots,
    )?;
    in_transaction(&conn, "contact_folds", "fill the contact folds", fill_folds)
}

fn fill_folds(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(FOLDS_SCHEMA)?;
    let names: Vec<String> = conn
        .prepare(
            "SELECT name FROM contact_recent UNION SELECT wa_id FROM contact_ids
             UNION SELECT bsuid FROM contact_ids",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for name in names {
        if let Some(fold) = ContactFold::timeless(&recent_messages(conn, &name)?) {
            let json = serde_json::to_string(&fold).map_err(to_sql_error)?;
            conn.execute(
                "INSERT INTO contact_folds (name, fold) VALUES (?1, ?2)",
                params![name, json],
            )?;
        }
    }
    Ok(())
}

fn fill_snapshots(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SUMMARY_SCHEMA)?;
    let homes: Vec<String> = conn
        // Every item: a message's name and its sent time may be on different ones.
        .prepare("SELECT id FROM messages")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut filed: BTreeSet<String> = BTreeSet::new();
    for home in homes {
        if filed.contains(&home) {
            continue;
        }
        let Some(item) = load_item(conn, &home)? else {
            continue;
        };
        let mut resolution = [Resolution::from_home(item)];
        resolve_all(conn, &mut resolution)?;
        let [resolution] = resolution;
        let keys = resolution.keys();
        if let Some(message) = resolution.message() {
            link_and_file(conn, &keys, &message)?;
        }
        filed.extend(keys);
    }
    Ok(())
}

/// Creates and fills `table` with `fill` unless it exists, in one transaction that holds the
/// write lock from the check on (a second process opening the store at once waits, then finds
/// the table): all of it, or nothing (the next start-up tries again).
fn in_transaction(
    conn: &Connection,
    table: &str,
    what: &'static str,
    fill: fn(&Connection) -> rusqlite::Result<()>,
) -> Result<(), StoreError> {
    let run = || -> rusqlite::Result<()> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let exists = returns_a_row(
            conn,
            &format!("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{table}'"),
        )?;
        if !exists {
            fill(conn)?;
        }
        conn.execute_batch("COMMIT")
    };
    run().map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        StoreError::unavailable(what, e)
    })
}

#[cfg(test)]
mod tests {
    use super::super::schema::query_plan;
    use super::*;
    use crate::ports::StateStore;

    /// A store from before the summary, holding a message whose phone number and BSUID came
    /// from different events (v1 and v2 twins) and no link between them (that release linked
    /// only an event's own two names): opening it fills the summary and links the names, so the
    /// contact reads the same by either. Planted: the fill not linking, and the read by BSUID
    /// misses the contact's other message.
    #[tokio::test]
    async fn a_store_from_before_the_summary_gains_it_with_its_names_linked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let facts = |body: &str| {
            let event = crate::event::WatiEvent::parse(body.as_bytes()).unwrap();
            MessageRecord::from_event(&event, 1_700_000_500).unwrap()
        };
        {
            let store = super::super::EmbeddedStore::open(&path).unwrap();
            for body in [
                r#"{"eventType":"message","id":"t1","owner":false,"waId":"4917","timestamp":"1700000100"}"#,
                r#"{"eventType":"message","id":"t1","owner":false,"bsuid":"US.9","timestamp":"1700000100"}"#,
                r#"{"eventType":"message","id":"t2","owner":false,"waId":"4917","timestamp":"1700000200"}"#,
            ] {
                store.apply(&facts(body), None).await.unwrap();
            }
        }
        // What the earlier release left: no summary tables, no link.
        connect(&path.with_extension("state.db"))
            .unwrap()
            .execute_batch(
                "DROP TABLE contact_recent; DROP TABLE contact_folds; DELETE FROM contact_ids;",
            )
            .unwrap();
        let store = super::super::EmbeddedStore::open(&path).unwrap();
        for name in ["4917", "US.9"] {
            let view = store.contact(name, 1_700_000_600).await.unwrap();
            let view = view.unwrap_or_else(|| panic!("a view by {name}")).default;
            assert_eq!(
                (view.wa_id.as_deref(), view.bsuid.as_deref()),
                (Some("4917"), Some("US.9")),
                "by {name}"
            );
            assert_eq!(view.session.customer_messages, 2, "by {name}");
        }
    }

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
            let plan = query_plan(
                &conn,
                query,
                rusqlite::params_from_iter(&values[..parameters]),
            );
            assert!(plan.contains("USING INDEX"), "{query}: {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{query}: {plan}");
        }
    }
}
