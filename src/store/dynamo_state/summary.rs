//! The contact summary on DynamoDB ([`crate::contact_summary`]).
//!
//! Items (see `infra/README.md`):
//! - bucket `pk = RECENT#<name>, sk = B#<bucket start>`: `entries`, a string set of encoded
//!   snapshots of the messages sent in those two hours that name `<name>`. Every write is one
//!   `ADD` to the set: commutative, idempotent, no read first.
//! - overflow `pk = RECENT#<name>, sk = OVERFLOW`: one of that name's buckets reached
//!   DynamoDB's item size limit (400 KB: some 700 messages in two hours, at about three ~190-byte
//!   snapshots each); that name's contact
//!   reads go through the message items from then on.
//! - marker `pk = SCHEMA, sk = contact_summary`: every message written before this version has
//!   been filed (`wati-ingest backfill-contact-index`); until a process has seen it, contact
//!   reads go through the message items.
//!
//! Why filing resolves the message with strongly consistent reads *after* the event's own write:
//! of any two writes to one message's items, the one that completed later starts its reads after
//! both writes, so its snapshot holds both. The snapshot of the message's last write holds every
//! fact, and the others hold subsets of it: their join ([`crate::contact_summary::join`]) is the
//! message, whatever order the events were applied in, and whichever write was retried.

use std::collections::BTreeSet;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::future::try_join_all;

use super::{message_item_key, Backfill, DynamoState, Item};
use crate::contact_summary::{bucket_key, buckets_of, join, Snapshot};
use crate::message::MessageRecord;
use crate::message_items::Resolution;
use crate::ports::StoreError;
use crate::recent::Horizon;
use crate::store::aws::{n, s, text, unavailable};

/// The partition of a contact name's summary.
fn summary_pk(name: &str) -> String {
    format!("RECENT#{name}")
}

/// Attempts at filing one event's message before the event fails.
const FILING_ATTEMPTS: u32 = 4;

/// The sort key of a name's overflow item (after every bucket's `B#…`).
const OVERFLOW_SK: &str = "OVERFLOW";

/// Whether a refused write was refused for the item's size (DynamoDB: `ValidationException`,
/// "Item size to update has exceeded the maximum allowed size"). DynamoDB Local and moto do not
/// hold a set to 400 KB the same way, so this rule is held by a unit test here.
fn exceeds_item_size(code: Option<&str>, message: Option<&str>) -> bool {
    code == Some("ValidationException")
        && message.is_some_and(|m| m.to_ascii_lowercase().contains("item size"))
}

impl DynamoState {
    /// [`Self::file_and_link`], tried again at once (up to [`FILING_ATTEMPTS`] times) when a
    /// call is refused: it only reads, adds to sets and puts the same links, so a repeat is
    /// harmless, and a read
    /// that meets a transaction in flight on the same item, or throttling, would otherwise fail
    /// the event into SQS's visibility timeout.
    pub(super) async fn file_and_link_retried(
        &self,
        home: &str,
        linked: Option<&(String, String)>,
    ) -> Result<(), StoreError> {
        let mut attempt = 1;
        loop {
            match self.file_and_link(home, linked).await {
                Ok(_) => return Ok(()),
                Err(error) if attempt >= FILING_ATTEMPTS => return Err(error),
                Err(error) => {
                    tracing::warn!(%error, attempt, "filing in the contact summary; trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// What follows an event's write to its message's item `home`, from one strongly consistent
    /// read of the message: its two names linked when it has both and `linked` (the number and
    /// BSUID the event's own write linked) are not those ([`Self::ensure_contact_link`]), and
    /// the message filed in its contact's summary. Returns the keys of the items it spans.
    pub(super) async fn file_and_link(
        &self,
        home: &str,
        linked: Option<&(String, String)>,
    ) -> Result<Vec<String>, StoreError> {
        let mut resolution = [Resolution::new(home)];
        let sent_times = self.resolve_all_timed(&mut resolution, true).await?;
        let [resolution] = resolution;
        let keys = resolution.keys();
        let Some(message) = resolution.message() else {
            return Ok(keys);
        };
        if let Some((wa_id, bsuid)) = message.contact_link() {
            let linked_by_the_event = linked.is_some_and(|(w, b)| w == wa_id && b == bsuid);
            if !linked_by_the_event {
                self.ensure_contact_link(wa_id, bsuid).await?;
            }
        }
        let Some(snapshot) = Snapshot::of(keys.iter().cloned(), &message) else {
            return Ok(keys);
        };
        // Under every sent time's bucket: an earlier snapshot filed when the least sent time
        // was a later one finds this whole one beside it.
        let all_sent: BTreeSet<i64> = keys
            .iter()
            .filter_map(|key| sent_times.get(key))
            .flatten()
            .copied()
            .chain(snapshot.record.sent_at)
            .collect();
        let buckets = buckets_of(all_sent);
        let entry = snapshot.encode();
        let writes = snapshot.names().flat_map(|name| {
            buckets
                .iter()
                .map(move |bucket| (name.to_owned(), bucket.clone()))
        });
        try_join_all(writes.map(|(name, bucket)| self.add_to_bucket(name, bucket, &entry))).await?;
        Ok(keys)
    }

    async fn add_to_bucket(
        &self,
        name: String,
        bucket: String,
        entry: &str,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(summary_pk(&name)))
            .key("sk", s(&bucket))
            .update_expression("ADD entries :entry")
            .expression_attribute_values(":entry", AttributeValue::Ss(vec![entry.to_owned()]))
            .send()
            .await;
        let Err(error) = result else {
            return Ok(());
        };
        if !exceeds_item_size(error.code(), error.message()) {
            return Err(unavailable(
                "file a message in its contact's summary",
                error,
            ));
        }
        // A full bucket: this name's reads go through the message items from now on. Logged
        // without the name (a phone number).
        tracing::warn!(
            %bucket,
            "a contact summary bucket is full: that contact's reads go through its message items"
        );
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(summary_pk(&name)))
            .item("sk", s(OVERFLOW_SK))
            .item("at", n(crate::time::now_unix()))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| unavailable("mark a contact's summary overflowed", e))
    }

    /// The messages of `contact` (by either name) that its view reads, and maybe a few more
    /// (the read API's and the console's read): the latest message of each direction through
    /// the contact index, then the summary's buckets since their horizon, one query per name.
    /// Where the summary cannot answer (not backfilled yet, overflowed, or holding an entry
    /// this version cannot decode), the messages are resolved from their items instead, the
    /// latest ones found kept.
    pub(super) async fn summary_messages(
        &self,
        contact: &str,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        if !self.marker_seen(Backfill::ContactSummary).await? {
            return self.contact_messages(contact).await;
        }
        let names = self.names_of(contact).await?;
        let latest = self.latest_messages(&names).await?;
        match self.snapshots_since(&names, &latest).await? {
            Some(snapshots) => Ok(join(snapshots)),
            None => self.messages_since(&names, latest).await,
        }
    }

    /// The snapshots of the latest messages found and of every message the buckets since their
    /// horizon hold; `None` when the summary cannot answer.
    async fn snapshots_since(
        &self,
        names: &[String],
        (latest, horizon): &(Vec<Resolution>, Option<Horizon>),
    ) -> Result<Option<Vec<Snapshot>>, StoreError> {
        let mut snapshots: Vec<Snapshot> = latest
            .iter()
            .filter_map(|resolution| Snapshot::of(resolution.keys(), &resolution.message()?))
            .collect();
        let Some(horizon) = horizon else {
            return Ok(Some(snapshots));
        };
        let from = bucket_key(horizon.from);
        let buckets =
            try_join_all(names.iter().map(|name| self.buckets_since(name, &from))).await?;
        for items in buckets {
            for item in items {
                if text(&item, "sk").as_deref() == Some(OVERFLOW_SK) {
                    return Ok(None);
                }
                let entries = item.get("entries").and_then(|v| v.as_ss().ok());
                for entry in entries.into_iter().flatten() {
                    match Snapshot::decode(entry) {
                        Some(snapshot) => snapshots.push(snapshot),
                        // Written by another version, or a bug: the items still answer
                        // exactly.
                        None => {
                            tracing::warn!(
                                bytes = entry.len(),
                                "a contact summary entry does not decode: read the items instead"
                            );
                            return Ok(None);
                        }
                    }
                }
            }
        }
        Ok(Some(snapshots))
    }

    /// A name's bucket items from `from` on (and its overflow item, which sorts after them).
    async fn buckets_since(&self, name: &str, from: &str) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk >= :from")
                .expression_attribute_values(":pk", s(summary_pk(name)))
                .expression_attribute_values(":from", s(from))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("query a contact's summary", e))?;
            items.extend(output.items().iter().cloned());
            start = output.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// Every summary item filed under `name` (for `erase-contact`).
    pub async fn summary_items(&self, name: &str) -> Result<Vec<Item>, StoreError> {
        self.buckets_since(name, &bucket_key(0)).await
    }

    /// Files every message item that names a contact and reports a send (as this version's
    /// writes do), then writes the marker that lets contact reads use the summary. Safe while
    /// events flow and to run again: filing only adds to sets. Returns how many messages it
    /// filed.
    pub async fn backfill_contact_summary(&self) -> Result<usize, StoreError> {
        let mut filed: BTreeSet<String> = BTreeSet::new();
        let mut messages = 0;
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(pk, :msg) AND attribute_exists(contact)")
                .expression_attribute_values(":msg", s("MSG#"))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("scan for messages to file", e))?;
            for item in output.items() {
                let Some(key) = message_item_key(item) else {
                    continue;
                };
                if filed.contains(&key) {
                    continue;
                }
                filed.extend(self.file_and_link(&key, None).await?);
                messages += 1;
            }
            start = output.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        self.write_marker(Backfill::ContactSummary).await?;
        Ok(messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_for_the_items_size_overflows_a_bucket() {
        let message = "Item size to update has exceeded the maximum allowed size";
        assert!(exceeds_item_size(
            Some("ValidationException"),
            Some(message)
        ));
        assert!(!exceeds_item_size(
            Some("ValidationException"),
            Some("One or more parameter values were invalid")
        ));
        assert!(!exceeds_item_size(
            Some("ProvisionedThroughputExceededException"),
            Some(message)
        ));
        assert!(!exceeds_item_size(None, None));
    }
}
