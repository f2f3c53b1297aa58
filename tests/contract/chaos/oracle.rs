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
//!   (or null), `bsuid` the BSUID (or null).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Value};

use super::history::{Callback, Fact, Report};

const DAY: i64 = 86_400;
/// 2010-01-01T00:00:00Z: a `timestamp` before it is no real event time.
const EARLIEST_TIMESTAMP: i64 = 1_262_304_000;
/// How far after its receipt an event's `timestamp` may lie and still date it.
const FUTURE_SLACK: i64 = 300;

/// The fields `GET /v1/messages/{id}` answers (README, "Endpoints").
pub const MESSAGE_FIELDS: [&str; 15] = [
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
];

/// The fields `GET /v1/contacts/{waId}` answers, `session.*` inside `session`.
pub const CONTACT_FIELDS: [&str; 11] = [
    "wa_id",
    "bsuid",
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
        })
    }
}

/// Expected answers for every message and contact, seen at `now`. `receipts[i]` is when
/// callback `i` was first received.
pub fn expect(callbacks: &[Callback], receipts: &[Option<i64>], now: i64) -> Oracle {
    let reports: Vec<(&Report, i64)> = callbacks
        .iter()
        .zip(receipts)
        .filter_map(|(callback, receipt)| {
            let report = callback.report.as_ref()?;
            let receipt = receipt.expect("every callback was received at least once");
            Some((report, dated(report.timestamp, receipt)))
        })
        .collect();

    // Identity: the ids each callback names together.
    let mut ids = Groups::default();
    let mut people = Groups::default();
    for (report, _) in &reports {
        ids.join(message_ids(report).map(|(_, id)| id));
        people.join(report.phone.iter().chain(&report.bsuid));
    }
    let mut messages: BTreeMap<String, Message> = BTreeMap::new();
    for (report, at) in &reports {
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
                view: contact_view(mine, &phones, &bsuids, now),
            }
        })
        .collect();
    Oracle {
        messages: expected_messages,
        contacts: expected_contacts,
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

/// One contact at `now`, from all its messages.
fn contact_view(
    mine: &[&Message],
    phones: &BTreeSet<String>,
    bsuids: &BTreeSet<String>,
    now: i64,
) -> Value {
    assert!(
        phones.len() <= 1 && bsuids.len() <= 1,
        "one phone, one BSUID"
    );
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
    json!({
        "wa_id": phones.first(),
        "bsuid": bsuids.first(),
        "last_inbound_at": rfc3339(last_inbound),
        "last_outbound_at": rfc3339(latest_sent(false)),
        "window_open": window_expires.is_some_and(|expires| now < expires),
        "window_expires_at": rfc3339(window_expires),
        "session": session,
    })
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

/// The fields of `expected` (dotted paths into `session`) that `actual` does not match.
pub fn differences(fields: &[&'static str], expected: &Value, actual: &Value) -> Vec<&'static str> {
    let at = |value: &Value, path: &str| {
        path.split('.')
            .try_fold(value, |value, key| value.get(key))
            .cloned()
    };
    fields
        .iter()
        .copied()
        .filter(|path| at(expected, path) != at(actual, path))
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
