//! `cargo xtask bundle`: resolve OpenCode, download and verify every asset,
//! write `openwrk-sidecars.json`, `SHA256SUMS` and bundled archives into a
//! staging directory, then move it into place (SPEC §2).
//!
//! `fetch` gets the assets (every download at once, decompressed and hashed
//! as it arrives; prebuilt files copied and hashed meanwhile), `pack` writes
//! the bundled archives (each tar entry gzip-compressed on all cores through
//! `pgzip` as soon as its file exists, overlapping the downloads), `dist` the
//! rest of `dist/`.

mod dist;
mod fetch;
mod pack;
mod pgzip;

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use futures_util::StreamExt;
use openwrk::commands::progress::{Lines, Renderer};
use openwrk::supply::digest::FileDigest;
use openwrk::supply::download::{Downloader, Expected};
use openwrk::supply::github::{GitHub, Repo, VersionRequest};
use openwrk::supply::manifest::{Manifest, MANIFEST_FILE};
use openwrk::supply::platform::Target;

pub use dist::{human, print_summary, remove_stale_work_dirs};
use fetch::{Job, Prebuilt};

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
    /// Parallel downloads (default: every download at once, so the slowest
    /// one sets the pace).
    #[arg(long, env = "OPENWRK_JOBS")]
    pub jobs: Option<usize>,
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
    let staging = dist::work_dir(&parent, "staging")?;
    let work = dist::work_dir(&parent, "work")?;
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

    // Which targets get a bundled archive is known first: only their
    // binaries are written out; the others' are hashed as they stream by.
    let openwrk_bins = if args.mode.bundled() {
        pack::openwrk_binaries(&args, &targets, work.path(), &progress)?
    } else {
        Vec::new()
    };
    let bundled: BTreeSet<Target> = openwrk_bins.iter().map(|(t, _)| *t).collect();
    // tar.gz archives are compressed entry by entry as their files appear,
    // on the cores the downloads leave idle.
    let packer = pack::Packer::new(work.path().join("packed"), epoch.unwrap_or(0))?;
    let packs = |t: Target| bundled.contains(&t) && !t.is_windows();
    for (target, bin) in openwrk_bins.iter().filter(|(t, _)| packs(*t)) {
        packer.start(pack::openwrk_entry(*target), bin.clone());
    }

    let mut versions = BTreeMap::new();
    let mut sources = BTreeMap::new();
    let mut jobs = Vec::new();
    let mut prebuilt = Vec::new();
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
                        archive: (spec.archive, spec.binary.clone()),
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
                    None => dist::read_version(dir)?,
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
                    if packs(target) {
                        // The file read for the archive is hashed and must
                        // match the copy's digest the manifest gets.
                        packer.start(pack::sidecar_entry(target, &config, name), src.clone());
                    }
                    prebuilt.push(Prebuilt {
                        sidecar: name.clone(),
                        target,
                        dest: args.mode.download().then(|| assets_dir.join(&file)),
                        file,
                        src,
                    });
                }
                versions.insert(name.clone(), version);
            }
        }
    }

    // Every download at once by default (the slowest one sets the pace),
    // while the prebuilt files are copied and hashed on the blocking pool.
    let parallel = args.jobs.unwrap_or(jobs.len()).max(1);
    let downloads = futures_util::stream::iter(jobs)
        .map(|job| {
            let bin_dir = bundled.contains(&job.target).then(|| {
                work.path()
                    .join("bin")
                    .join(&job.sidecar)
                    .join(job.target.id())
            });
            let (packer, config) = (&packer, &config);
            let download = fetch::download(&downloader, job, &assets_dir, bin_dir, &progress);
            async move {
                let f = download.await?;
                if let Some(bin) = f.binary_path.clone().filter(|_| packs(f.target)) {
                    packer.start(pack::sidecar_entry(f.target, config, &f.sidecar), bin);
                }
                Ok(f)
            }
        })
        .buffer_unordered(parallel)
        .collect::<Vec<_>>();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let copies = futures_util::stream::iter(prebuilt)
        .map(|p| async {
            let f = tokio::task::spawn_blocking(move || fetch::prebuilt(p)).await??;
            progress.line(&format!(
                "copied {} ({}, sha256 {})",
                f.asset,
                human(f.digest.size),
                f.digest.short()
            ));
            anyhow::Ok(f)
        })
        .buffer_unordered(cores)
        .collect::<Vec<_>>();
    let (downloaded, copied) = tokio::join!(downloads, copies);
    let mut fetched = Vec::new();
    for r in copied.into_iter().chain(downloaded) {
        fetched.push(r?);
    }
    fetched.sort_by(|a, b| (&a.sidecar, a.target).cmp(&(&b.sidecar, b.target)));

    let manifest = dist::build_manifest(&versions, &sources, &fetched, &generated_at)?;
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

    // Assets were hashed as they arrived and archives as they were written;
    // only the manifest, its signature and zip archives are hashed again.
    let mut known: BTreeMap<String, String> = BTreeMap::new();
    let mut archives = Vec::new();
    for (target, openwrk_bin) in openwrk_bins {
        let (name, sha) = pack::bundle_archive(
            staging.path(),
            target,
            &openwrk_bin,
            &fetched,
            &config,
            epoch.unwrap_or(0),
            &packer,
        )?;
        progress.line(&format!("wrote {name}"));
        if let Some(sha) = sha {
            known.insert(name.clone(), sha);
        }
        archives.push(name);
    }
    if args.mode.download() {
        known.extend(
            fetched
                .iter()
                .map(|f| (f.asset.clone(), f.digest.sha256.clone())),
        );
    }
    dist::write_sha256sums(staging.path(), &known)?;
    dist::publishable_modes(staging.path())?;
    dist::replace_dir(staging.keep(), &args.out)?;
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
