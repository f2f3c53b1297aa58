//! The forward target: one signed `POST` per attempt, and how the attempt ended.

use std::time::Duration;

use http_body_util::Full;

use super::signing::{sign, signing_key};
use crate::http_client::{describe, HttpClient};

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
        let client = crate::http_client::client(timeout, url.scheme_str() == Some("https"))
            .map_err(|e| format!("FORWARD_URL: {e}"))?;
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

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// `410 Gone`.
    Gone,
    Failed(String),
}
