//! Shared pieces of the fuzz targets: a tiny in-memory store (ledger, queue and state, with
//! switchable faults and a call counter), the one tokio runtime, and the fixtures.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

use arbitrary::Arbitrary;
use async_trait::async_trait;
use wati_ingest::message::MessageRecord;
use wati_ingest::ports::{
    Ledger, LedgerEntry, MarkCursor, Marked, MarkedPage, QuarantineEntry, Queue, QueuedEvent,
    Recorded, StateStore, StoreError,
};
use wati_ingest::session::ContactView;

/// The webhook secret the fuzzed routers accept, and the previous one (a rotation in progress).
pub const SECRET: &str = "fuzz-secret-0123456789abcdef0123456789";
pub const PREVIOUS_SECRET: &str = "old-fuzz-secret-9876543210fedcba";

/// Every fixture body, so targets can replay realistic events (v1/v2 twins, duplicates).
pub const FIXTURES: &[&[u8]] = &[
    include_bytes!("../../tests/fixtures/events/01-message.json"),
    include_bytes!("../../tests/fixtures/events/02-newContactMessageReceived.json"),
    include_bytes!("../../tests/fixtures/events/03-sessionMessageSent.json"),
    include_bytes!("../../tests/fixtures/events/04-sessionMessageSent_v2.json"),
    include_bytes!("../../tests/fixtures/events/05-templateMessageSent.json"),
    include_bytes!("../../tests/fixtures/events/06-templateMessageSent_v2.json"),
    include_bytes!("../../tests/fixtures/events/07-sentMessageDELIVERED.json"),
    include_bytes!("../../tests/fixtures/events/08-sentMessageDELIVERED_v2.json"),
    include_bytes!("../../tests/fixtures/events/09-sentMessageREAD.json"),
    include_bytes!("../../tests/fixtures/events/10-sentMessageREAD_v2.json"),
    include_bytes!("../../tests/fixtures/events/11-sentMessageREPLIED.json"),
    include_bytes!("../../tests/fixtures/events/12-sentMessageREPLIED_v2.json"),
    include_bytes!("../../tests/fixtures/events/13-sentMessageDELIVERED.json"),
    include_bytes!("../../tests/fixtures/events/14-templateMessageFailed.json"),
    include_bytes!("../../tests/fixtures/events/15-sessionMessageFailed.json"),
    include_bytes!("../../tests/fixtures/events/16-templateReviewed.json"),
    include_bytes!("../../tests/fixtures/events/17-templateQualityUpdated.json"),
    include_bytes!("../../tests/fixtures/events/18-message_bsuid.json"),
    include_bytes!("../../tests/fixtures/events/19-newContactMessageReceived_bsuid.json"),
    include_bytes!("../../tests/fixtures/events/20-sessionMessageSent_bsuid.json"),
    include_bytes!("../../tests/fixtures/events/21-sessionMessageSent_v2_bsuid.json"),
    include_bytes!("../../tests/fixtures/events/22-templateMessageSent_v2_bsuid.json"),
    include_bytes!("../../tests/fixtures/events/23-paymentCaptured.json"),
];

/// Longest key the receiver can answer with: a plain key (at most 256 bytes) plus a variant
/// suffix (`:variant:` and 16 hex digits).
pub const MAX_KEY_LEN: usize = 256 + 9 + 16;

/// One current-thread runtime for the whole fuzzing process (building one per input is slow).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// Which store operations fail (as an unavailable DynamoDB/SQS/SQLite would).
#[derive(Arbitrary, Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    pub record: bool,
    pub mark: bool,
    pub quarantine: bool,
    pub send: bool,
    pub apply: bool,
}

impl Faults {
    pub fn any(&self) -> bool {
        self.record || self.mark || self.quarantine || self.send || self.apply
    }
}

/// One ledger row: the entry and, if its enqueue failed, when it was marked for redrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub entry: LedgerEntry,
    pub redrive_at: Option<i64>,
}

/// Everything the store holds, plus how many calls it has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contents {
    pub ledger: BTreeMap<String, Row>,
    pub sent: Vec<QueuedEvent>,
    pub quarantined: BTreeMap<String, QuarantineEntry>,
    pub messages: Vec<MessageRecord>,
    pub state_quarantined: Vec<(QueuedEvent, String)>,
    pub calls: u64,
}

/// An in-memory ledger, queue and state store with the embedded store's semantics.
#[derive(Debug, Default)]
pub struct MemoryStore {
    contents: Mutex<Contents>,
    faults: Mutex<Faults>,
}

impl MemoryStore {
    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap() = faults;
    }

    pub fn snapshot(&self) -> Contents {
        self.contents.lock().unwrap().clone()
    }

    pub fn calls(&self) -> u64 {
        self.contents.lock().unwrap().calls
    }

    /// Counts the call and fails it if `operation`'s fault is on.
    fn enter(
        &self,
        operation: &'static str,
        fails: impl Fn(&Faults) -> bool,
    ) -> Result<MutexGuard<'_, Contents>, StoreError> {
        let failing = fails(&self.faults.lock().unwrap());
        let mut contents = self.contents.lock().unwrap();
        contents.calls += 1;
        if failing {
            return Err(StoreError::unavailable(operation, "injected fault"));
        }
        Ok(contents)
    }
}

#[async_trait]
impl Ledger for MemoryStore {
    async fn record(&self, entry: &LedgerEntry) -> Result<Recorded, StoreError> {
        let mut contents = self.enter("record", |f| f.record)?;
        if let Some(row) = contents.ledger.get(&entry.key) {
            // A marked row is held whatever its expiry, as in the real stores.
            if row.entry.expires_at > entry.received_at || row.redrive_at.is_some() {
                return Ok(Recorded::Existing {
                    received_at: row.entry.received_at,
                    body: row.entry.body.clone(),
                });
            }
        }
        contents.ledger.insert(
            entry.key.clone(),
            Row {
                entry: entry.clone(),
                redrive_at: None,
            },
        );
        Ok(Recorded::New)
    }

    async fn mark_for_redrive(&self, key: &str, at: i64) -> Result<(), StoreError> {
        let mut contents = self.enter("mark_for_redrive", |f| f.mark)?;
        match contents.ledger.get_mut(key) {
            Some(row) => {
                row.redrive_at = Some(at);
                Ok(())
            }
            None => Err(StoreError::unavailable("mark_for_redrive", "no such key")),
        }
    }

    async fn quarantine(&self, entry: &QuarantineEntry) -> Result<(), StoreError> {
        let mut contents = self.enter("quarantine", |f| f.quarantine)?;
        contents
            .quarantined
            .entry(entry.key.clone())
            .or_insert_with(|| entry.clone());
        Ok(())
    }

    /// All marks in one page, oldest first (the fuzz targets never page).
    async fn marked_for_redrive(
        &self,
        _after: Option<&MarkCursor>,
        limit: u32,
    ) -> Result<MarkedPage, StoreError> {
        let contents = self.enter("marked_for_redrive", |_| false)?;
        let mut marks: Vec<Marked> = contents
            .ledger
            .values()
            .filter_map(|row| {
                Some(Marked {
                    event: queued(&row.entry),
                    marked_at: row.redrive_at?,
                })
            })
            .collect();
        marks.sort_by(|a, b| (a.marked_at, &a.event.key).cmp(&(b.marked_at, &b.event.key)));
        marks.truncate(limit as usize);
        Ok(MarkedPage { marks, next: None })
    }

    async fn oldest_mark(&self) -> Result<Option<i64>, StoreError> {
        let contents = self.enter("oldest_mark", |_| false)?;
        Ok(contents.ledger.values().filter_map(|row| row.redrive_at).min())
    }

    async fn clear_redrive(&self, key: &str) -> Result<(), StoreError> {
        let mut contents = self.enter("clear_redrive", |_| false)?;
        if let Some(row) = contents.ledger.get_mut(key) {
            row.redrive_at = None;
        }
        Ok(())
    }

    async fn archived(&self, key: &str) -> Result<Option<QueuedEvent>, StoreError> {
        let contents = self.enter("archived", |_| false)?;
        Ok(contents.ledger.get(key).map(|row| queued(&row.entry)))
    }

    async fn archived_between(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<QueuedEvent>, StoreError> {
        let contents = self.enter("archived_between", |_| false)?;
        Ok(contents
            .ledger
            .values()
            .filter(|row| (since..=until).contains(&row.entry.received_at))
            .map(|row| queued(&row.entry))
            .collect())
    }
}

fn queued(entry: &LedgerEntry) -> QueuedEvent {
    QueuedEvent::archived(
        entry.key.clone(),
        entry.received_at,
        String::from_utf8_lossy(&entry.body).into_owned(),
    )
}

#[async_trait]
impl Queue for MemoryStore {
    async fn send(&self, event: &QueuedEvent) -> Result<(), StoreError> {
        let mut contents = self.enter("send", |f| f.send)?;
        contents.sent.push(event.clone());
        Ok(())
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn apply(&self, facts: &MessageRecord) -> Result<(), StoreError> {
        let mut contents = self.enter("apply", |f| f.apply)?;
        let same =
            |known: &MessageRecord| known.all_ids().any(|id| facts.all_ids().any(|f| f == id));
        match contents.messages.iter_mut().find(|known| same(known)) {
            Some(known) => known.merge(facts),
            None => contents.messages.push(facts.clone()),
        }
        Ok(())
    }

    async fn quarantine(&self, event: &QueuedEvent, reason: &str) -> Result<(), StoreError> {
        let mut contents = self.enter("state_quarantine", |f| f.quarantine)?;
        contents
            .state_quarantined
            .push((event.clone(), reason.to_owned()));
        Ok(())
    }

    async fn message(&self, id: &str) -> Result<Option<MessageRecord>, StoreError> {
        let contents = self.enter("message", |_| false)?;
        Ok(contents
            .messages
            .iter()
            .find(|known| known.all_ids().any(|known| known == id))
            .cloned())
    }

    async fn contact(&self, _contact: &str, _now: i64) -> Result<Option<ContactView>, StoreError> {
        let _contents = self.enter("contact", |_| false)?;
        Ok(None)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _contents = self.enter("ping", |_| false)?;
        Ok(())
    }
}

/// Percent-encodes every byte that may not appear raw in a URI path segment (and `/`, so the
/// text stays one segment); `%` itself is kept, so the fuzzer can write its own escapes.
pub fn encode_segment(text: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for &byte in text {
        let raw = byte.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:@".contains(&byte);
        if raw {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Percent-encodes every byte of `text` (a valid but unusual spelling of the same segment).
pub fn encode_all(text: &[u8]) -> String {
    text.iter().map(|byte| format!("%{byte:02X}")).collect()
}
