//! The chaos test on the AWS path: the receiver and the processor on their own DynamoDB Local
//! (on disk, so it can be stopped and restarted) and their own moto, with SDK-level throttles and
//! lost responses, the second of two state writes failing after it was done, the processor
//! crashing mid-batch, and, while webhooks are in flight, DynamoDB Local stopped (SIGTERM) and
//! restarted, and DynamoDB Local, the SQS emulator, or both, hung (SIGSTOP) for longer than the SDK's
//! operation timeout: every webhook must still be answered within the receiver's timeout, by a
//! redrive mark (SQS hung), the ledger bypass (DynamoDB hung) or a `503` (both).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName};
use wati_ingest::lambda::{aws_sdk_config, process_sqs_batch};
use wati_ingest::ports::DeadLetters;
use wati_ingest::ports::{Ledger, StateStore};
use wati_ingest::processor::Archive;
use wati_ingest::receiver::sweep;
use wati_ingest::store::aws::{DynamoLedger, SqsQueue};
use wati_ingest::store::aws_operator::SqsDeadLetters;
use wati_ingest::store::dynamo_state::DynamoState;
use wati_ingest::time::{now_unix, Clock};

use serde_json::{json, Value};

use wati_ingest::notifier::{EventBridgeBus, PublishSettings};

use super::aws_changes::{self, ThrottledBus};
use super::changes;
use super::faults::{Faults, FaultyLedger, FaultyQueue, FaultyState, SdkFaults};
use super::history::{History, Rng};
use super::{
    named, play, read_router, scale, seed, verify, webhook_router, Flight, Phases, Played, Report,
    PLAN, RECEIVER_TIMEOUT, WINDOW_LEAD,
};
use crate::notifier::{Bus, StreamReader};
use crate::support::Stack;

/// Share of AWS SDK attempts answered with a throttle or a lost response.
const SDK_FAULTS: f64 = 0.03;
/// Share of processor batches that crash mid-batch.
const PROCESSOR_CRASHES: f64 = 0.03;
/// Pollers playing Lambda's SQS event source mapping.
const POLLERS: usize = 4;
/// Visibility timeout the pollers ask for, so crashed batches come back quickly.
const VISIBILITY_SECONDS: i32 = 2;
/// How long settling may go without the backlog shrinking before the run gives up.
const SETTLE_STALL: Duration = Duration::from_secs(120);
/// How long a hung emulator stays hung: longer than the SDK's 3 s operation timeout.
const HANG: Duration = Duration::from_secs(4);
/// Webhooks that must be in flight when an emulator fault strikes.
const IN_FLIGHT_AT_FAULT: usize = 4;

/// What happens to the emulators while webhooks are in flight, and at which share of the run.
#[derive(Debug, Clone, Copy)]
enum EmulatorFault {
    SqsHung,
    DynamoRestarted,
    DynamoHung,
    BothHung,
}

const EMULATOR_FAULTS: [(f64, EmulatorFault); 4] = [
    (0.2, EmulatorFault::SqsHung),
    (0.4, EmulatorFault::DynamoRestarted),
    (0.6, EmulatorFault::DynamoHung),
    (0.8, EmulatorFault::BothHung),
];

/// One emulator fault as it struck.
struct Struck {
    fault: EmulatorFault,
    progress: f64,
    in_flight: usize,
    started: Instant,
    ended: Instant,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

async fn wait_until_listening(endpoint: &str, what: &str) {
    for _ in 0..1200 {
        if reqwest::get(endpoint).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} did not start at {endpoint}");
}

/// A DynamoDB Local of this test's own, on disk, so a stop and restart loses nothing it
/// acknowledged.
struct OwnDynamo {
    child: Mutex<Child>,
    port: u16,
    data: tempfile::TempDir,
}

impl OwnDynamo {
    async fn start() -> OwnDynamo {
        let own = OwnDynamo {
            child: Mutex::new(Command::new("true").spawn().expect("placeholder")),
            port: free_port(),
            data: tempfile::tempdir().expect("temp dir"),
        };
        own.restart().await;
        own
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the emulator while requests are in flight (they fail as in a crash: connections
    /// reset) and starts it again on the same port and files. SIGTERM, not SIGKILL: DynamoDB
    /// Local acknowledges a `TransactWriteItems` before it is on disk, and a SIGKILL right after
    /// loses it (tried: the last of 150 acknowledged transactions lost on each of 5 kills; none
    /// with SIGTERM, none for `UpdateItem`). DynamoDB never loses an acknowledged write, so a
    /// SIGKILL would test the emulator, not us: once in 7 runs it lost a `delivered`.
    async fn restart(&self) {
        let dir = PathBuf::from(std::env::var("EMULATOR_DYNAMODB_DIR").expect(
            "EMULATOR_DYNAMODB_DIR: run the tests through scripts/emulators.sh (make test)",
        ));
        {
            let mut child = self.child.lock().unwrap();
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
            *child = Command::new("java")
                .arg(format!(
                    "-Djava.library.path={}",
                    dir.join("DynamoDBLocal_lib").display()
                ))
                .arg("-jar")
                .arg(dir.join("DynamoDBLocal.jar"))
                .args(["-sharedDb", "-disableTelemetry", "-dbPath"])
                .arg(self.data.path())
                .args(["-port", &self.port.to_string()])
                .current_dir(self.data.path())
                .env("DDB_LOCAL_TELEMETRY", "0")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start DynamoDB Local");
        }
        wait_until_listening(&self.endpoint(), "DynamoDB Local").await;
    }
}

impl OwnDynamo {
    fn signal(&self, signal: &str) {
        let pid = self.child.lock().unwrap().id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal}");
    }
}

impl Drop for OwnDynamo {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap();
        let _ = Command::new("kill")
            .args(["-CONT", &child.id().to_string()])
            .status();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A moto of this test's own, which can be frozen (SIGSTOP) and thawed.
struct OwnSqs {
    child: Child,
    port: u16,
}

impl OwnSqs {
    async fn start() -> OwnSqs {
        let binary = std::env::var("EMULATOR_MOTO_BIN")
            .expect("EMULATOR_MOTO_BIN: run the tests through scripts/emulators.sh (make test)");
        let port = free_port();
        let child = Command::new(binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let own = OwnSqs { child, port };
        wait_until_listening(&format!("{}/moto-api/", own.endpoint()), "moto").await;
        own
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal}");
    }
}

impl Drop for OwnSqs {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the pollers received, how often a receive failed, and how many batches they dropped
/// mid-way (a processor crash).
#[derive(Debug, Default)]
struct Polled {
    received: AtomicUsize,
    receive_errors: AtomicUsize,
    crashes: AtomicUsize,
}

/// Plays Lambda's event source mapping: receive up to 10, call the processor, delete what it
/// did not report as failed. A crash drops the batch mid-way: nothing is deleted, and the records
/// come back after the visibility timeout.
async fn poll(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    state: Arc<dyn StateStore>,
    archive: Archive,
    crash_rng: Arc<Mutex<Rng>>,
    polled: Arc<Polled>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(VISIBILITY_SECONDS)
            .wait_time_seconds(1)
            .send()
            .await;
        let Ok(received) = received else {
            polled.receive_errors.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let messages = received.messages();
        polled.received.fetch_add(messages.len(), Ordering::SeqCst);
        if messages.is_empty() {
            continue;
        }
        let mut event = SqsEvent::default();
        for message in messages {
            let mut record = SqsMessage::default();
            record.message_id = message.message_id().map(str::to_owned);
            record.receipt_handle = message.receipt_handle().map(str::to_owned);
            record.body = message.body().map(str::to_owned);
            record.event_source = Some("aws:sqs".into());
            event.records.push(record);
        }
        let crash_after = {
            let mut rng = crash_rng.lock().unwrap();
            rng.chance(PROCESSOR_CRASHES)
                .then(|| Duration::from_millis(rng.between(0, 30) as u64))
        };
        if let Some(after) = crash_after {
            // The process dies `after` into the batch: what it applied stays, nothing is deleted.
            let processing = process_sqs_batch(Arc::clone(&state), archive.clone(), event);
            let _ = tokio::time::timeout(after, processing).await;
            polled.crashes.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        let report = process_sqs_batch(Arc::clone(&state), archive.clone(), event).await;
        let failed: HashSet<String> = report
            .response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        let entries: Vec<DeleteMessageBatchRequestEntry> = messages
            .iter()
            .filter(|m| !failed.contains(m.message_id().unwrap_or_default()))
            .enumerate()
            .filter_map(|(n, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(n.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()
                    .ok()
            })
            .collect();
        if !entries.is_empty() {
            // A failed delete is redelivered later and applied again, idempotently.
            let _ = sqs
                .delete_message_batch()
                .queue_url(&queue_url)
                .set_entries(Some(entries))
                .send()
                .await;
        }
    }
}

async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> usize {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await;
    let Ok(attributes) = attributes else {
        return usize::MAX;
    };
    attributes
        .attributes()
        .map(|a| {
            a.values()
                .filter_map(|v| v.parse::<usize>().ok())
                .sum::<usize>()
        })
        .unwrap_or(usize::MAX)
}

/// Strikes each of [`EMULATOR_FAULTS`] once the run has reached its share and enough webhooks
/// are in flight (waiting at most a few seconds for them).
async fn strike(flight: &Flight, dynamo: &OwnDynamo, moto: &OwnSqs) -> Vec<Struck> {
    let mut struck = Vec::new();
    for (share, fault) in EMULATOR_FAULTS {
        let mut waited_since = None;
        loop {
            if flight.finished() {
                return struck;
            }
            if flight.progress() >= share {
                let since = *waited_since.get_or_insert_with(Instant::now);
                let enough = flight.in_flight() >= IN_FLIGHT_AT_FAULT
                    || (flight.in_flight() > 0 && since.elapsed() > Duration::from_secs(5));
                if enough {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let in_flight = flight.in_flight();
        let progress = flight.progress();
        let started = Instant::now();
        match fault {
            EmulatorFault::DynamoRestarted => dynamo.restart().await,
            EmulatorFault::SqsHung => {
                moto.signal("-STOP");
                tokio::time::sleep(HANG).await;
                moto.signal("-CONT");
            }
            EmulatorFault::DynamoHung => {
                dynamo.signal("-STOP");
                tokio::time::sleep(HANG).await;
                dynamo.signal("-CONT");
            }
            EmulatorFault::BothHung => {
                dynamo.signal("-STOP");
                moto.signal("-STOP");
                tokio::time::sleep(HANG).await;
                moto.signal("-CONT");
                dynamo.signal("-CONT");
            }
        }
        struck.push(Struck {
            fault,
            progress,
            in_flight,
            started,
            ended: Instant::now(),
        });
    }
    struck
}

impl Struck {
    /// The deliveries in flight during the fault: how many, how they were answered, how slowly,
    /// and how many of their calls failed for real. Fails the test unless the fault hit
    /// webhooks in flight and each was answered within the receiver's timeout.
    fn report(&self, played: &Played, seed: u64) -> Value {
        let during: Vec<_> = played
            .traces
            .iter()
            .filter(|t| t.started < self.ended && t.finished > self.started)
            .collect();
        let mut answers: BTreeMap<&str, usize> = BTreeMap::new();
        for trace in &during {
            *answers.entry(trace.answer.as_str()).or_default() += 1;
        }
        let hit = during.iter().filter(|t| t.real_failures > 0).count();
        let slowest = during
            .iter()
            .map(|t| (t.finished - t.started).as_millis())
            .max()
            .unwrap_or(0);
        let send_timed_out = during.iter().filter(|t| t.send_failed).count();
        let answered_by_mark = during
            .iter()
            .filter(|t| t.send_failed && t.marked && t.answer != "503")
            .count();
        let record_failed = during.iter().filter(|t| t.record_failed).count();
        let report = json!({
            "fault": format!("{:?}", self.fault),
            "at_share": (self.progress * 100.0).round() / 100.0,
            "in_flight_when_struck": self.in_flight,
            "lasted_ms": (self.ended - self.started).as_millis(),
            "webhooks_during": during.len(),
            "webhooks_with_failed_calls": hit,
            "answers": answers,
            "slowest_answer_ms": slowest,
            "send_failed": send_timed_out,
            "answered_by_redrive_mark": answered_by_mark,
            "record_failed": record_failed,
        });
        assert!(
            self.in_flight > 0 && hit > 0,
            "chaos seed {seed} (CHAOS_SEED={seed}): {:?} struck webhooks in flight: {report}",
            self.fault
        );
        assert!(
            slowest <= RECEIVER_TIMEOUT.as_millis(),
            "chaos seed {seed} (CHAOS_SEED={seed}): every webhook answered within the receiver's \
             timeout: {report}"
        );
        if matches!(self.fault, EmulatorFault::SqsHung) {
            // Each send the hang failed is answered by a redrive mark, or by a 503 when the mark
            // failed too (the plan fails a quarter of them): not by anything else.
            let otherwise = during
                .iter()
                .filter(|t| t.send_failed)
                .filter(|t| !(t.marked && t.answer != "503"))
                .filter(|t| !(t.answer == "503" && t.unavailable_explained))
                .count();
            assert!(
                send_timed_out > 0 && otherwise == 0,
                "chaos seed {seed} (CHAOS_SEED={seed}): a hung SQS ends in redrive marks: {report}"
            );
        }
        report
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_on_dynamodb_and_sqs() {
    let started = Instant::now();
    // 22 contacts: with the two business numbers, the CI seed's history at 22 holds about the
    // callbacks it held at 25 before (874 against 807; 981 at 25), so the run takes as long.
    let scale = scale("CHAOS_AWS_CONTACTS", 22);
    let seed = seed();
    let history = History::generate(scale, seed, now_unix());
    let dynamo = OwnDynamo::start().await;
    let moto = OwnSqs::start().await;

    // The functions' clients get the functions' SDK settings (bounded retries and timeouts) and
    // the fault interceptor; the test's own clients (set-up, polling, reading) the SDK defaults.
    let functions = aws_sdk_config().await;
    let harness = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sdk_faults = SdkFaults::new(SDK_FAULTS, seed ^ 4);
    let dynamodb = |faulty: bool| {
        let config = if faulty { &functions } else { &harness };
        let mut builder =
            aws_sdk_dynamodb::config::Builder::from(config).endpoint_url(dynamo.endpoint());
        if faulty {
            builder = builder.interceptor(sdk_faults.clone());
        }
        aws_sdk_dynamodb::Client::from_conf(builder.build())
    };
    let sqs = |faulty: bool| {
        let config = if faulty { &functions } else { &harness };
        let mut builder = aws_sdk_sqs::config::Builder::from(config).endpoint_url(moto.endpoint());
        if faulty {
            builder = builder.interceptor(sdk_faults.clone());
        }
        aws_sdk_sqs::Client::from_conf(builder.build())
    };
    let stack = Stack::create_on_with(harness.clone(), dynamodb(false), sqs(false), true).await;
    let queue_url = stack.queue_url("EventQueue");
    let dlq_url = stack.queue_url("DeadLetterQueue");
    let ledger = DynamoLedger::new(dynamodb(true), stack.table("LedgerTable"));
    let queue = SqsQueue::new(sqs(true), &queue_url);

    let faults = Faults::new(PLAN, seed ^ 1);
    let clock = Clock::manual(0);
    let webhook = webhook_router(
        Arc::new(FaultyLedger {
            inner: Arc::new(ledger.clone()),
            faults: Arc::clone(&faults),
        }),
        Arc::new(FaultyQueue {
            inner: Arc::new(queue.clone()),
            faults: Arc::clone(&faults),
        }),
        &clock,
    );
    let state: Arc<dyn StateStore> = Arc::new(FaultyState {
        inner: Arc::new(DynamoState::new(dynamodb(true), stack.table("StateTable"))),
        faults: Arc::clone(&faults),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let crash_rng = Arc::new(Mutex::new(Rng::new(seed ^ 3)));
    let polled = Arc::new(Polled::default());
    let pollers: Vec<_> = (0..POLLERS)
        .map(|_| {
            tokio::spawn(poll(
                sqs(false),
                queue_url.clone(),
                Arc::clone(&state),
                Archive::new(Arc::new(ledger.clone()), 7 * 86_400),
                Arc::clone(&crash_rng),
                Arc::clone(&polled),
                Arc::clone(&stop),
            ))
        })
        .collect();

    // The change path: the notifier on the state table's stream, putting on a throttled bus
    // whose rule feeds a queue the test drains at the end.
    let state_table = stack.table("StateTable");
    let target = Bus::create_at(&stack, &format!("chaos-{seed}"), &moto.endpoint()).await;
    let events = aws_sdk_eventbridge::Client::from_conf(
        aws_sdk_eventbridge::config::Builder::from(&functions)
            .endpoint_url(moto.endpoint())
            .build(),
    );
    let bus = Arc::new(ThrottledBus::new(
        EventBridgeBus::new(events, format!("chaos-{seed}")),
        seed ^ 5,
    ));
    let publish = PublishSettings {
        window_lead_seconds: WINDOW_LEAD,
        ..PublishSettings::default()
    };
    let notifier_state = DynamoState::new(dynamodb(true), &state_table);
    let notifier_stop = Arc::new(AtomicBool::new(false));
    let notifier = tokio::spawn(aws_changes::run_notifier(
        StreamReader::open_at(&stack, &state_table, &dynamo.endpoint()).await,
        Arc::new(notifier_state.clone()),
        Arc::clone(&bus),
        publish.clone(),
        seed ^ 6,
        Arc::clone(&notifier_stop),
    ));

    // Emulator faults strike while webhooks are in flight, at set shares of the run.
    let flight = Arc::new(Flight::default());
    let mut rng = Rng::new(seed ^ 2);
    let mut phases = Phases::start();
    // A line a minute on how the delivery goes, for runs that take long.
    let watch = async {
        let mut last = Instant::now();
        while !flight.finished() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if last.elapsed() > Duration::from_secs(60) {
                last = Instant::now();
                eprintln!(
                    "chaos[aws]: {:.0}% delivered, {} in flight, real failures {:?}, pollers \
                     received {} ({} failed receives)",
                    flight.progress() * 100.0,
                    flight.in_flight(),
                    faults.real_failures(),
                    polled.received.load(Ordering::SeqCst),
                    polled.receive_errors.load(Ordering::SeqCst)
                );
            }
        }
    };
    let (played, struck, ()) = tokio::join!(
        play(&history, &webhook, &clock, &mut rng, &flight, |_| {}),
        strike(&flight, &dynamo, &moto),
        watch
    );
    let emulator_faults = struck
        .iter()
        .map(|struck| struck.report(&played, seed))
        .collect::<Vec<_>>();
    phases.lap("play");

    faults.heal();
    sdk_faults.heal();
    let admin_sqs = sqs(false);
    let mut settled = BTreeMap::new();
    // Settles while the backlog shrinks; gives up (and says so in the report) after two
    // minutes without progress.
    let mut least = usize::MAX;
    let mut progressed = Instant::now();
    let mut said = Instant::now();
    loop {
        let swept = sweep(&ledger, &queue, 1000)
            .await
            .map_or(0, |report| report.redriven);
        *settled.entry("swept".into()).or_default() += swept;
        let dead = depth(&admin_sqs, &dlq_url).await;
        if dead > 0 && dead != usize::MAX {
            tokio::time::sleep(Duration::from_secs(VISIBILITY_SECONDS as u64)).await;
            let dead_letters = SqsDeadLetters {
                client: admin_sqs.clone(),
                dlq_url: dlq_url.clone(),
                queue_url: queue_url.clone(),
            };
            let moved = dead_letters.redrive(None).await.unwrap_or(0);
            *settled.entry("dead_letters_redriven".into()).or_default() += moved;
        }
        let marked = ledger
            .oldest_mark()
            .await
            .map_or(1, |oldest| usize::from(oldest.is_some()));
        let queued = depth(&admin_sqs, &queue_url).await;
        let left = queued.saturating_add(dead).saturating_add(marked);
        if left == 0 {
            break;
        }
        if left < least {
            least = left;
            progressed = Instant::now();
        }
        if said.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "chaos[aws]: settling: {queued} queued, {dead} dead letters, {marked} marks; \
                 pollers received {} ({} failed receives)",
                polled.received.load(Ordering::SeqCst),
                polled.receive_errors.load(Ordering::SeqCst)
            );
            said = Instant::now();
        }
        if progressed.elapsed() > SETTLE_STALL {
            settled.insert("unsettled".into(), left);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for poller in pollers {
        let _ = poller.await;
    }
    settled.insert(
        "processor_crashes".to_owned(),
        polled.crashes.load(Ordering::SeqCst),
    );
    settled.insert(
        "poller_receive_errors".to_owned(),
        polled.receive_errors.load(Ordering::SeqCst),
    );

    phases.lap("settle");

    // The notifier catches up with the stream, the bus heals, the window timer runs until
    // nothing is due (a window found moved is announced on the next run).
    notifier_stop.store(true, Ordering::SeqCst);
    let notified = notifier.await.expect("notifier");
    bus.heal();
    let timer_now = now_unix();
    let mut timer_runs = 0;
    loop {
        let report = wati_ingest::windows::announce_due_windows(
            &notifier_state,
            bus.as_ref(),
            &publish,
            timer_now,
            WINDOW_LEAD,
        )
        .await;
        timer_runs += 1;
        *settled.entry("windows_announced".into()).or_default() += report.announced;
        if report.due == 0 || timer_runs >= 4 {
            break;
        }
    }
    let delivered = aws_changes::documents_of(&target.drain().await);
    phases.lap("notify");

    let reader = DynamoState::new(dynamodb(false), stack.table("StateTable"));
    let verified = verify(&history, &played.receipts, &read_router(Arc::new(reader))).await;
    let mut changes = changes::verify_changes(
        &history.callbacks,
        &played.receipts,
        &delivered,
        &bus.taken(&delivered),
        timer_now,
        WINDOW_LEAD,
    );
    changes.transport = BTreeMap::from([
        (
            "put_events_throttled".to_owned(),
            bus.throttled_calls.load(Ordering::SeqCst),
        ),
        (
            "entries_refused".to_owned(),
            bus.refused_entries.load(Ordering::SeqCst),
        ),
        ("notifier_crashes".to_owned(), notified.crashes),
        (
            "notifier_partial_failures".to_owned(),
            notified.partial_failures,
        ),
        ("notifier_invocations".to_owned(), notified.invocations),
        ("stream_records".to_owned(), notified.records),
        ("stream_read_errors".to_owned(), notified.read_errors),
    ]);
    phases.lap("verify");
    let mut injected = named(faults.injected());
    for ((operation, fault), count) in sdk_faults.injected() {
        injected.insert(format!("Sdk{fault:?}:{operation}"), count);
    }
    Report {
        backend: "aws",
        seed,
        contacts: scale.contacts,
        messages: history.messages,
        cases: history.cases.clone(),
        played,
        faults_injected: injected,
        real_failures: named(faults.real_failures()),
        real_errors: named(faults.real_errors()),
        emulator_faults,
        settled,
        verified,
        changes: Some(changes),
        phases: phases.laps,
        seconds: started.elapsed().as_secs_f64(),
    }
    .finish();
}
