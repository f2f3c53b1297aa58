//! Push forwarding (local): every change document in the outbox is POSTed to `FORWARD_URL`,
//! signed per the Standard Webhooks spec, retried with backoff, dead-lettered after a horizon.
//!
//! - **Request**: body = the document's JSON as the outbox holds it, `content-type:
//!   application/json`, `webhook-id` = the document's `id` (stable: a consumer deduplicates on
//!   it), `webhook-timestamp` = unix seconds of this attempt, `webhook-signature: v1,<base64
//!   HMAC-SHA256 of "{id}.{timestamp}.{body}">` keyed by the base64 part of the `whsec_` secret.
//! - **Outcomes**: a `2xx` is delivered. Any other status (redirects are not followed), a
//!   timeout or a failed connection is retried after an exponential backoff with full jitter
//!   (a random delay up to 5 s, doubling per attempt to at most 1 h: [`ForwardSchedule`]) until
//!   24 hours after the change's first attempt; then it is dead-lettered with its last error.
//!   `410 Gone` dead-letters the change with reason `410 Gone` and pauses all forwarding until the
//!   process restarts (logged at `ERROR`): the target said it does not want any more.
//! - **Independence**: the forwarder is its own task; ingestion never waits for it. Up to
//!   [`ForwardSchedule::concurrency`] changes are in flight at once, each on its own schedule, so
//!   one failing change does not hold back the others (order is not guaranteed anyway). While
//!   the local processor is behind (its last receive took a whole batch) a round of attempts
//!   starts at most every 2 s, so that the forwarder's writes and CPU do not slow accepting and
//!   applying webhooks; the backlog goes out once the processor has caught up. Outcomes
//!   are written in the background, one write for all the attempts that ended meanwhile, so
//!   sending does not wait for the disk ([`run`]).
//!
//! The files: `signing.rs` (the secret and the signature), `target.rs` (one attempt over HTTP),
//! `forwarder.rs` (the loop); the schedule and the outcome rule are here.
//! - **Progress** lives in the state database ([`crate::store::embedded`], `forwards.rs`): a
//!   restart resumes where it was, and a change in flight when the process died is sent again
//!   (at least once).
//! - **Logs** name the target by host (and port) only: the URL's path and query may hold a token.
//!   The secret is never logged.

mod forwarder;
mod signing;
mod target;

use std::time::Duration;

pub use forwarder::run;
pub use signing::{generate_secret, sign, signing_key, SECRET_PREFIX};
pub use target::{Attempt, ForwardTarget};

use crate::store::embedded::{DueForward, ForwardOutcome};

/// When and how often a change is tried. The defaults are the documented ones; tests shrink them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardSchedule {
    /// The longest delay after the first failure (full jitter: a random delay up to it).
    pub first_retry: Duration,
    /// The longest delay ever (the doubling stops there).
    pub max_retry: Duration,
    /// How long after a change's first attempt it is still retried; then it is dead-lettered.
    pub horizon: Duration,
    /// How long one attempt may take (connecting, sending, the answer's status).
    pub timeout: Duration,
    /// How many changes may be in flight at once.
    pub concurrency: usize,
    /// How often the outbox is looked at for new changes when there is nothing else to do.
    pub poll: Duration,
}

impl Default for ForwardSchedule {
    fn default() -> Self {
        ForwardSchedule {
            first_retry: Duration::from_secs(5),
            max_retry: Duration::from_secs(3_600),
            horizon: Duration::from_secs(24 * 3_600),
            timeout: Duration::from_secs(10),
            concurrency: 32,
            poll: Duration::from_millis(250),
        }
    }
}

impl ForwardSchedule {
    /// The longest delay after the `failures`-th failed attempt: `first_retry` doubled
    /// `failures - 1` times, at most `max_retry`.
    pub fn backoff_ceiling(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.first_retry
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max_retry)
            .min(self.max_retry)
    }

    /// The delay after the `failures`-th failure: uniformly random up to its ceiling (full jitter).
    pub fn backoff(&self, failures: u32) -> Duration {
        let ceiling = self.backoff_ceiling(failures).as_millis() as u64;
        let mut bytes = [0u8; 8];
        let random = match getrandom::fill(&mut bytes) {
            Ok(()) => u64::from_le_bytes(bytes),
            Err(_) => ceiling / 2,
        };
        Duration::from_millis(random % (ceiling + 1))
    }
}

/// What to record after an attempt at `started_ms` on `due`, given the schedule.
pub fn outcome(
    due: &DueForward,
    attempt: &Attempt,
    started_ms: i64,
    schedule: &ForwardSchedule,
) -> ForwardOutcome {
    match attempt {
        Attempt::Delivered => ForwardOutcome::Delivered,
        Attempt::Gone => ForwardOutcome::Dead {
            reason: "410 Gone".into(),
        },
        Attempt::Failed(error) => {
            let first = due.first_attempt_at.unwrap_or(started_ms);
            let horizon_end = first.saturating_add(schedule.horizon.as_millis() as i64);
            if started_ms >= horizon_end {
                return ForwardOutcome::Dead {
                    reason: format!("gave up after {} attempts: {error}", due.attempts + 1),
                };
            }
            let delay = schedule.backoff(due.attempts + 1).as_millis() as i64;
            ForwardOutcome::Retry {
                // The last attempt is made at the horizon.
                next_attempt_at: started_ms.saturating_add(delay).min(horizon_end),
                error: error.clone(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_full_jitter() {
        let schedule = ForwardSchedule::default();
        let ceilings: Vec<u64> = [1, 2, 3, 4, 10, 11, 12, 40, u32::MAX]
            .iter()
            .map(|n| schedule.backoff_ceiling(*n).as_secs())
            .collect();
        assert_eq!(ceilings, [5, 10, 20, 40, 2_560, 3_600, 3_600, 3_600, 3_600]);
        let delays: HashSet<Duration> = (0..50).map(|_| schedule.backoff(3)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(20)));
        assert!(delays.len() > 10, "jittered: {delays:?}");
    }

    #[test]
    fn failures_retry_until_the_horizon_then_dead_letter() {
        let schedule = ForwardSchedule::default();
        let due = |attempts, first_attempt_at| DueForward {
            change_id: "chg".into(),
            document: "{}".into(),
            attempts,
            first_attempt_at,
        };
        let failed = Attempt::Failed("HTTP 500".into());
        match outcome(&due(0, None), &failed, 1_000, &schedule) {
            ForwardOutcome::Retry {
                next_attempt_at, ..
            } => assert!((1_000..=6_000).contains(&next_attempt_at)),
            other => panic!("{other:?}"),
        }
        let day_ms = 86_400_000;
        match outcome(&due(30, Some(0)), &failed, day_ms - 10, &schedule) {
            ForwardOutcome::Retry {
                next_attempt_at, ..
            } => assert!(next_attempt_at <= day_ms, "the last attempt at the horizon"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            outcome(&due(31, Some(0)), &failed, day_ms, &schedule),
            ForwardOutcome::Dead {
                reason: "gave up after 32 attempts: HTTP 500".into()
            }
        );
        assert_eq!(
            outcome(&due(0, None), &Attempt::Gone, 0, &schedule),
            ForwardOutcome::Dead {
                reason: "410 Gone".into()
            }
        );
        assert_eq!(
            outcome(&due(3, Some(0)), &Attempt::Delivered, day_ms * 2, &schedule),
            ForwardOutcome::Delivered
        );
    }
}
