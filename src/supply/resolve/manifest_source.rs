//! Finding, fetching, verifying and keeping the manifest (SPEC §3.1).

use std::path::{Path, PathBuf};

use super::context::Resolver;
use super::error::ResolveError;
use super::location::{LoadedManifest, Location};
use super::settings::default_manifest_url;
use crate::supply::cache::CacheError;
use crate::supply::download::{DownloadError, Expected};
use crate::supply::events::Notice;
use crate::supply::manifest::{Manifest, MANIFEST_FILE};

impl Resolver {
    /// Finds the manifest: `--sidecar-manifest`, else `<base>/openwrk-sidecars.json`
    /// with `--sidecar-base-url`, else one bundled next to the executable, else
    /// the default release URL. URL manifests are kept in the data dir; with
    /// `refresh == false` a kept copy is used without a network request.
    pub async fn load_manifest(&self, refresh: bool) -> Result<LoadedManifest, ResolveError> {
        let s = &self.settings;
        let bundled = s
            .exe_dir
            .as_ref()
            .map(|d| d.join(MANIFEST_FILE))
            .filter(|p| p.is_file());
        let explicit_base = s
            .base_url
            .as_deref()
            .map(|b| Location::parse("--sidecar-base-url", b))
            .transpose()?;
        let location = if let Some(m) = &s.manifest {
            Location::parse("--sidecar-manifest", m)?
        } else if let Some(base) = &explicit_base {
            match base {
                Location::Url(u) => Location::Url(format!("{u}/{MANIFEST_FILE}")),
                Location::Dir(d) => Location::Dir(d.join(MANIFEST_FILE)),
            }
        } else if let Some(path) = bundled {
            Location::Dir(path)
        } else {
            Location::Url(default_manifest_url())
        };
        let key = crate::supply::signature::TrustedKey::select(
            crate::supply::signature::EMBEDDED_KEY,
            s.manifest_pubkey.as_deref(),
        )?;
        let (bytes, origin, from_cache, signature) = match &location {
            Location::Dir(path) => {
                let origin = path.display().to_string();
                let bytes = read_small(path).map_err(|source| {
                    if source.kind() == std::io::ErrorKind::FileTooLarge {
                        ResolveError::ManifestTooLarge {
                            origin: origin.clone(),
                            limit: SMALL_FILE_LIMIT,
                        }
                    } else {
                        ResolveError::ManifestFile {
                            path: origin.clone(),
                            source,
                        }
                    }
                })?;
                let sig_path = sig_path(path);
                let signature =
                    read_small(&sig_path).map_err(|e| format!("{}: {e}", sig_path.display()));
                (bytes, origin, false, signature)
            }
            Location::Url(url) => {
                let (bytes, from_cache, signature) =
                    self.fetch_manifest(url, refresh, key.is_some()).await?;
                (
                    bytes,
                    crate::sanitize::strip_userinfo(url),
                    from_cache,
                    signature,
                )
            }
        };
        if let Some(key) = &key {
            match &signature {
                Ok(sig) => key.verify(&origin, &bytes, sig)?,
                // Development escape hatch, for local files only: mirrors stay untrusted.
                Err(_) if s.allow_unsigned_manifest && matches!(location, Location::Dir(_)) => {
                    self.notice(Notice::UnsignedLocalManifest {
                        origin: origin.clone(),
                    });
                }
                Err(detail) => {
                    return Err(crate::supply::signature::SignatureError::Missing {
                        origin,
                        detail: crate::sanitize::strip_userinfo(detail),
                    }
                    .into())
                }
            }
        }
        let manifest =
            Manifest::from_json(&bytes).map_err(|error| ResolveError::ManifestInvalid {
                origin: origin.clone(),
                error,
            })?;
        if let (Some(key), Ok(_)) = (&key, &signature) {
            self.check_rollback(key, &origin, &manifest)?;
        }
        for name in manifest.unknown_entries() {
            self.notice(Notice::UnknownEntry {
                origin: origin.clone(),
                name: crate::sanitize::escape_line(name),
            });
        }
        if let (Location::Url(url), false) = (&location, from_cache) {
            // Kept only once it verified and parsed, so a warm start can trust it.
            self.keep_manifest(url, &bytes, signature.as_deref().ok());
        }
        let base = explicit_base.unwrap_or_else(|| match &location {
            Location::Url(u) => Location::Url(
                u.rsplit_once('/')
                    .map(|(d, _)| d.to_string())
                    .unwrap_or_default(),
            ),
            Location::Dir(p) => {
                Location::Dir(p.parent().map(Path::to_path_buf).unwrap_or_default())
            }
        });
        Ok(LoadedManifest {
            manifest,
            origin,
            base,
            from_cache,
        })
    }

    /// SPEC §3.1: a signed manifest must be this openwrk's and not older than
    /// the newest this data dir accepted under the same key.
    fn check_rollback(
        &self,
        key: &crate::supply::signature::TrustedKey,
        origin: &str,
        manifest: &Manifest,
    ) -> Result<(), ResolveError> {
        let allowed = crate::supply::rollback::check(
            &self.settings.data_dir,
            &key.id,
            origin,
            manifest.version.as_str(),
            manifest.generated_at.as_str(),
            self.settings.allow_downgrade,
        )?;
        if let Some(crate::supply::rollback::Allowed(e)) = allowed {
            self.notice(Notice::DowngradeAccepted {
                reason: e.to_string().lines().next().unwrap_or_default().to_string(),
            });
        }
        Ok(())
    }

    fn manifest_cache_path(&self, url: &str) -> PathBuf {
        let key = crate::supply::digest::sha256_hex(url.as_bytes());
        self.settings
            .data_dir
            .join("manifests")
            .join(format!("{}.json", &key[..16]))
    }

    /// The manifest at `url` (from the data-dir copy unless `refresh`) and,
    /// when `want_signature`, its `.minisig` (or why there is none).
    async fn fetch_manifest(
        &self,
        url: &str,
        refresh: bool,
        want_signature: bool,
    ) -> Result<(Vec<u8>, bool, Result<Vec<u8>, String>), ResolveError> {
        let kept = self.manifest_cache_path(url);
        if !refresh {
            if let Ok(bytes) = read_small(&kept) {
                let sig_path = sig_path(&kept);
                let signature = read_small(&sig_path)
                    .map_err(|e| format!("kept copy {}: {e}", sig_path.display()));
                return Ok((bytes, true, signature));
            }
        }
        let bytes = self.fetch_small(url).await?;
        let signature = if want_signature {
            let sig_url = format!("{url}{}", crate::supply::signature::SIG_SUFFIX);
            match self.fetch_small(&sig_url).await {
                Ok(sig) => Ok(sig),
                Err(ResolveError::ManifestStatus { status, .. }) => {
                    Err(format!("{sig_url}: HTTP {status}"))
                }
                Err(e) => return Err(e),
            }
        } else {
            Err("no signature needed".into())
        };
        Ok((bytes, false, signature))
    }

    fn keep_manifest(&self, url: &str, bytes: &[u8], signature: Option<&[u8]>) {
        let kept = self.manifest_cache_path(url);
        if let Some(dir) = kept.parent() {
            let _ = crate::fsutil::create_private_dir_all(dir);
        }
        let _ = crate::fsutil::write_atomic(&kept, bytes);
        match signature {
            Some(sig) => {
                let _ = crate::fsutil::write_atomic(&sig_path(&kept), sig);
            }
            None => {
                let _ = std::fs::remove_file(sig_path(&kept));
            }
        }
    }

    /// A small file (manifest, signature) through the one downloader: retries,
    /// timeouts, a temp file in the data dir.
    async fn fetch_small(&self, url: &str) -> Result<Vec<u8>, ResolveError> {
        let dir = self.settings.data_dir.join("manifests");
        crate::fsutil::create_private_dir_all(&dir).map_err(|source| {
            ResolveError::Cache(CacheError::Io {
                path: dir.to_path_buf(),
                source,
            })
        })?;
        let fetched = dir.join(format!(".fetched-{}", std::process::id()));
        let result = self
            .downloader
            .download(url, &fetched, &Expected::at_most(SMALL_FILE_LIMIT))
            .await;
        let bytes = match result {
            Ok(_) => std::fs::read(&fetched).map_err(|source| ResolveError::ManifestFile {
                path: fetched.display().to_string(),
                source,
            }),
            Err(DownloadError::NotFound { status, .. })
            | Err(DownloadError::Status { status, .. }) => Err(ResolveError::ManifestStatus {
                version: crate::VERSION,
                url: crate::sanitize::strip_userinfo(url),
                status,
            }),
            Err(DownloadError::TooLong { limit, .. }) => Err(ResolveError::ManifestTooLarge {
                origin: crate::sanitize::strip_userinfo(url),
                limit,
            }),
            Err(e @ (DownloadError::Io { .. } | DownloadError::Certificate { .. })) => {
                Err(ResolveError::Download(e))
            }
            Err(e) => Err(ResolveError::ManifestUnreachable {
                url: crate::sanitize::strip_userinfo(url),
                cause: unreachable_cause(&e, url),
            }),
        };
        let _ = std::fs::remove_file(&fetched);
        bytes
    }
}

/// Why the manifest could not be fetched, without its URL: the error names
/// it once, and HTTP client errors repeat the URL in their own text.
fn unreachable_cause(e: &DownloadError, url: &str) -> String {
    let text = match e {
        DownloadError::Connect {
            cause, attempts, ..
        } => format!("{cause} (after {attempts} attempts)"),
        other => other.to_string(),
    };
    let first = text.lines().next().unwrap_or_default();
    first
        .replace(&format!(" for url ({url})"), "")
        .replace(&format!("could not reach {url}: "), "")
        .replace(&format!("{url} "), "")
        .replace(url, "the manifest")
}

/// Manifests and signatures are small; an endless body is cut off here.
const SMALL_FILE_LIMIT: u64 = 8 * 1024 * 1024;

/// A manifest, signature or kept copy, never more than the cap (a local
/// `/dev/zero` must not grow without bound either).
fn read_small(path: &Path) -> std::io::Result<Vec<u8>> {
    crate::fsutil::read_capped(path, SMALL_FILE_LIMIT)
}

/// `<manifest>.minisig` beside a manifest file.
fn sig_path(manifest: &Path) -> PathBuf {
    let mut name = manifest.file_name().unwrap_or_default().to_os_string();
    name.push(crate::supply::signature::SIG_SUFFIX);
    manifest.with_file_name(name)
}
