//! The notifier's unit tests: stream conversion, record filtering, documents, the bus's
//! retries and size fallback, and whole batches over a fake state and bus.

use crate::session::ChannelView;
use std::collections::HashMap;

use aws_lambda_events::event::dynamodb::EventRecord;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use super::*;
use crate::changes::item_changes;
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
    let StreamChange::Message { before, after, .. } = classify(&event.records[0]) else {
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

/// A business message to `wa_id`, sent (a contact's view reads sent messages only).
fn outbound(id: &str, wa_id: &str) -> MessageRecord {
    MessageRecord {
        id: Some(id.into()),
        wa_id: Some(wa_id.into()),
        direction: Some(Direction::Outbound),
        sent_at: Some(90),
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
    let view = contact_view_of(&fresh, vec![inbound.clone(), stale], 200)
        .unwrap()
        .view_of(&fresh)
        .cloned()
        .unwrap();
    assert_eq!(view.session.business_messages, 1);
    let unseen = contact_view_of(&fresh, vec![inbound.clone()], 200)
        .unwrap()
        .view_of(&fresh)
        .cloned()
        .unwrap();
    assert_eq!(unseen, view);
    let mut other_number = fresh.clone();
    other_number.channel_id = Some("c2".into());
    other_number.channel_phone_number = Some("14155550200".into());
    let second = contact_view_of(&other_number, vec![inbound], 200)
        .unwrap()
        .view_of(&other_number)
        .cloned()
        .unwrap();
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
        documents_for(&state, &item(record), &changes, 200, 1_800, None)
            .await
            .unwrap();
        documents_for(&state, &item(record), &[], 200, 1_800, None)
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
