//! The chaos test on the AWS path: the receiver and the processor on their own DynamoDB Local
//! (on disk, so it can be killed and restarted) and their own moto, with SDK-level throttles and
//! lost responses, the processor crashing mid-batch, DynamoDB Local killed and restarted twice,
//! and the SQS emulator frozen for a while.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName};
use wati_ingest::lambda::{aws_sdk_config, process_sqs_batch};
use wati_ingest::ports::{Ledger, StateStore};
use wati_ingest::processor::Archive;
use wati_ingest::receiver::sweep;
use wati_ingest::store::aws::{redrive_dlq, DynamoLedger, SqsQueue};
use wati_ingest::store::dynamo_state::DynamoState;
use wati_ingest::time::{now_unix, Clock};

use super::faults::{Faults, FaultyLedger, FaultyQueue, FaultyState, SdkFaults};
use super::history::{History, Rng};
use super::{named, play, read_router, scale, seed, verify, webhook_router, Report, PLAN};
use crate::support::Stack;

/// Share of AWS SDK attempts answered with a throttle or a lost response.
const SDK_FAULTS: f64 = 0.03;
/// Share of processor batches that crash mid-batch.
const PROCESSOR_CRASHES: f64 = 0.03;
/// Pollers playing Lambda's SQS event source mapping.
const POLLERS: usize = 4;
/// Visibility timeout the pollers ask for, so crashed batches come back quickly.
const VISIBILITY_SECONDS: i32 = 2;

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

/// A DynamoDB Local of this test's own, on disk, so a kill and restart loses nothing written.
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

    /// Kills the emulator (as a crash would) and starts it again on the same port and files.
    async fn restart(&self) {
        let dir = PathBuf::from(std::env::var("EMULATOR_DYNAMODB_DIR").expect(
            "EMULATOR_DYNAMODB_DIR: run the tests through scripts/emulators.sh (make test)",
        ));
        {
            let mut child = self.child.lock().unwrap();
            let _ = child.kill();
            let _ = child.wait();
            *child = Command::new("java")
                .arg(format!(
                    "-Djava.library.path={}",
                    dir.join("DynamoDBLocal_lib").display()
                ))
                .arg("-jar")
                .arg(dir.join("DynamoDBLocal.jar"))
                .args(["-sharedDb", "-dbPath"])
                .arg(self.data.path())
                .args(["-port", &self.port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start DynamoDB Local");
        }
        wait_until_listening(&self.endpoint(), "DynamoDB Local").await;
    }
}

impl Drop for OwnDynamo {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap();
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

/// Plays Lambda's event source mapping: receive up to 10, call the processor, delete what it
/// did not report as failed. A crash drops the batch mid-way: nothing is deleted, and the records
/// come back after the visibility timeout.
async fn poll(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    state: Arc<dyn StateStore>,
    archive: Archive,
    crash_rng: Arc<Mutex<Rng>>,
    crashes: Arc<AtomicUsize>,
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
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let messages = received.messages();
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
            crashes.fetch_add(1, Ordering::SeqCst);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_on_dynamodb_and_sqs() {
    let started = Instant::now();
    let scale = scale("CHAOS_AWS_CONTACTS", 25);
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
    let stack = Stack::create_on(harness.clone(), dynamodb(false), sqs(false)).await;
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
    let batch_crashes = Arc::new(AtomicUsize::new(0));
    let crash_rng = Arc::new(Mutex::new(Rng::new(seed ^ 3)));
    let pollers: Vec<_> = (0..POLLERS)
        .map(|_| {
            tokio::spawn(poll(
                sqs(false),
                queue_url.clone(),
                Arc::clone(&state),
                Archive::new(Arc::new(ledger.clone()), 7 * 86_400),
                Arc::clone(&crash_rng),
                Arc::clone(&batch_crashes),
                Arc::clone(&stop),
            ))
        })
        .collect();

    // Emulator faults at fixed points of the run: DynamoDB Local killed and restarted twice,
    // the SQS emulator frozen for three seconds once.
    let restarts = AtomicUsize::new(0);
    let freezes = AtomicUsize::new(0);
    let mut rng = Rng::new(seed ^ 2);
    let played = play(&history, &webhook, &clock, &mut rng, |progress| {
        let (dynamo, moto, restarts, freezes) = (&dynamo, &moto, &restarts, &freezes);
        async move {
            let due_restarts = [0.3, 0.7].iter().filter(|p| progress >= **p).count();
            if restarts.load(Ordering::SeqCst) < due_restarts {
                restarts.fetch_add(1, Ordering::SeqCst);
                dynamo.restart().await;
            }
            if progress >= 0.5 && freezes.load(Ordering::SeqCst) == 0 {
                freezes.fetch_add(1, Ordering::SeqCst);
                moto.signal("-STOP");
                tokio::time::sleep(Duration::from_secs(3)).await;
                moto.signal("-CONT");
            }
        }
    })
    .await;

    faults.heal();
    sdk_faults.heal();
    let admin_sqs = sqs(false);
    let mut settled = BTreeMap::new();
    settled.insert(
        "dynamodb_restarts".to_owned(),
        restarts.load(Ordering::SeqCst),
    );
    settled.insert("sqs_freezes".to_owned(), freezes.load(Ordering::SeqCst));
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let swept = sweep(&ledger, &queue, 1000)
            .await
            .map_or(0, |report| report.redriven);
        *settled.entry("swept".into()).or_default() += swept;
        let dead = depth(&admin_sqs, &dlq_url).await;
        if dead > 0 && dead != usize::MAX {
            tokio::time::sleep(Duration::from_secs(VISIBILITY_SECONDS as u64)).await;
            let moved = redrive_dlq(&admin_sqs, &dlq_url, &queue_url)
                .await
                .unwrap_or(0);
            *settled.entry("dead_letters_redriven".into()).or_default() += moved;
        }
        let marked = ledger
            .oldest_mark()
            .await
            .map_or(1, |oldest| usize::from(oldest.is_some()));
        if depth(&admin_sqs, &queue_url).await == 0 && dead == 0 && marked == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "did not settle");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for poller in pollers {
        let _ = poller.await;
    }
    settled.insert(
        "processor_crashes".to_owned(),
        batch_crashes.load(Ordering::SeqCst),
    );

    let reader = DynamoState::new(dynamodb(false), stack.table("StateTable"));
    let verified = verify(&history, &read_router(Arc::new(reader))).await;
    let mut injected = named(faults.injected());
    for ((operation, fault), count) in sdk_faults.injected() {
        injected.insert(format!("Sdk{fault:?}:{operation}"), count);
    }
    Report {
        backend: "aws",
        seed,
        contacts: scale.contacts,
        messages: history.messages.len(),
        played,
        faults_injected: injected,
        real_failures: named(faults.real_failures()),
        settled,
        verified,
        seconds: started.elapsed().as_secs_f64(),
    }
    .finish();
}
