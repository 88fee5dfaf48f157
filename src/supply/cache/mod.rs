//! The sidecar cache (SPEC §3.4): `<sidecar dir>/<name>/<version>/<target>/<binary>`
//! plus `.verified` (digest and the file identity it was checked at) and `.lock`.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::supply::digest::{hash_file, FileDigest};
use crate::supply::manifest::BinaryDigest;
use crate::supply::platform::Target;

mod bundled;
pub use bundled::{BundledCheck, BundledRecord};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path} is {problem}: another user could replace a verified binary\nhint: {fix}, or pick another sidecar dir with --sidecar-dir / OPENWRK_SIDECAR_DIR")]
    Unsafe {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    #[error("cannot use the sidecar cache at {path}: {source}\nhint: check free space and permissions, or pick another sidecar dir with --sidecar-dir / OPENWRK_SIDECAR_DIR")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing to use {what} {value:?} in a cache path\nhint: the manifest or the OpenCode release names an invalid {what}")]
    BadName { what: &'static str, value: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `.verified` records: the digest, and the identity of the file when it
/// was hashed. ctime is part of it because a file's owner can set mtime back
/// but not ctime: a tampered binary whose mtime was restored still fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    pub sha256: String,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub device: u64,
    pub inode: u64,
    /// What the digest was checked against when the file arrived: `sha256`
    /// (a manifest or release digest) or `size` (the source gave no digest).
    #[serde(default = "checked_sha256")]
    pub checked: String,
}

fn checked_sha256() -> String {
    "sha256".into()
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
    /// The sidecar dir it lives in (where the trust check starts).
    root: PathBuf,
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

    /// Refuses a cache that others could write to: group- or world-writable,
    /// or owned by another user. A missing dir is fine (it is created 0700).
    pub fn check_permissions(&self) -> Result<(), CacheError> {
        match std::fs::metadata(&self.root) {
            Ok(meta) => check_trusted(&self.root, &meta),
            Err(_) => Ok(()),
        }
    }

    /// The entry for one sidecar build; `binary` is the executable's file name.
    /// Only the known sidecars and versions of SPEC §3.4's shape become paths.
    pub fn entry(
        &self,
        name: &str,
        version: &str,
        target: Target,
        binary: &str,
    ) -> Result<CacheEntry, CacheError> {
        if !crate::supply::manifest::SIDECARS.contains(&name) {
            return Err(CacheError::BadName {
                what: "sidecar name",
                value: name.into(),
            });
        }
        if crate::supply::manifest::check_version(version).is_err() {
            return Err(CacheError::BadName {
                what: "version",
                value: version.into(),
            });
        }
        if binary != target.exe_name(name) {
            return Err(CacheError::BadName {
                what: "binary name",
                value: binary.into(),
            });
        }
        let dir = self.root.join(name).join(version).join(target.id());
        Ok(CacheEntry {
            binary: dir.join(binary),
            root: self.root.clone(),
            dir,
        })
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

    /// Refuses an entry another user could have written: every directory from
    /// the sidecar dir down, the binary and its `.verified` record must be
    /// ours (or root's) and not group- or world-writable (SPEC §3.4).
    pub fn check_trust(&self) -> Result<(), CacheError> {
        let meta = std::fs::metadata(&self.root).map_err(io(&self.root))?;
        check_trusted(&self.root, &meta)?;
        let below = self.dir.strip_prefix(&self.root).unwrap_or(Path::new(""));
        let mut path = self.root.clone();
        let mut chain: Vec<PathBuf> = below
            .components()
            .map(|c| {
                path.push(c);
                path.clone()
            })
            .collect();
        chain.push(self.binary.clone());
        chain.push(self.verified_path());
        for p in chain {
            match std::fs::symlink_metadata(&p) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(CacheError::Unsafe {
                        problem: "a symbolic link".into(),
                        fix: format!("remove it (`rm {}`) and fetch again", p.display()),
                        path: p,
                    })
                }
                Ok(meta) => check_trusted(&p, &meta)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(io(&p)(e)),
            }
        }
        Ok(())
    }

    /// Checks the cached binary against `expected`; a mismatch moves it aside.
    pub fn check(&self, expected: &BinaryDigest) -> Result<Check, CacheError> {
        let meta = match std::fs::metadata(&self.binary) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Check::Missing),
            Err(e) => return Err(io(&self.binary)(e)),
        };
        self.check_trust()?;
        if let Some(v) = self.read_verified() {
            if v.sha256 == expected.sha256 && v.size == expected.size && v.same_file(&meta) {
                tracing::debug!(
                    "{}: its verification record matches (size, mtime, ctime, device, inode); not rehashed",
                    self.binary.display()
                );
                return Ok(Check::Warm);
            }
            tracing::debug!(
                "{}: changed since it was verified (or another digest is expected); rehashing",
                self.binary.display()
            );
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
            let checked = self
                .read_verified()
                .map_or_else(checked_sha256, |v| v.checked);
            self.record(&actual, &checked)?;
            return Ok(Check::Rehashed);
        }
        let moved_to = self.move_aside()?;
        tracing::debug!(
            "{}: sha256 {} does not match {}; moved to {}",
            self.binary.display(),
            actual.sha256,
            expected.sha256,
            moved_to.display()
        );
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
        let bytes = crate::fsutil::read_capped(&self.verified_path(), 64 * 1024).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Records an already computed digest (the download just hashed the
    /// file), checked against a digest of the source.
    pub fn record_digest(&self, digest: &FileDigest) -> Result<(), CacheError> {
        self.record(digest, "sha256")
    }

    /// Records a digest computed here when the source gave only a size.
    pub fn record_size_checked(&self, digest: &FileDigest) -> Result<(), CacheError> {
        self.record(digest, "size")
    }

    fn record(&self, digest: &FileDigest, checked: &str) -> Result<(), CacheError> {
        let meta = std::fs::metadata(&self.binary).map_err(io(&self.binary))?;
        let v = Verified::of(&meta, digest, checked);
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

impl Verified {
    /// The record for a file whose metadata is `meta` and bytes hash to `digest`.
    pub fn of(meta: &std::fs::Metadata, digest: &FileDigest, checked: &str) -> Verified {
        let id = FileId::of(meta);
        Verified {
            sha256: digest.sha256.clone(),
            size: id.size,
            mtime_ns: id.mtime_ns,
            ctime_ns: id.ctime_ns,
            device: id.device,
            inode: id.inode,
            checked: checked.to_string(),
        }
    }

    /// Whether `meta` is still the file that was hashed (SPEC §3.4's warm path).
    pub fn same_file(&self, meta: &std::fs::Metadata) -> bool {
        let id = FileId::of(meta);
        (
            self.size,
            self.mtime_ns,
            self.ctime_ns,
            self.device,
            self.inode,
        ) == (id.size, id.mtime_ns, id.ctime_ns, id.device, id.inode)
    }
}

/// What must not change for a warm start to skip hashing.
struct FileId {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    device: u64,
    inode: u64,
}

impl FileId {
    #[cfg(unix)]
    fn of(meta: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        FileId {
            size: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
            device: meta.dev(),
            inode: meta.ino(),
        }
    }

    /// Windows has no ctime or inode in std; creation and write times stand in.
    #[cfg(not(unix))]
    fn of(meta: &std::fs::Metadata) -> FileId {
        let ns = |t: std::io::Result<std::time::SystemTime>| {
            t.ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos() as i128)
                .unwrap_or(0)
        };
        FileId {
            size: meta.len(),
            mtime_ns: ns(meta.modified()),
            ctime_ns: ns(meta.created()),
            device: 0,
            inode: 0,
        }
    }
}

/// Owned by us or root, and writable by nobody else.
#[cfg(unix)]
fn check_trusted(path: &Path, meta: &std::fs::Metadata) -> Result<(), CacheError> {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode() & 0o7777;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let unsafe_path = |problem: String, fix: String| CacheError::Unsafe {
        path: path.to_path_buf(),
        problem,
        fix,
    };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(unsafe_path(
            format!("owned by uid {}, not by you (uid {me}) or root", meta.uid()),
            format!("chown -R {me} {}", path.display()),
        ));
    }
    if mode & 0o022 != 0 {
        let who = if mode & 0o002 != 0 { "world" } else { "group" };
        let fix = if meta.is_dir() {
            "chmod 700"
        } else {
            "chmod go-w"
        };
        return Err(unsafe_path(
            format!("{who}-writable (mode {mode:o})"),
            format!("{fix} {}", path.display()),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_trusted(_path: &Path, _meta: &std::fs::Metadata) -> Result<(), CacheError> {
    // The data dir lives in the user's profile, which Windows ACLs keep private.
    Ok(())
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
        let e = cache
            .entry("owpenbot", "1.0.0", Target::LinuxX64, "owpenbot")
            .unwrap();
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

    #[test]
    fn bundled_records_warm_rehash_and_tamper() {
        let tmp = tempfile::tempdir().unwrap();
        let bundle = tmp.path().join("install");
        std::fs::create_dir_all(bundle.join("sidecars")).unwrap();
        let data = tmp.path().join("data");
        let r = BundledRecord::new(&data, &bundle, "owpenbot");
        let want = BinaryDigest {
            sha256: "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
            size: 11,
        };
        assert_eq!(r.check(&want).unwrap(), BundledCheck::Missing);
        std::fs::write(&r.binary, b"hello world").unwrap();
        assert_eq!(r.check(&want).unwrap(), BundledCheck::Rehashed);
        assert!(r.path().starts_with(data.join("bundled")), "{:?}", r.path());
        assert_eq!(r.check(&want).unwrap(), BundledCheck::Warm);
        // Another bundle directory has its own record.
        let other = BundledRecord::new(&data, &tmp.path().join("elsewhere"), "owpenbot");
        assert_ne!(other.path(), r.path());
        // Tampered, mtime restored: ctime still changed, so it is rehashed and refused.
        let mtime = std::fs::metadata(&r.binary).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&r.binary, b"hello World").unwrap();
        File::options()
            .write(true)
            .open(&r.binary)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert!(matches!(r.check(&want).unwrap(), BundledCheck::Mismatch(_)));
        assert!(r.binary.is_file(), "a bundle is never moved");
        assert!(!r.path().exists(), "the stale record is gone");
    }

    #[cfg(unix)]
    #[test]
    fn bundled_records_others_can_write_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let bundle = tmp.path().join("install");
        std::fs::create_dir_all(bundle.join("sidecars")).unwrap();
        let data = tmp.path().join("data");
        let r = BundledRecord::new(&data, &bundle, "owpenbot");
        std::fs::write(&r.binary, b"hello world").unwrap();
        let want = BinaryDigest {
            sha256: "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9",
            size: 11,
        };
        assert_eq!(r.check(&want).unwrap(), BundledCheck::Rehashed);
        std::fs::set_permissions(r.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = r.check(&want).unwrap_err();
        assert!(err.to_string().contains("world-writable"), "{err}");
        std::fs::set_permissions(r.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(data.join("bundled"), std::fs::Permissions::from_mode(0o770))
            .unwrap();
        let err = r.check(&want).unwrap_err();
        assert!(err.to_string().contains("group-writable"), "{err}");
    }
}
