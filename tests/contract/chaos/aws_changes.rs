//! The change path of the AWS chaos run: the notifier on the state table's stream while the
//! webhooks flow and the emulators fail, as Lambda's event source mapping runs it: batches of a
//! shard's records, a batch crashing mid-way (the invocation aborted; the batch comes again), a
//! batch that reports a failed record retried from that record. Its DynamoDB reads go through
//! the run's SDK faults; its bus throttles whole `PutEvents` calls and refuses single entries.
//! After the run the window timer announces what is due, and the documents the bus's rule put
//! on an SQS queue are compared by [`super::changes::verify_changes`].

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::dynamodb::EventRecord;
use serde::Serialize;
use serde_json::Value;
use wati_ingest::notifier::{
    handle_stream_batch, BusEntry, ChangeBus, ChangeState, EventBridgeBus, PublishSettings,
};
use wati_ingest::time::now_unix;

use super::history::{draw, Rng};
use crate::notifier::{event_of, StreamReader};

/// Shares of `PutEvents` calls throttled whole, and of entries refused one by one.
const CALLS_THROTTLED: f64 = 0.1;
const ENTRIES_REFUSED: f64 = 0.05;
/// Share of notifier invocations that crash mid-batch.
const NOTIFIER_CRASHES: f64 = 0.05;
/// Records per invocation at most: fewer than the template's `BatchSize`, so that crashes and
/// retries strike more invocations.
const BATCH: usize = 20;

/// The bus as EventBridge answers under load: a share of calls throttled, a share of entries
/// refused (a partial failure), decided by the seed and the call's number. Keeps the id of every
/// entry the bus took.
pub struct ThrottledBus {
    inner: EventBridgeBus,
    seed: u64,
    calls: AtomicU64,
    healed: AtomicBool,
    pub throttled_calls: AtomicUsize,
    pub refused_entries: AtomicUsize,
    taken: Mutex<BTreeSet<String>>,
    /// Ids of entries whose call failed at the SDK (a timeout under load): EventBridge may have
    /// taken them all the same, and the notifier puts them again.
    unanswered: Mutex<BTreeSet<String>>,
}

impl ThrottledBus {
    pub fn new(inner: EventBridgeBus, seed: u64) -> ThrottledBus {
        ThrottledBus {
            inner,
            seed,
            calls: AtomicU64::new(0),
            healed: AtomicBool::new(false),
            throttled_calls: AtomicUsize::new(0),
            refused_entries: AtomicUsize::new(0),
            taken: Mutex::new(BTreeSet::new()),
            unanswered: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn heal(&self) {
        self.healed.store(true, Ordering::SeqCst);
    }

    /// The ids of every entry the bus took.
    /// The ids the bus took, and those of `delivered` it may have taken without the notifier
    /// hearing so (the answer lost: the document was published all the same).
    pub fn taken(&self, delivered: &[Value]) -> BTreeSet<String> {
        let mut taken = self.taken.lock().unwrap().clone();
        let unanswered = self.unanswered.lock().unwrap();
        taken.extend(
            delivered
                .iter()
                .filter_map(|d| d["id"].as_str())
                .filter(|id| unanswered.contains(*id))
                .map(str::to_owned),
        );
        taken
    }
}

#[async_trait]
impl ChangeBus for ThrottledBus {
    async fn put_events(&self, entries: &[BusEntry]) -> Result<Vec<Option<String>>, String> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        let faulty = !self.healed.load(Ordering::SeqCst);
        if faulty && draw(&[self.seed, call, 0]) < CALLS_THROTTLED {
            self.throttled_calls.fetch_add(1, Ordering::SeqCst);
            return Err("ThrottlingException: Rate exceeded (injected)".into());
        }
        let refused: Vec<bool> = (0..entries.len())
            .map(|n| faulty && draw(&[self.seed, call, n as u64 + 1]) < ENTRIES_REFUSED)
            .collect();
        let sent: Vec<BusEntry> = entries
            .iter()
            .zip(&refused)
            .filter(|(_, refused)| !**refused)
            .map(|(entry, _)| entry.clone())
            .collect();
        let mut answers = if sent.is_empty() {
            Vec::new()
        } else {
            match self.inner.put_events(&sent).await {
                Ok(answers) => answers,
                Err(error) => {
                    let mut unanswered = self.unanswered.lock().unwrap();
                    unanswered.extend(sent.iter().map(|entry| entry.id.clone()));
                    return Err(error);
                }
            }
        }
        .into_iter();
        {
            let mut taken = self.taken.lock().unwrap();
            for (entry, answer) in sent.iter().zip(answers.clone()) {
                if answer.is_none() {
                    taken.insert(entry.id.clone());
                }
            }
        }
        Ok(refused
            .iter()
            .map(|refused| {
                if *refused {
                    self.refused_entries.fetch_add(1, Ordering::SeqCst);
                    Some("ThrottlingException".to_owned())
                } else {
                    answers.next().unwrap_or(Some("NoResult".to_owned()))
                }
            })
            .collect())
    }
}

/// What the notifier did over the run.
#[derive(Debug, Default, Serialize)]
pub struct NotifierRun {
    pub records: usize,
    pub invocations: usize,
    /// Invocations aborted mid-batch (the batch delivered again).
    pub crashes: usize,
    /// Invocations that reported a failed record (retried from it).
    pub partial_failures: usize,
    /// Stream reads that failed (an emulator down or hung), tried again.
    pub read_errors: usize,
}

/// Runs the notifier on `stream` until `stop` is set and the stream has been read empty twice.
pub async fn run_notifier(
    mut stream: StreamReader,
    state: Arc<dyn ChangeState>,
    bus: Arc<ThrottledBus>,
    settings: PublishSettings,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> NotifierRun {
    let mut run = NotifierRun::default();
    let mut crashes = Rng::new(seed);
    let mut empty_after_stop = 0;
    loop {
        let records = match stream.try_read().await {
            Ok(records) => records,
            Err(_) => {
                run.read_errors += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if records.is_empty() {
            if stop.load(Ordering::SeqCst) {
                empty_after_stop += 1;
                if empty_after_stop >= 2 {
                    return run;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        empty_after_stop = 0;
        run.records += records.len();
        for batch in records.chunks(BATCH) {
            invoke_until_done(batch, &state, &bus, &settings, &mut crashes, &mut run).await;
        }
    }
}

/// One batch as Lambda delivers it: again after a crash, from the reported record after a
/// partial failure, until the notifier answers with no failure.
async fn invoke_until_done(
    batch: &[EventRecord],
    state: &Arc<dyn ChangeState>,
    bus: &Arc<ThrottledBus>,
    settings: &PublishSettings,
    crashes: &mut Rng,
    run: &mut NotifierRun,
) {
    let mut from = 0;
    loop {
        run.invocations += 1;
        let event = event_of(&batch[from..]);
        let invocation = {
            let (state, bus, settings) = (Arc::clone(state), Arc::clone(bus), settings.clone());
            tokio::spawn(async move {
                let bus: &dyn ChangeBus = bus.as_ref();
                handle_stream_batch(state.as_ref(), bus, event, &settings, now_unix()).await
            })
        };
        if crashes.chance(NOTIFIER_CRASHES) {
            // Dies a little way in: some documents may be on the bus already.
            tokio::time::sleep(Duration::from_millis(crashes.between(0, 40) as u64)).await;
            invocation.abort();
            let _ = invocation.await;
            run.crashes += 1;
            continue;
        }
        let Ok(report) = invocation.await else {
            run.crashes += 1;
            continue;
        };
        let Some(failure) = report.response.batch_item_failures.first() else {
            return;
        };
        run.partial_failures += 1;
        let failed = failure.item_identifier.clone().unwrap_or_default();
        if let Some(n) = batch[from..]
            .iter()
            .position(|r| r.change.sequence_number.as_deref() == Some(failed.as_str()))
        {
            from += n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The change documents of the EventBridge envelopes the rule delivered.
pub fn documents_of(envelopes: &[Value]) -> Vec<Value> {
    envelopes
        .iter()
        .map(|envelope| envelope["detail"].clone())
        .collect()
}
