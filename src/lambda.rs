//! The AWS side's composition: configuration from the environment and the receiver's router over
//! DynamoDB and SQS. The `receiver` binary serves it through `lambda_http` (API Gateway HTTP API
//! and Lambda Function URLs send the same payload format 2.0).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use axum::Router;
use tokio::sync::Semaphore;

use crate::console::console_routes;
use crate::event::log_key;
use crate::http::{
    health_routes, read_routes, webhook_routes, ReadService, WebhookService, DEFAULT_MAX_BODY_BYTES,
};
use crate::metrics::{MetricLine, MetricsSink, Unit};
use crate::ports::{QueuedEvent, StateStore};
use crate::processor::{process_and_log, Archive, Outcome};
use crate::receiver::{OldestMark, Receiver, ReceiverSettings, SweepBudget, SweepReport};
use crate::secrets::{Credential, Credentials, ManagedSecret, RefreshPolicy, SecretStartError};
use crate::settings;
use crate::store::aws::{decode_queued, DynamoLedger, SqsQueue};
use crate::store::aws_secrets::SecretsManagerSource;
use crate::store::dynamo_state::DynamoState;
use crate::store::sqs_envelope::MAX_SENDABLE_BODY_BYTES;

// Every body the settings accept fits in one SQS message once escaped into its envelope.
const _: () = assert!(*settings::MAX_BODY_BYTES.end() <= MAX_SENDABLE_BODY_BYTES);

/// Attempts per SDK operation: the first and at most two retries (standard mode: throttles,
/// 5xx, timeouts and connection errors are retried; a failed condition is not).
pub const SDK_MAX_ATTEMPTS: u32 = 3;
/// The first retry's backoff (full jitter, doubling per retry).
pub const SDK_INITIAL_BACKOFF: Duration = Duration::from_millis(25);
/// The longest backoff between two attempts.
pub const SDK_MAX_BACKOFF: Duration = Duration::from_millis(500);
/// Opening a TCP + TLS connection (a new one only: connections are pooled and reused).
pub const SDK_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// One attempt, from sending the request to the end of the response.
pub const SDK_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
/// One operation, every attempt and backoff included: no SDK call of any function takes longer.
pub const SDK_OPERATION_TIMEOUT: Duration = Duration::from_secs(3);
/// The most SDK operations the receiver makes one after the other for one request
/// (`Receiver::receive` in `src/receiver.rs`): the ledger write and the send together (one
/// step), then, for a duplicate dated by its first receipt or a v1/v2 twin, a second send or
/// the twin's ledger write, then a redrive mark, which takes a second write when the key was
/// marked already. So a slow DynamoDB or SQS holds a request at most this many
/// [`SDK_OPERATION_TIMEOUT`]s (`template.yaml`'s receiver timeout is above it).
pub const RECEIVER_SEQUENTIAL_OPERATIONS: u32 = 4;

/// The SDK configuration every function (and the CLI's `--aws`) uses: the default chain for
/// credentials, region and endpoints, with bounded retries and time (the `SDK_*` constants;
/// `infra/README.md`, "AWS SDK settings"). A hung or throttled dependency then ends in the
/// receiver's fallback (a redrive mark and a `200`) or a `503` within
/// [`RECEIVER_SEQUENTIAL_OPERATIONS`] × [`SDK_OPERATION_TIMEOUT`], inside the function's
/// timeout, instead of in a Lambda timeout that Wati sees as a 5xx.
pub async fn aws_sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(SDK_MAX_ATTEMPTS)
                .with_initial_backoff(SDK_INITIAL_BACKOFF)
                .with_max_backoff(SDK_MAX_BACKOFF),
        )
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(SDK_CONNECT_TIMEOUT)
                .operation_attempt_timeout(SDK_ATTEMPT_TIMEOUT)
                .operation_timeout(SDK_OPERATION_TIMEOUT)
                .build(),
        )
        .load()
        .await
}

pub use crate::settings::ConfigError;

/// `credential` from the Secrets Manager secret `secret_arn`, read now (a function that cannot
/// read it must not start) and re-read per `policy` ([`RefreshPolicy::default`] in the functions).
pub async fn managed_credentials(
    client: aws_sdk_secretsmanager::Client,
    secret_arn: &str,
    credential: Credential,
    policy: RefreshPolicy,
) -> Result<Credentials, SecretStartError> {
    let source = SecretsManagerSource::new(client, secret_arn);
    let secret = ManagedSecret::load(credential, Arc::new(source), policy).await?;
    Ok(Credentials::Managed(Arc::new(secret)))
}

/// The receiver's settings: `LEDGER_TABLE`, `QUEUE_URL`, `SECRET_ARN` (the Secrets Manager secret
/// holding the webhook secret, [`crate::secrets`]), `DEDUP_TTL_DAYS`, `MAX_BODY_BYTES`,
/// `QUARANTINE_RETENTION_DAYS`.
/// Endpoints come only from the SDK's own variables (`AWS_ENDPOINT_URL_DYNAMODB`, ...).
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub ledger_table: String,
    pub queue_url: String,
    pub secret_arn: String,
    pub dedup_ttl_days: i64,
    pub max_body_bytes: usize,
    /// How long the bodies it quarantines are kept (the ledger table's TTL deletes them).
    pub quarantine_retention_days: i64,
}

impl ReceiverConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Every variable checked (see [`crate::settings`]) before any client is built.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(ReceiverConfig {
            ledger_table: settings::required("LEDGER_TABLE", var("LEDGER_TABLE").as_deref())?,
            queue_url: settings::required("QUEUE_URL", var("QUEUE_URL").as_deref())?,
            secret_arn: settings::required("SECRET_ARN", var("SECRET_ARN").as_deref())?,
            dedup_ttl_days: settings::dedup_ttl_days(var("DEDUP_TTL_DAYS").as_deref())?,
            max_body_bytes: settings::max_body_bytes(
                var("MAX_BODY_BYTES").as_deref(),
                DEFAULT_MAX_BODY_BYTES,
            )?,
            quarantine_retention_days: settings::quarantine_retention_days(
                var("QUARANTINE_RETENTION_DAYS").as_deref(),
            )?,
        })
    }
}

/// The processor's settings: `STATE_TABLE`; `LEDGER_TABLE` and `DEDUP_TTL_DAYS` for the events the
/// receiver had to enqueue without recording them (the processor archives those);
/// `QUARANTINE_RETENTION_DAYS` for the events it quarantines.
#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    pub state_table: String,
    pub ledger_table: String,
    pub dedup_ttl_days: i64,
    pub quarantine_retention_days: i64,
}

impl ProcessorConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(ProcessorConfig {
            state_table: settings::required("STATE_TABLE", var("STATE_TABLE").as_deref())?,
            ledger_table: settings::required("LEDGER_TABLE", var("LEDGER_TABLE").as_deref())?,
            dedup_ttl_days: settings::dedup_ttl_days(var("DEDUP_TTL_DAYS").as_deref())?,
            quarantine_retention_days: settings::quarantine_retention_days(
                var("QUARANTINE_RETENTION_DAYS").as_deref(),
            )?,
        })
    }
}

/// The dedup window of a configuration's days: refused values never get here through
/// `from_lookup`; one built by hand is clamped into range rather than overflowing.
fn dedup_ttl_seconds(days: i64) -> i64 {
    let days = days.clamp(
        *settings::DEDUP_TTL_DAYS.start(),
        *settings::DEDUP_TTL_DAYS.end(),
    );
    days * settings::SECONDS_PER_DAY
}

/// `POST /webhook/{secret}` over the DynamoDB ledger and the SQS queue, accepting `secrets`.
pub fn receiver_router(
    config: &ReceiverConfig,
    secrets: Credentials,
    ledger: DynamoLedger,
    queue: SqsQueue,
) -> Router {
    let ledger = ledger.with_quarantine_retention_days(config.quarantine_retention_days);
    webhook_routes(Arc::new(WebhookService {
        receiver: Receiver::new(
            Arc::new(ledger),
            Arc::new(queue),
            ReceiverSettings {
                dedup_ttl_seconds: dedup_ttl_seconds(config.dedup_ttl_days),
                ..ReceiverSettings::default()
            },
        ),
        secrets,
        max_body_bytes: config.max_body_bytes,
        metrics: MetricsSink::Emf,
    }))
}

/// Records of one SQS batch applied at once, at most.
pub const BATCH_CONCURRENCY: usize = 16;

/// What one SQS batch did: the response for Lambda, and its metrics as EMF lines.
#[derive(Debug)]
pub struct BatchReport {
    pub response: SqsBatchResponse,
    pub metrics: Vec<MetricLine>,
}

/// Processes an SQS batch (state, and the ledger for events the receiver could not record) and
/// reports only the records that failed transiently, so SQS redelivers just those
/// (`ReportBatchItemFailures`) and, after `maxReceiveCount`, moves them to the DLQ. A record that
/// can never be applied is quarantined and acknowledged instead.
pub async fn process_sqs_batch(
    state: Arc<dyn StateStore>,
    archive: Archive,
    event: SqsEvent,
) -> BatchReport {
    let permits = Arc::new(Semaphore::new(BATCH_CONCURRENCY));
    let mut running = tokio::task::JoinSet::new();
    for record in event.records {
        let (state, archive, permits) = (Arc::clone(&state), archive.clone(), Arc::clone(&permits));
        running.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let id = record.message_id.clone().unwrap_or_default();
            (id, process_record(state.as_ref(), &archive, record).await)
        });
    }
    let mut response = SqsBatchResponse::default();
    let mut outcomes = Vec::new();
    while let Some(joined) = running.join_next().await {
        let (id, outcome) = match joined {
            Ok(done) => done,
            // A panicked task's id is lost with it; an empty id fails the whole batch, which
            // keeps its record.
            Err(error) => {
                tracing::error!(%error, "record task panicked; failing the batch");
                let error = error.to_string();
                (String::new(), Outcome::Failed { error })
            }
        };
        if outcome.failed() {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
        outcomes.push(outcome);
    }
    BatchReport {
        response,
        metrics: batch_metrics(&outcomes),
    }
}

/// One line per applied event (by kind, with its lag) and one for the batch.
fn batch_metrics(outcomes: &[Outcome]) -> Vec<MetricLine> {
    let mut lines = Vec::new();
    let (mut quarantined, mut failed, mut archive_failed) = (0.0, 0.0, 0.0);
    for outcome in outcomes {
        match outcome {
            Outcome::Applied { kind, lag_s } => lines.push(
                MetricLine::new("processor")
                    .kind(kind)
                    .count("Applied")
                    .metric("ApplyLag", Unit::Seconds, *lag_s as f64),
            ),
            Outcome::Archived { kind } => {
                lines.push(MetricLine::new("processor").kind(kind).count("Archived"))
            }
            Outcome::Quarantined => quarantined += 1.0,
            Outcome::Failed { .. } => failed += 1.0,
            Outcome::ArchiveFailed { .. } => {
                failed += 1.0;
                archive_failed += 1.0;
            }
        }
    }
    lines.push(
        MetricLine::new("processor")
            .metric("Records", Unit::Count, outcomes.len() as f64)
            .metric("ProcessorQuarantined", Unit::Count, quarantined)
            .metric("BatchFailures", Unit::Count, failed)
            .metric("ArchiveFailed", Unit::Count, archive_failed),
    );
    lines
}

/// Processes one SQS record.
async fn process_record(state: &dyn StateStore, archive: &Archive, record: SqsMessage) -> Outcome {
    let body = record.body.unwrap_or_default();
    let queued = match decode_queued(&body) {
        Ok(queued) => queued,
        Err(error) => {
            // Not ours: keep it under its SQS id rather than retrying it into the DLQ.
            let poison = QueuedEvent::archived(
                format!("sqs:{}", record.message_id.unwrap_or_default()),
                crate::time::now_unix(),
                body,
            );
            let reason = format!("not a queued event: {error}");
            return match state.quarantine(&poison, &reason).await {
                Ok(()) => {
                    tracing::warn!(key = %log_key(&poison.key), "quarantined an undecodable record");
                    Outcome::Quarantined
                }
                Err(error) => {
                    tracing::error!(key = %log_key(&poison.key), %error, "cannot quarantine");
                    Outcome::Failed {
                        error: error.to_string(),
                    }
                }
            };
        }
    };
    process_and_log(state, archive, &queued).await
}

/// Marks listed per index partition and page by the sweeper Lambda (17 partitions: up to
/// 1,700 marks a page, about 1 MB of 600-byte items read per query at most).
pub const SWEEP_PAGE_SIZE: u32 = 100;
/// `SendMessageBatch` calls (of 10) in flight at once, each followed by its 10 clears.
pub const SWEEP_CONCURRENCY: usize = 16;
/// Marks one invocation handles at most; the time budget is what normally ends a run.
pub const SWEEP_MAX_MARKS: usize = 5_000_000;
/// No batch starts later than this before the invocation's deadline: a batch in flight, the
/// oldest-mark query and the metrics need at most a few SDK operation timeouts (3 s each).
pub const SWEEP_DEADLINE_MARGIN: Duration = Duration::from_secs(20);

/// The metrics the sweeper emits (function dimension `sweeper`); `template.yaml` alarms on them.
pub const SWEEPER_METRICS: [&str; 3] = ["Redriven", "RedriveFailed", "OldestMarkAge"];

/// How long one sweeper invocation may start batches, from the invocation's deadline (ms since
/// the epoch, as Lambda gives it) and the time now.
pub fn sweep_time(now_ms: u64, deadline_ms: u64) -> Duration {
    Duration::from_millis(deadline_ms.saturating_sub(now_ms)).saturating_sub(SWEEP_DEADLINE_MARGIN)
}

/// The sweeper Lambda's budget for an invocation that may start batches for `time`.
pub fn sweeper_budget(time: Duration) -> SweepBudget {
    SweepBudget {
        max_marks: SWEEP_MAX_MARKS,
        page_size: SWEEP_PAGE_SIZE,
        deadline: Some(Instant::now() + time),
        concurrency: SWEEP_CONCURRENCY,
    }
}

/// One EMF line for a sweep: `Redriven`, `RedriveFailed`, and `OldestMarkAge` (seconds at `now`;
/// 0 when no mark is left, absent when the ledger could not tell).
pub fn sweep_metrics(report: &SweepReport, now: i64) -> MetricLine {
    let [redriven, failed, oldest_age] = SWEEPER_METRICS;
    let line = MetricLine::new("sweeper")
        .metric(redriven, Unit::Count, report.redriven as f64)
        .metric(failed, Unit::Count, report.failed as f64);
    match report.oldest_mark {
        OldestMark::NoneLeft => line.metric(oldest_age, Unit::Seconds, 0.0),
        OldestMark::At(at) => line.metric(
            oldest_age,
            Unit::Seconds,
            now.saturating_sub(at).max(0) as f64,
        ),
        OldestMark::Unknown => line,
    }
}

/// The read API's settings: `STATE_TABLE`, `SECRET_ARN` (the secret holding the API token).
#[derive(Debug, Clone)]
pub struct ReadApiConfig {
    pub state_table: String,
    pub secret_arn: String,
}

impl ReadApiConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Ok(ReadApiConfig {
            state_table: settings::required("STATE_TABLE", var("STATE_TABLE").as_deref())?,
            secret_arn: settings::required("SECRET_ARN", var("SECRET_ARN").as_deref())?,
        })
    }
}

/// `GET /v1/messages/{id}`, `GET /v1/contacts/{waId}`, `/console` and `GET /healthz` over
/// DynamoDB.
pub fn read_api_router(tokens: Credentials, state: DynamoState) -> Router {
    let state: Arc<dyn StateStore> = Arc::new(state);
    let reader = Arc::new(ReadService {
        state: Arc::clone(&state),
        tokens,
        changes: None,
        intake: None,
    });
    read_routes(Arc::clone(&reader))
        .merge(console_routes(reader))
        .merge(health_routes(state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    /// A processed batch of every fixture (plus one foreign record) yields valid EMF lines that
    /// count what happened: one `Applied` line per message event with its kind and lag, one
    /// `Archived` line per non-message event, and a batch line.
    #[tokio::test]
    async fn a_processed_batch_renders_valid_emf() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::embedded::EmbeddedStore::open(&dir.path().join("t.db")).unwrap();
        let fixtures =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
        let mut event = SqsEvent::default();
        let mut paths: Vec<_> = std::fs::read_dir(fixtures)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        for (n, path) in paths.iter().enumerate() {
            let queued = QueuedEvent::archived(
                format!("k{n}"),
                crate::time::now_unix() - 5,
                std::fs::read_to_string(path).unwrap(),
            );
            let mut record = SqsMessage::default();
            record.message_id = Some(format!("m{n}"));
            record.body = Some(serde_json::to_string(&queued).unwrap());
            event.records.push(record);
        }
        let mut foreign = SqsMessage::default();
        foreign.message_id = Some("foreign".into());
        foreign.body = Some("not ours".into());
        event.records.push(foreign);

        let archive = Archive::new(Arc::new(store.clone()), 7 * 86_400);
        let report = process_sqs_batch(Arc::new(store), archive, event).await;
        assert!(report.response.batch_item_failures.is_empty());
        let lines: Vec<serde_json::Value> = report
            .metrics
            .iter()
            .map(|line| {
                let text = line.render(1_764_238_453_000);
                crate::metrics::validate(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
                serde_json::from_str(&text).unwrap()
            })
            .collect();
        let count = |name: &str| lines.iter().filter(|l| l.get(name).is_some()).count();
        assert_eq!(count("Applied"), 23, "one per message event");
        assert_eq!(count("Archived"), 3, "template events and the unknown type");
        let kinds: std::collections::BTreeSet<&str> =
            lines.iter().filter_map(|l| l["Kind"].as_str()).collect();
        assert!(
            kinds.contains("other") && !kinds.contains("paymentCaptured"),
            "an unknown type is the dimension `other`, not its raw name: {kinds:?}"
        );
        let batch = lines.last().unwrap();
        assert_eq!(
            (
                batch["Records"].as_f64(),
                batch["ProcessorQuarantined"].as_f64()
            ),
            (Some(27.0), Some(1.0))
        );
        assert_eq!(batch["BatchFailures"], 0.0);
        let read = lines
            .iter()
            .find(|l| l["Kind"] == "sentMessageREAD")
            .expect("a read line");
        assert!(read["ApplyLag"].as_f64().unwrap() >= 5.0);
    }

    /// A record the receiver could not archive is archived by the processor; while the ledger
    /// refuses the write, the record is reported failed (SQS retries it, then the DLQ keeps it)
    /// and counted as `ArchiveFailed`, although its state was applied.
    #[tokio::test]
    async fn an_unarchived_record_is_archived_or_failed_loudly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = crate::store::embedded::EmbeddedStore::open(&path).unwrap();
        let body = r#"{"eventType":"templateReviewed","templateName":"t","status":"APPROVED"}"#;
        let queued = QueuedEvent {
            unarchived: true,
            ..QueuedEvent::archived("templateReviewed:body-sha256:x", 1_764_238_453, body)
        };
        let batch = || {
            let mut record = SqsMessage::default();
            record.message_id = Some("m1".into());
            record.body = Some(serde_json::to_string(&queued).unwrap());
            let mut event = SqsEvent::default();
            event.records.push(record);
            event
        };
        let archive = Archive::new(Arc::new(store.clone()), 7 * 86_400);
        let ledger = rusqlite::Connection::open(&path).unwrap();
        ledger
            .execute_batch("ALTER TABLE ledger RENAME TO ledger_broken")
            .unwrap();
        let report = process_sqs_batch(Arc::new(store.clone()), archive.clone(), batch()).await;
        assert_eq!(report.response.batch_item_failures.len(), 1);
        let line: serde_json::Value =
            serde_json::from_str(&report.metrics.last().unwrap().render(1)).unwrap();
        assert_eq!(
            (
                line["ArchiveFailed"].as_f64(),
                line["BatchFailures"].as_f64()
            ),
            (Some(1.0), Some(1.0))
        );

        ledger
            .execute_batch("ALTER TABLE ledger_broken RENAME TO ledger")
            .unwrap();
        let report = process_sqs_batch(Arc::new(store.clone()), archive, batch()).await;
        assert!(report.response.batch_item_failures.is_empty());
        use crate::ports::Ledger;
        let archived = store
            .archived(&queued.key)
            .await
            .unwrap()
            .expect("archived");
        assert_eq!(archived.body, body);
    }

    /// The sweeper's EMF line is valid and carries its three metrics.
    #[test]
    fn a_sweep_renders_valid_emf() {
        let report = SweepReport {
            redriven: 1_200,
            failed: 3,
            oldest_mark: OldestMark::At(1_000),
            ..SweepReport::default()
        };
        let text = sweep_metrics(&report, 1_600).render(1_764_238_453_000);
        crate::metrics::validate(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(line["Function"], "sweeper");
        assert_eq!(
            (
                line["Redriven"].as_f64(),
                line["RedriveFailed"].as_f64(),
                line["OldestMarkAge"].as_f64()
            ),
            (Some(1_200.0), Some(3.0), Some(600.0))
        );
        let none_left = sweep_metrics(&SweepReport::default(), 1_600).render(1);
        assert!(none_left.contains(r#""OldestMarkAge":0.0"#), "{none_left}");
        let unknown = SweepReport {
            oldest_mark: OldestMark::Unknown,
            ..SweepReport::default()
        };
        let unknown = sweep_metrics(&unknown, 1_600).render(1);
        crate::metrics::validate(&unknown).unwrap();
        assert!(
            !unknown.contains("OldestMarkAge"),
            "not known, not sent: {unknown}"
        );
    }

    /// The sweep stops starting batches a margin before the invocation's deadline.
    #[test]
    fn the_sweep_time_leaves_a_margin() {
        assert_eq!(sweep_time(1_000, 281_000), Duration::from_secs(260));
        assert_eq!(sweep_time(1_000, 10_000), Duration::ZERO);
        assert_eq!(
            sweep_time(10_000, 1_000),
            Duration::ZERO,
            "past the deadline"
        );
    }

    #[test]
    fn reads_the_documented_variables() {
        let config = ReceiverConfig::from_lookup(lookup(&[
            ("LEDGER_TABLE", "ledger"),
            ("QUEUE_URL", "https://sqs/queue"),
            ("SECRET_ARN", "arn:aws:secretsmanager:eu-west-1:1:secret:s"),
            ("DEDUP_TTL_DAYS", "3"),
        ]))
        .unwrap();
        assert_eq!(config.ledger_table, "ledger");
        assert_eq!(
            config.secret_arn,
            "arn:aws:secretsmanager:eu-west-1:1:secret:s"
        );
        assert_eq!(config.dedup_ttl_days, 3);
        assert_eq!(config.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn missing_or_weak_settings_are_refused() {
        let err = |pairs: &[(&str, &str)]| ReceiverConfig::from_lookup(lookup(pairs)).unwrap_err();
        let valid = [
            ("LEDGER_TABLE", "l"),
            ("QUEUE_URL", "q"),
            ("SECRET_ARN", "arn"),
        ];
        let with = |name: &'static str, value: &'static str| {
            let mut pairs: Vec<(&str, &str)> =
                valid.iter().copied().filter(|(n, _)| *n != name).collect();
            pairs.push((name, value));
            err(&pairs)
        };
        assert!(matches!(
            err(&[("LEDGER_TABLE", "l"), ("QUEUE_URL", "q")]),
            ConfigError::Missing("SECRET_ARN")
        ));
        assert_eq!(with("SECRET_ARN", "   "), ConfigError::Blank("SECRET_ARN"));
        assert!(matches!(
            err(&[("QUEUE_URL", "q"), ("SECRET_ARN", "arn")]),
            ConfigError::Missing("LEDGER_TABLE")
        ));
        for (name, value) in [
            ("DEDUP_TTL_DAYS", "1"),
            ("DEDUP_TTL_DAYS", "106751991167301"),
            ("MAX_BODY_BYTES", "0"),
            ("MAX_BODY_BYTES", "-1"),
        ] {
            let error = with(name, value);
            assert!(
                matches!(error, ConfigError::Invalid { name: n, .. } if n == name),
                "{name}={value}: {error}"
            );
        }
        assert!(ReceiverConfig::from_lookup(lookup(&valid)).is_ok());
    }

    #[test]
    fn the_processor_and_read_api_check_their_variables() {
        let config = ProcessorConfig::from_lookup(lookup(&[
            ("STATE_TABLE", "state"),
            ("LEDGER_TABLE", "ledger"),
        ]))
        .unwrap();
        assert_eq!(
            (config.ledger_table.as_str(), config.dedup_ttl_days),
            ("ledger", 7)
        );
        assert_eq!(
            ProcessorConfig::from_lookup(lookup(&[("STATE_TABLE", "state")])).unwrap_err(),
            ConfigError::Missing("LEDGER_TABLE")
        );
        assert!(matches!(
            ProcessorConfig::from_lookup(lookup(&[
                ("STATE_TABLE", "state"),
                ("LEDGER_TABLE", "ledger"),
                ("DEDUP_TTL_DAYS", "106751991167301"),
            ]))
            .unwrap_err(),
            ConfigError::Invalid {
                name: "DEDUP_TTL_DAYS",
                ..
            }
        ));
        assert_eq!(
            ReadApiConfig::from_lookup(lookup(&[("STATE_TABLE", "s")])).unwrap_err(),
            ConfigError::Missing("SECRET_ARN")
        );
        assert_eq!(
            ReadApiConfig::from_lookup(lookup(&[("STATE_TABLE", "s"), ("SECRET_ARN", "arn")]))
                .unwrap()
                .secret_arn,
            "arn"
        );
        let with_body_limit = |limit: &str| {
            ReceiverConfig::from_lookup(lookup(&[
                ("LEDGER_TABLE", "l"),
                ("QUEUE_URL", "q"),
                ("SECRET_ARN", "arn"),
                ("MAX_BODY_BYTES", limit),
            ]))
        };
        for refused in ["262145", "523418", "1048576", "0", "-1"] {
            assert!(
                matches!(
                    with_body_limit(refused),
                    Err(ConfigError::Invalid {
                        name: "MAX_BODY_BYTES",
                        ..
                    })
                ),
                "{refused}"
            );
        }
        assert_eq!(with_body_limit("262144").unwrap().max_body_bytes, 262_144);
    }
}
