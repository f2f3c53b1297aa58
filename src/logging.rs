//! The log filter of every binary: the level an operator asks for (`AWS_LAMBDA_LOG_LEVEL`, which
//! the template's `LoggingConfig` sets, or `RUST_LOG`), with the libraries that would log a raw
//! request pinned at INFO whatever is asked. At DEBUG and TRACE the Lambda runtime logs the
//! invocation (the path with the webhook secret, the body with a customer's phone number) and the
//! AWS SDK and HTTP stacks log requests; our own lines never hold either (tests/contract/
//! log_hygiene.rs), so only theirs are capped.

use tracing_subscriber::EnvFilter;

/// Crates held at INFO: their DEBUG/TRACE lines can carry a request's path or body.
pub const PINNED_AT_INFO: [&str; 10] = [
    "lambda_runtime",
    "lambda_runtime_api_client",
    "lambda_http",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http",
    "hyper",
    "hyper_util",
    "h2",
    "axum",
];

/// The filter for `asked` (a level or `RUST_LOG`-style directives; `None`: INFO). Directives the
/// operator gave for a pinned crate (or a module in it) are dropped, so none can outrank the pin.
pub fn filter(asked: Option<&str>) -> EnvFilter {
    let asked = asked
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .unwrap_or("info");
    let pinned = |directive: &str| {
        let target = directive.split(['=', '[']).next().unwrap_or_default();
        PINNED_AT_INFO.iter().any(|krate| {
            target == *krate
                || target
                    .strip_prefix(krate)
                    .is_some_and(|rest| rest.starts_with("::"))
        })
    };
    let kept: Vec<&str> = asked
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !pinned(d))
        .collect();
    let caps: Vec<String> = PINNED_AT_INFO
        .iter()
        .map(|krate| format!("{krate}=info"))
        .collect();
    let directives = if kept.is_empty() {
        format!("info,{}", caps.join(","))
    } else {
        format!("{},{}", kept.join(","), caps.join(","))
    };
    EnvFilter::builder().parse_lossy(directives.to_lowercase())
}

/// What the Lambda functions log at: `AWS_LAMBDA_LOG_LEVEL` first, then `RUST_LOG`.
fn lambda_level() -> Option<String> {
    std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
}

/// Installs the Lambda functions' subscriber: stdout, JSON when `AWS_LAMBDA_LOG_FORMAT=JSON`
/// (the template's `LogFormat`), no timestamp (CloudWatch stamps each line).
pub fn init_lambda() {
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_target(false)
        .with_ansi(false)
        .without_time()
        .with_env_filter(filter(lambda_level().as_deref()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Installs the local binary's subscriber: stderr (stdout carries the commands' answers),
/// `RUST_LOG`; colours only on a terminal (a log file or journald gets plain `key=value`).
pub fn init_local() {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter(std::env::var("RUST_LOG").ok().as_deref()))
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What a subscriber with `filter(asked)` writes for a raw event logged by the Lambda runtime
    /// at TRACE and DEBUG, and for a DEBUG line of our own.
    fn logged(asked: Option<&str>) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter(asked))
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: "lambda_runtime::layers::api_response", "RAW-TRACE /webhook/SECRET");
            tracing::debug!(target: "lambda_runtime", "RAW-DEBUG /webhook/SECRET");
            tracing::debug!(target: "aws_smithy_runtime::client", "SDK-DEBUG body");
            tracing::info!(target: "lambda_runtime", "runtime-info");
            tracing::debug!(target: "wati_ingest::receiver", "ours-debug");
            tracing::info!(target: "wati_ingest::receiver", "ours-info");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn no_level_logs_a_raw_request() {
        for asked in [
            None,
            Some(""),
            Some("INFO"),
            Some("DEBUG"),
            Some("TRACE"),
            Some("trace,lambda_runtime=trace"),
            Some("lambda_runtime::layers=trace,debug"),
            Some("aws_smithy_runtime=trace,wati_ingest=debug"),
        ] {
            let text = logged(asked);
            assert!(
                !text.contains("SECRET") && !text.contains("SDK-DEBUG"),
                "{asked:?}: {text}"
            );
            assert!(
                text.contains("runtime-info") && text.contains("ours-info"),
                "{asked:?}: {text}"
            );
        }
    }

    #[test]
    fn our_own_lines_follow_the_level_asked() {
        assert!(logged(Some("DEBUG")).contains("ours-debug"));
        assert!(logged(Some("wati_ingest=debug")).contains("ours-debug"));
        assert!(!logged(Some("INFO")).contains("ours-debug"));
        assert!(!logged(None).contains("ours-debug"));
        assert!(!logged(Some("WARN")).contains("ours-info"));
    }
}
