//! The flags of `openwrk start` / `serve` (SPEC §4), under help headings per
//! sidecar, and the OpenCode settings shared with the daemon. Upstream
//! spellings (`--openwork-host-token`, `--opencode-router-*`, `--opencode-auth`)
//! are aliases with the same meaning.

use std::path::PathBuf;

use clap::{ArgAction, Args, ValueEnum};

use super::{bool_flag, SandboxArgs};

pub(super) const SIDECARS: &str = "Sidecars";
pub(super) const OPENCODE: &str = "OpenCode";
const OPENWORK: &str = "OpenWork server";
const OWPENBOT: &str = "Owpenbot (upstream: opencodeRouter)";
const LOGGING: &str = "Logging";
const NETWORK: &str = "Network";

#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// Directory OpenCode, the OpenWork server and Owpenbot work in [default: the current directory]
    #[arg(long, env = "OPENWRK_WORKSPACE", value_name = "DIR", help_heading = SIDECARS)]
    pub workspace: Option<PathBuf>,
    /// Seconds to wait for every sidecar to be healthy
    #[arg(long, env = "OPENWRK_STARTUP_TIMEOUT", default_value_t = 60, value_name = "SECS", help_heading = SIDECARS)]
    pub startup_timeout: u64,
    /// Start, verify health, print the pairing details, stop, exit
    #[arg(long, help_heading = SIDECARS)]
    pub check: bool,
    /// With --check: also wait for OpenCode's first /event
    #[arg(long, help_heading = SIDECARS)]
    pub check_events: bool,
    /// Show the dashboard (needs a terminal); the default of `start`
    #[arg(long, overrides_with = "no_tui", help_heading = SIDECARS)]
    pub tui: bool,
    /// Log output only, no dashboard (what `serve` does)
    #[arg(long, help_heading = SIDECARS)]
    pub no_tui: bool,
    /// Leave the services running and exit once healthy (`openwrk stop` ends them)
    #[arg(long, env = "OPENWRK_DETACH", value_parser = bool_flag(), action = ArgAction::SetTrue, help_heading = SIDECARS)]
    pub detach: bool,

    /// Use this OpenCode binary (implies --opencode-source external)
    #[arg(long, env = "OPENWRK_OPENCODE_BIN", value_name = "PATH", help_heading = OPENCODE)]
    pub opencode_bin: Option<PathBuf>,
    /// Address OpenCode listens on (0.0.0.0 with --remote-access)
    #[arg(long, env = "OPENWRK_OPENCODE_HOST", default_value = "127.0.0.1", value_name = "HOST", help_heading = OPENCODE)]
    pub opencode_host: String,
    /// OpenCode's port [default: a free port]
    #[arg(long, env = "OPENWRK_OPENCODE_PORT", value_name = "PORT", help_heading = OPENCODE)]
    pub opencode_port: Option<u16>,
    /// OpenCode's basic-auth user name
    #[arg(long, env = "OPENWRK_OPENCODE_USERNAME", default_value = "opencode", value_name = "NAME", help_heading = OPENCODE)]
    pub opencode_username: String,
    /// OpenCode's basic-auth password [default: generated]; prefer the env var: argv is visible to other users
    #[arg(long, env = "OPENWRK_OPENCODE_PASSWORD", hide_env_values = true, value_name = "PASSWORD", help_heading = OPENCODE)]
    pub opencode_password: Option<String>,

    /// Use this OpenWork server binary (needs --allow-external)
    #[arg(long, env = "OPENWRK_OPENWORK_SERVER_BIN", value_name = "PATH", help_heading = OPENWORK)]
    pub openwork_server_bin: Option<PathBuf>,
    /// Address the OpenWork server listens on (0.0.0.0 with --remote-access)
    #[arg(long, env = "OPENWRK_OPENWORK_HOST", default_value = "127.0.0.1", value_name = "HOST", help_heading = OPENWORK)]
    pub openwork_host: String,
    /// The OpenWork server's port [default: 8787, a free port if that is busy]
    #[arg(long, env = "OPENWRK_OPENWORK_PORT", value_name = "PORT", help_heading = OPENWORK)]
    pub openwork_port: Option<u16>,
    /// Client token remote clients pair with [default: generated]; prefer the env var: argv is visible to other users
    #[arg(long, env = "OPENWRK_OPENWORK_TOKEN", hide_env_values = true, value_name = "TOKEN", help_heading = OPENWORK)]
    pub openwork_token: Option<String>,
    /// Host token for approvals [default: generated]; prefer the env var: argv is visible to other users
    #[arg(long, visible_alias = "openwork-host-token", env = "OPENWRK_HOST_TOKEN", hide_env_values = true, value_name = "TOKEN", help_heading = OPENWORK)]
    pub host_token: Option<String>,
    /// How the OpenWork server treats write requests
    #[arg(long, env = "OPENWRK_APPROVAL", value_enum, default_value = "manual", value_name = "MODE", help_heading = OPENWORK)]
    pub approval: Approval,
    /// Milliseconds an approval waits for an answer
    #[arg(long, env = "OPENWRK_APPROVAL_TIMEOUT", default_value_t = 30000, value_name = "MS", help_heading = OPENWORK)]
    pub approval_timeout: u64,
    /// Start the OpenWork server read-only
    #[arg(long, env = "OPENWRK_READ_ONLY", value_parser = bool_flag(), action = ArgAction::SetTrue, help_heading = OPENWORK)]
    pub read_only: bool,

    /// Use this Owpenbot binary (needs --allow-external)
    #[arg(long, visible_alias = "opencode-router-bin", env = "OPENWRK_OWPENBOT_BIN", value_name = "PATH", help_heading = OWPENBOT)]
    pub owpenbot_bin: Option<PathBuf>,
    /// Run Owpenbot (the default; undoes --no-owpenbot)
    #[arg(long, visible_alias = "opencode-router", overrides_with = "no_owpenbot", help_heading = OWPENBOT)]
    pub owpenbot: bool,
    /// Do not run Owpenbot
    #[arg(long, visible_alias = "no-opencode-router", env = "OPENWRK_NO_OWPENBOT", value_parser = bool_flag(), action = ArgAction::SetTrue, overrides_with = "owpenbot", help_heading = OWPENBOT)]
    pub no_owpenbot: bool,
    /// Treat Owpenbot exiting like the other sidecars exiting
    #[arg(long, visible_alias = "opencode-router-required", env = "OPENWRK_OWPENBOT_REQUIRED", value_parser = bool_flag(), action = ArgAction::SetTrue, help_heading = OWPENBOT)]
    pub owpenbot_required: bool,
    /// Port of Owpenbot's health server [default: a free port]
    #[arg(long, visible_alias = "opencode-router-health-port", env = "OPENWRK_OWPENBOT_HEALTH_PORT", value_name = "PORT", help_heading = OWPENBOT)]
    pub owpenbot_health_port: Option<u16>,

    // OpenCode's hot reload (under the OpenCode heading) and log level
    // (under Logging), shared with the daemon; declared here so the Logging
    // heading follows the sidecars' in --help.
    #[command(flatten)]
    pub opencode: OpenCodeArgs,

    /// Ask the OpenWork server not to log requests (OPENWORK_LOG_REQUESTS=0)
    #[arg(long, help_heading = LOGGING)]
    pub no_log_requests: bool,

    /// Listen on 0.0.0.0 so remote clients can pair (OpenCode stays behind basic auth)
    #[arg(long, env = "OPENWRK_REMOTE_ACCESS", value_parser = bool_flag(), action = ArgAction::SetTrue, help_heading = NETWORK)]
    pub remote_access: bool,
    /// Host advertised to remote clients [default: first non-loopback address with --remote-access, else 127.0.0.1]
    #[arg(long, env = "OPENWRK_CONNECT_HOST", value_name = "HOST", help_heading = NETWORK)]
    pub connect_host: Option<String>,
    /// Allowed CORS origins, comma-separated (OpenCode and the OpenWork server)
    #[arg(long, env = "OPENWRK_CORS", value_delimiter = ',', value_name = "ORIGINS", help_heading = NETWORK)]
    pub cors: Vec<String>,

    // Sandbox mode (SPEC §5.9): --sandbox, --sandbox-image, --sandbox-persist-dir, --sandbox-mount.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// What openwrk hands `opencode serve` besides host, port and credentials,
/// for `start`/`serve` and the daemon alike.
#[derive(Debug, Clone, Args)]
pub struct OpenCodeArgs {
    /// OpenCode's log level (passed as `opencode serve --log-level`)
    #[arg(long, env = "OPENWRK_OPENCODE_LOG_LEVEL", value_enum, ignore_case = true, default_value = "INFO", value_name = "LEVEL", help_heading = LOGGING)]
    pub opencode_log_level: OpenCodeLogLevel,
    /// OpenCode reloads its config when files change (OPENCODE_HOT_RELOAD=1|0)
    #[arg(long, env = "OPENWRK_OPENCODE_HOT_RELOAD", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", default_value = "true", value_parser = bool_flag(), action = ArgAction::Set, overrides_with = "no_opencode_hot_reload", help_heading = OPENCODE)]
    pub opencode_hot_reload: bool,
    /// Turn OpenCode's hot reload off (OPENCODE_HOT_RELOAD=0)
    #[arg(long, overrides_with = "opencode_hot_reload", help_heading = OPENCODE)]
    pub no_opencode_hot_reload: bool,
    /// Milliseconds OpenCode waits for file changes to settle before reloading (at least 50)
    #[arg(long, env = "OPENWRK_OPENCODE_HOT_RELOAD_DEBOUNCE_MS", default_value_t = 700, value_name = "MS", value_parser = clap::value_parser!(u64).range(50..), help_heading = OPENCODE)]
    pub opencode_hot_reload_debounce_ms: u64,
    /// Minimum milliseconds between two reloads (at least 100)
    #[arg(long, env = "OPENWRK_OPENCODE_HOT_RELOAD_COOLDOWN_MS", default_value_t = 1500, value_name = "MS", value_parser = clap::value_parser!(u64).range(100..), help_heading = OPENCODE)]
    pub opencode_hot_reload_cooldown_ms: u64,
    /// OpenCode runs behind basic auth (always; accepted for upstream scripts)
    #[arg(long, env = "OPENWRK_OPENCODE_AUTH", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", default_value = "true", value_parser = bool_flag(), action = ArgAction::Set, hide_default_value = true, overrides_with = "no_opencode_auth", help_heading = OPENCODE)]
    pub opencode_auth: bool,
    /// Refused with the reason: OpenCode always runs behind basic auth
    #[arg(long, overrides_with = "opencode_auth", help_heading = OPENCODE)]
    pub no_opencode_auth: bool,
}

impl OpenCodeArgs {
    /// The settings, or why they are refused (`--no-opencode-auth`).
    pub fn settings(&self) -> Result<crate::host::opencode::OpenCodeSettings, String> {
        if self.no_opencode_auth || !self.opencode_auth {
            return Err("--no-opencode-auth is not supported: OpenCode always runs behind basic auth, since anyone who reaches its port could otherwise run commands as you".into());
        }
        Ok(crate::host::opencode::OpenCodeSettings {
            log_level: self.opencode_log_level.as_str().to_string(),
            hot_reload: self.opencode_hot_reload && !self.no_opencode_hot_reload,
            hot_reload_debounce_ms: self.opencode_hot_reload_debounce_ms,
            hot_reload_cooldown_ms: self.opencode_hot_reload_cooldown_ms,
        })
    }
}

/// `opencode serve --log-level` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OpenCodeLogLevel {
    #[value(name = "DEBUG")]
    Debug,
    #[value(name = "INFO")]
    Info,
    #[value(name = "WARN")]
    Warn,
    #[value(name = "ERROR")]
    Error,
}

impl OpenCodeLogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            OpenCodeLogLevel::Debug => "DEBUG",
            OpenCodeLogLevel::Info => "INFO",
            OpenCodeLogLevel::Warn => "WARN",
            OpenCodeLogLevel::Error => "ERROR",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Approval {
    /// Every write waits for a host's answer (`openwrk approvals`)
    Manual,
    /// Writes are allowed without asking
    Auto,
}
