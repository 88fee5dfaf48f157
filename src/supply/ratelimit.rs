//! Rate limits (SPEC §2.5): how long a 429 or rate-limited 403 asks us to
//! wait, from `Retry-After` (seconds or an HTTP date) or GitHub's
//! `x-ratelimit-reset` (Unix time). A wait of at most [`MAX_WAIT`] is waited
//! out; a longer one fails at once, naming when the limit resets.

use std::time::Duration;

use http::{HeaderMap, StatusCode};

/// The longest wait openwrk sits out instead of failing.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Whether a response says "rate limited": 429, or 403 with no requests left.
pub fn is_rate_limited(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN
            && headers
                .get("x-ratelimit-remaining")
                .is_some_and(|v| v.as_bytes() == b"0"))
}

/// When the limit resets (Unix seconds), if the server says.
pub fn reset_at(headers: &HeaderMap, now: i64) -> Option<i64> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(v) = header("retry-after") {
        let v = v.trim();
        if let Ok(secs) = v.parse::<i64>() {
            return Some(now + secs.max(0));
        }
        if let Ok(at) = chrono::DateTime::parse_from_rfc2822(v) {
            return Some(at.timestamp());
        }
    }
    header("x-ratelimit-reset").and_then(|v| v.trim().parse().ok())
}

/// How long to wait before retrying, when it is short enough to sit out.
pub fn short_wait(reset: Option<i64>, now: i64) -> Option<Duration> {
    let secs = u64::try_from(reset? - now).unwrap_or(0);
    let wait = Duration::from_secs(secs);
    (wait <= MAX_WAIT).then_some(wait)
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_dates_and_github_resets() {
        let mut h = HeaderMap::new();
        assert_eq!(reset_at(&h, 100), None);
        h.insert("x-ratelimit-reset", "700".parse().unwrap());
        assert_eq!(reset_at(&h, 100), Some(700));
        assert_eq!(short_wait(Some(700), 100), None);
        h.insert("retry-after", "1".parse().unwrap());
        assert_eq!(reset_at(&h, 100), Some(101));
        assert_eq!(short_wait(Some(101), 100), Some(Duration::from_secs(1)));
        h.insert(
            "retry-after",
            "Thu, 01 Jan 1970 00:02:00 GMT".parse().unwrap(),
        );
        assert_eq!(reset_at(&h, 100), Some(120));
        assert_eq!(short_wait(Some(50), 100), Some(Duration::ZERO));
        assert!(is_rate_limited(
            StatusCode::TOO_MANY_REQUESTS,
            &HeaderMap::new()
        ));
        assert!(!is_rate_limited(StatusCode::FORBIDDEN, &HeaderMap::new()));
    }
}
