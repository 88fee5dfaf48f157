//! Run-time sidecar resolution (SPEC §3): find the manifest, then each
//! sidecar bundled, cached, downloaded or external, verified before use.

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;

use crate::archive;
use crate::cache::{Cache, CacheError, Check};
use crate::download::{DownloadError, Downloader, Expected};
use crate::manifest::{Manifest, ManifestError, TargetAsset, MANIFEST_FILE, OPENCODE};
use crate::platform::Target;

/// Where a sidecar may come from (`--sidecar-source`, `--opencode-source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceMode {
    /// Bundled if it verifies, else the cache if it verifies, else download.
    Auto,
    /// Only `<exe dir>/sidecars/`.
    Bundled,
    /// The cache, downloading into it when missing.
    Downloaded,
    /// A binary given by flag or found on PATH (not verified).
    External,
}

/// The repository whose releases carry openwrk's manifest (a build-time setting).
pub const RELEASE_REPO: &str = match option_env!("OPENWRK_RELEASE_REPO") {
    Some(r) => r,
    None => "different-ai/openwork",
};

/// Where the default manifest for this openwrk version lives.
pub fn default_manifest_url() -> String {
    format!(
        "https://github.com/{RELEASE_REPO}/releases/download/openwrk-v{}/{MANIFEST_FILE}",
        crate::VERSION
    )
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub sidecar_dir: PathBuf,
    /// `--sidecar-manifest`: a URL or a local path.
    pub manifest: Option<String>,
    /// `--sidecar-base-url`: a mirror serving the same file names as `dist/`.
    pub base_url: Option<String>,
    pub sidecar_source: SourceMode,
    pub opencode_source: SourceMode,
    pub allow_external: bool,
    pub opencode_bin: Option<PathBuf>,
    pub openwork_server_bin: Option<PathBuf>,
    pub owpenbot_bin: Option<PathBuf>,
    /// The directory of the running executable (bundled sidecars live beside it).
    pub exe_dir: Option<PathBuf>,
    /// Say which variant and source was picked.
    pub verbose: bool,
    /// OpenCode from GitHub when the manifest has no entry for it.
    pub github: crate::opencode::GithubSettings,
    /// Accept an unsigned local manifest although a signing key is in force.
    pub allow_unsigned_manifest: bool,
    /// Run-time signing key (`OPENWRK_MANIFEST_PUBKEY`); a built-in key wins.
    pub manifest_pubkey: Option<String>,
    /// Accept a signed manifest of another version or older than the newest seen (one run).
    pub allow_downgrade: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no manifest for openwrk {version} at {url} (HTTP {status})\nhint: pass --sidecar-manifest or --sidecar-base-url, or use --opencode-source external")]
    ManifestStatus {
        version: &'static str,
        url: String,
        status: u16,
    },
    #[error("could not fetch the sidecar manifest {url}: {cause}\nhint: check the network, or pass --sidecar-manifest with a local file or --sidecar-base-url with a reachable mirror")]
    ManifestUnreachable { url: String, cause: String },
    #[error("{what} {value} has the scheme {scheme}\nhint: give an https:// URL (http:// only for a loopback host such as 127.0.0.1), a file:// URL or a local path")]
    BadUrl {
        what: &'static str,
        value: String,
        scheme: String,
    },
    #[error("the sidecar manifest {origin} is larger than {limit} bytes\nhint: this is not a manifest (they are a few kilobytes); check --sidecar-manifest / --sidecar-base-url")]
    ManifestTooLarge { origin: String, limit: u64 },
    #[error("cannot read the sidecar manifest {path}: {source}\nhint: check the path given to --sidecar-manifest")]
    ManifestFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid sidecar manifest {origin}: {error}\nhint: the manifest is malformed; regenerate it with `cargo xtask bundle` or point --sidecar-manifest at a good one")]
    ManifestInvalid {
        origin: String,
        error: ManifestError,
    },
    #[error("the manifest {origin} has no {name} for {target}\nhint: use a manifest built for this platform, or --{flag}-source external")]
    NotInManifest {
        origin: String,
        name: String,
        target: Target,
        flag: &'static str,
    },
    #[error("{flag} needs --allow-external (or OPENWRK_ALLOW_EXTERNAL=1)\nhint: external {name} binaries are not verified; allow them only for development")]
    ExternalNotAllowed { name: String, flag: &'static str },
    #[error("external {name} not found: {detail}\nhint: pass {flag} PATH or put {name} on PATH")]
    ExternalMissing {
        name: String,
        flag: &'static str,
        detail: String,
    },
    #[error("no bundled {name} at {path}\nhint: this openwrk was not installed from a bundled archive; use --{flag}-source auto or downloaded")]
    BundledMissing {
        name: String,
        path: PathBuf,
        flag: &'static str,
    },
    #[error(
        "{0}\nhint: the installation is damaged; reinstall openwrk or use --{1}-source downloaded"
    )]
    BundledMismatch(Box<Mismatch>, &'static str),
    #[error(
        "{0}\nhint: the archive differs from the one the manifest describes; nothing was cached"
    )]
    ExtractedMismatch(Box<Mismatch>),
    #[error("release {tag} has no OpenCode asset {wanted}\n  assets: {assets}\nhint: pick another OPENCODE_VERSION, or use a manifest that names OpenCode")]
    NotInRelease {
        tag: String,
        wanted: String,
        assets: String,
    },
    #[error(transparent)]
    Github(#[from] crate::github::GithubError),
    #[error(transparent)]
    Signature(#[from] crate::signature::SignatureError),
    #[error(transparent)]
    Rollback(#[from] crate::rollback::RollbackError),
    #[error("{0}\nhint: nothing was run; the cached copy was moved aside and the next start fetches it again")]
    Changed(Box<Mismatch>),
    #[error(transparent)]
    Download(#[from] DownloadError),
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Platform(#[from] crate::platform::PlatformError),
}

impl ResolveError {
    /// SPEC §9 exit codes.
    pub fn exit_code(&self) -> i32 {
        match self {
            ResolveError::ManifestUnreachable { .. } => 4,
            ResolveError::BadUrl { .. } => 2,
            ResolveError::ManifestStatus { .. }
            | ResolveError::ManifestTooLarge { .. }
            | ResolveError::ManifestFile { .. }
            | ResolveError::ManifestInvalid { .. }
            | ResolveError::NotInManifest { .. }
            | ResolveError::BundledMissing { .. }
            | ResolveError::ExternalMissing { .. }
            | ResolveError::Platform(_) => 3,
            ResolveError::ExternalNotAllowed { .. } => 2,
            ResolveError::NotInRelease { .. } | ResolveError::Signature(_) => 3,
            ResolveError::Github(e) => e.exit_code(),
            ResolveError::Rollback(crate::rollback::RollbackError::BadTime { .. }) => 3,
            ResolveError::BundledMismatch { .. }
            | ResolveError::ExtractedMismatch { .. }
            | ResolveError::Changed(_)
            | ResolveError::Rollback(_) => 5,
            ResolveError::Archive(e) => e.exit_code(),
            ResolveError::Download(e) => e.exit_code(),
            ResolveError::Cache(CacheError::Unsafe { .. } | CacheError::BadName { .. }) => 3,
            ResolveError::Cache(_) => 1,
        }
    }
}

/// A binary that does not hash to what the manifest says.
#[derive(Debug, thiserror::Error)]
#[error("{what} does not match the manifest\n  expected: {expected}  ({expected_size} bytes)\n  actual:   {actual}  ({actual_size} bytes)")]
pub struct Mismatch {
    pub what: String,
    pub expected: String,
    pub expected_size: u64,
    pub actual: String,
    pub actual_size: u64,
}

/// Makes a progress bar for a download (name, length).
pub type ProgressFactory = Box<dyn Fn(&str, u64) -> ProgressBar + Send + Sync>;

/// A manifest and where its assets are.
#[derive(Debug, Clone)]
pub struct LoadedManifest {
    pub manifest: Manifest,
    /// URL or path it was read from.
    pub origin: String,
    /// Asset base: a URL (no trailing `/`) or a local directory.
    pub base: Location,
    /// Read from the data-dir copy, without a network request.
    pub from_cache: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Url(String),
    Dir(PathBuf),
}

impl Location {
    /// A manifest or mirror location: `https://` anywhere, `http://` only on
    /// a loopback host (a plain-text fetch over a network is refused rather
    /// than trusted to the signature alone), `file://` or a path.
    pub fn parse(what: &'static str, s: &str) -> Result<Location, ResolveError> {
        if let Some(path) = s.strip_prefix("file://") {
            return Ok(Location::Dir(PathBuf::from(path)));
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Ok(Location::Dir(PathBuf::from(s)));
        };
        let bad = || ResolveError::BadUrl {
            what,
            value: crate::sanitize::for_output(s),
            scheme: format!("{}://", crate::sanitize::escape_line(scheme)),
        };
        match scheme.to_ascii_lowercase().as_str() {
            "https" => {}
            "http" if is_loopback_authority(rest) => {}
            _ => return Err(bad()),
        }
        if rest.is_empty() || rest.starts_with('/') {
            return Err(bad());
        }
        Ok(Location::Url(s.trim_end_matches('/').to_string()))
    }

    fn join(&self, name: &str) -> String {
        match self {
            Location::Url(u) => format!("{u}/{name}"),
            Location::Dir(d) => d.join(name).display().to_string(),
        }
    }
}

/// Whether the host of `authority[/path]` is `localhost` or a loopback address.
fn is_loopback_authority(rest: &str) -> bool {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

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
        entry: crate::cache::CacheEntry,
        sha256: String,
        size: u64,
    },
    /// A bundled binary and the digest the manifest names.
    Bundled { sha256: String, size: u64 },
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
        let changed = |actual: crate::digest::FileDigest, sha256: &str, size: u64| {
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
                let want = crate::manifest::BinaryDigest {
                    sha256,
                    size: *size,
                };
                match entry.check(&want)? {
                    Check::Warm | Check::Rehashed => Ok(()),
                    Check::Corrupt { actual, .. } => Err(changed(actual, sha256, *size)),
                    Check::Missing => Err(changed(
                        crate::digest::FileDigest {
                            sha256: "(missing)".into(),
                            size: 0,
                        },
                        sha256,
                        *size,
                    )),
                }
            }
            Recheck::Bundled { sha256, size } => {
                let actual =
                    crate::digest::hash_file(&self.path).map_err(|source| CacheError::Io {
                        path: self.path.clone(),
                        source,
                    })?;
                if actual.sha256 == *sha256 && actual.size == *size {
                    Ok(())
                } else {
                    Err(changed(actual, sha256, *size))
                }
            }
        }
    }
}

pub struct Resolver {
    pub settings: Settings,
    pub downloader: Downloader,
    pub cache: Cache,
    /// Reports (waiting for a lock, corrupt cache entries): one line each.
    pub notify: Box<dyn Fn(&str) + Send + Sync>,
    /// A progress bar per download (hidden when not a TTY).
    pub progress: ProgressFactory,
}

impl Resolver {
    pub fn new(settings: Settings, downloader: Downloader) -> Resolver {
        Resolver {
            cache: Cache::new(&settings.sidecar_dir),
            settings,
            downloader,
            notify: Box::new(|msg| eprintln!("{msg}")),
            progress: Box::new(|_, _| ProgressBar::hidden()),
        }
    }

    fn mode(&self, name: &str) -> SourceMode {
        if name == OPENCODE {
            if self.settings.opencode_bin.is_some() {
                return SourceMode::External;
            }
            self.settings.opencode_source
        } else {
            if self.external_flag_value(name).is_some() {
                return SourceMode::External;
            }
            self.settings.sidecar_source
        }
    }

    fn external_flag_value(&self, name: &str) -> Option<&PathBuf> {
        match name {
            OPENCODE => self.settings.opencode_bin.as_ref(),
            crate::manifest::OPENWORK_SERVER => self.settings.openwork_server_bin.as_ref(),
            _ => self.settings.owpenbot_bin.as_ref(),
        }
    }

    fn flag_stem(name: &str) -> &'static str {
        if name == OPENCODE {
            "opencode"
        } else {
            "sidecar"
        }
    }

    /// Whether resolving `name` needs the manifest at all.
    pub fn needs_manifest(&self, name: &str) -> bool {
        self.mode(name) != SourceMode::External
    }

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
        let key = crate::signature::TrustedKey::select(
            crate::signature::EMBEDDED_KEY,
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
                    (self.notify)(&format!(
                        "warning: using the unsigned local manifest {origin} (--allow-unsigned-manifest)"
                    ));
                }
                Err(detail) => {
                    return Err(crate::signature::SignatureError::Missing {
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
            (self.notify)(&format!(
                "note: the manifest {origin} names a sidecar this openwrk does not know ({}); ignored",
                crate::sanitize::escape_line(name)
            ));
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
        key: &crate::signature::TrustedKey,
        origin: &str,
        manifest: &Manifest,
    ) -> Result<(), ResolveError> {
        let allowed = crate::rollback::check(
            &self.settings.data_dir,
            &key.id,
            origin,
            manifest.version.as_str(),
            manifest.generated_at.as_str(),
            self.settings.allow_downgrade,
        )?;
        if let Some(crate::rollback::Allowed(e)) = allowed {
            let what = e.to_string();
            (self.notify)(&format!(
                "warning: {} (accepted for this run: --allow-downgrade)",
                what.lines().next().unwrap_or_default()
            ));
        }
        Ok(())
    }

    fn manifest_cache_path(&self, url: &str) -> PathBuf {
        let key = crate::digest::sha256_hex(url.as_bytes());
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
            let sig_url = format!("{url}{}", crate::signature::SIG_SUFFIX);
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
            .download(
                url,
                &fetched,
                &Expected::at_most(SMALL_FILE_LIMIT),
                &ProgressBar::hidden(),
            )
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
            Err(e @ DownloadError::Io { .. }) => Err(ResolveError::Download(e)),
            Err(e) => Err(ResolveError::ManifestUnreachable {
                url: crate::sanitize::strip_userinfo(url),
                cause: e.to_string().lines().next().unwrap_or_default().to_string(),
            }),
        };
        let _ = std::fs::remove_file(&fetched);
        bytes
    }

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
        let actual = crate::digest::hash_file(&path).map_err(|source| CacheError::Io {
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
        (self.notify)(&format!(
            "warning: {}",
            err.to_string().lines().next().unwrap_or_default()
        ));
        Ok(None)
    }

    fn external(&self, name: &str, target: Target) -> Result<Resolved, ResolveError> {
        let flag = match name {
            OPENCODE => "--opencode-bin",
            crate::manifest::OPENWORK_SERVER => "--openwork-server-bin",
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
            Check::Corrupt { moved_to, actual } => (self.notify)(&format!(
                "warning: cached {name} {version} did not match the manifest (expected sha256 {}, found {}); moved it to {} and fetching it again",
                want.sha256,
                actual.sha256,
                moved_to.display()
            )),
            Check::Missing => {}
        }
        let _lock = entry.lock(|| {
            (self.notify)(&format!(
                "waiting for another openwrk to finish downloading {name}"
            ))
        })?;
        // The directory exists now: never download into one another user can write.
        entry.check_trust()?;
        // Another process may have fetched it while we waited.
        if let Check::Warm | Check::Rehashed = entry.check(&want)? {
            return Ok(resolved(Origin::Cache, "sha256"));
        }
        entry.clean_stale_parts();
        let source = base.join(asset.asset.as_str());
        let expected = Expected::exactly(Some(asset.sha256.to_string()), asset.size);
        let bar = (self.progress)(asset.asset.as_str(), asset.size);
        match (&asset.archive, &asset.binary) {
            (Some(kind), Some(inner)) => {
                let archive_path = entry.dir.join(format!(".{}", asset.asset));
                self.fetch(base, &source, &archive_path, &expected, &bar)
                    .await?;
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
                let digest = self
                    .fetch(base, &source, &entry.binary, &expected, &bar)
                    .await?;
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
        bar: &ProgressBar,
    ) -> Result<crate::digest::FileDigest, ResolveError> {
        match base {
            Location::Url(_) => Ok(self
                .downloader
                .download(source, dest, expected, bar)
                .await?),
            Location::Dir(_) => Ok(self
                .downloader
                .copy_file(Path::new(source), dest, expected)
                .await?),
        }
    }
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
    name.push(crate::signature::SIG_SUFFIX);
    manifest.with_file_name(name)
}

/// The first executable file named `name` on PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
