//! The AWS notifier: the state table's stream in, change documents out on EventBridge.
//!
//! Each stream record of a message item (`pk = MSG#<key>, sk = MSG`) carries the item before and
//! after one write (`NEW_AND_OLD_IMAGES`). [`crate::changes::item_changes`] names the facts that
//! write changed, the same function the embedded store runs inside its transaction, so both
//! backends announce the same changes under the same ids. For a record with changes the notifier
//! reads the whole message with a strongly consistent read, builds one `message.updated` per fact
//! and one `contact.updated` for the message's (business number, contact) view, and puts them on
//! the bus (`PutEvents`, 10 entries a call, failed entries alone retried with backoff).
//!
//! Delivery is at least once: a record is acknowledged only once every document it produced is
//! on the bus; otherwise the batch answers `ReportBatchItemFailures` with the first such record's
//! sequence number and Lambda retries the shard from there. A redelivered record produces the
//! ids already sent (they are digests of what changed), so consumers deduplicate on `id`.
//! Records of other items (links, quarantine, the earlier model's aliases), `REMOVE`s and
//! records without a new image are ignored, never failed.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::StreamExt;

use crate::changes::{item_changes, write_documents, ChangeDocument, FactChange};
use crate::message::{Direction, MessageRecord};
use crate::message_items::MessageItem;
use crate::metrics::{MetricLine, Unit};
use crate::ports::StoreError;
use crate::session::{ChannelView, ContactView};
use crate::settings::{self, ConfigError};
use crate::store::aws::text;
use crate::store::dynamo_state::{item_from_attributes, DynamoState, Read};

/// The `Source` of every event this service puts on the bus.
pub const SOURCE: &str = "wati-ingest";
/// EventBridge's limit on one entry (`Source`, `DetailType`, `Detail`, ...): 256 KB.
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;
/// `PutEvents` takes at most this many entries a call.
pub const PUT_EVENTS_MAX_ENTRIES: usize = 10;
/// Stream records whose documents are built at once, at most.
pub const RECORD_CONCURRENCY: usize = 8;

/// The notifier's metrics (function dimension `notifier`); `template.yaml` and
/// `docs/runbook.md` name them.
pub const NOTIFIER_METRICS: [&str; 6] = [
    "Records",
    "RecordsIgnored",
    "ChangesPublished",
    "PutEventsFailures",
    "OversizedChanges",
    "RecordFailures",
];

/// The notifier's (and the window timer's) settings: `STATE_TABLE`, `CHANGE_BUS_NAME` and
/// `WINDOW_CLOSING_LEAD_MINUTES` (default 60).
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    pub state_table: String,
    pub bus_name: String,
    /// How long before a window's end its `contact.window_closing` falls due.
    pub window_lead_seconds: i64,
}

impl NotifierConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(NotifierConfig {
            state_table: settings::required("STATE_TABLE", var("STATE_TABLE").as_deref())?,
            bus_name: settings::required("CHANGE_BUS_NAME", var("CHANGE_BUS_NAME").as_deref())?,
            window_lead_seconds: settings::window_closing_lead_minutes(
                var("WINDOW_CLOSING_LEAD_MINUTES").as_deref(),
            )? * 60,
        })
    }
}

/// How hard one invocation tries to put its documents on the bus, and how early the windows it
/// records fall due.
#[derive(Debug, Clone)]
pub struct PublishSettings {
    /// Rounds of `PutEvents` for the entries still failed (the first included).
    pub attempts: u32,
    /// Wait before the second round; doubled before each next one.
    pub backoff: Duration,
    /// How long before a window's end its `contact.window_closing` falls due
    /// (`WINDOW_CLOSING_LEAD_MINUTES`): the `next_due` of the window items the notifier writes.
    pub window_lead_seconds: i64,
}

impl Default for PublishSettings {
    fn default() -> Self {
        PublishSettings {
            attempts: 4,
            backoff: Duration::from_millis(100),
            window_lead_seconds: 3_600,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stream records

/// One attribute value of a Lambda stream event as the DynamoDB SDK's (what
/// [`item_from_attributes`] reads).
pub fn sdk_attribute(value: &serde_dynamo::AttributeValue) -> AttributeValue {
    use serde_dynamo::AttributeValue as Lambda;
    match value {
        Lambda::N(number) => AttributeValue::N(number.clone()),
        Lambda::S(text) => AttributeValue::S(text.clone()),
        Lambda::Bool(b) => AttributeValue::Bool(*b),
        Lambda::B(bytes) => AttributeValue::B(Blob::new(bytes.clone())),
        Lambda::Null(null) => AttributeValue::Null(*null),
        Lambda::M(map) => AttributeValue::M(sdk_item(map)),
        Lambda::L(list) => AttributeValue::L(list.iter().map(sdk_attribute).collect()),
        Lambda::Ss(set) => AttributeValue::Ss(set.clone()),
        Lambda::Ns(set) => AttributeValue::Ns(set.clone()),
        Lambda::Bs(set) => AttributeValue::Bs(set.iter().map(|b| Blob::new(b.clone())).collect()),
    }
}

/// A whole image (or key) of a stream record as the DynamoDB SDK's item.
pub fn sdk_item(
    item: &HashMap<String, serde_dynamo::AttributeValue>,
) -> HashMap<String, AttributeValue> {
    item.iter()
        .map(|(name, value)| (name.clone(), sdk_attribute(value)))
        .collect()
}

/// What a stream record is to the notifier.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamChange {
    /// A write of the message item under `after.key`: the item before (`None`: it was created)
    /// and after.
    Message {
        before: Option<Box<MessageItem>>,
        after: Box<MessageItem>,
    },
    /// Not a message item's write, or nothing to compare: acknowledged without a document.
    Ignored(&'static str),
}

impl StreamChange {
    /// The facts the write changed (none for an ignored record).
    pub fn changes(&self) -> Vec<FactChange> {
        match self {
            StreamChange::Message { before, after } => {
                item_changes(before.as_ref().map(|b| &b.record), &after.record)
            }
            StreamChange::Ignored(_) => Vec::new(),
        }
    }
}

/// Reads a stream record: only an `INSERT` or `MODIFY` of a message item, with its new image,
/// is a message change.
pub fn classify(record: &EventRecord) -> StreamChange {
    if record.event_name == "REMOVE" {
        return StreamChange::Ignored("remove");
    }
    if record.change.new_image.is_empty() {
        return StreamChange::Ignored("no new image");
    }
    let new = sdk_item(&record.change.new_image);
    let keys = if record.change.keys.is_empty() {
        new.clone()
    } else {
        sdk_item(&record.change.keys)
    };
    let Some(pk) = text(&keys, "pk").or_else(|| text(&new, "pk")) else {
        return StreamChange::Ignored("no key");
    };
    let sk = text(&keys, "sk").or_else(|| text(&new, "sk"));
    let Some(key) = pk
        .strip_prefix("MSG#")
        .filter(|_| sk.as_deref() == Some("MSG"))
    else {
        return StreamChange::Ignored("not a message item");
    };
    let before = (!record.change.old_image.is_empty()).then(|| {
        Box::new(item_from_attributes(
            key.to_owned(),
            &sdk_item(&record.change.old_image),
        ))
    });
    StreamChange::Message {
        before,
        after: Box::new(item_from_attributes(key.to_owned(), &new)),
    }
}

// ---------------------------------------------------------------------------------------------
// Documents

/// What the notifier reads from the state.
#[async_trait]
pub trait ChangeState: Send + Sync {
    /// The whole message `key` names, every item read strongly consistent: it holds at least
    /// the write the stream record reports.
    async fn message_now(&self, key: &str) -> Result<Option<MessageRecord>, StoreError>;
    /// Every message of the contact (by either name); may miss or hold stale copies of recent
    /// writes (the indexes are eventually consistent).
    async fn contact_messages(&self, contact: &str) -> Result<Vec<MessageRecord>, StoreError>;
    /// Records that the window of `contact` on business number `channel` (`""`: the default)
    /// ends at `window_end` or later, its closing due `lead_seconds` before
    /// ([`crate::windows`]); an equal or newer end already recorded is kept.
    async fn track_window(
        &self,
        contact: &str,
        channel: &str,
        window_end: i64,
        lead_seconds: i64,
    ) -> Result<(), StoreError>;
}

#[async_trait]
impl ChangeState for DynamoState {
    async fn message_now(&self, key: &str) -> Result<Option<MessageRecord>, StoreError> {
        self.message_read(key, Read::Strong).await
    }

    async fn contact_messages(&self, contact: &str) -> Result<Vec<MessageRecord>, StoreError> {
        DynamoState::contact_messages(self, contact).await
    }

    async fn track_window(
        &self,
        contact: &str,
        channel: &str,
        window_end: i64,
        lead_seconds: i64,
    ) -> Result<(), StoreError> {
        DynamoState::track_window(self, contact, channel, window_end, lead_seconds).await
    }
}

/// The (business number, contact) view of `message` at `now`: the contact's messages as the
/// index found them, with `message` (read consistently) replacing any copy of it.
pub fn channel_view_of(
    message: &MessageRecord,
    mut contact_messages: Vec<MessageRecord>,
    now: i64,
) -> Option<ChannelView> {
    contact_messages.retain(|m| !m.all_ids().any(|id| message.all_ids().any(|own| own == id)));
    contact_messages.push(message.clone());
    let view = ContactView::from_messages(&contact_messages, now)?;
    view.view_of(message).cloned()
}

/// The documents of one message item's write: one `message.updated` per changed fact, and one
/// `contact.updated` for its contact on its business number (none when the message names no
/// contact yet). A customer's message also records its contact's window end for the window
/// timer (`lead_seconds`: how early its closing falls due): only a customer's message moves a
/// window, and the view counts it (read consistently) whatever the indexes have seen.
pub async fn documents_for(
    state: &dyn ChangeState,
    after: &MessageItem,
    changes: &[FactChange],
    now: i64,
    lead_seconds: i64,
) -> Result<Vec<ChangeDocument>, StoreError> {
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let message = state
        .message_now(&after.key)
        .await?
        .unwrap_or_else(|| after.record.clone());
    let view = match message.contact() {
        Some(contact) => channel_view_of(&message, state.contact_messages(contact).await?, now),
        None => None,
    };
    // Only a customer's message moves a window: record its new end for the window timer.
    if let Some(view) = &view {
        let name = view.wa_id.as_deref().or(view.bsuid.as_deref());
        if let (Some(Direction::Inbound), Some(name), Some(end)) =
            (message.direction, name, view.window_expires_at.0)
        {
            let channel = view.channel_id.as_deref().unwrap_or_default();
            state.track_window(name, channel, end, lead_seconds).await?;
        }
    }
    Ok(write_documents(
        &after.key,
        changes,
        &message,
        view.as_ref(),
        now,
    ))
}

// ---------------------------------------------------------------------------------------------
// The bus

/// One `PutEvents` entry (the bus and `Source` are the publisher's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusEntry {
    pub id: String,
    pub detail_type: &'static str,
    pub detail: String,
}

impl BusEntry {
    /// The entry's size as EventBridge counts it against [`MAX_ENTRY_BYTES`] (no `Time`, no
    /// `Resources`).
    pub fn size(&self) -> usize {
        SOURCE.len() + self.detail_type.len() + self.detail.len()
    }
}

/// Where to read a document's view instead, when it is too large to carry.
pub fn href_of(document: &ChangeDocument) -> Option<String> {
    if let Some(message) = &document.message {
        let id = message
            .id
            .as_deref()
            .or(message.whatsapp_message_id.as_deref())
            .or(message.local_message_id.as_deref())?;
        return Some(format!("/v1/messages/{id}"));
    }
    let contact = document.contact.as_ref()?;
    let name = contact.wa_id.as_deref().or(contact.bsuid.as_deref())?;
    Some(match &contact.channel_phone_number {
        Some(number) => format!("/v1/contacts/{name}?channel={number}"),
        None => format!("/v1/contacts/{name}"),
    })
}

/// The document as a bus entry: whole when it fits, else the same id and type with an `href`
/// in place of its view. `true` when it had to be slimmed.
pub fn entry_for(document: &ChangeDocument) -> (BusEntry, bool) {
    let detail_type = document.kind.name();
    let whole = BusEntry {
        id: document.id.clone(),
        detail_type,
        detail: serde_json::to_string(document).unwrap_or_default(),
    };
    if whole.size() <= MAX_ENTRY_BYTES {
        return (whole, false);
    }
    let slim = ChangeDocument {
        href: href_of(document),
        message: None,
        contact: None,
        ..document.clone()
    };
    let entry = BusEntry {
        detail: serde_json::to_string(&slim).unwrap_or_default(),
        ..whole
    };
    (entry, true)
}

/// An event bus.
#[async_trait]
pub trait ChangeBus: Send + Sync {
    /// One `PutEvents` call of at most [`PUT_EVENTS_MAX_ENTRIES`] entries: for each entry, in
    /// order, `None` when the bus took it, else its error code. `Err`: the call failed whole.
    async fn put_events(&self, entries: &[BusEntry]) -> Result<Vec<Option<String>>, String>;
}

/// The EventBridge bus named by `CHANGE_BUS_NAME`.
#[derive(Debug, Clone)]
pub struct EventBridgeBus {
    client: aws_sdk_eventbridge::Client,
    bus_name: String,
}

impl EventBridgeBus {
    pub fn new(client: aws_sdk_eventbridge::Client, bus_name: impl Into<String>) -> Self {
        EventBridgeBus {
            client,
            bus_name: bus_name.into(),
        }
    }
}

#[async_trait]
impl ChangeBus for EventBridgeBus {
    async fn put_events(&self, entries: &[BusEntry]) -> Result<Vec<Option<String>>, String> {
        let request = entries.iter().map(|entry| {
            aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                .event_bus_name(&self.bus_name)
                .source(SOURCE)
                .detail_type(entry.detail_type)
                .detail(&entry.detail)
                .build()
        });
        let output = self
            .client
            .put_events()
            .set_entries(Some(request.collect()))
            .send()
            .await
            .map_err(|e| aws_sdk_eventbridge::error::DisplayErrorContext(e).to_string())?;
        let results = output.entries();
        Ok((0..entries.len())
            .map(|n| match results.get(n) {
                // An entry without an error code was taken (it has an event id).
                Some(result) => result
                    .error_code()
                    .map(str::to_owned)
                    .or_else(|| result.event_id().is_none().then(|| "NoEventId".to_owned())),
                None => Some("NoResult".to_owned()),
            })
            .collect())
    }
}

/// What [`publish`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// Entries the bus took.
    pub published: usize,
    /// Entry failures over every round (an entry failed twice counts twice).
    pub entry_failures: usize,
    /// Indexes (into the entries given) of those never taken.
    pub failed: Vec<usize>,
    /// `PutEvents` calls made.
    pub calls: usize,
}

/// Puts `entries` on the bus, 10 a call; the entries a call failed (alone, or the whole call)
/// are put again in the next round, after a backoff, up to `settings.attempts` rounds.
pub async fn publish(
    bus: &dyn ChangeBus,
    entries: &[BusEntry],
    settings: &PublishSettings,
) -> Published {
    let mut outcome = Published::default();
    let mut pending: Vec<usize> = (0..entries.len()).collect();
    for round in 0..settings.attempts.max(1) {
        if pending.is_empty() {
            break;
        }
        if round > 0 {
            tokio::time::sleep(settings.backoff * 2u32.pow(round - 1)).await;
        }
        let mut failed = Vec::new();
        for chunk in pending.chunks(PUT_EVENTS_MAX_ENTRIES) {
            let batch: Vec<BusEntry> = chunk.iter().map(|&n| entries[n].clone()).collect();
            outcome.calls += 1;
            match bus.put_events(&batch).await {
                Ok(results) => {
                    for (position, &n) in chunk.iter().enumerate() {
                        match results.get(position) {
                            Some(None) => outcome.published += 1,
                            Some(Some(code)) => {
                                tracing::warn!(id = %entries[n].id, code, round, "PutEvents refused an entry");
                                failed.push(n);
                            }
                            None => failed.push(n),
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, round, entries = chunk.len(), "PutEvents failed");
                    failed.extend_from_slice(chunk);
                }
            }
        }
        outcome.entry_failures += failed.len();
        pending = failed;
    }
    outcome.failed = pending;
    outcome
}

// ---------------------------------------------------------------------------------------------
// One batch

/// What one stream batch did: the answer for Lambda, its metrics, and the ids put on the bus.
#[derive(Debug)]
pub struct NotifierReport {
    pub response: DynamoDbEventResponse,
    pub metrics: MetricLine,
    pub published_ids: Vec<String>,
}

/// Handles one DynamoDB stream batch: documents for every message item's write, on the bus, and
/// `ReportBatchItemFailures` naming the first record whose documents could not all be built or
/// put (Lambda retries the shard from there; records before it are done).
pub async fn handle_stream_batch(
    state: &dyn ChangeState,
    bus: &dyn ChangeBus,
    event: Event,
    settings: &PublishSettings,
    now: i64,
) -> NotifierReport {
    let records = event.records;
    let changes: Vec<StreamChange> = records.iter().map(classify).collect();
    let ignored = changes
        .iter()
        .filter(|c| matches!(c, StreamChange::Ignored(_)))
        .count();
    let built: Vec<Result<Vec<ChangeDocument>, StoreError>> =
        futures_util::stream::iter(changes.iter().map(|change| async move {
            match change {
                StreamChange::Message { after, .. } => {
                    let changes = change.changes();
                    documents_for(state, after, &changes, now, settings.window_lead_seconds).await
                }
                StreamChange::Ignored(_) => Ok(Vec::new()),
            }
        }))
        .buffered(RECORD_CONCURRENCY)
        .collect()
        .await;
    // Up to the first record that could not be read: later ones are retried with it.
    let mut first_failed: Option<usize> = None;
    let mut owners: BTreeMap<String, usize> = BTreeMap::new();
    let mut entries: Vec<BusEntry> = Vec::new();
    let mut oversized = 0usize;
    for (n, documents) in built.into_iter().enumerate() {
        let documents = match documents {
            Ok(documents) => documents,
            Err(error) => {
                tracing::warn!(%error, record = n, "cannot read the state for a stream record");
                first_failed = Some(n);
                break;
            }
        };
        for document in documents {
            // One entry per id in a batch: the earliest record owns it.
            if owners.contains_key(&document.id) {
                continue;
            }
            owners.insert(document.id.clone(), n);
            let (entry, slimmed) = entry_for(&document);
            if slimmed {
                oversized += 1;
                tracing::warn!(id = %entry.id, "change document over 256 KB: sent with an href");
            }
            entries.push(entry);
        }
    }
    let published = publish(bus, &entries, settings).await;
    let unpublished = published
        .failed
        .iter()
        .map(|&n| owners[&entries[n].id])
        .min();
    let first_failed = match (first_failed, unpublished) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let failed_ids: std::collections::BTreeSet<usize> = published.failed.iter().copied().collect();
    let published_ids: Vec<String> = entries
        .iter()
        .enumerate()
        .filter(|(n, _)| !failed_ids.contains(n))
        .map(|(_, e)| e.id.clone())
        .collect();
    let mut response = DynamoDbEventResponse::default();
    if let Some(n) = first_failed {
        let mut failure = DynamoDbBatchItemFailure::default();
        // No sequence number (never seen): an empty identifier fails the whole batch, which
        // keeps the record.
        failure.item_identifier = Some(
            records[n]
                .change
                .sequence_number
                .clone()
                .unwrap_or_default(),
        );
        response.batch_item_failures.push(failure);
    }
    let [records_metric, ignored_metric, published_metric, failures_metric, oversized_metric, record_failures] =
        NOTIFIER_METRICS;
    let metrics = MetricLine::new("notifier")
        .metric(records_metric, Unit::Count, records.len() as f64)
        .metric(ignored_metric, Unit::Count, ignored as f64)
        .metric(published_metric, Unit::Count, published.published as f64)
        .metric(
            failures_metric,
            Unit::Count,
            published.entry_failures as f64,
        )
        .metric(oversized_metric, Unit::Count, oversized as f64)
        .metric(
            record_failures,
            Unit::Count,
            first_failed.map_or(0, |n| records.len() - n) as f64,
        );
    NotifierReport {
        response,
        metrics,
        published_ids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::{contact_updated, message_updated};
    use crate::message::{Direction, Failure};
    use std::sync::Mutex;

    type Lambda = serde_dynamo::AttributeValue;

    fn lambda_item(pairs: &[(&str, Lambda)]) -> serde_dynamo::Item {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<HashMap<String, Lambda>>()
            .into()
    }

    fn record(
        name: &str,
        sequence: &str,
        old: Option<serde_dynamo::Item>,
        new: Option<serde_dynamo::Item>,
    ) -> EventRecord {
        let mut record = EventRecord::default();
        record.event_name = name.into();
        record.aws_region = "us-east-1".into();
        record.event_id = format!("e{sequence}");
        record.change.sequence_number = Some(sequence.into());
        let image = old.as_ref().or(new.as_ref()).cloned().unwrap_or_default();
        let keys: HashMap<String, Lambda> = image
            .iter()
            .filter(|(k, _)| *k == "pk" || *k == "sk")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        record.change.keys = keys.into();
        record.change.old_image = old.unwrap_or_default();
        record.change.new_image = new.unwrap_or_default();
        record
    }

    fn message_image(key: &str, extra: &[(&str, Lambda)]) -> serde_dynamo::Item {
        let mut pairs = vec![
            ("pk", Lambda::S(format!("MSG#{key}"))),
            ("sk", Lambda::S("MSG".into())),
            ("id", Lambda::S(key.into())),
            ("directions", Lambda::Ss(vec!["outbound".into()])),
        ];
        pairs.extend(extra.iter().cloned());
        lambda_item(&pairs)
    }

    /// Every attribute type converts, sets included, nested ones too; and a stored image reads
    /// back as the record the state table's own reader makes of it.
    #[test]
    fn stream_attributes_convert_to_the_sdks() {
        let image: HashMap<String, Lambda> = HashMap::from([
            ("n".into(), Lambda::N("42".into())),
            ("s".into(), Lambda::S("x".into())),
            ("b".into(), Lambda::B(vec![0, 255])),
            ("bool".into(), Lambda::Bool(true)),
            ("null".into(), Lambda::Null(true)),
            ("ns".into(), Lambda::Ns(vec!["30".into(), "20".into()])),
            ("ss".into(), Lambda::Ss(vec!["b".into(), "a".into()])),
            ("bs".into(), Lambda::Bs(vec![vec![1], vec![2]])),
            (
                "m".into(),
                Lambda::M(HashMap::from([(
                    "inner".into(),
                    Lambda::L(vec![Lambda::Ns(vec!["1".into()]), Lambda::S("y".into())]),
                )])),
            ),
        ]);
        let sdk = sdk_item(&image);
        assert_eq!(sdk["n"], AttributeValue::N("42".into()));
        assert_eq!(sdk["s"], AttributeValue::S("x".into()));
        assert_eq!(sdk["b"], AttributeValue::B(Blob::new(vec![0, 255])));
        assert_eq!(sdk["bool"], AttributeValue::Bool(true));
        assert_eq!(sdk["null"], AttributeValue::Null(true));
        assert_eq!(
            sdk["ns"],
            AttributeValue::Ns(vec!["30".into(), "20".into()])
        );
        assert_eq!(sdk["ss"], AttributeValue::Ss(vec!["b".into(), "a".into()]));
        assert_eq!(
            sdk["bs"],
            AttributeValue::Bs(vec![Blob::new(vec![1]), Blob::new(vec![2])])
        );
        assert_eq!(
            sdk["m"],
            AttributeValue::M(HashMap::from([(
                "inner".into(),
                AttributeValue::L(vec![
                    AttributeValue::Ns(vec!["1".into()]),
                    AttributeValue::S("y".into())
                ])
            )]))
        );
    }

    /// A stream record as Lambda delivers it (JSON), number and string sets included, reads as
    /// the item with its least facts.
    #[test]
    fn a_lambda_stream_event_reads_as_message_items() {
        let json = serde_json::json!({"Records": [{
            "eventID": "1", "eventName": "MODIFY", "eventVersion": "1.1",
            "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
            "dynamodb": {
                "ApproximateCreationDateTime": 1764238518.0,
                "Keys": {"pk": {"S": "MSG#m1"}, "sk": {"S": "MSG"}},
                "OldImage": {"pk": {"S": "MSG#m1"}, "sk": {"S": "MSG"}, "id": {"S": "m1"},
                             "directions": {"SS": ["outbound"]}, "sent_times": {"NS": ["60"]}},
                "NewImage": {"pk": {"S": "MSG#m1"}, "sk": {"S": "MSG"}, "id": {"S": "m1"},
                             "wa_id": {"S": "14155550101"},
                             "directions": {"SS": ["outbound"]}, "sent_times": {"NS": ["60"]},
                             "delivered_times": {"NS": ["70", "65"]},
                             "failures": {"SS": ["[80,\"131026\",null]"]},
                             "linked": {"SS": ["T#1"]}},
                "SequenceNumber": "111", "SizeBytes": 26, "StreamViewType": "NEW_AND_OLD_IMAGES"
            },
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:1:table/t/stream/x"
        }]});
        let event: Event = serde_json::from_value(json).unwrap();
        let StreamChange::Message { before, after } = classify(&event.records[0]) else {
            panic!("a message item");
        };
        assert_eq!(after.key, "m1");
        assert_eq!(before.unwrap().record.sent_at, Some(60));
        assert_eq!(after.record.delivered_at, Some(65));
        assert_eq!(after.record.wa_id.as_deref(), Some("14155550101"));
        assert_eq!(
            after.record.failure,
            Some(Failure {
                at: 80,
                code: Some("131026".into()),
                detail: None
            })
        );
        assert!(after.linked.contains("T#1"));
        let facts: Vec<&str> = classify(&event.records[0])
            .changes()
            .iter()
            .map(|c| c.fact.name())
            .collect();
        assert_eq!(facts, ["delivered", "failed", "contact"]);
    }

    /// Only INSERT/MODIFY of `MSG#…/MSG` items with a new image are message changes.
    #[test]
    fn other_records_are_ignored() {
        let message = message_image("m", &[("sent_times", Lambda::Ns(vec!["5".into()]))]);
        assert!(matches!(
            classify(&record("INSERT", "1", None, Some(message.clone()))),
            StreamChange::Message { before: None, .. }
        ));
        let link = lambda_item(&[
            ("pk", Lambda::S("LINK#14155550104".into())),
            ("sk", Lambda::S("US.1".into())),
        ]);
        let quarantine = lambda_item(&[
            ("pk", Lambda::S("QUARANTINE#k".into())),
            ("sk", Lambda::S("QUARANTINE".into())),
            ("body", Lambda::B(b"{}".to_vec())),
        ]);
        let alias = lambda_item(&[
            ("pk", Lambda::S("ID#w".into())),
            ("sk", Lambda::S("ID".into())),
        ]);
        let other_sk = lambda_item(&[
            ("pk", Lambda::S("MSG#m".into())),
            ("sk", Lambda::S("OTHER".into())),
        ]);
        for image in [link, quarantine, alias, other_sk] {
            assert!(
                matches!(
                    classify(&record("INSERT", "1", None, Some(image.clone()))),
                    StreamChange::Ignored(_)
                ),
                "{image:?}"
            );
        }
        assert_eq!(
            classify(&record("REMOVE", "1", Some(message.clone()), None)),
            StreamChange::Ignored("remove")
        );
        assert_eq!(
            classify(&record("MODIFY", "1", Some(message), None)),
            StreamChange::Ignored("no new image")
        );
    }

    fn outbound(id: &str, wa_id: &str) -> MessageRecord {
        MessageRecord {
            id: Some(id.into()),
            wa_id: Some(wa_id.into()),
            direction: Some(Direction::Outbound),
            ..MessageRecord::default()
        }
    }

    /// A document too large for EventBridge goes with its id and type and an `href` instead of
    /// its view; one that fits goes whole.
    #[test]
    fn an_oversized_document_is_sent_with_an_href() {
        let mut message = outbound("m1", "14155550101");
        message.sent_at = Some(60);
        let change = &item_changes(None, &message)[0];
        let small = message_updated("m1", change, &message, 100);
        let (entry, slimmed) = entry_for(&small);
        assert!(!slimmed);
        assert_eq!(entry.detail, serde_json::to_string(&small).unwrap());
        let json: serde_json::Value = serde_json::from_str(&entry.detail).unwrap();
        assert!(json.get("href").is_none());

        message.template_name = Some("t".repeat(MAX_ENTRY_BYTES));
        let big = message_updated("m1", change, &message, 100);
        let (entry, slimmed) = entry_for(&big);
        assert!(slimmed);
        assert!(entry.size() <= MAX_ENTRY_BYTES);
        assert_eq!(
            (entry.id.as_str(), entry.detail_type),
            (big.id.as_str(), "message.updated")
        );
        let json: serde_json::Value = serde_json::from_str(&entry.detail).unwrap();
        assert_eq!(json["id"], big.id);
        assert_eq!(json["href"], "/v1/messages/m1");
        assert!(json.get("message").is_none());

        let view = ChannelView {
            channel_phone_number: Some("14155550200".into()),
            wa_id: Some("14155550101".into()),
            ..ContactView::from_messages(&[message.clone()], 100)
                .unwrap()
                .default
        };
        let mut contact = contact_updated(&view, 100, 100);
        assert_eq!(
            href_of(&contact).as_deref(),
            Some("/v1/contacts/14155550101?channel=14155550200")
        );
        contact.contact.as_mut().unwrap().bsuid = Some("x".repeat(MAX_ENTRY_BYTES));
        let (entry, slimmed) = entry_for(&contact);
        assert!(slimmed && entry.size() <= MAX_ENTRY_BYTES);
        assert!(entry
            .detail
            .contains("\"href\":\"/v1/contacts/14155550101?channel=14155550200\""));
    }

    /// The contact view takes the consistently read message in place of the index's stale copy,
    /// and adds it when the index has not seen it yet; the message's own number is chosen.
    #[test]
    fn the_view_counts_the_message_just_written() {
        let mut inbound = outbound("in", "1");
        inbound.direction = Some(Direction::Inbound);
        inbound.sent_at = Some(100);
        let stale = outbound("out", "1");
        let mut fresh = stale.clone();
        fresh.delivered_at = Some(150);
        let view = channel_view_of(&fresh, vec![inbound.clone(), stale], 200).unwrap();
        assert_eq!(view.session.business_messages, 1);
        let unseen = channel_view_of(&fresh, vec![inbound.clone()], 200).unwrap();
        assert_eq!(unseen, view);
        let mut other_number = fresh.clone();
        other_number.channel_id = Some("c2".into());
        other_number.channel_phone_number = Some("14155550200".into());
        let second = channel_view_of(&other_number, vec![inbound], 200).unwrap();
        assert_eq!(second.channel_id.as_deref(), Some("c2"));
        assert_eq!(second.session.customer_messages, 0);
    }

    /// The state as a list of whole messages.
    struct FakeState {
        messages: Vec<MessageRecord>,
        failing: Option<String>,
        /// (contact, channel, end, lead) of every window recorded.
        tracked: Mutex<Vec<(String, String, i64, i64)>>,
    }

    #[async_trait]
    impl ChangeState for FakeState {
        async fn message_now(&self, key: &str) -> Result<Option<MessageRecord>, StoreError> {
            if self.failing.as_deref() == Some(key) {
                return Err(StoreError::unavailable("get", "injected"));
            }
            Ok(self
                .messages
                .iter()
                .find(|m| m.all_ids().any(|id| id == key))
                .cloned())
        }
        async fn contact_messages(&self, contact: &str) -> Result<Vec<MessageRecord>, StoreError> {
            Ok(self
                .messages
                .iter()
                .filter(|m| m.contact() == Some(contact))
                .cloned()
                .collect())
        }
        async fn track_window(
            &self,
            contact: &str,
            channel: &str,
            window_end: i64,
            lead_seconds: i64,
        ) -> Result<(), StoreError> {
            self.tracked.lock().unwrap().push((
                contact.to_owned(),
                channel.to_owned(),
                window_end,
                lead_seconds,
            ));
            Ok(())
        }
    }

    /// A bus that refuses the entries (by id) it is told to, a given number of times each, and
    /// records every call.
    #[derive(Default)]
    struct FakeBus {
        refuse: Mutex<HashMap<String, usize>>,
        down_calls: Mutex<usize>,
        calls: Mutex<Vec<Vec<String>>>,
    }

    #[async_trait]
    impl ChangeBus for FakeBus {
        async fn put_events(&self, entries: &[BusEntry]) -> Result<Vec<Option<String>>, String> {
            assert!(entries.len() <= PUT_EVENTS_MAX_ENTRIES);
            self.calls
                .lock()
                .unwrap()
                .push(entries.iter().map(|e| e.id.clone()).collect());
            {
                let mut down = self.down_calls.lock().unwrap();
                if *down > 0 {
                    *down -= 1;
                    return Err("ServiceUnavailable".into());
                }
            }
            let mut refuse = self.refuse.lock().unwrap();
            Ok(entries
                .iter()
                .map(|e| match refuse.get_mut(&e.id) {
                    Some(left) if *left > 0 => {
                        *left -= 1;
                        Some("ThrottlingException".into())
                    }
                    _ => None,
                })
                .collect())
        }
    }

    fn quick() -> PublishSettings {
        PublishSettings {
            attempts: 3,
            backoff: Duration::from_millis(1),
            ..PublishSettings::default()
        }
    }

    /// Twelve messages with a status each: 12 message.updated and 12 contact.updated (each
    /// contact has one message), more than one PutEvents call.
    fn batch() -> (FakeState, Event) {
        let mut state = FakeState {
            messages: Vec::new(),
            failing: None,
            tracked: Mutex::default(),
        };
        let mut event = Event::default();
        for n in 0..12 {
            let key = format!("m{n:02}");
            let mut message = outbound(&key, &format!("1415555{n:04}"));
            message.delivered_at = Some(100 + n);
            state.messages.push(message);
            let old = message_image(&key, &[("wa_id", Lambda::S(format!("1415555{n:04}")))]);
            let new = message_image(
                &key,
                &[
                    ("wa_id", Lambda::S(format!("1415555{n:04}"))),
                    ("delivered_times", Lambda::Ns(vec![(100 + n).to_string()])),
                ],
            );
            event.records.push(record(
                "MODIFY",
                &format!("{}", 1000 + n),
                Some(old),
                Some(new),
            ));
        }
        // Records the notifier ignores, in the middle of the batch.
        event.records.insert(
            3,
            record(
                "INSERT",
                "999",
                None,
                Some(lambda_item(&[
                    ("pk", Lambda::S("LINK#a".into())),
                    ("sk", Lambda::S("b".into())),
                ])),
            ),
        );
        (state, event)
    }

    /// A partial failure: only the refused entries are put again; a second refusal round still
    /// succeeds within the attempts; the batch reports nothing failed.
    #[tokio::test]
    async fn only_refused_entries_are_retried() {
        let (state, event) = batch();
        let bus = FakeBus::default();
        let first = handle_stream_batch(&state, &bus, event.clone(), &quick(), 500).await;
        let all = first.published_ids.clone();
        assert_eq!(all.len(), 24);
        assert!(first.response.batch_item_failures.is_empty());

        let bus = FakeBus::default();
        bus.refuse
            .lock()
            .unwrap()
            .extend([(all[2].clone(), 1), (all[17].clone(), 2)]);
        let report = handle_stream_batch(&state, &bus, event, &quick(), 900).await;
        assert!(report.response.batch_item_failures.is_empty());
        let calls = bus.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 3 + 1 + 1, "{calls:?}");
        assert_eq!(calls[3], vec![all[2].clone(), all[17].clone()]);
        assert_eq!(calls[4], vec![all[17].clone()]);
        let mut again = report.published_ids.clone();
        again.sort();
        let mut expected = all.clone();
        expected.sort();
        assert_eq!(again, expected, "a redelivered batch has the same ids");
        let line = report.metrics.render(1_764_238_453_000);
        assert!(line.contains("\"PutEventsFailures\":3.0"), "{line}");
        assert!(line.contains("\"RecordsIgnored\":1.0"), "{line}");
        crate::metrics::validate(&line).unwrap();
    }

    /// An entry still refused after every attempt fails its record and every later one (by
    /// the first one's sequence number); so does a record whose state cannot be read.
    #[tokio::test]
    async fn the_first_unpublished_record_is_reported() {
        let (state, event) = batch();
        let bus = FakeBus::default();
        let ids = handle_stream_batch(&state, &bus, event.clone(), &quick(), 500)
            .await
            .published_ids;
        // ids[2k] and ids[2k+1] belong to message k: record 1000+k (k >= 3 sits one later).
        let bus = FakeBus::default();
        bus.refuse
            .lock()
            .unwrap()
            .extend([(ids[13].clone(), 99), (ids[21].clone(), 99)]);
        let report = handle_stream_batch(&state, &bus, event.clone(), &quick(), 500).await;
        let failures: Vec<_> = report
            .response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone().unwrap())
            .collect();
        assert_eq!(failures, ["1006"]);

        let bus = FakeBus::default();
        *bus.down_calls.lock().unwrap() = 99;
        let report = handle_stream_batch(&state, &bus, event.clone(), &quick(), 500).await;
        assert_eq!(
            report.response.batch_item_failures[0]
                .item_identifier
                .as_deref(),
            Some("1000")
        );

        let failing = FakeState {
            failing: Some("m05".into()),
            ..state
        };
        let bus = FakeBus::default();
        let report = handle_stream_batch(&failing, &bus, event, &quick(), 500).await;
        assert_eq!(
            report.response.batch_item_failures[0]
                .item_identifier
                .as_deref(),
            Some("1005")
        );
        // The records before it were published; nothing of it or after it was.
        assert_eq!(report.published_ids, ids[..10].to_vec());
    }

    /// A customer's message records its contact's window (the end its view shows, on its own
    /// number); a business message's status does not, nor does a write without changes.
    #[tokio::test]
    async fn a_customer_message_records_its_window() {
        let mut customer = outbound("in", "1");
        customer.direction = Some(Direction::Inbound);
        customer.sent_at = Some(100);
        customer.channel_id = Some("c2".into());
        let mut reply = outbound("out", "1");
        reply.delivered_at = Some(150);
        reply.channel_id = Some("c2".into());
        let state = FakeState {
            messages: vec![customer.clone(), reply.clone()],
            failing: None,
            tracked: Mutex::default(),
        };
        let item = |record: &MessageRecord| MessageItem {
            key: record.id.clone().unwrap(),
            record: record.clone(),
            linked: Default::default(),
        };
        for record in [&reply, &customer] {
            let changes = item_changes(None, record);
            documents_for(&state, &item(record), &changes, 200, 1_800)
                .await
                .unwrap();
            documents_for(&state, &item(record), &[], 200, 1_800)
                .await
                .unwrap();
        }
        assert_eq!(
            state.tracked.lock().unwrap().clone(),
            [("1".to_owned(), "c2".to_owned(), 100 + 86_400, 1_800)]
        );
    }

    #[test]
    fn the_configuration_names_its_variables() {
        let config = NotifierConfig::from_lookup(|name| match name {
            "STATE_TABLE" => Some("state".into()),
            "CHANGE_BUS_NAME" => Some("bus".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            (config.state_table.as_str(), config.bus_name.as_str()),
            ("state", "bus")
        );
        let missing =
            NotifierConfig::from_lookup(|name| (name == "STATE_TABLE").then(|| "state".to_owned()))
                .unwrap_err();
        assert!(missing.to_string().contains("CHANGE_BUS_NAME"), "{missing}");
        assert_eq!(config.window_lead_seconds, 3_600, "60 minutes by default");
        let lead = |value: &'static str| {
            NotifierConfig::from_lookup(move |name| match name {
                "STATE_TABLE" | "CHANGE_BUS_NAME" => Some("x".into()),
                "WINDOW_CLOSING_LEAD_MINUTES" => Some(value.into()),
                _ => None,
            })
        };
        assert_eq!(lead("15").unwrap().window_lead_seconds, 900);
        assert!(
            lead("1440").is_err(),
            "a lead of a day or more precedes the window"
        );
    }
}
