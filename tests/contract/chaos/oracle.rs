//! The oracle: what the read API must answer, from what Wati said ([`Report`]s) and the README's
//! rules, written here from the rules alone. It uses none of the crate's types or functions
//! (no `MessageRecord`, `merge`, views, sessions or time rendering), so a wrong ranking, merge or
//! session rule in the crate cannot agree with itself here.
//!
//! The rules it encodes:
//! - identity: Wati's id, the wamid and the local id name one message once a callback has named
//!   them together (transitively);
//! - each status keeps its earliest time; the status shown is the highest-ranked one with a time
//!   (`sent < failed < delivered < read < replied`), `received` for the customer's messages; the
//!   failure shown is the earliest one, code and detail included;
//! - a fact is dated by its callback's `timestamp`, unless that is absent, before 2010, or more
//!   than 300 s after the receipt, when the receipt dates it;
//! - sessions: 24 h, opened by the customer writing or a business message reaching the customer
//!   (its earliest delivered/read/replied time) while none is open; at `started_at + 86400` a
//!   session has expired, and a message at that instant opens the next one; `active` once both
//!   sides have a message in it, `inactive` while one has; times after `now` count as `now`;
//! - the customer-service window closes 24 h after the customer's last message;
//! - a contact is known by its phone number and its BSUID alike, `wa_id` is the phone number
//!   (or null), `bsuid` the BSUID (or null);
//! - business numbers: `channelId` and `channelPhoneNumber` are strings or numbers, absent, null
//!   and "" state nothing; a phone written as a phone number counts by its digits (a leading
//!   `+`, spaces, `-`, `(`, `)`, `.` dropped). A message is on the number its own callbacks
//!   state (any of them: message, sent, status, failure), the default number (`channelId` null)
//!   when none states a `channelId`; its phone is the one its callbacks state, or null;
//! - sessions, the window and `last_*_at` are per (business number, contact): only that
//!   number's messages count. The contact's view is the default number's (the empty view when
//!   it has no message there) with `channel_phone_number` (the phone most of that number's
//!   messages state, ties: the least; null if none does) and `channel_id` (null), and
//!   `channels`, one such entry per number the contact has messages on, the default first, then
//!   by `channel_id`; `?channel=<number>` is the entry whose `channel_phone_number` it is.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Value};

use super::history::{Callback, Fact, Report};

const DAY: i64 = 86_400;
/// 2010-01-01T00:00:00Z: a `timestamp` before it is no real event time.
const EARLIEST_TIMESTAMP: i64 = 1_262_304_000;
/// How far after its receipt an event's `timestamp` may lie and still date it.
const FUTURE_SLACK: i64 = 300;

/// The fields `GET /v1/messages/{id}` answers (README, "Endpoints").
pub const MESSAGE_FIELDS: [&str; 17] = [
    "id",
    "whatsapp_message_id",
    "local_message_id",
    "wa_id",
    "bsuid",
    "direction",
    "status",
    "template_name",
    "sent_at",
    "delivered_at",
    "read_at",
    "replied_at",
    "failed_at",
    "failed_code",
    "failed_detail",
    "channel_phone_number",
    "channel_id",
];

/// The fields of a contact's view with one business number (`session.*` inside `session`):
/// the top level of `GET /v1/contacts/{waId}`, each entry of its `channels`, and the answer to
/// `?channel=`.
pub const CONTACT_FIELDS: [&str; 13] = [
    "wa_id",
    "bsuid",
    "channel_phone_number",
    "channel_id",
    "last_inbound_at",
    "last_outbound_at",
    "window_open",
    "window_expires_at",
    "session.state",
    "session.started_at",
    "session.expires_at",
    "session.business_messages",
    "session.customer_messages",
];

/// How a read names what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Name {
    WatiId,
    Wamid,
    LocalId,
    Phone,
    Bsuid,
}

/// One message or contact the API must show, and every name it must be found by.
pub struct Expected {
    pub names: Vec<(Name, String)>,
    pub view: Value,
}

pub struct Oracle {
    pub messages: Vec<Expected>,
    pub contacts: Vec<Expected>,
    /// How often the business-number cases the rules turn on occurred in this run, from the
    /// reports and when they were first received.
    pub observed: BTreeMap<&'static str, usize>,
}

/// What a channel field states: a non-empty string or a number, as text; nothing for null,
/// "" or any other JSON value.
fn stated(value: &Option<Value>) -> Option<String> {
    match value {
        Some(Value::String(text)) if !text.is_empty() => Some(text.clone()),
        Some(Value::Number(number)) => Some(number.to_string()),
        _ => None,
    }
}

/// A business phone number as compared: its digits when it is written as a phone number
/// (an optional leading `+`, then digits among spaces, `-`, `(`, `)`, `.`), else as written.
fn business_number(written: &str) -> String {
    let unsigned = written.strip_prefix('+').unwrap_or(written);
    let mut digits = String::new();
    for c in unsigned.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '(' | ')' | '.' => {}
            _ => return written.to_owned(),
        }
    }
    if digits.is_empty() {
        written.to_owned()
    } else {
        digits
    }
}

/// Whether a report states anything about the business number.
fn states_number(report: &Report) -> bool {
    stated(&report.channel_id).is_some() || stated(&report.channel_phone).is_some()
}

/// The date of a fact: its `timestamp` unless that is missing, before 2010 or more than 300 s
/// after the callback's receipt; then the receipt.
pub fn dated(timestamp: Option<i64>, receipt: i64) -> i64 {
    match timestamp {
        Some(at) if at >= EARLIEST_TIMESTAMP && at <= receipt + FUTURE_SLACK => at,
        _ => receipt,
    }
}

/// Names joined by appearing in one callback together (union-find with path halving).
#[derive(Default)]
struct Groups {
    parent: HashMap<String, String>,
}

impl Groups {
    fn root(&mut self, name: &str) -> String {
        let mut at = name.to_owned();
        loop {
            let parent = self
                .parent
                .entry(at.clone())
                .or_insert_with(|| at.clone())
                .clone();
            if parent == at {
                return at;
            }
            let grand = self.parent[&parent].clone();
            self.parent.insert(at, grand.clone());
            at = grand;
        }
    }

    fn join<'a>(&mut self, names: impl IntoIterator<Item = &'a String>) {
        let mut names = names.into_iter();
        let Some(first) = names.next() else { return };
        let first = self.root(first);
        for name in names {
            let root = self.root(name);
            if root != first {
                self.parent.insert(root, first.clone());
            }
        }
    }
}

/// What all reports of one message say, folded by the rules.
#[derive(Default)]
struct Message {
    ids: BTreeMap<Name, BTreeSet<String>>,
    phone: BTreeSet<String>,
    bsuid: BTreeSet<String>,
    inbound: bool,
    template: BTreeSet<String>,
    /// Every time each fact was reported at, by rank: 0 sent, 2 delivered, 3 read, 4 replied.
    reported: BTreeMap<u8, Vec<i64>>,
    /// Every failure reported: (time, code, detail), in report order.
    failures: Vec<(i64, Option<String>, Option<String>)>,
    /// The `channelId`s and (normalized) business phones its callbacks state.
    channel_id: BTreeSet<String>,
    channel_phone: BTreeSet<String>,
    /// When a callback stating its number, and a status or failure stating none, were first
    /// received (the earliest of each).
    placed_at: Option<i64>,
    unplaced_status_at: Option<i64>,
    /// Whether its own callbacks (message, sent) state its number, and whether a status or
    /// failure does.
    placed_by_itself: bool,
    placed_by_a_status: bool,
}

const SENT: u8 = 0;
const DELIVERED: u8 = 2;
const READ: u8 = 3;
const REPLIED: u8 = 4;

impl Message {
    fn earliest(&self, rank: u8) -> Option<i64> {
        self.reported
            .get(&rank)
            .and_then(|times| times.iter().copied().min())
    }

    /// The earliest failure, whole: its code and detail are never mixed with another's.
    fn failure(&self) -> Option<&(i64, Option<String>, Option<String>)> {
        let first = self.failures.iter().map(|f| f.0).min()?;
        let earliest: Vec<_> = self.failures.iter().filter(|f| f.0 == first).collect();
        // Two failures at one instant would leave the rule without an answer.
        assert!(
            earliest.windows(2).all(|w| w[0] == w[1]),
            "the history reports two different failures at one instant"
        );
        earliest.first().copied()
    }

    fn status(&self) -> &'static str {
        if self.inbound {
            return "received";
        }
        if self.earliest(REPLIED).is_some() {
            "replied"
        } else if self.earliest(READ).is_some() {
            "read"
        } else if self.earliest(DELIVERED).is_some() {
            "delivered"
        } else if self.failure().is_some() {
            "failed"
        } else {
            "sent"
        }
    }

    /// When a business message reached the customer: Meta may skip "delivered", so the read
    /// and replied times count too.
    fn reached(&self) -> Option<i64> {
        [DELIVERED, READ, REPLIED]
            .into_iter()
            .filter_map(|rank| self.earliest(rank))
            .min()
    }

    fn one(set: &BTreeSet<String>, what: &str) -> Option<String> {
        assert!(
            set.len() <= 1,
            "the history names one message by two {what}s"
        );
        set.first().cloned()
    }

    fn view(&self) -> Value {
        let failure = self.failure();
        json!({
            "id": Self::one(&self.ids[&Name::WatiId], "Wati id"),
            "whatsapp_message_id": Self::one(&self.ids[&Name::Wamid], "wamid"),
            "local_message_id": Self::one(&self.ids[&Name::LocalId], "local id"),
            "wa_id": Self::one(&self.phone, "phone number"),
            "bsuid": Self::one(&self.bsuid, "BSUID"),
            "direction": if self.inbound { "inbound" } else { "outbound" },
            "status": self.status(),
            "template_name": Self::one(&self.template, "template"),
            "sent_at": rfc3339(self.earliest(SENT)),
            "delivered_at": rfc3339(self.earliest(DELIVERED)),
            "read_at": rfc3339(self.earliest(READ)),
            "replied_at": rfc3339(self.earliest(REPLIED)),
            "failed_at": rfc3339(failure.map(|f| f.0)),
            "failed_code": failure.and_then(|f| f.1.clone()),
            "failed_detail": failure.and_then(|f| f.2.clone()),
            "channel_phone_number": self.number_phone(),
            "channel_id": self.number_id(),
        })
    }

    /// The `channelId` of the number it is on: `None` is the default number.
    fn number_id(&self) -> Option<String> {
        Self::one(&self.channel_id, "channelId")
    }

    fn number_phone(&self) -> Option<String> {
        Self::one(&self.channel_phone, "business phone")
    }
}

/// Expected answers for every message and contact, seen at `now`. `receipts[i]` is when
/// callback `i` was first received.
pub fn expect(callbacks: &[Callback], receipts: &[Option<i64>], now: i64) -> Oracle {
    let reports: Vec<(&Report, i64, i64)> = callbacks
        .iter()
        .zip(receipts)
        .filter_map(|(callback, receipt)| {
            let report = callback.report.as_ref()?;
            let receipt = receipt.expect("every callback was received at least once");
            Some((report, dated(report.timestamp, receipt), receipt))
        })
        .collect();

    // Identity: the ids each callback names together.
    let mut ids = Groups::default();
    let mut people = Groups::default();
    for (report, _, _) in &reports {
        ids.join(message_ids(report).map(|(_, id)| id));
        people.join(report.phone.iter().chain(&report.bsuid));
    }
    let mut messages: BTreeMap<String, Message> = BTreeMap::new();
    for (report, at, receipt) in &reports {
        let first = message_ids(report)
            .next()
            .expect("a report names its message")
            .1;
        let message = messages.entry(ids.root(first)).or_default();
        for (name, id) in message_ids(report) {
            message.ids.entry(name).or_default().insert(id.clone());
        }
        message.phone.extend(report.phone.clone());
        message.bsuid.extend(report.bsuid.clone());
        message.channel_id.extend(stated(&report.channel_id));
        message
            .channel_phone
            .extend(stated(&report.channel_phone).map(|phone| business_number(&phone)));
        let is_status = !matches!(report.fact, Fact::Message { .. });
        let first_of = |seen: Option<i64>| Some(seen.map_or(*receipt, |at| at.min(*receipt)));
        if states_number(report) {
            message.placed_at = first_of(message.placed_at);
            if is_status {
                message.placed_by_a_status = true;
            } else {
                message.placed_by_itself = true;
            }
        } else if is_status {
            message.unplaced_status_at = first_of(message.unplaced_status_at);
        }
        match &report.fact {
            Fact::Message { inbound, template } => {
                message.inbound |= *inbound;
                message.template.extend(template.clone());
                message.reported.entry(SENT).or_default().push(*at);
            }
            Fact::Delivered => message.reported.entry(DELIVERED).or_default().push(*at),
            Fact::Read => message.reported.entry(READ).or_default().push(*at),
            Fact::Replied => message.reported.entry(REPLIED).or_default().push(*at),
            Fact::Failed { code, detail } => {
                message.failures.push((*at, code.clone(), detail.clone()))
            }
        }
    }

    // Each message belongs to the contact its callbacks name (by either name).
    let mut by_contact: BTreeMap<String, Vec<&Message>> = BTreeMap::new();
    for message in messages.values_mut() {
        for name in [Name::WatiId, Name::Wamid, Name::LocalId] {
            message.ids.entry(name).or_default();
        }
    }
    for message in messages.values() {
        let name = message
            .phone
            .iter()
            .chain(&message.bsuid)
            .next()
            .expect("every message names its contact");
        by_contact
            .entry(people.root(name))
            .or_default()
            .push(message);
    }

    let expected_messages = messages
        .values()
        .map(|message| Expected {
            names: message
                .ids
                .iter()
                .flat_map(|(name, ids)| ids.iter().map(|id| (*name, id.clone())))
                .collect(),
            view: message.view(),
        })
        .collect();
    let mut observed: BTreeMap<&'static str, usize> = BTreeMap::new();
    for message in messages.values() {
        let on_second = message.number_id().is_some();
        *observed
            .entry(if on_second {
                "messages_on_another_number"
            } else {
                "messages_on_the_default_number"
            })
            .or_default() += 1;
        if message.placed_by_a_status && !message.placed_by_itself {
            *observed
                .entry("messages_whose_number_only_statuses_state")
                .or_default() += 1;
        }
        if message.number_phone().is_none() {
            *observed
                .entry("messages_stating_no_business_phone")
                .or_default() += 1;
        }
        // A status stating no number received before any callback placing its message (in an
        // earlier retry-job slot, so surely first): it must take the number that comes later.
        if let (Some(status), Some(placed)) = (message.unplaced_status_at, message.placed_at) {
            if status < placed {
                *observed
                    .entry(if on_second {
                        "statuses_stating_no_number_received_before_their_message_on_another_number"
                    } else {
                        "statuses_stating_no_number_received_before_their_message_on_the_default_number"
                    })
                    .or_default() += 1;
            }
        }
    }
    let expected_contacts = by_contact
        .values()
        .map(|mine| {
            let phones: BTreeSet<String> = mine.iter().flat_map(|m| m.phone.clone()).collect();
            let bsuids: BTreeSet<String> = mine.iter().flat_map(|m| m.bsuid.clone()).collect();
            let names = phones
                .iter()
                .map(|p| (Name::Phone, p.clone()))
                .chain(bsuids.iter().map(|b| (Name::Bsuid, b.clone())))
                .collect();
            Expected {
                names,
                view: contact_view(mine, now, &mut observed),
            }
        })
        .collect();
    Oracle {
        messages: expected_messages,
        contacts: expected_contacts,
        observed,
    }
}

fn message_ids(report: &Report) -> impl Iterator<Item = (Name, &String)> {
    [
        (Name::WatiId, &report.id),
        (Name::Wamid, &report.wamid),
        (Name::LocalId, &report.local),
    ]
    .into_iter()
    .filter_map(|(name, id)| id.as_ref().map(|id| (name, id)))
}

/// One contact at `now`, from all its messages: the default number's view with every number's
/// in `channels`.
fn contact_view(all: &[&Message], now: i64, observed: &mut BTreeMap<&'static str, usize>) -> Value {
    let mine = read_by_the_view(all);
    let mine = &mine[..];
    if mine.len() < all.len() {
        *observed
            .entry("contacts_with_messages_before_what_their_view_reads")
            .or_default() += 1;
    }
    // The view's names are those its messages state.
    let phones: BTreeSet<String> = mine.iter().flat_map(|m| m.phone.clone()).collect();
    let bsuids: BTreeSet<String> = mine.iter().flat_map(|m| m.bsuid.clone()).collect();
    let (phones, bsuids) = (&phones, &bsuids);
    assert!(
        phones.len() <= 1 && bsuids.len() <= 1,
        "one phone, one BSUID"
    );
    // `None` (the default number) sorts first, then the channel ids.
    let mut numbers: BTreeMap<Option<String>, Vec<&Message>> = BTreeMap::new();
    for message in mine {
        numbers
            .entry(message.number_id())
            .or_default()
            .push(message);
    }
    let (channels, latest): (Vec<Value>, Vec<Option<i64>>) = numbers
        .iter()
        .map(|(id, on)| number_view(on, id, phones, bsuids, now))
        .unzip();
    let mut view = if numbers.contains_key(&None) {
        channels[0].clone()
    } else {
        *observed
            .entry("contacts_with_no_message_on_the_default_number")
            .or_default() += 1;
        number_view(&[], &None, phones, bsuids, now).0
    };
    if channels.len() > 1 {
        *observed.entry("contacts_on_two_numbers").or_default() += 1;
        // Their latest sessions on the two numbers overlap (started less than 24 h apart):
        // one session, were the numbers merged.
        if let [Some(one), Some(other)] = latest[..] {
            if (one - other).abs() < DAY {
                *observed
                    .entry("contacts_with_overlapping_sessions_on_two_numbers")
                    .or_default() += 1;
            }
        }
    }
    view["channels"] = Value::Array(channels);
    view
}

/// What a contact's view reads (the rule of `src/recent.rs`, written here from its text): the
/// messages sent in the 48 hours before the contact's latest sent message, and its latest
/// inbound and latest outbound message; none whose send was never reported.
fn read_by_the_view<'a>(all: &[&'a Message]) -> Vec<&'a Message> {
    let latest = |inbound: bool| {
        all.iter()
            .filter(|m| m.inbound == inbound)
            .filter_map(|m| m.earliest(SENT))
            .max()
    };
    let (latest_inbound, latest_outbound) = (latest(true), latest(false));
    let Some(newest) = latest_inbound.max(latest_outbound) else {
        return Vec::new();
    };
    all.iter()
        .copied()
        .filter(|m| match m.earliest(SENT) {
            None => false,
            Some(sent) => {
                let latest_of_its_side = if m.inbound {
                    latest_inbound
                } else {
                    latest_outbound
                };
                sent >= newest - 2 * DAY || Some(sent) == latest_of_its_side
            }
        })
        .collect()
}

/// A contact's view with one business number, from its messages on that number (none: the
/// empty view), and when its latest session started.
fn number_view(
    mine: &[&Message],
    id: &Option<String>,
    phones: &BTreeSet<String>,
    bsuids: &BTreeSet<String>,
    now: i64,
) -> (Value, Option<i64>) {
    // The phone most of its messages state; ties: the least (ascending, only a larger count
    // replaces).
    let mut stating: BTreeMap<String, usize> = BTreeMap::new();
    for message in mine {
        if let Some(phone) = message.number_phone() {
            *stating.entry(phone).or_default() += 1;
        }
    }
    let mut phone: Option<(String, usize)> = None;
    for (candidate, count) in stating {
        let more = match &phone {
            Some((_, most)) => count > *most,
            None => true,
        };
        if more {
            phone = Some((candidate, count));
        }
    }
    let latest_sent = |inbound: bool| {
        mine.iter()
            .filter(|m| m.inbound == inbound)
            .filter_map(|m| m.earliest(SENT))
            .max()
    };
    let last_inbound = latest_sent(true);
    let window_expires = last_inbound.map(|at| at + DAY);

    // The timeline: (time, by the customer), business messages once they reached the customer.
    let mut timeline: Vec<(i64, bool)> = mine
        .iter()
        .filter_map(|m| {
            let at = if m.inbound {
                m.earliest(SENT)
            } else {
                m.reached()
            }?;
            Some((at.min(now), m.inbound))
        })
        .collect();
    timeline.sort();
    // The latest session: walk the timeline, opening a session whenever none is open.
    let mut latest: Option<(i64, u32, u32)> = None;
    for (at, by_customer) in timeline {
        let open = latest.filter(|(started, _, _)| at < started + DAY);
        let (started, mut business, mut customer) = open.unwrap_or((at, 0, 0));
        if by_customer {
            customer += 1;
        } else {
            business += 1;
        }
        latest = Some((started, business, customer));
    }
    let session = match latest {
        None => json!({
            "state": "none", "started_at": null, "expires_at": null,
            "business_messages": 0, "customer_messages": 0,
        }),
        Some((started, business, customer)) => {
            let state = if now >= started + DAY {
                "expired"
            } else if business > 0 && customer > 0 {
                "active"
            } else {
                "inactive"
            };
            json!({
                "state": state,
                "started_at": rfc3339(Some(started)),
                "expires_at": rfc3339(Some(started + DAY)),
                "business_messages": business,
                "customer_messages": customer,
            })
        }
    };
    let view = json!({
        "wa_id": phones.first(),
        "bsuid": bsuids.first(),
        "channel_phone_number": phone.map(|(phone, _)| phone),
        "channel_id": id,
        "last_inbound_at": rfc3339(last_inbound),
        "last_outbound_at": rfc3339(latest_sent(false)),
        "window_open": window_expires.is_some_and(|expires| now < expires),
        "window_expires_at": rfc3339(window_expires),
        "session": session,
    });
    (view, latest.map(|(started, _, _)| started))
}

/// Unix seconds as RFC 3339 UTC (`2025-11-27T10:14:13Z`), from the civil calendar directly.
pub fn rfc3339(at: Option<i64>) -> Value {
    let Some(at) = at else { return Value::Null };
    let (days, seconds) = (at.div_euclid(DAY), at.rem_euclid(DAY));
    // Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's civil_from_days).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    Value::String(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3_600,
        seconds % 3_600 / 60,
        seconds % 60
    ))
}

/// The value at a dotted path (`session.state`, `channels.1.channel_id`; `channels.#` is the
/// array's length), `None` where there is none.
pub fn at(value: &Value, path: &str) -> Option<Value> {
    let mut value = value;
    for key in path.split('.') {
        value = match (value, key) {
            (Value::Array(items), "#") => return Some(Value::from(items.len())),
            (Value::Array(items), index) => items.get(index.parse::<usize>().ok()?)?,
            (other, key) => other.get(key)?,
        };
    }
    Some(value.clone())
}

/// The paths a contact read compares: the top-level fields, how many entries `channels` has,
/// and every field of each entry the oracle expects.
pub fn contact_paths(expected: &Value) -> Vec<String> {
    let mut paths: Vec<String> = CONTACT_FIELDS.iter().map(|f| (*f).to_owned()).collect();
    paths.push("channels.#".to_owned());
    let entries = expected["channels"].as_array().map_or(0, Vec::len);
    for n in 0..entries {
        paths.extend(CONTACT_FIELDS.iter().map(|f| format!("channels.{n}.{f}")));
    }
    paths
}

/// The paths of `expected` that `actual` does not match.
pub fn differences(paths: &[String], expected: &Value, actual: &Value) -> Vec<String> {
    paths
        .iter()
        .filter(|path| at(expected, path) != at(actual, path))
        .cloned()
        .collect()
}

/// Every message id and contact name any callback's body carries (read from the bodies, not
/// the reports), so the check can tell when the oracle does not know one.
pub fn named_in_bodies(callbacks: &[Callback]) -> BTreeSet<(Name, String)> {
    let mut named = BTreeSet::new();
    for callback in callbacks.iter().filter(|c| !c.malformed) {
        let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&callback.body) else {
            continue;
        };
        for (field, name) in [
            ("id", Name::WatiId),
            ("whatsappMessageId", Name::Wamid),
            ("localMessageId", Name::LocalId),
            ("waId", Name::Phone),
            ("bsuid", Name::Bsuid),
        ] {
            if let Some(Value::String(value)) = body.get(field) {
                named.insert((name, value.clone()));
            }
        }
    }
    named
}

#[test]
fn business_numbers_count_by_their_digits() {
    assert_eq!(business_number("+1 415 555 0200"), "14155550200");
    assert_eq!(business_number("+1 (415) 555-0200"), "14155550200");
    assert_eq!(business_number("14155550200"), "14155550200");
    assert_eq!(business_number("1.415.555.0200"), "14155550200");
    assert_eq!(business_number("main-line"), "main-line");
    assert_eq!(
        stated(&Some(json!(14_155_550_200u64))).as_deref(),
        Some("14155550200")
    );
    for nothing in [None, Some(Value::Null), Some(json!(""))] {
        assert_eq!(stated(&nothing), None);
    }
}

#[test]
fn paths_reach_into_arrays() {
    let value = json!({"channels": [{"session": {"state": "active"}}, {"channel_id": "c2"}]});
    assert_eq!(at(&value, "channels.#"), Some(json!(2)));
    assert_eq!(
        at(&value, "channels.0.session.state"),
        Some(json!("active"))
    );
    assert_eq!(at(&value, "channels.1.channel_id"), Some(json!("c2")));
    assert_eq!(at(&value, "channels.2.channel_id"), None);
    assert_eq!(at(&value, "wa_id"), None);
}

#[test]
fn rfc3339_renders_utc_from_the_calendar() {
    assert_eq!(rfc3339(Some(0)), json!("1970-01-01T00:00:00Z"));
    assert_eq!(rfc3339(Some(1_764_238_453)), json!("2025-11-27T10:14:13Z"));
    assert_eq!(rfc3339(Some(951_782_400)), json!("2000-02-29T00:00:00Z"));
    assert_eq!(rfc3339(Some(1_262_304_000)), json!("2010-01-01T00:00:00Z"));
    assert_eq!(rfc3339(Some(4_107_542_399)), json!("2100-02-28T23:59:59Z"));
    assert_eq!(rfc3339(None), Value::Null);
}

#[test]
fn facts_are_dated_by_timestamp_unless_it_is_unusable() {
    let receipt = 1_800_000_000;
    assert_eq!(dated(Some(receipt - 5), receipt), receipt - 5);
    assert_eq!(dated(Some(receipt + 300), receipt), receipt + 300);
    assert_eq!(dated(Some(receipt + 301), receipt), receipt);
    assert_eq!(dated(Some(EARLIEST_TIMESTAMP - 1), receipt), receipt);
    assert_eq!(dated(None, receipt), receipt);
}
