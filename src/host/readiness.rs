//! Waiting for a started sidecar to become healthy (SPEC §5.3), saying every
//! few seconds what is still starting, and the report that names it, its
//! binary and its last log lines when it does not.

use std::sync::Mutex;
use std::time::Duration;

use crate::host::health::{Backoff, Endpoint, Probe, Prober};
use crate::host::log::{Logger, Severity};
use crate::host::supervise::{Child, Exit};
use crate::host::HostError;

/// How often a sidecar that is not healthy yet is named, without --verbose:
/// a hung OpenCode must not mean a minute of silence.
const STILL_STARTING_EVERY: Duration = Duration::from_secs(5);

/// Probes until healthy (or degraded-but-running), the child exits, or
/// `timeout` passes; says every few seconds that it is still starting.
pub async fn wait_ready(
    child: &Child,
    endpoint: &Endpoint,
    prober: &Prober,
    timeout: Duration,
    logger: &Logger,
) -> Result<Probe, HostError> {
    let last = Mutex::new(String::new());
    let waiting = probe_until_ready(child, endpoint, prober, timeout, logger, &last);
    tokio::pin!(waiting);
    let every = STILL_STARTING_EVERY;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ready = &mut waiting => return ready,
            _ = tick.tick() => {
                let reason = last.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let probe = if reason.is_empty() {
                    String::new()
                } else {
                    format!("; health check: {reason}")
                };
                logger.log_about(
                    Severity::Info,
                    Some(child.name),
                    &format!(
                        "still starting: {} ({} s{probe})",
                        child.name,
                        child.started.elapsed().as_secs()
                    ),
                );
            }
        }
    }
}

async fn probe_until_ready(
    child: &Child,
    endpoint: &Endpoint,
    prober: &Prober,
    timeout: Duration,
    logger: &Logger,
    last: &Mutex<String>,
) -> Result<Probe, HostError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = Backoff::default();
    let mut note = |reason: &str| {
        reason.clone_into(&mut last.lock().unwrap_or_else(|e| e.into_inner()));
    };
    loop {
        let reason = tokio::select! {
            exit = child.exited() => return Err(exited_during_startup(child, exit, logger).await),
            probe = prober.hedged_noting(endpoint, deadline, &mut note) => match probe {
                Probe::Down { reason } => reason,
                up => return Ok(up),
            },
        };
        reason.clone_into(&mut last.lock().unwrap_or_else(|e| e.into_inner()));
        let now = tokio::time::Instant::now();
        if now >= deadline {
            // Reported once, as the error; not also as a log line.
            let headline = format!(
                "{} did not become healthy within {} s (last probe of {}: {reason})",
                child.name,
                timeout.as_secs(),
                endpoint.url()
            );
            return Err(HostError::Runtime(
                child_report(&headline, child, logger, &|printed| {
                    let why = if printed {
                        "otherwise its last log lines (above) say where it got stuck"
                    } else {
                        "it printed nothing, so run it by hand to see whether it starts at all"
                    };
                    format!("raise --startup-timeout (OPENWRK_STARTUP_TIMEOUT) if it is only slow; {why}")
                })
                .await,
            ));
        }
        let pause = backoff.next().unwrap_or_default().min(deadline - now);
        tokio::select! {
            exit = child.exited() => return Err(exited_during_startup(child, exit, logger).await),
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

async fn exited_during_startup(child: &Child, exit: Exit, logger: &Logger) -> HostError {
    let headline = format!("{} exited during startup ({exit})", child.name);
    HostError::Runtime(
        child_report(&headline, child, logger, &|printed| {
            exit_hint(exit, printed)
        })
        .await,
    )
}

/// What to do about a child that exited, from what is known: its exit and
/// whether it printed anything.
pub fn exit_hint(exit: Exit, printed: bool) -> String {
    match (exit.code, exit.signal, printed) {
        (Some(126), _, _) => "the shell could not execute it (exit 126): check that the binary is executable and built for this platform".into(),
        (Some(127), _, _) => "a program it needs was not found (exit 127): check the binary and what it runs".into(),
        (None, Some(_), _) => "something killed it (an out-of-memory killer, a sandbox, another user); its last log lines show how far it got".into(),
        (_, _, true) => "its last log lines (above) say why; run the binary by hand to see more".into(),
        (_, _, false) => "it printed nothing before exiting; run the binary by hand (or with --verbose) to see why".into(),
    }
}

/// A failure naming the child, its binary and its last log lines; `hint` is
/// told whether it printed any.
pub async fn child_report(
    headline: &str,
    child: &Child,
    logger: &Logger,
    hint: &dyn Fn(bool) -> String,
) -> String {
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
        for line in &tail {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out.push_str(&format!("hint: {}", hint(!tail.is_empty())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_follow_the_facts() {
        let code = |c| Exit {
            code: Some(c),
            signal: None,
        };
        assert!(exit_hint(code(1), false).starts_with("it printed nothing"));
        assert!(exit_hint(code(1), true).starts_with("its last log lines"));
        assert!(exit_hint(code(127), true).contains("not found"));
        let killed = Exit {
            code: None,
            signal: Some(9),
        };
        assert!(exit_hint(killed, false).starts_with("something killed it"));
    }
}
