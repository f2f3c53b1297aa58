//! `/console`: a small server-rendered page for the people who answer customers: search a
//! contact by phone number, BSUID or any message id, see its customer-service window as a
//! 24-hour bar and its messages newest first with status ticks and each failure explained.
//!
//! Served by the same router as the read API, over the same [`ReadService`] (the local server
//! and, through the read API's routes, the `api` Lambda). No framework and no external asset:
//! one stylesheet and one small script of its own, under a Content-Security-Policy that allows
//! nothing else (no inline script or style).
//!
//! Sign-in: the read API's token, posted once; the browser keeps a session cookie
//! (`HttpOnly`, `SameSite=Strict`, `Path=/console`, `Secure` when the request came over HTTPS)
//! holding an expiry and an HMAC of it keyed by the token's digest ([`SESSION_SECONDS`]), never
//! the token; a rotation that drops the token ends its sessions. The token is never in a URL,
//! the page or a log. Every view is a `GET` without side effects; sign-in and sign-out are
//! `POST`s, which `SameSite=Strict` keeps from other sites.

mod page;

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use crate::http::ReadService;
use crate::message::MessageView;
use crate::secrets::Credentials;
use crate::time::now_unix;

pub use page::escape;

/// How long a sign-in lasts.
pub const SESSION_SECONDS: i64 = 12 * 60 * 60;
/// Messages shown on a contact's page.
const MESSAGES_SHOWN: usize = 50;
const COOKIE: &str = "wati_console";

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn console_routes(service: Arc<ReadService>) -> Router {
    Router::new()
        .route("/console", get(console_page))
        .route("/console/sign-in", post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/console.css", get(stylesheet))
        .route("/console/console.js", get(script))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(service)
}

/// Every answer: no caching (customer data), no framing, no sniffing, no referrer, and the
/// policy that lets the page load nothing but its own stylesheet and script.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("console/console.css"),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("console/console.js"),
    )
        .into_response()
}

/// What a session's tag signs: the expiry, so that a cookie cannot be extended.
fn session_message(expires_at: i64) -> Vec<u8> {
    format!("wati-ingest console session until {expires_at}").into_bytes()
}

/// The session cookie's value in `headers`, if one is there.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Whether the request carries a session that has not expired and that one of the accepted
/// tokens signed.
fn signed_in(tokens: &Credentials, headers: &HeaderMap, now: i64) -> bool {
    let Some((expires_at, tag)) = session_cookie(headers).and_then(|value| value.split_once('.'))
    else {
        return false;
    };
    let (Ok(expires_at), Ok(tag)) = (expires_at.parse::<i64>(), hex::decode(tag)) else {
        return false;
    };
    expires_at > now
        && expires_at <= now.saturating_add(SESSION_SECONDS)
        && tokens.verify_session_tag(&session_message(expires_at), &tag)
}

/// Whether the request reached us over HTTPS (API Gateway and proxies say so in
/// `X-Forwarded-Proto`): the cookie is then `Secure`.
fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

fn cookie(value: &str, max_age: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path=/console; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

fn see_console(set_cookie: String) -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/console".to_owned()),
            (header::SET_COOKIE, set_cookie),
        ],
    )
        .into_response()
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

async fn sign_in(
    State(service): State<Arc<ReadService>>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    let expires_at = now_unix().saturating_add(SESSION_SECONDS);
    let tag = service
        .tokens
        .session_tag(form.token.trim(), &session_message(expires_at))
        .await;
    match tag {
        Some(tag) => {
            tracing::info!(outcome = "signed in", "console");
            let value = format!("{expires_at}.{}", hex::encode(tag));
            see_console(cookie(&value, SESSION_SECONDS, over_https(&headers)))
        }
        None => {
            tracing::info!(outcome = "refused", "console");
            html(StatusCode::UNAUTHORIZED, page::sign_in(true))
        }
    }
}

async fn sign_out(headers: HeaderMap) -> Response {
    see_console(cookie("", 0, over_https(&headers)))
}

fn nav(service: &ReadService) -> page::Nav {
    page::Nav::SignedIn {
        intake: service.intake.is_some(),
    }
}

/// `GET /console/intake`, where the server keeps the intake (the local server; on AWS the
/// quarantines and counts take scans of the ledger the read API's function may not make:
/// `wati-ingest quarantine --aws` and the dashboard show them).
pub fn console_intake_routes(service: Arc<ReadService>) -> Router {
    Router::new()
        .route("/console/intake", get(intake_page))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(service)
}

/// Quarantined bodies listed on the intake view.
const QUARANTINED_SHOWN: usize = 50;

async fn intake_page(State(service): State<Arc<ReadService>>, headers: HeaderMap) -> Response {
    let now = now_unix();
    if !signed_in(&service.tokens, &headers, now) {
        return html(StatusCode::OK, page::sign_in(false));
    }
    let Some(intake) = &service.intake else {
        return html(
            StatusCode::NOT_FOUND,
            page::not_found(nav(&service), "intake"),
        );
    };
    let today = now - now.rem_euclid(86_400);
    let read = async {
        let counts = intake.counts_since(today).await?;
        let quarantined = intake.recent_quarantined(QUARANTINED_SHOWN).await?;
        Ok::<_, crate::ports::StoreError>((counts, quarantined))
    };
    match read.await {
        Ok((counts, quarantined)) => html(
            StatusCode::OK,
            page::intake(nav(&service), &counts, &quarantined),
        ),
        Err(failure) => {
            tracing::error!(error = %failure, "console intake read");
            html(
                StatusCode::SERVICE_UNAVAILABLE,
                page::layout(
                    "Unavailable",
                    nav(&service),
                    "",
                    "<p role=\"alert\">The intake store did not answer; try again.</p>",
                ),
            )
        }
    }
}

#[derive(Deserialize)]
struct Search {
    q: Option<String>,
}

async fn console_page(
    State(service): State<Arc<ReadService>>,
    headers: HeaderMap,
    Query(search): Query<Search>,
) -> Response {
    let now = now_unix();
    if !signed_in(&service.tokens, &headers, now) {
        return html(StatusCode::OK, page::sign_in(false));
    }
    let query = search.q.unwrap_or_default();
    let query = query.trim();
    if query.is_empty() {
        return html(StatusCode::OK, page::start(nav(&service)));
    }
    match find(&service, query, now).await {
        Ok(Some(body)) => html(StatusCode::OK, body),
        Ok(None) => html(StatusCode::NOT_FOUND, page::not_found(nav(&service), query)),
        Err(failure) => {
            tracing::error!(error = %failure, "console read");
            html(
                StatusCode::SERVICE_UNAVAILABLE,
                page::layout(
                    "Unavailable",
                    nav(&service),
                    query,
                    "<p role=\"alert\">The state store did not answer; try again.</p>",
                ),
            )
        }
    }
}

/// The page for `query`: a contact by name, else the contact of the message it names (or the
/// message alone, if no event of it named a contact yet).
async fn find(
    service: &ReadService,
    query: &str,
    now: i64,
) -> Result<Option<String>, crate::ports::StoreError> {
    let state = &service.state;
    // One contact read per page: the view found by name is kept, not read again.
    let (name, view) = match state.contact(query, now).await? {
        Some(view) => (query.to_owned(), view),
        None => {
            let Some(message) = state.message(query).await? else {
                return Ok(None);
            };
            let Some(name) = message.contact().map(str::to_owned) else {
                let view = MessageView::from(&message);
                let main = page::messages(std::slice::from_ref(&view));
                return Ok(Some(page::layout(query, nav(service), query, &main)));
            };
            let Some(view) = state.contact(&name, now).await? else {
                return Ok(None);
            };
            (name, view)
        }
    };
    let listed = state
        .contact_messages_page(&name, None, MESSAGES_SHOWN)
        .await?;
    let messages: Vec<MessageView> = listed.messages.iter().map(MessageView::from).collect();
    Ok(Some(page::contact(
        nav(service),
        query,
        &view,
        &messages,
        now,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::SecretSet;

    const TOKEN: &str = "console-test-token-0123456789";

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={value}")).unwrap(),
        );
        headers
    }

    #[tokio::test]
    async fn a_session_is_signed_expires_and_cannot_be_stretched() {
        let tokens: Credentials = SecretSet::new([TOKEN]).unwrap().into();
        let now = 1_000_000;
        let expires_at = now + SESSION_SECONDS;
        let tag = tokens
            .session_tag(TOKEN, &session_message(expires_at))
            .await
            .unwrap();
        let good = format!("{expires_at}.{}", hex::encode(tag));
        assert!(signed_in(&tokens, &with_cookie(&good), now));
        assert!(
            !signed_in(&tokens, &with_cookie(&good), expires_at),
            "expired"
        );
        let stretched = format!("{}.{}", expires_at + 1, hex::encode(tag));
        assert!(!signed_in(&tokens, &with_cookie(&stretched), now));
        assert!(!signed_in(&tokens, &with_cookie("garbage"), now));
        assert!(!signed_in(&tokens, &HeaderMap::new(), now));
        // The cookie holds no trace of the token.
        assert!(!good.contains(TOKEN) && !good.contains(&hex::encode(TOKEN)));
        // A session further out than a sign-in gives is refused, even if signed.
        let far = now + 10 * SESSION_SECONDS;
        let far_tag = tokens
            .session_tag(TOKEN, &session_message(far))
            .await
            .unwrap();
        let far_cookie = format!("{far}.{}", hex::encode(far_tag));
        assert!(!signed_in(&tokens, &with_cookie(&far_cookie), now));
    }

    #[test]
    fn the_cookie_is_locked_down() {
        let plain = cookie("v", 60, false);
        assert_eq!(
            plain,
            "wati_console=v; Path=/console; Max-Age=60; HttpOnly; SameSite=Strict"
        );
        assert!(cookie("v", 60, true).ends_with("; Secure"));
    }
}
