use super::*;
use crate::session::ContactView;
use proptest::prelude::*;

fn outbound(keys: &[&str], sent_at: i64) -> Snapshot {
    Snapshot {
        keys: keys.iter().map(|k| k.to_string()).collect(),
        record: MessageRecord {
            wa_id: Some("447700900001".into()),
            direction: Some(Direction::Outbound),
            sent_at: Some(sent_at),
            ..MessageRecord::default()
        },
    }
}

#[test]
fn a_view_reads_the_earliest_of_delivered_read_and_replied_as_reached() {
    let message = MessageRecord {
        id: Some("w1".into()),
        template_name: Some("welcome".into()),
        wa_id: Some("447700900001".into()),
        sent_at: Some(100),
        delivered_at: Some(300),
        read_at: Some(200),
        replied_at: Some(400),
        ..MessageRecord::default()
    };
    let kept = slim(&message);
    assert_eq!(kept.delivered_at, Some(200));
    assert_eq!((kept.read_at, kept.replied_at), (None, None));
    assert_eq!((kept.id, kept.template_name), (None, None));
    assert_eq!(kept.sent_at, Some(100));
}

#[test]
fn no_snapshot_without_a_contact_or_a_sent_time() {
    let named = MessageRecord {
        bsuid: Some("US.123".into()),
        sent_at: Some(5),
        ..MessageRecord::default()
    };
    assert!(Snapshot::of(["k".to_owned()], &named).is_some());
    let unsent = MessageRecord {
        sent_at: None,
        ..named.clone()
    };
    assert!(Snapshot::of(["k".to_owned()], &unsent).is_none());
    let nameless = MessageRecord {
        bsuid: None,
        ..named
    };
    assert!(Snapshot::of(["k".to_owned()], &nameless).is_none());
}

#[test]
fn buckets_are_two_hours_and_their_keys_sort_as_times() {
    assert_eq!(bucket_key(7_199), "B#000000000000");
    assert_eq!(bucket_key(7_200), "B#000000007200");
    assert_eq!(bucket_key(-5), "B#000000000000");
    assert!(bucket_key(99_999) < bucket_key(100_000_000));
    assert_eq!(buckets_of([10, 20, 7_300]).len(), 2);
}

#[test]
fn text_that_is_not_a_snapshot_decodes_to_none() {
    assert_eq!(Snapshot::decode("not json"), None);
    assert_eq!(Snapshot::decode("{\"w\":\"1\"}"), None);
}

#[test]
fn a_stale_snapshot_joins_the_whole_one_and_takes_its_earlier_time() {
    // Filed when the message's least sent time was 9,000; the whole one knows 1,000 too.
    let stale = outbound(&["w1"], 9_000);
    let whole = outbound(&["m1", "w1"], 1_000);
    let other = outbound(&["w2"], 5_000);
    let mut joined = join([stale, other, whole]);
    joined.sort_by_key(|m| m.sent_at);
    let times: Vec<_> = joined.iter().map(|m| m.sent_at).collect();
    assert_eq!(times, vec![Some(1_000), Some(5_000)]);
}

/// One message: its keys, and the facts each of its events adds.
#[derive(Debug, Clone)]
struct History {
    keys: Vec<String>,
    events: Vec<MessageRecord>,
}

fn histories() -> impl Strategy<Value = Vec<History>> {
    let event = (
        0i64..3,
        prop::option::of(0i64..200_000),
        prop::option::of(0i64..200_000),
        prop::option::of(0i64..200_000),
        any::<bool>(),
        0u8..3,
    )
        .prop_map(
            |(name, sent, delivered, read, inbound, channel)| MessageRecord {
                // Every event names the contact: by phone, by both names, or by BSUID alone.
                wa_id: (name != 2).then(|| format!("4477009000{name}")),
                bsuid: (name >= 1).then(|| format!("US.{name}")),
                channel_id: (channel > 0).then(|| format!("ch{channel}")),
                direction: Some(if inbound {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                }),
                sent_at: sent,
                delivered_at: delivered,
                read_at: read,
                ..MessageRecord::default()
            },
        );
    prop::collection::vec((1usize..4, prop::collection::vec(event, 1..5)), 1..12).prop_map(
        |messages| {
            messages
                .into_iter()
                .enumerate()
                .map(|(n, (key_count, events))| History {
                    keys: (0..key_count).map(|k| format!("m{n}k{k}")).collect(),
                    events,
                })
                .collect()
        },
    )
}

/// The message after all its events: the join of their facts, taken field by field here.
fn whole(history: &History) -> MessageRecord {
    let least =
        |pick: fn(&MessageRecord) -> Option<i64>| history.events.iter().filter_map(pick).min();
    let least_text =
        |pick: fn(&MessageRecord) -> Option<String>| history.events.iter().filter_map(pick).min();
    MessageRecord {
        wa_id: least_text(|e| e.wa_id.clone()),
        bsuid: least_text(|e| e.bsuid.clone()),
        channel_id: least_text(|e| e.channel_id.clone()),
        direction: history.events.iter().filter_map(|e| e.direction).min(),
        sent_at: least(|e| e.sent_at),
        delivered_at: least(|e| e.delivered_at),
        read_at: least(|e| e.read_at),
        ..MessageRecord::default()
    }
}

proptest! {
    /// Snapshots taken after each event (of the facts so far, under the keys reached so far),
    /// read back in any order with repeats, join to each message's whole facts; and a contact
    /// view folded from them equals the view folded from the messages themselves.
    #[test]
    fn snapshots_in_any_order_join_to_the_whole_messages(
        messages in histories(),
        order in any::<u64>(),
        now in 0i64..300_000,
    ) {
        let mut snapshots = Vec::new();
        for history in &messages {
            let mut so_far = MessageRecord::default();
            for (n, event) in history.events.iter().enumerate() {
                so_far.merge(event);
                // Before the items were linked, an event's resolution reached its own alone.
                let reached = vec![history.keys[n % history.keys.len()].clone()];
                if let Some(snapshot) = Snapshot::of(reached, &so_far) {
                    snapshots.push(snapshot.clone());
                    snapshots.push(snapshot);
                }
            }
            // The event whose write completed last saw every item.
            if let Some(snapshot) = Snapshot::of(history.keys.clone(), &so_far) {
                snapshots.push(snapshot);
            }
        }
        let len = snapshots.len();
        for i in 0..len {
            snapshots.swap(i, (order as usize).wrapping_mul(i + 3) % len);
        }
        let decoded: Vec<Snapshot> = snapshots
            .iter()
            .map(|s| Snapshot::decode(&s.encode()).expect("round trip"))
            .collect();
        prop_assert_eq!(&decoded, &snapshots);

        let mut joined = join(decoded);
        let mut expected: Vec<MessageRecord> = messages
            .iter()
            .map(whole)
            .filter(|m| m.sent_at.is_some() && (m.wa_id.is_some() || m.bsuid.is_some()))
            .map(|m| MessageRecord {
                delivered_at: m.delivered_at.into_iter().chain(m.read_at).min(),
                read_at: None,
                ..m
            })
            .collect();
        let order_key = |m: &MessageRecord| format!("{m:?}");
        joined.sort_by_key(order_key);
        expected.sort_by_key(order_key);
        prop_assert_eq!(&joined, &expected);

        let full: Vec<MessageRecord> = messages.iter().map(whole).collect();
        prop_assert_eq!(
            ContactView::from_messages(&joined, now),
            ContactView::from_messages(&full, now)
        );
    }
}

/// The sizes `docs/capacity.md` and `infra/README.md` reckon with: about 190 bytes for a
/// delivered template message known by Wati's id and a wamid, on a phone number and a business
/// number; about 260 with a BSUID and a sender's local id as well (the most a message carries).
#[test]
fn a_snapshot_encodes_in_190_to_260_bytes() {
    let mut message = MessageRecord {
        wa_id: Some("447700900001".into()),
        channel_id: Some("1000".into()),
        channel_phone_number: Some("14155550000".into()),
        direction: Some(Direction::Outbound),
        sent_at: Some(1_764_238_453),
        delivered_at: Some(1_764_238_460),
        ..MessageRecord::default()
    };
    let mut keys = vec![
        "6925a1b2c3d4e5f6a7b8c9d0".to_owned(),
        "wamid.HBgLMTQxNTU1NTAxMDIVAgARGBI5QTNDQTVCM0UzQjg4RkE2NEUA".to_owned(),
    ];
    let size = |keys: &[String], message: &MessageRecord| {
        let snapshot = Snapshot::of(keys.iter().cloned(), message).expect("a snapshot");
        snapshot.encode().len()
    };
    let typical = size(&keys, &message);
    assert!((170..=210).contains(&typical), "typical: {typical} bytes");
    message.bsuid = Some("US.13491208655302741918".into());
    keys.push("2f6e1c7a-58b4-4a52-9d3e-6c1f0b7a9e21".to_owned());
    let largest = size(&keys, &message);
    assert!((240..=280).contains(&largest), "largest: {largest} bytes");
}
