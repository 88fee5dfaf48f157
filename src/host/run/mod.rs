//! Running the three sidecars (SPEC §5): start them, wait until they are
//! healthy, hand the pairing details to the caller, supervise them until a
//! signal or a failure, and stop them all.
//!
//! Three roles run this code:
//! - foreground (`serve`, `start --no-tui`, `--check`): openwrk supervises its
//!   children and logs to stderr;
//! - `--detach` and the dashboard start a *background supervisor*: openwrk
//!   itself, re-executed with [`SUPERVISOR_ENV`] set, in its own session, its
//!   output going to `<data dir>/runs/<run id>.log`. It writes the run record
//!   once healthy; the launching process reads it, shows the summary (or the
//!   dashboard) and can exit while the run goes on. This is what lets the
//!   dashboard's `d` key detach: children never outlive the process that
//!   supervises them (their guardians, or the Windows job, see to it).

mod attached;
mod background;
pub mod pairing;
mod plan;
mod startup;
mod supervisor;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::host::log::Logger;
use crate::host::HostError;
use crate::supply::resolve::Resolver;
pub use background::StopReport;
use pairing::Pairing;

/// Set (to `detached` or `attached`) in the environment of a background supervisor.
pub const SUPERVISOR_ENV: &str = "OPENWRK_SUPERVISOR";

/// The sidecars' settings (the `start`/`serve` flags of SPEC §4).
#[derive(Debug, Clone)]
pub struct Options {
    /// `None`: the current directory.
    pub workspace: Option<PathBuf>,
    pub opencode_host: String,
    pub opencode_port: Option<u16>,
    pub opencode_username: String,
    pub opencode_password: Option<String>,
    pub openwork_host: String,
    pub remote_access: bool,
    pub openwork_port: Option<u16>,
    pub openwork_token: Option<String>,
    pub host_token: Option<String>,
    pub approval: Approval,
    /// Milliseconds.
    pub approval_timeout: u64,
    pub read_only: bool,
    pub cors: Vec<String>,
    pub connect_host: Option<String>,
    pub no_owpenbot: bool,
    pub owpenbot_required: bool,
    pub owpenbot_health_port: Option<u16>,
    pub no_log_requests: bool,
    /// Seconds.
    pub startup_timeout: u64,
    pub check: bool,
    pub check_events: bool,
    /// Sandbox mode (SPEC §5.9).
    pub sandbox: crate::host::sandbox::SandboxArgs,
    /// OpenCode's log level and hot reload.
    pub opencode: crate::host::opencode::OpenCodeSettings,
}

/// How the OpenWork server treats write requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    Manual,
    Auto,
}

/// Where the run is watched from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Supervised by this process, logging to stderr.
    Foreground,
    /// `--detach`: a background supervisor; exit once healthy.
    Detach,
    /// The dashboard, watching a background supervisor.
    Dashboard,
}

/// One run: what to start, where its state lives, and how it is watched.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub options: Options,
    pub data_dir: PathBuf,
    pub run_id: String,
    pub mode: Mode,
}

/// What a run tells the command line (which renders it as text or JSON).
pub trait RunOutput: Send + Sync {
    /// Everything is healthy: the pairing details, and owpenbot's state.
    fn ready(&self, pairing: &Pairing, owpenbot_note: Option<&str>);
    /// The run goes on in the background (`--detach`, or `d` in the dashboard).
    fn detached(&self, pairing: &Pairing, run_id: &str, log: &Path);
    /// The dashboard stopped the run.
    fn stopped(&self, run_id: &str);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Foreground,
    /// Background supervisor of a `--detach` run.
    Detached,
    /// Background supervisor watched by a dashboard: its stdin closing without
    /// a `detach` line means the dashboard is gone and the run stops.
    Attached,
}

/// `openwrk start` and `serve`: the exit code (0, or 128 + n when a signal
/// stopped it before it was ready).
pub async fn run(
    config: &RunConfig,
    resolver: &Resolver,
    logger: &Logger,
    output: &dyn RunOutput,
) -> Result<i32, HostError> {
    pairing::check_run_id(&config.run_id)?;
    let role = match std::env::var(SUPERVISOR_ENV).as_deref() {
        Ok("detached") => Role::Detached,
        Ok("attached") => Role::Attached,
        _ => Role::Foreground,
    };
    match (role, config.mode) {
        (Role::Foreground, Mode::Detach) if !config.options.check => {
            background::detach(config, resolver, logger, output).await
        }
        (Role::Foreground, Mode::Dashboard) if !config.options.check => {
            attached::dashboard(config, resolver, logger, output).await
        }
        (role, _) => supervisor::supervise(config, resolver, logger, output, role).await,
    }
}

/// `openwrk stop [--run-id ID]`: the named detached run, else the newest.
pub async fn stop(data_dir: &Path, run_id: Option<&str>) -> Result<StopReport, HostError> {
    background::stop(data_dir, run_id).await
}

/// Grace for a stopping background supervisor to finish stopping its children.
const BACKGROUND_GRACE: Duration = Duration::from_secs(3);
