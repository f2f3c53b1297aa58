//! Faults injected around the real adapters, and what every webhook's calls did.
//!
//! - [`FaultyLedger`], [`FaultyQueue`] and [`FaultyState`] wrap the real ports and fail chosen
//!   calls (or "crash" the delivery between its ledger write and its send, or lose the answer of
//!   a state write that was done). They also note the outcome of every call a delivery makes,
//!   injected or real, in the delivery's [`CallLog`], so the test can say which `503`s the faults
//!   explain and that every `200` had a durable write.
//! - [`SdkFaults`] is an AWS SDK interceptor: it answers chosen attempts with DynamoDB/SQS
//!   throttling errors (the request never reached the emulator) or with a 500 after the emulator
//!   did the work (the response was lost), and fails every attempt of the second write of chosen
//!   state applies (after the emulator did it). The SDK's own retries then run for real.
//!
//! Every decision is a pure function of the seed and where the call is: a delivery's number
//! (which callback, which of Wati's attempts) and how many calls of the kind it made before,
//! or an apply's identity (its facts and how many times they have been applied) and the call's
//! number within it; for the SDK, the operation's number and the attempt. Concurrent tasks then
//! decide the same in any interleaving, so a failing seed replays its faults. (What stays
//! nondeterministic is timing: which of two concurrent deliveries of one key records it first,
//! when a processor crash strikes, how long an emulator takes to restart.)

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::config::interceptors::{
    BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextMut,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::{Storable, StoreReplace};
use tokio::sync::Notify;
use wati_ingest::message::MessageRecord;
use wati_ingest::ports::{
    Ledger, LedgerEntry, MarkCursor, MarkedPage, MergeOutcome, QuarantineEntry, Queue, QueuedEvent,
    Recorded, StateStore, StoreError,
};
use wati_ingest::session::ContactView;

use super::history::{draw, hash, hash_bytes};

/// The calls a delivery's outcome depends on, and the processor's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Call {
    Record,
    Send,
    Mark,
    Quarantine,
    /// The delivery's process died after its ledger write, before its send.
    Crash,
    /// A state write that failed before doing anything.
    Apply,
    /// A state write that was done, whose answer was lost.
    ApplyAnswerLost,
    StateQuarantine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Injected,
    /// Failed without an injected fault (an emulator down, hung or restarting).
    Failed,
}

tokio::task_local! {
    /// The log of the delivery the current task is handling.
    pub static DELIVERY: Arc<CallLog>;
    /// The state apply the current task is doing (its SDK calls are counted here).
    static APPLY: Arc<ApplyContext>;
}

/// What one delivery's calls did, and a way for a "crash" to stop it.
#[derive(Debug)]
pub struct CallLog {
    /// The delivery's number (from its callback and attempt): where its fault decisions come
    /// from.
    pub number: u64,
    calls: Mutex<Vec<(Call, Outcome)>>,
    sdk_operations: AtomicU64,
    pub crashed: Notify,
}

impl CallLog {
    pub fn new(number: u64) -> CallLog {
        CallLog {
            number,
            calls: Mutex::default(),
            sdk_operations: AtomicU64::new(0),
            crashed: Notify::new(),
        }
    }

    fn note(call: Call, outcome: Outcome) {
        let _ = DELIVERY.try_with(|log| log.calls.lock().unwrap().push((call, outcome)));
    }

    fn any(&self, call: Call, ok: bool) -> bool {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .any(|(c, outcome)| *c == call && (*outcome == Outcome::Ok) == ok)
    }

    /// Calls of this delivery that failed for real (no injected fault).
    pub fn real_failures(&self) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, outcome)| *outcome == Outcome::Failed)
            .count()
    }

    /// Whether `call` failed for real (timed out, refused), not by an injected fault.
    pub fn failed_for_real(&self, call: Call) -> bool {
        self.calls
            .lock()
            .unwrap()
            .contains(&(call, Outcome::Failed))
    }

    pub fn failed(&self, call: Call) -> bool {
        self.any(call, false)
    }

    pub fn succeeded(&self, call: Call) -> bool {
        self.any(call, true)
    }

    /// Receiver answers `503` exactly when a send failed and so did the write that could have
    /// replaced it (the ledger record, or the redrive mark), or a quarantine write failed.
    pub fn explains_unavailable(&self) -> bool {
        (self.failed(Call::Send) && (self.failed(Call::Record) || self.failed(Call::Mark)))
            || self.failed(Call::Quarantine)
    }

    /// A `200` must rest on a durable write: the event on the queue, a redrive mark in the
    /// ledger, or the body in quarantine.
    pub fn durably_written(&self) -> bool {
        self.succeeded(Call::Send) || self.succeeded(Call::Mark) || self.succeeded(Call::Quarantine)
    }
}

/// One state apply: its identity (for fault decisions), its calls, and its SDK writes.
#[derive(Debug)]
struct ApplyContext {
    number: u64,
    calls: AtomicU64,
    sdk_operations: AtomicU64,
    sdk_writes: AtomicU64,
    /// This apply's second SDK write fails (every attempt answered 500 after the write).
    second_write_fails: bool,
}

/// Probability of each injected fault, per call.
#[derive(Debug, Clone, Copy)]
pub struct FaultPlan {
    pub record: f64,
    pub send: f64,
    pub mark: f64,
    pub quarantine: f64,
    pub crash: f64,
    pub apply: f64,
    pub apply_answer_lost: f64,
    /// Share of state applies whose second SDK write fails (AWS only: the embedded store
    /// writes once per apply).
    pub second_write: f64,
}

/// Domains of the fault decisions, so that no two decisions share a draw.
mod domain {
    pub const CALL: u64 = 1;
    pub const SECOND_WRITE: u64 = 2;
    pub const SDK: u64 = 3;
    pub const SDK_KIND: u64 = 4;
    pub const UNPLACED: u64 = 5;
}

/// The switch, the seed, and the tallies.
#[derive(Debug)]
pub struct Faults {
    plan: FaultPlan,
    seed: u64,
    enabled: AtomicBool,
    /// How many times each fact set has been applied (an apply's identity).
    applies: Mutex<HashMap<u64, u64>>,
    /// Calls made in no delivery and no apply (none while faults are on, in these tests).
    unplaced: AtomicU64,
    injected: Mutex<BTreeMap<Call, usize>>,
    /// Calls that failed without an injected fault (an emulator restart, an exhausted retry).
    real_failures: Mutex<BTreeMap<Call, usize>>,
    /// The first few distinct errors of the real failures, by call.
    real_errors: Mutex<BTreeMap<Call, Vec<String>>>,
}

impl Faults {
    pub fn new(plan: FaultPlan, seed: u64) -> Arc<Faults> {
        Arc::new(Faults {
            plan,
            seed,
            enabled: AtomicBool::new(true),
            applies: Mutex::default(),
            unplaced: AtomicU64::new(0),
            injected: Mutex::default(),
            real_failures: Mutex::default(),
            real_errors: Mutex::default(),
        })
    }

    pub fn heal(&self) {
        self.enabled.store(false, Ordering::SeqCst);
    }

    pub fn injected(&self) -> BTreeMap<Call, usize> {
        self.injected.lock().unwrap().clone()
    }

    pub fn real_failures(&self) -> BTreeMap<Call, usize> {
        self.real_failures.lock().unwrap().clone()
    }

    pub fn real_errors(&self) -> BTreeMap<Call, Vec<String>> {
        self.real_errors.lock().unwrap().clone()
    }

    /// Where the current call is: (delivery or apply number, how many calls of its kind came
    /// before it there). Counting by kind keeps a delivery's decisions the same whichever path
    /// the receiver takes (a new key, a duplicate, a variant body), which concurrent deliveries
    /// of one key decide by their interleaving.
    fn place(&self, call: Call) -> (u64, u64) {
        // The crash strikes before the send it replaces: it is numbered like that send.
        let counted = if call == Call::Crash {
            Call::Send
        } else {
            call
        };
        if let Ok(place) = DELIVERY.try_with(|log| {
            let calls = log.calls.lock().unwrap();
            let before = calls.iter().filter(|(c, _)| *c == counted).count() as u64;
            (log.number, before)
        }) {
            return place;
        }
        if let Ok(place) =
            APPLY.try_with(|apply| (apply.number, apply.calls.fetch_add(1, Ordering::SeqCst)))
        {
            return place;
        }
        (
            domain::UNPLACED,
            self.unplaced.fetch_add(1, Ordering::SeqCst),
        )
    }

    /// Whether to inject a fault into this call.
    fn roll(&self, call: Call) -> bool {
        if !self.enabled.load(Ordering::SeqCst) {
            return false;
        }
        let p = match call {
            Call::Record => self.plan.record,
            Call::Send => self.plan.send,
            Call::Mark => self.plan.mark,
            Call::Quarantine | Call::StateQuarantine => self.plan.quarantine,
            Call::Crash => self.plan.crash,
            Call::Apply => self.plan.apply,
            Call::ApplyAnswerLost => self.plan.apply_answer_lost,
        };
        let (at, number) = self.place(call);
        let hit = draw(&[self.seed, domain::CALL, call as u64, at, number]) < p;
        if hit {
            *self.injected.lock().unwrap().entry(call).or_default() += 1;
        }
        hit
    }

    fn injected_error(call: Call) -> StoreError {
        StoreError::unavailable("chaos", format!("injected {call:?} fault"))
    }

    /// Runs `call` on the real adapter unless a fault is injected, and notes the outcome.
    async fn around<T>(
        &self,
        call: Call,
        real: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if self.roll(call) {
            CallLog::note(call, Outcome::Injected);
            return Err(Self::injected_error(call));
        }
        let result = real.await;
        if let Err(error) = &result {
            *self.real_failures.lock().unwrap().entry(call).or_default() += 1;
            let mut errors = self.real_errors.lock().unwrap();
            let seen = errors.entry(call).or_default();
            let error = format!("{error:?}");
            if seen.len() < 3 && !seen.contains(&error) {
                seen.push(error);
            }
        }
        CallLog::note(
            call,
            if result.is_ok() {
                Outcome::Ok
            } else {
                Outcome::Failed
            },
        );
        result
    }

    /// The context of one apply of `facts`: the same facts applied for the n-th time decide
    /// the same faults in every run.
    fn apply_context(&self, facts: &MessageRecord) -> Arc<ApplyContext> {
        let identity = hash_bytes(&serde_json::to_vec(facts).expect("facts serialise"));
        let nth = {
            let mut applies = self.applies.lock().unwrap();
            let nth = applies.entry(identity).or_default();
            *nth += 1;
            *nth
        };
        let number = hash(&[identity, nth]);
        let second_write_fails = self.enabled.load(Ordering::SeqCst)
            && draw(&[self.seed, domain::SECOND_WRITE, number]) < self.plan.second_write;
        Arc::new(ApplyContext {
            number,
            calls: AtomicU64::new(0),
            sdk_operations: AtomicU64::new(0),
            sdk_writes: AtomicU64::new(0),
            second_write_fails,
        })
    }
}

pub struct FaultyLedger {
    pub inner: Arc<dyn Ledger>,
    pub faults: Arc<Faults>,
}

#[async_trait]
impl Ledger for FaultyLedger {
    async fn record(&self, entry: &LedgerEntry) -> Result<Recorded, StoreError> {
        self.faults
            .around(Call::Record, self.inner.record(entry))
            .await
    }
    async fn mark_for_redrive(&self, key: &str, at: i64) -> Result<(), StoreError> {
        let mark = self.inner.mark_for_redrive(key, at);
        self.faults.around(Call::Mark, mark).await
    }
    async fn quarantine(&self, entry: &QuarantineEntry) -> Result<(), StoreError> {
        let quarantine = self.inner.quarantine(entry);
        self.faults.around(Call::Quarantine, quarantine).await
    }
    async fn marked_for_redrive(
        &self,
        after: Option<&MarkCursor>,
        limit: u32,
    ) -> Result<MarkedPage, StoreError> {
        self.inner.marked_for_redrive(after, limit).await
    }
    async fn oldest_mark(&self) -> Result<Option<i64>, StoreError> {
        self.inner.oldest_mark().await
    }
    async fn clear_redrive(&self, key: &str) -> Result<(), StoreError> {
        self.inner.clear_redrive(key).await
    }
    async fn archived(&self, key: &str) -> Result<Option<QueuedEvent>, StoreError> {
        self.inner.archived(key).await
    }
    async fn archived_between(
        &self,
        since: i64,
        until: i64,
    ) -> Result<Vec<QueuedEvent>, StoreError> {
        self.inner.archived_between(since, until).await
    }
}

pub struct FaultyQueue {
    pub inner: Arc<dyn Queue>,
    pub faults: Arc<Faults>,
}

#[async_trait]
impl Queue for FaultyQueue {
    async fn send(&self, event: &QueuedEvent) -> Result<(), StoreError> {
        let in_delivery = DELIVERY.try_with(|_| ()).is_ok();
        if in_delivery && self.faults.roll(Call::Crash) {
            // The process dies here: no send, no redrive mark, no answer to Wati.
            CallLog::note(Call::Crash, Outcome::Injected);
            let _ = DELIVERY.try_with(|log| log.crashed.notify_one());
            std::future::pending::<()>().await;
        }
        self.faults.around(Call::Send, self.inner.send(event)).await
    }
}

pub struct FaultyState {
    pub inner: Arc<dyn StateStore>,
    pub faults: Arc<Faults>,
}

#[async_trait]
impl StateStore for FaultyState {
    async fn apply(
        &self,
        facts: &MessageRecord,
        caused_by: Option<&str>,
    ) -> Result<MergeOutcome, StoreError> {
        let context = self.faults.apply_context(facts);
        APPLY
            .scope(context, async {
                let result = self
                    .faults
                    .around(Call::Apply, self.inner.apply(facts, caused_by))
                    .await;
                if result.is_ok() && self.faults.roll(Call::ApplyAnswerLost) {
                    // The write is done; the processor is told it failed, and retries it.
                    return Err(Faults::injected_error(Call::ApplyAnswerLost));
                }
                result
            })
            .await
    }
    async fn quarantine(&self, event: &QueuedEvent, reason: &str) -> Result<(), StoreError> {
        let quarantine = self.inner.quarantine(event, reason);
        self.faults.around(Call::StateQuarantine, quarantine).await
    }
    async fn quarantined(&self, key: &str) -> Result<Option<QuarantineEntry>, StoreError> {
        self.inner.quarantined(key).await
    }
    async fn message(&self, id: &str) -> Result<Option<MessageRecord>, StoreError> {
        self.inner.message(id).await
    }
    async fn contact(&self, contact: &str, now: i64) -> Result<Option<ContactView>, StoreError> {
        self.inner.contact(contact, now).await
    }
    async fn contact_messages_page(
        &self,
        contact: &str,
        before: Option<&wati_ingest::contact_page::Position>,
        limit: usize,
    ) -> Result<wati_ingest::contact_page::MessagePage, StoreError> {
        self.inner
            .contact_messages_page(contact, before, limit)
            .await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

/// What the interceptor did to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SdkFault {
    /// Rejected before the service did anything (`ProvisionedThroughputExceededException`,
    /// `RequestLimitExceeded`, SQS `RequestThrottled`).
    Throttled,
    /// The service did the work; the answer was a 500.
    ResponseLost,
    /// The second write of a state apply: done by the service, every attempt answered 500.
    SecondWriteLost,
}

#[derive(Debug, Clone, Copy)]
enum Service {
    DynamoDb,
    Sqs,
}

/// Per attempt: the fault (if any), the service, and the decision's hash (for the throttle's
/// error code).
#[derive(Debug, Clone, Copy)]
struct AttemptFault(Option<SdkFault>, Service, u64);

impl Storable for AttemptFault {
    type Storer = StoreReplace<AttemptFault>;
}

/// Per operation, kept across its attempts: its number in its delivery or apply, and whether it
/// is the failing second write of its apply.
#[derive(Debug, Clone, Copy)]
struct OperationPlace {
    number: u64,
    second_write: bool,
}

impl Storable for OperationPlace {
    type Storer = StoreReplace<OperationPlace>;
}

/// Throttles and lost responses on a share of AWS SDK attempts, counted by operation.
#[derive(Debug, Clone)]
pub struct SdkFaults {
    probability: f64,
    seed: u64,
    enabled: Arc<AtomicBool>,
    unplaced: Arc<AtomicU64>,
    injected: Arc<Mutex<BTreeMap<(String, SdkFault), usize>>>,
}

impl SdkFaults {
    pub fn new(probability: f64, seed: u64) -> SdkFaults {
        SdkFaults {
            probability,
            seed,
            enabled: Arc::new(AtomicBool::new(true)),
            unplaced: Arc::default(),
            injected: Arc::default(),
        }
    }

    pub fn heal(&self) {
        self.enabled.store(false, Ordering::SeqCst);
    }

    pub fn injected(&self) -> BTreeMap<(String, SdkFault), usize> {
        self.injected.lock().unwrap().clone()
    }

    fn count(&self, operation: &str, fault: SdkFault) {
        *self
            .injected
            .lock()
            .unwrap()
            .entry((operation.to_owned(), fault))
            .or_default() += 1;
    }
}

fn is_write(operation: &str) -> bool {
    matches!(
        operation,
        "PutItem" | "UpdateItem" | "DeleteItem" | "BatchWriteItem" | "TransactWriteItems"
    )
}

impl Intercept for SdkFaults {
    fn name(&self) -> &'static str {
        "chaos-sdk-faults"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let request = context.request_mut();
        let target = request
            .headers()
            .get("x-amz-target")
            .unwrap_or("?")
            .to_owned();
        let operation = target.rsplit('.').next().unwrap_or("?").to_owned();
        // `amz-sdk-request: attempt=N; max=M`, set by the SDK's retry machinery.
        let attempt: u64 = request
            .headers()
            .get("amz-sdk-request")
            .and_then(|v| v.strip_prefix("attempt="))
            .and_then(|v| v.split(';').next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1);
        let service = if target.starts_with("AmazonSQS") {
            Service::Sqs
        } else {
            Service::DynamoDb
        };
        // Where this operation is: numbered within its delivery or apply on its first attempt.
        let (context_number, place) = match cfg.load::<OperationPlace>().copied() {
            Some(place) if attempt > 1 => {
                let number = DELIVERY
                    .try_with(|log| log.number)
                    .or_else(|_| APPLY.try_with(|apply| apply.number))
                    .unwrap_or(domain::UNPLACED);
                (number, place)
            }
            _ => {
                let place = if let Ok(place) = DELIVERY.try_with(|log| {
                    let number = log.sdk_operations.fetch_add(1, Ordering::SeqCst);
                    (
                        log.number,
                        OperationPlace {
                            number,
                            second_write: false,
                        },
                    )
                }) {
                    place
                } else if let Ok(place) = APPLY.try_with(|apply| {
                    let number = apply.sdk_operations.fetch_add(1, Ordering::SeqCst);
                    let write = is_write(&operation)
                        .then(|| apply.sdk_writes.fetch_add(1, Ordering::SeqCst) + 1);
                    (
                        apply.number,
                        OperationPlace {
                            number,
                            second_write: apply.second_write_fails && write == Some(2),
                        },
                    )
                }) {
                    place
                } else {
                    let number = self.unplaced.fetch_add(1, Ordering::SeqCst);
                    (
                        domain::UNPLACED,
                        OperationPlace {
                            number,
                            second_write: false,
                        },
                    )
                };
                cfg.interceptor_state().store_put(place.1);
                place
            }
        };
        let enabled = self.enabled.load(Ordering::SeqCst);
        let decision = hash(&[
            self.seed,
            domain::SDK,
            context_number,
            place.number,
            attempt,
        ]);
        let fault = if !enabled {
            None
        } else if place.second_write {
            if attempt == 1 {
                self.count(&operation, SdkFault::SecondWriteLost);
            }
            Some(SdkFault::SecondWriteLost)
        } else if draw(&[decision]) < self.probability {
            let throttled = draw(&[decision, domain::SDK_KIND]) < 0.5;
            let fault = if throttled {
                SdkFault::Throttled
            } else {
                SdkFault::ResponseLost
            };
            self.count(&operation, fault);
            Some(fault)
        } else {
            None
        };
        if fault == Some(SdkFault::Throttled) {
            // Sent to an operation that does not exist, so the service changes nothing.
            let prefix = target.split('.').next().unwrap_or("X").to_owned();
            request
                .headers_mut()
                .insert("x-amz-target", format!("{prefix}.ChaosThrottled"));
        }
        cfg.interceptor_state()
            .store_put(AttemptFault(fault, service, decision));
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let Some(AttemptFault(Some(fault), service, decision)) =
            cfg.load::<AttemptFault>().copied()
        else {
            return Ok(());
        };
        let (status, code) = match (fault, service) {
            (SdkFault::Throttled, Service::Sqs) => (400, "com.amazonaws.sqs#RequestThrottled"),
            (SdkFault::Throttled, Service::DynamoDb) => {
                if decision & 1 == 0 {
                    (
                        400,
                        "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                    )
                } else {
                    (400, "com.amazonaws.dynamodb.v20120810#RequestLimitExceeded")
                }
            }
            (SdkFault::ResponseLost | SdkFault::SecondWriteLost, _) => (500, "InternalServerError"),
        };
        let body = format!(r#"{{"__type":"{code}","message":"chaos: {fault:?}"}}"#);
        let response = axum::http::Response::builder()
            .status(status)
            .header("content-type", "application/x-amz-json-1.0")
            .body(SdkBody::from(body))
            .expect("valid response");
        *context.response_mut() = HttpResponse::try_from(response).expect("convertible response");
        Ok(())
    }
}
