//! One contract suite, two backends: every test runs against the embedded SQLite store and
//! against DynamoDB Local + the SQS emulator (through the real AWS SDK).

mod bad_input;
mod chaos;
mod console;
mod contact_reads;
mod e2e;
mod lambda;
mod log_hygiene;
mod notifier;
mod retried_writes;
mod secrets;
mod support;
mod sweeper;
mod windows;

use std::collections::HashSet;
use std::sync::Arc;

use wati_ingest::event::{idempotency_key, WatiEvent};
use wati_ingest::ports::{
    Ledger, LedgerEntry, MarkCursor, Marked, MarkedPage, QuarantineEntry, QuarantineStage, Queue,
    QueuedEvent, Recorded, StoreError,
};
use wati_ingest::processor::{process, Archive};
use wati_ingest::receiver::{
    sweep, sweep_within, OldestMark, Path as ReceivePath, Receipt, Receiver, ReceiverSettings,
    SweepReport, SweepStop,
};

use support::Backend;

/// Runs a contract test against both backends.
macro_rules! contract {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn embedded() {
                super::$name(crate::support::Backend::embedded().await).await
            }
            #[tokio::test]
            async fn aws() {
                super::$name(crate::support::Backend::aws().await).await
            }
        }
    };
}

mod erasure;
mod state;

mod channels;
mod contact_summary;

fn entry(key: &str, body: &str, received_at: i64) -> LedgerEntry {
    LedgerEntry {
        key: key.into(),
        event_type: "sentMessageREAD".into(),
        body: body.as_bytes().to_vec(),
        received_at,
        expires_at: received_at + 7 * 86_400,
    }
}

contract!(a_key_is_recorded_once);
/// The first record of a key is new; later ones see when it was received and its body.
async fn a_key_is_recorded_once(backend: Backend) {
    let ledger = backend.ledger();
    let first = entry(
        "sentMessageREAD:wamid.A",
        r#"{"eventType":"sentMessageREAD"}"#,
        1_000,
    );
    assert_eq!(ledger.record(&first).await.unwrap(), Recorded::New);
    let again = entry("sentMessageREAD:wamid.A", r#"{"other":"body"}"#, 1_060);
    assert_eq!(
        ledger.record(&again).await.unwrap(),
        Recorded::Existing {
            received_at: 1_000,
            body: first.body.clone()
        }
    );
    let other = entry("sentMessageREAD:wamid.B", "{}", 1_000);
    assert_eq!(ledger.record(&other).await.unwrap(), Recorded::New);
}

contract!(an_expired_key_is_new_again);
/// After the dedup window the same key is a new event (TTL deletion may lag on AWS).
async fn an_expired_key_is_new_again(backend: Backend) {
    let ledger = backend.ledger();
    let mut old = entry("k:expired", "{}", 1_000);
    old.expires_at = 2_000;
    assert_eq!(ledger.record(&old).await.unwrap(), Recorded::New);
    assert!(matches!(
        ledger
            .record(&entry("k:expired", "{}", 1_999))
            .await
            .unwrap(),
        Recorded::Existing { .. }
    ));
    assert_eq!(
        ledger
            .record(&entry("k:expired", "{}", 2_000))
            .await
            .unwrap(),
        Recorded::New
    );
}

contract!(redrive_marks_round_trip);
/// Marked events are listed with their exact body and mark time until their mark is cleared.
async fn redrive_marks_round_trip(backend: Backend) {
    let ledger = backend.ledger();
    let body = r#"{"eventType":"sentMessageREAD","text":"ünïcode ✓"}"#;
    ledger
        .record(&entry("k:marked", body, 1_000))
        .await
        .unwrap();
    ledger
        .record(&entry("k:unmarked", "{}", 1_000))
        .await
        .unwrap();
    assert!(ledger
        .marked_for_redrive(None, 10)
        .await
        .unwrap()
        .marks
        .is_empty());
    assert_eq!(ledger.oldest_mark().await.unwrap(), None);
    ledger.mark_for_redrive("k:marked", 1_005).await.unwrap();
    let page = ledger.marked_for_redrive(None, 10).await.unwrap();
    assert_eq!(
        page.marks,
        vec![Marked {
            event: QueuedEvent::archived("k:marked", 1_000, body),
            marked_at: 1_005,
        }]
    );
    assert_eq!(page.next, None, "nothing follows");
    assert_eq!(ledger.oldest_mark().await.unwrap(), Some(1_005));
    ledger.clear_redrive("k:marked").await.unwrap();
    assert!(ledger
        .marked_for_redrive(None, 10)
        .await
        .unwrap()
        .marks
        .is_empty());
    assert_eq!(ledger.oldest_mark().await.unwrap(), None);
}

contract!(a_marked_event_is_held_until_its_mark_is_cleared);
/// A mark takes the entry out of the TTL (on DynamoDB the item has no `expires_at` while marked)
/// and keeps its key recorded past its dedup window, so no new event overwrites the one waiting
/// for the sweeper; within the window dedup works as ever. Clearing the mark restores the expiry.
async fn a_marked_event_is_held_until_its_mark_is_cleared(backend: Backend) {
    let ledger = backend.ledger();
    let mut held = entry("k:held", r#"{"n":"first"}"#, 1_000);
    held.expires_at = 2_000;
    assert_eq!(ledger.record(&held).await.unwrap(), Recorded::New);
    assert_eq!(backend.ledger_expiry("k:held").await, Some(2_000));

    ledger.mark_for_redrive("k:held", 1_001).await.unwrap();
    assert_eq!(
        backend.ledger_expiry("k:held").await,
        None,
        "no TTL while marked"
    );
    // Marking again (another failed send) keeps the held expiry.
    ledger.mark_for_redrive("k:held", 1_002).await.unwrap();
    assert_eq!(backend.ledger_expiry("k:held").await, None);
    let existing = Recorded::Existing {
        received_at: 1_000,
        body: held.body.clone(),
    };
    for at in [1_500, 2_000, 9_000] {
        let again = entry("k:held", r#"{"n":"later"}"#, at);
        assert_eq!(
            ledger.record(&again).await.unwrap(),
            existing,
            "a duplicate at {at} while marked"
        );
    }
    let waiting = ledger.marked_for_redrive(None, 10).await.unwrap().marks;
    assert_eq!(waiting.len(), 1);
    assert_eq!(
        waiting[0].event.body, r#"{"n":"first"}"#,
        "the first body waits"
    );
    assert_eq!(waiting[0].marked_at, 1_002);

    ledger.clear_redrive("k:held").await.unwrap();
    assert_eq!(
        backend.ledger_expiry("k:held").await,
        Some(2_000),
        "TTL back"
    );
    assert_eq!(
        ledger.record(&entry("k:held", "{}", 1_999)).await.unwrap(),
        existing
    );
    assert_eq!(
        ledger.record(&entry("k:held", "{}", 2_000)).await.unwrap(),
        Recorded::New,
        "expired again once cleared"
    );
    // Clearing what is not marked changes nothing.
    ledger.clear_redrive("k:held").await.unwrap();
    assert_eq!(
        backend.ledger_expiry("k:held").await,
        Some(2_000 + 7 * 86_400)
    );
}

contract!(marks_are_listed_page_by_page);
/// Paging with the cursor lists every mark exactly once, oldest first within each partition of
/// marks, whatever the page size.
async fn marks_are_listed_page_by_page(backend: Backend) {
    let ledger = backend.ledger();
    let mut expected = Vec::new();
    for n in 0..40i64 {
        let key = format!("k:page:{n:02}");
        ledger.record(&entry(&key, "{}", 1_000)).await.unwrap();
        // Mark times repeat, so the key breaks ties.
        ledger.mark_for_redrive(&key, 2_000 + n % 7).await.unwrap();
        expected.push(key);
    }
    for limit in [1, 3, 100] {
        let mut cursor = None;
        let mut seen: Vec<Marked> = Vec::new();
        let mut pages = 0;
        loop {
            let page = ledger
                .marked_for_redrive(cursor.as_ref(), limit)
                .await
                .unwrap();
            pages += 1;
            seen.extend(page.marks);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
            assert!(pages < 200, "the listing ends");
        }
        let mut keys: Vec<String> = seen.iter().map(|m| m.event.key.clone()).collect();
        keys.sort();
        assert_eq!(keys, expected, "each mark once with pages of {limit}");
        assert!(seen.iter().all(|m| (2_000..2_007).contains(&m.marked_at)));
    }
    assert_eq!(ledger.oldest_mark().await.unwrap(), Some(2_000));
}

contract!(the_sweeper_drains_a_backlog);
/// A backlog of marks (`SWEEP_BACKLOG`, default 300) is drained by one sweep with the Lambda's
/// page size and concurrency: every event on the queue once, byte for byte (U+FFFF included),
/// no mark left. Prints the rate, the figure the drain estimate in `docs/runbook.md` uses.
async fn the_sweeper_drains_a_backlog(backend: Backend) {
    let count: usize = std::env::var("SWEEP_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let ledger = backend.ledger();
    let mut expected = Vec::new();
    for n in 0..count {
        let key = format!("sentMessageREAD:wamid.backlog{n}");
        let body = format!(
            "{{\"eventType\":\"sentMessageREAD\",\"whatsappMessageId\":\"wamid.backlog{n}\",\"text\":\"\u{FFFF} {n}\"}}"
        );
        ledger.record(&entry(&key, &body, 1_000)).await.unwrap();
        ledger
            .mark_for_redrive(&key, 1_000 + n as i64)
            .await
            .unwrap();
        expected.push(QueuedEvent::archived(&key, 1_000, &body));
    }
    let budget = wati_ingest::lambda::sweeper_budget(std::time::Duration::from_secs(600));
    let started = std::time::Instant::now();
    let report = sweep_within(ledger, backend.queue(), &budget)
        .await
        .unwrap();
    let elapsed = started.elapsed();
    eprintln!(
        "sweep of {count} marks ({}): {:.2} s, {:.0} marks/s",
        backend.name(),
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(
        report,
        SweepReport {
            redriven: count,
            failed: 0,
            oldest_mark: OldestMark::NoneLeft,
            stopped: SweepStop::Done,
        }
    );
    let mut received = backend.drain_queue().await;
    received.sort_by(|a, b| a.key.cmp(&b.key));
    expected.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(received, expected);
}

contract!(quarantine_keeps_a_body_once);
/// Quarantining the same unusable body twice is fine (Wati may retry it).
async fn quarantine_keeps_a_body_once(backend: Backend) {
    let quarantined = QuarantineEntry {
        key: "quarantine:body-sha256:abc".into(),
        reason: "body is not JSON".into(),
        body: b"\xff not json".to_vec(),
        received_at: 1_000,
    };
    backend.ledger().quarantine(&quarantined).await.unwrap();
    backend.ledger().quarantine(&quarantined).await.unwrap();
}

contract!(queued_events_arrive_intact);
/// What is sent is what the processor receives, body byte for byte.
async fn queued_events_arrive_intact(backend: Backend) {
    let events: Vec<QueuedEvent> = (0..3)
        .map(|i| {
            QueuedEvent::archived(
                format!("k:{i}"),
                1_000 + i,
                format!(r#"{{"eventType":"message","text":"line\nbreak \"{i}\" ✓"}}"#),
            )
        })
        .collect();
    for event in &events {
        backend.queue().send(event).await.unwrap();
    }
    let mut received = backend.drain_queue().await;
    received.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(received, events);
}

contract!(the_receiver_enqueues_each_event_once);
/// Through the receiver: every fixture is taken once, a v1/v2 twin's body is sent beside its
/// twin's, and a retry re-sends exactly what its first delivery sent.
async fn the_receiver_enqueues_each_event_once(backend: Backend) {
    let (ledger, queue) = match &backend {
        Backend::Embedded { store, .. } => (
            Arc::new(store.clone()) as Arc<dyn wati_ingest::ports::Ledger>,
            Arc::new(store.clone()) as Arc<dyn wati_ingest::ports::Queue>,
        ),
        Backend::Aws { ledger, queue, .. } => (
            Arc::new(ledger.clone()) as Arc<dyn wati_ingest::ports::Ledger>,
            Arc::new(queue.clone()) as Arc<dyn wati_ingest::ports::Queue>,
        ),
    };
    let receiver = Receiver::new(ledger.clone(), queue.clone(), ReceiverSettings::default());
    let fixtures = fixtures();
    let mut keys = HashSet::new();
    for body in &fixtures {
        let (receipt, _) = receiver.receive(body).await;
        let key = idempotency_key(&WatiEvent::parse(body).unwrap(), body);
        match receipt {
            Receipt::Accepted { key: k } => assert!(keys.insert(k.clone()) && k == key),
            Receipt::Duplicate { key: k } => assert!(keys.contains(&k)),
            other => panic!("unexpected {other:?}"),
        }
    }
    // Wati retrying everything: all duplicates, each sent again (a crash may have lost the first
    // send), under the same keys.
    let first_pass = backend.drain_queue().await;
    for body in &fixtures {
        assert!(matches!(
            receiver.receive(body).await.0,
            Receipt::Duplicate { .. }
        ));
    }
    let second_pass = backend.drain_queue().await;
    // A twin is sent with the ledger write, before the ledger tells it is one: under the key its
    // body names, beside its twin.
    let bodies_of = |pass: &[QueuedEvent]| {
        pass.iter()
            .map(|e| (e.key.clone(), e.body.clone()))
            .collect::<std::collections::BTreeSet<_>>()
    };
    let first_bodies = bodies_of(&first_pass);
    assert_eq!(first_pass.len(), first_bodies.len(), "each body sent once");
    assert!(first_pass.iter().all(|e| keys.contains(&e.key)));
    let twins = first_pass.len() - keys.len();
    assert_eq!(twins, 6, "the six v2 twins add their local ids");
    // A fact dated by its receipt may go out once more, with the first receipt: the same bodies.
    assert_eq!(bodies_of(&second_pass), first_bodies);
    let report = sweep(ledger.as_ref(), queue.as_ref(), 10).await.unwrap();
    assert_eq!((report.redriven, report.failed), (0, 0));
}

/// A ledger that refuses every write and read, as an unavailable or broken table does.
struct BrokenLedger;

#[async_trait::async_trait]
impl Ledger for BrokenLedger {
    async fn record(&self, _: &LedgerEntry) -> Result<Recorded, StoreError> {
        Err(StoreError::unavailable("record in ledger", "broken"))
    }
    async fn mark_for_redrive(&self, _: &str, _: i64) -> Result<(), StoreError> {
        Err(StoreError::unavailable("mark for redrive", "broken"))
    }
    async fn quarantine(&self, _: &QuarantineEntry) -> Result<(), StoreError> {
        Err(StoreError::unavailable("quarantine", "broken"))
    }
    async fn marked_for_redrive(
        &self,
        _: Option<&MarkCursor>,
        _: u32,
    ) -> Result<MarkedPage, StoreError> {
        Err(StoreError::unavailable("list redrive marks", "broken"))
    }
    async fn oldest_mark(&self) -> Result<Option<i64>, StoreError> {
        Err(StoreError::unavailable("oldest redrive mark", "broken"))
    }
    async fn clear_redrive(&self, _: &str) -> Result<(), StoreError> {
        Err(StoreError::unavailable("clear redrive mark", "broken"))
    }
    async fn archived(&self, _: &str) -> Result<Option<QueuedEvent>, StoreError> {
        Err(StoreError::unavailable("read ledger", "broken"))
    }
    async fn archived_between(&self, _: i64, _: i64) -> Result<Vec<QueuedEvent>, StoreError> {
        Err(StoreError::unavailable("scan ledger", "broken"))
    }
}

contract!(what_the_receiver_could_not_record_the_processor_archives);
/// The archive gap, on both backends (and through SQS on AWS): with its ledger refusing writes
/// the receiver still accepts and enqueues events, a copy marked unarchived; processing it records
/// each body under its key as the receiver would have, whether or not it names a message
/// (`templateReviewed`, an unknown type, a status). Processing again changes nothing.
async fn what_the_receiver_could_not_record_the_processor_archives(backend: Backend) {
    let ledger: Arc<dyn Ledger> = match &backend {
        Backend::Embedded { store, .. } => Arc::new(store.clone()),
        Backend::Aws { ledger, .. } => Arc::new(ledger.clone()),
    };
    let queue: Arc<dyn Queue> = match &backend {
        Backend::Embedded { store, .. } => Arc::new(store.clone()),
        Backend::Aws { queue, .. } => Arc::new(queue.clone()),
    };
    let receiver = Receiver::new(Arc::new(BrokenLedger), queue, ReceiverSettings::default());
    let all = fixtures();
    let bodies = [&all[15], &all[22], &all[6]]; // templateReviewed, paymentCaptured, DELIVERED
    let mut keys = Vec::new();
    for body in bodies {
        let (receipt, path) = receiver.receive(body).await;
        let Receipt::Accepted { key } = receipt else {
            panic!("{receipt:?}")
        };
        assert_eq!(path, ReceivePath::LedgerBypassed);
        assert_eq!(ledger.archived(&key).await.unwrap(), None);
        keys.push(key);
    }
    // Each event went out with the failed ledger write, then once more marked unarchived: the
    // processor archives that copy.
    let queued = backend.drain_queue().await;
    assert_eq!(queued.len(), 2 * bodies.len(), "{queued:?}");
    let unarchived = queued.iter().filter(|event| event.unarchived);
    assert_eq!(unarchived.count(), bodies.len(), "{queued:?}");

    let archive = Archive::new(Arc::clone(&ledger), 7 * 86_400);
    for _ in 0..2 {
        for event in &queued {
            let processed = process(backend.state(), &archive, event).await;
            assert!(processed.is_ok(), "{}: {processed:?}", event.key);
        }
    }
    for (key, body) in keys.iter().zip(bodies) {
        let archived = ledger.archived(key).await.unwrap().expect("archived");
        assert_eq!(archived.body.as_bytes(), body.as_slice(), "{key}");
        assert!(!archived.unarchived);
        let sent = queued
            .iter()
            .find(|e| &e.key == key && e.unarchived)
            .unwrap();
        assert_eq!(archived.received_at, sent.received_at);
    }
    // The status was applied too; the archive comes on top of the state, not instead of it.
    let status = backend
        .state()
        .message("wamid.OUT000000000000000000000003")
        .await
        .unwrap();
    assert!(status.is_some(), "the DELIVERED status was not applied");
}

pub(crate) fn fixtures() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

contract!(replay_re_enqueues_a_time_range);
/// `wati-ingest replay` over either backend: the archived events of the range go back on the
/// queue, byte for byte, oldest first; `inspect` finds an archived event by its key.
async fn replay_re_enqueues_a_time_range(backend: Backend) {
    let ledger = backend.ledger();
    for (key, at) in [("k:early", 100), ("k:middle", 200), ("k:late", 300)] {
        ledger
            .record(&entry(
                key,
                &format!(r#"{{"eventType":"x","n":"{key}"}}"#),
                at,
            ))
            .await
            .unwrap();
    }
    let found = ledger
        .archived("k:middle")
        .await
        .unwrap()
        .expect("archived");
    assert_eq!(found.body, r#"{"eventType":"x","n":"k:middle"}"#);
    assert_eq!(ledger.archived("k:none").await.unwrap(), None);

    let sent = wati_ingest::cli::replay(ledger, backend.queue(), None, 150, 300)
        .await
        .unwrap();
    assert_eq!(sent, 2);
    let mut replayed: Vec<String> = backend
        .drain_queue()
        .await
        .into_iter()
        .map(|e| e.key)
        .collect();
    replayed.sort();
    assert_eq!(replayed, vec!["k:late".to_owned(), "k:middle".to_owned()]);
}

contract!(operators_see_both_quarantines);
/// `inspect`, `quarantine` and `replay --include-quarantined` over either backend: the receiver's
/// and the processor's quarantines are both listed (newest first, bounded), found by key, and
/// only the receiver's bodies are replayed (the processor's are in the archive already); a
/// quarantined body is not an archived event.
async fn operators_see_both_quarantines(backend: Backend) {
    let quarantines = backend.quarantines();
    assert_eq!(quarantines.recent_quarantined(10).await.unwrap(), vec![]);
    let never_parsed = QuarantineEntry {
        key: "quarantine:abc".into(),
        reason: "not JSON".into(),
        body: b"<<not json".to_vec(),
        received_at: 200,
    };
    backend.ledger().quarantine(&never_parsed).await.unwrap();
    let unusable = QueuedEvent::archived("k:proc", 300, r#"{"eventType":"x"}"#);
    backend
        .state()
        .quarantine(&unusable, "names no message id")
        .await
        .unwrap();
    backend
        .ledger()
        .record(&entry("k:proc", &unusable.body, 300))
        .await
        .unwrap();

    let listed: Vec<(QuarantineStage, String, i64, String)> = quarantines
        .recent_quarantined(10)
        .await
        .unwrap()
        .into_iter()
        .map(|kept| {
            (
                kept.stage,
                kept.entry.key,
                kept.entry.received_at,
                kept.entry.reason,
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            (
                QuarantineStage::Processor,
                "k:proc".into(),
                300,
                "names no message id".into()
            ),
            (
                QuarantineStage::Receiver,
                "quarantine:abc".into(),
                200,
                "not JSON".into()
            ),
        ]
    );
    assert_eq!(quarantines.recent_quarantined(1).await.unwrap().len(), 1);
    let found = quarantines
        .quarantined_under("quarantine:abc")
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].stage, QuarantineStage::Receiver);
    assert_eq!(found[0].entry, never_parsed);
    let found = quarantines.quarantined_under("k:proc").await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].stage, QuarantineStage::Processor);
    assert_eq!(found[0].entry.body, unusable.body.as_bytes());
    assert_eq!(
        quarantines.quarantined_under("k:none").await.unwrap(),
        vec![]
    );
    assert_eq!(
        backend.ledger().archived("quarantine:abc").await.unwrap(),
        None
    );

    let sent = wati_ingest::cli::replay(backend.ledger(), backend.queue(), None, 0, 1_000)
        .await
        .unwrap();
    assert_eq!(sent, 1, "the archive only");
    assert_eq!(backend.drain_queue().await[0].key, "k:proc");
    let sent = wati_ingest::cli::replay(
        backend.ledger(),
        backend.queue(),
        Some(quarantines),
        0,
        1_000,
    )
    .await
    .unwrap();
    assert_eq!(sent, 2);
    let mut replayed: Vec<(String, String)> = backend
        .drain_queue()
        .await
        .into_iter()
        .map(|event| (event.key, event.body))
        .collect();
    replayed.sort();
    assert_eq!(
        replayed,
        vec![
            ("k:proc".into(), unusable.body.clone()),
            ("quarantine:abc".into(), "<<not json".into()),
        ]
    );
    let none = wati_ingest::cli::replay(
        backend.ledger(),
        backend.queue(),
        Some(quarantines),
        201,
        299,
    )
    .await
    .unwrap();
    assert_eq!(none, 0, "the range applies to quarantined bodies too");
}

contract!(dead_letters_are_listed_and_redriven_one_or_all);
/// `dead-letters` lists without consuming; `redrive-dlq --key` moves that one only, and a
/// redrive without a key moves the rest, each once. 25 dead letters: several receive pages.
async fn dead_letters_are_listed_and_redriven_one_or_all(backend: Backend) {
    let dead = backend.dead_letters();
    assert_eq!(dead.dead_letters(10).await.unwrap(), vec![]);
    let all: Vec<String> = (0..25).map(|n| format!("k:{n:02}")).collect();
    for key in &all {
        backend
            .dead_letter(&QueuedEvent::archived(
                key,
                100,
                format!(r#"{{"n":"{key}"}}"#),
            ))
            .await;
    }
    let keys = |listed: Vec<wati_ingest::ports::DeadLetter>| {
        let mut keys: Vec<String> = listed
            .into_iter()
            .inspect(|d| assert!(!d.reason.is_empty() && d.received_at == 100, "{d:?}"))
            .map(|d| d.key)
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(dead.dead_letters(100).await.unwrap()), all);
    assert_eq!(dead.dead_letters(2).await.unwrap().len(), 2);
    assert_eq!(
        keys(dead.dead_letters(100).await.unwrap()),
        all,
        "listing consumed nothing and left nothing hidden"
    );

    assert_eq!(dead.redrive(Some("k:07")).await.unwrap(), 1);
    let rest: Vec<String> = all.iter().filter(|k| *k != "k:07").cloned().collect();
    assert_eq!(keys(dead.dead_letters(100).await.unwrap()), rest);
    let requeued = backend.drain_queue().await;
    assert_eq!(requeued.len(), 1);
    assert_eq!(
        (requeued[0].key.as_str(), requeued[0].body.as_str()),
        ("k:07", r#"{"n":"k:07"}"#)
    );
    assert_eq!(dead.redrive(Some("k:none")).await.unwrap(), 0);
    assert_eq!(dead.redrive(None).await.unwrap(), 24);
    assert_eq!(dead.dead_letters(10).await.unwrap(), vec![]);
    let mut requeued: Vec<String> = backend
        .drain_queue()
        .await
        .into_iter()
        .map(|e| e.key)
        .collect();
    requeued.sort();
    assert_eq!(requeued, rest, "each once");
}

/// On DynamoDB, quarantined bodies expire through the tables' TTL: both stages write
/// `expires_at` = receipt + `QUARANTINE_RETENTION_DAYS`, and the template gives the state table
/// the TTL attribute it already gave the ledger (SQLite prunes by the same rule:
/// src/store/embedded/retention.rs).
#[tokio::test]
async fn quarantined_items_expire_after_the_retention() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let stack = support::Stack::create().await;
    let (ledger_table, state_table) = (stack.table("LedgerTable"), stack.table("StateTable"));
    let ledger = wati_ingest::store::aws::DynamoLedger::new(stack.dynamodb.clone(), &ledger_table)
        .with_quarantine_retention_days(3);
    let state =
        wati_ingest::store::dynamo_state::DynamoState::new(stack.dynamodb.clone(), &state_table)
            .with_quarantine_retention_days(3);
    ledger
        .quarantine(&QuarantineEntry {
            key: "quarantine:abc".into(),
            reason: "not JSON".into(),
            body: b"<".to_vec(),
            received_at: 1_000,
        })
        .await
        .unwrap();
    wati_ingest::ports::StateStore::quarantine(
        &state,
        &QueuedEvent::archived("k:proc", 2_000, "{}"),
        "names no message id",
    )
    .await
    .unwrap();
    let expiry = |table: &str, key: Vec<(&str, &str)>| {
        let mut get = stack
            .dynamodb
            .get_item()
            .table_name(table)
            .consistent_read(true);
        for (name, value) in key {
            get = get.key(name, AttributeValue::S(value.into()));
        }
        async move {
            let item = get.send().await.unwrap().item.expect("the item");
            item["expires_at"].as_n().unwrap().parse::<i64>().unwrap()
        }
    };
    assert_eq!(
        expiry(&ledger_table, vec![("pk", "quarantine:abc")]).await,
        1_000 + 3 * 86_400
    );
    assert_eq!(
        expiry(
            &state_table,
            vec![("pk", "QUARANTINE#k:proc"), ("sk", "QUARANTINE")]
        )
        .await,
        2_000 + 3 * 86_400
    );
    let template: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string("template.yaml").unwrap()).unwrap();
    for table in ["LedgerTable", "StateTable"] {
        let ttl = &template["Resources"][table]["Properties"]["TimeToLiveSpecification"];
        assert_eq!(ttl["AttributeName"].as_str(), Some("expires_at"), "{table}");
        assert_eq!(ttl["Enabled"].as_bool(), Some(true), "{table}");
    }
}
