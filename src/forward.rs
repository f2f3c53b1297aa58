//! Push forwarding (local): every change document in the outbox is POSTed to `FORWARD_URL`,
//! signed per the Standard Webhooks spec, retried with backoff, dead-lettered after a horizon.
//!
//! - **Request**: body = the document's JSON as the outbox holds it, `content-type:
//!   application/json`, `webhook-id` = the document's `id` (stable: a consumer deduplicates on
//!   it), `webhook-timestamp` = unix seconds of this attempt, `webhook-signature: v1,<base64
//!   HMAC-SHA256 of "{id}.{timestamp}.{body}">` keyed by the base64 part of the `whsec_` secret.
//! - **Outcomes**: a `2xx` is delivered. Any other status (redirects are not followed), a
//!   timeout or a failed connection is retried after an exponential backoff with full jitter
//!   (a random delay up to 5 s, doubling per attempt to at most 1 h: [`ForwardSchedule`]) until
//!   24 hours after the change's first attempt; then it is dead-lettered with its last error.
//!   `410 Gone` dead-letters the change with reason `410 Gone` and pauses all forwarding until the
//!   process restarts (logged at `ERROR`): the target said it does not want any more.
//! - **Independence**: the forwarder is its own task; ingestion never waits for it. Up to
//!   [`ForwardSchedule::concurrency`] changes are in flight at once, each on its own schedule, so
//!   one failing change does not hold back the others (order is not guaranteed anyway).
//! - **Progress** lives in the state database ([`crate::store::embedded`], `forwards.rs`): a
//!   restart resumes where it was, and a change in flight when the process died is sent again
//!   (at least once).
//! - **Logs** name the target by host (and port) only: the URL's path and query may hold a token.
//!   The secret is never logged.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;
use tokio::task::JoinSet;

use crate::store::embedded::{DueForward, EmbeddedStore, ForwardOutcome};

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// How many new outbox changes one pass takes for forwarding.
const TAKE_AT_ONCE: usize = 500;

/// When and how often a change is tried. The defaults are the documented ones; tests shrink them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardSchedule {
    /// The longest delay after the first failure (full jitter: a random delay up to it).
    pub first_retry: Duration,
    /// The longest delay ever (the doubling stops there).
    pub max_retry: Duration,
    /// How long after a change's first attempt it is still retried; then it is dead-lettered.
    pub horizon: Duration,
    /// How long one attempt may take (connecting, sending, the answer's status).
    pub timeout: Duration,
    /// How many changes may be in flight at once.
    pub concurrency: usize,
    /// How often the outbox is looked at for new changes when there is nothing else to do.
    pub poll: Duration,
}

impl Default for ForwardSchedule {
    fn default() -> Self {
        ForwardSchedule {
            first_retry: Duration::from_secs(5),
            max_retry: Duration::from_secs(3_600),
            horizon: Duration::from_secs(24 * 3_600),
            timeout: Duration::from_secs(10),
            concurrency: 32,
            poll: Duration::from_millis(250),
        }
    }
}

impl ForwardSchedule {
    /// The longest delay after the `failures`-th failed attempt: `first_retry` doubled
    /// `failures - 1` times, at most `max_retry`.
    pub fn backoff_ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.first_retry
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max_retry)
            .min(self.max_retry)
    }

    /// The delay after the `failures`-th failure: uniformly random up to its ceiling (full jitter).
    pub fn backoff(&self, failures: u32) -> Duration {
        let ceiling = self.backoff_ceiling(failures).as_millis() as u64;
        let mut bytes = [0u8; 8];
        let random = match getrandom::fill(&mut bytes) {
            Ok(()) => u64::from_le_bytes(bytes),
            Err(_) => ceiling / 2,
        };
        Duration::from_millis(random % (ceiling + 1))
    }
}

/// Why a `FORWARD_SECRET` (or the kept secret) cannot sign.
pub fn signing_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or_else(|| format!("must start with {SECRET_PREFIX}"))?;
    let key = BASE64
        .decode(encoded.trim())
        .map_err(|e| format!("the part after {SECRET_PREFIX} is not base64: {e}"))?;
    if key.len() < 16 {
        return Err(format!(
            "the key after {SECRET_PREFIX} is {} bytes; at least 16 are needed",
            key.len()
        ));
    }
    Ok(key)
}

/// A new secret: `whsec_` and 32 random bytes in base64.
pub fn generate_secret() -> Result<String, getrandom::Error> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)?;
    Ok(format!("{SECRET_PREFIX}{}", BASE64.encode(key)))
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<HttpConnector>,
    Full<hyper::body::Bytes>,
>;

/// Where changes go, and the key that signs them.
#[derive(Clone)]
pub struct ForwardTarget {
    url: hyper::Uri,
    key: Vec<u8>,
    client: HttpClient,
    timeout: Duration,
}

impl std::fmt::Debug for ForwardTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardTarget")
            .field("host", &self.host())
            .finish_non_exhaustive()
    }
}

impl ForwardTarget {
    /// `url` (checked by [`crate::settings::forward_url`]) and `secret` (`whsec_…`); each attempt
    /// is given up after `timeout`. Redirects are not followed (a `3xx` is a failed attempt).
    pub fn new(url: &str, secret: &str, timeout: Duration) -> Result<Self, String> {
        let url: hyper::Uri = url.parse().map_err(|e| format!("FORWARD_URL: {e}"))?;
        let key = signing_key(secret).map_err(|e| format!("FORWARD_SECRET: {e}"))?;
        // rustls with aws-lc-rs (what the AWS SDK uses) and the system's root certificates.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls =
            match HttpsConnectorBuilder::new().with_provider_and_native_roots(provider.clone()) {
                Ok(tls) => tls,
                Err(error) if url.scheme_str() == Some("https") => {
                    return Err(format!(
                        "FORWARD_URL: no root certificates to verify an https target: {error}"
                    ))
                }
                // A plain http target needs none.
                Err(_) => HttpsConnectorBuilder::new().with_tls_config(
                    rustls::ClientConfig::builder_with_provider(provider)
                        .with_safe_default_protocol_versions()
                        .map_err(|e| format!("TLS: {e}"))?
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                ),
            };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let connector = tls.https_or_http().enable_http1().wrap_connector(http);
        let client =
            hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
        Ok(ForwardTarget {
            url,
            key,
            client,
            timeout,
        })
    }

    /// The target as logs name it: host and port, never the path or query (they may hold a token).
    pub fn host(&self) -> String {
        let host = self.url.host().unwrap_or("?");
        match self.url.port_u16() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }

    /// One attempt: POSTs `body` signed for `id` at `timestamp` (unix seconds); given up after the
    /// timeout (connecting, sending, and the answer's status line and headers).
    pub async fn send(&self, id: &str, timestamp: i64, body: String) -> Attempt {
        let signature = sign(&self.key, id, timestamp, body.as_bytes());
        let request = hyper::Request::post(self.url.clone())
            .header("content-type", "application/json")
            .header(
                "user-agent",
                concat!("wati-ingest/", env!("CARGO_PKG_VERSION")),
            )
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(Full::new(hyper::body::Bytes::from(body)));
        let request = match request {
            Ok(request) => request,
            Err(error) => return Attempt::Failed(format!("cannot build the request: {error}")),
        };
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => Attempt::Failed(format!("timed out after {:?}", self.timeout)),
            Ok(Err(error)) => Attempt::Failed(describe(&error)),
            Ok(Ok(response)) if response.status().is_success() => Attempt::Delivered,
            Ok(Ok(response)) if response.status() == hyper::StatusCode::GONE => Attempt::Gone,
            Ok(Ok(response)) => Attempt::Failed(format!("HTTP {}", response.status().as_u16())),
        }
    }
}

/// A transport error in words: its kind and root cause (hyper's errors hold no URL).
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    let kind = if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    format!("{kind}: {cause}")
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// `410 Gone`.
    Gone,
    Failed(String),
}

/// What to record after an attempt at `started_ms` on `due`, given the schedule.
pub fn outcome(
    due: &DueForward,
    attempt: &Attempt,
    started_ms: i64,
    schedule: &ForwardSchedule,
) -> ForwardOutcome {
    match attempt {
        Attempt::Delivered => ForwardOutcome::Delivered,
        Attempt::Gone => ForwardOutcome::Dead {
            reason: "410 Gone".into(),
        },
        Attempt::Failed(error) => {
            let first = due.first_attempt_at.unwrap_or(started_ms);
            let horizon_end = first.saturating_add(schedule.horizon.as_millis() as i64);
            if started_ms >= horizon_end {
                return ForwardOutcome::Dead {
                    reason: format!("gave up after {} attempts: {error}", due.attempts + 1),
                };
            }
            let delay = schedule.backoff(due.attempts + 1).as_millis() as i64;
            ForwardOutcome::Retry {
                // The last attempt is made at the horizon.
                next_attempt_at: started_ms.saturating_add(delay).min(horizon_end),
                error: error.clone(),
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Forwards the outbox to `target` until a `410 Gone` pauses it (then returns once the attempts
/// in flight have ended). Runs beside the pipeline; store errors are logged and retried.
pub async fn run(store: EmbeddedStore, target: ForwardTarget, schedule: ForwardSchedule) {
    let host = target.host();
    tracing::info!(%host, "forwarding changes");
    let concurrency = schedule.concurrency.max(1);
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut attempts: JoinSet<(DueForward, i64, Attempt)> = JoinSet::new();
    let mut paused = false;
    // Set when the last outcomes' write took the new changes too (one write, not two).
    let mut taken = false;
    loop {
        if !paused {
            if !std::mem::take(&mut taken) {
                if let Err(error) = store.take_changes_to_forward(TAKE_AT_ONCE).await {
                    tracing::error!(%error, "forwarder: take new changes");
                }
            }
            if in_flight.len() < concurrency {
                // Ask for enough to skip those in flight (still pending in the table).
                match store
                    .due_forwards(now_ms(), concurrency + in_flight.len())
                    .await
                {
                    Ok(due) => {
                        for due in due {
                            if in_flight.len() >= concurrency {
                                break;
                            }
                            if !in_flight.insert(due.change_id.clone()) {
                                continue;
                            }
                            let target = target.clone();
                            attempts.spawn(async move {
                                let started_ms = now_ms();
                                let attempt = target
                                    .send(&due.change_id, started_ms / 1_000, due.document.clone())
                                    .await;
                                (due, started_ms, attempt)
                            });
                        }
                    }
                    Err(error) => tracing::error!(%error, "forwarder: read due changes"),
                }
            }
        } else if attempts.is_empty() {
            tracing::error!(
                %host,
                "forwarding paused until restart: the target answered 410 Gone"
            );
            return;
        }
        let first = tokio::select! {
            Some(finished) = attempts.join_next(), if !attempts.is_empty() => finished,
            _ = tokio::time::sleep(schedule.poll) => continue,
        };
        // Every attempt that has ended by now, recorded in one write.
        let mut finished = vec![first];
        while let Some(more) = attempts.try_join_next() {
            finished.push(more);
        }
        let mut outcomes = Vec::with_capacity(finished.len());
        // A panicked attempt: its change stays pending and is tried again.
        for (due, started_ms, attempt) in finished.into_iter().flatten() {
            in_flight.remove(&due.change_id);
            let recorded = outcome(&due, &attempt, started_ms, &schedule);
            paused |= attempt == Attempt::Gone;
            log_attempt(&host, &due, &attempt, &recorded);
            outcomes.push((due.change_id, started_ms, recorded));
        }
        let take = if paused { 0 } else { TAKE_AT_ONCE };
        match store.record_forwards(outcomes, take).await {
            Ok(_) => taken = take > 0,
            // Still pending: they are sent again (at least once).
            Err(error) => tracing::error!(%error, "forwarder: record outcomes"),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks reference libraries' own test vector (the same values give the same
    /// signature in the PyPI `standardwebhooks` 1.1.0 package).
    #[test]
    fn signs_like_the_reference_implementation() {
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_whsec_and_base64() {
        assert!(signing_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(signing_key("whsec_not base64!").is_err());
        assert!(signing_key("whsec_c2hvcnQ=").is_err(), "5 bytes");
        let generated = generate_secret().unwrap();
        assert_eq!(signing_key(&generated).unwrap().len(), 32);
        assert_ne!(generated, generate_secret().unwrap());
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_full_jitter() {
        let schedule = ForwardSchedule::default();
        let ceilings: Vec<u64> = [1, 2, 3, 4, 10, 11, 12, 40, u32::MAX]
            .iter()
            .map(|n| schedule.backoff_ceiling(*n).as_secs())
            .collect();
        assert_eq!(ceilings, [5, 10, 20, 40, 2_560, 3_600, 3_600, 3_600, 3_600]);
        let delays: HashSet<Duration> = (0..50).map(|_| schedule.backoff(3)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(20)));
        assert!(delays.len() > 10, "jittered: {delays:?}");
    }

    #[test]
    fn failures_retry_until_the_horizon_then_dead_letter() {
        let schedule = ForwardSchedule::default();
        let due = |attempts, first_attempt_at| DueForward {
            change_id: "chg".into(),
            document: "{}".into(),
            attempts,
            first_attempt_at,
        };
        let failed = Attempt::Failed("HTTP 500".into());
        match outcome(&due(0, None), &failed, 1_000, &schedule) {
            ForwardOutcome::Retry {
                next_attempt_at, ..
            } => assert!((1_000..=6_000).contains(&next_attempt_at)),
            other => panic!("{other:?}"),
        }
        let day_ms = 86_400_000;
        match outcome(&due(30, Some(0)), &failed, day_ms - 10, &schedule) {
            ForwardOutcome::Retry {
                next_attempt_at, ..
            } => assert!(next_attempt_at <= day_ms, "the last attempt at the horizon"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            outcome(&due(31, Some(0)), &failed, day_ms, &schedule),
            ForwardOutcome::Dead {
                reason: "gave up after 32 attempts: HTTP 500".into()
            }
        );
        assert_eq!(
            outcome(&due(0, None), &Attempt::Gone, 0, &schedule),
            ForwardOutcome::Dead {
                reason: "410 Gone".into()
            }
        );
        assert_eq!(
            outcome(&due(3, Some(0)), &Attempt::Delivered, day_ms * 2, &schedule),
            ForwardOutcome::Delivered
        );
    }
}
