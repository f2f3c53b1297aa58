//! The embedded store's state: message items (one per id, see [`crate::message_items`]) in the
//! state database, applied all-or-nothing per event and joined at read time exactly as on
//! DynamoDB, so both backends give one answer for any history, conflicting ones included.
//!
//! Table `messages`: `id` (the item's key), `wa_id` and `bsuid` (the contact names an event filed
//! there), `sent_at` and `direction` (the item's own, so a contact's message pages are read by an
//! index on name, direction and sent time), `record` (the item's
//! [`MessageRecord`] as JSON), `linked` (JSON array of link tokens, or NULL). Table
//! `contact_ids`: a contact's phone number and BSUID, linked whenever a message names both
//! (whether one event named both or each came from another). Contact views are read from the summary
//! ([`super::summary`]), which each applied event updates in its transaction.

use std::collections::BTreeSet;
use std::path::Path;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::health::{probe, probe_intake};
use super::outbox;
use super::schema::{connect, returns_a_row};
use super::summary;
use super::{decode, now_ms, to_sql_error, EmbeddedStore};
use crate::changes::item_changes;
use crate::contact_page::{cut, MessagePage, Position};
use crate::event::variant_key;
use crate::message::{Direction, MessageRecord};
use crate::message_items::{absorb, plan, Contradiction, MessageItem, Resolution};
use crate::ports::{MergeOutcome, QuarantineEntry, QueuedEvent, StateStore, StoreError};
use crate::session::ContactView;
use crate::time::now_unix;

pub(super) const STATE_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS messages (
    id        TEXT PRIMARY KEY,
    wa_id     TEXT,
    bsuid     TEXT,
    record    TEXT NOT NULL,
    linked    TEXT,
    sent_at   INTEGER,
    direction TEXT
);
CREATE TABLE IF NOT EXISTS message_ids (
    alias TEXT PRIMARY KEY,
    id    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS contact_ids (
    bsuid TEXT NOT NULL,
    wa_id TEXT NOT NULL,
    PRIMARY KEY (bsuid, wa_id)
);
CREATE INDEX IF NOT EXISTS contact_ids_by_wa_id ON contact_ids(wa_id);
"#;

/// Stores made before message items had one merged record per message (under its primary id)
/// and an alias table: give `messages` its `linked` column. Runs before the schema's `CREATE`s
/// matter, on the writer connection.
pub(super) fn add_linked_column(state: &Connection) -> rusqlite::Result<()> {
    if returns_a_row(
        state,
        "SELECT 1 FROM pragma_table_info('messages') WHERE name = 'linked'",
    )? {
        return Ok(());
    }
    state.execute_batch("ALTER TABLE messages ADD COLUMN linked TEXT")
}

/// The indexes of contact reads and pages: by name, direction, sent time and key (items with a
/// sent time only).
const CONTACT_INDEXES: &str = "
DROP INDEX IF EXISTS messages_by_wa_id;
DROP INDEX IF EXISTS messages_by_bsuid;
CREATE INDEX IF NOT EXISTS messages_by_wa_id_sent ON messages(wa_id, direction, sent_at, id)
    WHERE wa_id IS NOT NULL AND sent_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_by_bsuid_sent ON messages(bsuid, direction, sent_at, id)
    WHERE bsuid IS NOT NULL AND sent_at IS NOT NULL;
";

/// Stores made before contact reads were bounded: give `messages` its `sent_at` and `direction`
/// columns, filled from each item's record; then the indexes contact reads use.
pub(super) fn add_sent_columns(state: &Connection) -> rusqlite::Result<()> {
    if !returns_a_row(
        state,
        "SELECT 1 FROM pragma_table_info('messages') WHERE name = 'sent_at'",
    )? {
        state.execute_batch(
            "BEGIN IMMEDIATE;
             ALTER TABLE messages ADD COLUMN sent_at INTEGER;
             ALTER TABLE messages ADD COLUMN direction TEXT;
             UPDATE messages SET sent_at = json_extract(record, '$.sent_at'),
                 direction = coalesce(json_extract(record, '$.direction'), 'outbound');
             COMMIT;",
        )?;
    }
    state.execute_batch(CONTACT_INDEXES)
}

/// Turns the aliases of the earlier layout into edge items: a merged record already holds every
/// id of its message, so each alias becomes an item naming those ids, which confirms the edge.
/// Idempotent; runs at start-up once both databases are open (the move out of the intake
/// database may have just filled `message_ids`).
pub(super) fn edges_from_aliases(state_path: &Path) -> Result<(), StoreError> {
    let conn = connect(state_path)?;
    let migrate = || -> rusqlite::Result<()> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let aliases: Vec<(String, String)> = conn
            .prepare("SELECT alias, id FROM message_ids WHERE alias <> id")?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (alias, primary) in aliases {
            let Some(item) = load_item(&conn, &primary)? else {
                continue;
            };
            let edge = MessageRecord {
                id: item.record.id.clone(),
                whatsapp_message_id: item.record.whatsapp_message_id.clone(),
                local_message_id: item.record.local_message_id.clone(),
                ..MessageRecord::default()
            };
            let json = serde_json::to_string(&edge).map_err(to_sql_error)?;
            conn.execute(
                "INSERT OR IGNORE INTO messages (id, record) VALUES (?1, ?2)",
                params![alias, json],
            )?;
        }
        conn.execute_batch("DELETE FROM message_ids; COMMIT;")
    };
    migrate().map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        StoreError::unavailable("turn message aliases into items", e)
    })
}

pub(super) fn load_item(conn: &Connection, key: &str) -> rusqlite::Result<Option<MessageItem>> {
    let row: Option<(String, Option<String>)> = conn
        .prepare_cached("SELECT record, linked FROM messages WHERE id = ?1")?
        .query_row([key], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    row.map(|(record, linked)| item_from_row(key.to_owned(), &record, linked.as_deref()))
        .transpose()
}

fn item_from_row(key: String, record: &str, linked: Option<&str>) -> rusqlite::Result<MessageItem> {
    let record = decode(record).map_err(to_sql_error)?;
    let linked: BTreeSet<String> = match linked {
        Some(json) => serde_json::from_str(json).map_err(to_sql_error)?,
        None => BTreeSet::new(),
    };
    Ok(MessageItem {
        key,
        record,
        linked,
    })
}

fn store_item(conn: &Connection, item: &MessageItem) -> rusqlite::Result<()> {
    let record = serde_json::to_string(&item.record).map_err(to_sql_error)?;
    let linked = match item.linked.is_empty() {
        true => None,
        false => Some(serde_json::to_string(&item.linked).map_err(to_sql_error)?),
    };
    conn.prepare_cached(
        "INSERT INTO messages (id, wa_id, bsuid, record, linked, sent_at, direction)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (id) DO UPDATE SET wa_id = excluded.wa_id, bsuid = excluded.bsuid,
         record = excluded.record, linked = excluded.linked, sent_at = excluded.sent_at,
         direction = excluded.direction",
    )?
    .execute(params![
        item.key,
        item.record.wa_id,
        item.record.bsuid,
        record,
        linked,
        item.record.sent_at,
        direction_name(item.record.direction()),
    ])?;
    Ok(())
}

/// Applies every write of the event's plan, or none when one contradicts a stored item; and, in
/// the same transaction, announces what changed ([`outbox`]).
fn apply_facts(
    conn: &Connection,
    facts: &MessageRecord,
    now: i64,
    caused_by: Option<&str>,
) -> rusqlite::Result<Result<(), Contradiction>> {
    let Some(plan) = plan(facts) else {
        return Ok(Ok(()));
    };
    let mut items = Vec::new();
    for write in std::iter::once(&plan.home).chain(&plan.edges) {
        let before = load_item(conn, &write.key)?;
        match absorb(before.clone(), write) {
            Ok(item) => items.push((before, item)),
            Err(contradiction) => return Ok(Err(contradiction)),
        }
    }
    for (_, item) in &items {
        store_item(conn, item)?;
    }
    let mut linked = false;
    if let Some((wa_id, bsuid)) = &plan.contact_link {
        linked = link_names(conn, wa_id, bsuid)?;
    }
    // Anything stored changed (a fact, an id, a name, a business number, a link): the contact
    // summary may have. Nothing did: neither the summary nor a document can.
    if linked
        || items
            .iter()
            .any(|(before, after)| before.as_ref() != Some(after))
    {
        file_and_announce(conn, &plan.home.key, &items, now, caused_by)?;
    }
    Ok(Ok(()))
}

/// Files the event's message in its contact's summary and, when a fact a document carries
/// changed, announces it in the outbox.
fn file_and_announce(
    conn: &Connection,
    home: &str,
    items: &[(Option<MessageItem>, MessageItem)],
    now: i64,
    caused_by: Option<&str>,
) -> rusqlite::Result<()> {
    let changed = items.iter().any(|(before, after)| {
        !item_changes(before.as_ref().map(|b| &b.record), &after.record).is_empty()
    });
    let mut resolution = [Resolution::new(home)];
    resolve_all(conn, &mut resolution)?;
    let [resolution] = resolution;
    let Some(message) = resolution.message() else {
        return Ok(());
    };
    link_and_file(conn, &resolution.keys(), &message)?;
    let contact = summary::refold(conn, &message, now)?;
    if let Some(view) = contact.as_ref().and_then(|c| c.view_of(&message)) {
        outbox::track_window(conn, view)?;
    }
    if !changed {
        return Ok(());
    }
    let documents = outbox::documents(items, &message, contact.as_ref(), now, caused_by);
    outbox::announce(conn, &documents)
}

/// What a change to a message (resolved whole from the items under `keys`) brings beside its
/// items: its phone number and BSUID linked, even when they came from different events (a v1
/// twin with the number, a v2 twin with the BSUID), and its snapshot filed in the contact
/// summary.
pub(super) fn link_and_file(
    conn: &Connection,
    keys: &[String],
    message: &MessageRecord,
) -> rusqlite::Result<()> {
    if let Some((wa_id, bsuid)) = message.contact_link() {
        link_names(conn, wa_id, bsuid)?;
    }
    summary::file(conn, keys, message)
}

/// Links a contact's phone number and BSUID; whether the link is new.
fn link_names(conn: &Connection, wa_id: &str, bsuid: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached("INSERT OR IGNORE INTO contact_ids (bsuid, wa_id) VALUES (?1, ?2)")?
        .execute(params![bsuid, wa_id])?
        > 0)
}

/// Runs resolutions to the end, fetching from `conn`.
pub(super) fn resolve_all(
    conn: &Connection,
    resolutions: &mut [Resolution],
) -> rusqlite::Result<()> {
    loop {
        let mut fetched_any = false;
        for resolution in resolutions.iter_mut() {
            for key in resolution.wanted() {
                let item = load_item(conn, &key)?;
                resolution.offer(&key, item);
                fetched_any = true;
            }
        }
        if !fetched_any {
            return Ok(());
        }
    }
}

pub(super) fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

/// Up to `?5` items naming `?1` in `column` (`wa_id` or `bsuid`), of direction `?2`, before
/// `(?3, ?4)` in `(sent_at, id)` order, newest first.
fn page_sql(column: &str) -> String {
    format!(
        "SELECT id, record, linked, sent_at FROM messages
         WHERE {column} = ?1 AND direction = ?2 AND sent_at IS NOT NULL
           AND (sent_at < ?3 OR (sent_at = ?3 AND id < ?4))
         ORDER BY sent_at DESC, id DESC LIMIT ?5"
    )
}

/// A contact's names: the one asked for and those linked to it.
pub(super) fn names_of(conn: &Connection, contact: &str) -> rusqlite::Result<Vec<String>> {
    conn.prepare_cached(
        "SELECT ?1 UNION SELECT bsuid FROM contact_ids WHERE wa_id = ?1
         UNION SELECT wa_id FROM contact_ids WHERE bsuid = ?1",
    )?
    .query_map([contact], |row| row.get(0))?
    .collect()
}

/// Up to `limit` items naming `name` in `column`, of `direction`, before `cursor` in
/// `(sent_at, id)` order, newest first, with their sent time.
fn index_page(
    conn: &Connection,
    column: &str,
    name: &str,
    direction: Direction,
    cursor: &(i64, String),
    limit: usize,
) -> rusqlite::Result<Vec<(i64, MessageItem)>> {
    let mut query = conn.prepare_cached(&page_sql(column))?;
    let rows = query.query_map(
        params![
            name,
            direction_name(direction),
            cursor.0,
            cursor.1,
            limit as i64
        ],
        |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, i64>(3)?,
            ))
        },
    )?;
    rows.map(|row| {
        let (key, record, linked, sent_at) = row?;
        Ok((sent_at, item_from_row(key, &record, linked.as_deref())?))
    })
    .collect()
}

/// A page of the contact's messages after `before`, newest sent first: every name and direction
/// an index range in `(sent_at, id)` order, cut by [`cut`].
fn contact_page(
    conn: &Connection,
    contact: &str,
    before: Option<&Position>,
    limit: usize,
) -> rusqlite::Result<MessagePage> {
    let (below_time, below_key) = match before {
        Some(cursor) => (cursor.sent_at, cursor.key.clone()),
        None => (i64::MAX, String::new()),
    };
    let cursor = (below_time, below_key);
    let mut found = Vec::new();
    for name in names_of(conn, contact)? {
        for column in ["wa_id", "bsuid"] {
            for direction in [Direction::Inbound, Direction::Outbound] {
                for (sent_at, item) in
                    index_page(conn, column, &name, direction, &cursor, limit + 1)?
                {
                    found.push((
                        Position {
                            sent_at,
                            key: item.key.clone(),
                        },
                        item,
                    ));
                }
            }
        }
    }
    let (page, next) = cut(found, before, limit);
    let mut resolutions: Vec<Resolution> = page
        .into_iter()
        .map(|(_, home)| Resolution::from_home(home))
        .collect();
    resolve_all(conn, &mut resolutions)?;
    Ok(MessagePage {
        messages: resolutions.iter().filter_map(Resolution::message).collect(),
        next,
    })
}

#[async_trait]
impl StateStore for EmbeddedStore {
    async fn apply(
        &self,
        facts: &MessageRecord,
        caused_by: Option<&str>,
    ) -> Result<MergeOutcome, StoreError> {
        let (facts, caused_by) = (facts.clone(), caused_by.map(str::to_owned));
        let outcome = self
            .state()
            .write("apply facts", move |conn| {
                apply_facts(conn, &facts, now_unix(), caused_by.as_deref())
            })
            .await?;
        Ok(match outcome {
            Ok(()) => MergeOutcome::Merged,
            Err(contradiction) => MergeOutcome::Refused(contradiction),
        })
    }

    async fn quarantine(&self, event: &QueuedEvent, reason: &str) -> Result<(), StoreError> {
        let (event, reason) = (event.clone(), reason.to_owned());
        self.intake()
            .write("quarantine", move |conn| {
                let body = event.body.as_bytes();
                let insert = |key: &str| {
                    conn.execute(
                        "INSERT INTO quarantine (key, reason, body, received_at, stage)
                         VALUES (?1, ?2, ?3, ?4, 'processor') ON CONFLICT (key) DO NOTHING",
                        params![key, reason, body, event.received_at],
                    )
                };
                if insert(&event.key)? == 0 {
                    let kept: Option<Vec<u8>> = conn.query_row(
                        "SELECT body FROM quarantine WHERE key = ?1",
                        [&event.key],
                        |row| row.get(0),
                    )?;
                    if kept.as_deref() != Some(body) {
                        insert(&variant_key(&event.key, body))?;
                    }
                }
                Ok(())
            })
            .await
    }

    async fn quarantined(&self, key: &str) -> Result<Option<QuarantineEntry>, StoreError> {
        let key = key.to_owned();
        self.intake()
            .read("read quarantine", move |conn| {
                conn.query_row(
                    "SELECT key, reason, body, received_at FROM quarantine WHERE key = ?1",
                    [key],
                    |row| {
                        Ok(QuarantineEntry {
                            key: row.get(0)?,
                            reason: row.get(1)?,
                            body: row.get::<_, Option<Vec<u8>>>(2)?.unwrap_or_default(),
                            received_at: row.get(3)?,
                        })
                    },
                )
                .optional()
            })
            .await
    }

    async fn message(&self, id: &str) -> Result<Option<MessageRecord>, StoreError> {
        let id = id.to_owned();
        self.state()
            .read("read message", move |conn| {
                let mut resolution = [Resolution::new(&id)];
                resolve_all(conn, &mut resolution)?;
                let [resolution] = resolution;
                Ok(resolution.message())
            })
            .await
    }

    async fn contact(&self, contact: &str, now: i64) -> Result<Option<ContactView>, StoreError> {
        let contact = contact.to_owned();
        self.state()
            .read("read contact", move |conn| {
                summary::contact_view(conn, &contact, now)
            })
            .await
    }

    async fn contact_messages_page(
        &self,
        contact: &str,
        before: Option<&Position>,
        limit: usize,
    ) -> Result<MessagePage, StoreError> {
        let (contact, before) = (contact.to_owned(), before.cloned());
        self.state()
            .read("read a contact's messages", move |conn| {
                contact_page(conn, &contact, before.as_ref(), limit)
            })
            .await
    }

    /// A real write in each database, committed and synced like a webhook's: the intake's also
    /// writes (and removes) a ledger and a queue row, so a full disk, a read-only file or a broken
    /// ledger or queue table fails it. Then each reader must see the write.
    async fn ping(&self) -> Result<(), StoreError> {
        let at = now_ms();
        self.intake()
            .write("health probe of the intake database", move |conn| {
                probe_intake(conn, at)
            })
            .await?;
        self.state()
            .write("health probe of the state database", move |conn| {
                probe(conn, at)
            })
            .await?;
        for database in [self.intake(), self.state()] {
            database
                .read("health probe read", |conn| {
                    conn.query_row("SELECT probed_at FROM health", [], |_| Ok(()))
                })
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::schema::query_plan;

    /// A contact's message pages are served by the index on (name, direction, sent time, key),
    /// never by a scan of the table or a sort of a contact's messages (SQLite's plan says so).
    #[test]
    fn contact_pages_are_served_by_the_sent_index() {
        let dir = tempfile::tempdir().unwrap();
        drop(super::super::EmbeddedStore::open(&dir.path().join("t.db")).unwrap());
        let conn = connect(&dir.path().join("t.state.db")).unwrap();
        for column in ["wa_id", "bsuid"] {
            let plan = query_plan(&conn, &page_sql(column), rusqlite::params![1, 2, 3, 4, 5]);
            assert!(
                plan.contains(&format!("messages_by_{column}_sent")),
                "{plan}"
            );
            assert!(!plan.contains("SCAN messages"), "{plan}");
            assert!(!plan.contains("TEMP B-TREE FOR ORDER BY"), "{plan}");
        }
    }
}
