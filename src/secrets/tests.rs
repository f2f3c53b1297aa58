//! The secret's format and the refresh rules, written from the module's documented rules with a
//! scripted source and tokio's paused clock.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const OLD: &str = "0123456789abcdef-old";
const NEW: &str = "0123456789abcdef-new";

fn webhook(current: &str, previous: &str) -> String {
    serde_json::json!({
        "webhookSecret": current,
        "webhookSecretPrevious": previous,
        "apiToken": "token-not-the-webhooks-0123",
        "apiTokenPrevious": "",
    })
    .to_string()
}

#[test]
fn both_values_of_the_credential_are_accepted_and_no_other_key() {
    let set = parse_secret(Credential::WebhookSecret, &webhook(NEW, OLD)).unwrap();
    assert!(set.matches(NEW) && set.matches(OLD));
    assert!(!set.matches("token-not-the-webhooks-0123"));
    let tokens = parse_secret(Credential::ApiToken, &webhook(NEW, OLD)).unwrap();
    assert!(tokens.matches("token-not-the-webhooks-0123"));
    assert!(!tokens.matches(NEW) && !tokens.matches(OLD));
}

#[test]
fn an_empty_or_absent_previous_value_means_no_rotation() {
    for json in [webhook(NEW, ""), format!(r#"{{"webhookSecret":"{NEW}"}}"#)] {
        let set = parse_secret(Credential::WebhookSecret, &json).unwrap();
        assert!(set.matches(NEW));
        assert!(!set.matches(""));
    }
}

/// Each refusal names the key at fault and never the value.
#[test]
fn invalid_values_are_refused_by_key() {
    let cases = [
        ("not json".to_string(), "not a JSON object"),
        ("[1,2]".to_string(), "not a JSON object"),
        (r#"{"webhookSecret": 7}"#.to_string(), "not a JSON object"),
        (
            r#"{"apiToken": "x"}"#.to_string(),
            "webhookSecret is not set",
        ),
        (webhook("", ""), "webhookSecret is not set"),
        (webhook("short", ""), "webhookSecret:"),
        (webhook(NEW, "short-previous"), "webhookSecretPrevious:"),
        (webhook("   ", ""), "webhookSecret holds only whitespace"),
    ];
    for (json, expected) in cases {
        let error = parse_secret(Credential::WebhookSecret, &json)
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{json}: {error}");
        assert!(!error.contains("short-previous"), "{error}");
    }
}

#[test]
fn the_refresh_rule() {
    let policy = RefreshPolicy::default();
    let read = Instant::now();
    let at = |secs| read + Duration::from_secs(secs);
    // A known value is trusted until the set is five minutes old.
    assert!(!needs_refresh(policy, read, at(299), false));
    assert!(needs_refresh(policy, read, at(300), false));
    // An unknown one is checked against a fresh read once the set is 30 s old.
    assert!(!needs_refresh(policy, read, at(29), true));
    assert!(needs_refresh(policy, read, at(30), true));
    // A clock that reads earlier than the read (it cannot, with Instant) is not stale.
    assert!(!needs_refresh(policy, at(10), read, true));
}

/// A source whose value the test changes, counting reads; it fails while `failing` is set.
struct Scripted {
    value: Mutex<String>,
    failing: Mutex<bool>,
    reads: AtomicUsize,
}

impl Scripted {
    fn new(value: String) -> Arc<Self> {
        Arc::new(Scripted {
            value: Mutex::new(value),
            failing: Mutex::new(false),
            reads: AtomicUsize::new(0),
        })
    }
    fn put(&self, value: String) {
        *self.value.lock().unwrap() = value;
    }
    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl SecretFetcher for Scripted {
    async fn fetch(&self) -> Result<String, SecretFetchError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        if *self.failing.lock().unwrap() {
            return Err(SecretFetchError("service unavailable".into()));
        }
        Ok(self.value.lock().unwrap().clone())
    }
}

async fn managed(source: &Arc<Scripted>) -> ManagedSecret {
    let source: Arc<dyn SecretFetcher> = source.clone();
    ManagedSecret::load(Credential::WebhookSecret, source, RefreshPolicy::default())
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_rotation_is_seen_within_the_policys_times() {
    let source = Scripted::new(webhook(OLD, ""));
    let secret = managed(&source).await;
    assert_eq!(source.reads(), 1);
    assert!(secret.matches(OLD).await);

    // Rotated: the new value is refused (no read) until the set is 30 s old, then accepted after
    // one read; the old one stays accepted as the previous value.
    source.put(webhook(NEW, OLD));
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(!secret.matches(NEW).await);
    assert_eq!(source.reads(), 1);
    tokio::time::advance(Duration::from_secs(20)).await;
    assert!(secret.matches(NEW).await);
    assert_eq!(source.reads(), 2);
    assert!(secret.matches(OLD).await);

    // The rotation ends: the old value keeps working until the scheduled read, and not after.
    source.put(webhook(NEW, ""));
    tokio::time::advance(Duration::from_secs(299)).await;
    assert!(secret.matches(OLD).await);
    assert_eq!(source.reads(), 2);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(!secret.matches(OLD).await);
    assert_eq!(source.reads(), 3);
    assert!(secret.matches(NEW).await);
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_wrong_values_reads_once_per_period() {
    let source = Scripted::new(webhook(OLD, ""));
    let secret = managed(&source).await;
    tokio::time::advance(Duration::from_secs(30)).await;
    for _ in 0..1000 {
        assert!(!secret.matches("0123456789abcdef-wrong").await);
    }
    assert_eq!(source.reads(), 2);
    tokio::time::advance(Duration::from_secs(30)).await;
    for _ in 0..1000 {
        assert!(!secret.matches("0123456789abcdef-wrong").await);
    }
    assert_eq!(source.reads(), 3);
}

/// Requests that find the set stale at once share one read.
#[tokio::test(start_paused = true)]
async fn concurrent_requests_share_one_read() {
    let source = Scripted::new(webhook(OLD, ""));
    let secret = Arc::new(managed(&source).await);
    source.put(webhook(NEW, OLD));
    tokio::time::advance(Duration::from_secs(300)).await;
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let secret = Arc::clone(&secret);
        requests.spawn(async move { secret.matches(NEW).await });
    }
    while let Some(accepted) = requests.join_next().await {
        assert!(accepted.unwrap());
    }
    assert_eq!(source.reads(), 2);
}

/// A failing service or a bad value keeps the last good set, and is not asked again on every
/// request.
#[tokio::test(start_paused = true)]
async fn a_failed_or_invalid_refresh_keeps_the_last_good_values() {
    let source = Scripted::new(webhook(OLD, ""));
    let secret = managed(&source).await;

    *source.failing.lock().unwrap() = true;
    tokio::time::advance(Duration::from_secs(300)).await;
    assert!(secret.matches(OLD).await);
    assert!(secret.matches(OLD).await);
    assert_eq!(source.reads(), 2);

    *source.failing.lock().unwrap() = false;
    source.put(webhook("short", ""));
    tokio::time::advance(Duration::from_secs(300)).await;
    assert!(secret.matches(OLD).await);
    assert_eq!(source.reads(), 3);
    assert!(!secret.matches("short").await);
}

#[tokio::test]
async fn a_process_does_not_start_without_its_secret() {
    let source = Scripted::new(webhook(OLD, ""));
    *source.failing.lock().unwrap() = true;
    let dynamic: Arc<dyn SecretFetcher> = source.clone();
    let error = ManagedSecret::load(Credential::WebhookSecret, dynamic, RefreshPolicy::default())
        .await
        .err()
        .unwrap();
    assert!(error.to_string().contains("service unavailable"));

    let dynamic: Arc<dyn SecretFetcher> =
        Scripted::new(r#"{"apiToken":"0123456789abcdef-t"}"#.into());
    let error = ManagedSecret::load(Credential::WebhookSecret, dynamic, RefreshPolicy::default())
        .await
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("webhookSecret is not set"),
        "{error}"
    );
}

#[test]
fn debug_output_names_the_credential_only() {
    let fixed = Credentials::from(SecretSet::new([OLD]).unwrap());
    assert!(!format!("{fixed:?}").contains(OLD));
}
