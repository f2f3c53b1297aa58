//! The contact summary (`src/contact_summary.rs`) under concurrent, shuffled and repeated
//! events: statuses that name only Meta's id, statuses before their message, v1 and v2 twins,
//! each delivered twice, applied 32 at a time in a random order. Every message's snapshot is
//! filed after its own write from a strongly consistent resolution, so the contact's view must
//! count every message and every delivery. The expected view is written from the session rules
//! by this test, not rendered by the crate.

use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use wati_ingest::ports::QueuedEvent;
use wati_ingest::time::Rfc3339;

use crate::support::Backend;

const T0: i64 = 1_764_000_000;
/// Business messages: one every 10 minutes after the customer's first message.
const OUTBOUND: i64 = 24;
/// The customer's messages after the first: one every 33 minutes.
const REPLIES: i64 = 6;

/// Every event of the history for `contact`, each twice (SQS delivers at least once), shuffled
/// by `seed`.
fn events(contact: &str, seed: u64) -> Vec<Value> {
    let inbound = |n: i64, at: i64| {
        json!({"eventType": "message", "id": format!("{contact}-in{n}"), "owner": false,
            "whatsappMessageId": format!("wamid.{contact}-in{n}"), "waId": contact,
            "timestamp": at.to_string()})
    };
    let mut all = vec![inbound(0, T0)];
    for n in 1..=REPLIES {
        all.push(inbound(n, T0 + n * 1_980));
    }
    for n in 1..=OUTBOUND {
        let at = T0 + n * 600;
        let (id, wamid) = (
            format!("{contact}-out{n}"),
            format!("wamid.{contact}-out{n}"),
        );
        all.push(json!({"eventType": "templateMessageSent", "id": id,
            "whatsappMessageId": wamid, "waId": contact, "timestamp": at.to_string()}));
        // Meta's id alone: filed under its own item until an event names both ids.
        all.push(
            json!({"eventType": "sentMessageDELIVERED", "whatsappMessageId": wamid,
            "timestamp": (at + 30).to_string()}),
        );
        all.push(json!({"eventType": "sentMessageDELIVERED_v2", "id": id,
            "whatsappMessageId": wamid, "localMessageId": format!("{contact}-l{n}"),
            "timestamp": (at + 30).to_string()}));
        all.push(
            json!({"eventType": "sentMessageREAD", "id": id, "whatsappMessageId": wamid,
            "timestamp": (at + 90).to_string()}),
        );
    }
    let mut twice: Vec<Value> = all.iter().chain(all.iter()).cloned().collect();
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    for i in (1..twice.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        twice.swap(i, (state >> 33) as usize % (i + 1));
    }
    twice
}

/// The view the session rules give this history at `now`: the customer opened the session at
/// `T0`; every business message reached the customer 30 s after its send, inside it.
fn expected(contact: &str, now: i64) -> Value {
    let last_inbound = T0 + REPLIES * 1_980;
    json!({
        "wa_id": contact,
        "last_inbound_at": Rfc3339(Some(last_inbound)),
        "last_outbound_at": Rfc3339(Some(T0 + OUTBOUND * 600)),
        "window_open": true,
        "window_expires_at": Rfc3339(Some(last_inbound + 86_400)),
        "session": {
            "state": "active",
            "started_at": Rfc3339(Some(T0)),
            "expires_at": Rfc3339(Some(T0 + 86_400)),
            "business_messages": OUTBOUND,
            "customer_messages": REPLIES + 1,
        },
        "now": now,
    })
}

async fn contact_views_count_every_message_whatever_the_interleaving(backend: Backend) {
    let now = T0 + OUTBOUND * 600 + 3_600;
    for seed in 0..3u64 {
        let contact = format!("1415555097{seed}");
        let bodies = events(&contact, seed);
        let state = backend.state();
        stream::iter(bodies.iter().enumerate())
            .for_each_concurrent(32, |(n, body)| async move {
                // Received by now: a timestamp after its receipt would be taken as the receipt.
                let queued = QueuedEvent::archived(format!("k{n}"), now, body.to_string());
                let mut attempts = 0;
                while let Err(error) = wati_ingest::processor::apply(state, &queued).await {
                    attempts += 1;
                    assert!(attempts < 20, "{error:?}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            })
            .await;
        let view = state.contact(&contact, now).await.unwrap().expect("a view");
        let view = serde_json::to_value(view).unwrap();
        let read = json!({
            "wa_id": view["wa_id"],
            "last_inbound_at": view["last_inbound_at"],
            "last_outbound_at": view["last_outbound_at"],
            "window_open": view["window_open"],
            "window_expires_at": view["window_expires_at"],
            "session": {
                "state": view["session"]["state"],
                "started_at": view["session"]["started_at"],
                "expires_at": view["session"]["expires_at"],
                "business_messages": view["session"]["business_messages"],
                "customer_messages": view["session"]["customer_messages"],
            },
            "now": now,
        });
        assert_eq!(read, expected(&contact, now), "seed {seed}");
    }
}
contract!(contact_views_count_every_message_whatever_the_interleaving);

/// A message first reported sent (and delivered) at `T2`, then, after another message, reported
/// sent three days earlier (a twin with Wati's clock elsewhere): it was sent at the earlier
/// time, before the 48 hours the view reads, so the view is the other message's alone. Its
/// first snapshot, filed under `T2`'s bucket, must not make it count as sent then: the later
/// snapshots are filed under every sent time's bucket.
async fn a_send_reported_again_three_days_earlier_leaves_the_view(backend: Backend) {
    let contact = "14155550980";
    let t2 = T0 + 10 * 86_400;
    let t1 = t2 - 3 * 86_400;
    let other_sent = t2 + 3_600;
    let now = t2 + 7_200;
    let sent = |id: &str, at: i64| {
        json!({"eventType": "templateMessageSent", "id": id,
            "whatsappMessageId": format!("wamid.{id}"), "waId": contact,
            "timestamp": at.to_string()})
    };
    let delivered = |id: &str, at: i64| {
        json!({"eventType": "sentMessageDELIVERED", "id": id,
            "whatsappMessageId": format!("wamid.{id}"), "timestamp": at.to_string()})
    };
    let bodies = [
        sent("moved", t2),
        delivered("moved", t2 + 30),
        sent("other", other_sent),
        delivered("other", other_sent + 30),
        sent("moved", t1),
    ];
    for (n, body) in bodies.iter().enumerate() {
        let queued = QueuedEvent::archived(format!("k{n}"), now, body.to_string());
        wati_ingest::processor::apply(backend.state(), &queued)
            .await
            .unwrap();
    }
    let view = backend
        .state()
        .contact(contact, now)
        .await
        .unwrap()
        .expect("a view");
    let view = serde_json::to_value(view).unwrap();
    assert_eq!(view["last_outbound_at"], json!(Rfc3339(Some(other_sent))));
    assert_eq!(
        view["session"],
        json!({
            "state": "inactive",
            "started_at": Rfc3339(Some(other_sent + 30)),
            "expires_at": Rfc3339(Some(other_sent + 30 + 86_400)),
            "business_messages": 1,
            "customer_messages": 0,
        })
    );
}
contract!(a_send_reported_again_three_days_earlier_leaves_the_view);

/// Twins of one customer message that add only a name (its BSUID) or only the business number
/// change no fact a document carries, yet the view on that number must show the message, by its
/// phone number and by its BSUID, in every order. No event names both: on DynamoDB the item is
/// filed under the number alone, and only the link the processor writes once the message shows
/// both names lets a read by the BSUID find it. A later message is the contact's latest, so
/// the twins' message is read from the summary, not from its items (planted: the business
/// number left out of the stored snapshot, and both stores fail).
async fn a_twin_adding_only_a_name_or_a_number_reaches_the_view(backend: Backend) {
    let now = T0 + 3_600;
    for order in 0..3 {
        let contact = format!("1415555099{order}");
        let bsuid = format!("US.1349120865530274{order}");
        let id = format!("{contact}-in");
        let at = T0.to_string();
        let mut bodies = [
            json!({"eventType": "message", "id": id, "owner": false, "waId": contact,
                "timestamp": at}),
            json!({"eventType": "message", "id": id, "owner": false, "bsuid": bsuid,
                "timestamp": at}),
            json!({"eventType": "message", "id": id, "owner": false, "waId": contact,
                "channelPhoneNumber": "14155550000", "timestamp": at}),
        ];
        bodies.rotate_left(order);
        let later = json!({"eventType": "message", "id": format!("{contact}-later"),
            "owner": false, "waId": contact, "timestamp": (T0 + 600).to_string()});
        for (n, body) in std::iter::once(&later).chain(&bodies).enumerate() {
            let queued = QueuedEvent::archived(format!("k{n}"), now, body.to_string());
            wati_ingest::processor::apply(backend.state(), &queued)
                .await
                .unwrap();
        }
        for name in [&contact, &bsuid] {
            let view = backend.state().contact(name, now).await.unwrap();
            let view = serde_json::to_value(view.expect("a view by each name")).unwrap();
            assert_eq!(
                (
                    &view["last_inbound_at"],
                    &view["channel_phone_number"],
                    &view["session"]["customer_messages"]
                ),
                (
                    &json!(Rfc3339(Some(T0 + 600))),
                    &json!("14155550000"),
                    &json!(2)
                ),
                "order {order}, by {name}"
            );
        }
    }
}
contract!(a_twin_adding_only_a_name_or_a_number_reaches_the_view);
