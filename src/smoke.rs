//! `wati-ingest smoke`: after a deploy (or `make run`), one command that proves the pipeline end to
//! end from outside, the way Wati and a support tool use it: it posts a uniquely identified sample
//! of each kind of callback to the webhook URL, waits for their state through the read API (and
//! for the change, where there is a change feed), prints each hop's latency, and says what is
//! wrong when something is.
//!
//! The samples name a contact of their own (`99` and ten random digits) and ids starting with
//! `smoke-`: they are real state in the deployment, easy to tell apart, and never a customer's.

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use crate::http_client::{describe, HttpClient};

/// Where to post and read, and how long to wait for the state.
#[derive(Clone)]
pub struct SmokeConfig {
    /// The webhook URL with the secret, as pasted into Wati.
    pub webhook_url: String,
    /// The read API's base URL (with or without a trailing `/v1/`).
    pub api_url: String,
    pub token: String,
    /// How long to wait for the state and the change once the webhooks are answered.
    pub wait: Duration,
}

impl std::fmt::Debug for SmokeConfig {
    /// The webhook URL's host only (its path is the secret), never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmokeConfig")
            .field("webhook", &shown_host(&self.webhook_url))
            .field("api_url", &self.api_url)
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

/// One sample run's identity: what it posts and what it then reads.
#[derive(Debug, Clone)]
pub struct Samples {
    pub contact: String,
    pub inbound_id: String,
    pub outbound_id: String,
    pub failed_id: String,
    /// `(eventType, body)` in the order Wati would send them.
    pub callbacks: Vec<(&'static str, String)>,
}

/// The samples of run `run` (digits), dated from `now` (unix seconds) on.
pub fn samples(run: &str, now: i64) -> Samples {
    let contact = format!("99{run}");
    let inbound_id = format!("smoke-{run}-in");
    let outbound_id = format!("smoke-{run}-out");
    let failed_id = format!("smoke-{run}-failed");
    let outbound_wamid = format!("wamid.SMOKE{run}OUT");
    let at = |offset: i64| (now + offset).to_string();
    let status = |event_type: &str, status: &str, offset: i64| {
        json!({
            "eventType": event_type, "id": outbound_id, "whatsappMessageId": outbound_wamid,
            "statusString": status, "owner": true, "timestamp": at(offset)
        })
    };
    let callbacks = vec![
        (
            "message",
            json!({
                "eventType": "message", "id": inbound_id,
                "whatsappMessageId": format!("wamid.SMOKE{run}IN"), "waId": contact,
                "senderName": "wati-ingest smoke", "text": "wati-ingest smoke test",
                "type": "text", "owner": false, "timestamp": at(0)
            }),
        ),
        (
            "sessionMessageSent",
            json!({
                "eventType": "sessionMessageSent", "id": outbound_id,
                "whatsappMessageId": outbound_wamid, "waId": contact,
                "text": "wati-ingest smoke reply", "type": "text", "owner": true,
                "statusString": "SENT", "timestamp": at(1)
            }),
        ),
        (
            "sentMessageDELIVERED",
            status("sentMessageDELIVERED", "Delivered", 2),
        ),
        ("sentMessageREAD", status("sentMessageREAD", "Read", 3)),
        (
            "templateMessageFailed",
            json!({
                "eventType": "templateMessageFailed", "id": failed_id,
                "localMessageId": format!("smoke-{run}-local"), "waId": contact,
                "templateName": "smoke_test", "type": "template", "owner": true,
                "statusString": "Failed", "failedCode": "131026",
                "failedDetail": "wati-ingest smoke test: not sent", "timestamp": at(4)
            }),
        ),
    ];
    Samples {
        contact,
        inbound_id,
        outbound_id,
        failed_id,
        callbacks: callbacks
            .into_iter()
            .map(|(kind, body)| (kind, body.to_string()))
            .collect(),
    }
}

/// A fresh run id: ten random digits.
pub fn run_id() -> Result<String, String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    Ok(format!(
        "{:010}",
        u64::from_le_bytes(bytes) % 10_000_000_000
    ))
}

/// One hop's result: what was checked, and how long it took or what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub what: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed(Duration),
    Failed(String),
    /// Not checked here, and why.
    Skipped(String),
}

/// Everything a smoke run found.
#[derive(Debug, Clone, Default)]
pub struct SmokeReport {
    pub hops: Vec<Hop>,
}

impl SmokeReport {
    pub fn passed(&self) -> bool {
        !self.hops.is_empty()
            && self
                .hops
                .iter()
                .all(|hop| !matches!(hop.outcome, Outcome::Failed(_)))
    }

    /// One line per hop: `ok`, `FAIL` or `skip`, what, and the latency or the reason.
    pub fn lines(&self) -> Vec<String> {
        self.hops
            .iter()
            .map(|hop| match &hop.outcome {
                Outcome::Passed(took) => format!("ok    {:<44} {} ms", hop.what, took.as_millis()),
                Outcome::Failed(why) => format!("FAIL  {:<44} {why}", hop.what),
                Outcome::Skipped(why) => format!("skip  {:<44} {why}", hop.what),
            })
            .collect()
    }

    fn passed_hop(&mut self, what: impl Into<String>, took: Duration) {
        self.push(what, Outcome::Passed(took));
    }

    fn failed_hop(&mut self, what: impl Into<String>, why: impl Into<String>) {
        self.push(what, Outcome::Failed(why.into()));
    }

    fn push(&mut self, what: impl Into<String>, outcome: Outcome) {
        self.hops.push(Hop {
            what: what.into(),
            outcome,
        });
    }
}

/// Why a webhook post was not answered `200`, in the operator's terms.
pub fn webhook_diagnosis(status: u16) -> String {
    match status {
        401 => "401: the secret in the webhook URL is not the webhook secret (locally \
                WEBHOOK_SECRET; on AWS webhookSecret or webhookSecretPrevious in the SecretArn \
                secret, read again within 30 s of a put-secret-value)"
            .into(),
        404 => "404: no such route. Behind API Gateway the route is the secret itself, so a wrong \
                secret is a 404; check the URL's secret and host (the WebhookUrl output)"
            .into(),
        413 => "413: the sample is larger than MAX_BODY_BYTES".into(),
        429 => "429: throttled by API Gateway before the receiver (WebhookThrottleRateLimit); \
                Wati counts these as failures"
            .into(),
        500..=599 => format!(
            "{status}: the receiver could not store the event (ledger and queue both failing, \
             or the function failed): see the receiver's logs and the ReceiverUnavailable alarm"
        ),
        other => format!("{other}: not what Wati expects (200)"),
    }
}

/// Why a read API call was refused, in the operator's terms.
fn read_diagnosis(status: u16) -> String {
    match status {
        401 => {
            "401: the read API refused the token: pass API_TOKEN (locally DATA_DIR/api_token; on \
             AWS apiToken in the SecretArn secret)"
                .into()
        }
        404 => "404: no read API at this URL (the ReadApiUrl output)".into(),
        other => format!("{other} from the read API"),
    }
}

/// An HTTP answer: status and body.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

struct Http {
    client: HttpClient,
    token: String,
}

/// Longest a single request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the state is read while waiting for it.
const POLL_EVERY: Duration = Duration::from_millis(250);

impl Http {
    async fn send(
        &self,
        method: hyper::Method,
        url: &str,
        body: Option<String>,
    ) -> Result<Answer, String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
        let mut request = hyper::Request::builder().method(method).uri(uri).header(
            "user-agent",
            concat!("wati-ingest-smoke/", env!("CARGO_PKG_VERSION")),
        );
        if body.is_some() {
            request = request.header("content-type", "application/json");
        } else {
            request = request.header("authorization", format!("Bearer {}", self.token));
        }
        let request = request
            .body(Full::new(hyper::body::Bytes::from(
                body.unwrap_or_default(),
            )))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()))?
            .map_err(|e| describe(&e))?;
        let status = response.status().as_u16();
        let body = tokio::time::timeout(REQUEST_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| "the answer's body did not arrive".to_owned())?
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes()
            .to_vec();
        Ok(Answer { status, body })
    }

    async fn get(&self, url: &str) -> Result<Answer, String> {
        self.send(hyper::Method::GET, url, None).await
    }
}

/// The read API's base, whichever form was given (`…/`, `…/v1/`, `…/v1`).
fn api_base(api_url: &str) -> String {
    let trimmed = api_url.trim_end_matches('/');
    trimmed.strip_suffix("/v1").unwrap_or(trimmed).to_owned()
}

/// The webhook URL as printed: scheme and host only (the path is the secret).
pub fn shown_host(url: &str) -> String {
    url.parse::<hyper::Uri>()
        .ok()
        .and_then(|uri| Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?)))
        .unwrap_or_else(|| "<unparsable URL>".into())
}

/// Runs the smoke check; never fails itself: everything wrong is a failed hop.
pub async fn smoke(config: &SmokeConfig, samples: &Samples) -> SmokeReport {
    let mut report = SmokeReport::default();
    if config.webhook_url.contains("<secret>") {
        report.failed_hop(
            "webhook URL",
            "still holds <secret>: replace it with your WebhookSecret",
        );
        return report;
    }
    let https = config.webhook_url.starts_with("https:") || config.api_url.starts_with("https:");
    let client = match crate::http_client::client(REQUEST_TIMEOUT, https) {
        Ok(client) => client,
        Err(error) => {
            report.failed_hop("HTTP client", error);
            return report;
        }
    };
    let http = Http {
        client,
        token: config.token.clone(),
    };
    let api = api_base(&config.api_url);

    // The change feed's end before anything is posted: only this run's changes come after it.
    let feed_start = match http
        .get(&format!("{api}/v1/changes?after=end&limit=1"))
        .await
    {
        Ok(answer) if answer.status == 200 => answer.json()["next"].as_str().map(str::to_owned),
        Ok(answer) if answer.status == 404 => None,
        Ok(answer) => {
            report.failed_hop("read API", read_diagnosis(answer.status));
            return post_only(&http, config, samples, report).await;
        }
        Err(error) => {
            report.failed_hop("read API", format!("{error} ({api})"));
            return post_only(&http, config, samples, report).await;
        }
    };

    let (mut report, posted) = post_all(&http, config, samples, report).await;
    let Some(last_answered) = posted else {
        return report;
    };
    wait_for_state(&http, &api, config, samples, last_answered, &mut report).await;
    match feed_start {
        Some(cursor) => {
            wait_for_change(
                &http,
                &api,
                &cursor,
                config,
                samples,
                last_answered,
                &mut report,
            )
            .await
        }
        None => report.push(
            "change announced",
            Outcome::Skipped(
                "no change feed on this API (on AWS changes go out through EventBridge: see \
                 the ChangeArchive or your rule's target)"
                    .into(),
            ),
        ),
    }
    report
}

/// Posts the samples when the read API cannot be used, so the webhook hop is still diagnosed.
async fn post_only(
    http: &Http,
    config: &SmokeConfig,
    samples: &Samples,
    report: SmokeReport,
) -> SmokeReport {
    post_all(http, config, samples, report).await.0
}

/// Posts every sample; returns when the last one was answered `200`, if all were.
async fn post_all(
    http: &Http,
    config: &SmokeConfig,
    samples: &Samples,
    mut report: SmokeReport,
) -> (SmokeReport, Option<Instant>) {
    let mut all_accepted = true;
    for (kind, body) in &samples.callbacks {
        let what = format!("webhook {kind} -> 200");
        let started = Instant::now();
        match http
            .send(hyper::Method::POST, &config.webhook_url, Some(body.clone()))
            .await
        {
            Ok(answer) if answer.status == 200 => report.passed_hop(what, started.elapsed()),
            Ok(answer) => {
                all_accepted = false;
                report.failed_hop(what, webhook_diagnosis(answer.status));
            }
            Err(error) => {
                all_accepted = false;
                report.failed_hop(
                    what,
                    format!("{error} ({})", shown_host(&config.webhook_url)),
                );
            }
        }
    }
    (report, all_accepted.then(Instant::now))
}

/// Reads until `check` passes on `path`'s answer or the wait is over; the last reason otherwise.
async fn read_until(
    http: &Http,
    url: &str,
    deadline: Instant,
    check: impl Fn(&Value) -> Result<(), String>,
) -> Result<(), String> {
    loop {
        let why = match http.get(url).await {
            Ok(answer) if answer.status == 200 => match check(&answer.json()) {
                Ok(()) => return Ok(()),
                Err(why) => why,
            },
            Ok(answer) if answer.status == 404 => "not there yet".into(),
            Ok(answer) => return Err(read_diagnosis(answer.status)),
            Err(error) => error,
        };
        if Instant::now() >= deadline {
            return Err(why);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn status_is(expected: &'static str) -> impl Fn(&Value) -> Result<(), String> {
    move |message| match message["status"].as_str() {
        Some(status) if status == expected => Ok(()),
        other => Err(format!("status {other:?}, expected {expected:?}")),
    }
}

async fn wait_for_state(
    http: &Http,
    api: &str,
    config: &SmokeConfig,
    samples: &Samples,
    last_answered: Instant,
    report: &mut SmokeReport,
) {
    let deadline = last_answered + config.wait;
    let never_applied = |why: String| {
        format!(
            "{why} after {} s: accepted but not applied. The processor is failing or behind: \
             its logs, `wati-ingest dead-letters --aws`, `wati-ingest quarantine --aws`, the \
             queue's age (OldestMessageAge alarm)",
            config.wait.as_secs()
        )
    };
    let checks: [(String, String, &'static str); 3] = [
        (
            "outbound message applied (read)".into(),
            samples.outbound_id.clone(),
            "read",
        ),
        (
            "inbound message applied".into(),
            samples.inbound_id.clone(),
            "received",
        ),
        (
            "failed template applied (failed)".into(),
            samples.failed_id.clone(),
            "failed",
        ),
    ];
    for (what, id, status) in checks {
        let url = format!("{api}/v1/messages/{id}");
        match read_until(http, &url, deadline, status_is(status)).await {
            Ok(()) => report.passed_hop(what, last_answered.elapsed()),
            Err(why) => report.failed_hop(what, never_applied(why)),
        }
    }
    let url = format!("{api}/v1/contacts/{}", samples.contact);
    let window_open = |contact: &Value| {
        // The default number's view is the contact's top level; other numbers are `channels`.
        let open = contact["window_open"] == Value::Bool(true)
            || contact["channels"].as_array().is_some_and(|channels| {
                channels
                    .iter()
                    .any(|c| c["window_open"] == Value::Bool(true))
            });
        if open {
            Ok(())
        } else {
            Err(format!("the window is not open: {contact}"))
        }
    };
    match read_until(http, &url, deadline, window_open).await {
        Ok(()) => report.passed_hop("contact's window open", last_answered.elapsed()),
        Err(why) => report.failed_hop("contact's window open", never_applied(why)),
    }
}

async fn wait_for_change(
    http: &Http,
    api: &str,
    start: &str,
    config: &SmokeConfig,
    samples: &Samples,
    last_answered: Instant,
    report: &mut SmokeReport,
) {
    let what = "change announced (message.updated read)";
    let deadline = last_answered + config.wait;
    let mut cursor = start.to_owned();
    loop {
        let url = format!("{api}/v1/changes?after={cursor}&limit=1000&wait=1");
        match http.get(&url).await {
            Ok(answer) if answer.status == 200 => {
                let page = answer.json();
                let found = page["changes"].as_array().is_some_and(|changes| {
                    changes.iter().any(|change| {
                        change["type"] == "message.updated"
                            && change["fact"] == "read"
                            && change["message"]["id"] == samples.outbound_id.as_str()
                    })
                });
                if found {
                    report.passed_hop(what, last_answered.elapsed());
                    return;
                }
                if let Some(next) = page["next"].as_str() {
                    cursor = next.to_owned();
                }
            }
            Ok(answer) => {
                report.failed_hop(what, read_diagnosis(answer.status));
                return;
            }
            Err(error) => {
                report.failed_hop(what, error);
                return;
            }
        }
        if Instant::now() >= deadline {
            report.failed_hop(
                what,
                format!("not in the feed after {} s", config.wait.as_secs()),
            );
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, WatiEvent};

    /// Every sample is a callback the parser takes as the kind it claims, about the run's ids.
    #[test]
    fn the_samples_are_what_they_claim() {
        let samples = samples("0123456789", 1_764_238_453);
        assert_eq!(samples.contact, "990123456789");
        let kinds: Vec<&str> = samples.callbacks.iter().map(|(kind, _)| *kind).collect();
        assert_eq!(
            kinds,
            [
                "message",
                "sessionMessageSent",
                "sentMessageDELIVERED",
                "sentMessageREAD",
                "templateMessageFailed"
            ]
        );
        for (kind, body) in &samples.callbacks {
            let event = WatiEvent::parse(body.as_bytes()).unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(event.kind, EventKind::parse(kind), "{kind}");
            assert!(
                event
                    .id
                    .as_deref()
                    .is_some_and(|id| id.starts_with("smoke-0123456789-"))
                    && event.message_identity().is_some(),
                "{kind}: {body}"
            );
        }
    }

    #[test]
    fn run_ids_are_ten_digits() {
        let id = run_id().unwrap();
        assert_eq!(id.len(), 10);
        assert!(id.bytes().all(|b| b.is_ascii_digit()));
    }

    #[test]
    fn the_api_base_is_found_in_any_form_and_no_secret_is_shown() {
        for given in [
            "https://a.example",
            "https://a.example/",
            "https://a.example/v1/",
            "https://a.example/v1",
        ] {
            assert_eq!(api_base(given), "https://a.example");
        }
        assert_eq!(
            shown_host("https://id.execute-api.eu-west-1.amazonaws.com/webhook/0123abcd"),
            "https://id.execute-api.eu-west-1.amazonaws.com"
        );
        assert!(webhook_diagnosis(401).contains("WEBHOOK_SECRET"));
        assert!(webhook_diagnosis(404).contains("route is the secret"));
        assert!(webhook_diagnosis(503).contains("ReceiverUnavailable"));
    }
}
