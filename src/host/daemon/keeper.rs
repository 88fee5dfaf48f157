//! Keeping one OpenCode alive for the daemon (SPEC §6): spawned like `start`
//! spawns it (under a guardian, into the unified log), verified again before
//! every start, probed, and restarted with exponential backoff (1 s … 30 s).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{LastExit, Shared, OPENCODE_USERNAME};
use crate::host::health::{Endpoint, Prober};
use crate::host::log::Logger;
use crate::host::readiness::wait_ready;
use crate::host::supervise::{self, Child, Spec, STOP_GRACE};
use crate::host::HostError;
use crate::supply::manifest::OPENCODE;
use crate::supply::resolve::{Resolved, Resolver};

/// openwrk's own secrets in its environment; OpenCode gets its own explicitly.
const HIDDEN_FROM_OPENCODE: [&str; 5] = [
    "OPENWRK_OPENCODE_PASSWORD",
    "OPENWRK_OPENWORK_TOKEN",
    "OPENWRK_HOST_TOKEN",
    super::LOG_ENV,
    crate::host::run::SUPERVISOR_ENV,
];
const FIRST_RESTART_DELAY: Duration = Duration::from_secs(1);
/// The cap, as a multiple of the first delay.
const MAX_RESTART_FACTOR: u32 = 30;
/// Test-only: the first restart delay in milliseconds instead of 1 s (the
/// soak test restarts OpenCode a hundred times). Not a user setting.
const RESTART_DELAY_ENV: &str = "OPENWRK_TEST_RESTART_DELAY_MS";
/// Running this long counts as recovered: the next crash starts the backoff over.
pub(super) const STABLE_AFTER: Duration = Duration::from_secs(60);

/// OpenCode for the daemon, resolved like `start` resolves it.
pub async fn resolve_opencode(resolver: &Resolver, logger: &Logger) -> Result<Resolved, HostError> {
    let loaded = if resolver.needs_manifest(OPENCODE) {
        Some(resolver.load_manifest(false).await?)
    } else {
        None
    };
    let resolved = resolver.resolve(OPENCODE, loaded.as_ref()).await?;
    logger.debug(&resolved.describe());
    Ok(resolved)
}

/// Keeps one OpenCode process: start, wait until healthy, restart.
pub(super) struct Keeper {
    /// Verified again before every start; replaced when it changed.
    pub binary: Mutex<Resolved>,
    /// To resolve OpenCode again when the verified binary changed on disk.
    pub resolver: Resolver,
    /// The data dir: what the sandbox must never expose.
    pub data_dir: PathBuf,
    /// OpenCode's working directory (`--opencode-workdir`, else the data
    /// dir); every request names its own workspace anyway.
    pub workdir: PathBuf,
    /// Log level and hot reload, as for `start`.
    pub settings: crate::host::opencode::OpenCodeSettings,
    pub run_id: String,
    pub password: String,
    pub timeout: Duration,
    pub prober: Prober,
    pub shared: Arc<Shared>,
    pub logger: Logger,
    /// The last port, reused on restart while it is free so the URL stays put.
    pub port: Mutex<Option<u16>>,
    /// The child being started or running, so a signal at any point stops it.
    pub current: Mutex<Option<Arc<Child>>>,
    /// Sandbox mode (SPEC §5.9) and the workspaces its OpenCode mounts.
    pub sandbox: Option<crate::host::sandbox::Sandbox>,
    pub mounted: Mutex<Vec<PathBuf>>,
}

impl Keeper {
    pub(super) fn binary(&self) -> Resolved {
        self.binary
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The OpenCode binary, verified again right before it runs (SPEC §3.4);
    /// one that changed since is moved aside and fetched again.
    async fn verified_binary(&self) -> Result<Resolved, HostError> {
        let binary = self.binary();
        let Err(e) = binary.recheck() else {
            return Ok(binary);
        };
        self.logger.warn(&format!(
            "{}; resolving OpenCode again",
            e.to_string().lines().next().unwrap_or_default()
        ));
        let fresh = resolve_opencode(&self.resolver, &self.logger).await?;
        *self.binary.lock().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    fn spec(&self, binary: &Resolved, port: u16) -> Spec {
        let spec = Spec {
            name: OPENCODE,
            binary: binary.path.clone(),
            args: self
                .settings
                .serve_args("127.0.0.1", port)
                .into_iter()
                .map(Into::into)
                .collect(),
            env: [
                ("OPENWRK_RUN_ID".into(), self.run_id.clone()),
                ("OPENCODE_SERVER_USERNAME".into(), OPENCODE_USERNAME.into()),
                ("OPENCODE_SERVER_PASSWORD".into(), self.password.clone()),
            ]
            .into_iter()
            .chain(self.settings.env())
            .collect(),
            env_remove: HIDDEN_FROM_OPENCODE
                .iter()
                .chain(crate::host::supervise::NEVER_INHERITED)
                .map(|s| s.to_string())
                .collect(),
            cwd: self.workdir.clone(),
        };
        // Sandbox mode (SPEC §5.9): inside, with every registered workspace mounted.
        match &self.sandbox {
            Some(sb) => sb.wrap_daemon(
                spec,
                &self.shared.store,
                &self.data_dir,
                &self.mounted,
                &self.logger,
            ),
            None => spec,
        }
    }

    /// Resolves when the registered workspaces differ from those the
    /// sandboxed OpenCode mounts; never without a sandbox.
    pub(super) async fn sandbox_changed(&self) {
        crate::host::sandbox::workspaces_changed(self.sandbox.is_some(), &self.mounted, || {
            crate::host::sandbox::daemon_workspaces(&self.shared.store, &self.data_dir, None)
        })
        .await
    }

    /// The previous port if it is still free, else a new free one.
    fn pick_port(&self) -> Result<u16, HostError> {
        let previous = *self.port.lock().unwrap_or_else(|e| e.into_inner());
        let bind = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p));
        let listener = previous
            .and_then(|p| bind(p).ok())
            .map_or_else(|| bind(0), Ok)
            .map_err(|e| HostError::Runtime(format!("cannot find a free port on 127.0.0.1 for OpenCode: {e}\nhint: check the loopback interface")))?;
        let port = listener.local_addr().map(|a| a.port()).map_err(|e| {
            HostError::Runtime(format!("cannot read the port bound for OpenCode: {e}"))
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
    pub(super) async fn start(&self) -> Result<Arc<Child>, HostError> {
        let binary = self.verified_binary().await?;
        let port = self.pick_port()?;
        let url = format!("http://127.0.0.1:{port}");
        let child = Child::spawn(&self.spec(&binary, port), &self.logger)
            .await
            .map_err(|e| HostError::Runtime(e.to_string()))?;
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
        let ready = wait_ready(
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
                    crate::host::health::Probe::Healthy { version: Some(v) } => Some(v),
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
    pub(super) async fn probe(&self) {
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

    pub(super) async fn stop(&self) {
        if let Some(child) = self.current() {
            supervise::stop_all(&[child], STOP_GRACE, &self.logger).await;
        }
    }
}

pub(super) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// 1 s, 2 s, 4 s … capped at 30 s (scaled down by [`RESTART_DELAY_ENV`] in tests).
pub(super) fn restart_delay(failures: u32) -> Duration {
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
}
