//! A broadcast as Wati reports it (issue 18 §3): one template message to each of `contacts`
//! contacts, and the callbacks it makes, in the order they would arrive. Shared by
//! `benches/broadcast.rs` (the local server) and `benches/load_aws.rs` (`LOAD_PROFILE=broadcast`,
//! the processor on the emulators); included by path (`#[path = "common/broadcast.rs"]`).
//!
//! Per contact, with both webhook versions subscribed (every callback has its `_v2` twin):
//! - `templateMessageSent` + `_v2` (the template, with the contact's `waId`);
//! - 95%: `sentMessageDELIVERED` + `_v2`, 1–30 s after the send;
//! - 60% (of all; only delivered messages): `sentMessageREAD` + `_v2`, 5 s–5 min after delivery;
//! - 10% (of all; only read messages): the contact's reply, an inbound `message`, and
//!   `sentMessageREPLIED` + `_v2` on the template, 10 s–10 min after the read.
//!
//! That is 5.4 callbacks per contact (270,000 for 50,000 contacts). The bodies carry the field
//! sets of `tests/fixtures/events/` (05/06 for the sends, 07–12 for the statuses, 01 for the
//! reply): statuses name no `waId`, their `_v2` twins add `localMessageId`. The sends are spread
//! over `contacts` ms (50 s for 50,000: Meta's throughput for a high-tier number); each callback
//! is due at its event's time, its twin 0–500 ms after or before it, and the list is sorted by
//! that time: the sends come first with the first deliveries among them, then deliveries, reads
//! and replies interleaved. The same `seed` gives the same broadcast.

#[path = "../../tests/contract/chaos/history.rs"]
#[allow(dead_code)]
mod history;

use history::Rng;
use serde_json::{json, Value};

/// The broadcast's start: `T0` of `tests/fixtures/README.md` (2025-11-27T10:14:13Z).
const T0_MS: i64 = 1_764_238_453_000;
const CHANNEL_PHONE: &str = "14155550000";

/// What a callback makes visible in the read API (`GET /v1/messages/{message}`): `field`
/// becomes non-null.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    pub message: String,
    pub field: &'static str,
}

/// One callback, as Wati posts it.
pub struct Callback {
    pub body: Vec<u8>,
    pub fact: Fact,
    /// The first of its v1/v2 pair in the order (the one whose fact is new; the reply's
    /// `message` has no twin and is always first).
    pub first: bool,
}

/// The broadcast's callbacks, in arrival order.
pub fn broadcast(contacts: usize, seed: u64) -> Vec<Callback> {
    let mut rng = Rng::new(seed);
    // (due ms, tie-break, callback)
    let mut due: Vec<(i64, usize, Callback)> = Vec::with_capacity(contacts * 6);
    for contact in 0..contacts {
        let message = Message::new(contact);
        let sent = contact as i64;
        let mut events = vec![(sent, Status::Sent)];
        let delivered = sent + rng.between(1_000, 30_000);
        if rng.chance(0.95) {
            events.push((delivered, Status::Delivered));
            let read = delivered + rng.between(5_000, 300_000);
            if rng.chance(0.60 / 0.95) {
                events.push((read, Status::Read));
                if rng.chance(0.10 / 0.60) {
                    let replied = read + rng.between(10_000, 600_000);
                    let body = message.reply(T0_MS + replied);
                    let fact = Fact {
                        message: message.reply_id(),
                        field: "id",
                    };
                    let callback = Callback {
                        body,
                        fact,
                        first: true,
                    };
                    due.push((replied, due.len(), callback));
                    events.push((replied + rng.between(0, 2_000), Status::Replied));
                }
            }
        }
        for (at, status) in events {
            // Wati posts v1 and v2 within moments of each other, in either order.
            let twin = at + rng.between(-500, 500);
            let v2_first = twin < at;
            for (v2, at) in [(false, at), (true, twin)] {
                let callback = Callback {
                    body: message.status(status, v2, T0_MS + at),
                    fact: Fact {
                        message: message.id.clone(),
                        field: status.field(),
                    },
                    first: v2 == v2_first,
                };
                due.push((at, due.len(), callback));
            }
        }
    }
    due.sort_unstable_by_key(|(at, order, _)| (*at, *order));
    due.into_iter().map(|(_, _, callback)| callback).collect()
}

#[derive(Debug, Clone, Copy)]
enum Status {
    Sent,
    Delivered,
    Read,
    Replied,
}

impl Status {
    fn field(self) -> &'static str {
        match self {
            Status::Sent => "sent_at",
            Status::Delivered => "delivered_at",
            Status::Read => "read_at",
            Status::Replied => "replied_at",
        }
    }
}

/// The template message sent to contact `n`, and its ids.
struct Message {
    n: usize,
    id: String,
    wamid: String,
    local: String,
    wa_id: String,
}

impl Message {
    fn new(n: usize) -> Message {
        Message {
            n,
            id: format!("6734b0{n:018x}"),
            wamid: format!("wamid.BCAST{n:015}"),
            local: format!("bcast-{n:07}"),
            wa_id: format!("4477{n:08}"),
        }
    }

    fn reply_id(&self) -> String {
        format!("6734c0{:018x}", self.n)
    }

    /// A status callback, or the send itself (`Sent`: the only one that names the contact).
    fn status(&self, status: Status, v2: bool, at_ms: i64) -> Vec<u8> {
        let (kind, status_string) = match status {
            Status::Sent => ("templateMessageSent", "SENT"),
            Status::Delivered => ("sentMessageDELIVERED", "Delivered"),
            Status::Read => ("sentMessageREAD", "Read"),
            Status::Replied => ("sentMessageREPLIED", "Replied"),
        };
        let mut body = json!({
            "eventType": if v2 { format!("{kind}_v2") } else { kind.to_owned() },
            "statusString": status_string,
            "id": self.id,
            "whatsappMessageId": self.wamid,
            "conversationId": format!("6734a0c2{:016x}", self.n),
            "ticketId": format!("6734a0c3{:016x}", self.n),
            "text": "Hi, our winter sale starts today: 20% off everything until Sunday.",
            "type": "template",
            "data": null,
            "timestamp": (at_ms / 1000).to_string(),
            "owner": true,
            "assigneeId": null,
            "operatorEmail": "api@acme-store.example",
            "channelId": null,
            "channelPhoneNumber": CHANNEL_PHONE,
        });
        let fields = body.as_object_mut().expect("object");
        if v2 {
            fields.insert("localMessageId".into(), json!(self.local));
        }
        match status {
            Status::Sent => {
                for (name, value) in [
                    ("templateId", json!("tpl-winter-sale")),
                    ("templateName", json!("winter_sale")),
                    ("created", json!(created(at_ms))),
                    ("operatorName", json!("Acme API")),
                    ("waId", json!(self.wa_id)),
                    ("sourceType", json!("API")),
                    ("replyContextId", json!("")),
                ] {
                    fields.insert(name.into(), value);
                }
            }
            Status::Read if !v2 => {
                fields.insert("deliveryLatencyMs".into(), json!(412));
            }
            _ => {}
        }
        serde_json::to_vec(&body).expect("serialise")
    }

    /// The contact's reply: an inbound `message` (fields of fixture 01).
    fn reply(&self, at_ms: i64) -> Vec<u8> {
        let body: Value = json!({
            "id": self.reply_id(),
            "created": created(at_ms),
            "whatsappMessageId": format!("wamid.BREPLY{:015}", self.n),
            "conversationId": format!("6734a0c2{:016x}", self.n),
            "ticketId": format!("6734a0c3{:016x}", self.n),
            "text": "Does the sale include the blue jacket?",
            "type": "text",
            "data": null,
            "sourceId": null,
            "sourceUrl": null,
            "timestamp": (at_ms / 1000).to_string(),
            "owner": false,
            "eventType": "message",
            "statusString": "SENT",
            "avatarUrl": null,
            "assignedId": null,
            "operatorName": null,
            "operatorEmail": null,
            "waId": self.wa_id,
            "messageContact": null,
            "senderName": format!("Contact {}", self.n),
            "listReply": null,
            "interactiveButtonReply": null,
            "buttonReply": null,
            "replyContextId": self.wamid,
            "sourceType": 0,
            "frequentlyForwarded": false,
            "forwarded": false,
            "channelId": null,
            "channelPhoneNumber": CHANNEL_PHONE,
        });
        serde_json::to_vec(&body).expect("serialise")
    }
}

/// Wati's `created`: RFC 3339 with 7 fractional digits.
fn created(at_ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(at_ms / 1000).expect("time");
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}0000Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at_ms % 1000
    )
}
