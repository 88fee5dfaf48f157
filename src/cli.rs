//! The command line (SPEC §4). Every flag with an env var declares it, so the
//! precedence is flag > env > default everywhere.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

mod daemon;
mod lazy;
mod start;
pub mod upstream;

pub use daemon::{DaemonArgs, DaemonCommand, InstanceCommand, WorkspaceCommand};
pub use lazy::{build_eagerly, Lazy};
pub use start::{Approval, OpenCodeArgs, OpenCodeLogLevel, StartArgs};

/// Help headings of the global options, apart from each command's own.
const SUPPLY: &str = "Global: where sidecars come from";
const OUTPUT: &str = "Global: output and logging";

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
    #[arg(long, global = true, env = "OPENWRK_DATA_DIR", value_name = "DIR", help_heading = SUPPLY)]
    pub data_dir: Option<PathBuf>,
    /// Sidecar cache [default: <data dir>/sidecars] (OPENWORK_SIDECAR_DIR is read too)
    #[arg(long, global = true, env = "OPENWRK_SIDECAR_DIR", value_name = "DIR", help_heading = SUPPLY)]
    pub sidecar_dir: Option<PathBuf>,
    /// Manifest URL or file [default: bundled next to openwrk, else this version's release]
    #[arg(
        long,
        global = true,
        env = "OPENWRK_SIDECAR_MANIFEST_URL",
        value_name = "URL|PATH",
        help_heading = SUPPLY
    )]
    pub sidecar_manifest: Option<String>,
    /// Mirror serving the files of a dist/ (manifest and assets)
    #[arg(
        long,
        global = true,
        env = "OPENWRK_SIDECAR_BASE_URL",
        value_name = "URL",
        help_heading = SUPPLY
    )]
    pub sidecar_base_url: Option<String>,
    /// Source of openwork-server and owpenbot
    #[arg(
        long,
        global = true,
        env = "OPENWRK_SIDECAR_SOURCE",
        value_enum,
        value_name = "SOURCE",
        default_value = "auto",
        help_heading = SUPPLY
    )]
    pub sidecar_source: Source,
    /// Source of opencode
    #[arg(
        long,
        global = true,
        env = "OPENWRK_OPENCODE_SOURCE",
        value_enum,
        value_name = "SOURCE",
        default_value = "auto",
        help_heading = SUPPLY
    )]
    pub opencode_source: Source,
    /// Require manifests signed with this minisign public key (base64 line); ignored when a key is built in
    #[arg(
        long,
        global = true,
        env = "OPENWRK_MANIFEST_PUBKEY",
        value_name = "KEY",
        help_heading = SUPPLY
    )]
    pub manifest_pubkey: Option<String>,
    /// Seconds to wait for a download connection
    #[arg(
        long,
        global = true,
        env = "OPENWRK_CONNECT_TIMEOUT",
        value_name = "SECS",
        default_value_t = 10.0,
        help_heading = SUPPLY
    )]
    pub connect_timeout: f64,
    /// Seconds without a byte (or with under 1 KiB) before a download counts as stalled
    #[arg(
        long,
        global = true,
        env = "OPENWRK_IDLE_TIMEOUT",
        value_name = "SECS",
        default_value_t = 30.0,
        help_heading = SUPPLY
    )]
    pub idle_timeout: f64,
    /// Extra trusted CA certificates (PEM) for downloads
    #[arg(long, global = true, env = "OPENWRK_CA_BUNDLE", value_name = "FILE", help_heading = SUPPLY)]
    pub ca_bundle: Option<PathBuf>,
    /// Accept an unsigned local manifest although this openwrk requires signed ones (development)
    #[arg(long, global = true, env = "OPENWRK_ALLOW_UNSIGNED_MANIFEST", value_parser = bool_flag(), action = ArgAction::SetTrue, help_heading = SUPPLY)]
    pub allow_unsigned_manifest: bool,
    /// Accept, for this run, a signed manifest of another openwrk version or older than the newest one seen
    #[arg(long, global = true, env = "OPENWRK_ALLOW_DOWNGRADE", value_parser = bool_flag(), action = ArgAction::SetTrue, help_heading = SUPPLY)]
    pub allow_downgrade: bool,
    /// Allow external (unverified) openwork-server and owpenbot binaries
    #[arg(long, global = true, env = "OPENWRK_ALLOW_EXTERNAL", value_parser = bool_flag(), action = ArgAction::SetTrue, help_heading = SUPPLY)]
    pub allow_external: bool,
    /// Say where each sidecar comes from and how it was verified; debug logs
    #[arg(long, short, global = true, env = "OPENWRK_VERBOSE", value_parser = bool_flag(), action = ArgAction::SetTrue, help_heading = OUTPUT)]
    pub verbose: bool,
    /// Log lines as text (pretty) or as OpenTelemetry JSON records, one per line (json)
    #[arg(
        long,
        global = true,
        env = "OPENWRK_LOG_FORMAT",
        value_enum,
        value_name = "FORMAT",
        default_value = "pretty",
        help_heading = OUTPUT
    )]
    pub log_format: LogFormat,
    /// Id on every log record and passed to the children [default: a new UUIDv7]
    #[arg(long, global = true, env = "OPENWRK_RUN_ID", value_name = "ID", help_heading = OUTPUT)]
    pub run_id: Option<String>,
    /// Colors; `--color` alone means always (NO_COLOR is honoured by auto)
    #[arg(long, global = true, env = "OPENWRK_COLOR", value_enum, value_name = "WHEN", num_args = 0..=1, default_missing_value = "always", default_value = "auto", overrides_with = "no_color", help_heading = OUTPUT)]
    pub color: Color,
    /// No colors (= --color never)
    #[arg(long, global = true, overrides_with = "color", help_heading = OUTPUT)]
    pub no_color: bool,
    /// Machine-readable output (one JSON document on stdout)
    #[arg(long, global = true, help_heading = OUTPUT)]
    pub json: bool,
    /// OpenCode to use when the manifest names none: 1.2.3, v1.2.3 or latest
    #[arg(long, global = true, env = "OPENCODE_VERSION", value_name = "VERSION", help_heading = SUPPLY)]
    pub opencode_version: Option<String>,
    /// Repository of OpenCode releases (owner/name)
    #[arg(long, global = true, env = "OPENWRK_OPENCODE_REPO", value_name = "OWNER/NAME", default_value = crate::supply::github::DEFAULT_OPENCODE_REPO, help_heading = SUPPLY)]
    pub opencode_repo: String,
    /// GitHub API root
    #[arg(long, global = true, env = "OPENWRK_GITHUB_API_URL", value_name = "URL", default_value = crate::supply::github::DEFAULT_API_URL, help_heading = SUPPLY)]
    pub github_api_url: String,
    /// GitHub token for the API (GH_TOKEN is read too); prefer the env var
    #[arg(long, global = true, env = "GITHUB_TOKEN", hide_env_values = true, value_name = "TOKEN", help_heading = SUPPLY)]
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
    /// `HH:MM:SS.mmm LEVEL component  message`
    Pretty,
    /// One OpenTelemetry log record per line
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

/// `--color WHEN`; upstream's boolean spellings are aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    /// When stderr is a terminal and NO_COLOR is unset
    Auto,
    /// Always (also `--color` alone, true, yes, on, 1)
    #[value(alias = "true", alias = "yes", alias = "on", alias = "1")]
    Always,
    /// Never (also `--no-color`, false, no, off, 0)
    #[value(alias = "false", alias = "no", alias = "off", alias = "0")]
    Never,
}

impl Global {
    /// `--color`, unless `--no-color` came last.
    pub fn color(&self) -> Color {
        if self.no_color {
            Color::Never
        } else {
            self.color
        }
    }
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
    Start(Box<Lazy<StartArgs>>),
    /// Like `start --no-tui`: log output only
    Serve(Box<Lazy<StartArgs>>),
    /// Stop a detached run
    Stop {
        /// The run to stop [default: the newest detached run]
        #[arg(long, value_name = "ID")]
        run_id: Option<String>,
    },
    /// Inspect, prefetch, verify and prune the sidecar cache
    #[command(subcommand)]
    Sidecars(Lazy<SidecarsCommand>),
    /// The router daemon (one OpenCode for many workspaces)
    #[command(subcommand)]
    Daemon(Lazy<DaemonCommand>),
    /// Workspaces served by the daemon
    #[command(subcommand)]
    Workspace(Lazy<WorkspaceCommand>),
    /// OpenCode instances
    #[command(subcommand)]
    Instance(Lazy<InstanceCommand>),
    /// Pending approvals on an OpenWork server
    #[command(subcommand)]
    Approvals(Lazy<ApprovalsCommand>),
    /// Health and version of a running OpenWork server and OpenCode
    Status(Lazy<StatusArgs>),
    /// Print shell completions (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell to complete for
        #[arg(value_enum, value_name = "SHELL")]
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
        /// Say what would be removed, remove nothing
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Pending approvals (--json for one document)
    List(RemoteArgs),
    /// Allow or deny one approval
    Reply {
        /// The approval's id (`openwrk approvals list`)
        id: String,
        /// Allow it
        #[arg(long, conflicts_with = "deny", required_unless_present = "deny")]
        allow: bool,
        /// Deny it
        #[arg(long)]
        deny: bool,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// The OpenWork server, e.g. http://127.0.0.1:8787
    #[arg(long, env = "OPENWRK_OPENWORK_URL", value_name = "URL")]
    pub openwork_url: Option<String>,
    /// Host token (prefer the env var: argv is visible to other users)
    #[arg(
        long,
        visible_alias = "openwork-host-token",
        env = "OPENWRK_HOST_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub host_token: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The OpenWork server to check, e.g. http://127.0.0.1:8787
    #[arg(long, env = "OPENWRK_OPENWORK_URL", value_name = "URL")]
    pub openwork_url: Option<String>,
    /// The OpenCode server to check
    #[arg(long, value_name = "URL")]
    pub opencode_url: Option<String>,
    /// OpenCode's basic-auth user name
    #[arg(long, env = "OPENWRK_OPENCODE_USERNAME", value_name = "NAME")]
    pub opencode_username: Option<String>,
    /// OpenCode's basic-auth password; prefer the env var: argv is visible to other users
    #[arg(
        long,
        env = "OPENWRK_OPENCODE_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub opencode_password: Option<String>,
}

/// `--sandbox` and friends, on `start`/`serve` and the daemon commands (SPEC §4).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Sandbox (see the README's \"Sandbox\" section)")]
pub struct SandboxArgs {
    /// Run OpenCode, and every command its agent runs, inside a sandbox
    #[arg(
        long,
        env = "OPENWRK_SANDBOX",
        value_enum,
        default_value = "none",
        value_name = "MODE"
    )]
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_argument_and_command_has_a_description() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if cmd.get_about().is_none() && !path.is_empty() {
                missing.push(format!("command `{path}`"));
            }
            for a in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("`{path}` {}", a.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, format!("{path} {}", sub.get_name()).trim(), missing);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "", &mut missing);
        assert!(missing.is_empty(), "without a description: {missing:#?}");
    }

    #[test]
    fn upstream_spellings_parse_with_the_same_meaning() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map_err(|e| e.to_string());
        let cli = parse(&[
            "openwrk",
            "serve",
            "--no-color",
            "--openwork-host-token",
            "h",
            "--opencode-router-bin",
            "/b",
            "--no-opencode-router",
            "--opencode-router-required",
            "--opencode-router-health-port",
            "7",
            "--tui",
            "--opencode-auth",
            "--opencode-log-level",
            "debug",
            "--opencode-hot-reload",
            "false",
            "--opencode-hot-reload-debounce-ms",
            "900",
        ])
        .unwrap();
        assert_eq!(cli.global.color(), Color::Never);
        let Command::Serve(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.host_token.as_deref(), Some("h"));
        assert_eq!(a.owpenbot_bin.as_deref(), Some(std::path::Path::new("/b")));
        assert!(a.no_owpenbot && a.owpenbot_required && a.tui);
        assert_eq!(a.owpenbot_health_port, Some(7));
        let s = a.opencode.settings().unwrap();
        assert_eq!(
            (
                s.log_level.as_str(),
                s.hot_reload,
                s.hot_reload_debounce_ms,
                s.hot_reload_cooldown_ms
            ),
            ("DEBUG", false, 900, 1500)
        );
        // `--color` alone is upstream's "force colors"; `--color WHEN` still works.
        assert_eq!(
            parse(&["openwrk", "serve", "--color"])
                .unwrap()
                .global
                .color(),
            Color::Always
        );
        assert_eq!(
            parse(&["openwrk", "--color", "never", "serve"])
                .unwrap()
                .global
                .color(),
            Color::Never
        );
        assert_eq!(
            parse(&["openwrk", "serve", "--no-color", "--color"])
                .unwrap()
                .global
                .color(),
            Color::Always
        );
        assert_eq!(
            parse(&["openwrk", "serve", "--color", "false"])
                .unwrap()
                .global
                .color(),
            Color::Never
        );
        let Command::Serve(a) = parse(&["openwrk", "serve", "--no-opencode-hot-reload"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert!(!a.opencode.settings().unwrap().hot_reload);
        let Command::Serve(a) = parse(&["openwrk", "serve", "--no-opencode-auth"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert!(a
            .opencode
            .settings()
            .unwrap_err()
            .starts_with("--no-opencode-auth is not supported"));
        assert!(parse(&[
            "openwrk",
            "serve",
            "--opencode-hot-reload-debounce-ms",
            "10"
        ])
        .is_err());
        let Command::Daemon(Lazy(DaemonCommand::Run(d))) =
            parse(&["openwrk", "daemon", "run", "--opencode-workdir", "/w"])
                .unwrap()
                .command
        else {
            panic!()
        };
        assert_eq!(
            d.opencode_workdir.as_deref(),
            Some(std::path::Path::new("/w"))
        );
        assert!(matches!(
            parse(&["openwrk", "workspace", "switch", "ws_1"])
                .unwrap()
                .command,
            Command::Workspace(Lazy(WorkspaceCommand::Switch { .. }))
        ));
    }
}
