//! When to call the API again, and how long to wait first: our settings,
//! handed to the official client as a `google-cloud-gax` retry policy and
//! exponential backoff.
//!
//! Retried: HTTP 429 (rate limits), 500, 502, 503 and 504, and failures that
//! got no HTTP answer at all (refused connection, reset, timeout), for calls
//! that are safe to repeat (reads, deletes, and our creates, which name the
//! resource so a repeat answers 409). Not retried: every other 4xx, because
//! asking again cannot change the answer. gax's backoff sees only the attempt count, not the answer, so a server's
//! `Retry-After` is not honoured; Google's APIs do not send it for these calls.

use std::time::Duration;

use google_cloud_gax::backoff_policy::BackoffPolicyArg;
use google_cloud_gax::error::Error;
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::retry_policy::{RetryPolicy as GaxRetryPolicy, RetryPolicyArg, RetryPolicyExt};
use google_cloud_gax::retry_result::RetryResult;
use google_cloud_gax::retry_state::RetryState;

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// The wait before the second attempt.
    pub initial_backoff: Duration,
    /// The wait never grows past this.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 6, initial_backoff: Duration::from_secs(1), max_backoff: Duration::from_secs(32) }
    }
}

/// Whether an HTTP status is worth another attempt.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// The decision itself, as gax asks it after each failed attempt.
#[derive(Clone, Copy, Debug)]
struct TransientFailures;

impl GaxRetryPolicy for TransientFailures {
    fn on_error(&self, state: &RetryState, error: Error) -> RetryResult {
        // Never reached the server: always safe.
        if error.is_transient_and_before_rpc() {
            return RetryResult::Continue(error);
        }
        if !state.idempotent {
            return RetryResult::Permanent(error);
        }
        let transient = error.is_io() || error.is_timeout() || error.is_connect() || error.http_status_code().is_some_and(is_retryable_status);
        if transient { RetryResult::Continue(error) } else { RetryResult::Permanent(error) }
    }
}

impl RetryPolicy {
    /// The policy and backoff for the official client.
    pub fn policies(&self) -> (RetryPolicyArg, BackoffPolicyArg) {
        let retry = RetryPolicyArg::from(TransientFailures.with_attempt_limit(self.max_attempts.max(1)));
        let initial = self.initial_backoff.max(Duration::from_millis(1));
        let backoff = ExponentialBackoffBuilder::new().with_initial_delay(initial).with_maximum_delay(self.max_backoff.max(initial)).with_scaling(2.0).clamp();
        (retry, BackoffPolicyArg::from(backoff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_are_retried_only_when_safe() {
        let http = |code: u16| Error::http(code, http::HeaderMap::new(), bytes::Bytes::new());
        let idempotent = RetryState::new(true);
        let once_only = RetryState::new(false);
        for code in [429, 500, 502, 503, 504] {
            assert!(matches!(TransientFailures.on_error(&idempotent, http(code)), RetryResult::Continue(_)), "{code}");
            assert!(matches!(TransientFailures.on_error(&once_only, http(code)), RetryResult::Permanent(_)), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 412] {
            assert!(matches!(TransientFailures.on_error(&idempotent, http(code)), RetryResult::Permanent(_)), "{code}");
        }
    }
}
