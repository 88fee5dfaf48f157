//! Builders for fake OpenCode releases, prebuilt sidecar directories and
//! hostile archives. Everything is deterministic for a given input.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::host::{FakeAsset, FakeRelease};

/// The five target ids, as in SPEC §1.
pub const TARGETS: [&str; 5] = [
    "linux-x64",
    "linux-arm64",
    "darwin-x64",
    "darwin-arm64",
    "windows-x64",
];

/// The target id of this machine.
pub fn host_target() -> &'static str {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "aarch64") => "linux-arm64",
        ("macos", "x86_64") => "darwin-x64",
        ("macos", "aarch64") => "darwin-arm64",
        ("windows", _) => "windows-x64",
        _ => "linux-x64",
    }
}

fn is_windows(target: &str) -> bool {
    target.starts_with("windows")
}

fn exe(target: &str, name: &str) -> String {
    if is_windows(target) {
        format!("{name}.exe")
    } else {
        name.to_string()
    }
}

/// Writes `pad` pseudo-random (incompressible) bytes seeded by `seed`.
fn write_noise(out: &mut impl Write, seed: u64, pad: u64) -> io::Result<()> {
    let mut x = seed | 1;
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = pad;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let bytes = x.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Writes `len` bytes that compress about like a real executable (a Bun
/// build of OpenCode: 185 MB to ~60 MB with `gzip -6`): in 64 KiB blocks,
/// about one in eight incompressible noise, the rest word salad cut from a
/// 16 KiB vocabulary (matches of 3 to 96 bytes, a stray byte now and then).
/// Deterministic for a seed; fast enough for gigabytes of fixtures.
pub fn write_executable_like(out: &mut impl Write, seed: u64, len: u64) -> io::Result<()> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let vocab: Vec<u8> = (0..16 * 1024 / 8)
        .flat_map(|_| next().to_le_bytes())
        .collect();
    const BLOCK: usize = 64 * 1024;
    let mut block = Vec::with_capacity(BLOCK + 128);
    let mut left = len;
    while left > 0 {
        block.clear();
        if next() % 8 == 0 {
            while block.len() < BLOCK {
                block.extend_from_slice(&next().to_le_bytes());
            }
        } else {
            while block.len() < BLOCK {
                let r = next();
                let n = 3 + (r % 94) as usize;
                let at = ((r >> 8) as usize) % (vocab.len() - n);
                block.extend_from_slice(&vocab[at..at + n]);
                if (r >> 40) % 100 < 15 {
                    block.push((r >> 48) as u8);
                }
            }
        }
        let n = left.min(BLOCK as u64) as usize;
        out.write_all(&block[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Like [`write_binary`], padded with [`write_executable_like`] bytes up to
/// `size` in all (never shorter than the runnable copy or marker).
pub fn write_sized_binary(
    path: &Path,
    label: &str,
    real: Option<&Path>,
    size: u64,
) -> io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    let head = match real {
        Some(src) => io::copy(&mut File::open(src)?, &mut out)?,
        None => {
            let text = format!("#!/bin/sh\necho 'stand-in {label}'\n");
            out.write_all(text.as_bytes())?;
            text.len() as u64
        }
    };
    write_executable_like(&mut out, seed_of(label), size.saturating_sub(head))?;
    out.flush()?;
    drop(out);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

fn seed_of(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Writes a sidecar binary for `target`: a copy of `real` (a runnable stand-in)
/// when given, else a marker text; then `pad` bytes of noise (executables ignore
/// trailing bytes, and benchmarks need realistic sizes).
pub fn write_binary(path: &Path, label: &str, real: Option<&Path>, pad: u64) -> io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    match real {
        Some(src) => {
            io::copy(&mut File::open(src)?, &mut out)?;
        }
        None => writeln!(out, "#!/bin/sh\necho 'stand-in {label}'")?,
    }
    write_noise(&mut out, seed_of(label), pad)?;
    out.flush()?;
    drop(out);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Builds OpenCode's release assets for all five targets in `dir`: the host
/// target holds a copy of `host_binary` (the stand-in opencode), the others a
/// marker. `pad` bytes of noise are appended to each binary.
pub fn opencode_release(
    dir: &Path,
    tag: &str,
    host_binary: Option<&Path>,
    pad: u64,
) -> io::Result<FakeRelease> {
    opencode_release_of(dir, tag, host_binary, Size::Pad(pad))
}

/// [`opencode_release`] with real-size binaries: each `size` bytes in all,
/// compressing like a real executable ([`write_sized_binary`]).
pub fn opencode_release_sized(
    dir: &Path,
    tag: &str,
    host_binary: Option<&Path>,
    size: u64,
) -> io::Result<FakeRelease> {
    opencode_release_of(dir, tag, host_binary, Size::Total(size))
}

/// How large a fixture binary is.
#[derive(Debug, Clone, Copy)]
enum Size {
    /// This many bytes of noise after the copy or marker.
    Pad(u64),
    /// This many bytes in all, compressing like an executable.
    Total(u64),
}

impl Size {
    /// Archives of real-size fixtures are compressed like real releases
    /// (level 6); the small ones fast.
    fn level(self) -> u32 {
        match self {
            Size::Pad(_) => 1,
            Size::Total(_) => 6,
        }
    }
}

fn write_fixture(path: &Path, label: &str, real: Option<&Path>, size: Size) -> io::Result<()> {
    match size {
        Size::Pad(pad) => write_binary(path, label, real, pad),
        Size::Total(total) => write_sized_binary(path, label, real, total),
    }
}

fn opencode_release_of(
    dir: &Path,
    tag: &str,
    host_binary: Option<&Path>,
    size: Size,
) -> io::Result<FakeRelease> {
    let work = dir.join(format!("opencode-{tag}-work"));
    std::fs::create_dir_all(&work)?;
    let mut assets = Vec::new();
    for target in TARGETS {
        let bin_name = exe(target, "opencode");
        let bin = work.join(format!("{target}-{bin_name}"));
        let real = host_binary.filter(|_| target == host_target());
        write_fixture(&bin, &format!("opencode {tag} {target}"), real, size)?;
        let level = size.level();
        let (name, path) = if target.starts_with("linux") {
            let name = format!("opencode-{target}.tar.gz");
            let path = dir.join(format!("{tag}-{name}"));
            tar_gz_at(&path, &[(bin_name.as_str(), Entry::File(&bin))], level)?;
            (name, path)
        } else {
            let name = format!("opencode-{target}.zip");
            let path = dir.join(format!("{tag}-{name}"));
            zip_at(
                &path,
                &[(bin_name.as_str(), Entry::File(&bin))],
                level.into(),
            )?;
            (name, path)
        };
        assets.push(FakeAsset { name, path });
    }
    std::fs::remove_dir_all(&work)?;
    Ok(FakeRelease::new(tag, assets))
}

/// A `--prebuilt` directory: `<name>-<target>[.exe]` for openwork-server and
/// owpenbot on every target, plus a `VERSION` file. `host_bins` maps a sidecar
/// name to a runnable stand-in for the host target.
pub fn prebuilt_dir(
    dir: &Path,
    version: &str,
    host_bins: &[(&str, &Path)],
    pad: u64,
) -> io::Result<PathBuf> {
    prebuilt_dir_of(dir, version, host_bins, Size::Pad(pad))
}

/// [`prebuilt_dir`] with real-size binaries of `size` bytes each.
pub fn prebuilt_dir_sized(
    dir: &Path,
    version: &str,
    host_bins: &[(&str, &Path)],
    size: u64,
) -> io::Result<PathBuf> {
    prebuilt_dir_of(dir, version, host_bins, Size::Total(size))
}

fn prebuilt_dir_of(
    dir: &Path,
    version: &str,
    host_bins: &[(&str, &Path)],
    size: Size,
) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    for name in ["openwork-server", "owpenbot"] {
        for target in TARGETS {
            let file = dir.join(exe(target, &format!("{name}-{target}")));
            let real = host_bins
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, p)| *p)
                .filter(|_| target == host_target());
            write_fixture(&file, &format!("{name} {version} {target}"), real, size)?;
        }
    }
    std::fs::write(dir.join("VERSION"), format!("{version}\n"))?;
    Ok(dir.to_path_buf())
}

/// An archive entry for the raw writers below, which (unlike the tar crate's
/// safe API) write any path: they build hostile archives.
pub enum Entry<'a> {
    File(&'a Path),
    Bytes(&'a [u8]),
    Symlink(&'a str),
    Hardlink(&'a str),
}

/// Writes a `.tar.gz` with exactly the given names (which may be unsafe).
pub fn tar_gz(out: &Path, entries: &[(&str, Entry)]) -> io::Result<()> {
    tar_gz_at(out, entries, 1)
}

/// [`tar_gz`] at a given gzip level (real releases use 6 or more).
pub fn tar_gz_at(out: &Path, entries: &[(&str, Entry)], level: u32) -> io::Result<()> {
    let gz = flate2::GzBuilder::new().mtime(0).write(
        BufWriter::new(File::create(out)?),
        flate2::Compression::new(level),
    );
    let mut tar = tar::Builder::new(gz);
    for (name, entry) in entries {
        let mut header = tar::Header::new_gnu();
        set_raw_name(&mut header, name);
        header.set_mode(0o755);
        header.set_mtime(0);
        match entry {
            Entry::File(path) => {
                let f = File::open(path)?;
                header.set_size(f.metadata()?.len());
                header.set_entry_type(tar::EntryType::Regular);
                header.set_cksum();
                tar.append(&header, f)?;
            }
            Entry::Bytes(bytes) => {
                header.set_size(bytes.len() as u64);
                header.set_entry_type(tar::EntryType::Regular);
                header.set_cksum();
                tar.append(&header, *bytes)?;
            }
            Entry::Symlink(target) | Entry::Hardlink(target) => {
                let kind = if matches!(entry, Entry::Symlink(_)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                header.set_entry_type(kind);
                header.set_size(0);
                let raw = &mut header.as_old_mut().linkname;
                raw.fill(0);
                raw[..target.len()].copy_from_slice(target.as_bytes());
                header.set_cksum();
                tar.append(&header, io::empty())?;
            }
        }
    }
    tar.into_inner()?.finish()?.flush()
}

fn set_raw_name(header: &mut tar::Header, name: &str) {
    let raw = &mut header.as_old_mut().name;
    raw.fill(0);
    raw[..name.len()].copy_from_slice(name.as_bytes());
}

/// Writes a `.zip` with exactly the given names (which may be unsafe).
pub fn zip(out: &Path, entries: &[(&str, Entry)]) -> io::Result<()> {
    zip_at(out, entries, 1)
}

/// [`zip`] at a given deflate level.
pub fn zip_at(out: &Path, entries: &[(&str, Entry)], level: i64) -> io::Result<()> {
    let mut zip = zip::ZipWriter::new(BufWriter::new(File::create(out)?));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(level))
        .unix_permissions(0o755);
    for (name, entry) in entries {
        match entry {
            Entry::File(path) => {
                zip.start_file(*name, opts).map_err(io::Error::other)?;
                io::copy(&mut File::open(path)?, &mut zip)?;
            }
            Entry::Bytes(bytes) => {
                zip.start_file(*name, opts).map_err(io::Error::other)?;
                zip.write_all(bytes)?;
            }
            Entry::Symlink(target) | Entry::Hardlink(target) => {
                zip.add_symlink(*name, *target, opts)
                    .map_err(io::Error::other)?;
            }
        }
    }
    zip.finish().map_err(io::Error::other)?.flush()
}

/// A `dist/`-like mirror for the host target only: `opencode-<t>.tar.gz`
/// (a marker binary plus `opencode_pad` bytes), plain `openwork-server-<t>`
/// (plus `server_pad` bytes) and `owpenbot-<t>`, and an `openwrk-sidecars.json`
/// naming them all at `version`.
pub fn host_dist(dir: &Path, version: &str, opencode_pad: u64, server_pad: u64) -> io::Result<()> {
    host_dist_of(
        dir,
        version,
        [None; 3],
        [Size::Pad(opencode_pad), Size::Pad(server_pad), Size::Pad(0)],
    )
}

/// [`host_dist`] with real-size binaries: OpenCode `opencode_size` bytes,
/// openwork-server and owpenbot `sidecar_size` each, compressing like
/// executables; with `real`, runnable stand-ins at their start.
pub fn host_dist_sized(
    dir: &Path,
    version: &str,
    real: [Option<&Path>; 3],
    opencode_size: u64,
    sidecar_size: u64,
) -> io::Result<()> {
    host_dist_of(
        dir,
        version,
        real,
        [
            Size::Total(opencode_size),
            Size::Total(sidecar_size),
            Size::Total(sidecar_size),
        ],
    )
}

/// Like [`host_dist`], with runnable stand-ins (opencode, openwork-server,
/// owpenbot) for the binaries, so a run can start what it downloaded.
pub fn runnable_host_dist(dir: &Path, version: &str, bins: [&Path; 3]) -> io::Result<()> {
    host_dist_of(dir, version, bins.map(Some), [Size::Pad(0); 3])
}

fn host_dist_of(
    dir: &Path,
    version: &str,
    real: [Option<&Path>; 3],
    sizes: [Size; 3],
) -> io::Result<()> {
    use crate::host::sha256_file;
    std::fs::create_dir_all(dir)?;
    let t = host_target();
    let work = tempdir_in(dir)?;
    let opencode = work.join(exe(t, "opencode"));
    write_fixture(&opencode, &format!("opencode {version}"), real[0], sizes[0])?;
    let (archive, ext) = if is_windows(t) {
        ("zip", "zip")
    } else {
        ("tar.gz", "tar.gz")
    };
    let asset = format!("opencode-{t}.{ext}");
    let inner = exe(t, "opencode");
    let level = sizes[0].level();
    if is_windows(t) {
        zip_at(
            &dir.join(&asset),
            &[(inner.as_str(), Entry::File(&opencode))],
            level.into(),
        )?;
    } else {
        tar_gz_at(
            &dir.join(&asset),
            &[(inner.as_str(), Entry::File(&opencode))],
            level,
        )?;
    }
    let (bin_sha, bin_size) = sha256_file(&opencode);
    let (sha, size) = sha256_file(&dir.join(&asset));
    let mut entries = serde_json::json!({
        "opencode": {"version": version, "targets": {t: {
            "asset": asset, "sha256": sha, "size": size,
            "archive": archive, "binary": inner, "binarySha256": bin_sha, "binarySize": bin_size}}}
    });
    for (name, real, size) in [
        ("openwork-server", real[1], sizes[1]),
        ("owpenbot", real[2], sizes[2]),
    ] {
        let file = exe(t, &format!("{name}-{t}"));
        write_fixture(&dir.join(&file), &format!("{name} {version}"), real, size)?;
        let (sha, size) = sha256_file(&dir.join(&file));
        entries[name] = serde_json::json!({"version": version, "targets": {t: {"asset": file, "sha256": sha, "size": size}}});
    }
    std::fs::remove_dir_all(&work)?;
    let manifest = serde_json::json!({
        "schemaVersion": 1, "version": "0.1.0", "generatedAt": "2023-11-14T22:13:20Z", "entries": entries
    });
    std::fs::write(
        dir.join("openwrk-sidecars.json"),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )
}

fn tempdir_in(dir: &Path) -> io::Result<PathBuf> {
    let work = dir.join(format!(".work-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    Ok(work)
}
