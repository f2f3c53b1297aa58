//! The AWS window timer: `contact.window_closing` and `contact.window_closed` (`docs/changes.md`).
//!
//! No Wati event says a customer-service window is closing; a timer must. The local store keeps
//! its windows in a SQLite table (`store::embedded::outbox`); on AWS each (contact, business
//! number) pair has a *window item* in the state table:
//!
//! `pk = WINDOW#<contact>#<channel_id or "">, sk = WINDOW`, with `window_end` (N),
//! `window_contact`, `window_channel` (S; not `contact`, which would put the item in the
//! `by_contact` index), and, while something is still to announce, `due_shard` (one of
//! [`DUE_SHARDS`], hashed from the pk) and `next_due` (N): the keys of the sparse `by_next_due`
//! index.
//!
//! Every write is one `UpdateItem`, commutative and idempotent:
//! - the notifier, on a customer message's record, moves the end forward only
//!   (`attribute_not_exists(window_end) OR window_end < :end`), setting `next_due = end - lead`;
//!   a failed condition means an equal or newer end is there already, which is fine;
//! - the timer ([`announce_due_windows`], every minute) queries each shard for `next_due <= now`,
//!   builds the contact's view, puts the document on the bus, and only then marks it announced,
//!   conditioned on the end it announced (`window_end = :end`), so a window moved meanwhile is
//!   untouched: after a closing `SET next_due = window_end` (only while `next_due < window_end`),
//!   after a closed `REMOVE next_due` (the item leaves the index).
//!
//! A crash between `PutEvents` and the mark re-announces the same id next minute: at least once,
//! as every change document. A window whose newer customer message the view shows but the
//! notifier has not written yet (its stream behind) is moved by the timer with the notifier's own
//! update instead of announced: a moved window announces only its new end's documents.

use std::collections::BTreeSet;

use async_trait::async_trait;
use futures_util::StreamExt;

use crate::changes::{window_document, ChangeDocument, ChangeType};
use crate::event::sha256_hex;
use crate::metrics::{MetricLine, Unit};
use crate::notifier::{entry_for, publish, BusEntry, ChangeBus, ChangeState, PublishSettings};
use crate::ports::StoreError;
use crate::session::{ChannelView, ContactView};

/// Partitions of the `by_next_due` index (`due#0`..`due#15`), so no one partition takes every
/// window's writes.
pub const DUE_SHARDS: u8 = 16;
/// The sparse index of windows with something still to announce.
pub const DUE_INDEX: &str = "by_next_due";
/// Due windows read per shard and run, at most (the oldest first); the rest wait a minute.
pub const DUE_PAGE: i32 = 200;
/// Windows whose views are built at once, at most.
pub const WINDOW_CONCURRENCY: usize = 8;

/// The timer's metrics (function dimension `windows`).
pub const WINDOWS_METRICS: [&str; 5] = [
    "WindowsDue",
    "WindowsAnnounced",
    "WindowsMoved",
    "WindowFailures",
    "OldestDueAge",
];

/// The key of the window item of `contact` on business number `channel` (`""`: the default).
pub fn window_pk(contact: &str, channel: &str) -> String {
    format!("WINDOW#{contact}#{channel}")
}

/// The index partition of a window item, from its pk.
pub fn due_shard(pk: &str) -> String {
    let hash = sha256_hex(pk.as_bytes());
    let first = u8::from_str_radix(&hash[..2], 16).unwrap_or_default();
    format!("due#{}", first % DUE_SHARDS)
}

/// Every partition of the index.
pub fn due_shards() -> Vec<String> {
    (0..DUE_SHARDS).map(|n| format!("due#{n}")).collect()
}

/// When a window ending at `window_end` first falls due: its closing, `lead_seconds` before.
pub fn first_due(window_end: i64, lead_seconds: i64) -> i64 {
    window_end - lead_seconds
}

/// What is due at `now` for a window ending at `window_end` whose next document falls due at
/// `next_due`: nothing before it, its closing until the end, its close from the end on (a closing
/// that fell due while nothing ran is skipped then: only "closed" is still true).
pub fn due_kind(window_end: i64, next_due: i64, now: i64) -> Option<ChangeType> {
    if now < next_due {
        None
    } else if now < window_end {
        Some(ChangeType::WindowClosing)
    } else {
        Some(ChangeType::WindowClosed)
    }
}

/// When a due document fell due, as the local timer states it: a closing when it is announced
/// (at most the end), a close at the end.
pub fn due_at(kind: ChangeType, window_end: i64, now: i64) -> i64 {
    match kind {
        ChangeType::WindowClosing => now.min(window_end),
        _ => window_end,
    }
}

/// A window item found due.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WindowItem {
    pub contact: String,
    /// `""` for the default number.
    pub channel: String,
    pub window_end: i64,
    pub next_due: i64,
}

/// The view of `channel` (`""`: the default number) among a contact's views, as the local timer
/// picks it.
///
/// `None` also when the view holds no window on that number: the contact's view reads 48 hours
/// before its latest message ([`crate::recent`]), so a timer that reaches a window more than a
/// day after it closed, once later messages on another number moved the view past it, finds no
/// window there to announce (the row is marked, nothing is sent: `docs/changes.md`).
pub fn window_view(contact: &ContactView, channel: &str) -> Option<ChannelView> {
    let channel = (!channel.is_empty()).then_some(channel);
    contact
        .channels
        .iter()
        .find(|v| v.channel_id.as_deref() == channel)
        .filter(|v| v.window_expires_at.0.is_some())
        .cloned()
}

/// What the timer reads and writes besides the contact's messages.
#[async_trait]
pub trait WindowState: ChangeState {
    /// The window items of `shard` with `next_due <= now`, oldest first, at most [`DUE_PAGE`].
    async fn due_windows(&self, shard: &str, now: i64) -> Result<Vec<WindowItem>, StoreError>;
    /// Marks `kind` announced for the window ending at `window.window_end`; nothing if the window
    /// has moved (or was marked so already).
    async fn window_announced(
        &self,
        window: &WindowItem,
        kind: ChangeType,
    ) -> Result<(), StoreError>;
}

/// What one run of the timer did.
#[derive(Debug)]
pub struct WindowsReport {
    /// Window items found due.
    pub due: usize,
    /// Ids put on the bus.
    pub published_ids: Vec<String>,
    /// Windows announced and marked (with a document, or without when the contact has no view).
    pub announced: usize,
    /// Windows a newer customer message had moved: moved, not announced.
    pub moved: usize,
    /// Shards that could not be listed, windows that could not be read, put or marked: all tried
    /// again next run.
    pub failures: usize,
    /// `now - next_due` of the oldest due window found (seconds), if any.
    pub oldest_due_age: Option<i64>,
    pub metrics: MetricLine,
}

/// One due window, read.
enum Step {
    Announce {
        window: WindowItem,
        kind: ChangeType,
        document: Option<Box<ChangeDocument>>,
    },
    Moved,
    Failed,
}

async fn read_window(
    state: &dyn WindowState,
    window: WindowItem,
    now: i64,
    lead_seconds: i64,
) -> Step {
    let Some(kind) = due_kind(window.window_end, window.next_due, now) else {
        return Step::Moved;
    };
    let messages = match state.contact_messages(&window.contact).await {
        Ok(messages) => messages,
        Err(error) => {
            tracing::warn!(%error, contact = %window.contact, "cannot read a due window's contact");
            return Step::Failed;
        }
    };
    let view = ContactView::from_messages(&messages, now)
        .and_then(|contact| window_view(&contact, &window.channel));
    if let Some(end) = view
        .as_ref()
        .and_then(|v| v.window_expires_at.0)
        .filter(|end| *end > window.window_end)
    {
        // A newer customer message the notifier has not written yet: the window moved.
        return match state
            .track_window(&window.contact, &window.channel, end, lead_seconds)
            .await
        {
            Ok(()) => Step::Moved,
            Err(error) => {
                tracing::warn!(%error, contact = %window.contact, "cannot move a window");
                Step::Failed
            }
        };
    }
    let document = view.map(|view| {
        Box::new(window_document(
            kind,
            &view,
            window.window_end,
            due_at(kind, window.window_end, now),
            now,
        ))
    });
    Step::Announce {
        window,
        kind,
        document,
    }
}

/// One run of the timer at `now`: every due window of every shard announced on the bus with the
/// contact's view at `now`, then marked; `lead_seconds` only to move a window found moved.
pub async fn announce_due_windows(
    state: &dyn WindowState,
    bus: &dyn ChangeBus,
    settings: &PublishSettings,
    now: i64,
    lead_seconds: i64,
) -> WindowsReport {
    let mut failures = 0usize;
    let mut due: BTreeSet<WindowItem> = BTreeSet::new();
    for shard in due_shards() {
        match state.due_windows(&shard, now).await {
            Ok(windows) => due.extend(windows),
            Err(error) => {
                tracing::warn!(%error, shard, "cannot list due windows");
                failures += 1;
            }
        }
    }
    let oldest_due_age = due.iter().map(|w| now - w.next_due).max();
    let found = due.len();
    let steps: Vec<Step> = futures_util::stream::iter(
        due.into_iter()
            .map(|window| read_window(state, window, now, lead_seconds)),
    )
    .buffered(WINDOW_CONCURRENCY)
    .collect()
    .await;
    let mut moved = 0usize;
    let mut entries: Vec<BusEntry> = Vec::new();
    let mut to_mark: Vec<(WindowItem, ChangeType, Option<usize>)> = Vec::new();
    for step in steps {
        match step {
            Step::Moved => moved += 1,
            Step::Failed => failures += 1,
            Step::Announce {
                window,
                kind,
                document,
            } => {
                let entry = document.map(|document| {
                    entries.push(entry_for(&document).0);
                    entries.len() - 1
                });
                to_mark.push((window, kind, entry));
            }
        }
    }
    let published = publish(bus, &entries, settings).await;
    failures += published.failed.len();
    let failed: BTreeSet<usize> = published.failed.iter().copied().collect();
    let published_ids: Vec<String> = entries
        .iter()
        .enumerate()
        .filter(|(n, _)| !failed.contains(n))
        .map(|(_, e)| e.id.clone())
        .collect();
    // Only what is on the bus is marked: the rest is found due again next run.
    let marks: Vec<Result<(), StoreError>> = futures_util::stream::iter(
        to_mark
            .iter()
            .filter(|(_, _, entry)| !entry.is_some_and(|n| failed.contains(&n)))
            .map(|(window, kind, _)| state.window_announced(window, *kind)),
    )
    .buffered(WINDOW_CONCURRENCY)
    .collect()
    .await;
    let mut announced = 0usize;
    for mark in marks {
        match mark {
            Ok(()) => announced += 1,
            Err(error) => {
                tracing::warn!(%error, "cannot mark a window announced");
                failures += 1;
            }
        }
    }
    let [due_metric, announced_metric, moved_metric, failures_metric, age_metric] = WINDOWS_METRICS;
    let mut metrics = MetricLine::new("windows")
        .metric(due_metric, Unit::Count, found as f64)
        .metric(announced_metric, Unit::Count, announced as f64)
        .metric(moved_metric, Unit::Count, moved as f64)
        .metric(failures_metric, Unit::Count, failures as f64);
    if let Some(age) = oldest_due_age {
        metrics = metrics.metric(age_metric, Unit::Seconds, age as f64);
    }
    WindowsReport {
        due: found,
        published_ids,
        announced,
        moved,
        failures,
        oldest_due_age,
        metrics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Direction, MessageRecord};
    use crate::notifier::BusEntry;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::Duration;

    const T: i64 = 1_700_000_000;
    const DAY: i64 = 86_400;
    const LEAD: i64 = 3_600;

    #[test]
    fn the_kind_due_follows_the_clock() {
        let end = T + DAY;
        let next = first_due(end, LEAD);
        assert_eq!(next, end - LEAD);
        assert_eq!(due_kind(end, next, next - 1), None);
        assert_eq!(due_kind(end, next, next), Some(ChangeType::WindowClosing));
        assert_eq!(
            due_kind(end, next, end - 1),
            Some(ChangeType::WindowClosing)
        );
        assert_eq!(due_kind(end, next, end), Some(ChangeType::WindowClosed));
        // After the closing was announced, next_due is the end.
        assert_eq!(due_kind(end, end, end - 60), None);
        assert_eq!(due_kind(end, end, end + 60), Some(ChangeType::WindowClosed));
        // Nothing ran from before the closing until after the end: only the close.
        assert_eq!(
            due_kind(end, next, end + DAY),
            Some(ChangeType::WindowClosed)
        );
        assert_eq!(due_at(ChangeType::WindowClosing, end, next + 5), next + 5);
        assert_eq!(due_at(ChangeType::WindowClosed, end, end + 90), end);
    }

    #[test]
    fn keys_and_shards() {
        assert_eq!(window_pk("14155550101", ""), "WINDOW#14155550101#");
        assert_eq!(window_pk("US.1", "c2"), "WINDOW#US.1#c2");
        let shards = due_shards();
        assert_eq!(shards.len(), 16);
        let mut used = BTreeSet::new();
        for n in 0..400 {
            let pk = window_pk(&format!("1415555{n:04}"), "");
            let shard = due_shard(&pk);
            assert_eq!(shard, due_shard(&pk), "stable");
            assert!(shards.contains(&shard), "{shard}");
            used.insert(shard);
        }
        assert_eq!(used.len(), 16, "every shard is used");
    }

    /// (contact, channel) -> (window_end, next_due)
    type Windows = HashMap<(String, String), (i64, Option<i64>)>;

    /// The state table's window items with DynamoDB's conditions, and contacts as messages.
    #[derive(Default)]
    struct FakeState {
        messages: Mutex<Vec<MessageRecord>>,
        windows: Mutex<Windows>,
        fail_marks: Mutex<usize>,
    }

    #[async_trait]
    impl ChangeState for FakeState {
        async fn message_now(&self, _: &str) -> Result<Option<MessageRecord>, StoreError> {
            Ok(None)
        }
        async fn contact_messages(&self, contact: &str) -> Result<Vec<MessageRecord>, StoreError> {
            Ok(self
                .messages
                .lock()
                .unwrap()
                .iter()
                .filter(|m| m.contact() == Some(contact))
                .cloned()
                .collect())
        }
        async fn track_window(
            &self,
            contact: &str,
            channel: &str,
            window_end: i64,
            lead_seconds: i64,
        ) -> Result<(), StoreError> {
            let mut windows = self.windows.lock().unwrap();
            let entry = windows
                .entry((contact.to_owned(), channel.to_owned()))
                .or_insert((i64::MIN, None));
            if entry.0 < window_end {
                *entry = (window_end, Some(first_due(window_end, lead_seconds)));
            }
            Ok(())
        }
    }

    #[async_trait]
    impl WindowState for FakeState {
        async fn due_windows(&self, shard: &str, now: i64) -> Result<Vec<WindowItem>, StoreError> {
            let mut due: Vec<WindowItem> = self
                .windows
                .lock()
                .unwrap()
                .iter()
                .filter(|((c, ch), _)| due_shard(&window_pk(c, ch)) == shard)
                .filter_map(|((contact, channel), (end, next))| {
                    next.filter(|n| *n <= now).map(|next_due| WindowItem {
                        contact: contact.clone(),
                        channel: channel.clone(),
                        window_end: *end,
                        next_due,
                    })
                })
                .collect();
            due.sort_by_key(|w| w.next_due);
            Ok(due)
        }
        async fn window_announced(
            &self,
            window: &WindowItem,
            kind: ChangeType,
        ) -> Result<(), StoreError> {
            {
                let mut fail = self.fail_marks.lock().unwrap();
                if *fail > 0 {
                    *fail -= 1;
                    return Err(StoreError::unavailable("update", "injected"));
                }
            }
            let mut windows = self.windows.lock().unwrap();
            let key = (window.contact.clone(), window.channel.clone());
            if let Some((end, next)) = windows.get_mut(&key) {
                if *end == window.window_end {
                    match kind {
                        ChangeType::WindowClosing => {
                            if next.is_some_and(|n| n < *end) {
                                *next = Some(*end);
                            }
                        }
                        _ => *next = None,
                    }
                }
            }
            Ok(())
        }
    }

    #[derive(Default)]
    struct FakeBus {
        taken: Mutex<Vec<BusEntry>>,
        refuse: Mutex<usize>,
    }

    #[async_trait]
    impl ChangeBus for FakeBus {
        async fn put_events(&self, entries: &[BusEntry]) -> Result<Vec<Option<String>>, String> {
            let mut refuse = self.refuse.lock().unwrap();
            if *refuse > 0 {
                *refuse -= 1;
                return Err("ServiceUnavailable".into());
            }
            self.taken.lock().unwrap().extend(entries.iter().cloned());
            Ok(vec![None; entries.len()])
        }
    }

    fn inbound(id: &str, at: i64) -> MessageRecord {
        MessageRecord {
            id: Some(id.into()),
            wa_id: Some("1".into()),
            direction: Some(Direction::Inbound),
            sent_at: Some(at),
            ..MessageRecord::default()
        }
    }

    fn once() -> PublishSettings {
        PublishSettings {
            attempts: 1,
            backoff: Duration::from_millis(1),
            ..PublishSettings::default()
        }
    }

    async fn run(state: &FakeState, bus: &FakeBus, now: i64) -> Vec<String> {
        let before = bus.taken.lock().unwrap().len();
        let report = announce_due_windows(state, bus, &once(), now, LEAD).await;
        crate::metrics::validate(&report.metrics.render(1_764_238_453_000)).unwrap();
        bus.taken.lock().unwrap()[before..]
            .iter()
            .map(|e| e.detail_type.to_owned())
            .collect()
    }

    async fn customer_writes(state: &FakeState, message: MessageRecord) {
        let end = message.sent_at.unwrap() + DAY;
        state.messages.lock().unwrap().push(message);
        state.track_window("1", "", end, LEAD).await.unwrap();
    }

    #[tokio::test]
    async fn each_document_once_on_time_and_not_for_a_moved_window() {
        let state = FakeState::default();
        let bus = FakeBus::default();
        customer_writes(&state, inbound("a", T)).await;
        assert!(run(&state, &bus, T + DAY - LEAD - 1).await.is_empty());
        assert_eq!(
            run(&state, &bus, T + DAY - LEAD).await,
            ["contact.window_closing"]
        );
        assert!(run(&state, &bus, T + DAY - 60).await.is_empty());
        assert_eq!(run(&state, &bus, T + DAY).await, ["contact.window_closed"]);
        assert!(run(&state, &bus, T + DAY + 60).await.is_empty());
        let closed: serde_json::Value =
            serde_json::from_str(&bus.taken.lock().unwrap()[1].detail).unwrap();
        assert_eq!(closed["contact"]["window_open"], false);

        // Moved by a second message before it fell due: only the new end's documents.
        let second = T + 2 * DAY;
        customer_writes(&state, inbound("b", second)).await;
        customer_writes(&state, inbound("c", second + 7_200)).await;
        assert!(run(&state, &bus, second + DAY - LEAD).await.is_empty());
        assert_eq!(
            run(&state, &bus, second + 7_200 + DAY - LEAD).await,
            ["contact.window_closing"]
        );
        // A newer message the notifier has not written yet: the timer moves the window.
        state
            .messages
            .lock()
            .unwrap()
            .push(inbound("d", second + 9_000));
        assert!(run(&state, &bus, second + 7_200 + DAY).await.is_empty());
        assert_eq!(
            run(&state, &bus, second + 9_000 + DAY).await,
            ["contact.window_closed"],
            "down past the end: only the close"
        );
    }

    /// A bus or a mark that fails leaves the window due: the next run announces the same id.
    #[tokio::test]
    async fn a_failed_put_or_mark_announces_the_same_id_again() {
        let state = FakeState::default();
        let bus = FakeBus::default();
        customer_writes(&state, inbound("a", T)).await;
        *bus.refuse.lock().unwrap() = 1;
        let report = announce_due_windows(&state, &bus, &once(), T + DAY - LEAD, LEAD).await;
        assert_eq!((report.due, report.failures), (1, 1));
        assert!(report.published_ids.is_empty());
        *state.fail_marks.lock().unwrap() = 1;
        let first = announce_due_windows(&state, &bus, &once(), T + DAY - LEAD + 60, LEAD).await;
        assert_eq!(first.failures, 1);
        let again = announce_due_windows(&state, &bus, &once(), T + DAY - LEAD + 120, LEAD).await;
        assert_eq!(again.failures, 0);
        assert_eq!(first.published_ids, again.published_ids);
        assert_eq!(first.published_ids.len(), 1);
        assert!(
            announce_due_windows(&state, &bus, &once(), T + DAY - 1, LEAD)
                .await
                .published_ids
                .is_empty()
        );
    }
}
