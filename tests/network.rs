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

// ---------------------------------------------------------------- HTTPS

use openwrk_test_support::proxy::ForwardProxy;
use openwrk_test_support::ReleaseHost;

#[test]
fn an_https_mirror_with_a_private_ca_needs_its_certificate() {
    let m = Mirror::serving(0, ReleaseHost::mirror_tls);
    assert!(m.host.url().starts_with("https://127.0.0.1:"));
    let o = m.run(&["sidecars", "fetch"]);
    fails(
        &o,
        4,
        &[
            "TLS certificate",
            "not trusted",
            "--ca-bundle",
            "OPENWRK_CA_BUNDLE",
        ],
    );
    assert_eq!(m.host.requests(), 0);
    let ca = m.ca_file();
    let o = m
        .cmd(&["sidecars", "fetch"])
        .env("OPENWRK_CA_BUNDLE", &ca)
        .output()
        .unwrap();
    ok(&o);
    // The flag does the same, for a fresh data dir.
    let o = m
        .cmd(&["sidecars", "fetch", "--ca-bundle", ca.to_str().unwrap()])
        .env("OPENWRK_DATA_DIR", m.tmp.path().join("data2"))
        .output()
        .unwrap();
    ok(&o);
    // Another CA is no help.
    let other = ReleaseHost::start_tls();
    let wrong = m.tmp.path().join("other-ca.pem");
    std::fs::write(&wrong, other.ca_pem().unwrap()).unwrap();
    let o = m
        .cmd(&["sidecars", "fetch"])
        .env("OPENWRK_DATA_DIR", m.tmp.path().join("data3"))
        .env("OPENWRK_CA_BUNDLE", &wrong)
        .output()
        .unwrap();
    fails(&o, 4, &["TLS certificate"]);
}

#[test]
fn every_request_goes_through_an_https_proxy_unless_no_proxy() {
    // The mirror's URLs name a host only the proxy resolves: a request that
    // skipped the proxy could not have reached it.
    let m = Mirror::serving(0, ReleaseHost::mirror_tls_proxied);
    let proxy = ForwardProxy::start();
    let ca = m.ca_file();
    let o = m
        .cmd(&["sidecars", "fetch"])
        .env("HTTPS_PROXY", proxy.url())
        .env("OPENWRK_CA_BUNDLE", &ca)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    ok(&o);
    assert!(proxy.requests() >= 1, "no CONNECT tunnel was opened");
    assert_eq!(m.host.requests(), 4, "{:?}", m.host.request_log());
    // NO_PROXY sends the same client straight to an HTTPS mirror on loopback.
    let direct = Mirror::serving(0, ReleaseHost::mirror_tls);
    let ca = direct.ca_file();
    let before = proxy.requests();
    let o = direct
        .cmd(&["sidecars", "fetch"])
        .env("HTTPS_PROXY", proxy.url())
        .env("NO_PROXY", "127.0.0.1")
        .env("OPENWRK_CA_BUNDLE", &ca)
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(proxy.requests(), before, "NO_PROXY was not honoured");
}

#[test]
fn opencode_from_github_goes_through_the_proxy_too() {
    use openwrk_test_support::fixtures;
    // A manifest without OpenCode (not a mirror: GitHub may be asked), both
    // hosts reachable only through the proxy.
    let m = Mirror::serving(0, ReleaseHost::mirror_tls_proxied);
    let path = m.tmp.path().join("dist/openwrk-sidecars.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest["entries"]
        .as_object_mut()
        .unwrap()
        .remove("opencode");
    std::fs::write(&path, manifest.to_string()).unwrap();
    let github = ReleaseHost::start_tls_proxied();
    let releases = m.tmp.path().join("releases");
    std::fs::create_dir_all(&releases).unwrap();
    github.add_release(
        "anomalyco/opencode",
        fixtures::opencode_release(&releases, "v1.2.0", None, 0).unwrap(),
    );
    let bundle = m.tmp.path().join("cas.pem");
    std::fs::write(
        &bundle,
        format!("{}{}", m.host.ca_pem().unwrap(), github.ca_pem().unwrap()),
    )
    .unwrap();
    let proxy = ForwardProxy::start();
    let o = m
        .cmd(&["sidecars", "fetch", "--json"])
        .env_remove("OPENWRK_SIDECAR_BASE_URL")
        .env(
            "OPENWRK_SIDECAR_MANIFEST_URL",
            format!("{}/openwrk-sidecars.json", m.host.url()),
        )
        .env("OPENWRK_GITHUB_API_URL", github.api_url())
        .env("HTTPS_PROXY", proxy.url())
        .env("OPENWRK_CA_BUNDLE", &bundle)
        .env_remove("OPENCODE_VERSION")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    ok(&o);
    let log = github.request_log();
    assert!(
        log.iter()
            .any(|l| l.contains("/api/repos/anomalyco/opencode/releases/latest")),
        "{log:?}"
    );
    assert!(
        log.iter().any(|l| l.contains("/releases/download/")),
        "{log:?}"
    );
}
