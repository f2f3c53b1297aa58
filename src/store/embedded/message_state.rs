//! The embedded store's state: message items (one per id, see [`crate::message_items`]) in the
//! state database, applied all-or-nothing per event and joined at read time exactly as on
//! DynamoDB, so both backends give one answer for any history, conflicting ones included.
//!
//! Table `messages`: `id` (the item's key), `wa_id` and `bsuid` (the contact names an event filed
//! there, indexed for contact reads), `record` (the item's [`MessageRecord`] as JSON), `linked`
//! (JSON array of link tokens, or NULL). Table `contact_ids`: a contact's phone number and BSUID.

use std::collections::BTreeSet;
use std::path::Path;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::health::{probe, probe_intake};
use super::outbox;
use super::schema::{connect, returns_a_row};
use super::{decode, now_ms, to_sql_error, EmbeddedStore};
use crate::changes::item_changes;
use crate::message::MessageRecord;
use crate::message_items::{
    absorb, distinct_messages, plan, Contradiction, MessageItem, Resolution,
};
use crate::ports::{MergeOutcome, QuarantineEntry, QueuedEvent, StateStore, StoreError};
use crate::session::ContactView;
use crate::time::now_unix;

pub(super) const STATE_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS messages (
    id     TEXT PRIMARY KEY,
    wa_id  TEXT,
    bsuid  TEXT,
    record TEXT NOT NULL,
    linked TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_wa_id ON messages(wa_id) WHERE wa_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS messages_by_bsuid ON messages(bsuid) WHERE bsuid IS NOT NULL;
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
        "INSERT INTO messages (id, wa_id, bsuid, record, linked) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET wa_id = excluded.wa_id, bsuid = excluded.bsuid,
         record = excluded.record, linked = excluded.linked",
    )?
    .execute(params![
        item.key,
        item.record.wa_id,
        item.record.bsuid,
        record,
        linked
    ])?;
    Ok(())
}

/// Applies every write of the event's plan, or none when one contradicts a stored item; and, in
/// the same transaction, announces what changed ([`outbox`]).
fn apply_facts(
    conn: &Connection,
    facts: &MessageRecord,
    now: i64,
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
    if let Some((wa_id, bsuid)) = &plan.contact_link {
        conn.prepare_cached("INSERT OR IGNORE INTO contact_ids (bsuid, wa_id) VALUES (?1, ?2)")?
            .execute(params![bsuid, wa_id])?;
    }
    announce_changes(conn, &plan.home.key, &items, now)?;
    Ok(Ok(()))
}

/// The change documents of one applied event, into the outbox: nothing when no item changed.
fn announce_changes(
    conn: &Connection,
    home: &str,
    items: &[(Option<MessageItem>, MessageItem)],
    now: i64,
) -> rusqlite::Result<()> {
    let changed = items.iter().any(|(before, after)| {
        !item_changes(before.as_ref().map(|b| &b.record), &after.record).is_empty()
    });
    if !changed {
        return Ok(());
    }
    let mut resolution = [Resolution::new(home)];
    resolve_all(conn, &mut resolution)?;
    let [resolution] = resolution;
    let Some(message) = resolution.message() else {
        return Ok(());
    };
    let contact = match message.contact() {
        Some(name) => ContactView::from_messages(&contact_messages(conn, name)?, now),
        None => None,
    };
    if let Some(view) = contact.as_ref().and_then(|c| c.view_of(&message)) {
        outbox::track_window(conn, view)?;
    }
    let documents = outbox::documents(items, &message, contact.as_ref(), now);
    outbox::announce(conn, &documents)
}

/// Runs resolutions to the end, fetching from `conn`.
fn resolve_all(conn: &Connection, resolutions: &mut [Resolution]) -> rusqlite::Result<()> {
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

/// Every message of a contact named by phone number or BSUID, by either of its names.
pub(super) fn contact_messages(
    conn: &Connection,
    contact: &str,
) -> rusqlite::Result<Vec<MessageRecord>> {
    let homes: Vec<MessageItem> = conn
        .prepare_cached(
            "WITH names(name) AS (
                 SELECT ?1
                 UNION SELECT bsuid FROM contact_ids WHERE wa_id = ?1
                 UNION SELECT wa_id FROM contact_ids WHERE bsuid = ?1)
             SELECT id, record, linked FROM messages WHERE wa_id IN (SELECT name FROM names)
             UNION
             SELECT id, record, linked FROM messages WHERE bsuid IN (SELECT name FROM names)",
        )?
        .query_map([contact], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
            ))
        })?
        .map(|row| {
            row.and_then(|(key, record, linked)| item_from_row(key, &record, linked.as_deref()))
        })
        .collect::<rusqlite::Result<_>>()?;
    let mut resolutions: Vec<Resolution> = homes
        .into_iter()
        .map(|home| {
            let mut resolution = Resolution::new(&home.key);
            resolution.offer(&home.key.clone(), Some(home));
            resolution
        })
        .collect();
    resolve_all(conn, &mut resolutions)?;
    Ok(distinct_messages(resolutions))
}

#[async_trait]
impl StateStore for EmbeddedStore {
    async fn apply(&self, facts: &MessageRecord) -> Result<MergeOutcome, StoreError> {
        let facts = facts.clone();
        let outcome = self
            .state()
            .write("apply facts", move |conn| {
                apply_facts(conn, &facts, now_unix())
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
                conn.execute(
                    "INSERT INTO quarantine (key, reason, body, received_at, stage)
                 VALUES (?1, ?2, ?3, ?4, 'processor') ON CONFLICT (key) DO NOTHING",
                    params![event.key, reason, event.body.as_bytes(), event.received_at],
                )?;
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
        let messages = self
            .state()
            .read("read contact", move |conn| contact_messages(conn, &contact))
            .await?;
        Ok(ContactView::from_messages(&messages, now))
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
