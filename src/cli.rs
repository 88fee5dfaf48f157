//! The command line (SPEC §4). Every flag with an env var declares it, so the
//! precedence is flag > env > default everywhere.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "openwrk",
    version,
    about = "Run an OpenCode host (OpenCode, OpenWork server, Owpenbot) without the desktop app"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Boolean env vars accept 1/true/yes/on and 0/false/no/off.
fn bool_flag() -> clap::builder::BoolishValueParser {
    clap::builder::BoolishValueParser::new()
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Where openwrk keeps state [default: the platform data dir, e.g. ~/.local/share/openwrk]
    #[arg(long, global = true, env = "OPENWRK_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Sidecar cache [default: <data dir>/sidecars] (OPENWORK_SIDECAR_DIR is read too)
    #[arg(long, global = true, env = "OPENWRK_SIDECAR_DIR", value_name = "DIR")]
    pub sidecar_dir: Option<PathBuf>,
    /// Manifest URL or file [default: bundled next to openwrk, else this version's release]
    #[arg(
        long,
        global = true,
        env = "OPENWRK_SIDECAR_MANIFEST_URL",
        value_name = "URL|PATH"
    )]
    pub sidecar_manifest: Option<String>,
    /// Mirror serving the files of a dist/ (manifest and assets)
    #[arg(
        long,
        global = true,
        env = "OPENWRK_SIDECAR_BASE_URL",
        value_name = "URL"
    )]
    pub sidecar_base_url: Option<String>,
    /// Source of openwork-server and owpenbot
    #[arg(
        long,
        global = true,
        env = "OPENWRK_SIDECAR_SOURCE",
        value_enum,
        default_value = "auto"
    )]
    pub sidecar_source: Source,
    /// Source of opencode
    #[arg(
        long,
        global = true,
        env = "OPENWRK_OPENCODE_SOURCE",
        value_enum,
        default_value = "auto"
    )]
    pub opencode_source: Source,
    /// Require manifests signed with this minisign public key (base64 line); ignored when a key is built in
    #[arg(
        long,
        global = true,
        env = "OPENWRK_MANIFEST_PUBKEY",
        value_name = "KEY"
    )]
    pub manifest_pubkey: Option<String>,
    /// Seconds to wait for a download connection
    #[arg(
        long,
        global = true,
        env = "OPENWRK_CONNECT_TIMEOUT",
        value_name = "SECS",
        default_value_t = 10.0
    )]
    pub connect_timeout: f64,
    /// Seconds without a byte (or with under 1 KiB) before a download counts as stalled
    #[arg(
        long,
        global = true,
        env = "OPENWRK_IDLE_TIMEOUT",
        value_name = "SECS",
        default_value_t = 30.0
    )]
    pub idle_timeout: f64,
    /// Extra trusted CA certificates (PEM) for downloads
    #[arg(long, global = true, env = "OPENWRK_CA_BUNDLE", value_name = "FILE")]
    pub ca_bundle: Option<PathBuf>,
    /// Accept an unsigned local manifest although this openwrk requires signed ones (development)
    #[arg(long, global = true, env = "OPENWRK_ALLOW_UNSIGNED_MANIFEST", value_parser = bool_flag(), action = ArgAction::SetTrue)]
    pub allow_unsigned_manifest: bool,
    /// Accept, for this run, a signed manifest of another openwrk version or older than the newest one seen
    #[arg(long, global = true, env = "OPENWRK_ALLOW_DOWNGRADE", value_parser = bool_flag(), action = ArgAction::SetTrue)]
    pub allow_downgrade: bool,
    /// Allow external (unverified) openwork-server and owpenbot binaries
    #[arg(long, global = true, env = "OPENWRK_ALLOW_EXTERNAL", value_parser = bool_flag(), action = ArgAction::SetTrue)]
    pub allow_external: bool,
    /// Say where each sidecar comes from and how it was verified; debug logs
    #[arg(long, short, global = true, env = "OPENWRK_VERBOSE", value_parser = bool_flag(), action = ArgAction::SetTrue)]
    pub verbose: bool,
    #[arg(
        long,
        global = true,
        env = "OPENWRK_LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    pub log_format: LogFormat,
    /// Id on every log record and passed to the children [default: a new UUIDv7]
    #[arg(long, global = true, env = "OPENWRK_RUN_ID")]
    pub run_id: Option<String>,
    /// Colors (NO_COLOR is honoured)
    #[arg(long, global = true, value_enum, default_value = "auto")]
    pub color: Color,
    /// Machine-readable output (one JSON document on stdout)
    #[arg(long, global = true)]
    pub json: bool,
    /// OpenCode to use when the manifest names none: 1.2.3, v1.2.3 or latest
    #[arg(long, global = true, env = "OPENCODE_VERSION", value_name = "VERSION")]
    pub opencode_version: Option<String>,
    /// Repository of OpenCode releases (owner/name)
    #[arg(long, global = true, env = "OPENWRK_OPENCODE_REPO", default_value = crate::supply::github::DEFAULT_OPENCODE_REPO)]
    pub opencode_repo: String,
    /// GitHub API root
    #[arg(long, global = true, env = "OPENWRK_GITHUB_API_URL", default_value = crate::supply::github::DEFAULT_API_URL)]
    pub github_api_url: String,
    /// GitHub token for the API (GH_TOKEN is read too); prefer the env var
    #[arg(long, global = true, env = "GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<String>,
}

/// Where a sidecar may come from (SPEC §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// Bundled if it verifies, else the cache if it verifies, else download
    Auto,
    /// Only <exe dir>/sidecars/
    Bundled,
    /// The cache, downloading into it when missing
    Downloaded,
    /// A binary given by flag or found on PATH (not verified)
    External,
}

impl From<Source> for crate::supply::resolve::SourceMode {
    fn from(s: Source) -> Self {
        use crate::supply::resolve::SourceMode;
        match s {
            Source::Auto => SourceMode::Auto,
            Source::Bundled => SourceMode::Bundled,
            Source::Downloaded => SourceMode::Downloaded,
            Source::External => SourceMode::External,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl From<LogFormat> for crate::host::log::LogFormat {
    fn from(f: LogFormat) -> Self {
        match f {
            LogFormat::Pretty => crate::host::log::LogFormat::Pretty,
            LogFormat::Json => crate::host::log::LogFormat::Json,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

impl From<Color> for crate::host::log::Color {
    fn from(c: Color) -> Self {
        match c {
            Color::Auto => crate::host::log::Color::Auto,
            Color::Always => crate::host::log::Color::Always,
            Color::Never => crate::host::log::Color::Never,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start OpenCode, the OpenWork server and Owpenbot (dashboard on a TTY)
    Start(Box<StartArgs>),
    /// Like `start --no-tui`: log output only
    Serve(Box<StartArgs>),
    /// Stop a detached run
    Stop {
        #[arg(long)]
        run_id: Option<String>,
    },
    /// Inspect, prefetch, verify and prune the sidecar cache
    #[command(subcommand)]
    Sidecars(SidecarsCommand),
    /// The router daemon (one OpenCode for many workspaces)
    #[command(subcommand)]
    Daemon(DaemonCommand),
    /// Workspaces served by the daemon
    #[command(subcommand)]
    Workspace(WorkspaceCommand),
    /// OpenCode instances
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Pending approvals on an OpenWork server
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Health and version of a running OpenWork server and OpenCode
    Status(StatusArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum SidecarsCommand {
    /// Name, version, target, source, path and verification of each sidecar
    List,
    /// Resolve and cache every sidecar (also for other targets, for offline hosts)
    Fetch {
        /// Target to fetch for (repeatable) [default: this host]
        #[arg(long = "target", value_name = "TARGET")]
        targets: Vec<String>,
    },
    /// Rehash everything in the cache; non-zero if anything mismatches
    Verify,
    /// Remove cached versions the current manifest does not name
    Prune {
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Start the router daemon (in the background unless --foreground) and print its URL
    Start(DaemonArgs),
    /// Stop the daemon and its OpenCode
    Stop(DaemonArgs),
    /// The daemon's record and live health (--json for one document)
    Status(DaemonArgs),
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    #[arg(long, env = "OPENWRK_DAEMON_HOST", default_value = "127.0.0.1")]
    pub daemon_host: String,
    /// [default: a free port]
    #[arg(long, env = "OPENWRK_DAEMON_PORT")]
    pub daemon_port: Option<u16>,
    /// Run the daemon in this process instead of in the background
    #[arg(long)]
    pub foreground: bool,
    /// Use this OpenCode binary (implies --opencode-source external)
    #[arg(long, env = "OPENWRK_OPENCODE_BIN", value_name = "PATH")]
    pub opencode_bin: Option<PathBuf>,
    /// Seconds to wait for OpenCode to be healthy at start
    #[arg(long, env = "OPENWRK_STARTUP_TIMEOUT", default_value_t = 60)]
    pub startup_timeout: u64,
    // Sandbox mode (SPEC §5.9): --sandbox, --sandbox-image, --sandbox-persist-dir, --sandbox-mount.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Add an existing directory; prints its stable id
    Add { path: PathBuf },
    /// The workspaces (--json: {"workspaces":[…]})
    List,
    /// Print a workspace's path
    Path { id: String },
    /// Forget a workspace
    Remove { id: String },
}

#[derive(Debug, Subcommand)]
pub enum InstanceCommand {
    /// Ask the daemon to release OpenCode's instance for a workspace
    Dispose { id: String },
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Pending approvals (--json for one document)
    List(RemoteArgs),
    /// Allow or deny one approval
    Reply {
        id: String,
        #[arg(long, conflicts_with = "deny", required_unless_present = "deny")]
        allow: bool,
        #[arg(long)]
        deny: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

#[derive(Debug, Args)]
pub struct RemoteArgs {
    #[arg(long, env = "OPENWRK_OPENWORK_URL")]
    pub openwork_url: Option<String>,
    /// Host token (prefer the env var: argv is visible to other users)
    #[arg(long, env = "OPENWRK_HOST_TOKEN", hide_env_values = true)]
    pub host_token: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[arg(long, env = "OPENWRK_OPENWORK_URL")]
    pub openwork_url: Option<String>,
    #[arg(long)]
    pub opencode_url: Option<String>,
    #[arg(long, env = "OPENWRK_OPENCODE_USERNAME")]
    pub opencode_username: Option<String>,
    /// Prefer the env var: argv is visible to other users
    #[arg(long, env = "OPENWRK_OPENCODE_PASSWORD", hide_env_values = true)]
    pub opencode_password: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// [default: the current directory]
    #[arg(long, env = "OPENWRK_WORKSPACE", value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    /// Use this OpenCode binary (implies --opencode-source external)
    #[arg(long, env = "OPENWRK_OPENCODE_BIN", value_name = "PATH")]
    pub opencode_bin: Option<PathBuf>,
    #[arg(long, env = "OPENWRK_OPENCODE_HOST", default_value = "127.0.0.1")]
    pub opencode_host: String,
    /// [default: a free port]
    #[arg(long, env = "OPENWRK_OPENCODE_PORT")]
    pub opencode_port: Option<u16>,
    #[arg(long, env = "OPENWRK_OPENCODE_USERNAME", default_value = "opencode")]
    pub opencode_username: String,
    /// [default: generated] Prefer the env var: argv is visible to other users
    #[arg(long, env = "OPENWRK_OPENCODE_PASSWORD", hide_env_values = true)]
    pub opencode_password: Option<String>,
    /// Use this OpenWork server binary (needs --allow-external)
    #[arg(long, env = "OPENWRK_OPENWORK_SERVER_BIN", value_name = "PATH")]
    pub openwork_server_bin: Option<PathBuf>,
    #[arg(long, env = "OPENWRK_OPENWORK_HOST", default_value = "127.0.0.1")]
    pub openwork_host: String,
    /// Listen on 0.0.0.0 so remote clients can pair (OpenCode stays behind basic auth)
    #[arg(long, env = "OPENWRK_REMOTE_ACCESS", value_parser = bool_flag(), action = ArgAction::SetTrue)]
    pub remote_access: bool,
    /// [default: 8787, a free port if busy]
    #[arg(long, env = "OPENWRK_OPENWORK_PORT")]
    pub openwork_port: Option<u16>,
    /// [default: generated] Prefer the env var: argv is visible to other users
    #[arg(long, env = "OPENWRK_OPENWORK_TOKEN", hide_env_values = true)]
    pub openwork_token: Option<String>,
    /// [default: generated] Prefer the env var: argv is visible to other users
    #[arg(long, env = "OPENWRK_HOST_TOKEN", hide_env_values = true)]
    pub host_token: Option<String>,
    #[arg(long, env = "OPENWRK_APPROVAL", value_enum, default_value = "manual")]
    pub approval: Approval,
    /// Milliseconds
    #[arg(long, env = "OPENWRK_APPROVAL_TIMEOUT", default_value_t = 30000)]
    pub approval_timeout: u64,
    #[arg(long, env = "OPENWRK_READ_ONLY", value_parser = bool_flag(), action = ArgAction::SetTrue)]
    pub read_only: bool,
    /// Allowed CORS origins, comma-separated
    #[arg(long, env = "OPENWRK_CORS", value_delimiter = ',')]
    pub cors: Vec<String>,
    /// Host advertised to remote clients [default: first non-loopback address with --remote-access, else 127.0.0.1]
    #[arg(long, env = "OPENWRK_CONNECT_HOST")]
    pub connect_host: Option<String>,
    /// Use this Owpenbot binary (needs --allow-external)
    #[arg(long, env = "OPENWRK_OWPENBOT_BIN", value_name = "PATH")]
    pub owpenbot_bin: Option<PathBuf>,
    #[arg(long, env = "OPENWRK_NO_OWPENBOT", value_parser = bool_flag(), action = ArgAction::SetTrue)]
    pub no_owpenbot: bool,
    /// Treat Owpenbot exiting like the other sidecars exiting
    #[arg(long, env = "OPENWRK_OWPENBOT_REQUIRED", value_parser = bool_flag(), action = ArgAction::SetTrue)]
    pub owpenbot_required: bool,
    /// [default: a free port]
    #[arg(long, env = "OPENWRK_OWPENBOT_HEALTH_PORT")]
    pub owpenbot_health_port: Option<u16>,
    /// Ask the OpenWork server not to log requests (OPENWORK_LOG_REQUESTS=0)
    #[arg(long)]
    pub no_log_requests: bool,
    /// Seconds to wait for every sidecar to be healthy
    #[arg(long, env = "OPENWRK_STARTUP_TIMEOUT", default_value_t = 60)]
    pub startup_timeout: u64,
    /// Start, verify health, print the pairing details, stop, exit
    #[arg(long)]
    pub check: bool,
    /// With --check: also wait for OpenCode's first /event
    #[arg(long)]
    pub check_events: bool,
    #[arg(long, overrides_with = "no_tui")]
    pub tui: bool,
    #[arg(long)]
    pub no_tui: bool,
    /// Leave the services running and exit once healthy
    #[arg(long)]
    pub detach: bool,
    // Sandbox mode (SPEC §5.9): --sandbox, --sandbox-image, --sandbox-persist-dir, --sandbox-mount.
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

/// `--sandbox` and friends, on `start`/`serve` and the daemon commands (SPEC §4).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Sandbox (see the README's \"Sandbox\" section)")]
pub struct SandboxArgs {
    /// Run OpenCode, and every command its agent runs, inside a sandbox
    #[arg(long, env = "OPENWRK_SANDBOX", value_enum, default_value = "none")]
    pub sandbox: SandboxMode,
    /// Base image with glibc for docker/podman/container (never trusted to provide OpenCode) [default: debian:stable-slim]
    #[arg(long, env = "OPENWRK_SANDBOX_IMAGE", value_name = "REF")]
    pub sandbox_image: Option<String>,
    /// OpenCode's HOME and XDG dirs inside the sandbox [default: <data dir>/sandbox/<workspace id>]
    #[arg(long, env = "OPENWRK_SANDBOX_PERSIST_DIR", value_name = "DIR")]
    pub sandbox_persist_dir: Option<PathBuf>,
    /// Extra mount hostPath:containerPath[:ro|rw] (read-only by default), only under an entry of <config dir>/openwrk/sandbox-allowlist.json; repeatable
    #[arg(
        long = "sandbox-mount",
        env = "OPENWRK_SANDBOX_MOUNTS",
        value_name = "SPEC",
        value_delimiter = ','
    )]
    pub sandbox_mounts: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxMode {
    /// No sandbox: OpenCode runs with the operator's rights
    None,
    /// bwrap on Linux when installed, else docker, else podman, else container on macOS
    Auto,
    /// bubblewrap (Linux, no daemon)
    Bwrap,
    /// A Docker container
    Docker,
    /// A Podman container
    Podman,
    /// Apple's `container` CLI (macOS)
    Container,
}

impl From<&SandboxArgs> for crate::host::sandbox::SandboxArgs {
    fn from(a: &SandboxArgs) -> Self {
        use crate::host::sandbox::Mode;
        crate::host::sandbox::SandboxArgs {
            sandbox: match a.sandbox {
                SandboxMode::None => Mode::None,
                SandboxMode::Auto => Mode::Auto,
                SandboxMode::Bwrap => Mode::Bwrap,
                SandboxMode::Docker => Mode::Docker,
                SandboxMode::Podman => Mode::Podman,
                SandboxMode::Container => Mode::Container,
            },
            sandbox_image: a.sandbox_image.clone(),
            sandbox_persist_dir: a.sandbox_persist_dir.clone(),
            sandbox_mounts: a.sandbox_mounts.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Approval {
    Manual,
    Auto,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
