//! `erase-contact` on both backends: everything kept about one contact is gone (its messages by
//! every id, its contact view by either name, its archived, quarantined and, locally, queued
//! bodies and change documents), another contact's is untouched, and a second run finds nothing.
//! The expectations are the rules themselves (which ids, names and bodies are the contact's),
//! not the crate's matcher.

use std::sync::Arc;

use wati_ingest::erasure::erase_contact;
use wati_ingest::event::{idempotency_key, WatiEvent};
use wati_ingest::ports::{ChangeFeed, Ledger, Queue, QueuedEvent};
use wati_ingest::processor::{process, Archive};
use wati_ingest::receiver::{Receipt, Receiver, ReceiverSettings};
use wati_ingest::time::now_unix;

use crate::support::Backend;

/// One contact's traffic: an inbound message naming both its names, a template it was sent,
/// that template's delivery (naming only the message), and a broken body naming its number.
struct Traffic {
    number: &'static str,
    bsuid: &'static str,
    /// Every id of its messages.
    message_ids: [&'static str; 4],
    bodies: Vec<Vec<u8>>,
    broken: Vec<u8>,
    /// A body the processor quarantines (a failure it cannot apply), naming a message id only.
    unusable: String,
}

fn traffic(tag: &str, number: &'static str, bsuid: &'static str) -> Traffic {
    let now = now_unix();
    let leak: &'static str = Box::leak(tag.to_owned().into_boxed_str());
    let id =
        |suffix: &str| -> &'static str { Box::leak(format!("{leak}-{suffix}").into_boxed_str()) };
    let (inbound, inbound_wamid, outbound, outbound_wamid) =
        (id("in-1"), id("wamid-in-1"), id("out-1"), id("wamid-out-1"));
    let bodies = vec![
        format!(
            r#"{{"eventType":"message","id":"{inbound}","whatsappMessageId":"{inbound_wamid}","waId":"{number}","bsuid":"{bsuid}","text":"my address is 1 Main St","owner":false,"timestamp":"{}"}}"#,
            now - 3600
        ),
        format!(
            r#"{{"eventType":"templateMessageSent","id":"{outbound}","whatsappMessageId":"{outbound_wamid}","waId":"{number}","templateName":"welcome","owner":true,"timestamp":"{}"}}"#,
            now - 1800
        ),
        format!(
            r#"{{"eventType":"sentMessageDELIVERED","id":"{outbound}","timestamp":"{}"}}"#,
            now - 1700
        ),
    ];
    Traffic {
        number,
        bsuid,
        message_ids: [inbound, inbound_wamid, outbound, outbound_wamid],
        bodies: bodies.into_iter().map(String::into_bytes).collect(),
        broken: format!(r#"{{"waId":"{number}", "text": "cut off"#).into_bytes(),
        unusable: format!(
            r#"{{"eventType":"sentMessageFAILED","id":"{outbound}","failedCode":"131026"}}"#
        ),
    }
}

/// Receives, queues and applies `traffic`; returns the keys of its archived and quarantined
/// bodies.
async fn deliver(backend: &Backend, traffic: &Traffic) -> (Vec<String>, Vec<String>) {
    let (ledger, queue): (Arc<dyn Ledger>, Arc<dyn Queue>) = match backend {
        Backend::Embedded { store, .. } => (Arc::new(store.clone()), Arc::new(store.clone())),
        Backend::Aws { ledger, queue, .. } => (Arc::new(ledger.clone()), Arc::new(queue.clone())),
    };
    let receiver = Receiver::new(ledger.clone(), queue, ReceiverSettings::default());
    let mut archived = Vec::new();
    for body in &traffic.bodies {
        assert!(matches!(
            receiver.receive(body).await.0,
            Receipt::Accepted { .. }
        ));
        archived.push(idempotency_key(&WatiEvent::parse(body).unwrap(), body));
    }
    let Receipt::Quarantined { key: broken } = receiver.receive(&traffic.broken).await.0 else {
        panic!("a broken body is quarantined")
    };
    let archive = Archive::new(ledger, 7 * 86_400);
    for queued in backend.drain_queue().await {
        process(backend.state(), &archive, &queued)
            .await
            .expect("applied");
    }
    let unusable_key = format!("unusable-{}", traffic.number);
    let unusable =
        QueuedEvent::archived(unusable_key.clone(), now_unix(), traffic.unusable.clone());
    backend
        .state()
        .quarantine(&unusable, "cannot be applied")
        .await
        .unwrap();
    (archived, vec![broken, unusable_key])
}

/// What is kept about `traffic`'s contact: (messages found by id, contact views found by name,
/// archived bodies, quarantined bodies).
async fn kept(
    backend: &Backend,
    traffic: &Traffic,
    keys: &(Vec<String>, Vec<String>),
) -> [usize; 4] {
    let mut messages = 0;
    for id in traffic.message_ids {
        messages += usize::from(backend.state().message(id).await.unwrap().is_some());
    }
    let mut contacts = 0;
    for name in [traffic.number, traffic.bsuid] {
        contacts += usize::from(
            backend
                .state()
                .contact(name, now_unix())
                .await
                .unwrap()
                .is_some(),
        );
    }
    let mut archived = 0;
    for key in &keys.0 {
        archived += usize::from(backend.ledger().archived(key).await.unwrap().is_some());
    }
    let mut quarantined = 0;
    for key in &keys.1 {
        quarantined += backend
            .quarantines()
            .quarantined_under(key)
            .await
            .unwrap()
            .len();
    }
    [messages, contacts, archived, quarantined]
}

async fn a_contact_is_erased_and_no_other(backend: Backend) {
    let alice = traffic("erase-alice", "14155550101", "US.11111111111111111111");
    let bob = traffic("erase-bob", "14155550199", "US.22222222222222222222");
    let alice_keys = deliver(&backend, &alice).await;
    let bob_keys = deliver(&backend, &bob).await;
    let everything = [4, 2, 3, 2];
    assert_eq!(kept(&backend, &alice, &alice_keys).await, everything);
    assert_eq!(kept(&backend, &bob, &bob_keys).await, everything);

    // Erased by its BSUID: its phone number, linked to it, goes too.
    let (ids, erased) = erase_contact(backend.erasure(), alice.bsuid).await.unwrap();
    assert_eq!(ids.names.len(), 2, "{ids:?}");
    assert_eq!(ids.message_ids.len(), 4, "{ids:?}");
    assert_eq!(erased.ledger, 3, "{erased:?}");
    assert_eq!(erased.quarantined, 2, "{erased:?}");
    assert_eq!(kept(&backend, &alice, &alice_keys).await, [0; 4]);
    assert_eq!(
        kept(&backend, &bob, &bob_keys).await,
        everything,
        "the other contact"
    );

    if let Backend::Embedded { store, .. } = &backend {
        let documents: Vec<String> = store
            .changes_after(0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|entry| entry.document)
            .collect();
        assert!(!documents
            .iter()
            .any(|d| d.contains(alice.number) || d.contains("erase-alice")));
        assert!(
            documents.iter().any(|d| d.contains(bob.number)),
            "the other's changes stay"
        );
    }

    // Nothing left to find; erasing by the phone number now finds nothing either.
    let (_, again) = erase_contact(backend.erasure(), alice.bsuid).await.unwrap();
    assert_eq!(again.total(), 0, "{again:?}");
    let (_, by_number) = erase_contact(backend.erasure(), alice.number)
        .await
        .unwrap();
    assert_eq!(by_number.total(), 0, "{by_number:?}");
}

contract!(a_contact_is_erased_and_no_other);
