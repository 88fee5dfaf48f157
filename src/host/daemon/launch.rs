//! `daemon start` (SPEC §6): the daemon in the background, or the one that
//! already runs for this data dir.

use std::path::Path;
use std::time::{Duration, Instant};

use super::keeper::resolve_opencode;
use super::{
    is_running, log_path, read_record, DaemonConfig, DaemonRecord, LOCK_FILE, LOG_ENV, POLL,
};
use crate::host::log::Logger;
use crate::host::process;
use crate::host::signals::Signals;
use crate::host::supervise::SIGTERM;
use crate::host::HostError;
use crate::supply::resolve::Resolver;

/// What `daemon start` found or started.
#[derive(Debug)]
pub enum Launched {
    /// The daemon this run started, ready.
    Started(DaemonRecord),
    /// One was already running (or won a race to start): its record.
    AlreadyRunning(DaemonRecord),
    /// A signal stopped it before it was ready: 128 + the signal's number.
    Interrupted(i32),
}

/// `daemon start`: the daemon in the background (openwrk re-executed with
/// `--foreground`, in its own session, logging to `daemon.log`), once ready.
pub async fn launch(
    config: &DaemonConfig,
    resolver: &Resolver,
    logger: &Logger,
) -> Result<Launched, HostError> {
    let data_dir = config.data_dir.as_path();
    let already = |r: DaemonRecord| {
        logger.info(&format!(
            "a daemon is already running at {} (pid {}); `openwrk daemon stop` stops it",
            r.url, r.pid
        ));
        Ok(Launched::AlreadyRunning(r))
    };
    if let Some(r) = other_daemon(data_dir, config.startup_timeout).await? {
        return already(r);
    }
    super::foreground::opencode_workdir(config)?;
    // Resolve here, so downloads show progress and bad flags fail in this terminal.
    resolve_opencode(resolver, logger).await?;
    let log = log_path(data_dir);
    let file = open_log(&log)?;
    let exe = std::env::current_exe()
        .map_err(|e| HostError::Runtime(format!("cannot find the openwrk executable: {e}")))?;
    let mut cmd = std::process::Command::new(&exe);
    let out = file
        .try_clone()
        .map_err(|e| HostError::Runtime(format!("cannot open {}: {e}", log.display())))?;
    cmd.args(std::env::args_os().skip(1))
        .arg("--foreground")
        .env(LOG_ENV, &log)
        .env("OPENWRK_RUN_ID", &config.run_id)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(file);
    crate::host::supervise::new_session(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| {
        HostError::Runtime(format!("cannot start the daemon {}: {e}", exe.display()))
    })?;
    let mut signals = Signals::install()?;
    // The daemon enforces --startup-timeout itself; this only guards against a wedged one.
    let deadline = Instant::now() + config.startup_timeout + Duration::from_secs(60);
    let record = loop {
        if let Some(r) = read_record(data_dir).ok().flatten() {
            if r.pid == child.id() {
                break r;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Lost a race with another `daemon start`: that daemon is the answer.
            if let Some(r) = other_daemon(data_dir, config.startup_timeout).await? {
                return already(r);
            }
            let mut message = format!(
                "the daemon stopped before it was ready ({})\n  log: {}\n",
                crate::host::process::describe_exit(status),
                log.display()
            );
            let tail = crate::fsutil::tail_lines(&log, 30);
            for line in &tail {
                message.push_str(&format!("    {line}\n"));
            }
            message.push_str(if tail.is_empty() {
                "hint: it logged nothing; `openwrk daemon run` runs it in this terminal"
            } else {
                "hint: the log lines above say why"
            });
            return Err(HostError::Background {
                message,
                code: status.code().filter(|c| *c != 0).unwrap_or(1),
            });
        }
        if Instant::now() > deadline {
            process::signal_pid(child.id(), SIGTERM);
            return Err(HostError::Runtime(format!(
                "the daemon did not become ready in time; stopped it\n  log: {}\nhint: the log says where it got stuck",
                log.display()
            )));
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            (n, name) = signals.recv() => {
                logger.info(&format!("received {name}; stopping the daemon"));
                process::signal_pid(child.id(), SIGTERM);
                let _ = tokio::task::spawn_blocking(move || child.wait()).await;
                return Ok(Launched::Interrupted(128 + n));
            }
        }
    };
    logger.info(&format!(
        "daemon started (pid {}, OpenCode pid {}); log: {}; stop it with `openwrk daemon stop`",
        record.pid,
        record
            .opencode
            .pid
            .map_or_else(|| "-".to_string(), |p| p.to_string()),
        log.display()
    ));
    Ok(Launched::Started(record))
}

/// The daemon already running for `data_dir`, waiting for its record if it
/// is still starting; `None` when none runs.
async fn other_daemon(
    data_dir: &Path,
    startup_timeout: Duration,
) -> Result<Option<DaemonRecord>, HostError> {
    let deadline = Instant::now() + startup_timeout;
    while is_running(data_dir)? {
        if let Some(r) = read_record(data_dir)? {
            return Ok(Some(r));
        }
        if Instant::now() > deadline {
            return Err(HostError::Runtime(format!(
                "another daemon for {} holds {} but never became ready\nhint: see {}; `openwrk daemon stop` or ending that process frees it",
                data_dir.display(),
                LOCK_FILE,
                log_path(data_dir).display()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(None)
}

/// The daemon's log, appended to (0600): a daemon that is still starting
/// may be writing to it, so it is never truncated.
fn open_log(path: &Path) -> Result<std::fs::File, HostError> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(|e| {
        HostError::Runtime(format!(
            "cannot open the daemon log {}: {e}\nhint: check that the data dir is writable",
            path.display()
        ))
    })
}
