//! The bus: change documents as `PutEvents` entries (with the size fallback), the EventBridge
//! client behind a small trait, and publishing with only failed entries retried.

use async_trait::async_trait;

use super::{PublishSettings, MAX_ENTRY_BYTES, PUT_EVENTS_MAX_ENTRIES, SOURCE};
use crate::changes::ChangeDocument;

/// One `PutEvents` entry (the bus and `Source` are the publisher's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusEntry {
    pub id: String,
    pub detail_type: &'static str,
    pub detail: String,
}

impl BusEntry {
    /// The entry's size as EventBridge counts it against [`MAX_ENTRY_BYTES`] (no `Time`, no
    /// `Resources`).
    pub fn size(&self) -> usize {
        SOURCE.len() + self.detail_type.len() + self.detail.len()
    }
}

/// Where to read a document's view instead, when it is too large to carry.
pub fn href_of(document: &ChangeDocument) -> Option<String> {
    if let Some(message) = &document.message {
        let id = message
            .id
            .as_deref()
            .or(message.whatsapp_message_id.as_deref())
            .or(message.local_message_id.as_deref())?;
        return Some(format!("/v1/messages/{id}"));
    }
    let contact = document.contact.as_ref()?;
    let name = contact.wa_id.as_deref().or(contact.bsuid.as_deref())?;
    Some(match &contact.channel_phone_number {
        Some(number) => format!("/v1/contacts/{name}?channel={number}"),
        None => format!("/v1/contacts/{name}"),
    })
}

/// The document as a bus entry: whole when it fits, else the same id and type with an `href`
/// in place of its view. `true` when it had to be slimmed.
pub fn entry_for(document: &ChangeDocument) -> (BusEntry, bool) {
    let detail_type = document.kind.name();
    let whole = BusEntry {
        id: document.id.clone(),
        detail_type,
        detail: serde_json::to_string(document).unwrap_or_default(),
    };
    if whole.size() <= MAX_ENTRY_BYTES {
        return (whole, false);
    }
    let slim = ChangeDocument {
        href: href_of(document),
        message: None,
        contact: None,
        ..document.clone()
    };
    let entry = BusEntry {
        detail: serde_json::to_string(&slim).unwrap_or_default(),
        ..whole
    };
    (entry, true)
}

/// An event bus.
#[async_trait]
pub trait ChangeBus: Send + Sync {
    /// One `PutEvents` call of at most [`PUT_EVENTS_MAX_ENTRIES`] entries: for each entry, in
    /// order, `None` when the bus took it, else its error code. `Err`: the call failed whole.
    async fn put_events(&self, entries: &[BusEntry]) -> Result<Vec<Option<String>>, String>;
}

/// The EventBridge bus named by `CHANGE_BUS_NAME`.
#[derive(Debug, Clone)]
pub struct EventBridgeBus {
    client: aws_sdk_eventbridge::Client,
    bus_name: String,
}

impl EventBridgeBus {
    pub fn new(client: aws_sdk_eventbridge::Client, bus_name: impl Into<String>) -> Self {
        EventBridgeBus {
            client,
            bus_name: bus_name.into(),
        }
    }
}

#[async_trait]
impl ChangeBus for EventBridgeBus {
    async fn put_events(&self, entries: &[BusEntry]) -> Result<Vec<Option<String>>, String> {
        let request = entries.iter().map(|entry| {
            aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                .event_bus_name(&self.bus_name)
                .source(SOURCE)
                .detail_type(entry.detail_type)
                .detail(&entry.detail)
                .build()
        });
        let output = self
            .client
            .put_events()
            .set_entries(Some(request.collect()))
            .send()
            .await
            .map_err(|e| aws_sdk_eventbridge::error::DisplayErrorContext(e).to_string())?;
        let results = output.entries();
        Ok((0..entries.len())
            .map(|n| match results.get(n) {
                // An entry without an error code was taken (it has an event id).
                Some(result) => result
                    .error_code()
                    .map(str::to_owned)
                    .or_else(|| result.event_id().is_none().then(|| "NoEventId".to_owned())),
                None => Some("NoResult".to_owned()),
            })
            .collect())
    }
}

/// What [`publish`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// Entries the bus took.
    pub published: usize,
    /// Entry failures over every round (an entry failed twice counts twice).
    pub entry_failures: usize,
    /// Indexes (into the entries given) of those never taken.
    pub failed: Vec<usize>,
    /// `PutEvents` calls made.
    pub calls: usize,
}

/// Puts `entries` on the bus, 10 a call; the entries a call failed (alone, or the whole call)
/// are put again in the next round, after a backoff, up to `settings.attempts` rounds.
pub async fn publish(
    bus: &dyn ChangeBus,
    entries: &[BusEntry],
    settings: &PublishSettings,
) -> Published {
    let mut outcome = Published::default();
    let mut pending: Vec<usize> = (0..entries.len()).collect();
    for round in 0..settings.attempts.max(1) {
        if pending.is_empty() {
            break;
        }
        if round > 0 {
            tokio::time::sleep(settings.backoff * 2u32.pow(round - 1)).await;
        }
        let mut failed = Vec::new();
        for chunk in pending.chunks(PUT_EVENTS_MAX_ENTRIES) {
            let batch: Vec<BusEntry> = chunk.iter().map(|&n| entries[n].clone()).collect();
            outcome.calls += 1;
            match bus.put_events(&batch).await {
                Ok(results) => {
                    for (position, &n) in chunk.iter().enumerate() {
                        match results.get(position) {
                            Some(None) => outcome.published += 1,
                            Some(Some(code)) => {
                                tracing::warn!(id = %entries[n].id, code, round, "PutEvents refused an entry");
                                failed.push(n);
                            }
                            None => failed.push(n),
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, round, entries = chunk.len(), "PutEvents failed");
                    failed.extend_from_slice(chunk);
                }
            }
        }
        outcome.entry_failures += failed.len();
        pending = failed;
    }
    outcome.failed = pending;
    outcome
}
