//! A contact's messages on DynamoDB, read in bounded time whatever its history.
//!
//! Message items that name a contact and report a send carry `sent_key` (see [`sent_key`]), the
//! sort key of the `by_contact_sent` index (partition: `contact`). A read takes, for each name of
//! the contact and each direction, the latest sent item (descending, usually one item), then
//! every item sent since the horizon [`crate::recent`] sets: two small queries per name and
//! direction, and the items of the messages found. The messages it returns are a superset of
//! those the view reads ([`crate::session::ContactView::from_messages`] keeps exactly those).
//!
//! A table whose older items have no `sent_key` yet reads through the earlier indexes
//! (`by_contact`, `by_bsuid`: every item of the contact) until `wati-ingest
//! backfill-contact-index` has given every item its key and written the marker
//! `pk = SCHEMA, sk = by_contact_sent`; each process remembers the marker once seen.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::future::try_join_all;

use super::{
    item_from_attributes, link_keys, message_item_key, sent_key_at, sent_key_prefix,
    sent_time_of_key, table_key, Backfill, DynamoState, Item,
};
use crate::contact_page::{cut, MessagePage, Position};
use crate::message::{Direction, MessageRecord};
use crate::message_items::{distinct_messages, MessageItem, Resolution};
use crate::ports::StoreError;
use crate::recent::Horizon;
use crate::store::aws::{s, text, unavailable};

/// The index of contact reads: `contact` and `sent_key`.
pub const CONTACT_SENT_INDEX: &str = "by_contact_sent";

/// The earlier indexes: every item by `contact`, and by `bsuid`.
const CONTACT_INDEX: &str = "by_contact";
const BSUID_INDEX: &str = "by_bsuid";

/// Every name and direction a contact's messages are filed under in the index.
fn filings(names: &[String]) -> Vec<(&str, Direction)> {
    names
        .iter()
        .flat_map(|name| [Direction::Inbound, Direction::Outbound].map(|d| (name.as_str(), d)))
        .collect()
}

/// The last key of `direction`'s range: every sent key of it sorts below.
fn range_end(direction: Direction) -> String {
    let prefix = sent_key_prefix(direction, 0);
    format!("{}~", &prefix[..2])
}

impl DynamoState {
    /// The messages of a contact (by either name) that its view reads, and maybe a few more,
    /// resolved from their items (the notifier's read, and the read API's until the summary is
    /// backfilled). Found through an index, which is eventually consistent: a write made just
    /// now may be missing or stale.
    pub async fn contact_messages(&self, contact: &str) -> Result<Vec<MessageRecord>, StoreError> {
        let names = self.names_of(contact).await?;
        if self.marker_seen(Backfill::ContactIndex).await? {
            let latest = self.latest_messages(&names).await?;
            return self.messages_since(&names, latest).await;
        }
        let mut resolutions: Vec<Resolution> = self
            .all_homes(&names)
            .await?
            .into_values()
            .map(Resolution::from_home)
            .collect();
        self.resolve_all(&mut resolutions, false).await?;
        Ok(distinct_messages(resolutions))
    }

    /// The latest message of each filing (a name and a direction), resolved, and the horizon
    /// they set. Each filing is read at once with the others, newest key first, until no key
    /// left can hold a later send than the latest message it found (a key's time is never
    /// before its item's send, nor an item's before its message's): usually one item each.
    pub(super) async fn latest_messages(
        &self,
        names: &[String],
    ) -> Result<(Vec<Resolution>, Option<Horizon>), StoreError> {
        let latest_of_each = try_join_all(
            filings(names)
                .into_iter()
                .map(|(name, direction)| self.latest_of_filing(name, direction)),
        )
        .await?;
        let mut resolutions = Vec::new();
        let mut latest: [Option<i64>; 2] = [None, None];
        for (found, times) in latest_of_each {
            resolutions.extend(found);
            latest = [latest[0].max(times[0]), latest[1].max(times[1])];
        }
        Ok((resolutions, Horizon::new(latest[0], latest[1])))
    }

    /// The latest messages [found](Self::latest_messages), and every message with an item sent
    /// since their horizon, resolved from the items.
    pub(super) async fn messages_since(
        &self,
        names: &[String],
        (mut resolutions, horizon): (Vec<Resolution>, Option<Horizon>),
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let Some(horizon) = horizon else {
            return Ok(distinct_messages(resolutions));
        };
        let since = try_join_all(filings(names).into_iter().map(|(name, direction)| {
            self.query_sent(
                name,
                sent_key_prefix(direction, horizon.from),
                range_end(direction),
            )
        }))
        .await?;
        let resolved: BTreeSet<String> = resolutions.iter().flat_map(|r| r.keys()).collect();
        let mut homes = BTreeMap::new();
        for (_, item) in since.into_iter().flatten() {
            if !resolved.contains(&item.key) {
                homes.insert(item.key.clone(), item);
            }
        }
        resolutions.extend(homes.into_values().map(Resolution::from_home));
        self.resolve_all(&mut resolutions, false).await?;
        Ok(distinct_messages(resolutions))
    }

    /// The newest items of one filing down to the one holding its latest message, resolved, and
    /// the latest send found of each direction (inbound, outbound).
    async fn latest_of_filing(
        &self,
        name: &str,
        direction: Direction,
    ) -> Result<(Vec<Resolution>, [Option<i64>; 2]), StoreError> {
        let side = |direction: Direction| usize::from(direction == Direction::Outbound);
        let mut resolutions = Vec::new();
        let mut latest: [Option<i64>; 2] = [None, None];
        let mut start = None;
        loop {
            let (page, next) = self
                .query_sent_page(
                    name,
                    sent_key_prefix(direction, 0),
                    range_end(direction),
                    Some(1),
                    start,
                )
                .await?;
            let Some((key, item)) = page.into_iter().next() else {
                break;
            };
            let mut resolution = [Resolution::from_home(item)];
            self.resolve_all(&mut resolution, false).await?;
            let [resolution] = resolution;
            if let Some(message) = resolution.message() {
                let slot = side(message.direction());
                latest[slot] = latest[slot].max(message.sent_at);
            }
            resolutions.push(resolution);
            let best = latest[side(direction)];
            let done =
                matches!((sent_time_of_key(&key), best), (Some(at), Some(best)) if at <= best);
            if done || next.is_none() {
                break;
            }
            start = next;
        }
        Ok((resolutions, latest))
    }

    /// Every item of `name` whose `sent_key` is between `low` and `high`, newest first.
    async fn query_sent(
        &self,
        name: &str,
        low: String,
        high: String,
    ) -> Result<Vec<(String, MessageItem)>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let (page, next) = self
                .query_sent_page(name, low.clone(), high.clone(), None, start)
                .await?;
            items.extend(page);
            if next.is_none() {
                return Ok(items);
            }
            start = next;
        }
    }

    /// One page of items of `name` whose `sent_key` is between `low` and `high`, newest first,
    /// with where the next page starts.
    async fn query_sent_page(
        &self,
        name: &str,
        low: String,
        high: String,
        limit: Option<i32>,
        start: Option<Item>,
    ) -> Result<(Vec<(String, MessageItem)>, Option<Item>), StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(CONTACT_SENT_INDEX)
            .key_condition_expression("contact = :contact AND sent_key BETWEEN :low AND :high")
            .expression_attribute_values(":contact", s(name))
            .expression_attribute_values(":low", s(low))
            .expression_attribute_values(":high", s(high))
            .scan_index_forward(false)
            .set_limit(limit)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| unavailable("query a contact's messages by sent time", e))?;
        let items = output
            .items()
            .iter()
            .filter_map(|item| {
                let sent_key = text(item, "sent_key")?;
                let key = message_item_key(item)?;
                Some((sent_key, item_from_attributes(key, item)))
            })
            .collect();
        Ok((items, output.last_evaluated_key().cloned()))
    }

    /// A page of the contact's messages after `before`, newest sent first: every name and
    /// direction one range of the index, cut by [`cut`]. Needs the index backfilled (an
    /// earlier item without `sent_key` is not listed).
    pub async fn contact_page(
        &self,
        contact: &str,
        before: Option<&Position>,
        limit: usize,
    ) -> Result<MessagePage, StoreError> {
        let names = self.names_of(contact).await?;
        let filings: Vec<(&str, Direction)> = names
            .iter()
            .flat_map(|name| [Direction::Inbound, Direction::Outbound].map(|d| (name.as_str(), d)))
            .collect();
        // `high` is inclusive: the cursor's own item may come back, so one more is asked for.
        let want = i32::try_from(limit + 2).unwrap_or(i32::MAX);
        let pages = try_join_all(filings.iter().map(|(name, direction)| {
            let high = match before {
                Some(cursor) => sent_key_at(*direction, cursor.sent_at, &cursor.key),
                None => range_end(*direction),
            };
            self.query_sent_page(name, sent_key_prefix(*direction, 0), high, Some(want), None)
        }))
        .await?;
        let found: Vec<(Position, MessageItem)> = pages
            .into_iter()
            .flat_map(|(items, _)| items)
            .filter_map(|(sent_key, item)| {
                let position = Position {
                    sent_at: sent_time_of_key(&sent_key)?,
                    key: item.key.clone(),
                };
                Some((position, item))
            })
            .collect();
        let (page, next) = cut(found, before, limit);
        let mut resolutions: Vec<Resolution> = page
            .into_iter()
            .map(|(_, home)| Resolution::from_home(home))
            .collect();
        self.resolve_all(&mut resolutions, false).await?;
        Ok(MessagePage {
            messages: resolutions.iter().filter_map(Resolution::message).collect(),
            next,
        })
    }

    /// Every item that names one of `names` (the earlier indexes: grows with the history).
    pub(crate) async fn all_homes(
        &self,
        names: &[String],
    ) -> Result<BTreeMap<String, MessageItem>, StoreError> {
        let mut homes = BTreeMap::new();
        for name in names {
            for (index, attribute) in [(CONTACT_INDEX, "contact"), (BSUID_INDEX, "bsuid")] {
                for item in self.query_index(index, attribute, name).await? {
                    homes.insert(item.key.clone(), item);
                }
            }
        }
        Ok(homes)
    }

    async fn query_index(
        &self,
        index: &str,
        attribute: &str,
        value: &str,
    ) -> Result<Vec<MessageItem>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression(format!("{attribute} = :value"))
                .expression_attribute_values(":value", s(value))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("query contact messages", e))?;
            items.extend(output.items().iter().filter_map(|item| {
                message_item_key(item).map(|key| item_from_attributes(key, item))
            }));
            start = output.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// Makes sure a message that names both `wa_id` and `bsuid` links them, as an event naming
    /// both does in its own transaction. Needed when the names came from different events (a v1
    /// twin with the number, a v2 twin with the BSUID): the item is filed in `by_contact_sent`
    /// under the number alone, so without the link a read by the BSUID finds nothing.
    ///
    /// Called after the event's write, with the message resolved by strongly consistent reads:
    /// of the events that brought the two names together, the one that completed last sees both
    /// and writes the link. Both halves are read (strongly consistent; a read costs a fifth of a
    /// write) and whichever is missing is put: an erasure that stopped between two deletes, or
    /// ran between two puts, leaves one half, which the next event of the message, or the
    /// backfill, completes. A repeat or a race puts the same items again.
    pub(super) async fn ensure_contact_link(
        &self,
        wa_id: &str,
        bsuid: &str,
    ) -> Result<(), StoreError> {
        let halves = link_keys(wa_id, bsuid);
        let found: BTreeSet<(String, String)> = self
            .batch_get(
                halves.iter().map(|(pk, sk)| table_key(pk, sk)).collect(),
                true,
            )
            .await?
            .iter()
            .filter_map(|item| Some((text(item, "pk")?, text(item, "sk")?)))
            .collect();
        for (pk, sk) in halves {
            if found.contains(&(pk.clone(), sk.clone())) {
                continue;
            }
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(pk))
                .item("sk", s(sk))
                .send()
                .await
                .map_err(|e| unavailable("write contact link", e))?;
        }
        Ok(())
    }

    /// The contact's names: the one asked for and those its links add.
    pub(crate) async fn names_of(&self, contact: &str) -> Result<Vec<String>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(format!("LINK#{contact}")))
            .send()
            .await
            .map_err(|e| unavailable("query contact links", e))?;
        let mut names = vec![contact.to_owned()];
        names.extend(output.items().iter().filter_map(|item| text(item, "sk")));
        Ok(names)
    }

    /// Gives every message item that names a contact and reports a send its `sent_key` (as the
    /// writes of this version do), then writes the marker that lets reads use the index; then
    /// files every message in the contact summary ([`super::summary`]) and writes its marker. Safe to
    /// run while events flow and to run again: each write is `if_not_exists` on an existing
    /// item. Returns how many items it gave a key.
    pub async fn backfill_contact_index(&self) -> Result<usize, StoreError> {
        let mut keyed = 0;
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression(
                    "begins_with(pk, :msg) AND attribute_exists(contact) \
                     AND attribute_not_exists(sent_key)",
                )
                .expression_attribute_values(":msg", s("MSG#"))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("scan for items without a sent key", e))?;
            for item in output.items() {
                let Some(key) = message_item_key(item) else {
                    continue;
                };
                let record = item_from_attributes(key.clone(), item).record;
                let Some(sent_at) = record.sent_at else {
                    continue;
                };
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .key("pk", s(format!("MSG#{key}")))
                    .key("sk", s("MSG"))
                    .update_expression("SET sent_key = if_not_exists(sent_key, :sent_key)")
                    .condition_expression("attribute_exists(pk)")
                    .expression_attribute_values(
                        ":sent_key",
                        s(sent_key_at(record.direction(), sent_at, &key)),
                    )
                    .send()
                    .await
                    .map_err(|e| unavailable("give an item its sent key", e))?;
                keyed += 1;
            }
            start = output.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        self.write_marker(Backfill::ContactIndex).await?;
        self.backfill_contact_summary().await?;
        Ok(keyed)
    }
}
