//! The AWS side's composition: configuration from the environment and the receiver's router over
//! DynamoDB and SQS. The `receiver` binary serves it through `lambda_http` (API Gateway HTTP API
//! and Lambda Function URLs send the same payload format 2.0).

use std::sync::Arc;

use axum::Router;

use crate::auth::{SecretError, SecretSet};
use crate::http::{webhook_routes, WebhookService, DEFAULT_MAX_BODY_BYTES};
use crate::receiver::{Receiver, ReceiverSettings};
use crate::store::aws::{DynamoLedger, SqsQueue};

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
