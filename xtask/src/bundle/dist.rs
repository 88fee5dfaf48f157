//! The `dist/` directory around the assets: the manifest, `SHA256SUMS`,
//! publishable modes, the work directories beside `--out` and the atomic
//! replacement of the old `dist/`, and the summary table.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use openwrk::supply::digest::{hash_file, FileDigest};
use openwrk::supply::manifest::{AssetName, Entry, Manifest, NonEmpty, Sha256Hex, TargetAsset};

use super::fetch::Fetched;
use super::Report;

pub fn read_version(dir: &Path) -> anyhow::Result<String> {
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

pub fn build_manifest(
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

/// `<hex>  <file>` for every other file, sorted by name (`sha256sum -c`
/// format); files whose digest is `known` (hashed as they were written) are
/// not read again.
pub fn write_sha256sums(dir: &Path, known: &BTreeMap<String, String>) -> anyhow::Result<()> {
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
pub fn publishable_modes(dir: &Path) -> anyhow::Result<()> {
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
pub fn work_dir(parent: &Path, kind: &str) -> anyhow::Result<tempfile::TempDir> {
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
pub fn replace_dir(staging: PathBuf, out: &Path) -> anyhow::Result<()> {
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
