//! Background runs (SPEC §5.6): the background supervisor a `--detach` run
//! (and the dashboard) launch, and `openwrk stop`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::pairing::{self, RunRecord};
use super::{plan, RunConfig, RunOutput, BACKGROUND_GRACE, SUPERVISOR_ENV};
use crate::host::log::Logger;
use crate::host::process;
use crate::host::signals::Signals;
use crate::host::supervise::{SIGKILL, SIGTERM, STOP_GRACE};
use crate::host::HostError;
use crate::supply::resolve::Resolver;

pub(super) const POLL: Duration = Duration::from_millis(100);
/// Log lines shown when a background run fails to start.
const FAILURE_TAIL: usize = 30;

/// A background supervisor this process launched.
pub(super) struct Background {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    run_id: String,
    record: PathBuf,
    pub log: PathBuf,
}

impl Background {
    /// Re-executes openwrk with the same arguments as a supervisor in its own
    /// session, its output going to `<data dir>/runs/<run id>.log`.
    pub(super) fn launch(
        data_dir: &Path,
        run_id: &str,
        attached: bool,
    ) -> Result<Background, HostError> {
        let runs = pairing::runs_dir(data_dir);
        crate::fsutil::create_private_dir_all(&runs).map_err(|e| {
            HostError::Runtime(format!(
                "cannot create {}: {e}\nhint: check that the data dir is writable",
                runs.display()
            ))
        })?;
        let record = pairing::record_path(data_dir, run_id);
        if let Ok(old) = pairing::read_record(&record) {
            if run_alive(&old) {
                return Err(HostError::Usage(format!("run {run_id} is already running (record {})\nhint: stop it with `openwrk stop --run-id {run_id}`, or pick another --run-id", record.display())));
            }
        }
        let _ = std::fs::remove_file(&record);
        let log = pairing::log_path(data_dir, run_id);
        let file = open_private_log(&log)?;
        let exe = std::env::current_exe()
            .map_err(|e| HostError::Runtime(format!("cannot find the openwrk executable: {e}")))?;
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
        crate::host::supervise::new_session(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| {
            HostError::Runtime(format!(
                "cannot start the background supervisor {}: {e}",
                exe.display()
            ))
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
    pub(super) fn ready_record(&self) -> Option<RunRecord> {
        pairing::read_record(&self.record)
            .ok()
            .filter(|r| r.supervisor_pid == self.child.id())
    }

    pub(super) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Tells an attached supervisor to keep running without us.
    pub(super) fn detach(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"detach\n");
            let _ = stdin.flush();
        }
    }

    /// Asks the supervisor to stop everything.
    pub(super) fn stop(&mut self) {
        self.stdin = None;
        process::signal_pid(self.child.id(), SIGTERM);
    }

    /// Waits (bounded) for the supervisor to finish stopping.
    pub(super) async fn wait_stopped(&mut self) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + STOP_GRACE + BACKGROUND_GRACE;
        while Instant::now() < deadline {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        process::signal_pid(self.child.id(), SIGKILL);
        self.child.wait().ok()
    }

    /// The supervisor ended before it was ready: its log says why.
    pub(super) fn failed(&self, status: std::process::ExitStatus) -> HostError {
        let tail = crate::fsutil::tail_lines(&self.log, FAILURE_TAIL);
        let mut message = format!(
            "the background run {} stopped before it was ready ({})\n  log: {}\n",
            self.run_id,
            process::describe_exit(status),
            self.log.display()
        );
        for line in tail {
            message.push_str(&format!("    {line}\n"));
        }
        message.push_str("hint: the log lines above name the sidecar that failed and why");
        HostError::Background {
            message,
            code: status.code().filter(|c| *c != 0).unwrap_or(1),
        }
    }
}

fn log_error(path: &Path, e: std::io::Error) -> HostError {
    HostError::Runtime(format!(
        "cannot open the run log {}: {e}\nhint: check that the data dir is writable",
        path.display()
    ))
}

fn open_private_log(path: &Path) -> Result<std::fs::File, HostError> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).write(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(|e| log_error(path, e))
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
            Kind::Sidecar => process::signal_group(self.pid, sig),
            _ => process::signal_pid(self.pid, sig),
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
pub(super) async fn detach(
    config: &RunConfig,
    resolver: &Resolver,
    logger: &Logger,
    output: &dyn RunOutput,
) -> Result<i32, HostError> {
    // Resolve here, so downloads show progress and bad flags fail in this terminal.
    drop(plan::prepare(config, resolver, logger).await?);
    let run_id = &config.run_id;
    let mut signals = Signals::install()?;
    let mut bg = Background::launch(&config.data_dir, run_id, false)?;
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
    output.detached(&record.pairing, run_id, &record.log);
    logger.info(&format!(
        "detached: run {run_id} keeps running (supervisor pid {}); log: {}; stop it with: openwrk stop --run-id {run_id}",
        record.supervisor_pid,
        record.log.display()
    ));
    Ok(0)
}

/// `openwrk stop [--run-id ID]`: the named run, else the newest.
pub(super) async fn stop(data_dir: &Path, run_id: Option<&str>) -> Result<StopReport, HostError> {
    let data_dir = data_dir.to_path_buf();
    let (path, record) = match run_id.filter(|s| !s.is_empty()) {
        Some(id) => {
            pairing::check_run_id(id)?;
            let path = pairing::record_path(&data_dir, id);
            if !path.exists() {
                return Err(HostError::Runtime(format!("no detached run {id}: {} does not exist\nhint: `ls {}` shows the recorded runs", path.display(), pairing::runs_dir(&data_dir).display())));
            }
            let record = pairing::read_record(&path)?;
            (path, record)
        }
        None => pairing::list_records(&data_dir)
            .into_iter()
            .find_map(|(p, r)| r.map(|r| (p, r)))
            .ok_or_else(|| {
                HostError::Runtime(format!(
                    "no detached run to stop in {}\nhint: start one with `openwrk serve --detach`",
                    pairing::runs_dir(&data_dir).display()
                ))
            })?,
    };
    let id = record.run_id.clone();
    // Before anything is signalled: a pid that belongs to another process is named, never touched.
    let notes = stale_notes(&record);
    if !run_alive(&record) {
        record.pairing.sandbox.cleanup();
        let _ = std::fs::remove_file(&path);
        return Ok(StopReport {
            run_id: id,
            stopped: false,
            needed_sigkill: false,
            notes,
        });
    }
    let killed = terminate(&record).await;
    // Sandbox mode (SPEC §5.9): `docker rm -f openwrk-<run id>` and the like.
    record.pairing.sandbox.cleanup();
    let _ = std::fs::remove_file(&path);
    Ok(StopReport {
        run_id: id,
        stopped: true,
        needed_sigkill: killed,
        notes,
    })
}

/// What `openwrk stop` did.
#[derive(Debug, Clone)]
pub struct StopReport {
    pub run_id: String,
    /// False: nothing of the run was running any more; its record was removed.
    pub stopped: bool,
    pub needed_sigkill: bool,
    /// Recorded pids that now belong to other processes (never signalled).
    pub notes: Vec<String>,
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
