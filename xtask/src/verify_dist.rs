//! `cargo xtask verify-dist DIR|URL`: is a `dist/` (or a mirror) complete and
//! intact? Every asset the manifest names, sizes and digests, `SHA256SUMS`,
//! and the signature.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use openwrk::supply::digest::{hash_file, FileDigest};
use openwrk::supply::download::{DownloadError, Downloader, Expected};
use openwrk::supply::manifest::{Manifest, MANIFEST_FILE};
use openwrk::supply::signature::TrustedKey;

use crate::bundle::SIGNATURE_FILE;

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyDistArgs {
    /// A dist/ directory or a mirror's base URL.
    pub location: String,
    /// Minisign public key file the manifest must be signed with (else OPENWRK_MANIFEST_PUBKEY).
    #[arg(long, value_name = "FILE")]
    pub pubkey: Option<PathBuf>,
}

/// Where the files are: a directory, or a URL whose files are fetched into a temp dir.
enum Source {
    Dir(PathBuf),
    Url {
        base: String,
        downloader: Downloader,
        tmp: tempfile::TempDir,
    },
}

impl Source {
    /// The file's local path; `Ok(None)` when it does not exist. URL files are
    /// fetched (with `expected` checked while streaming).
    async fn get(&self, name: &str, expected: &Expected) -> anyhow::Result<Option<PathBuf>> {
        match self {
            Source::Dir(dir) => Ok(Some(dir.join(name)).filter(|p| p.is_file())),
            Source::Url {
                base,
                downloader,
                tmp,
            } => {
                let dest = tmp.path().join(name);
                match downloader
                    .download(&format!("{base}/{name}"), &dest, expected)
                    .await
                {
                    Ok(_) => Ok(Some(dest)),
                    Err(DownloadError::NotFound { .. }) => Ok(None),
                    Err(e) if e.is_verification() => Err(e.into()),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }
}

pub async fn run(args: VerifyDistArgs) -> anyhow::Result<()> {
    let source = if args.location.starts_with("http://") || args.location.starts_with("https://") {
        Source::Url {
            base: args.location.trim_end_matches('/').to_string(),
            downloader: Downloader::from_env()?,
            tmp: tempfile::tempdir()?,
        }
    } else {
        Source::Dir(PathBuf::from(&args.location))
    };
    let mut problems: Vec<String> = Vec::new();

    let manifest_path = source
        .get(MANIFEST_FILE, &Expected::default())
        .await?
        .ok_or_else(|| anyhow!("{}: no {MANIFEST_FILE}\nhint: point at the directory that `cargo xtask bundle` wrote", args.location))?;
    let manifest_bytes = std::fs::read(&manifest_path)?;

    // Signature: required when a key is given, checked when one is at hand.
    let key = match &args.pubkey {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            TrustedKey::select(None, Some(&text))?
        }
        None => TrustedKey::current()?,
    };
    let sig = source.get(SIGNATURE_FILE, &Expected::default()).await?;
    let signature = match (&key, &sig) {
        (Some(key), Some(sig)) => {
            match key.verify(MANIFEST_FILE, &manifest_bytes, &std::fs::read(sig)?) {
                Ok(()) => format!("signature valid ({})", key.source_name),
                Err(e) => {
                    problems.push(e.to_string().lines().next().unwrap_or_default().to_string());
                    "signature INVALID".into()
                }
            }
        }
        (Some(_), None) => {
            problems.push(format!("{SIGNATURE_FILE} is missing but a key was given"));
            "signature MISSING".into()
        }
        (None, Some(_)) => {
            "signature present, not checked (no --pubkey or OPENWRK_MANIFEST_PUBKEY)".into()
        }
        (None, None) => "unsigned".into(),
    };

    let manifest =
        Manifest::from_json(&manifest_bytes).map_err(|e| anyhow!("{MANIFEST_FILE}: {e}"))?;
    let mut known: BTreeMap<String, FileDigest> = BTreeMap::new();
    let mut assets = 0;
    for (name, entry) in &manifest.entries {
        for (target, t) in &entry.targets {
            assets += 1;
            let expected = Expected::exactly(Some(t.sha256.to_string()), t.size);
            match source.get(t.asset.as_str(), &expected).await {
                Ok(Some(path)) => {
                    let d = hash_file(&path)?;
                    if d.sha256 != t.sha256.as_str() || d.size != t.size {
                        problems.push(format!(
                            "{} ({name} {target}): expected sha256 {} ({} bytes), found {} ({} bytes)",
                            t.asset, t.sha256, t.size, d.sha256, d.size
                        ));
                    }
                    known.insert(t.asset.to_string(), d);
                }
                Ok(None) => problems.push(format!("{} ({name} {target}) is missing", t.asset)),
                Err(e) => {
                    problems.push(format!("{} ({name} {target}): {}", t.asset, first_line(&e)))
                }
            }
        }
    }

    let sums = check_sums(&source, &mut known, &mut problems).await?;
    if let Source::Dir(dir) = &source {
        for name in list_files(dir)? {
            if name != "SHA256SUMS" && !sums.contains_key(&name) {
                problems.push(format!("{name} is not listed in SHA256SUMS"));
            }
        }
    }

    println!(
        "{}: {assets} assets named by the manifest, {} files in SHA256SUMS, {signature}",
        args.location,
        sums.len()
    );
    if problems.is_empty() {
        println!("ok: complete and intact");
        Ok(())
    } else {
        for p in &problems {
            println!("  problem: {p}");
        }
        Err(anyhow!("{} problem(s) in {}\nhint: re-run `cargo xtask bundle`, or re-upload the files named above", problems.len(), args.location))
    }
}

/// Checks every `SHA256SUMS` line; returns the listed names and digests.
async fn check_sums(
    source: &Source,
    known: &mut BTreeMap<String, FileDigest>,
    problems: &mut Vec<String>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let Some(path) = source.get("SHA256SUMS", &Expected::default()).await? else {
        problems.push("SHA256SUMS is missing".into());
        return Ok(BTreeMap::new());
    };
    let mut listed = BTreeMap::new();
    for (n, line) in std::fs::read_to_string(&path)?.lines().enumerate() {
        let Some((sha, name)) = line.split_once("  ") else {
            problems.push(format!("SHA256SUMS line {}: not `<sha256>  <file>`", n + 1));
            continue;
        };
        listed.insert(name.to_string(), sha.to_string());
        let actual = match known.get(name) {
            Some(d) => Some(d.sha256.clone()),
            None => match source.get(name, &Expected::default()).await {
                Ok(Some(p)) => Some(hash_file(&p)?.sha256),
                Ok(None) => None,
                Err(e) => {
                    problems.push(format!("{name}: {}", first_line(&e)));
                    continue;
                }
            },
        };
        match actual {
            None => problems.push(format!("{name} is listed in SHA256SUMS but missing")),
            Some(a) if a != sha => {
                problems.push(format!("{name}: SHA256SUMS says {sha}, found {a}"))
            }
            Some(_) => {}
        }
    }
    Ok(listed)
}

fn list_files(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

fn first_line(e: &anyhow::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}
