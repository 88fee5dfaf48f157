//! The router daemon's sandbox (SPEC §5.9, §6): one sandboxed OpenCode for
//! every registered workspace, restarted when the list changes so that its
//! mounts match it exactly.

use std::path::{Path, PathBuf};

use super::{check_exposed, env, prepare, Context, Sandbox, SandboxArgs};
use crate::host::log::Logger;
use crate::host::supervise::Spec;
use crate::host::HostError;
use crate::supply::resolve::Resolved;

/// The sandbox of the router daemon's OpenCode: every registered workspace,
/// persist dir `<data dir>/sandbox/daemon`; `opencode` as for [`super::prepare_run`].
pub async fn prepare_daemon(
    args: &SandboxArgs,
    resolver: &crate::supply::resolve::Resolver,
    data_dir: &Path,
    run_id: &str,
    opencode: &mut Resolved,
    logger: &Logger,
) -> Result<Option<Sandbox>, HostError> {
    let store = crate::host::workspaces::Store::new(data_dir);
    let ctx = Context {
        resolver,
        data_dir,
        workspaces: daemon_workspaces(&store, data_dir, Some(logger)),
        persist_key: "daemon".into(),
        run_id,
        opencode,
        logger,
    };
    let sandbox = prepare(args, ctx).await?;
    if let Some(linux) = sandbox.as_ref().and_then(|s| s.linux_opencode.clone()) {
        *opencode = linux;
    }
    Ok(sandbox)
}

/// The daemon's workspaces that its sandboxed OpenCode mounts: every
/// registered one that still exists and exposes nothing it must not (those
/// are left out, with a warning when `logger` is given).
pub fn daemon_workspaces(
    store: &crate::host::workspaces::Store,
    data_dir: &Path,
    logger: Option<&Logger>,
) -> Vec<PathBuf> {
    let listed = match store.load() {
        Ok(list) => list,
        Err(e) => {
            if let Some(l) = logger {
                l.warn(&format!("sandbox: cannot read the workspaces: {e}"));
            }
            return Vec::new();
        }
    };
    let mut out: Vec<PathBuf> = Vec::new();
    for w in listed {
        if !w.path.is_dir() {
            continue;
        }
        match check_exposed("workspace", &w.path, data_dir) {
            Ok(()) => out.push(w.path),
            Err(f) => {
                if let Some(l) = logger {
                    l.warn(&format!(
                        "{}; it is not mounted",
                        f.to_string().lines().next().unwrap_or_default()
                    ));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Polls (every second) until `current()` differs from what `mounted`
/// holds; never resolves when `enabled` is false.
pub async fn workspaces_changed(
    enabled: bool,
    mounted: &std::sync::Mutex<Vec<PathBuf>>,
    current: impl Fn() -> Vec<PathBuf>,
) {
    if !enabled {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let now = current();
        if *mounted.lock().unwrap_or_else(|e| e.into_inner()) != now {
            return;
        }
    }
}

impl Sandbox {
    /// The daemon's OpenCode spec inside the sandbox, with every registered
    /// workspace mounted (remembered in `mounted`) and `/openwrk/home` as
    /// its directory.
    pub fn wrap_daemon(
        &self,
        spec: Spec,
        store: &crate::host::workspaces::Store,
        data_dir: &Path,
        mounted: &std::sync::Mutex<Vec<PathBuf>>,
        logger: &Logger,
    ) -> Spec {
        let now = daemon_workspaces(store, data_dir, Some(logger));
        *mounted.lock().unwrap_or_else(|e| e.into_inner()) = now.clone();
        self.wrap(spec, &now, Path::new(env::HOME))
    }
}
