//! The state store contract: both backends end in the state the pure model computes, for any
//! arrival order and any number of duplicates.

use std::collections::BTreeMap;

use serde_json::Value;
use wati_ingest::event::WatiEvent;
use wati_ingest::message::{MessageRecord, MessageView};
use wati_ingest::ports::QueuedEvent;
use wati_ingest::processor::{self, Applied};
use wati_ingest::session::{ContactView, SessionState};

use crate::support::Backend;

const T0: i64 = 1_764_238_453;
/// A reading time inside the fixtures' sessions, so "active" is observable.
pub(crate) const NOW: i64 = T0 + 3_600;
pub(crate) const CONTACTS: [&str; 5] = [
    "14155550101",
    "14155550102",
    "US.13491208655302741918",
    "14155550104",
    "US.99900000000000000004",
];

pub(crate) fn fixture_facts() -> Vec<MessageRecord> {
    crate::fixtures()
        .iter()
        .filter_map(|body| MessageRecord::from_event(&WatiEvent::parse(body).unwrap(), T0))
        .collect()
}

/// The expected views, computed by the pure model alone.
fn oracle(facts: &[MessageRecord]) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    oracle_at(facts, NOW)
}

/// The model's views of `facts` as seen at `now`.
pub(crate) fn oracle_at(
    facts: &[MessageRecord],
    now: i64,
) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let mut messages: BTreeMap<String, MessageRecord> = BTreeMap::new();
    for fact in facts {
        let id = fact.id.clone().expect("fixtures carry Wati ids");
        messages.entry(id).or_default().merge(fact);
    }
    let views = messages
        .iter()
        .map(|(id, record)| {
            (
                id.clone(),
                serde_json::to_value(MessageView::from(record)).unwrap(),
            )
        })
        .collect();
    let all: Vec<MessageRecord> = messages.into_values().collect();
    let contacts = CONTACTS
        .iter()
        .map(|contact| {
            let names: Vec<&str> = match *contact {
                "14155550104" | "US.99900000000000000004" => {
                    vec!["14155550104", "US.99900000000000000004"]
                }
                other => vec![other],
            };
            let mine: Vec<MessageRecord> = all
                .iter()
                .filter(|m| {
                    names
                        .iter()
                        .any(|n| m.contact() == Some(n) || m.bsuid.as_deref() == Some(n))
                })
                .cloned()
                .collect();
            let view = ContactView::from_messages(&mine, now).expect("known contact");
            (contact.to_string(), serde_json::to_value(view).unwrap())
        })
        .collect();
    (views, contacts)
}

async fn observed(
    backend: &Backend,
    ids: impl Iterator<Item = &String>,
) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let state = backend.state();
    let mut messages = BTreeMap::new();
    for id in ids {
        let record = state
            .message(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{id} missing"));
        messages.insert(
            id.clone(),
            serde_json::to_value(MessageView::from(&record)).unwrap(),
        );
    }
    let mut contacts = BTreeMap::new();
    for contact in CONTACTS {
        let view = state.contact(contact, NOW).await.unwrap().expect(contact);
        contacts.insert(contact.to_owned(), serde_json::to_value(view).unwrap());
    }
    (messages, contacts)
}

pub(crate) fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        items.swap(i, (seed >> 33) as usize % (i + 1));
    }
}

contract!(any_order_and_duplicates_match_the_model);
/// In order, reversed, and shuffled with duplicates: the backend's views equal the model's.
async fn any_order_and_duplicates_match_the_model(kind_of: Backend) {
    let facts = fixture_facts();
    let (expected_messages, expected_contacts) = oracle(&facts);
    let kind = match kind_of {
        Backend::Embedded { .. } => "embedded",
        Backend::Aws { .. } => "aws",
    };
    let mut orders = vec![facts.clone()];
    let mut reversed = facts.clone();
    reversed.reverse();
    orders.push(reversed);
    for seed in [3u64, 11, 2026] {
        let mut delivered = facts.clone();
        delivered.extend(facts.iter().step_by(2).cloned());
        shuffle(&mut delivered, seed);
        orders.push(delivered);
    }
    for (n, order) in orders.iter().enumerate() {
        let backend = if kind == "embedded" {
            Backend::embedded().await
        } else {
            Backend::aws().await
        };
        for fact in order {
            backend.state().apply(fact, None).await.unwrap();
        }
        let (messages, contacts) = observed(&backend, expected_messages.keys()).await;
        assert_eq!(messages, expected_messages, "order {n}");
        assert_eq!(contacts, expected_contacts, "order {n}");
    }
    // Sanity: the model itself says what the fixtures README says.
    assert_eq!(
        expected_messages["6734a1b2c3d4e5f601000003"]["status"],
        "replied"
    );
    assert_eq!(
        expected_contacts["14155550101"]["session"]["state"],
        "active"
    );
}

contract!(a_message_is_found_by_every_id);
/// Wati's id, the wamid and the local id all lead to the same message.
async fn a_message_is_found_by_every_id(backend: Backend) {
    for fact in fixture_facts() {
        backend.state().apply(&fact, None).await.unwrap();
    }
    let state = backend.state();
    let by_id = state
        .message("6734a1b2c3d4e5f601000003")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        state
            .message("wamid.OUT000000000000000000000003")
            .await
            .unwrap(),
        Some(by_id.clone())
    );
    assert_eq!(state.message("local-0003").await.unwrap(), Some(by_id));
    assert_eq!(state.message("nope").await.unwrap(), None);
    assert!(state.contact("19999999999", NOW).await.unwrap().is_none());
}

contract!(a_message_first_known_by_wamid_joins_its_message);
/// A status naming only the wamid, then the send naming Wati's id: one message with both facts.
async fn a_message_first_known_by_wamid_joins_its_message(backend: Backend) {
    let state = backend.state();
    let read =
        br#"{"eventType":"sentMessageREAD","whatsappMessageId":"wamid.ORPHAN","timestamp":"1700000200"}"#;
    let sent = br#"{"eventType":"sessionMessageSent","id":"m-orphan","whatsappMessageId":"wamid.ORPHAN","waId":"15550001111","timestamp":"1700000100"}"#;
    for body in [&read[..], &sent[..]] {
        let facts =
            MessageRecord::from_event(&WatiEvent::parse(body).unwrap(), 1_700_000_300).unwrap();
        state.apply(&facts, None).await.unwrap();
    }
    let message = state
        .message("m-orphan")
        .await
        .unwrap()
        .expect("filed under Wati's id");
    assert_eq!(
        (message.sent_at, message.read_at),
        (Some(1_700_000_100), Some(1_700_000_200))
    );
    assert_eq!(state.message("wamid.ORPHAN").await.unwrap(), Some(message));
    let contact = state
        .contact("15550001111", 1_700_000_300)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        contact.default.session.business_messages, 1,
        "one message, not two"
    );
}

/// Applies one webhook body through the processor, as received at `received_at`.
pub(crate) async fn process(backend: &Backend, key: &str, body: &str, received_at: i64) -> Applied {
    let queued = QueuedEvent {
        key: key.to_owned(),
        received_at,
        body: body.to_owned(),
        ..Default::default()
    };
    processor::apply(backend.state(), &queued).await.unwrap()
}

const SENT: &str = r#"{"eventType":"sessionMessageSent","id":"R1","whatsappMessageId":"wamid.R1","waId":"14155550101","timestamp":"1700000100"}"#;

contract!(an_event_that_contradicts_a_message_is_refused_whole);
/// One rule on both backends: an event that would give a message a second phone number, a
/// second wamid, or its wamid a second Wati id is quarantined (body kept) and nothing of it is
/// applied. Expected values are written out, not computed.
async fn an_event_that_contradicts_a_message_is_refused_whole(backend: Backend) {
    let t = 1_700_000_500;
    assert!(matches!(
        process(&backend, "k-sent", SENT, t).await,
        Applied::Message { .. }
    ));
    let forged = r#"{"eventType":"sentMessageREAD","id":"X","whatsappMessageId":"wamid.R1","waId":"0","timestamp":"0"}"#;
    let other_phone = r#"{"eventType":"sessionMessageSent_v2","id":"R1","waId":"14155550999","localMessageId":"l-1","timestamp":"1700000101"}"#;
    let other_wamid = r#"{"eventType":"sentMessageDELIVERED","id":"R1","whatsappMessageId":"wamid.OTHER","timestamp":"1700000102"}"#;
    for (key, body) in [
        ("k-forged", forged),
        ("k-phone", other_phone),
        ("k-wamid", other_wamid),
    ] {
        let applied = process(&backend, key, body, t).await;
        assert!(
            matches!(&applied, Applied::Quarantined { reason } if reason.contains("contradicts")),
            "{key}: {applied:?}"
        );
        let kept = backend.state().quarantined(key).await.unwrap().expect(key);
        assert_eq!(kept.body, body.as_bytes(), "{key}: the body is kept");
    }
    let state = backend.state();
    for id in ["R1", "wamid.R1"] {
        let message = state.message(id).await.unwrap().expect(id);
        assert_eq!(message.id.as_deref(), Some("R1"));
        assert_eq!(message.whatsapp_message_id.as_deref(), Some("wamid.R1"));
        assert_eq!(message.wa_id.as_deref(), Some("14155550101"));
        assert_eq!(
            message.local_message_id, None,
            "nothing of a refused event is applied"
        );
        assert_eq!(
            (message.sent_at, message.read_at, message.delivered_at),
            (Some(1_700_000_100), None, None)
        );
    }
    for id in ["X", "wamid.OTHER", "l-1"] {
        assert_eq!(state.message(id).await.unwrap(), None, "{id}");
    }
    let contact = state.contact("14155550101", t).await.unwrap().unwrap();
    assert_eq!(contact.default.wa_id.as_deref(), Some("14155550101"));
    assert!(state.contact("0", t).await.unwrap().is_none());
}

contract!(twins_in_quarantine_keep_both_bodies);
/// The receiver sends a v1/v2 twin under the key its body names, before the ledger can tell it
/// is one: two bodies under one key both reach quarantine whole (the second under its variant
/// key), in either order and however often each comes. Keys and variant keys written out.
async fn twins_in_quarantine_keep_both_bodies(backend: Backend) {
    let t = 1_700_000_500;
    process(&backend, "k-sent", SENT, t).await;
    // Both contradict the stored message (a second phone number); v2 adds a local id.
    let v1 = r#"{"eventType":"sessionMessageSent","id":"R1","waId":"14155550999","timestamp":"1700000101"}"#;
    let v2 = r#"{"eventType":"sessionMessageSent_v2","id":"R1","waId":"14155550999","localMessageId":"l-1","timestamp":"1700000101"}"#;
    let key = "sessionMessageSent:R1";
    for body in [v2, v1, v2, v1] {
        let applied = process(&backend, key, body, t).await;
        assert!(
            matches!(applied, Applied::Quarantined { .. }),
            "{applied:?}"
        );
    }
    let state = backend.state();
    let at_key = state
        .quarantined(key)
        .await
        .unwrap()
        .expect("under the key");
    assert_eq!(at_key.body, v2.as_bytes(), "the first body keeps the key");
    // sha256 of v1's body, its first 16 hex digits (computed once with sha256sum).
    let variant = "sessionMessageSent:R1:variant:67332179e4b8dd24";
    let at_variant = state.quarantined(variant).await.unwrap().expect("variant");
    assert_eq!(at_variant.body, v1.as_bytes());
    let v2_variant = "sessionMessageSent:R1:variant:0e0ef616b14e1dd3";
    assert_eq!(
        state.quarantined(v2_variant).await.unwrap(),
        None,
        "the same body again is the same record"
    );
}

contract!(a_quarantined_body_keeps_its_first_record);
/// The same body quarantined again (a redelivery, a replay, another reason) leaves the first
/// record whole, reason and receipt included; the same for a twin's variant.
async fn a_quarantined_body_keeps_its_first_record(backend: Backend) {
    let state = backend.state();
    let body = r#"{"eventType":"sessionMessageSent","id":"Q1"}"#;
    let twin = r#"{"eventType":"sessionMessageSent_v2","id":"Q1","localMessageId":"l"}"#;
    for (at, reason) in [(100, "first reason"), (200, "second reason")] {
        for kept in [body, twin] {
            state
                .quarantine(&QueuedEvent::archived("k:q1", at, kept), reason)
                .await
                .unwrap();
        }
    }
    let first = state.quarantined("k:q1").await.unwrap().expect("kept");
    assert_eq!(
        (
            first.reason.as_str(),
            first.received_at,
            first.body.as_slice()
        ),
        ("first reason", 100, body.as_bytes())
    );
    let variant = wati_ingest::event::variant_key("k:q1", twin.as_bytes());
    let second = state.quarantined(&variant).await.unwrap().expect("variant");
    assert_eq!(
        (
            second.reason.as_str(),
            second.received_at,
            second.body.as_slice()
        ),
        ("first reason", 100, twin.as_bytes())
    );
}

contract!(conflicting_facts_keep_the_least_value_whole);
/// Values that are not identities may differ between events: each keeps its least value (the
/// earliest time; the earliest failure with its own code and detail, never mixed).
async fn conflicting_facts_keep_the_least_value_whole(backend: Backend) {
    let t = 1_700_000_500;
    let bodies = [
        r#"{"eventType":"templateMessageSent","id":"R2","whatsappMessageId":"wamid.R2","waId":"14155550102","templateName":"welcome_b","timestamp":"1700000100"}"#,
        r#"{"eventType":"templateMessageSent_v2","id":"R2","whatsappMessageId":"wamid.R2","localMessageId":"l-2","waId":"14155550102","templateName":"welcome_a","timestamp":"1700000100"}"#,
        r#"{"eventType":"templateMessageFailed","id":"R2","failedCode":"131026","failedDetail":"undeliverable","timestamp":"1700000130"}"#,
        r#"{"eventType":"templateMessageFailed","localMessageId":"l-2","timestamp":"1700000120"}"#,
        r#"{"eventType":"sentMessageDELIVERED","whatsappMessageId":"wamid.R2","timestamp":"1700000160"}"#,
        r#"{"eventType":"sentMessageDELIVERED_v2","id":"R2","whatsappMessageId":"wamid.R2","localMessageId":"l-2","timestamp":"1700000150"}"#,
    ];
    for (n, body) in bodies.iter().enumerate().rev() {
        let applied = process(&backend, &format!("k{n}"), body, t).await;
        assert!(
            matches!(applied, Applied::Message { .. }),
            "{n}: {applied:?}"
        );
    }
    for id in ["R2", "wamid.R2", "l-2"] {
        let message = backend.state().message(id).await.unwrap().expect(id);
        assert_eq!(
            message.template_name.as_deref(),
            Some("welcome_a"),
            "by {id}"
        );
        assert_eq!(message.delivered_at, Some(1_700_000_150), "by {id}");
        let failure = message.failure.expect("failed");
        assert_eq!(
            (failure.at, failure.code, failure.detail),
            (1_700_000_120, None, None),
            "by {id}: the earliest failure, whole"
        );
    }
}

contract!(a_bsuid_contact_that_learns_its_phone_is_one_contact);
/// Messages first known by BSUID, then one naming the phone number too: read by either name,
/// one contact with all of them; `wa_id` is the phone number (null before it is known).
async fn a_bsuid_contact_that_learns_its_phone_is_one_contact(backend: Backend) {
    let t = 1_700_000_500;
    let first = r#"{"eventType":"message_bsuid","id":"B1","whatsappMessageId":"wamid.B1","bsuid":"US.1","owner":false,"timestamp":"1700000100"}"#;
    assert!(matches!(
        process(&backend, "kb1", first, t).await,
        Applied::Message { .. }
    ));
    let state = backend.state();
    let before = state.contact("US.1", t).await.unwrap().unwrap();
    assert_eq!(
        (before.default.wa_id, before.default.bsuid.as_deref()),
        (None, Some("US.1"))
    );
    let later = r#"{"eventType":"sessionMessageSent_bsuid","id":"B2","whatsappMessageId":"wamid.B2","bsuid":"US.1","waId":"14155550107","timestamp":"1700000200"}"#;
    assert!(matches!(
        process(&backend, "kb2", later, t).await,
        Applied::Message { .. }
    ));
    let read = r#"{"eventType":"sentMessageREAD","id":"B2","timestamp":"1700000300"}"#;
    assert!(matches!(
        process(&backend, "kb3", read, t).await,
        Applied::Message { .. }
    ));
    for name in ["14155550107", "US.1"] {
        let view = state.contact(name, t).await.unwrap().expect(name);
        assert_eq!(
            view.default.wa_id.as_deref(),
            Some("14155550107"),
            "by {name}"
        );
        assert_eq!(view.default.bsuid.as_deref(), Some("US.1"), "by {name}");
        assert_eq!(
            view.default.last_inbound_at.0,
            Some(1_700_000_100),
            "by {name}"
        );
        assert_eq!(view.default.session.customer_messages, 1, "by {name}");
        assert_eq!(view.default.session.business_messages, 1, "by {name}");
    }
}

contract!(incredible_timestamps_are_dated_by_their_receipt);
/// A status dated a month ahead, `"0"` and year 10000 are dated by their receipt on both
/// backends: the session that is open now stays visible and no time renders as null.
async fn incredible_timestamps_are_dated_by_their_receipt(backend: Backend) {
    let t = 1_700_000_500;
    let bodies = [
        r#"{"eventType":"message","id":"T1","waId":"14155550108","owner":false,"timestamp":"1700000100"}"#,
        r#"{"eventType":"sessionMessageSent","id":"T2","waId":"14155550108","timestamp":"1700000200"}"#,
        r#"{"eventType":"sentMessageDELIVERED","id":"T2","timestamp":"1702592500"}"#,
        r#"{"eventType":"sentMessageREAD","id":"T2","timestamp":"0"}"#,
        r#"{"eventType":"sentMessageREPLIED","id":"T2","timestamp":"253402300800"}"#,
    ];
    for (n, body) in bodies.iter().enumerate() {
        process(&backend, &format!("kt{n}"), body, t).await;
    }
    let message = backend.state().message("T2").await.unwrap().unwrap();
    assert_eq!(
        (message.delivered_at, message.read_at, message.replied_at),
        (Some(t), Some(t), Some(t))
    );
    let view = backend
        .state()
        .contact("14155550108", t + 60)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.default.session.state, SessionState::Active);
    assert_eq!(view.default.session.started_at.0, Some(1_700_000_100));
    assert!(view.default.window_open);
    assert_eq!(
        view.default.window_expires_at.0,
        Some(1_700_000_100 + 86_400)
    );
}
