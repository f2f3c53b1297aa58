//! `erase-contact --aws` ([`crate::erasure`]): the contact's names and messages from the state
//! table's links and contact indexes, its bodies found by scanning the ledger table and the
//! state table's quarantine and window items (no index holds bodies by contact), its contact
//! summary by its names' partitions, then everything deleted by key with `BatchWriteItem`.
//!
//! Indexes and scans are eventually consistent: an item written a moment ago may be missed. The
//! erasure is idempotent: run it again once the contact's traffic has stopped.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};

use crate::erasure::{ContactIdentifiers, Erased};
use crate::ports::{Erasure, StoreError};
use crate::store::aws::{bytes, s, text, unavailable};
use crate::store::aws_operator::{scan_table, STATE_QUARANTINE_PREFIX};
use crate::store::dynamo_state::{alias_key, message_key, table_key, DynamoState};

/// `BatchWriteItem` takes at most 25 requests.
const BATCH_WRITE_LIMIT: usize = 25;
/// Rounds of `UnprocessedItems` retried (with backoff) before the erasure gives up.
const UNPROCESSED_ROUNDS: u32 = 8;

type Key = HashMap<String, AttributeValue>;

/// A stack's tables, for erasure.
#[derive(Clone, Debug)]
pub struct AwsErasure {
    pub client: aws_sdk_dynamodb::Client,
    pub ledger_table: String,
    pub state_table: String,
}

impl AwsErasure {
    fn state(&self) -> DynamoState {
        DynamoState::new(self.client.clone(), self.state_table.clone())
    }

    /// Deletes `keys` from `table`, 25 a call, retrying what DynamoDB leaves unprocessed; returns
    /// how many keys it deleted (deleting an absent key succeeds: counted too).
    async fn delete_all(&self, table: &str, keys: Vec<Key>) -> Result<usize, StoreError> {
        let count = keys.len();
        for chunk in keys.chunks(BATCH_WRITE_LIMIT) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|key| {
                    let delete = DeleteRequest::builder()
                        .set_key(Some(key.clone()))
                        .build()
                        .map_err(|e| StoreError::unavailable("build a delete", e))?;
                    Ok(WriteRequest::builder().delete_request(delete).build())
                })
                .collect::<Result<_, StoreError>>()?;
            for round in 0.. {
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(table, requests)
                    .send()
                    .await
                    .map_err(|e| unavailable("erase items", e))?;
                requests = output
                    .unprocessed_items
                    .and_then(|mut left| left.remove(table))
                    .unwrap_or_default();
                if requests.is_empty() {
                    break;
                }
                if round >= UNPROCESSED_ROUNDS {
                    return Err(StoreError::unavailable(
                        "erase items",
                        format!(
                            "{} deletes left unprocessed; run the erasure again",
                            requests.len()
                        ),
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(50 << round.min(5))).await;
            }
        }
        Ok(count)
    }
}

fn key_of(item: &Key, with_sort_key: bool) -> Option<Key> {
    let mut key = HashMap::from([("pk".to_owned(), s(text(item, "pk")?))]);
    if with_sort_key {
        key.insert("sk".to_owned(), s(text(item, "sk")?));
    }
    Some(key)
}

#[async_trait]
impl Erasure for AwsErasure {
    async fn identify(&self, contact: &str) -> Result<ContactIdentifiers, StoreError> {
        let state = self.state();
        let mut ids = ContactIdentifiers::new(contact);
        // A BSUID's phone number, and that number's other BSUIDs.
        let mut pending = vec![contact.to_owned()];
        let mut seen = Vec::new();
        while let Some(name) = pending.pop() {
            if seen.contains(&name) {
                continue;
            }
            for linked in state.names_of(&name).await? {
                ids.names.insert(linked.clone());
                pending.push(linked);
            }
            seen.push(name);
        }
        let names: Vec<String> = ids.names.iter().cloned().collect();
        for item in state.all_homes(&names).await?.values() {
            ids.add_message(&item.record);
        }
        Ok(ids)
    }

    async fn erase_bodies(&self, ids: &ContactIdentifiers) -> Result<Erased, StoreError> {
        let mentioned =
            |item: &Key| bytes(item, "body").is_some_and(|body| ids.mentioned_in(&body));
        // Archived and receiver-quarantined bodies alike: every ledger item with a body.
        let ledger = scan_table(
            &self.client,
            &self.ledger_table,
            "attribute_exists(body)",
            vec![],
        )
        .await?;
        let (quarantined, archived): (Vec<&Key>, Vec<&Key>) = ledger
            .iter()
            .filter(|item| mentioned(item))
            .partition(|item| text(item, "event_type").as_deref() == Some("quarantine"));
        let processor_quarantined = scan_table(
            &self.client,
            &self.state_table,
            "begins_with(pk, :prefix) AND sk = :sk",
            vec![
                (":prefix", s(STATE_QUARANTINE_PREFIX)),
                (":sk", s("QUARANTINE")),
            ],
        )
        .await?;
        let processor_quarantined: Vec<Key> = processor_quarantined
            .iter()
            .filter(|item| mentioned(item))
            .filter_map(|item| key_of(item, true))
            .collect();
        let keys = |items: Vec<&Key>| -> Vec<Key> {
            items
                .into_iter()
                .filter_map(|item| key_of(item, false))
                .collect()
        };
        Ok(Erased {
            ledger: self.delete_all(&self.ledger_table, keys(archived)).await?,
            quarantined: self
                .delete_all(&self.ledger_table, keys(quarantined))
                .await?
                + self
                    .delete_all(&self.state_table, processor_quarantined)
                    .await?,
            ..Erased::default()
        })
    }

    async fn erase_state(&self, ids: &ContactIdentifiers) -> Result<Erased, StoreError> {
        let messages: Vec<Key> = ids.message_ids.iter().map(|id| message_key(id)).collect();
        let mut links: Vec<Key> = ids.message_ids.iter().map(|id| alias_key(id)).collect();
        for name in &ids.names {
            for other in ids.names.iter().filter(|other| *other != name) {
                links.push(table_key(format!("LINK#{name}"), other.clone()));
            }
        }
        let windows: Vec<Key> = scan_table(
            &self.client,
            &self.state_table,
            "begins_with(pk, :prefix)",
            vec![(":prefix", s("WINDOW#"))],
        )
        .await?
        .iter()
        .filter(|item| {
            text(item, "pk").is_some_and(|pk| {
                ids.names
                    .iter()
                    .any(|name| pk.starts_with(&crate::windows::window_pk(name, "")))
            })
        })
        .filter_map(|item| key_of(item, true))
        .collect();
        let state = self.state();
        let mut summaries = Vec::new();
        for name in &ids.names {
            let items = state.summary_items(name).await?;
            summaries.extend(items.iter().filter_map(|item| key_of(item, true)));
        }
        Ok(Erased {
            messages: self.delete_all(&self.state_table, messages).await?,
            links: self.delete_all(&self.state_table, links).await?,
            windows: self.delete_all(&self.state_table, windows).await?,
            summaries: self.delete_all(&self.state_table, summaries).await?,
            ..Erased::default()
        })
    }
}
