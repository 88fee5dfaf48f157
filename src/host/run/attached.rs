//! The dashboard (SPEC §5.8): `openwrk start` on a terminal watches a
//! background supervisor, reading its log and run record, probing its
//! services, and can leave it running (`d`) or stop it (`q`).

use std::collections::{HashMap, VecDeque};
use std::io::{Read as _, Seek as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::background::{Background, POLL};
use super::pairing::{self, RunRecord};
use super::{plan, RunConfig, RunOutput, BACKGROUND_GRACE};
use crate::host::dashboard::{self, Action, ServiceRow, ServiceState, View};
use crate::host::health::{Endpoint, Probe, Prober};
use crate::host::log::Logger;
use crate::host::process;
use crate::host::signals::Signals;
use crate::host::supervise::STOP_GRACE;
use crate::host::HostError;
use crate::supply::manifest::{OPENCODE, OPENWORK_SERVER, OWPENBOT};
use crate::supply::resolve::Resolver;

const DASHBOARD_LOG_LINES: usize = 2000;

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
fn spawn_health(record: &RunRecord) -> Result<(Health, tokio::task::JoinHandle<()>), HostError> {
    let prober = Prober::new().map_err(|e| HostError::Runtime(e.to_string()))?;
    let p = &record.pairing.opencode;
    let authorization = crate::host::credentials::basic_auth(&p.username, &p.password);
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

fn service_names(config: &RunConfig) -> Vec<&'static str> {
    let mut names = vec![OPENCODE, OPENWORK_SERVER];
    if !config.options.no_owpenbot {
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
pub(super) async fn dashboard(
    config: &RunConfig,
    resolver: &Resolver,
    logger: &Logger,
    output: &dyn RunOutput,
) -> Result<i32, HostError> {
    drop(plan::prepare(config, resolver, logger).await?);
    let run_id = &config.run_id;
    let mut signals = Signals::install()?;
    let mut bg = Background::launch(&config.data_dir, run_id, true)?;
    let tui_error = |e: std::io::Error| {
        HostError::Runtime(format!("the dashboard cannot use this terminal: {e}\nhint: pass --no-tui (or use `openwrk serve`) for plain logs"))
    };
    let mut session = match dashboard::Session::enter() {
        Ok(s) => s,
        Err(e) => {
            bg.stop();
            bg.wait_stopped().await;
            return Err(tui_error(e));
        }
    };
    let names = service_names(config);
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
            output.detached(&record.pairing, run_id, &record.log);
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
            let deadline = Instant::now() + STOP_GRACE + BACKGROUND_GRACE;
            while bg.exited().is_none() && Instant::now() < deadline {
                stopping_view(&mut view, &mut tail);
                let _ = session.draw(&view);
                tokio::time::sleep(POLL).await;
            }
            bg.wait_stopped().await;
            drop(session);
            output.stopped(run_id);
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
    use std::io::Write as _;

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
        assert_eq!(
            crate::fsutil::tail_lines(&path, 2),
            ["partial", "\x1b[31mred\x1b[0m"]
        );
    }

    #[test]
    fn rows_start_as_starting_and_missing_children_are_exited() {
        let rows = service_rows(&[OPENCODE, OWPENBOT], None, None, false);
        assert!(rows.iter().all(|r| r.state == ServiceState::Starting));
    }
}
