//! The one outbound HTTP client (forwarding changes, the smoke check): hyper over rustls with the
//! aws-lc-rs provider and the system's root certificates, as the AWS SDK already builds them (no
//! second TLS stack). Plain `http` URLs work too (local targets, tests).

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<HttpConnector>,
    Full<hyper::body::Bytes>,
>;

/// A client whose connections are given up after `connect_timeout`. `https_needed`: fail when
/// the system has no root certificates (else an `http`-only client is made without them).
pub fn client(connect_timeout: Duration, https_needed: bool) -> Result<HttpClient, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = match HttpsConnectorBuilder::new().with_provider_and_native_roots(provider.clone()) {
        Ok(tls) => tls,
        Err(error) if https_needed => {
            return Err(format!(
                "no root certificates to verify an https URL: {error}"
            ))
        }
        // A plain http URL needs none.
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
    http.set_connect_timeout(Some(connect_timeout));
    let connector = tls.https_or_http().enable_http1().wrap_connector(http);
    Ok(hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector))
}

/// A transport error in words: its kind and root cause (hyper's errors hold no URL).
pub fn describe(error: &hyper_util::client::legacy::Error) -> String {
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
