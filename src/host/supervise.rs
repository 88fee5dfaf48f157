//! Child processes (SPEC §5.1, §5.7): each sidecar in its own process group,
//! stdin closed, output piped into the unified log, and stopped SIGTERM →
//! grace → SIGKILL per group.
//!
//! Nothing a sidecar starts outlives openwrk, however openwrk ends: on Unix
//! each sidecar runs under a guardian (`crate::host::guardian`: openwrk re-executed,
//! a child subreaper on Linux) that stops the whole tree when its lifeline
//! from openwrk closes; on Windows openwrk puts itself into a job object that
//! kills every process in it when openwrk's handle closes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::host::log::{Logger, Stream};

/// How long a child may take to stop after SIGTERM before it gets SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Credentials of openwrk's own that no sidecar gets (SPEC §8): the GitHub
/// token and the release signing key.
pub const NEVER_INHERITED: &[&str] = &[
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "OPENWRK_SIGNING_KEY",
    "OPENWRK_SIGNING_KEY_PASSWORD",
];

pub const SIGTERM: i32 = 15;
pub const SIGKILL: i32 = 9;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start {name}: {program}: {source}\nhint: check that the file exists and is executable for this platform")]
    Spawn {
        name: String,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {name}: its process guardian ({program}) failed: {detail}\nhint: openwrk re-executes itself to watch each sidecar; check that its own binary is still in place")]
    Guardian {
        name: String,
        program: PathBuf,
        detail: String,
    },
    #[error("cannot start {name}: the process job failed: {detail}\nhint: openwrk could not make sure its children stop with it; run it outside the job that forbids this")]
    Job { name: String, detail: String },
    #[error("{name} is a {ext} file ({path}) but `{runner}` is not on PATH\nhint: install {runner}, or pass a compiled binary")]
    NoRunner {
        name: String,
        path: PathBuf,
        ext: String,
        runner: &'static str,
    },
}

/// What to run: the program, its argv and environment additions.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: &'static str,
    pub binary: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    /// Inherited variables the child must not see (openwrk's own secrets).
    pub env_remove: Vec<String>,
    pub cwd: PathBuf,
}

/// The program and leading arguments for a binary: `.ts` files run with
/// `bun`, `.js` with `node`, both from PATH (SPEC §3.2).
pub fn program_for(name: &str, binary: &Path) -> Result<(PathBuf, Vec<OsString>), SpawnError> {
    // Children run in the workspace, so a relative path must be made absolute first.
    let absolute = std::path::absolute(binary).unwrap_or_else(|_| binary.to_path_buf());
    let binary = absolute.as_path();
    let ext = binary
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    let runner = match ext {
        "ts" => "bun",
        "js" | "mjs" | "cjs" => "node",
        _ => return Ok((binary.to_path_buf(), Vec::new())),
    };
    let found =
        crate::supply::resolve::find_on_path(&format!("{runner}{}", std::env::consts::EXE_SUFFIX))
            .ok_or_else(|| SpawnError::NoRunner {
                name: name.into(),
                path: binary.to_path_buf(),
                ext: format!(".{ext}"),
                runner,
            })?;
    Ok((found, vec![binary.as_os_str().to_owned()]))
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl Exit {
    fn from_status(status: std::io::Result<std::process::ExitStatus>) -> Exit {
        match status {
            Ok(s) => Exit {
                code: s.code(),
                #[cfg(unix)]
                signal: std::os::unix::process::ExitStatusExt::signal(&s),
                #[cfg(not(unix))]
                signal: None,
            },
            Err(_) => Exit {
                code: None,
                signal: None,
            },
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit status {c}"),
            (None, Some(s)) => write!(f, "killed by signal {s}{}", signal_name(s)),
            (None, None) => write!(f, "unknown exit status"),
        }
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        1 => " (SIGHUP)",
        2 => " (SIGINT)",
        6 => " (SIGABRT)",
        9 => " (SIGKILL)",
        11 => " (SIGSEGV)",
        15 => " (SIGTERM)",
        _ => "",
    }
}

/// A running (or finished) child.
pub struct Child {
    pub name: &'static str,
    /// The sidecar's pid (it leads its process group).
    pub pid: u32,
    /// Its start time (`crate::host::process`), for records that outlive this process.
    pub process_start: Option<u64>,
    /// The guardian watching it (Unix), with its start time.
    pub guardian: Option<(u32, Option<u64>)>,
    pub binary: PathBuf,
    pub started: Instant,
    pub started_at: SystemTime,
    exit: watch::Receiver<Option<Exit>>,
    readers: Mutex<Vec<JoinHandle<()>>>,
    /// openwrk's end of the guardian's lifeline: it closes when openwrk ends,
    /// and the guardian then stops the whole tree.
    #[cfg(unix)]
    _lifeline: tokio::net::UnixStream,
}

/// How long a guardian may take to report the sidecar's pid.
#[cfg(unix)]
const GUARDIAN_REPORT: Duration = Duration::from_secs(10);

/// A started child before its output is wired up.
struct Spawned {
    /// The process openwrk waits for: the guardian on Unix, the child on Windows.
    process: tokio::process::Child,
    pid: u32,
    process_start: Option<u64>,
    guardian: Option<(u32, Option<u64>)>,
    #[cfg(unix)]
    lifeline: tokio::net::UnixStream,
}

impl Child {
    /// Starts `spec` in its own process group with stdin closed and its
    /// output going line by line into `logger`.
    pub async fn spawn(spec: &Spec, logger: &Logger) -> Result<Arc<Child>, SpawnError> {
        let (program, mut args) = program_for(spec.name, &spec.binary)?;
        args.extend(spec.args.iter().cloned());
        #[cfg(unix)]
        let spawned = guarded::spawn(spec, &program, &args).await?;
        #[cfg(not(unix))]
        let spawned = direct_spawn(spec, &program, &args)?;
        let (mut child, pid) = (spawned.process, spawned.pid);
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(forward(
                out,
                logger.clone(),
                spec.name,
                pid,
                Stream::Stdout,
            )));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(forward(
                err,
                logger.clone(),
                spec.name,
                pid,
                Stream::Stderr,
            )));
        }
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = tx.send(Some(Exit::from_status(status)));
        });
        Ok(Arc::new(Child {
            name: spec.name,
            pid,
            process_start: spawned.process_start,
            guardian: spawned.guardian,
            binary: spec.binary.clone(),
            started: Instant::now(),
            started_at: SystemTime::now(),
            exit: rx,
            readers: Mutex::new(readers),
            #[cfg(unix)]
            _lifeline: spawned.lifeline,
        }))
    }

    /// How it ended, if it has.
    pub fn exit(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    /// Waits for it to end.
    pub async fn exited(&self) -> Exit {
        let mut rx = self.exit.clone();
        let seen = rx.wait_for(Option::is_some).await.ok().and_then(|v| *v);
        seen.unwrap_or(Exit {
            code: None,
            signal: None,
        })
    }

    /// Waits (bounded) until its last output lines are in the log.
    pub async fn drain_output(&self, within: Duration) {
        let readers: Vec<_> =
            std::mem::take(&mut *self.readers.lock().unwrap_or_else(|e| e.into_inner()));
        let _ = tokio::time::timeout(within, futures_util::future::join_all(readers)).await;
    }

    /// Sends `sig` to the child's whole process group.
    pub fn signal_group(&self, sig: i32) {
        crate::host::process::signal_group(self.pid, sig);
    }
}

/// The command for `program args` with the spec's directory, environment
/// and piped output.
fn command(spec: &Spec, program: &Path, args: &[OsString]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(&spec.cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    for k in &spec.env_remove {
        cmd.env_remove(k);
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// Windows: the child directly, inside openwrk's kill-on-close job, in a new
/// process group without a console (a Ctrl-C meant for openwrk does not reach
/// it first; its output is piped anyway).
#[cfg(not(unix))]
fn direct_spawn(spec: &Spec, program: &Path, args: &[OsString]) -> Result<Spawned, SpawnError> {
    #[cfg(windows)]
    crate::host::process::win::ensure_kill_on_close_job().map_err(|detail| SpawnError::Job {
        name: spec.name.into(),
        detail,
    })?;
    let mut cmd = command(spec, program, args);
    cmd.stdin(Stdio::null());
    #[cfg(windows)]
    {
        use windows_sys::Win32::System::Threading::{CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW};
        cmd.creation_flags(CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW);
    }
    let child = cmd.spawn().map_err(|source| SpawnError::Spawn {
        name: spec.name.into(),
        program: program.to_path_buf(),
        source,
    })?;
    let pid = child.id().unwrap_or_default();
    Ok(Spawned {
        process: child,
        pid,
        process_start: crate::host::process::start_time(pid),
        guardian: None,
    })
}

/// Unix: the sidecar under its guardian (`crate::host::guardian`).
#[cfg(unix)]
mod guarded {
    use super::*;

    /// Starts `openwrk __guardian -- program args…` in its own process
    /// group with a socket-pair lifeline as stdin, and reads the sidecar's
    /// pid and start time from it.
    pub(super) async fn spawn(
        spec: &Spec,
        program: &Path,
        args: &[OsString],
    ) -> Result<Spawned, SpawnError> {
        let fail = |detail: String| SpawnError::Guardian {
            name: spec.name.into(),
            program: exe(),
            detail,
        };
        // Both ends are close-on-exec: only the guardian gets its end (as fd 0).
        let (ours, theirs) =
            std::os::unix::net::UnixStream::pair().map_err(|e| fail(e.to_string()))?;
        let mut guardian_args = vec![
            OsString::from(crate::host::guardian::ARG),
            OsString::from("--"),
            program.as_os_str().to_owned(),
        ];
        guardian_args.extend(args.iter().cloned());
        let mut cmd = command(spec, &exe_to_run(), &guardian_args);
        cmd.arg0(exe())
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .process_group(0);
        let spawned = cmd.spawn();
        // The command holds the guardian's end until dropped; the guardian
        // must be its only holder or it never sees end of file.
        drop(cmd);
        let process = spawned.map_err(|e| fail(e.to_string()))?;
        let guardian_pid = process.id().unwrap_or_default();
        let guardian_start = crate::host::process::start_time(guardian_pid);
        ours.set_nonblocking(true)
            .map_err(|e| fail(e.to_string()))?;
        let mut lifeline =
            tokio::net::UnixStream::from_std(ours).map_err(|e| fail(e.to_string()))?;
        let report = read_report(&mut lifeline).await;
        // On failure the lifeline is dropped here: a guardian that got as far
        // as starting something stops it and exits.
        let (pid, start) = parse_report(&report).map_err(|e| match e {
            Report::SpawnFailed(source) => SpawnError::Spawn {
                name: spec.name.into(),
                program: program.to_path_buf(),
                source,
            },
            Report::Bad(detail) => fail(detail),
        })?;
        Ok(Spawned {
            process,
            pid,
            process_start: Some(start).filter(|s| *s != 0),
            guardian: Some((guardian_pid, guardian_start)),
            lifeline,
        })
    }

    async fn read_report(lifeline: &mut tokio::net::UnixStream) -> Result<String, String> {
        let mut line = String::new();
        let mut reader = tokio::io::BufReader::new(lifeline);
        match tokio::time::timeout(GUARDIAN_REPORT, reader.read_line(&mut line)).await {
            Err(_) => Err(format!("no report within {} s", GUARDIAN_REPORT.as_secs())),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(0)) => Err("it exited without starting the sidecar".into()),
            Ok(Ok(_)) => Ok(line),
        }
    }

    pub(super) enum Report {
        SpawnFailed(std::io::Error),
        Bad(String),
    }

    /// `pid <pid> <start>` or `error <errno> <message>`.
    pub(super) fn parse_report(report: &Result<String, String>) -> Result<(u32, u64), Report> {
        let line = report.as_deref().map_err(|e| Report::Bad(e.clone()))?;
        let mut words = line.trim_end().splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("pid"), Some(pid), Some(start)) => match (pid.parse(), start.parse()) {
                (Ok(pid), Ok(start)) if pid > 0 => Ok((pid, start)),
                _ => Err(Report::Bad(format!("unreadable report {line:?}"))),
            },
            (Some("error"), Some(code), message) => {
                let code: i32 = code.parse().unwrap_or(0);
                Err(Report::SpawnFailed(if code > 0 {
                    std::io::Error::from_raw_os_error(code)
                } else {
                    std::io::Error::other(message.unwrap_or("unknown error").to_string())
                }))
            }
            _ => Err(Report::Bad(format!("unreadable report {line:?}"))),
        }
    }

    /// openwrk's own path, as shown in the guardian's argv.
    fn exe() -> PathBuf {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("openwrk"))
    }

    /// What to execute: on Linux `/proc/self/exe`, which still works after
    /// the binary was replaced on disk (an upgrade under a long-lived daemon).
    fn exe_to_run() -> PathBuf {
        if cfg!(target_os = "linux") {
            PathBuf::from("/proc/self/exe")
        } else {
            exe()
        }
    }
}

async fn forward<R: AsyncRead + Unpin>(
    pipe: R,
    logger: Logger,
    name: &'static str,
    pid: u32,
    stream: Stream,
) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']);
                if !line.trim().is_empty() {
                    logger.child_line(name, pid, stream, line);
                }
            }
        }
    }
}

/// Stops every child: SIGTERM to each group, up to `grace` for all of them,
/// then SIGKILL to whatever is left (and to stray group members).
pub async fn stop_all(children: &[Arc<Child>], grace: Duration, logger: &Logger) {
    let running: Vec<&Arc<Child>> = children.iter().filter(|c| c.exit().is_none()).collect();
    for c in &running {
        logger.log_about(
            crate::host::log::Severity::Debug,
            Some(c.name),
            &format!("sending SIGTERM to {} (process group {})", c.name, c.pid),
        );
        c.signal_group(SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + grace;
    futures_util::future::join_all(
        running
            .iter()
            .map(|c| tokio::time::timeout_at(deadline, c.exited())),
    )
    .await;
    for c in &running {
        if c.exit().is_none() {
            logger.warn(&format!(
                "{} (pid {}) did not stop within {} s of SIGTERM; sending SIGKILL",
                c.name,
                c.pid,
                grace.as_secs()
            ));
            c.signal_group(SIGKILL);
        }
    }
    futures_util::future::join_all(
        running
            .iter()
            .map(|c| tokio::time::timeout(Duration::from_secs(2), c.exited())),
    )
    .await;
    for c in children {
        // Grandchildren left in a group outlive their leader otherwise.
        if crate::host::process::group_alive(c.pid) {
            c.signal_group(SIGKILL);
        }
        c.drain_output(Duration::from_millis(300)).await;
    }
}

/// Starts `cmd` in a new session: a background openwrk (detached run, daemon)
/// stays out of the terminal's job control (Ctrl-C, hang-up). On Windows it
/// gets no console, so closing the launching console does not stop it.
pub fn new_session(cmd: &mut std::process::Command) {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    }
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt;
        use windows_sys::Win32::System::Threading::{CREATE_NEW_PROCESS_GROUP, DETACHED_PROCESS};
        cmd.creation_flags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP);
    }
    #[cfg(not(any(unix, windows)))]
    let _ = cmd;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_read_like_a_shell() {
        let e = Exit {
            code: Some(3),
            signal: None,
        };
        assert_eq!(e.to_string(), "exit status 3");
        let k = Exit {
            code: None,
            signal: Some(9),
        };
        assert_eq!(k.to_string(), "killed by signal 9 (SIGKILL)");
    }

    #[cfg(unix)]
    #[test]
    fn guardian_reports_are_a_pid_or_the_os_error() {
        use guarded::{parse_report, Report};
        assert_eq!(parse_report(&Ok("pid 42 7\n".into())).ok(), Some((42, 7)));
        match parse_report(&Ok(
            "error 2 No such file or directory (os error 2)\n".into()
        )) {
            Err(Report::SpawnFailed(e)) => assert_eq!(e.raw_os_error(), Some(2)),
            _ => panic!("an exec error is the sidecar's"),
        }
        for bad in [
            Ok("pid x 1".to_string()),
            Ok("pid 0 1".into()),
            Err("gone".into()),
        ] {
            assert!(matches!(parse_report(&bad), Err(Report::Bad(_))), "{bad:?}");
        }
    }

    #[test]
    fn scripts_need_their_runner() {
        let (p, a) = program_for("x", Path::new("/bin/true")).unwrap();
        assert_eq!(p, Path::new("/bin/true"));
        assert!(a.is_empty());
    }
}
