//! Settings read from the environment, checked before anything touches the disk or the network.
//!
//! Pure functions of a variable's text: each refusal names the variable. Shared by the local
//! process (`src/local.rs`) and the Lambda functions (`src/lambda.rs`), so one variable means the
//! same thing everywhere. An empty variable counts as unset (the template passes `""` for an
//! unused `WEBHOOK_SECRET_PREVIOUS`); one holding only whitespace is refused, not ignored.

use std::ops::RangeInclusive;
use std::str::FromStr;

use crate::auth::{SecretError, SecretSet, MIN_SECRET_LEN};

pub const SECONDS_PER_DAY: i64 = 24 * 60 * 60;

/// `DEDUP_TTL_DAYS`: at least 2 to outlive Wati's ~24 hours of retries, at most ten years (past
/// that the seconds no longer fit the stores' timestamps, and nobody means it).
pub const DEDUP_TTL_DAYS: RangeInclusive<i64> = 2..=3650;
pub const DEFAULT_DEDUP_TTL_DAYS: i64 = 7;

/// `MAX_BODY_BYTES`: Wati's bodies are a few KiB; below 1 KiB some of them would be refused with
/// `413`. Above 256 KiB (the default) a body escaped into its queued JSON (up to twice its size)
/// could outgrow the SQS message limit of 1 MiB (`template.yaml`), and be accepted but never sent.
pub const MAX_BODY_BYTES: RangeInclusive<usize> = 1024..=256 * 1024;

/// Why a setting was refused; every variant names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{0} holds only whitespace: give a value or unset it")]
    Blank(&'static str),
    #[error("invalid {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("{name}: {source}")]
    Secret {
        name: &'static str,
        source: SecretError,
    },
}

/// A variable's text: `None` when unset or empty, refused when it is only whitespace.
pub fn text<'a>(name: &'static str, raw: Option<&'a str>) -> Result<Option<&'a str>, ConfigError> {
    match raw {
        None | Some("") => Ok(None),
        Some(value) if value.trim().is_empty() => Err(ConfigError::Blank(name)),
        Some(value) => Ok(Some(value)),
    }
}

/// A variable that must be set.
pub fn required(name: &'static str, raw: Option<&str>) -> Result<String, ConfigError> {
    text(name, raw)?
        .map(str::to_owned)
        .ok_or(ConfigError::Missing(name))
}

/// A number within `range`, `default` when unset.
pub fn number_in<T>(
    name: &'static str,
    raw: Option<&str>,
    default: T,
    range: RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + std::fmt::Display + Copy,
    T::Err: std::fmt::Display,
{
    let Some(value) = text(name, raw)? else {
        return Ok(default);
    };
    let number: T = value
        .trim()
        .parse()
        .map_err(|e: T::Err| ConfigError::Invalid {
            name,
            reason: format!(
                "{value:?} is not a number in {}..={}: {e}",
                range.start(),
                range.end()
            ),
        })?;
    if !range.contains(&number) {
        return Err(ConfigError::Invalid {
            name,
            reason: format!("{number} is outside {}..={}", range.start(), range.end()),
        });
    }
    Ok(number)
}

/// `BIND`: the IP address the local server listens on; `127.0.0.1` when unset (only this
/// machine: a reverse proxy or tunnel in front is the way in from outside).
pub fn bind_address(raw: Option<&str>) -> Result<std::net::IpAddr, ConfigError> {
    match text("BIND", raw)? {
        None => Ok(std::net::Ipv4Addr::LOCALHOST.into()),
        Some(value) => value.trim().parse().map_err(|_| ConfigError::Invalid {
            name: "BIND",
            reason: format!("{value:?} is not an IP address (e.g. 127.0.0.1, 0.0.0.0, ::1)"),
        }),
    }
}

/// `DEDUP_TTL_DAYS` (default 7).
pub fn dedup_ttl_days(raw: Option<&str>) -> Result<i64, ConfigError> {
    number_in(
        "DEDUP_TTL_DAYS",
        raw,
        DEFAULT_DEDUP_TTL_DAYS,
        DEDUP_TTL_DAYS,
    )
}

/// `WINDOW_CLOSING_LEAD_MINUTES` (default 60): how long before a customer-service window closes
/// `contact.window_closing` is announced; under a day, or it would precede the window.
/// How long quarantined bodies are kept: `QUARANTINE_RETENTION_DAYS`, 1–3650, default 30.
pub const QUARANTINE_RETENTION_DAYS: RangeInclusive<i64> = 1..=3650;
pub const DEFAULT_QUARANTINE_RETENTION_DAYS: i64 = 30;

pub fn quarantine_retention_days(raw: Option<&str>) -> Result<i64, ConfigError> {
    number_in(
        "QUARANTINE_RETENTION_DAYS",
        raw,
        DEFAULT_QUARANTINE_RETENTION_DAYS,
        QUARANTINE_RETENTION_DAYS,
    )
}

pub fn window_closing_lead_minutes(raw: Option<&str>) -> Result<i64, ConfigError> {
    number_in("WINDOW_CLOSING_LEAD_MINUTES", raw, 60, 1..=1_439)
}

/// `FORWARD_URL`: where change documents are POSTed (`None`: no forwarding). An `http` or `https`
/// URL with a host; the refusal never repeats the value (its query may hold a token).
pub fn forward_url(raw: Option<&str>) -> Result<Option<String>, ConfigError> {
    let Some(value) = text("FORWARD_URL", raw)? else {
        return Ok(None);
    };
    let invalid = |reason: &str| ConfigError::Invalid {
        name: "FORWARD_URL",
        reason: reason.to_owned(),
    };
    let url: hyper::Uri = value
        .trim()
        .parse()
        .map_err(|e| invalid(&format!("not a URL ({e})")))?;
    if !matches!(url.scheme_str(), Some("http" | "https")) {
        return Err(invalid("must be an http:// or https:// URL"));
    }
    if !url.host().is_some_and(|host| !host.is_empty()) {
        return Err(invalid("has no host"));
    }
    Ok(Some(value.trim().to_owned()))
}

/// `FORWARD_SECRET`: the Standard Webhooks secret that signs forwarded changes, `whsec_` and a
/// base64 key of at least 16 bytes (`None`: generated once and kept in `DATA_DIR`). Never repeated
/// in a refusal.
pub fn forward_secret(raw: Option<&str>) -> Result<Option<String>, ConfigError> {
    let Some(value) = text("FORWARD_SECRET", raw)? else {
        return Ok(None);
    };
    crate::forward::signing_key(value.trim()).map_err(|reason| ConfigError::Invalid {
        name: "FORWARD_SECRET",
        reason,
    })?;
    Ok(Some(value.trim().to_owned()))
}

/// The dedup window in seconds. Checked: a window that overflowed would make every `expires_at`
/// lie in the past and silently turn deduplication off.
pub fn dedup_ttl_seconds(days: i64) -> Result<i64, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        name: "DEDUP_TTL_DAYS",
        reason,
    };
    if !DEDUP_TTL_DAYS.contains(&days) {
        return Err(invalid(format!(
            "{days} is outside {}..={}",
            DEDUP_TTL_DAYS.start(),
            DEDUP_TTL_DAYS.end()
        )));
    }
    days.checked_mul(SECONDS_PER_DAY)
        .ok_or_else(|| invalid(format!("{days} days overflow a timestamp")))
}

/// `MAX_BODY_BYTES` (default `default`).
pub fn max_body_bytes(raw: Option<&str>, default: usize) -> Result<usize, ConfigError> {
    number_in("MAX_BODY_BYTES", raw, default, MAX_BODY_BYTES)
}

/// A secret given in `name`: `None` when unset; refused when blank or shorter than
/// [`MIN_SECRET_LEN`]. Taken verbatim (not trimmed): it is compared byte for byte.
pub fn secret(name: &'static str, raw: Option<&str>) -> Result<Option<String>, ConfigError> {
    let Some(value) = text(name, raw)? else {
        return Ok(None);
    };
    if value.len() < MIN_SECRET_LEN {
        return Err(ConfigError::Secret {
            name,
            source: SecretError::TooShort,
        });
    }
    Ok(Some(value.to_owned()))
}

/// The secret in `current` (required) and, during a rotation, the one in `previous`.
pub fn secret_set(
    current: &'static str,
    previous: &'static str,
    var: impl Fn(&str) -> Option<String>,
) -> Result<SecretSet, ConfigError> {
    let current_value =
        secret(current, var(current).as_deref())?.ok_or(ConfigError::Missing(current))?;
    let previous_value = secret(previous, var(previous).as_deref())?;
    SecretSet::new([Some(current_value), previous_value].into_iter().flatten()).map_err(|source| {
        ConfigError::Secret {
            name: current,
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_unset_and_whitespace_is_refused() {
        assert_eq!(text("X", None), Ok(None));
        assert_eq!(text("X", Some("")), Ok(None));
        assert_eq!(text("X", Some(" \t\n")), Err(ConfigError::Blank("X")));
        assert_eq!(text("X", Some(" v ")), Ok(Some(" v ")));
        assert_eq!(required("X", Some("")), Err(ConfigError::Missing("X")));
    }

    /// The value that once overflowed into a negative `expires_at` (dedup silently off), and the
    /// other edges, are refused with the variable's name; in-range values convert exactly.
    #[test]
    fn dedup_ttl_is_bounded_and_converted_without_overflow() {
        for refused in [
            "106751991167301",
            "1",
            "0",
            "-7",
            "3651",
            "7.5",
            "seven",
            " ",
        ] {
            let error = dedup_ttl_days(Some(refused)).unwrap_err();
            assert!(
                error.to_string().contains("DEDUP_TTL_DAYS"),
                "{refused}: {error}"
            );
        }
        assert_eq!(dedup_ttl_days(None), Ok(7));
        assert_eq!(dedup_ttl_days(Some(" 30 ")), Ok(30));
        assert_eq!(dedup_ttl_days(Some("3650")), Ok(3650));
        assert_eq!(dedup_ttl_seconds(2), Ok(172_800));
        assert_eq!(dedup_ttl_seconds(3650), Ok(3650 * 86_400));
        assert!(dedup_ttl_seconds(106_751_991_167_301).is_err());
        assert!(dedup_ttl_seconds(i64::MAX).is_err());
    }

    #[test]
    fn forwarding_settings_are_checked_without_repeating_them() {
        assert_eq!(forward_url(None), Ok(None));
        assert_eq!(forward_url(Some("")), Ok(None));
        assert_eq!(
            forward_url(Some("https://hooks.example.com/in?token=abc")),
            Ok(Some("https://hooks.example.com/in?token=abc".into()))
        );
        for refused in [
            "ftp://example.com/",
            "example.com/hook",
            "http://",
            "file:///tmp/x?token=abc",
            "  ",
        ] {
            let error = forward_url(Some(refused)).unwrap_err().to_string();
            assert!(error.contains("FORWARD_URL"), "{refused}: {error}");
            assert!(!error.contains("token=abc"), "{error}");
        }
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        assert_eq!(forward_secret(Some(secret)), Ok(Some(secret.into())));
        assert_eq!(forward_secret(None), Ok(None));
        for refused in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_!!!!",
            "whsec_c2hvcnQ=",
        ] {
            let error = forward_secret(Some(refused)).unwrap_err().to_string();
            assert!(error.contains("FORWARD_SECRET"), "{error}");
            assert!(!error.contains(refused), "{error}");
        }
    }

    #[test]
    fn max_body_bytes_is_bounded() {
        for refused in [
            "0",
            "1023",
            "-1",
            "6291457",
            "99999999999999999999999",
            "1e6",
        ] {
            let error = max_body_bytes(Some(refused), 4096).unwrap_err();
            assert!(error.to_string().contains("MAX_BODY_BYTES"), "{error}");
        }
        assert_eq!(max_body_bytes(None, 4096), Ok(4096));
        assert_eq!(max_body_bytes(Some("1024"), 4096), Ok(1024));
    }

    #[test]
    fn secrets_must_be_set_long_and_not_blank() {
        assert_eq!(secret("S", None), Ok(None));
        assert_eq!(secret("S", Some("")), Ok(None));
        assert_eq!(secret("S", Some("   ")), Err(ConfigError::Blank("S")));
        assert_eq!(
            secret("S", Some("short")),
            Err(ConfigError::Secret {
                name: "S",
                source: SecretError::TooShort
            })
        );
        let given = "0123456789abcdef";
        assert_eq!(secret("S", Some(given)), Ok(Some(given.to_owned())));
        let error = secret("API_TOKEN", Some("short")).unwrap_err().to_string();
        assert!(error.starts_with("API_TOKEN:"), "{error}");
    }

    #[test]
    fn a_rotation_accepts_both_secrets_and_names_the_bad_one() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let set = secret_set(
            "T",
            "T_PREVIOUS",
            env(&[("T", "new-secret-0123456789"), ("T_PREVIOUS", "")]),
        )
        .unwrap();
        assert!(set.matches("new-secret-0123456789"));
        let set = secret_set(
            "T",
            "T_PREVIOUS",
            env(&[
                ("T", "new-secret-0123456789"),
                ("T_PREVIOUS", "old-secret-0123456789"),
            ]),
        )
        .unwrap();
        assert!(set.matches("old-secret-0123456789"));
        assert_eq!(
            secret_set(
                "T",
                "T_PREVIOUS",
                env(&[("T_PREVIOUS", "old-secret-0123456789")])
            )
            .unwrap_err(),
            ConfigError::Missing("T")
        );
        assert_eq!(
            secret_set(
                "T",
                "T_PREVIOUS",
                env(&[("T", "new-secret-0123456789"), ("T_PREVIOUS", "  ")])
            )
            .unwrap_err(),
            ConfigError::Blank("T_PREVIOUS")
        );
    }
}
