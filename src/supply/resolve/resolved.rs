//! A resolved sidecar: where it is, where it came from, how it was verified,
//! and how to verify it again before the next execution.

use std::path::PathBuf;

use super::error::{Mismatch, ResolveError};
use crate::supply::cache::{BundledCheck, Check};
use crate::supply::platform::Target;

/// Where the chosen binary came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Bundled,
    Cache,
    Downloaded,
    External,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Bundled => "bundled",
            Origin::Cache => "cache",
            Origin::Downloaded => "downloaded",
            Origin::External => "external",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Resolved {
    pub name: String,
    pub version: String,
    pub target: Target,
    pub origin: Origin,
    pub path: PathBuf,
    /// How it was verified: `warm` (its record matched), `sha256` (hashed
    /// now against a digest), `size` (the source gave only a size; the
    /// binary's own sha256 is recorded for later runs) or `external`.
    pub verified: &'static str,
    /// How to verify it again before a later execution.
    pub recheck: Recheck,
}

/// What a later execution checks first (SPEC §3.4: a warm check before every execution).
#[derive(Debug, Clone)]
pub enum Recheck {
    /// External binaries are not verified.
    None,
    /// A cache entry and the digest its binary must have.
    Cache {
        entry: crate::supply::cache::CacheEntry,
        sha256: String,
        size: u64,
    },
    /// A bundled binary (through its record in the data dir) and the digest the manifest names.
    Bundled {
        record: crate::supply::cache::BundledRecord,
        sha256: String,
        size: u64,
    },
}

impl Resolved {
    /// One line for `--verbose` and `sidecars fetch`: source, version, path and how it was verified.
    pub fn describe(&self) -> String {
        let how = match self.verified {
            "warm" => "verified before; size, mtime, ctime and inode unchanged since",
            "warm-size" => "verified before by size only (the source gave no digest); unchanged since",
            "sha256" => "size and sha256 checked",
            "size" => "only the size could be checked: the source gave no digest; the binary's sha256 is recorded for later runs",
            _ => "not verified (external binary)",
        };
        format!(
            "{} {} {}: {} {} ({how})",
            self.name,
            self.version,
            self.target,
            self.origin.as_str(),
            self.path.display()
        )
    }

    /// Verifies the binary again right before it runs (the daemon's restarts
    /// included): a warm check of the cache record, else a rehash. A binary
    /// that changed is never run.
    pub fn recheck(&self) -> Result<(), ResolveError> {
        let changed = |actual: crate::supply::digest::FileDigest, sha256: &str, size: u64| {
            ResolveError::Changed(Box::new(Mismatch {
                what: format!(
                    "{} at {} changed since it was verified",
                    self.name,
                    self.path.display()
                ),
                expected: sha256.to_string(),
                expected_size: size,
                actual: actual.sha256,
                actual_size: actual.size,
            }))
        };
        match &self.recheck {
            Recheck::None => Ok(()),
            Recheck::Cache {
                entry,
                sha256,
                size,
            } => {
                let want = crate::supply::manifest::BinaryDigest {
                    sha256,
                    size: *size,
                };
                match entry.check(&want)? {
                    Check::Warm | Check::Rehashed => Ok(()),
                    Check::Corrupt { actual, .. } => Err(changed(actual, sha256, *size)),
                    Check::Missing => Err(changed(
                        crate::supply::digest::FileDigest {
                            sha256: "(missing)".into(),
                            size: 0,
                        },
                        sha256,
                        *size,
                    )),
                }
            }
            Recheck::Bundled {
                record,
                sha256,
                size,
            } => {
                let want = crate::supply::manifest::BinaryDigest {
                    sha256,
                    size: *size,
                };
                match record.check(&want)? {
                    BundledCheck::Warm | BundledCheck::Rehashed => Ok(()),
                    BundledCheck::Mismatch(actual) => Err(changed(actual, sha256, *size)),
                    BundledCheck::Missing => Err(changed(
                        crate::supply::digest::FileDigest {
                            sha256: "(missing)".into(),
                            size: 0,
                        },
                        sha256,
                        *size,
                    )),
                }
            }
        }
    }
}
