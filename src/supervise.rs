//! Child processes (SPEC §5.1, §5.7): each sidecar in its own process group,
//! stdin closed, output piped into the unified log, tied to openwrk's life by a
//! parent-death signal, and stopped SIGTERM → grace → SIGKILL per group.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::log::{Logger, Stream};

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
    pub pid: u32,
    pub binary: PathBuf,
    pub started: Instant,
    pub started_at: SystemTime,
    exit: watch::Receiver<Option<Exit>>,
    readers: Mutex<Vec<JoinHandle<()>>>,
}

impl Child {
    /// Starts `spec` in its own process group with stdin closed and its
    /// output going line by line into `logger`.
    ///
    /// Call this from a long-lived thread (the runtime's, not a blocking-pool
    /// thread): Linux delivers the parent-death signal when the *thread* that
    /// spawned the child exits.
    pub fn spawn(spec: &Spec, logger: &Logger) -> Result<Arc<Child>, SpawnError> {
        let (program, mut args) = program_for(spec.name, &spec.binary)?;
        args.extend(spec.args.iter().cloned());
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&args)
            .current_dir(&spec.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        for k in &spec.env_remove {
            cmd.env_remove(k);
        }
        cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
        #[cfg(unix)]
        {
            cmd.process_group(0);
            die_with_parent(&mut cmd);
        }
        let mut child = cmd.spawn().map_err(|source| SpawnError::Spawn {
            name: spec.name.into(),
            program: program.clone(),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
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
            binary: spec.binary.clone(),
            started: Instant::now(),
            started_at: SystemTime::now(),
            exit: rx,
            readers: Mutex::new(readers),
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
        signal_group(self.pid, sig);
    }
}

/// Sets the parent-death signal (Linux) and checks that the parent did not
/// die before it was armed.
#[cfg(unix)]
fn die_with_parent(cmd: &mut tokio::process::Command) {
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (prctl, getppid) run between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("openwrk exited while starting"));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// Sends `sig` to process group `pgid`; a group that is gone is not an error.
pub fn signal_group(pgid: u32, sig: i32) {
    #[cfg(unix)]
    if let Ok(p) = libc::pid_t::try_from(pgid) {
        if p > 0 {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(-p, sig);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (pgid, sig);
}

/// Sends `sig` to one process.
pub fn signal_pid(pid: u32, sig: i32) {
    #[cfg(unix)]
    if let Ok(p) = libc::pid_t::try_from(pid) {
        if p > 0 {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(p, sig);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (pid, sig);
}

/// Whether a process exists and is not a zombie waiting to be reaped.
pub fn is_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(p) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks for existence.
        if p <= 0 || unsafe { libc::kill(p, 0) } != 0 {
            return false;
        }
        #[cfg(target_os = "linux")]
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next());
            return state != Some('Z');
        }
        true
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        false
    }
}

/// Whether any live (non-zombie) process is left in group `pgid`. Zombies
/// count as gone: an orphan nobody reaps (a container whose init does not)
/// would otherwise look alive forever.
pub fn group_alive(pgid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return false;
        };
        entries.flatten().any(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|f| f.parse::<u32>().ok());
            pgrp == Some(pgid) && state != Some("Z")
        })
    }
    #[cfg(all(unix, not(target_os = "linux")))]
    {
        let Ok(p) = libc::pid_t::try_from(pgid) else {
            return false;
        };
        // SAFETY: signal 0 only checks for existence.
        p > 0 && unsafe { libc::kill(-p, 0) } == 0
    }
    #[cfg(not(unix))]
    {
        let _ = pgid;
        false
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
        logger.debug(&format!(
            "sending SIGTERM to {} (process group {})",
            c.name, c.pid
        ));
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
        if group_alive(c.pid) {
            c.signal_group(SIGKILL);
        }
        c.drain_output(Duration::from_millis(300)).await;
    }
}

/// Starts `cmd` in a new session: a background openwrk (detached run, daemon)
/// stays out of the terminal's job control (Ctrl-C, hang-up).
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
    #[cfg(not(unix))]
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

    #[test]
    fn scripts_need_their_runner() {
        let (p, a) = program_for("x", Path::new("/bin/true")).unwrap();
        assert_eq!(p, Path::new("/bin/true"));
        assert!(a.is_empty());
    }
}
