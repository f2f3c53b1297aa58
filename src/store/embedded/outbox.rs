//! The outbox: change documents ([`crate::changes`]) written in the same SQLite transaction as
//! the state change they describe, so a crash can neither lose a change nor announce one that was
//! not committed. And the customer-service windows the window timer watches.
//!
//! Table `changes`: `seq` (the feed's order), `id` (unique: a change already announced is not
//! announced again), `type`, `document` (JSON), `recorded_at`. Table `windows`: the current end of
//! each (contact, business number) window, and the ends for which `contact.window_closing` and
//! `contact.window_closed` were announced.

use rusqlite::{params, Connection, OptionalExtension};

use super::summary::contact_view;
use super::EmbeddedStore;
use crate::changes::{item_changes, window_document, write_documents, ChangeDocument, ChangeType};
use crate::message::MessageRecord;
use crate::message_items::MessageItem;
use crate::ports::{ChangeFeed, FeedEntry, StoreError};
use crate::session::{ChannelView, ContactView};
use crate::windows::window_view;

pub(super) const OUTBOX_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS changes (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL,
    document    TEXT NOT NULL,
    recorded_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS windows (
    contact      TEXT NOT NULL,
    channel      TEXT NOT NULL,
    window_end   INTEGER NOT NULL,
    closing_sent INTEGER,
    closed_sent  INTEGER,
    PRIMARY KEY (contact, channel)
);
CREATE INDEX IF NOT EXISTS windows_pending ON windows(window_end)
    WHERE closed_sent IS NOT window_end;
"#;

/// The contact a view belongs to, as the windows table names it.
fn contact_key(view: &ChannelView) -> Option<&str> {
    view.wa_id.as_deref().or(view.bsuid.as_deref())
}

/// The documents one applied event announces ([`write_documents`] for each item it wrote).
pub(super) fn documents(
    items: &[(Option<MessageItem>, MessageItem)],
    message: &MessageRecord,
    contact: Option<&ContactView>,
    now: i64,
    caused_by: Option<&str>,
) -> Vec<ChangeDocument> {
    items
        .iter()
        .flat_map(|(before, after)| {
            let changes = item_changes(before.as_ref().map(|b| &b.record), &after.record);
            write_documents(&after.key, &changes, message, contact, now, caused_by)
        })
        .collect()
}

/// Adds documents to the outbox; one whose id is there already is not added again.
pub(super) fn announce(conn: &Connection, documents: &[ChangeDocument]) -> rusqlite::Result<()> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO changes (id, type, document, recorded_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO NOTHING",
    )?;
    for document in documents {
        let json = serde_json::to_string(document).map_err(super::to_sql_error)?;
        insert.execute(params![
            document.id,
            document.kind.name(),
            json,
            document.recorded_at.0.unwrap_or_default()
        ])?;
    }
    Ok(())
}

/// Records the current end of a (contact, number) window; the timer announces the new end's
/// documents, and never the old end's.
pub(super) fn track_window(conn: &Connection, view: &ChannelView) -> rusqlite::Result<()> {
    let (Some(contact), Some(end)) = (contact_key(view), view.window_expires_at.0) else {
        return Ok(());
    };
    conn.prepare_cached(
        "INSERT INTO windows (contact, channel, window_end) VALUES (?1, ?2, ?3)
         ON CONFLICT (contact, channel) DO UPDATE SET window_end = excluded.window_end",
    )?
    .execute(params![
        contact,
        view.channel_id.as_deref().unwrap_or_default(),
        end
    ])?;
    Ok(())
}

/// A window whose closing or close fell due at `now` and was not announced yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DueWindow {
    pub contact: String,
    /// `""` for the default number.
    pub channel: String,
    pub window_end: i64,
    pub kind: ChangeType,
}

/// Windows due at `now`: `contact.window_closing` from `lead_seconds` before the end until the
/// end, `contact.window_closed` from the end on. A closing that fell due while the service was
/// down is skipped once the window has closed: only "closed" is still true.
pub(super) fn due_windows(
    conn: &Connection,
    now: i64,
    lead_seconds: i64,
    limit: usize,
) -> rusqlite::Result<Vec<DueWindow>> {
    let mut due = Vec::new();
    // Only windows not yet announced closed: the partial index holds just those.
    let mut query = conn.prepare_cached(
        "SELECT contact, channel, window_end FROM windows
         WHERE closed_sent IS NOT window_end AND window_end <= ?1 + ?2
           AND (window_end <= ?1 OR closing_sent IS NOT window_end)
         ORDER BY window_end LIMIT ?3",
    )?;
    let rows = query.query_map(params![now, lead_seconds, limit as i64], |row| {
        Ok(DueWindow {
            contact: row.get(0)?,
            channel: row.get(1)?,
            window_end: row.get(2)?,
            kind: if now >= row.get::<_, i64>(2)? {
                ChangeType::WindowClosed
            } else {
                ChangeType::WindowClosing
            },
        })
    })?;
    for row in rows {
        due.push(row?);
    }
    Ok(due)
}

/// Announces a due window with the contact's view at `now`, and marks it announced, in one
/// transaction; nothing if the window moved since it was found due.
pub(super) fn announce_window(
    conn: &Connection,
    due: &DueWindow,
    view: Option<&ChannelView>,
    now: i64,
) -> rusqlite::Result<bool> {
    let current: Option<i64> = conn
        .prepare_cached("SELECT window_end FROM windows WHERE contact = ?1 AND channel = ?2")?
        .query_row(params![due.contact, due.channel], |row| row.get(0))
        .optional()?;
    if current != Some(due.window_end) {
        return Ok(false);
    }
    // A newer customer message filed under the contact's other name (its phone number, or its
    // BSUID) moved the window: this row follows it, and nothing is announced for the old end.
    if let Some(end) = view
        .and_then(|v| v.window_expires_at.0)
        .filter(|end| *end > due.window_end)
    {
        conn.execute(
            "UPDATE windows SET window_end = ?3 WHERE contact = ?1 AND channel = ?2",
            params![due.contact, due.channel, end],
        )?;
        return Ok(false);
    }
    let column = match due.kind {
        ChangeType::WindowClosing => "closing_sent",
        _ => "closed_sent",
    };
    if let Some(view) = view {
        let due_at = match due.kind {
            ChangeType::WindowClosing => now.min(due.window_end),
            _ => due.window_end,
        };
        announce(
            conn,
            &[window_document(due.kind, view, due.window_end, due_at, now)],
        )?;
    }
    conn.execute(
        &format!("UPDATE windows SET {column} = window_end WHERE contact = ?1 AND channel = ?2"),
        params![due.contact, due.channel],
    )?;
    Ok(true)
}

/// Up to `limit` documents after `after` (a `seq`), oldest first, with their `seq`.
pub(super) fn page(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<(i64, String)>> {
    conn.prepare_cached("SELECT seq, document FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2")?
        .query_map(params![after, limit as i64], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .collect()
}

#[async_trait::async_trait]
impl ChangeFeed for EmbeddedStore {
    async fn changes_after(&self, after: i64, limit: usize) -> Result<Vec<FeedEntry>, StoreError> {
        let entries = self
            .state()
            .read("read changes", move |conn| page(conn, after, limit))
            .await?;
        Ok(entries
            .into_iter()
            .map(|(seq, document)| FeedEntry { seq, document })
            .collect())
    }

    async fn last_seq(&self) -> Result<i64, StoreError> {
        self.last_change_seq().await
    }
}

impl EmbeddedStore {
    /// Announces every window closing or closed at `now` (`lead_seconds`: how long before its end
    /// a window is "closing"), each with the contact's view at `now`; returns how many.
    pub async fn announce_due_windows(
        &self,
        now: i64,
        lead_seconds: i64,
    ) -> Result<usize, StoreError> {
        self.state()
            .write("announce due windows", move |conn| {
                let mut announced = 0;
                for due in due_windows(conn, now, lead_seconds, 500)? {
                    let contact = contact_view(conn, &due.contact, now)?;
                    let view = contact.and_then(|c| window_view(&c, &due.channel));
                    if announce_window(conn, &due, view.as_ref(), now)? {
                        announced += 1;
                    }
                }
                Ok(announced)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::WatiEvent;
    use crate::ports::StateStore;
    use serde_json::Value;

    const T: i64 = 1_700_000_000;
    const DAY: i64 = 86_400;

    fn open() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("t.db")).unwrap();
        (dir, store)
    }

    async fn apply(store: &EmbeddedStore, body: &str) {
        let event = WatiEvent::parse(body.as_bytes()).unwrap();
        let facts = MessageRecord::from_event(&event, T + 10 * DAY).unwrap();
        store.apply(&facts, None).await.unwrap();
    }

    async fn feed(store: &EmbeddedStore) -> Vec<Value> {
        store
            .changes_after(0, 1_000)
            .await
            .unwrap()
            .iter()
            .map(|entry| serde_json::from_str(&entry.document).unwrap())
            .collect()
    }

    fn kinds(documents: &[Value]) -> Vec<(String, String)> {
        documents
            .iter()
            .map(|d| {
                (
                    d["type"].as_str().unwrap().to_owned(),
                    d["fact"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    fn inbound(id: &str, at: i64) -> String {
        format!(
            r#"{{"eventType":"message","id":"{id}","waId":"1","owner":false,"timestamp":"{at}"}}"#
        )
    }

    /// Expected documents written out from docs/changes.md, not computed by the crate.
    #[tokio::test]
    async fn each_fact_is_announced_once_with_the_contacts_view() {
        let (_dir, store) = open();
        apply(&store, &inbound("in", T)).await;
        apply(
            &store,
            &format!(
                r#"{{"eventType":"sessionMessageSent","id":"out","waId":"1","timestamp":"{}"}}"#,
                T + 10
            ),
        )
        .await;
        let delivered = format!(
            r#"{{"eventType":"sentMessageDELIVERED","id":"out","timestamp":"{}"}}"#,
            T + 20
        );
        apply(&store, &delivered).await;
        let documents = feed(&store).await;
        let expected: Vec<(String, String)> = [
            ("message.updated", "received"),
            ("message.updated", "contact"),
            ("contact.updated", ""),
            ("message.updated", "sent"),
            ("message.updated", "contact"),
            ("contact.updated", ""),
            ("message.updated", "delivered"),
            ("contact.updated", ""),
        ]
        .iter()
        .map(|(t, f)| (t.to_string(), f.to_string()))
        .collect();
        assert_eq!(kinds(&documents), expected);
        let last = documents.last().unwrap();
        assert_eq!(last["contact"]["session"]["business_messages"], 1);
        assert_eq!(last["contact"]["session"]["customer_messages"], 1);
        assert_eq!(documents[6]["message"]["status"], "delivered");
        assert_eq!(documents[6]["occurred_at"], "2023-11-14T22:13:40Z");

        // A duplicate, a v2 twin with nothing new, a later time for a known fact: nothing.
        apply(&store, &delivered).await;
        apply(
            &store,
            &format!(
                r#"{{"eventType":"sentMessageDELIVERED_v2","id":"out","timestamp":"{}"}}"#,
                T + 20
            ),
        )
        .await;
        apply(
            &store,
            &format!(
                r#"{{"eventType":"sentMessageDELIVERED","id":"out","timestamp":"{}"}}"#,
                T + 25
            ),
        )
        .await;
        assert_eq!(
            feed(&store).await.len(),
            documents.len(),
            "no change, no document"
        );
        // An earlier time for a known fact is a change.
        apply(
            &store,
            &format!(
                r#"{{"eventType":"sentMessageDELIVERED","id":"out","timestamp":"{}"}}"#,
                T + 15
            ),
        )
        .await;
        let after = feed(&store).await;
        assert_eq!(
            kinds(&after[documents.len()..]),
            [("message.updated".to_owned(), "delivered".to_owned())],
            "the contact's view did not change: the session started with the customer's message"
        );
    }

    /// The outbox is part of the state's transaction: when its write fails, the state is not
    /// changed either.
    #[tokio::test]
    async fn no_state_change_without_its_announcement() {
        let (dir, store) = open();
        let state = super::super::schema::connect(&dir.path().join("t.state.db")).unwrap();
        state.execute_batch("DROP TABLE changes").unwrap();
        let event = WatiEvent::parse(inbound("in", T).as_bytes()).unwrap();
        let facts = MessageRecord::from_event(&event, T).unwrap();
        assert!(store.apply(&facts, None).await.is_err());
        assert_eq!(store.message("in").await.unwrap(), None);
    }

    async fn announce_at(store: &EmbeddedStore, now: i64) -> Vec<(String, String)> {
        let before = feed(store).await.len();
        store.announce_due_windows(now, 3_600).await.unwrap();
        kinds(&feed(store).await[before..])
    }

    fn window(kind: &str) -> Vec<(String, String)> {
        vec![(kind.to_owned(), String::new())]
    }

    /// The timer on a clock the test moves: "closing" an hour before the end, "closed" at the
    /// end, each once; a window a newer message moved announces only its new end.
    #[tokio::test]
    async fn windows_close_on_time_once_and_not_when_moved() {
        let (_dir, store) = open();
        apply(&store, &inbound("in-1", T)).await;
        assert!(announce_at(&store, T + DAY - 3_601).await.is_empty());
        assert_eq!(
            announce_at(&store, T + DAY - 3_600).await,
            window("contact.window_closing")
        );
        assert!(announce_at(&store, T + DAY - 60).await.is_empty(), "once");
        assert_eq!(
            announce_at(&store, T + DAY).await,
            window("contact.window_closed")
        );
        assert!(announce_at(&store, T + DAY + 60).await.is_empty(), "once");
        let closed = feed(&store).await.pop().unwrap();
        assert_eq!(closed["contact"]["window_open"], false);
        assert_eq!(closed["occurred_at"], "2023-11-15T22:13:20Z");

        // The customer writes again two days later, then again before the closing falls due.
        let second = T + 2 * DAY;
        apply(&store, &inbound("in-2", second)).await;
        apply(&store, &inbound("in-3", second + 7_200)).await;
        let early = announce_at(&store, second + DAY - 3_600).await;
        assert!(
            early.is_empty(),
            "the moved window is not closing yet: {early:?}"
        );
        assert_eq!(
            announce_at(&store, second + 7_200 + DAY - 3_600).await,
            window("contact.window_closing")
        );
        // Down past the end: only "closed" is still true.
        apply(&store, &inbound("in-4", second + 4 * DAY)).await;
        assert_eq!(
            announce_at(&store, second + 6 * DAY).await,
            window("contact.window_closed")
        );
    }

    /// A BSUID contact writes, then writes again naming its phone number too: the window the
    /// first message opened (filed under the BSUID) moved with the second, so only the second's
    /// end is announced, under the phone number.
    #[tokio::test]
    async fn a_window_moved_under_the_contacts_other_name_is_not_announced() {
        let (_dir, store) = open();
        apply(
            &store,
            &format!(
                r#"{{"eventType":"message","id":"b-1","bsuid":"US.7","owner":false,"timestamp":"{T}"}}"#
            ),
        )
        .await;
        let later = T + 7_200;
        apply(
            &store,
            &format!(
                r#"{{"eventType":"message","id":"b-2","bsuid":"US.7","waId":"15550000007","owner":false,"timestamp":"{later}"}}"#
            ),
        )
        .await;
        assert!(
            announce_at(&store, T + DAY).await.is_empty(),
            "the first end is not a window the contact has"
        );
        let closed = announce_at(&store, later + DAY).await;
        assert_eq!(closed, window("contact.window_closed"));
        let document = feed(&store).await.pop().unwrap();
        assert_eq!(document["contact"]["wa_id"], "15550000007");
        assert_eq!(
            document["contact"]["window_expires_at"],
            crate::time::Rfc3339(Some(later + DAY)).render().unwrap()
        );
        assert!(
            announce_at(&store, later + DAY + 60).await.is_empty(),
            "once"
        );
    }
}
