//! The window timer end to end on the emulators, on a clock the test moves: the state table from
//! `template.yaml` (its `by_next_due` index included) on DynamoDB Local, customer messages
//! applied through the processor's `apply`, the stream read and handed to the notifier (which
//! records each window), the timer's sweep at chosen times putting documents on an EventBridge bus
//! (moto) routed to SQS. The same history is applied to the embedded store and its own window
//! timer run at the same times: both announce the same documents under the same ids.

use serde_json::Value;
use wati_ingest::notifier::{handle_stream_batch, PublishSettings};
use wati_ingest::ports::{ChangeFeed, QueuedEvent, StateStore};
use wati_ingest::processor::apply;
use wati_ingest::store::dynamo_state::DynamoState;
use wati_ingest::store::embedded::EmbeddedStore;
use wati_ingest::windows::announce_due_windows;

use crate::notifier::{event_of, Bus, StreamReader};
use crate::support::Stack;

const T: i64 = 1_764_238_453;
const DAY: i64 = 86_400;
const LEAD: i64 = 3_600;
const CONTACT: &str = "14155550177";
const OTHER: &str = "14155550178";
const SECOND_CHANNEL: &str = "6734a09f1c2b3a4d5e6f7c02";

/// A customer's message at `at`, on the default number or on the second one.
fn inbound(id: &str, wa_id: &str, at: i64, second_number: bool) -> String {
    let (channel, number) = if second_number {
        (format!("\"{SECOND_CHANNEL}\""), "14155550200")
    } else {
        ("null".to_owned(), "14155550000")
    };
    format!(
        r#"{{"eventType":"message","id":"{id}","waId":"{wa_id}","owner":false,"timestamp":"{at}","channelId":{channel},"channelPhoneNumber":"{number}"}}"#
    )
}

struct Both {
    stack: Stack,
    state: DynamoState,
    stream: StreamReader,
    bus: Bus,
    settings: PublishSettings,
    local: EmbeddedStore,
    _dir: tempfile::TempDir,
    /// Local window documents already seen.
    local_seen: usize,
    n: usize,
}

impl Both {
    async fn create() -> Both {
        let stack = Stack::create_streaming(true).await;
        let table = stack.table("StateTable");
        let state = DynamoState::new(stack.dynamodb.clone(), &table);
        let stream = StreamReader::open(&stack, &table).await;
        let bus = Bus::create(&stack, &format!("windows-{}", table.to_lowercase())).await;
        let dir = tempfile::tempdir().unwrap();
        let local = EmbeddedStore::open(&dir.path().join("windows.db")).unwrap();
        Both {
            stack,
            state,
            stream,
            bus,
            settings: PublishSettings {
                window_lead_seconds: LEAD,
                ..PublishSettings::default()
            },
            local,
            _dir: dir,
            local_seen: 0,
            n: 0,
        }
    }

    /// A webhook applied to both stores; on AWS the notifier handles its stream records at `now`
    /// unless `notify` is false (its stream is behind).
    async fn customer(&mut self, body: String, now: i64, notify: bool) {
        self.n += 1;
        let queued = QueuedEvent::archived(format!("k{}", self.n), now, body);
        apply(&self.state, &queued).await.expect("apply on AWS");
        apply(&self.local as &dyn StateStore, &queued)
            .await
            .expect("apply locally");
        if notify {
            self.notify(now).await;
        }
    }

    async fn notify(&mut self, now: i64) {
        let records = self.stream.read().await;
        let report = handle_stream_batch(
            &self.state,
            &self.bus.bus,
            event_of(&records),
            &self.settings,
            now,
        )
        .await;
        assert!(report.response.batch_item_failures.is_empty());
        // Only window documents are compared here.
        self.bus.drain().await;
    }

    /// Both timers at `now`: the AWS window documents as delivered through the bus, and the ids
    /// the local timer announced, which must be the same.
    async fn tick(&mut self, now: i64) -> Vec<Value> {
        let report =
            announce_due_windows(&self.state, &self.bus.bus, &self.settings, now, LEAD).await;
        assert_eq!(report.failures, 0, "{report:?}");
        let delivered: Vec<Value> = self
            .bus
            .drain()
            .await
            .into_iter()
            .map(|envelope| {
                assert_eq!(envelope["detail-type"], envelope["detail"]["type"]);
                envelope["detail"].clone()
            })
            .collect();
        self.local.announce_due_windows(now, LEAD).await.unwrap();
        let local: Vec<Value> = self
            .local
            .changes_after(0, 10_000)
            .await
            .unwrap()
            .iter()
            .map(|entry| serde_json::from_str::<Value>(&entry.document).unwrap())
            .filter(|d| d["type"].as_str().unwrap().starts_with("contact.window_"))
            .collect();
        let local_new = local[self.local_seen..].to_vec();
        self.local_seen = local.len();
        let ids = |documents: &[Value]| {
            let mut ids: Vec<String> = documents
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_owned())
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(
            ids(&delivered),
            ids(&local_new),
            "at {now}: the AWS timer and the local one announce the same ids"
        );
        for document in &delivered {
            let twin = local_new
                .iter()
                .find(|d| d["id"] == document["id"])
                .unwrap();
            assert_eq!(document, twin, "the same document on both backends");
        }
        delivered
    }
}

fn kinds(documents: &[Value]) -> Vec<(String, String, String)> {
    let mut kinds: Vec<(String, String, String)> = documents
        .iter()
        .map(|d| {
            (
                d["type"].as_str().unwrap().to_owned(),
                d["contact"]["wa_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                d["contact"]["window_expires_at"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    kinds.sort();
    kinds
}

fn rfc(at: i64) -> String {
    wati_ingest::time::Rfc3339(Some(at)).render().unwrap()
}

fn one(kind: &str, contact: &str, end: i64) -> Vec<(String, String, String)> {
    vec![(kind.to_owned(), contact.to_owned(), rfc(end))]
}

/// A customer message at T: nothing before T+24h-lead, one closing then, nothing more a minute
/// before the end, one closed at the end, nothing after. A window moved by a second message
/// before it fell due announces only the new end's documents; a window the notifier has not
/// moved yet (stream behind) too; a closing that fell due while nothing ran is skipped. Each
/// run's ids and documents equal the local store's window timer's for the same history.
#[tokio::test]
async fn windows_close_on_time_once_and_not_when_moved() {
    let _streams = crate::notifier::STREAMS.lock().await;
    let mut both = Both::create().await;
    both.customer(inbound("w-1", CONTACT, T, false), T + 5, true)
        .await;
    // Another contact, on the second number, whose window ends an hour later.
    both.customer(inbound("w-o", OTHER, T + LEAD, true), T + LEAD, true)
        .await;
    assert!(both.tick(T + DAY - LEAD - 1).await.is_empty());
    let closing = both.tick(T + DAY - LEAD).await;
    assert_eq!(
        kinds(&closing),
        one("contact.window_closing", CONTACT, T + DAY)
    );
    assert_eq!(closing[0]["contact"]["window_open"], true);
    assert_eq!(closing[0]["contact"]["channel_id"], Value::Null);
    let again = both.tick(T + DAY - 60).await;
    assert!(again.is_empty(), "once: {again:#?}");
    let closed = both.tick(T + DAY).await;
    // The other contact's closing falls due at the same time.
    assert_eq!(
        kinds(&closed),
        [
            one("contact.window_closed", CONTACT, T + DAY),
            one("contact.window_closing", OTHER, T + LEAD + DAY),
        ]
        .concat()
    );
    let mine = closed
        .iter()
        .find(|d| d["type"] == "contact.window_closed")
        .unwrap();
    assert_eq!(mine["contact"]["window_open"], false);
    assert_eq!(mine["occurred_at"], rfc(T + DAY));
    let other = closed
        .iter()
        .find(|d| d["contact"]["wa_id"] == OTHER)
        .unwrap();
    assert_eq!(other["contact"]["channel_id"], SECOND_CHANNEL);
    assert!(both.tick(T + DAY + 60).await.is_empty(), "once");
    assert_eq!(
        kinds(&both.tick(T + LEAD + DAY).await),
        one("contact.window_closed", OTHER, T + LEAD + DAY)
    );

    // Two days later, then again two hours later, before the first closing fell due.
    let second = T + 2 * DAY;
    both.customer(inbound("w-2", CONTACT, second, false), second, true)
        .await;
    both.customer(
        inbound("w-3", CONTACT, second + 7_200, false),
        second + 7_200,
        true,
    )
    .await;
    let early = both.tick(second + DAY - LEAD).await;
    assert!(
        early.is_empty(),
        "the moved window is not closing: {early:?}"
    );
    let moved_end = second + 7_200 + DAY;
    assert_eq!(
        kinds(&both.tick(moved_end - LEAD).await),
        one("contact.window_closing", CONTACT, moved_end)
    );

    // A message the notifier has not handled yet (its stream behind): the timer sees it in the
    // contact's view, moves the window instead of closing it.
    both.customer(
        inbound("w-4", CONTACT, moved_end - 600, false),
        moved_end - 600,
        false,
    )
    .await;
    let lagged = both.tick(moved_end).await;
    assert!(lagged.is_empty(), "moved, not closed: {lagged:?}");
    both.notify(moved_end + 1).await;
    let newest_end = moved_end - 600 + DAY;
    // Down from before its closing until after its end: only "closed" is still true.
    assert_eq!(
        kinds(&both.tick(newest_end + DAY).await),
        one("contact.window_closed", CONTACT, newest_end)
    );
    assert!(both.tick(newest_end + 2 * DAY).await.is_empty());
    drop(both.stack);
}
