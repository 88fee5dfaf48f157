//! Why running the sidecars failed, by SPEC §9 kind. Each message says what
//! failed, the value or path involved, and ends with a hint.

use crate::host::daemon::DaemonError;
use crate::supply::resolve::ResolveError;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Finding or verifying a sidecar failed (its own exit code).
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The daemon's files in the data dir.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// A flag value that cannot work: a busy port that was asked for, a
    /// workspace that does not exist, a run id already in use (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A configuration or state file that cannot be used (exit 3).
    #[error("{0}")]
    Config(String),
    /// A sidecar that exited or stayed unhealthy, a check that failed, a
    /// local failure (exit 1).
    #[error("{0}")]
    Runtime(String),
    /// A background openwrk (supervisor, daemon) that ended before it was
    /// ready, with its own exit code.
    #[error("{message}")]
    Background { message: String, code: i32 },
}

impl HostError {
    /// SPEC §9.
    pub fn exit_code(&self) -> i32 {
        match self {
            HostError::Resolve(e) => e.exit_code(),
            HostError::Daemon(_) | HostError::Runtime(_) => 1,
            HostError::Usage(_) => 2,
            HostError::Config(_) => 3,
            HostError::Background { code, .. } => *code,
        }
    }
}
