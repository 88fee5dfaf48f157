//! Why resolution failed, with the SPEC §9 exit code of each case.

use std::path::PathBuf;

use crate::supply::archive;
use crate::supply::cache::CacheError;
use crate::supply::download::DownloadError;
use crate::supply::manifest::ManifestError;
use crate::supply::platform::Target;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no manifest for openwrk {version} at {url} (HTTP {status})\nhint: pass --sidecar-manifest or --sidecar-base-url, or use --opencode-source external")]
    ManifestStatus {
        version: &'static str,
        url: String,
        status: u16,
    },
    #[error("could not fetch the sidecar manifest {url}: {cause}\nhint: a first start needs this manifest (later starts use the cached copy). Offline or behind a firewall, pass --sidecar-base-url URL (a mirror serving a dist/ directory) or --sidecar-manifest FILE; OpenCode can also come from --opencode-bin PATH or --opencode-source external (its name on PATH)")]
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
    #[error("the mirror {mirror} has no OpenCode for {target} in its manifest\nhint: with --sidecar-base-url everything comes from the mirror (openwrk asks no other host); serve a dist/ whose manifest names OpenCode (cargo xtask bundle writes one), or use --opencode-bin / --opencode-source external")]
    MirrorLacksOpenCode { mirror: String, target: Target },
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
    Github(#[from] crate::supply::github::GithubError),
    #[error(transparent)]
    Signature(#[from] crate::supply::signature::SignatureError),
    #[error(transparent)]
    Rollback(#[from] crate::supply::rollback::RollbackError),
    #[error("{0}\nhint: nothing was run; the cached copy was moved aside and the next start fetches it again")]
    Changed(Box<Mismatch>),
    #[error(transparent)]
    Download(#[from] DownloadError),
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Platform(#[from] crate::supply::platform::PlatformError),
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
            | ResolveError::MirrorLacksOpenCode { .. }
            | ResolveError::BundledMissing { .. }
            | ResolveError::ExternalMissing { .. }
            | ResolveError::Platform(_) => 3,
            ResolveError::ExternalNotAllowed { .. } => 2,
            ResolveError::NotInRelease { .. } | ResolveError::Signature(_) => 3,
            ResolveError::Github(e) => e.exit_code(),
            ResolveError::Rollback(crate::supply::rollback::RollbackError::BadTime { .. }) => 3,
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
