//! A realistic Wati event history, and what Wati said in it.
//!
//! The generator plays contacts talking to a business over a few days: customer messages (first
//! ones as `newContactMessageReceived`), session replies and templates with their v1 and v2
//! callbacks, delivered/read/replied statuses (sometimes without "delivered", as Meta does),
//! failures, events of no message, and bodies that are not events at all. And what Wati does that
//! is easy to get wrong: a status (or a failure) reported twice with different times, status
//! callbacks that name the message only by `whatsappMessageId` (and `localMessageId` in v2),
//! BSUID-only contacts, BSUID contacts that later reveal their phone number, a "sent" callback
//! delivered hours after the statuses of its message, and business messages that never reach
//! the customer.
//!
//! The account has two business numbers: its default one (`channelId` null) and a second one.
//! Some contacts talk to one of them, some to both (writing to both within hours: two sessions,
//! never one). A message's own callbacks (the customer's message, "sent") state its number in
//! the ways Wati does (`"channelId": null` with the phone, the phone alone, nothing at all as
//! from a single-number account; the second number always with its `channelId`, its phone as
//! digits, `+1 415 555 0200` or a JSON number); status and failure callbacks mostly state
//! nothing (absent, null or empty fields), sometimes their message's number. A message's
//! callbacks never state two different numbers.
//!
//! Every callback about a message carries its [`Report`]: the ids, contact names, fact and
//! timestamp Wati states in it. The body is rendered from the report, so the two cannot differ.
//! The oracle (`oracle.rs`) folds the reports by the README's rules, with its own code: nothing
//! here or there uses the crate's types.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// A small, seedable generator (SplitMix64): the same seed gives the same history.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        finalize(self.0)
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: i64, high: i64) -> i64 {
        low + (self.next_u64() % ((high - low + 1) as u64)) as i64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        unit(self.next_u64()) < p
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// SplitMix64's output function.
fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// A draw in `[0, 1)` that is a pure function of its parts (the seed, what is decided, and
/// where: a delivery's number and a call's number within it, say). Concurrent tasks deciding
/// faults this way decide the same whatever order they run in, so a failing run replays.
pub fn draw(parts: &[u64]) -> f64 {
    unit(hash(parts))
}

pub fn hash(parts: &[u64]) -> u64 {
    parts.iter().fold(0x243f_6a88_85a3_08d3, |acc, part| {
        finalize(acc ^ finalize(part.wrapping_add(0x9e37_79b9_7f4a_7c15)))
    })
}

/// FNV-1a of bytes, to turn text into a part for [`draw`].
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |acc, byte| {
        (acc ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What one callback states about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// The message itself, written by the customer (`inbound`) or sent by the business.
    Message {
        inbound: bool,
        template: Option<String>,
    },
    Delivered,
    Read,
    Replied,
    Failed {
        code: Option<String>,
        detail: Option<String>,
    },
}

/// The account's default business number (`channelId` null).
pub const DEFAULT_NUMBER: &str = "14155550000";
/// The number a few of the default number's messages state instead (an old line): the default
/// number's phone is the one most of its messages state.
pub const FORMER_DEFAULT_NUMBER: &str = "14155550001";
/// The account's second business number, and its Wati `channelId`.
pub const SECOND_NUMBER: &str = "14155550200";
pub const SECOND_CHANNEL_ID: &str = "6734a09f1c2b3a4d5e6f7c02";

/// What Wati says in one callback about a message.
#[derive(Debug, Clone)]
pub struct Report {
    /// Wati's id, `whatsappMessageId`, `localMessageId`: whichever the callback carries.
    pub id: Option<String>,
    pub wamid: Option<String>,
    pub local: Option<String>,
    /// `waId` and `bsuid`, when the callback names the contact.
    pub phone: Option<String>,
    pub bsuid: Option<String>,
    pub fact: Fact,
    /// The callback's `timestamp` (unix seconds), when it carries one.
    pub timestamp: Option<i64>,
    /// `channelId` and `channelPhoneNumber` exactly as the body carries them (`None`: no such
    /// field; a null or empty one states nothing either).
    pub channel_id: Option<Value>,
    pub channel_phone: Option<Value>,
}

/// One callback as Wati emits it, at the moment it happens.
#[derive(Debug, Clone)]
pub struct Callback {
    pub at: i64,
    pub body: Vec<u8>,
    /// Not a Wati event at all (must be quarantined, never applied).
    pub malformed: bool,
    /// What it says about a message, if it is about one.
    pub report: Option<Report>,
    /// Held back this long before its first delivery: a "sent" callback delivered hours after
    /// its statuses, the earlier of two reports of one status delivered after the later one.
    pub held: i64,
}

/// The generated history.
pub struct History {
    pub callbacks: Vec<Callback>,
    /// Messages the history is about (each one distinct message).
    pub messages: usize,
    /// How many times each of the hard cases occurs.
    pub cases: BTreeMap<&'static str, usize>,
}

/// How big a history to make.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub contacts: usize,
    pub days: i64,
}

const MINUTE: i64 = 60;
const HOUR: i64 = 3_600;
const DAY: i64 = 24 * HOUR;
/// The longest a business message's callbacks trail its sending: a reply sent 40 minutes after
/// the customer wrote, delivered within 5 minutes, read within 6 hours, replied within an hour,
/// each status reported a second time up to 30 minutes later.
const LONGEST_TAIL: i64 = 9 * HOUR;

/// One of the account's business numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Number {
    Default,
    Second,
}

/// How one message states its business number: the number it is on, the phone its callbacks
/// state (`None`: none of them states one, as from a single-number account), and whether its
/// own callbacks (the customer's message, "sent") state it or only some of its statuses do.
#[derive(Debug, Clone, Copy)]
struct Line {
    number: Number,
    phone: Option<&'static str>,
    own: bool,
}

/// Who a contact is, and when (if ever) Wati learns its phone number.
struct Person {
    phone: Option<String>,
    bsuid: Option<String>,
    /// From this time on, events carry the phone number along with the BSUID.
    reveal_at: Option<i64>,
    /// The business numbers it talks to: one, or both.
    numbers: &'static [Number],
}

impl Person {
    /// The contact names an event at `at` carries, and whether its type gets `_bsuid`.
    fn names_at(&self, at: i64) -> (Option<String>, Option<String>, bool) {
        match (&self.phone, &self.reveal_at) {
            (Some(_), Some(reveal)) if at < *reveal => (None, self.bsuid.clone(), true),
            (Some(phone), _) => (Some(phone.clone()), self.bsuid.clone(), false),
            (None, _) => (None, self.bsuid.clone(), true),
        }
    }
}

/// A callback before the quiet-band shift, rendered once its time is final.
struct Pending {
    at: i64,
    event_type: String,
    report: Report,
    extra: Value,
    held: i64,
}

impl History {
    /// A history of `scale.days` days whose last event is more than 45 minutes before `now`,
    /// with every session and window boundary kept away from the next two hours, so the oracle
    /// and the read API agree on what is open while the test runs.
    pub fn generate(scale: Scale, seed: u64, now: i64) -> History {
        let mut rng = Rng::new(seed);
        let quiet = (now - DAY - 10 * MINUTE, now - DAY + 2 * HOUR);
        let limit = now - 3 * HOUR;
        let end = limit - LONGEST_TAIL;
        let start = end - scale.days * DAY;
        let mut world = World {
            rng: &mut rng,
            pending: Vec::new(),
            raw: Vec::new(),
            messages: 0,
            next_id: 0,
            cases: Default::default(),
        };
        for n in 0..scale.contacts {
            let phone = format!("1555{:07}", n);
            let bsuid = format!("US.{:020}", 7_000_000_000_000u64 + n as u64);
            // Coprime with the other cycles, so every kind of contact meets every number.
            let numbers: &'static [Number] = match n % 7 {
                0 | 3 => &[Number::Default, Number::Second],
                5 => &[Number::Second],
                _ => &[Number::Default],
            };
            if numbers.len() > 1 {
                world.case("contacts_on_both_numbers");
            } else if numbers[0] == Number::Second {
                world.case("contacts_on_the_second_number_only");
            }
            let person = match n % 10 {
                7 => Person {
                    phone: None,
                    bsuid: Some(bsuid),
                    reveal_at: None,
                    numbers,
                },
                3 => {
                    // Known by a BSUID first; its phone number comes later in the history.
                    let reveal_at = start + world.rng.between(DAY / 2, scale.days * DAY - DAY / 2);
                    Person {
                        phone: Some(phone),
                        bsuid: Some(bsuid),
                        reveal_at: Some(reveal_at),
                        numbers,
                    }
                }
                _ => Person {
                    phone: Some(phone),
                    bsuid: None,
                    reveal_at: None,
                    numbers,
                },
            };
            if n % 20 == 11 {
                world.unreached(&person, start, end);
            } else {
                world.converse(&person, start, end, n % 10 == 5, quiet.0);
            }
        }
        // Events that name no message, and bodies that are no event: accepted and quarantined,
        // never applied.
        for n in 0..scale.contacts / 10 + 1 {
            let at = world.rng.between(start, end);
            world.raw.push(Callback {
                at,
                body: other_event(n, at),
                malformed: false,
                report: None,
                held: 0,
            });
            let at = world.rng.between(start, end);
            world.raw.push(Callback {
                at,
                body: malformed(n),
                malformed: true,
                report: None,
                held: 0,
            });
        }
        let World {
            pending,
            raw,
            messages,
            mut cases,
            ..
        } = world;
        // BSUID contacts whose phone number some callback revealed (those whose messages all
        // came before their reveal stay BSUID-only).
        let revealed: std::collections::BTreeSet<&String> = pending
            .iter()
            .filter(|p| p.report.bsuid.is_some())
            .filter_map(|p| p.report.phone.as_ref())
            .collect();
        cases.insert("contacts_revealing_phone", revealed.len());
        // Moves every time at or after the quiet band's start past its end: order is kept, and
        // no session or window (24 h long) can end during the test.
        let shift = |at: i64| {
            if at >= quiet.0 {
                at + (quiet.1 - quiet.0)
            } else {
                at
            }
        };
        let mut callbacks: Vec<Callback> = pending
            .into_iter()
            .map(|mut pending| {
                pending.at = shift(pending.at);
                pending.report.timestamp = pending.report.timestamp.map(shift);
                assert!(
                    pending.at < now - 45 * MINUTE,
                    "the history ends before now"
                );
                Callback {
                    at: pending.at,
                    body: render(&pending).to_string().into_bytes(),
                    malformed: false,
                    report: Some(pending.report),
                    held: pending.held,
                }
            })
            .collect();
        callbacks.extend(raw);
        History {
            callbacks,
            messages,
            cases,
        }
    }
}

/// The body of a callback: its decoration, then everything its report says, in Wati's fields.
fn render(pending: &Pending) -> Value {
    let report = &pending.report;
    let mut body = match &pending.extra {
        Value::Object(fields) => fields.clone(),
        _ => Map::new(),
    };
    body.insert("eventType".into(), json!(pending.event_type));
    for (field, value) in [
        ("id", &report.id),
        ("whatsappMessageId", &report.wamid),
        ("localMessageId", &report.local),
        ("waId", &report.phone),
        ("bsuid", &report.bsuid),
    ] {
        if let Some(value) = value {
            body.insert(field.into(), json!(value));
        }
    }
    for (field, value) in [
        ("channelId", &report.channel_id),
        ("channelPhoneNumber", &report.channel_phone),
    ] {
        if let Some(value) = value {
            body.insert(field.into(), value.clone());
        }
    }
    if let Some(timestamp) = report.timestamp {
        body.insert("timestamp".into(), json!(timestamp.to_string()));
    }
    match &report.fact {
        Fact::Message { inbound, template } => {
            body.insert("owner".into(), json!(!inbound));
            if let Some(name) = template {
                body.insert("templateName".into(), json!(name));
                body.insert("templateId".into(), json!(format!("tpl-{name}")));
            }
        }
        Fact::Failed { code, detail } => {
            for (field, value) in [("failedCode", code), ("failedDetail", detail)] {
                if let Some(value) = value {
                    body.insert(field.into(), json!(value));
                }
            }
        }
        Fact::Delivered | Fact::Read | Fact::Replied => {}
    }
    Value::Object(body)
}

struct World<'a> {
    rng: &'a mut Rng,
    pending: Vec<Pending>,
    raw: Vec<Callback>,
    messages: usize,
    next_id: u64,
    cases: BTreeMap<&'static str, usize>,
}

/// A business message's ids, and how its callbacks name it.
struct Outbound {
    id: String,
    wamid: String,
    local: String,
    /// The business subscribes to v2 callbacks too (they add `localMessageId`).
    v2: bool,
    line: Line,
}

impl World<'_> {
    fn case(&mut self, name: &'static str) {
        *self.cases.entry(name).or_default() += 1;
    }

    /// `boundary`: the contact's first message opens a session, and another comes exactly 24 h
    /// later (it must open the next session); only where both lie before the quiet band. A
    /// contact of both numbers writes to each within hours first: two sessions, never one.
    fn converse(&mut self, person: &Person, start: i64, end: i64, boundary: bool, quiet: i64) {
        let mut at = start + self.rng.between(0, 12 * HOUR);
        let mut last_inbound: BTreeMap<Number, i64> = BTreeMap::new();
        let mut first = true;
        if boundary && at + DAY < quiet {
            let number = person.numbers[0];
            self.inbound(person, number, at, true);
            self.inbound(person, number, at + DAY, false);
            self.case("messages_at_a_session_expiry");
            first = false;
            last_inbound.insert(number, at);
            at += self.rng.between(HOUR, 18 * HOUR);
        }
        if person.numbers.len() > 1 {
            self.case("contacts_writing_to_both_numbers_within_hours");
            let mut when = at;
            for &number in person.numbers {
                self.inbound(person, number, when, first);
                first = false;
                last_inbound.insert(number, when);
                if self.rng.chance(0.7) {
                    let reply_at = when + self.rng.between(30, 40 * MINUTE);
                    self.outbound(person, number, reply_at, None, &mut last_inbound);
                }
                when += self.rng.between(10 * MINUTE, 6 * HOUR);
            }
            at = when + self.rng.between(HOUR, 18 * HOUR);
        }
        while at < end {
            let number =
                person.numbers[self.rng.between(0, person.numbers.len() as i64 - 1) as usize];
            if self.rng.chance(0.5) {
                // The customer writes; an agent usually answers within the window.
                self.inbound(person, number, at, first);
                first = false;
                last_inbound.insert(number, at);
                if self.rng.chance(0.7) {
                    let reply_at = at + self.rng.between(30, 40 * MINUTE);
                    self.outbound(person, number, reply_at, None, &mut last_inbound);
                }
            } else if last_inbound
                .get(&number)
                .is_some_and(|inbound| at - inbound < DAY)
                && self.rng.chance(0.5)
            {
                self.outbound(person, number, at, None, &mut last_inbound);
            } else {
                let template =
                    ["order_update", "welcome", "payment_due"][self.rng.between(0, 2) as usize];
                self.outbound(person, number, at, Some(template), &mut last_inbound);
            }
            at += self.rng.between(HOUR, 18 * HOUR);
        }
    }

    /// A contact the business never reaches: templates that fail or are only ever sent.
    fn unreached(&mut self, person: &Person, start: i64, end: i64) {
        self.case("contacts_never_reached");
        for _ in 0..self.rng.between(1, 3) {
            let at = self.rng.between(start, end);
            let number =
                person.numbers[self.rng.between(0, person.numbers.len() as i64 - 1) as usize];
            let message = self.new_outbound(number);
            self.sent(person, &message, at, Some("payment_due"), 0);
            if self.rng.chance(0.5) {
                self.failure(&message, at, true);
            } else {
                self.case("messages_only_sent");
            }
        }
    }

    fn id(&mut self) -> String {
        self.next_id += 1;
        format!(
            "{:024x}",
            0x6734_0000_0000_0000_0000u128 + self.next_id as u128
        )
    }

    fn push(&mut self, at: i64, event_type: String, report: Report, extra: Value, held: i64) {
        self.pending.push(Pending {
            at,
            event_type,
            report,
            extra,
            held,
        });
    }

    /// How a new message on `number` states it: the second number always, in its own
    /// callbacks, with its `channelId` and phone; the default one mostly with its phone (now
    /// and then a former one), a fifth of the time not at all, and a tenth of the time only in
    /// some of its statuses (its own callbacks state nothing, as from a single-number account).
    fn line(&mut self, number: Number) -> Line {
        let (phone, own) = match (number, self.rng.between(0, 99)) {
            (Number::Second, _) => {
                self.case("messages_on_the_second_number");
                (Some(SECOND_NUMBER), true)
            }
            (Number::Default, 0..=19) => {
                self.case("default_number_messages_stating_no_number");
                (None, false)
            }
            (Number::Default, 20..=29) => (Some(DEFAULT_NUMBER), false),
            (Number::Default, 30..=33) => {
                self.case("default_number_messages_stating_a_former_phone");
                (Some(FORMER_DEFAULT_NUMBER), true)
            }
            (Number::Default, _) => (Some(DEFAULT_NUMBER), true),
        };
        Line { number, phone, own }
    }

    /// A phone number as Wati may write it: digits, `+1 415 555 0200`, `+1 (415) 555-0200`,
    /// or a JSON number.
    fn written(&mut self, digits: &'static str) -> Value {
        let (country, area, exchange, line) =
            (&digits[..1], &digits[1..4], &digits[4..7], &digits[7..]);
        match self.rng.between(0, 5) {
            0..=2 => json!(digits),
            3 => json!(format!("+{country} {area} {exchange} {line}")),
            4 => json!(format!("+{country} ({area}) {exchange}-{line}")),
            _ => json!(digits.parse::<u64>().expect("digits")),
        }
    }

    /// Channel fields that state nothing: absent, null or empty.
    fn unstated(&mut self) -> (Option<Value>, Option<Value>) {
        match self.rng.between(0, 3) {
            0 => (None, None),
            1 => (Some(Value::Null), None),
            2 => (Some(Value::Null), Some(Value::Null)),
            _ => (Some(json!("")), Some(json!(""))),
        }
    }

    /// The channel fields of a message's own callback (the customer's message, "sent").
    fn own_stated(&mut self, line: Line) -> (Option<Value>, Option<Value>) {
        if line.own {
            self.stated(line)
        } else {
            self.unstated()
        }
    }

    /// The message's number in full: the default one with `"channelId": null` or without the
    /// field.
    fn stated(&mut self, line: Line) -> (Option<Value>, Option<Value>) {
        match (line.number, line.phone) {
            (_, None) => self.unstated(),
            (Number::Second, Some(phone)) => {
                (Some(json!(SECOND_CHANNEL_ID)), Some(self.written(phone)))
            }
            (Number::Default, Some(phone)) => {
                let id = self.rng.chance(0.7).then_some(Value::Null);
                (id, Some(self.written(phone)))
            }
        }
    }

    /// The channel fields of a status or failure callback: most state nothing, some their
    /// message's number in full, a few only its `channelId` (or, on the default number, only
    /// its phone); half of them where the message's own callbacks state nothing.
    fn status_stated(&mut self, line: Line) -> (Option<Value>, Option<Value>) {
        let draw = self.rng.between(0, 99);
        match line.phone {
            Some(_) if !line.own && draw < 50 => {
                self.case("status_callbacks_alone_stating_their_message_number");
                self.stated(line)
            }
            Some(_) if line.own && draw < 25 => self.stated(line),
            Some(phone) if line.own && draw < 35 => match line.number {
                Number::Second => (Some(json!(SECOND_CHANNEL_ID)), None),
                Number::Default => (None, Some(self.written(phone))),
            },
            _ => {
                self.case("status_callbacks_stating_no_number");
                self.unstated()
            }
        }
    }

    fn inbound(&mut self, person: &Person, number: Number, at: i64, first: bool) {
        self.messages += 1;
        let id = self.id();
        let line = self.line(number);
        let (channel_id, channel_phone) = self.own_stated(line);
        let base = if first && self.rng.chance(0.5) {
            "newContactMessageReceived"
        } else {
            "message"
        };
        let (phone, bsuid, suffixed) = person.names_at(at);
        let event_type = if suffixed {
            format!("{base}_bsuid")
        } else {
            base.to_owned()
        };
        let report = Report {
            wamid: Some(format!("wamid.IN{id}")),
            id: Some(id),
            local: None,
            phone,
            bsuid,
            fact: Fact::Message {
                inbound: true,
                template: None,
            },
            timestamp: Some(at),
            channel_id,
            channel_phone,
        };
        let extra = json!({
            "created": "2026-01-01T00:00:00Z", "conversationId": "conv-chaos",
            "text": "Hi, where is my order?", "type": "text", "data": null,
            "statusString": "SENT", "senderName": "Customer", "sourceType": 0,
        });
        self.push(at, event_type, report, extra, 0);
    }

    fn new_outbound(&mut self, number: Number) -> Outbound {
        self.messages += 1;
        let id = self.id();
        Outbound {
            wamid: format!("wamid.OUT{id}"),
            local: format!("local-{id}"),
            // Some businesses subscribe to v1 only, some to both v1 and v2 of every callback.
            v2: self.rng.chance(0.6),
            id,
            line: self.line(number),
        }
    }

    /// The "sent" callbacks (v1, and v2 when subscribed), held back `held` seconds.
    fn sent(
        &mut self,
        person: &Person,
        message: &Outbound,
        at: i64,
        template: Option<&str>,
        held: i64,
    ) {
        let base = if template.is_some() {
            "templateMessageSent"
        } else {
            "sessionMessageSent"
        };
        let (phone, bsuid, suffixed) = person.names_at(at);
        let extra = json!({
            "conversationId": "conv-chaos", "text": "Your order ships today.",
            "type": if template.is_some() { "template" } else { "text" },
            "statusString": "SENT", "sourceType": "API",
        });
        for v2 in [false, true] {
            if v2 && !message.v2 {
                continue;
            }
            let mut event_type = base.to_owned();
            if v2 {
                event_type.push_str("_v2");
            }
            if suffixed {
                event_type.push_str("_bsuid");
            }
            let (channel_id, channel_phone) = self.own_stated(message.line);
            let report = Report {
                id: Some(message.id.clone()),
                wamid: Some(message.wamid.clone()),
                local: v2.then(|| message.local.clone()),
                phone: phone.clone(),
                bsuid: bsuid.clone(),
                fact: Fact::Message {
                    inbound: false,
                    template: template.map(str::to_owned),
                },
                timestamp: Some(at),
                channel_id,
                channel_phone,
            };
            self.push(at, event_type, report, extra.clone(), held);
        }
    }

    /// A failure callback; now and then a second one, later, with another code and no detail:
    /// the first one's code and detail must stay. Failed callbacks always carry the local id,
    /// and a failed template has no wamid.
    fn failure(&mut self, message: &Outbound, at: i64, template: bool) {
        let failed_at = at + self.rng.between(1, 120);
        let (kind, code, detail) = if template {
            ("templateMessageFailed", "131026", "Message undeliverable")
        } else {
            ("sessionMessageFailed", "131047", "Re-engagement message")
        };
        let again = self.rng.chance(0.3);
        let mut reports = vec![(failed_at, Some(code), Some(detail))];
        if again {
            self.case("failures_reported_twice");
            let later = failed_at + self.rng.between(1, 600);
            // Ranks before the first one's code, so a field-by-field merge would pick it.
            reports.push((later, Some("131000"), None));
        }
        let hold_first = again && self.rng.chance(0.5);
        for (n, (at, code, detail)) in reports.into_iter().enumerate() {
            let (channel_id, channel_phone) = self.status_stated(message.line);
            let report = Report {
                id: Some(message.id.clone()),
                wamid: (!template).then(|| message.wamid.clone()),
                local: Some(message.local.clone()),
                phone: None,
                bsuid: None,
                fact: Fact::Failed {
                    code: code.map(str::to_owned),
                    detail: detail.map(str::to_owned),
                },
                timestamp: Some(at),
                channel_id,
                channel_phone,
            };
            let held = if n == 0 && hold_first {
                self.rng.between(10 * MINUTE, HOUR)
            } else {
                0
            };
            let extra = json!({ "statusString": "Failed", "owner": true });
            self.push(at, kind.to_owned(), report, extra, held);
        }
    }

    /// A session message (`template` None) or a template on `number`, with its callbacks over
    /// its life.
    fn outbound(
        &mut self,
        person: &Person,
        number: Number,
        at: i64,
        template: Option<&str>,
        last_inbound: &mut BTreeMap<Number, i64>,
    ) {
        let message = self.new_outbound(number);
        // Now and then Wati delivers "sent" hours after the message's statuses; a little more
        // often on the second number, whose statuses (mostly stating no number) must then wait
        // for it to be placed.
        let hold = if number == Number::Second { 0.06 } else { 0.03 };
        let held = if self.rng.chance(hold) {
            self.case("sent_delivered_hours_after_its_statuses");
            if number == Number::Second {
                self.case("second_number_sent_delivered_hours_after_its_statuses");
            }
            self.rng.between(2 * HOUR, 8 * HOUR)
        } else {
            0
        };
        self.sent(person, &message, at, template, held);

        if self.rng.chance(0.08) {
            self.failure(&message, at, template.is_some());
            return;
        }

        let delivered_at = at + self.rng.between(1, 300);
        let mut delivered = false;
        // Meta skips "delivered" now and then when the message is read at once.
        if self.rng.chance(0.95) {
            self.status(&message, Fact::Delivered, delivered_at);
            delivered = true;
        }
        let mut read = false;
        if self.rng.chance(0.65) {
            let read_at = delivered_at + self.rng.between(1, 6 * HOUR);
            self.status(&message, Fact::Read, read_at);
            read = true;
            if self.rng.chance(0.3) {
                let replied_at = read_at + self.rng.between(5, HOUR);
                self.status(&message, Fact::Replied, replied_at);
                // The customer replies to the number that wrote to it.
                self.inbound(person, number, replied_at, false);
                last_inbound.insert(number, replied_at);
            }
        }
        if !delivered && !read {
            // Neither delivered nor read: the "delivered" callback is the one truth we keep.
            self.status(&message, Fact::Delivered, delivered_at);
        }
    }

    /// A status's callbacks (v1, and v2 with the local id). A third of them name the message
    /// only by its wamid, without Wati's id. Now and then the status is reported a second time,
    /// later; the earlier report is then sometimes delivered after the later one.
    fn status(&mut self, message: &Outbound, fact: Fact, at: i64) {
        let (kind, label) = match fact {
            Fact::Delivered => ("sentMessageDELIVERED", "Delivered"),
            Fact::Read => ("sentMessageREAD", "Read"),
            _ => ("sentMessageREPLIED", "Replied"),
        };
        let mut times = vec![at];
        if self.rng.chance(0.12) {
            self.case("statuses_reported_twice");
            times.push(at + self.rng.between(1, 30 * MINUTE));
        }
        let hold_first = times.len() > 1 && self.rng.chance(0.5);
        for (n, at) in times.into_iter().enumerate() {
            let held = if n == 0 && hold_first {
                self.rng.between(10 * MINUTE, HOUR)
            } else {
                0
            };
            for v2 in [false, true] {
                if v2 && !message.v2 {
                    continue;
                }
                let without_id = self.rng.chance(1.0 / 3.0);
                if without_id {
                    self.case("status_callbacks_without_wati_id");
                }
                let (channel_id, channel_phone) = self.status_stated(message.line);
                let report = Report {
                    id: (!without_id).then(|| message.id.clone()),
                    wamid: Some(message.wamid.clone()),
                    local: v2.then(|| message.local.clone()),
                    phone: None,
                    bsuid: None,
                    fact: fact.clone(),
                    timestamp: Some(at),
                    channel_id,
                    channel_phone,
                };
                let event_type = if v2 {
                    format!("{kind}_v2")
                } else {
                    kind.to_owned()
                };
                let extra = json!({ "statusString": label, "owner": true });
                self.push(at, event_type, report, extra, held);
            }
        }
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
