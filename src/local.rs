//! The whole pipeline as one local process: receiver, durable queue, processor and read API on
//! the embedded store. What `make run` starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

use crate::auth::{generate_secret, SecretError, SecretSet};
use crate::http::{
    health_routes, read_routes, webhook_routes, ReadService, WebhookService, DEFAULT_MAX_BODY_BYTES,
};
use crate::metrics::MetricsSink;
use crate::ports::StoreError;
use crate::processor::{run_local, LocalProcessorSettings};
use crate::receiver::{Receiver, ReceiverSettings};
use crate::store::embedded::EmbeddedStore;

/// File names inside `DATA_DIR`.
const DATABASE_FILE: &str = "wati-ingest.db";
const WEBHOOK_SECRET_FILE: &str = "webhook_secret";
const API_TOKEN_FILE: &str = "api_token";

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("invalid {name}: {reason}")]
    InvalidSetting { name: &'static str, reason: String },
    #[error("{name}: {source}")]
    Secret {
        name: &'static str,
        source: SecretError,
    },
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate a secret: {0}")]
    Random(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a secret came from: a generated one is shown in full at start-up, a given one is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource {
    Environment,
    DataDir,
    Generated,
}

#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub port: u16,
    pub data_dir: PathBuf,
    pub webhook_secret: String,
    pub webhook_secret_source: SecretSource,
    pub api_token: String,
    pub api_token_source: SecretSource,
    pub dedup_ttl_days: i64,
    pub max_body_bytes: usize,
}

impl LocalConfig {
    /// Reads `PORT`, `DATA_DIR`, `WEBHOOK_SECRET`, `API_TOKEN`, `DEDUP_TTL_DAYS` and
    /// `MAX_BODY_BYTES`. Missing secrets are generated once and kept in `DATA_DIR`.
    pub fn from_env() -> Result<Self, LocalError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let port = parse_setting("PORT", var("PORT"), 3000)?;
        let data_dir = PathBuf::from(var("DATA_DIR").unwrap_or_else(|| "./.wati-ingest".into()));
        std::fs::create_dir_all(&data_dir).map_err(|source| LocalError::Io {
            path: data_dir.clone(),
            source,
        })?;
        let (webhook_secret, webhook_secret_source) =
            secret_or_kept(var("WEBHOOK_SECRET"), &data_dir.join(WEBHOOK_SECRET_FILE))?;
        let (api_token, api_token_source) =
            secret_or_kept(var("API_TOKEN"), &data_dir.join(API_TOKEN_FILE))?;
        let dedup_ttl_days = parse_setting("DEDUP_TTL_DAYS", var("DEDUP_TTL_DAYS"), 7)?;
        if dedup_ttl_days < 2 {
            return Err(LocalError::InvalidSetting {
                name: "DEDUP_TTL_DAYS",
                reason: "must be at least 2 to outlive Wati's 24 hours of retries".into(),
            });
        }
        Ok(LocalConfig {
            port,
            data_dir,
            webhook_secret,
            webhook_secret_source,
            api_token,
            api_token_source,
            dedup_ttl_days,
            max_body_bytes: parse_setting(
                "MAX_BODY_BYTES",
                var("MAX_BODY_BYTES"),
                DEFAULT_MAX_BODY_BYTES,
            )?,
        })
    }
}

fn parse_setting<T: std::str::FromStr>(
    name: &'static str,
    value: Option<String>,
    default: T,
) -> Result<T, LocalError>
where
    T::Err: std::fmt::Display,
{
    match value {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse()
            .map_err(|e: T::Err| LocalError::InvalidSetting {
                name,
                reason: e.to_string(),
            }),
    }
}

/// The given secret, else the one kept at `path`, else a new one written there (mode 0600).
fn secret_or_kept(
    given: Option<String>,
    path: &Path,
) -> Result<(String, SecretSource), LocalError> {
    if let Some(secret) = given {
        return Ok((secret, SecretSource::Environment));
    }
    let io = |source| LocalError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(kept) if !kept.trim().is_empty() => {
            return Ok((kept.trim().to_owned(), SecretSource::DataDir))
        }
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io(error)),
    }
    let secret = generate_secret().map_err(|e| LocalError::Random(e.to_string()))?;
    write_private(path, &secret).map_err(io)?;
    Ok((secret, SecretSource::Generated))
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

/// The local pipeline's parts, built but not yet serving.
pub struct LocalPipeline {
    pub store: EmbeddedStore,
    pub router: Router,
}

impl LocalPipeline {
    pub fn open(config: &LocalConfig) -> Result<Self, LocalError> {
        let store = EmbeddedStore::open(&config.data_dir.join(DATABASE_FILE))?;
        let secret = |name, value: &str| {
            SecretSet::new([value]).map_err(|source| LocalError::Secret { name, source })
        };
        let webhook = WebhookService {
            receiver: Receiver::over_intake(
                Arc::new(store.clone()),
                ReceiverSettings {
                    dedup_ttl_seconds: config.dedup_ttl_days * 24 * 60 * 60,
                    ..ReceiverSettings::default()
                },
            ),
            secrets: secret("WEBHOOK_SECRET", &config.webhook_secret)?,
            max_body_bytes: config.max_body_bytes,
            metrics: MetricsSink::Off,
        };
        let reader = ReadService {
            state: Arc::new(store.clone()),
            tokens: secret("API_TOKEN", &config.api_token)?,
        };
        let router = webhook_routes(Arc::new(webhook))
            .merge(read_routes(Arc::new(reader)))
            .merge(health_routes(Arc::new(store.clone())));
        Ok(LocalPipeline { store, router })
    }

    /// Starts the processor on the durable queue, resuming whatever a previous process left.
    pub fn spawn_processor(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(run_local(
            self.store.clone(),
            Arc::new(self.store.clone()),
            LocalProcessorSettings::default(),
        ))
    }

    /// Serves HTTP on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// Binds `127.0.0.1:{port}` (0 picks a free port).
pub async fn bind(port: u16) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let address = listener.local_addr()?;
    Ok((listener, address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_survives_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(WEBHOOK_SECRET_FILE);
        let (first, source) = secret_or_kept(None, &path).unwrap();
        assert_eq!(source, SecretSource::Generated);
        let (again, source) = secret_or_kept(None, &path).unwrap();
        assert_eq!(
            (again.as_str(), source),
            (first.as_str(), SecretSource::DataDir)
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "secret file readable by others: {mode:o}");
        }
    }

    #[test]
    fn a_given_secret_wins_and_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(WEBHOOK_SECRET_FILE);
        let (secret, source) =
            secret_or_kept(Some("given-secret-0123456789".into()), &path).unwrap();
        assert_eq!(
            (secret.as_str(), source),
            ("given-secret-0123456789", SecretSource::Environment)
        );
        assert!(!path.exists());
    }
}
