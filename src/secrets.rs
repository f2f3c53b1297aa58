//! Credentials that can change while a process runs: the webhook secret and the read API token
//! held in one AWS Secrets Manager secret, read at start and re-read on a schedule, so that a
//! rotation is one `put-secret-value` and no redeploy.
//!
//! The secret's value is one JSON object holding each credential's current and previous value:
//!
//! ```json
//! {"webhookSecret": "…", "webhookSecretPrevious": "", "apiToken": "…", "apiTokenPrevious": ""}
//! ```
//!
//! A process reads it at start (and refuses to start without it), re-reads it every
//! [`RefreshPolicy::refresh_every`], and, when a request presents a value it does not know,
//! re-reads it before refusing, at most once per [`RefreshPolicy::recheck_unknown_after`]: a new
//! value is accepted within that time, a removed one stops being accepted within the first.
//! A refresh that fails or reads an invalid value keeps the last good set (logged); the fetch
//! itself is behind [`SecretFetcher`] (Secrets Manager in [`crate::store::aws_secrets`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::auth::SecretSet;
use crate::settings::{self, ConfigError};

/// Which credential of the secret a process checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The secret in the webhook URL (the receiver).
    WebhookSecret,
    /// The read API's bearer token (the api function).
    ApiToken,
}

impl Credential {
    /// The JSON keys of its current and previous values.
    pub fn keys(self) -> (&'static str, &'static str) {
        match self {
            Credential::WebhookSecret => ("webhookSecret", "webhookSecretPrevious"),
            Credential::ApiToken => ("apiToken", "apiTokenPrevious"),
        }
    }
}

/// Why a secret's value was refused; never holds the value itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretValueError {
    #[error("the secret is not a JSON object of strings (keys webhookSecret, webhookSecretPrevious, apiToken, apiTokenPrevious)")]
    NotAnObject,
    #[error("the secret's {0}")]
    Field(ConfigError),
}

/// The accepted values of `credential` in a secret's JSON: its current value (required, at least
/// [`crate::auth::MIN_SECRET_LEN`] characters) and its previous one (empty or absent when no
/// rotation is under way). Keys of other credentials and unknown keys are ignored.
pub fn parse_secret(credential: Credential, json: &str) -> Result<SecretSet, SecretValueError> {
    let fields: HashMap<String, serde_json::Value> =
        serde_json::from_str(json).map_err(|_| SecretValueError::NotAnObject)?;
    let (current, previous) = credential.keys();
    let mut strings = HashMap::new();
    for key in [current, previous] {
        match fields.get(key) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(value)) => {
                strings.insert(key, value.clone());
            }
            Some(_) => return Err(SecretValueError::NotAnObject),
        }
    }
    settings::secret_set(current, previous, |key| strings.get(key).cloned())
        .map_err(SecretValueError::Field)
}

/// Reads the secret's current value (its JSON text).
#[async_trait]
pub trait SecretFetcher: Send + Sync {
    async fn fetch(&self) -> Result<String, SecretFetchError>;
}

/// A read of the secret that failed (the service's message, which never holds the value).
#[derive(Debug, Clone, thiserror::Error)]
#[error("reading the secret failed: {0}")]
pub struct SecretFetchError(pub String);

/// How often the secret is read again.
#[derive(Debug, Clone, Copy)]
pub struct RefreshPolicy {
    /// Re-read after this long, whatever the requests (a removed value stops working by then).
    pub refresh_every: Duration,
    /// An unknown value is checked against a fresh read at most this often (a flood of wrong
    /// secrets costs one read per period, not one per request).
    pub recheck_unknown_after: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            refresh_every: Duration::from_secs(300),
            recheck_unknown_after: Duration::from_secs(30),
        }
    }
}

/// Whether the set read at `read_at` must be read again before answering at `now`; `unknown`
/// when the request's value matched none of the set.
pub fn needs_refresh(policy: RefreshPolicy, read_at: Instant, now: Instant, unknown: bool) -> bool {
    let age = now.saturating_duration_since(read_at);
    age >= policy.refresh_every || (unknown && age >= policy.recheck_unknown_after)
}

struct Cached {
    set: SecretSet,
    /// When the last read was attempted (successful or not: a failing service is not asked
    /// again on every request).
    read_at: Instant,
}

/// One credential of a managed secret, re-read per [`RefreshPolicy`].
pub struct ManagedSecret {
    credential: Credential,
    source: Arc<dyn SecretFetcher>,
    policy: RefreshPolicy,
    cached: RwLock<Cached>,
    /// One read at a time: requests that find the set stale while it is being read wait for
    /// that read instead of issuing their own.
    reading: tokio::sync::Mutex<()>,
}

/// Why a process could not start: its secret could not be read or holds no valid value.
#[derive(Debug, thiserror::Error)]
pub enum SecretStartError {
    #[error(transparent)]
    Fetch(#[from] SecretFetchError),
    #[error(transparent)]
    Value(#[from] SecretValueError),
}

impl ManagedSecret {
    /// Reads the secret once; a process without its credentials must not start.
    pub async fn load(
        credential: Credential,
        source: Arc<dyn SecretFetcher>,
        policy: RefreshPolicy,
    ) -> Result<Self, SecretStartError> {
        let set = parse_secret(credential, &source.fetch().await?)?;
        Ok(ManagedSecret {
            credential,
            source,
            policy,
            cached: RwLock::new(Cached {
                set,
                read_at: Instant::now(),
            }),
            reading: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether `candidate` is a current or previous value, reading the secret again first when
    /// the policy says so.
    pub async fn matches(&self, candidate: &str) -> bool {
        let (known, read_at) = self.check(candidate);
        if !needs_refresh(self.policy, read_at, Instant::now(), !known) {
            return known;
        }
        self.refresh(read_at).await;
        self.check(candidate).0
    }

    /// The values last read.
    fn current(&self) -> SecretSet {
        let cached = self
            .cached
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cached.set.clone()
    }

    fn check(&self, candidate: &str) -> (bool, Instant) {
        let cached = self
            .cached
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (cached.set.matches(candidate), cached.read_at)
    }

    fn read_at(&self) -> Instant {
        let cached = self
            .cached
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cached.read_at
    }

    /// Reads the secret unless another request did since `seen_read_at`.
    async fn refresh(&self, seen_read_at: Instant) {
        let _reading = self.reading.lock().await;
        if self.read_at() != seen_read_at {
            return;
        }
        let fresh = match self.source.fetch().await {
            Ok(json) => parse_secret(self.credential, &json).map_err(|error| error.to_string()),
            Err(error) => Err(error.to_string()),
        };
        let mut cached = self
            .cached
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cached.read_at = Instant::now();
        match fresh {
            Ok(set) => cached.set = set,
            Err(error) => {
                tracing::warn!(%error, credential = ?self.credential, "secret refresh failed: keeping the last good value")
            }
        }
    }
}

/// The values a request's secret or token is checked against: fixed at start (the local server,
/// from its files or environment) or a managed secret (the Lambdas).
#[derive(Clone)]
pub enum Credentials {
    Fixed(SecretSet),
    Managed(Arc<ManagedSecret>),
}

impl Credentials {
    pub async fn matches(&self, candidate: &str) -> bool {
        match self {
            Credentials::Fixed(set) => set.matches(candidate),
            Credentials::Managed(secret) => secret.matches(candidate).await,
        }
    }

    /// See [`SecretSet::session_tag`]; a managed secret is re-read first per its policy.
    pub async fn session_tag(&self, candidate: &str, message: &[u8]) -> Option<[u8; 32]> {
        match self {
            Credentials::Fixed(set) => set.session_tag(candidate, message),
            Credentials::Managed(secret) => {
                secret.matches(candidate).await;
                secret.current().session_tag(candidate, message)
            }
        }
    }

    /// See [`SecretSet::verify_session_tag`] (the values last read, for a managed secret).
    pub fn verify_session_tag(&self, message: &[u8], tag: &[u8]) -> bool {
        match self {
            Credentials::Fixed(set) => set.verify_session_tag(message, tag),
            Credentials::Managed(secret) => secret.current().verify_session_tag(message, tag),
        }
    }
}

impl From<SecretSet> for Credentials {
    fn from(set: SecretSet) -> Self {
        Credentials::Fixed(set)
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Fixed(set) => write!(f, "Fixed({set:?})"),
            Credentials::Managed(secret) => write!(f, "Managed({:?})", secret.credential),
        }
    }
}

#[cfg(test)]
mod tests;
