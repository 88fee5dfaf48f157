//! Background runs (SPEC §5.6, §5.8): `--detach`, the dashboard that watches a
//! background supervisor, and `openwrk stop`.

use std::collections::{HashMap, VecDeque};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::pairing::{self, RunRecord};
use super::{plan, Signals, SUPERVISOR_ENV};
use crate::cli::{Global, StartArgs};
use crate::commands::Failure;
use crate::dashboard::{self, Action, ServiceRow, ServiceState, View};
use crate::health::{Endpoint, Probe, Prober};
use crate::log::Logger;
use crate::process;
use crate::supervise::{self, SIGKILL, SIGTERM, STOP_GRACE};
use crate::supply::manifest::{OPENCODE, OPENWORK_SERVER, OWPENBOT};

const POLL: Duration = Duration::from_millis(100);
/// Log lines shown when a background run fails to start.
const FAILURE_TAIL: usize = 30;
const DASHBOARD_LOG_LINES: usize = 2000;

/// A background supervisor this process launched.
struct Background {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    run_id: String,
    record: PathBuf,
    log: PathBuf,
}

impl Background {
    /// Re-executes openwrk with the same arguments as a supervisor in its own
    /// session, its output going to `<data dir>/runs/<run id>.log`.
    fn launch(data_dir: &Path, run_id: &str, attached: bool) -> Result<Background, Failure> {
        let runs = pairing::runs_dir(data_dir);
        crate::fsutil::create_private_dir_all(&runs).map_err(|e| Failure {
            message: format!(
                "cannot create {}: {e}\nhint: check that the data dir is writable",
                runs.display()
            ),
            code: 1,
        })?;
        let record = pairing::record_path(data_dir, run_id);
        if let Ok(old) = pairing::read_record(&record) {
            if run_alive(&old) {
                return Err(Failure {
                    message: format!("run {run_id} is already running (record {})\nhint: stop it with `openwrk stop --run-id {run_id}`, or pick another --run-id", record.display()),
                    code: 2,
                });
            }
        }
        let _ = std::fs::remove_file(&record);
        let log = pairing::log_path(data_dir, run_id);
        let file = open_private_log(&log)?;
        let exe = std::env::current_exe().map_err(|e| Failure {
            message: format!("cannot find the openwrk executable: {e}"),
            code: 1,
        })?;
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(std::env::args_os().skip(1))
            .env(
                SUPERVISOR_ENV,
                if attached { "attached" } else { "detached" },
            )
            .env("OPENWRK_RUN_ID", run_id)
            .stdin(if attached {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(file.try_clone().map_err(|e| log_error(&log, e))?)
            .stderr(file);
        crate::supervise::new_session(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| Failure {
            message: format!(
                "cannot start the background supervisor {}: {e}",
                exe.display()
            ),
            code: 1,
        })?;
        let stdin = child.stdin.take();
        Ok(Background {
            child,
            stdin,
            run_id: run_id.to_string(),
            record,
            log,
        })
    }

    /// The run record, once the supervisor wrote it.
    fn ready_record(&self) -> Option<RunRecord> {
        pairing::read_record(&self.record)
            .ok()
            .filter(|r| r.supervisor_pid == self.child.id())
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Tells an attached supervisor to keep running without us.
    fn detach(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"detach\n");
            let _ = stdin.flush();
        }
    }

    /// Asks the supervisor to stop everything.
    fn stop(&mut self) {
        self.stdin = None;
        supervise::signal_pid(self.child.id(), SIGTERM);
    }

    /// Waits (bounded) for the supervisor to finish stopping.
    async fn wait_stopped(&mut self) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + STOP_GRACE + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        supervise::signal_pid(self.child.id(), SIGKILL);
        self.child.wait().ok()
    }

    /// The supervisor ended before it was ready: its log says why.
    fn failed(&self, status: std::process::ExitStatus) -> Failure {
        let tail = tail_lines(&self.log, FAILURE_TAIL);
        let mut message = format!(
            "the background run {} stopped before it was ready ({})\n  log: {}\n",
            self.run_id,
            describe(status),
            self.log.display()
        );
        for line in tail {
            message.push_str(&format!("    {line}\n"));
        }
        message.push_str("hint: the log lines above name the sidecar that failed and why");
        Failure {
            message,
            code: status.code().filter(|c| *c != 0).unwrap_or(1),
        }
    }
}

pub(crate) fn describe(status: std::process::ExitStatus) -> String {
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

fn log_error(path: &Path, e: std::io::Error) -> Failure {
    Failure {
        message: format!(
            "cannot open the run log {}: {e}\nhint: check that the data dir is writable",
            path.display()
        ),
        code: 1,
    }
}

fn open_private_log(path: &Path) -> Result<std::fs::File, Failure> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).write(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(|e| log_error(path, e))
}

/// The last `n` lines of a file.
pub(crate) fn tail_lines(path: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Supervisor,
    /// Leads its process group, which is signalled as a whole.
    Sidecar,
    /// Never signalled by `stop`: it stops what its sidecar leaves behind
    /// once the sidecar exits, and must not be killed before that.
    Guardian,
}

/// A process a run record names.
struct Recorded {
    role: String,
    kind: Kind,
    pid: u32,
    start: Option<u64>,
}

impl Recorded {
    /// Still the recorded process (same pid, same start time).
    fn ours(&self) -> bool {
        process::is_same(self.pid, self.start)
    }

    /// Signals it (its group, for a sidecar) only while it is provably ours.
    fn signal(&self, sig: i32) {
        if self.kind == Kind::Guardian || !self.ours() {
            return;
        }
        match self.kind {
            Kind::Sidecar => supervise::signal_group(self.pid, sig),
            _ => supervise::signal_pid(self.pid, sig),
        }
    }
}

fn recorded(r: &RunRecord) -> Vec<Recorded> {
    let mut all = vec![Recorded {
        role: "supervisor".into(),
        kind: Kind::Supervisor,
        pid: r.supervisor_pid,
        start: r.supervisor_start,
    }];
    for c in &r.children {
        all.push(Recorded {
            role: c.name.clone(),
            kind: Kind::Sidecar,
            pid: c.pid,
            start: c.process_start,
        });
        if let Some(pid) = c.guardian_pid {
            all.push(Recorded {
                role: format!("{}'s guardian", c.name),
                kind: Kind::Guardian,
                pid,
                start: c.guardian_start,
            });
        }
    }
    all
}

/// Whether anything of a recorded run is still running (provably ours).
fn run_alive(r: &RunRecord) -> bool {
    recorded(r).iter().any(Recorded::ours)
}

/// Notes naming recorded pids that now belong to something else.
fn stale_notes(r: &RunRecord) -> Vec<String> {
    recorded(r)
        .iter()
        .filter_map(|p| process::stale_note(&p.role, p.pid, &process::check(p.pid, p.start)))
        .collect()
}

/// `--detach`: start in the background, print the summary once healthy, exit.
pub async fn detach(
    global: &Global,
    args: &StartArgs,
    run_id: &str,
    logger: &Logger,
) -> Result<i32, Failure> {
    // Resolve here, so downloads show progress and bad flags fail in this terminal.
    drop(plan::prepare(global, args, run_id, logger).await?);
    let data_dir = crate::commands::data_dir(global)?;
    let mut signals = Signals::install()?;
    let mut bg = Background::launch(&data_dir, run_id, false)?;
    logger.info(&format!(
        "starting run {run_id} in the background; log: {}",
        bg.log.display()
    ));
    let record = loop {
        if let Some(record) = bg.ready_record() {
            break record;
        }
        if let Some(status) = bg.exited() {
            return Err(bg.failed(status));
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            (n, name) = signals.recv() => {
                logger.info(&format!("received {name}; stopping the background run"));
                bg.stop();
                bg.wait_stopped().await;
                return Ok(128 + n);
            }
        }
    };
    print_summary(global, &record);
    logger.info(&format!(
        "detached: run {run_id} keeps running (supervisor pid {}); log: {}; stop it with: openwrk stop --run-id {run_id}",
        record.supervisor_pid,
        record.log.display()
    ));
    Ok(0)
}

fn print_summary(global: &Global, record: &RunRecord) {
    if global.json {
        println!(
            "{}",
            serde_json::to_string(&record.pairing).expect("pairing serializes")
        );
    } else {
        print!(
            "{}",
            pairing::text(&record.pairing, record.remote_access, None)
        );
    }
}

/// `openwrk stop [--run-id ID]`: the named run, else the newest.
pub async fn stop(global: &Global, run_id: Option<String>) -> Result<i32, Failure> {
    let data_dir = crate::commands::data_dir(global)?;
    let (path, record) = match run_id.filter(|s| !s.is_empty()) {
        Some(id) => {
            pairing::check_run_id(&id)?;
            let path = pairing::record_path(&data_dir, &id);
            if !path.exists() {
                return Err(Failure {
                    message: format!("no detached run {id}: {} does not exist\nhint: `ls {}` shows the recorded runs", path.display(), pairing::runs_dir(&data_dir).display()),
                    code: 1,
                });
            }
            let record = pairing::read_record(&path)?;
            (path, record)
        }
        None => pairing::list_records(&data_dir)
            .into_iter()
            .find_map(|(p, r)| r.map(|r| (p, r)))
            .ok_or_else(|| Failure {
                message: format!(
                    "no detached run to stop in {}\nhint: start one with `openwrk serve --detach`",
                    pairing::runs_dir(&data_dir).display()
                ),
                code: 1,
            })?,
    };
    let id = record.run_id.clone();
    // Before anything is signalled: a pid that belongs to another process is named, never touched.
    let notes = stale_notes(&record);
    if !run_alive(&record) {
        record.pairing.sandbox.cleanup();
        let _ = std::fs::remove_file(&path);
        report(
            global,
            &id,
            "gone",
            &format!("note: run {id} was no longer running; removed its record"),
            &notes,
        );
        return Ok(0);
    }
    let killed = terminate(&record).await;
    // Sandbox mode (SPEC §5.9): `docker rm -f openwrk-<run id>` and the like.
    record.pairing.sandbox.cleanup();
    let _ = std::fs::remove_file(&path);
    let how = if killed {
        " (some processes needed SIGKILL)"
    } else {
        ""
    };
    report(
        global,
        &id,
        "stopped",
        &format!("stopped run {id}{how}"),
        &notes,
    );
    Ok(0)
}

fn report(global: &Global, id: &str, state: &str, text: &str, notes: &[String]) {
    if global.json {
        println!(
            "{}",
            serde_json::json!({ "runId": id, "state": state, "notes": notes })
        );
    } else {
        println!("{text}");
        for n in notes {
            println!("note: {n}");
        }
    }
}

/// SIGTERM to the supervisor and each sidecar group, SIGKILL to what is left
/// after the grace period; each only while it is provably the recorded
/// process. Returns whether SIGKILL was needed.
async fn terminate(record: &RunRecord) -> bool {
    let all = recorded(record);
    let alive = || all.iter().any(Recorded::ours);
    all.iter().for_each(|p| p.signal(SIGTERM));
    let deadline = Instant::now() + STOP_GRACE;
    while alive() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !alive() {
        return false;
    }
    all.iter().for_each(|p| p.signal(SIGKILL));
    // Guardians then stop what their sidecars left (well within 3 s).
    let deadline = Instant::now() + Duration::from_secs(3);
    while alive() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Reads a growing log file incrementally, keeping the last lines.
struct LogTail {
    path: PathBuf,
    offset: u64,
    partial: String,
    lines: VecDeque<String>,
}

impl LogTail {
    fn new(path: PathBuf) -> LogTail {
        LogTail {
            path,
            offset: 0,
            partial: String::new(),
            lines: VecDeque::new(),
        }
    }

    fn refresh(&mut self) {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return;
        };
        if f.seek(std::io::SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if let Ok(n) = f.read_to_end(&mut buf) {
            self.offset += n as u64;
        }
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            if self.lines.len() == DASHBOARD_LOG_LINES {
                self.lines.pop_front();
            }
            self.lines.push_back(strip_ansi(line.trim_end()));
        }
    }
}

/// Drops ANSI escape sequences (a `--color always` log) so they do not garble the screen.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

type Health = Arc<Mutex<HashMap<String, Probe>>>;

/// Probes every recorded service every two seconds for the dashboard.
fn spawn_health(record: &RunRecord) -> Result<(Health, tokio::task::JoinHandle<()>), Failure> {
    let prober = Prober::new().map_err(|e| Failure {
        message: e.to_string(),
        code: 1,
    })?;
    let p = &record.pairing.opencode;
    let authorization = crate::credentials::basic_auth(&p.username, &p.password);
    let endpoints: Vec<(String, Endpoint)> = record
        .children
        .iter()
        .filter_map(|c| {
            let base = c.local_url.clone()?;
            let ep = match c.name.as_str() {
                OPENCODE => Endpoint::OpenCode {
                    base,
                    authorization: authorization.clone(),
                },
                OPENWORK_SERVER => Endpoint::OpenWork { base },
                _ => Endpoint::Owpenbot { base },
            };
            Some((c.name.clone(), ep))
        })
        .collect();
    let health: Health = Arc::default();
    let shared = health.clone();
    let task = tokio::spawn(async move {
        loop {
            for (name, ep) in &endpoints {
                let probe = prober.probe(ep).await;
                shared
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.clone(), probe);
            }
            // Each probe shows up in the sidecars' request logs; keep them rare.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    Ok((health, task))
}

fn service_names(args: &StartArgs) -> Vec<&'static str> {
    let mut names = vec![OPENCODE, OPENWORK_SERVER];
    if !args.no_owpenbot {
        names.push(OWPENBOT);
    }
    names
}

fn pairing_rows(p: &pairing::Pairing) -> Vec<(String, String)> {
    vec![
        ("OpenWork URL".into(), p.openwork.url.clone()),
        ("client token".into(), p.openwork.token.clone()),
        ("host token".into(), p.openwork.host_token.clone()),
        ("OpenCode URL".into(), p.opencode.url.clone()),
        ("username".into(), p.opencode.username.clone()),
        ("password".into(), p.opencode.password.clone()),
        ("attach".into(), p.attach.clone()),
        ("sandbox".into(), p.sandbox.describe()),
    ]
}

/// The services' rows from what is known: names while starting, then the record and probes.
fn service_rows(
    names: &[&str],
    record: Option<&RunRecord>,
    health: Option<&Health>,
    stopping: bool,
) -> Vec<ServiceRow> {
    let probes = health
        .map(|h| h.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .unwrap_or_default();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    names
        .iter()
        .map(|name| {
            let child = record.and_then(|r| r.children.iter().find(|c| c.name == *name));
            let Some(c) = child else {
                let state = if record.is_some() {
                    ServiceState::Exited
                } else {
                    ServiceState::Starting
                };
                return ServiceRow {
                    name: name.to_string(),
                    state,
                    pid: None,
                    port: None,
                    uptime: None,
                    version: None,
                };
            };
            let alive = process::is_same(c.pid, c.process_start);
            let state = match (alive, probes.get(*name)) {
                (false, _) => ServiceState::Exited,
                (true, _) if stopping => ServiceState::Stopping,
                (true, Some(Probe::Healthy { .. })) | (true, None) => ServiceState::Healthy,
                (true, Some(Probe::Degraded { .. })) => ServiceState::Degraded,
                (true, Some(Probe::Down { .. })) => ServiceState::Unhealthy,
            };
            ServiceRow {
                name: name.to_string(),
                state,
                pid: Some(c.pid),
                port: c.port,
                uptime: alive.then(|| Duration::from_millis(now.saturating_sub(c.started_unix_ms))),
                version: c.version.clone(),
            }
        })
        .collect()
}

enum Ending {
    Quit,
    Detach(Box<RunRecord>),
    Signal(i32),
    Exited(std::process::ExitStatus),
}

/// `openwrk start` on a terminal: a background supervisor watched by the dashboard.
pub async fn dashboard(
    global: &Global,
    args: &StartArgs,
    run_id: &str,
    logger: &Logger,
) -> Result<i32, Failure> {
    drop(plan::prepare(global, args, run_id, logger).await?);
    let data_dir = crate::commands::data_dir(global)?;
    let mut signals = Signals::install()?;
    let mut bg = Background::launch(&data_dir, run_id, true)?;
    let tui_error = |e: std::io::Error| {
        Failure {
        message: format!("the dashboard cannot use this terminal: {e}\nhint: pass --no-tui (or use `openwrk serve`) for plain logs"),
        code: 1,
    }
    };
    let mut session = match dashboard::Session::enter() {
        Ok(s) => s,
        Err(e) => {
            bg.stop();
            bg.wait_stopped().await;
            return Err(tui_error(e));
        }
    };
    let names = service_names(args);
    let mut view = View {
        run_id: run_id.to_string(),
        status: "starting".into(),
        ..View::default()
    };
    let mut tail = LogTail::new(bg.log.clone());
    let mut record: Option<RunRecord> = None;
    let mut health: Option<(Health, tokio::task::JoinHandle<()>)> = None;
    let ending = loop {
        tail.refresh();
        if record.is_none() {
            if let Some(r) = bg.ready_record() {
                health = spawn_health(&r).ok();
                view.pairing = pairing_rows(&r.pairing);
                view.ready = true;
                view.status = "ready".into();
                record = Some(r);
            }
        }
        if let Some(status) = bg.exited() {
            break Ending::Exited(status);
        }
        view.services = service_rows(
            &names,
            record.as_ref(),
            health.as_ref().map(|h| &h.0),
            false,
        );
        view.logs = tail.lines.iter().cloned().collect();
        if let Err(e) = session.draw(&view) {
            break_with_stop(&mut bg).await;
            drop(session);
            return Err(tui_error(e));
        }
        match session.next_action(Duration::ZERO) {
            Ok(Some(Action::Quit)) => break Ending::Quit,
            Ok(Some(Action::Detach)) => {
                if let Some(r) = &record {
                    break Ending::Detach(Box::new(r.clone()));
                }
            }
            Ok(Some(Action::ToggleLog)) => view.full_log = !view.full_log,
            Ok(_) => {}
            Err(e) => {
                break_with_stop(&mut bg).await;
                drop(session);
                return Err(tui_error(e));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            (n, _) = signals.recv() => break Ending::Signal(n),
        }
    };
    if let Some((_, task)) = &health {
        task.abort();
    }
    match ending {
        Ending::Detach(record) => {
            bg.detach();
            drop(session);
            print_summary(global, &record);
            println!(
                "detached: run {run_id} keeps running; log: {}\nstop it with: openwrk stop --run-id {run_id}",
                record.log.display()
            );
            Ok(0)
        }
        Ending::Exited(status) => {
            drop(session);
            if status.success() {
                Ok(0)
            } else {
                Err(bg.failed(status))
            }
        }
        Ending::Quit | Ending::Signal(_) => {
            bg.stop();
            view.status = "stopping".into();
            let stopping_view = |view: &mut View, tail: &mut LogTail| {
                tail.refresh();
                view.services = service_rows(&names, record.as_ref(), None, true);
                view.logs = tail.lines.iter().cloned().collect();
            };
            let deadline = Instant::now() + STOP_GRACE + Duration::from_secs(3);
            while bg.exited().is_none() && Instant::now() < deadline {
                stopping_view(&mut view, &mut tail);
                let _ = session.draw(&view);
                tokio::time::sleep(POLL).await;
            }
            bg.wait_stopped().await;
            drop(session);
            println!("stopped run {run_id}");
            match ending {
                Ending::Signal(n) if record.is_none() => Ok(128 + n),
                _ => Ok(0),
            }
        }
    }
}

async fn break_with_stop(bg: &mut Background) {
    bg.stop();
    bg.wait_stopped().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_reads_only_new_complete_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        std::fs::write(&path, "a\nb\npart").unwrap();
        let mut t = LogTail::new(path.clone());
        t.refresh();
        assert_eq!(t.lines, ["a", "b"]);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"ial\n\x1b[31mred\x1b[0m\n").unwrap();
        t.refresh();
        assert_eq!(t.lines, ["a", "b", "partial", "red"]);
        assert_eq!(tail_lines(&path, 2), ["partial", "\x1b[31mred\x1b[0m"]);
    }

    #[test]
    fn rows_start_as_starting_and_missing_children_are_exited() {
        let rows = service_rows(&[OPENCODE, OWPENBOT], None, None, false);
        assert!(rows.iter().all(|r| r.state == ServiceState::Starting));
    }
}
