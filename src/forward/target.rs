//! The forward target: one signed `POST` per attempt, and how the attempt ended.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::signing::{sign, signing_key};

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
