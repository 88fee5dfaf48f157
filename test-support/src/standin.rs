//! Code shared by the stand-in sidecar binaries (SPEC §7): flag parsing, the
//! `STANDIN_MODE` switches, signals, request logging and the serve loop.
//! Each binary includes this file with `#[path = "../standin.rs"] mod standin;`.

// Every binary uses only part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use base64::Engine as _;
use tokio::net::TcpListener;

/// The version every stand-in reports (`STANDIN_VERSION`, default `0.0.0-standin`).
pub fn version() -> String {
    std::env::var("STANDIN_VERSION")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "0.0.0-standin".to_owned())
}

/// Behaviour switch from `STANDIN_MODE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Serve normally, then exit with code 1 after the duration.
    CrashAfter(Duration),
    /// Accept TCP connections but never answer.
    Hang,
    /// The health endpoint answers 503 forever.
    NeverHealthy,
    /// Exit immediately with this code, before listening.
    Exit(i32),
    /// Wait this long before listening.
    SlowStart(Duration),
    /// Serve normally after starting three grandchildren that try to outlive
    /// the sidecar: an orphaned background one, a `setsid` one and one that
    /// ignores SIGTERM (see [`grandchild_entry`]).
    Grandchildren,
}

impl Mode {
    /// Reads `STANDIN_MODE`; an unknown value is reported and treated as normal.
    pub fn from_env() -> Mode {
        match std::env::var("STANDIN_MODE") {
            Ok(v) => Mode::parse(&v).unwrap_or_else(|| {
                eprintln!("standin: ignoring unknown STANDIN_MODE {v:?}");
                Mode::Normal
            }),
            Err(_) => Mode::Normal,
        }
    }

    pub fn parse(s: &str) -> Option<Mode> {
        let s = s.trim();
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        match (name, arg) {
            ("" | "normal", None) => Some(Mode::Normal),
            ("hang", None) => Some(Mode::Hang),
            ("never-healthy", None) => Some(Mode::NeverHealthy),
            ("grandchildren", None) => Some(Mode::Grandchildren),
            ("crash-after", Some(a)) => parse_duration(a).map(Mode::CrashAfter),
            ("slow-start", Some(a)) => parse_duration(a).map(Mode::SlowStart),
            ("exit", Some(a)) => a.trim().parse().ok().map(Mode::Exit),
            _ => None,
        }
    }

    /// Whether the health endpoint should report healthy.
    pub fn healthy(self) -> bool {
        self != Mode::NeverHealthy
    }
}

/// `500ms`, `2s`, `1.5s`, `1m`; a bare number is milliseconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let secs = |n: &str, scale: f64| {
        n.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(|v| Duration::from_secs_f64(v * scale))
    };
    if let Some(n) = s.strip_suffix("ms") {
        secs(n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        secs(n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        secs(n, 60.0)
    } else {
        secs(s, 0.001)
    }
}

/// Hand-parsed command line: positionals plus `--flag`, `--flag value`,
/// `--flag=value` (and single-dash forms). Unknown flags are kept as booleans.
#[derive(Debug, Default)]
pub struct Args {
    pub positional: Vec<String>,
    flags: Vec<(String, Option<String>)>,
}

impl Args {
    /// `value_flags` names the flags that take a value (without dashes).
    pub fn parse(args: impl IntoIterator<Item = String>, value_flags: &[&str]) -> Args {
        let mut out = Args::default();
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            if a == "--" {
                out.positional.extend(it.by_ref());
                break;
            }
            let name = a
                .strip_prefix("--")
                .or_else(|| a.strip_prefix('-'))
                .filter(|n| !n.is_empty());
            match name {
                None => out.positional.push(a),
                Some(name) => {
                    if let Some((n, v)) = name.split_once('=') {
                        out.flags.push((n.to_owned(), Some(v.to_owned())));
                    } else if value_flags.contains(&name) {
                        out.flags.push((name.to_owned(), it.next()));
                    } else {
                        out.flags.push((name.to_owned(), None));
                    }
                }
            }
        }
        out
    }

    pub fn from_env(value_flags: &[&str]) -> Args {
        Args::parse(std::env::args().skip(1), value_flags)
    }

    /// The last value given for `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, v)| n == name && v.is_some())
            .and_then(|(_, v)| v.as_deref())
    }

    /// Every value given for a repeatable flag.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.flags
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| v.as_deref())
            .collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, _)| n == name)
    }

    /// A port flag; an invalid value is an error (exit 1).
    pub fn port(&self, name: &str, default: u16) -> u16 {
        parse_port(self.value(name), name, default)
    }
}

/// Parses a port number (flag or env value); invalid values exit 1.
pub fn parse_port(value: Option<&str>, what: &str, default: u16) -> u16 {
    match value {
        None => default,
        Some(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("error: invalid port {v:?} for {what}");
            std::process::exit(1)
        }),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Current UTC time as `2026-01-01T00:00:00.000Z`.
pub fn iso_now() -> String {
    let ms = now_ms();
    let (secs, millis) = ((ms / 1000) as i64, ms % 1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since the epoch to a civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `Basic base64(user:pass)`.
pub fn basic_auth_value(user: &str, pass: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Basic {encoded}")
}

/// Whether the request carries `Authorization: Basic` with these credentials.
pub fn basic_auth_ok(headers: &HeaderMap, user: &str, pass: &str) -> bool {
    let Some(encoded) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|raw| String::from_utf8(raw).ok())
        .is_some_and(|s| s.split_once(':') == Some((user, pass)))
}

/// A JSON error body `{"code","message"}` with the status.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "code": code, "message": message });
    (status, Json(body)).into_response()
}

/// Wraps `app` so that `log(method, path, status, ms)` runs after each request.
pub fn with_request_log<F>(app: Router, log: F) -> Router
where
    F: Fn(&Method, &str, u16, u128) + Clone + Send + Sync + 'static,
{
    app.layer(middleware::from_fn(move |req: Request, next: Next| {
        let log = log.clone();
        async move {
            let method = req.method().clone();
            let path = req.uri().path().to_owned();
            let start = Instant::now();
            let res = next.run(req).await;
            log(
                &method,
                &path,
                res.status().as_u16(),
                start.elapsed().as_millis(),
            );
            res
        }
    }))
}

/// SIGINT/SIGTERM (Ctrl-C elsewhere), installed before anything slow happens.
/// `STANDIN_IGNORE_SIGTERM=1` makes SIGTERM a no-op (SIGKILL escalation tests).
pub struct Signals {
    name: &'static str,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    ignore_term: bool,
}

impl Signals {
    pub fn install(name: &'static str) -> Signals {
        let ignore_term = std::env::var("STANDIN_IGNORE_SIGTERM").is_ok_and(|v| v == "1");
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
            let term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
            Signals {
                name,
                int,
                term,
                ignore_term,
            }
        }
        #[cfg(not(unix))]
        Signals { name, ignore_term }
    }

    /// Waits for a shutdown signal and returns its name.
    #[cfg(unix)]
    pub async fn recv(&mut self) -> &'static str {
        loop {
            tokio::select! {
                _ = self.int.recv() => return "SIGINT",
                _ = self.term.recv() => {
                    if !self.ignore_term {
                        return "SIGTERM";
                    }
                    eprintln!("{}: ignoring SIGTERM (STANDIN_IGNORE_SIGTERM=1)", self.name);
                }
            }
        }
    }

    /// Waits for Ctrl-C and returns its name.
    #[cfg(not(unix))]
    pub async fn recv(&mut self) -> &'static str {
        let _ = (self.name, self.ignore_term);
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// Serves `app` on `host:port` honouring `mode`; returns the process exit code.
/// `on_listen` is called with the bound address (the startup line).
pub async fn serve(
    name: &'static str,
    mode: Mode,
    host: &str,
    port: u16,
    app: Router,
    on_listen: impl FnOnce(SocketAddr),
) -> i32 {
    if let Mode::Exit(code) = mode {
        eprintln!("{name}: STANDIN_MODE=exit:{code}, exiting before listening");
        return code;
    }
    let mut signals = Signals::install(name);
    if let Mode::SlowStart(d) = mode {
        eprintln!("{name}: STANDIN_MODE=slow-start, waiting {d:?} before listening");
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            s = signals.recv() => {
                eprintln!("{name}: received {s} during startup, exiting");
                return 0;
            }
        }
    }
    let listener = match TcpListener::bind((host, port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{name}: error: cannot listen on {host}:{port}: {e}");
            return 1;
        }
    };
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| ([0, 0, 0, 0], port).into());
    on_listen(addr);
    if mode == Mode::Grandchildren {
        spawn_grandchildren(name);
    }

    let server = async move {
        if mode == Mode::Hang {
            hang(listener).await
        } else {
            axum::serve(listener, app).await
        }
    };
    let crash = async move {
        match mode {
            Mode::CrashAfter(d) => tokio::time::sleep(d).await,
            _ => std::future::pending().await,
        }
    };
    tokio::select! {
        r = server => {
            eprintln!("{name}: server stopped: {r:?}");
            1
        }
        _ = crash => {
            eprintln!("{name}: STANDIN_MODE=crash-after, crashing with exit code 1");
            1
        }
        s = signals.recv() => {
            eprintln!("{name}: received {s}, shutting down");
            0
        }
    }
}

/// Accepts connections and keeps them open without ever reading or answering.
async fn hang(listener: TcpListener) -> std::io::Result<()> {
    let mut held = Vec::new();
    loop {
        let (sock, _) = listener.accept().await?;
        held.push(sock);
    }
}

/// The marker in every grandchild's argv (`STANDIN_MARKER`, default
/// `standin-grandchild`), so a test finds them in the process table.
pub fn marker() -> String {
    std::env::var("STANDIN_MARKER")
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "standin-grandchild".to_owned())
}

/// Starts `<this binary> grandchild KIND MARKER`.
fn spawn_grandchild(kind: &str) -> std::io::Result<u32> {
    let exe = std::env::current_exe()?;
    let child = std::process::Command::new(exe)
        .args(["grandchild", kind, &marker()])
        .stdin(std::process::Stdio::null())
        .spawn()?;
    Ok(child.id())
}

/// `STANDIN_MODE=grandchildren`: the three kinds of processes a real
/// OpenCode may leave behind (tools, language servers, shells). They keep
/// the sidecar's stdout/stderr, as real ones do.
fn spawn_grandchildren(name: &str) {
    for kind in ["background", "setsid", "ignore-term"] {
        match spawn_grandchild(kind) {
            Ok(pid) => eprintln!("{name}: started grandchild {kind} (pid {pid})"),
            Err(e) => eprintln!("{name}: cannot start grandchild {kind}: {e}"),
        }
    }
}

/// Call first in every stand-in's `main`: `grandchild KIND MARKER` runs a
/// grandchild and never returns.
/// - `background` starts an `orphan` and exits at once, so the orphan is
///   reparented (to init, or to a subreaper);
/// - `setsid` leaves the sidecar's session and process group;
/// - `ignore-term` ignores SIGTERM;
/// - every kind then sleeps until killed.
pub fn grandchild_entry() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("grandchild") {
        return;
    }
    match args.get(1).map(String::as_str) {
        Some("background") => {
            let _ = spawn_grandchild("orphan");
            std::process::exit(0);
        }
        #[cfg(unix)]
        // SAFETY: plain process-state calls.
        Some("setsid") => unsafe {
            libc::setsid();
        },
        #[cfg(unix)]
        // SAFETY: ignoring a signal has no memory-safety preconditions.
        Some("ignore-term") => unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        },
        _ => {}
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
