//! Changes out, end to end on the emulators: the state table created from `template.yaml` with
//! its stream on DynamoDB Local, the fixtures applied through the processor's `apply`, the
//! stream read with the DynamoDB Streams API and turned into the Lambda's DynamoDB events, the
//! notifier's handler putting documents on an EventBridge bus (moto), a rule routing source
//! `wati-ingest` to an SQS queue, and the queue drained and compared with ids written here from
//! the README's rules and the fixtures' README (not from the code under test).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodbstreams::types::{AttributeValue as StreamValue, ShardIteratorType};
use aws_sdk_sqs::types::QueueAttributeName;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use serde_json::Value;
use sha2::{Digest, Sha256};
use wati_ingest::notifier::{classify, handle_stream_batch, EventBridgeBus, PublishSettings};
use wati_ingest::ports::ChangeFeed;
use wati_ingest::ports::QueuedEvent;
use wati_ingest::processor::apply;
use wati_ingest::store::dynamo_state::DynamoState;
use wati_ingest::store::embedded::EmbeddedStore;

use crate::state::shuffle;
use crate::support::Stack;

/// The fixtures' base time (tests/fixtures/README.md): 2025-11-27T10:14:13Z.
const T0: i64 = 1_764_238_453;
const ALICE: &str = "14155550101";
const DEFAULT_NUMBER: &str = "14155550000";
const SECOND_NUMBER: &str = "14155550200";
const SECOND_CHANNEL: &str = "6734a09f1c2b3a4d5e6f7c02";

/// A change id as the change documents' rules define it: `chg_` and the first 32 hex digits of
/// the SHA-256 of its parts joined by NUL.
fn change_id(parts: &[&str]) -> String {
    let digest = Sha256::digest(parts.join("\u{0}").as_bytes());
    format!("chg_{}", &hex::encode(digest)[..32])
}

fn message_id(n: u32) -> String {
    format!("6734a1b2c3d4e5f6010000{n:02}")
}

/// `message.updated` of fact `fact` with value `value` on the item of Wati's id `...n`.
fn fact(n: u32, fact: &str, value: &str) -> String {
    change_id(&["message", &message_id(n), fact, value])
}

fn at(offset: i64) -> String {
    (T0 + offset).to_string()
}

/// Every fact of the README's "Expected final state", on its message's own item.
fn expected_message_ids() -> BTreeMap<String, String> {
    let a = format!("wa_id:{ALICE}");
    let b = "wa_id:14155550102".to_owned();
    let c = "bsuid:US.13491208655302741918".to_owned();
    let d = "wa_id:14155550104".to_owned();
    let facts: Vec<(u32, &str, String)> = vec![
        (1, "received", at(0)),
        (1, "contact", a.clone()),
        (2, "received", at(5)),
        (2, "contact", b.clone()),
        (3, "sent", at(60)),
        (3, "delivered", at(65)),
        (3, "read", at(90)),
        (3, "replied", at(120)),
        (3, "contact", a.clone()),
        (3, "local_id", "local-0003".into()),
        (4, "sent", at(70)),
        (4, "delivered", at(75)),
        (4, "contact", b),
        (4, "local_id", "local-0004".into()),
        (4, "template", "order_update".into()),
        (
            5,
            "failed",
            format!(r#"[{},"131026","Message undeliverable"]"#, T0 + 80),
        ),
        (5, "local_id", "local-0005".into()),
        (5, "template", "order_update".into()),
        (
            6,
            "failed",
            format!(r#"[{},"131047","Re-engagement message"]"#, T0 + 85),
        ),
        (6, "local_id", "local-0006".into()),
        (7, "received", at(200)),
        (7, "contact", c.clone()),
        (8, "received", at(210)),
        (8, "contact", d.clone()),
        (9, "sent", at(220)),
        (9, "contact", c),
        (9, "local_id", "local-0009".into()),
        (10, "sent", at(230)),
        (10, "contact", d),
        (10, "local_id", "local-0010".into()),
        (10, "template", "welcome".into()),
        (11, "received", at(400)),
        (11, "contact", a.clone()),
        (12, "sent", at(430)),
        (12, "delivered", at(435)),
        (12, "contact", a),
        (12, "local_id", "local-0012".into()),
    ];
    facts
        .into_iter()
        .map(|(n, name, value)| (fact(n, name, &value), format!("...{n:02} {name} {value}")))
        .collect()
}

/// The `contact.updated` id of Alice's final view with one number: the view's stable content
/// (names, number, last times, window, session start and counts) as the README states it, and
/// where the 48 hours her view reads start (`docs/changes.md`): before her latest message, ...12
/// sent at +430.
fn alice_final_view_id(channel_id: &str, number: &str, start: i64, outbound: i64) -> String {
    let rfc = |offset: i64| wati_ingest::time::Rfc3339(Some(T0 + offset)).render();
    let content = serde_json::json!([
        ALICE,
        null,
        number,
        rfc(start),
        rfc(outbound),
        rfc(start + 86_400),
        rfc(start),
        1,
        1,
        T0 + 430 - 2 * 86_400
    ])
    .to_string();
    change_id(&["contact", ALICE, channel_id, &content])
}

/// What the notifier's DynamoDB calls cost, counted on the wire: calls per operation, the
/// BatchGetItems asking for strong reads, the keys they ask for, the items the reads return, and
/// the read units DynamoDB bills for them (from the items' sizes, by its rounding rules).
#[derive(Debug, Clone, Default, PartialEq)]
struct Tally {
    calls: BTreeMap<String, usize>,
    strong_batch_gets: usize,
    keys_strong: usize,
    keys_eventual: usize,
    /// Items returned by BatchGetItem and Query.
    items_read: usize,
    read_units: f64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        for (operation, n) in &other.calls {
            *self.calls.entry(operation.clone()).or_default() += n;
        }
        self.strong_batch_gets += other.strong_batch_gets;
        self.keys_strong += other.keys_strong;
        self.keys_eventual += other.keys_eventual;
        self.items_read += other.items_read;
        self.read_units += other.read_units;
    }

    /// What was counted since `before`.
    fn since(&self, before: &Tally) -> Tally {
        let mut calls = self.calls.clone();
        for (operation, n) in &before.calls {
            *calls.entry(operation.clone()).or_default() -= n;
        }
        calls.retain(|_, n| *n > 0);
        Tally {
            calls,
            strong_batch_gets: self.strong_batch_gets - before.strong_batch_gets,
            keys_strong: self.keys_strong - before.keys_strong,
            keys_eventual: self.keys_eventual - before.keys_eventual,
            items_read: self.items_read - before.items_read,
            read_units: self.read_units - before.read_units,
        }
    }

    fn json(&self) -> Value {
        serde_json::json!({
            "calls": self.calls,
            "batch_get_strong": self.strong_batch_gets,
            "keys_strong": self.keys_strong,
            "keys_eventual": self.keys_eventual,
            "items_read": self.items_read,
            "read_units": self.read_units,
        })
    }
}

/// Counts the notifier's DynamoDB calls into a [`Tally`].
#[derive(Debug, Clone, Default)]
struct Calls(Arc<Mutex<Tally>>);

impl Calls {
    fn tally(&self) -> Tally {
        self.0.lock().unwrap().clone()
    }
}

/// What a BatchGetItem asked for, kept from its request to its response.
#[derive(Debug, Clone)]
struct BatchGetAsked {
    strong: bool,
    keys: usize,
}

impl Storable for BatchGetAsked {
    type Storer = StoreReplace<Self>;
}

/// The size DynamoDB gives an attribute value in its JSON wire form (names count on top).
fn value_size(value: &Value) -> usize {
    let Some((kind, inner)) = value.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    let text = |v: &Value| v.as_str().map_or(0, str::len);
    // A number: 1 byte per 2 significant digits, plus 1.
    let number = |v: &Value| {
        let digits = v.as_str().unwrap_or("0");
        let significant = digits
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>();
        let significant = significant.trim_matches('0').len().max(1);
        significant.div_ceil(2) + 1
    };
    let binary = |v: &Value| text(v) * 3 / 4;
    let elements = |v: &Value| v.as_array().cloned().unwrap_or_default();
    match kind.as_str() {
        "S" => text(inner),
        "N" => number(inner),
        "B" => binary(inner),
        "BOOL" | "NULL" => 1,
        "SS" => elements(inner).iter().map(text).sum(),
        "NS" => elements(inner).iter().map(number).sum(),
        "BS" => elements(inner).iter().map(binary).sum(),
        "L" => {
            3 + elements(inner)
                .iter()
                .map(|v| 1 + value_size(v))
                .sum::<usize>()
        }
        "M" => {
            3 + inner.as_object().map_or(0, |map| {
                map.iter()
                    .map(|(name, v)| 1 + name.len() + value_size(v))
                    .sum::<usize>()
            })
        }
        _ => 0,
    }
}

/// An item's size as DynamoDB bills it: its attribute names and values.
fn item_size(item: &Value) -> usize {
    item.as_object().map_or(0, |attributes| {
        attributes
            .iter()
            .map(|(name, value)| name.len() + value_size(value))
            .sum()
    })
}

fn body_json(bytes: Option<&[u8]>) -> Value {
    bytes
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default()
}

impl Intercept for Calls {
    fn name(&self) -> &'static str {
        "calls"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let operation = crate::support::operation_of(context.request());
        let mut calls = self.0.lock().unwrap();
        if operation == "BatchGetItem" {
            let body = body_json(context.request().body().bytes());
            let tables = body["RequestItems"].as_object();
            let strong = tables
                .into_iter()
                .flat_map(|tables| tables.values())
                .all(|t| t["ConsistentRead"] == Value::Bool(true));
            let keys = tables
                .into_iter()
                .flat_map(|tables| tables.values())
                .map(|t| t["Keys"].as_array().map_or(0, Vec::len))
                .sum();
            if strong {
                calls.strong_batch_gets += 1;
                calls.keys_strong += keys;
            } else {
                calls.keys_eventual += keys;
            }
            cfg.interceptor_state()
                .store_put(BatchGetAsked { strong, keys });
        }
        *calls.calls.entry(operation).or_default() += 1;
        Ok(())
    }

    /// The items each read returned, and the read units they cost: a BatchGetItem is a GetItem
    /// per key (each item rounded up to 4 KB, a key without an item 1 unit), a Query the sum of
    /// its items rounded up to 4 KB (at least 1 unit); a strong read 1 RRU a unit, an eventual
    /// one (every Query here) 0.5.
    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        if !context.response().status().is_success() {
            return Ok(());
        }
        let body = body_json(context.response().body().bytes());
        let units = |size: usize| size.div_ceil(4096).max(1);
        let mut calls = self.0.lock().unwrap();
        if let Some(asked) = cfg.load::<BatchGetAsked>() {
            let items: Vec<&Value> = body["Responses"]
                .as_object()
                .into_iter()
                .flat_map(|tables| tables.values())
                .flat_map(|items| items.as_array().into_iter().flatten())
                .collect();
            let unprocessed: usize = body["UnprocessedKeys"]
                .as_object()
                .into_iter()
                .flat_map(|tables| tables.values())
                .map(|t| t["Keys"].as_array().map_or(0, Vec::len))
                .sum();
            let absent = asked.keys.saturating_sub(unprocessed + items.len());
            let found: usize = items.iter().map(|item| units(item_size(item))).sum();
            let rate = if asked.strong { 1.0 } else { 0.5 };
            calls.items_read += items.len();
            calls.read_units += rate * (found + absent) as f64;
        } else if let Some(items) = body["Items"].as_array() {
            let size: usize = items.iter().map(item_size).sum();
            calls.items_read += items.len();
            calls.read_units += 0.5 * units(size) as f64;
        }
        Ok(())
    }
}

/// Counts the `PutEvents` calls on a bus, their entries and the bytes EventBridge bills for
/// them (`Source`, `DetailType` and `Detail` of each entry).
#[derive(Debug, Clone, Default)]
pub(crate) struct Puts(Arc<Mutex<PutTally>>);

impl Puts {
    pub(crate) fn tally(&self) -> PutTally {
        *self.0.lock().unwrap()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PutTally {
    pub(crate) calls: usize,
    pub(crate) entries: usize,
    pub(crate) entry_bytes: usize,
    /// Entries over 64 KB count as one more billed event per 64 KB chunk.
    pub(crate) billed_events: usize,
}

impl PutTally {
    fn add(&mut self, other: &PutTally) {
        self.calls += other.calls;
        self.entries += other.entries;
        self.entry_bytes += other.entry_bytes;
        self.billed_events += other.billed_events;
    }

    fn since(&self, before: &PutTally) -> PutTally {
        PutTally {
            calls: self.calls - before.calls,
            entries: self.entries - before.entries,
            entry_bytes: self.entry_bytes - before.entry_bytes,
            billed_events: self.billed_events - before.billed_events,
        }
    }

    fn json(&self) -> Value {
        serde_json::json!({
            "PutEvents": self.calls,
            "entries": self.entries,
            "entry_bytes": self.entry_bytes,
            "billed_events": self.billed_events,
        })
    }
}

/// (One interceptor trait for every AWS SDK client.)
impl Intercept for Puts {
    fn name(&self) -> &'static str {
        "puts"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        if crate::support::operation_of(context.request()) != "PutEvents" {
            return Ok(());
        }
        let body = body_json(context.request().body().bytes());
        let mut tally = self.0.lock().unwrap();
        tally.calls += 1;
        for entry in body["Entries"].as_array().into_iter().flatten() {
            let size: usize = ["Source", "DetailType", "Detail"]
                .iter()
                .map(|field| entry[field].as_str().map_or(0, str::len))
                .sum();
            tally.entries += 1;
            tally.entry_bytes += size;
            tally.billed_events += size.div_ceil(64 * 1024).max(1);
        }
        Ok(())
    }
}

/// The stream of one table, read from its start like a Lambda event source mapping
/// (TRIM_HORIZON), one iterator per shard kept between reads.
pub(crate) struct StreamReader {
    client: aws_sdk_dynamodbstreams::Client,
    arn: String,
    /// Per shard: its id and the iterator to read on from.
    iterators: Vec<(String, Option<String>)>,
    /// Sequence numbers already returned: a shard read again from its start returns them again.
    seen: std::collections::HashSet<String>,
}

impl StreamReader {
    pub(crate) async fn open(stack: &Stack, table: &str) -> StreamReader {
        let endpoint = std::env::var("AWS_ENDPOINT_URL_DYNAMODB_STREAMS")
            .or_else(|_| std::env::var("AWS_ENDPOINT_URL_DYNAMODB"))
            .expect("the emulators' DynamoDB endpoint");
        StreamReader::open_at(stack, table, &endpoint).await
    }

    /// The stream of `table` on the DynamoDB Local at `endpoint`.
    pub(crate) async fn open_at(stack: &Stack, table: &str, endpoint: &str) -> StreamReader {
        let client = aws_sdk_dynamodbstreams::Client::from_conf(
            aws_sdk_dynamodbstreams::config::Builder::from(&stack.config)
                .endpoint_url(endpoint)
                .build(),
        );
        let streams = client
            .list_streams()
            .table_name(table)
            .send()
            .await
            .expect("list streams");
        let arn = streams.streams()[0]
            .stream_arn()
            .expect("the state table has a stream (template.yaml)")
            .to_owned();
        let described = client
            .describe_stream()
            .stream_arn(&arn)
            .send()
            .await
            .expect("describe stream");
        let description = described.stream_description().expect("description");
        assert_eq!(
            description.stream_view_type().map(|v| v.as_str()),
            Some("NEW_AND_OLD_IMAGES")
        );
        let mut iterators = Vec::new();
        for shard in description.shards() {
            let iterator = client
                .get_shard_iterator()
                .stream_arn(&arn)
                .shard_id(shard.shard_id().unwrap())
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .expect("shard iterator");
            iterators.push((
                shard.shard_id().unwrap().to_owned(),
                iterator.shard_iterator().map(str::to_owned),
            ));
        }
        StreamReader {
            client,
            arn,
            iterators,
            seen: Default::default(),
        }
    }

    /// A new iterator at the start of `shard`.
    async fn restart(&self, shard: &str) -> Result<Option<String>, String> {
        self.client
            .get_shard_iterator()
            .stream_arn(&self.arn)
            .shard_id(shard)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .map(|output| output.shard_iterator().map(str::to_owned))
            .map_err(|e| format!("shard iterator: {e:?}"))
    }

    /// Shards the stream has gained since the last look, read from their start.
    async fn add_new_shards(&mut self) -> Result<(), String> {
        let described = self
            .client
            .describe_stream()
            .stream_arn(&self.arn)
            .send()
            .await
            .map_err(|e| format!("describe stream: {e:?}"))?;
        let shards: Vec<String> = described
            .stream_description()
            .map(|d| d.shards())
            .unwrap_or_default()
            .iter()
            .filter_map(|shard| shard.shard_id().map(str::to_owned))
            .collect();
        for shard in shards {
            if self.iterators.iter().all(|(known, _)| *known != shard) {
                let iterator = self.restart(&shard).await?;
                self.iterators.push((shard, iterator));
            }
        }
        Ok(())
    }

    /// Every record written since the last read, as the Lambda's event records.
    pub(crate) async fn read(&mut self) -> Vec<EventRecord> {
        self.try_read().await.expect("read the stream")
    }

    /// [`StreamReader::read`] that says why it could not read (an emulator stopped or hung). A
    /// shard whose iterator was refused is read again from its start (what was seen skipped), and
    /// shards the stream gained are added, as an event source mapping does.
    pub(crate) async fn try_read(&mut self) -> Result<Vec<EventRecord>, String> {
        self.add_new_shards().await?;
        let mut records = Vec::new();
        for index in 0..self.iterators.len() {
            let mut restarts = 0;
            while let Some(current) = self.iterators[index].1.clone() {
                let output = match self
                    .client
                    .get_records()
                    .shard_iterator(&current)
                    .send()
                    .await
                {
                    Ok(output) => output,
                    // DynamoDB Local, under the whole suite's load, sometimes answers an iterator
                    // kept from an empty read with TrimmedDataAccessException although nothing
                    // was trimmed, and a restarted one refuses iterators of before: read the
                    // shard again from its start and skip what was seen. A record really trimmed
                    // would be missing, and the test fail on its ids.
                    Err(error)
                        if restarts < 3
                            && error.as_service_error().is_some_and(|e| {
                                e.is_trimmed_data_access_exception()
                                    || e.is_expired_iterator_exception()
                                    || e.is_resource_not_found_exception()
                            }) =>
                    {
                        restarts += 1;
                        let shard = self.iterators[index].0.clone();
                        self.iterators[index].1 = self.restart(&shard).await?;
                        continue;
                    }
                    Err(error) => return Err(format!("get records: {error:?}")),
                };
                self.iterators[index].1 = output.next_shard_iterator().map(str::to_owned);
                if output.records().is_empty() {
                    // Keep the iterator for the next read.
                    let kept = self.iterators[index].1.clone().or(Some(current));
                    self.iterators[index].1 = kept;
                    break;
                }
                for record in output.records() {
                    let sequence = record
                        .dynamodb()
                        .and_then(|d| d.sequence_number())
                        .unwrap_or_default()
                        .to_owned();
                    if self.seen.insert(sequence) {
                        records.push(lambda_record(record));
                    }
                }
            }
        }
        Ok(records)
    }
}

fn lambda_value(value: &StreamValue) -> serde_dynamo::AttributeValue {
    use serde_dynamo::AttributeValue as L;
    match value {
        StreamValue::S(s) => L::S(s.clone()),
        StreamValue::N(n) => L::N(n.clone()),
        StreamValue::B(b) => L::B(b.clone().into_inner()),
        StreamValue::Bool(b) => L::Bool(*b),
        StreamValue::Null(n) => L::Null(*n),
        StreamValue::Ss(set) => L::Ss(set.clone()),
        StreamValue::Ns(set) => L::Ns(set.clone()),
        StreamValue::Bs(set) => L::Bs(set.iter().map(|b| b.clone().into_inner()).collect()),
        StreamValue::M(map) => L::M(lambda_map(map)),
        StreamValue::L(list) => L::L(list.iter().map(lambda_value).collect()),
        other => panic!("unexpected attribute {other:?}"),
    }
}

fn lambda_map(map: &HashMap<String, StreamValue>) -> HashMap<String, serde_dynamo::AttributeValue> {
    map.iter()
        .map(|(k, v)| (k.clone(), lambda_value(v)))
        .collect()
}

/// One stream record as Lambda hands it to the function.
fn lambda_record(record: &aws_sdk_dynamodbstreams::types::Record) -> EventRecord {
    let change = record.dynamodb().expect("stream record");
    let mut lambda = EventRecord::default();
    lambda.event_id = record.event_id().unwrap_or_default().to_owned();
    lambda.event_name = record.event_name().expect("event name").as_str().to_owned();
    lambda.event_source = Some("aws:dynamodb".into());
    lambda.aws_region = "us-east-1".into();
    let image = |item: Option<&HashMap<String, StreamValue>>| {
        item.map(|i| serde_dynamo::Item::from(lambda_map(i)))
            .unwrap_or_default()
    };
    lambda.change.keys = image(change.keys());
    lambda.change.new_image = image(change.new_image());
    lambda.change.old_image = image(change.old_image());
    lambda.change.sequence_number = change.sequence_number().map(str::to_owned);
    lambda.change.size_bytes = change.size_bytes().unwrap_or_default();
    lambda
}

pub(crate) fn event_of(records: &[EventRecord]) -> Event {
    let mut event = Event::default();
    event.records = records.to_vec();
    event
}

/// DynamoDB Local's streams answer `TrimmedDataAccessException` when two tests read streams at
/// once: the tests that read a stream hold this.
pub(crate) static STREAMS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An EventBridge bus on moto with a rule sending source `wati-ingest` to a fresh SQS queue.
pub(crate) struct Bus {
    pub(crate) bus: EventBridgeBus,
    /// The `PutEvents` calls made on it.
    pub(crate) puts: Puts,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

impl Bus {
    pub(crate) async fn create(stack: &Stack, name: &str) -> Bus {
        let endpoint = std::env::var("AWS_ENDPOINT_URL_EVENTBRIDGE")
            .or_else(|_| std::env::var("AWS_ENDPOINT_URL_SQS"))
            .expect("moto's endpoint");
        Bus::create_at(stack, name, &endpoint).await
    }

    /// The bus on the moto at `endpoint` (its rule's queue on the stack's SQS).
    pub(crate) async fn create_at(stack: &Stack, name: &str, endpoint: &str) -> Bus {
        let puts = Puts::default();
        let events = aws_sdk_eventbridge::Client::from_conf(
            aws_sdk_eventbridge::config::Builder::from(&stack.config)
                .endpoint_url(endpoint)
                .interceptor(puts.clone())
                .build(),
        );
        events
            .create_event_bus()
            .name(name)
            .send()
            .await
            .expect("create bus (moto needs its `events` extra: scripts/emulators.sh)");
        let queue_url = stack
            .sqs
            .create_queue()
            .queue_name(format!("{name}-target"))
            .send()
            .await
            .expect("create queue")
            .queue_url()
            .unwrap()
            .to_owned();
        let queue_arn = stack
            .sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue arn")
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .unwrap();
        events
            .put_rule()
            .name(format!("{name}-all"))
            .event_bus_name(name)
            .event_pattern(r#"{"source":["wati-ingest"]}"#)
            .send()
            .await
            .expect("put rule");
        events
            .put_targets()
            .rule(format!("{name}-all"))
            .event_bus_name(name)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("queue")
                    .arn(queue_arn)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("put targets");
        Bus {
            bus: EventBridgeBus::new(events, name),
            puts,
            sqs: stack.sqs.clone(),
            queue_url,
        }
    }

    /// Every EventBridge envelope the rule delivered so far, taken off the queue.
    pub(crate) async fn drain(&self) -> Vec<Value> {
        let mut envelopes = Vec::new();
        loop {
            let output = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .send()
                .await
                .expect("receive");
            if output.messages().is_empty() {
                return envelopes;
            }
            for message in output.messages() {
                envelopes.push(serde_json::from_str(message.body().unwrap()).expect("JSON"));
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(message.receipt_handle().unwrap())
                    .send()
                    .await
                    .expect("delete");
            }
        }
    }
}

/// The fixtures, shuffled and partly duplicated, applied a few at a time with the notifier run
/// on the stream after each round (a batch of each round delivered twice, as after a crash):
/// every change the README implies is announced with the id written above, nothing else is,
/// the newest contact views carry the README's sessions, and applying every webhook again
/// announces no new id.
#[tokio::test]
async fn notifier_announces_every_change_once_per_id() {
    let _streams = STREAMS.lock().await;
    let tempdir = tempfile::tempdir().unwrap();
    let stack = Stack::create_streaming(true).await;
    let table = stack.table("StateTable");
    let state = DynamoState::new(stack.dynamodb.clone(), &table);
    let calls = Calls::default();
    let notifier_state = DynamoState::new(
        aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&stack.config)
                .interceptor(calls.clone())
                .build(),
        ),
        &table,
    );
    let bus = Bus::create(&stack, &format!("changes-{}", table.to_lowercase())).await;
    let mut stream = StreamReader::open(&stack, &table).await;
    let settings = PublishSettings::default();

    let fixtures = crate::fixtures();
    let mut deliveries: Vec<Vec<u8>> = fixtures.clone();
    deliveries.extend(fixtures.iter().step_by(3).cloned());
    shuffle(&mut deliveries, 17);
    let now = wati_ingest::time::now_unix();

    let mut published: BTreeSet<String> = BTreeSet::new();
    let (mut records_seen, mut handler_time) = (0usize, std::time::Duration::ZERO);
    let mut with_changes = 0usize;
    // The notifier's calls on the first delivery of each batch, and on its redelivery.
    let (mut first_reads, mut first_puts) = (Tally::default(), PutTally::default());
    let (mut redelivered_reads, mut redelivered_puts) = (Tally::default(), PutTally::default());
    for (round, chunk) in deliveries.chunks(6).enumerate() {
        for (n, body) in chunk.iter().enumerate() {
            let queued = QueuedEvent::archived(
                format!("k{round}-{n}"),
                now,
                String::from_utf8(body.clone()).unwrap(),
            );
            apply(&state, &queued).await.expect("apply");
        }
        let records = stream.read().await;
        records_seen += records.len();
        with_changes += records
            .iter()
            .filter(|r| !classify(r).changes().is_empty())
            .count();
        for batch in records.chunks(7) {
            let (reads_before, puts_before) = (calls.tally(), bus.puts.tally());
            let started = Instant::now();
            let report = handle_stream_batch(
                &notifier_state,
                &bus.bus,
                event_of(batch),
                &settings,
                wati_ingest::time::now_unix(),
            )
            .await;
            handler_time += started.elapsed();
            let (reads_first, puts_first) = (calls.tally(), bus.puts.tally());
            first_reads.add(&reads_first.since(&reads_before));
            first_puts.add(&puts_first.since(&puts_before));
            assert!(
                report.response.batch_item_failures.is_empty(),
                "{:?}",
                report.response
            );
            // The same batch again, as after a crash before Lambda saw the answer.
            let again = handle_stream_batch(
                &notifier_state,
                &bus.bus,
                event_of(batch),
                &settings,
                wati_ingest::time::now_unix(),
            )
            .await;
            assert_eq!(
                again.published_ids, report.published_ids,
                "a redelivered batch announces the same ids"
            );
            redelivered_reads.add(&calls.tally().since(&reads_first));
            redelivered_puts.add(&bus.puts.tally().since(&puts_first));
            published.extend(report.published_ids);
        }
    }
    let envelopes = bus.drain().await;
    let mut documents: Vec<Value> = Vec::new();
    for envelope in &envelopes {
        assert_eq!(envelope["source"], "wati-ingest", "{envelope}");
        let detail = &envelope["detail"];
        assert_eq!(envelope["detail-type"], detail["type"], "{envelope}");
        documents.push(detail.clone());
    }
    let received: BTreeSet<String> = documents
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        received, published,
        "the bus delivered what the handler put"
    );

    let types: BTreeSet<&str> = documents
        .iter()
        .map(|d| d["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        BTreeSet::from(["contact.updated", "message.updated"]),
        "no other type"
    );

    // Every message fact the README implies, under its id; and no message.updated that is not
    // one of them.
    let expected = expected_message_ids();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|(id, _)| !received.contains(*id))
        .map(|(_, what)| what)
        .collect();
    assert!(missing.is_empty(), "never announced: {missing:#?}");
    let message_updates: BTreeSet<String> = documents
        .iter()
        .filter(|d| d["type"] == "message.updated")
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    let unexpected: Vec<&Value> = documents
        .iter()
        .filter(|d| d["type"] == "message.updated")
        .filter(|d| !expected.contains_key(d["id"].as_str().unwrap()))
        .collect();
    assert!(unexpected.is_empty(), "unexpected: {unexpected:#?}");
    // A fact is gained by one write only: each message.updated came from one stream record, put
    // twice (its batch was delivered twice), never again by a later write of the item.
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for document in documents.iter().filter(|d| d["type"] == "message.updated") {
        *times.entry(document["id"].as_str().unwrap()).or_default() += 1;
    }
    let repeated: Vec<_> = times.iter().filter(|(_, n)| **n != 2).collect();
    assert!(
        repeated.is_empty(),
        "announced by more than one write: {repeated:?}"
    );
    // The replied fact of ...03 carries the message as read after its write.
    let replied = documents
        .iter()
        .find(|d| d["id"] == fact(3, "replied", &at(120)))
        .unwrap();
    assert_eq!(replied["message"]["status"], "replied", "{replied}");
    assert_eq!(replied["occurred_at"], "2025-11-27T10:16:13Z");

    // Alice's final views, one per number (README: one message a side in each session).
    let alice: Vec<&Value> = documents
        .iter()
        .filter(|d| d["type"] == "contact.updated" && d["contact"]["wa_id"] == ALICE)
        .collect();
    let default_final = alice_final_view_id("", DEFAULT_NUMBER, 0, 60);
    let second_final = alice_final_view_id(SECOND_CHANNEL, SECOND_NUMBER, 400, 430);
    for (id, number, started) in [
        (&default_final, DEFAULT_NUMBER, "2025-11-27T10:14:13Z"),
        (&second_final, SECOND_NUMBER, "2025-11-27T10:20:53Z"),
    ] {
        let view = alice
            .iter()
            .find(|d| d["id"] == id.as_str())
            .unwrap_or_else(|| {
                panic!("Alice's final view on {number} never announced: {alice:#?}")
            });
        let contact = &view["contact"];
        assert_eq!(contact["channel_phone_number"], number);
        assert_eq!(contact["session"]["started_at"], started);
        assert_eq!(contact["session"]["business_messages"], 1);
        assert_eq!(contact["session"]["customer_messages"], 1);
    }
    let on_default = alice
        .iter()
        .filter(|d| d["contact"]["channel_id"].is_null())
        .count();
    assert!(on_default >= 1 && alice.len() > on_default);

    // One rule, two backends: the same deliveries through the embedded store's outbox announce
    // the same message.updated ids, and Alice's final views under the same ids.
    let local = EmbeddedStore::open(&tempdir.path().join("same-deliveries.db")).unwrap();
    for (n, body) in deliveries.iter().enumerate() {
        let queued = QueuedEvent::archived(
            // The key the same delivery had on AWS above.
            format!("k{}-{}", n / 6, n % 6),
            now,
            String::from_utf8(body.clone()).unwrap(),
        );
        apply(&local, &queued).await.expect("apply locally");
    }
    let local_documents: Vec<Value> = local
        .changes_after(0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|entry| serde_json::from_str(&entry.document).unwrap())
        .collect();
    let local_message_updates: BTreeSet<String> = local_documents
        .iter()
        .filter(|d| d["type"] == "message.updated")
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        local_message_updates, message_updates,
        "the embedded outbox and the notifier announce the same message changes"
    );
    // Each change names the webhook that made it (its key as the logs show it), the same one on
    // both backends.
    let applied: BTreeSet<String> = (0..deliveries.len())
        .map(|n| wati_ingest::event::log_key(&format!("k{}-{}", n / 6, n % 6)))
        .collect();
    let causes = |documents: &[Value]| -> BTreeMap<String, String> {
        documents
            .iter()
            .filter(|d| d["type"] == "message.updated")
            .map(|d| {
                let cause = d["caused_by"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no caused_by: {d}"));
                assert!(
                    applied.contains(cause),
                    "{cause} is no applied webhook's key"
                );
                (d["id"].as_str().unwrap().to_owned(), cause.to_owned())
            })
            .collect()
    };
    assert_eq!(causes(&local_documents), causes(&documents));
    assert!(documents
        .iter()
        .filter(|d| d["type"] == "contact.updated")
        .all(|d| d["caused_by"].as_str().is_some_and(|c| applied.contains(c))));
    for id in [&default_final, &second_final] {
        assert!(
            local_documents.iter().any(|d| d["id"] == id.as_str()),
            "Alice's final view {id} not announced locally"
        );
    }

    // Every webhook again, in another order: nothing new is announced.
    let (again_reads_before, again_puts_before) = (calls.tally(), bus.puts.tally());
    let mut again = fixtures.clone();
    shuffle(&mut again, 99);
    for (n, body) in again.iter().enumerate() {
        let queued = QueuedEvent::archived(
            format!("again-{n}"),
            now,
            String::from_utf8(body.clone()).unwrap(),
        );
        apply(&state, &queued).await.expect("apply");
    }
    let records = stream.read().await;
    for batch in records.chunks(7) {
        let report = handle_stream_batch(
            &notifier_state,
            &bus.bus,
            event_of(batch),
            &settings,
            wati_ingest::time::now_unix(),
        )
        .await;
        assert!(report.response.batch_item_failures.is_empty());
        for id in &report.published_ids {
            assert!(published.contains(id), "a duplicate webhook announced {id}");
        }
    }
    for document in bus.drain().await {
        assert!(
            received.contains(document["detail"]["id"].as_str().unwrap()),
            "a duplicate webhook announced {document}"
        );
    }

    let again_records = records.len();
    let (again_reads, again_puts) = (
        calls.tally().since(&again_reads_before),
        bus.puts.tally().since(&again_puts_before),
    );

    // Each record with changes (handled twice) starts with a strongly consistent read of its
    // message; the contact's other messages are read eventually consistent, like the indexes.
    let total = calls.tally();
    let (by_operation, strong_reads) = (total.calls.clone(), total.strong_batch_gets);
    assert!(
        strong_reads >= 2 * with_changes,
        "{strong_reads} strongly consistent BatchGetItems for {with_changes} records with changes"
    );
    eprintln!(
        "notifier e2e: {} deliveries, {records_seen} stream records ({with_changes} with \
         changes), {} documents ({} distinct: {} message.updated), handler {:.0} ms in all \
         (first deliveries); notifier DynamoDB calls (redeliveries included) {by_operation:?}, \
         {strong_reads} BatchGetItems strongly consistent; stream records after duplicates: {}",
        deliveries.len(),
        documents.len(),
        received.len(),
        message_updates.len(),
        handler_time.as_secs_f64() * 1000.0,
        again_records,
    );

    // The counts for docs/performance.md (`make bench`): its cost per change is computed from
    // the first deliveries, per stream record with changes.
    let counted = serde_json::json!({
        "test": "notifier::notifier_announces_every_change_once_per_id",
        "fixtures": fixtures.len(),
        "deliveries": deliveries.len(),
        "stream_records": records_seen,
        "records_with_changes": with_changes,
        "distinct_documents": received.len(),
        "message_updated": message_updates.len(),
        "first_deliveries": {
            "dynamodb": first_reads.json(),
            "eventbridge": first_puts.json(),
            "handler_ms": handler_time.as_secs_f64() * 1000.0,
        },
        "redeliveries": {
            "dynamodb": redelivered_reads.json(),
            "eventbridge": redelivered_puts.json(),
        },
        "duplicates_again": {
            "webhooks": fixtures.len(),
            "stream_records": again_records,
            "dynamodb": again_reads.json(),
            "eventbridge": again_puts.json(),
        },
    });
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("notifier_calls.json"),
        serde_json::to_vec_pretty(&counted).unwrap(),
    )
    .unwrap();
}
