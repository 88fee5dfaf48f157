//! Process identity (SPEC §5.6): a pid alone can be reused after its process
//! ended, so records keep each process's start time as well, and nothing is
//! signalled unless the pid still has the start time that was recorded.
//!
//! The start time is an opaque token, compared for equality only: clock ticks
//! since boot on Linux (`/proc/<pid>/stat` field 22), microseconds since the
//! epoch on macOS (`proc_pidinfo`), the creation `FILETIME` on Windows
//! (`GetProcessTimes`).

/// What runs at a recorded pid now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The recorded process, still running.
    Same,
    /// Nothing (or only a zombie).
    Gone,
    /// Another process got the pid: its description.
    Other(String),
    /// Something runs there but the record has no start time to compare.
    Unverified(String),
}

/// Checks a recorded pid against its recorded start time.
pub fn check(pid: u32, recorded: Option<u64>) -> Found {
    if pid == 0 || !crate::host::process::is_alive(pid) {
        return Found::Gone;
    }
    match (recorded, start_time(pid)) {
        (Some(r), Some(now)) if r == now => Found::Same,
        (Some(_), None) => Found::Gone,
        (Some(_), Some(_)) => Found::Other(describe(pid)),
        (None, _) => Found::Unverified(describe(pid)),
    }
}

/// Whether `pid` is still the process recorded with `start`.
pub fn is_same(pid: u32, start: Option<u64>) -> bool {
    check(pid, start) == Found::Same
}

/// A note for a recorded process that is not signalled, naming what is there.
pub fn stale_note(role: &str, pid: u32, found: &Found) -> Option<String> {
    match found {
        Found::Other(what) => Some(format!(
            "pid {pid} ({role}) now belongs to another process ({what}); not signalled"
        )),
        Found::Unverified(what) => Some(format!(
            "pid {pid} ({role}) runs {what}, but the record has no start time to prove it is ours (written by an older openwrk); not signalled"
        )),
        Found::Same | Found::Gone => None,
    }
}

/// `name, started <local time>` for messages, as far as the platform tells.
pub fn describe(pid: u32) -> String {
    let name = name(pid).unwrap_or_else(|| "unknown program".into());
    match started_unix(pid).and_then(|s| chrono::DateTime::from_timestamp(s, 0)) {
        Some(t) => format!(
            "{name}, started {}",
            t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S")
        ),
        None => name,
    }
}

// ---------------------------------------------------------------- Linux

/// The fields of `/proc/<pid>/stat` after the command name, which may
/// itself contain spaces and parentheses (hence the last `)`).
#[cfg(target_os = "linux")]
pub(crate) fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Field 22 (`starttime`) is the 20th after the command name.
#[cfg(target_os = "linux")]
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

#[cfg(target_os = "linux")]
fn name(pid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end().to_string())
}

/// Boot time (`btime` of `/proc/stat`) plus the start ticks.
#[cfg(target_os = "linux")]
fn started_unix(pid: u32) -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let boot: i64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // c_long is 32 bits on 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let ticks = i64::try_from(ticks).ok().filter(|t| *t > 0)?;
    Some(boot + i64::try_from(start_time(pid)?).ok()? / ticks)
}

// ---------------------------------------------------------------- macOS

#[cfg(target_os = "macos")]
pub(crate) fn bsd_info(pid: u32) -> Option<libc::proc_bsdinfo> {
    let pid = libc::c_int::try_from(pid).ok()?;
    // SAFETY: an all-zero proc_bsdinfo is valid (plain integers and arrays).
    let mut info: libc::proc_bsdinfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::proc_bsdinfo>() as libc::c_int;
    // SAFETY: the buffer is a proc_bsdinfo of exactly `size` bytes.
    let n = unsafe {
        libc::proc_pidinfo(
            pid,
            libc::PROC_PIDTBSDINFO,
            0,
            (&mut info as *mut libc::proc_bsdinfo).cast(),
            size,
        )
    };
    (n == size).then_some(info)
}

#[cfg(target_os = "macos")]
pub fn start_time(pid: u32) -> Option<u64> {
    let info = bsd_info(pid)?;
    Some(info.pbi_start_tvsec * 1_000_000 + info.pbi_start_tvusec)
}

#[cfg(target_os = "macos")]
fn name(pid: u32) -> Option<String> {
    let info = bsd_info(pid)?;
    let bytes: Vec<u8> = info
        .pbi_comm
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(target_os = "macos")]
fn started_unix(pid: u32) -> Option<i64> {
    i64::try_from(bsd_info(pid)?.pbi_start_tvsec).ok()
}

// ---------------------------------------------------------------- Windows

#[cfg(windows)]
pub fn start_time(pid: u32) -> Option<u64> {
    use windows_sys::Win32::Foundation::FILETIME;
    use windows_sys::Win32::System::Threading::{
        GetProcessTimes, PROCESS_QUERY_LIMITED_INFORMATION,
    };
    let handle = win::Handle::open(pid, PROCESS_QUERY_LIMITED_INFORMATION)?;
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: a valid process handle and four FILETIME out-parameters.
    let ok =
        unsafe { GetProcessTimes(handle.0, &mut created, &mut exited, &mut kernel, &mut user) };
    (ok != 0).then(|| (u64::from(created.dwHighDateTime) << 32) | u64::from(created.dwLowDateTime))
}

#[cfg(windows)]
fn name(_pid: u32) -> Option<String> {
    None
}

/// FILETIME counts 100 ns since 1601-01-01.
#[cfg(windows)]
fn started_unix(pid: u32) -> Option<i64> {
    let t = i64::try_from(start_time(pid)?).ok()?;
    Some(t / 10_000_000 - 11_644_473_600)
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
pub fn start_time(_pid: u32) -> Option<u64> {
    None
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn name(_pid: u32) -> Option<String> {
    None
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn started_unix(_pid: u32) -> Option<i64> {
    None
}

/// Process handles on Windows: alive, terminate, and the job object that
/// takes every process openwrk starts down with it.
#[cfg(windows)]
pub(crate) mod win {
    use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, STILL_ACTIVE};
    use windows_sys::Win32::System::Threading::{
        GetExitCodeProcess, OpenProcess, TerminateProcess, PROCESS_QUERY_LIMITED_INFORMATION,
        PROCESS_TERMINATE,
    };

    pub(crate) struct Handle(pub(crate) HANDLE);

    impl Handle {
        pub(crate) fn open(pid: u32, access: u32) -> Option<Handle> {
            // SAFETY: OpenProcess has no memory-safety preconditions.
            let h = unsafe { OpenProcess(access, 0, pid) };
            (!h.is_null()).then_some(Handle(h))
        }
    }

    impl Drop for Handle {
        fn drop(&mut self) {
            // SAFETY: the handle came from OpenProcess and is closed once.
            unsafe {
                CloseHandle(self.0);
            }
        }
    }

    pub(crate) fn is_alive(pid: u32) -> bool {
        let Some(h) = Handle::open(pid, PROCESS_QUERY_LIMITED_INFORMATION) else {
            return false;
        };
        let mut code = 0u32;
        // SAFETY: a valid handle and an out-parameter.
        let ok = unsafe { GetExitCodeProcess(h.0, &mut code) };
        ok != 0 && code == STILL_ACTIVE as u32
    }

    /// Windows has no SIGTERM for console-less children: stopping is terminating.
    pub(crate) fn terminate(pid: u32) {
        if let Some(h) = Handle::open(pid, PROCESS_TERMINATE) {
            // SAFETY: a valid handle with PROCESS_TERMINATE access.
            unsafe {
                TerminateProcess(h.0, 1);
            }
        }
    }

    /// Puts openwrk itself into a job object that kills every process in it
    /// when its last handle closes, that is when openwrk ends however it ends.
    /// Children (and theirs) join the job when they are created, so there is
    /// no window in which a grandchild escapes. Done once, before the first
    /// child starts; only supervising processes call it, so a launcher's
    /// background supervisor or daemon is not in the launcher's job.
    pub(crate) fn ensure_kill_on_close_job() -> Result<(), String> {
        static JOB: std::sync::OnceLock<Result<usize, String>> = std::sync::OnceLock::new();
        JOB.get_or_init(create_job).clone().map(|_| ())
    }

    fn create_job() -> Result<usize, String> {
        use windows_sys::Win32::System::JobObjects::{
            AssignProcessToJobObject, CreateJobObjectW, JobObjectExtendedLimitInformation,
            SetInformationJobObject, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
            JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
        };
        use windows_sys::Win32::System::Threading::GetCurrentProcess;
        let last = || std::io::Error::last_os_error().to_string();
        // SAFETY: no security attributes, no name.
        let job = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
        if job.is_null() {
            return Err(format!("CreateJobObject: {}", last()));
        }
        // SAFETY: an all-zero limit structure is valid.
        let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
        info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        // SAFETY: `info` is the structure the information class names, with its size.
        let ok = unsafe {
            SetInformationJobObject(
                job,
                JobObjectExtendedLimitInformation,
                (&info as *const JOBOBJECT_EXTENDED_LIMIT_INFORMATION).cast(),
                std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
            )
        };
        if ok == 0 {
            return Err(format!("SetInformationJobObject: {}", last()));
        }
        // SAFETY: the job handle is valid; GetCurrentProcess is a pseudo handle.
        if unsafe { AssignProcessToJobObject(job, GetCurrentProcess()) } == 0 {
            return Err(format!("AssignProcessToJobObject: {}", last()));
        }
        // The handle stays open for the life of the process on purpose.
        Ok(job as usize)
    }
}

/// How a `std::process` child ended, like a shell says it.
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(s) = status.signal() {
            return format!("killed by signal {s}");
        }
    }
    match status.code() {
        Some(c) => format!("exit status {c}"),
        None => "unknown exit status".into(),
    }
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
    // Windows: no groups and no SIGTERM; the job object takes the rest.
    #[cfg(windows)]
    {
        let _ = sig;
        crate::host::process::win::terminate(pgid);
    }
    #[cfg(not(any(unix, windows)))]
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
    #[cfg(windows)]
    {
        let _ = sig;
        crate::host::process::win::terminate(pid);
    }
    #[cfg(not(any(unix, windows)))]
    let _ = (pid, sig);
}

/// Whether a process exists (whoever owns it) and is not a zombie waiting
/// to be reaped.
pub fn is_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(p) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks for existence.
        let exists = p > 0
            && (unsafe { libc::kill(p, 0) } == 0
                // Another user's process exists too (a reused pid, say).
                || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM));
        if !exists {
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
    #[cfg(windows)]
    return crate::host::process::win::is_alive(pid);
    #[cfg(not(any(unix, windows)))]
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
    #[cfg(windows)]
    return crate::host::process::win::is_alive(pgid);
    #[cfg(not(any(unix, windows)))]
    {
        let _ = pgid;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(any(target_os = "linux", target_os = "macos", windows))]
    #[test]
    fn this_process_is_itself_and_a_wrong_start_is_another() {
        let me = std::process::id();
        let start = start_time(me);
        assert!(start.is_some());
        assert_eq!(check(me, start), Found::Same);
        let other = check(me, start.map(|s| s + 1));
        assert!(matches!(other, Found::Other(_)), "{other:?}");
        assert!(matches!(check(me, None), Found::Unverified(_)));
        let note = stale_note("supervisor", me, &other).unwrap();
        assert!(note.contains("now belongs to another process"), "{note}");
        assert!(note.contains("not signalled"), "{note}");
    }

    #[test]
    fn a_pid_that_is_gone_is_gone() {
        assert_eq!(check(0, Some(1)), Found::Gone);
        assert_eq!(stale_note("x", 0, &Found::Gone), None);
    }
}
