//! How downloads behave (timeouts, retries, CA bundle) and what the bytes must be.

use std::path::PathBuf;
use std::time::Duration;

use super::DownloadError;

#[derive(Debug, Clone)]
pub struct DownloadConfig {
    pub connect_timeout: Duration,
    /// Longest wait for the next byte of a body (or for response headers).
    pub idle_timeout: Duration,
    /// Retries after the first attempt.
    pub retries: u32,
    /// First backoff; doubles each retry, plus up to 50% jitter.
    pub backoff: Duration,
    /// Extra trusted roots (PEM), from `OPENWRK_CA_BUNDLE`.
    pub ca_bundle: Option<PathBuf>,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        DownloadConfig {
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            retries: 4,
            backoff: Duration::from_millis(250),
            ca_bundle: None,
        }
    }
}

impl DownloadConfig {
    /// Defaults overridden by `OPENWRK_CONNECT_TIMEOUT`, `OPENWRK_IDLE_TIMEOUT`
    /// (seconds), `OPENWRK_RETRY_BACKOFF_MS` and `OPENWRK_CA_BUNDLE`.
    pub fn from_env() -> Result<Self, DownloadError> {
        let mut c = DownloadConfig::default();
        let num = |key: &str| -> Result<Option<f64>, DownloadError> {
            match std::env::var(key) {
                Ok(v) if !v.trim().is_empty() => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|n| n.is_finite() && *n >= 0.0)
                    .map(Some)
                    .ok_or_else(|| {
                        DownloadError::Config(format!("{key}=`{v}` is not a number of seconds"))
                    }),
                _ => Ok(None),
            }
        };
        if let Some(s) = num("OPENWRK_CONNECT_TIMEOUT")? {
            c.connect_timeout = Duration::from_secs_f64(s);
        }
        if let Some(s) = num("OPENWRK_IDLE_TIMEOUT")? {
            c.idle_timeout = Duration::from_secs_f64(s);
        }
        if let Some(ms) = num("OPENWRK_RETRY_BACKOFF_MS")? {
            c.backoff = Duration::from_secs_f64(ms / 1000.0);
        }
        c.ca_bundle = std::env::var_os("OPENWRK_CA_BUNDLE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        Ok(c)
    }
}

/// What the downloaded bytes must be; `None` fields are not checked.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    pub sha256: Option<String>,
    pub size: Option<u64>,
    /// Most bytes accepted when `size` is unknown (manifests, signatures).
    pub limit: Option<u64>,
}

impl Expected {
    /// A small file of unknown size: at most `limit` bytes.
    pub fn at_most(limit: u64) -> Expected {
        Expected {
            limit: Some(limit),
            ..Expected::default()
        }
    }

    /// Exactly these bytes.
    pub fn exactly(sha256: Option<String>, size: u64) -> Expected {
        Expected {
            sha256,
            size: Some(size),
            limit: None,
        }
    }

    pub(super) fn cap(&self) -> Option<u64> {
        self.size.or(self.limit)
    }
}
