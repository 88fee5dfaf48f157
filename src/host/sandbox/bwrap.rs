//! The bubblewrap sandbox (Linux, no daemon).
//!
//! OpenCode runs as `bwrap … -- /openwrk/bin/opencode serve …`, started by
//! the guardian like any sidecar. Inside:
//! - new PID, IPC, UTS and (when possible) cgroup namespaces, a new session
//!   (no TIOCSTI into openwrk's terminal), no capabilities, and
//!   `--die-with-parent`: when bwrap goes, everything inside goes;
//! - the host network (OpenCode reaches its model providers and listens on
//!   the host's loopback port openwrk chose);
//! - a root of its own: `/usr` (and the `/bin`, `/lib*` links or dirs)
//!   read-only, a short list of `/etc` entries read-only ([`ETC`]: not all of
//!   `/etc`, which holds host keys, `shadow` and network secrets), fresh
//!   `/proc`, `/dev`, `/tmp`, `/var/tmp`;
//! - the verified OpenCode binary read-only at [`super::BINARY`], the persist
//!   dir read-write at [`super::env::HOME`], each workspace read-write at its
//!   own path, the allowed extra mounts.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{env, Sandbox};
use crate::host::log::Logger;
use crate::host::supervise::Spec;
use crate::host::HostError;

/// The `/etc` entries visible inside (read-only, those that exist): name
/// resolution, users and groups, TLS roots, time zone, dynamic linker and
/// shell start-up files. Not `/etc/shadow`, `/etc/ssh` (host keys),
/// `/etc/ssl/private`, NetworkManager or VPN configuration, `/etc/docker`…
pub const ETC: &[&str] = &[
    "/etc/alternatives",
    "/etc/bash.bashrc",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/crypto-policies",
    "/etc/debian_version",
    "/etc/gai.conf",
    "/etc/group",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/inputrc",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/locale.alias",
    "/etc/localtime",
    "/etc/magic",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/os-release",
    "/etc/passwd",
    "/etc/pki/ca-trust",
    "/etc/pki/tls/cert.pem",
    "/etc/pki/tls/certs",
    "/etc/profile",
    "/etc/profile.d",
    "/etc/protocols",
    "/etc/resolv.conf",
    "/etc/services",
    "/etc/ssl/cert.pem",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/terminfo",
    "/etc/timezone",
];

/// Top-level system directories besides `/usr`: symlinks on merged-`/usr`
/// systems (recreated as links), directories elsewhere (bound read-only).
const SYSTEM: &[&str] = &["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

const HOSTNAME: &str = "openwrk-sandbox";

fn push(argv: &mut Vec<OsString>, items: &[&str]) {
    argv.extend(items.iter().map(OsString::from));
}

fn bind(argv: &mut Vec<OsString>, flag: &str, src: &Path, dst: &Path) {
    argv.push(flag.into());
    argv.push(src.as_os_str().to_owned());
    argv.push(dst.as_os_str().to_owned());
}

/// bwrap's options up to and including `--`; `exists` and `link` look at the
/// host (parameters so tests can describe any host).
pub fn options(
    sb: &Sandbox,
    binary: &Path,
    workspaces: &[PathBuf],
    cwd: &Path,
    exists: &dyn Fn(&Path) -> bool,
    link: &dyn Fn(&Path) -> Option<PathBuf>,
) -> Vec<OsString> {
    let mut argv = Vec::new();
    push(
        &mut argv,
        &[
            "--die-with-parent",
            "--new-session",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--hostname",
            HOSTNAME,
            "--cap-drop",
            "ALL",
            "--ro-bind",
            "/usr",
            "/usr",
        ],
    );
    for dir in SYSTEM.iter().map(Path::new) {
        if let Some(target) = link(dir) {
            argv.push("--symlink".into());
            argv.push(target.into_os_string());
            argv.push(dir.as_os_str().to_owned());
        } else if exists(dir) {
            bind(&mut argv, "--ro-bind", dir, dir);
        }
    }
    push(&mut argv, &["--perms", "0755", "--dir", "/etc"]);
    for entry in ETC.iter().map(Path::new) {
        if exists(entry) {
            bind(&mut argv, "--ro-bind", entry, entry);
        }
    }
    push(
        &mut argv,
        &[
            "--symlink",
            "/proc/self/mounts",
            "/etc/mtab",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--tmpfs",
            "/var/tmp",
            "--perms",
            "0755",
            "--dir",
            "/openwrk",
            "--perms",
            "0755",
            "--dir",
            "/openwrk/bin",
        ],
    );
    bind(&mut argv, "--ro-bind", binary, Path::new(super::BINARY));
    bind(&mut argv, "--bind", &sb.persist_dir, Path::new(env::HOME));
    for ws in workspaces {
        bind(&mut argv, "--bind", ws, ws);
    }
    for m in &sb.mounts {
        let flag = if m.writable { "--bind" } else { "--ro-bind" };
        bind(&mut argv, flag, &m.host, &m.target);
    }
    // The sandbox's own root (where /etc, /openwrk and the mount points
    // live) becomes read-only too; the mounts keep their own modes.
    push(&mut argv, &["--remount-ro", "/"]);
    argv.push("--chdir".into());
    argv.push(cwd.as_os_str().to_owned());
    argv.push("--".into());
    argv.push(super::BINARY.into());
    argv
}

fn host_options(sb: &Sandbox, binary: &Path, workspaces: &[PathBuf], cwd: &Path) -> Vec<OsString> {
    options(sb, binary, workspaces, cwd, &|p| p.exists(), &|p| {
        std::fs::read_link(p).ok()
    })
}

fn shell() -> &'static str {
    if Path::new("/usr/bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    }
}

/// The environment inside: the spec's, the fixed one, the passed host
/// variables; every other host variable is removed (bwrap passes its own
/// environment on, and secrets never go into its argv).
fn environment(
    spec_env: Vec<(String, String)>,
    env_remove: Vec<String>,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut remove = env_remove;
    for (k, _) in std::env::vars_os() {
        if let Ok(k) = k.into_string() {
            if !env::passed_through(&k) {
                remove.push(k);
            }
        }
    }
    let mut set = env::fixed(shell());
    set.extend(spec_env);
    remove.sort();
    remove.dedup();
    (set, remove)
}

pub fn wrap(sb: &Sandbox, spec: Spec, binary: &Path, workspaces: &[PathBuf], cwd: &Path) -> Spec {
    let mut args = host_options(sb, binary, workspaces, cwd);
    args.extend(spec.args);
    let (env, env_remove) = environment(spec.env, spec.env_remove);
    Spec {
        name: spec.name,
        binary: sb.tool.clone(),
        args,
        env,
        env_remove,
        cwd: spec.cwd,
    }
}

/// Whether bwrap's message says it could not create its namespaces.
fn namespace_failure(stderr: &str) -> bool {
    [
        "No permissions to create new namespace",
        "Creating new namespace failed",
        "setting up uid map",
        "unshare",
        "Operation not permitted",
        "clone",
    ]
    .iter()
    .any(|n| stderr.contains(n))
}

/// `bwrap … -- /openwrk/bin/opencode --version`, bounded.
pub async fn trial(
    sb: &Sandbox,
    binary: &Path,
    workspaces: &[PathBuf],
    logger: &Logger,
) -> Result<(), HostError> {
    let cwd = workspaces
        .first()
        .cloned()
        .unwrap_or_else(|| PathBuf::from(env::HOME));
    let mut cmd = tokio::process::Command::new(&sb.tool);
    cmd.args(host_options(sb, binary, workspaces, &cwd))
        .arg("--version")
        .env_clear()
        .envs(env::fixed(shell()))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    logger.debug(&format!("sandbox trial: {} … --version", sb.tool.display()));
    let out = match tokio::time::timeout(Duration::from_secs(60), cmd.output()).await {
        Err(_) => {
            return Err(HostError::Runtime(format!(
                    "the bwrap sandbox did not answer `opencode --version` within 60 s\n  bwrap: {}\nhint: run `openwrk serve --sandbox bwrap --verbose` and check the bwrap installation",
                    sb.tool.display()
                )))
        }
        Ok(Err(e)) => {
            return Err(HostError::Runtime(format!("cannot run {}: {e}\nhint: reinstall bubblewrap", sb.tool.display())))
        }
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let message = if namespace_failure(&stderr) {
        format!(
            "bwrap cannot create its namespaces here: {stderr}\n  bwrap: {}\nhint: user namespaces are disabled or restricted (check `sysctl user.max_user_namespaces` and, on Debian, `kernel.unprivileged_userns_clone=1`; Ubuntu 24.04+ restricts them through AppArmor: `kernel.apparmor_restrict_unprivileged_userns=0` or an AppArmor profile for bwrap), or openwrk runs inside a container that forbids them; use --sandbox docker or podman there",
            sb.tool.display()
        )
    } else {
        format!(
            "OpenCode did not run inside the bwrap sandbox (`opencode --version` exited with {}): {}\n  bwrap: {}\nhint: the verified binary must run with only /usr, /lib* and the listed /etc entries; run with --verbose for details",
            out.status,
            [stderr, stdout]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" / "),
            sb.tool.display()
        )
    };
    Err(HostError::Runtime(message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::sandbox::{mounts::Mount, Kind};

    fn sandbox() -> Sandbox {
        Sandbox {
            kind: Kind::Bwrap,
            tool: "/usr/bin/bwrap".into(),
            image: None,
            persist_dir: "/data/sandbox/ws_1".into(),
            mounts: vec![
                Mount {
                    host: "/shared/docs".into(),
                    target: "/docs".into(),
                    writable: false,
                    given: "/shared/docs:/docs".into(),
                },
                Mount {
                    host: "/shared/out".into(),
                    target: "/out".into(),
                    writable: true,
                    given: "/shared/out:/out:rw".into(),
                },
            ],
            name: None,
            linux_opencode: None,
        }
    }

    fn text(argv: &[OsString]) -> String {
        argv.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn the_argv_confines_opencode_to_its_mounts() {
        let sb = sandbox();
        let merged = |p: &Path| match p.to_str() {
            Some("/bin") => Some(PathBuf::from("usr/bin")),
            Some("/lib64") => Some(PathBuf::from("usr/lib64")),
            _ => None,
        };
        let exists = |p: &Path| {
            matches!(
                p.to_str(),
                Some("/lib" | "/etc/passwd" | "/etc/resolv.conf" | "/etc/ssl/certs")
            )
        };
        let argv = text(&options(
            &sb,
            Path::new("/data/sidecars/opencode/1.0.0/linux-x64/opencode"),
            &[PathBuf::from("/home/u/project")],
            Path::new("/home/u/project"),
            &exists,
            &merged,
        ));
        for part in [
            "--die-with-parent --new-session --unshare-pid --unshare-ipc --unshare-uts --unshare-cgroup-try",
            "--cap-drop ALL",
            "--ro-bind /usr /usr --symlink usr/bin /bin --ro-bind /lib /lib --symlink usr/lib64 /lib64 ",
            "--ro-bind /etc/passwd /etc/passwd --ro-bind /etc/resolv.conf /etc/resolv.conf --ro-bind /etc/ssl/certs /etc/ssl/certs",
            "--proc /proc --dev /dev --tmpfs /tmp",
            "--ro-bind /data/sidecars/opencode/1.0.0/linux-x64/opencode /openwrk/bin/opencode",
            "--bind /data/sandbox/ws_1 /openwrk/home",
            "--bind /home/u/project /home/u/project",
            "--ro-bind /shared/docs /docs --bind /shared/out /out",
            "--remount-ro / --chdir /home/u/project -- /openwrk/bin/opencode",
        ] {
            assert!(argv.contains(part), "{part:?} missing from\n{argv}");
        }
        // Nothing else of the host: no network namespace flag (shared on
        // purpose), no bind of /, /home, /etc as a whole, /run or /sys.
        for absent in [
            "--unshare-net",
            "--bind / ",
            "--ro-bind / ",
            "/etc /etc",
            "/etc/shadow",
            "/etc/ssh",
            "/run",
            "/sys",
            "--share-net",
        ] {
            assert!(!argv.contains(absent), "{absent:?} in\n{argv}");
        }
        // The workspace is bound after the /tmp tmpfs, so a workspace under /tmp survives it.
        assert!(argv.find("--tmpfs /tmp").unwrap() < argv.find("--bind /home/u/project").unwrap());
    }

    #[test]
    fn secrets_travel_in_the_environment_and_the_host_environment_stays_out() {
        let spec = Spec {
            name: "opencode",
            binary: "/bin/opencode".into(),
            args: vec!["serve".into(), "--port".into(), "4096".into()],
            env: vec![("OPENCODE_SERVER_PASSWORD".into(), "s3cret".into())],
            env_remove: vec!["OPENWRK_HOST_TOKEN".into()],
            cwd: "/ws".into(),
        };
        let w = wrap(
            &sandbox(),
            spec,
            Path::new("/bin/opencode"),
            &[PathBuf::from("/ws")],
            Path::new("/ws"),
        );
        assert_eq!(w.binary, PathBuf::from("/usr/bin/bwrap"));
        let argv = text(&w.args);
        assert!(
            argv.ends_with("-- /openwrk/bin/opencode serve --port 4096"),
            "{argv}"
        );
        assert!(!argv.contains("s3cret"));
        assert!(w
            .env
            .contains(&("OPENCODE_SERVER_PASSWORD".into(), "s3cret".into())));
        assert!(w.env.contains(&("HOME".into(), env::HOME.into())));
        assert!(w.env_remove.contains(&"OPENWRK_HOST_TOKEN".to_string()));
        if std::env::var_os("PATH").is_some() {
            // PATH is replaced (it is set again), never inherited.
            assert!(w.env.iter().any(|(k, v)| k == "PATH" && v == env::PATH));
        }
    }

    #[test]
    fn namespace_errors_are_recognized() {
        assert!(namespace_failure("bwrap: No permissions to create new namespace, likely because the kernel does not allow non-privileged user namespaces."));
        assert!(namespace_failure(
            "bwrap: setting up uid map: Permission denied"
        ));
        assert!(!namespace_failure(
            "bwrap: execvp /openwrk/bin/opencode: No such file or directory"
        ));
    }
}
