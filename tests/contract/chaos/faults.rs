//! Faults injected around the real adapters, and what every webhook's calls did.
//!
//! - [`FaultyLedger`], [`FaultyQueue`] and [`FaultyState`] wrap the real ports and fail chosen
//!   calls (or "crash" the delivery between its ledger write and its send). They also note the
//!   outcome of every call a delivery makes, injected or real, in the delivery's [`CallLog`], so
//!   the test can say which `503`s the faults explain and that every `200` had a durable write.
//! - [`SdkFaults`] is an AWS SDK interceptor: it answers chosen attempts with DynamoDB/SQS
//!   throttling errors (the request never reached the emulator) or with a 500 after the emulator
//!   did the work (the response was lost). The SDK's own retries then run for real.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
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

use super::history::Rng;

/// The calls a delivery's outcome depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Call {
    Record,
    Send,
    Mark,
    Quarantine,
    /// The delivery's process died after its ledger write, before its send.
    Crash,
    Apply,
}

tokio::task_local! {
    /// The log of the delivery the current task is handling.
    pub static DELIVERY: Arc<CallLog>;
}

/// What one delivery's calls did, and a way for a "crash" to stop it.
#[derive(Debug, Default)]
pub struct CallLog {
    calls: Mutex<Vec<(Call, bool)>>,
    pub crashed: Notify,
}

impl CallLog {
    fn note(call: Call, ok: bool) {
        let _ = DELIVERY.try_with(|log| log.calls.lock().unwrap().push((call, ok)));
    }

    fn any(&self, call: Call, ok: bool) -> bool {
        self.calls.lock().unwrap().contains(&(call, ok))
    }

    /// Receiver answers `503` exactly when a send failed and so did the write that could have
    /// replaced it (the ledger record, or the redrive mark), or a quarantine write failed.
    pub fn explains_unavailable(&self) -> bool {
        (self.any(Call::Send, false)
            && (self.any(Call::Record, false) || self.any(Call::Mark, false)))
            || self.any(Call::Quarantine, false)
    }

    /// A `200` must rest on a durable write: the event on the queue, a redrive mark in the
    /// ledger, or the body in quarantine.
    pub fn durably_written(&self) -> bool {
        self.any(Call::Send, true) || self.any(Call::Mark, true) || self.any(Call::Quarantine, true)
    }
}

/// Probability of each injected fault, per call.
#[derive(Debug, Clone, Copy)]
pub struct FaultPlan {
    pub record: f64,
    pub send: f64,
    pub mark: f64,
    pub crash: f64,
    pub apply: f64,
}

/// The switch, the dice, and the tallies.
#[derive(Debug)]
pub struct Faults {
    plan: FaultPlan,
    enabled: AtomicBool,
    rng: Mutex<Rng>,
    injected: Mutex<BTreeMap<Call, usize>>,
    /// Calls that failed without an injected fault (an emulator restart, an exhausted retry).
    real_failures: Mutex<BTreeMap<Call, usize>>,
}

impl Faults {
    pub fn new(plan: FaultPlan, seed: u64) -> Arc<Faults> {
        Arc::new(Faults {
            plan,
            enabled: AtomicBool::new(true),
            rng: Mutex::new(Rng::new(seed)),
            injected: Mutex::default(),
            real_failures: Mutex::default(),
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

    /// Whether to inject a fault into this call.
    fn roll(&self, call: Call) -> bool {
        if !self.enabled.load(Ordering::SeqCst) {
            return false;
        }
        let p = match call {
            Call::Record => self.plan.record,
            Call::Send => self.plan.send,
            Call::Mark => self.plan.mark,
            Call::Crash => self.plan.crash,
            Call::Apply => self.plan.apply,
            Call::Quarantine => 0.0,
        };
        let hit = self.rng.lock().unwrap().chance(p);
        if hit {
            *self.injected.lock().unwrap().entry(call).or_default() += 1;
        }
        hit
    }

    /// Runs `call` on the real adapter unless a fault is injected, and notes the outcome.
    async fn around<T>(
        &self,
        call: Call,
        real: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if self.roll(call) {
            CallLog::note(call, false);
            return Err(StoreError::unavailable(
                "chaos",
                format!("injected {call:?} fault"),
            ));
        }
        let result = real.await;
        if result.is_err() {
            *self.real_failures.lock().unwrap().entry(call).or_default() += 1;
        }
        CallLog::note(call, result.is_ok());
        result
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
            CallLog::note(Call::Crash, true);
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
    async fn apply(&self, facts: &MessageRecord) -> Result<MergeOutcome, StoreError> {
        self.faults
            .around(Call::Apply, self.inner.apply(facts))
            .await
    }
    async fn quarantine(&self, event: &QueuedEvent, reason: &str) -> Result<(), StoreError> {
        self.inner.quarantine(event, reason).await
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
}

#[derive(Debug, Clone, Copy)]
enum Service {
    DynamoDb,
    Sqs,
}

#[derive(Debug, Clone, Copy)]
struct AttemptFault(Option<SdkFault>, Service);

impl Storable for AttemptFault {
    type Storer = StoreReplace<AttemptFault>;
}

/// Throttles and lost responses on a share of AWS SDK attempts, counted by operation.
#[derive(Debug, Clone)]
pub struct SdkFaults {
    probability: f64,
    enabled: Arc<AtomicBool>,
    rng: Arc<Mutex<Rng>>,
    injected: Arc<Mutex<BTreeMap<(String, SdkFault), usize>>>,
}

impl SdkFaults {
    pub fn new(probability: f64, seed: u64) -> SdkFaults {
        SdkFaults {
            probability,
            enabled: Arc::new(AtomicBool::new(true)),
            rng: Arc::new(Mutex::new(Rng::new(seed))),
            injected: Arc::default(),
        }
    }

    pub fn heal(&self) {
        self.enabled.store(false, Ordering::SeqCst);
    }

    pub fn injected(&self) -> BTreeMap<(String, SdkFault), usize> {
        self.injected.lock().unwrap().clone()
    }
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
        let fault = if self.enabled.load(Ordering::SeqCst)
            && self.rng.lock().unwrap().chance(self.probability)
        {
            let throttled = self.rng.lock().unwrap().chance(0.5);
            Some(if throttled {
                SdkFault::Throttled
            } else {
                SdkFault::ResponseLost
            })
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
        if let Some(fault) = fault {
            let operation = target.rsplit('.').next().unwrap_or("?").to_owned();
            *self
                .injected
                .lock()
                .unwrap()
                .entry((operation, fault))
                .or_default() += 1;
        }
        let service = if target.starts_with("AmazonSQS") {
            Service::Sqs
        } else {
            Service::DynamoDb
        };
        cfg.interceptor_state()
            .store_put(AttemptFault(fault, service));
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let Some(AttemptFault(Some(fault), service)) = cfg.load::<AttemptFault>().copied() else {
            return Ok(());
        };
        let (status, code) = match (fault, service) {
            (SdkFault::Throttled, Service::Sqs) => (400, "com.amazonaws.sqs#RequestThrottled"),
            (SdkFault::Throttled, Service::DynamoDb) => {
                if self.rng.lock().unwrap().chance(0.5) {
                    (
                        400,
                        "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                    )
                } else {
                    (400, "com.amazonaws.dynamodb.v20120810#RequestLimitExceeded")
                }
            }
            (SdkFault::ResponseLost, _) => (500, "InternalServerError"),
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
