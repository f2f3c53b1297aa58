//! The forwarder's loop: reads due changes ahead, keeps up to `concurrency` attempts in flight,
//! and records their outcomes in the background, one write at a time for every attempt that ended
//! meanwhile, so that sending never waits for the disk.
//!
//! Every change the forwarder holds (read due, in flight, or ended but not yet recorded) is in
//! `held`; due reads skip those, so no change is sent twice by one forwarder. A change leaves
//! `held` once the write of its outcome is done: if that write failed, the change is still pending
//! and is read and sent again (at least once).

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use super::{outcome, Attempt, ForwardSchedule, ForwardTarget};
use crate::ports::StoreError;
use crate::store::embedded::{DueForward, EmbeddedStore, ForwardOutcome};

/// How many new outbox changes one write takes for forwarding.
const TAKE_AT_ONCE: usize = 500;

/// How many due changes one read brings (read again when fewer are left than can be in flight).
const READ_AHEAD: usize = 256;

/// While the local processor is behind, rounds of attempts start at most this often.
const STEP_BACK_ROUND: Duration = Duration::from_secs(2);

/// The write under way: the changes whose outcomes it records, and how many new changes it took.
type Recording = Pin<Box<dyn Future<Output = (Vec<String>, Result<usize, StoreError>)> + Send>>;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Forwards the outbox to `target` until a `410 Gone` pauses it (then returns once the attempts
/// in flight have ended and their outcomes are recorded). Runs beside the pipeline; store errors
/// are logged and retried.
pub async fn run(store: EmbeddedStore, target: ForwardTarget, schedule: ForwardSchedule) {
    let host = target.host();
    tracing::info!(%host, "forwarding changes");
    let concurrency = schedule.concurrency.max(1);
    let mut held: HashSet<String> = HashSet::new();
    let mut ready: VecDeque<DueForward> = VecDeque::new();
    let mut attempts: JoinSet<(DueForward, i64, Attempt)> = JoinSet::new();
    let mut unrecorded: Vec<(String, i64, ForwardOutcome)> = Vec::new();
    let mut recording: Option<Recording> = None;
    // Whether a due read may find changes not read yet / the outbox may hold changes not taken.
    let mut look_again = true;
    let mut take_wanted = true;
    let mut paused = false;
    let mut tick = tokio::time::interval(schedule.poll);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // When the last round of attempts started while the processor was behind.
    let mut last_round_behind: Option<Instant> = None;
    loop {
        // Ingestion first: while the processor is behind, one round of attempts (and the takes
        // and reads it needs) every STEP_BACK_ROUND, so that the forwarder's writes and CPU go to
        // accepting and applying webhooks (on a small machine they share the cores and the state
        // database's writer); the backlog of changes goes out once it has caught up.
        let behind = store.queue_backlogged();
        let stepping_back =
            behind && last_round_behind.is_some_and(|at| at.elapsed() < STEP_BACK_ROUND);
        let active = !paused && !stepping_back;
        if recording.is_none() && (!unrecorded.is_empty() || (take_wanted && active)) {
            let outcomes = std::mem::take(&mut unrecorded);
            let take = if active { TAKE_AT_ONCE } else { 0 };
            recording = Some(record(store.clone(), outcomes, take));
            take_wanted &= take == 0;
        }
        if active && look_again && ready.len() < concurrency {
            // Ask for enough to skip those held (still pending in the table).
            let limit = READ_AHEAD + held.len();
            match store.due_forwards(now_ms(), limit).await {
                Ok(due) => {
                    // A short page: nothing else is due until time passes or changes are taken.
                    look_again = due.len() == limit;
                    for due in due {
                        if held.insert(due.change_id.clone()) {
                            ready.push_back(due);
                        }
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "forwarder: read due changes");
                    look_again = false;
                }
            }
        }
        let mut started = false;
        while active && attempts.len() < concurrency {
            let Some(due) = ready.pop_front() else { break };
            started = true;
            let target = target.clone();
            attempts.spawn(async move {
                let started_ms = now_ms();
                let attempt = target
                    .send(&due.change_id, started_ms / 1_000, due.document.clone())
                    .await;
                (due, started_ms, attempt)
            });
        }
        if started && behind {
            last_round_behind = Some(Instant::now());
        }
        if paused && attempts.is_empty() && unrecorded.is_empty() && recording.is_none() {
            tracing::error!(
                %host,
                "forwarding paused until restart: the target answered 410 Gone"
            );
            return;
        }
        tokio::select! {
            Some(first) = attempts.join_next(), if !attempts.is_empty() => {
                let mut finished = vec![first];
                while let Some(more) = attempts.try_join_next() {
                    finished.push(more);
                }
                // A panicked attempt: its change stays held, pending in the table, and is sent
                // again after a restart.
                for (due, started_ms, attempt) in finished.into_iter().flatten() {
                    let recorded = outcome(&due, &attempt, started_ms, &schedule);
                    paused |= attempt == Attempt::Gone;
                    log_attempt(&host, &due, &attempt, &recorded);
                    unrecorded.push((due.change_id, started_ms, recorded));
                }
            }
            (recorded, result) = async { recording.as_mut().expect("guarded").await },
                if recording.is_some() =>
            {
                recording = None;
                for change_id in recorded {
                    held.remove(&change_id);
                }
                match result {
                    Ok(taken) => {
                        look_again |= taken > 0;
                        take_wanted |= taken == TAKE_AT_ONCE;
                    }
                    // Still pending: they are read and sent again (at least once).
                    Err(error) => {
                        tracing::error!(%error, "forwarder: record outcomes");
                        look_again = true;
                    }
                }
            }
            // Retries come due and webhooks add changes while the forwarder is busy too.
            _ = tick.tick() => {
                look_again = true;
                take_wanted = true;
            }
        }
    }
}

/// The write of `outcomes` (with up to `take` new changes taken in the same transaction); with no
/// outcomes, only the take, which reads before it writes.
fn record(
    store: EmbeddedStore,
    outcomes: Vec<(String, i64, ForwardOutcome)>,
    take: usize,
) -> Recording {
    Box::pin(async move {
        let recorded: Vec<String> = outcomes.iter().map(|(id, _, _)| id.clone()).collect();
        let result = if outcomes.is_empty() {
            store.take_changes_to_forward(take).await
        } else {
            store.record_forwards(outcomes, take).await
        };
        (recorded, result)
    })
}

/// One log line per attempt that did not simply deliver.
fn log_attempt(host: &str, due: &DueForward, attempt: &Attempt, recorded: &ForwardOutcome) {
    match (attempt, recorded) {
        (Attempt::Delivered, _) => {
            tracing::debug!(change = %due.change_id, %host, "forwarded")
        }
        (Attempt::Gone, _) => tracing::error!(
            change = %due.change_id, %host,
            "forward target answered 410 Gone: change dead-lettered, forwarding paused \
             until restart"
        ),
        (Attempt::Failed(error), ForwardOutcome::Dead { .. }) => tracing::error!(
            change = %due.change_id, %host, attempts = due.attempts + 1, %error,
            "forward dead-lettered: retry horizon passed (wati-ingest forwards resend)"
        ),
        (Attempt::Failed(error), _) => tracing::warn!(
            change = %due.change_id, %host, attempt = due.attempts + 1, %error,
            "forward failed; will retry"
        ),
    }
}
