//! Talking to a running host over HTTP (approvals, status, the daemon's API):
//! bounded clients, and URL flags checked before use.

use std::time::Duration;

use crate::host::HostError;

/// An HTTP client for one server: bounded by `timeout`; loopback servers are
/// never reached through HTTP(S)_PROXY.
pub fn client(url: &str, timeout: Duration) -> Result<reqwest::Client, String> {
    crate::install_crypto_provider();
    let loopback = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .is_some_and(|h| {
            h == "localhost"
                || h.trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
    let mut builder = reqwest::Client::builder()
        .user_agent(crate::user_agent())
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout);
    if loopback {
        builder = builder.no_proxy();
    }
    builder.build().map_err(|e| crate::error_chain(&e))
}

/// A URL flag's value, checked; trailing slashes dropped.
pub fn base_url(value: &str, flag: &str) -> Result<String, HostError> {
    let trimmed = value.trim().trim_end_matches('/');
    match reqwest::Url::parse(trimmed) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            Ok(trimmed.to_string())
        }
        _ => Err(HostError::Usage(format!(
            "{flag} {value:?} is not an http(s) URL\nhint: pass something like http://127.0.0.1:8787"
        ))),
    }
}
