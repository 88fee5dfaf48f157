//! The process guardian (SPEC §5.1, Unix): `openwrk __guardian -- <program> <args…>`.
//!
//! openwrk starts every sidecar through a guardian: openwrk itself,
//! re-executed before clap or tokio start (plain std and libc, so it is up in
//! about a millisecond). The guardian
//! - becomes a child subreaper (Linux), so every orphaned descendant of the
//!   sidecar, `setsid` ones included, is reparented to it rather than to init;
//! - starts the sidecar in a process group of its own, stdin `/dev/null`,
//!   stdout/stderr inherited (openwrk's log pipes), and reports
//!   `pid <pid> <start time>` (or `error <errno> <message>`) on its stdin;
//! - treats its stdin, one end of a socket pair whose other end only openwrk
//!   holds, as a lifeline: end of file means openwrk is gone, however it
//!   ended (SIGKILL and panics included), and the whole tree is stopped;
//! - when the sidecar exits, stops whatever it left behind, then exits with
//!   the sidecar's status (re-raising its signal) so openwrk reports it as
//!   before;
//! - on SIGTERM/SIGINT/SIGHUP sent to it, stops the sidecar gracefully
//!   (SIGTERM to its group, SIGKILL to the tree after the grace period).
//!
//! openwrk signals the sidecar's group directly (it knows the pid from the
//! report); the guardian is in another group, so it is never SIGKILLed by
//! the stop sequence before it has cleaned up.
//!
//! macOS has no subreaper: descendants are found by walking parent pids, by
//! the sidecar's process group, and from a snapshot of the tree taken every
//! 250 ms (pid plus start time, so a reused pid is never signalled). A
//! descendant that both leaves the group (`setsid`) and loses its parent
//! between two snapshots is not found there.

use std::ffi::OsString;
use std::io::Write as _;
use std::os::fd::{AsRawFd as _, FromRawFd as _, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// argv[1] that selects guardian mode.
pub const ARG: &str = "__guardian";
/// Time given to leftovers (and to the sidecar when openwrk is gone) between
/// SIGTERM and SIGKILL: short, so everything is gone well within 2 s.
const SWEEP_GRACE: Duration = Duration::from_millis(500);
/// How long the final SIGKILL rounds may take before the guardian gives up.
const KILL_ROUNDS: Duration = Duration::from_secs(2);
/// How often the tree is snapshotted where orphans cannot be collected.
#[cfg(not(target_os = "linux"))]
const SNAPSHOT_EVERY: Option<Duration> = Some(Duration::from_millis(250));
#[cfg(target_os = "linux")]
const SNAPSHOT_EVERY: Option<Duration> = None;

static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Runs the guardian with the arguments after [`ARG`]; never returns.
pub fn run(args: impl Iterator<Item = OsString>) -> ! {
    let mut args = args.skip_while(|a| a != "--").skip(1);
    // SAFETY: fd 0 is the lifeline openwrk passed; nothing else owns it.
    let mut lifeline = unsafe { UnixStream::from_raw_fd(0) };
    let Some(program) = args.next() else {
        let _ = writeln!(lifeline, "error 0 usage: openwrk {ARG} -- PROGRAM [ARGS…]");
        std::process::exit(2);
    };
    become_subreaper();
    let cleanup = std::env::var_os(crate::host::sandbox::CLEANUP_ENV);
    let wake = match install_signal_handlers() {
        Ok(fd) => fd,
        Err(e) => report_error(&mut lifeline, &e),
    };
    let sidecar = match spawn(&program, args) {
        Ok(pid) => pid,
        Err(e) => report_error(&mut lifeline, &e),
    };
    let start = crate::host::process::start_time(sidecar as u32).unwrap_or(0);
    let _ = writeln!(lifeline, "pid {sidecar} {start}");
    let mut tree = Tree::new(sidecar);
    let status = match watch(&mut tree, wake, lifeline.as_raw_fd()) {
        Ending::Exited(status) => {
            tree.stop_all();
            status
        }
        Ending::Orphaned => {
            tree.stop_all();
            tree.status.unwrap_or(0)
        }
    };
    run_cleanup(cleanup);
    exit_like(status)
}

/// A sandbox's cleanup command ([`crate::host::sandbox::CLEANUP_ENV`]: removing a
/// container that a killed client left running), run once the tree is gone,
/// bounded to 30 s.
fn run_cleanup(cleanup: Option<OsString>) {
    let Some(value) = cleanup.and_then(|v| v.into_string().ok()) else {
        return;
    };
    let argv = crate::host::sandbox::cleanup_argv(&value);
    let Some((program, args)) = argv.split_first() else {
        return;
    };
    let spawned = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Ok(mut child) = spawned {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn report_error(lifeline: &mut UnixStream, e: &std::io::Error) -> ! {
    let _ = writeln!(lifeline, "error {} {e}", e.raw_os_error().unwrap_or(0));
    std::process::exit(127);
}

#[cfg(target_os = "linux")]
fn become_subreaper() {
    // SAFETY: prctl with these arguments only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

#[cfg(not(target_os = "linux"))]
fn become_subreaper() {}

/// Starts the sidecar in its own process group with stdin `/dev/null`.
fn spawn(program: &OsString, args: impl Iterator<Item = OsString>) -> std::io::Result<i32> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).process_group(0);
    cmd.env_remove(crate::host::sandbox::CLEANUP_ENV);
    #[cfg(target_os = "linux")]
    // SAFETY: only prctl, async-signal-safe, runs between fork and exec.
    unsafe {
        // A second line of defence: if the guardian itself is SIGKILLed, the
        // sidecar still goes (its descendants then rely on its own cleanup).
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    // Reaped with waitpid below, not through std's Child.
    Ok(cmd.spawn()?.id() as i32)
}

extern "C" fn on_signal(sig: libc::c_int) {
    if sig != libc::SIGCHLD {
        STOP_REQUESTED.store(true, Ordering::SeqCst);
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = 0u8;
        // SAFETY: write is async-signal-safe; a full pipe only drops a wake-up.
        unsafe {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
    }
}

/// A self-pipe that the handlers of SIGCHLD, SIGTERM, SIGINT and SIGHUP write
/// to, so one `poll` waits for the lifeline and for signals without races.
/// Handlers (unlike ignored signals) are reset by exec: the sidecar starts
/// with default dispositions.
fn install_signal_handlers() -> std::io::Result<RawFd> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    for fd in fds {
        // SAFETY: plain fcntl calls on descriptors we own.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK);
        }
    }
    WAKE_FD.store(fds[1], Ordering::SeqCst);
    for sig in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: an all-zero sigaction is valid; the handler is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = if sig == libc::SIGCHLD {
                libc::SA_NOCLDSTOP
            } else {
                0
            };
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(fds[0])
}

enum Ending {
    /// The sidecar exited with this wait status.
    Exited(libc::c_int),
    /// openwrk is gone.
    Orphaned,
}

/// Waits for the sidecar to exit or the lifeline to close, reaping orphans
/// and handling a stop request meanwhile.
fn watch(tree: &mut Tree, wake: RawFd, lifeline: RawFd) -> Ending {
    let mut kill_at: Option<Instant> = None;
    loop {
        tree.reap();
        if let Some(status) = tree.status {
            return Ending::Exited(status);
        }
        if STOP_REQUESTED.swap(false, Ordering::SeqCst) && kill_at.is_none() {
            tree.signal_group(libc::SIGTERM);
            kill_at = Some(Instant::now() + crate::host::supervise::STOP_GRACE);
        }
        if kill_at.is_some_and(|t| Instant::now() >= t) {
            tree.signal_all(libc::SIGKILL);
            kill_at = None;
        }
        tree.snapshot();
        let timeout = [
            kill_at.map(|t| t.saturating_duration_since(Instant::now())),
            SNAPSHOT_EVERY,
        ]
        .into_iter()
        .flatten()
        .min();
        if lifeline_closed(lifeline, wake, timeout) {
            return Ending::Orphaned;
        }
    }
}

/// Polls the lifeline and the self-pipe; true once the lifeline reached end
/// of file (openwrk never writes to it).
fn lifeline_closed(lifeline: RawFd, wake: RawFd, timeout: Option<Duration>) -> bool {
    let mut fds = [
        libc::pollfd {
            fd: lifeline,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = timeout.map_or(-1, |t| t.as_millis().min(60_000) as libc::c_int + 1);
    // SAFETY: `fds` is a valid array of two pollfd.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    if n <= 0 {
        return false;
    }
    let mut buf = [0u8; 64];
    if fds[1].revents != 0 {
        // SAFETY: reading into a local buffer from our non-blocking pipe.
        while unsafe { libc::read(wake, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }
    if fds[0].revents != 0 {
        // SAFETY: reading into a local buffer.
        let r = unsafe { libc::read(lifeline, buf.as_mut_ptr().cast(), buf.len()) };
        let interrupted =
            r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted;
        return r == 0 || (r < 0 && !interrupted);
    }
    false
}

/// The sidecar and everything it started.
struct Tree {
    me: u32,
    sidecar: libc::pid_t,
    /// Its wait status, once reaped.
    status: Option<libc::c_int>,
    /// Descendants seen so far (pid, start time), for platforms without a
    /// subreaper where an orphan cannot be found by its parent any more.
    seen: Vec<(u32, u64)>,
    last_snapshot: Option<Instant>,
}

impl Tree {
    fn new(sidecar: libc::pid_t) -> Tree {
        Tree {
            me: std::process::id(),
            sidecar,
            status: None,
            seen: Vec::new(),
            last_snapshot: None,
        }
    }

    /// Reaps every exited child (orphans reparented here included); returns
    /// whether any child is left.
    fn reap(&mut self) -> bool {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid out-parameter.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid == 0 {
                return true;
            }
            if pid < 0 {
                return std::io::Error::last_os_error().raw_os_error() != Some(libc::ECHILD);
            }
            if pid == self.sidecar {
                self.status = Some(status);
            }
        }
    }

    /// Reaps until no child is left (bounded): a child still dying when the
    /// tree was found empty would otherwise become a zombie of init, which
    /// in a container may never reap it.
    fn reap_all(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(500);
        while self.reap() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn signal_group(&self, sig: libc::c_int) {
        if self.status.is_none() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(-self.sidecar, sig);
            }
        }
    }

    /// Signals the sidecar's group and every live descendant; returns how
    /// many descendants were alive. The tree is read first: once the sidecar
    /// is signalled its children may be orphaned, and without a subreaper an
    /// orphan can no longer be found by its parent.
    fn signal_all(&mut self, sig: libc::c_int) -> usize {
        let live = self.descendants();
        self.signal_group(sig);
        for pid in &live {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(*pid as libc::pid_t, sig);
            }
        }
        live.len()
    }

    /// Live descendants: by parent chain from this process, by the sidecar's
    /// process group, and from earlier snapshots still matching start times.
    fn descendants(&mut self) -> Vec<u32> {
        let table = table::read();
        let mut found: Vec<u32> = Vec::new();
        let mut frontier = vec![self.me];
        while let Some(parent) = frontier.pop() {
            for p in table.iter().filter(|p| p.ppid == parent) {
                if !found.contains(&p.pid) {
                    found.push(p.pid);
                    frontier.push(p.pid);
                }
            }
        }
        let group = self.sidecar as u32;
        for p in &table {
            let earlier = self
                .seen
                .iter()
                .any(|(pid, s)| *pid == p.pid && *s == p.start);
            if (p.pgid == group || earlier) && p.pid != self.me && !found.contains(&p.pid) {
                found.push(p.pid);
            }
        }
        found.retain(|pid| table.iter().any(|p| p.pid == *pid && !p.zombie));
        for pid in &found {
            if let Some(p) = table.iter().find(|p| p.pid == *pid) {
                if !self.seen.contains(&(p.pid, p.start)) {
                    self.seen.push((p.pid, p.start));
                }
            }
        }
        found
    }

    /// Remembers the tree where orphans would otherwise be lost.
    fn snapshot(&mut self) {
        let Some(every) = SNAPSHOT_EVERY else {
            return;
        };
        if self.last_snapshot.is_none_or(|t| t.elapsed() >= every) {
            self.descendants();
            self.seen
                .retain(|(pid, start)| crate::host::process::start_time(*pid) == Some(*start));
            self.last_snapshot = Some(Instant::now());
        }
    }

    /// SIGTERM to everything left, SIGKILL after [`SWEEP_GRACE`], repeated
    /// until nothing is left (or [`KILL_ROUNDS`] passed), everything reaped.
    fn stop_all(&mut self) {
        self.sweep();
        self.reap_all();
    }

    fn sweep(&mut self) {
        // With a subreaper every descendant is a child or below one: no
        // child left means nothing to look for in the process table.
        if cfg!(target_os = "linux") && !self.reap() {
            return;
        }
        let deadline = Instant::now() + SWEEP_GRACE;
        if self.signal_all(libc::SIGTERM) == 0 {
            return;
        }
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            self.reap();
            if self.descendants().is_empty() {
                return;
            }
        }
        let give_up = Instant::now() + KILL_ROUNDS;
        while self.signal_all(libc::SIGKILL) > 0 && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(5));
            self.reap();
        }
    }
}

/// Exits the way the sidecar did: its code, or its signal re-raised (without
/// a core dump: the sidecar already produced one if it was going to).
fn exit_like(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: plain process-state calls on this process.
        unsafe {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
        }
        std::process::exit(128 + sig);
    }
    std::process::exit(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        1
    })
}

/// One row of the process table.
struct Proc {
    pid: u32,
    ppid: u32,
    pgid: u32,
    start: u64,
    zombie: bool,
}

#[cfg(target_os = "linux")]
mod table {
    use super::Proc;

    /// Every process in `/proc`.
    pub(super) fn read() -> Vec<Proc> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| {
                let f = crate::host::process::stat_fields(pid)?;
                Some(Proc {
                    pid,
                    ppid: f.get(1)?.parse().ok()?,
                    pgid: f.get(2)?.parse().ok()?,
                    start: f.get(19)?.parse().ok()?,
                    zombie: f.first().is_some_and(|s| s == "Z" || s == "X"),
                })
            })
            .collect()
    }
}

#[cfg(target_os = "macos")]
mod table {
    use super::Proc;

    /// Every process `proc_listallpids` returns.
    pub(super) fn read() -> Vec<Proc> {
        // SAFETY: a null buffer asks for the number of pids.
        let n = unsafe { libc::proc_listallpids(std::ptr::null_mut(), 0) };
        let Ok(n) = usize::try_from(n) else {
            return Vec::new();
        };
        let mut pids = vec![0 as libc::pid_t; n + 64];
        let bytes = (pids.len() * std::mem::size_of::<libc::pid_t>()) as libc::c_int;
        // SAFETY: the buffer holds `bytes` bytes.
        let n = unsafe { libc::proc_listallpids(pids.as_mut_ptr().cast(), bytes) };
        pids.truncate(usize::try_from(n).unwrap_or(0));
        pids.into_iter()
            .filter_map(|pid| {
                let pid = u32::try_from(pid).ok().filter(|p| *p > 0)?;
                let info = crate::host::process::bsd_info(pid)?;
                Some(Proc {
                    pid,
                    ppid: info.pbi_ppid,
                    pgid: info.pbi_pgid,
                    start: info.pbi_start_tvsec * 1_000_000 + info.pbi_start_tvusec,
                    // SZOMB in <sys/proc.h>.
                    zombie: info.pbi_status == 5,
                })
            })
            .collect()
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod table {
    use super::Proc;

    /// Other Unixes: only the process group is covered.
    pub(super) fn read() -> Vec<Proc> {
        Vec::new()
    }
}
