//! Times as the events carry them (unix seconds) and as the read API shows them (RFC 3339 UTC).

use serde::{Serialize, Serializer};
use time::format_description::well_known::Rfc3339 as Rfc3339Format;
use time::OffsetDateTime;

/// Unix seconds that serialise as an RFC 3339 UTC string, or `null` when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rfc3339(pub Option<i64>);

impl Rfc3339 {
    pub fn render(&self) -> Option<String> {
        let seconds = self.0?;
        OffsetDateTime::from_unix_timestamp(seconds)
            .ok()?
            .format(&Rfc3339Format)
            .ok()
    }
}

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.render() {
            Some(text) => serializer.serialize_str(&text),
            None => serializer.serialize_none(),
        }
    }
}

/// Seconds since the epoch by the wall clock; only used for receipt times and "now" in views.
pub fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_utc_with_z() {
        assert_eq!(
            Rfc3339(Some(0)).render().as_deref(),
            Some("1970-01-01T00:00:00Z")
        );
        assert_eq!(
            Rfc3339(Some(1_764_238_453)).render().as_deref(),
            Some("2025-11-27T10:14:13Z")
        );
        assert_eq!(Rfc3339(None).render(), None);
    }
}
