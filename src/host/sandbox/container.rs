//! Container sandboxes: `docker run` / `podman run` (the same CLI contract)
//! and Apple's `container run` (macOS).
//!
//! `<tool> run --rm --name openwrk-<run id> … --entrypoint /openwrk/bin/opencode
//! <image> serve --hostname 0.0.0.0 --port P …`, started by the guardian: the
//! client is the sidecar process. Inside: the verified OpenCode binary
//! mounted read-only (the image never provides it), the workspace read-write
//! at its own path, the persist dir as HOME, the allowed extra mounts; the
//! image's root filesystem read-only (docker, podman), no capabilities, no
//! new privileges, the operator's uid (docker) or a mapped one (rootless
//! podman). OpenCode's port is published on the host address openwrk chose
//! (loopback unless `--remote-access`). Secrets are `-e NAME` (the value comes
//! from the client's environment), never values in argv.
//!
//! A container outlives a killed client, so the guardian runs
//! `<tool> rm -f <name>` after the tree is gone ([`super::CLEANUP_ENV`]), and
//! `stop`, `--check` and `openwrk stop` do it too.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{env, Kind, Sandbox, CLEANUP_ENV, CLEANUP_SEP};
use crate::host::log::Logger;
use crate::host::supervise::Spec;
use crate::host::HostError;
use crate::supply::resolve::Resolved;

/// Where Apple's `container` mounts the binary's directory (it mounts
/// directories only).
const BIN_DIR: &str = "/openwrk/bin";

/// `--mount` for a bind: `type=bind,source=…,target=…[,readonly]`.
fn mount(src: &Path, dst: &Path, writable: bool) -> OsString {
    let mut m = OsString::from("type=bind,source=");
    m.push(src.as_os_str());
    m.push(",target=");
    m.push(dst.as_os_str());
    if !writable {
        m.push(",readonly");
    }
    m
}

fn current_ids() -> (u32, u32) {
    #[cfg(unix)]
    // SAFETY: getuid/getgid cannot fail.
    unsafe {
        (libc::getuid(), libc::getgid())
    }
    #[cfg(not(unix))]
    (0, 0)
}

/// Options common to the trial and the real run: isolation, identity and the binary.
fn base(
    sb: &Sandbox,
    binary: &Path,
    name: &str,
    (uid, gid): (u32, u32),
) -> (Vec<OsString>, String) {
    let mut a: Vec<OsString> = ["run", "--rm", "--name", name]
        .into_iter()
        .map(OsString::from)
        .collect();
    let push = |a: &mut Vec<OsString>, items: &[&str]| a.extend(items.iter().map(OsString::from));
    match sb.kind {
        Kind::Docker | Kind::Podman => {
            push(
                &mut a,
                &[
                    "--init",
                    "--read-only",
                    "--tmpfs",
                    "/tmp",
                    "--tmpfs",
                    "/var/tmp",
                    "--cap-drop",
                    "ALL",
                    "--security-opt",
                    "no-new-privileges",
                ],
            );
            if sb.kind == Kind::Podman {
                // Bind mounts are otherwise denied on SELinux hosts (relabeling
                // the workspace with :Z would change it on the host).
                push(&mut a, &["--security-opt", "label=disable"]);
                if uid != 0 {
                    // Rootless: the operator's uid inside, files stay theirs.
                    push(&mut a, &["--userns", "keep-id"]);
                }
            } else {
                a.push("--user".into());
                a.push(format!("{uid}:{gid}").into());
            }
            a.push("--mount".into());
            a.push(mount(binary, Path::new(super::BINARY), false));
            (a, super::BINARY.to_string())
        }
        Kind::Container | Kind::Bwrap => {
            let dir = binary.parent().unwrap_or(Path::new("/"));
            let file = binary
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| "opencode".into());
            a.push("--mount".into());
            a.push(mount(dir, Path::new(BIN_DIR), false));
            (a, format!("{BIN_DIR}/{file}"))
        }
    }
}

/// `host:port:port` for `-p`, with IPv6 hosts bracketed.
fn publish(host: &str, port: &str) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else if host.is_empty() {
        "127.0.0.1".into()
    } else {
        host.to_string()
    };
    format!("{host}:{port}:{port}")
}

/// The `run` argv for OpenCode's spec, plus the names passed with `-e NAME`.
pub fn run_argv(
    sb: &Sandbox,
    spec: &Spec,
    binary: &Path,
    workspaces: &[PathBuf],
    cwd: &Path,
    host_names: &[String],
    ids: (u32, u32),
) -> Vec<OsString> {
    let name = sb.name.clone().unwrap_or_else(|| "openwrk".into());
    let (mut a, entrypoint) = base(sb, binary, &name, ids);
    // OpenCode listens on every interface inside; the host side is the
    // address openwrk chose.
    let mut inner: Vec<OsString> = spec.args.clone();
    let mut host = String::from("127.0.0.1");
    let mut port = String::new();
    for i in 0..inner.len() {
        match inner[i].to_str() {
            Some("--hostname") if i + 1 < inner.len() => {
                host = inner[i + 1].to_string_lossy().into_owned();
                inner[i + 1] = "0.0.0.0".into();
            }
            Some("--port") if i + 1 < inner.len() => {
                port = inner[i + 1].to_string_lossy().into_owned();
            }
            _ => {}
        }
    }
    a.push("-p".into());
    a.push(publish(&host, &port).into());
    a.push("--mount".into());
    a.push(mount(&sb.persist_dir, Path::new(env::HOME), true));
    for ws in workspaces {
        a.push("--mount".into());
        a.push(mount(ws, ws, true));
    }
    for m in &sb.mounts {
        a.push("--mount".into());
        a.push(mount(&m.host, &m.target, m.writable));
    }
    a.push("-w".into());
    a.push(cwd.as_os_str().to_owned());
    for (k, v) in env::fixed("/bin/sh") {
        a.push("-e".into());
        a.push(format!("{k}={v}").into());
    }
    let mut names: Vec<&str> = spec
        .env
        .iter()
        .map(|(k, _)| k.as_str())
        .chain(host_names.iter().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    for n in names {
        a.push("-e".into());
        a.push(n.into());
    }
    a.push("--entrypoint".into());
    a.push(entrypoint.into());
    a.push(
        sb.image
            .clone()
            .unwrap_or_else(|| super::DEFAULT_IMAGE.into())
            .into(),
    );
    a.extend(inner);
    a
}

/// The command that removes the container whatever state it is in.
pub fn remove_argv(kind: Kind, name: &str) -> Vec<&str> {
    match kind {
        Kind::Container => vec!["delete", "--force", name],
        _ => vec!["rm", "-f", name],
    }
}

pub fn wrap(sb: &Sandbox, spec: Spec, binary: &Path, workspaces: &[PathBuf], cwd: &Path) -> Spec {
    let args = run_argv(
        sb,
        &spec,
        binary,
        workspaces,
        cwd,
        &env::host_names(),
        current_ids(),
    );
    let mut env = spec.env;
    if let Some(name) = &sb.name {
        let mut cleanup = sb.tool.display().to_string();
        for part in remove_argv(sb.kind, name) {
            cleanup.push(CLEANUP_SEP);
            cleanup.push_str(part);
        }
        env.push((CLEANUP_ENV.into(), cleanup));
    }
    Spec {
        name: spec.name,
        binary: sb.tool.clone(),
        args,
        env,
        env_remove: spec.env_remove,
        cwd: spec.cwd,
    }
}

/// Removes the container `name` (bounded, output ignored: it is usually gone already).
pub fn remove(kind: Kind, tool: &Path, name: &str) {
    let child = std::process::Command::new(tool)
        .args(remove_argv(kind, name))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Ok(mut child) = child {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

async fn run_bounded(
    tool: &Path,
    args: &[OsString],
    within: Duration,
) -> Result<std::process::Output, String> {
    let mut cmd = tokio::process::Command::new(tool);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(within, cmd.output()).await {
        Err(_) => Err(format!("no answer within {} s", within.as_secs())),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(out)) => Ok(out),
    }
}

fn output_text(out: &std::process::Output) -> String {
    let text = [&out.stderr, &out.stdout]
        .iter()
        .map(|b| String::from_utf8_lossy(b).trim().to_string())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" / ");
    if text.is_empty() {
        "no output".into()
    } else {
        text
    }
}

/// Checks that the runtime answers, then runs `opencode --version` in the
/// image (pulling it if needed): an image that cannot run the binary says so
/// here, before anything starts.
pub async fn trial(sb: &Sandbox, binary: &Path, logger: &Logger) -> Result<(), HostError> {
    let tool = sb.kind.tool();
    let probe: Vec<OsString> = match sb.kind {
        Kind::Docker => vec![
            "version".into(),
            "--format".into(),
            "{{.Server.Version}}".into(),
        ],
        Kind::Podman => vec!["version".into()],
        _ => vec!["system".into(), "status".into()],
    };
    let fail = |message: String| HostError::Runtime(message);
    match run_bounded(&sb.tool, &probe, Duration::from_secs(30)).await {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return Err(fail(format!(
                "{tool} is installed but its engine does not answer: {}\n  {tool}: {}\nhint: start it (Docker: Docker Desktop or `systemctl start docker`; container: `container system start`), or use another --sandbox",
                output_text(&out),
                sb.tool.display()
            )))
        }
        Err(e) => {
            return Err(fail(format!(
                "cannot run {} {}: {e}\nhint: check the {tool} installation, or use another --sandbox",
                sb.tool.display(),
                probe[0].to_string_lossy()
            )))
        }
    }
    let image = sb
        .image
        .clone()
        .unwrap_or_else(|| super::DEFAULT_IMAGE.into());
    let name = format!("{}-trial", sb.name.as_deref().unwrap_or("openwrk"));
    let (mut args, entrypoint) = base(sb, binary, &name, current_ids());
    args.extend(
        ["--entrypoint", &entrypoint, &image, "--version"]
            .into_iter()
            .map(OsString::from),
    );
    logger.info(&format!(
        "sandbox: checking that image {image} runs the verified OpenCode ({tool} may pull it first)"
    ));
    let result = run_bounded(&sb.tool, &args, Duration::from_secs(600)).await;
    match result {
        Ok(out) if out.status.success() => Ok(()),
        other => {
            remove(sb.kind, &sb.tool, &name);
            let detail = match other {
                Ok(out) => format!("exited with {}: {}", out.status, output_text(&out)),
                Err(e) => e,
            };
            Err(fail(format!(
                "the image {image} cannot run the verified OpenCode binary (`opencode --version` in it {detail})\nhint: the image is only a base: it needs glibc for linux/{arch} (OpenCode's release binary is not static), e.g. the default {default} or ubuntu; not alpine or distroless; if it could not be pulled, check the name and your registry access",
                arch = std::env::consts::ARCH,
                default = super::DEFAULT_IMAGE,
            )))
        }
    }
}

/// On a host that is not Linux, a container needs OpenCode's Linux build for
/// the host's architecture: resolved and verified like the host's (manifest,
/// cache, download). `None` on Linux (the host binary is the Linux build)
/// and for an external OpenCode (used as given).
pub async fn linux_opencode(
    resolver: &crate::supply::resolve::Resolver,
    host: &Resolved,
    logger: &Logger,
) -> Result<Option<Resolved>, HostError> {
    use crate::supply::manifest::OPENCODE;
    use crate::supply::platform::Target;
    if cfg!(target_os = "linux") || host.verified == "external" {
        return Ok(None);
    }
    let target = if cfg!(target_arch = "aarch64") {
        Target::LinuxArm64
    } else {
        Target::LinuxX64
    };
    let loaded = resolver.load_manifest(false).await?;
    let resolved = match loaded.manifest.target(OPENCODE, target) {
        Some((entry, asset)) => {
            resolver
                .cached_or_download(
                    OPENCODE,
                    entry.version.as_str(),
                    target,
                    asset,
                    &loaded.base,
                )
                .await?
        }
        None => resolver.opencode_from_github(target, false).await?,
    };
    logger.info(&format!(
        "sandbox: the container runs OpenCode's {} build ({})",
        target.id(),
        resolved.describe()
    ));
    Ok(Some(resolved))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::sandbox::mounts::Mount;

    fn sandbox(kind: Kind) -> Sandbox {
        Sandbox {
            kind,
            tool: format!("/usr/bin/{}", kind.tool()).into(),
            image: Some("debian:stable-slim".into()),
            persist_dir: "/data/sandbox/ws_1".into(),
            mounts: vec![Mount {
                host: "/shared/docs".into(),
                target: "/docs".into(),
                writable: false,
                given: "/shared/docs:/docs".into(),
            }],
            name: Some("openwrk-run-1".into()),
            linux_opencode: None,
        }
    }

    fn spec() -> Spec {
        Spec {
            name: "opencode",
            binary: "/c/opencode".into(),
            args: [
                "serve",
                "--hostname",
                "127.0.0.1",
                "--port",
                "4096",
                "--print-logs",
            ]
            .into_iter()
            .map(OsString::from)
            .collect(),
            env: vec![
                ("OPENCODE_SERVER_PASSWORD".into(), "s3cret".into()),
                ("OPENWRK_RUN_ID".into(), "run-1".into()),
            ],
            env_remove: vec![],
            cwd: "/ws".into(),
        }
    }

    fn text(a: &[OsString]) -> String {
        a.iter()
            .map(|x| x.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn docker_argv_mounts_publishes_and_names_secrets_only() {
        let argv = text(&run_argv(
            &sandbox(Kind::Docker),
            &spec(),
            Path::new("/c/opencode"),
            &[PathBuf::from("/ws")],
            Path::new("/ws"),
            &["ANTHROPIC_API_KEY".into()],
            (1000, 1000),
        ));
        assert_eq!(
            argv,
            "run --rm --name openwrk-run-1 --init --read-only --tmpfs /tmp --tmpfs /var/tmp --cap-drop ALL \
             --security-opt no-new-privileges --user 1000:1000 \
             --mount type=bind,source=/c/opencode,target=/openwrk/bin/opencode,readonly \
             -p 127.0.0.1:4096:4096 \
             --mount type=bind,source=/data/sandbox/ws_1,target=/openwrk/home \
             --mount type=bind,source=/ws,target=/ws \
             --mount type=bind,source=/shared/docs,target=/docs,readonly \
             -w /ws -e HOME=/openwrk/home -e XDG_CONFIG_HOME=/openwrk/home/.config \
             -e XDG_DATA_HOME=/openwrk/home/.local/share -e XDG_CACHE_HOME=/openwrk/home/.cache \
             -e XDG_STATE_HOME=/openwrk/home/.local/state \
             -e PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin -e SHELL=/bin/sh \
             -e ANTHROPIC_API_KEY -e OPENCODE_SERVER_PASSWORD -e OPENWRK_RUN_ID \
             --entrypoint /openwrk/bin/opencode debian:stable-slim \
             serve --hostname 0.0.0.0 --port 4096 --print-logs"
        );
        assert!(!argv.contains("s3cret"));
    }

    #[test]
    fn podman_maps_the_user_and_container_mounts_the_binary_directory() {
        let podman = text(&run_argv(
            &sandbox(Kind::Podman),
            &spec(),
            Path::new("/c/opencode"),
            &[PathBuf::from("/ws")],
            Path::new("/ws"),
            &[],
            (1000, 1000),
        ));
        assert!(
            podman.contains("--security-opt label=disable --userns keep-id --mount"),
            "{podman}"
        );
        assert!(!podman.contains("--user "), "{podman}");
        let apple = text(&run_argv(
            &sandbox(Kind::Container),
            &spec(),
            Path::new("/c/opencode"),
            &[PathBuf::from("/ws")],
            Path::new("/ws"),
            &[],
            (501, 20),
        ));
        assert!(
            apple.starts_with("run --rm --name openwrk-run-1 --mount type=bind,source=/c,target=/openwrk/bin,readonly -p 127.0.0.1:4096:4096"),
            "{apple}"
        );
        assert!(
            apple.contains(
                "--entrypoint /openwrk/bin/opencode debian:stable-slim serve --hostname 0.0.0.0"
            ),
            "{apple}"
        );
        assert_eq!(
            remove_argv(Kind::Container, "n"),
            ["delete", "--force", "n"]
        );
        assert_eq!(remove_argv(Kind::Podman, "n"), ["rm", "-f", "n"]);
    }

    #[test]
    fn remote_access_publishes_on_the_wildcard_and_ipv6_is_bracketed() {
        assert_eq!(publish("0.0.0.0", "1"), "0.0.0.0:1:1");
        assert_eq!(publish("::1", "1"), "[::1]:1:1");
    }

    #[test]
    fn the_guardian_gets_the_cleanup_command() {
        let w = wrap(
            &sandbox(Kind::Docker),
            spec(),
            Path::new("/c/opencode"),
            &[PathBuf::from("/ws")],
            Path::new("/ws"),
        );
        let cleanup = w.env.iter().find(|(k, _)| k == CLEANUP_ENV).unwrap();
        assert_eq!(
            super::super::cleanup_argv(&cleanup.1),
            ["/usr/bin/docker", "rm", "-f", "openwrk-run-1"]
        );
        assert_eq!(w.binary, PathBuf::from("/usr/bin/docker"));
    }
}
