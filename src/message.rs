//! A message's state as a merge of facts, and its status.
//!
//! Every message event becomes a [`MessageRecord`] holding only what that event knows. Records merge
//! with [`MessageRecord::merge`], a join that is commutative, associative and idempotent: each
//! timestamp keeps its earliest value, each text its least. So the stored state is the same for any
//! arrival order and any number of duplicates, and the status is derived, never overwritten.

use serde::{Deserialize, Serialize};

use crate::event::{EventKind, WatiEvent};
use crate::failure_reasons::{reason_for, FailureReason};
use crate::time::Rfc3339;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// Ranked lowest to highest: a higher status is never replaced by a lower one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Received,
    Sent,
    Failed,
    Delivered,
    Read,
    Replied,
}

/// Why a message failed, ordered so that the earliest failure wins a merge.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Failure {
    pub at: i64,
    pub code: Option<String>,
    pub detail: Option<String>,
}

/// The longest id (message id, wamid, local id, waId, BSUID) the state store keeps. Real ones are
/// under 100 bytes; DynamoDB refuses keys over 2 KiB, so longer ones are quarantined, not retried.
pub const MAX_ID_BYTES: usize = 512;

/// Everything known about one message. Also the shape of a single event's facts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MessageRecord {
    /// Wati's message id.
    pub id: Option<String>,
    pub whatsapp_message_id: Option<String>,
    pub local_message_id: Option<String>,
    pub wa_id: Option<String>,
    pub bsuid: Option<String>,
    /// The business number's Wati `channelId`, when an event of the message states it; a message
    /// none of whose events does is on the account's default number ([`crate::channel`]).
    pub channel_id: Option<String>,
    /// The business number's phone number, normalized, when an event states it.
    pub channel_phone_number: Option<String>,
    pub direction: Option<Direction>,
    pub template_name: Option<String>,
    /// When its author sent it (the customer for inbound messages).
    pub sent_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub read_at: Option<i64>,
    pub replied_at: Option<i64>,
    pub failure: Option<Failure>,
}

impl MessageRecord {
    /// The facts one event states about its message, or `None` when the event is not about a
    /// message or names none. `received_at` (the first receipt of the event's key) dates a fact
    /// whose `timestamp` is missing or not credible (see [`fact_time`]).
    pub fn from_event(event: &WatiEvent, received_at: i64) -> Option<MessageRecord> {
        if event.id.is_none()
            && event.whatsapp_message_id.is_none()
            && event.local_message_id.is_none()
        {
            return None;
        }
        let at = fact_time(event.timestamp, received_at);
        let mut facts = MessageRecord {
            id: event.id.clone(),
            whatsapp_message_id: event.whatsapp_message_id.clone(),
            local_message_id: event.local_message_id.clone(),
            wa_id: event.wa_id.clone(),
            bsuid: event.bsuid.clone(),
            channel_id: event.channel_id.clone(),
            channel_phone_number: event.channel_phone_number.clone(),
            direction: Some(Direction::Outbound),
            template_name: event.template_name.clone(),
            ..MessageRecord::default()
        };
        match event.kind {
            EventKind::Message | EventKind::NewContactMessage => {
                if event.owner != Some(true) {
                    facts.direction = Some(Direction::Inbound);
                }
                facts.sent_at = Some(at);
            }
            EventKind::SessionMessageSent | EventKind::TemplateMessageSent => {
                facts.sent_at = Some(at)
            }
            EventKind::Delivered => facts.delivered_at = Some(at),
            EventKind::Read => facts.read_at = Some(at),
            EventKind::Replied => facts.replied_at = Some(at),
            EventKind::TemplateMessageFailed | EventKind::SessionMessageFailed => {
                facts.failure = Some(Failure {
                    at,
                    code: event.failed_code.clone(),
                    detail: event.failed_detail.clone(),
                })
            }
            EventKind::TemplateReviewed
            | EventKind::TemplateQualityUpdated
            | EventKind::Other(_) => return None,
        }
        Some(facts)
    }

    /// Joins another record's facts into this one. Commutative, associative and idempotent.
    pub fn merge(&mut self, other: &MessageRecord) {
        merge_least(&mut self.id, &other.id);
        merge_least(&mut self.whatsapp_message_id, &other.whatsapp_message_id);
        merge_least(&mut self.local_message_id, &other.local_message_id);
        merge_least(&mut self.wa_id, &other.wa_id);
        merge_least(&mut self.bsuid, &other.bsuid);
        merge_least(&mut self.channel_id, &other.channel_id);
        merge_least(&mut self.channel_phone_number, &other.channel_phone_number);
        merge_least(&mut self.direction, &other.direction);
        merge_least(&mut self.template_name, &other.template_name);
        merge_least(&mut self.sent_at, &other.sent_at);
        merge_least(&mut self.delivered_at, &other.delivered_at);
        merge_least(&mut self.read_at, &other.read_at);
        merge_least(&mut self.replied_at, &other.replied_at);
        merge_least(&mut self.failure, &other.failure);
    }

    pub fn direction(&self) -> Direction {
        self.direction.unwrap_or(Direction::Outbound)
    }

    /// The highest-ranked status with a timestamp; `received` for the customer's messages.
    pub fn status(&self) -> Status {
        if self.direction() == Direction::Inbound {
            return Status::Received;
        }
        [
            (self.replied_at, Status::Replied),
            (self.read_at, Status::Read),
            (self.delivered_at, Status::Delivered),
            (self.failure.as_ref().map(|f| f.at), Status::Failed),
        ]
        .into_iter()
        .find_map(|(at, status)| at.map(|_| status))
        .unwrap_or(Status::Sent)
    }

    /// When a business message reached the customer's phone. Meta skips "delivered" when a
    /// message is read at once, so read and replied times count too.
    pub fn reached_customer_at(&self) -> Option<i64> {
        [self.delivered_at, self.read_at, self.replied_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// The contact this message belongs to: the phone number when known, else the BSUID.
    pub fn contact(&self) -> Option<&str> {
        self.wa_id.as_deref().or(self.bsuid.as_deref())
    }

    /// The phone number and BSUID, when it names both: one contact's two names, which the
    /// state stores link (whether one event named both or each came from another).
    pub fn contact_link(&self) -> Option<(&str, &str)> {
        Some((self.wa_id.as_deref()?, self.bsuid.as_deref()?))
    }

    /// The id the state store files this message under: Wati's id when known.
    pub fn primary_id(&self) -> Option<&str> {
        self.id
            .as_deref()
            .or(self.whatsapp_message_id.as_deref())
            .or(self.local_message_id.as_deref())
    }

    /// The business number as [`crate::channel::group_by_channel`] reads it: `(channelId, phone)`.
    pub fn channel(&self) -> (Option<&str>, Option<&str>) {
        (
            self.channel_id.as_deref(),
            self.channel_phone_number.as_deref(),
        )
    }

    /// The first id or contact name longer than [`MAX_ID_BYTES`], if any.
    pub fn oversized_id(&self) -> Option<&str> {
        [
            &self.id,
            &self.whatsapp_message_id,
            &self.local_message_id,
            &self.wa_id,
            &self.bsuid,
            &self.channel_id,
            &self.channel_phone_number,
        ]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .find(|id| id.len() > MAX_ID_BYTES)
    }

    /// Every id a reader may look this message up by.
    pub fn all_ids(&self) -> impl Iterator<Item = &str> {
        [
            self.id.as_deref(),
            self.whatsapp_message_id.as_deref(),
            self.local_message_id.as_deref(),
        ]
        .into_iter()
        .flatten()
    }
}

/// Wati's clock may run ahead of ours by this much before its timestamps stop being believed.
pub const MAX_CLOCK_LEAD_SECONDS: i64 = 300;

/// 2010-01-01T00:00:00Z: no WhatsApp Business message is older (the API dates from 2018).
pub const EARLIEST_CREDIBLE_TIME: i64 = 1_262_304_000;

/// When a fact happened: the event's own `timestamp`, unless it is missing, before 2010, or more
/// than [`MAX_CLOCK_LEAD_SECONDS`] after the event's receipt; then the receipt time. Wati's
/// timestamps are data, not truth: a status dated next month would otherwise hide the session
/// that is open now, and `"0"` would pin a time to 1970 for good (earliest wins).
pub fn fact_time(timestamp: Option<i64>, received_at: i64) -> i64 {
    match timestamp {
        Some(at)
            if at >= EARLIEST_CREDIBLE_TIME
                && at <= received_at.saturating_add(MAX_CLOCK_LEAD_SECONDS) =>
        {
            at
        }
        _ => received_at,
    }
}

/// `None` is the bottom; two present values keep the least.
fn merge_least<T: Ord + Clone>(mine: &mut Option<T>, theirs: &Option<T>) {
    if let Some(theirs) = theirs {
        match mine {
            Some(mine) if *mine <= *theirs => {}
            _ => *mine = Some(theirs.clone()),
        }
    }
}

/// What `GET /v1/messages/{id}` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageView {
    pub id: Option<String>,
    pub whatsapp_message_id: Option<String>,
    pub local_message_id: Option<String>,
    pub wa_id: Option<String>,
    pub bsuid: Option<String>,
    /// The business number; `null` when no event of the message stated it.
    pub channel_phone_number: Option<String>,
    /// Wati's `channelId`: `null` for the account's default number.
    pub channel_id: Option<String>,
    pub direction: Direction,
    pub status: Status,
    pub template_name: Option<String>,
    pub sent_at: Rfc3339,
    pub delivered_at: Rfc3339,
    pub read_at: Rfc3339,
    pub replied_at: Rfc3339,
    pub failed_at: Rfc3339,
    pub failed_code: Option<String>,
    pub failed_detail: Option<String>,
    /// What `failed_code` means and what to do ([`crate::failure_reasons`]): `null` when the
    /// message did not fail or its code is not in the table (Meta's reference has them all).
    pub failed_reason: Option<&'static FailureReason>,
}

impl From<&MessageRecord> for MessageView {
    fn from(record: &MessageRecord) -> Self {
        let failure = record.failure.as_ref();
        MessageView {
            id: record.id.clone(),
            whatsapp_message_id: record.whatsapp_message_id.clone(),
            local_message_id: record.local_message_id.clone(),
            wa_id: record.wa_id.clone(),
            bsuid: record.bsuid.clone(),
            channel_phone_number: record.channel_phone_number.clone(),
            channel_id: record.channel_id.clone(),
            direction: record.direction(),
            status: record.status(),
            template_name: record.template_name.clone(),
            sent_at: Rfc3339(record.sent_at),
            delivered_at: Rfc3339(record.delivered_at),
            read_at: Rfc3339(record.read_at),
            replied_at: Rfc3339(record.replied_at),
            failed_at: Rfc3339(failure.map(|f| f.at)),
            failed_code: failure.and_then(|f| f.code.clone()),
            failed_detail: failure.and_then(|f| f.detail.clone()),
            failed_reason: failure.and_then(|f| f.code.as_deref()).and_then(reason_for),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event(json: &str) -> WatiEvent {
        WatiEvent::parse(json.as_bytes()).unwrap()
    }

    /// Receipt time of the test events: their timestamps are a few seconds after 1.7e9.
    const RECEIVED: i64 = 1_800_000_000;

    fn facts(json: &str) -> MessageRecord {
        MessageRecord::from_event(&event(json), RECEIVED).unwrap()
    }

    fn merged(records: &[MessageRecord]) -> MessageRecord {
        let mut state = MessageRecord::default();
        for record in records {
            state.merge(record);
        }
        state
    }

    #[test]
    fn read_before_delivered_ends_read_with_both_times() {
        let sent = facts(
            r#"{"eventType":"sessionMessageSent","id":"m","waId":"1","timestamp":"1700000010"}"#,
        );
        let delivered =
            facts(r#"{"eventType":"sentMessageDELIVERED","id":"m","timestamp":"1700000020"}"#);
        let read = facts(r#"{"eventType":"sentMessageREAD_v2","id":"m","timestamp":"1700000030"}"#);
        let state = merged(&[read.clone(), delivered.clone(), sent.clone()]);
        assert_eq!(state.status(), Status::Read);
        assert_eq!(state.delivered_at, Some(1_700_000_020));
        assert_eq!(state.read_at, Some(1_700_000_030));
        assert_eq!(state.wa_id.as_deref(), Some("1"));
        assert_eq!(state, merged(&[sent, delivered, read]));
    }

    #[test]
    fn failure_never_hides_a_delivery() {
        let delivered =
            facts(r#"{"eventType":"sentMessageDELIVERED","id":"m","timestamp":"1700000020"}"#);
        let failed = facts(
            r#"{"eventType":"templateMessageFailed","id":"m","failedCode":"131026","failedDetail":"x","timestamp":"1700000025"}"#,
        );
        let state = merged(&[delivered, failed]);
        assert_eq!(state.status(), Status::Delivered);
        assert_eq!(
            state.failure.as_ref().unwrap().code.as_deref(),
            Some("131026")
        );
    }

    #[test]
    fn failure_outranks_sent() {
        let sent =
            facts(r#"{"eventType":"templateMessageSent","id":"m","timestamp":"1700000010"}"#);
        let failed =
            facts(r#"{"eventType":"sessionMessageFailed","id":"m","timestamp":"1700000011"}"#);
        assert_eq!(merged(&[failed, sent]).status(), Status::Failed);
    }

    #[test]
    fn customer_messages_are_received() {
        let record =
            facts(r#"{"eventType":"message","id":"m","owner":false,"timestamp":"1700000010"}"#);
        assert_eq!(record.status(), Status::Received);
        assert_eq!(record.direction(), Direction::Inbound);
        let business =
            facts(r#"{"eventType":"message","id":"m","owner":true,"timestamp":"1700000010"}"#);
        assert_eq!(business.direction(), Direction::Outbound);
    }

    #[test]
    fn missing_timestamp_uses_the_receipt_time() {
        let record = facts(r#"{"eventType":"sentMessageREAD","id":"m"}"#);
        assert_eq!(record.read_at, Some(RECEIVED));
    }

    #[test]
    fn incredible_timestamps_are_dated_by_the_receipt() {
        let received = 1_764_238_453;
        let at = |body: &str| {
            MessageRecord::from_event(&event(body), received)
                .unwrap()
                .delivered_at
                .unwrap()
        };
        let delivered = |ts: &str| {
            format!(r#"{{"eventType":"sentMessageDELIVERED","id":"m","timestamp":"{ts}"}}"#)
        };
        assert_eq!(at(&delivered("0")), received);
        assert_eq!(at(&delivered("1262303999")), received);
        assert_eq!(at(&delivered("1262304000")), 1_262_304_000);
        assert_eq!(at(&delivered("1764238753")), received + 300);
        assert_eq!(at(&delivered("1764238754")), received);
        let a_month_ahead = (received + 30 * 86_400).to_string();
        assert_eq!(at(&delivered(&a_month_ahead)), received);
        assert_eq!(at(&delivered("253402300800")), received); // year 10000
        assert_eq!(at(&delivered("1764230000")), 1_764_230_000);
    }

    /// Written from the rule "each status keeps its earliest time": fails if merge keeps the
    /// latest, in either order.
    #[test]
    fn each_time_keeps_its_earliest_value_in_either_order() {
        let early =
            facts(r#"{"eventType":"sentMessageDELIVERED","id":"m","timestamp":"1700000010"}"#);
        let late =
            facts(r#"{"eventType":"sentMessageDELIVERED","id":"m","timestamp":"1700000020"}"#);
        assert_eq!(
            merged(&[early.clone(), late.clone()]).delivered_at,
            Some(1_700_000_010)
        );
        assert_eq!(merged(&[late, early]).delivered_at, Some(1_700_000_010));
        let failed = |ts: &str, code: &str| {
            facts(&format!(
                r#"{{"eventType":"sessionMessageFailed","id":"m","timestamp":"{ts}","failedCode":"{code}","failedDetail":"d{code}"}}"#
            ))
        };
        for order in [
            [failed("1700000030", "2"), failed("1700000031", "1")],
            [failed("1700000031", "1"), failed("1700000030", "2")],
        ] {
            let failure = merged(&order).failure.unwrap();
            assert_eq!(
                (
                    failure.at,
                    failure.code.as_deref(),
                    failure.detail.as_deref()
                ),
                (1_700_000_030, Some("2"), Some("d2"))
            );
        }
    }

    #[test]
    fn events_without_a_message_give_no_facts() {
        assert_eq!(
            MessageRecord::from_event(&event(r#"{"eventType":"sentMessageREAD"}"#), 1),
            None
        );
        assert_eq!(
            MessageRecord::from_event(&event(r#"{"eventType":"templateReviewed","id":"t"}"#), 1),
            None
        );
        assert_eq!(
            MessageRecord::from_event(&event(r#"{"eventType":"paymentCaptured","id":"p"}"#), 1),
            None
        );
    }

    #[test]
    fn reached_customer_is_the_earliest_sign_of_delivery() {
        let read = facts(r#"{"eventType":"sentMessageREAD","id":"m","timestamp":"1700000030"}"#);
        assert_eq!(read.reached_customer_at(), Some(1_700_000_030));
        let state = merged(&[
            read,
            facts(r#"{"eventType":"sentMessageDELIVERED","id":"m","timestamp":"1700000020"}"#),
        ]);
        assert_eq!(state.reached_customer_at(), Some(1_700_000_020));
    }

    #[test]
    fn view_renders_rfc3339_and_nulls() {
        let view = MessageView::from(&facts(
            r#"{"eventType":"sentMessageDELIVERED","id":"m","timestamp":"1764238453"}"#,
        ));
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["delivered_at"], "2025-11-27T10:14:13Z");
        assert_eq!(json["sent_at"], serde_json::Value::Null);
        assert_eq!(json["status"], "delivered");
        assert_eq!(json["direction"], "outbound");
    }

    #[test]
    fn an_id_over_the_limit_is_found_wherever_it_is() {
        let long = "x".repeat(MAX_ID_BYTES + 1);
        let fine = facts(r#"{"eventType":"sentMessageREAD","id":"m","whatsappMessageId":"w"}"#);
        assert_eq!(fine.oversized_id(), None);
        let at_limit = MessageRecord {
            wa_id: Some("9".repeat(MAX_ID_BYTES)),
            ..fine.clone()
        };
        assert_eq!(at_limit.oversized_id(), None);
        let oversized = MessageRecord {
            bsuid: Some(long.clone()),
            ..fine
        };
        assert_eq!(oversized.oversized_id(), Some(long.as_str()));
    }

    /// Facts about one message, as varied as real events: any subset of ids, times and failures.
    fn any_facts() -> impl Strategy<Value = MessageRecord> {
        let text = || proptest::option::of(prop_oneof![Just("a".to_owned()), Just("b".to_owned())]);
        let time = || proptest::option::of(0i64..50);
        (
            (text(), text(), text(), text(), text()),
            proptest::option::of(prop_oneof![
                Just(Direction::Inbound),
                Just(Direction::Outbound)
            ]),
            (time(), time(), time(), time()),
            proptest::option::of((0i64..50, text(), text())),
            (text(), text()),
        )
            .prop_map(
                |((id, wamid, local, wa_id, template), direction, times, failure, channel)| {
                    MessageRecord {
                        id,
                        whatsapp_message_id: wamid,
                        local_message_id: local,
                        wa_id,
                        bsuid: None,
                        channel_id: channel.0,
                        channel_phone_number: channel.1,
                        direction,
                        template_name: template,
                        sent_at: times.0,
                        delivered_at: times.1,
                        read_at: times.2,
                        replied_at: times.3,
                        failure: failure.map(|(at, code, detail)| Failure { at, code, detail }),
                    }
                },
            )
    }

    proptest! {
        /// Any permutation and duplication of the same facts converges to the same state.
        #[test]
        fn any_order_and_duplicates_converge(
            all in proptest::collection::vec(any_facts(), 1..8),
            duplicates in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
            seed in any::<u64>(),
        ) {
            let reference = merged(&all);
            let mut delivered = all.clone();
            delivered.extend(duplicates.iter().map(|i| all[i.index(all.len())].clone()));
            shuffle(&mut delivered, seed);
            let state = merged(&delivered);
            prop_assert_eq!(&state, &reference);
            prop_assert_eq!(state.status(), reference.status());
        }

        #[test]
        fn merge_is_a_join(a in any_facts(), b in any_facts(), c in any_facts()) {
            let ab = merged(&[a.clone(), b.clone()]);
            prop_assert_eq!(&ab, &merged(&[b.clone(), a.clone()]));
            prop_assert_eq!(&merged(&[ab.clone(), c.clone()]), &merged(&[a.clone(), merged(&[b.clone(), c.clone()])]));
            prop_assert_eq!(&merged(&[a.clone(), a.clone()]), &merged(std::slice::from_ref(&a)));
        }

        /// A lower status never replaces a higher one: adding facts never lowers the status.
        #[test]
        fn status_only_rises(a in any_facts(), b in any_facts()) {
            let mut state = a.clone();
            state.merge(&b);
            if a.direction() == state.direction() {
                prop_assert!(state.status() >= a.status());
            }
        }
    }

    /// Deterministic Fisher-Yates with a tiny LCG, so a failing case replays from its seed.
    pub(crate) fn shuffle<T>(items: &mut [T], mut seed: u64) {
        for i in (1..items.len()).rev() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            items.swap(i, (seed >> 33) as usize % (i + 1));
        }
    }
}
