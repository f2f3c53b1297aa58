//! The state store on DynamoDB (table `STATE_TABLE`): message items (one per id, see
//! [`crate::message_items`]) written without read-modify-write, delete or fold, and joined at
//! read time with the same pure resolution as the embedded store.
//!
//! Items (see `infra/README.md`):
//! - message item `pk = MSG#<id>, sk = MSG`: the ids (`id`, `whatsapp_message_id`,
//!   `local_message_id`), contact names (`wa_id`, `bsuid`) and business number (`channel_id`,
//!   `channel_phone_number`, on a home item) are each set once, under the
//!   condition "absent or equal" (an event that would change one is refused); facts are added to
//!   sets (`sent_times`, `delivered_times`, `read_times`, `replied_times`: number sets;
//!   `template_names`, `directions`, `failures`: string sets) and the least value is read, so
//!   every write is unconditional on the facts, commutative and idempotent. `contact` (the phone
//!   number, else the BSUID) feeds the `by_contact` index; `linked` holds the ids and contact
//!   links written atomically with the item; `caused_by` the last writing webhook's correlation
//!   id, for the notifier's documents.
//! - link `pk = LINK#<waId or bsuid>, sk = <the other>`: one contact's two names.
//! - quarantine `pk = QUARANTINE#<key>, sk = QUARANTINE`: an event that can never be applied;
//!   `expires_at` (the table's TTL attribute, on these items only) `QUARANTINE_RETENTION_DAYS` after
//!   its receipt.
//!
//! Applying an event: one `UpdateItem` of its home item, conditioned on its ids and names being
//! consistent and on `linked` already holding every edge and link the event implies. If that
//! condition fails only for want of links, one `TransactWriteItems` writes the home item, its
//! edge items and the contact links together, and adds them to `linked`: a marker that is only
//! ever set with what it marks, so a lost response, a retry or a crash between calls cannot leave
//! an id without its item.
//!
//! Items of the earlier model read as they are: a merged message item is a home holding all its
//! ids, and an alias `pk = ID#<id>, sk = ID` reads as a copy of the message it names.

mod contacts;
mod summary;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
    Update,
};

use crate::changes::ChangeType;
use crate::contact_page::{MessagePage, Position};
use crate::event::variant_key;
use crate::message::{Direction, Failure, MessageRecord};
use crate::message_items::{
    contradiction, plan, set_once_fields, Contradiction, ItemWrite, MessageItem, Plan, Resolution,
};
use crate::ports::{MergeOutcome, QuarantineEntry, QueuedEvent, StateStore, StoreError};
use crate::session::ContactView;
use crate::store::aws::{bytes, n, number, s, text, unavailable};
use crate::windows::{
    due_shard, first_due, window_pk, WindowItem, WindowState, DUE_INDEX, DUE_PAGE,
};

type Item = HashMap<String, AttributeValue>;

pub use contacts::CONTACT_SENT_INDEX;

/// Rounds of `UnprocessedKeys` retried (with backoff) before a read gives up.
const BATCH_GET_ATTEMPTS: u32 = 8;

/// BatchGetItem takes at most this many keys per call.
const BATCH_GET_LIMIT: usize = 100;

/// The fact sets and the record field each one holds.
const TIME_SETS: [&str; 4] = [
    "sent_times",
    "delivered_times",
    "read_times",
    "replied_times",
];
/// The same facts as the earlier model stored them (one number each), read alongside the sets.
const LEGACY_TIMES: [&str; 4] = ["sent_at", "delivered_at", "read_at", "replied_at"];

#[derive(Clone, Debug)]
pub struct DynamoState {
    client: aws_sdk_dynamodb::Client,
    table: String,
    /// Set once each backfill's marker has been seen ([`Backfill`]).
    backfills_seen: Arc<[AtomicBool; 2]>,
    quarantine_retention_seconds: i64,
}

/// The key of an alias item of the earlier model.
pub(crate) fn alias_key(id: &str) -> HashMap<String, AttributeValue> {
    table_key(format!("ID#{id}"), "ID")
}

pub(crate) fn message_key(id: &str) -> HashMap<String, AttributeValue> {
    table_key(format!("MSG#{id}"), "MSG")
}

/// The key of the state table's item `pk`, `sk`.
pub(crate) fn table_key(
    pk: impl Into<String>,
    sk: impl Into<String>,
) -> HashMap<String, AttributeValue> {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

/// The keys of the two link items between a contact's number and its BSUID (`pk = LINK#<one>,
/// sk = <the other>`), the BSUID's first.
fn link_keys(wa_id: &str, bsuid: &str) -> [(String, String); 2] {
    [
        (format!("LINK#{bsuid}"), wa_id.to_owned()),
        (format!("LINK#{wa_id}"), bsuid.to_owned()),
    ]
}

fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

/// A failure as one string, so that its time, code and detail stay together in the set.
fn encode_failure(failure: &Failure) -> String {
    serde_json::json!([failure.at, failure.code, failure.detail]).to_string()
}

fn decode_failure(encoded: &str) -> Option<Failure> {
    let (at, code, detail): (i64, Option<String>, Option<String>) =
        serde_json::from_str(encoded).ok()?;
    Some(Failure { at, code, detail })
}

/// An item's place in the `by_contact_sent` index (under its `contact`): `I#` (inbound) or `O#`,
/// the sent time in 12 digits, `#` and the item's key, e.g. `O#001764238523#<id>`. Set by the
/// first write that reports the send and names the contact (`if_not_exists`: never moved), so
/// its time is one of the item's sent times, never earlier than the least: a contact read that
/// takes every key from a time on finds every item sent since ([`crate::recent`]). `None` for a
/// write that names no contact or reports no send.
pub fn sent_key(write: &ItemWrite) -> Option<String> {
    let record = &write.record;
    let sent_at = record.sent_at?;
    record.contact()?;
    Some(sent_key_at(record.direction(), sent_at, &write.key))
}

/// The `by_contact_sent` key of an item sent at `sent_at` in `direction`.
pub fn sent_key_at(direction: Direction, sent_at: i64, key: &str) -> String {
    format!("{}{key}", sent_key_prefix(direction, sent_at))
}

/// The start of the `by_contact_sent` keys of `direction` sent at `sent_at`: `O#001764238523#`.
fn sent_key_prefix(direction: Direction, sent_at: i64) -> String {
    let side = match direction {
        Direction::Inbound => 'I',
        Direction::Outbound => 'O',
    };
    format!("{side}#{:012}#", sent_at.clamp(0, 999_999_999_999))
}

/// The sent time a `by_contact_sent` key holds.
fn sent_time_of_key(key: &str) -> Option<i64> {
    key.get(2..14)?.parse().ok()
}

/// One `UpdateItem` (alone or in a transaction): the expression, its condition and values.
#[derive(Debug, Default, PartialEq)]
pub struct ItemUpdate {
    pub key: String,
    pub update_expression: String,
    pub condition_expression: String,
    pub values: HashMap<String, AttributeValue>,
}

/// The update that joins `write` into its item. With a `required` token, it also requires
/// `linked` to hold it (the fast path, which then writes nothing else); otherwise it adds the
/// write's tokens. `caused_by` (the webhook's correlation id) is left on the item for the
/// notifier's documents: metadata, not state (no read takes it), so the last writer's wins.
pub fn item_update(
    write: &ItemWrite,
    required: Option<&str>,
    caused_by: Option<&str>,
) -> ItemUpdate {
    let mut set = Vec::new();
    let mut add = Vec::new();
    let mut conditions = Vec::new();
    let mut values = HashMap::new();
    for (field, value) in set_once_fields(&write.record) {
        if let Some(value) = value {
            set.push(format!("{field} = :{field}"));
            conditions.push(format!(
                "(attribute_not_exists({field}) OR {field} = :{field})"
            ));
            values.insert(format!(":{field}"), s(value));
        }
    }
    let record = &write.record;
    match (&record.wa_id, &record.bsuid) {
        (Some(_), _) => set.push("contact = :wa_id".to_owned()),
        (None, Some(_)) => set.push("contact = if_not_exists(contact, :bsuid)".to_owned()),
        (None, None) => {}
    }
    if let Some(caused_by) = caused_by {
        set.push("caused_by = :caused_by".to_owned());
        values.insert(":caused_by".to_owned(), s(caused_by));
    }
    if let Some(key) = sent_key(write) {
        set.push("sent_key = if_not_exists(sent_key, :sent_key)".to_owned());
        values.insert(":sent_key".to_owned(), s(key));
    }
    let times = [
        record.sent_at,
        record.delivered_at,
        record.read_at,
        record.replied_at,
    ];
    for (name, at) in TIME_SETS.iter().zip(times) {
        if let Some(at) = at {
            add.push(format!("{name} :{name}"));
            values.insert(format!(":{name}"), AttributeValue::Ns(vec![at.to_string()]));
        }
    }
    let texts = [
        ("template_names", record.template_name.clone()),
        (
            "directions",
            record.direction.map(|d| direction_name(d).to_owned()),
        ),
        ("failures", record.failure.as_ref().map(encode_failure)),
    ];
    for (name, value) in texts {
        if let Some(value) = value {
            add.push(format!("{name} :{name}"));
            values.insert(format!(":{name}"), AttributeValue::Ss(vec![value]));
        }
    }
    if let Some(token) = required {
        conditions.push("contains(linked, :token)".to_owned());
        values.insert(":token".to_owned(), s(token));
    } else if !write.linked.is_empty() {
        add.push("linked :linked".to_owned());
        values.insert(
            ":linked".to_owned(),
            AttributeValue::Ss(write.linked.iter().cloned().collect()),
        );
    }
    // Never empty: a home sets its own id, and an edge at least two.
    let mut update_expression = String::new();
    if !set.is_empty() {
        update_expression = format!("SET {}", set.join(", "));
    }
    if !add.is_empty() {
        update_expression = format!("{update_expression} ADD {}", add.join(", "));
    }
    ItemUpdate {
        key: write.key.clone(),
        update_expression: update_expression.trim().to_owned(),
        condition_expression: conditions.join(" AND "),
        values,
    }
}

/// A stored item as the record and links it holds (the least value of every fact set, and the
/// earlier model's single values beside them).
pub fn item_from_attributes(key: String, item: &Item) -> MessageItem {
    let least_number = |set: &str, legacy: &str| {
        let in_set = item
            .get(set)
            .and_then(|v| v.as_ns().ok())
            .into_iter()
            .flatten()
            .filter_map(|n| n.parse::<i64>().ok());
        in_set.chain(number(item, legacy)).min()
    };
    let strings = |set: &str| -> Vec<String> {
        item.get(set)
            .and_then(|v| v.as_ss().ok())
            .cloned()
            .unwrap_or_default()
    };
    let least_text =
        |set: &str, legacy: &str| strings(set).into_iter().chain(text(item, legacy)).min();
    let legacy_failure = number(item, "failed_at").map(|at| Failure {
        at,
        code: text(item, "failed_code"),
        detail: text(item, "failed_detail"),
    });
    let failure = strings("failures")
        .iter()
        .filter_map(|f| decode_failure(f))
        .chain(legacy_failure)
        .min();
    let direction = strings("directions")
        .into_iter()
        .chain(text(item, "direction"))
        .map(|d| match d.as_str() {
            "inbound" => Direction::Inbound,
            _ => Direction::Outbound,
        })
        .min();
    let times: Vec<Option<i64>> = TIME_SETS
        .iter()
        .zip(LEGACY_TIMES)
        .map(|(set, legacy)| least_number(set, legacy))
        .collect();
    MessageItem {
        key,
        record: MessageRecord {
            id: text(item, "id"),
            whatsapp_message_id: text(item, "whatsapp_message_id"),
            local_message_id: text(item, "local_message_id"),
            wa_id: text(item, "wa_id"),
            bsuid: text(item, "bsuid"),
            channel_id: text(item, "channel_id"),
            channel_phone_number: text(item, "channel_phone_number"),
            direction,
            template_name: least_text("template_names", "template_name"),
            sent_at: times[0],
            delivered_at: times[1],
            read_at: times[2],
            replied_at: times[3],
            failure,
        },
        linked: strings("linked").into_iter().collect(),
    }
}

/// Every sent time each item read holds, by the item's key.
type SentTimes = BTreeMap<String, BTreeSet<i64>>;

/// Every sent time an item holds: its set and the earlier model's single value.
fn sent_times_of(item: &Item) -> BTreeSet<i64> {
    item.get("sent_times")
        .and_then(|v| v.as_ns().ok())
        .into_iter()
        .flatten()
        .filter_map(|n| n.parse::<i64>().ok())
        .chain(number(item, "sent_at"))
        .collect()
}

/// The key an item's `pk` files it under, if it is a message item.
fn message_item_key(item: &Item) -> Option<String> {
    text(item, "pk")?.strip_prefix("MSG#").map(str::to_owned)
}

/// How a message's items are read: eventually consistent (the read API: half the price), or
/// strongly consistent (the notifier, which must see the write its stream record reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    Eventual,
    Strong,
}

impl DynamoState {
    /// The message `id` names, its items read as `read` says.
    pub async fn message_read(
        &self,
        id: &str,
        read: Read,
    ) -> Result<Option<MessageRecord>, StoreError> {
        let mut resolution = [Resolution::new(id)];
        self.resolve_all(&mut resolution, read == Read::Strong)
            .await?;
        let [resolution] = resolution;
        Ok(resolution.message())
    }

    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoState {
            client,
            table: table.into(),
            backfills_seen: Arc::new([AtomicBool::new(false), AtomicBool::new(false)]),
            quarantine_retention_seconds: crate::settings::DEFAULT_QUARANTINE_RETENTION_DAYS
                * crate::settings::SECONDS_PER_DAY,
        }
    }

    /// Quarantined events expire (the table's TTL on `expires_at`) `days` after their receipt.
    pub fn with_quarantine_retention_days(mut self, days: i64) -> Self {
        self.quarantine_retention_seconds = days.max(1) * crate::settings::SECONDS_PER_DAY;
        self
    }

    /// Opens the HTTPS connection before the first request needs it.
    pub async fn warm_up(&self) -> Result<(), StoreError> {
        self.ping().await
    }

    /// The fast path: the home item alone, if it already holds every link the event implies.
    /// `Ok(None)` means the links are missing (write the whole plan).
    async fn update_home(
        &self,
        plan: &Plan,
        caused_by: Option<&str>,
    ) -> Result<Option<MergeOutcome>, StoreError> {
        let update = item_update(&plan.home, plan.token.as_deref(), caused_by);
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(message_key(&update.key)))
            .update_expression(update.update_expression)
            .set_expression_attribute_values(Some(update.values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if !update.condition_expression.is_empty() {
            request = request.condition_expression(update.condition_expression);
        }
        match request.send().await {
            Ok(_) => Ok(Some(MergeOutcome::Merged)),
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    let stored = item_from_attributes(
                        plan.home.key.clone(),
                        failed.item().unwrap_or(&HashMap::new()),
                    );
                    Ok(contradiction(&stored.record, &plan.home).map(MergeOutcome::Refused))
                }
                _ => Err(unavailable("update message item", error)),
            },
        }
    }

    /// The whole plan in one transaction: home, edges and contact links, all or nothing.
    async fn write_plan(
        &self,
        plan: &Plan,
        caused_by: Option<&str>,
    ) -> Result<MergeOutcome, StoreError> {
        let writes: Vec<&ItemWrite> = std::iter::once(&plan.home).chain(&plan.edges).collect();
        let mut items = Vec::new();
        for write in &writes {
            let update = item_update(write, None, caused_by);
            let mut builder = Update::builder()
                .table_name(&self.table)
                .set_key(Some(message_key(&update.key)))
                .update_expression(update.update_expression)
                .set_expression_attribute_values(Some(update.values))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
            if !update.condition_expression.is_empty() {
                builder = builder.condition_expression(update.condition_expression);
            }
            let update = builder
                .build()
                .map_err(|e| StoreError::unavailable("build item update", e))?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        if let Some((wa_id, bsuid)) = &plan.contact_link {
            let links: BTreeSet<(String, String)> = link_keys(wa_id, bsuid).into();
            for (pk, sk) in links {
                let put = Put::builder()
                    .table_name(&self.table)
                    .item("pk", s(pk))
                    .item("sk", s(sk))
                    .build()
                    .map_err(|e| StoreError::unavailable("build contact link", e))?;
                items.push(TransactWriteItem::builder().put(put).build());
            }
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let Err(error) = result else {
            return Ok(MergeOutcome::Merged);
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(canceled)) =
            error.as_service_error()
        {
            for (reason, write) in canceled.cancellation_reasons().iter().zip(&writes) {
                if reason.code() != Some("ConditionalCheckFailed") {
                    continue;
                }
                let stored = item_from_attributes(
                    write.key.clone(),
                    reason.item().unwrap_or(&HashMap::new()),
                );
                let refused = contradiction(&stored.record, write).unwrap_or(Contradiction {
                    key: write.key.clone(),
                    field: "identity",
                });
                return Ok(MergeOutcome::Refused(refused));
            }
        }
        Err(unavailable("write message items", error))
    }

    /// The items under `keys` (strongly consistent reads if `consistent`). An alias of the earlier model (`ID#k`
    /// naming message `p`) reads as a copy of `p` joined into `k`'s item, so that `k` and `p`
    /// name each other: messages written before the upgrade stay whole whatever comes next.
    async fn fetch(
        &self,
        keys: &[String],
        consistent: bool,
    ) -> Result<(BTreeMap<String, Option<MessageItem>>, SentTimes), StoreError> {
        let mut found: BTreeMap<String, Option<MessageItem>> = BTreeMap::new();
        let mut sent_times = SentTimes::new();
        let mut aliases: BTreeMap<String, String> = BTreeMap::new();
        let wanted = keys
            .iter()
            .flat_map(|k| [message_key(k), alias_key(k)])
            .collect();
        for item in self.batch_get(wanted, consistent).await? {
            if let Some(key) = message_item_key(&item) {
                sent_times.insert(key.clone(), sent_times_of(&item));
                found.insert(key.clone(), Some(item_from_attributes(key, &item)));
            } else if let (Some(alias), Some(primary)) = (
                text(&item, "pk").and_then(|pk| pk.strip_prefix("ID#").map(str::to_owned)),
                text(&item, "message"),
            ) {
                if alias != primary {
                    aliases.insert(alias, primary);
                }
            }
        }
        let primaries: BTreeSet<String> = aliases
            .values()
            .filter(|p| !found.contains_key(*p))
            .cloned()
            .collect();
        let mut legacy: BTreeMap<String, MessageItem> = BTreeMap::new();
        if !primaries.is_empty() {
            for item in self
                .batch_get(
                    primaries.iter().map(|p| message_key(p)).collect(),
                    consistent,
                )
                .await?
            {
                if let Some(key) = message_item_key(&item) {
                    sent_times.insert(key.clone(), sent_times_of(&item));
                    legacy.insert(key.clone(), item_from_attributes(key, &item));
                }
            }
        }
        for (alias, primary) in aliases {
            let message = found
                .get(&primary)
                .cloned()
                .flatten()
                .or_else(|| legacy.get(&primary).cloned());
            let Some(message) = message else { continue };
            let primary_times = sent_times.get(&primary).cloned().unwrap_or_default();
            sent_times
                .entry(alias.clone())
                .or_default()
                .extend(primary_times);
            let entry = found.entry(alias.clone()).or_insert(None);
            let mut item = entry.take().unwrap_or_else(|| MessageItem {
                key: alias.clone(),
                ..MessageItem::default()
            });
            item.record.merge(&message.record);
            *entry = Some(item);
        }
        for key in keys {
            found.entry(key.clone()).or_insert(None);
        }
        Ok((found, sent_times))
    }

    async fn batch_get(
        &self,
        keys: Vec<HashMap<String, AttributeValue>>,
        consistent: bool,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        for chunk in keys.chunks(BATCH_GET_LIMIT) {
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(chunk.to_vec()))
                    .set_consistent_read(consistent.then_some(true))
                    .build()
                    .map_err(|e| StoreError::unavailable("build batch get", e))?,
            );
            let mut attempt = 0;
            while let Some(request) = pending.take() {
                if attempt > 0 {
                    if attempt >= BATCH_GET_ATTEMPTS {
                        return Err(StoreError::unavailable(
                            "get message items",
                            "keys left unprocessed after every retry (throttled)",
                        ));
                    }
                    // Unprocessed keys mean throttling: back off before asking again.
                    let backoff = 25u64 << attempt.min(6);
                    tokio::time::sleep(std::time::Duration::from_millis(backoff)).await;
                }
                attempt += 1;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| unavailable("get message items", e))?;
                if let Some(got) = output.responses().and_then(|r| r.get(&self.table)) {
                    items.extend(got.iter().cloned());
                }
                pending = output
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .filter(|k| !k.keys().is_empty())
                    .cloned();
            }
        }
        Ok(items)
    }

    /// Runs resolutions to the end, one batched fetch per round for all of them.
    async fn resolve_all(
        &self,
        resolutions: &mut [Resolution],
        consistent: bool,
    ) -> Result<(), StoreError> {
        self.resolve_all_timed(resolutions, consistent)
            .await
            .map(|_| ())
    }

    /// [`Self::resolve_all`], returning every sent time each fetched item holds (the whole set,
    /// where a resolution keeps the least).
    async fn resolve_all_timed(
        &self,
        resolutions: &mut [Resolution],
        consistent: bool,
    ) -> Result<SentTimes, StoreError> {
        let mut sent_times = SentTimes::new();
        loop {
            let wanted: BTreeSet<String> = resolutions.iter().flat_map(|r| r.wanted()).collect();
            if wanted.is_empty() {
                return Ok(sent_times);
            }
            let wanted: Vec<String> = wanted.into_iter().collect();
            let (found, times) = self.fetch(&wanted, consistent).await?;
            sent_times.extend(times);
            for resolution in resolutions.iter_mut() {
                for key in resolution.wanted() {
                    resolution.offer(&key, found.get(&key).cloned().flatten());
                }
            }
        }
    }
}

/// A backfill of items written before a release: its marker (`pk = SCHEMA`, `sk =`
/// [`Backfill::marker`]) is written once every earlier item is done, and each process remembers
/// it once seen. Until then, reads take the earlier path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backfill {
    /// Every item's `sent_key`, for `by_contact_sent` ([`contacts`]).
    ContactIndex = 0,
    /// Every message filed in the contact summary ([`summary`]).
    ContactSummary = 1,
}

impl Backfill {
    fn marker(self) -> &'static str {
        match self {
            Backfill::ContactIndex => contacts::CONTACT_SENT_INDEX,
            Backfill::ContactSummary => "contact_summary",
        }
    }
}

impl DynamoState {
    fn marker_key(backfill: Backfill) -> HashMap<String, AttributeValue> {
        table_key("SCHEMA", backfill.marker())
    }

    fn backfill_seen(&self, backfill: Backfill) -> &AtomicBool {
        &self.backfills_seen[backfill as usize]
    }

    /// Whether `backfill` is done (one `GetItem` until its marker is seen, then none).
    pub(crate) async fn marker_seen(&self, backfill: Backfill) -> Result<bool, StoreError> {
        let seen = self.backfill_seen(backfill);
        if seen.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(true);
        }
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::marker_key(backfill)))
            .send()
            .await
            .map_err(|e| unavailable("read a backfill's marker", e))?;
        let found = output.item().is_some();
        if found {
            seen.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(found)
    }

    /// Writes `backfill`'s marker (it is done) and remembers it.
    pub(crate) async fn write_marker(&self, backfill: Backfill) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::marker_key(backfill)))
            .item("backfilled_at", n(crate::time::now_unix()))
            .send()
            .await
            .map_err(|e| unavailable("write a backfill's marker", e))?;
        self.backfill_seen(backfill)
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// The key of a window item ([`crate::windows`]).
fn window_key(contact: &str, channel: &str) -> HashMap<String, AttributeValue> {
    table_key(window_pk(contact, channel), "WINDOW")
}

/// The notifier's window write: the end moves forward only, and the closing falls due `lead`
/// before it. One `UpdateItem`, commutative and idempotent.
pub fn window_update(contact: &str, channel: &str, window_end: i64, lead: i64) -> ItemUpdate {
    let pk = window_pk(contact, channel);
    ItemUpdate {
        values: HashMap::from([
            (":end".to_owned(), n(window_end)),
            (":due".to_owned(), n(first_due(window_end, lead))),
            (":shard".to_owned(), s(due_shard(&pk))),
            (":contact".to_owned(), s(contact)),
            (":channel".to_owned(), s(channel)),
        ]),
        key: pk,
        update_expression: "SET window_end = :end, next_due = :due, due_shard = :shard, \
                            window_contact = :contact, window_channel = :channel"
            .to_owned(),
        condition_expression: "attribute_not_exists(window_end) OR window_end < :end".to_owned(),
    }
}

/// The timer's mark after announcing `kind` for the window ending at `window_end`: nothing if
/// the window has moved. After a closing the close is due at the end (unless it was announced
/// already); after a close the item leaves the index.
pub fn window_mark(window_end: i64, kind: ChangeType) -> ItemUpdate {
    let (update_expression, condition_expression) = match kind {
        ChangeType::WindowClosing => (
            "SET next_due = window_end",
            "window_end = :end AND next_due < window_end",
        ),
        _ => ("REMOVE next_due", "window_end = :end"),
    };
    ItemUpdate {
        key: String::new(),
        update_expression: update_expression.to_owned(),
        condition_expression: condition_expression.to_owned(),
        values: HashMap::from([(":end".to_owned(), n(window_end))]),
    }
}

impl DynamoState {
    /// Records a window end for the timer (see [`window_update`]); an equal or newer end kept is
    /// not an error.
    pub async fn track_window(
        &self,
        contact: &str,
        channel: &str,
        window_end: i64,
        lead: i64,
    ) -> Result<(), StoreError> {
        let update = window_update(contact, channel, window_end, lead);
        self.conditional_update(window_key(contact, channel), update, "record window")
            .await
    }

    /// One `UpdateItem` whose failed condition means "already so": not an error.
    async fn conditional_update(
        &self,
        key: HashMap<String, AttributeValue>,
        update: ItemUpdate,
        what: &'static str,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression(update.update_expression)
            .condition_expression(update.condition_expression)
            .set_expression_attribute_values(Some(update.values))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error)
                if matches!(
                    error.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(())
            }
            Err(error) => Err(unavailable(what, error)),
        }
    }
}

#[async_trait]
impl WindowState for DynamoState {
    async fn due_windows(&self, shard: &str, now: i64) -> Result<Vec<WindowItem>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(DUE_INDEX)
            .key_condition_expression("due_shard = :shard AND next_due <= :now")
            .expression_attribute_values(":shard", s(shard))
            .expression_attribute_values(":now", n(now))
            .limit(DUE_PAGE)
            .send()
            .await
            .map_err(|e| unavailable("query due windows", e))?;
        Ok(output
            .items()
            .iter()
            .filter_map(|item| {
                Some(WindowItem {
                    contact: text(item, "window_contact")?,
                    channel: text(item, "window_channel").unwrap_or_default(),
                    window_end: number(item, "window_end")?,
                    next_due: number(item, "next_due")?,
                })
            })
            .collect())
    }

    async fn window_announced(
        &self,
        window: &WindowItem,
        kind: ChangeType,
    ) -> Result<(), StoreError> {
        self.conditional_update(
            window_key(&window.contact, &window.channel),
            window_mark(window.window_end, kind),
            "mark window announced",
        )
        .await
    }
}

#[async_trait]
impl StateStore for DynamoState {
    async fn apply(
        &self,
        facts: &MessageRecord,
        caused_by: Option<&str>,
    ) -> Result<MergeOutcome, StoreError> {
        let Some(plan) = plan(facts) else {
            return Ok(MergeOutcome::Merged);
        };
        let outcome = match self.update_home(&plan, caused_by).await? {
            Some(outcome) => outcome,
            None => self.write_plan(&plan, caused_by).await?,
        };
        if outcome == MergeOutcome::Merged {
            self.file_and_link_retried(&plan.home.key, plan.contact_link.as_ref())
                .await?;
        }
        Ok(outcome)
    }

    async fn quarantine(&self, event: &QueuedEvent, reason: &str) -> Result<(), StoreError> {
        let body = AttributeValue::B(Blob::new(event.body.as_bytes()));
        let put = |key: &str| {
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(format!("QUARANTINE#{key}")))
                .item("sk", s("QUARANTINE"))
                .item("reason", s(reason))
                .item("received_at", n(event.received_at))
                .item(
                    "expires_at",
                    n(event
                        .received_at
                        .saturating_add(self.quarantine_retention_seconds)),
                )
                .item("body", body.clone())
        };
        // No read: the put under the key succeeds when the key is free. When it holds something,
        // the failed condition returns it: this very body (a retry, a redelivery) keeps the
        // first record whole, reason and receipt included, as SQLite does; another body (a
        // v1/v2 twin, sent under the key its body names) goes under its variant key.
        let first = put(&event.key)
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let kept = match first {
            Ok(_) => return Ok(()),
            Err(error) => match error.into_service_error() {
                PutItemError::ConditionalCheckFailedException(failed) => failed.item,
                other => return Err(unavailable("quarantine", other)),
            },
        };
        let same_body = kept
            .as_ref()
            .and_then(|item| bytes(item, "body"))
            .is_some_and(|kept| kept == event.body.as_bytes());
        if same_body {
            return Ok(());
        }
        let variant = put(&variant_key(&event.key, event.body.as_bytes()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match variant {
            Ok(_) => Ok(()),
            // The variant key names this body: already kept, first record whole.
            Err(error)
                if matches!(
                    error.as_service_error(),
                    Some(PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(())
            }
            Err(error) => Err(unavailable("quarantine a variant", error)),
        }
    }

    async fn quarantined(&self, key: &str) -> Result<Option<QuarantineEntry>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("QUARANTINE#{key}")))
            .key("sk", s("QUARANTINE"))
            .send()
            .await
            .map_err(|e| unavailable("read quarantine", e))?;
        Ok(output.item().map(|item| QuarantineEntry {
            key: key.to_owned(),
            reason: text(item, "reason").unwrap_or_default(),
            body: bytes(item, "body").unwrap_or_default(),
            received_at: number(item, "received_at").unwrap_or(0),
        }))
    }

    async fn message(&self, id: &str) -> Result<Option<MessageRecord>, StoreError> {
        self.message_read(id, Read::Eventual).await
    }

    async fn contact(&self, contact: &str, now: i64) -> Result<Option<ContactView>, StoreError> {
        Ok(ContactView::from_messages(
            &self.summary_messages(contact).await?,
            now,
        ))
    }

    async fn contact_messages_page(
        &self,
        contact: &str,
        before: Option<&Position>,
        limit: usize,
    ) -> Result<MessagePage, StoreError> {
        self.contact_page(contact, before, limit).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .get_item()
            .table_name(&self.table)
            .key("pk", s("HEALTH"))
            .key("sk", s("HEALTH"))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| unavailable("get item", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(record: MessageRecord, linked: &[&str]) -> ItemWrite {
        ItemWrite {
            key: "R".into(),
            record,
            linked: linked.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The fast path writes facts only into sets (no condition on them: any order converges)
    /// and sets ids and names only if absent or equal.
    #[test]
    fn the_home_update_adds_facts_and_guards_identity() {
        let record = MessageRecord {
            id: Some("R".into()),
            whatsapp_message_id: Some("W".into()),
            wa_id: Some("1".into()),
            delivered_at: Some(20),
            failure: Some(Failure {
                at: 21,
                code: Some("131026".into()),
                detail: None,
            }),
            ..MessageRecord::default()
        };
        let update = item_update(&write(record, &["W"]), Some("T#1"), None);
        assert_eq!(
            update.update_expression,
            "SET id = :id, whatsapp_message_id = :whatsapp_message_id, wa_id = :wa_id, \
             contact = :wa_id ADD delivered_times :delivered_times, failures :failures"
        );
        assert_eq!(
            update.condition_expression,
            "(attribute_not_exists(id) OR id = :id) AND (attribute_not_exists(whatsapp_message_id) \
             OR whatsapp_message_id = :whatsapp_message_id) AND (attribute_not_exists(wa_id) OR \
             wa_id = :wa_id) AND contains(linked, :token)"
        );
        assert_eq!(
            update.values[":failures"],
            AttributeValue::Ss(vec![r#"[21,"131026",null]"#.into()])
        );
        let slow = item_update(&write(MessageRecord::default(), &["W"]), None, None);
        assert_eq!(slow.update_expression, "ADD linked :linked");
        assert_eq!(slow.condition_expression, "");
    }

    /// A message's business number is set once, like its ids; an item written before numbers
    /// were stored has none and reads as the default number's.
    #[test]
    fn the_business_number_is_set_once_and_absent_on_older_items() {
        let record = MessageRecord {
            id: Some("R".into()),
            channel_id: Some("c2".into()),
            channel_phone_number: Some("14155550200".into()),
            ..MessageRecord::default()
        };
        let update = item_update(&write(record, &[]), None, None);
        assert_eq!(
            update.update_expression,
            "SET id = :id, channel_id = :channel_id, channel_phone_number = :channel_phone_number"
        );
        assert!(update
            .condition_expression
            .contains("(attribute_not_exists(channel_id) OR channel_id = :channel_id)"));
        assert!(update.condition_expression.contains(
            "(attribute_not_exists(channel_phone_number) OR channel_phone_number = :channel_phone_number)"
        ));
        let written = HashMap::from([
            ("id".to_owned(), s("R")),
            ("channel_id".to_owned(), s("c2")),
            ("channel_phone_number".to_owned(), s("14155550200")),
        ]);
        let read = item_from_attributes("R".into(), &written);
        assert_eq!(read.record.channel(), (Some("c2"), Some("14155550200")));
        let older: Item = HashMap::from([("id".into(), s("R")), ("sent_at".into(), n(5))]);
        assert_eq!(
            item_from_attributes("R".into(), &older).record.channel(),
            (None, None)
        );
    }

    /// Every fact set reads back as its least value; the earlier model's single values count.
    #[test]
    fn stored_sets_read_as_their_least_value() {
        let item: Item = HashMap::from([
            ("id".into(), s("R")),
            (
                "delivered_times".into(),
                AttributeValue::Ns(vec!["30".into(), "20".into()]),
            ),
            ("read_at".into(), n(50)),
            ("read_times".into(), AttributeValue::Ns(vec!["60".into()])),
            (
                "failures".into(),
                AttributeValue::Ss(vec![
                    r#"[9,"b","later code"]"#.into(),
                    r#"[8,null,null]"#.into(),
                ]),
            ),
            (
                "template_names".into(),
                AttributeValue::Ss(vec!["b".into(), "a".into()]),
            ),
            (
                "directions".into(),
                AttributeValue::Ss(vec!["outbound".into()]),
            ),
            ("direction".into(), s("inbound")),
            ("linked".into(), AttributeValue::Ss(vec!["W".into()])),
        ]);
        let read = item_from_attributes("R".into(), &item);
        assert_eq!(read.record.delivered_at, Some(20));
        assert_eq!(read.record.read_at, Some(50));
        // The earliest failure, whole: its missing code is not filled from a later one.
        assert_eq!(
            read.record.failure,
            Some(Failure {
                at: 8,
                code: None,
                detail: None
            })
        );
        assert_eq!(read.record.template_name.as_deref(), Some("a"));
        assert_eq!(read.record.direction, Some(Direction::Inbound));
        assert!(read.linked.contains("W"));
    }
}
