//! When to call the API again, and how long to wait first.
//!
//! Retried: HTTP 429 (quota, rate limits), every 5xx, and failures that got
//! no HTTP answer at all (refused connection, reset, timeout). Not retried:
//! every other 4xx, because asking again cannot change the answer.
//! The wait grows exponentially with "equal jitter" (half fixed, half random,
//! so that many clients that failed together do not retry together), unless
//! the server said how long to wait in `Retry-After`, which wins.

use std::time::Duration;

use super::timestamp;

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// The nominal wait before the second attempt.
    pub initial_backoff: Duration,
    /// The nominal wait never grows past this.
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is cut to it.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(32),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

/// Whether an HTTP status is worth another attempt.
pub fn is_retryable_status(status: u16) -> bool {
    status == 429 || (500..600).contains(&status)
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based): the server's
    /// `Retry-After` if it sent one, else `b/2 + random(0..=b/2)` with
    /// `b = min(initial * 2^(attempt-1), max)`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_retry_after);
        }
        let nominal = self.nominal(attempt);
        let half = nominal / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// The wait without jitter: `initial * 2^(attempt-1)`, capped.
    pub fn nominal(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// Reads `Retry-After`: a number of seconds, or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = timestamp::parse_http_date(value)? as f64;
    Some(Duration::from_secs_f64((at - timestamp::now_unix()).max(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jitters_within_half() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            max_retry_after: Duration::from_secs(5),
        };
        assert_eq!(policy.nominal(1), Duration::from_millis(100));
        assert_eq!(policy.nominal(3), Duration::from_millis(400));
        assert_eq!(policy.nominal(9), Duration::from_millis(1000));
        for attempt in 1..8 {
            let d = policy.delay(attempt, None);
            assert!(d >= policy.nominal(attempt) / 2 && d <= policy.nominal(attempt), "{attempt}: {d:?}");
        }
        assert_eq!(policy.delay(1, Some(Duration::from_secs(2))), Duration::from_secs(2));
        assert_eq!(policy.delay(1, Some(Duration::from_secs(60))), Duration::from_secs(5));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
        assert!(is_retryable_status(429) && is_retryable_status(503) && !is_retryable_status(404) && !is_retryable_status(401));
    }
}
