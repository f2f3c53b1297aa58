//! The webhook secret and the API token read from Secrets Manager (moto), rotated with one
//! `PutSecretValue` while webhooks flow: nothing authentic is refused, everything accepted is
//! queued, the old value stops working after the rotation ends, and the functions read only
//! their one secret, at the policy's rate, however many requests arrive.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use serde_json::{json, Value};
use wati_ingest::lambda::{managed_credentials, read_api_router, receiver_router, ReceiverConfig};
use wati_ingest::secrets::{Credential, RefreshPolicy};

use crate::lambda::{event, invoke};
use crate::support::Backend;

const OLD: &str = "0123456789abcdef0123456789abcdef-old";
const NEW: &str = "0123456789abcdef0123456789abcdef-new";
const TOKEN_OLD: &str = "token-0123456789abcdef-old";
const TOKEN_NEW: &str = "token-0123456789abcdef-new";

/// Short periods for the test; the functions use [`RefreshPolicy::default`] (5 min, 30 s).
const POLICY: RefreshPolicy = RefreshPolicy {
    refresh_every: Duration::from_secs(3),
    recheck_unknown_after: Duration::from_secs(1),
};

/// Every Secrets Manager call on the wire: its operation and the secret it names.
#[derive(Debug, Clone, Default)]
struct SecretCalls(Arc<Mutex<Vec<(String, String)>>>);

impl Intercept for SecretCalls {
    fn name(&self) -> &'static str {
        "secret-calls"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let request = context.request();
        let operation = crate::support::operation_of(request);
        let body: Value = request
            .body()
            .bytes()
            .and_then(|bytes| serde_json::from_slice(bytes).ok())
            .unwrap_or_default();
        let secret = body["SecretId"].as_str().unwrap_or_default().to_owned();
        self.0.lock().unwrap().push((operation, secret));
        Ok(())
    }
}

impl SecretCalls {
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

fn value(webhook: &str, webhook_previous: &str, token: &str, token_previous: &str) -> String {
    json!({
        "webhookSecret": webhook,
        "webhookSecretPrevious": webhook_previous,
        "apiToken": token,
        "apiTokenPrevious": token_previous,
    })
    .to_string()
}

fn status_event(n: usize) -> Vec<u8> {
    format!(r#"{{"eventType":"sentMessageDELIVERED","id":"secret-rotation-{n:06}","timestamp":"1764238518"}}"#)
        .into_bytes()
}

/// A read of one message with `token`, as API Gateway sends it.
fn read_event(token: &str) -> String {
    crate::log_hygiene::read_event("/v1/messages/secret-rotation-000000", token)
}

#[tokio::test]
async fn a_rotation_while_webhooks_flow_loses_nothing_and_reads_one_secret() {
    let backend = Backend::aws().await;
    let Backend::Aws {
        ledger,
        queue,
        state,
        ..
    } = &backend
    else {
        unreachable!()
    };
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let admin = aws_sdk_secretsmanager::Client::new(&config);
    let name = format!("wati-ingest-test-{}", std::process::id());
    let arn = admin
        .create_secret()
        .name(&name)
        .secret_string(value(OLD, "", TOKEN_OLD, ""))
        .send()
        .await
        .expect("create the secret")
        .arn
        .expect("its ARN");
    let calls = SecretCalls::default();
    let client = || {
        aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::config::Builder::from(&config)
                .interceptor(calls.clone())
                .build(),
        )
    };
    let started = Instant::now();
    let secrets = managed_credentials(client(), &arn, Credential::WebhookSecret, POLICY)
        .await
        .expect("the receiver starts");
    let tokens = managed_credentials(client(), &arn, Credential::ApiToken, POLICY)
        .await
        .expect("the api starts");
    let receiver_config = ReceiverConfig {
        ledger_table: String::new(),
        queue_url: queue.url().to_owned(),
        secret_arn: arn.clone(),
        dedup_ttl_days: 7,
        max_body_bytes: 256 * 1024,
        quarantine_retention_days: 30,
    };
    let receiver = receiver_router(&receiver_config, secrets, ledger.clone(), queue.clone());
    let api = read_api_router(tokens, state.clone());

    // Wati: one webhook every 20 ms to the URL it was last given, each answer recorded.
    let wati_url = Arc::new(Mutex::new(OLD));
    let stop = Arc::new(AtomicBool::new(false));
    let wati = {
        let (receiver, wati_url, stop) = (receiver.clone(), wati_url.clone(), stop.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let secret = *wati_url.lock().unwrap();
                let (status, _) = invoke(
                    &receiver,
                    event(secret, &status_event(n), n % 2 == 1, false),
                )
                .await;
                answers.push((secret, status));
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answers
        })
    };
    let put = |secret_string: String| {
        let (admin, arn) = (admin.clone(), arn.clone());
        async move {
            admin
                .put_secret_value()
                .secret_id(arn)
                .secret_string(secret_string)
                .send()
                .await
                .expect("put-secret-value");
        }
    };

    // The rotation, as the runbook has it: put the new values (the old as previous), wait longer
    // than the re-check period, then give Wati the new URL and clients the new token.
    tokio::time::sleep(Duration::from_millis(500)).await;
    put(value(NEW, OLD, TOKEN_NEW, TOKEN_OLD)).await;
    tokio::time::sleep(POLICY.recheck_unknown_after + Duration::from_millis(200)).await;
    *wati_url.lock().unwrap() = NEW;
    assert_ne!(
        invoke(&api, read_event(TOKEN_NEW)).await.0,
        401,
        "the new token"
    );
    assert_ne!(
        invoke(&api, read_event(TOKEN_OLD)).await.0,
        401,
        "the old token, still"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The rotation ends: the old values are gone from the secret, and refused once read again.
    put(value(NEW, "", TOKEN_NEW, "")).await;
    tokio::time::sleep(POLICY.refresh_every + Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let answers = wati.await.unwrap();
    let refused: Vec<_> = answers
        .iter()
        .filter(|(_, status)| *status != 200)
        .collect();
    assert!(refused.is_empty(), "Wati was refused: {refused:?}");
    assert!(answers.iter().any(|(secret, _)| *secret == OLD));
    assert!(answers.iter().any(|(secret, _)| *secret == NEW));
    assert_eq!(
        invoke(&receiver, event(OLD, &status_event(999_999), false, false))
            .await
            .0,
        401,
        "the old secret after the rotation ended"
    );
    assert_eq!(invoke(&api, read_event(TOKEN_OLD)).await.0, 401);
    assert_ne!(invoke(&api, read_event(TOKEN_NEW)).await.0, 401);

    // Every accepted webhook is on the queue, once.
    let mut queued: Vec<String> = backend
        .drain_queue()
        .await
        .into_iter()
        .map(|queued| queued.key)
        .collect();
    queued.sort();
    queued.dedup();
    assert_eq!(queued.len(), answers.len(), "every 200 is queued");

    // A flood of wrong secrets costs one read per re-check period, not one per request.
    let before_flood = calls.count();
    let flood_started = Instant::now();
    let mut flood = tokio::task::JoinSet::new();
    for n in 0..300 {
        let receiver = receiver.clone();
        flood.spawn(async move {
            let wrong = format!("0123456789abcdef-wrong-{n}");
            invoke(&receiver, event(&wrong, &status_event(n), false, false))
                .await
                .0
        });
    }
    while let Some(status) = flood.join_next().await {
        assert_eq!(status.unwrap(), 401);
    }
    let flood_reads = calls.count() - before_flood;
    let flood_periods = flood_started.elapsed().as_secs_f64() / 1.0;
    assert!(
        flood_reads as f64 <= flood_periods.ceil() + 1.0,
        "{flood_reads} reads for 300 wrong secrets in {flood_periods:.1} s"
    );

    // Only GetSecretValue, only on this secret; at most one read per function per re-check
    // period (a bound from the policy, however many requests came).
    let calls = calls.0.lock().unwrap().clone();
    for (operation, secret) in &calls {
        assert_eq!(operation, "GetSecretValue");
        assert_eq!(secret, &arn);
    }
    let periods = started.elapsed().as_secs_f64() / POLICY.recheck_unknown_after.as_secs_f64();
    assert!(
        calls.len() as f64 <= 2.0 * (periods.ceil() + 1.0),
        "{} reads in {:.1} s",
        calls.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "secrets: {} webhooks during the rotation, all 200; {} GetSecretValue calls in {:.1} s \
         (two functions), {flood_reads} during a flood of 300 wrong secrets",
        answers.len(),
        calls.len(),
        started.elapsed().as_secs_f64()
    );
}

/// A function whose secret cannot be read, or holds no valid value, does not start (Lambda
/// reports the init error and retries), rather than refusing every webhook.
#[tokio::test]
async fn a_function_without_its_secret_does_not_start() {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let error = managed_credentials(
        client.clone(),
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:no-such-secret-AbCdEf",
        Credential::WebhookSecret,
        POLICY,
    )
    .await
    .expect_err("no secret, no start");
    assert!(
        error
            .to_string()
            .contains("GetSecretValue: ResourceNotFoundException"),
        "{error}"
    );

    let name = format!("wati-ingest-test-short-{}", std::process::id());
    let arn = client
        .create_secret()
        .name(&name)
        .secret_string(value("short", "", TOKEN_OLD, ""))
        .send()
        .await
        .unwrap()
        .arn
        .unwrap();
    let error = managed_credentials(client, &arn, Credential::WebhookSecret, POLICY)
        .await
        .expect_err("a short secret, no start");
    assert!(error.to_string().contains("webhookSecret"), "{error}");
    assert!(!error.to_string().contains("short\""), "{error}");
}
