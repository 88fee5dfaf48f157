//! Starting the sidecars (SPEC §5.1): OpenCode and the OpenWork server
//! together (the real OpenWork server answers `/health` before OpenCode is
//! up), owpenbot once OpenCode is healthy (its health reports OpenCode's).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::pairing::{self, Pairing};
use super::plan::{self, Plan};
use super::RunConfig;
use crate::host::health::{Endpoint, Probe, Prober};
use crate::host::log::Logger;
use crate::host::readiness::wait_ready;
use crate::host::supervise::{self, Child, STOP_GRACE};
use crate::host::HostError;
use crate::supply::manifest::{OPENCODE, OPENWORK_SERVER, OWPENBOT};
use crate::supply::resolve::Resolver;

/// How long a failed OpenWork server waits for a starting OpenCode to fail
/// too (a report drains the child's last log lines for up to 0.5 s).
const OPENCODE_REPORT: Duration = Duration::from_secs(1);

/// Every child started so far, so a signal or failure at any point stops them all.
#[derive(Clone, Default)]
pub(super) struct Children(Arc<Mutex<Vec<Arc<Child>>>>);

impl Children {
    /// Starts `spec` once `binary` verified again (SPEC §3.4: before every execution).
    async fn spawn(
        &self,
        spec: &supervise::Spec,
        binary: &crate::supply::resolve::Resolved,
        logger: &Logger,
    ) -> Result<Arc<Child>, HostError> {
        binary.recheck()?;
        let child = Child::spawn(spec, logger)
            .await
            .map_err(|e| HostError::Runtime(e.to_string()))?;
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

    pub(super) async fn stop(&self, logger: &Logger) {
        let all = self.all();
        if all.iter().any(|c| c.exit().is_none()) {
            logger.info("stopping the sidecars");
        }
        supervise::stop_all(&all, STOP_GRACE, logger).await;
    }
}

/// Everything running and healthy.
pub(super) struct Ready {
    pub plan: Plan,
    pub pairing: Pairing,
    pub owpenbot_note: Option<String>,
    pub opencode: Arc<Child>,
    pub openwork: Arc<Child>,
    pub owpenbot: Option<Arc<Child>>,
    pub versions: [Option<String>; 3],
}

/// Resolves, starts OpenCode and the OpenWork server, then owpenbot once OpenCode is healthy.
pub(super) async fn startup(
    config: &RunConfig,
    resolver: &Resolver,
    logger: &Logger,
    children: &Children,
) -> Result<Ready, HostError> {
    let mut plan = plan::prepare(config, resolver, logger).await?;
    let prober = Prober::new().map_err(|e| HostError::Runtime(e.to_string()))?;
    let timeout = Duration::from_secs(config.options.startup_timeout);

    // We chose OpenCode's port and credentials, so the OpenWork server's
    // flags are complete before OpenCode is up: neither waits for the other.
    plan.release_port(OPENCODE);
    plan.release_port(OPENWORK_SERVER);
    let bot_port = plan.take_port(OWPENBOT);
    let (oc_spec, ow_spec) = (plan.opencode_spec(), plan.openwork_spec());
    let (opencode, openwork) = tokio::join!(
        children.spawn(&oc_spec, &plan.bins.opencode, logger),
        children.spawn(&ow_spec, &plan.bins.openwork, logger),
    );
    // Both were awaited, so whichever started is in `children` and is stopped
    // with the rest; OpenCode's failure is named first.
    let (opencode, openwork) = (opencode?, openwork?);

    let shared = &plan;
    let opencode_up = AtomicBool::new(false);
    let opencode_side = async {
        let endpoint = Endpoint::OpenCode {
            base: shared.opencode_local_url(),
            authorization: shared.authorization(),
        };
        let oc = wait_ready(&opencode, &endpoint, &prober, timeout, logger).await?;
        opencode_up.store(true, Ordering::SeqCst);
        let oc_version = version_of(&oc, &shared.bins.opencode.version);
        logger.info(&format!(
            "opencode is healthy at {} (pid {}, version {}, {} ms)",
            shared.opencode_local_url(),
            opencode.pid,
            oc_version.as_deref().unwrap_or("unknown"),
            opencode.started.elapsed().as_millis()
        ));
        // owpenbot's health reports OpenCode's, so it starts only now.
        drop(bot_port);
        let owpenbot = match shared.owpenbot_spec() {
            Some(spec) => {
                let bin = shared.bins.owpenbot.as_ref().expect("a spec has a binary");
                Some(children.spawn(&spec, bin, logger).await?)
            }
            None => None,
        };
        let bot = match (&owpenbot, shared.owpenbot_url()) {
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
        };
        Ok::<_, HostError>((oc_version, owpenbot, bot))
    };
    let openwork_side = async {
        let endpoint = Endpoint::OpenWork {
            base: shared.openwork_local_url(),
        };
        let ow = wait_ready(&openwork, &endpoint, &prober, timeout, logger).await?;
        let ow_version = version_of(&ow, &shared.bins.openwork.version);
        logger.info(&format!(
            "openwork-server is healthy at {} (pid {}, version {})",
            shared.openwork_local_url(),
            openwork.pid,
            ow_version.as_deref().unwrap_or("unknown")
        ));
        Ok::<_, HostError>(ow_version)
    };
    let ((oc_version, owpenbot, bot), ow_version) =
        both_ready(&opencode_up, opencode_side, openwork_side).await?;

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
        (Some(_), Some(Err(f))) if config.options.owpenbot_required => return Err(f),
        (Some(child), Some(Err(f))) => {
            logger.warn(&format!(
                "{}\nOpenCode and the OpenWork server keep running without owpenbot (pass --owpenbot-required to fail instead)",
                f
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

/// Waits for both sides at once; the first failure ends the wait. When the
/// OpenWork server fails while OpenCode is still starting, OpenCode gets a
/// moment to fail too and is then the one named: a broken environment
/// (or a bad binary) takes both down, and OpenCode is the root the other
/// depends on.
async fn both_ready<A, B>(
    opencode_up: &AtomicBool,
    opencode_side: impl std::future::Future<Output = Result<A, HostError>>,
    openwork_side: impl std::future::Future<Output = Result<B, HostError>>,
) -> Result<(A, B), HostError> {
    tokio::pin!(opencode_side, openwork_side);
    let (mut a, mut b) = (None, None);
    loop {
        tokio::select! {
            biased;
            r = &mut opencode_side, if a.is_none() => a = Some(r?),
            r = &mut openwork_side, if b.is_none() => match r {
                Ok(v) => b = Some(v),
                Err(e) if a.is_none() && !opencode_up.load(Ordering::SeqCst) => {
                    return match tokio::time::timeout(OPENCODE_REPORT, &mut opencode_side).await {
                        Ok(Err(oc)) => Err(oc),
                        _ => Err(e),
                    };
                }
                Err(e) => return Err(e),
            },
        }
        if let (Some(_), Some(_)) = (&a, &b) {
            return Ok((a.take().expect("set"), b.take().expect("set")));
        }
    }
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
        sandbox: plan
            .sandbox
            .as_ref()
            .map(crate::host::sandbox::Sandbox::info)
            .unwrap_or_default(),
    }
}
