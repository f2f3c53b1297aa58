//! The state store contract: both backends end in the state the pure model computes, for any
//! arrival order and any number of duplicates.

use std::collections::BTreeMap;

use serde_json::Value;
use wati_ingest::event::WatiEvent;
use wati_ingest::message::{MessageRecord, MessageView};
use wati_ingest::session::ContactView;

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
            backend.state().apply(fact).await.unwrap();
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
        backend.state().apply(&fact).await.unwrap();
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

contract!(a_message_first_known_by_wamid_is_folded_in);
/// A status naming only the wamid, then the send naming Wati's id: one message with both facts.
async fn a_message_first_known_by_wamid_is_folded_in(backend: Backend) {
    let state = backend.state();
    let read =
        br#"{"eventType":"sentMessageREAD","whatsappMessageId":"wamid.ORPHAN","timestamp":"1700000200"}"#;
    let sent = br#"{"eventType":"sessionMessageSent","id":"m-orphan","whatsappMessageId":"wamid.ORPHAN","waId":"15550001111","timestamp":"1700000100"}"#;
    for body in [&read[..], &sent[..]] {
        let facts = MessageRecord::from_event(&WatiEvent::parse(body).unwrap(), 1_700_000_300).unwrap();
        state.apply(&facts).await.unwrap();
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
    let contact = state.contact("15550001111", 1_700_000_300).await.unwrap().unwrap();
    assert_eq!(contact.session.business_messages, 1, "one message, not two");
}
