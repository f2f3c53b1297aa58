//! How a message is stored: one item per id, written without read-modify-write, joined at read.
//!
//! Wati names a message by up to three ids (its own `id`, Meta's `whatsappMessageId`, the
//! sender's `localMessageId`) and any event may carry any subset of them. Both state stores file
//! an event's facts under one item, its *home* (the first of the three it names), and write an
//! *edge* item for each other id it names, holding only the ids. Every write is a join (facts keep
//! their least value) guarded by one rule, [`absorb`]: an id, a contact name or a business
//! number, once stored on an item, is never replaced. So writes commute, repeat and interleave freely; nothing is moved,
//! folded or deleted.
//!
//! A message is read back by [`Resolution`]: from the id asked for, follow the ids each item
//! names, keeping an item only when the edge is *confirmed* (each of the two items names the
//! other; a store writes both in one atomic write), and merge every item reached.
//!
//! `linked` on a home item records the ids (and contact links) whose items were written together
//! with it: a store that finds them all there may write the home item alone.

use std::collections::{BTreeMap, BTreeSet};

use crate::message::MessageRecord;

/// Most items one message may span: three ids, with room for legacy aliases. A bound on reads
/// whatever a forged history holds.
pub const MAX_ITEMS_PER_MESSAGE: usize = 8;

/// One stored item: the ids, contact names and facts of every event filed under `key`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageItem {
    /// The id the item is filed under.
    pub key: String,
    pub record: MessageRecord,
    /// Edge and contact-link tokens written in the same atomic write as this item.
    pub linked: BTreeSet<String>,
}

/// One write of a [`Plan`]: join `record` into the item under `key` and add `linked` to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemWrite {
    pub key: String,
    pub record: MessageRecord,
    pub linked: BTreeSet<String>,
}

/// What applying one event writes: its home item and, for each other id it names, an edge item;
/// and the two contact links when it names both a phone number and a BSUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub home: ItemWrite,
    pub edges: Vec<ItemWrite>,
    /// `(wa_id, bsuid)`: one contact's two names.
    pub contact_link: Option<(String, String)>,
    /// The token of this event's exact ids and names, when it has edges or links to write: a
    /// home item holding it may be written alone.
    pub token: Option<String>,
}

impl Plan {
    /// The tokens the plan adds to its home item: its own and that of every narrower event with
    /// the same home (a subset of its ids and names), whose edges and links it writes too.
    pub fn link_tokens(&self) -> &BTreeSet<String> {
        &self.home.linked
    }
}

/// Every narrower tuple of `identity` that keeps the home's id and still needs a token (two ids
/// or more, or both contact names), `identity` itself included.
fn narrower_identities(identity: &MessageRecord, home: &str) -> Vec<MessageRecord> {
    let optional: Vec<usize> = identity_fields(identity)
        .iter()
        .enumerate()
        .filter(|(_, (_, value))| value.is_some_and(|v| v != home))
        .map(|(n, _)| n)
        .collect();
    let mut narrower = Vec::new();
    for mask in 0u32..(1 << optional.len()) {
        let keep = |field: usize| {
            optional
                .iter()
                .position(|&n| n == field)
                .map_or(true, |bit| mask & (1 << bit) != 0)
        };
        let pick = |field: usize, value: &Option<String>| value.clone().filter(|_| keep(field));
        let record = MessageRecord {
            id: pick(0, &identity.id),
            whatsapp_message_id: pick(1, &identity.whatsapp_message_id),
            local_message_id: pick(2, &identity.local_message_id),
            wa_id: pick(3, &identity.wa_id),
            bsuid: pick(4, &identity.bsuid),
            ..MessageRecord::default()
        };
        if record.all_ids().count() >= 2 || (record.wa_id.is_some() && record.bsuid.is_some()) {
            narrower.push(record);
        }
    }
    narrower
}

/// The token that says an event's exact ids and contact names were written to every item they
/// name, with its contact links: a later event naming exactly the same may write its home alone,
/// and gets the same outcome as if it wrote them all (nothing on those items can change). A
/// digest, so that no id can forge another token.
pub fn identity_token(record: &MessageRecord) -> String {
    let fields: Vec<Option<&str>> = identity_fields(record).iter().map(|(_, v)| *v).collect();
    let encoded = serde_json::to_vec(&fields).unwrap_or_default();
    format!("T#{}", &crate::event::sha256_hex(&encoded)[..32])
}

/// The writes one event's facts need, or `None` when they name no message.
pub fn plan(facts: &MessageRecord) -> Option<Plan> {
    let home = facts.primary_id()?.to_owned();
    // Edges carry the event's ids and contact names (checked like the home's), no facts.
    let identity = MessageRecord {
        id: facts.id.clone(),
        whatsapp_message_id: facts.whatsapp_message_id.clone(),
        local_message_id: facts.local_message_id.clone(),
        wa_id: facts.wa_id.clone(),
        bsuid: facts.bsuid.clone(),
        ..MessageRecord::default()
    };
    let others: BTreeSet<String> = facts
        .all_ids()
        .filter(|id| *id != home)
        .map(str::to_owned)
        .collect();
    let contact_link = facts
        .contact_link()
        .map(|(wa_id, bsuid)| (wa_id.to_owned(), bsuid.to_owned()));
    let token = (!others.is_empty() || contact_link.is_some()).then(|| identity_token(&identity));
    let linked: BTreeSet<String> = match token {
        Some(_) => narrower_identities(&identity, &home)
            .iter()
            .map(identity_token)
            .collect(),
        None => BTreeSet::new(),
    };
    Some(Plan {
        home: ItemWrite {
            key: home,
            record: facts.clone(),
            linked,
        },
        edges: others
            .into_iter()
            .map(|key| ItemWrite {
                key,
                record: identity.clone(),
                linked: BTreeSet::new(),
            })
            .collect(),
        contact_link,
        token,
    })
}

/// An event that contradicts what is stored: it would give an item a second value for an id or
/// a contact name. The event is refused (quarantined), never merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} of message item {key:?} is already set to another value")]
pub struct Contradiction {
    pub key: String,
    pub field: &'static str,
}

/// The fields that are set once per item, in the order they are checked.
pub fn identity_fields(record: &MessageRecord) -> [(&'static str, Option<&str>); 5] {
    [
        ("id", record.id.as_deref()),
        ("whatsapp_message_id", record.whatsapp_message_id.as_deref()),
        ("local_message_id", record.local_message_id.as_deref()),
        ("wa_id", record.wa_id.as_deref()),
        ("bsuid", record.bsuid.as_deref()),
    ]
}

/// The fields an item holds one value of, for good: its identity, and the business number a
/// message is on (a message is sent from, or to, one number). Only a home item holds the number.
pub fn set_once_fields(record: &MessageRecord) -> [(&'static str, Option<&str>); 7] {
    let [id, wamid, local, wa_id, bsuid] = identity_fields(record);
    [
        id,
        wamid,
        local,
        wa_id,
        bsuid,
        ("channel_id", record.channel_id.as_deref()),
        (
            "channel_phone_number",
            record.channel_phone_number.as_deref(),
        ),
    ]
}

/// The first set-once field `write` would change on `stored`, if any.
pub fn contradiction(stored: &MessageRecord, write: &ItemWrite) -> Option<Contradiction> {
    set_once_fields(stored)
        .into_iter()
        .zip(set_once_fields(&write.record))
        .find_map(|((field, stored), (_, written))| match (stored, written) {
            (Some(stored), Some(written)) if stored != written => Some(Contradiction {
                key: write.key.clone(),
                field,
            }),
            _ => None,
        })
}

/// The item after `write`: the join of both, or the contradiction that refuses the write.
pub fn absorb(
    stored: Option<MessageItem>,
    write: &ItemWrite,
) -> Result<MessageItem, Contradiction> {
    let mut item = stored.unwrap_or_else(|| MessageItem {
        key: write.key.clone(),
        ..MessageItem::default()
    });
    if let Some(contradiction) = contradiction(&item.record, write) {
        return Err(contradiction);
    }
    item.record.merge(&write.record);
    item.linked.extend(write.linked.iter().cloned());
    Ok(item)
}

/// Whether two items name each other, so that they hold the same message.
pub fn confirmed(a: &MessageItem, b: &MessageItem) -> bool {
    a.record.all_ids().any(|id| id == b.key) && b.record.all_ids().any(|id| id == a.key)
}

/// Reading one message back, a round of fetches at a time: ask [`Resolution::wanted`] which
/// items to fetch, [`Resolution::offer`] what was found (or not), until nothing is wanted.
#[derive(Debug, Clone)]
pub struct Resolution {
    start: String,
    fetched: BTreeMap<String, Option<MessageItem>>,
}

impl Resolution {
    pub fn new(id: &str) -> Resolution {
        Resolution {
            start: id.to_owned(),
            fetched: BTreeMap::new(),
        }
    }

    /// A resolution that starts at `home`, already fetched (an index found it).
    pub fn from_home(home: MessageItem) -> Resolution {
        let mut resolution = Resolution::new(&home.key);
        resolution.offer(&home.key.clone(), Some(home));
        resolution
    }

    /// Keys to fetch next; empty when the message is complete.
    pub fn wanted(&self) -> Vec<String> {
        if !self.fetched.contains_key(&self.start) {
            return vec![self.start.clone()];
        }
        if self.fetched.len() >= MAX_ITEMS_PER_MESSAGE {
            return Vec::new();
        }
        let mut wanted: Vec<String> = self
            .component()
            .iter()
            .flat_map(|item| item.record.all_ids())
            .filter(|id| !self.fetched.contains_key(*id))
            .map(str::to_owned)
            .collect();
        wanted.sort();
        wanted.dedup();
        wanted.truncate(MAX_ITEMS_PER_MESSAGE - self.fetched.len());
        wanted
    }

    pub fn offer(&mut self, key: &str, item: Option<MessageItem>) {
        self.fetched.insert(key.to_owned(), item);
    }

    /// The items reached from the start over confirmed edges.
    fn component(&self) -> Vec<&MessageItem> {
        let Some(Some(start)) = self.fetched.get(&self.start) else {
            return Vec::new();
        };
        let mut reached = vec![start];
        let mut index = 0;
        while index < reached.len() {
            let from = reached[index];
            for id in from.record.all_ids() {
                let Some(Some(to)) = self.fetched.get(id) else {
                    continue;
                };
                if !reached.iter().any(|item| item.key == to.key) && confirmed(from, to) {
                    reached.push(to);
                }
            }
            index += 1;
        }
        reached
    }

    /// The keys of the items the message spans, sorted: equal for every id of one message.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .component()
            .iter()
            .map(|item| item.key.clone())
            .collect();
        keys.sort();
        keys
    }

    /// The message: the join of every item reached; `None` if the id names no item.
    pub fn message(&self) -> Option<MessageRecord> {
        let component = self.component();
        if component.is_empty() {
            return None;
        }
        let mut record = MessageRecord::default();
        for item in component {
            record.merge(&item.record);
        }
        Some(record)
    }
}

/// One record per message: several homes of one contact may resolve to the same message, and
/// a read that saw one of them stale to a part of it: components that share an item are one.
pub fn distinct_messages(resolutions: Vec<Resolution>) -> Vec<MessageRecord> {
    let parts = resolutions.into_iter().filter_map(|resolution| {
        let message = resolution.message()?;
        Some((resolution.keys().into_iter().collect(), message))
    });
    join_by_keys(parts)
}

/// Parts of messages (the keys of the items each was read from, and its facts) joined into one
/// record per message: parts that share a key are one message (true components are disjoint or
/// equal; a part read earlier holds a subset of a later one's items). Order-independent.
pub fn join_by_keys(
    parts: impl IntoIterator<Item = (BTreeSet<String>, MessageRecord)>,
) -> Vec<MessageRecord> {
    let mut groups: Vec<Option<(BTreeSet<String>, MessageRecord)>> = Vec::new();
    let mut owner: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (keys, record) in parts {
        let mut joined: BTreeSet<usize> =
            keys.iter().filter_map(|k| owner.get(k).copied()).collect();
        let target = match joined.pop_first() {
            Some(first) => first,
            None => {
                groups.push(Some((BTreeSet::new(), MessageRecord::default())));
                groups.len() - 1
            }
        };
        let mut absorbed = vec![(keys, record)];
        absorbed.extend(joined.into_iter().filter_map(|other| groups[other].take()));
        let group = groups[target].get_or_insert_with(Default::default);
        for (keys, record) in absorbed {
            group.1.merge(&record);
            for key in keys {
                owner.insert(key.clone(), target);
                group.0.insert(key);
            }
        }
    }
    groups
        .into_iter()
        .flatten()
        .map(|(_, record)| record)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Direction, Failure};
    use proptest::prelude::*;

    /// A map of items, written by applying plans with [`absorb`] (the embedded store's way).
    #[derive(Default, Clone)]
    struct Items(BTreeMap<String, MessageItem>);

    impl Items {
        /// All of a plan's writes, or none of them.
        fn apply(&mut self, facts: &MessageRecord) -> Result<(), Contradiction> {
            let Some(plan) = plan(facts) else {
                return Ok(());
            };
            let mut next = self.0.clone();
            for write in std::iter::once(&plan.home).chain(&plan.edges) {
                let item = absorb(next.remove(&write.key), write)?;
                next.insert(write.key.clone(), item);
            }
            self.0 = next;
            Ok(())
        }

        fn read(&self, id: &str) -> Option<MessageRecord> {
            let mut resolution = Resolution::new(id);
            loop {
                let wanted = resolution.wanted();
                if wanted.is_empty() {
                    return resolution.message();
                }
                for key in wanted {
                    resolution.offer(&key, self.0.get(&key).cloned());
                }
            }
        }
    }

    fn facts(id: Option<&str>, wamid: Option<&str>, local: Option<&str>) -> MessageRecord {
        MessageRecord {
            id: id.map(Into::into),
            whatsapp_message_id: wamid.map(Into::into),
            local_message_id: local.map(Into::into),
            direction: Some(Direction::Outbound),
            ..MessageRecord::default()
        }
    }

    #[test]
    fn a_status_known_only_by_wamid_joins_its_message_once_named_together() {
        let mut items = Items::default();
        let delivered = MessageRecord {
            delivered_at: Some(20),
            ..facts(None, Some("W"), Some("L"))
        };
        let sent = MessageRecord {
            sent_at: Some(10),
            wa_id: Some("1".into()),
            ..facts(Some("R"), Some("W"), None)
        };
        items.apply(&delivered).unwrap();
        items.apply(&sent).unwrap();
        for id in ["R", "W", "L"] {
            let message = items.read(id).unwrap();
            assert_eq!(message.delivered_at, Some(20), "by {id}");
            assert_eq!(message.sent_at, Some(10), "by {id}");
            assert_eq!(message.id.as_deref(), Some("R"), "by {id}");
            assert_eq!(message.local_message_id.as_deref(), Some("L"), "by {id}");
        }
    }

    #[test]
    fn a_forged_wati_id_for_a_known_wamid_is_refused_and_changes_nothing() {
        let mut items = Items::default();
        let real = MessageRecord {
            wa_id: Some("14155550101".into()),
            sent_at: Some(1_700_000_000),
            ..facts(Some("R"), Some("W"), None)
        };
        items.apply(&real).unwrap();
        let before = items.0.clone();
        let forged = MessageRecord {
            wa_id: Some("0".into()),
            read_at: Some(0),
            ..facts(Some("X"), Some("W"), None)
        };
        let refused = items.apply(&forged).unwrap_err();
        assert_eq!(refused.key, "W");
        assert_eq!(refused.field, "id");
        assert_eq!(items.0, before);
        let phone = MessageRecord {
            wa_id: Some("0".into()),
            ..facts(Some("R"), None, None)
        };
        assert_eq!(items.apply(&phone).unwrap_err().field, "wa_id");
    }

    #[test]
    fn an_unconfirmed_edge_is_not_followed() {
        let mut items = Items::default();
        items.apply(&facts(Some("R1"), None, Some("L"))).unwrap();
        // Written by hand as if a store had written one end only: R2 claims L, L names R1.
        items.0.insert(
            "R2".into(),
            MessageItem {
                key: "R2".into(),
                record: facts(Some("R2"), None, Some("L")),
                linked: BTreeSet::new(),
            },
        );
        assert_eq!(items.read("R2").unwrap().id.as_deref(), Some("R2"));
        assert_eq!(items.read("L").unwrap().id.as_deref(), Some("R1"));
    }

    #[test]
    fn the_plan_links_every_id_and_both_contact_names() {
        let record = MessageRecord {
            wa_id: Some("1".into()),
            bsuid: Some("B".into()),
            sent_at: Some(5),
            ..facts(Some("R"), Some("W"), Some("L"))
        };
        let plan = plan(&record).unwrap();
        assert_eq!(plan.home.key, "R");
        let edges: Vec<&str> = plan.edges.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(edges, ["L", "W"]);
        assert!(plan.edges.iter().all(|e| e.record.sent_at.is_none()
            && e.record.direction.is_none()
            && e.record.wa_id.as_deref() == Some("1")
            && e.record.id.as_deref() == Some("R")));
        // Its own and the narrower tuples with the home R that still need one: of the 16 choices
        // of W, L, the phone and the BSUID, those naming W or L (12), or both names (1).
        assert!(plan.link_tokens().contains(plan.token.as_ref().unwrap()));
        assert_eq!(plan.link_tokens().len(), 13);
        assert_eq!(plan.contact_link, Some(("1".into(), "B".into())));
        assert!(super::plan(&MessageRecord::default()).is_none());
        // Another tuple of ids or names is another token; one id alone needs none.
        let v1 = super::plan(&facts(Some("R"), Some("W"), None)).unwrap();
        assert_ne!(v1.token, plan.token);
        assert!(plan.link_tokens().contains(v1.token.as_ref().unwrap()));
        assert!(!v1.link_tokens().contains(plan.token.as_ref().unwrap()));
        let alone = super::plan(&facts(Some("R"), None, None)).unwrap();
        assert!(alone.link_tokens().is_empty() && alone.token.is_none());
    }

    /// A forged status naming a real wamid with another phone number is refused in either
    /// order: edges carry the contact names too.
    #[test]
    fn another_phone_through_an_edge_is_refused() {
        let sent = MessageRecord {
            wa_id: Some("P".into()),
            ..facts(Some("R"), Some("W"), None)
        };
        let forged = MessageRecord {
            wa_id: Some("Q".into()),
            ..facts(None, Some("W"), None)
        };
        let mut items = Items::default();
        items.apply(&sent).unwrap();
        assert_eq!(items.apply(&forged).unwrap_err().field, "wa_id");
        let mut reversed = Items::default();
        reversed.apply(&forged).unwrap();
        assert_eq!(reversed.apply(&sent).unwrap_err().field, "wa_id");
    }

    #[test]
    fn overlapping_reads_of_one_message_count_once() {
        let mut items = Items::default();
        items.apply(&facts(None, Some("W"), None)).unwrap();
        let stale = {
            let mut r = Resolution::new("W");
            r.offer("W", items.0.get("W").cloned());
            r
        };
        items.apply(&facts(Some("R"), Some("W"), None)).unwrap();
        let mut fresh = Resolution::new("R");
        while !fresh.wanted().is_empty() {
            for key in fresh.wanted() {
                fresh.offer(&key, items.0.get(&key).cloned());
            }
        }
        assert_eq!(distinct_messages(vec![stale, fresh]).len(), 1);
    }

    /// Events of one message, as Wati may send them: any subset of its three ids.
    fn any_event() -> impl Strategy<Value = MessageRecord> {
        (
            (any::<bool>(), any::<bool>(), any::<bool>()),
            proptest::option::of(0i64..40),
            proptest::option::of(0i64..40),
            proptest::option::of((0i64..40, proptest::option::of("[ab]"))),
        )
            .prop_filter("names the message", |((r, w, l), ..)| *r || *w || *l)
            .prop_map(|((r, w, l), sent, read, failure)| MessageRecord {
                sent_at: sent,
                read_at: read,
                failure: failure.map(|(at, code)| Failure {
                    at,
                    code,
                    detail: None,
                }),
                ..facts(r.then_some("R"), w.then_some("W"), l.then_some("L"))
            })
    }

    /// The DynamoDB store's way: the home alone when it holds the event's token (and the home
    /// accepts it), else every write of the plan or none.
    fn apply_fast(items: &mut Items, facts: &MessageRecord) -> Result<(), Contradiction> {
        let Some(plan) = plan(facts) else {
            return Ok(());
        };
        let home = items.0.get(&plan.home.key).cloned();
        let fast = match &plan.token {
            None => true,
            Some(token) => home.as_ref().is_some_and(|h| h.linked.contains(token)),
        };
        if fast {
            if let Some(refused) = home
                .as_ref()
                .and_then(|h| contradiction(&h.record, &plan.home))
            {
                return Err(refused);
            }
            // A fast write joins the home's facts only; the tokens are already there.
            let write = ItemWrite {
                linked: BTreeSet::new(),
                ..plan.home.clone()
            };
            let item = absorb(home, &write)?;
            items.0.insert(item.key.clone(), item);
            return Ok(());
        }
        items.apply(facts)
    }

    /// Events naming conflicting ids and names: two Wati ids, two wamids, one local id, two
    /// phone numbers, a BSUID.
    fn any_conflicting_event() -> impl Strategy<Value = MessageRecord> {
        let pick = |choices: &'static [&'static str]| {
            proptest::option::of(proptest::sample::select(choices))
                .prop_map(|v| v.map(str::to_owned))
        };
        (
            pick(&["R1", "R2"]),
            pick(&["W1", "W2"]),
            pick(&["L"]),
            pick(&["P", "Q"]),
            pick(&["B"]),
            proptest::option::of(0i64..40),
        )
            .prop_filter("names a message", |(r, w, l, ..)| {
                r.is_some() || w.is_some() || l.is_some()
            })
            .prop_map(|(id, wamid, local, wa_id, bsuid, read)| MessageRecord {
                id,
                whatsapp_message_id: wamid,
                local_message_id: local,
                wa_id,
                bsuid,
                read_at: read,
                ..MessageRecord::default()
            })
    }

    proptest! {
        /// On any history, conflicting ones included, skipping the edges when the home holds the
        /// event's token refuses the same events and leaves the same answers as writing them all:
        /// the two stores agree.
        #[test]
        fn the_fast_path_changes_no_outcome(
            events in proptest::collection::vec(any_conflicting_event(), 1..12),
        ) {
            let (mut all, mut fast) = (Items::default(), Items::default());
            for event in &events {
                let expected = all.apply(event).is_ok();
                prop_assert_eq!(apply_fast(&mut fast, event).is_ok(), expected, "{:?}", event);
            }
            for id in ["R1", "R2", "W1", "W2", "L"] {
                prop_assert_eq!(all.read(id), fast.read(id), "by {}", id);
            }
        }

        /// Any order and duplication of one message's events gives the same answer by every id,
        /// and that answer is the merge of all events whose ids reach the asked one.
        #[test]
        fn any_order_gives_the_same_message_by_every_id(
            events in proptest::collection::vec(any_event(), 1..8),
            seed in any::<u64>(),
        ) {
            let mut shuffled = events.clone();
            shuffled.extend(events.iter().take(2).cloned());
            crate::message::tests::shuffle(&mut shuffled, seed);
            let (mut a, mut b) = (Items::default(), Items::default());
            for event in &events { a.apply(event).unwrap(); }
            for event in &shuffled { b.apply(event).unwrap(); }
            for id in ["R", "W", "L"] {
                prop_assert_eq!(a.read(id), b.read(id));
                prop_assert_eq!(a.read(id), expected(&events, id));
            }
        }
    }

    /// Written from the rule, not with `Resolution`: ids named together by one event are one
    /// message; its state is the join of every event naming any of its ids.
    fn expected(events: &[MessageRecord], id: &str) -> Option<MessageRecord> {
        let mut names: BTreeSet<String> = BTreeSet::from([id.to_owned()]);
        loop {
            let before = names.len();
            for event in events {
                if event.all_ids().any(|i| names.contains(i)) {
                    names.extend(event.all_ids().map(str::to_owned));
                }
            }
            if names.len() == before {
                break;
            }
        }
        let mine: Vec<&MessageRecord> = events
            .iter()
            .filter(|e| e.all_ids().any(|i| names.contains(i)))
            .collect();
        if mine.is_empty() {
            return None;
        }
        let mut record = MessageRecord::default();
        for event in mine {
            record.merge(event);
        }
        Some(record)
    }
}
