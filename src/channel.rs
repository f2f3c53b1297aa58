//! Which of the account's business numbers (Wati "channels") a message belongs to.
//!
//! One Wati account may send and receive from several WhatsApp numbers. Its events then carry
//! `channelId` (null for the account's default number) and `channelPhoneNumber`. A message is on
//! the number its own events state; an event that states nothing (a status, or a payload from a
//! single-number account) leaves it to the message's other events, and a message that no event
//! places is on the default number. So data stored before numbers were parsed reads as the
//! default number's, and a status takes its message's number in any arrival order: the number
//! is a fact of the message, joined at read time like its contact.
//!
//! `channelId` is the key (Wati's docs: one id per number, null for the default); the phone
//! number is what people know, so reads look a number up by it.

use std::collections::BTreeMap;

/// The fewest and most digits a business number may have in `?channel=` (E.164 allows 15; a
/// little slack for national formats).
const MIN_NUMBER_DIGITS: usize = 5;
const MAX_NUMBER_DIGITS: usize = 20;

/// Characters people write inside phone numbers that carry no digit.
fn is_phone_punctuation(c: char) -> bool {
    matches!(c, ' ' | '-' | '(' | ')' | '.')
}

/// A business number as it is stored and compared: the digits alone when it is written as a
/// phone number (`+1 415-555 0100` → `14155550100`), else the trimmed text as given (data, not
/// something to guess at). `None` for an empty value.
pub fn normalize_business_number(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    let unsigned = trimmed.strip_prefix('+').unwrap_or(trimmed);
    let digits: String = unsigned
        .chars()
        .filter(|c| !is_phone_punctuation(*c))
        .collect();
    if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
        Some(digits)
    } else if trimmed.is_empty() {
        None
    } else {
        Some(trimmed.to_owned())
    }
}

/// A `?channel=` value that is not a phone number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("channel must be a business phone number ({MIN_NUMBER_DIGITS} to {MAX_NUMBER_DIGITS} digits, an optional leading +)")]
pub struct MalformedChannel;

/// The business number a reader asks for, normalized as stored numbers are.
pub fn parse_channel_query(raw: &str) -> Result<String, MalformedChannel> {
    let number = normalize_business_number(raw).ok_or(MalformedChannel)?;
    let digits = number.len();
    if number.chars().all(|c| c.is_ascii_digit())
        && (MIN_NUMBER_DIGITS..=MAX_NUMBER_DIGITS).contains(&digits)
    {
        Ok(number)
    } else {
        Err(MalformedChannel)
    }
}

/// One business number as a contact's messages describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Wati's `channelId`; `None` is the account's default number.
    pub id: Option<String>,
    /// The phone number its messages state most often (ties: the least); `None` if none does.
    pub phone_number: Option<String>,
}

/// One channel's items, and how many of them state each phone number.
type Members<T> = (BTreeMap<String, usize>, Vec<T>);

/// Groups items by the channel they are on (`channel_id`, `None` = the default number), the
/// default number first, then by channel id. Each group's phone number is the one most of its
/// items state, so a stray status cannot rename a number.
pub fn group_by_channel<T>(
    items: Vec<T>,
    channel_of: impl Fn(&T) -> (Option<&str>, Option<&str>),
) -> Vec<(Channel, Vec<T>)> {
    let mut groups: BTreeMap<Option<String>, Members<T>> = BTreeMap::new();
    for item in items {
        let (id, phone) = channel_of(&item);
        let (phones, members) = groups.entry(id.map(str::to_owned)).or_default();
        if let Some(phone) = phone {
            *phones.entry(phone.to_owned()).or_default() += 1;
        }
        members.push(item);
    }
    groups
        .into_iter()
        .map(|(id, (phones, members))| {
            // Most stated first, then least: `max_by_key` keeps the last maximum, so reverse.
            let phone_number = phones
                .into_iter()
                .rev()
                .max_by_key(|(_, count)| *count)
                .map(|(phone, _)| phone);
            (Channel { id, phone_number }, members)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn phone_numbers_are_stored_as_digits() {
        for raw in [
            "14155550100",
            "+14155550100",
            " +1 415-555 0100 ",
            "+1 (415) 555.0100",
        ] {
            assert_eq!(
                normalize_business_number(raw).as_deref(),
                Some("14155550100"),
                "{raw}"
            );
        }
        assert_eq!(normalize_business_number(""), None);
        assert_eq!(normalize_business_number("   "), None);
        assert_eq!(
            normalize_business_number(" main-line ").as_deref(),
            Some("main-line"),
            "a value that is not a phone number is kept as given"
        );
        assert_eq!(normalize_business_number("+").as_deref(), Some("+"));
    }

    #[test]
    fn the_channel_query_takes_phone_numbers_only() {
        assert_eq!(parse_channel_query("+14155550100").unwrap(), "14155550100");
        assert_eq!(parse_channel_query("14155550100").unwrap(), "14155550100");
        assert_eq!(parse_channel_query("12345").unwrap(), "12345");
        for malformed in [
            "",
            "1234",
            "123456789012345678901",
            "abc",
            "6734a09f1c2b3a4d5e6f7c02",
            "+",
        ] {
            assert_eq!(
                parse_channel_query(malformed),
                Err(MalformedChannel),
                "{malformed}"
            );
        }
    }

    fn channels(items: &[(Option<&'static str>, Option<&'static str>)]) -> Vec<Channel> {
        group_by_channel(items.to_vec(), |(id, phone)| (*id, *phone))
            .into_iter()
            .map(|(channel, _)| channel)
            .collect()
    }

    #[test]
    fn the_default_number_comes_first_and_absent_ids_are_the_default() {
        let grouped = channels(&[
            (Some("c2"), Some("2")),
            (None, None),
            (Some("c1"), None),
            (None, Some("1")),
        ]);
        let ids: Vec<Option<&str>> = grouped.iter().map(|c| c.id.as_deref()).collect();
        assert_eq!(ids, [None, Some("c1"), Some("c2")]);
        assert_eq!(grouped[0].phone_number.as_deref(), Some("1"));
        assert_eq!(grouped[1].phone_number, None);
    }

    #[test]
    fn a_channels_number_is_the_one_most_of_its_messages_state() {
        let grouped = channels(&[
            (None, Some("9")),
            (None, Some("5")),
            (None, Some("5")),
            (None, None),
        ]);
        assert_eq!(grouped[0].phone_number.as_deref(), Some("5"));
        let tie = channels(&[(None, Some("9")), (None, Some("5"))]);
        assert_eq!(tie[0].phone_number.as_deref(), Some("5"), "ties: the least");
    }

    proptest! {
        /// Every item lands in exactly one group, the one of its id, whatever the order.
        #[test]
        fn grouping_partitions_the_items(
            items in proptest::collection::vec(
                (proptest::option::of(0u8..3), proptest::option::of(0u8..3)), 0..20),
            seed in any::<u64>(),
        ) {
            let named: Vec<(Option<String>, Option<String>)> = items
                .iter()
                .map(|(id, phone)| (id.map(|i| format!("c{i}")), phone.map(|p| format!("{p}"))))
                .collect();
            let group = |list: Vec<(Option<String>, Option<String>)>| {
                group_by_channel(list, |(id, phone)| (id.as_deref(), phone.as_deref()))
            };
            let grouped = group(named.clone());
            let total: usize = grouped.iter().map(|(_, members)| members.len()).sum();
            prop_assert_eq!(total, named.len());
            for (channel, members) in &grouped {
                prop_assert!(members.iter().all(|(id, _)| *id == channel.id));
            }
            let mut shuffled = named.clone();
            crate::message::tests::shuffle(&mut shuffled, seed);
            let channels_of = |g: Vec<(Channel, Vec<_>)>| g.into_iter().map(|(c, _)| c).collect::<Vec<_>>();
            prop_assert_eq!(channels_of(group(shuffled)), channels_of(grouped));
        }
    }
}
