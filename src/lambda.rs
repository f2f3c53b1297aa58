//! The AWS side's composition: configuration from the environment and the receiver's router over
//! DynamoDB and SQS. The `receiver` binary serves it through `lambda_http` (API Gateway HTTP API
//! and Lambda Function URLs send the same payload format 2.0).

use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use axum::Router;
use tokio::sync::Semaphore;

use crate::auth::{SecretError, SecretSet};
use crate::http::{
    health_routes, read_routes, webhook_routes, ReadService, WebhookService, DEFAULT_MAX_BODY_BYTES,
};
use crate::ports::{QueuedEvent, StateStore};
use crate::processor::{apply, Applied};
use crate::receiver::{Receiver, ReceiverSettings};
use crate::store::aws::{decode_queued, DynamoLedger, SqsQueue};
use crate::store::dynamo_state::DynamoState;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("invalid {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("WEBHOOK_SECRET: {0}")]
    Secret(#[from] SecretError),
}

/// The receiver's settings: `LEDGER_TABLE`, `QUEUE_URL`, `WEBHOOK_SECRET` (during a rotation,
/// `WEBHOOK_SECRET_PREVIOUS` is accepted too), `DEDUP_TTL_DAYS`, `MAX_BODY_BYTES`.
/// Endpoints come only from the SDK's own variables (`AWS_ENDPOINT_URL_DYNAMODB`, ...).
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub ledger_table: String,
    pub queue_url: String,
    pub secrets: SecretSet,
    pub dedup_ttl_days: i64,
    pub max_body_bytes: usize,
}

impl ReceiverConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let required = |name: &'static str| var(name).ok_or(ConfigError::Missing(name));
        let number = |name: &'static str, default: i64| -> Result<i64, ConfigError> {
            var(name).map_or(Ok(default), |v| {
                v.trim()
                    .parse()
                    .map_err(|e: std::num::ParseIntError| ConfigError::Invalid {
                        name,
                        reason: e.to_string(),
                    })
            })
        };
        let secrets: Vec<String> = [var("WEBHOOK_SECRET"), var("WEBHOOK_SECRET_PREVIOUS")]
            .into_iter()
            .flatten()
            .collect();
        if secrets.is_empty() {
            return Err(ConfigError::Missing("WEBHOOK_SECRET"));
        }
        let dedup_ttl_days = number("DEDUP_TTL_DAYS", 7)?;
        if dedup_ttl_days < 2 {
            return Err(ConfigError::Invalid {
                name: "DEDUP_TTL_DAYS",
                reason: "must be at least 2 to outlive Wati's 24 hours of retries".into(),
            });
        }
        Ok(ReceiverConfig {
            ledger_table: required("LEDGER_TABLE")?,
            queue_url: required("QUEUE_URL")?,
            secrets: SecretSet::new(secrets)?,
            dedup_ttl_days,
            max_body_bytes: number("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES as i64)? as usize,
        })
    }
}

/// `POST /webhook/{secret}` over the DynamoDB ledger and the SQS queue.
pub fn receiver_router(config: &ReceiverConfig, ledger: DynamoLedger, queue: SqsQueue) -> Router {
    webhook_routes(Arc::new(WebhookService {
        receiver: Receiver::new(
            Arc::new(ledger),
            Arc::new(queue),
            ReceiverSettings {
                dedup_ttl_seconds: config.dedup_ttl_days * 24 * 60 * 60,
                ..ReceiverSettings::default()
            },
        ),
        secrets: config.secrets.clone(),
        max_body_bytes: config.max_body_bytes,
    }))
}

/// Records of one SQS batch applied at once, at most.
pub const BATCH_CONCURRENCY: usize = 16;

/// Applies an SQS batch and reports only the records that failed transiently, so SQS redelivers
/// just those (`ReportBatchItemFailures`) and, after `maxReceiveCount`, moves them to the DLQ.
/// A record that can never be applied is quarantined and acknowledged instead.
pub async fn process_sqs_batch(state: Arc<dyn StateStore>, event: SqsEvent) -> SqsBatchResponse {
    let permits = Arc::new(Semaphore::new(BATCH_CONCURRENCY));
    let mut running = tokio::task::JoinSet::new();
    for record in event.records {
        let (state, permits) = (Arc::clone(&state), Arc::clone(&permits));
        running.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let id = record.message_id.clone().unwrap_or_default();
            (id, process_record(state.as_ref(), record).await)
        });
    }
    let mut response = SqsBatchResponse::default();
    while let Some(joined) = running.join_next().await {
        match joined {
            Ok((_, true)) => {}
            Ok((id, false)) => {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
            // A panicked task's id is lost with it; failing the whole batch keeps its record.
            Err(error) => {
                tracing::error!(%error, "record task panicked; failing the batch");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = String::new();
                response.batch_item_failures.push(failure);
            }
        }
    }
    response
}

/// Applies one SQS record; `false` when it should be retried.
async fn process_record(state: &dyn StateStore, record: SqsMessage) -> bool {
    let started = Instant::now();
    let body = record.body.unwrap_or_default();
    let queued = match decode_queued(&body) {
        Ok(queued) => queued,
        Err(error) => {
            // Not ours: keep it under its SQS id rather than retrying it into the DLQ.
            let poison = QueuedEvent {
                key: format!("sqs:{}", record.message_id.unwrap_or_default()),
                received_at: crate::time::now_unix(),
                body,
            };
            let reason = format!("not a queued event: {error}");
            return match state.quarantine(&poison, &reason).await {
                Ok(()) => {
                    tracing::warn!(key = %poison.key, "quarantined an undecodable record");
                    true
                }
                Err(error) => {
                    tracing::error!(key = %poison.key, %error, "cannot quarantine");
                    false
                }
            };
        }
    };
    let outcome = apply(state, &queued).await;
    let latency_us = started.elapsed().as_micros() as u64;
    let lag_s = crate::time::now_unix() - queued.received_at;
    match outcome {
        Ok(applied) => {
            let (outcome, kind) = match &applied {
                Applied::Message { kind } => ("applied", kind.as_str()),
                Applied::Archived { kind } => ("archived", kind.as_str()),
                Applied::Quarantined { .. } => ("quarantined", ""),
            };
            tracing::info!(key = %queued.key, kind, outcome, latency_us, lag_s, "processed");
            true
        }
        Err(error) => {
            tracing::warn!(key = %queued.key, %error, latency_us, "apply failed; will be retried");
            false
        }
    }
}

/// The read API's settings: `STATE_TABLE`, `API_TOKEN` (and `API_TOKEN_PREVIOUS` in a rotation).
#[derive(Debug, Clone)]
pub struct ReadApiConfig {
    pub state_table: String,
    pub tokens: SecretSet,
}

impl ReadApiConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let tokens: Vec<String> = [var("API_TOKEN"), var("API_TOKEN_PREVIOUS")]
            .into_iter()
            .flatten()
            .collect();
        if tokens.is_empty() {
            return Err(ConfigError::Missing("API_TOKEN"));
        }
        Ok(ReadApiConfig {
            state_table: var("STATE_TABLE").ok_or(ConfigError::Missing("STATE_TABLE"))?,
            tokens: SecretSet::new(tokens)?,
        })
    }
}

/// `GET /v1/messages/{id}`, `GET /v1/contacts/{waId}` and `GET /healthz` over DynamoDB.
pub fn read_api_router(tokens: SecretSet, state: DynamoState) -> Router {
    let state: Arc<dyn StateStore> = Arc::new(state);
    read_routes(Arc::new(ReadService {
        state: Arc::clone(&state),
        tokens,
    }))
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

    #[test]
    fn reads_the_documented_variables() {
        let config = ReceiverConfig::from_lookup(lookup(&[
            ("LEDGER_TABLE", "ledger"),
            ("QUEUE_URL", "https://sqs/queue"),
            ("WEBHOOK_SECRET", "new-secret-0123456789"),
            ("WEBHOOK_SECRET_PREVIOUS", "old-secret-0123456789"),
            ("DEDUP_TTL_DAYS", "3"),
        ]))
        .unwrap();
        assert_eq!(config.ledger_table, "ledger");
        assert_eq!(config.dedup_ttl_days, 3);
        assert!(config.secrets.matches("new-secret-0123456789"));
        assert!(
            config.secrets.matches("old-secret-0123456789"),
            "rotation accepts both"
        );
        assert_eq!(config.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn missing_or_weak_settings_are_refused() {
        let err = |pairs: &[(&str, &str)]| ReceiverConfig::from_lookup(lookup(pairs)).unwrap_err();
        assert!(matches!(
            err(&[("LEDGER_TABLE", "l"), ("QUEUE_URL", "q")]),
            ConfigError::Missing("WEBHOOK_SECRET")
        ));
        assert!(matches!(
            err(&[
                ("LEDGER_TABLE", "l"),
                ("QUEUE_URL", "q"),
                ("WEBHOOK_SECRET", "short")
            ]),
            ConfigError::Secret(SecretError::TooShort)
        ));
        assert!(matches!(
            err(&[
                ("QUEUE_URL", "q"),
                ("WEBHOOK_SECRET", "long-enough-secret-123")
            ]),
            ConfigError::Missing("LEDGER_TABLE")
        ));
        assert!(matches!(
            err(&[
                ("LEDGER_TABLE", "l"),
                ("QUEUE_URL", "q"),
                ("WEBHOOK_SECRET", "long-enough-secret-123"),
                ("DEDUP_TTL_DAYS", "1")
            ]),
            ConfigError::Invalid {
                name: "DEDUP_TTL_DAYS",
                ..
            }
        ));
    }
}
