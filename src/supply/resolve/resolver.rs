//! Resolving one sidecar (SPEC §3.2, §3.4): bundled, cached, downloaded or
//! external, verified before use. OpenCode without a manifest entry comes
//! from GitHub releases (`github`).

use std::path::{Path, PathBuf};

use super::context::Resolver;
use super::error::{Mismatch, ResolveError};
use super::location::{LoadedManifest, Location};
use super::resolved::{Origin, Recheck, Resolved};
use super::settings::SourceMode;
use crate::supply::archive;
use crate::supply::cache::{BundledCheck, BundledRecord, CacheError, Check};
use crate::supply::download::Expected;
use crate::supply::events::Notice;
use crate::supply::manifest::{BinaryDigest, TargetAsset, OPENCODE};
use crate::supply::platform::Target;

impl Resolver {
    /// Resolves `name` for the host target.
    pub async fn resolve(
        &self,
        name: &str,
        manifest: Option<&LoadedManifest>,
    ) -> Result<Resolved, ResolveError> {
        let target = Target::host()?;
        let mode = self.mode(name);
        if mode == SourceMode::External {
            return self.external(name, target);
        }
        let loaded = manifest.expect("non-external sources need the manifest");
        if name == OPENCODE
            && loaded.manifest.target(name, target).is_none()
            && mode != SourceMode::Bundled
        {
            return self.opencode_from_github(target, true).await;
        }
        let (entry, asset) =
            loaded
                .manifest
                .target(name, target)
                .ok_or_else(|| ResolveError::NotInManifest {
                    origin: loaded.origin.clone(),
                    name: name.to_string(),
                    target,
                    flag: Self::flag_stem(name),
                })?;
        let version = entry.version.to_string();
        let binary = target.exe_name(name);
        if matches!(mode, SourceMode::Auto | SourceMode::Bundled) {
            match self.bundled(name, &binary, asset, mode)? {
                Some((record, verified)) => {
                    let want = asset.binary_digest();
                    return Ok(Resolved {
                        name: name.into(),
                        version,
                        target,
                        origin: Origin::Bundled,
                        path: record.binary.clone(),
                        verified,
                        recheck: Recheck::Bundled {
                            record,
                            sha256: want.sha256.to_string(),
                            size: want.size,
                        },
                    });
                }
                None if mode == SourceMode::Bundled => {
                    unreachable!("bundled() errors in bundled mode")
                }
                None => {}
            }
        }
        self.cached_or_download(name, &version, target, asset, &loaded.base)
            .await
    }

    /// The bundled binary if present and matching (warm through its record
    /// in the data dir, else rehashed); in `bundled` mode anything else is an error.
    fn bundled(
        &self,
        name: &str,
        binary: &str,
        asset: &TargetAsset,
        mode: SourceMode,
    ) -> Result<Option<(BundledRecord, &'static str)>, ResolveError> {
        let flag = Self::flag_stem(name);
        let Some(dir) = &self.settings.exe_dir else {
            return Ok(None);
        };
        let record = BundledRecord::new(&self.settings.data_dir, dir, binary);
        let want = asset.binary_digest();
        let actual = match record.check(&want)? {
            BundledCheck::Warm => return Ok(Some((record, "warm"))),
            BundledCheck::Rehashed => return Ok(Some((record, "sha256"))),
            BundledCheck::Missing if mode == SourceMode::Bundled => {
                return Err(ResolveError::BundledMissing {
                    name: name.into(),
                    path: record.binary,
                    flag,
                });
            }
            BundledCheck::Missing => return Ok(None),
            BundledCheck::Mismatch(actual) => actual,
        };
        let err = ResolveError::BundledMismatch(
            Box::new(Mismatch {
                what: format!("bundled {name} at {}", record.binary.display()),
                expected: want.sha256.to_string(),
                expected_size: want.size,
                actual: actual.sha256,
                actual_size: actual.size,
            }),
            flag,
        );
        if mode == SourceMode::Bundled {
            return Err(err);
        }
        self.notice(Notice::BundledMismatch {
            detail: err
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
        });
        Ok(None)
    }

    /// Whether the bundled binary at `path` (`<exe dir>/sidecars/<binary>`)
    /// matches `want`: warm through its record, else rehashed (`sidecars list`).
    pub fn bundled_matches(&self, path: &Path, want: &BinaryDigest) -> Result<bool, ResolveError> {
        let (Some(bundle_dir), Some(binary)) = (
            path.parent().and_then(Path::parent),
            path.file_name().and_then(|n| n.to_str()),
        ) else {
            return Ok(false);
        };
        let record = BundledRecord::new(&self.settings.data_dir, bundle_dir, binary);
        Ok(matches!(
            record.check(want)?,
            BundledCheck::Warm | BundledCheck::Rehashed
        ))
    }

    fn external(&self, name: &str, target: Target) -> Result<Resolved, ResolveError> {
        let flag = match name {
            OPENCODE => "--opencode-bin",
            crate::supply::manifest::OPENWORK_SERVER => "--openwork-server-bin",
            _ => "--owpenbot-bin",
        };
        if name != OPENCODE && !self.settings.allow_external {
            return Err(ResolveError::ExternalNotAllowed {
                name: name.into(),
                flag: if self.external_flag_value(name).is_some() {
                    flag
                } else {
                    "--sidecar-source external"
                },
            });
        }
        let path = match self.external_flag_value(name) {
            Some(p) if p.is_file() => p.clone(),
            Some(p) => {
                return Err(ResolveError::ExternalMissing {
                    name: name.into(),
                    flag,
                    detail: format!("{} does not exist", p.display()),
                })
            }
            None => find_on_path(&target.exe_name(name)).ok_or_else(|| {
                ResolveError::ExternalMissing {
                    name: name.into(),
                    flag,
                    detail: "not on PATH".into(),
                }
            })?,
        };
        Ok(Resolved {
            name: name.into(),
            version: "unknown".into(),
            target,
            origin: Origin::External,
            path,
            verified: "external",
            recheck: Recheck::None,
        })
    }

    /// The verified cache entry for `name`, downloading it (under the entry lock) when missing.
    pub async fn cached_or_download(
        &self,
        name: &str,
        version: &str,
        target: Target,
        asset: &TargetAsset,
        base: &Location,
    ) -> Result<Resolved, ResolveError> {
        let entry = self
            .cache
            .entry(name, version, target, &target.exe_name(name))?;
        let want = asset.binary_digest();
        let resolved = |origin, verified| Resolved {
            name: name.to_string(),
            version: version.to_string(),
            target,
            origin,
            path: entry.binary.clone(),
            verified,
            recheck: Recheck::Cache {
                entry: entry.clone(),
                sha256: want.sha256.to_string(),
                size: want.size,
            },
        };
        match entry.check(&want)? {
            Check::Warm => return Ok(resolved(Origin::Cache, "warm")),
            Check::Rehashed => return Ok(resolved(Origin::Cache, "sha256")),
            Check::Corrupt { moved_to, actual } => self.notice(Notice::MovedAside {
                name: name.into(),
                version: version.into(),
                against: "the manifest",
                expected: want.sha256.into(),
                found: actual.sha256,
                moved_to,
            }),
            Check::Missing => {}
        }
        let _lock = entry.lock(|| self.notice(Notice::WaitingForLock { name: name.into() }))?;
        // The directory exists now: never download into one another user can write.
        entry.check_trust()?;
        // Another process may have fetched it while we waited.
        if let Check::Warm | Check::Rehashed = entry.check(&want)? {
            return Ok(resolved(Origin::Cache, "sha256"));
        }
        entry.clean_stale_parts();
        let source = base.join(asset.asset.as_str());
        let expected = Expected::exactly(Some(asset.sha256.to_string()), asset.size);
        match (&asset.archive, &asset.binary) {
            (Some(kind), Some(inner)) => {
                let archive_path = entry.dir.join(format!(".{}", asset.asset));
                // The manifest says how large the binary is: not a byte more is extracted.
                let want_size = want.size;
                // A tar.gz from a URL is decompressed and hashed while it
                // downloads, into a part file that becomes the binary only
                // once the archive verified.
                let streamed = match (kind, base) {
                    (archive::ArchiveKind::TarGz, Location::Url(_)) => {
                        let staged = entry.dir.join(format!(
                            ".{}.x.part-{}",
                            target.exe_name(name),
                            std::process::id()
                        ));
                        let (tx, reader) = crate::supply::download::tee();
                        let (label, inner, out) =
                            (archive_path.clone(), inner.clone(), staged.clone());
                        let streaming = tokio::task::spawn_blocking(move || {
                            archive::extract_tar_gz_stream(
                                reader,
                                &label,
                                &inner,
                                Some(&out),
                                want_size,
                            )
                        });
                        let downloaded = self
                            .downloader
                            .download_teed(&source, &archive_path, &expected, Some(tx))
                            .await;
                        let streamed = streaming.await.expect("extraction task");
                        if let Err(e) = downloaded {
                            let _ = std::fs::remove_file(&staged);
                            return Err(e.into());
                        }
                        match streamed {
                            Ok(d) if std::fs::rename(&staged, &entry.binary).is_ok() => Some(d),
                            _ => {
                                let _ = std::fs::remove_file(&staged);
                                None
                            }
                        }
                    }
                    _ => {
                        self.fetch(base, &source, &archive_path, &expected).await?;
                        None
                    }
                };
                let extracted = match streamed {
                    Some(d) => Ok(d),
                    None => {
                        let (kind, inner, dest, ap) = (
                            *kind,
                            inner.clone(),
                            entry.binary.clone(),
                            archive_path.clone(),
                        );
                        tokio::task::spawn_blocking(move || {
                            archive::extract_binary(&ap, kind, &inner, &dest, want_size)
                        })
                        .await
                        .expect("extraction task")
                    }
                };
                let _ = std::fs::remove_file(&archive_path);
                let digest = extracted?;
                if digest.sha256 != want.sha256 || digest.size != want.size {
                    let _ = std::fs::remove_file(&entry.binary);
                    return Err(ResolveError::ExtractedMismatch(Box::new(Mismatch {
                        what: format!("{name} extracted from {}", asset.asset),
                        expected: want.sha256.into(),
                        expected_size: want.size,
                        actual: digest.sha256,
                        actual_size: digest.size,
                    })));
                }
                entry.record_digest(&digest)?;
            }
            _ => {
                let digest = self.fetch(base, &source, &entry.binary, &expected).await?;
                archive::set_executable(&entry.binary).map_err(|source| CacheError::Io {
                    path: entry.binary.clone(),
                    source,
                })?;
                entry.record_digest(&digest)?;
            }
        }
        Ok(resolved(Origin::Downloaded, "sha256"))
    }

    /// Downloads a URL, or copies from a local mirror directory, verifying either way.
    async fn fetch(
        &self,
        base: &Location,
        source: &str,
        dest: &Path,
        expected: &Expected,
    ) -> Result<crate::supply::digest::FileDigest, ResolveError> {
        match base {
            Location::Url(_) => Ok(self.downloader.download(source, dest, expected).await?),
            Location::Dir(_) => Ok(self
                .downloader
                .copy_file(Path::new(source), dest, expected)
                .await?),
        }
    }
}

/// The first executable file named `name` on PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
