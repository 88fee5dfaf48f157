//! The sidecar cache (SPEC §3.4): `<sidecar dir>/<name>/<version>/<target>/<binary>`
//! plus `.verified` (digest and the file identity it was checked at) and `.lock`.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{hash_file, FileDigest};
use crate::manifest::BinaryDigest;
use crate::platform::Target;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("the sidecar dir {path} is {problem}: another user could replace a verified binary\nhint: {fix}, or pick another with --sidecar-dir / OPENWRK_SIDECAR_DIR")]
    Unsafe {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    #[error("cannot use the sidecar cache at {path}: {source}\nhint: check its permissions, or pick another with --sidecar-dir / OPENWRK_SIDECAR_DIR")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `.verified` records: the digest, and the identity of the file when it was hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    pub sha256: String,
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
}

/// How a cached binary was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// `.verified` matches the file's size, mtime and inode: trusted without rehashing.
    Warm,
    /// Rehashed and matching.
    Rehashed,
    Missing,
    /// Did not match; the file was moved to `moved_to`.
    Corrupt {
        moved_to: PathBuf,
        actual: FileDigest,
    },
}

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub dir: PathBuf,
    pub binary: PathBuf,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Refuses a cache that others could write to: world-writable, or owned by
    /// another user. A missing dir is fine (it is created 0700 on first use).
    pub fn check_permissions(&self) -> Result<(), CacheError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let Ok(meta) = std::fs::metadata(&self.root) else {
                return Ok(());
            };
            let unsafe_dir = |problem: String, fix: String| CacheError::Unsafe {
                path: self.root.clone(),
                problem,
                fix,
            };
            if meta.mode() & 0o002 != 0 {
                return Err(unsafe_dir(
                    format!("world-writable (mode {:o})", meta.mode() & 0o7777),
                    format!("chmod 700 {}", self.root.display()),
                ));
            }
            // SAFETY: geteuid has no preconditions and cannot fail.
            let me = unsafe { libc::geteuid() };
            if meta.uid() != me {
                return Err(unsafe_dir(
                    format!("owned by uid {}, not by you (uid {me})", meta.uid()),
                    format!("chown -R {me} {}", self.root.display()),
                ));
            }
        }
        Ok(())
    }

    /// The entry for one sidecar build; `binary` is the executable's file name.
    pub fn entry(&self, name: &str, version: &str, target: Target, binary: &str) -> CacheEntry {
        let dir = self.root.join(name).join(version).join(target.id());
        CacheEntry {
            binary: dir.join(binary),
            dir,
        }
    }

    /// Every `(name, version, target dir)` in the cache.
    pub fn list(&self) -> Vec<(String, String, PathBuf)> {
        let mut out = Vec::new();
        for name in read_dirs(&self.root) {
            for version in read_dirs(&self.root.join(&name)) {
                for target in read_dirs(&self.root.join(&name).join(&version)) {
                    out.push((
                        name.clone(),
                        version.clone(),
                        self.root.join(&name).join(&version).join(target),
                    ));
                }
            }
        }
        out
    }
}

fn read_dirs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// An exclusive advisory lock on an entry's `.lock`; released on drop.
pub struct EntryLock {
    _file: File,
}

impl CacheEntry {
    fn verified_path(&self) -> PathBuf {
        self.dir.join(".verified")
    }

    pub fn create_dir(&self) -> Result<(), CacheError> {
        crate::fsutil::create_private_dir_all(&self.dir).map_err(io(&self.dir))
    }

    /// Takes the entry's lock, calling `on_wait` once if another process holds it.
    pub fn lock(&self, on_wait: impl FnOnce()) -> Result<EntryLock, CacheError> {
        self.create_dir()?;
        let path = self.dir.join(".lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                on_wait();
                file.lock().map_err(io(&path))?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        Ok(EntryLock { _file: file })
    }

    /// Checks the cached binary against `expected`; a mismatch moves it aside.
    pub fn check(&self, expected: &BinaryDigest) -> Result<Check, CacheError> {
        let meta = match std::fs::metadata(&self.binary) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Check::Missing),
            Err(e) => return Err(io(&self.binary)(e)),
        };
        if let Some(v) = self.read_verified() {
            if v.sha256 == expected.sha256
                && v.size == expected.size
                && identity(&meta) == (v.size, v.mtime_ns, v.inode)
            {
                return Ok(Check::Warm);
            }
        }
        let actual = if meta.len() == expected.size {
            hash_file(&self.binary).map_err(io(&self.binary))?
        } else {
            // Wrong size: no need to hash the whole file to know it is wrong.
            FileDigest {
                sha256: "(not hashed: wrong size)".into(),
                size: meta.len(),
            }
        };
        if actual.sha256 == expected.sha256 && actual.size == expected.size {
            self.record_verified()?;
            return Ok(Check::Rehashed);
        }
        let moved_to = self.move_aside()?;
        Ok(Check::Corrupt { moved_to, actual })
    }

    /// Rehashes the binary (for `sidecars verify`), without moving anything.
    pub fn rehash(&self) -> Result<Option<FileDigest>, CacheError> {
        match hash_file(&self.binary) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&self.binary)(e)),
        }
    }

    pub fn read_verified(&self) -> Option<Verified> {
        serde_json::from_slice(&std::fs::read(self.verified_path()).ok()?).ok()
    }

    /// Records that the binary, as it is now, was verified.
    pub fn record_verified(&self) -> Result<(), CacheError> {
        let digest = hash_file(&self.binary).map_err(io(&self.binary))?;
        self.record_digest(&digest)
    }

    /// Records an already computed digest (the download just hashed the file).
    pub fn record_digest(&self, digest: &FileDigest) -> Result<(), CacheError> {
        let meta = std::fs::metadata(&self.binary).map_err(io(&self.binary))?;
        let (size, mtime_ns, inode) = identity(&meta);
        let v = Verified {
            sha256: digest.sha256.clone(),
            size,
            mtime_ns,
            inode,
        };
        let path = self.verified_path();
        crate::fsutil::write_atomic(
            &path,
            serde_json::to_string(&v).expect("serializes").as_bytes(),
        )
        .map_err(io(&path))
    }

    fn move_aside(&self) -> Result<PathBuf, CacheError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let name = self
            .binary
            .file_name()
            .unwrap_or_default()
            .to_string_lossy();
        let to = self.dir.join(format!("{name}.corrupt-{now}"));
        std::fs::rename(&self.binary, &to).map_err(io(&self.binary))?;
        let _ = std::fs::remove_file(self.verified_path());
        Ok(to)
    }

    /// Removes `.<binary>.part-<pid>` files whose process is gone.
    pub fn clean_stale_parts(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .rsplit_once(".part-")
                .and_then(|(_, p)| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !process_alive(pid) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// (size, mtime in ns, inode): what must not change for a warm start to skip hashing.
fn identity(meta: &std::fs::Metadata) -> (u64, i128, u64) {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let inode = 0;
    (meta.len(), mtime, inode)
}

#[cfg(target_os = "linux")]
fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(not(target_os = "linux"))]
fn process_alive(_pid: u32) -> bool {
    // Without a cheap liveness check elsewhere, only our own parts are removed.
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_rehash_and_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::new(tmp.path());
        let e = cache.entry("owpenbot", "1.0.0", Target::LinuxX64, "owpenbot");
        e.create_dir().unwrap();
        std::fs::write(&e.binary, b"hello world").unwrap();
        let sha = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
        let want = BinaryDigest {
            sha256: sha,
            size: 11,
        };
        assert_eq!(e.check(&want).unwrap(), Check::Rehashed);
        assert_eq!(e.check(&want).unwrap(), Check::Warm);
        // Same size, different bytes, new mtime: rehashed, found corrupt, moved aside.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&e.binary, b"hello World").unwrap();
        match e.check(&want).unwrap() {
            Check::Corrupt { moved_to, .. } => assert!(moved_to.is_file()),
            other => panic!("{other:?}"),
        }
        assert_eq!(e.check(&want).unwrap(), Check::Missing);
        assert_eq!(cache.list().len(), 1);
    }
}
