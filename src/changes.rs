//! Change documents: what the user's systems are told when the state changes (`docs/changes.md`,
//! `docs/changes.schema.json`).
//!
//! Both state stores file a message as items, one per id ([`crate::message_items`]), and change
//! an item only by joining facts into it. [`item_changes`] compares an item before and after a
//! write and names each fact that changed: the embedded store calls it inside the transaction
//! that writes the item (its outbox), the AWS notifier on the stream record of the same write
//! (old and new image). One function, so both backends announce the same changes under the same
//! ids.
//!
//! Every id is a digest of what the change *is* (which item, which fact, which value; which
//! contact view; which window), never of when or how often it was seen: a duplicate webhook, a
//! v2 twin, a replay or a redelivered stream batch produces the id already sent, and consumers
//! deduplicate on it.

use serde::Serialize;

use crate::event::sha256_hex;
use crate::message::{Direction, MessageRecord, MessageView};
use crate::session::{ChannelView, ContactView, SessionState};
use crate::time::Rfc3339;

/// The kinds of change document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ChangeType {
    #[serde(rename = "message.updated")]
    MessageUpdated,
    #[serde(rename = "contact.updated")]
    ContactUpdated,
    #[serde(rename = "contact.window_closing")]
    WindowClosing,
    #[serde(rename = "contact.window_closed")]
    WindowClosed,
}

impl ChangeType {
    pub fn name(&self) -> &'static str {
        match self {
            ChangeType::MessageUpdated => "message.updated",
            ChangeType::ContactUpdated => "contact.updated",
            ChangeType::WindowClosing => "contact.window_closing",
            ChangeType::WindowClosed => "contact.window_closed",
        }
    }
}

/// What a message gained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fact {
    /// The customer's message (its time).
    Received,
    Sent,
    Delivered,
    Read,
    Replied,
    /// A failure, with its code and detail.
    Failed,
    /// Its first phone number or BSUID.
    Contact,
    Template,
    LocalId,
}

impl Fact {
    pub fn name(&self) -> &'static str {
        match self {
            Fact::Received => "received",
            Fact::Sent => "sent",
            Fact::Delivered => "delivered",
            Fact::Read => "read",
            Fact::Replied => "replied",
            Fact::Failed => "failed",
            Fact::Contact => "contact",
            Fact::Template => "template",
            Fact::LocalId => "local_id",
        }
    }
}

/// One fact an item gained: its value as the change id is made of, and its own time if any.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FactChange {
    pub fact: Fact,
    pub value: String,
    pub occurred_at: Option<i64>,
}

/// The facts that changed on the item under `key` between `before` (`None`: it did not exist)
/// and `after`. Facts keep their least value, so a fact changes when it appears or moves
/// earlier; a value that loses to a stored one changes nothing and is not announced. Edge
/// items (ids only: no direction) announce nothing: their message's home does. The first write
/// that gives an item a direction announces everything it then holds, the ids and contact names
/// edge writes put there before included (else a fact an edge wrote first would never be told).
pub fn item_changes(before: Option<&MessageRecord>, after: &MessageRecord) -> Vec<FactChange> {
    if after.direction.is_none() {
        return Vec::new();
    }
    let empty = MessageRecord::default();
    let before = before.filter(|b| b.direction.is_some()).unwrap_or(&empty);
    let mut changes = Vec::new();
    let sent = match after.direction() {
        Direction::Inbound => Fact::Received,
        Direction::Outbound => Fact::Sent,
    };
    let times = [
        (sent, before.sent_at, after.sent_at),
        (Fact::Delivered, before.delivered_at, after.delivered_at),
        (Fact::Read, before.read_at, after.read_at),
        (Fact::Replied, before.replied_at, after.replied_at),
    ];
    for (fact, was, is) in times {
        if let Some(at) = is.filter(|_| is != was) {
            changes.push(FactChange {
                fact,
                value: at.to_string(),
                occurred_at: Some(at),
            });
        }
    }
    if let Some(failure) = after
        .failure
        .as_ref()
        .filter(|f| Some(*f) != before.failure.as_ref())
    {
        changes.push(FactChange {
            fact: Fact::Failed,
            value: serde_json::json!([failure.at, failure.code, failure.detail]).to_string(),
            occurred_at: Some(failure.at),
        });
    }
    let contact = |record: &MessageRecord| {
        record
            .wa_id
            .as_ref()
            .map(|w| format!("wa_id:{w}"))
            .or_else(|| record.bsuid.as_ref().map(|b| format!("bsuid:{b}")))
    };
    let texts = [
        (Fact::Contact, contact(before), contact(after)),
        (
            Fact::Template,
            before.template_name.clone(),
            after.template_name.clone(),
        ),
        (
            Fact::LocalId,
            before.local_message_id.clone(),
            after.local_message_id.clone(),
        ),
    ];
    for (fact, was, is) in texts {
        if let Some(value) = is.filter(|v| Some(v) != was.as_ref()) {
            changes.push(FactChange {
                fact,
                value,
                occurred_at: None,
            });
        }
    }
    changes
}

/// A change id: `chg_` and 32 hex digits of a digest of its parts.
fn change_id(parts: &[&str]) -> String {
    let joined = parts.join("\u{0}");
    format!("chg_{}", &sha256_hex(joined.as_bytes())[..32])
}

/// One change document, as stored in the outbox, put on the bus and posted to a forward URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeDocument {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: ChangeType,
    /// `message.updated`: what the message gained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fact: Option<Fact>,
    /// The fact's own time (`null` for facts without one); a window's closing or closing time.
    pub occurred_at: Rfc3339,
    /// When this service recorded the change.
    pub recorded_at: Rfc3339,
    /// The moment the view below describes: keep the document with the newest `as_of`.
    pub as_of: Rfc3339,
    /// `message.updated`: the message as `GET /v1/messages/{id}` answers after the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageView>,
    /// `contact.*`: the (business number, contact) view as `GET /v1/contacts/{waId}?channel=`
    /// answers it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<ChannelView>,
    /// Set instead of `message`/`contact` when the document with its view would be too large for
    /// the channel (EventBridge takes 256 KB an entry): where to read the view,
    /// `/v1/messages/<id>` or `/v1/contacts/<waId>?channel=<number>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
    /// The correlation id of the webhook whose write made the change: its key in the form the
    /// receiver's and processor's log lines show (`log_key`). Absent on the window timer's
    /// documents: the clock made them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caused_by: Option<String>,
}

/// The `message.updated` document for one fact gained by the item under `key`; `message` is the
/// whole message (all its items joined) after the write.
pub fn message_updated(
    key: &str,
    change: &FactChange,
    message: &MessageRecord,
    recorded_at: i64,
) -> ChangeDocument {
    ChangeDocument {
        id: change_id(&["message", key, change.fact.name(), &change.value]),
        kind: ChangeType::MessageUpdated,
        fact: Some(change.fact),
        occurred_at: Rfc3339(change.occurred_at),
        recorded_at: Rfc3339(Some(recorded_at)),
        as_of: Rfc3339(Some(recorded_at)),
        message: Some(MessageView::from(message)),
        contact: None,
        href: None,
        caused_by: None,
    }
}

/// Every document one write of a message item announces, on both backends: a
/// `message.updated` per fact the item gained (`changes`, from [`item_changes`]) and, when there
/// is any, a `contact.updated` for each of the contact's (business number, contact) views after
/// the write (`contact`: none while the message names no contact). Every number's view, not only
/// the message's: a message that joins the contact's two names (phone number and BSUID) changes
/// them all; a view that did not change has the id already sent. `message` is the whole message
/// after the write.
pub fn write_documents(
    key: &str,
    changes: &[FactChange],
    message: &MessageRecord,
    contact: Option<&ContactView>,
    now: i64,
    caused_by: Option<&str>,
) -> Vec<ChangeDocument> {
    if changes.is_empty() {
        return Vec::new();
    }
    let mut documents: Vec<ChangeDocument> = changes
        .iter()
        .map(|change| message_updated(key, change, message, now))
        .collect();
    let views = contact.map_or(&[][..], |c| c.channels.as_slice());
    documents.extend(views.iter().map(|view| contact_updated(view, now, now)));
    for document in &mut documents {
        document.caused_by = caused_by.map(str::to_owned);
    }
    documents
}

/// The contact a view belongs to, as ids name it: the phone number, else the BSUID.
fn contact_name(view: &ChannelView) -> &str {
    view.wa_id
        .as_deref()
        .or(view.bsuid.as_deref())
        .unwrap_or_default()
}

/// The part of a view that does not move with the clock: the same for every read between two
/// changes, so a recomputed view that changed nothing has the id already sent.
fn stable_content(view: &ChannelView) -> String {
    let session = &view.session;
    let opened = session.state != SessionState::None;
    serde_json::json!([
        view.wa_id,
        view.bsuid,
        view.channel_phone_number,
        view.last_inbound_at,
        view.last_outbound_at,
        view.window_expires_at,
        opened.then_some(session.started_at),
        session.business_messages,
        session.customer_messages,
        view.reads_from,
    ])
    .to_string()
}

/// The `contact.updated` document for a (business number, contact) view read at `as_of`.
pub fn contact_updated(view: &ChannelView, as_of: i64, recorded_at: i64) -> ChangeDocument {
    ChangeDocument {
        id: change_id(&[
            "contact",
            contact_name(view),
            view.channel_id.as_deref().unwrap_or_default(),
            &stable_content(view),
        ]),
        kind: ChangeType::ContactUpdated,
        fact: None,
        occurred_at: Rfc3339(None),
        recorded_at: Rfc3339(Some(recorded_at)),
        as_of: Rfc3339(Some(as_of)),
        message: None,
        contact: Some(view.clone()),
        href: None,
        caused_by: None,
    }
}

/// A `contact.window_closing` or `contact.window_closed` document for the window of `view` that
/// ends at `window_end`; `due_at` is when it fell due. One id per window and kind.
pub fn window_document(
    kind: ChangeType,
    view: &ChannelView,
    window_end: i64,
    due_at: i64,
    as_of: i64,
) -> ChangeDocument {
    ChangeDocument {
        id: change_id(&[
            kind.name(),
            contact_name(view),
            view.channel_id.as_deref().unwrap_or_default(),
            &window_end.to_string(),
        ]),
        kind,
        fact: None,
        occurred_at: Rfc3339(Some(due_at)),
        recorded_at: Rfc3339(Some(as_of)),
        as_of: Rfc3339(Some(as_of)),
        message: None,
        contact: Some(view.clone()),
        href: None,
        caused_by: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Failure;
    use crate::session::ContactView;
    use proptest::prelude::*;

    fn outbound(id: &str) -> MessageRecord {
        MessageRecord {
            id: Some(id.into()),
            direction: Some(Direction::Outbound),
            ..Default::default()
        }
    }

    fn facts(changes: &[FactChange]) -> Vec<(Fact, &str)> {
        changes.iter().map(|c| (c.fact, c.value.as_str())).collect()
    }

    #[test]
    fn a_new_item_announces_every_fact_it_holds() {
        let after = MessageRecord {
            wa_id: Some("1".into()),
            sent_at: Some(10),
            delivered_at: Some(20),
            template_name: Some("t".into()),
            local_message_id: Some("l".into()),
            ..outbound("m")
        };
        assert_eq!(
            facts(&item_changes(None, &after)),
            [
                (Fact::Sent, "10"),
                (Fact::Delivered, "20"),
                (Fact::Contact, "wa_id:1"),
                (Fact::Template, "t"),
                (Fact::LocalId, "l"),
            ]
        );
    }

    #[test]
    fn no_change_no_document() {
        let item = MessageRecord {
            read_at: Some(30),
            ..outbound("m")
        };
        assert!(item_changes(Some(&item), &item).is_empty());
        let edge = MessageRecord {
            id: Some("m".into()),
            whatsapp_message_id: Some("w".into()),
            wa_id: Some("1".into()),
            ..Default::default()
        };
        assert!(
            item_changes(None, &edge).is_empty(),
            "edges announce nothing"
        );
    }

    #[test]
    fn an_earlier_time_is_a_change_and_a_later_one_is_not() {
        let before = MessageRecord {
            delivered_at: Some(20),
            ..outbound("m")
        };
        let mut later = before.clone();
        later.merge(&MessageRecord {
            delivered_at: Some(25),
            ..outbound("m")
        });
        assert!(item_changes(Some(&before), &later).is_empty());
        let mut earlier = before.clone();
        earlier.merge(&MessageRecord {
            delivered_at: Some(15),
            ..outbound("m")
        });
        assert_eq!(
            facts(&item_changes(Some(&before), &earlier)),
            [(Fact::Delivered, "15")]
        );
    }

    #[test]
    fn a_customer_message_is_received_and_a_failure_carries_its_code() {
        let inbound = MessageRecord {
            direction: Some(Direction::Inbound),
            sent_at: Some(5),
            ..outbound("m")
        };
        assert_eq!(
            facts(&item_changes(None, &inbound)),
            [(Fact::Received, "5")]
        );
        let failed = MessageRecord {
            failure: Some(Failure {
                at: 7,
                code: Some("131026".into()),
                detail: None,
            }),
            ..outbound("m")
        };
        let changes = item_changes(None, &failed);
        assert_eq!(facts(&changes), [(Fact::Failed, r#"[7,"131026",null]"#)]);
        assert_eq!(changes[0].occurred_at, Some(7));
    }

    #[test]
    fn ids_name_the_change_not_the_delivery() {
        let message = MessageRecord {
            delivered_at: Some(20),
            ..outbound("m")
        };
        let change = &item_changes(None, &message)[0];
        let first = message_updated("m", change, &message, 100);
        let again = message_updated("m", change, &message, 900);
        assert_eq!(first.id, again.id);
        assert!(first.id.starts_with("chg_") && first.id.len() == 36);
        assert_ne!(first.id, message_updated("w", change, &message, 100).id);
        let json = serde_json::to_value(&first).unwrap();
        assert_eq!(json["type"], "message.updated");
        assert_eq!(json["fact"], "delivered");
        assert_eq!(json["message"]["status"], "delivered");
        assert!(json.get("contact").is_none());
    }

    fn view_at(messages: &[MessageRecord], now: i64) -> ChannelView {
        ContactView::from_messages(messages, now).unwrap().default
    }

    /// A message that joins the contact's BSUID to its phone number changes the contact's view
    /// on every number it talks to: each is announced, whichever number the message is on.
    #[test]
    fn a_write_announces_the_contacts_view_on_every_number() {
        let on_second = MessageRecord {
            bsuid: Some("US.1".into()),
            channel_id: Some("second".into()),
            direction: Some(Direction::Inbound),
            sent_at: Some(100),
            ..outbound("s")
        };
        let joining = MessageRecord {
            wa_id: Some("1".into()),
            bsuid: Some("US.1".into()),
            direction: Some(Direction::Inbound),
            sent_at: Some(200),
            ..outbound("d")
        };
        let contact = ContactView::from_messages(&[on_second, joining.clone()], 300).unwrap();
        let changes = item_changes(None, &joining);
        let documents = write_documents("d", &changes, &joining, Some(&contact), 300, None);
        let views: Vec<(Option<&str>, Option<&str>)> = documents
            .iter()
            .filter_map(|d| d.contact.as_ref())
            .map(|v| (v.channel_id.as_deref(), v.wa_id.as_deref()))
            .collect();
        assert_eq!(views, [(None, Some("1")), (Some("second"), Some("1"))]);
    }

    #[test]
    fn a_contact_view_read_later_without_a_change_has_the_same_id() {
        let inbound = MessageRecord {
            wa_id: Some("1".into()),
            direction: Some(Direction::Inbound),
            sent_at: Some(100),
            ..outbound("m")
        };
        let early = contact_updated(&view_at(std::slice::from_ref(&inbound), 200), 200, 200);
        let expired = contact_updated(
            &view_at(std::slice::from_ref(&inbound), 100 + 2 * 86_400),
            100 + 2 * 86_400,
            200,
        );
        assert_eq!(early.id, expired.id, "the clock alone changes nothing");
        let reply = MessageRecord {
            wa_id: Some("1".into()),
            sent_at: Some(140),
            delivered_at: Some(150),
            ..outbound("r")
        };
        let answered = contact_updated(&view_at(&[inbound, reply], 200), 200, 200);
        assert_ne!(answered.id, early.id);
        let json = serde_json::to_value(&answered).unwrap();
        assert_eq!(json["type"], "contact.updated");
        assert_eq!(json["contact"]["session"]["state"], "active");
        assert_eq!(json["as_of"], "1970-01-01T00:03:20Z");
    }

    #[test]
    fn one_window_document_per_window_and_kind() {
        let inbound = MessageRecord {
            wa_id: Some("1".into()),
            direction: Some(Direction::Inbound),
            sent_at: Some(100),
            ..outbound("m")
        };
        let view = view_at(&[inbound], 1_000);
        let end = 100 + 86_400;
        let closing = window_document(ChangeType::WindowClosing, &view, end, end - 3_600, 1_000);
        let again = window_document(ChangeType::WindowClosing, &view, end, end - 3_600, 5_000);
        let closed = window_document(ChangeType::WindowClosed, &view, end, end, end);
        assert_eq!(closing.id, again.id);
        assert_ne!(closing.id, closed.id);
        let moved = window_document(ChangeType::WindowClosing, &view, end + 60, end, 1_000);
        assert_ne!(closing.id, moved.id);
    }

    fn schema() -> jsonschema::Validator {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../docs/changes.schema.json")).unwrap();
        jsonschema::draft202012::new(&schema).expect("a valid JSON Schema")
    }

    fn assert_valid(validator: &jsonschema::Validator, document: &serde_json::Value) {
        let errors: Vec<String> = validator
            .iter_errors(document)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{document}: {errors:?}");
    }

    /// Every kind of document this module writes is valid against `docs/changes.schema.json`,
    /// and the schema refuses what is not a document.
    #[test]
    fn every_document_matches_the_published_schema() {
        let validator = schema();
        let message = MessageRecord {
            wa_id: Some("1".into()),
            sent_at: Some(10),
            failure: Some(Failure {
                at: 11,
                code: Some("131026".into()),
                detail: Some("Message undeliverable".into()),
            }),
            ..outbound("m")
        };
        for change in item_changes(None, &message) {
            let document = message_updated("m", &change, &message, 12);
            assert_valid(&validator, &serde_json::to_value(&document).unwrap());
        }
        let inbound = MessageRecord {
            direction: Some(Direction::Inbound),
            ..message.clone()
        };
        let view = view_at(&[message, inbound], 20);
        let end = 10 + 86_400;
        for document in [
            contact_updated(&view, 20, 20),
            window_document(
                ChangeType::WindowClosing,
                &view,
                end,
                end - 3_600,
                end - 3_600,
            ),
            window_document(ChangeType::WindowClosed, &view, end, end, end),
        ] {
            assert_valid(&validator, &serde_json::to_value(&document).unwrap());
        }
        let mut wrong = serde_json::to_value(contact_updated(&view, 20, 20)).unwrap();
        wrong["fact"] = "read".into();
        assert!(
            !validator.is_valid(&wrong),
            "a contact document has no fact"
        );
        wrong = serde_json::to_value(contact_updated(&view, 20, 20)).unwrap();
        wrong["id"] = "42".into();
        assert!(
            !validator.is_valid(&wrong),
            "ids are chg_ and 32 hex digits"
        );
    }

    /// The examples in `docs/changes.md` are real documents.
    #[test]
    fn the_documented_examples_match_the_schema() {
        let validator = schema();
        let doc = include_str!("../docs/changes.md");
        let mut examples = 0;
        for block in doc.split("```json").skip(1) {
            let body = block.split("```").next().unwrap_or_default();
            let example: serde_json::Value =
                serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
            if example.get("id").is_some() && example.get("type").is_some() {
                assert_valid(&validator, &example);
                examples += 1;
            }
        }
        assert!(examples >= 4, "an example of every type ({examples} found)");
    }

    /// A write of one event to the item `m`: its home write (facts, and some of the ids and
    /// contact names an event may carry), or an edge write (another event filed elsewhere names
    /// `m`: ids and contact names only, no direction), as `message_items::plan` writes them.
    fn any_write() -> impl Strategy<Value = MessageRecord> {
        let time = || proptest::option::of(1i64..40);
        let names = (
            proptest::option::of(Just("local-1")),
            proptest::option::of(Just("14155550101")),
            proptest::option::of(Just("US.1")),
        );
        (
            (time(), time(), time()),
            proptest::option::of(prop_oneof![Just("a"), Just("b")]),
            proptest::option::of((
                1i64..40,
                proptest::option::of(prop_oneof![Just("x"), Just("y")]),
            )),
            names,
            any::<bool>(),
        )
            .prop_map(
                |((sent, delivered, read), template, failure, (local, wa_id, bsuid), edge)| {
                    let identity = MessageRecord {
                        id: Some("m".into()),
                        local_message_id: local.map(str::to_owned),
                        wa_id: wa_id.map(str::to_owned),
                        bsuid: bsuid.map(str::to_owned),
                        ..MessageRecord::default()
                    };
                    if edge {
                        return identity;
                    }
                    MessageRecord {
                        sent_at: sent,
                        delivered_at: delivered,
                        read_at: read,
                        template_name: template.map(str::to_owned),
                        failure: failure.map(|(at, code)| Failure {
                            at,
                            code: code.map(str::to_owned),
                            detail: None,
                        }),
                        direction: Some(Direction::Outbound),
                        ..identity
                    }
                },
            )
    }

    proptest! {
        /// Whatever order writes come in (edge writes before the item's first home write
        /// included): every fact of the final item was announced with its final value, every
        /// announced value was written by someone, and writing anything again announces nothing.
        #[test]
        fn the_final_facts_are_always_announced(
            writes in proptest::collection::vec(any_write(), 1..8),
        ) {
            let mut item: Option<MessageRecord> = None;
            let mut announced: Vec<FactChange> = Vec::new();
            for write in &writes {
                let mut after = item.clone().unwrap_or_default();
                after.merge(write);
                announced.extend(item_changes(item.as_ref(), &after));
                item = Some(after);
            }
            let last = item.unwrap();
            for change in item_changes(None, &last) {
                prop_assert!(announced.contains(&change), "{change:?} never announced");
            }
            // What a write states, read as the facts of a message (an edge's ids and names too).
            let states = |write: &MessageRecord, change: &FactChange| {
                let as_message = MessageRecord { direction: Some(Direction::Outbound), ..write.clone() };
                item_changes(None, &as_message).contains(change)
            };
            for change in &announced {
                let stated = writes.iter().any(|w| states(w, change));
                prop_assert!(stated, "{change:?} was never written");
            }
            for write in &writes {
                let mut again = last.clone();
                again.merge(write);
                prop_assert!(item_changes(Some(&last), &again).is_empty());
            }
        }
    }
}
