//! The daemon process (SPEC §6): holds `daemon.lock`, serves the router,
//! keeps one OpenCode alive, and writes its record.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::keeper::{now, resolve_opencode, restart_delay, Keeper, STABLE_AFTER};
use super::{
    app, load_or_create_token, log_path, read_record, record_path, remove_record, serve, try_lock,
    write_record, DaemonConfig, DaemonLock, DaemonRecord, LastExit, OpenCodeRecord, Shared,
    LOG_ENV, OPENCODE_USERNAME, POLL,
};
use crate::host::health::Prober;
use crate::host::log::Logger;
use crate::host::signals::Signals;
use crate::host::workspaces::Store;
use crate::host::HostError;
use crate::supply::resolve::Resolver;

/// How often the daemon probes a running OpenCode (for `healthy` in /health).
/// Exits are seen at once without probes; each probe is a line in OpenCode's
/// request log, so keep them rare.
const PROBE_EVERY: Duration = Duration::from_secs(10);

/// Takes `daemon.lock`, retrying briefly: `daemon status` takes it for an
/// instant to see whether a daemon runs.
async fn acquire_lock(data_dir: &Path) -> Result<DaemonLock, HostError> {
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        if let Some(lock) = try_lock(data_dir)? {
            return Ok(lock);
        }
        if Instant::now() > deadline {
            let at = read_record(data_dir)
                .ok()
                .flatten()
                .map(|r| format!(" at {} (pid {})", r.url, r.pid))
                .unwrap_or_default();
            return Err(HostError::Runtime(format!(
                    "a daemon is already running for {}{at}\nhint: `openwrk daemon status` shows it; `openwrk daemon stop` stops it",
                    data_dir.display()
                )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Binds the API listener; a busy port the user named is a usage error.
fn bind(config: &DaemonConfig) -> Result<tokio::net::TcpListener, HostError> {
    let host = config.host.as_str();
    let port = config.port.unwrap_or(0);
    let listener = std::net::TcpListener::bind((host, port)).map_err(|e| HostError::Usage(if e.kind() == std::io::ErrorKind::AddrInUse {
            format!("port {port} is in use (--daemon-port / OPENWRK_DAEMON_PORT)\nhint: stop whatever listens on {host}:{port}, or pass another --daemon-port (omit it to pick a free port)")
        } else {
            format!("cannot listen on {host}:{port} (--daemon-host / --daemon-port): {e}\nhint: check the host and port")
        }))?;
    let fail =
        |e: std::io::Error| HostError::Runtime(format!("cannot listen on {host}:{port}: {e}"));
    listener.set_nonblocking(true).map_err(fail)?;
    tokio::net::TcpListener::from_std(listener).map_err(fail)
}

/// `--opencode-workdir`, which must be a directory, else the data dir.
pub(super) fn opencode_workdir(config: &DaemonConfig) -> Result<PathBuf, HostError> {
    match &config.opencode_workdir {
        None => Ok(config.data_dir.clone()),
        Some(dir) if dir.is_dir() => Ok(std::path::absolute(dir).unwrap_or_else(|_| dir.clone())),
        Some(dir) => Err(HostError::Usage(format!(
            "--opencode-workdir {} is not an existing directory\nhint: pass a directory that exists, or omit it to use the data dir",
            dir.display()
        ))),
    }
}

/// `daemon run` / `daemon start --foreground`: the daemon itself (also what
/// the background re-exec runs). `started` is told once it is ready, unless
/// it runs in the background (its output is a log file then).
pub async fn run(
    config: &DaemonConfig,
    resolver: Resolver,
    logger: &Logger,
    started: &dyn Fn(&DaemonRecord),
) -> Result<i32, HostError> {
    let data_dir = config.data_dir.clone();
    let run_id = config.run_id.as_str();
    let workdir = opencode_workdir(config)?;
    let _lock = acquire_lock(&data_dir).await?;
    let token = load_or_create_token(&data_dir)?;
    let listener = bind(config)?;
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| HostError::Runtime(format!("cannot read the daemon's port: {e}")))?;
    let url = format!("http://{}:{port}", super::url_host(&config.host));
    let mut binary = resolve_opencode(&resolver, logger).await?;
    // Sandbox mode (SPEC §5.9): checked before the daemon serves anything.
    let sandbox = crate::host::sandbox::prepare_daemon(
        &config.sandbox,
        &resolver,
        &data_dir,
        run_id,
        &mut binary,
        logger,
    )
    .await?;
    let password =
        crate::host::credentials::token().map_err(|e| HostError::Runtime(e.to_string()))?;
    let auth = crate::host::credentials::basic_auth(OPENCODE_USERNAME, &password);
    logger.add_secrets([
        password.clone(),
        auth.trim_start_matches("Basic ").to_string(),
        token.clone(),
    ]);
    let shared = Arc::new(Shared::new(
        token,
        auth,
        Store::new(&data_dir),
        logger.clone(),
    )?);
    let mut signals = Signals::install()?;
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(serve(listener, app(shared.clone()), async move {
        let _ = server_stopped.await;
    }));
    let keeper = Keeper {
        binary: Mutex::new(binary),
        resolver,
        data_dir: data_dir.clone(),
        workdir,
        settings: config.opencode.clone(),
        run_id: run_id.to_string(),
        password,
        timeout: config.startup_timeout,
        prober: Prober::new().map_err(|e| HostError::Runtime(e.to_string()))?,
        shared: shared.clone(),
        logger: logger.clone(),
        port: Mutex::new(None),
        current: Mutex::new(None),
        sandbox,
        mounted: Mutex::new(Vec::new()),
    };
    let started_at = now();
    let process_start = crate::host::process::start_time(std::process::id());
    let record = |shared: &Shared| DaemonRecord {
        pid: std::process::id(),
        process_start,
        url: url.clone(),
        host: config.host.clone(),
        port,
        started_at: started_at.clone(),
        version: crate::VERSION.to_string(),
        run_id: run_id.to_string(),
        data_dir: data_dir.clone(),
        log: std::env::var_os(LOG_ENV).map(PathBuf::from),
        opencode: {
            let oc = shared.opencode();
            OpenCodeRecord {
                pid: oc.pid,
                process_start: oc.process_start.filter(|_| oc.pid.is_some()),
                guardian_pid: oc.guardian.map(|g| g.0).filter(|_| oc.pid.is_some()),
                guardian_start: oc.guardian.and_then(|g| g.1).filter(|_| oc.pid.is_some()),
                port: oc.port,
                url: oc.url,
                version: oc.version,
                binary: {
                    let path = keeper.binary().path;
                    std::path::absolute(&path).unwrap_or(path)
                },
                restarts: oc.restarts,
                last_exit: oc.last_exit,
            }
        },
        sandbox: keeper
            .sandbox
            .as_ref()
            .map(crate::host::sandbox::Sandbox::info)
            .unwrap_or_default(),
    };

    let first = tokio::select! {
        r = keeper.start() => r,
        (n, name) = signals.recv() => {
            logger.info(&format!("received {name} before the daemon was ready; stopping"));
            keeper.stop().await;
            let _ = stop_server.send(());
            return Ok(128 + n);
        }
    };
    let mut child = match first {
        Ok(c) => c,
        Err(f) => {
            let _ = stop_server.send(());
            return Err(f);
        }
    };
    let write = |shared: &Shared| {
        let r = record(shared);
        if let Err(e) = write_record(&data_dir, &r) {
            logger.error(&e.to_string());
        }
        r
    };
    let written = write(&shared);
    logger.info(&format!(
        "daemon ready at {url} (pid {}); record {}",
        written.pid,
        record_path(&data_dir).display()
    ));
    if std::env::var_os(LOG_ENV).is_none() {
        started(&written);
    }

    let mut failures = 0u32;
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome = 'run: loop {
        tokio::select! {
            (_, name) = signals.recv() => {
                logger.info(&format!("received {name}; stopping"));
                break 'run Ok(0);
            }
            joined = &mut server => {
                let detail = match joined {
                    Ok(Ok(())) => "it stopped".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                break 'run Err(HostError::Runtime(format!("the daemon's HTTP server failed: {detail}\nhint: see {}", log_path(&data_dir).display())));
            }
            _ = tick.tick() => keeper.probe().await,
            // Sandbox mode (SPEC §5.9): OpenCode sees exactly the registered workspaces.
            _ = keeper.sandbox_changed() => {
                logger.info("the registered workspaces changed; restarting OpenCode so that its sandbox mounts exactly them");
                keeper.stop().await;
                match keeper.start().await {
                    Ok(c) => {
                        child = c;
                        write(&shared);
                    }
                    Err(f) => logger.error(&f.to_string()),
                }
            }
            exit = child.exited() => {
                child.drain_output(Duration::from_millis(300)).await;
                if child.started.elapsed() >= STABLE_AFTER {
                    failures = 0;
                }
                shared.update_opencode(|s| {
                    s.pid = None;
                    s.serving = false;
                    s.healthy = false;
                    s.last_exit = Some(LastExit { status: exit.to_string(), at: now() });
                });
                let old = child.pid;
                // Restart until one start succeeds, backing off between attempts.
                // A restart counts from the moment it is scheduled, so /health
                // and the 503s of the proxy name the restart under way.
                let mut attempt = 0u32;
                loop {
                    let delay = restart_delay(failures);
                    failures += 1;
                    attempt += 1;
                    shared.update_opencode(|s| s.restarts += 1);
                    let n = shared.opencode().restarts;
                    if attempt == 1 {
                        logger.warn(&format!(
                            "opencode (pid {old}) exited ({exit}); restart {n} in {:.1} s",
                            delay.as_secs_f64()
                        ));
                    } else {
                        logger.warn(&format!(
                            "opencode did not come back; restart {n} in {:.1} s",
                            delay.as_secs_f64()
                        ));
                    }
                    write(&shared);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        (_, name) = signals.recv() => {
                            logger.info(&format!("received {name}; stopping"));
                            break 'run Ok(0);
                        }
                    }
                    let restarted = tokio::select! {
                        r = keeper.start() => r,
                        (_, name) = signals.recv() => {
                            logger.info(&format!("received {name}; stopping"));
                            break 'run Ok(0);
                        }
                    };
                    match restarted {
                        Ok(c) => {
                            child = c;
                            break;
                        }
                        Err(f) => logger.error(&f.to_string()),
                    }
                }
                let oc = shared.opencode();
                logger.info(&format!(
                    "opencode restarted (pid {}, restart {})",
                    child.pid, oc.restarts
                ));
                write(&shared);
            }
        }
    };
    keeper.stop().await;
    if let Some(sb) = &keeper.sandbox {
        sb.cleanup();
    }
    let _ = stop_server.send(());
    let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
    remove_record(&data_dir, std::process::id());
    if outcome.is_ok() {
        logger.info("daemon stopped");
    }
    outcome
}
