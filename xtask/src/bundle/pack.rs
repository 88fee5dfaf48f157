//! Bundled archives (SPEC §2.4): `openwrk-<version>-<target>.tar.gz|zip`
//! holding openwrk, the manifest (and its signature) and `sidecars/<binary>`;
//! and where each target's openwrk binary comes from.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use openwrk::commands::progress::Renderer;
use openwrk::supply::archive::{self, ArchiveEntry};
use openwrk::supply::manifest::MANIFEST_FILE;
use openwrk::supply::platform::Target;
use sha2::{Digest, Sha256};

use super::fetch::Fetched;
use super::pgzip::ParGz;
use super::{BundleArgs, SIGNATURE_FILE};
use crate::sidecars::SidecarsConfig;

/// gzip level of bundled tar.gz archives (`gzip -6`, the default).
const LEVEL: u32 = 6;

/// `openwrk-<target>[.exe]` per target from `--openwrk-bin-dir`; the host
/// target is built when missing, other missing targets are skipped with a warning.
pub fn openwrk_binaries(
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
    let built = cargo_target_dir()?
        .join("release")
        .join(format!("openwrk{}", std::env::consts::EXE_SUFFIX));
    let copy = work.join(format!("openwrk{}", std::env::consts::EXE_SUFFIX));
    std::fs::copy(&built, &copy).with_context(|| format!("cannot copy {}", built.display()))?;
    Ok(copy)
}

/// Where cargo puts this workspace's build output, as cargo itself says
/// (`CARGO_TARGET_DIR`, `build.target-dir` in a config file, or `target/`).
pub fn cargo_target_dir() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(&root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run cargo metadata")?;
    if !out.status.success() {
        anyhow::bail!("cargo metadata failed ({})", out.status);
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata printed no JSON")?;
    v["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata names no target_directory")
}

/// Writes `openwrk-<version>-<target>.tar.gz|zip` into `dir`; its name and
/// sha256 (hashed as it was written). tar.gz is compressed on all cores.
pub fn bundle_archive(
    dir: &Path,
    target: Target,
    openwrk_bin: &Path,
    fetched: &[Fetched],
    config: &SidecarsConfig,
    mtime: i64,
) -> anyhow::Result<(String, Option<String>)> {
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
        let source = f
            .binary_path
            .clone()
            .context("a bundled target's binaries are on disk")?;
        entries.push(ArchiveEntry {
            name: format!("{top}/sidecars/{binary}"),
            source,
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
        return Ok((name, None));
    }
    let file = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let hashed = Hashed {
        inner: BufWriter::with_capacity(256 << 10, file),
        sha: Sha256::new(),
    };
    let gz = archive::write_tar(ParGz::new(hashed, LEVEL)?, &entries, mtime)?;
    let hashed = gz.finish()?;
    let sha = hex::encode(hashed.sha.finalize());
    hashed
        .inner
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok((name, Some(sha)))
}

/// Hashes what it writes (the archive's SHA256SUMS line without a re-read).
struct Hashed<W> {
    inner: W,
    sha: Sha256,
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
