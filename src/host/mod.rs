//! The host half: everything that *runs* verified sidecars — spawning them
//! under a guardian, health probes, the unified log, credentials, the
//! dashboard, the router daemon and its workspaces. It takes resolved,
//! verified binaries from the supply half and never reaches into the command
//! line.

pub mod credentials;
pub mod daemon;
pub mod dashboard;
mod error;
#[cfg(unix)]
pub mod guardian;
pub mod health;
pub mod log;
pub mod opencode;
pub mod process;
pub mod readiness;
pub mod remote;
pub mod run;
pub mod sandbox;
pub mod signals;
pub mod supervise;
pub mod workspaces;

pub use error::HostError;
