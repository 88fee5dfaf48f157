//! Verification records for bundled sidecars (SPEC §3.4): a bundled install
//! is not ours to write into, so its records live under the data dir.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{check_trusted, checked_sha256, io, CacheError, Verified};
use crate::supply::digest::{hash_file, FileDigest};
use crate::supply::manifest::BinaryDigest;

/// How a bundled binary was found ([`BundledRecord::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundledCheck {
    /// Its record matches the file's size, mtime, ctime, device and inode.
    Warm,
    /// Rehashed and matching; the record is (re)written.
    Rehashed,
    Missing,
    /// Does not match the manifest (left where it is: a bundle is not ours to move).
    Mismatch(FileDigest),
}

/// The verification record of one bundled sidecar (SPEC §3.4):
/// `<data dir>/bundled/<key>/<binary>.verified`, `key` naming the bundle
/// directory (the first 16 hex of the SHA-256 of its path), with the same
/// identity fields as the cache's `.verified` and the same trust rules: the
/// record and its directories must be ours (or root's) and not group- or
/// world-writable. A warm start of a bundled install then hashes nothing.
#[derive(Debug, Clone)]
pub struct BundledRecord {
    /// `<data dir>/bundled`, where the trust check starts.
    root: PathBuf,
    dir: PathBuf,
    record: PathBuf,
    /// The bundled binary: `<bundle dir>/sidecars/<binary>`.
    pub binary: PathBuf,
}

/// What a bundled record holds: the cache record's fields plus the binary
/// it is about (spelled out: serde's `flatten` cannot carry the i128 times).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BundledVerified {
    sha256: String,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    device: u64,
    inode: u64,
    path: PathBuf,
}

impl BundledRecord {
    /// The record of `<bundle dir>/sidecars/<binary>`, kept under `data_dir`.
    pub fn new(data_dir: &Path, bundle_dir: &Path, binary: &str) -> BundledRecord {
        let root = data_dir.join("bundled");
        let key = crate::supply::digest::sha256_hex(bundle_dir.as_os_str().as_encoded_bytes());
        let dir = root.join(&key[..16]);
        BundledRecord {
            record: dir.join(format!("{binary}.verified")),
            binary: bundle_dir.join("sidecars").join(binary),
            root,
            dir,
        }
    }

    /// The record file.
    pub fn path(&self) -> &Path {
        &self.record
    }

    /// Refuses a record another user could have written (SPEC §3.4).
    fn check_trust(&self) -> Result<(), CacheError> {
        for p in [&self.root, &self.dir, &self.record] {
            match std::fs::symlink_metadata(p) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(CacheError::Unsafe {
                        problem: "a symbolic link".into(),
                        fix: format!("remove it (`rm {}`)", p.display()),
                        path: p.clone(),
                    })
                }
                Ok(meta) => check_trusted(p, &meta)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(io(p)(e)),
            }
        }
        Ok(())
    }

    fn read(&self) -> Option<Verified> {
        let bytes = crate::fsutil::read_capped(&self.record, 64 * 1024).ok()?;
        let v: BundledVerified = serde_json::from_slice(&bytes).ok()?;
        (v.path == self.binary).then_some(Verified {
            sha256: v.sha256,
            size: v.size,
            mtime_ns: v.mtime_ns,
            ctime_ns: v.ctime_ns,
            device: v.device,
            inode: v.inode,
            checked: checked_sha256(),
        })
    }

    /// Checks the bundled binary against `expected`: warm when its record
    /// still describes the file, else a rehash (recorded when it matches).
    pub fn check(&self, expected: &BinaryDigest) -> Result<BundledCheck, CacheError> {
        let meta = match std::fs::metadata(&self.binary) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Ok(BundledCheck::Missing),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BundledCheck::Missing),
            Err(e) => return Err(io(&self.binary)(e)),
        };
        self.check_trust()?;
        if let Some(v) = self.read() {
            if v.sha256 == expected.sha256 && v.size == expected.size && v.same_file(&meta) {
                return Ok(BundledCheck::Warm);
            }
        }
        let actual = if meta.len() == expected.size {
            hash_file(&self.binary).map_err(io(&self.binary))?
        } else {
            FileDigest {
                sha256: "(not hashed: wrong size)".into(),
                size: meta.len(),
            }
        };
        if actual.sha256 != expected.sha256 || actual.size != expected.size {
            let _ = std::fs::remove_file(&self.record);
            return Ok(BundledCheck::Mismatch(actual));
        }
        // Best effort: without a record the next start rehashes, nothing worse.
        if let Err(e) = self.record(&meta, &actual) {
            tracing::debug!("cannot record {}: {e}", self.record.display());
        }
        Ok(BundledCheck::Rehashed)
    }

    fn record(&self, meta: &std::fs::Metadata, digest: &FileDigest) -> Result<(), CacheError> {
        crate::fsutil::create_private_dir_all(&self.dir).map_err(io(&self.dir))?;
        self.check_trust()?;
        let v = Verified::of(meta, digest, "sha256");
        let v = BundledVerified {
            sha256: v.sha256,
            size: v.size,
            mtime_ns: v.mtime_ns,
            ctime_ns: v.ctime_ns,
            device: v.device,
            inode: v.inode,
            path: self.binary.clone(),
        };
        crate::fsutil::write_atomic(
            &self.record,
            serde_json::to_string(&v).expect("serializes").as_bytes(),
        )
        .map_err(io(&self.record))
    }
}
