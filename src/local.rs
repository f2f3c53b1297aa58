//! The whole pipeline as one local process: receiver, durable queue, processor and read API on
//! the embedded store, the window timer, and (with `FORWARD_URL`) the forwarder. What `make run`
//! starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

use crate::auth::{generate_secret, SecretError, SecretSet, MIN_SECRET_LEN};
use crate::console::{console_intake_routes, console_routes};
use crate::forward::{ForwardSchedule, ForwardTarget};
use crate::http::{
    health_routes, read_routes, webhook_routes, ReadService, WebhookService, DEFAULT_MAX_BODY_BYTES,
};
use crate::metrics::MetricsSink;
use crate::ports::StoreError;
use crate::processor::{run_local, LocalProcessorSettings};
use crate::receiver::{Receiver, ReceiverSettings};
use crate::settings::{self, ConfigError};
use crate::store::embedded::EmbeddedStore;
use crate::time::now_unix;

/// How often the window timer looks for windows closing or closed.
pub const WINDOW_TIMER_EVERY: std::time::Duration = std::time::Duration::from_secs(15);
/// How often the local pipeline deletes what DynamoDB's TTL would ([`LocalPipeline::spawn_pruner`]).
pub const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3_600);

/// Where the local store lives when `DATA_DIR` is unset.
pub const DEFAULT_DATA_DIR: &str = "./.wati-ingest";

/// File names inside `DATA_DIR`.
const DATABASE_FILE: &str = "wati-ingest.db";
const STATE_DATABASE_FILE: &str = "wati-ingest.state.db";
pub const WEBHOOK_SECRET_FILE: &str = "webhook_secret";
const API_TOKEN_FILE: &str = "api_token";
/// The generated `FORWARD_SECRET` (`whsec_…`), when forwarding is on and none is given.
pub const FORWARD_SECRET_FILE: &str = "forward_secret";
/// Locked (flock) by the running server; holds its pid for the refusal message.
const LOCK_FILE: &str = "lock";
/// Created by hand to start once on a fresh intake database next to an existing state database
/// (see [`LocalError::IntakeLost`]); removed by that start.
const ACCEPT_EMPTY_INTAKE_FILE: &str = "accept-empty-intake";

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Setting(#[from] ConfigError),
    #[error("the secret kept in {path}: {source}")]
    KeptSecret { path: PathBuf, source: SecretError },
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the forward secret kept in {path}: {reason}")]
    KeptForwardSecret { path: PathBuf, reason: String },
    #[error("cannot forward changes: {0}")]
    Forward(String),
    #[error("cannot generate a secret: {0}")]
    Random(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "{data_dir} is in use by another wati-ingest ({holder}): two servers on one data \
         directory would take the same queue. Stop the other one, or give this one its own DATA_DIR"
    )]
    Locked { data_dir: PathBuf, holder: String },
    #[error(
        "{intake} is {what}, but {state} is not: the ledger (raw archive, dedup keys) and the \
         queued events the intake database held would be lost. Restore {intake} \
         (and {intake}-wal, if there was one) from a backup. To start anyway with an empty ledger \
         and queue and keep the state, create the file {accept} and start again (see \
         docs/runbook.md, \"Intake database lost\")"
    )]
    IntakeLost {
        intake: PathBuf,
        what: &'static str,
        state: PathBuf,
        accept: PathBuf,
    },
    #[error(
        "{data_dir} holds no wati-ingest store (no {missing}): set DATA_DIR to the directory \
         the server uses (`make run`: ./.wati-ingest)"
    )]
    NoStore { data_dir: PathBuf, missing: PathBuf },
}

/// Where a secret came from: a generated one is shown in full at start-up, a given one is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource {
    Environment,
    DataDir,
    Generated,
}

/// The local process's environment, checked; nothing on disk has been touched yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSettings {
    /// The address the server listens on (`BIND`, default `127.0.0.1`).
    pub bind: std::net::IpAddr,
    pub port: u16,
    pub data_dir: PathBuf,
    pub webhook_secret: Option<String>,
    pub api_token: Option<String>,
    pub dedup_ttl_days: i64,
    pub max_body_bytes: usize,
    /// How long before a customer-service window closes `contact.window_closing` is announced.
    pub window_closing_lead_minutes: i64,
    /// How long quarantined bodies are kept (`QUARANTINE_RETENTION_DAYS`).
    pub quarantine_retention_days: i64,
    /// Where change documents are forwarded (`None`: nowhere).
    pub forward_url: Option<String>,
    /// The `whsec_` secret that signs them (`None`: generated once into `DATA_DIR`).
    pub forward_secret: Option<String>,
}

impl LocalSettings {
    /// Reads `BIND`, `PORT`, `DATA_DIR`, `WEBHOOK_SECRET`, `API_TOKEN`, `DEDUP_TTL_DAYS`,
    /// `MAX_BODY_BYTES`, `WINDOW_CLOSING_LEAD_MINUTES`, `FORWARD_URL` and `FORWARD_SECRET` through
    /// `var`; refuses any bad value with the variable's name.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // Pure: nothing here may touch the disk (the binary's tests check DATA_DIR stays absent).
        Ok(LocalSettings {
            bind: settings::bind_address(var("BIND").as_deref())?,
            port: settings::number_in("PORT", var("PORT").as_deref(), 3000, 0..=u16::MAX)?,
            data_dir: data_dir_setting(&var)?,
            webhook_secret: settings::secret("WEBHOOK_SECRET", var("WEBHOOK_SECRET").as_deref())?,
            api_token: settings::secret("API_TOKEN", var("API_TOKEN").as_deref())?,
            dedup_ttl_days: settings::dedup_ttl_days(var("DEDUP_TTL_DAYS").as_deref())?,
            max_body_bytes: settings::max_body_bytes(
                var("MAX_BODY_BYTES").as_deref(),
                DEFAULT_MAX_BODY_BYTES,
            )?,
            quarantine_retention_days: settings::quarantine_retention_days(
                var("QUARANTINE_RETENTION_DAYS").as_deref(),
            )?,
            window_closing_lead_minutes: settings::window_closing_lead_minutes(
                var("WINDOW_CLOSING_LEAD_MINUTES").as_deref(),
            )?,
            forward_url: settings::forward_url(var("FORWARD_URL").as_deref())?,
            forward_secret: settings::forward_secret(var("FORWARD_SECRET").as_deref())?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub bind: std::net::IpAddr,
    pub port: u16,
    pub data_dir: PathBuf,
    pub webhook_secret: String,
    pub webhook_secret_source: SecretSource,
    pub api_token: String,
    pub api_token_source: SecretSource,
    pub dedup_ttl_days: i64,
    pub max_body_bytes: usize,
    pub window_closing_lead_minutes: i64,
    pub quarantine_retention_days: i64,
    /// Push forwarding of the change documents, when `FORWARD_URL` is set.
    pub forward: Option<ForwardConfig>,
}

/// Where and how change documents are forwarded ([`crate::forward`]).
#[derive(Clone)]
pub struct ForwardConfig {
    pub url: String,
    /// `whsec_…`.
    pub secret: String,
    pub secret_source: SecretSource,
    pub schedule: ForwardSchedule,
}

impl std::fmt::Debug for ForwardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardConfig")
            .field("secret_source", &self.secret_source)
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

impl LocalConfig {
    /// The environment's settings, checked first; then `DATA_DIR` is created and missing secrets
    /// are generated once and kept there.
    pub fn from_env() -> Result<Self, LocalError> {
        let settings = LocalSettings::from_lookup(|name| std::env::var(name).ok())?;
        Self::prepare(settings)
    }

    /// Creates `DATA_DIR` and takes the secrets the settings do not give from it.
    pub fn prepare(settings: LocalSettings) -> Result<Self, LocalError> {
        let data_dir = settings.data_dir;
        std::fs::create_dir_all(&data_dir).map_err(|source| LocalError::Io {
            path: data_dir.clone(),
            source,
        })?;
        let (webhook_secret, webhook_secret_source) =
            secret_or_kept(settings.webhook_secret, &data_dir.join(WEBHOOK_SECRET_FILE))?;
        let (api_token, api_token_source) =
            secret_or_kept(settings.api_token, &data_dir.join(API_TOKEN_FILE))?;
        let forward = match settings.forward_url {
            None => None,
            Some(url) => {
                let (secret, secret_source) = forward_secret_or_kept(
                    settings.forward_secret,
                    &data_dir.join(FORWARD_SECRET_FILE),
                )?;
                Some(ForwardConfig {
                    url,
                    secret,
                    secret_source,
                    schedule: ForwardSchedule::default(),
                })
            }
        };
        Ok(LocalConfig {
            bind: settings.bind,
            port: settings.port,
            data_dir,
            webhook_secret,
            webhook_secret_source,
            api_token,
            api_token_source,
            dedup_ttl_days: settings.dedup_ttl_days,
            window_closing_lead_minutes: settings.window_closing_lead_minutes,
            quarantine_retention_days: settings.quarantine_retention_days,
            max_body_bytes: settings.max_body_bytes,
            forward,
        })
    }

    /// The intake database; the state database is beside it.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join(DATABASE_FILE)
    }

    /// Opens the store in `DATA_DIR`, refusing an intake database that vanished or was emptied
    /// next to existing state (SQLite would silently start it empty). No lock: the operator's
    /// commands run beside a running server (SQLite WAL).
    pub fn open_store(&self) -> Result<EmbeddedStore, LocalError> {
        let intake = self.database_path();
        let accept = self.data_dir.join(ACCEPT_EMPTY_INTAKE_FILE);
        let lost = intake_lost(&intake, &self.data_dir.join(STATE_DATABASE_FILE))?;
        let accepted = match lost {
            Some(lost) if !accept.exists() => return Err(lost),
            Some(lost) => {
                tracing::warn!(%lost, "starting anyway, as {} allows", accept.display());
                true
            }
            None => false,
        };
        let store = EmbeddedStore::open(&intake)?;
        if accepted {
            // One start only: the next loss must be noticed again.
            std::fs::remove_file(&accept).map_err(|source| LocalError::Io {
                path: accept,
                source,
            })?;
        }
        Ok(store)
    }
}

/// `DATA_DIR`, `./.wati-ingest` when unset.
fn data_dir_setting(var: &impl Fn(&str) -> Option<String>) -> Result<PathBuf, ConfigError> {
    Ok(PathBuf::from(
        settings::text("DATA_DIR", var("DATA_DIR").as_deref())?.unwrap_or(DEFAULT_DATA_DIR),
    ))
}

/// The store in `DATA_DIR` for the operator's commands. Only `DATA_DIR` is read (a command needs
/// none of the server's settings), and a directory without both databases is refused, never
/// created: a mistyped `DATA_DIR` would otherwise open an empty store and answer "nothing there".
pub fn open_existing_store(
    var: impl Fn(&str) -> Option<String>,
) -> Result<(PathBuf, EmbeddedStore), LocalError> {
    let data_dir = data_dir_setting(&var)?;
    let (intake, state) = (
        data_dir.join(DATABASE_FILE),
        data_dir.join(STATE_DATABASE_FILE),
    );
    // Refused like the server refuses it; a command never takes `accept-empty-intake`.
    if let Some(lost) = intake_lost(&intake, &state)? {
        return Err(lost);
    }
    for path in [intake, state] {
        if !path.is_file() {
            return Err(LocalError::NoStore {
                data_dir,
                missing: path,
            });
        }
    }
    let store = EmbeddedStore::open(&data_dir.join(DATABASE_FILE))?;
    Ok((data_dir, store))
}

/// `Some(error)` when the intake database at `intake` is missing or empty while the state
/// database at `state` is not: its queued events and archive are gone.
fn intake_lost(intake: &Path, state: &Path) -> Result<Option<LocalError>, LocalError> {
    let size = |path: &Path| match std::fs::metadata(path) {
        Ok(metadata) => Ok(Some(metadata.len())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LocalError::Io {
            path: path.to_owned(),
            source,
        }),
    };
    let what = match size(intake)? {
        Some(bytes) if bytes > 0 => return Ok(None),
        Some(_) => "empty",
        None => "missing",
    };
    if !size(state)?.is_some_and(|bytes| bytes > 0) {
        return Ok(None); // A first start (or both gone): nothing to protect.
    }
    let accept = intake.with_file_name(ACCEPT_EMPTY_INTAKE_FILE);
    Ok(Some(LocalError::IntakeLost {
        intake: intake.to_owned(),
        what,
        state: state.to_owned(),
        accept,
    }))
}

/// An exclusive lock on a data directory, held while a server runs on it (released when dropped,
/// or by the kernel when the process dies, `kill -9` included).
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Locks `data_dir` for this process, or says which process holds it.
pub fn lock_data_dir(data_dir: &Path) -> Result<DataDirLock, LocalError> {
    let path = data_dir.join(LOCK_FILE);
    let io = |source| LocalError::Io {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match try_lock_exclusive(&file) {
        Ok(true) => {}
        Ok(false) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = match holder.trim() {
                "" => "its pid is not recorded".to_owned(),
                pid => format!("pid {pid}"),
            };
            return Err(LocalError::Locked {
                data_dir: data_dir.to_owned(),
                holder,
            });
        }
        Err(error) => return Err(io(error)),
    }
    use std::io::{Seek, Write};
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "{}", std::process::id()).map_err(io)?;
    Ok(DataDirLock { _file: file })
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(false)` when another open file description holds it.
#[cfg(unix)]
fn try_lock_exclusive(file: &std::fs::File) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
    let outcome = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if outcome == 0 {
        return Ok(true);
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(code) if code == libc::EWOULDBLOCK => Ok(false),
        _ => Err(error),
    }
}

/// No advisory lock off Unix: a second server is not detected there.
#[cfg(not(unix))]
fn try_lock_exclusive(_file: &std::fs::File) -> std::io::Result<bool> {
    Ok(true)
}

/// The given secret (already checked), else the one kept at `path`, else a new one written there
/// (mode 0600). A kept secret that is too short is refused with the file's name.
fn secret_or_kept(
    given: Option<String>,
    path: &Path,
) -> Result<(String, SecretSource), LocalError> {
    given_kept_or_generated(
        given,
        path,
        |kept| {
            if kept.len() < MIN_SECRET_LEN {
                return Err(LocalError::KeptSecret {
                    path: path.to_owned(),
                    source: SecretError::TooShort,
                });
            }
            Ok(())
        },
        generate_secret,
    )
}

/// The given `FORWARD_SECRET` (already checked), else the one kept at `path` (checked), else a new
/// `whsec_` secret written there (mode 0600).
fn forward_secret_or_kept(
    given: Option<String>,
    path: &Path,
) -> Result<(String, SecretSource), LocalError> {
    given_kept_or_generated(
        given,
        path,
        |kept| {
            crate::forward::signing_key(kept)
                .map(|_| ())
                .map_err(|reason| LocalError::KeptForwardSecret {
                    path: path.to_owned(),
                    reason,
                })
        },
        crate::forward::generate_secret,
    )
}

/// The one rule for every secret `DATA_DIR` keeps: the given one wins; else the kept one, if
/// `check` takes it; else a new one from `generate`, written to `path` (mode 0600) first.
fn given_kept_or_generated<E: ToString>(
    given: Option<String>,
    path: &Path,
    check: impl Fn(&str) -> Result<(), LocalError>,
    generate: impl Fn() -> Result<String, E>,
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
            let kept = kept.trim();
            check(kept)?;
            return Ok((kept.to_owned(), SecretSource::DataDir));
        }
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io(error)),
    }
    let secret = generate().map_err(|e| LocalError::Random(e.to_string()))?;
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
    dedup_ttl_seconds: i64,
    window_closing_lead_minutes: i64,
    quarantine_retention_days: i64,
    /// The forward target and its schedule, when forwarding is on.
    forward: Option<(ForwardTarget, ForwardSchedule)>,
    /// Held until the pipeline is dropped (after `serve` returns).
    _lock: DataDirLock,
}

impl LocalPipeline {
    /// Locks `DATA_DIR` (a second server on it is refused), opens the store and builds the router.
    pub fn open(config: &LocalConfig) -> Result<Self, LocalError> {
        let lock = lock_data_dir(&config.data_dir)?;
        let dedup_ttl_seconds = settings::dedup_ttl_seconds(config.dedup_ttl_days)?;
        let secret = |name, value: &str| {
            SecretSet::new([value]).map_err(|source| ConfigError::Secret { name, source })
        };
        let secrets = secret("WEBHOOK_SECRET", &config.webhook_secret)?;
        let tokens = secret("API_TOKEN", &config.api_token)?;
        let forward = match &config.forward {
            None => None,
            Some(forward) => Some((
                ForwardTarget::new(&forward.url, &forward.secret, forward.schedule.timeout)
                    .map_err(LocalError::Forward)?,
                forward.schedule,
            )),
        };
        let store = config.open_store()?;
        let webhook = WebhookService {
            receiver: Receiver::over_intake(
                Arc::new(store.clone()),
                ReceiverSettings {
                    dedup_ttl_seconds,
                    ..ReceiverSettings::default()
                },
            ),
            secrets: secrets.into(),
            max_body_bytes: config.max_body_bytes,
            metrics: MetricsSink::Off,
        };
        let reader = ReadService {
            state: Arc::new(store.clone()),
            tokens: tokens.into(),
            changes: Some(Arc::new(store.clone())),
            intake: Some(Arc::new(store.clone())),
        };
        let reader = Arc::new(reader);
        let router = webhook_routes(Arc::new(webhook))
            .merge(read_routes(Arc::clone(&reader)))
            .merge(console_routes(Arc::clone(&reader)))
            .merge(console_intake_routes(reader))
            .merge(health_routes(Arc::new(store.clone())));
        Ok(LocalPipeline {
            store,
            router,
            dedup_ttl_seconds,
            window_closing_lead_minutes: config.window_closing_lead_minutes,
            quarantine_retention_days: config.quarantine_retention_days,
            forward,
            _lock: lock,
        })
    }

    /// Starts the processor on the durable queue, resuming whatever a previous process left.
    pub fn spawn_processor(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(run_local(
            self.store.clone(),
            Arc::new(self.store.clone()),
            LocalProcessorSettings {
                dedup_ttl_seconds: self.dedup_ttl_seconds,
                ..LocalProcessorSettings::default()
            },
        ))
    }

    /// Starts the window timer: every [`WINDOW_TIMER_EVERY`], announces the customer-service
    /// windows that are closing or closed ([`EmbeddedStore::announce_due_windows`]).
    pub fn spawn_window_timer(&self) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let lead_seconds = self.window_closing_lead_minutes * 60;
        tokio::spawn(async move {
            loop {
                match store.announce_due_windows(now_unix(), lead_seconds).await {
                    Ok(0) => {}
                    Ok(announced) => tracing::info!(announced, "window changes"),
                    Err(error) => tracing::error!(%error, "window timer"),
                }
                tokio::time::sleep(WINDOW_TIMER_EVERY).await;
            }
        })
    }

    /// Starts the pruner: every [`PRUNE_EVERY`] (the first a minute after start), the ledger's
    /// expired rows and the quarantined bodies older than the retention are deleted, as the
    /// tables' TTL does on AWS ([`EmbeddedStore::prune`]).
    pub fn spawn_pruner(&self) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let retention_seconds = self.quarantine_retention_days * settings::SECONDS_PER_DAY;
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            loop {
                match store.prune(now_unix(), retention_seconds).await {
                    Ok(pruned) if pruned == Default::default() => {}
                    Ok(pruned) => tracing::info!(
                        ledger = pruned.ledger,
                        quarantine = pruned.quarantine,
                        "pruned"
                    ),
                    Err(error) => tracing::error!(%error, "prune"),
                }
                tokio::time::sleep(PRUNE_EVERY).await;
            }
        })
    }

    /// Starts the forwarder when forwarding is on ([`crate::forward::run`]): its own task, which
    /// ingestion never waits for.
    pub fn spawn_forwarder(&self) -> Option<tokio::task::JoinHandle<()>> {
        let (target, schedule) = self.forward.clone()?;
        Some(tokio::spawn(crate::forward::run(
            self.store.clone(),
            target,
            schedule,
        )))
    }

    /// The forward target's host (never its path or query), when forwarding is on.
    pub fn forward_host(&self) -> Option<String> {
        self.forward.as_ref().map(|(target, _)| target.host())
    }

    /// Serves HTTP on `listener` until `shutdown` resolves; the data directory stays locked
    /// until then.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let LocalPipeline {
            router,
            _lock: lock,
            ..
        } = self;
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await;
        drop(lock);
        served
    }
}

/// Binds `127.0.0.1:{port}` (0 picks a free port).
pub async fn bind(port: u16) -> std::io::Result<(TcpListener, SocketAddr)> {
    bind_on(std::net::Ipv4Addr::LOCALHOST.into(), port).await
}

/// Binds `{address}:{port}` (`BIND` and `PORT`).
pub async fn bind_on(
    address: std::net::IpAddr,
    port: u16,
) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind((address, port)).await?;
    let address = listener.local_addr()?;
    Ok((listener, address))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn settings_default_and_refuse_by_name() {
        let defaults = LocalSettings::from_lookup(lookup(&[])).unwrap();
        assert_eq!(
            defaults,
            LocalSettings {
                bind: std::net::Ipv4Addr::LOCALHOST.into(),
                port: 3000,
                data_dir: PathBuf::from(DEFAULT_DATA_DIR),
                webhook_secret: None,
                api_token: None,
                dedup_ttl_days: 7,
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                window_closing_lead_minutes: 60,
                quarantine_retention_days: 30,
                forward_url: None,
                forward_secret: None,
            }
        );
        let everywhere = LocalSettings::from_lookup(lookup(&[("BIND", "0.0.0.0")])).unwrap();
        assert_eq!(everywhere.bind.to_string(), "0.0.0.0");
        let v6 = LocalSettings::from_lookup(lookup(&[("BIND", "::1")])).unwrap();
        assert_eq!(v6.bind.to_string(), "::1");
        let empty_is_unset = LocalSettings::from_lookup(lookup(&[("WEBHOOK_SECRET", "")]));
        assert_eq!(empty_is_unset.unwrap().webhook_secret, None);
        for (pairs, name) in [
            (&[("WEBHOOK_SECRET", "  ")][..], "WEBHOOK_SECRET"),
            (&[("API_TOKEN", "too-short")][..], "API_TOKEN"),
            (
                &[("DEDUP_TTL_DAYS", "106751991167301")][..],
                "DEDUP_TTL_DAYS",
            ),
            (&[("MAX_BODY_BYTES", "0")][..], "MAX_BODY_BYTES"),
            (&[("PORT", "-1")][..], "PORT"),
            (&[("BIND", "localhost:3000")][..], "BIND"),
            (&[("FORWARD_URL", "mailto:a@b.c")][..], "FORWARD_URL"),
            (
                &[("FORWARD_SECRET", "not-whsec-0123456789")][..],
                "FORWARD_SECRET",
            ),
        ] {
            let pairs: &'static [(&'static str, &'static str)] = pairs;
            let error = LocalSettings::from_lookup(lookup(pairs)).unwrap_err();
            assert!(error.to_string().contains(name), "{error}");
        }
    }

    #[test]
    fn a_lost_intake_is_told_from_a_first_start() {
        let dir = tempfile::tempdir().unwrap();
        let (intake, state) = (dir.path().join("i.db"), dir.path().join("s.db"));
        assert!(
            intake_lost(&intake, &state).unwrap().is_none(),
            "first start"
        );
        std::fs::write(&state, b"state").unwrap();
        let missing = intake_lost(&intake, &state).unwrap().expect("missing");
        assert!(missing.to_string().contains("i.db is missing"), "{missing}");
        std::fs::write(&intake, b"").unwrap();
        let empty = intake_lost(&intake, &state).unwrap().expect("empty");
        assert!(empty.to_string().contains("i.db is empty"), "{empty}");
        std::fs::write(&intake, b"intake").unwrap();
        assert!(intake_lost(&intake, &state).unwrap().is_none());
    }

    #[test]
    fn a_data_dir_is_locked_once() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_data_dir(dir.path()).unwrap();
        let refused = lock_data_dir(dir.path()).unwrap_err().to_string();
        assert!(
            refused.contains(&format!("pid {}", std::process::id())),
            "{refused}"
        );
        drop(held);
        lock_data_dir(dir.path()).unwrap();
    }

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
    fn a_forward_secret_is_generated_once_and_checked_when_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FORWARD_SECRET_FILE);
        let (first, source) = forward_secret_or_kept(None, &path).unwrap();
        assert_eq!(source, SecretSource::Generated);
        assert!(first.starts_with("whsec_"), "{first}");
        let (again, source) = forward_secret_or_kept(None, &path).unwrap();
        assert_eq!((again, source), (first, SecretSource::DataDir));
        std::fs::write(&path, "not-a-whsec-secret").unwrap();
        let refused = forward_secret_or_kept(None, &path).unwrap_err().to_string();
        assert!(refused.contains("forward_secret"), "{refused}");
        assert!(!refused.contains("not-a-whsec-secret"), "{refused}");
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
