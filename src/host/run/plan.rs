//! Everything decided before a child starts: workspace, ports, credentials,
//! the resolved binaries, and each child's argv and environment (SPEC §5.1).

use std::ffi::OsString;
use std::net::TcpListener;
use std::path::PathBuf;

use super::{Approval, Options, RunConfig};
use crate::host::credentials::Credentials;
use crate::host::log::Logger;
use crate::host::supervise::Spec;
use crate::host::HostError;
use crate::supply::manifest::{OPENCODE, OPENWORK_SERVER, OWPENBOT};
use crate::supply::resolve::{Resolved, Resolver};

const DEFAULT_OPENWORK_PORT: u16 = 8787;
const LOOPBACK: &str = "127.0.0.1";
const WILDCARD: &str = "0.0.0.0";

/// openwrk's own secrets in its environment; children get theirs explicitly.
const HIDDEN_FROM_CHILDREN: [&str; 4] = [
    "OPENWRK_OPENCODE_PASSWORD",
    "OPENWRK_OPENWORK_TOKEN",
    "OPENWRK_HOST_TOKEN",
    super::SUPERVISOR_ENV,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub host: String,
    pub port: u16,
}

/// The resolved binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub opencode: Resolved,
    pub openwork: Resolved,
    pub owpenbot: Option<Resolved>,
}

pub struct Plan {
    pub run_id: String,
    pub workspace: PathBuf,
    pub data_dir: PathBuf,
    pub creds: Credentials,
    pub opencode: Listen,
    pub openwork: Listen,
    /// `None` with `--no-owpenbot`.
    pub owpenbot_port: Option<u16>,
    pub connect_host: String,
    pub bins: Binaries,
    pub options: Options,
    /// Sandbox mode (SPEC §5.9): OpenCode runs inside it when set.
    pub sandbox: Option<crate::host::sandbox::Sandbox>,
    /// Held per sidecar so that no two free ports collide and nobody takes
    /// them before the child binds.
    reserved: Vec<(&'static str, TcpListener)>,
}

/// A host as it appears in a URL; wildcard listen addresses are reached over loopback.
fn url_host(host: &str, for_local: bool) -> String {
    let host = if for_local && (host == WILDCARD || host == "::" || host.is_empty()) {
        LOOPBACK
    } else {
        host
    };
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

impl Plan {
    /// Frees a sidecar's reserved port just before it starts.
    pub fn release_port(&mut self, name: &str) {
        self.reserved.retain(|(n, _)| *n != name);
    }

    /// Takes a sidecar's reservation out of the plan, for a child started
    /// later while the plan is shared: dropping it frees the port.
    pub fn take_port(&mut self, name: &str) -> Vec<TcpListener> {
        let (taken, kept) = std::mem::take(&mut self.reserved)
            .into_iter()
            .partition(|(n, _)| *n == name);
        self.reserved = kept;
        taken.into_iter().map(|(_, l)| l).collect()
    }

    /// OpenCode as openwrk and owpenbot reach it (loopback for a wildcard listener).
    pub fn opencode_local_url(&self) -> String {
        format!(
            "http://{}:{}",
            url_host(&self.opencode.host, true),
            self.opencode.port
        )
    }

    /// OpenCode as remote clients reach it (the connect host).
    pub fn opencode_public_url(&self) -> String {
        format!(
            "http://{}:{}",
            url_host(&self.connect_host, false),
            self.opencode.port
        )
    }

    pub fn openwork_local_url(&self) -> String {
        format!(
            "http://{}:{}",
            url_host(&self.openwork.host, true),
            self.openwork.port
        )
    }

    pub fn openwork_public_url(&self) -> String {
        format!(
            "http://{}:{}",
            url_host(&self.connect_host, false),
            self.openwork.port
        )
    }

    pub fn owpenbot_url(&self) -> Option<String> {
        self.owpenbot_port.map(|p| format!("http://{LOOPBACK}:{p}"))
    }

    pub fn authorization(&self) -> String {
        crate::host::credentials::basic_auth(
            &self.creds.opencode_username,
            &self.creds.opencode_password,
        )
    }

    fn spec(&self, name: &'static str, binary: &Resolved, args: Vec<String>) -> Spec {
        Spec {
            name,
            binary: binary.path.clone(),
            args: args.into_iter().map(OsString::from).collect(),
            env: vec![("OPENWRK_RUN_ID".into(), self.run_id.clone())],
            env_remove: HIDDEN_FROM_CHILDREN
                .iter()
                .chain(crate::host::supervise::NEVER_INHERITED)
                .map(|s| s.to_string())
                .collect(),
            cwd: self.workspace.clone(),
        }
    }

    pub fn opencode_spec(&self) -> Spec {
        let mut args = self
            .options
            .opencode
            .serve_args(&self.opencode.host, self.opencode.port);
        for origin in &self.options.cors {
            args.push("--cors".into());
            args.push(origin.clone());
        }
        let mut spec = self.spec(OPENCODE, &self.bins.opencode, args);
        spec.env.extend([
            (
                "OPENCODE_SERVER_USERNAME".into(),
                self.creds.opencode_username.clone(),
            ),
            (
                "OPENCODE_SERVER_PASSWORD".into(),
                self.creds.opencode_password.clone(),
            ),
        ]);
        spec.env.extend(self.options.opencode.env());
        // Sandbox mode (SPEC §5.9): the same spec, run inside the sandbox.
        match &self.sandbox {
            Some(sb) => sb.wrap(spec, std::slice::from_ref(&self.workspace), &self.workspace),
            None => spec,
        }
    }

    pub fn openwork_spec(&self) -> Spec {
        let workspace = self.workspace.display().to_string();
        let approval = match self.options.approval {
            Approval::Manual => "manual",
            Approval::Auto => "auto",
        };
        let mut args = vec![
            "--host".to_string(),
            self.openwork.host.clone(),
            "--port".into(),
            self.openwork.port.to_string(),
            "--approval".into(),
            approval.into(),
            "--approval-timeout".into(),
            self.options.approval_timeout.to_string(),
            "--opencode-base-url".into(),
            self.opencode_public_url(),
            "--opencode-directory".into(),
            workspace.clone(),
            "--workspace".into(),
            workspace,
        ];
        if !self.options.cors.is_empty() {
            args.push("--cors".into());
            args.push(self.options.cors.join(","));
        }
        if self.options.read_only {
            args.push("--read-only".into());
        }
        let mut spec = self.spec(OPENWORK_SERVER, &self.bins.openwork, args);
        spec.env.extend([
            ("OPENWORK_TOKEN".into(), self.creds.openwork_token.clone()),
            ("OPENWORK_HOST_TOKEN".into(), self.creds.host_token.clone()),
            (
                "OPENWORK_OPENCODE_USERNAME".into(),
                self.creds.opencode_username.clone(),
            ),
            (
                "OPENWORK_OPENCODE_PASSWORD".into(),
                self.creds.opencode_password.clone(),
            ),
        ]);
        if self.options.no_log_requests {
            spec.env.push(("OPENWORK_LOG_REQUESTS".into(), "0".into()));
        }
        spec
    }

    pub fn owpenbot_spec(&self) -> Option<Spec> {
        let (bin, port) = (self.bins.owpenbot.as_ref()?, self.owpenbot_port?);
        let workspace = self.workspace.display().to_string();
        let args = vec![
            "start".to_string(),
            workspace.clone(),
            "--opencode-url".into(),
            self.opencode_local_url(),
        ];
        let mut spec = self.spec(OWPENBOT, bin, args);
        spec.env.extend([
            (
                "OPENCODE_SERVER_USERNAME".into(),
                self.creds.opencode_username.clone(),
            ),
            (
                "OPENCODE_SERVER_PASSWORD".into(),
                self.creds.opencode_password.clone(),
            ),
            ("OPENCODE_DIRECTORY".into(), workspace),
            ("OWPENBOT_HEALTH_PORT".into(), port.to_string()),
            (
                "OWPENBOT_DATA_DIR".into(),
                self.data_dir.join("owpenbot").display().to_string(),
            ),
        ]);
        Some(spec)
    }
}

/// Decides everything but does not start anything.
pub async fn prepare(
    config: &RunConfig,
    resolver: &Resolver,
    logger: &Logger,
) -> Result<Plan, HostError> {
    let args = &config.options;
    let workspace = workspace(args)?;
    let creds = Credentials::fill(
        &args.opencode_username,
        args.opencode_password.as_deref(),
        args.openwork_token.as_deref(),
        args.host_token.as_deref(),
    )
    .map_err(|e| HostError::Runtime(e.to_string()))?;
    logger.add_secrets(creds.secrets());

    let listen_host = |given: &str| {
        if args.remote_access && given == LOOPBACK {
            WILDCARD.to_string()
        } else {
            given.to_string()
        }
    };
    let mut reserved = Vec::new();
    let opencode = reserve(
        OPENCODE,
        &listen_host(&args.opencode_host),
        args.opencode_port,
        None,
        ("--opencode-port", "OPENWRK_OPENCODE_PORT"),
        &mut reserved,
    )?;
    let openwork = reserve(
        OPENWORK_SERVER,
        &listen_host(&args.openwork_host),
        args.openwork_port,
        Some(DEFAULT_OPENWORK_PORT),
        ("--openwork-port", "OPENWRK_OPENWORK_PORT"),
        &mut reserved,
    )?;
    if args.openwork_port.is_none() && openwork.port != DEFAULT_OPENWORK_PORT {
        logger.warn(&format!(
            "openwork-server: port {DEFAULT_OPENWORK_PORT} is in use, so it listens on port {} instead (pass --openwork-port to choose one)",
            openwork.port
        ));
    }
    let owpenbot_port = if args.no_owpenbot {
        None
    } else {
        Some(
            reserve(
                OWPENBOT,
                LOOPBACK,
                args.owpenbot_health_port,
                None,
                ("--owpenbot-health-port", "OPENWRK_OWPENBOT_HEALTH_PORT"),
                &mut reserved,
            )?
            .port,
        )
    };
    let connect_host = match &args.connect_host {
        Some(h) if !h.is_empty() => h.clone(),
        _ if args.remote_access => first_non_loopback_ipv4().unwrap_or_else(|| {
            logger.warn("--remote-access: no non-loopback IPv4 address found; advertising 127.0.0.1 (pass --connect-host HOST)");
            LOOPBACK.to_string()
        }),
        _ => LOOPBACK.to_string(),
    };
    let mut bins = resolve(resolver, args, logger).await?;
    // Sandbox mode (SPEC §5.9): checked before anything starts.
    let sandbox = crate::host::sandbox::prepare_run(
        &args.sandbox,
        resolver,
        (&config.data_dir, &workspace),
        &config.run_id,
        &mut bins.opencode,
        logger,
    )
    .await?;
    Ok(Plan {
        run_id: config.run_id.clone(),
        workspace,
        data_dir: config.data_dir.clone(),
        creds,
        opencode,
        openwork,
        owpenbot_port,
        connect_host,
        bins,
        options: args.clone(),
        sandbox,
        reserved,
    })
}

fn workspace(args: &Options) -> Result<PathBuf, HostError> {
    let given = match &args.workspace {
        Some(w) => w.clone(),
        None => std::env::current_dir().map_err(|e| {
            HostError::Usage(format!(
                "cannot read the current directory: {e}\nhint: pass --workspace DIR"
            ))
        })?,
    };
    let canonical = given.canonicalize().ok().filter(|p| p.is_dir());
    canonical.ok_or_else(|| HostError::Usage(format!(
            "workspace {} is not an existing directory\nhint: pass --workspace DIR (or OPENWRK_WORKSPACE) with a directory that exists",
            given.display()
        )))
}

/// Binds the port to prove it is free and keeps it until the child starts.
///
/// A busy port the user named is a usage error (exit 2, SPEC §9): the fix is
/// another value for the flag the message names, not a configuration file.
fn reserve(
    name: &'static str,
    host: &str,
    explicit: Option<u16>,
    preferred: Option<u16>,
    (flag, env): (&str, &str),
    reserved: &mut Vec<(&'static str, TcpListener)>,
) -> Result<Listen, HostError> {
    let bind = |port: u16| TcpListener::bind((host, port));
    let listener = match explicit {
        // An explicit 0 asks for any free port, skipping the preferred one.
        Some(0) => bind(0).map_err(|e| HostError::Usage(format!("cannot find a free port on {host}: {e}\nhint: check the listen host")))?,
        Some(port) => bind(port).map_err(|e| HostError::Usage(if e.kind() == std::io::ErrorKind::AddrInUse {
                format!("port {port} is in use ({flag} / {env})\nhint: stop whatever listens on {host}:{port}, or pass another {flag} (omit it to pick a free port)")
            } else {
                format!("cannot listen on {host}:{port} ({flag} / {env}): {e}\nhint: check the host and port")
            }))?,
        None => preferred
            .and_then(|p| bind(p).ok())
            .map_or_else(|| bind(0), Ok)
            .map_err(|e| HostError::Usage(format!("cannot find a free port on {host}: {e}\nhint: check the listen host, or pass {flag}")))?,
    };
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| HostError::Runtime(format!("cannot read the port bound on {host}: {e}")))?;
    reserved.push((name, listener));
    Ok(Listen {
        host: host.to_string(),
        port,
    })
}

/// The first IPv4 address of an interface that is up and not loopback.
fn first_non_loopback_ipv4() -> Option<String> {
    #[cfg(unix)]
    {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        // SAFETY: getifaddrs fills `head` with a list we free below; we only read it in between.
        unsafe {
            if libc::getifaddrs(&mut head) != 0 {
                return None;
            }
            let mut found = None;
            let mut cur = head;
            while !cur.is_null() {
                let ifa = &*cur;
                let up = ifa.ifa_flags & (libc::IFF_UP as libc::c_uint) != 0;
                let loopback = ifa.ifa_flags & (libc::IFF_LOOPBACK as libc::c_uint) != 0;
                if up && !loopback && !ifa.ifa_addr.is_null() {
                    let addr = &*ifa.ifa_addr;
                    if i32::from(addr.sa_family) == libc::AF_INET {
                        let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                        let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                        found = Some(ip.to_string());
                        break;
                    }
                }
                cur = ifa.ifa_next;
            }
            libc::freeifaddrs(head);
            found
        }
    }
    #[cfg(not(unix))]
    None
}

/// Resolves (and verifies) each sidecar through the shared resolver.
async fn resolve(
    resolver: &Resolver,
    args: &Options,
    logger: &Logger,
) -> Result<Binaries, HostError> {
    let mut names = vec![OPENCODE, OPENWORK_SERVER];
    if !args.no_owpenbot {
        names.push(OWPENBOT);
    }
    let loaded = if names.iter().any(|n| resolver.needs_manifest(n)) {
        Some(resolver.load_manifest(false).await?)
    } else {
        None
    };
    let resolve_one = |name: &'static str| {
        let loaded = loaded.as_ref();
        async move {
            let r = resolver.resolve(name, loaded).await?;
            // `--verbose`: where each sidecar comes from and how it was verified.
            logger.debug(&r.describe());
            Ok::<_, HostError>(r)
        }
    };
    // Each sidecar has its own cache entry and lock: a first start downloads
    // all three at once instead of one after another. Each runs to its end
    // (nothing is cut off mid-download); the first failure in this order is
    // the one reported.
    let (opencode, openwork, owpenbot) =
        tokio::join!(resolve_one(OPENCODE), resolve_one(OPENWORK_SERVER), async {
            match args.no_owpenbot {
                true => Ok(None),
                false => resolve_one(OWPENBOT).await.map(Some),
            }
        },);
    Ok(Binaries {
        opencode: opencode?,
        openwork: openwork?,
        owpenbot: owpenbot?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(name: &str) -> Resolved {
        Resolved {
            name: name.into(),
            version: "1.0.0".into(),
            target: crate::supply::platform::Target::LinuxX64,
            origin: crate::supply::resolve::Origin::Cache,
            path: PathBuf::from(format!("/bin/{name}")),
            verified: "warm",
            recheck: crate::supply::resolve::Recheck::None,
        }
    }

    fn plan(remote: bool) -> Plan {
        let options = Options {
            workspace: None,
            opencode_host: LOOPBACK.into(),
            opencode_port: None,
            opencode_username: "opencode".into(),
            opencode_password: None,
            openwork_host: LOOPBACK.into(),
            remote_access: remote,
            openwork_port: None,
            openwork_token: None,
            host_token: None,
            approval: Approval::Manual,
            approval_timeout: 30000,
            read_only: true,
            cors: vec!["https://a.example".into(), "https://b.example".into()],
            connect_host: None,
            no_owpenbot: false,
            owpenbot_required: false,
            owpenbot_health_port: None,
            no_log_requests: true,
            startup_timeout: 60,
            check: false,
            check_events: false,
            sandbox: Default::default(),
            opencode: crate::host::opencode::OpenCodeSettings {
                log_level: "WARN".into(),
                hot_reload: false,
                hot_reload_debounce_ms: 800,
                hot_reload_cooldown_ms: 2000,
            },
        };
        Plan {
            run_id: "run-1".into(),
            workspace: PathBuf::from("/ws"),
            data_dir: PathBuf::from("/data"),
            creds: Credentials::fill("opencode", Some("pw"), Some("tok"), Some("host")).unwrap(),
            opencode: Listen {
                host: if remote { WILDCARD } else { LOOPBACK }.into(),
                port: 4096,
            },
            openwork: Listen {
                host: LOOPBACK.into(),
                port: 8787,
            },
            owpenbot_port: Some(3005),
            connect_host: if remote { "192.0.2.7" } else { LOOPBACK }.into(),
            bins: Binaries {
                opencode: resolved(OPENCODE),
                openwork: resolved(OPENWORK_SERVER),
                owpenbot: Some(resolved(OWPENBOT)),
            },
            options,
            sandbox: None,
            reserved: Vec::new(),
        }
    }

    fn argv(spec: &Spec) -> Vec<String> {
        spec.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn env(spec: &Spec, key: &str) -> Option<String> {
        spec.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn child_command_lines_and_environments_follow_the_spec() {
        let p = plan(true);
        let oc = p.opencode_spec();
        assert_eq!(
            argv(&oc).join(" "),
            "serve --hostname 0.0.0.0 --port 4096 --print-logs --log-level WARN --cors https://a.example --cors https://b.example"
        );
        assert_eq!(env(&oc, "OPENCODE_SERVER_PASSWORD").as_deref(), Some("pw"));
        assert_eq!(env(&oc, "OPENCODE_HOT_RELOAD").as_deref(), Some("0"));
        assert_eq!(
            env(&oc, "OPENCODE_HOT_RELOAD_DEBOUNCE_MS").as_deref(),
            Some("800")
        );
        assert_eq!(
            env(&oc, "OPENCODE_HOT_RELOAD_COOLDOWN_MS").as_deref(),
            Some("2000")
        );
        assert_eq!(env(&oc, "OPENWRK_RUN_ID").as_deref(), Some("run-1"));
        let ow = p.openwork_spec();
        assert_eq!(
            argv(&ow).join(" "),
            "--host 127.0.0.1 --port 8787 --approval manual --approval-timeout 30000 \
             --opencode-base-url http://192.0.2.7:4096 --opencode-directory /ws --workspace /ws \
             --cors https://a.example,https://b.example --read-only"
        );
        for (k, v) in [
            ("OPENWORK_TOKEN", "tok"),
            ("OPENWORK_HOST_TOKEN", "host"),
            ("OPENWORK_OPENCODE_USERNAME", "opencode"),
            ("OPENWORK_OPENCODE_PASSWORD", "pw"),
            ("OPENWORK_LOG_REQUESTS", "0"),
        ] {
            assert_eq!(env(&ow, k).as_deref(), Some(v), "{k}");
        }
        let bot = p.owpenbot_spec().unwrap();
        // owpenbot reaches a wildcard OpenCode over loopback.
        assert_eq!(
            argv(&bot).join(" "),
            "start /ws --opencode-url http://127.0.0.1:4096"
        );
        assert_eq!(env(&bot, "OWPENBOT_HEALTH_PORT").as_deref(), Some("3005"));
        assert_eq!(
            env(&bot, "OWPENBOT_DATA_DIR").as_deref(),
            Some("/data/owpenbot")
        );
        assert_eq!(env(&bot, "OPENCODE_DIRECTORY").as_deref(), Some("/ws"));
        for spec in [&oc, &ow, &bot] {
            assert_eq!(spec.cwd, PathBuf::from("/ws"));
            assert!(spec
                .env_remove
                .contains(&"OPENWRK_OPENWORK_TOKEN".to_string()));
            for secret in ["pw", "tok", "host"] {
                assert!(
                    !argv(spec).contains(&secret.to_string()),
                    "{secret} in argv"
                );
            }
        }
        assert_eq!(plan(false).opencode_public_url(), "http://127.0.0.1:4096");
    }

    #[test]
    fn wildcard_hosts_are_probed_over_loopback() {
        assert_eq!(url_host("0.0.0.0", true), "127.0.0.1");
        assert_eq!(url_host("0.0.0.0", false), "0.0.0.0");
        assert_eq!(url_host("::1", false), "[::1]");
        assert_eq!(url_host("example.org", true), "example.org");
    }

    #[test]
    fn a_busy_explicit_port_names_the_flag() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let mut held = Vec::new();
        let err = reserve(
            "x",
            "127.0.0.1",
            Some(port),
            None,
            ("--openwork-port", "OPENWRK_OPENWORK_PORT"),
            &mut held,
        )
        .err()
        .unwrap();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().starts_with(&format!(
            "port {port} is in use (--openwork-port / OPENWRK_OPENWORK_PORT)"
        )));
        // Not given: the preferred port when free, else any free one.
        let got = reserve("x", "127.0.0.1", None, Some(port), ("--x", "X"), &mut held).unwrap();
        assert_ne!(got.port, port);
    }
}
