//! The router's workspace list (SPEC §6): `<data dir>/workspaces.json`,
//! `{"workspaces":[{"id","path","name","addedAt"}]}`.
//!
//! Every edit takes an exclusive lock on the sibling `workspaces.json.lock`,
//! re-reads the file, and replaces it by write-to-temp + fsync + rename, so
//! concurrent `workspace add` processes (and the daemon) lose nothing and a
//! reader never sees half a file. A file that does not parse is never
//! replaced: the error names it and a copy is kept as
//! `workspaces.json.corrupt-<unix time>`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub const FILE: &str = "workspaces.json";

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("cannot use the workspace list {path}: {source}\nhint: check the permissions of the data dir (--data-dir / OPENWRK_DATA_DIR)")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the workspace list {path} is corrupt: {detail}\n  a copy was kept at {backup}\nhint: fix the file by hand, or move it away to start with an empty list (openwrk never replaces it silently)")]
    Corrupt {
        path: PathBuf,
        backup: PathBuf,
        detail: String,
    },
    #[error("workspace {path} is not an existing directory{detail}\nhint: pass the path of a directory that exists")]
    NotADirectory { path: PathBuf, detail: String },
    #[error(
        "unknown workspace id {id} (not in {file})\nhint: `openwrk workspace list` shows the ids"
    )]
    UnknownId { id: String, file: PathBuf },
}

impl WorkspaceError {
    /// SPEC §9: a corrupt state file is a configuration error, a bad path a
    /// usage error, an unknown id (and I/O) a runtime failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            WorkspaceError::Corrupt { .. } => 3,
            WorkspaceError::NotADirectory { .. } => 2,
            WorkspaceError::Io { .. } | WorkspaceError::UnknownId { .. } => 1,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WorkspaceError + '_ {
    move |source| WorkspaceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workspace {
    pub id: String,
    pub path: PathBuf,
    pub name: String,
    pub added_at: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkspaceList {
    pub workspaces: Vec<Workspace>,
    /// The daemon's active workspace: where requests that name none go
    /// (`workspace switch`); the first one added until another is chosen.
    #[serde(rename = "activeId", default, skip_serializing_if = "Option::is_none")]
    pub active_id: Option<String>,
}

/// `ws_` + the first 12 hex characters of the SHA-256 of the canonical path:
/// the same directory always gets the same id.
pub fn workspace_id(canonical: &Path) -> String {
    let digest = crate::supply::digest::sha256_hex(canonical.as_os_str().as_encoded_bytes());
    format!("ws_{}", &digest[..12])
}

/// What identifies one version of the file: a rename changes the inode, an
/// edit in place the mtime or size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    mtime: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// The workspace list of one data dir.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

/// An exclusive lock on `workspaces.json.lock`; released on drop.
struct EditLock {
    _file: File,
}

impl Store {
    pub fn new(data_dir: &Path) -> Store {
        Store {
            path: data_dir.join(FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's current identity; `None` when it does not exist.
    pub fn stamp(&self) -> Result<Option<Stamp>, WorkspaceError> {
        match std::fs::metadata(&self.path) {
            Ok(m) => Ok(Some(Stamp {
                mtime: m.modified().ok(),
                len: m.len(),
                inode: inode(&m),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&self.path)(e)),
        }
    }

    /// Every workspace; a missing file is an empty list. Reads need no lock:
    /// writers replace the file by rename, so a reader sees a whole version.
    pub fn load(&self) -> Result<Vec<Workspace>, WorkspaceError> {
        Ok(self.load_list()?.workspaces)
    }

    /// The whole file: the workspaces and the active one.
    pub fn load_list(&self) -> Result<WorkspaceList, WorkspaceError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(WorkspaceList::default())
            }
            Err(e) => return Err(io(&self.path)(e)),
        };
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize::<_, WorkspaceList>(de) {
            Ok(mut list) => {
                // An active id whose workspace is gone names nothing.
                if let Some(id) = &list.active_id {
                    if !list.workspaces.iter().any(|w| &w.id == id) {
                        list.active_id = None;
                    }
                }
                Ok(list)
            }
            Err(e) => {
                let detail = match e.path().to_string().as_str() {
                    "." => e.inner().to_string(),
                    p => format!("{p}: {}", e.inner()),
                };
                let backup = self.keep_corrupt_copy(&bytes)?;
                Err(WorkspaceError::Corrupt {
                    path: self.path.clone(),
                    backup,
                    detail,
                })
            }
        }
    }

    /// One workspace by id.
    pub fn get(&self, id: &str) -> Result<Workspace, WorkspaceError> {
        self.load()?
            .into_iter()
            .find(|w| w.id == id)
            .ok_or_else(|| self.unknown(id))
    }

    /// Adds a directory (canonicalized), named after it. Returns the
    /// workspace and whether it is new; a path already listed keeps its entry.
    pub fn add(&self, path: &Path) -> Result<(Workspace, bool), WorkspaceError> {
        self.add_named(path, None)
    }

    /// [`Store::add`] with a display name (`workspace add --name`); the
    /// first workspace added becomes the active one, as upstream does.
    pub fn add_named(
        &self,
        path: &Path,
        name: Option<&str>,
    ) -> Result<(Workspace, bool), WorkspaceError> {
        let canonical = canonical_dir(path)?;
        let id = workspace_id(&canonical);
        let _lock = self.lock()?;
        let mut list = self.load_list()?;
        if let Some(existing) = list.workspaces.iter().find(|w| w.id == id) {
            return Ok((existing.clone(), false));
        }
        let name = name
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .or_else(|| {
                canonical
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| canonical.display().to_string());
        let workspace = Workspace {
            id,
            path: canonical,
            name,
            added_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        list.workspaces.push(workspace.clone());
        list.active_id.get_or_insert_with(|| workspace.id.clone());
        self.save(list)?;
        Ok((workspace, true))
    }

    /// Makes a workspace the active one (`workspace switch`) and returns it.
    pub fn switch(&self, id: &str) -> Result<Workspace, WorkspaceError> {
        let _lock = self.lock()?;
        let mut list = self.load_list()?;
        let found = list
            .workspaces
            .iter()
            .find(|w| w.id == id)
            .cloned()
            .ok_or_else(|| self.unknown(id))?;
        list.active_id = Some(found.id.clone());
        self.save(list)?;
        Ok(found)
    }

    /// The active workspace, if one is set.
    pub fn active(&self) -> Result<Option<Workspace>, WorkspaceError> {
        let list = self.load_list()?;
        Ok(active_of(&list))
    }

    /// Removes a workspace by id and returns it; removing the active one
    /// leaves none active (a request must then name its workspace).
    pub fn remove(&self, id: &str) -> Result<Workspace, WorkspaceError> {
        let _lock = self.lock()?;
        let mut list = self.load_list()?;
        let pos = list
            .workspaces
            .iter()
            .position(|w| w.id == id)
            .ok_or_else(|| self.unknown(id))?;
        let removed = list.workspaces.remove(pos);
        if list.active_id.as_deref() == Some(id) {
            list.active_id = None;
        }
        self.save(list)?;
        Ok(removed)
    }

    fn unknown(&self, id: &str) -> WorkspaceError {
        WorkspaceError::UnknownId {
            id: id.to_string(),
            file: self.path.clone(),
        }
    }

    fn lock(&self) -> Result<EditLock, WorkspaceError> {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".lock");
        let lock_path = PathBuf::from(name);
        if let Some(dir) = lock_path.parent() {
            crate::fsutil::create_private_dir_all(dir).map_err(io(dir))?;
        }
        let file = lock_file_options()
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        file.lock().map_err(io(&lock_path))?;
        Ok(EditLock { _file: file })
    }

    /// Sorted by path so the file reads well and diffs stay small; written
    /// with write_atomic (temp file 0600, fsync, rename, directory fsync).
    fn save(&self, mut list: WorkspaceList) -> Result<(), WorkspaceError> {
        list.workspaces.sort_by(|a, b| a.path.cmp(&b.path));
        let mut bytes = serde_json::to_vec_pretty(&list)
            .map_err(|e| io(&self.path)(std::io::Error::other(e)))?;
        bytes.push(b'\n');
        crate::fsutil::write_atomic(&self.path, &bytes).map_err(io(&self.path))
    }

    /// Copies an unparseable file aside once per distinct content (the daemon
    /// re-reads on every change, which must not pile up copies).
    fn keep_corrupt_copy(&self, bytes: &[u8]) -> Result<PathBuf, WorkspaceError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let prefix = format!("{FILE}.corrupt-");
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let named = entry.file_name().to_string_lossy().starts_with(&prefix);
                if named && std::fs::read(entry.path()).is_ok_and(|b| b == bytes) {
                    return Ok(entry.path());
                }
            }
        }
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut backup = dir.join(format!("{prefix}{secs}"));
        let mut n = 1;
        while backup.exists() {
            backup = dir.join(format!("{prefix}{secs}-{n}"));
            n += 1;
        }
        crate::fsutil::write_atomic(&backup, bytes).map_err(io(&backup))?;
        Ok(backup)
    }
}

/// The workspace the list marks active.
pub fn active_of(list: &WorkspaceList) -> Option<Workspace> {
    let id = list.active_id.as_deref()?;
    list.workspaces.iter().find(|w| w.id == id).cloned()
}

/// How lock files are opened: created if missing (0600, like every state
/// file), never truncated.
pub fn lock_file_options() -> std::fs::OpenOptions {
    let mut options = File::options();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// The canonical form of an existing directory.
pub fn canonical_dir(path: &Path) -> Result<PathBuf, WorkspaceError> {
    let not_dir = |detail: String| WorkspaceError::NotADirectory {
        path: path.to_path_buf(),
        detail,
    };
    let canonical = path.canonicalize().map_err(|e| not_dir(format!(": {e}")))?;
    if !canonical.is_dir() {
        return Err(not_dir(": it is not a directory".into()));
    }
    Ok(canonical)
}

#[cfg(unix)]
fn inode(m: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(m)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_short() {
        let id = workspace_id(Path::new("/home/me/project"));
        assert_eq!(id, workspace_id(Path::new("/home/me/project")));
        assert_ne!(id, workspace_id(Path::new("/home/me/other")));
        assert_eq!(id.len(), 15);
        assert!(id.starts_with("ws_"));
    }

    #[test]
    fn add_get_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("proj");
        std::fs::create_dir(&ws).unwrap();
        let store = Store::new(&dir.path().join("data"));
        assert!(store.load().unwrap().is_empty());
        let (a, new) = store.add(&ws).unwrap();
        assert!(new);
        assert_eq!(a.name, "proj");
        assert_eq!(a.path, ws.canonicalize().unwrap());
        let (b, new) = store.add(&ws.join("../proj")).unwrap();
        assert!(!new);
        assert_eq!(a, b);
        assert_eq!(store.get(&a.id).unwrap(), a);
        assert_eq!(store.remove(&a.id).unwrap(), a);
        assert!(matches!(
            store.get(&a.id),
            Err(WorkspaceError::UnknownId { .. })
        ));
        let err = store.add(&dir.path().join("missing")).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn the_first_workspace_is_active_until_another_is_switched_to() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        std::fs::create_dir(&one).unwrap();
        std::fs::create_dir(&two).unwrap();
        let store = Store::new(&dir.path().join("data"));
        assert_eq!(store.active().unwrap(), None);
        let (a, _) = store.add(&one).unwrap();
        let (b, _) = store.add_named(&two, Some("Second")).unwrap();
        assert_eq!(b.name, "Second");
        assert_eq!(store.active().unwrap(), Some(a.clone()));
        assert_eq!(store.switch(&b.id).unwrap(), b);
        assert_eq!(store.active().unwrap(), Some(b.clone()));
        assert!(matches!(
            store.switch("ws_nope"),
            Err(WorkspaceError::UnknownId { .. })
        ));
        store.remove(&b.id).unwrap();
        assert_eq!(store.active().unwrap(), None);
        assert_eq!(store.load().unwrap(), vec![a]);
    }

    #[test]
    fn a_corrupt_file_is_kept_once_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        std::fs::write(store.path(), b"{\"workspaces\":[{\"id\":1}]}").unwrap();
        let err = store.load().unwrap_err();
        let WorkspaceError::Corrupt { backup, detail, .. } = &err else {
            panic!("{err}")
        };
        assert!(detail.starts_with("workspaces[0].id"), "{detail}");
        assert_eq!(
            std::fs::read(backup).unwrap(),
            std::fs::read(store.path()).unwrap()
        );
        // The same content again reuses the copy.
        let again = store.load().unwrap_err();
        let WorkspaceError::Corrupt { backup: b2, .. } = &again else {
            panic!()
        };
        assert_eq!(backup, b2);
        assert!(store.add(dir.path()).is_err());
        assert_eq!(
            std::fs::read(store.path()).unwrap(),
            b"{\"workspaces\":[{\"id\":1}]}"
        );
    }
}
