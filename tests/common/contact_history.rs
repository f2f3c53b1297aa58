//! A contact's history for the contact-read tests and bench: every fifth message the customer's,
//! the others template messages of the business delivered a minute later; none of the
//! customer's in the last 10 days, so its latest inbound lies far before the 48 hours a view
//! reads. Included by path (`tests/contract/contact_reads.rs`, `benches/contact_reads.rs`).

use serde_json::{json, Value};

/// One message: when it was sent, whether it is the customer's, its events (with receipt
/// times).
pub struct Message {
    pub at: i64,
    pub inbound: bool,
    pub events: Vec<(i64, Value)>,
}

/// `count` messages of `wa_id`, the first at `start`, `spacing` seconds apart.
pub fn history(wa_id: &str, count: i64, start: i64, spacing: i64) -> Vec<Message> {
    let times: Vec<i64> = (0..count).map(|n| start + n * spacing).collect();
    history_at(wa_id, &times)
}

/// Messages of `wa_id` sent at `times` (ascending).
pub fn history_at(wa_id: &str, times: &[i64]) -> Vec<Message> {
    let end = times.last().copied().unwrap_or_default();
    (0_i64..)
        .zip(times)
        .map(|(n, &at)| {
            let id = format!("{wa_id}-m{n}");
            if n % 5 == 0 && at < end - 10 * 24 * 3_600 {
                let message = json!({"eventType": "message", "id": id, "waId": wa_id,
                    "owner": false, "text": "hi", "timestamp": at.to_string()});
                Message {
                    at,
                    inbound: true,
                    events: vec![(at, message)],
                }
            } else {
                let wamid = format!("wamid.{id}");
                let sent = json!({"eventType": "templateMessageSent", "id": id,
                    "whatsappMessageId": wamid, "waId": wa_id, "templateName": "order_update",
                    "type": "template", "timestamp": at.to_string()});
                let delivered = json!({"eventType": "sentMessageDELIVERED", "id": id,
                    "whatsappMessageId": wamid, "timestamp": (at + 60).to_string()});
                Message {
                    at,
                    inbound: false,
                    events: vec![(at, sent), (at + 60, delivered)],
                }
            }
        })
        .collect()
}

/// Every event of `messages`, in their order.
pub fn events(messages: &[Message]) -> Vec<(i64, Value)> {
    messages
        .iter()
        .flat_map(|m| m.events.iter().cloned())
        .collect()
}

/// The latest send of the customer's messages and of the business's.
pub fn latest(messages: &[Message]) -> (Option<i64>, Option<i64>) {
    let last = |inbound: bool| {
        messages
            .iter()
            .filter(|m| m.inbound == inbound)
            .map(|m| m.at)
            .max()
    };
    (last(true), last(false))
}
