//! The daemon's files in the data dir: `daemon.json` (the record),
//! `daemon.token` (the API token) and `daemon.lock` (held while a daemon runs).

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const RECORD_FILE: &str = "daemon.json";
pub const TOKEN_FILE: &str = "daemon.token";
pub const LOCK_FILE: &str = "daemon.lock";
pub const LOG_FILE: &str = "daemon.log";

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot use {path}: {source}\nhint: check the permissions of the data dir (--data-dir / OPENWRK_DATA_DIR)")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a daemon record: {detail}\nhint: if no daemon is running, delete the file"
    )]
    BadRecord { path: PathBuf, detail: String },
    #[error("{0}")]
    Random(#[from] crate::host::credentials::RandomError),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError + '_ {
    move |source| DaemonError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `<data dir>/daemon.json` (0600): who is running, where, and its OpenCode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonRecord {
    pub pid: u32,
    /// The daemon's start time (`crate::host::process`): `daemon stop` signals the
    /// pid only while it still has this one. Absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_start: Option<u64>,
    pub url: String,
    pub host: String,
    pub port: u16,
    pub started_at: String,
    pub version: String,
    pub run_id: String,
    pub data_dir: PathBuf,
    /// The daemon's output when it runs in the background.
    pub log: Option<PathBuf>,
    pub opencode: OpenCodeRecord,
    /// Sandbox mode (SPEC §5.9): `{"mode":"none"}` without one.
    #[serde(default)]
    pub sandbox: crate::host::sandbox::SandboxInfo,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenCodeRecord {
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_start: Option<u64>,
    /// The guardian watching it (Unix) and its start time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardian_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardian_start: Option<u64>,
    pub port: Option<u16>,
    pub url: Option<String>,
    pub version: Option<String>,
    pub binary: PathBuf,
    pub restarts: u32,
    pub last_exit: Option<LastExit>,
}

/// How OpenCode last ended, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastExit {
    pub status: String,
    pub at: String,
}

pub fn record_path(data_dir: &Path) -> PathBuf {
    data_dir.join(RECORD_FILE)
}

pub fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join(LOG_FILE)
}

/// The record, `None` when there is none.
pub fn read_record(data_dir: &Path) -> Result<Option<DaemonRecord>, DaemonError> {
    let path = record_path(data_dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| DaemonError::BadRecord {
            path,
            detail: e.to_string(),
        })
}

/// Written atomically; the temp file is created 0600 and keeps that mode.
pub fn write_record(data_dir: &Path, record: &DaemonRecord) -> Result<(), DaemonError> {
    let path = record_path(data_dir);
    let mut bytes =
        serde_json::to_vec_pretty(record).map_err(|e| io(&path)(std::io::Error::other(e)))?;
    bytes.push(b'\n');
    crate::fsutil::write_atomic(&path, &bytes).map_err(io(&path))
}

/// Removes the record if it is still `pid`'s (a newer daemon's stays).
pub fn remove_record(data_dir: &Path, pid: u32) {
    if let Ok(Some(r)) = read_record(data_dir) {
        if r.pid == pid {
            let _ = std::fs::remove_file(record_path(data_dir));
        }
    }
}

/// The API token: generated once (192 random bits), then reused, 0600.
/// Created through a temp file and a hard link, so two daemons starting at
/// once agree on one token and nobody reads a half-written file.
pub fn load_or_create_token(data_dir: &Path) -> Result<String, DaemonError> {
    let path = data_dir.join(TOKEN_FILE);
    if let Some(t) = read_token(&path)? {
        return Ok(t);
    }
    let token = crate::host::credentials::token()?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".daemon.token-")
        .tempfile_in(data_dir)
        .map_err(io(data_dir))?;
    std::io::Write::write_all(&mut tmp, format!("{token}\n").as_bytes()).map_err(io(&path))?;
    tmp.as_file().sync_all().map_err(io(&path))?;
    match std::fs::hard_link(tmp.path(), &path) {
        Ok(()) => {
            crate::fsutil::sync_dir(data_dir);
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_token(&path)?
            .ok_or_else(|| io(&path)(std::io::Error::other("the token file is empty"))),
        Err(e) => Err(io(&path)(e)),
    }
}

/// The token, if the file exists (`instance dispose` and the tests read it).
pub fn read_token(path: &Path) -> Result<Option<String>, DaemonError> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// Held by the running daemon for its whole life; the OS releases it when
/// the process ends, however it ends. This, not the pid in the record, says
/// whether a daemon runs (a pid may have been reused).
pub struct DaemonLock {
    _file: File,
}

fn open_lock(data_dir: &Path) -> Result<File, DaemonError> {
    let path = data_dir.join(LOCK_FILE);
    crate::host::workspaces::lock_file_options()
        .open(&path)
        .map_err(io(&path))
}

/// Takes the lock; `None` when another daemon holds it.
pub fn try_lock(data_dir: &Path) -> Result<Option<DaemonLock>, DaemonError> {
    let file = open_lock(data_dir)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(DaemonLock { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(io(&data_dir.join(LOCK_FILE))(e)),
    }
}

/// Whether a daemon holds the lock of `data_dir` right now.
pub fn is_running(data_dir: &Path) -> Result<bool, DaemonError> {
    Ok(try_lock(data_dir)?.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_token(dir.path()).unwrap();
        let b = load_or_create_token(dir.path()).unwrap();
        assert_eq!(a, b);
        assert!(a.len() >= 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn one_lock_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = try_lock(dir.path()).unwrap();
        assert!(held.is_some());
        assert!(is_running(dir.path()).unwrap());
        drop(held);
        assert!(!is_running(dir.path()).unwrap());
    }
}
