//! `daemon stop`, `daemon status` and `instance dispose` (SPEC §6), against
//! the daemon this data dir records; a pid is signalled only while it still
//! has its recorded start time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{
    is_running, read_record, read_token, record_path, remove_record, DaemonRecord, OpenCodeRecord,
    LOCK_FILE, POLL, TOKEN_FILE,
};
use crate::host::process;
use crate::host::supervise::{SIGKILL, SIGTERM, STOP_GRACE};
use crate::host::workspaces::Store;
use crate::host::HostError;

fn not_running(data_dir: &Path) -> HostError {
    HostError::Runtime(format!(
        "no daemon is running for {}\nhint: start one with `openwrk daemon start`",
        data_dir.display()
    ))
}

/// The running daemon's record, or why there is none.
pub fn running_record(data_dir: &Path) -> Result<DaemonRecord, HostError> {
    if !is_running(data_dir)? {
        return Err(not_running(data_dir));
    }
    read_record(data_dir)?.ok_or_else(|| {
        HostError::Runtime(format!(
            "a daemon is starting for {} but is not ready yet\nhint: try again in a moment",
            data_dir.display()
        ))
    })
}

/// Notes naming the record's pids that now belong to other processes.
fn stale_notes(r: &DaemonRecord) -> Vec<String> {
    let oc = &r.opencode;
    [
        ("daemon", Some(r.pid), r.process_start),
        ("OpenCode", oc.pid, oc.process_start),
        ("OpenCode's guardian", oc.guardian_pid, oc.guardian_start),
    ]
    .into_iter()
    .filter_map(|(role, pid, start)| {
        let pid = pid?;
        process::stale_note(role, pid, &process::check(pid, start))
    })
    .collect()
}

/// `daemon stop`: SIGTERM to the daemon (which stops OpenCode), SIGKILL to
/// whatever is left after the grace period; a pid is signalled only while it
/// still has its recorded start time.
pub async fn stop(data_dir: &Path) -> Result<Stopped, HostError> {
    let data_dir = data_dir.to_path_buf();
    if !is_running(&data_dir)? {
        return match read_record(&data_dir).ok().flatten() {
            Some(r) => {
                let _ = std::fs::remove_file(record_path(&data_dir));
                let notes = stale_notes(&r);
                Ok(Stopped {
                    record: r,
                    was_running: false,
                    needed_sigkill: false,
                    notes,
                })
            }
            None => Err(not_running(&data_dir)),
        };
    }
    let record = running_record(&data_dir)?;
    let found = process::check(record.pid, record.process_start);
    if found != process::Found::Same {
        let what = process::stale_note("daemon", record.pid, &found)
            .unwrap_or_else(|| format!("pid {} (daemon) is gone", record.pid));
        return Err(HostError::Runtime(format!(
            "not stopping the daemon: {what}\n  record: {}\nhint: a daemon holds {} but its record does not name it; `openwrk daemon status` shows what answers, or end that process by hand",
            record_path(&data_dir).display(),
            LOCK_FILE
        )));
    }
    let oc = &record.opencode;
    let oc_ours = || {
        oc.pid
            .is_some_and(|p| process::is_same(p, oc.process_start))
    };
    let alive = || is_running(&data_dir).unwrap_or(false) || oc_ours();
    process::signal_pid(record.pid, SIGTERM);
    let deadline = Instant::now() + STOP_GRACE + Duration::from_secs(3);
    while alive() && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    let mut needed_sigkill = false;
    if alive() {
        if process::is_same(record.pid, record.process_start) {
            process::signal_pid(record.pid, SIGKILL);
        }
        if let Some(p) = oc.pid.filter(|_| oc_ours()) {
            process::signal_group(p, SIGKILL);
        }
        // OpenCode's guardian then stops what OpenCode left (well within 3 s).
        let deadline = Instant::now() + Duration::from_secs(3);
        while alive() && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        needed_sigkill = true;
    }
    remove_record(&data_dir, record.pid);
    Ok(Stopped {
        record,
        was_running: true,
        needed_sigkill,
        notes: Vec::new(),
    })
}

/// What `daemon stop` did.
#[derive(Debug)]
pub struct Stopped {
    pub record: DaemonRecord,
    /// False: the daemon was gone; only its record was removed.
    pub was_running: bool,
    pub needed_sigkill: bool,
    /// Recorded pids that now belong to other processes (never signalled).
    pub notes: Vec<String>,
}

/// GET `<daemon>/health`, bounded.
async fn daemon_health(url: &str) -> Result<serde_json::Value, String> {
    let client = crate::host::remote::client(url, Duration::from_secs(2))?;
    let r = client
        .get(format!("{url}/health"))
        .send()
        .await
        .map_err(|e| crate::error_chain(&e))?;
    let status = r.status().as_u16();
    if status != 200 {
        return Err(format!("HTTP {status}"));
    }
    let body = r.bytes().await.map_err(|e| crate::error_chain(&e))?;
    serde_json::from_slice(&body).map_err(|e| format!("/health is not JSON: {e}"))
}

/// What `daemon status` shows: the record, with OpenCode as the daemon
/// reports it live.
#[derive(Debug)]
pub struct Status {
    pub record: DaemonRecord,
    /// The daemon's `/health`, or why it did not answer.
    pub health: Result<(), String>,
    pub opencode: OpenCodeRecord,
    pub opencode_healthy: bool,
    pub workspaces: Result<usize, String>,
}

impl Status {
    /// The daemon answers and its OpenCode is healthy.
    pub fn healthy(&self) -> bool {
        self.health.is_ok() && self.opencode_healthy
    }
}

/// `daemon status`: the record plus live health; an error when none runs.
pub async fn status(data_dir: &Path) -> Result<Status, HostError> {
    let record = running_record(data_dir)?;
    let health = daemon_health(&record.url).await;
    let workspaces = Store::new(data_dir)
        .load()
        .map(|w| w.len())
        .map_err(|e| e.to_string().lines().next().unwrap_or("").to_string());
    let live = health.as_ref().ok().map(|h| h["opencode"].clone());
    let mut oc = record.opencode.clone();
    if let Some(o) = &live {
        oc.pid = o["pid"].as_u64().map(|p| p as u32);
        oc.url = o["url"].as_str().map(str::to_string);
        oc.port = oc
            .url
            .as_deref()
            .and_then(|u| u.rsplit(':').next())
            .and_then(|p| p.parse().ok());
        oc.restarts = o["restarts"].as_u64().unwrap_or(0) as u32;
        oc.version = o["version"].as_str().map(str::to_string).or(oc.version);
        oc.last_exit = serde_json::from_value(o["lastExit"].clone()).ok().flatten();
    }
    let opencode_healthy = live
        .as_ref()
        .and_then(|o| o["healthy"].as_bool())
        .unwrap_or(false);
    Ok(Status {
        record,
        health: health.map(drop),
        opencode: oc,
        opencode_healthy,
        workspaces,
    })
}

/// `instance dispose ID`: asks the running daemon to release OpenCode's instance.
pub async fn dispose(data_dir: &Path, id: &str) -> Result<Disposed, HostError> {
    let record = running_record(data_dir).map_err(|e| match e {
        HostError::Runtime(m) => HostError::Runtime(m.replace(
            "\nhint:",
            "\n  `instance dispose` asks the running daemon, which holds the OpenCode instances\nhint:",
        )),
        other => other,
    })?;
    let token_path = data_dir.join(TOKEN_FILE);
    let token = read_token(&token_path)?.ok_or_else(|| {
        HostError::Runtime(format!(
            "the daemon token {} is missing\nhint: restart the daemon (`openwrk daemon stop && openwrk daemon start`)",
            token_path.display()
        ))
    })?;
    let url = format!("{}/workspaces/{id}/dispose", record.url);
    let client = crate::host::remote::client(&record.url, Duration::from_secs(35))
        .map_err(HostError::Runtime)?;
    let response = client
        .post(&url)
        .bearer_auth(&token)
        .send()
        .await
        .map_err(|e| {
            HostError::Runtime(format!(
                "the daemon at {} did not answer: {}\nhint: `openwrk daemon status` checks it",
                record.url,
                crate::error_chain(&e)
            ))
        })?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    let answer: serde_json::Value =
        serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body.clone()));
    match status {
        200..=299 => Ok(Disposed {
            id: id.to_string(),
            path: Store::new(data_dir).get(id).ok().map(|w| w.path),
            answer,
        }),
        404 => Err(HostError::Runtime(format!(
            "unknown workspace id {id} (the daemon at {} answered HTTP 404)\nhint: `openwrk workspace list` shows the ids",
            record.url
        ))),
        s => {
            let message = answer["message"].as_str().unwrap_or(&body);
            Err(HostError::Runtime(format!(
                "disposing {id} failed: {url} answered HTTP {s}: {message}\nhint: `openwrk daemon status` shows whether OpenCode is healthy; the daemon log has details"
            )))
        }
    }
}

/// OpenCode's answer to disposing a workspace's instance.
#[derive(Debug)]
pub struct Disposed {
    pub id: String,
    pub path: Option<PathBuf>,
    pub answer: serde_json::Value,
}
