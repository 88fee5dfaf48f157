//! One module per command.

pub mod approvals;
pub mod daemon;
pub mod progress;
pub mod sidecars;
pub mod start;
pub mod status;
pub mod workspace;

use std::path::PathBuf;

use crate::cli::Global;
use crate::supply::download::Downloader;
use crate::supply::resolve::{Resolver, Settings};

/// What a command failed with: its message (what failed, then a hint) and SPEC §9 exit code.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: i32,
}

impl From<crate::supply::resolve::ResolveError> for Failure {
    fn from(e: crate::supply::resolve::ResolveError) -> Self {
        Failure {
            code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

impl From<crate::host::HostError> for Failure {
    fn from(e: crate::host::HostError) -> Self {
        Failure {
            code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

impl From<crate::host::daemon::DaemonError> for Failure {
    fn from(e: crate::host::daemon::DaemonError) -> Self {
        crate::host::HostError::from(e).into()
    }
}

impl From<crate::supply::download::DownloadError> for Failure {
    fn from(e: crate::supply::download::DownloadError) -> Self {
        crate::supply::resolve::ResolveError::from(e).into()
    }
}

/// The data dir: `--data-dir`, else the platform default; created 0700.
pub fn data_dir(global: &Global) -> Result<PathBuf, Failure> {
    let dir = global
        .data_dir
        .clone()
        .unwrap_or_else(crate::fsutil::default_data_dir);
    crate::fsutil::create_private_dir_all(&dir).map_err(|e| Failure {
        message: format!("cannot create the data dir {}: {e}\nhint: pass --data-dir or set OPENWRK_DATA_DIR to a writable directory", dir.display()),
        code: 3,
    })?;
    Ok(dir)
}

/// Resolution settings from the global flags (plus a command's external binaries).
pub fn settings(global: &Global, bins: [Option<PathBuf>; 3]) -> Result<Settings, Failure> {
    let data_dir = data_dir(global)?;
    let sidecar_dir = global
        .sidecar_dir
        .clone()
        .or_else(|| {
            std::env::var_os("OPENWORK_SIDECAR_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| data_dir.join("sidecars"));
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok())
        .and_then(|p| p.parent().map(|d| d.to_path_buf()));
    let [opencode_bin, openwork_server_bin, owpenbot_bin] = bins;
    Ok(Settings {
        data_dir,
        sidecar_dir,
        manifest: global.sidecar_manifest.clone().filter(|s| !s.is_empty()),
        base_url: global.sidecar_base_url.clone().filter(|s| !s.is_empty()),
        sidecar_source: global.sidecar_source.into(),
        opencode_source: global.opencode_source.into(),
        allow_external: global.allow_external,
        opencode_bin,
        openwork_server_bin,
        owpenbot_bin,
        exe_dir,
        verbose: global.verbose,
        allow_unsigned_manifest: global.allow_unsigned_manifest,
        allow_downgrade: global.allow_downgrade,
        manifest_pubkey: global
            .manifest_pubkey
            .clone()
            .filter(|k| !k.trim().is_empty()),
        github: crate::supply::resolve::GithubSettings {
            version: global.opencode_version.clone().filter(|v| !v.is_empty()),
            repo: global.opencode_repo.clone(),
            api_url: global.github_api_url.clone(),
            token: global
                .github_token
                .clone()
                .filter(|t| !t.is_empty())
                .or_else(crate::supply::github::token_from_env),
        },
    })
}

/// `--run-id` / `OPENWRK_RUN_ID`, else a new UUIDv7.
pub fn run_id(global: &Global) -> Result<String, Failure> {
    match global.run_id.clone().filter(|s| !s.is_empty()) {
        Some(id) => Ok(id),
        None => crate::host::credentials::uuid_v7().map_err(|e| Failure {
            message: e.to_string(),
            code: 1,
        }),
    }
}

/// The unified log on stderr, as the global flags ask.
pub fn logger(global: &Global, run_id: &str) -> crate::host::log::Logger {
    use crate::host::log::{color_enabled, host_name, Context, LogSettings, Logger};
    use std::io::IsTerminal;
    let logger = Logger::stderr(LogSettings {
        format: global.log_format.into(),
        color: color_enabled(global.color().into(), std::io::stderr().is_terminal()),
        verbose: global.verbose,
        context: Context {
            run_id: run_id.to_string(),
            version: crate::VERSION.to_string(),
            host_name: host_name(),
        },
    });
    // The library's `tracing` diagnostics become records of this log.
    crate::host::log::diagnostics::install(&logger);
    logger
}

/// Runs a command that logs; with JSON logs a failure is a log record too, so
/// the stream stays parseable to its last line.
pub async fn logged(
    global: &Global,
    logger: &crate::host::log::Logger,
    command: impl std::future::Future<Output = Result<i32, Failure>>,
) -> Result<i32, Failure> {
    match command.await {
        Err(f) if global.log_format == crate::cli::LogFormat::Json => {
            if global.json {
                print_json_failure(&f);
            }
            logger.error(&f.message);
            Ok(f.code)
        }
        other => other,
    }
}

/// Whether this command already printed its JSON document (a run's pairing
/// details, the daemon's record): a later failure must not add a second one.
static DOCUMENT_PRINTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Notes that stdout got this command's JSON document.
pub fn document_printed() {
    DOCUMENT_PRINTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// A failure as the one JSON document of `--json` on stdout (unless the
/// command printed its document before it failed):
/// `{"ok":false,"error":{"message","hint","exitCode"}}`, like upstream's
/// `{"ok":false,"error":…}` with the hint and the exit code apart.
pub fn print_json_failure(f: &Failure) {
    if DOCUMENT_PRINTED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let text = crate::sanitize::for_output(&f.message);
    let (message, hint) = match text.split_once("\nhint: ") {
        Some((m, h)) => (m.to_string(), Some(h.to_string())),
        None => (text.clone(), None),
    };
    let doc = serde_json::json!({
        "ok": false,
        "error": { "message": message, "hint": hint, "exitCode": f.code },
    });
    println!("{doc}");
}

fn seconds(flag: &str, value: f64) -> Result<std::time::Duration, Failure> {
    std::time::Duration::try_from_secs_f64(value).map_err(|_| Failure {
        message: format!(
            "{flag} {value} is not a number of seconds\nhint: give a positive number, e.g. 30"
        ),
        code: 2,
    })
}

/// A resolver whose progress shows as bars on a TTY (never with JSON logs or
/// output, nor with `CI` set) and whose notices go to `lines`.
pub fn resolver(
    global: &Global,
    settings: Settings,
    lines: progress::Lines,
) -> Result<Resolver, Failure> {
    use std::io::IsTerminal;
    let config = crate::supply::download::DownloadConfig {
        connect_timeout: seconds("--connect-timeout", global.connect_timeout)?,
        idle_timeout: seconds("--idle-timeout", global.idle_timeout)?,
        ca_bundle: global
            .ca_bundle
            .clone()
            .filter(|p| !p.as_os_str().is_empty()),
        ..crate::supply::download::DownloadConfig::from_env()?
    };
    let animated = std::io::stderr().is_terminal()
        && !global.json
        && global.log_format == crate::cli::LogFormat::Pretty
        && std::env::var_os("CI").is_none();
    let downloader = Downloader::new(config)?.with_reporter(progress::reporter(animated, lines));
    let resolver = Resolver::new(settings, downloader);
    resolver
        .cache
        .check_permissions()
        .map_err(crate::supply::resolve::ResolveError::from)?;
    Ok(resolver)
}
