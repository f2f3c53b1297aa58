//! A contact's 24-hour sessions and customer-service window with each business number, folded
//! from its message timeline on that number (WhatsApp's window belongs to one number and one
//! customer together).
//!
//! There is no session event in Wati: sessions are derived at read time from the contact's
//! messages. A session opens when a business message reaches the customer, or when the customer
//! writes, while no session is open; it lasts 24 hours; it is *active* once both sides have a
//! message in it and *inactive* while only one has. Because the timeline is a set sorted before the
//! fold, the result is independent of the order in which events arrived.

use serde::{Deserialize, Serialize};

use crate::channel::{group_by_channel, Channel};
use crate::message::{Direction, MessageRecord};
use crate::time::Rfc3339;

/// Length of a session and of the customer-service window.
pub const DAY_SECONDS: i64 = 24 * 60 * 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    Customer,
    Business,
}

/// A message's place in its contact's sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimelineEntry {
    pub at: i64,
    pub side: Side,
}

impl TimelineEntry {
    /// Customer messages count when sent; business messages once they reached the customer
    /// (a message that was only sent, or failed, opens no session).
    pub fn of(message: &MessageRecord) -> Option<TimelineEntry> {
        match message.direction() {
            Direction::Inbound => message.sent_at.map(|at| TimelineEntry {
                at,
                side: Side::Customer,
            }),
            Direction::Outbound => message.reached_customer_at().map(|at| TimelineEntry {
                at,
                side: Side::Business,
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub started_at: i64,
    pub business_messages: u32,
    pub customer_messages: u32,
}

impl Session {
    pub fn expires_at(&self) -> i64 {
        self.started_at.saturating_add(DAY_SECONDS)
    }
}

/// Splits a timeline into sessions, oldest first.
pub fn sessions(entries: &[TimelineEntry]) -> Vec<Session> {
    let mut sorted = entries.to_vec();
    sorted.sort_unstable();
    let mut sessions: Vec<Session> = Vec::new();
    for entry in sorted {
        let open = sessions
            .last_mut()
            .filter(|session| entry.at < session.expires_at());
        let session = match open {
            Some(session) => session,
            None => {
                sessions.push(Session {
                    started_at: entry.at,
                    business_messages: 0,
                    customer_messages: 0,
                });
                sessions.last_mut().expect("just pushed")
            }
        };
        match entry.side {
            Side::Business => session.business_messages += 1,
            Side::Customer => session.customer_messages += 1,
        }
    }
    sessions
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    Active,
    Inactive,
    Expired,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionView {
    pub state: SessionState,
    pub started_at: Rfc3339,
    pub expires_at: Rfc3339,
    pub business_messages: u32,
    pub customer_messages: u32,
}

/// A contact's sessions and window with one business number: what
/// `GET /v1/contacts/{waId}?channel=<number>` answers, and each entry of `channels`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelView {
    /// The phone number, or `None` for a contact known only by its BSUID.
    pub wa_id: Option<String>,
    pub bsuid: Option<String>,
    /// The business number, as its events state it (`None` if none does).
    pub channel_phone_number: Option<String>,
    /// Wati's `channelId`: `None` for the account's default number.
    pub channel_id: Option<String>,
    pub last_inbound_at: Rfc3339,
    pub last_outbound_at: Rfc3339,
    pub window_open: bool,
    pub window_expires_at: Rfc3339,
    pub session: SessionView,
    /// Where the history this view was folded from starts ([`crate::recent`]'s horizon). As that
    /// window moves, a view can come back to what it showed before: its `contact.updated` id
    /// carries this too, so the newest document is always the view as it is. Not served.
    #[serde(skip)]
    pub reads_from: Option<i64>,
}

/// What `GET /v1/contacts/{waId}` answers: the default number's view at the top level (today's
/// shape, so single-number users see no change), and one entry per number the contact has
/// talked to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContactView {
    #[serde(flatten)]
    pub default: ChannelView,
    pub channels: Vec<ChannelView>,
}

impl ContactView {
    /// The contact's view at `now` from its messages (all, or a superset of those
    /// [`crate::recent`] reads): folded from those it reads; `None` when that is none.
    pub fn from_messages(messages: &[MessageRecord], now: i64) -> Option<Self> {
        ContactFold::of(messages, now).map(|fold| fold.view(now))
    }

    /// The view of the business number `message` is on.
    pub fn view_of(&self, message: &MessageRecord) -> Option<&ChannelView> {
        self.channels
            .iter()
            .find(|channel| channel.channel_id == message.channel_id)
    }

    /// The view for the business number `phone_number` (normalized), if the contact has talked to it.
    pub fn channel(&self, phone_number: &str) -> Option<&ChannelView> {
        self.channels
            .iter()
            .find(|c| c.channel_phone_number.as_deref() == Some(phone_number))
    }
}

/// A contact's view without the reading time: what its messages fold to (names, each number's
/// latest messages and latest session), before [`ContactFold::view`] applies `now` (whether the
/// window is open and the session active). The embedded store keeps it per contact name, so a
/// contact read is one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactFold {
    pub wa_id: Option<String>,
    pub bsuid: Option<String>,
    /// Where the history folded starts ([`ChannelView::reads_from`]).
    pub reads_from: Option<i64>,
    pub channels: Vec<ChannelFold>,
    /// The latest timeline entry, as its message states it. A fold at a `now` before it counts
    /// it at `now` (a session never starts in the future); at or after it, every fold is the
    /// same ([`ContactFold::holds_at`]).
    pub latest_entry_at: Option<i64>,
}

/// One business number's part of a [`ContactFold`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelFold {
    pub channel_phone_number: Option<String>,
    pub channel_id: Option<String>,
    pub last_inbound_at: Option<i64>,
    pub last_outbound_at: Option<i64>,
    pub session: Option<Session>,
}

impl ContactFold {
    /// The fold of a contact's messages (all, or a superset of those [`crate::recent`] reads)
    /// as seen at `now`; `None` when it reads none.
    pub fn of(messages: &[MessageRecord], now: i64) -> Option<ContactFold> {
        let reads_from = crate::recent::Horizon::of(messages).map(|h| h.from);
        let messages = crate::recent::recent(messages);
        if messages.is_empty() {
            return None;
        }
        let wa_id = messages.iter().filter_map(|m| m.wa_id.clone()).min();
        let bsuid = messages.iter().filter_map(|m| m.bsuid.clone()).min();
        let latest_entry_at = messages
            .iter()
            .filter_map(|m| TimelineEntry::of(m))
            .map(|entry| entry.at)
            .max();
        let channels = group_by_channel(messages, |m| m.channel())
            .into_iter()
            .map(|(channel, mine)| ChannelFold::of(&mine, channel, now))
            .collect();
        Some(ContactFold {
            wa_id,
            bsuid,
            reads_from,
            channels,
            latest_entry_at,
        })
    }

    /// The fold of `messages` at no particular time: no entry counted at a reading time. It
    /// is the fold at any `now` it [holds at](ContactFold::holds_at).
    pub fn timeless(messages: &[MessageRecord]) -> Option<ContactFold> {
        ContactFold::of(messages, i64::MAX)
    }

    /// Whether this fold, if [timeless](ContactFold::timeless), is the fold at `now`: no entry
    /// lies after `now`, so none would be counted at the reading time.
    pub fn holds_at(&self, now: i64) -> bool {
        self.latest_entry_at.map_or(true, |at| at <= now)
    }

    /// The view at `now`.
    pub fn view(&self, now: i64) -> ContactView {
        let channels: Vec<ChannelView> = self
            .channels
            .iter()
            .map(|channel| ChannelView {
                reads_from: self.reads_from,
                ..channel.view(&self.wa_id, &self.bsuid, now)
            })
            .collect();
        let default = match channels.first() {
            Some(first) if first.channel_id.is_none() => first.clone(),
            _ => ChannelFold::of(
                &[],
                Channel {
                    id: None,
                    phone_number: None,
                },
                now,
            )
            .view(&self.wa_id, &self.bsuid, now),
        };
        ContactView { default, channels }
    }
}

impl ChannelFold {
    /// One number's fold at `now` from the contact's messages on that number.
    fn of(messages: &[&MessageRecord], channel: Channel, now: i64) -> Self {
        let latest_sent = |direction| {
            messages
                .iter()
                .filter(|m| m.direction() == direction)
                .filter_map(|m| m.sent_at)
                .max()
        };
        // A time a little ahead of ours (Wati's clock may lead by a few minutes) counts as now:
        // a session never starts in the future.
        let timeline: Vec<TimelineEntry> = messages
            .iter()
            .filter_map(|m| TimelineEntry::of(m))
            .map(|entry| TimelineEntry {
                at: entry.at.min(now),
                ..entry
            })
            .collect();
        ChannelFold {
            channel_phone_number: channel.phone_number,
            channel_id: channel.id,
            last_inbound_at: latest_sent(Direction::Inbound),
            last_outbound_at: latest_sent(Direction::Outbound),
            session: sessions(&timeline).last().copied(),
        }
    }

    /// The number's view at `now`.
    fn view(&self, wa_id: &Option<String>, bsuid: &Option<String>, now: i64) -> ChannelView {
        let window_expires_at = self
            .last_inbound_at
            .map(|at| at.saturating_add(DAY_SECONDS));
        ChannelView {
            wa_id: wa_id.clone(),
            bsuid: bsuid.clone(),
            channel_phone_number: self.channel_phone_number.clone(),
            channel_id: self.channel_id.clone(),
            last_inbound_at: Rfc3339(self.last_inbound_at),
            last_outbound_at: Rfc3339(self.last_outbound_at),
            window_open: window_expires_at.is_some_and(|expires| now < expires),
            window_expires_at: Rfc3339(window_expires_at),
            session: session_view(self.session.as_ref(), now),
            reads_from: None,
        }
    }
}

/// The latest session as seen at `now`.
pub fn session_view(latest: Option<&Session>, now: i64) -> SessionView {
    let Some(session) = latest else {
        return SessionView {
            state: SessionState::None,
            started_at: Rfc3339(None),
            expires_at: Rfc3339(None),
            business_messages: 0,
            customer_messages: 0,
        };
    };
    let state = if now >= session.expires_at() {
        SessionState::Expired
    } else if session.business_messages > 0 && session.customer_messages > 0 {
        SessionState::Active
    } else {
        SessionState::Inactive
    };
    SessionView {
        state,
        started_at: Rfc3339(Some(session.started_at)),
        expires_at: Rfc3339(Some(session.expires_at())),
        business_messages: session.business_messages,
        customer_messages: session.customer_messages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn customer(at: i64) -> TimelineEntry {
        TimelineEntry {
            at,
            side: Side::Customer,
        }
    }
    fn business(at: i64) -> TimelineEntry {
        TimelineEntry {
            at,
            side: Side::Business,
        }
    }

    #[test]
    fn customer_writing_first_opens_an_inactive_session() {
        let all = sessions(&[customer(100)]);
        assert_eq!(all.len(), 1);
        let view = session_view(all.last(), 200);
        assert_eq!(view.state, SessionState::Inactive);
        assert_eq!(view.expires_at, Rfc3339(Some(100 + DAY_SECONDS)));
    }

    #[test]
    fn a_reply_within_the_session_makes_it_active() {
        let all = sessions(&[business(160), customer(100)]);
        let view = session_view(all.last(), 200);
        assert_eq!(view.state, SessionState::Active);
        assert_eq!((view.business_messages, view.customer_messages), (1, 1));
        assert_eq!(view.started_at, Rfc3339(Some(100)));
    }

    #[test]
    fn sessions_expire_after_24_hours() {
        let all = sessions(&[customer(100), business(160)]);
        assert_eq!(
            session_view(all.last(), 100 + DAY_SECONDS - 1).state,
            SessionState::Active
        );
        assert_eq!(
            session_view(all.last(), 100 + DAY_SECONDS).state,
            SessionState::Expired
        );
    }

    #[test]
    fn a_message_at_the_expiry_instant_opens_the_next_session() {
        let all = sessions(&[
            customer(0),
            business(DAY_SECONDS),
            customer(DAY_SECONDS + 5),
        ]);
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].started_at, DAY_SECONDS);
        assert_eq!((all[1].business_messages, all[1].customer_messages), (1, 1));
    }

    #[test]
    fn a_business_message_opens_a_session_when_delivered() {
        let all = sessions(&[business(500)]);
        assert_eq!(session_view(all.last(), 600).state, SessionState::Inactive);
        assert_eq!(all[0].started_at, 500);
    }

    #[test]
    fn no_messages_means_no_session() {
        assert_eq!(session_view(None, 0).state, SessionState::None);
    }

    #[test]
    fn undelivered_business_messages_are_off_the_timeline() {
        let sent_only = MessageRecord {
            id: Some("m".into()),
            direction: Some(Direction::Outbound),
            sent_at: Some(10),
            ..Default::default()
        };
        assert_eq!(TimelineEntry::of(&sent_only), None);
    }

    #[test]
    fn window_runs_24_hours_from_the_last_customer_message() {
        let inbound = |at| MessageRecord {
            id: Some(format!("in{at}")),
            wa_id: Some("1".into()),
            direction: Some(Direction::Inbound),
            sent_at: Some(at),
            ..Default::default()
        };
        let view = ContactView::from_messages(&[inbound(10), inbound(50)], 60)
            .unwrap()
            .default;
        assert_eq!(view.window_expires_at, Rfc3339(Some(50 + DAY_SECONDS)));
        assert!(view.window_open);
        assert_eq!(view.last_inbound_at, Rfc3339(Some(50)));
        assert_eq!(view.last_outbound_at, Rfc3339(None));
        let later = ContactView::from_messages(&[inbound(10)], 10 + DAY_SECONDS)
            .unwrap()
            .default;
        assert!(!later.window_open);
    }

    #[test]
    fn a_time_ahead_of_now_counts_as_now() {
        let inbound = MessageRecord {
            id: Some("in".into()),
            bsuid: Some("B".into()),
            direction: Some(Direction::Inbound),
            sent_at: Some(1_000 + 120),
            ..Default::default()
        };
        let view = ContactView::from_messages(&[inbound], 1_000)
            .unwrap()
            .default;
        assert_eq!(view.session.started_at, Rfc3339(Some(1_000)));
        assert_eq!(view.session.state, SessionState::Inactive);
        assert!(view.window_open);
        assert_eq!(view.wa_id, None, "a BSUID is not a phone number");
        assert_eq!(view.bsuid.as_deref(), Some("B"));
    }

    fn on(channel: Option<&str>, phone: Option<&str>, message: MessageRecord) -> MessageRecord {
        MessageRecord {
            channel_id: channel.map(str::to_owned),
            channel_phone_number: phone.map(str::to_owned),
            wa_id: Some("14155550101".into()),
            ..message
        }
    }

    fn written_at(at: i64) -> MessageRecord {
        MessageRecord {
            id: Some(format!("in{at}")),
            direction: Some(Direction::Inbound),
            sent_at: Some(at),
            ..Default::default()
        }
    }

    fn delivered_at(at: i64) -> MessageRecord {
        MessageRecord {
            id: Some(format!("out{at}")),
            direction: Some(Direction::Outbound),
            sent_at: Some(at),
            delivered_at: Some(at + 1),
            ..Default::default()
        }
    }

    /// The customer wrote to number B only: the default number's window stays closed.
    #[test]
    fn writing_to_one_number_opens_no_window_for_another() {
        let view = ContactView::from_messages(
            &[
                on(None, Some("100"), delivered_at(1_000)),
                on(Some("c2"), Some("200"), written_at(5_000)),
            ],
            6_000,
        )
        .unwrap();
        assert!(!view.default.window_open);
        assert_eq!(view.default.last_inbound_at, Rfc3339(None));
        assert_eq!(view.default.session.state, SessionState::Inactive);
        assert_eq!(view.default.session.started_at, Rfc3339(Some(1_001)));
        let b = view.channel("200").expect("number B");
        assert!(b.window_open);
        assert_eq!(b.window_expires_at, Rfc3339(Some(5_000 + DAY_SECONDS)));
        assert_eq!(b.session.started_at, Rfc3339(Some(5_000)));
        assert_eq!(
            (b.session.business_messages, b.session.customer_messages),
            (0, 1)
        );
        assert_eq!(b.channel_id.as_deref(), Some("c2"));
        assert_eq!(view.channel("100").unwrap().channel_id, None);
        assert_eq!(view.channel("300"), None);
        assert_eq!(view.channels.len(), 2);
        assert_eq!(view.channels[0], view.default);
    }

    /// Two numbers' messages in one day are two sessions, never one active session.
    #[test]
    fn sessions_of_two_numbers_never_merge() {
        let view = ContactView::from_messages(
            &[
                on(None, None, written_at(1_000)),
                on(Some("c2"), Some("200"), delivered_at(2_000)),
            ],
            3_000,
        )
        .unwrap();
        assert_eq!(view.default.session.state, SessionState::Inactive);
        assert_eq!(view.channels[1].session.state, SessionState::Inactive);
        assert_eq!(view.default.last_outbound_at, Rfc3339(None));
        let merged_into_one = ContactView::from_messages(
            &[
                on(None, None, written_at(1_000)),
                on(None, None, delivered_at(2_000)),
            ],
            3_000,
        )
        .unwrap();
        assert_eq!(merged_into_one.default.session.state, SessionState::Active);
    }

    #[test]
    fn a_contact_only_on_another_number_has_an_empty_default_view() {
        let view =
            ContactView::from_messages(&[on(Some("c2"), Some("200"), written_at(10))], 20).unwrap();
        assert_eq!(view.default.session.state, SessionState::None);
        assert!(!view.default.window_open);
        assert_eq!(view.default.wa_id.as_deref(), Some("14155550101"));
        assert_eq!(view.default.channel_id, None);
        assert_eq!(
            view.channels.len(),
            1,
            "only the numbers the contact talked to"
        );
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["window_open"], false);
        assert_eq!(json["channel_id"], serde_json::Value::Null);
        assert_eq!(json["channels"][0]["channel_phone_number"], "200");
        assert_eq!(json["channels"][0]["channel_id"], "c2");
        assert_eq!(json["channels"][0]["window_open"], true);
    }

    fn any_entry() -> impl Strategy<Value = TimelineEntry> {
        (0i64..4 * DAY_SECONDS, any::<bool>()).prop_map(|(at, by_customer)| TimelineEntry {
            at,
            side: if by_customer {
                Side::Customer
            } else {
                Side::Business
            },
        })
    }

    proptest! {
        /// The sessions depend on the set of entries, not on their order.
        #[test]
        fn order_does_not_matter(entries in proptest::collection::vec(any_entry(), 0..20), seed in any::<u64>()) {
            let mut shuffled = entries.clone();
            crate::message::tests::shuffle(&mut shuffled, seed);
            prop_assert_eq!(sessions(&entries), sessions(&shuffled));
        }

        /// Sessions never overlap, each lasts a day, and every entry is counted exactly once.
        #[test]
        fn sessions_partition_the_timeline(entries in proptest::collection::vec(any_entry(), 0..20)) {
            let all = sessions(&entries);
            for pair in all.windows(2) {
                prop_assert!(pair[1].started_at >= pair[0].expires_at());
            }
            let counted: u32 = all.iter().map(|s| s.business_messages + s.customer_messages).sum();
            prop_assert_eq!(counted as usize, entries.len());
            for entry in &entries {
                prop_assert!(all.iter().any(|s| s.started_at <= entry.at && entry.at < s.expires_at()));
            }
        }

        /// A timeless fold, kept and read back later, gives the view at any `now` it holds at;
        /// it holds at every `now` from its latest entry on.
        #[test]
        fn a_kept_fold_is_the_view_wherever_it_holds(
            messages in proptest::collection::vec(any_message(), 0..12),
            now in 0i64..400_000,
        ) {
            let kept = ContactFold::timeless(&messages)
                .map(|fold| serde_json::to_string(&fold).unwrap())
                .map(|json| serde_json::from_str::<ContactFold>(&json).unwrap());
            let latest = messages
                .iter()
                .filter_map(TimelineEntry::of)
                .map(|entry| entry.at)
                .filter(|at| crate::recent::recent(&messages).iter().any(|m| {
                    TimelineEntry::of(m).is_some_and(|e| e.at == *at)
                }))
                .max();
            let holds = kept.as_ref().is_some_and(|fold| fold.holds_at(now));
            prop_assert_eq!(holds, kept.is_some() && latest.map_or(true, |at| at <= now));
            if holds || kept.is_none() {
                prop_assert_eq!(
                    kept.map(|fold| fold.view(now)),
                    ContactView::from_messages(&messages, now)
                );
            }
        }
    }

    fn any_message() -> impl Strategy<Value = MessageRecord> {
        (
            any::<bool>(),
            prop::option::of(0i64..300_000),
            prop::option::of(0i64..300_000),
            0u8..3,
        )
            .prop_map(|(inbound, sent_at, delivered_at, channel)| MessageRecord {
                wa_id: Some("14155550100".into()),
                channel_id: (channel > 0).then(|| format!("ch{channel}")),
                direction: Some(if inbound {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                }),
                sent_at,
                delivered_at,
                ..MessageRecord::default()
            })
    }

    #[test]
    fn a_fold_with_an_entry_after_now_does_not_hold_then() {
        let message = MessageRecord {
            wa_id: Some("14155550100".into()),
            direction: Some(Direction::Inbound),
            sent_at: Some(1_000),
            ..MessageRecord::default()
        };
        let fold = ContactFold::timeless(std::slice::from_ref(&message)).unwrap();
        assert!(!fold.holds_at(999));
        assert!(fold.holds_at(1_000));
        // Read before it, the customer's message counts as sent now.
        let early = ContactView::from_messages(&[message], 500).unwrap();
        assert_eq!(early.default.session.started_at, Rfc3339(Some(500)));
        assert_ne!(fold.view(500), early);
    }
}
