//! Why a download failed, each case with the URL and a hint (SPEC §9).

use std::path::PathBuf;

use crate::supply::github::ResetTime;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("invalid download settings: {0}")]
    Config(String),
    #[error("could not reach {url}: {cause} (after {attempts} attempts)\nhint: check the network, proxy settings (HTTPS_PROXY) and the URL; a mirror can be set with --sidecar-base-url")]
    Connect {
        url: String,
        cause: String,
        attempts: u32,
    },
    #[error("no data from {url} for {secs}s (after {attempts} attempts)\nhint: the server stalled; raise OPENWRK_IDLE_TIMEOUT or try a closer mirror")]
    Idle {
        url: String,
        secs: u64,
        attempts: u32,
    },
    #[error("{url} sends less than 1 KiB per {secs} s (after {attempts} attempts)\nhint: the server is stalling; raise OPENWRK_IDLE_TIMEOUT or try a closer mirror")]
    Stalled {
        url: String,
        secs: f64,
        attempts: u32,
    },
    #[error("the TLS certificate of {url} is not trusted: {cause}\nhint: if it comes from a private or corporate CA (a TLS-inspecting proxy, an internal mirror), pass that CA's certificate with --ca-bundle FILE or OPENWRK_CA_BUNDLE=FILE (PEM); otherwise something is intercepting the connection")]
    Certificate { url: String, cause: String },
    #[error("{url} not found (HTTP {status})\nhint: the release or mirror does not have this file; check the version and --sidecar-base-url")]
    NotFound { url: String, status: u16 },
    #[error("{url} is rate limited (HTTP {status}){reset}\nhint: set GITHUB_TOKEN (or GH_TOKEN), wait, or use a mirror")]
    RateLimited {
        url: String,
        status: u16,
        reset: ResetTime,
    },
    #[error("{url} failed with HTTP {status} (after {attempts} attempts)\nhint: the server is failing; try again later or use a mirror")]
    Status {
        url: String,
        status: u16,
        attempts: u32,
    },
    #[error("download of {url} was cut short: got {got} of {} bytes ({cause}; after {attempts} attempts)\nhint: the connection keeps dropping; try again or use a mirror; nothing was kept", expected.map_or("the announced".to_string(), |n| n.to_string()))]
    Truncated {
        url: String,
        got: u64,
        expected: Option<u64>,
        cause: String,
        attempts: u32,
    },
    #[error("{url} announces or sends more than the {limit} bytes expected\nhint: the server serves a different file than the manifest names; nothing was kept")]
    TooLong { url: String, limit: u64 },
    #[error("{url} announces {announced} bytes, but the manifest says {expected}\nhint: the server serves a different file than the manifest names; nothing was kept")]
    LengthMismatch {
        url: String,
        expected: u64,
        announced: u64,
    },
    #[error("size mismatch for {asset}\n  url:      {url}\n  expected: {expected} bytes\n  actual:   {actual} bytes\nhint: the server serves a different file than the manifest names; nothing was kept")]
    SizeMismatch {
        asset: String,
        url: String,
        expected: u64,
        actual: u64,
    },
    #[error("sha256 mismatch for {asset}\n  url:      {url}\n  expected: {expected}{expected_size}\n  actual:   {actual}  ({actual_size} bytes)\nhint: the server serves a different file than the manifest names; nothing was kept")]
    DigestMismatch {
        asset: String,
        url: String,
        expected: String,
        expected_size: ExpectedSize,
        actual: String,
        actual_size: u64,
    },
    #[error(
        "cannot write {path}: {source}\nhint: check free space and permissions of that directory"
    )]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// "  (N bytes)" when the size is known.
#[derive(Debug, Clone)]
pub struct ExpectedSize(pub Option<u64>);

impl std::fmt::Display for ExpectedSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "  ({n} bytes)"),
            None => Ok(()),
        }
    }
}

impl DownloadError {
    /// SPEC §9: wrong bytes 5, a local disk full or not writable 1, bad
    /// settings 3, anything on the network 4.
    pub fn exit_code(&self) -> i32 {
        match self {
            e if e.is_verification() => 5,
            DownloadError::Io { .. } => 1,
            DownloadError::Config(_) => 3,
            _ => 4,
        }
    }

    /// Strips the userinfo of every URL the error shows (SPEC §8).
    pub fn hide_credentials(&mut self) {
        use crate::sanitize::strip_userinfo;
        match self {
            DownloadError::Connect { url, cause, .. }
            | DownloadError::Certificate { url, cause }
            | DownloadError::Truncated { url, cause, .. } => {
                *url = strip_userinfo(url);
                *cause = strip_userinfo(cause);
            }
            DownloadError::Idle { url, .. }
            | DownloadError::Stalled { url, .. }
            | DownloadError::NotFound { url, .. }
            | DownloadError::RateLimited { url, .. }
            | DownloadError::Status { url, .. }
            | DownloadError::TooLong { url, .. }
            | DownloadError::LengthMismatch { url, .. }
            | DownloadError::SizeMismatch { url, .. }
            | DownloadError::DigestMismatch { url, .. } => *url = strip_userinfo(url),
            DownloadError::Config(text) => *text = strip_userinfo(text),
            DownloadError::Io { .. } => {}
        }
    }

    /// True when the bytes arrived but are not the ones expected (exit code 5).
    pub fn is_verification(&self) -> bool {
        matches!(
            self,
            DownloadError::SizeMismatch { .. }
                | DownloadError::DigestMismatch { .. }
                | DownloadError::TooLong { .. }
                | DownloadError::LengthMismatch { .. }
        )
    }
}
