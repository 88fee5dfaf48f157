//! What resolution is told: sources, locations, flags (SPEC §3, §4).

use std::path::PathBuf;

use crate::supply::manifest::MANIFEST_FILE;

/// Where a sidecar may come from (`--sidecar-source`, `--opencode-source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    pub github: GithubSettings,
    /// Accept an unsigned local manifest although a signing key is in force.
    pub allow_unsigned_manifest: bool,
    /// Run-time signing key (`OPENWRK_MANIFEST_PUBKEY`); a built-in key wins.
    pub manifest_pubkey: Option<String>,
    /// Accept a signed manifest of another version or older than the newest seen (one run).
    pub allow_downgrade: bool,
}

/// Where OpenCode comes from when the manifest does not say.
#[derive(Debug, Clone)]
pub struct GithubSettings {
    /// `OPENCODE_VERSION`: `1.2.3`, `v1.2.3` or `latest` (default).
    pub version: Option<String>,
    /// `OPENWRK_OPENCODE_REPO`.
    pub repo: String,
    /// `OPENWRK_GITHUB_API_URL`.
    pub api_url: String,
    /// `GITHUB_TOKEN` / `GH_TOKEN`.
    pub token: Option<String>,
}
