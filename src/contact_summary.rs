//! A contact's recent messages as its view reads them, filed beside the message items, so that a
//! contact read costs a few reads whatever the contact's pace (issue 18 §2).
//!
//! After every event it applies, a state store resolves the event's message and files a
//! [`Snapshot`] of it under each of the message's contact names: the keys of the items the
//! message spans, and only what [`crate::session::ContactView`] folds (names, business number,
//! direction, sent time, when it reached the customer). A contact read then takes the snapshots
//! sent since [`crate::recent`]'s horizon instead of resolving every message's items.
//!
//! - SQLite replaces a message's snapshot in the transaction that applies the event: one row per
//!   message and name, always whole.
//! - DynamoDB cannot replace without a read-modify-write. There each snapshot is added to a string
//!   set (commutative, idempotent) in the item of its *bucket* ([`bucket_key`]: two hours of sent
//!   time) for every sent time the message holds, and a reader joins the snapshots that share a
//!   key ([`join`]). Older snapshots of a message hold a subset of its facts, and the snapshot
//!   taken by the event whose write completed last holds all of them (it resolved the message
//!   with strongly consistent reads after its own write), so the join is the message. Filing it
//!   under every sent time's bucket means a reader that finds an older snapshot (filed when the
//!   message's least sent time was later) also finds the whole one beside it.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::message::{Direction, MessageRecord};
use crate::message_items::join_by_keys;

/// The sent time one bucket covers: 48 hours of lookback read in about 25 bucket items.
pub const BUCKET_SECONDS: i64 = 2 * 60 * 60;

/// One message as a contact's summary keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The keys of the items the message's resolution reached: one message's snapshots share
    /// them, another message's never do.
    pub keys: BTreeSet<String>,
    /// The facts a contact view reads ([`slim`]).
    pub record: MessageRecord,
}

/// What a contact view reads of a message: its contact names, business number, direction, sent
/// time, and when it reached the customer (as `delivered_at`; read and reply times only count
/// through it). Everything else (ids, template, failure) is the message read's business.
pub fn slim(message: &MessageRecord) -> MessageRecord {
    MessageRecord {
        wa_id: message.wa_id.clone(),
        bsuid: message.bsuid.clone(),
        channel_id: message.channel_id.clone(),
        channel_phone_number: message.channel_phone_number.clone(),
        direction: message.direction,
        sent_at: message.sent_at,
        delivered_at: message.reached_customer_at(),
        ..MessageRecord::default()
    }
}

/// The stored form: short field names, absent fields left out (a snapshot is about 150 bytes
/// plus its keys).
#[derive(Serialize, Deserialize)]
struct Stored {
    k: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    w: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    b: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<Direction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<i64>,
}

impl Snapshot {
    /// The snapshot of `message` (resolved from the items under `keys`), or `None` when a
    /// contact view would never read it: no contact name, or no sent time ([`crate::recent`]).
    pub fn of(keys: impl IntoIterator<Item = String>, message: &MessageRecord) -> Option<Snapshot> {
        message.contact()?;
        message.sent_at?;
        Some(Snapshot {
            keys: keys.into_iter().collect(),
            record: slim(message),
        })
    }

    /// The contact names it is filed under.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        [&self.record.wa_id, &self.record.bsuid]
            .into_iter()
            .flatten()
            .map(String::as_str)
    }

    pub fn encode(&self) -> String {
        let record = &self.record;
        let stored = Stored {
            k: self.keys.clone(),
            w: record.wa_id.clone(),
            b: record.bsuid.clone(),
            c: record.channel_id.clone(),
            p: record.channel_phone_number.clone(),
            d: record.direction,
            s: record.sent_at,
            r: record.delivered_at,
        };
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// `None` for text that is not a snapshot (another version's, or a bug's: DynamoDB's reader
    /// then reads the message items instead).
    pub fn decode(text: &str) -> Option<Snapshot> {
        let stored: Stored = serde_json::from_str(text).ok()?;
        Some(Snapshot {
            keys: stored.k,
            record: MessageRecord {
                wa_id: stored.w,
                bsuid: stored.b,
                channel_id: stored.c,
                channel_phone_number: stored.p,
                direction: stored.d,
                sent_at: stored.s,
                delivered_at: stored.r,
                ..MessageRecord::default()
            },
        })
    }
}

/// The start of the bucket holding sent time `at`.
pub fn bucket_start(at: i64) -> i64 {
    at.clamp(0, 999_999_999_999).div_euclid(BUCKET_SECONDS) * BUCKET_SECONDS
}

/// The sort key of `at`'s bucket: `B#` and its start in 12 digits, so that keys sort as times.
pub fn bucket_key(at: i64) -> String {
    format!("B#{:012}", bucket_start(at))
}

/// The buckets a message's snapshot is filed in: one per distinct bucket of its sent times.
pub fn buckets_of(sent_times: impl IntoIterator<Item = i64>) -> BTreeSet<String> {
    sent_times.into_iter().map(bucket_key).collect()
}

/// One record per message from snapshots read in any order, repeated or stale.
pub fn join(snapshots: impl IntoIterator<Item = Snapshot>) -> Vec<MessageRecord> {
    join_by_keys(snapshots.into_iter().map(|s| (s.keys, s.record)))
}

#[cfg(test)]
mod tests;
