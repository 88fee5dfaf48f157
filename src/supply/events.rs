//! What supply code reports while it works, as typed events (like rustup's
//! download notifications). The command line renders them as progress bars,
//! plain lines or log records; the library itself never draws or prints.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// One thing that happened.
#[derive(Debug)]
pub enum Event<'a> {
    /// A download (or a copy from a local mirror) of `asset` begins.
    TransferStarted {
        asset: &'a str,
        size: Option<u64>,
    },
    /// `bytes` more of `asset` arrived.
    TransferProgress {
        asset: &'a str,
        bytes: u64,
    },
    /// A retry starts `asset` over from zero (the server did not resume).
    TransferRestarted {
        asset: &'a str,
    },
    TransferFinished {
        asset: &'a str,
    },
    /// Something the operator should read, one line.
    Notice(Notice),
}

/// How loud a notice is: `Detail` only shows with `--verbose`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Detail,
    Info,
    Warn,
}

/// The one-line messages of resolution.
#[derive(Debug, Clone)]
pub enum Notice {
    WaitingForLock {
        name: String,
    },
    /// A cached binary did not match and was moved aside before fetching again.
    MovedAside {
        name: String,
        version: String,
        /// What it was checked against: `the manifest` or `its verification record`.
        against: &'static str,
        expected: String,
        found: String,
        moved_to: PathBuf,
    },
    UnsignedLocalManifest {
        origin: String,
    },
    /// `--allow-downgrade` let a rolled-back manifest through.
    DowngradeAccepted {
        reason: String,
    },
    UnknownEntry {
        origin: String,
        name: String,
    },
    /// GitHub unreachable or rate limited; a remembered or cached version is used.
    Offline {
        version: String,
        remembered_hours: Option<u64>,
        why: String,
    },
    /// A release asset without GitHub's digest: only its size is checked.
    NoDigest {
        asset: String,
    },
    /// Which OpenCode build variant was picked, and why.
    Variant {
        version: String,
        asset: String,
        why: &'static str,
    },
    /// A bundled binary did not match the manifest; the cache is used instead.
    BundledMismatch {
        detail: String,
    },
    /// A server asked us to wait a little (429 / rate limit with a near reset).
    RateLimitWait {
        url: String,
        secs: u64,
    },
}

impl Notice {
    pub fn level(&self) -> Level {
        match self {
            Notice::WaitingForLock { .. }
            | Notice::Offline { .. }
            | Notice::NoDigest { .. }
            | Notice::UnknownEntry { .. }
            | Notice::RateLimitWait { .. } => Level::Info,
            Notice::Variant { .. } => Level::Detail,
            _ => Level::Warn,
        }
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::WaitingForLock { name } => {
                write!(f, "waiting for another openwrk to finish downloading {name}")
            }
            Notice::MovedAside {
                name,
                version,
                against,
                expected,
                found,
                moved_to,
            } => write!(
                f,
                "cached {name} {version} did not match {against} (expected sha256 {expected}, found {found}); moved it to {} and fetching it again",
                moved_to.display()
            ),
            Notice::UnsignedLocalManifest { origin } => write!(
                f,
                "using the unsigned local manifest {origin} (--allow-unsigned-manifest)"
            ),
            Notice::DowngradeAccepted { reason } => {
                write!(f, "{reason} (accepted for this run: --allow-downgrade)")
            }
            Notice::UnknownEntry { origin, name } => write!(
                f,
                "the manifest {origin} names a sidecar this openwrk does not know ({name}); ignored"
            ),
            Notice::Offline {
                version,
                remembered_hours: Some(hours),
                why,
            } => write!(
                f,
                "offline: using OpenCode {version} remembered {hours} h ago as the latest ({why})"
            ),
            Notice::Offline { version, why, .. } => {
                write!(f, "offline: using cached OpenCode {version} ({why})")
            }
            Notice::NoDigest { asset } => write!(
                f,
                "GitHub gives no digest for {asset}; only its size can be checked"
            ),
            Notice::Variant {
                version,
                asset,
                why,
            } => write!(f, "opencode {version}: using {asset} ({why})"),
            Notice::BundledMismatch { detail } => write!(f, "{detail}; using the cache instead"),
            Notice::RateLimitWait { url, secs } => write!(
                f,
                "{url} is rate limited; waiting {secs} s as it asks, then trying again"
            ),
        }
    }
}

/// Where events go; cheap to clone and shared across tasks.
pub type Reporter = Arc<dyn Fn(Event<'_>) + Send + Sync>;

/// A reporter that drops everything.
pub fn silent() -> Reporter {
    Arc::new(|_| {})
}
