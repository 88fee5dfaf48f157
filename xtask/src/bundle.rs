//! `cargo xtask bundle`: resolve OpenCode, download and verify every asset,
//! write `openwrk-sidecars.json`, `SHA256SUMS` and bundled archives into a
//! staging directory, then move it into place (SPEC §2).

use std::collections::BTreeMap;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use futures_util::StreamExt;
use openwrk::commands::progress::{Lines, Renderer};
use openwrk::supply::archive::{self, ArchiveEntry, ArchiveKind};
use openwrk::supply::digest::{hash_file, FileDigest, HashingWriter};
use openwrk::supply::download::{Downloader, Expected};
use openwrk::supply::github::{GitHub, Repo, VersionRequest};
use openwrk::supply::manifest::{
    AssetName, Entry, Manifest, NonEmpty, Sha256Hex, TargetAsset, MANIFEST_FILE,
};
use openwrk::supply::platform::Target;

use crate::sidecars::{SidecarsConfig, Source};

/// `openwrk-sidecars.json.minisig`.
pub const SIGNATURE_FILE: &str = "openwrk-sidecars.json.minisig";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Bundled archives only (openwrk + sidecars + manifest).
    Bundled,
    /// Download-on-first-run: the manifest and every asset (a complete mirror).
    Download,
    /// Both.
    Both,
}

impl Mode {
    fn bundled(self) -> bool {
        self != Mode::Download
    }
    fn download(self) -> bool {
        self != Mode::Bundled
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct BundleArgs {
    /// Output directory; replaced atomically at the end.
    #[arg(long, default_value = "dist")]
    pub out: PathBuf,
    /// Comma-separated target ids, or `all`.
    #[arg(long, default_value = "all")]
    pub targets: String,
    #[arg(long, value_enum, default_value = "both")]
    pub mode: Mode,
    /// Directory of `<name>-<target>[.exe]` files for openwork-server and owpenbot.
    #[arg(long)]
    pub prebuilt: Option<PathBuf>,
    /// Directory of compiled `openwrk-<target>[.exe]` for bundled archives.
    #[arg(long)]
    pub openwrk_bin_dir: Option<PathBuf>,
    /// Parallel downloads.
    #[arg(long, env = "OPENWRK_JOBS", default_value_t = 4)]
    pub jobs: usize,
    /// OpenCode to ship: `1.2.3`, `v1.2.3` or `latest` (default: latest release).
    #[arg(long, env = "OPENCODE_VERSION")]
    pub opencode_version: Option<String>,
    /// Repository of OpenCode releases (`owner/name`), for forks.
    #[arg(long, env = "OPENWRK_OPENCODE_REPO")]
    pub opencode_repo: Option<String>,
    /// GitHub API root.
    #[arg(long, env = "OPENWRK_GITHUB_API_URL", default_value = openwrk::supply::github::DEFAULT_API_URL)]
    pub github_api_url: String,
    /// Token for the GitHub API (GH_TOKEN is read too). Prefer the env var.
    #[arg(long, env = "GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<String>,
    /// Fixed timestamp (Unix seconds) for `generatedAt` and archive entries.
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    pub source_date_epoch: Option<i64>,
    /// Sign the manifest with this minisign secret key (or the key in OPENWRK_SIGNING_KEY).
    #[arg(long, env = "OPENWRK_SIGNING_KEY_FILE", value_name = "KEYFILE")]
    pub sign: Option<PathBuf>,
    /// The sidecars declaration.
    #[arg(long, default_value_os_t = crate::sidecars::default_path())]
    pub config: PathBuf,
}

/// One row of the summary table.
#[derive(Debug, Clone)]
pub struct Row {
    pub sidecar: String,
    pub version: String,
    pub target: Target,
    pub digest: FileDigest,
}

pub struct Report {
    pub manifest: Manifest,
    pub rows: Vec<Row>,
    pub archives: Vec<String>,
}

/// A sidecar's asset for one target, once it is in the assets directory.
struct Fetched {
    sidecar: String,
    target: Target,
    asset: String,
    digest: FileDigest,
    archive: Option<(ArchiveKind, String)>,
    /// The executable: extracted from the archive, or the asset itself.
    binary_path: PathBuf,
    binary_digest: FileDigest,
}

struct Job {
    sidecar: String,
    target: Target,
    url: String,
    asset: String,
    expected: Expected,
    archive: Option<(ArchiveKind, String)>,
}

pub async fn run(args: BundleArgs) -> anyhow::Result<Report> {
    let targets = Target::parse_list(&args.targets)?;
    if targets.is_empty() {
        bail!(
            "--targets names no target\nhint: use `all` or a list such as linux-x64,darwin-arm64"
        );
    }
    let config = SidecarsConfig::load(&args.config)?;
    // Before any download: a bad key should fail fast.
    let signing_key = crate::sign::secret_key(args.sign.as_deref())?;
    let epoch = args.source_date_epoch;
    let generated_at =
        openwrk::supply::manifest::rfc3339(epoch.unwrap_or_else(|| chrono::Utc::now().timestamp()));

    let parent = match args.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    remove_stale_work_dirs(&parent, &|m| eprintln!("{m}"));
    let staging = work_dir(&parent, "staging")?;
    let work = work_dir(&parent, "work")?;
    let assets_dir = if args.mode.download() {
        staging.path().to_path_buf()
    } else {
        work.path().join("assets")
    };
    std::fs::create_dir_all(&assets_dir)?;

    // Bars on a terminal (never with CI set), plain lines otherwise.
    let animated = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
    let progress = Renderer::new(animated, Lines::Stderr { verbose: true });
    // One client for the API and every download (same proxies, CA bundle, timeouts).
    let downloader = Arc::new(Downloader::from_env()?.with_reporter(progress.reporter()));
    let mut versions = BTreeMap::new();
    let mut sources = BTreeMap::new();
    let mut jobs = Vec::new();
    let mut fetched = Vec::new();
    for (name, sidecar) in &config.sidecars {
        match &sidecar.source {
            Source::Github { repo, tag, assets } => {
                let repo: Repo = args.opencode_repo.as_deref().unwrap_or(repo).parse()?;
                let request: VersionRequest = args
                    .opencode_version
                    .as_deref()
                    .unwrap_or("latest")
                    .parse()?;
                let token = args
                    .github_token
                    .clone()
                    .or_else(openwrk::supply::github::token_from_env);
                let github =
                    GitHub::new(&args.github_api_url, token, downloader.client()?.clone())?
                        .with_reporter(progress.reporter());
                progress.line(&format!(
                    "resolving {name} {request} from {repo} ({})",
                    github.api_url()
                ));
                let release = github.resolve(&repo, &request, tag).await?;
                let version = release.version().ok_or_else(|| {
                    anyhow!(
                        "release tag `{}` of {repo} is not a semver version",
                        release.tag_name
                    )
                })?;
                progress.line(&format!(
                    "{name}: {repo}@{} (version {version})",
                    release.tag_name
                ));
                for &target in &targets {
                    let spec = assets.get(target.id()).ok_or_else(|| {
                        anyhow!(
                            "{}: sidecars.{name}.source.assets has no entry for {target}",
                            args.config.display()
                        )
                    })?;
                    let asset = release.asset(&spec.asset).ok_or_else(|| {
                        anyhow!(
                            "release {} of {repo} has no asset {}\n  assets: {}\nhint: pick another OPENCODE_VERSION or fix the asset name in {}",
                            release.tag_name,
                            spec.asset,
                            release.asset_names(),
                            args.config.display()
                        )
                    })?;
                    let sha256 = asset.sha256();
                    if sha256.is_none() {
                        progress.line(&format!(
                            "note: GitHub gives no digest for {}; its sha256 is computed from the download",
                            spec.asset
                        ));
                    }
                    jobs.push(Job {
                        sidecar: name.clone(),
                        target,
                        url: asset.browser_download_url.clone(),
                        asset: spec.asset.clone(),
                        expected: Expected::exactly(sha256, asset.size),
                        archive: Some((spec.archive, spec.binary.clone())),
                    });
                }
                sources.insert(name.clone(), format!("github:{repo}@{}", release.tag_name));
                versions.insert(name.clone(), version.to_string());
            }
            Source::Prebuilt { version } => {
                let dir = args.prebuilt.as_deref().ok_or_else(|| {
                    anyhow!("sidecar {name} comes from prebuilt files\nhint: pass --prebuilt DIR holding {}", Target::LinuxX64.prebuilt_file(name).replace("linux-x64", "<target>"))
                })?;
                let version = match version {
                    Some(v) => v.clone(),
                    None => read_version(dir)?,
                };
                for &target in &targets {
                    let file = target.prebuilt_file(name);
                    let src = dir.join(&file);
                    if !src.is_file() {
                        bail!(
                            "missing prebuilt file {}\nhint: the release pipeline must build {name} for {target} into --prebuilt {}",
                            src.display(),
                            dir.display()
                        );
                    }
                    let dest = assets_dir.join(&file);
                    let digest = copy_hashing(&src, &dest)?;
                    progress.line(&format!(
                        "copied {file} ({}, sha256 {})",
                        human(digest.size),
                        digest.short()
                    ));
                    fetched.push(Fetched {
                        sidecar: name.clone(),
                        target,
                        asset: file,
                        binary_digest: digest.clone(),
                        digest,
                        archive: None,
                        binary_path: dest,
                    });
                }
                versions.insert(name.clone(), version);
            }
        }
    }

    let results: Vec<anyhow::Result<Fetched>> = futures_util::stream::iter(jobs)
        .map(|job| {
            let downloader = downloader.clone();
            let assets_dir = assets_dir.clone();
            let work = work.path().to_path_buf();
            let progress = progress.clone();
            async move {
                let dest = assets_dir.join(&job.asset);
                let digest = downloader.download(&job.url, &dest, &job.expected).await?;
                progress.line(&format!(
                    "downloaded {} ({}, sha256 {})",
                    job.asset,
                    human(digest.size),
                    digest.short()
                ));
                let (kind, binary) = job.archive.clone().expect("github assets are archives");
                let bin_dir = work.join("bin").join(&job.sidecar).join(job.target.id());
                std::fs::create_dir_all(&bin_dir)?;
                let bin_path = bin_dir.join(Path::new(&binary).file_name().unwrap_or_default());
                let (dest2, bin2) = (dest.clone(), bin_path.clone());
                let binary_digest = tokio::task::spawn_blocking(move || {
                    archive::extract_binary(&dest2, kind, &binary, &bin2, archive::MAX_BINARY_SIZE)
                })
                .await??;
                Ok(Fetched {
                    sidecar: job.sidecar,
                    target: job.target,
                    asset: job.asset,
                    digest,
                    archive: job.archive,
                    binary_path: bin_path,
                    binary_digest,
                })
            }
        })
        .buffer_unordered(args.jobs.max(1))
        .collect()
        .await;
    for r in results {
        fetched.push(r?);
    }
    fetched.sort_by(|a, b| (&a.sidecar, a.target).cmp(&(&b.sidecar, b.target)));

    let manifest = build_manifest(&versions, &sources, &fetched, &generated_at)?;
    let manifest_json = manifest.to_json();
    std::fs::write(staging.path().join(MANIFEST_FILE), &manifest_json)?;
    if let Some(key) = &signing_key {
        let sig = crate::sign::sign(
            key,
            manifest_json.as_bytes(),
            openwrk::VERSION,
            &generated_at,
        )?;
        std::fs::write(staging.path().join(SIGNATURE_FILE), sig)?;
        progress.line(&format!("signed {MANIFEST_FILE}"));
    }

    let mut archives = Vec::new();
    if args.mode.bundled() {
        let bins = openwrk_binaries(&args, &targets, work.path(), &progress)?;
        for (target, openwrk_bin) in bins {
            let name = bundle_archive(
                staging.path(),
                target,
                &openwrk_bin,
                &fetched,
                &config,
                epoch.unwrap_or(0),
            )?;
            progress.line(&format!("wrote {name}"));
            archives.push(name);
        }
    }

    // Assets were hashed as they arrived; only the manifest and archives are hashed again.
    let known: BTreeMap<String, String> = if args.mode.download() {
        fetched
            .iter()
            .map(|f| (f.asset.clone(), f.digest.sha256.clone()))
            .collect()
    } else {
        BTreeMap::new()
    };
    write_sha256sums(staging.path(), &known)?;
    publishable_modes(staging.path())?;
    replace_dir(staging.keep(), &args.out)?;
    drop(work);

    let rows = fetched
        .iter()
        .map(|f| Row {
            sidecar: f.sidecar.clone(),
            version: versions[&f.sidecar].clone(),
            target: f.target,
            digest: f.digest.clone(),
        })
        .collect();
    Ok(Report {
        manifest,
        rows,
        archives,
    })
}

fn read_version(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("VERSION");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("cannot read {}\nhint: put the prebuilt sidecars' version in a VERSION file, or a `version` field in sidecars.toml", path.display())
    })?;
    let v = text.trim();
    if v.is_empty() {
        bail!(
            "{} is empty\nhint: write the prebuilt sidecars' version into it",
            path.display()
        );
    }
    Ok(v.to_string())
}

fn copy_hashing(src: &Path, dest: &Path) -> anyhow::Result<FileDigest> {
    let mut input =
        std::fs::File::open(src).with_context(|| format!("cannot read {}", src.display()))?;
    let mut out = HashingWriter::new(BufWriter::new(std::fs::File::create(dest)?));
    std::io::copy(&mut input, &mut out)?;
    Ok(out.finish()?)
}

fn build_manifest(
    versions: &BTreeMap<String, String>,
    sources: &BTreeMap<String, String>,
    fetched: &[Fetched],
    generated_at: &str,
) -> anyhow::Result<Manifest> {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    for f in fetched {
        let entry = entries.entry(f.sidecar.clone()).or_insert_with(|| Entry {
            version: NonEmpty::new(versions[&f.sidecar].clone()).expect("versions are non-empty"),
            source: sources.get(&f.sidecar).cloned(),
            targets: BTreeMap::new(),
        });
        let sha = |d: &FileDigest| Sha256Hex::new(d.sha256.clone()).map_err(|e| anyhow!(e));
        let archived = f.archive.is_some();
        entry.targets.insert(
            f.target.id().to_string(),
            TargetAsset {
                asset: AssetName::new(f.asset.clone()).map_err(|e| anyhow!(e))?,
                sha256: sha(&f.digest)?,
                size: f.digest.size,
                archive: f.archive.as_ref().map(|(k, _)| *k),
                binary: f.archive.as_ref().map(|(_, b)| b.clone()),
                binary_sha256: if archived {
                    Some(sha(&f.binary_digest)?)
                } else {
                    None
                },
                binary_size: archived.then_some(f.binary_digest.size),
            },
        );
    }
    Ok(Manifest {
        schema_version: openwrk::supply::manifest::SCHEMA_VERSION,
        version: NonEmpty::new(openwrk::VERSION).expect("version is set"),
        generated_at: NonEmpty::new(generated_at).expect("timestamp is non-empty"),
        entries,
    })
}

/// `openwrk-<target>[.exe]` per target from `--openwrk-bin-dir`; the host
/// target is built when missing, other missing targets are skipped with a warning.
fn openwrk_binaries(
    args: &BundleArgs,
    targets: &[Target],
    work: &Path,
    progress: &Renderer,
) -> anyhow::Result<Vec<(Target, PathBuf)>> {
    let host = Target::host().ok();
    let mut out = Vec::new();
    for &target in targets {
        let file = target.prebuilt_file("openwrk");
        if let Some(path) = args
            .openwrk_bin_dir
            .as_ref()
            .map(|d| d.join(&file))
            .filter(|p| p.is_file())
        {
            out.push((target, path));
        } else if Some(target) == host {
            progress.line(&format!(
                "building openwrk for {target} (cargo build --release -p openwrk)"
            ));
            out.push((target, build_host_openwrk(work)?));
        } else {
            progress.line(&format!(
                "warning: no {file} in --openwrk-bin-dir; skipping the bundled archive for {target}"
            ));
        }
    }
    Ok(out)
}

fn build_host_openwrk(work: &Path) -> anyhow::Result<PathBuf> {
    crate::cargo_build(&[
        "--release",
        "--locked",
        "--package",
        "openwrk",
        "--bin",
        "openwrk",
    ])
    .context("hint: pass --openwrk-bin-dir with prebuilt binaries")?;
    let built = openwrk_test_support::target_dir()
        .join("release")
        .join(format!("openwrk{}", std::env::consts::EXE_SUFFIX));
    let copy = work.join(format!("openwrk{}", std::env::consts::EXE_SUFFIX));
    std::fs::copy(&built, &copy).with_context(|| format!("cannot copy {}", built.display()))?;
    Ok(copy)
}

/// `openwrk-<version>-<target>.tar.gz|zip` with `openwrk`, the manifest and `sidecars/<binary>`.
fn bundle_archive(
    dir: &Path,
    target: Target,
    openwrk_bin: &Path,
    fetched: &[Fetched],
    config: &SidecarsConfig,
    mtime: i64,
) -> anyhow::Result<String> {
    let top = format!("openwrk-{}-{target}", openwrk::VERSION);
    let mut entries = vec![
        ArchiveEntry {
            name: format!("{top}/{}", target.exe_name("openwrk")),
            source: openwrk_bin.to_path_buf(),
            executable: true,
        },
        ArchiveEntry {
            name: format!("{top}/{MANIFEST_FILE}"),
            source: dir.join(MANIFEST_FILE),
            executable: false,
        },
    ];
    if dir.join(SIGNATURE_FILE).is_file() {
        entries.push(ArchiveEntry {
            name: format!("{top}/{SIGNATURE_FILE}"),
            source: dir.join(SIGNATURE_FILE),
            executable: false,
        });
    }
    for f in fetched.iter().filter(|f| f.target == target) {
        let binary = target.exe_name(&config.sidecars[&f.sidecar].binary);
        entries.push(ArchiveEntry {
            name: format!("{top}/sidecars/{binary}"),
            source: f.binary_path.clone(),
            executable: true,
        });
    }
    let mtime = mtime.max(0) as u64;
    let name = if target.is_windows() {
        format!("{top}.zip")
    } else {
        format!("{top}.tar.gz")
    };
    let path = dir.join(&name);
    if target.is_windows() {
        archive::write_zip(&path, &entries, mtime)?;
    } else {
        archive::write_tar_gz(&path, &entries, mtime)?;
    }
    Ok(name)
}

/// `<hex>  <file>` for every other file, sorted by name (`sha256sum -c` format).
fn write_sha256sums(dir: &Path, known: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // Every other file, the deterministic signature included (SPEC §2.4).
        .filter(|n| n != "SHA256SUMS")
        .collect();
    names.sort();
    let mut out = String::new();
    for name in names {
        let sha = match known.get(&name) {
            Some(sha) => sha.clone(),
            None => hash_file(&dir.join(&name))?.sha256,
        };
        out.push_str(&format!("{sha}  {name}\n"));
    }
    std::fs::write(dir.join("SHA256SUMS"), out)?;
    Ok(())
}

/// dist/ is served as-is by static hosts running as other users: 0755 for the
/// directory, 0644 for files, whatever the umask was.
fn publishable_modes(dir: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        for e in std::fs::read_dir(dir)?.filter_map(|e| e.ok()) {
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o644))?;
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The prefix of the bundler's temporary directories beside `--out`.
const WORK_PREFIX: &str = ".dist-";
const WORK_KINDS: [&str; 3] = ["staging", "work", "old"];

/// `.dist-<kind>-<pid>-<random>` beside `--out`: the pid lets a later run
/// tell a killed bundler's leftovers from a running one's.
fn work_dir(parent: &Path, kind: &str) -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{WORK_PREFIX}{kind}-{}-", std::process::id()))
        .tempdir_in(parent)
        .with_context(|| format!("cannot create a work directory in {}", parent.display()))
}

/// Removes the work directories of bundlers that are gone (killed with
/// SIGKILL, a crash, a power cut); a running bundler's stay.
pub fn remove_stale_work_dirs(parent: &Path, note: &dyn Fn(String)) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = WORK_KINDS
            .iter()
            .find_map(|k| name.strip_prefix(&format!("{WORK_PREFIX}{k}-")))
        else {
            continue;
        };
        // Leftovers from before the pid was part of the name count as stale too.
        let owner = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if owner
            .is_some_and(|pid| pid == std::process::id() || openwrk::host::process::is_alive(pid))
        {
            continue;
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) && std::fs::remove_dir_all(e.path()).is_ok() {
            note(format!(
                "removed {} (left by a bundler that is no longer running)",
                e.path().display()
            ));
        }
    }
}

/// Moves `staging` to `out`, replacing an existing `out` only once the new one is complete.
fn replace_dir(staging: PathBuf, out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        let parent = staging.parent().unwrap_or(Path::new("."));
        let old = work_dir(parent, "old")?.keep();
        std::fs::remove_dir(&old)?;
        std::fs::rename(out, &old)
            .with_context(|| format!("cannot move the old {} aside", out.display()))?;
        std::fs::rename(&staging, out)
            .with_context(|| format!("cannot move the new bundle to {}", out.display()))?;
        std::fs::remove_dir_all(&old)?;
    } else {
        std::fs::rename(&staging, out)
            .with_context(|| format!("cannot move the new bundle to {}", out.display()))?;
    }
    Ok(())
}

pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The summary table: sidecar, version, target, size, sha256 prefix.
pub fn print_summary(report: &Report, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<16} {:<14} {:<13} {:>10}  sha256",
        "sidecar", "version", "target", "size"
    )?;
    for r in &report.rows {
        writeln!(
            out,
            "{:<16} {:<14} {:<13} {:>10}  {}",
            r.sidecar,
            r.version,
            r.target.id(),
            human(r.digest.size),
            r.digest.short()
        )?;
    }
    for a in &report.archives {
        writeln!(out, "bundled: {a}")?;
    }
    Ok(())
}
