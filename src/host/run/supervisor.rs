//! Supervising a started run until a signal, a failure, or the dashboard
//! going away (SPEC §5.4, §5.7); the run record of a background supervisor.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::pairing::{self, ChildRecord, RunRecord};
use super::startup::{startup, Children, Ready};
use super::{Role, RunConfig, RunOutput};
use crate::host::health;
use crate::host::log::Logger;
use crate::host::readiness::{child_report, exit_hint};
use crate::host::signals::Signals;
use crate::host::supervise::Child;
use crate::host::HostError;
use crate::supply::manifest::OWPENBOT;
use crate::supply::resolve::Resolver;

/// How long `--check-events` waits for OpenCode's first event.
const EVENT_WAIT: Duration = Duration::from_secs(10);

/// The supervising roles: foreground and background supervisor.
pub(super) async fn supervise(
    config: &RunConfig,
    resolver: &Resolver,
    logger: &Logger,
    output: &dyn RunOutput,
    role: Role,
) -> Result<i32, HostError> {
    let mut signals = Signals::install()?;
    let children = Children::default();
    let started = tokio::select! {
        r = startup(config, resolver, logger, &children) => r,
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
    let outcome = after_ready(config, logger, output, role, &ready, &mut signals).await;
    children.stop(logger).await;
    // Sandbox mode (SPEC §5.9): a container is gone on stop and after --check.
    if let Some(sb) = &ready.plan.sandbox {
        sb.cleanup();
    }
    if role != Role::Foreground {
        let _ = std::fs::remove_file(pairing::record_path(&config.data_dir, &config.run_id));
    }
    if outcome.is_ok() {
        logger.info("stopped");
    }
    outcome
}

async fn after_ready(
    config: &RunConfig,
    logger: &Logger,
    output: &dyn RunOutput,
    role: Role,
    ready: &Ready,
    signals: &mut Signals,
) -> Result<i32, HostError> {
    if config.options.check {
        // Interrupted, the check did not pass: 130/143 like before ready.
        return tokio::select! {
            r = check(config, logger, output, ready) => r,
            (n, name) = signals.recv() => {
                logger.info(&format!("received {name} during the check; stopping"));
                Ok(128 + n)
            }
        };
    }
    match role {
        Role::Foreground => output.ready(&ready.pairing, ready.owpenbot_note.as_deref()),
        Role::Detached | Role::Attached => {
            let path = pairing::write_record(&ready.plan.data_dir, &record(ready))?;
            logger.info(&format!("ready; run record {}", path.display()));
        }
    }
    monitor(config, logger, role, ready, signals).await
}

/// `--check` (and `--check-events`): healthy, then pairing details, then stop.
async fn check(
    config: &RunConfig,
    logger: &Logger,
    output: &dyn RunOutput,
    ready: &Ready,
) -> Result<i32, HostError> {
    if config.options.check_events {
        let kind = health::first_event(
            &ready.plan.opencode_local_url(),
            &ready.plan.authorization(),
            EVENT_WAIT,
        )
        .await
        .map_err(|e| HostError::Runtime(e.to_string()))?;
        logger.info(&format!(
            "opencode event stream answered: first event `{kind}`"
        ));
    }
    output.ready(&ready.pairing, ready.owpenbot_note.as_deref());
    logger.info("check passed: every service was healthy; stopping");
    Ok(0)
}

/// Waits for a signal, the dashboard going away, or a child exiting.
async fn monitor(
    config: &RunConfig,
    logger: &Logger,
    role: Role,
    ready: &Ready,
    signals: &mut Signals,
) -> Result<i32, HostError> {
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
                if child.name == OWPENBOT && !config.options.owpenbot_required {
                    child.drain_output(Duration::from_millis(300)).await;
                    logger.warn(&format!(
                        "owpenbot (pid {}) exited ({exit}); OpenCode and the OpenWork server keep running (with --owpenbot-required this stops the run)",
                        child.pid
                    ));
                    watched.retain(|c| !Arc::ptr_eq(c, &child));
                    continue;
                }
                // Reported once, as the error; not also as a log line.
                let headline = format!("{} (pid {}) exited ({exit}); stopped everything", child.name, child.pid);
                let hint = |printed| exit_hint(exit, printed);
                return Err(HostError::Runtime(child_report(&headline, &child, logger, &hint).await));
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
        supervisor_start: crate::host::process::start_time(std::process::id()),
        started_at: chrono::DateTime::<chrono::Utc>::from(now).to_rfc3339(),
        started_unix_ms: unix_ms(ready.opencode.started_at),
        workspace: plan.workspace.display().to_string(),
        log: pairing::log_path(&plan.data_dir, &plan.run_id),
        remote_access: plan.options.remote_access,
        children,
        pairing: ready.pairing.clone(),
    }
}
