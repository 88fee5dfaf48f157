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
use crate::supply::cache::{CacheError, Check};
use crate::supply::download::Expected;
use crate::supply::events::Notice;
use crate::supply::manifest::{TargetAsset, OPENCODE};
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
                Some(path) => {
                    let want = asset.binary_digest();
                    return Ok(Resolved {
                        name: name.into(),
                        version,
                        target,
                        origin: Origin::Bundled,
                        path,
                        verified: "sha256",
                        recheck: Recheck::Bundled {
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

    /// The bundled binary if present and matching; in `bundled` mode anything else is an error.
    fn bundled(
        &self,
        name: &str,
        binary: &str,
        asset: &TargetAsset,
        mode: SourceMode,
    ) -> Result<Option<PathBuf>, ResolveError> {
        let flag = Self::flag_stem(name);
        let Some(dir) = &self.settings.exe_dir else {
            return Ok(None);
        };
        let path = dir.join("sidecars").join(binary);
        if !path.is_file() {
            if mode == SourceMode::Bundled {
                return Err(ResolveError::BundledMissing {
                    name: name.into(),
                    path,
                    flag,
                });
            }
            return Ok(None);
        }
        let want = asset.binary_digest();
        let actual = crate::supply::digest::hash_file(&path).map_err(|source| CacheError::Io {
            path: path.clone(),
            source,
        })?;
        if actual.sha256 == want.sha256 && actual.size == want.size {
            return Ok(Some(path));
        }
        let err = ResolveError::BundledMismatch(
            Box::new(Mismatch {
                what: format!("bundled {name} at {}", path.display()),
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
                self.fetch(base, &source, &archive_path, &expected).await?;
                let (kind, inner, dest, ap) = (
                    *kind,
                    inner.clone(),
                    entry.binary.clone(),
                    archive_path.clone(),
                );
                // The manifest says how large the binary is: not a byte more is extracted.
                let want_size = want.size;
                let extracted = tokio::task::spawn_blocking(move || {
                    archive::extract_binary(&ap, kind, &inner, &dest, want_size)
                })
                .await
                .expect("extraction task");
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
