//! Waiting for a started sidecar to become healthy (SPEC §5.3), and the
//! report that names it, its binary and its last log lines when it does not.

use std::time::Duration;

use crate::host::health::{Backoff, Endpoint, Probe, Prober};
use crate::host::log::Logger;
use crate::host::supervise::{Child, Exit};
use crate::host::HostError;

/// Probes until healthy (or degraded-but-running), the child exits, or `timeout` passes.
pub async fn wait_ready(
    child: &Child,
    endpoint: &Endpoint,
    prober: &Prober,
    timeout: Duration,
    logger: &Logger,
) -> Result<Probe, HostError> {
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
            return Err(HostError::Runtime(child_report(
                    &headline,
                    child,
                    logger,
                    "raise --startup-timeout (OPENWRK_STARTUP_TIMEOUT) if it is only slow; otherwise its log lines say why",
                )
                .await));
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
    logger.error(&headline);
    HostError::Runtime(
        child_report(
            &headline,
            child,
            logger,
            "its last log lines above say why; run the binary by hand to see more",
        )
        .await,
    )
}

/// A failure naming the child, its binary and its last log lines.
pub async fn child_report(headline: &str, child: &Child, logger: &Logger, hint: &str) -> String {
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
