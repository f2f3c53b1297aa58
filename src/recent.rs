//! How much of a contact's history its view is folded from: the messages sent in the 48 hours
//! before its latest sent message, and its latest inbound and latest outbound message. Both
//! stores read only that much (a bounded query by sent time, of the contact summary's snapshots:
//! [`crate::contact_summary`]), so a contact read costs the same after 20,000 messages as after
//! one.
//!
//! Why that is enough:
//! - the window needs only the latest inbound message, and `last_outbound_at` the latest
//!   outbound one: both are always read;
//! - the latest session holds the latest timeline entry and started less than 24 hours before
//!   it; where it started depends on the sessions before, and 48 hours of them decide it
//!   whenever the contact paused for a day in that time. Only a contact that never went 24 hours
//!   without a message in the 48 hours before its latest one may see its session start where a
//!   fold of its whole history would not (the chain of 24-hour sessions can then run back
//!   indefinitely); [`tests`] proves the fold equal otherwise.
//! - a business message is placed on the timeline when it reached the customer; one sent more
//!   than 48 hours before the latest message but delivered later (a phone off for two days) is
//!   not read.
//!
//! A message with no sent time (no callback reporting its send or receipt was seen) is not read:
//! the stores find a contact's messages by the callbacks that name the contact, and those are the
//! ones that report the send.

use crate::message::{Direction, MessageRecord};
use crate::session::DAY_SECONDS;

/// How far before a contact's latest sent message its view reads.
pub const LOOKBACK_SECONDS: i64 = 2 * DAY_SECONDS;

/// The sent times a contact's view reads, from its latest sent message of each direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Horizon {
    /// Messages sent at or after this time are read.
    pub from: i64,
    pub latest_inbound: Option<i64>,
    pub latest_outbound: Option<i64>,
}

impl Horizon {
    /// `None` when the contact has no sent message.
    pub fn new(latest_inbound: Option<i64>, latest_outbound: Option<i64>) -> Option<Horizon> {
        let latest = latest_inbound.max(latest_outbound)?;
        Some(Horizon {
            from: latest.saturating_sub(LOOKBACK_SECONDS),
            latest_inbound,
            latest_outbound,
        })
    }

    /// The horizon of `messages` (one contact's, whole).
    pub fn of<'a>(messages: impl IntoIterator<Item = &'a MessageRecord>) -> Option<Horizon> {
        let mut latest_inbound = None;
        let mut latest_outbound = None;
        for message in messages {
            let latest = match message.direction() {
                Direction::Inbound => &mut latest_inbound,
                Direction::Outbound => &mut latest_outbound,
            };
            *latest = (*latest).max(message.sent_at);
        }
        Horizon::new(latest_inbound, latest_outbound)
    }

    /// Whether the view reads `message`.
    pub fn reads(&self, message: &MessageRecord) -> bool {
        let Some(sent_at) = message.sent_at else {
            return false;
        };
        let latest = match message.direction() {
            Direction::Inbound => self.latest_inbound,
            Direction::Outbound => self.latest_outbound,
        };
        sent_at >= self.from || Some(sent_at) == latest
    }
}

/// The messages of one contact (`messages`: all of them, or any superset of those the view reads
/// that holds the latest of each direction) that its view is folded from.
pub fn recent(messages: &[MessageRecord]) -> Vec<&MessageRecord> {
    let Some(horizon) = Horizon::of(messages) else {
        return Vec::new();
    };
    messages.iter().filter(|m| horizon.reads(m)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{sessions, TimelineEntry};
    use proptest::prelude::*;

    fn message(direction: Direction, sent_at: Option<i64>) -> MessageRecord {
        MessageRecord {
            id: Some(format!("{direction:?}{sent_at:?}")),
            direction: Some(direction),
            sent_at,
            ..MessageRecord::default()
        }
    }

    #[test]
    fn reads_the_last_48_hours_and_the_latest_of_each_direction() {
        let hour = 3_600;
        let now = 1_000 * DAY_SECONDS;
        let old_inbound = message(Direction::Inbound, Some(now - 100 * hour));
        let older_inbound = message(Direction::Inbound, Some(now - 200 * hour));
        let old_outbound = message(Direction::Outbound, Some(now - 49 * hour));
        let edge = message(Direction::Outbound, Some(now - 48 * hour));
        let latest = message(Direction::Outbound, Some(now));
        let unsent = message(Direction::Outbound, None);
        let all = [
            older_inbound,
            old_inbound.clone(),
            old_outbound,
            edge.clone(),
            latest.clone(),
            unsent,
        ];
        assert_eq!(recent(&all), vec![&old_inbound, &edge, &latest]);
        assert!(recent(&[message(Direction::Inbound, None)]).is_empty());
    }

    /// The latest session's start and counts.
    fn latest_session(entries: &[TimelineEntry]) -> Option<(i64, u32, u32)> {
        sessions(entries)
            .last()
            .map(|s| (s.started_at, s.business_messages, s.customer_messages))
    }

    proptest! {
        /// Whenever the contact paused for 24 hours within the 48 hours before its latest
        /// message, the latest session folded from what is read equals the one folded from the
        /// whole history; and what is read never depends on the order of the messages.
        #[test]
        fn the_latest_session_is_the_whole_historys_after_a_pause(
            gaps in proptest::collection::vec((0i64..40 * 3_600, any::<bool>()), 1..60),
            shuffle in any::<u64>(),
        ) {
            let mut at = 1_700_000_000i64;
            let mut all = Vec::new();
            for (gap, inbound) in &gaps {
                at += gap;
                let direction = if *inbound { Direction::Inbound } else { Direction::Outbound };
                all.push(MessageRecord {
                    delivered_at: (!*inbound).then_some(at),
                    ..message(direction, Some(at))
                });
            }
            let entries = |messages: &[&MessageRecord]| -> Vec<TimelineEntry> {
                messages.iter().filter_map(|m| TimelineEntry::of(m)).collect()
            };
            let read = recent(&all);
            let mut shuffled = all.clone();
            let len = shuffled.len();
            for i in 0..len {
                shuffled.swap(i, (shuffle as usize).wrapping_mul(i + 7) % len);
            }
            let mut read_shuffled = recent(&shuffled);
            let key = |m: &&MessageRecord| m.id.clone();
            let mut read_sorted = read.clone();
            read_sorted.sort_by_key(key);
            read_shuffled.sort_by_key(key);
            prop_assert_eq!(&read_sorted, &read_shuffled);

            let latest = all.iter().filter_map(|m| m.sent_at).max().unwrap();
            let times: Vec<i64> = all.iter().filter_map(|m| m.sent_at).collect();
            let paused = times.iter().any(|t| {
                *t >= latest - DAY_SECONDS
                    && !times.iter().any(|u| *u < *t && *u >= t - DAY_SECONDS)
            });
            if paused {
                let whole: Vec<&MessageRecord> = all.iter().collect();
                prop_assert_eq!(latest_session(&entries(&read)), latest_session(&entries(&whole)));
            }
        }
    }
}
