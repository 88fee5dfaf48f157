//! Corporate and air-gapped networks (README "Mirrors and air-gapped
//! installs", "Proxies and certificates"): rate limits, proxies, HTTPS with a
//! private CA, and mirrors that are the only host asked. Every host is on
//! loopback.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod common;

use common::{fails, ok, Mirror};

#[test]
fn a_429_with_a_short_retry_after_is_waited_out() {
    let m = Mirror::new();
    let faults = m.host.faults();
    faults.too_many_requests.store(1, Ordering::SeqCst);
    *faults.retry_after.lock().unwrap() = Some("1".into());
    let started = Instant::now();
    let o = m.run(&["sidecars", "fetch"]);
    ok(&o);
    assert!(started.elapsed() >= Duration::from_millis(900));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("rate limited; waiting 1 s"), "{err}");
    // The same during a download (the manifest is fetched by now).
    let m = Mirror::new();
    ok(&m.run(&["sidecars", "list"]));
    let faults = m.host.faults();
    faults.too_many_requests.store(2, Ordering::SeqCst);
    *faults.retry_after.lock().unwrap() = Some("1".into());
    ok(&m.run(&["sidecars", "fetch"]));
}

#[test]
fn a_rate_limit_that_resets_later_fails_at_once_naming_the_time() {
    let m = Mirror::new();
    let faults = m.host.faults();
    faults.too_many_requests.store(100, Ordering::SeqCst);
    faults.ratelimit_reset_in.store(600, Ordering::SeqCst);
    let started = Instant::now();
    let o = m.run(&["sidecars", "fetch"]);
    fails(&o, 4, &["rate limit", "resets at", "(in 10 minutes)"]);
    assert!(started.elapsed() < Duration::from_secs(5), "it waited");
    assert_eq!(m.host.requests(), 1, "{:?}", m.host.request_log());
    // A Retry-After far away fails at once too.
    let m = Mirror::new();
    let faults = m.host.faults();
    faults.too_many_requests.store(100, Ordering::SeqCst);
    *faults.retry_after.lock().unwrap() = Some("3600".into());
    fails(&m.run(&["sidecars", "fetch"]), 4, &["(in 60 minutes)"]);
    assert_eq!(m.host.requests(), 1);
}

#[test]
fn a_bare_429_is_retried_with_backoff() {
    let m = Mirror::new();
    m.host.faults().too_many_requests.store(2, Ordering::SeqCst);
    ok(&m.run(&["sidecars", "fetch"]));
    assert!(m.host.requests() >= 6, "{:?}", m.host.request_log());
}
