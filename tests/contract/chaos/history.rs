//! A realistic Wati event history and its oracle.
//!
//! The generator plays contacts talking to a business over a few days: customer messages (first
//! ones as `newContactMessageReceived`), session replies and templates with their v1 and v2
//! callbacks, delivered/read/replied statuses (sometimes without "delivered", as Meta does),
//! failures, BSUID-only contacts, events of no message, and bodies that are not events at all.
//! While it writes the callbacks it keeps the truth: what each message really is. The oracle is
//! that truth rendered by the read API's view types; it never parses a callback.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use wati_ingest::message::{Direction, Failure, MessageRecord, MessageView};
use wati_ingest::session::ContactView;

/// A small, seedable generator (SplitMix64): the same seed gives the same history.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: i64, high: i64) -> i64 {
        low + (self.next_u64() % ((high - low + 1) as u64)) as i64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// One callback as Wati emits it, at the moment it happens.
#[derive(Debug, Clone)]
pub struct Callback {
    pub at: i64,
    pub body: Vec<u8>,
    /// Not a Wati event at all (must be quarantined, never applied).
    pub malformed: bool,
}

/// The generated history: its callbacks, and the truth they describe.
pub struct History {
    pub callbacks: Vec<Callback>,
    /// Every message by Wati id, as it really is.
    pub messages: BTreeMap<String, MessageRecord>,
    /// Every contact by the name the read API knows it by (phone number, or BSUID).
    pub contacts: Vec<String>,
}

/// How big a history to make.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub contacts: usize,
    pub days: i64,
}

const HOUR: i64 = 3_600;
const DAY: i64 = 24 * HOUR;

impl History {
    /// A history of `scale.days` days that ends two hours before `now` (so some windows are still
    /// open when it is read) and keeps every session and window boundary away from the next hour,
    /// so the oracle and the read API agree on what is open while the test runs.
    pub fn generate(scale: Scale, seed: u64, now: i64) -> History {
        let mut rng = Rng::new(seed);
        let quiet = (now - DAY - 10 * 60, now - DAY + 2 * HOUR);
        let end = now - 2 * HOUR - (quiet.1 - quiet.0);
        let start = end - scale.days * DAY;
        let mut world = World {
            rng: &mut rng,
            callbacks: Vec::new(),
            messages: BTreeMap::new(),
            next_id: 0,
        };
        let mut contacts = Vec::new();
        for n in 0..scale.contacts {
            let contact = if n % 10 == 7 {
                Contact::Bsuid(format!("US.{:020}", 7_000_000_000_000u64 + n as u64))
            } else {
                Contact::Phone(format!("1555{:07}", n))
            };
            contacts.push(contact.name().to_owned());
            world.converse(&contact, start, end);
        }
        // Events that name no message, and bodies that are no event: accepted and quarantined,
        // never applied.
        for n in 0..scale.contacts / 10 + 1 {
            let at = world.rng.between(start, end);
            world.raw(at, other_event(n, at), false);
            let at = world.rng.between(start, end);
            world.raw(at, malformed(n), true);
        }
        let World {
            mut callbacks,
            mut messages,
            ..
        } = world;
        // Moves every time at or after the quiet band's start past its end: order is kept, and
        // no session or window (24 h long) can end during the test.
        let shift = |at: i64| {
            if at >= quiet.0 {
                at + (quiet.1 - quiet.0)
            } else {
                at
            }
        };
        for callback in &mut callbacks {
            let shifted = shift(callback.at);
            if shifted != callback.at {
                let text = String::from_utf8_lossy(&callback.body)
                    .replace(&format!("\"{}\"", callback.at), &format!("\"{shifted}\""));
                callback.body = text.into_bytes();
                callback.at = shifted;
            }
        }
        for message in messages.values_mut() {
            for at in [
                &mut message.sent_at,
                &mut message.delivered_at,
                &mut message.read_at,
                &mut message.replied_at,
            ] {
                *at = at.map(shift);
            }
            if let Some(failure) = &mut message.failure {
                failure.at = shift(failure.at);
            }
        }
        History {
            callbacks,
            messages,
            contacts,
        }
    }

    /// What the read API must answer for every message and contact, seen at `now`.
    pub fn oracle(&self, now: i64) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
        let messages = self
            .messages
            .iter()
            .map(|(id, record)| (id.clone(), view(&MessageView::from(record))))
            .collect();
        let mut by_contact: BTreeMap<&str, Vec<MessageRecord>> = BTreeMap::new();
        for record in self.messages.values() {
            let contact = record.contact().expect("every message has a contact");
            by_contact.entry(contact).or_default().push(record.clone());
        }
        let contacts = self
            .contacts
            .iter()
            .filter_map(|name| {
                let mine = by_contact.get(name.as_str())?;
                let contact = ContactView::from_messages(mine, now)?;
                Some((name.clone(), view(&contact)))
            })
            .collect();
        (messages, contacts)
    }
}

fn view(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).expect("views serialise")
}

enum Contact {
    Phone(String),
    Bsuid(String),
}

impl Contact {
    fn name(&self) -> &str {
        match self {
            Contact::Phone(name) | Contact::Bsuid(name) => name,
        }
    }

    /// The identity fields a callback about this contact carries.
    fn fields(&self) -> Value {
        match self {
            Contact::Phone(wa_id) => json!({ "waId": wa_id }),
            Contact::Bsuid(bsuid) => json!({ "bsuid": bsuid }),
        }
    }

    /// The event type with the `_bsuid` suffix BSUID-only contacts get.
    fn event_type(&self, base: &str) -> String {
        match self {
            Contact::Phone(_) => base.to_owned(),
            Contact::Bsuid(_) => format!("{base}_bsuid"),
        }
    }
}

struct World<'a> {
    rng: &'a mut Rng,
    callbacks: Vec<Callback>,
    messages: BTreeMap<String, MessageRecord>,
    next_id: u64,
}

/// What a business message became.
struct Outbound {
    id: String,
    wamid: String,
    local: String,
    template: Option<String>,
}

impl World<'_> {
    fn converse(&mut self, contact: &Contact, start: i64, end: i64) {
        let mut at = start + self.rng.between(0, 12 * HOUR);
        let mut last_inbound: Option<i64> = None;
        let mut first = true;
        while at < end {
            if self.rng.chance(0.5) {
                // The customer writes; an agent usually answers within the window.
                self.inbound(contact, at, first);
                first = false;
                last_inbound = Some(at);
                if self.rng.chance(0.7) {
                    let reply_at = at + self.rng.between(30, 40 * 60);
                    self.outbound(contact, reply_at, None, &mut last_inbound);
                }
            } else if last_inbound.is_some_and(|inbound| at - inbound < DAY) && self.rng.chance(0.5)
            {
                self.outbound(contact, at, None, &mut last_inbound);
            } else {
                let template =
                    ["order_update", "welcome", "payment_due"][self.rng.between(0, 2) as usize];
                self.outbound(contact, at, Some(template), &mut last_inbound);
            }
            at += self.rng.between(HOUR, 18 * HOUR);
        }
    }

    fn id(&mut self) -> String {
        self.next_id += 1;
        format!(
            "{:024x}",
            0x6734_0000_0000_0000_0000u128 + self.next_id as u128
        )
    }

    fn inbound(&mut self, contact: &Contact, at: i64, first: bool) {
        let id = self.id();
        let wamid = format!("wamid.IN{id}");
        let base = if first && self.rng.chance(0.5) {
            "newContactMessageReceived"
        } else {
            "message"
        };
        let mut body = json!({
            "id": id, "created": "2026-01-01T00:00:00Z", "whatsappMessageId": wamid,
            "conversationId": format!("conv-{}", contact.name()), "text": "Hi, where is my order?",
            "type": "text", "data": null, "timestamp": at.to_string(), "owner": false,
            "eventType": contact.event_type(base), "statusString": "SENT", "senderName": "Customer",
            "sourceType": 0, "channelPhoneNumber": "15550000000",
        });
        merge(&mut body, contact.fields());
        self.emit(at, body);
        let record = MessageRecord {
            id: Some(id.clone()),
            whatsapp_message_id: Some(wamid),
            direction: Some(Direction::Inbound),
            sent_at: Some(at),
            ..identity(contact)
        };
        self.messages.insert(id, record);
    }

    /// A session message (`template` None) or a template, with its callbacks over its life.
    fn outbound(
        &mut self,
        contact: &Contact,
        at: i64,
        template: Option<&str>,
        last_inbound: &mut Option<i64>,
    ) {
        let id = self.id();
        let message = Outbound {
            wamid: format!("wamid.OUT{id}"),
            local: format!("local-{id}"),
            template: template.map(str::to_owned),
            id,
        };
        let base = if template.is_some() {
            "templateMessageSent"
        } else {
            "sessionMessageSent"
        };
        let mut record = MessageRecord {
            id: Some(message.id.clone()),
            whatsapp_message_id: Some(message.wamid.clone()),
            direction: Some(Direction::Outbound),
            template_name: message.template.clone(),
            sent_at: Some(at),
            ..identity(contact)
        };
        let sent = |v2: bool| {
            let event_type = if v2 {
                contact.event_type(&format!("{base}_v2"))
            } else {
                contact.event_type(base)
            };
            let mut body = json!({
                "eventType": event_type, "id": message.id, "whatsappMessageId": message.wamid,
                "conversationId": format!("conv-{}", contact.name()), "text": "Your order ships today.",
                "type": if template.is_some() { "template" } else { "text" }, "timestamp": at.to_string(),
                "owner": true, "statusString": "SENT", "sourceType": "API",
                "channelPhoneNumber": "15550000000",
            });
            if let Some(name) = template {
                merge(
                    &mut body,
                    json!({ "templateName": name, "templateId": format!("tpl-{name}") }),
                );
            }
            if v2 {
                merge(&mut body, json!({ "localMessageId": message.local }));
            }
            merge(&mut body, contact.fields());
            body
        };
        // Some businesses subscribe to v1 only, some to both v1 and v2 of every callback.
        let v2 = self.rng.chance(0.6);
        self.emit(at, sent(false));
        if v2 {
            self.emit(at, sent(true));
            record.local_message_id = Some(message.local.clone());
        }

        if self.rng.chance(0.08) {
            let failed_at = at + self.rng.between(1, 120);
            let (kind, code, detail) = if template.is_some() {
                ("templateMessageFailed", "131026", "Message undeliverable")
            } else {
                ("sessionMessageFailed", "131047", "Re-engagement message")
            };
            // Failed callbacks always carry the local id, and a failed template has no wamid.
            let mut body = json!({
                "eventType": kind, "statusString": "Failed", "localMessageId": message.local,
                "id": message.id, "timestamp": failed_at.to_string(), "owner": true,
                "failedCode": code, "failedDetail": detail,
            });
            if template.is_none() {
                merge(&mut body, json!({ "whatsappMessageId": message.wamid }));
            }
            self.emit(failed_at, body);
            record.local_message_id = Some(message.local.clone());
            record.failure = Some(Failure {
                at: failed_at,
                code: Some(code.into()),
                detail: Some(detail.into()),
            });
            self.messages.insert(message.id.clone(), record);
            return;
        }

        let delivered_at = at + self.rng.between(1, 300);
        // Meta skips "delivered" now and then when the message is read at once.
        if self.rng.chance(0.95) {
            self.status(
                &message,
                "sentMessageDELIVERED",
                "Delivered",
                delivered_at,
                v2,
            );
            record.delivered_at = Some(delivered_at);
        }
        if self.rng.chance(0.65) {
            let read_at = delivered_at + self.rng.between(1, 6 * HOUR);
            self.status(&message, "sentMessageREAD", "Read", read_at, v2);
            record.read_at = Some(read_at);
            if self.rng.chance(0.3) {
                let replied_at = read_at + self.rng.between(5, HOUR);
                self.status(&message, "sentMessageREPLIED", "Replied", replied_at, v2);
                record.replied_at = Some(replied_at);
                self.inbound(contact, replied_at, false);
                *last_inbound = Some(replied_at);
            }
        }
        if record.delivered_at.is_none() && record.read_at.is_none() {
            // Neither delivered nor read: the "delivered" callback is the one truth we keep.
            self.status(
                &message,
                "sentMessageDELIVERED",
                "Delivered",
                delivered_at,
                v2,
            );
            record.delivered_at = Some(delivered_at);
        }
        self.messages.insert(message.id.clone(), record);
    }

    /// A status callback: no `waId` (Wati sends none), v2 adds the local id.
    fn status(&mut self, message: &Outbound, kind: &str, label: &str, at: i64, v2: bool) {
        let body = |v2: bool| {
            let mut body = json!({
                "eventType": if v2 { format!("{kind}_v2") } else { kind.to_owned() },
                "statusString": label, "id": message.id, "whatsappMessageId": message.wamid,
                "timestamp": at.to_string(), "owner": true, "channelId": null,
            });
            if v2 {
                merge(&mut body, json!({ "localMessageId": message.local }));
            }
            body
        };
        self.emit(at, body(false));
        if v2 {
            self.emit(at, body(true));
        }
    }

    fn emit(&mut self, at: i64, body: Value) {
        self.raw(at, body.to_string().into_bytes(), false);
    }

    fn raw(&mut self, at: i64, body: Vec<u8>, malformed: bool) {
        self.callbacks.push(Callback {
            at,
            body,
            malformed,
        });
    }
}

fn identity(contact: &Contact) -> MessageRecord {
    match contact {
        Contact::Phone(wa_id) => MessageRecord {
            wa_id: Some(wa_id.clone()),
            ..MessageRecord::default()
        },
        Contact::Bsuid(bsuid) => MessageRecord {
            bsuid: Some(bsuid.clone()),
            ..MessageRecord::default()
        },
    }
}

fn merge(body: &mut Value, fields: Value) {
    if let (Some(body), Value::Object(fields)) = (body.as_object_mut(), fields) {
        body.extend(fields);
    }
}

/// Events about no message: template reviews and event types Wati may add any day.
fn other_event(n: usize, at: i64) -> Vec<u8> {
    let body = if n % 2 == 0 {
        json!({ "eventType": "templateReviewed", "templateName": format!("t{n}"),
                "status": "APPROVED", "timestamp": at.to_string() })
    } else {
        json!({ "eventType": "paymentCaptured", "orderId": format!("o{n}"),
                "amount": 1999, "timestamp": at.to_string() })
    };
    body.to_string().into_bytes()
}

/// Bodies that can never be events.
fn malformed(n: usize) -> Vec<u8> {
    match n % 3 {
        0 => format!("not json {n}").into_bytes(),
        1 => format!("[{n}]").into_bytes(),
        _ => format!(r#"{{"id":"{n}","timestamp":"1"}}"#).into_bytes(),
    }
}
