//! Erasing one contact (a person's right to erasure): what names them, and which stored bodies
//! mention them. Pure; the stores delete behind [`crate::ports::Erasure`].
//!
//! A contact is named by its phone number (`waId`) and its BSUIDs (linked to each other in
//! state); its messages by their ids (Wati's, Meta's, the sender's). A status event names only
//! its message, so a body is the contact's when it names any of these: as a parsed event's
//! field, or anywhere in its text as a whole token (quarantined bodies may not parse at all).
//!
//! Order, so that an interrupted erasure can be run again: first the bodies (found through the
//! state's message ids), then the state itself.

use std::collections::BTreeSet;

use crate::event::WatiEvent;
use crate::message::MessageRecord;
use crate::ports::{Erasure, StoreError};

/// Erases `contact` from `store`: its bodies, then its state. Running it again erases what an
/// interrupted run left, and then nothing.
pub async fn erase_contact(
    store: &dyn Erasure,
    contact: &str,
) -> Result<(ContactIdentifiers, Erased), StoreError> {
    let ids = store.identify(contact).await?;
    let bodies = store.erase_bodies(&ids).await?;
    let state = store.erase_state(&ids).await?;
    Ok((ids, bodies + state))
}

/// Shorter identifiers are not searched for in bodies: as tokens they could name anything.
pub const MIN_TOKEN_CHARS: usize = 5;

/// Everything that names one contact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactIdentifiers {
    /// Its phone number and BSUIDs.
    pub names: BTreeSet<String>,
    /// Every id of every message of the contact.
    pub message_ids: BTreeSet<String>,
}

impl ContactIdentifiers {
    pub fn new(contact: &str) -> Self {
        ContactIdentifiers {
            names: BTreeSet::from([contact.to_owned()]),
            message_ids: BTreeSet::new(),
        }
    }

    /// Adds a message of the contact: its ids and the names it states.
    pub fn add_message(&mut self, record: &MessageRecord) {
        let ids = [
            &record.id,
            &record.whatsapp_message_id,
            &record.local_message_id,
        ];
        self.message_ids.extend(ids.into_iter().flatten().cloned());
        let names = [&record.wa_id, &record.bsuid];
        self.names.extend(names.into_iter().flatten().cloned());
    }

    /// Whether a stored body (an event as Wati sent it, or a change document) is about the
    /// contact.
    pub fn mentioned_in(&self, body: &[u8]) -> bool {
        if let Ok(event) = WatiEvent::parse(body) {
            let names = [&event.wa_id, &event.bsuid];
            let ids = [
                &event.id,
                &event.whatsapp_message_id,
                &event.local_message_id,
            ];
            if names.into_iter().flatten().any(|n| self.names.contains(n))
                || ids
                    .into_iter()
                    .flatten()
                    .any(|i| self.message_ids.contains(i))
            {
                return true;
            }
        }
        let text = String::from_utf8_lossy(body);
        self.names
            .iter()
            .chain(&self.message_ids)
            .filter(|token| token.chars().count() >= MIN_TOKEN_CHARS)
            .any(|token| contains_token(&text, token))
    }
}

/// Whether `token` occurs in `text` with no letter or digit right before or after it (so
/// `4155550101` is not found in `14155550101`, but is in `"+4155550101"`).
pub fn contains_token(text: &str, token: &str) -> bool {
    if token.is_empty() {
        return false;
    }
    text.match_indices(token).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + token.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// What one erasure deleted, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Erased {
    /// Message items or rows (every id's, on DynamoDB).
    pub messages: usize,
    /// Id aliases and contact links.
    pub links: usize,
    /// Window timers.
    pub windows: usize,
    /// Recent-message summaries ([`crate::contact_summary`]): rows locally, bucket items on
    /// DynamoDB.
    pub summaries: usize,
    /// Change documents (the local outbox) and their forwarding records.
    pub changes: usize,
    /// Archived bodies in the ledger.
    pub ledger: usize,
    /// Quarantined bodies (receiver's and processor's).
    pub quarantined: usize,
    /// Queued and dead-lettered events (local).
    pub queued: usize,
}

impl Erased {
    pub fn total(&self) -> usize {
        self.messages
            + self.links
            + self.windows
            + self.summaries
            + self.changes
            + self.ledger
            + self.quarantined
            + self.queued
    }
}

impl std::ops::Add for Erased {
    type Output = Erased;
    fn add(self, other: Erased) -> Erased {
        Erased {
            messages: self.messages + other.messages,
            links: self.links + other.links,
            windows: self.windows + other.windows,
            summaries: self.summaries + other.summaries,
            changes: self.changes + other.changes,
            ledger: self.ledger + other.ledger,
            quarantined: self.quarantined + other.quarantined,
            queued: self.queued + other.queued,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(contact: &str, messages: &[&str]) -> ContactIdentifiers {
        let mut ids = ContactIdentifiers::new(contact);
        ids.message_ids
            .extend(messages.iter().map(|m| m.to_string()));
        ids
    }

    #[test]
    fn tokens_are_whole() {
        assert!(contains_token(r#"{"waId":"14155550101"}"#, "14155550101"));
        assert!(contains_token("+14155550101 wrote", "14155550101"));
        assert!(!contains_token("14155550101", "4155550101"));
        assert!(!contains_token("41555501012", "4155550101"));
        assert!(contains_token("a 4155550101, b", "4155550101"));
        assert!(contains_token("x 4155550101", "4155550101"));
        assert!(!contains_token("anything", ""));
        // The second occurrence counts when the first is part of a longer number.
        assert!(contains_token("14155550101 4155550101", "4155550101"));
        // Multi-byte text around a token.
        assert!(!contains_token("é4155550101", "4155550101"));
        assert!(contains_token("—4155550101—", "4155550101"));
    }

    #[test]
    fn a_status_event_is_the_contacts_through_its_message_id() {
        let ids = of("14155550101", &["6734a1b2c3d4e5f601000003"]);
        let status = br#"{"eventType":"sentMessageDELIVERED","id":"6734a1b2c3d4e5f601000003"}"#;
        let other = br#"{"eventType":"sentMessageDELIVERED","id":"6734a1b2c3d4e5f601000004"}"#;
        assert!(ids.mentioned_in(status));
        assert!(!ids.mentioned_in(other));
    }

    #[test]
    fn an_inbound_message_or_a_broken_body_is_the_contacts_through_its_number() {
        let ids = of("14155550101", &[]);
        assert!(ids.mentioned_in(
            br#"{"eventType":"message","id":"x1","waId":"14155550101","text":"hi"}"#
        ));
        assert!(ids.mentioned_in(br#"{"waId":"14155550101", truncated"#));
        assert!(!ids.mentioned_in(
            br#"{"eventType":"message","id":"x1","waId":"14155550102","text":"hi"}"#
        ));
        // A short identifier is matched as a parsed field only, never as text.
        let short = of("1234", &[]);
        assert!(!short.mentioned_in(br#"{"text":"call 1234"}"#));
        assert!(short.mentioned_in(br#"{"eventType":"message","waId":"1234"}"#));
    }

    #[test]
    fn a_message_adds_its_ids_and_names() {
        let mut ids = ContactIdentifiers::new("14155550101");
        ids.add_message(&MessageRecord {
            id: Some("w1".into()),
            whatsapp_message_id: Some("wamid.A".into()),
            local_message_id: None,
            bsuid: Some("US.13491208655302741918".into()),
            ..MessageRecord::default()
        });
        assert_eq!(
            ids.message_ids,
            BTreeSet::from(["w1".to_string(), "wamid.A".to_string()])
        );
        assert!(ids.names.contains("US.13491208655302741918"));
    }

    #[test]
    fn counts_add_up() {
        let one = Erased {
            messages: 2,
            ledger: 3,
            ..Erased::default()
        };
        let two = Erased {
            links: 1,
            queued: 4,
            ..Erased::default()
        };
        assert_eq!((one + two).total(), 10);
    }
}
