//! `erase-contact` on the embedded store ([`crate::erasure`]): the contact's rows found with the
//! reader connection (a scan of the bodies does not hold the writer), then deleted by key in
//! short writes.

use std::collections::BTreeSet;

use async_trait::async_trait;
use rusqlite::{params, Connection};

use super::message_state::names_of;
use super::{decode, EmbeddedStore};
use crate::erasure::{ContactIdentifiers, Erased};
use crate::ports::{Erasure, StoreError};

/// Keys deleted per write.
const BATCH: usize = 500;

/// The keys (or sequence numbers) of a table's rows whose body `mentions` the contact.
fn matching_rows(
    conn: &Connection,
    select: &str,
    ids: &ContactIdentifiers,
) -> rusqlite::Result<Vec<String>> {
    let mut statement = conn.prepare(select)?;
    let mut rows = statement.query([])?;
    let mut keys = Vec::new();
    while let Some(row) = rows.next()? {
        let key: String = row.get(0)?;
        let body = match row.get_ref(1)? {
            rusqlite::types::ValueRef::Blob(bytes) | rusqlite::types::ValueRef::Text(bytes) => {
                bytes
            }
            _ => continue,
        };
        if ids.mentioned_in(body) {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// Everything of the contact in the intake database, by table.
#[derive(Default)]
struct IntakeRows {
    ledger: Vec<String>,
    quarantine: Vec<String>,
    queue: Vec<String>,
    dead_letters: Vec<String>,
}

impl EmbeddedStore {
    /// Runs `delete` (`?1`: one key) for every key, [`BATCH`] keys per write; returns the rows
    /// deleted.
    async fn delete_keys(
        &self,
        intake: bool,
        operation: &'static str,
        deletes: &'static [&'static str],
        keys: Vec<String>,
    ) -> Result<usize, StoreError> {
        let mut deleted = 0;
        for chunk in keys.chunks(BATCH) {
            let chunk = chunk.to_vec();
            let database = if intake { self.intake() } else { self.state() };
            deleted += database
                .write(operation, move |conn| {
                    let mut rows = 0;
                    for key in &chunk {
                        for delete in deletes {
                            rows += conn.prepare_cached(delete)?.execute(params![key])?;
                        }
                    }
                    Ok(rows)
                })
                .await?;
        }
        Ok(deleted)
    }
}

#[async_trait]
impl Erasure for EmbeddedStore {
    async fn identify(&self, contact: &str) -> Result<ContactIdentifiers, StoreError> {
        let contact = contact.to_owned();
        self.state()
            .read("identify a contact", move |conn| {
                let mut ids = ContactIdentifiers::new(&contact);
                // A BSUID's phone number, and that number's other BSUIDs.
                let mut pending: Vec<String> = vec![contact];
                let mut seen = BTreeSet::new();
                while let Some(name) = pending.pop() {
                    if !seen.insert(name.clone()) {
                        continue;
                    }
                    for linked in names_of(conn, &name)? {
                        ids.names.insert(linked.clone());
                        pending.push(linked);
                    }
                }
                let mut statement =
                    conn.prepare("SELECT record FROM messages WHERE wa_id = ?1 OR bsuid = ?1")?;
                for name in &seen {
                    let records: Vec<String> = statement
                        .query_map([name], |row| row.get(0))?
                        .collect::<rusqlite::Result<_>>()?;
                    for record in records {
                        let record = decode(&record).map_err(super::to_sql_error)?;
                        ids.add_message(&record);
                    }
                }
                Ok(ids)
            })
            .await
    }

    async fn erase_bodies(&self, ids: &ContactIdentifiers) -> Result<Erased, StoreError> {
        let found = ids.clone();
        let rows = self
            .intake()
            .read("find a contact's bodies", move |conn| {
                let ids = &found;
                Ok(IntakeRows {
                    ledger: matching_rows(conn, "SELECT key, body FROM ledger", ids)?,
                    quarantine: matching_rows(conn, "SELECT key, body FROM quarantine", ids)?,
                    queue: matching_rows(
                        conn,
                        "SELECT CAST(seq AS TEXT), body FROM queue WHERE body IS NOT NULL",
                        ids,
                    )?,
                    dead_letters: matching_rows(
                        conn,
                        "SELECT CAST(seq AS TEXT), body FROM dead_letters",
                        ids,
                    )?,
                })
            })
            .await?;
        // A queued event without a body of its own is the ledger's: it goes with it.
        let queued = self
            .delete_keys(
                true,
                "erase queued events",
                &["DELETE FROM queue WHERE seq = CAST(?1 AS INTEGER)"],
                rows.queue,
            )
            .await?
            + self
                .delete_keys(
                    true,
                    "erase dead letters",
                    &["DELETE FROM dead_letters WHERE seq = CAST(?1 AS INTEGER)"],
                    rows.dead_letters,
                )
                .await?
            + self
                .delete_keys(
                    true,
                    "erase queued events",
                    &["DELETE FROM queue WHERE key = ?1 AND body IS NULL"],
                    rows.ledger.clone(),
                )
                .await?;
        Ok(Erased {
            ledger: self
                .delete_keys(
                    true,
                    "erase ledger bodies",
                    &["DELETE FROM ledger WHERE key = ?1"],
                    rows.ledger,
                )
                .await?,
            quarantined: self
                .delete_keys(
                    true,
                    "erase quarantined bodies",
                    &["DELETE FROM quarantine WHERE key = ?1"],
                    rows.quarantine,
                )
                .await?,
            queued,
            ..Erased::default()
        })
    }

    async fn erase_state(&self, ids: &ContactIdentifiers) -> Result<Erased, StoreError> {
        let found = ids.clone();
        let changes = self
            .state()
            .read("find a contact's changes", move |conn| {
                matching_rows(conn, "SELECT id, document FROM changes", &found)
            })
            .await?;
        let message_ids: Vec<String> = ids.message_ids.iter().cloned().collect();
        let names: Vec<String> = ids.names.iter().cloned().collect();
        Ok(Erased {
            messages: self
                .delete_keys(
                    false,
                    "erase messages",
                    &["DELETE FROM messages WHERE id = ?1"],
                    message_ids.clone(),
                )
                .await?,
            links: self
                .delete_keys(
                    false,
                    "erase message ids",
                    &["DELETE FROM message_ids WHERE alias = ?1 OR id = ?1"],
                    message_ids,
                )
                .await?
                + self
                    .delete_keys(
                        false,
                        "erase contact links",
                        &["DELETE FROM contact_ids WHERE wa_id = ?1 OR bsuid = ?1"],
                        names.clone(),
                    )
                    .await?,
            windows: self
                .delete_keys(
                    false,
                    "erase windows",
                    &["DELETE FROM windows WHERE contact = ?1"],
                    names.clone(),
                )
                .await?,
            summaries: self
                .delete_keys(
                    false,
                    "erase recent-message summaries",
                    &[
                        "DELETE FROM contact_recent WHERE name = ?1",
                        "DELETE FROM contact_folds WHERE name = ?1",
                    ],
                    names,
                )
                .await?,
            changes: self
                .delete_keys(
                    false,
                    "erase changes",
                    &[
                        "DELETE FROM forwards WHERE change_id = ?1",
                        "DELETE FROM changes WHERE id = ?1",
                    ],
                    changes,
                )
                .await?,
            ..Erased::default()
        })
    }
}
