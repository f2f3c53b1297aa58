//! Arbitrary bytes as a webhook body: `WatiEvent::parse`, the idempotency and quarantine keys,
//! and the message facts an event states. No input may panic, and the keys and facts must keep
//! the invariants the ledger and the state store rely on.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wati_ingest::event::{idempotency_key, quarantine_key, sha256_hex, EventKind, WatiEvent};
use wati_ingest::message::{Direction, MessageRecord, MessageView, Status};

/// Keys longer than this are stored as their SHA-256 (see `src/event.rs`).
const MAX_PLAIN_KEY_LEN: usize = 256;
/// 9999-12-31T23:59:59Z: the latest timestamp the parser trusts.
const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

fuzz_target!(|body: &[u8]| {
    let quarantine = quarantine_key(body);
    assert_eq!(
        quarantine,
        format!("quarantine:body-sha256:{}", sha256_hex(body))
    );
    assert_eq!(
        quarantine,
        quarantine_key(body),
        "quarantine key is deterministic"
    );

    let parsed = WatiEvent::parse(body);
    assert_eq!(parsed, WatiEvent::parse(body), "parsing is deterministic");
    let event = match parsed {
        Ok(event) => event,
        Err(unusable) => {
            assert!(!unusable.to_string().is_empty());
            return;
        }
    };

    // The receiver relies on this ("a body that parsed as JSON is UTF-8").
    let text = std::str::from_utf8(body).expect("a usable body is UTF-8");
    let value: serde_json::Value = serde_json::from_str(text).expect("a usable body is JSON");
    assert!(value.get("eventType").is_some_and(|t| t.is_string()));

    check_event(&event);

    let key = idempotency_key(&event, body);
    assert_eq!(key, idempotency_key(&event, body), "keys are deterministic");
    assert!(!key.is_empty());
    assert!(key.len() <= MAX_PLAIN_KEY_LEN, "key of {} bytes", key.len());
    if let Some(hashed) = key.strip_prefix("sha256:") {
        if hashed.len() == 64 && hashed.bytes().all(|b| b.is_ascii_hexdigit()) {
            // A long key, hashed; nothing more to check.
        } else {
            assert!(key.starts_with(&format!("{}:", event.kind.name())));
        }
    } else {
        assert!(key.starts_with(&format!("{}:", event.kind.name())), "{key}");
        match event.message_identity() {
            Some(identity) => assert_eq!(key, format!("{}:{identity}", event.kind.name())),
            None => assert_eq!(
                key,
                format!("{}:body-sha256:{}", event.kind.name(), sha256_hex(body))
            ),
        }
    }
    // The v1/v2 twin of an event shares its key when it names a message.
    if event.message_identity().is_some() {
        let mut twin = event.clone();
        twin.kind = EventKind::parse(&format!("{}_v2", event.kind.name()));
        if twin.kind == event.kind {
            assert_eq!(idempotency_key(&twin, b"other body"), key);
        }
    }

    for received_at in [0, 1_764_238_453, MAX_UNIX_SECONDS] {
        let facts = MessageRecord::from_event(&event, received_at);
        check_facts(&event, facts.as_ref(), received_at);
    }
});

fn check_event(event: &WatiEvent) {
    // Names round-trip, so the processor and the metrics agree with the receiver.
    assert_eq!(EventKind::parse(event.kind.name()), event.kind);
    for text in [
        &event.id,
        &event.whatsapp_message_id,
        &event.local_message_id,
        &event.wa_id,
        &event.bsuid,
        &event.template_name,
        &event.failed_code,
        &event.failed_detail,
    ] {
        assert!(
            text.as_ref().is_none_or(|t| !t.is_empty()),
            "empty text kept"
        );
    }
    if let Some(at) = event.timestamp {
        assert!((0..=MAX_UNIX_SECONDS).contains(&at), "timestamp {at}");
    }
    if let Some(identity) = event.message_identity() {
        assert!(event.kind.is_message_event());
        assert!(!identity.is_empty());
    }
}

fn check_facts(event: &WatiEvent, facts: Option<&MessageRecord>, received_at: i64) {
    let names_message = event.id.is_some()
        || event.whatsapp_message_id.is_some()
        || event.local_message_id.is_some();
    let Some(facts) = facts else {
        assert!(!names_message || !event.kind.is_message_event());
        return;
    };
    assert!(names_message && event.kind.is_message_event());
    assert!(facts.primary_id().is_some());
    assert!(facts.all_ids().all(|id| !id.is_empty()));
    // The rule, restated: a timestamp before 2010 or more than 300 s after the receipt is not
    // believed; the receipt dates the fact instead.
    let credible = 1_262_304_000..=received_at.saturating_add(300);
    let at = event
        .timestamp
        .filter(|t| credible.contains(t))
        .unwrap_or(received_at);
    let times = [
        facts.sent_at,
        facts.delivered_at,
        facts.read_at,
        facts.replied_at,
        facts.failure.as_ref().map(|f| f.at),
    ];
    assert_eq!(
        times.iter().flatten().collect::<Vec<_>>(),
        vec![&at],
        "one event states exactly one time"
    );
    // The merge is idempotent and the view renders.
    let mut merged = facts.clone();
    merged.merge(facts);
    assert_eq!(&merged, facts);
    let mut from_bottom = MessageRecord::default();
    from_bottom.merge(facts);
    assert_eq!(&from_bottom, facts);
    let status = facts.status();
    if facts.direction() == Direction::Inbound {
        assert_eq!(status, Status::Received);
    }
    let view = MessageView::from(facts);
    let json = serde_json::to_value(&view).expect("a view serialises");
    assert!(json.is_object());
    if (0..=MAX_UNIX_SECONDS).contains(&at) {
        let rendered = times.iter().flatten().count();
        let nulls = [
            "sent_at",
            "delivered_at",
            "read_at",
            "replied_at",
            "failed_at",
        ]
        .iter()
        .filter(|name| json[**name].is_null())
        .count();
        assert_eq!(rendered + nulls, 5, "every in-range time renders: {json}");
    }
}
