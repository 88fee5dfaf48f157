//! The flags of the router daemon and of the commands around it (SPEC §4, §6):
//! `daemon run|start|stop|status`, `workspace …`, `instance dispose`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::start::{OpenCodeArgs, OPENCODE};
use super::{Lazy, SandboxArgs};

const DAEMON: &str = "Daemon";

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Run the router daemon in this process until stopped (= start --foreground)
    Run(Lazy<DaemonArgs>),
    /// Start the router daemon (in the background unless --foreground) and print its URL
    Start(Lazy<DaemonArgs>),
    /// Stop the daemon and its OpenCode
    Stop(Lazy<DaemonArgs>),
    /// The daemon's record and live health (--json for one document)
    Status(Lazy<DaemonArgs>),
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Address the daemon's API listens on
    #[arg(long, env = "OPENWRK_DAEMON_HOST", default_value = "127.0.0.1", value_name = "HOST", help_heading = DAEMON)]
    pub daemon_host: String,
    /// Port of the daemon's API [default: a free port]
    #[arg(long, env = "OPENWRK_DAEMON_PORT", value_name = "PORT", help_heading = DAEMON)]
    pub daemon_port: Option<u16>,
    /// Run the daemon in this process instead of in the background
    #[arg(long, help_heading = DAEMON)]
    pub foreground: bool,
    /// Seconds to wait for OpenCode to be healthy at start
    #[arg(long, env = "OPENWRK_STARTUP_TIMEOUT", default_value_t = 60, value_name = "SECS", help_heading = DAEMON)]
    pub startup_timeout: u64,
    /// Use this OpenCode binary (implies --opencode-source external)
    #[arg(long, env = "OPENWRK_OPENCODE_BIN", value_name = "PATH", help_heading = OPENCODE)]
    pub opencode_bin: Option<PathBuf>,
    /// OpenCode's working directory (requests still pick their workspace) [default: the data dir]
    #[arg(long, env = "OPENWRK_OPENCODE_WORKDIR", value_name = "DIR", help_heading = OPENCODE)]
    pub opencode_workdir: Option<PathBuf>,
    #[command(flatten)]
    pub opencode: OpenCodeArgs,
    // Sandbox mode (SPEC §5.9): --sandbox, --sandbox-image, --sandbox-persist-dir, --sandbox-mount.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Add an existing directory; prints its stable id
    Add {
        /// The directory
        path: PathBuf,
        /// A display name [default: the directory's name]
        #[arg(long)]
        name: Option<String>,
    },
    /// The workspaces, the active one marked (--json: {"workspaces":[…],"activeId":…})
    List,
    /// Print a workspace's path
    Path {
        /// The workspace id (`openwrk workspace list`)
        id: String,
    },
    /// Make a workspace the daemon's active one: requests that name none go to it
    Switch {
        /// The workspace id (`openwrk workspace list`)
        id: String,
    },
    /// Forget a workspace
    Remove {
        /// The workspace id (`openwrk workspace list`)
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum InstanceCommand {
    /// Ask the daemon to release OpenCode's instance for a workspace
    Dispose {
        /// The workspace id (`openwrk workspace list`)
        id: String,
    },
}
