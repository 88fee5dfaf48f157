//! Bundled archives (SPEC §2.4): `openwrk-<version>-<target>.tar.gz|zip`
//! holding openwrk, the manifest (and its signature) and `sidecars/<binary>`;
//! and where each target's openwrk binary comes from.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::JoinHandle;

use anyhow::Context;
use openwrk::commands::progress::Renderer;
use openwrk::supply::archive::{self, ArchiveEntry};
use openwrk::supply::digest::FileDigest;
use openwrk::supply::manifest::MANIFEST_FILE;
use openwrk::supply::platform::Target;
use sha2::{Digest, Sha256};

use super::fetch::Fetched;
use super::pgzip::{self, Blocks, Deflated};
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

/// `openwrk-<version>-<target>`: the top directory of a bundled archive.
fn top(target: Target) -> String {
    format!("openwrk-{}-{target}", openwrk::VERSION)
}

/// A bundled archive's path for openwrk itself.
pub fn openwrk_entry(target: Target) -> String {
    format!("{}/{}", top(target), target.exe_name("openwrk"))
}

/// A bundled archive's path for a sidecar.
pub fn sidecar_entry(target: Target, config: &SidecarsConfig, sidecar: &str) -> String {
    let binary = target.exe_name(&config.sidecars[sidecar].binary);
    format!("{}/sidecars/{binary}", top(target))
}

/// One tar entry (header records, data, padding) deflated on its own, and
/// the digest of the file data it read.
pub struct Packed {
    deflated: Deflated,
    digest: Option<FileDigest>,
}

/// Compresses the big entries of tar.gz bundled archives as soon as their
/// files exist, while the bundler still downloads: every entry is deflated
/// on its own (no block spans two entries), so the archive is the same
/// whichever entry is ready first.
pub struct Packer {
    /// Where deflated entries wait to be joined.
    dir: PathBuf,
    mtime: u64,
    started: Mutex<BTreeMap<String, JoinHandle<anyhow::Result<Packed>>>>,
}

impl Packer {
    pub fn new(dir: PathBuf, mtime: i64) -> anyhow::Result<Packer> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Packer {
            dir,
            mtime: mtime.max(0) as u64,
            started: Mutex::new(BTreeMap::new()),
        })
    }

    /// Starts compressing the executable `source` as archive entry `name`.
    pub fn start(&self, name: String, source: PathBuf) {
        let (dir, mtime) = (self.dir.clone(), self.mtime);
        let entry = name.clone();
        let handle = std::thread::spawn(move || {
            pack_entry(&dir, &entry, Some((&source, true)), mtime)
                .with_context(|| format!("cannot compress {}", source.display()))
        });
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, handle);
    }

    /// The entry compressed since [`Packer::start`], or compressed now.
    fn take(&self, name: &str, source: Option<(&Path, bool)>) -> anyhow::Result<Packed> {
        let started = self
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        match started {
            Some(handle) => handle
                .join()
                .map_err(|_| anyhow::anyhow!("compressing {name} panicked"))?,
            None => pack_entry(&self.dir, name, source, self.mtime),
        }
    }
}

/// Reads a file once for tar, hashing what it hands over.
struct HashingReader<R> {
    inner: R,
    sha: Sha256,
    size: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// One entry as [`archive::write_tar`] writes it (a directory without a
/// source), deflated in independent blocks into a temp file in `dir`.
fn pack_entry(
    dir: &Path,
    name: &str,
    source: Option<(&Path, bool)>,
    mtime: u64,
) -> anyhow::Result<Packed> {
    let spill = BufWriter::with_capacity(64 << 10, tempfile::tempfile_in(dir)?);
    let mut blocks = Blocks::new(spill, LEVEL);
    let mut tar = tar::Builder::new(&mut blocks);
    tar.mode(tar::HeaderMode::Deterministic);
    let digest = match source {
        None => {
            archive::append_entry(&mut tar, name, None::<(std::io::Empty, u64, bool)>, mtime)?;
            None
        }
        Some((path, executable)) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            let size = file.metadata()?.len();
            let mut reader = HashingReader {
                inner: BufReader::with_capacity(64 << 10, file),
                sha: Sha256::new(),
                size: 0,
            };
            archive::append_entry(&mut tar, name, Some((&mut reader, size, executable)), mtime)?;
            Some(FileDigest {
                sha256: hex::encode(reader.sha.finalize()),
                size: reader.size,
            })
        }
    };
    // The end-of-archive records come once, after the last entry.
    tar.get_mut().close();
    tar.into_inner()?;
    let (spill, crc, size) = blocks.finish()?;
    let file = spill.into_inner().map_err(|e| e.into_error())?;
    Ok(Packed {
        deflated: Deflated { file, crc, size },
        digest,
    })
}

/// The end-of-archive records (two zero blocks), deflated.
fn end_of_archive(dir: &Path) -> anyhow::Result<Deflated> {
    let mut blocks = Blocks::new(tempfile::tempfile_in(dir)?, LEVEL);
    blocks.write_all(&[0u8; 1024])?;
    let (file, crc, size) = blocks.finish()?;
    Ok(Deflated { file, crc, size })
}

/// The deflated parts of the tar stream [`archive::write_tar`] writes for
/// `entries`, in order; an entry named in `expected` must have been read
/// with that digest.
fn packed_tar(
    entries: &[ArchiveEntry],
    expected: &BTreeMap<String, &FileDigest>,
    packer: &Packer,
) -> anyhow::Result<Vec<Deflated>> {
    let mut parts = Vec::new();
    for (entry_name, entry) in archive::with_dirs(entries) {
        let packed = packer.take(
            &entry_name,
            entry.map(|e| (e.source.as_path(), e.executable)),
        )?;
        if let (Some(want), Some(got)) = (expected.get(&entry_name), &packed.digest) {
            if want.sha256 != got.sha256 || want.size != got.size {
                anyhow::bail!(
                    "{entry_name} changed while bundling: the manifest names sha256 {} ({} bytes), the archive read {} ({} bytes)",
                    want.sha256,
                    want.size,
                    got.sha256,
                    got.size
                );
            }
        }
        parts.push(packed.deflated);
    }
    parts.push(end_of_archive(&packer.dir)?);
    Ok(parts)
}

/// Writes `openwrk-<version>-<target>.tar.gz|zip` into `dir`; its name and
/// sha256 (hashed as it was written). A tar.gz joins the entries `packer`
/// compressed (checking each read the bytes the manifest names) with the
/// rest, compressed now.
#[allow(clippy::too_many_arguments)]
pub fn bundle_archive(
    dir: &Path,
    target: Target,
    openwrk_bin: &Path,
    fetched: &[Fetched],
    config: &SidecarsConfig,
    mtime: i64,
    packer: &Packer,
) -> anyhow::Result<(String, Option<String>)> {
    let top = top(target);
    let mut entries = vec![
        ArchiveEntry {
            name: openwrk_entry(target),
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
    let mut expected = BTreeMap::new();
    for f in fetched.iter().filter(|f| f.target == target) {
        let name = sidecar_entry(target, config, &f.sidecar);
        let source = f
            .binary_path
            .clone()
            .context("a bundled target's binaries are on disk")?;
        expected.insert(name.clone(), &f.binary_digest);
        entries.push(ArchiveEntry {
            name,
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
    let parts = packed_tar(&entries, &expected, packer)?;
    let file = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let hashed = Hashed {
        inner: BufWriter::with_capacity(256 << 10, file),
        sha: Sha256::new(),
    };
    let hashed = pgzip::concat(hashed, LEVEL, parts)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries compressed one by one, some early and some late, decompress
    /// to exactly the tar stream of the library's `write_tar`; a file that
    /// changed after its digest was taken is refused.
    #[test]
    fn packed_entries_are_the_library_tar_stream() {
        let tmp = tempfile::tempdir().unwrap();
        let file = |name: &str, len: u64| {
            let path = tmp.path().join(name);
            let mut f = std::fs::File::create(&path).unwrap();
            openwrk_test_support::fixtures::write_executable_like(&mut f, len, len).unwrap();
            path
        };
        let entries = vec![
            ArchiveEntry {
                name: "top/openwrk".into(),
                source: file("openwrk", 3 << 20),
                executable: true,
            },
            ArchiveEntry {
                name: "top/openwrk-sidecars.json".into(),
                source: file("manifest", 700),
                executable: false,
            },
            ArchiveEntry {
                name: "top/sidecars/opencode".into(),
                source: file("opencode", (1 << 20) + 1),
                executable: true,
            },
        ];
        let packer = Packer::new(tmp.path().join("packed"), 1_700_000_000).unwrap();
        packer.start("top/sidecars/opencode".into(), entries[2].source.clone());
        let digest = openwrk::supply::digest::hash_file(&entries[2].source).unwrap();
        let expected = BTreeMap::from([("top/sidecars/opencode".to_string(), &digest)]);
        let parts = packed_tar(&entries, &expected, &packer).unwrap();
        let gz = pgzip::concat(Vec::new(), LEVEL, parts).unwrap();
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut tar)
            .unwrap();
        let want = archive::write_tar(Vec::new(), &entries, 1_700_000_000).unwrap();
        assert!(tar == want, "the tar streams differ");

        let other = FileDigest {
            sha256: "0".repeat(64),
            size: digest.size,
        };
        let expected = BTreeMap::from([("top/sidecars/opencode".to_string(), &other)]);
        let err = packed_tar(&entries, &expected, &packer).err().unwrap();
        assert!(err.to_string().contains("changed while bundling"), "{err}");
    }
}
