//! Times as the events carry them (unix seconds) and as the read API shows them (RFC 3339 UTC).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

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

/// Where the receiver reads "now": the wall clock, or a clock a test moves by hand (to play
/// Wati's retries hours apart in a few seconds).
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<AtomicI64>),
}

impl Clock {
    pub fn manual(start: i64) -> Clock {
        Clock::Manual(Arc::new(AtomicI64::new(start)))
    }

    pub fn now(&self) -> i64 {
        match self {
            Clock::System => now_unix(),
            Clock::Manual(at) => at.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock; the wall clock cannot be set.
    pub fn set(&self, to: i64) {
        if let Clock::Manual(at) = self {
            at.store(to, Ordering::SeqCst);
        }
    }
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

    #[test]
    fn a_manual_clock_moves_only_when_set() {
        let clock = Clock::manual(100);
        let shared = clock.clone();
        assert_eq!(clock.now(), 100);
        shared.set(700);
        assert_eq!(clock.now(), 700);
        Clock::System.set(0);
        assert!(Clock::System.now() > 1_700_000_000);
    }
}
