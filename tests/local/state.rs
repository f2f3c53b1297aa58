//! What a reader sees after Wati's callbacks: exact statuses and sessions, whatever the order.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{
    fixture, fixtures, message_id, rfc3339, shifted, spawn_app, Fixture, TestApp,
};

const A: &str = "14155550101";
const B: &str = "14155550102";
const C_BSUID: &str = "US.13491208655302741918";
const D: &str = "14155550104";
const D_BSUID: &str = "US.99900000000000000004";
/// The account's default business number and its second one (fixtures 24-26).
const DEFAULT_NUMBER: &str = "14155550000";
const SECOND_NUMBER: &str = "14155550200";
const SECOND_CHANNEL_ID: &str = "6734a09f1c2b3a4d5e6f7c02";

async fn message(app: &TestApp, id: &str) -> Value {
    let (status, body) = app.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{id}: {body}");
    body
}

async fn contact(app: &TestApp, id: &str) -> Value {
    let (status, body) = app.get(&format!("/v1/contacts/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{id}: {body}");
    body
}

/// The fixture scenario ends in the state tests/fixtures/README.md describes.
#[tokio::test]
async fn fixtures_end_in_the_documented_state() {
    let app = spawn_app().await;
    app.post_all(&fixtures()).await;
    app.wait_until_applied().await;

    let replied = message(&app, &message_id(3)).await;
    assert_eq!(replied["status"], "replied");
    assert_eq!(replied["direction"], "outbound");
    assert_eq!(replied["wa_id"], A);
    assert_eq!(
        replied["whatsapp_message_id"],
        "wamid.OUT000000000000000000000003"
    );
    assert_eq!(
        replied["local_message_id"], "local-0003",
        "the v2 twin's local id is kept"
    );
    assert_eq!(replied["sent_at"], rfc3339(60));
    assert_eq!(replied["delivered_at"], rfc3339(65));
    assert_eq!(replied["read_at"], rfc3339(90));
    assert_eq!(replied["replied_at"], rfc3339(120));
    assert_eq!(replied["failed_at"], Value::Null);

    let template = message(&app, &message_id(4)).await;
    assert_eq!(template["status"], "delivered");
    assert_eq!(template["template_name"], "order_update");
    assert_eq!(template["wa_id"], B);
    assert_eq!(template["local_message_id"], "local-0004");

    let failed = message(&app, "local-0005").await;
    assert_eq!(failed["id"], message_id(5));
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["failed_code"], "131026");
    assert_eq!(failed["failed_detail"], "Message undeliverable");
    assert_eq!(failed["failed_at"], rfc3339(80));
    assert_eq!(message(&app, &message_id(6)).await["failed_code"], "131047");
    // Each failure explained: undeliverable needs a fix first; 131047 needs a template.
    assert_eq!(failed["failed_reason"]["code"], "131026");
    assert_eq!(failed["failed_reason"]["remedy"], "fix_first");
    assert!(failed["failed_reason"]["action"].as_str().unwrap().len() > 20);
    let outside_window = message(&app, &message_id(6)).await;
    assert_eq!(outside_window["failed_reason"]["remedy"], "template_only");
    assert_eq!(template["failed_reason"], Value::Null, "not failed");

    for (n, wa_id) in [
        (1, Value::from(A)),
        (2, Value::from(B)),
        (7, Value::Null),
        (8, Value::from(D)),
    ] {
        let inbound = message(&app, &message_id(n)).await;
        assert_eq!(inbound["status"], "received", "...{n}");
        assert_eq!(inbound["direction"], "inbound", "...{n}");
        assert_eq!(inbound["wa_id"], wa_id, "...{n}");
    }
    assert_eq!(message(&app, &message_id(7)).await["bsuid"], C_BSUID);
    assert_eq!(message(&app, &message_id(9)).await["status"], "sent");
    assert_eq!(
        message(&app, "local-0010").await["template_name"],
        "welcome"
    );

    let alice = contact(&app, A).await;
    assert_eq!(alice["wa_id"], A);
    assert_eq!(alice["last_inbound_at"], rfc3339(0));
    assert_eq!(alice["last_outbound_at"], rfc3339(60));
    assert_eq!(alice["window_expires_at"], rfc3339(86_400));
    assert_eq!(alice["window_open"], false, "the fixtures are from 2025");
    assert_eq!(alice["session"]["state"], "expired");
    assert_eq!(alice["session"]["started_at"], rfc3339(0));
    assert_eq!(alice["session"]["expires_at"], rfc3339(86_400));
    assert_eq!(alice["session"]["business_messages"], 1);
    assert_eq!(alice["session"]["customer_messages"], 1);

    let carol = contact(&app, C_BSUID).await;
    assert_eq!(carol["last_inbound_at"], rfc3339(200));
    assert_eq!(carol["last_outbound_at"], rfc3339(220));

    let dana = contact(&app, D).await;
    assert_eq!(
        dana,
        contact(&app, D_BSUID).await,
        "a contact is found by phone or BSUID"
    );
    assert_eq!(dana["bsuid"], D_BSUID);
}

/// Every id a message has leads to the same message.
#[tokio::test]
async fn a_message_is_found_by_any_of_its_ids() {
    let app = spawn_app().await;
    app.post_all(&fixtures()).await;
    app.wait_until_applied().await;
    let by_wati_id = message(&app, &message_id(3)).await;
    assert_eq!(
        message(&app, "wamid.OUT000000000000000000000003").await,
        by_wati_id
    );
    assert_eq!(message(&app, "local-0003").await, by_wati_id);
}

/// Any order and any number of duplicates give exactly the state of in-order, once-only delivery.
#[tokio::test]
async fn any_order_and_duplicates_converge() {
    let events = fixtures();
    let reference = snapshot_after(&events).await;

    let mut reversed = events.clone();
    reversed.reverse();
    assert_eq!(snapshot_after(&reversed).await, reference, "reversed");

    for seed in [1u64, 7, 42] {
        let mut delivered = events.clone();
        // Every third event is retried, as Wati's retry jobs would.
        delivered.extend(events.iter().step_by(3).cloned());
        shuffle(&mut delivered, seed);
        assert_eq!(snapshot_after(&delivered).await, reference, "seed {seed}");
    }
}

/// Alice writes to both business numbers within one day: each number has its own session and
/// window (tests/fixtures/README.md, "Two business numbers"); merged, the default number's session
/// would count two messages a side and its window would run from +400.
#[tokio::test]
async fn each_business_number_has_its_own_session_with_a_contact() {
    let app = spawn_app().await;
    app.post_all(&fixtures()).await;
    app.wait_until_applied().await;

    let alice = contact(&app, A).await;
    assert_eq!(
        alice["channel_id"],
        Value::Null,
        "top level: the default number"
    );
    assert_eq!(alice["channel_phone_number"], DEFAULT_NUMBER);
    assert_eq!(alice["last_inbound_at"], rfc3339(0));
    assert_eq!(alice["last_outbound_at"], rfc3339(60));
    assert_eq!(alice["window_expires_at"], rfc3339(86_400));
    assert_eq!(alice["session"]["started_at"], rfc3339(0));
    assert_eq!(alice["session"]["business_messages"], 1);
    assert_eq!(alice["session"]["customer_messages"], 1);

    let channels = alice["channels"].as_array().expect("channels");
    assert_eq!(channels.len(), 2, "{alice}");
    let default = &channels[0];
    for field in [
        "last_inbound_at",
        "last_outbound_at",
        "window_expires_at",
        "session",
    ] {
        assert_eq!(default[field], alice[field], "{field}");
    }
    let second = &channels[1];
    assert_eq!(second["channel_phone_number"], SECOND_NUMBER);
    assert_eq!(second["channel_id"], SECOND_CHANNEL_ID);
    assert_eq!(second["wa_id"], A);
    assert_eq!(second["last_inbound_at"], rfc3339(400));
    assert_eq!(second["last_outbound_at"], rfc3339(430));
    assert_eq!(second["window_expires_at"], rfc3339(400 + 86_400));
    assert_eq!(second["session"]["started_at"], rfc3339(400));
    assert_eq!(
        second["session"]["state"], "expired",
        "the fixtures are from 2025"
    );
    assert_eq!(second["session"]["business_messages"], 1);
    assert_eq!(second["session"]["customer_messages"], 1);

    for asked in [SECOND_NUMBER, "%2B1%20415%20555%200200", "+14155550200"] {
        let (status, body) = app.get(&format!("/v1/contacts/{A}?channel={asked}")).await;
        assert_eq!(status, StatusCode::OK, "{asked}: {body}");
        assert_eq!(&body, second, "{asked}");
    }
    let (status, body) = app
        .get(&format!("/v1/contacts/{A}?channel={DEFAULT_NUMBER}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(&body, default);
    assert!(
        body.get("channels").is_none(),
        "one number's view has no list"
    );

    let bob = contact(&app, B).await;
    assert_eq!(bob["channels"].as_array().map(Vec::len), Some(1), "{bob}");
    let (status, _) = app
        .get(&format!("/v1/contacts/{B}?channel={SECOND_NUMBER}"))
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "Bob never talked to the second number"
    );
    for malformed in ["abc", "123", "", SECOND_CHANNEL_ID] {
        let (status, body) = app
            .get(&format!("/v1/contacts/{A}?channel={malformed}"))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{malformed}: {body}");
    }

    // The delivered status (24) carries no channel fields and came before its message (26).
    let reply = message(&app, &message_id(12)).await;
    assert_eq!(reply["channel_phone_number"], SECOND_NUMBER);
    assert_eq!(reply["channel_id"], SECOND_CHANNEL_ID);
    assert_eq!(reply["status"], "delivered");
    assert_eq!(reply["delivered_at"], rfc3339(435));
    let first = message(&app, &message_id(3)).await;
    assert_eq!(first["channel_phone_number"], DEFAULT_NUMBER);
    assert_eq!(first["channel_id"], Value::Null);
}

/// A status that arrives before its message's "sent" event is kept and merged when it comes.
#[tokio::test]
async fn statuses_before_sent_are_merged() {
    let app = spawn_app().await;
    let order = ["09-", "13-", "07-", "03-", "05-"]; // read, B's delivered, delivered, sends
    let events: Vec<Fixture> = order.iter().map(|p| fixture(p)).collect();
    app.post_all(&events[..3]).await;
    app.wait_until_applied().await;
    let early = message(&app, &message_id(3)).await;
    assert_eq!(early["status"], "read");
    assert_eq!(early["wa_id"], Value::Null, "status events carry no waId");

    app.post_all(&events[3..]).await;
    app.wait_until_applied().await;
    let merged = message(&app, &message_id(3)).await;
    assert_eq!(merged["status"], "read");
    assert_eq!(merged["wa_id"], A);
    assert_eq!(merged["delivered_at"], rfc3339(65));
    assert_eq!(merged["sent_at"], rfc3339(60));
    let bob = contact(&app, B).await;
    assert_eq!(
        bob["session"]["business_messages"], 1,
        "reached through the stored message"
    );
}

/// With current timestamps, a customer message and a delivered reply make an active session.
#[tokio::test]
async fn a_conversation_happening_now_has_an_active_session() {
    let app = spawn_app().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let base = now - 600;
    let customer_only: Vec<Fixture> = ["02-"].iter().map(|p| shifted(&fixture(p), base)).collect();
    app.post_all(&customer_only).await;
    app.wait_until_applied().await;
    let bob = contact(&app, B).await;
    assert_eq!(bob["session"]["state"], "inactive");
    assert_eq!(bob["window_open"], true);

    let reply: Vec<Fixture> = ["05-", "13-"]
        .iter()
        .map(|p| shifted(&fixture(p), base))
        .collect();
    app.post_all(&reply).await;
    app.wait_until_applied().await;
    let bob = contact(&app, B).await;
    assert_eq!(bob["session"]["state"], "active");
    assert_eq!(
        bob["session"]["started_at"],
        wati_ingest::time::Rfc3339(Some(base + 5)).render().unwrap()
    );
    assert_eq!(
        bob["window_expires_at"],
        wati_ingest::time::Rfc3339(Some(base + 5 + 86_400))
            .render()
            .unwrap()
    );

    // A business message that was only sent (not delivered) opens no session.
    let alice = [shifted(&fixture("03-"), base)];
    app.post_all(&alice).await;
    app.wait_until_applied().await;
    let alice = contact(&app, A).await;
    assert_eq!(alice["session"]["state"], "none");
    assert_eq!(alice["window_open"], false);
}

/// Each message's and contact's view after delivering `events` to a fresh app.
async fn snapshot_after(events: &[Fixture]) -> Vec<Value> {
    let app = spawn_app().await;
    app.post_all(events).await;
    app.wait_until_applied().await;
    let mut views = Vec::new();
    for n in 1..=12 {
        views.push(message(&app, &message_id(n)).await);
    }
    for id in [A, B, C_BSUID, D] {
        views.push(contact(&app, id).await);
    }
    views
}

fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        items.swap(i, (seed >> 33) as usize % (i + 1));
    }
}
