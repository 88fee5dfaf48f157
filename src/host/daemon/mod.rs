//! The router daemon (SPEC §6): one OpenCode for many workspaces. `api` is
//! its HTTP side (the router and proxy, and its files in the data dir),
//! `keeper` keeps OpenCode alive, `foreground` is the daemon process itself,
//! `launch` starts it in the background, and `control` stops it, reports its
//! status and asks it to dispose an instance.

mod api;
mod control;
mod files;
mod foreground;
mod keeper;
mod launch;
mod proxy;

use std::path::PathBuf;
use std::time::Duration;

pub use api::*;
pub use control::{dispose, status, stop, Disposed, Status, Stopped};
pub use files::*;
pub use foreground::run as run_foreground;
pub use launch::{launch, Launched};
pub use proxy::encode_query_value;

/// Set by `daemon start` for the background daemon: where its output goes.
const LOG_ENV: &str = "OPENWRK_DAEMON_LOG";
const OPENCODE_USERNAME: &str = "opencode";
const POLL: Duration = Duration::from_millis(50);

/// One daemon: where its state lives and where it listens.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub data_dir: PathBuf,
    pub host: String,
    /// `None`: a free port.
    pub port: Option<u16>,
    /// How long OpenCode may take to become healthy at start.
    pub startup_timeout: Duration,
    pub run_id: String,
    /// Sandbox mode (SPEC §5.9) for its OpenCode.
    pub sandbox: crate::host::sandbox::SandboxArgs,
    /// OpenCode's log level and hot reload.
    pub opencode: crate::host::opencode::OpenCodeSettings,
    /// OpenCode's working directory; `None`: the data dir.
    pub opencode_workdir: Option<PathBuf>,
}

/// The host of a URL that reaches `host` from this machine.
fn url_host(host: &str) -> String {
    let host = match host {
        "0.0.0.0" | "" => "127.0.0.1",
        "::" => "::1",
        h => h,
    };
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listeners_are_reached_over_loopback() {
        assert_eq!(url_host("0.0.0.0"), "127.0.0.1");
        assert_eq!(url_host("::"), "[::1]");
        assert_eq!(url_host("localhost"), "localhost");
    }
}
