//! A contact's messages a page at a time, newest sent first (`GET
//! /v1/contacts/{waId}/messages?before=<cursor>&limit=<n>`).
//!
//! Both stores list the items that name the contact and report a send (the ones a contact read
//! finds, [`crate::recent`]) by `(sent time, item key)`, descending: each of the contact's names
//! and each direction is one stream in that order (an index range on either store). A page asks
//! every stream for `limit + 1` items after the cursor and [`cut`] merges them: the first `limit`
//! are the page, and there is a next page exactly when more came back. The cursor is the last
//! item's position, opaque to clients ([`encode_cursor`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::message::MessageRecord;

/// Most messages one page holds, and the default.
pub const MAX_LIMIT: usize = 100;
pub const DEFAULT_LIMIT: usize = 25;

/// An item's place in the list: its sent time, then its key (both descending).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub sent_at: i64,
    pub key: String,
}

impl Position {
    /// Whether this position comes after `cursor` in the list (is older, or as old with a lower
    /// key): the items a page after `cursor` may hold.
    pub fn is_after(&self, cursor: &Position) -> bool {
        self < cursor
    }
}

/// One page: its messages (newest first) and where the next starts, if there is one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessagePage {
    pub messages: Vec<MessageRecord>,
    pub next: Option<Position>,
}

/// Merges what the streams gave after `before` (each up to `limit + 1` items, in any order,
/// maybe the same item twice) into the page's positions and the next cursor.
pub fn cut<T>(
    mut found: Vec<(Position, T)>,
    before: Option<&Position>,
    limit: usize,
) -> (Vec<(Position, T)>, Option<Position>) {
    found.retain(|(position, _)| before.map_or(true, |cursor| position.is_after(cursor)));
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found.dedup_by(|a, b| a.0 == b.0);
    if found.len() <= limit {
        return (found, None);
    }
    found.truncate(limit);
    let next = found.last().map(|(position, _)| position.clone());
    (found, next)
}

/// The cursor clients see: `p1.` and the position in URL-safe base64 (opaque, so that its form
/// may change).
pub fn encode_cursor(position: &Position) -> String {
    format!(
        "p1.{}",
        URL_SAFE_NO_PAD.encode(format!("{}:{}", position.sent_at, position.key))
    )
}

/// The position a cursor names, or `None` if it is not one this API gave.
pub fn decode_cursor(cursor: &str) -> Option<Position> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor.strip_prefix("p1.")?).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (sent_at, key) = text.split_once(':')?;
    Some(Position {
        sent_at: sent_at.parse().ok()?,
        key: key.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(sent_at: i64, key: &str) -> Position {
        Position {
            sent_at,
            key: key.to_owned(),
        }
    }

    #[test]
    fn cursors_round_trip_and_refuse_what_they_did_not_give() {
        let position = at(1_764_238_453, "wamid.HBgL/+x:y");
        assert_eq!(
            decode_cursor(&encode_cursor(&position)),
            Some(position.clone())
        );
        for bad in ["", "p1.", "p1.!!", "p2.MTox", "MTox", "p1.eA", "p1.eDp5"] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    proptest! {
        /// Paging through any set of items with any limit, each stream cut at `limit + 1` after
        /// the cursor, visits every item once, newest first.
        #[test]
        fn pages_visit_every_item_once_newest_first(
            items in proptest::collection::btree_set((0i64..50, "[a-c]{1,2}", 0usize..3), 0..60),
            limit in 1usize..8,
        ) {
            let all: Vec<(Position, usize)> =
                items.iter().map(|(t, k, s)| (at(*t, k), *s)).collect();
            let mut expected: Vec<Position> = all.iter().map(|(p, _)| p.clone()).collect();
            expected.sort();
            expected.dedup();
            expected.reverse();
            let mut seen = Vec::new();
            let mut cursor: Option<Position> = None;
            loop {
                // Each stream (the usize) gives its first `limit + 1` after the cursor.
                let mut found = Vec::new();
                for stream in 0..3 {
                    let mut mine: Vec<(Position, usize)> = all
                        .iter()
                        .filter(|(p, s)| *s == stream && cursor.as_ref().map_or(true, |c| p.is_after(c)))
                        .cloned()
                        .collect();
                    mine.sort_by(|a, b| b.0.cmp(&a.0));
                    mine.truncate(limit + 1);
                    found.extend(mine);
                }
                let (page, next) = cut(found, cursor.as_ref(), limit);
                prop_assert!(page.len() <= limit);
                seen.extend(page.into_iter().map(|(p, _)| p));
                match next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            prop_assert_eq!(seen, expected);
        }
    }
}
