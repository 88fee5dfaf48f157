//! `openwrk daemon start|stop|status` and `openwrk instance dispose` (SPEC §6).
//!
//! `daemon start` re-executes openwrk with `--foreground` in its own session,
//! its output going to `<data dir>/daemon.log`, and waits for its record. The
//! foreground daemon holds `daemon.lock`, serves the router (`crate::daemon`)
//! and keeps one OpenCode alive: spawned like `start` spawns it (process
//! group, under a guardian, unified log), probed with the shared prober,
//! and restarted with exponential backoff (1 s … 30 s) whenever it exits.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::start::{self, background, Signals};
use super::Failure;
use crate::cli::{DaemonArgs, DaemonCommand, Global, LogFormat};
use crate::daemon::{self, DaemonRecord, LastExit, OpenCodeRecord, Shared};
use crate::health::{Endpoint, Prober};
use crate::log::Logger;
use crate::process;
use crate::supervise::{self, Child, Spec, SIGKILL, SIGTERM, STOP_GRACE};
use crate::supply::manifest::OPENCODE;
use crate::supply::resolve::Resolved;
use crate::workspaces::Store;

/// Set by `daemon start` for the background daemon: where its output goes.
const LOG_ENV: &str = "OPENWRK_DAEMON_LOG";
/// openwrk's own secrets in its environment; OpenCode gets its own explicitly.
const HIDDEN_FROM_OPENCODE: [&str; 5] = [
    "OPENWRK_OPENCODE_PASSWORD",
    "OPENWRK_OPENWORK_TOKEN",
    "OPENWRK_HOST_TOKEN",
    LOG_ENV,
    start::SUPERVISOR_ENV,
];
const OPENCODE_USERNAME: &str = "opencode";
const FIRST_RESTART_DELAY: Duration = Duration::from_secs(1);
/// The cap, as a multiple of the first delay.
const MAX_RESTART_FACTOR: u32 = 30;
/// Test-only: the first restart delay in milliseconds instead of 1 s (the
/// soak test restarts OpenCode a hundred times). Not a user setting.
const RESTART_DELAY_ENV: &str = "OPENWRK_TEST_RESTART_DELAY_MS";
/// Running this long counts as recovered: the next crash starts the backoff over.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How often the daemon probes a running OpenCode (for `healthy` in /health).
/// Exits are seen at once without probes; each probe is a line in OpenCode's
/// request log, so keep them rare.
const PROBE_EVERY: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);

pub async fn run(global: &Global, command: DaemonCommand) -> Result<i32, Failure> {
    match command {
        DaemonCommand::Start(args) if args.foreground => foreground(global, &args).await,
        DaemonCommand::Start(args) => launch(global, &args).await,
        DaemonCommand::Stop(_) => stop(global).await,
        DaemonCommand::Status(_) => status(global).await,
    }
}

fn failure(code: i32) -> impl Fn(String) -> Failure {
    move |message| Failure { message, code }
}

impl From<daemon::DaemonError> for Failure {
    fn from(e: daemon::DaemonError) -> Failure {
        Failure {
            message: e.to_string(),
            code: 1,
        }
    }
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

// ---------------------------------------------------------------- the daemon

/// OpenCode for the daemon, resolved like `start` resolves it.
async fn resolve_opencode(
    global: &Global,
    args: &DaemonArgs,
    logger: &Logger,
) -> Result<Resolved, Failure> {
    resolve_with(global, args.opencode_bin.clone(), logger).await
}

async fn resolve_with(
    global: &Global,
    opencode_bin: Option<PathBuf>,
    logger: &Logger,
) -> Result<Resolved, Failure> {
    let settings = super::settings(global, [opencode_bin, None, None])?;
    let resolver = super::resolver(
        global,
        settings,
        super::progress::Lines::Log(logger.clone()),
    )?;
    let loaded = if resolver.needs_manifest(OPENCODE) {
        Some(resolver.load_manifest(false).await?)
    } else {
        None
    };
    let resolved = resolver.resolve(OPENCODE, loaded.as_ref()).await?;
    if global.verbose {
        logger.info(&resolved.describe());
    }
    Ok(resolved)
}

/// Keeps one OpenCode process: start, wait until healthy, restart.
struct Keeper {
    /// Verified again before every start; replaced when it changed.
    binary: Mutex<Resolved>,
    /// To resolve OpenCode again when the verified binary changed on disk.
    global: Global,
    opencode_bin: Option<PathBuf>,
    cwd: PathBuf,
    run_id: String,
    password: String,
    timeout: Duration,
    prober: Prober,
    shared: Arc<Shared>,
    logger: Logger,
    /// The last port, reused on restart while it is free so the URL stays put.
    port: Mutex<Option<u16>>,
    /// The child being started or running, so a signal at any point stops it.
    current: Mutex<Option<Arc<Child>>>,
    /// Sandbox mode (SPEC §5.9) and the workspaces its OpenCode mounts.
    sandbox: Option<crate::sandbox::Sandbox>,
    mounted: Mutex<Vec<PathBuf>>,
}

impl Keeper {
    fn binary(&self) -> Resolved {
        self.binary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The OpenCode binary, verified again right before it runs (SPEC §3.4);
    /// one that changed since is moved aside and fetched again.
    async fn verified_binary(&self) -> Result<Resolved, Failure> {
        let binary = self.binary();
        let Err(e) = binary.recheck() else {
            return Ok(binary);
        };
        self.logger.warn(&format!(
            "{}; resolving OpenCode again",
            e.to_string().lines().next().unwrap_or_default()
        ));
        let fresh = resolve_with(&self.global, self.opencode_bin.clone(), &self.logger).await?;
        *self.binary.lock().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    fn spec(&self, binary: &Resolved, port: u16) -> Spec {
        let spec = Spec {
            name: OPENCODE,
            binary: binary.path.clone(),
            args: [
                "serve",
                "--hostname",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                // Without it OpenCode logs only to a file.
                "--print-logs",
                "--log-level",
                "INFO",
            ]
            .into_iter()
            .map(Into::into)
            .collect(),
            env: vec![
                ("OPENWRK_RUN_ID".into(), self.run_id.clone()),
                ("OPENCODE_SERVER_USERNAME".into(), OPENCODE_USERNAME.into()),
                ("OPENCODE_SERVER_PASSWORD".into(), self.password.clone()),
            ],
            env_remove: HIDDEN_FROM_OPENCODE
                .iter()
                .chain(crate::supervise::NEVER_INHERITED)
                .map(|s| s.to_string())
                .collect(),
            cwd: self.cwd.clone(),
        };
        // Sandbox mode (SPEC §5.9): inside, with every registered workspace mounted.
        match &self.sandbox {
            Some(sb) => sb.wrap_daemon(
                spec,
                &self.shared.store,
                &self.cwd,
                &self.mounted,
                &self.logger,
            ),
            None => spec,
        }
    }

    /// Resolves when the registered workspaces differ from those the
    /// sandboxed OpenCode mounts; never without a sandbox.
    async fn sandbox_changed(&self) {
        crate::sandbox::workspaces_changed(self.sandbox.is_some(), &self.mounted, || {
            crate::sandbox::daemon_workspaces(&self.shared.store, &self.cwd, None)
        })
        .await
    }

    /// The previous port if it is still free, else a new free one.
    fn pick_port(&self) -> Result<u16, Failure> {
        let previous = *self.port.lock().unwrap_or_else(|e| e.into_inner());
        let bind = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p));
        let listener = previous
            .and_then(|p| bind(p).ok())
            .map_or_else(|| bind(0), Ok)
            .map_err(|e| Failure {
                message: format!("cannot find a free port on 127.0.0.1 for OpenCode: {e}\nhint: check the loopback interface"),
                code: 1,
            })?;
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .map_err(|e| Failure {
                message: format!("cannot read the port bound for OpenCode: {e}"),
                code: 1,
            })?;
        *self.port.lock().unwrap_or_else(|e| e.into_inner()) = Some(port);
        Ok(port)
    }

    fn current(&self) -> Option<Arc<Child>> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn endpoint(&self, url: &str) -> Endpoint {
        Endpoint::OpenCode {
            base: url.to_string(),
            authorization: self.shared.opencode_auth.clone(),
        }
    }

    /// Starts OpenCode and waits until it is healthy; on failure it is stopped.
    async fn start(&self) -> Result<Arc<Child>, Failure> {
        let binary = self.verified_binary().await?;
        let port = self.pick_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let child = Child::spawn(&self.spec(&binary, port), &self.logger)
            .await
            .map_err(|e| Failure {
                message: e.to_string(),
                code: 1,
            })?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(child.clone());
        self.shared.update_opencode(|s| {
            s.pid = Some(child.pid);
            s.process_start = child.process_start;
            s.guardian = child.guardian;
            s.port = Some(port);
            s.url = Some(url.clone());
            s.healthy = false;
            s.serving = false;
        });
        let ready = start::wait_ready(
            &child,
            &self.endpoint(&url),
            &self.prober,
            self.timeout,
            &self.logger,
        )
        .await;
        match ready {
            Ok(probe) => {
                let version = match probe {
                    crate::health::Probe::Healthy { version: Some(v) } => Some(v),
                    _ => Some(binary.version.clone()).filter(|v| v != "unknown"),
                };
                self.logger.info(&format!(
                    "opencode is healthy at {url} (pid {}, version {}, {} ms)",
                    child.pid,
                    version.as_deref().unwrap_or("unknown"),
                    child.started.elapsed().as_millis()
                ));
                self.shared.update_opencode(|s| {
                    s.healthy = true;
                    s.serving = true;
                    s.version = version;
                });
                Ok(child)
            }
            Err(f) => {
                supervise::stop_all(std::slice::from_ref(&child), STOP_GRACE, &self.logger).await;
                let exit = child.exit().map(|e| e.to_string());
                self.shared.update_opencode(|s| {
                    s.pid = None;
                    s.serving = false;
                    s.healthy = false;
                    if let Some(status) = exit {
                        s.last_exit = Some(LastExit { status, at: now() });
                    }
                });
                Err(f)
            }
        }
    }

    /// One probe of the running OpenCode, for `healthy` in /health.
    async fn probe(&self) {
        let oc = self.shared.opencode();
        if let (true, Some(url)) = (oc.serving, oc.url) {
            let up = self.prober.probe(&self.endpoint(&url)).await.is_up();
            self.shared.update_opencode(|s| {
                if s.serving {
                    s.healthy = up;
                }
            });
        }
    }

    async fn stop(&self) {
        if let Some(child) = self.current() {
            supervise::stop_all(&[child], STOP_GRACE, &self.logger).await;
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// 1 s, 2 s, 4 s … capped at 30 s (scaled down by [`RESTART_DELAY_ENV`] in tests).
fn restart_delay(failures: u32) -> Duration {
    backoff(first_restart_delay(), failures)
}

fn backoff(first: Duration, failures: u32) -> Duration {
    first
        .saturating_mul(1u32 << failures.min(5))
        .min(first.saturating_mul(MAX_RESTART_FACTOR))
}

fn first_restart_delay() -> Duration {
    std::env::var(RESTART_DELAY_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map_or(FIRST_RESTART_DELAY, Duration::from_millis)
}

/// Takes `daemon.lock`, retrying briefly: `daemon status` takes it for an
/// instant to see whether a daemon runs.
async fn acquire_lock(data_dir: &Path) -> Result<daemon::DaemonLock, Failure> {
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        if let Some(lock) = daemon::try_lock(data_dir)? {
            return Ok(lock);
        }
        if Instant::now() > deadline {
            let at = daemon::read_record(data_dir)
                .ok()
                .flatten()
                .map(|r| format!(" at {} (pid {})", r.url, r.pid))
                .unwrap_or_default();
            return Err(Failure {
                message: format!(
                    "a daemon is already running for {}{at}\nhint: `openwrk daemon status` shows it; `openwrk daemon stop` stops it",
                    data_dir.display()
                ),
                code: 1,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Binds the API listener; a busy port the user named is a usage error.
fn bind(args: &DaemonArgs) -> Result<tokio::net::TcpListener, Failure> {
    let host = args.daemon_host.as_str();
    let port = args.daemon_port.unwrap_or(0);
    let listener = std::net::TcpListener::bind((host, port)).map_err(|e| Failure {
        message: if e.kind() == std::io::ErrorKind::AddrInUse {
            format!("port {port} is in use (--daemon-port / OPENWRK_DAEMON_PORT)\nhint: stop whatever listens on {host}:{port}, or pass another --daemon-port (omit it to pick a free port)")
        } else {
            format!("cannot listen on {host}:{port} (--daemon-host / --daemon-port): {e}\nhint: check the host and port")
        },
        code: 2,
    })?;
    let fail = |e: std::io::Error| Failure {
        message: format!("cannot listen on {host}:{port}: {e}"),
        code: 1,
    };
    listener.set_nonblocking(true).map_err(fail)?;
    tokio::net::TcpListener::from_std(listener).map_err(fail)
}

/// `daemon start --foreground`: the daemon itself (also what the background re-exec runs).
async fn foreground(global: &Global, args: &DaemonArgs) -> Result<i32, Failure> {
    let run_id = start::run_id(global)?;
    let logger = start::logger(global, &run_id);
    match serve_daemon(global, args, &run_id, &logger).await {
        // JSON logs stay parseable to the last line: the failure is a record too.
        Err(f) if global.log_format == LogFormat::Json => {
            logger.error(&f.message);
            Ok(f.code)
        }
        other => other,
    }
}

async fn serve_daemon(
    global: &Global,
    args: &DaemonArgs,
    run_id: &str,
    logger: &Logger,
) -> Result<i32, Failure> {
    let data_dir = super::data_dir(global)?;
    let _lock = acquire_lock(&data_dir).await?;
    let token = daemon::load_or_create_token(&data_dir)?;
    let listener = bind(args)?;
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| failure(1)(format!("cannot read the daemon's port: {e}")))?;
    let url = format!("http://{}:{port}", url_host(&args.daemon_host));
    let mut binary = resolve_opencode(global, args, logger).await?;
    // Sandbox mode (SPEC §5.9): checked before the daemon serves anything.
    let sandbox = crate::sandbox::prepare_daemon(
        &args.sandbox,
        global,
        &data_dir,
        run_id,
        &mut binary,
        logger,
    )
    .await?;
    let password = crate::credentials::token().map_err(|e| failure(1)(e.to_string()))?;
    let auth = crate::credentials::basic_auth(OPENCODE_USERNAME, &password);
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
    let mut server = tokio::spawn(daemon::serve(
        listener,
        daemon::app(shared.clone()),
        async move {
            let _ = server_stopped.await;
        },
    ));
    let keeper = Keeper {
        binary: Mutex::new(binary),
        global: global.clone(),
        opencode_bin: args.opencode_bin.clone(),
        // OpenCode needs a working directory; every request names its own.
        cwd: data_dir.clone(),
        run_id: run_id.to_string(),
        password,
        timeout: Duration::from_secs(args.startup_timeout),
        prober: Prober::new().map_err(|e| failure(1)(e.to_string()))?,
        shared: shared.clone(),
        logger: logger.clone(),
        port: Mutex::new(None),
        current: Mutex::new(None),
        sandbox,
        mounted: Mutex::new(Vec::new()),
    };
    let started_at = now();
    let process_start = crate::process::start_time(std::process::id());
    let record = |shared: &Shared| DaemonRecord {
        pid: std::process::id(),
        process_start,
        url: url.clone(),
        host: args.daemon_host.clone(),
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
            .map(crate::sandbox::Sandbox::info)
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
        if let Err(e) = daemon::write_record(&data_dir, &r) {
            logger.error(&e.to_string());
        }
        r
    };
    let written = write(&shared);
    logger.info(&format!(
        "daemon ready at {url} (pid {}); record {}",
        written.pid,
        daemon::record_path(&data_dir).display()
    ));
    if std::env::var_os(LOG_ENV).is_none() {
        print_started(global, &written);
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
                break 'run Err(failure(1)(format!("the daemon's HTTP server failed: {detail}\nhint: see {}", daemon::log_path(&data_dir).display())));
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
                    Err(f) => logger.error(&f.message),
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
                loop {
                    let delay = restart_delay(failures);
                    failures += 1;
                    logger.warn(&format!(
                        "opencode (pid {old}) exited ({exit}); restarting it in {:.1} s",
                        delay.as_secs_f64()
                    ));
                    write(&shared);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        (_, name) = signals.recv() => {
                            logger.info(&format!("received {name}; stopping"));
                            break 'run Ok(0);
                        }
                    }
                    shared.update_opencode(|s| s.restarts += 1);
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
                        Err(f) => logger.error(&f.message),
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
    daemon::remove_record(&data_dir, std::process::id());
    if outcome.is_ok() {
        logger.info("daemon stopped");
    }
    outcome
}

fn print_started(global: &Global, record: &DaemonRecord) {
    if global.json {
        println!(
            "{}",
            serde_json::to_string(record).expect("the record serializes")
        );
    } else {
        println!("{}", record.url);
    }
}

// ---------------------------------------------------------------- the launcher

/// `daemon start`: the daemon in the background; prints its URL once ready.
async fn launch(global: &Global, args: &DaemonArgs) -> Result<i32, Failure> {
    let data_dir = super::data_dir(global)?;
    let run_id = global
        .run_id
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_default();
    let logger = start::logger(global, &run_id);
    let already = |r: &DaemonRecord| {
        logger.info(&format!(
            "a daemon is already running at {} (pid {}); `openwrk daemon stop` stops it",
            r.url, r.pid
        ));
        print_started(global, r);
        Ok(0)
    };
    if let Some(r) = other_daemon(&data_dir, args).await? {
        return already(&r);
    }
    // Resolve here, so downloads show progress and bad flags fail in this terminal.
    resolve_opencode(global, args, &logger).await?;
    let log = daemon::log_path(&data_dir);
    let file = open_log(&log)?;
    let exe = std::env::current_exe()
        .map_err(|e| failure(1)(format!("cannot find the openwrk executable: {e}")))?;
    let mut cmd = std::process::Command::new(&exe);
    let out = file
        .try_clone()
        .map_err(|e| failure(1)(format!("cannot open {}: {e}", log.display())))?;
    cmd.args(std::env::args_os().skip(1))
        .arg("--foreground")
        .env(LOG_ENV, &log)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(file);
    crate::supervise::new_session(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| failure(1)(format!("cannot start the daemon {}: {e}", exe.display())))?;
    let mut signals = Signals::install()?;
    // The daemon enforces --startup-timeout itself; this only guards against a wedged one.
    let deadline =
        Instant::now() + Duration::from_secs(args.startup_timeout) + Duration::from_secs(60);
    let record = loop {
        if let Some(r) = daemon::read_record(&data_dir).ok().flatten() {
            if r.pid == child.id() {
                break r;
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Lost a race with another `daemon start`: that daemon is the answer.
            if let Some(r) = other_daemon(&data_dir, args).await? {
                return already(&r);
            }
            let mut message = format!(
                "the daemon stopped before it was ready ({})\n  log: {}\n",
                background::describe(status),
                log.display()
            );
            for line in background::tail_lines(&log, 30) {
                message.push_str(&format!("    {line}\n"));
            }
            message.push_str("hint: the log lines above say why");
            return Err(Failure {
                message,
                code: status.code().filter(|c| *c != 0).unwrap_or(1),
            });
        }
        if Instant::now() > deadline {
            supervise::signal_pid(child.id(), SIGTERM);
            return Err(failure(1)(format!(
                "the daemon did not become ready in time; stopped it\n  log: {}\nhint: the log says where it got stuck",
                log.display()
            )));
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            (n, name) = signals.recv() => {
                logger.info(&format!("received {name}; stopping the daemon"));
                supervise::signal_pid(child.id(), SIGTERM);
                let _ = tokio::task::spawn_blocking(move || child.wait()).await;
                return Ok(128 + n);
            }
        }
    };
    print_started(global, &record);
    logger.info(&format!(
        "daemon started (pid {}, OpenCode pid {}); log: {}; stop it with `openwrk daemon stop`",
        record.pid,
        record
            .opencode
            .pid
            .map_or_else(|| "-".to_string(), |p| p.to_string()),
        log.display()
    ));
    Ok(0)
}

/// The daemon already running for `data_dir`, waiting for its record if it
/// is still starting; `None` when none runs.
async fn other_daemon(data_dir: &Path, args: &DaemonArgs) -> Result<Option<DaemonRecord>, Failure> {
    let deadline = Instant::now() + Duration::from_secs(args.startup_timeout);
    while daemon::is_running(data_dir)? {
        if let Some(r) = daemon::read_record(data_dir)? {
            return Ok(Some(r));
        }
        if Instant::now() > deadline {
            return Err(failure(1)(format!(
                "another daemon for {} holds {} but never became ready\nhint: see {}; `openwrk daemon stop` or ending that process frees it",
                data_dir.display(),
                daemon::LOCK_FILE,
                daemon::log_path(data_dir).display()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(None)
}

/// The daemon's log, appended to (0600): a daemon that is still starting
/// may be writing to it, so it is never truncated.
fn open_log(path: &Path) -> Result<std::fs::File, Failure> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).map_err(|e| {
        failure(1)(format!(
            "cannot open the daemon log {}: {e}\nhint: check that the data dir is writable",
            path.display()
        ))
    })
}

// ---------------------------------------------------------------- stop, status

fn not_running(data_dir: &Path) -> Failure {
    Failure {
        message: format!(
            "no daemon is running for {}\nhint: start one with `openwrk daemon start`",
            data_dir.display()
        ),
        code: 1,
    }
}

/// The running daemon's record, or why there is none.
fn running_record(data_dir: &Path) -> Result<DaemonRecord, Failure> {
    if !daemon::is_running(data_dir)? {
        return Err(not_running(data_dir));
    }
    daemon::read_record(data_dir)?.ok_or_else(|| Failure {
        message: format!(
            "a daemon is starting for {} but is not ready yet\nhint: try again in a moment",
            data_dir.display()
        ),
        code: 1,
    })
}

/// Notes naming the record's pids that now belong to other processes.
fn stale_notes(r: &DaemonRecord) -> Vec<String> {
    let oc = &r.opencode;
    [
        ("daemon", Some(r.pid), r.process_start),
        ("OpenCode", oc.pid, oc.process_start),
        ("OpenCode's guardian", oc.guardian_pid, oc.guardian_start),
    ]
    .into_iter()
    .filter_map(|(role, pid, start)| {
        let pid = pid?;
        process::stale_note(role, pid, &process::check(pid, start))
    })
    .collect()
}

/// `daemon stop`: SIGTERM to the daemon (which stops OpenCode), SIGKILL to
/// whatever is left after the grace period; a pid is signalled only while it
/// still has its recorded start time.
async fn stop(global: &Global) -> Result<i32, Failure> {
    let data_dir = super::data_dir(global)?;
    if !daemon::is_running(&data_dir)? {
        return match daemon::read_record(&data_dir).ok().flatten() {
            Some(r) => {
                let _ = std::fs::remove_file(daemon::record_path(&data_dir));
                let text = format!(
                    "note: the daemon (pid {}) was no longer running; removed its record",
                    r.pid
                );
                report_stop(global, &r, "gone", &text, &stale_notes(&r));
                Ok(0)
            }
            None => Err(not_running(&data_dir)),
        };
    }
    let record = running_record(&data_dir)?;
    let found = process::check(record.pid, record.process_start);
    if found != process::Found::Same {
        let what = process::stale_note("daemon", record.pid, &found)
            .unwrap_or_else(|| format!("pid {} (daemon) is gone", record.pid));
        return Err(failure(1)(format!(
            "not stopping the daemon: {what}\n  record: {}\nhint: a daemon holds {} but its record does not name it; `openwrk daemon status` shows what answers, or end that process by hand",
            daemon::record_path(&data_dir).display(),
            daemon::LOCK_FILE
        )));
    }
    let oc = &record.opencode;
    let oc_ours = || {
        oc.pid
            .is_some_and(|p| process::is_same(p, oc.process_start))
    };
    let alive = || daemon::is_running(&data_dir).unwrap_or(false) || oc_ours();
    supervise::signal_pid(record.pid, SIGTERM);
    let deadline = Instant::now() + STOP_GRACE + Duration::from_secs(3);
    while alive() && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    let mut how = "";
    if alive() {
        if process::is_same(record.pid, record.process_start) {
            supervise::signal_pid(record.pid, SIGKILL);
        }
        if let Some(p) = oc.pid.filter(|_| oc_ours()) {
            supervise::signal_group(p, SIGKILL);
        }
        // OpenCode's guardian then stops what OpenCode left (well within 3 s).
        let deadline = Instant::now() + Duration::from_secs(3);
        while alive() && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        how = " (it needed SIGKILL)";
    }
    daemon::remove_record(&data_dir, record.pid);
    let with_oc = oc
        .pid
        .map_or_else(String::new, |p| format!(" and its OpenCode (pid {p})"));
    report_stop(
        global,
        &record,
        "stopped",
        &format!("stopped the daemon (pid {}){with_oc}{how}", record.pid),
        &[],
    );
    Ok(0)
}

fn report_stop(global: &Global, r: &DaemonRecord, state: &str, text: &str, notes: &[String]) {
    if global.json {
        println!(
            "{}",
            serde_json::json!({ "state": state, "pid": r.pid, "url": r.url, "notes": notes })
        );
    } else {
        println!("{text}");
        for n in notes {
            println!("note: {n}");
        }
    }
}

/// GET `<daemon>/health`, bounded.
async fn daemon_health(url: &str) -> Result<serde_json::Value, String> {
    let client = super::approvals::client(url, Duration::from_secs(2))?;
    let r = client
        .get(format!("{url}/health"))
        .send()
        .await
        .map_err(|e| crate::error_chain(&e))?;
    let status = r.status().as_u16();
    if status != 200 {
        return Err(format!("HTTP {status}"));
    }
    let body = r.bytes().await.map_err(|e| crate::error_chain(&e))?;
    serde_json::from_slice(&body).map_err(|e| format!("/health is not JSON: {e}"))
}

/// `daemon status`: the record plus live health; exit 1 unless all is well.
async fn status(global: &Global) -> Result<i32, Failure> {
    let data_dir = super::data_dir(global)?;
    let record = match running_record(&data_dir) {
        Ok(r) => r,
        Err(f) if global.json => {
            println!(
                "{}",
                serde_json::json!({ "running": false, "dataDir": data_dir, "message": f.message.lines().next() })
            );
            return Ok(1);
        }
        Err(f) => return Err(f),
    };
    let health = daemon_health(&record.url).await;
    let workspaces = Store::new(&data_dir).load().map(|w| w.len());
    let live = health.as_ref().ok().map(|h| h["opencode"].clone());
    let field = |k: &str| live.as_ref().map(|o| o[k].clone());
    let mut oc = record.opencode.clone();
    if let Some(o) = &live {
        oc.pid = o["pid"].as_u64().map(|p| p as u32);
        oc.url = o["url"].as_str().map(str::to_string);
        oc.port = oc
            .url
            .as_deref()
            .and_then(|u| u.rsplit(':').next())
            .and_then(|p| p.parse().ok());
        oc.restarts = o["restarts"].as_u64().unwrap_or(0) as u32;
        oc.version = o["version"].as_str().map(str::to_string).or(oc.version);
        oc.last_exit = serde_json::from_value(o["lastExit"].clone()).ok().flatten();
    }
    let oc_healthy = field("healthy").and_then(|v| v.as_bool()).unwrap_or(false);
    let ok = health.is_ok() && oc_healthy;
    if global.json {
        let doc = serde_json::json!({
            "running": true,
            "healthy": ok,
            "pid": record.pid,
            "url": record.url,
            "startedAt": record.started_at,
            "version": record.version,
            "dataDir": record.data_dir,
            "log": record.log,
            "error": health.as_ref().err(),
            "workspaces": workspaces.as_ref().ok(),
            "opencode": {
                "pid": oc.pid,
                "port": oc.port,
                "url": oc.url,
                "version": oc.version,
                "binary": oc.binary,
                "healthy": oc_healthy,
                "restarts": oc.restarts,
                "lastExit": oc.last_exit,
            },
            "sandbox": record.sandbox,
        });
        println!("{doc}");
    } else {
        let daemon_state = match &health {
            Ok(_) => "running".to_string(),
            Err(e) => format!("not answering ({e})"),
        };
        let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        println!(
            "daemon      {daemon_state}, pid {}, {}, since {}",
            record.pid, record.url, record.started_at
        );
        println!(
            "opencode    {}, pid {}, {}, version {}",
            if oc_healthy { "healthy" } else { "unhealthy" },
            dash(oc.pid.map(|p| p.to_string())),
            dash(oc.url.clone()),
            dash(oc.version.clone())
        );
        let last = oc.last_exit.as_ref().map_or_else(String::new, |l| {
            format!(" (last exit: {} at {})", l.status, l.at)
        });
        println!("restarts    {}{last}", oc.restarts);
        println!("sandbox     {}", record.sandbox.describe());
        match &workspaces {
            Ok(n) => println!("workspaces  {n} (`openwrk workspace list`)"),
            Err(e) => println!("workspaces  {}", e.to_string().lines().next().unwrap_or("")),
        }
        if let Some(log) = &record.log {
            println!("log         {}", log.display());
        }
    }
    Ok(if ok { 0 } else { 1 })
}

// ---------------------------------------------------------------- instance dispose

/// `instance dispose ID`: asks the running daemon to release OpenCode's instance.
pub async fn dispose(global: &Global, id: &str) -> Result<i32, Failure> {
    let data_dir = super::data_dir(global)?;
    let record = running_record(&data_dir).map_err(|f| Failure {
        message: f.message.replace(
            "\nhint:",
            "\n  `instance dispose` asks the running daemon, which holds the OpenCode instances\nhint:",
        ),
        code: f.code,
    })?;
    let token_path = data_dir.join(daemon::TOKEN_FILE);
    let token = daemon::read_token(&token_path)?.ok_or_else(|| {
        failure(1)(format!(
            "the daemon token {} is missing\nhint: restart the daemon (`openwrk daemon stop && openwrk daemon start`)",
            token_path.display()
        ))
    })?;
    let url = format!("{}/workspaces/{id}/dispose", record.url);
    let client =
        super::approvals::client(&record.url, Duration::from_secs(35)).map_err(failure(1))?;
    let response = client
        .post(&url)
        .bearer_auth(&token)
        .send()
        .await
        .map_err(|e| {
            failure(1)(format!(
                "the daemon at {} did not answer: {}\nhint: `openwrk daemon status` checks it",
                record.url,
                crate::error_chain(&e)
            ))
        })?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    let answer: serde_json::Value =
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body.clone()));
    match status {
        200..=299 => {
            if global.json {
                println!("{}", serde_json::json!({ "id": id, "opencode": answer }));
            } else {
                let path = Store::new(&data_dir)
                    .get(id)
                    .map(|w| format!(" ({})", w.path.display()))
                    .unwrap_or_default();
                println!("disposed OpenCode's instance of {id}{path}: {answer}");
            }
            Ok(0)
        }
        404 => Err(failure(1)(format!(
            "unknown workspace id {id} (the daemon at {} answered HTTP 404)\nhint: `openwrk workspace list` shows the ids",
            record.url
        ))),
        s => {
            let message = answer["message"].as_str().unwrap_or(&body);
            Err(failure(1)(format!(
                "disposing {id} failed: {url} answered HTTP {s}: {message}\nhint: `openwrk daemon status` shows whether OpenCode is healthy; the daemon log has details"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_from_one_to_thirty_seconds() {
        let d: Vec<u64> = (0..8)
            .map(|n| backoff(FIRST_RESTART_DELAY, n).as_secs())
            .collect();
        assert_eq!(d, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn wildcard_listeners_are_reached_over_loopback() {
        assert_eq!(url_host("0.0.0.0"), "127.0.0.1");
        assert_eq!(url_host("::"), "[::1]");
        assert_eq!(url_host("localhost"), "localhost");
    }
}
