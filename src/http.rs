//! The one HTTP router, served by the local server and (through `lambda_http`) by Lambda.
//!
//! - `POST /webhook/{secret}`: authenticate first (401, no I/O), then size (413), then receive.
//! - `GET /v1/messages/{id}`, `GET /v1/contacts/{waId}[?channel=<business number>]`,
//!   `GET /v1/contacts/{waId}/messages[?before=<cursor>&limit=<n>]`: the read
//!   API, behind a bearer token; `GET /v1/changes?after=<cursor>&limit=<n>&wait=<seconds>`: the
//!   change feed where the store keeps one (locally).
//! - `GET /healthz`: 200 when the store can take writes now ([`StateStore::ping`]: locally a real
//!   write in the intake and the state database, ledger and queue tables included), else 503.
//!
//! The webhook secret lives in the path, so nothing here logs a URI.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use serde_json::json;

use crate::channel::parse_channel_query;
use crate::contact_page::{decode_cursor, encode_cursor, DEFAULT_LIMIT, MAX_LIMIT};
use crate::event::log_key;
use crate::message::MessageView;
use crate::message::MAX_ID_BYTES;
use crate::metrics::{MetricLine, MetricsSink, Unit};
use crate::ports::{ChangeFeed, IntakeView, StateStore};
use crate::receiver::{Path as ReceivePath, Receipt, Receiver};
use crate::secrets::Credentials;
use crate::time::now_unix;

/// Default largest webhook body; Wati's payloads are a few KiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;

pub struct WebhookService {
    pub receiver: Receiver,
    pub secrets: Credentials,
    pub max_body_bytes: usize,
    pub metrics: MetricsSink,
}

pub struct ReadService {
    pub state: Arc<dyn StateStore>,
    pub tokens: Credentials,
    /// The change feed (`GET /v1/changes`): the embedded store's outbox; `None` on AWS, where
    /// changes go out through EventBridge.
    pub changes: Option<Arc<dyn ChangeFeed>>,
    /// The console's intake view (quarantines, today's counts): the embedded store; `None` on
    /// AWS, where they take scans of the ledger ([`crate::console`]).
    pub intake: Option<Arc<dyn IntakeView>>,
}

/// `POST /webhook/{secret}`; a bare `/webhook` is a missing secret.
pub fn webhook_routes(service: Arc<WebhookService>) -> Router {
    Router::new()
        .route("/webhook/{secret}", post(receive_webhook))
        .route("/webhook", post(missing_secret))
        .route("/webhook/", post(missing_secret))
        .with_state(service)
}

/// `GET /v1/messages/{id}` and `GET /v1/contacts/{waId}`. Ids may hold `/` (base64 wamids).
pub fn read_routes(service: Arc<ReadService>) -> Router {
    Router::new()
        .route("/v1/messages/{*id}", get(read_message))
        .route("/v1/contacts/{*contact}", get(read_contact))
        .route("/v1/changes", get(read_changes))
        .layer(axum::middleware::map_response(no_store))
        .with_state(service)
}

/// Read answers hold customer data (and a `401` is no answer to keep): no cache, a proxy's or a
/// browser's, may store them.
async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub fn health_routes(state: Arc<dyn StateStore>) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .with_state(state)
}

async fn receive_webhook(
    State(service): State<Arc<WebhookService>>,
    secret: Result<Path<String>, axum::extract::rejection::PathRejection>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let authentic = match secret {
        Ok(Path(secret)) => service.secrets.matches(&secret).await,
        Err(_) => false,
    };
    if !authentic {
        tracing::info!(outcome = "rejected", status = 401, "webhook");
        service
            .metrics
            .emit(MetricLine::new("receiver").count("Rejected"));
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let body = match read_limited(request.into_body(), service.max_body_bytes).await {
        Ok(body) => body,
        Err(status) => {
            tracing::info!(outcome = "rejected", status = status.as_u16(), "webhook");
            service
                .metrics
                .emit(MetricLine::new("receiver").count("Rejected"));
            return error(status, "body too large or unreadable");
        }
    };
    let (receipt, path) = service.receiver.receive(&body).await;
    let latency_us = started.elapsed().as_micros() as u64;
    let (status, body) = match &receipt {
        Receipt::Accepted { key } => (StatusCode::OK, json!({"status": "accepted", "key": key})),
        Receipt::Duplicate { key } => (StatusCode::OK, json!({"status": "duplicate", "key": key})),
        Receipt::Quarantined { key } => {
            (StatusCode::OK, json!({"status": "quarantined", "key": key}))
        }
        Receipt::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "storage unavailable, retry later"}),
        ),
    };
    service
        .metrics
        .emit(receipt_metrics(&receipt, path, latency_us));
    tracing::info!(
        outcome = body["status"].as_str().unwrap_or("unavailable"),
        key = %log_key(body["key"].as_str().unwrap_or("")),
        path = ?path,
        status = status.as_u16(),
        latency_us,
        "webhook"
    );
    (status, Json(body)).into_response()
}

/// The receiver's EMF line for one webhook.
fn receipt_metrics(receipt: &Receipt, path: ReceivePath, latency_us: u64) -> MetricLine {
    let outcome = match receipt {
        Receipt::Accepted { .. } => "Accepted",
        Receipt::Duplicate { .. } => "Duplicate",
        Receipt::Quarantined { .. } => "Quarantined",
        Receipt::Unavailable => "Unavailable",
    };
    let mut line = MetricLine::new("receiver").count(outcome).metric(
        "AcceptLatency",
        Unit::Milliseconds,
        latency_us as f64 / 1000.0,
    );
    match path {
        ReceivePath::MarkedForRedrive => line = line.count("EnqueueFailed"),
        ReceivePath::LedgerBypassed => line = line.count("LedgerBypass"),
        _ => {}
    }
    line
}

async fn missing_secret() -> Response {
    tracing::info!(outcome = "rejected", status = 401, "webhook");
    error(StatusCode::UNAUTHORIZED, "unauthorized")
}

/// Reads at most `limit` bytes; a declared or actual excess is `413`.
async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, StatusCode> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(StatusCode::PAYLOAD_TOO_LARGE)
        }
        Err(_) => Err(StatusCode::BAD_REQUEST),
    }
}

async fn read_message(
    State(service): State<Arc<ReadService>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !bearer_matches(&service.tokens, &headers).await {
        return bearer_required();
    }
    if id.len() > MAX_ID_BYTES {
        // Longer than any id the processor stores (and than DynamoDB's key limit).
        return error(StatusCode::NOT_FOUND, "message not found");
    }
    match service.state.message(&id).await {
        Ok(Some(record)) => Json(MessageView::from(&record)).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "message not found"),
        Err(failure) => {
            tracing::error!(error = %failure, "read message");
            error(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
        }
    }
}

/// `?channel=<business number>`: one number's view instead of the default number's and the list;
/// `?before=<cursor>&limit=<n>`: a page of `/v1/contacts/{waId}/messages`.
#[derive(Debug, Deserialize)]
struct ContactQuery {
    channel: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

async fn read_contact(
    State(service): State<Arc<ReadService>>,
    headers: HeaderMap,
    Path(contact): Path<String>,
    query: Result<Query<ContactQuery>, QueryRejection>,
) -> Response {
    if !bearer_matches(&service.tokens, &headers).await {
        return bearer_required();
    }
    let Ok(Query(query)) = query else {
        return error(StatusCode::BAD_REQUEST, "malformed query string");
    };
    // Contact names hold no `/` (digits, or a BSUID such as `US.1349…`).
    if let Some(contact) = contact.strip_suffix("/messages") {
        return read_contact_messages(&service, contact, query).await;
    }
    let channel = match query.channel {
        None => None,
        Some(raw) => match parse_channel_query(&raw) {
            Ok(number) => Some(number),
            Err(malformed) => return error(StatusCode::BAD_REQUEST, &malformed.to_string()),
        },
    };
    if contact.len() > MAX_ID_BYTES {
        return error(StatusCode::NOT_FOUND, "contact not found");
    }
    match service.state.contact(&contact, now_unix()).await {
        Ok(Some(view)) => match channel {
            None => Json(view).into_response(),
            Some(number) => match view.channel(&number) {
                Some(channel) => Json(channel).into_response(),
                None => error(
                    StatusCode::NOT_FOUND,
                    "the contact has no messages with this business number",
                ),
            },
        },
        Ok(None) => error(StatusCode::NOT_FOUND, "contact not found"),
        Err(failure) => {
            tracing::error!(error = %failure, "read contact");
            error(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
        }
    }
}

/// `GET /v1/contacts/{waId}/messages?before=<cursor>&limit=<n>`: the contact's messages, newest
/// sent first (`{"messages": [...], "next": <cursor or null>}`); 400 for a cursor this API did
/// not give or a limit outside 1 to 100.
async fn read_contact_messages(
    service: &ReadService,
    contact: &str,
    query: ContactQuery,
) -> Response {
    let limit = match query.limit.as_deref().map(str::parse::<usize>) {
        None => DEFAULT_LIMIT,
        Some(Ok(limit)) if (1..=MAX_LIMIT).contains(&limit) => limit,
        Some(_) => return error(StatusCode::BAD_REQUEST, "limit: 1 to 100"),
    };
    let before = match query.before.as_deref().map(decode_cursor) {
        None => None,
        Some(Some(position)) => Some(position),
        Some(None) => return error(StatusCode::BAD_REQUEST, "before: not a cursor of this list"),
    };
    if query.channel.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "channel: not a parameter of this list",
        );
    }
    if contact.len() > MAX_ID_BYTES {
        return Json(json!({"messages": [], "next": null})).into_response();
    }
    match service
        .state
        .contact_messages_page(contact, before.as_ref(), limit)
        .await
    {
        Ok(page) => {
            let messages: Vec<MessageView> = page.messages.iter().map(MessageView::from).collect();
            Json(json!({
                "messages": messages,
                "next": page.next.as_ref().map(encode_cursor),
            }))
            .into_response()
        }
        Err(failure) => {
            tracing::error!(error = %failure, "read contact messages");
            error(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
        }
    }
}

/// Most documents one feed page returns, and the default.
const MAX_FEED_LIMIT: usize = 1_000;
const DEFAULT_FEED_LIMIT: usize = 100;
/// Longest long poll: under API Gateway's and most proxies' timeouts.
const MAX_FEED_WAIT_SECONDS: u64 = 30;
/// How often a long poll looks for new documents.
const FEED_POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Debug, Deserialize)]
struct FeedQuery {
    after: Option<String>,
    limit: Option<usize>,
    wait: Option<u64>,
}

/// A feed position as clients see it: opaque, so that its encoding may change.
fn feed_cursor(seq: i64) -> String {
    format!("c1.{seq:x}")
}

fn parse_feed_cursor(cursor: &str) -> Option<i64> {
    i64::from_str_radix(cursor.strip_prefix("c1.")?, 16)
        .ok()
        .filter(|seq| *seq >= 0)
}

async fn read_changes(
    State(service): State<Arc<ReadService>>,
    headers: HeaderMap,
    query: Result<Query<FeedQuery>, QueryRejection>,
) -> Response {
    if !bearer_matches(&service.tokens, &headers).await {
        return bearer_required();
    }
    let Some(feed) = service.changes.as_ref() else {
        return error(
            StatusCode::NOT_FOUND,
            "no change feed here: on AWS, changes go out through EventBridge",
        );
    };
    let Ok(Query(query)) = query else {
        return error(StatusCode::BAD_REQUEST, "malformed query string");
    };
    let after = match query.after.as_deref() {
        None | Some("") => 0,
        // From now on: what is recorded after this answer.
        Some("end") => match feed.last_seq().await {
            Ok(seq) => seq,
            Err(failure) => {
                tracing::error!(error = %failure, "read the feed's end");
                return error(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable");
            }
        },
        Some(cursor) => match parse_feed_cursor(cursor) {
            Some(seq) => seq,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "after: not a cursor this feed gave",
                )
            }
        },
    };
    let limit = query.limit.unwrap_or(DEFAULT_FEED_LIMIT);
    if !(1..=MAX_FEED_LIMIT).contains(&limit) {
        return error(StatusCode::BAD_REQUEST, "limit: 1 to 1000");
    }
    let deadline = Instant::now()
        + std::time::Duration::from_secs(query.wait.unwrap_or(0).min(MAX_FEED_WAIT_SECONDS));
    loop {
        let entries = match feed.changes_after(after, limit).await {
            Ok(entries) => entries,
            Err(failure) => {
                tracing::error!(error = %failure, "read changes");
                return error(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable");
            }
        };
        if !entries.is_empty() || Instant::now() >= deadline {
            let next = entries.last().map_or(after, |entry| entry.seq);
            let documents: Vec<serde_json::Value> = entries
                .iter()
                .filter_map(|entry| serde_json::from_str(&entry.document).ok())
                .collect();
            return Json(json!({ "changes": documents, "next": feed_cursor(next) }))
                .into_response();
        }
        tokio::time::sleep(FEED_POLL_EVERY).await;
    }
}

async fn health(State(state): State<Arc<dyn StateStore>>) -> Response {
    match state.ping().await {
        Ok(()) => Json(json!({"status": "ok"})).into_response(),
        Err(failure) => {
            tracing::error!(error = %failure, "health check");
            error(StatusCode::SERVICE_UNAVAILABLE, "storage unavailable")
        }
    }
}

async fn bearer_matches(tokens: &Credentials, headers: &HeaderMap) -> bool {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match token {
        Some(token) => tokens.matches(token.trim()).await,
        None => false,
    }
}

fn bearer_required() -> Response {
    let mut denied = error(StatusCode::UNAUTHORIZED, "unauthorized");
    denied
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    denied
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every receive outcome yields a valid EMF line naming it, plus the fallback it took.
    #[test]
    fn receipt_metrics_are_valid_emf() {
        let key = || "k".to_owned();
        let cases = [
            (
                Receipt::Accepted { key: key() },
                ReceivePath::Enqueued,
                "Accepted",
                None,
            ),
            (
                Receipt::Accepted { key: key() },
                ReceivePath::MarkedForRedrive,
                "Accepted",
                Some("EnqueueFailed"),
            ),
            (
                Receipt::Accepted { key: key() },
                ReceivePath::LedgerBypassed,
                "Accepted",
                Some("LedgerBypass"),
            ),
            (
                Receipt::Duplicate { key: key() },
                ReceivePath::DuplicateResent,
                "Duplicate",
                None,
            ),
            (
                Receipt::Quarantined { key: key() },
                ReceivePath::Quarantined,
                "Quarantined",
                None,
            ),
            (
                Receipt::Unavailable,
                ReceivePath::Failed,
                "Unavailable",
                None,
            ),
        ];
        for (receipt, path, outcome, extra) in cases {
            let line = receipt_metrics(&receipt, path, 1_500).render(1_764_238_453_000);
            crate::metrics::validate(&line).unwrap();
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(value[outcome], 1.0, "{line}");
            assert_eq!(value["AcceptLatency"], 1.5);
            assert_eq!(value["Function"], "receiver");
            if let Some(extra) = extra {
                assert_eq!(value[extra], 1.0, "{line}");
            }
        }
    }
}
