//! Sandbox mode (SPEC §5.9): OpenCode, and so every command its agent runs,
//! confined to the workspace.
//!
//! - `bwrap` (Linux, bubblewrap, no daemon): `bwrap.rs`;
//! - `docker` / `podman` / `container` (Apple's CLI): `container.rs`;
//! - extra mounts, the allowlist file and the blocked patterns: `mounts.rs`;
//! - the environment inside: `env.rs`.
//!
//! The sandbox changes only OpenCode's spawn spec ([`Sandbox::wrap`]): the
//! guardian (`crate::host::guardian`) still starts it, so the no-orphan guarantee
//! holds for everything inside; a container that outlives its client is
//! removed by the guardian's cleanup command ([`CLEANUP_ENV`]), by `stop`
//! and by `--check` completion. The OpenWork server and owpenbot run
//! outside, unchanged.

pub mod bwrap;
pub mod container;
mod daemon;
pub mod env;
pub mod mounts;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::log::Logger;
use crate::host::supervise::Spec;
use crate::host::HostError;
use crate::supply::resolve::Resolved;

pub use daemon::{daemon_workspaces, prepare_daemon, workspaces_changed};

/// Where the verified OpenCode binary appears inside every sandbox.
pub const BINARY: &str = "/openwrk/bin/opencode";

/// Set in a guardian's environment: the command (fields separated by
/// [`CLEANUP_SEP`]) it runs after the sidecar's tree is gone, whatever ended
/// it (`docker rm -f openwrk-<run id>`). Not passed on to the sidecar.
pub const CLEANUP_ENV: &str = "OPENWRK_SANDBOX_CLEANUP";
pub const CLEANUP_SEP: char = '\u{1f}';

/// The sandbox settings (the `--sandbox*` flags of SPEC §4).
#[derive(Debug, Clone, Default)]
pub struct SandboxArgs {
    pub sandbox: Mode,
    /// Base image for docker/podman/container [default: debian:stable-slim].
    pub sandbox_image: Option<String>,
    /// OpenCode's HOME and XDG dirs [default: <data dir>/sandbox/<workspace id>].
    pub sandbox_persist_dir: Option<PathBuf>,
    /// Extra mounts `hostPath:containerPath[:ro|rw]`.
    pub sandbox_mounts: Vec<String>,
}

/// Which sandbox (`--sandbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// No sandbox: OpenCode runs with the operator's rights.
    #[default]
    None,
    /// bwrap on Linux when installed, else docker, else podman, else container on macOS.
    Auto,
    /// bubblewrap (Linux, no daemon).
    Bwrap,
    /// A Docker container.
    Docker,
    /// A Podman container.
    Podman,
    /// Apple's `container` CLI (macOS).
    Container,
}

/// A sandbox that runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bwrap,
    Docker,
    Podman,
    Container,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Bwrap => "bwrap",
            Kind::Docker => "docker",
            Kind::Podman => "podman",
            Kind::Container => "container",
        }
    }

    /// The command-line tool it needs.
    pub fn tool(self) -> &'static str {
        self.as_str()
    }

    pub fn is_container(self) -> bool {
        self != Kind::Bwrap
    }

    /// What to install when the tool is missing.
    fn install_hint(self) -> &'static str {
        match self {
            Kind::Bwrap => "install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`; Fedora: `dnf install bubblewrap`; Arch: `pacman -S bubblewrap`)",
            Kind::Docker => "install Docker Engine (Linux) or Docker Desktop (macOS, Windows) and make sure `docker` is on PATH",
            Kind::Podman => "install Podman (`apt-get install podman`, `dnf install podman`, `brew install podman`) and make sure `podman` is on PATH",
            Kind::Container => "install Apple's `container` CLI (macOS 26 on Apple silicon: https://github.com/apple/container/releases) and run `container system start`",
        }
    }
}

/// The default base image of the container sandboxes.
pub const DEFAULT_IMAGE: &str = "debian:stable-slim";

/// What pairing details, run records and `status` say about the sandbox
/// (`"sandbox"` in `--json` pairing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxInfo {
    /// `none`, `bwrap`, `docker`, `podman` or `container`.
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<PathBuf>,
    /// The container's name (`openwrk-<run id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persist_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<String>,
}

impl Default for SandboxInfo {
    fn default() -> Self {
        SandboxInfo {
            mode: "none".into(),
            tool: None,
            name: None,
            image: None,
            persist_dir: None,
            mounts: Vec::new(),
        }
    }
}

impl SandboxInfo {
    /// One line for the pairing summary and `status`.
    pub fn describe(&self) -> String {
        if self.mode == "none" {
            return "none (OpenCode and its agent's commands run with your user's rights; see --sandbox)".into();
        }
        let mut out = self.mode.clone();
        if let Some(image) = &self.image {
            out.push_str(&format!(", image {image}"));
        }
        if let Some(name) = &self.name {
            out.push_str(&format!(", container {name}"));
        }
        if let Some(dir) = &self.persist_dir {
            out.push_str(&format!(", persist dir {}", dir.display()));
        }
        if !self.mounts.is_empty() {
            out.push_str(&format!(", mounts {}", self.mounts.join(" ")));
        }
        out
    }

    /// Removes a recorded container (`openwrk stop`); bwrap leaves nothing to remove.
    pub fn cleanup(&self) {
        if let (Some(tool), Some(name)) = (&self.tool, &self.name) {
            if let Some(kind) = kind_named(&self.mode).filter(|k| k.is_container()) {
                container::remove(kind, tool, name);
            }
        }
    }
}

fn kind_named(s: &str) -> Option<Kind> {
    [Kind::Bwrap, Kind::Docker, Kind::Podman, Kind::Container]
        .into_iter()
        .find(|k| k.as_str() == s)
}

/// What the sandbox needs to know about the run.
pub struct Context<'a> {
    pub resolver: &'a crate::supply::resolve::Resolver,
    pub data_dir: &'a Path,
    /// The directories mounted read-write at their own path (one for a run,
    /// every registered workspace for the daemon).
    pub workspaces: Vec<PathBuf>,
    /// Default persist dir name under `<data dir>/sandbox/`: the workspace
    /// id, or `daemon`.
    pub persist_key: String,
    pub run_id: &'a str,
    /// The verified OpenCode.
    pub opencode: &'a Resolved,
    pub logger: &'a Logger,
}

/// A prepared sandbox.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub kind: Kind,
    pub tool: PathBuf,
    pub image: Option<String>,
    pub persist_dir: PathBuf,
    pub mounts: Vec<mounts::Mount>,
    /// Containers: `openwrk-<run id>`.
    pub name: Option<String>,
    /// The OpenCode binary mounted inside, when it is not the host's
    /// (a Linux build for a container on macOS).
    pub linux_opencode: Option<Resolved>,
}

fn usage(message: String) -> HostError {
    HostError::Usage(message)
}

/// Picks the sandbox kind and its tool; `auto` prefers bwrap on Linux.
pub fn choose(
    mode: Mode,
    find: impl Fn(&str) -> Option<PathBuf>,
) -> Result<Option<(Kind, PathBuf)>, HostError> {
    let explicit = match mode {
        Mode::None => return Ok(None),
        Mode::Bwrap => Some(Kind::Bwrap),
        Mode::Docker => Some(Kind::Docker),
        Mode::Podman => Some(Kind::Podman),
        Mode::Container => Some(Kind::Container),
        Mode::Auto => None,
    };
    if let Some(kind) = explicit {
        if kind == Kind::Bwrap && !cfg!(target_os = "linux") {
            return Err(usage(
                "--sandbox bwrap needs Linux (bubblewrap uses Linux namespaces)\nhint: use --sandbox docker, podman or container (macOS), or --sandbox auto".into(),
            ));
        }
        return match find(kind.tool()) {
            Some(tool) => Ok(Some((kind, tool))),
            None => Err(usage(format!(
                "--sandbox {}: `{}` is not on PATH\nhint: {}",
                kind.as_str(),
                kind.tool(),
                kind.install_hint()
            ))),
        };
    }
    let mut order = Vec::new();
    if cfg!(target_os = "linux") {
        order.push(Kind::Bwrap);
    }
    order.extend([Kind::Docker, Kind::Podman]);
    if cfg!(target_os = "macos") {
        order.push(Kind::Container);
    }
    for kind in &order {
        if let Some(tool) = find(kind.tool()) {
            return Ok(Some((*kind, tool)));
        }
    }
    let hints: Vec<String> = order
        .iter()
        .map(|k| format!("  {}: {}", k.as_str(), k.install_hint()))
        .collect();
    Err(usage(format!(
        "--sandbox auto found no sandbox tool on PATH (looked for {})\nhint: install one of them:\n{}",
        order.iter().map(|k| k.tool()).collect::<Vec<_>>().join(", "),
        hints.join("\n")
    )))
}

fn find_tool(name: &str) -> Option<PathBuf> {
    crate::supply::resolve::find_on_path(&format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// The operator's HOME, canonical.
fn host_home() -> Option<PathBuf> {
    std::env::var_os(if cfg!(windows) { "USERPROFILE" } else { "HOME" })
        .filter(|v| !v.is_empty())
        .and_then(|h| PathBuf::from(h).canonicalize().ok())
}

/// A directory mounted read-write (a workspace, the persist dir) must not
/// expose the host HOME, the data dir or credentials.
pub(crate) fn check_exposed(what: &str, dir: &Path, data_dir: &Path) -> Result<(), HostError> {
    let refuse = |rule: String| {
        usage(format!(
            "--sandbox: the {what} {} cannot be mounted: {rule}\nhint: use a directory that holds only what the agent may see (see the README's \"Sandbox\" section)",
            dir.display()
        ))
    };
    if let Some(p) = mounts::blocked_pattern(dir) {
        return Err(refuse(format!("rule `blocked pattern {p}`")));
    }
    if dir == Path::new("/") || dir.starts_with(mounts::RESERVED) {
        return Err(refuse(format!(
            "rule `reserved path`: it is / or under {}",
            mounts::RESERVED
        )));
    }
    if let Some(home) = host_home() {
        if home.starts_with(dir) {
            return Err(refuse(format!(
                "rule `host HOME`: it contains your HOME {}",
                home.display()
            )));
        }
    }
    let data = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    if data.starts_with(dir) {
        return Err(refuse(format!(
            "rule `data dir`: it contains openwrk's data dir {}",
            data.display()
        )));
    }
    if what == "workspace" && dir.starts_with(&data) {
        return Err(refuse(format!(
            "rule `data dir`: it is inside openwrk's data dir {}",
            data.display()
        )));
    }
    Ok(())
}

/// The sandbox of a `start`/`serve` run in `workspace`. When the sandbox
/// needs another OpenCode build (a Linux container on macOS), `opencode`
/// becomes it, so that it is verified again before every start.
pub async fn prepare_run(
    args: &SandboxArgs,
    resolver: &crate::supply::resolve::Resolver,
    (data_dir, workspace): (&Path, &Path),
    run_id: &str,
    opencode: &mut Resolved,
    logger: &Logger,
) -> Result<Option<Sandbox>, HostError> {
    let ctx = Context {
        resolver,
        data_dir,
        workspaces: vec![workspace.to_path_buf()],
        persist_key: crate::host::workspaces::workspace_id(workspace),
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

/// Decides the sandbox for a run (or the daemon) and checks that it works:
/// the tool is there, the mounts are allowed, the persist dir exists, and a
/// trial run of `opencode --version` inside succeeds. `None` without `--sandbox`.
pub(crate) async fn prepare(
    args: &SandboxArgs,
    ctx: Context<'_>,
) -> Result<Option<Sandbox>, HostError> {
    let Some((kind, tool)) = choose(args.sandbox, find_tool)? else {
        return Ok(None);
    };
    if kind == Kind::Bwrap && args.sandbox_image.is_some() {
        ctx.logger
            .warn("--sandbox-image has no effect with bwrap (it uses the host's /usr)");
    }
    if args.sandbox == Mode::Auto {
        ctx.logger.info(&format!(
            "--sandbox auto: using {} ({})",
            kind.as_str(),
            tool.display()
        ));
    }
    let binary = &ctx.opencode.path;
    if let Some(ext) = binary
        .extension()
        .and_then(|e| e.to_str())
        .filter(|e| matches!(*e, "js" | "mjs" | "cjs" | "ts"))
    {
        return Err(usage(format!(
            "--sandbox {}: OpenCode {} is a .{ext} script; a sandbox runs a compiled OpenCode binary\nhint: drop --opencode-bin (openwrk then uses the verified release binary) or pass a compiled one",
            kind.as_str(),
            binary.display()
        )));
    }
    for ws in &ctx.workspaces {
        check_exposed("workspace", ws, ctx.data_dir)?;
    }
    let persist = args
        .sandbox_persist_dir
        .clone()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| ctx.data_dir.join("sandbox").join(&ctx.persist_key));
    let persist = std::path::absolute(&persist).unwrap_or(persist);
    crate::fsutil::create_private_dir_all(&persist).map_err(|e| HostError::Runtime(format!(
            "cannot create the sandbox persist dir {}: {e}\nhint: pass --sandbox-persist-dir (OPENWRK_SANDBOX_PERSIST_DIR) with a writable directory",
            persist.display()
        )))?;
    let persist = persist.canonicalize().unwrap_or(persist);
    if args.sandbox_persist_dir.is_some() {
        check_exposed("persist dir", &persist, ctx.data_dir)?;
    }
    let mounts = mounts::validate(
        &args.sandbox_mounts,
        &mounts::allowlist_path(),
        &ctx.workspaces,
    )
    .map_err(|e| match e.code {
        2 => HostError::Usage(e.message),
        3 => HostError::Config(e.message),
        _ => HostError::Runtime(e.message),
    })?;
    let (image, name, linux_opencode) = if kind.is_container() {
        let image = args
            .sandbox_image
            .clone()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_IMAGE.to_string());
        let linux = container::linux_opencode(ctx.resolver, ctx.opencode, ctx.logger).await?;
        (Some(image), Some(format!("openwrk-{}", ctx.run_id)), linux)
    } else {
        (None, None, None)
    };
    let sandbox = Sandbox {
        kind,
        tool,
        image,
        persist_dir: persist,
        mounts,
        name,
        linux_opencode,
    };
    sandbox
        .trial(&ctx.opencode.path, &ctx.workspaces, ctx.logger)
        .await?;
    ctx.logger
        .info(&format!("sandbox: {}", sandbox.info().describe()));
    Ok(Some(sandbox))
}

impl Sandbox {
    /// The OpenCode binary mounted inside: the spec's (which the caller
    /// replaced by [`Sandbox::linux_opencode`] when there is one, so that it
    /// is verified again before every start), else the given one.
    pub fn opencode_binary<'a>(&'a self, host: &'a Path) -> &'a Path {
        self.linux_opencode
            .as_ref()
            .map_or(host, |r| r.path.as_path())
    }

    pub fn info(&self) -> SandboxInfo {
        SandboxInfo {
            mode: self.kind.as_str().into(),
            tool: Some(self.tool.clone()),
            name: self.name.clone(),
            image: self.image.clone(),
            persist_dir: Some(self.persist_dir.clone()),
            mounts: self.mounts.iter().map(|m| m.given.clone()).collect(),
        }
    }

    /// Runs `opencode --version` inside, bounded: proves that the sandbox can
    /// be created here and that it can run the verified binary.
    async fn trial(
        &self,
        host_binary: &Path,
        workspaces: &[PathBuf],
        logger: &Logger,
    ) -> Result<(), HostError> {
        let binary = self.opencode_binary(host_binary).to_path_buf();
        let binary = std::path::absolute(&binary).unwrap_or(binary);
        match self.kind {
            Kind::Bwrap => bwrap::trial(self, &binary, workspaces, logger).await,
            _ => container::trial(self, &binary, logger).await,
        }
    }

    /// OpenCode's spawn spec, run inside the sandbox. `spec` is what runs
    /// without one (its binary the verified OpenCode, its argv `serve
    /// --hostname H --port P …`); `cwd` is OpenCode's directory inside.
    pub fn wrap(&self, spec: Spec, workspaces: &[PathBuf], cwd: &Path) -> Spec {
        let binary = self.opencode_binary(&spec.binary).to_path_buf();
        let binary = std::path::absolute(&binary).unwrap_or(binary);
        let mut wrapped = match self.kind {
            Kind::Bwrap => bwrap::wrap(self, spec, &binary, workspaces, cwd),
            _ => container::wrap(self, spec, &binary, workspaces, cwd),
        };
        wrapped.env_remove.retain(|k| k != CLEANUP_ENV);
        wrapped
    }

    /// Removes what may be left of a container (after a stop, a `--check`);
    /// nothing to do for bwrap.
    pub fn cleanup(&self) {
        self.info().cleanup();
    }
}

/// The sandbox of the run or daemon whose OpenCode or OpenWork URL is one of
/// `urls`, from the records in `data_dir` (for `openwrk status`).
pub fn for_urls(data_dir: &Path, urls: &[String]) -> Option<SandboxInfo> {
    let same = |a: &str| {
        urls.iter()
            .any(|u| u.trim_end_matches('/') == a.trim_end_matches('/'))
    };
    for (_, record) in crate::host::run::pairing::list_records(data_dir) {
        let Some(r) = record else { continue };
        let local = r.children.iter().filter_map(|c| c.local_url.as_deref());
        if same(&r.pairing.opencode.url)
            || same(&r.pairing.openwork.url)
            || local.into_iter().any(same)
        {
            return Some(r.pairing.sandbox.clone());
        }
    }
    let d = crate::host::daemon::read_record(data_dir).ok().flatten()?;
    let oc = d.opencode.url.clone().unwrap_or_default();
    (same(&d.url) || same(&oc)).then(|| d.sandbox.clone())
}

/// Splits a guardian's cleanup command.
pub fn cleanup_argv(value: &str) -> Vec<OsString> {
    value
        .split(CLEANUP_SEP)
        .filter(|s| !s.is_empty())
        .map(OsString::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finder(present: &'static [&'static str]) -> impl Fn(&str) -> Option<PathBuf> {
        move |name| {
            present
                .contains(&name)
                .then(|| PathBuf::from(format!("/usr/bin/{name}")))
        }
    }

    #[test]
    fn auto_prefers_bwrap_on_linux_then_docker_then_podman() {
        assert!(choose(Mode::None, finder(&["bwrap"])).unwrap().is_none());
        let pick = |p| choose(Mode::Auto, finder(p)).unwrap().unwrap().0;
        if cfg!(target_os = "linux") {
            assert_eq!(pick(&["bwrap", "docker", "podman"]), Kind::Bwrap);
        }
        assert_eq!(pick(&["docker", "podman"]), Kind::Docker);
        assert_eq!(pick(&["podman"]), Kind::Podman);
        let none = choose(Mode::Auto, finder(&[])).unwrap_err();
        assert_eq!(none.exit_code(), 2);
        assert!(
            none.to_string().contains("docker: install Docker"),
            "{}",
            none.to_string()
        );
        if cfg!(target_os = "linux") {
            assert!(
                none.to_string().contains("apt-get install bubblewrap"),
                "{}",
                none.to_string()
            );
        }
    }

    #[test]
    fn an_explicit_mode_without_its_tool_names_what_to_install() {
        let e = choose(Mode::Podman, finder(&["docker"])).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains("`podman` is not on PATH"),
            "{}",
            e.to_string()
        );
        assert!(
            e.to_string().contains("install Podman"),
            "{}",
            e.to_string()
        );
        if cfg!(target_os = "linux") {
            let e = choose(Mode::Bwrap, finder(&[])).unwrap_err();
            assert!(
                e.to_string().contains("install bubblewrap"),
                "{}",
                e.to_string()
            );
        }
    }

    #[test]
    fn info_round_trips_and_defaults_to_none() {
        let none: SandboxInfo = serde_json::from_str("{\"mode\":\"none\"}").unwrap();
        assert_eq!(none, SandboxInfo::default());
        assert!(none.describe().starts_with("none"));
        let info = SandboxInfo {
            mode: "docker".into(),
            tool: Some("/usr/bin/docker".into()),
            name: Some("openwrk-r1".into()),
            image: Some(DEFAULT_IMAGE.into()),
            persist_dir: Some("/d/sandbox/ws_1".into()),
            mounts: vec!["/a:/b".into()],
        };
        let v = serde_json::to_value(&info).unwrap();
        assert_eq!(v["persistDir"], "/d/sandbox/ws_1");
        assert_eq!(serde_json::from_value::<SandboxInfo>(v).unwrap(), info);
        assert_eq!(
            info.describe(),
            "docker, image debian:stable-slim, container openwrk-r1, persist dir /d/sandbox/ws_1, mounts /a:/b"
        );
    }

    #[test]
    fn cleanup_commands_split_on_the_unit_separator() {
        let v = format!("docker{CLEANUP_SEP}rm{CLEANUP_SEP}-f{CLEANUP_SEP}openwrk-x");
        assert_eq!(cleanup_argv(&v), ["docker", "rm", "-f", "openwrk-x"]);
    }
}
