//! `openwrk start`, `serve` and `stop` (SPEC §5): start the sidecars in order,
//! wait until they are healthy, print the pairing details, supervise them
//! until a signal or a failure, and stop them all.
//!
//! Three roles run this code:
//! - foreground (`serve`, `start --no-tui`, `--check`): openwrk supervises its
//!   children and logs to stderr;
//! - `--detach` and the dashboard start a *background supervisor*: openwrk
//!   itself, re-executed with [`SUPERVISOR_ENV`] set, in its own session, its
//!   output going to `<data dir>/runs/<run id>.log`. It writes the run record
//!   once healthy; the launching process reads it, prints the summary (or
//!   shows the dashboard) and can exit while the run goes on. This is what
//!   lets the dashboard's `d` key detach: children never outlive the process
//!   that supervises them (their guardians, or the Windows job, see to it).

pub(crate) mod background;
pub mod pairing;
mod plan;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Failure;
use crate::cli::{Global, LogFormat, StartArgs};
use crate::health::{self, Backoff, Endpoint, Probe, Prober};
use crate::log::{Context, LogSettings, Logger};
use crate::supervise::{self, Child, Exit, STOP_GRACE};
use crate::supply::manifest::{OPENCODE, OPENWORK_SERVER, OWPENBOT};
use pairing::{ChildRecord, Pairing, RunRecord};
use plan::Plan;

/// Set (to `detached` or `attached`) in the environment of a background supervisor.
pub const SUPERVISOR_ENV: &str = "OPENWRK_SUPERVISOR";
/// How long `--check-events` waits for OpenCode's first event.
const EVENT_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Foreground,
    /// Background supervisor of a `--detach` run.
    Detached,
    /// Background supervisor watched by a dashboard: its stdin closing without
    /// a `detach` line means the dashboard is gone and the run stops.
    Attached,
}

/// `openwrk start` (`dashboard` true) and `openwrk serve`.
pub async fn run(global: &Global, args: StartArgs, dashboard: bool) -> Result<i32, Failure> {
    let role = match std::env::var(SUPERVISOR_ENV).as_deref() {
        Ok("detached") => Role::Detached,
        Ok("attached") => Role::Attached,
        _ => Role::Foreground,
    };
    let run_id = run_id(global)?;
    pairing::check_run_id(&run_id)?;
    let logger = logger(global, &run_id);
    let result = match role {
        Role::Foreground if args.detach && !args.check => {
            background::detach(global, &args, &run_id, &logger).await
        }
        Role::Foreground if wants_dashboard(global, &args, dashboard, &logger) => {
            background::dashboard(global, &args, &run_id, &logger).await
        }
        role => supervise(global, &args, &run_id, &logger, role).await,
    };
    match result {
        // JSON logs stay parseable to the last line: the failure is a record too.
        Err(f) if global.log_format == LogFormat::Json => {
            logger.error(&f.message);
            Ok(f.code)
        }
        other => other,
    }
}

/// `openwrk stop [--run-id ID]`.
pub async fn stop(global: &Global, run_id: Option<String>) -> Result<i32, Failure> {
    background::stop(global, run_id.or_else(|| global.run_id.clone())).await
}

/// The dashboard needs a terminal on both ends and no machine-readable output.
fn wants_dashboard(global: &Global, args: &StartArgs, dashboard: bool, logger: &Logger) -> bool {
    use std::io::IsTerminal;
    let tui = (dashboard || args.tui) && !args.no_tui && !global.json && !args.check;
    let terminal = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    if tui && !terminal && args.tui {
        logger.warn("--tui needs a terminal on stdin and stdout; logging instead");
    }
    tui && terminal
}

pub(crate) fn logger(global: &Global, run_id: &str) -> Logger {
    use std::io::IsTerminal;
    Logger::stderr(LogSettings {
        format: global.log_format,
        color: crate::log::color_enabled(global.color, std::io::stderr().is_terminal()),
        verbose: global.verbose,
        context: Context {
            run_id: run_id.to_string(),
            version: crate::VERSION.to_string(),
            host_name: crate::log::host_name(),
        },
    })
}

/// SIGINT and SIGTERM; on Windows Ctrl-C and Ctrl-Break (like SIGINT) and
/// the console closing (like a hang-up).
pub(crate) struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    // Optional: a background openwrk has no console, and a handler that
    // cannot be installed there must not stop the run from starting.
    #[cfg(windows)]
    ctrl_c: Option<tokio::signal::windows::CtrlC>,
    #[cfg(windows)]
    ctrl_break: Option<tokio::signal::windows::CtrlBreak>,
    #[cfg(windows)]
    close: Option<tokio::signal::windows::CtrlClose>,
}

impl Signals {
    pub(crate) fn install() -> Result<Signals, Failure> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let fail = |e: std::io::Error| Failure {
                message: format!("cannot install signal handlers: {e}"),
                code: 1,
            };
            Ok(Signals {
                int: signal(SignalKind::interrupt()).map_err(fail)?,
                term: signal(SignalKind::terminate()).map_err(fail)?,
            })
        }
        #[cfg(windows)]
        {
            use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close};
            Ok(Signals {
                ctrl_c: ctrl_c().ok(),
                ctrl_break: ctrl_break().ok(),
                close: ctrl_close().ok(),
            })
        }
        #[cfg(not(any(unix, windows)))]
        Ok(Signals {})
    }

    /// Waits for a signal; returns its number (for the 128 + n exit code) and name.
    pub(crate) async fn recv(&mut self) -> (i32, &'static str) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => (2, "SIGINT"),
            _ = self.term.recv() => (15, "SIGTERM"),
        }
        // Windows gives a closing console about 5 s: stopping is quick there
        // (children are terminated, not asked).
        #[cfg(windows)]
        {
            // A listener that is missing never fires.
            macro_rules! next {
                ($l:expr) => {
                    async {
                        match $l.as_mut() {
                            Some(l) => l.recv().await,
                            None => std::future::pending().await,
                        }
                    }
                };
            }
            tokio::select! {
                _ = next!(self.ctrl_c) => (2, "Ctrl-C"),
                _ = next!(self.ctrl_break) => (2, "Ctrl-Break"),
                _ = next!(self.close) => (1, "console close"),
            }
        }
        #[cfg(not(any(unix, windows)))]
        std::future::pending().await
    }
}

/// Every child started so far, so a signal or failure at any point stops them all.
#[derive(Clone, Default)]
struct Children(Arc<Mutex<Vec<Arc<Child>>>>);

impl Children {
    /// Starts `spec` once `binary` verified again (SPEC §3.4: before every execution).
    async fn spawn(
        &self,
        spec: &supervise::Spec,
        binary: &crate::supply::resolve::Resolved,
        logger: &Logger,
    ) -> Result<Arc<Child>, Failure> {
        binary.recheck()?;
        let child = Child::spawn(spec, logger).await.map_err(|e| Failure {
            message: e.to_string(),
            code: 1,
        })?;
        logger.debug(&format!("started {} (pid {})", child.name, child.pid));
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child.clone());
        Ok(child)
    }

    fn all(&self) -> Vec<Arc<Child>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn stop(&self, logger: &Logger) {
        let all = self.all();
        if all.iter().any(|c| c.exit().is_none()) {
            logger.info("stopping the sidecars");
        }
        supervise::stop_all(&all, STOP_GRACE, logger).await;
    }
}

/// Everything running and healthy.
struct Ready {
    plan: Plan,
    pairing: Pairing,
    owpenbot_note: Option<String>,
    opencode: Arc<Child>,
    openwork: Arc<Child>,
    owpenbot: Option<Arc<Child>>,
    versions: [Option<String>; 3],
}

/// The supervising roles: foreground and background supervisor.
async fn supervise(
    global: &Global,
    args: &StartArgs,
    run_id: &str,
    logger: &Logger,
    role: Role,
) -> Result<i32, Failure> {
    let mut signals = Signals::install()?;
    let children = Children::default();
    let started = tokio::select! {
        r = startup(global, args, run_id, logger, &children) => r,
        (n, name) = signals.recv() => {
            logger.info(&format!("received {name} before everything was ready; stopping"));
            children.stop(logger).await;
            return Ok(128 + n);
        }
    };
    let ready = match started {
        Ok(r) => r,
        Err(f) => {
            children.stop(logger).await;
            return Err(f);
        }
    };
    let outcome = after_ready(global, args, logger, role, &ready, &mut signals).await;
    children.stop(logger).await;
    if role != Role::Foreground {
        let _ = std::fs::remove_file(pairing::record_path(&ready.plan.data_dir, run_id));
    }
    if outcome.is_ok() {
        logger.info("stopped");
    }
    outcome
}

/// `--run-id` / `OPENWRK_RUN_ID`, else a new UUIDv7.
pub(crate) fn run_id(global: &Global) -> Result<String, Failure> {
    match global.run_id.clone().filter(|s| !s.is_empty()) {
        Some(id) => Ok(id),
        None => crate::credentials::uuid_v7().map_err(|e| Failure {
            message: e.to_string(),
            code: 1,
        }),
    }
}

async fn after_ready(
    global: &Global,
    args: &StartArgs,
    logger: &Logger,
    role: Role,
    ready: &Ready,
    signals: &mut Signals,
) -> Result<i32, Failure> {
    if args.check {
        // Interrupted, the check did not pass: 130/143 like before ready.
        return tokio::select! {
            r = check(global, args, logger, ready) => r,
            (n, name) = signals.recv() => {
                logger.info(&format!("received {name} during the check; stopping"));
                Ok(128 + n)
            }
        };
    }
    match role {
        Role::Foreground => print_pairing(global, ready),
        Role::Detached | Role::Attached => {
            let path = pairing::write_record(&ready.plan.data_dir, &record(ready))?;
            logger.info(&format!("ready; run record {}", path.display()));
        }
    }
    monitor(args, logger, role, ready, signals).await
}

fn print_pairing(global: &Global, ready: &Ready) {
    use std::io::Write;
    let text = if global.json {
        serde_json::to_string(&ready.pairing).expect("pairing serializes") + "\n"
    } else {
        pairing::text(
            &ready.pairing,
            ready.plan.args.remote_access,
            ready.owpenbot_note.as_deref(),
        )
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// `--check` (and `--check-events`): healthy, then pairing details, then stop.
async fn check(
    global: &Global,
    args: &StartArgs,
    logger: &Logger,
    ready: &Ready,
) -> Result<i32, Failure> {
    if args.check_events {
        let kind = health::first_event(
            &ready.plan.opencode_local_url(),
            &ready.plan.authorization(),
            EVENT_WAIT,
        )
        .await
        .map_err(|e| Failure {
            message: e.to_string(),
            code: 1,
        })?;
        logger.info(&format!(
            "opencode event stream answered: first event `{kind}`"
        ));
    }
    print_pairing(global, ready);
    logger.info("check passed: every service was healthy; stopping");
    Ok(0)
}

/// Waits for a signal, the dashboard going away, or a child exiting.
async fn monitor(
    args: &StartArgs,
    logger: &Logger,
    role: Role,
    ready: &Ready,
    signals: &mut Signals,
) -> Result<i32, Failure> {
    let mut watched: Vec<Arc<Child>> = [
        Some(&ready.opencode),
        Some(&ready.openwork),
        ready.owpenbot.as_ref(),
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect();
    let controller = controller_gone(role);
    tokio::pin!(controller);
    loop {
        let exits = futures_util::future::select_all(watched.iter().cloned().map(|c| {
            Box::pin(async move {
                let exit = c.exited().await;
                (c, exit)
            })
        }));
        tokio::select! {
            (_, name) = signals.recv() => {
                logger.info(&format!("received {name}; stopping"));
                return Ok(0);
            }
            _ = &mut controller => {
                logger.info("the dashboard went away; stopping");
                return Ok(0);
            }
            ((child, exit), _, _) = exits => {
                if child.name == OWPENBOT && !args.owpenbot_required {
                    child.drain_output(Duration::from_millis(300)).await;
                    logger.warn(&format!(
                        "owpenbot (pid {}) exited ({exit}); OpenCode and the OpenWork server keep running (with --owpenbot-required this stops the run)",
                        child.pid
                    ));
                    watched.retain(|c| !Arc::ptr_eq(c, &child));
                    continue;
                }
                let headline = format!("{} (pid {}) exited ({exit}); stopped everything", child.name, child.pid);
                logger.error(&headline);
                return Err(Failure {
                    message: child_report(&headline, &child, logger, "see its log lines above; run again with --verbose for more detail").await,
                    code: 1,
                });
            }
        }
    }
}

/// Resolves when an attached supervisor's dashboard is gone (stdin closed
/// without a `detach` line); never for the other roles.
async fn controller_gone(role: Role) {
    if role != Role::Attached {
        return std::future::pending().await;
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A plain thread: stdin is a pipe and blocking reads are all it needs.
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::stdin().lock().lines() {
            match line {
                Ok(l) if l.trim() == "detach" => return,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(());
    });
    if rx.await.is_err() {
        // Detached: the sender was dropped without a message.
        std::future::pending::<()>().await;
    }
}

/// Resolves, starts OpenCode, waits for it, then the OpenWork server and owpenbot.
async fn startup(
    global: &Global,
    args: &StartArgs,
    run_id: &str,
    logger: &Logger,
    children: &Children,
) -> Result<Ready, Failure> {
    let mut plan = plan::prepare(global, args, run_id, logger).await?;
    let prober = Prober::new().map_err(|e| Failure {
        message: e.to_string(),
        code: 1,
    })?;
    let timeout = Duration::from_secs(args.startup_timeout);

    plan.release_port(OPENCODE);
    let opencode = children
        .spawn(&plan.opencode_spec(), &plan.bins.opencode, logger)
        .await?;
    let endpoint = Endpoint::OpenCode {
        base: plan.opencode_local_url(),
        authorization: plan.authorization(),
    };
    let oc = wait_ready(&opencode, &endpoint, &prober, timeout, logger).await?;
    let oc_version = version_of(&oc, &plan.bins.opencode.version);
    logger.info(&format!(
        "opencode is healthy at {} (pid {}, version {}, {} ms)",
        plan.opencode_local_url(),
        opencode.pid,
        oc_version.as_deref().unwrap_or("unknown"),
        opencode.started.elapsed().as_millis()
    ));

    plan.release_port(OPENWORK_SERVER);
    let openwork = children
        .spawn(&plan.openwork_spec(), &plan.bins.openwork, logger)
        .await?;
    plan.release_port(OWPENBOT);
    let owpenbot = match plan.owpenbot_spec() {
        Some(spec) => {
            let bin = plan.bins.owpenbot.as_ref().expect("a spec has a binary");
            Some(children.spawn(&spec, bin, logger).await?)
        }
        None => None,
    };
    let ow_endpoint = Endpoint::OpenWork {
        base: plan.openwork_local_url(),
    };
    let bot_wait = async {
        match (&owpenbot, plan.owpenbot_url()) {
            (Some(child), Some(base)) => Some(
                wait_ready(
                    child,
                    &Endpoint::Owpenbot { base },
                    &prober,
                    timeout,
                    logger,
                )
                .await,
            ),
            _ => None,
        }
    };
    let (ow, bot) = tokio::join!(
        wait_ready(&openwork, &ow_endpoint, &prober, timeout, logger),
        bot_wait
    );
    let ow = ow?;
    let ow_version = version_of(&ow, &plan.bins.openwork.version);
    logger.info(&format!(
        "openwork-server is healthy at {} (pid {}, version {})",
        plan.openwork_local_url(),
        openwork.pid,
        ow_version.as_deref().unwrap_or("unknown")
    ));
    let (owpenbot, owpenbot_note) = match (owpenbot, bot) {
        (Some(child), Some(Ok(probe))) => {
            let note = match &probe {
                Probe::Degraded { detail } => {
                    logger.warn(&format!("owpenbot is running but degraded: {detail}"));
                    format!("degraded: {detail}")
                }
                _ => {
                    logger.info(&format!("owpenbot is healthy (pid {})", child.pid));
                    "healthy".to_string()
                }
            };
            (Some(child), Some(note))
        }
        (Some(_), Some(Err(f))) if args.owpenbot_required => return Err(f),
        (Some(child), Some(Err(f))) => {
            logger.warn(&format!(
                "{}\nOpenCode and the OpenWork server keep running without owpenbot (pass --owpenbot-required to fail instead)",
                f.message
            ));
            child.signal_group(supervise::SIGTERM);
            (None, Some("failed to start".to_string()))
        }
        _ => (None, None),
    };
    let bot_version = plan
        .bins
        .owpenbot
        .as_ref()
        .map(|r| r.version.clone())
        .filter(|v| v != "unknown");
    let pairing = make_pairing(&plan, oc_version.clone(), owpenbot.is_some());
    Ok(Ready {
        versions: [oc_version, ow_version, bot_version],
        plan,
        pairing,
        owpenbot_note,
        opencode,
        openwork,
        owpenbot,
    })
}

/// The version a health answer reported, else the resolved one (unless unknown).
fn version_of(probe: &Probe, resolved: &str) -> Option<String> {
    match probe {
        Probe::Healthy { version: Some(v) } => Some(v.clone()),
        _ => Some(resolved.to_string()).filter(|v| v != "unknown"),
    }
}

fn make_pairing(plan: &Plan, opencode_version: Option<String>, owpenbot: bool) -> Pairing {
    let c = &plan.creds;
    let opencode_url = plan.opencode_public_url();
    Pairing {
        run_id: plan.run_id.clone(),
        workspace: plan.workspace.display().to_string(),
        openwork: pairing::OpenWorkPairing {
            url: plan.openwork_public_url(),
            token: c.openwork_token.clone(),
            host_token: c.host_token.clone(),
        },
        opencode: pairing::OpenCodePairing {
            url: opencode_url.clone(),
            username: c.opencode_username.clone(),
            password: c.opencode_password.clone(),
            version: opencode_version,
        },
        owpenbot: pairing::OwpenbotPairing {
            enabled: owpenbot,
            health_port: plan.owpenbot_port.filter(|_| owpenbot),
        },
        attach: pairing::attach_command(&opencode_url, &c.opencode_username, &c.opencode_password),
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn record(ready: &Ready) -> RunRecord {
    let plan = &ready.plan;
    let ports = [
        (Some(plan.opencode.port), Some(plan.opencode_local_url())),
        (Some(plan.openwork.port), Some(plan.openwork_local_url())),
        (plan.owpenbot_port, plan.owpenbot_url()),
    ];
    let bins = [
        Some(&plan.bins.opencode),
        Some(&plan.bins.openwork),
        plan.bins.owpenbot.as_ref(),
    ];
    let children = [
        Some(&ready.opencode),
        Some(&ready.openwork),
        ready.owpenbot.as_ref(),
    ]
    .into_iter()
    .zip(ports)
    .zip(bins)
    .zip(ready.versions.iter())
    .filter_map(|(((child, (port, local_url)), bin), version)| {
        let (child, bin) = (child?, bin?);
        Some(ChildRecord {
            name: child.name.to_string(),
            pid: child.pid,
            pgid: child.pid,
            port,
            local_url,
            version: version.clone(),
            binary: bin.path.clone(),
            started_unix_ms: unix_ms(child.started_at),
            process_start: child.process_start,
            guardian_pid: child.guardian.map(|g| g.0),
            guardian_start: child.guardian.and_then(|g| g.1),
        })
    })
    .collect();
    let now = SystemTime::now();
    RunRecord {
        run_id: plan.run_id.clone(),
        supervisor_pid: std::process::id(),
        supervisor_start: crate::process::start_time(std::process::id()),
        started_at: chrono::DateTime::<chrono::Utc>::from(now).to_rfc3339(),
        started_unix_ms: unix_ms(ready.opencode.started_at),
        workspace: plan.workspace.display().to_string(),
        log: pairing::log_path(&plan.data_dir, &plan.run_id),
        remote_access: plan.args.remote_access,
        children,
        pairing: ready.pairing.clone(),
    }
}

/// Probes until healthy (or degraded-but-running), the child exits, or `timeout` passes.
pub(crate) async fn wait_ready(
    child: &Child,
    endpoint: &Endpoint,
    prober: &Prober,
    timeout: Duration,
    logger: &Logger,
) -> Result<Probe, Failure> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = Backoff::default();
    loop {
        let reason = tokio::select! {
            exit = child.exited() => return Err(exited_during_startup(child, exit, logger).await),
            probe = prober.hedged(endpoint, deadline) => match probe {
                Probe::Down { reason } => reason,
                up => return Ok(up),
            },
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            let headline = format!(
                "{} did not become healthy within {} s (last probe of {}: {reason})",
                child.name,
                timeout.as_secs(),
                endpoint.url()
            );
            logger.error(&headline);
            return Err(Failure {
                message: child_report(
                    &headline,
                    child,
                    logger,
                    "raise --startup-timeout (OPENWRK_STARTUP_TIMEOUT) if it is only slow; otherwise its log lines say why",
                )
                .await,
                code: 1,
            });
        }
        let pause = backoff.next().unwrap_or_default().min(deadline - now);
        tokio::select! {
            exit = child.exited() => return Err(exited_during_startup(child, exit, logger).await),
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

async fn exited_during_startup(child: &Child, exit: Exit, logger: &Logger) -> Failure {
    let headline = format!("{} exited during startup ({exit})", child.name);
    logger.error(&headline);
    Failure {
        message: child_report(
            &headline,
            child,
            logger,
            "its last log lines above say why; run the binary by hand to see more",
        )
        .await,
        code: 1,
    }
}

/// A failure naming the child, its binary and its last log lines.
async fn child_report(headline: &str, child: &Child, logger: &Logger, hint: &str) -> String {
    child.drain_output(Duration::from_millis(500)).await;
    let mut out = format!("{headline}\n  binary: {}\n", child.binary.display());
    let tail = logger.tail(child.name);
    if tail.is_empty() {
        out.push_str(&format!("  {} printed nothing\n", child.name));
    } else {
        out.push_str(&format!(
            "  last {} log lines of {}:\n",
            tail.len(),
            child.name
        ));
        for line in tail {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out.push_str(&format!("hint: {hint}"));
    out
}
